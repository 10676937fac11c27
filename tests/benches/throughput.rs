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
//! - amqp: a RabbitMQ queue filled by the real fedora-messaging library → `statscache-ingestor`
//!   → JetStream (each delivery acked after its JetStream ack), next to a bare lapin consumer
//!   acking each delivery of an identical queue (same prefetch).

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
use statscache_tests::corpus::real_lines;
use statscache_tests::{
    free_port, publish_amqp, publish_corpus, wait_for, NatsServer, RabbitMq, Servers, Service,
};
use statscache_worker::plugin::Message;
use statscache_worker::sink::{self, Batch, FactRow, MessageRow};

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

async fn stream_messages(nats_url: &str, name: &str) -> u64 {
    let Ok(client) = async_nats::connect(nats_url).await else {
        return 0;
    };
    let context = jetstream::new(client);
    let Ok(mut stream) = context.get_stream(name).await else {
        return 0;
    };
    stream
        .info()
        .await
        .map(|info| info.state.messages)
        .unwrap_or(0)
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
        stream_messages(&servers.nats.url, "FEDMSG").await,
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
    assert_eq!(stream_messages(&nats.url, "FEDMSG").await, count as u64);
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

/// The rows the worker writes for `lines`, computed with its own plugins.
fn worker_rows(lines: &[String]) -> Batch {
    let plugins =
        statscache_worker::plugins::load(&statscache_shared::config::Config::defaults().worker)
            .expect("plugins");
    let mut batch = Batch::default();
    for (sequence, line) in lines.iter().enumerate() {
        let envelope = Envelope::parse(line.as_bytes()).expect("envelope");
        let meta = statscache_worker::meta::extract(&envelope);
        let message = Message {
            identity: envelope.identity(),
            envelope,
            meta,
            stream_sequence: sequence as u64,
        };
        let timestamp = message.envelope.event_time();
        batch.messages.push(MessageRow {
            msg_id: message.identity.clone(),
            topic: message.envelope.topic.clone(),
            category: message.envelope.category().to_string(),
            timestamp,
            time: timestamp as u32,
            i: message.envelope.i.unwrap_or_default(),
            username: message.envelope.username.clone().unwrap_or_default(),
            usernames: message.meta.usernames.clone(),
            packages: message.meta.packages.clone(),
            body: line.clone(),
            source: "bench".into(),
            stream_sequence: sequence as u64,
            ingested_at: timestamp as u32,
        });
        for plugin in &plugins {
            if !plugin.info().topics.matches(&message.envelope.topic) {
                continue;
            }
            let mut facts = Vec::new();
            plugin.process(&message, &mut facts).expect("process");
            let rows = batch.facts.entry(plugin.info().table.clone()).or_default();
            for fact in facts {
                rows.push(FactRow {
                    time: timestamp as u32,
                    timestamp,
                    msg_id: message.identity.clone(),
                    key: fact.key,
                    value: fact.value,
                });
            }
        }
    }
    batch
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmHWM:") {
            let kib: f64 = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(0.0);
            return kib / 1024.0;
        }
    }
    0.0
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
    };
    statscache_shared::schema::migrate(&bare_config)
        .await
        .expect("bare schema");
    let bare_client = statscache_shared::schema::client(&bare_config);
    let all_rows = worker_rows(&lines);
    for table in all_rows.facts.keys() {
        statscache_shared::schema::create_stat_table(&bare_client, table)
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

#[tokio::main]
async fn main() {
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
