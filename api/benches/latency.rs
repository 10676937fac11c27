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
//! The "direct" side sends, per request, the statements the API sent before issue 9 (rollups,
//! history lookup tables; `common/mod.rs`), in the same sequence (the statistic's catalog, count
//! and page one after the other; `/raw`'s count and page together). Since issue 9 the API sends
//! other statements, so the ratio is the API layer's cost plus what the new queries save.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    clickhouse, fact_statements, get_ok, history_statements, load, milliseconds, now_seconds,
    percentile, setting, DAY_BUCKET,
};

use serde_json::Value;
use statscache_tests::corpus::{publish_to_stream, real_lines};
use statscache_tests::{free_port, get_json, wait_for, Servers, Service};

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
    let mut statements = vec![
        "SELECT identifier, name, description, kind, table_name, topics, backlog_delta_seconds, \
         updated_at FROM plugins FINAL ORDER BY identifier FORMAT RowBinary"
            .to_string(),
    ];
    statements.extend(fact_statements("stat_volume_by_topic", DAY_BUCKET, "", end));
    statements
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
