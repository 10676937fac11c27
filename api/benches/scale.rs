//! Cost of the API's history-wide requests as history grows, next to the SQL they replace (the
//! fact-table and full-table statements the api sent before issue 9) sent straight to
//! ClickHouse: latency p50/p99 and ClickHouse's peak memory per query (`system.query_log`).
//!
//! Not a test: it reports, it does not assert. Run it with `deploy/local/bench-scale.sh`
//! (release builds). It starts NATS and ClickHouse (queries logged), then for each size of
//! `BENCH_SIZES` (default `1000000,10000000`) grows the history to that many messages with
//! `statscache-worker generate` (each step adds older history, so the newest 31 days stay the
//! same; `generate` rebuilds the rollups of what it wrote), and measures every
//! request: `BENCH_REQUESTS` (default 20) sequential api calls and `BENCH_DIRECT_REQUESTS`
//! (default 5) runs of the replaced SQL, after one warm-up each.

mod common;

use std::time::{Duration, Instant};

use common::{
    clickhouse, fact_statements, get_ok, history_statements, milliseconds, now_seconds, percentile,
    setting, ALL_BUCKET, DAY_BUCKET, MONTH_BUCKET,
};
use statscache_tests::{fixture, free_port, get_json, run_command, wait_for, Servers, Service};

/// statscache's windows of a minute and a second, as the replaced SQL groups facts by them.
const MINUTE_WINDOW: &str = "toUInt32(intDiv(toUInt32(time), 60) * 60)";
const SECOND_WINDOW: &str = "toUInt32(time)";

/// One request of issue 9's (and issue 23's) table and the statements it replaces.
struct Case {
    name: &'static str,
    path: String,
    replaced: Vec<String>,
}

/// Latencies and ClickHouse's peak memory (bytes) of one side of a case, and where its time
/// went: the statements ClickHouse finished meanwhile, one line per shape.
struct Measured {
    latencies: Vec<Duration>,
    peak_memory: u64,
    profile: Vec<String>,
}

struct Row {
    name: &'static str,
    api: Measured,
    direct: Measured,
}

/// The requests of issue 9's table, with `end` the newest message's second and `msg_id` a
/// stored message.
fn cases(end: u64, msg_id: &str) -> Vec<Case> {
    let month = 31 * 86_400;
    let start = end - month;
    let [raw_count, raw_page] =
        history_statements(end, month, " AND hasAny(usernames, ['user42'])", 25);
    vec![
        Case {
            name: "/api/volume?bucket=all",
            path: "/api/volume?bucket=all".into(),
            replaced: fact_statements("stat_volume", ALL_BUCKET, "", end).into(),
        },
        Case {
            name: "/api/volume-by-topic?bucket=all",
            path: "/api/volume-by-topic?bucket=all".into(),
            replaced: fact_statements("stat_volume_by_topic", ALL_BUCKET, "", end).into(),
        },
        Case {
            name: "/api/volume-by-topic?bucket=day",
            path: "/api/volume-by-topic?bucket=day".into(),
            replaced: fact_statements("stat_volume_by_topic", DAY_BUCKET, "", end).into(),
        },
        Case {
            name: "/api/volume-by-user?bucket=month",
            path: "/api/volume-by-user?bucket=month".into(),
            replaced: fact_statements("stat_volume_by_user", MONTH_BUCKET, "", end).into(),
        },
        Case {
            name: "/api/volume-by-user?key=user42&bucket=day",
            path: "/api/volume-by-user?key=user42&bucket=day".into(),
            replaced: fact_statements(
                "stat_volume_by_user",
                DAY_BUCKET,
                " AND has(['user42'], key)",
                end,
            )
            .into(),
        },
        Case {
            name: "/statscache/api/volume-by-category-1d",
            path: "/statscache/api/volume-by-category-1d".into(),
            replaced: fact_statements("stat_volume_by_category", DAY_BUCKET, "", end).into(),
        },
        Case {
            name: "/statscache/api/volume-1m",
            path: "/statscache/api/volume-1m".into(),
            replaced: fact_statements("stat_volume", MINUTE_WINDOW, "", end).into(),
        },
        Case {
            name: "/statscache/api/volume-1s",
            path: "/statscache/api/volume-1s".into(),
            replaced: fact_statements("stat_volume", SECOND_WINDOW, "", end).into(),
        },
        Case {
            name: "/raw (31 days) &user=user42",
            path: format!("/raw?start={start}&end={end}&user=user42"),
            replaced: vec![raw_count, raw_page],
        },
        Case {
            name: "/id?id=…",
            path: format!("/id?id={msg_id}"),
            replaced: vec![format!(
                "SELECT msg_id, topic, timestamp, i, usernames, packages, body FROM messages \
                 WHERE msg_id = '{msg_id}' ORDER BY stream_sequence ASC LIMIT 1 FORMAT RowBinary"
            )],
        },
    ]
}

/// Runs `work` `runs` times after one warm-up; returns the sorted latencies and the peak memory
/// of the queries ClickHouse finished meanwhile.
async fn measure<F, Fut>(http: &reqwest::Client, base: &str, runs: usize, work: F) -> Measured
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    work().await;
    // query_log has second resolution: keep phases a second apart.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let first_second = now_seconds();
    let mut latencies = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        work().await;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let last_second = now_seconds();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let peak_memory = peak_memory(http, base, first_second, last_second).await;
    let profile = profile(http, base, first_second, last_second).await;
    Measured {
        latencies,
        peak_memory,
        profile,
    }
}

/// The largest `memory_usage` of the queries that finished between two seconds (`type` is a
/// number on ClickHouse 18.16, an enum on current releases).
async fn peak_memory(http: &reqwest::Client, base: &str, first: u64, last: u64) -> u64 {
    clickhouse(http, base, "SYSTEM FLUSH LOGS".to_string()).await;
    let sql = format!(
        "SELECT max(memory_usage) FROM system.query_log \
         WHERE toString(type) IN ('2', 'QueryFinish') \
         AND event_time >= toDateTime({first}) AND event_time <= toDateTime({last}) \
         AND query NOT LIKE '%query_log%'"
    );
    let answer = http
        .post(base)
        .body(sql)
        .send()
        .await
        .expect("query_log request");
    let text = answer.text().await.expect("query_log answer");
    text.trim().parse().unwrap_or(0)
}

/// The statements that finished between two seconds, grouped by shape (numbers blanked, first
/// 100 characters): how many, median and largest duration (ms), largest rows read.
async fn profile(http: &reqwest::Client, base: &str, first: u64, last: u64) -> Vec<String> {
    let sql = format!(
        "SELECT concat(toString(count()), ' x ', toString(quantileExact(0.5)(query_duration_ms)),
                ' ms (max ', toString(max(query_duration_ms)), ', ',
                toString(max(read_rows)), ' rows): ', shape)
         FROM (SELECT query_duration_ms, read_rows,
                      substring(replaceRegexpAll(replaceRegexpAll(query, '[[:space:]]+', ' '),
                                                 '[0-9]+', 'N'), 1, 100) AS shape
               FROM system.query_log
               WHERE toString(type) IN ('2', 'QueryFinish')
                 AND event_time >= toDateTime({first}) AND event_time <= toDateTime({last})
                 AND query NOT LIKE '%query_log%')
         GROUP BY shape ORDER BY sum(query_duration_ms) DESC LIMIT 8"
    );
    let text = scalar(http, base, &sql).await;
    text.lines().map(str::to_string).collect()
}

/// Waits until ClickHouse runs no merge (three reads of `system.merges` 5 s apart), at most
/// `BENCH_SETTLE_MINUTES` (default 30): generation leaves merges running for minutes, and
/// requests measured beside them measure the merges.
async fn settle(http: &reqwest::Client, base: &str) {
    let limit = Duration::from_secs(60 * setting("BENCH_SETTLE_MINUTES", 30) as u64);
    let started = Instant::now();
    let mut quiet_reads = 0;
    while quiet_reads < 3 && started.elapsed() < limit {
        let merges = scalar(http, base, "SELECT count() FROM system.merges").await;
        if merges == "0" {
            quiet_reads += 1;
        } else {
            quiet_reads = 0;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    eprintln!(
        "waited {:.0} s for ClickHouse's merges to finish{}",
        started.elapsed().as_secs_f64(),
        if quiet_reads < 3 { " (gave up)" } else { "" }
    );
}

async fn scalar(http: &reqwest::Client, base: &str, sql: &str) -> String {
    let answer = http
        .post(base)
        .body(sql.to_string())
        .send()
        .await
        .expect("clickhouse request");
    answer
        .text()
        .await
        .expect("clickhouse answer")
        .trim()
        .to_string()
}

fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}

fn report(messages: u64, rows: &[Row]) {
    println!(
        "\n{messages} messages: api next to the replaced SQL (ms; MB = ClickHouse peak per query)"
    );
    println!(
        "{:<44} {:>8} {:>8} {:>8} {:>10} {:>10} {:>10} {:>8}",
        "request", "api p50", "api p99", "api MB", "old p50", "old p99", "old MB", "p50 x"
    );
    for row in rows {
        let api_p50 = percentile(&row.api.latencies, 50);
        let direct_p50 = percentile(&row.direct.latencies, 50);
        println!(
            "{:<44} {:>8.1} {:>8.1} {:>8.1} {:>10.1} {:>10.1} {:>10.1} {:>8.3}",
            row.name,
            milliseconds(api_p50),
            milliseconds(percentile(&row.api.latencies, 99)),
            megabytes(row.api.peak_memory),
            milliseconds(direct_p50),
            milliseconds(percentile(&row.direct.latencies, 99)),
            megabytes(row.direct.peak_memory),
            api_p50.as_secs_f64() / direct_p50.as_secs_f64(),
        );
        if profiled() {
            for line in &row.api.profile {
                println!("    {line}");
            }
        }
    }
}

/// `BENCH_PROFILE=1`: print under each request the statements its api calls sent.
fn profiled() -> bool {
    setting("BENCH_PROFILE", 0) == 1
}

/// Grows the history to `target` messages, older than what is stored; returns the new count.
async fn grow(env: &[(String, String)], stored: u64, target: u64, oldest: u64, step: u64) -> u64 {
    let more = target - stored;
    let templates = fixture("fedmsg-real.jsonl");
    let arguments = [
        "generate".to_string(),
        "--messages".to_string(),
        more.to_string(),
        "--end".to_string(),
        (oldest - 1).to_string(),
        "--seed".to_string(),
        step.to_string(),
        "--templates".to_string(),
        templates.display().to_string(),
    ];
    let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
    let started = Instant::now();
    let output = run_command("worker", env, &arguments).await;
    assert!(
        output.status.success(),
        "generate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!(
        "generated {more} messages and rebuilt the rollups in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    target
}

#[tokio::main]
async fn main() {
    let sizes: Vec<u64> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "1000000,10000000".to_string())
        .split(',')
        .map(|size| size.trim().parse().expect("BENCH_SIZES: numbers"))
        .collect();
    let requests = setting("BENCH_REQUESTS", 20);
    let direct_requests = setting("BENCH_DIRECT_REQUESTS", 5);

    let servers = Servers::start().await;
    let api_port = free_port();
    let env = servers.env(&[("STATSCACHE_API__LISTEN", format!("127.0.0.1:{api_port}"))]);
    let clickhouse_url = format!("{}/?database={}", servers.clickhouse.url, servers.database);
    let http = reqwest::Client::new();
    let newest = now_seconds() - 60;

    let mut stored = 0;
    let mut api: Option<Service> = None;
    for (step, size) in sizes.into_iter().enumerate() {
        let oldest = if stored == 0 {
            newest + 1
        } else {
            scalar(
                &http,
                &clickhouse_url,
                "SELECT toUInt32(min(time)) FROM messages",
            )
            .await
            .parse()
            .expect("oldest time")
        };
        stored = grow(&env, stored, size, oldest, step as u64 + 1).await;
        settle(&http, &clickhouse_url).await;
        if api.is_none() {
            api = Some(Service::start("api", &env, &[]));
        }
        let base = format!("http://127.0.0.1:{api_port}");
        let catalog = format!("{base}/api/");
        wait_for("the api", Duration::from_secs(60), || {
            let url = catalog.clone();
            async move { get_json(&url).await }
        })
        .await;
        let msg_id = scalar(
            &http,
            &clickhouse_url,
            "SELECT msg_id FROM messages ORDER BY time, msg_id LIMIT 1 OFFSET 1000",
        )
        .await;

        let mut rows = Vec::new();
        for case in cases(newest, &msg_id) {
            let url = format!("{base}{}", case.path);
            let api_side = measure(&http, &clickhouse_url, requests, || get_ok(&http, &url)).await;
            let direct = measure(&http, &clickhouse_url, direct_requests, || async {
                for sql in &case.replaced {
                    clickhouse(&http, &clickhouse_url, sql.clone()).await;
                }
            })
            .await;
            rows.push(Row {
                name: case.name,
                api: api_side,
                direct,
            });
        }
        report(stored, &rows);
    }
}
