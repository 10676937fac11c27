//! The bootstrap from datanommer next to the raw limits of its servers, on the same machine.
//!
//! Not a test: it reports, it does not assert. Run it with `deploy/local/bench-bootstrap.sh`
//! (release builds). For `BENCH_MESSAGES` (default 1 000 000) datanommer rows generated in a
//! real PostgreSQL (the real corpus as templates, stored once by the real `datanommer.models`,
//! then repeated by SQL with distinct `msg_id`s, 70 000 a day), read `BENCH_BATCH` (default
//! 10 000) at a time:
//!
//! - read: datanommer's rows paged as the bootstrap pages them, in rows/s (the source's limit);
//! - bare insert: the rows the worker writes for them (messages, identities, history lookups,
//!   every plugin's facts, key presence), one INSERT per table per batch, with the clickhouse
//!   crate, in rows/s (ClickHouse's limit at this batch size; no rollups, no lookups);
//! - bootstrap: `statscache-worker bootstrap --postgres`, end to end into a fresh ClickHouse
//!   with rollups and key counts, in messages/s, with its peak resident memory;
//! - and the hours Fedora's ~200 M messages would take at that rate.

use std::time::{Duration, Instant};

use statscache_shared::config::ClickHouseConfig;
use statscache_tests::bench::{peak_rss_mib, worker_rows};
use statscache_tests::corpus::real_lines;
use statscache_tests::postgres::{PostgresServer, DATABASE};
use statscache_tests::{Servers, Service};
use statscache_worker::bootstrap::postgres::Postgres;
use statscache_worker::bootstrap::row::Position;
use statscache_worker::sink;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Fills datanommer with `count` rows: the corpus through `datanommer.models`, then that corpus
/// repeated in SQL (each repetition a new `msg_id` and the next stretch of time).
async fn generate(postgres: &PostgresServer, count: usize) {
    let corpus = real_lines();
    postgres.fill(&corpus).await;
    let templates = corpus.len();
    let repetitions = count.div_ceil(templates);
    let last_template = postgres
        .psql(DATABASE, "SELECT max(id) FROM messages")
        .expect("templates");
    let started = Instant::now();
    postgres
        .psql(
            DATABASE,
            &format!(
                "INSERT INTO messages (msg_id, i, topic, timestamp, certificate, signature, \
                   category, agent_name, crypto, source_name, source_version, msg, headers) \
                 SELECT t.msg_id || '-' || g, t.i, t.topic, \
                   TIMESTAMP '2019-01-01' + make_interval(secs => (g * {templates} + t.rank) \
                     * 86400.0 / 70000), \
                   t.certificate, t.signature, t.category, t.agent_name, t.crypto, \
                   t.source_name, t.source_version, t.msg, t.headers \
                 FROM (SELECT *, row_number() OVER (ORDER BY id) - 1 AS rank FROM messages) t, \
                   generate_series(1, {repetitions}) g \
                 WHERE g * {templates} + t.rank < {count} + {templates}; \
                 DELETE FROM messages WHERE id <= {last_template}; ANALYZE messages"
            ),
        )
        .expect("generate datanommer rows");
    let rows = postgres
        .psql(DATABASE, "SELECT count(*) FROM messages")
        .expect("count");
    eprintln!(
        "generated {rows} datanommer rows in {:?}",
        started.elapsed()
    );
}

/// Reads every row after `Position::start` in pages of `batch`; calls `each` with each page.
async fn read_all(url: &str, batch: usize, mut each: impl AsyncFnMut(Vec<String>)) -> u64 {
    let postgres = Postgres::connect(url).await.expect("connect");
    let mut position = Position::start();
    let mut read = 0;
    loop {
        let rows = postgres
            .rows_after(&position, batch)
            .await
            .expect("read rows");
        let Some(last) = rows.last() else {
            return read;
        };
        position = last.position.clone();
        read += rows.len() as u64;
        let mut lines = Vec::with_capacity(rows.len());
        for row in rows {
            if let Ok(envelope) = row.envelope() {
                lines.push(serde_json::to_string(&envelope).expect("envelope"));
            }
        }
        each(lines).await;
    }
}

#[tokio::main]
async fn main() {
    let count = setting("BENCH_MESSAGES", 1_000_000);
    let batch = setting("BENCH_BATCH", 10_000);
    let postgres = PostgresServer::start().await;
    generate(&postgres, count).await;

    // The source's limit.
    let started = Instant::now();
    let read = read_all(&postgres.url, batch, async |_| {}).await;
    let read_rate = read as f64 / started.elapsed().as_secs_f64();

    // ClickHouse's limit: the same rows, bare inserts, timed alone.
    let servers = Servers::start().await;
    let bare = ClickHouseConfig {
        url: servers.clickhouse.url.clone(),
        database: "bare".into(),
        user: "default".into(),
        password: String::new(),
        query_timeout: Duration::from_secs(60),
        cluster: String::new(),
        insert_quorum: 0,
    };
    let mut config = statscache_shared::config::Config::defaults();
    config.clickhouse = bare.clone();
    let plugins = statscache_worker::plugins::load(&config.worker).expect("plugins");
    let client = statscache_worker::tables::prepare_tables(&config, &plugins)
        .await
        .expect("bare schema");
    let mut inserting = Duration::ZERO;
    let inserted = read_all(&postgres.url, batch, async |lines| {
        let rows = worker_rows(&lines);
        let started = Instant::now();
        sink::write(&client, &rows).await.expect("bare insert");
        inserting += started.elapsed();
    })
    .await;
    let insert_rate = inserted as f64 / inserting.as_secs_f64();

    // The bootstrap, end to end.
    let env = servers.env(&[]);
    let started = Instant::now();
    let booting = Service::start(
        "worker",
        &env,
        &[
            "bootstrap",
            "--postgres",
            &postgres.url,
            "--batch-size",
            &batch.to_string(),
        ],
    );
    let mut peak: f64 = 0.0;
    let mut booting = booting;
    while !booting.has_exited() {
        peak = peak.max(peak_rss_mib(booting.pid()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed();
    let stored: u64 = servers
        .client()
        .query("SELECT uniqExact(msg_id) FROM messages")
        .fetch_one()
        .await
        .expect("count stored");
    let rate = stored as f64 / elapsed.as_secs_f64();
    println!("| stage | rows | rows/s |");
    println!("|---|---|---|");
    println!("| PostgreSQL read, pages of {batch} | {read} | {read_rate:.0} |");
    println!("| bare ClickHouse insert of the same rows, batches of {batch} | {inserted} | {insert_rate:.0} |");
    println!("| bootstrap end to end (rollups, key counts) | {stored} | {rate:.0} |");
    println!(
        "ratio to the bare insert {:.2}; 200 M messages at this rate: {:.1} h; \
         bootstrap peak resident memory {peak:.0} MiB (sampled every 0.5 s)",
        rate / insert_rate,
        200e6 / rate / 3600.0
    );
}
