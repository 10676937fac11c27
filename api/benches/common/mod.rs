//! What the benchmarks share: load generation, percentiles, plain HTTP calls to the api and to
//! ClickHouse, and the statements the api sent before issue 9 (the baselines they are compared
//! with).

// Each bench is its own crate and uses part of this module.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn setting(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text} is not a number")),
        Err(_) => default,
    }
}

pub fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Runs `total` calls of `request` from `concurrency` tasks; returns each call's latency.
pub async fn load<F, Fut>(concurrency: usize, total: usize, request: F) -> Vec<Duration>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let request = Arc::new(request);
    let per_task = total.div_ceil(concurrency);
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let started = Instant::now();
                request().await;
                latencies.push(started.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::with_capacity(total);
    for task in tasks {
        all.extend(task.await.expect("load task"));
    }
    all.sort();
    all
}

pub fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    let index = (sorted.len() * percent / 100).min(sorted.len() - 1);
    sorted[index]
}

pub fn milliseconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// GETs `url`, insisting on a 200 (a benchmark of errors would measure nothing).
pub async fn get_ok(http: &reqwest::Client, url: &str) {
    let response = http.get(url).send().await.expect("api request");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.bytes().await.expect("api body");
}

/// Sends `sql` to ClickHouse's HTTP interface and reads the whole answer.
pub async fn clickhouse(http: &reqwest::Client, base: &str, sql: String) {
    let response = http
        .post(base)
        .body(sql)
        .send()
        .await
        .expect("clickhouse request");
    assert!(
        response.status().is_success(),
        "clickhouse: {}",
        response.status()
    );
    response.bytes().await.expect("clickhouse body");
}

/// The statements behind `/raw?delta=<window>&…` (count and page, sent together by the API).
pub fn history_statements(now: u64, window: u64, extra_condition: &str, rows: u64) -> [String; 2] {
    let start = now - window;
    let micros = "(toInt64(floor(timestamp)) * 1000000 \
                  + toInt64(round((timestamp - floor(timestamp)) * 1000000)))";
    let filter = format!(
        "time >= toDateTime({}) AND time <= toDateTime({now}) \
         AND {micros} >= {} AND {micros} <= {}{extra_condition}",
        start - 1,
        start * 1_000_000,
        now * 1_000_000,
    );
    [
        format!("SELECT count() FROM messages FINAL WHERE {filter} FORMAT RowBinary"),
        format!(
            "SELECT msg_id, topic, timestamp, i, usernames, packages, body FROM messages FINAL \
             WHERE {filter} ORDER BY timestamp DESC, msg_id DESC LIMIT {rows} OFFSET 0 \
             FORMAT RowBinary"
        ),
    ]
}

/// The bucket expressions of `statistics.rs` before issue 9.
pub const ALL_BUCKET: &str = "toUInt32(0)";
pub const DAY_BUCKET: &str = "toUInt32(intDiv(toUInt32(time), 86400) * 86400)";
pub const MONTH_BUCKET: &str = "toUInt32(toDateTime(toStartOfMonth(time, 'UTC'), 'UTC'))";

/// A count statistic computed from its fact table over all history up to `end`, as the api did
/// before issue 9 (count of groups, then the first page of 25): `key_condition` is empty or
/// `" AND has([...], key)"`.
pub fn fact_statements(
    table: &str,
    bucket_sql: &str,
    key_condition: &str,
    end: u64,
) -> [String; 2] {
    let grouped = format!(
        "SELECT {bucket_sql} AS bucket, key, uniqExact(msg_id) AS count FROM {table} \
         WHERE time >= toDateTime(0) AND time <= toDateTime({end}){key_condition} \
         GROUP BY bucket, key"
    );
    [
        format!("SELECT count() FROM ({grouped}) FORMAT RowBinary"),
        format!(
            "SELECT * FROM ({grouped}) ORDER BY bucket DESC, key ASC LIMIT 25 OFFSET 0 \
             FORMAT RowBinary"
        ),
    ]
}
