//! Latency of the API under concurrent load, next to the same SQL sent straight to ClickHouse's
//! HTTP interface: the ratio is what the API layer (parsing, validation, row decoding, JSON)
//! costs on top of the database.
//!
//! Not a test: it reports, it does not assert. Run it with `deploy/local/bench-api.sh` (release
//! builds). It starts NATS, ClickHouse, a worker and an api on this machine, stores
//! `BENCH_MESSAGES` messages (default 100000: the real corpus repeated with distinct `msg_id`s,
//! spread evenly over the last 30 days), then for each request measures `BENCH_REQUESTS`
//! (default 2000) requests from `BENCH_CONCURRENCY` (default 8) concurrent clients.
//!
//! The "direct" side sends, per request, the statements the API sends (written out here by hand
//! from `statistics.rs` and `history.rs`: keep them in step), in the same sequence (the
//! statistic's catalog, count and page one after the other; `/raw`'s count and page together).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use statscache_tests::corpus::{publish_to_stream, real_lines};
use statscache_tests::{free_port, get_json, wait_for, Servers, Service};

fn setting(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text} is not a number")),
        Err(_) => default,
    }
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// `count` corpus envelopes with distinct ids, spread evenly over the 30 days before `now`.
fn messages(count: usize, now: u64) -> Vec<String> {
    let corpus = real_lines();
    let span = 30.0 * 86400.0;
    let first = now as f64 - span;
    let mut out = Vec::with_capacity(count);
    for index in 0..count {
        let line = &corpus[index % corpus.len()];
        let mut envelope: Value = serde_json::from_str(line).expect("corpus line");
        envelope["msg_id"] = Value::from(format!("2026-bench-{index:08}"));
        envelope["timestamp"] = Value::from(first + span * index as f64 / count as f64);
        out.push(envelope.to_string());
    }
    out
}

/// Runs `total` calls of `request` from `concurrency` tasks; returns each call's latency.
async fn load<F, Fut>(concurrency: usize, total: usize, request: F) -> Vec<Duration>
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

fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    let index = (sorted.len() * percent / 100).min(sorted.len() - 1);
    sorted[index]
}

fn milliseconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// GETs `url`, insisting on a 200 (a benchmark of errors would measure nothing).
async fn get_ok(http: &reqwest::Client, url: &str) {
    let response = http.get(url).send().await.expect("api request");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.bytes().await.expect("api body");
}

/// Sends `sql` to ClickHouse's HTTP interface and reads the whole answer.
async fn clickhouse(http: &reqwest::Client, base: &str, sql: String) {
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

struct Comparison {
    name: &'static str,
    api: Vec<Duration>,
    direct: Vec<Duration>,
}

fn report(comparisons: &[Comparison], messages: usize, concurrency: usize) {
    println!("\nAPI latency, {messages} stored messages, {concurrency} concurrent clients (ms)");
    println!(
        "{:<44} {:>9} {:>9} {:>11} {:>11} {:>9} {:>9}",
        "request", "api p50", "api p99", "direct p50", "direct p99", "p50 x", "p99 x"
    );
    for comparison in comparisons {
        let api_p50 = percentile(&comparison.api, 50);
        let api_p99 = percentile(&comparison.api, 99);
        let direct_p50 = percentile(&comparison.direct, 50);
        let direct_p99 = percentile(&comparison.direct, 99);
        println!(
            "{:<44} {:>9.2} {:>9.2} {:>11.2} {:>11.2} {:>9.2} {:>9.2}",
            comparison.name,
            milliseconds(api_p50),
            milliseconds(api_p99),
            milliseconds(direct_p50),
            milliseconds(direct_p99),
            api_p50.as_secs_f64() / direct_p50.as_secs_f64(),
            api_p99.as_secs_f64() / direct_p99.as_secs_f64(),
        );
    }
}

/// The statements behind `/api/volume-by-topic?bucket=day` (catalog, count, first page).
fn statistic_statements(end: u64) -> Vec<String> {
    let grouped = format!(
        "SELECT toUInt32(intDiv(toUInt32(time), 86400) * 86400) AS bucket, key, \
         uniqExact(msg_id) AS count FROM stat_volume_by_topic \
         WHERE time >= toDateTime(0) AND time <= toDateTime({end}) GROUP BY bucket, key"
    );
    vec![
        "SELECT identifier, name, description, kind, table_name, topics, backlog_delta_seconds, \
         updated_at FROM plugins FINAL ORDER BY identifier FORMAT RowBinary"
            .to_string(),
        format!("SELECT count() FROM ({grouped}) FORMAT RowBinary"),
        format!(
            "SELECT * FROM ({grouped}) ORDER BY bucket DESC, key ASC LIMIT 25 OFFSET 0 \
             FORMAT RowBinary"
        ),
    ]
}

/// The statements behind `/raw?delta=<window>&…` (count and page, sent together by the API).
fn history_statements(now: u64, window: u64, extra_condition: &str, rows: u64) -> [String; 2] {
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

async fn compare_statistic(
    api: &str,
    clickhouse_url: &str,
    concurrency: usize,
    requests: usize,
) -> Comparison {
    let http = reqwest::Client::new();
    let url = format!("{api}/api/volume-by-topic?bucket=day");
    let api_client = http.clone();
    let api_latencies = load(concurrency, requests, move || {
        let http = api_client.clone();
        let url = url.clone();
        async move { get_ok(&http, &url).await }
    })
    .await;
    let base = clickhouse_url.to_string();
    let end = now_seconds();
    let direct_latencies = load(concurrency, requests, move || {
        let http = http.clone();
        let base = base.clone();
        async move {
            for sql in statistic_statements(end) {
                clickhouse(&http, &base, sql).await;
            }
        }
    })
    .await;
    Comparison {
        name: "/api/volume-by-topic?bucket=day",
        api: api_latencies,
        direct: direct_latencies,
    }
}

async fn compare_history(
    name: &'static str,
    api_url: String,
    statements: [String; 2],
    clickhouse_url: &str,
    concurrency: usize,
    requests: usize,
) -> Comparison {
    let http = reqwest::Client::new();
    let api_client = http.clone();
    let api_latencies = load(concurrency, requests, move || {
        let http = api_client.clone();
        let url = api_url.clone();
        async move { get_ok(&http, &url).await }
    })
    .await;
    let base = clickhouse_url.to_string();
    let statements = Arc::new(statements);
    let direct_latencies = load(concurrency, requests, move || {
        let http = http.clone();
        let base = base.clone();
        let statements = statements.clone();
        async move {
            let [count, page] = statements.as_ref();
            tokio::join!(
                clickhouse(&http, &base, count.clone()),
                clickhouse(&http, &base, page.clone())
            );
        }
    })
    .await;
    Comparison {
        name,
        api: api_latencies,
        direct: direct_latencies,
    }
}

#[tokio::main]
async fn main() {
    let message_count = setting("BENCH_MESSAGES", 100_000);
    let requests = setting("BENCH_REQUESTS", 2_000);
    let concurrency = setting("BENCH_CONCURRENCY", 8);

    let servers = Servers::start().await;
    let api_port = free_port();
    let env = servers.env(&[("STATSCACHE_API__LISTEN", format!("127.0.0.1:{api_port}"))]);
    let _worker = Service::start("worker", &env, &[]);
    let _api = Service::start("api", &env, &[]);
    let api = format!("http://127.0.0.1:{api_port}");
    let catalog_url = format!("{api}/api/");
    wait_for("the api", Duration::from_secs(60), || {
        let url = catalog_url.clone();
        async move { get_json(&url).await }
    })
    .await;

    let now = now_seconds();
    let lines = messages(message_count, now);
    eprintln!("storing {message_count} messages…");
    let loading = Instant::now();
    publish_to_stream(&servers.nats.url, &lines, true).await;
    let volume_url = format!("{api}/api/volume?bucket=all");
    wait_for(
        "every message to be stored",
        Duration::from_secs(1800),
        || {
            let url = volume_url.clone();
            async move {
                let page = get_json(&url).await?;
                let count = page["rows"].get(0)?["count"].as_u64()?;
                (count == message_count as u64).then_some(())
            }
        },
    )
    .await;
    eprintln!("stored in {:.1} s", loading.elapsed().as_secs_f64());

    let clickhouse_url = format!("{}/?database={}", servers.clickhouse.url, servers.database);
    let warm_up = requests / 10;
    // One warm-up pass, so that both sides start with warm caches.
    compare_statistic(&api, &clickhouse_url, concurrency, warm_up).await;
    let mut comparisons =
        vec![compare_statistic(&api, &clickhouse_url, concurrency, requests).await];
    let history = [
        ("/raw?delta=86400 (a day, 25 rows)", 86_400, "", "", 25),
        (
            "/raw?delta=604800&category=bodhi (100 rows)",
            604_800,
            "&category=bodhi",
            " AND has(['bodhi'], category)",
            100,
        ),
    ];
    for (name, window, parameters, condition, rows) in history {
        let url = format!("{api}/raw?delta={window}&rows_per_page={rows}{parameters}");
        let query_now = now_seconds();
        let statements = history_statements(query_now, window, condition, rows);
        compare_history(
            name,
            url.clone(),
            statements.clone(),
            &clickhouse_url,
            concurrency,
            warm_up,
        )
        .await;
        comparisons.push(
            compare_history(
                name,
                url,
                statements,
                &clickhouse_url,
                concurrency,
                requests,
            )
            .await,
        );
    }
    report(&comparisons, message_count, concurrency);
}
