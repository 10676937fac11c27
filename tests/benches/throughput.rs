//! Throughput of the pipeline next to the raw limits of its servers, on the same machine.
//!
//! Not a test: it reports, it does not assert. Run it with `deploy/local/bench.sh` (release
//! builds). For N corpus-sized messages (the real corpus repeated with distinct `msg_id`s):
//!
//! - ingest: a real ZeroMQ publisher → `statscache-ingestor` → JetStream, in messages/s, next to
//!   a bare async-nats publish loop of the same messages (same headers, same ack window);
//! - store: JetStream → `statscache-worker` → ClickHouse, in messages/s, next to bare batched
//!   inserts of the same rows (messages + every built-in plugin's facts) with the clickhouse
//!   crate, plus the worker's peak resident memory;
//! - delay: at a steady `BENCH_RATE` msg/s (default 800) for `BENCH_SECONDS` (default 30), the
//!   delay from each publish to JetStream to its row in ClickHouse (p50, p99, max), with the
//!   default worker settings, on the current nats-server and on Debian's 2.9.10 (not supported,
//!   measured for comparison), `BENCH_DELAY_ROUNDS` rounds (default 2) in alternating order; the messages are
//!   stamped with their publishing time, as on a live bus (`BENCH_CORPUS_TIMES=1` keeps the
//!   corpus' times instead, which spread every batch over the corpus' seven years: a worst
//!   case no source produces, datagrepper backfills being read in time order);
//! - recovery: the same load on two worker replicas, one killed (SIGKILL) a third of the way in:
//!   the time from the kill until every message published before it is stored.
//! - amqp: a RabbitMQ queue filled by the real fedora-messaging library → `statscache-ingestor`
//!   → JetStream (each delivery acked after its JetStream ack), next to a bare lapin consumer
//!   acking each delivery of an identical queue (same prefetch).
//! - cluster: end to end, ZeroMQ → ingestor → JetStream → worker → ClickHouse, from the first
//!   message stored to the last, on a 3-node JetStream cluster (streams R3) with two ClickHouse
//!   replicas (ZooKeeper, `clickhouse.cluster`), next to one nats-server and one ClickHouse.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde_json::Value;
use statscache_shared::message::Envelope;
use statscache_shared::topic::topic_to_subject;
use statscache_tests::bench::{peak_rss_mib, worker_rows};
use statscache_tests::corpus::real_lines;
use statscache_tests::{
    free_port, nats_server_binary, publish_amqp, publish_corpus, wait_for, wait_until_ok,
    ClickHouseReplicas, ClickHouseServer, NatsCluster, NatsServer, RabbitMq, Servers, Service,
    ZooKeeper, DEBIAN_NATS_SERVER,
};
use statscache_worker::sink::{self, Batch};

fn messages(count: usize) -> Vec<String> {
    let corpus = real_lines();
    let mut out = Vec::with_capacity(count);
    for index in 0..count {
        let mut envelope: Value =
            serde_json::from_str(&corpus[index % corpus.len()]).expect("corpus line");
        envelope["msg_id"] = Value::String(format!("2026-bench-{index:08}"));
        out.push(envelope.to_string());
    }
    out
}

/// [`messages`] as a live bus carries them at `rate` msg/s: each stamped with the moment it is
/// due to be published, so that a batch touches the current hour, day and month, as live
/// traffic (and a backfill, read in time order) does, rather than every period of the corpus.
fn live_messages(count: usize, rate: f64) -> Vec<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64();
    let mut out = Vec::with_capacity(count);
    for (index, line) in messages(count).into_iter().enumerate() {
        let mut envelope: Value = serde_json::from_str(&line).expect("bench line");
        envelope["timestamp"] = Value::from(now + index as f64 / rate);
        out.push(envelope.to_string());
    }
    out
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// Publishes `lines` to a fresh stream with async-nats alone, 512 acks in flight (as the relay).
async fn bare_publish(nats_url: &str, lines: &[String]) -> Duration {
    let client = async_nats::connect(nats_url).await.expect("nats");
    let context = jetstream::ContextBuilder::new()
        .max_ack_inflight(1024)
        .build(client);
    context
        .create_stream(stream::Config {
            name: "BARE".into(),
            subjects: vec!["bare.>".into()],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .expect("bare stream");
    let started = Instant::now();
    // Acks are awaited in a sliding window: each pending ack holds one of the context's
    // in-flight permits, so holding them all would stall the publishing.
    let mut acks = std::collections::VecDeque::new();
    for line in lines {
        let envelope = Envelope::parse(line.as_bytes()).expect("envelope");
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", envelope.identity().as_str());
        let subject = topic_to_subject("bare", &envelope.topic);
        acks.push_back(
            context
                .publish_with_headers(subject, headers, line.clone().into())
                .await
                .expect("publish"),
        );
        if acks.len() >= 512 {
            if let Some(oldest) = acks.pop_front() {
                oldest.await.expect("publish ack");
            }
        }
    }
    for ack in acks {
        ack.await.expect("ack");
    }
    started.elapsed()
}

/// How many messages the stream `name` holds (0 if NATS or the stream is not there).
async fn stream_messages_at(nats_url: &str, name: &str) -> u64 {
    let Ok(client) = async_nats::connect(nats_url).await else {
        return 0;
    };
    statscache_tests::stream_messages(&jetstream::new(client), name).await
}

async fn bench_ingest(count: usize) -> (f64, f64) {
    let servers = Servers::start().await;
    let lines = messages(count);
    let bare = bare_publish(&servers.nats.url, &lines).await;

    let mut file = tempfile::NamedTempFile::new().expect("corpus file");
    for line in &lines {
        writeln!(file, "{line}").expect("write corpus");
    }
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let admin = free_port();
    let env = servers.env(&[
        (
            "STATSCACHE_INGESTOR__ZEROMQ__ENDPOINTS",
            format!("[{endpoint}]"),
        ),
        (
            "STATSCACHE_INGESTOR__ADMIN_LISTEN",
            format!("127.0.0.1:{admin}"),
        ),
    ]);
    let _ingestor = Service::start("ingestor", &env, &[]);
    // The publisher runs beside the measurement: it lingers after sending, which must not count.
    let files = vec![file.path().to_path_buf()];
    let publisher = tokio::spawn(async move { publish_corpus(&endpoint, &files, 1, &[]).await });
    let ingest = time_relaying(admin, "zeromq", count).await;
    publisher.await.expect("publisher task");
    assert_eq!(
        stream_messages_at(&servers.nats.url, "FEDMSG").await,
        count as u64
    );
    (rate(count, ingest), rate(count, bare))
}

/// The time from the ingestor's first relayed message from `source` to its `count`th.
async fn time_relaying(admin: u16, source: &'static str, count: usize) -> Duration {
    let metrics = format!("http://127.0.0.1:{admin}/metrics");
    wait_for("the first relayed message", Duration::from_secs(60), || {
        let metrics = metrics.clone();
        async move { (relayed(&metrics, source).await > 0).then_some(()) }
    })
    .await;
    let started = Instant::now();
    wait_for("every message relayed", Duration::from_secs(600), || {
        let metrics = metrics.clone();
        async move { (relayed(&metrics, source).await >= count as u64).then_some(()) }
    })
    .await;
    started.elapsed()
}

/// Consumes `count` deliveries of `queue` with lapin alone, acking each, with the ingestor's
/// prefetch; the time from the first delivery to the last ack.
async fn bare_consume(url: &str, queue: &str, count: usize) -> Duration {
    let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .basic_qos(512, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut started = None;
    for _ in 0..count {
        let delivery = consumer
            .next()
            .await
            .expect("a delivery")
            .expect("a good delivery");
        started.get_or_insert_with(Instant::now);
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    started.map(|started| started.elapsed()).unwrap_or_default()
}

async fn bench_amqp(count: usize) -> (f64, f64) {
    let (nats, broker) = tokio::join!(NatsServer::start(), RabbitMq::start());
    let lines = messages(count);
    let mut file = tempfile::NamedTempFile::new().expect("corpus file");
    for line in &lines {
        writeln!(file, "{line}").expect("write corpus");
    }
    // Two identical queues, filled before either is consumed.
    let options = ["--queue", "statscache", "--queue", "bare", "--bulk"];
    publish_amqp(&broker.url, &options, &[file.path().to_path_buf()]).await;
    let bare = bare_consume(&broker.url, "bare", count).await;

    let admin = free_port();
    let env = vec![
        ("STATSCACHE_NATS__URL".to_string(), nats.url.clone()),
        (
            "STATSCACHE_INGESTOR__AMQP__URL".to_string(),
            broker.url.clone(),
        ),
        (
            "STATSCACHE_INGESTOR__ADMIN_LISTEN".to_string(),
            format!("127.0.0.1:{admin}"),
        ),
    ];
    let _ingestor = Service::start("ingestor", &env, &[]);
    let ingest = time_relaying(admin, "amqp", count).await;
    assert_eq!(stream_messages_at(&nats.url, "FEDMSG").await, count as u64);
    (rate(count, ingest), rate(count, bare))
}

/// Messages the ingestor has had acked by JetStream (new and duplicate) from `source`, from
/// its metrics.
async fn relayed(metrics_url: &str, source: &str) -> u64 {
    let Ok(response) = reqwest::get(metrics_url).await else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    let mut acked = 0;
    for line in text.lines() {
        let labels = format!("{{source=\"{source}\"}} ");
        let value = line
            .strip_prefix("statscache_ingestor_relayed_total")
            .or_else(|| line.strip_prefix("statscache_ingestor_duplicates_total"))
            .and_then(|rest| rest.strip_prefix(&labels));
        acked += value
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    acked
}

async fn bench_store(count: usize, batch_size: usize) -> (f64, f64, f64) {
    let servers = Servers::start().await;
    let lines = messages(count);
    // Let a worker create the schema and stream, then stop it so the stream fills first.
    let admin = free_port();
    let env = servers.env(&[
        (
            "STATSCACHE_WORKER__ADMIN_LISTEN",
            format!("127.0.0.1:{admin}"),
        ),
        ("STATSCACHE_WORKER__BATCH_SIZE", batch_size.to_string()),
    ]);
    let setup = Service::start("worker", &env, &[]);
    let ready = format!("http://127.0.0.1:{admin}/health/readyz");
    wait_for("the worker to be ready", Duration::from_secs(60), || {
        let ready = ready.clone();
        async move {
            reqwest::get(&ready)
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        }
    })
    .await;
    assert!(setup.terminate());
    statscache_tests::corpus::publish_to_stream(&servers.nats.url, &lines, true).await;

    // Bare: the same rows, batched inserts, into a copy of the schema.
    let bare_config = statscache_shared::config::ClickHouseConfig {
        url: servers.clickhouse.url.clone(),
        database: "bare".into(),
        user: "default".into(),
        password: String::new(),
        query_timeout: Duration::from_secs(60),
        cluster: String::new(),
        insert_quorum: 0,
    };
    statscache_shared::schema::migrate(&bare_config)
        .await
        .expect("bare schema");
    let bare_client = statscache_shared::schema::client(&bare_config);
    let all_rows = worker_rows(&lines);
    for table in all_rows.facts.keys() {
        let placement = statscache_shared::schema::Placement::of(&bare_config);
        statscache_shared::schema::create_stat_table(&bare_client, placement, table)
            .await
            .expect("bare table");
    }
    let mut chunks: Vec<Batch> = Vec::new();
    for chunk in lines.chunks(batch_size) {
        chunks.push(worker_rows(chunk));
    }
    let started = Instant::now();
    for chunk in &chunks {
        sink::write(&bare_client, chunk).await.expect("bare insert");
    }
    let bare = started.elapsed();

    let worker = Service::start("worker", &env, &[]);
    let started = Instant::now();
    let metrics = format!("http://127.0.0.1:{admin}/metrics");
    wait_for(
        "the worker to store everything",
        Duration::from_secs(600),
        || {
            let metrics = metrics.clone();
            async move {
                let text = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
                let stored = text
                    .lines()
                    .find_map(|line| line.strip_prefix("statscache_worker_stored_total "))
                    .and_then(|value| value.trim().parse::<f64>().ok())?;
                (stored as usize >= count).then_some(())
            }
        },
    )
    .await;
    let store = started.elapsed();
    let peak = peak_rss_mib(worker.pid());
    (rate(count, store), rate(count, bare), peak)
}

/// When each message was published (its stream sequence and instant) and first seen stored.
#[derive(Default)]
struct SteadyLoad {
    published: Vec<(u64, Instant)>,
    stored: std::collections::HashMap<u64, Instant>,
}

impl SteadyLoad {
    /// Publish-to-stored delays of the messages published in `window` (all if `None`).
    fn delays(&self, published_before: Option<Instant>) -> Vec<Duration> {
        let mut delays = Vec::new();
        for (sequence, published) in &self.published {
            if published_before.is_some_and(|limit| *published >= limit) {
                continue;
            }
            if let Some(stored) = self.stored.get(sequence) {
                delays.push(stored.saturating_duration_since(*published));
            }
        }
        delays.sort();
        delays
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[index]
}

/// Publishes `lines` to the message stream at `rate` msg/s, on schedule, acks awaited in a
/// sliding window (as the relay does); returns each message's stream sequence and publish time.
async fn publish_steadily(nats_url: &str, lines: &[String], rate: f64) -> Vec<(u64, Instant)> {
    let client = async_nats::connect(nats_url).await.expect("nats");
    let context = jetstream::new(client);
    let started = tokio::time::Instant::now();
    let mut published = Vec::with_capacity(lines.len());
    let mut acks = std::collections::VecDeque::new();
    for (index, line) in lines.iter().enumerate() {
        tokio::time::sleep_until(started + Duration::from_secs_f64(index as f64 / rate)).await;
        let envelope = Envelope::parse(line.as_bytes()).expect("envelope");
        let subject = topic_to_subject("fedmsg", &envelope.topic);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", envelope.identity().as_str());
        let at = Instant::now();
        let ack = context
            .publish_with_headers(subject, headers, line.clone().into())
            .await
            .expect("publish");
        acks.push_back((at, ack));
        while acks.len() > 512 {
            if let Some((at, ack)) = acks.pop_front() {
                published.push((ack.await.expect("publish ack").sequence, at));
            }
        }
    }
    for (at, ack) in acks {
        published.push((ack.await.expect("publish ack").sequence, at));
    }
    published
}

/// Records when each stream sequence first appears in the `messages` table, every 50 ms, until
/// `expected` sequences are seen (or ten minutes pass).
async fn watch_stored(
    client: clickhouse::Client,
    expected: usize,
) -> std::collections::HashMap<u64, Instant> {
    let mut stored = std::collections::HashMap::new();
    let mut lowest_missing = 1u64;
    let started = Instant::now();
    while stored.len() < expected && started.elapsed() < Duration::from_secs(600) {
        let seen: Vec<u64> = client
            .query("SELECT stream_sequence FROM messages WHERE stream_sequence >= ?")
            .bind(lowest_missing)
            .fetch_all()
            .await
            .unwrap_or_default();
        let now = Instant::now();
        for sequence in seen {
            stored.entry(sequence).or_insert(now);
        }
        while stored.contains_key(&lowest_missing) {
            lowest_missing += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stored
}

/// A worker with the default batch settings (the harness shortens `batch-timeout` for tests).
async fn default_worker(servers: &Servers) -> Service {
    let admin = free_port();
    let env = servers.env(&[
        (
            "STATSCACHE_WORKER__ADMIN_LISTEN",
            format!("127.0.0.1:{admin}"),
        ),
        ("STATSCACHE_WORKER__BATCH_TIMEOUT", "1s".to_string()),
    ]);
    let worker = Service::start("worker", &env, &[]);
    wait_until_ok(&format!("http://127.0.0.1:{admin}/health/readyz")).await;
    worker
}

/// Runs the steady load against `workers` default workers; with `kill_one`, SIGKILLs the first
/// a third of the way in and returns the kill's instant too.
async fn steady_load(
    nats_binary: &std::path::Path,
    workers: usize,
    kill_one: bool,
) -> (SteadyLoad, Option<Instant>) {
    let rate: f64 = env_number("BENCH_RATE", 800.0);
    let seconds: f64 = env_number("BENCH_SECONDS", 30.0);
    let count = (rate * seconds) as usize;
    let servers = Servers::start_with_nats(nats_binary).await;
    let mut running = Vec::new();
    for _ in 0..workers {
        running.push(default_worker(&servers).await);
    }
    let lines = if std::env::var("BENCH_CORPUS_TIMES").is_ok() {
        messages(count)
    } else {
        live_messages(count, rate)
    };
    let watcher = tokio::spawn(watch_stored(servers.client(), count));
    let nats_url = servers.nats.url.clone();
    let publisher = tokio::spawn(async move { publish_steadily(&nats_url, &lines, rate).await });
    let mut killed_at = None;
    if kill_one {
        tokio::time::sleep(Duration::from_secs_f64(seconds / 3.0)).await;
        killed_at = Some(Instant::now());
        running.remove(0).kill();
    }
    let published = publisher.await.expect("publisher task");
    let stored = watcher.await.expect("watcher task");
    (SteadyLoad { published, stored }, killed_at)
}

fn env_number(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// `| server | p50 | p99 | max | stored |` for one steady-load run.
async fn bench_delay(label: &str, nats_binary: &std::path::Path) -> String {
    let (load, _) = steady_load(nats_binary, 1, false).await;
    let delays = load.delays(None);
    format!(
        "| {label} | {:.2} | {:.2} | {:.2} | {} of {} |",
        percentile(&delays, 0.5).as_secs_f64(),
        percentile(&delays, 0.99).as_secs_f64(),
        percentile(&delays, 1.0).as_secs_f64(),
        delays.len(),
        load.published.len()
    )
}

/// Seconds from the kill until every message published before it is stored.
async fn bench_recovery(nats_binary: &std::path::Path) -> String {
    let (load, killed_at) = steady_load(nats_binary, 2, true).await;
    let Some(killed_at) = killed_at else {
        return "no kill".into();
    };
    let mut recovered = killed_at;
    let mut missing = 0;
    for (sequence, published) in &load.published {
        if *published >= killed_at {
            continue;
        }
        match load.stored.get(sequence) {
            Some(stored) => recovered = recovered.max(*stored),
            None => missing += 1,
        }
    }
    let delays = load.delays(None);
    format!(
        "recovery after kill -9 of one of two workers: {:.1} s (messages never stored: {missing}); \
         delay over the whole run: p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        recovered.duration_since(killed_at).as_secs_f64(),
        percentile(&delays, 0.5).as_secs_f64(),
        percentile(&delays, 0.99).as_secs_f64(),
        percentile(&delays, 1.0).as_secs_f64(),
    )
}

#[tokio::main]
async fn main() {
    // `BENCH_STAGES=delay,recovery` runs only those; `ingest` is the ZeroMQ stage of
    // `throughput` alone.
    let stages =
        std::env::var("BENCH_STAGES").unwrap_or("throughput,delay,recovery,cluster".into());
    if stages.contains("throughput") {
        bench_throughput().await;
    } else if stages.split(',').any(|stage| stage == "ingest") {
        let count = env_number("BENCH_MESSAGES", 20_000.0) as usize;
        let (ingest, bare_publish) = bench_ingest(count).await;
        println!("\n{count} corpus-sized messages, ZeroMQ→ingestor→JetStream vs bare async-nats publish, msg/s\n");
        println!("| statscache | raw limit | ratio |");
        println!("|---|---|---|");
        println!(
            "| {ingest:.0} | {bare_publish:.0} | {:.2} |",
            ingest / bare_publish
        );
    }
    if stages.contains("delay") {
        let rate = env_number("BENCH_RATE", 800.0);
        let seconds = env_number("BENCH_SECONDS", 30.0);
        println!("\nIngestion delay, publish → stored, {rate} msg/s for {seconds} s, one worker, default batch settings (seconds)\n");
        println!("| nats-server | p50 | p99 | max | stored |");
        println!("|---|---|---|---|---|");
        let current = ("current", nats_server_binary());
        let oldest = (
            "2.9.10 (Debian)",
            std::path::PathBuf::from(DEBIAN_NATS_SERVER),
        );
        // Each server runs first in one round and second in the next, so that neither gains
        // from going first on a machine still busy with the previous run's servers.
        let rounds = env_number("BENCH_DELAY_ROUNDS", 2.0) as usize;
        for round in 0..rounds {
            let order = if round % 2 == 0 {
                [&current, &oldest]
            } else {
                [&oldest, &current]
            };
            for (label, binary) in order {
                println!("{}", bench_delay(label, binary).await);
            }
        }
    }
    if stages.contains("recovery") {
        println!("\n{}", bench_recovery(&nats_server_binary()).await);
    }
    if stages.contains("cluster") {
        let count = env_number("BENCH_MESSAGES", 20_000.0) as usize;
        let (clustered, single) = bench_cluster(count).await;
        println!("\nEnd to end (ZeroMQ → ingestor → JetStream → worker → ClickHouse), {count} messages, msg/s\n");
        println!("| 3 nats-servers (R3) + 2 ClickHouse replicas | 1 nats-server + 1 ClickHouse | ratio |");
        println!("|---|---|---|");
        println!(
            "| {clustered:.0} | {single:.0} | {:.2} |",
            clustered / single
        );
    }
}

/// End-to-end throughput on a cluster and on single servers: (clustered, single) msg/s.
async fn bench_cluster(count: usize) -> (f64, f64) {
    let single = {
        let servers = Servers::start().await;
        end_to_end(count, &servers.nats.url, &servers.clickhouse, &[]).await
    };
    let zookeeper = ZooKeeper::start().await;
    let (nats, clickhouse) = tokio::join!(
        NatsCluster::start(3),
        ClickHouseReplicas::start(&zookeeper, 2)
    );
    let cluster_settings = [
        ("STATSCACHE_NATS__REPLICAS", "3"),
        (
            "STATSCACHE_CLICKHOUSE__CLUSTER",
            ClickHouseReplicas::CLUSTER,
        ),
    ];
    let clustered = end_to_end(
        count,
        &nats.urls(),
        &clickhouse.replicas[0],
        &cluster_settings,
    )
    .await;
    (clustered, single)
}

/// Messages/s from ZeroMQ to ClickHouse through one ingestor and one default worker, from the
/// first message stored to the last.
async fn end_to_end(
    count: usize,
    nats_urls: &str,
    clickhouse: &ClickHouseServer,
    extra: &[(&str, &str)],
) -> f64 {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let worker_admin = free_port();
    let mut env = vec![
        ("STATSCACHE_NATS__URL", nats_urls.to_string()),
        ("STATSCACHE_CLICKHOUSE__URL", clickhouse.url.clone()),
        (
            "STATSCACHE_WORKER__ADMIN_LISTEN",
            format!("127.0.0.1:{worker_admin}"),
        ),
        (
            "STATSCACHE_INGESTOR__ADMIN_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "STATSCACHE_INGESTOR__ZEROMQ__ENDPOINTS",
            format!("[{endpoint}]"),
        ),
    ];
    for (key, value) in extra {
        env.push((key, value.to_string()));
    }
    let env: Vec<(String, String)> = env
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect();
    let _worker = Service::start("worker", &env, &[]);
    wait_until_ok(&format!("http://127.0.0.1:{worker_admin}/health/readyz")).await;
    let _ingestor = Service::start("ingestor", &env, &[]);
    let mut file = tempfile::NamedTempFile::new().expect("corpus file");
    for line in messages(count) {
        writeln!(file, "{line}").expect("write corpus");
    }
    let files = vec![file.path().to_path_buf()];
    let publisher = tokio::spawn(async move { publish_corpus(&endpoint, &files, 1, &[]).await });
    let client = clickhouse.client("statscache");
    let stored = || {
        let query = client.query("SELECT uniqExact(msg_id) FROM messages");
        async move { query.fetch_one::<u64>().await.unwrap_or(0) }
    };
    wait_for(
        "the first message stored",
        Duration::from_secs(120),
        || async { (stored().await > 0).then_some(()) },
    )
    .await;
    let started = Instant::now();
    wait_for("every message stored", Duration::from_secs(600), || async {
        (stored().await >= count as u64).then_some(())
    })
    .await;
    let elapsed = started.elapsed();
    publisher.await.expect("publisher task");
    rate(count, elapsed)
}

async fn bench_throughput() {
    let count: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let mut report = BTreeMap::new();
    let (ingest, bare_publish) = bench_ingest(count).await;
    report.insert(
        "1 ingest",
        (
            ingest,
            bare_publish,
            "ZeroMQ→ingestor→JetStream vs bare async-nats publish",
        ),
    );
    let (store, bare_insert, peak) = bench_store(count, 1000).await;
    report.insert(
        "2 store",
        (
            store,
            bare_insert,
            "JetStream→worker→ClickHouse vs bare batched insert",
        ),
    );
    let (amqp, bare_consume) = bench_amqp(count).await;
    report.insert(
        "3 amqp",
        (
            amqp,
            bare_consume,
            "RabbitMQ (fedora-messaging)→ingestor→JetStream vs bare lapin consume+ack",
        ),
    );
    println!("\n{count} corpus-sized messages, same machine, release builds\n");
    println!("| stage | statscache msg/s | raw limit msg/s | ratio | compared |");
    println!("|---|---|---|---|---|");
    for (stage, (ours, raw, what)) in &report {
        println!(
            "| {stage} | {ours:.0} | {raw:.0} | {:.2} | {what} |",
            ours / raw
        );
    }
    println!("\nworker peak resident memory: {peak:.1} MiB");
}
