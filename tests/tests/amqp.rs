//! The fedora-messaging (AMQP) source against a real RabbitMQ and the real fedora-messaging
//! publisher: what it stores and serves, bridged copies counted once (also when the bridge
//! stamped them later, across second to day boundaries, and they arrived a duplicate window
//! after the original, or before it), no loss when the ingestor is killed or the broker
//! restarts, poison deliveries dead-lettered without blocking the queue.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use statscache_shared::time::parse_time;
use statscache_tests::corpus::{real_lines, served_counts};
use statscache_tests::reference::{assert_history_lists_each_once, assert_served, every_bucket};
use statscache_tests::{
    free_port, get_json, header_values, publish_amqp, publish_corpus, wait_for, wait_for_messages,
    wait_until_ok, NatsServer, RabbitMq, Servers, Service,
};
use tempfile::NamedTempFile;

const QUEUE: &str = "statscache";

/// `count` corpus messages (the corpus again when it runs out), each given a distinct fedmsg
/// `msg_id`: a bridge needs one, and a repeated message must not share one.
fn corpus_with_ids(count: usize) -> Vec<String> {
    let corpus = real_lines();
    let mut lines = Vec::with_capacity(count);
    for (index, line) in corpus.iter().cycle().take(count).enumerate() {
        let mut envelope: Value = serde_json::from_str(line).expect("corpus line");
        envelope["msg_id"] = Value::from(format!("2026-statscache-amqp-{index:06}"));
        lines.push(envelope.to_string());
    }
    lines
}

/// The `msg_id` of each line.
fn msg_ids(lines: &[String]) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for line in lines {
        let envelope: Value = serde_json::from_str(line).expect("corpus line");
        ids.insert(envelope["msg_id"].as_str().unwrap_or_default().to_string());
    }
    ids
}

fn corpus_file(lines: &[String]) -> NamedTempFile {
    let file = NamedTempFile::new().expect("corpus file");
    std::fs::write(file.path(), lines.join("\n")).expect("write corpus file");
    file
}

/// `STATSCACHE_*` settings of an ingestor consuming `broker`, with its admin port.
fn amqp_settings(broker: &RabbitMq, admin: u16) -> Vec<(&'static str, String)> {
    vec![
        ("STATSCACHE_INGESTOR__AMQP__URL", broker.url.clone()),
        ("STATSCACHE_INGESTOR__AMQP__QUEUE", QUEUE.to_string()),
        ("STATSCACHE_INGESTOR__AMQP__RECONNECT_MAX", "1s".to_string()),
        (
            "STATSCACHE_INGESTOR__ADMIN_LISTEN",
            format!("127.0.0.1:{admin}"),
        ),
    ]
}

/// An environment for an ingestor on `nats` only (no ClickHouse needed).
fn nats_env(nats: &NatsServer, settings: &[(&'static str, String)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("STATSCACHE_NATS__URL".to_string(), nats.url.clone()),
        (
            "STATSCACHE_NATS__DUPLICATE_WINDOW".to_string(),
            "2m".to_string(),
        ),
    ];
    for (key, value) in settings {
        env.push((key.to_string(), value.clone()));
    }
    env
}

async fn stream_ids(nats: &NatsServer) -> Vec<String> {
    header_values(&nats.url, "FEDMSG", "Nats-Msg-Id").await
}

/// Waits until the stream holds `count` messages, then checks they are `count` distinct ones.
async fn wait_for_stream_ids(nats: &NatsServer, expected: &BTreeSet<String>) {
    let ids = wait_for(
        "the stream to hold every message",
        Duration::from_secs(240),
        || async {
            let ids = stream_ids(nats).await;
            (ids.len() >= expected.len()).then_some(ids)
        },
    )
    .await;
    let distinct: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), distinct.len(), "a message was stored twice");
    assert_eq!(&distinct, expected, "the stream holds other messages");
}

fn files(file: &NamedTempFile) -> Vec<PathBuf> {
    vec![file.path().to_path_buf()]
}

#[tokio::test(flavor = "multi_thread")]
async fn fedora_messaging_messages_are_stored_and_served_as_datagrepper_serves_them() {
    let (servers, broker) = tokio::join!(Servers::start(), RabbitMq::start());
    let api_port = free_port();
    let admin = free_port();
    let mut settings = amqp_settings(&broker, admin);
    settings.push(("STATSCACHE_API__LISTEN", format!("127.0.0.1:{api_port}")));
    let env = servers.env(&settings);
    let _worker = Service::start("worker", &env, &[]);
    let _api = Service::start("api", &env, &[]);
    let _ingestor = Service::start("ingestor", &env, &[]);
    let api = format!("http://127.0.0.1:{api_port}");
    wait_until_ok(&format!("{api}/health/readyz")).await;

    let lines = corpus_with_ids(40);
    let file = corpus_file(&lines);
    let options = ["--queue", QUEUE, "--native", "--names"];
    let published = publish_amqp(&broker.url, &options, &files(&file)).await;
    assert_eq!(published.len(), lines.len());
    wait_for_messages(&servers.client(), published.len() as u64).await;

    for (line, sent) in lines.iter().zip(&published) {
        let url = format!("{api}/id?id={}&meta=usernames&meta=packages", sent.id);
        let stored = get_json(&url)
            .await
            .unwrap_or_else(|| panic!("/id has no {}", sent.id));
        let original: Value = serde_json::from_str(line).expect("corpus line");
        assert_eq!(stored["msg_id"], sent.id.as_str());
        assert_eq!(stored["topic"], sent.topic.as_str());
        assert_eq!(stored["msg"], original["msg"], "{}", sent.id);
        let sent_at = parse_time(&sent.sent_at).expect("sent-at is ISO 8601");
        assert_eq!(stored["timestamp"].as_f64(), Some(sent_at.trunc()));
        assert_eq!(stored["headers"]["sent-at"], sent.sent_at.as_str());
        assert_eq!(
            stored["headers"]["fedora_messaging_schema"],
            "statscache.test.named"
        );
        assert_eq!(
            stored["meta"]["usernames"],
            serde_json::json!(sent.usernames)
        );
        assert_eq!(stored["meta"]["packages"], serde_json::json!(sent.packages));
    }
    // /raw finds them by the declared user, as datagrepper's `user=` does.
    let user0 = published
        .iter()
        .filter(|sent| sent.usernames == ["user0"])
        .count();
    let raw = get_json(&format!("{api}/raw?user=user0&rows_per_page=100"))
        .await
        .expect("/raw answers");
    assert_eq!(raw["total"].as_u64(), Some(user0 as u64), "{raw}");
    let first = &raw["raw_messages"][0];
    assert!(
        first["headers"]["fedora_messaging_user_user0"] == true,
        "{first}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bridged_copies_on_zeromq_and_amqp_are_counted_once() {
    let (servers, broker) = tokio::join!(Servers::start(), RabbitMq::start());
    let api_port = free_port();
    let admin = free_port();
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let mut settings = amqp_settings(&broker, admin);
    settings.push(("STATSCACHE_API__LISTEN", format!("127.0.0.1:{api_port}")));
    settings.push((
        "STATSCACHE_INGESTOR__ZEROMQ__ENDPOINTS",
        format!("[{endpoint}]"),
    ));
    let env = servers.env(&settings);
    let _worker = Service::start("worker", &env, &[]);
    let _api = Service::start("api", &env, &[]);
    let _ingestor = Service::start("ingestor", &env, &[]);
    let api = format!("http://127.0.0.1:{api_port}");
    wait_until_ok(&format!("{api}/health/readyz")).await;
    wait_until_ok(&format!("http://127.0.0.1:{admin}/health/readyz")).await;

    let lines = corpus_with_ids(60);
    let file = corpus_file(&lines);
    // The zmq->amqp bridge's copies: same msg_id, body and headers, on the other bus.
    let paths = files(&file);
    let (amqp_copies, _) = tokio::join!(
        publish_amqp(&broker.url, &["--queue", QUEUE], &paths),
        publish_corpus(&endpoint, &paths, 1, &[]),
    );
    assert_eq!(amqp_copies.len(), lines.len());

    // Both copies of every message reached the ingestor...
    let metrics_url = format!("http://127.0.0.1:{admin}/metrics");
    wait_for(
        "both copies of every message",
        Duration::from_secs(240),
        || {
            let metrics_url = metrics_url.clone();
            let expected = lines.len();
            async move {
                let text = reqwest::get(&metrics_url).await.ok()?.text().await.ok()?;
                let stored = |source: &str| {
                    let mut total = 0.0;
                    for family in ["relayed", "duplicates"] {
                        let prefix =
                            format!("statscache_ingestor_{family}_total{{source=\"{source}\"}} ");
                        for line in text.lines() {
                            if let Some(value) = line.strip_prefix(&prefix) {
                                total += value.parse::<f64>().unwrap_or(0.0);
                            }
                        }
                    }
                    total as usize
                };
                (stored("amqp") == expected && stored("zeromq") == expected).then_some(())
            }
        },
    )
    .await;
    // ...and each is stored and counted once.
    wait_for_messages(&servers.client(), lines.len() as u64).await;
    statscache_tests::wait_for_consumer_drained(&servers.nats.url).await;
    let counts: BTreeMap<String, u64> = served_counts(&api, "volume")
        .await
        .expect("volume statistic");
    assert_eq!(
        counts.values().sum::<u64>(),
        lines.len() as u64,
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_ingestor_loses_nothing_and_stores_each_message_once() {
    let (nats, broker) = tokio::join!(NatsServer::start(), RabbitMq::start());
    let lines = corpus_with_ids(300);
    let file = corpus_file(&lines);
    let expected = msg_ids(&lines);
    let publishing = tokio::spawn({
        let url = broker.url.clone();
        let paths = files(&file);
        async move { publish_amqp(&url, &["--queue", QUEUE, "--rate", "60"], &paths).await }
    });
    let admin = free_port();
    let env = nats_env(&nats, &amqp_settings(&broker, admin));
    let first = Service::start("ingestor", &env, &[]);
    wait_for(
        "a part of the stream to be stored",
        Duration::from_secs(240),
        || async { (stream_ids(&nats).await.len() >= 60).then_some(()) },
    )
    .await;
    first.kill(); // SIGKILL mid-stream: its unacked deliveries go back to the queue
    let stored_before = stream_ids(&nats).await.len();
    assert!(
        stored_before < lines.len(),
        "the stream ended before the kill"
    );
    let _second = Service::start("ingestor", &env, &[]);
    let published = publishing.await.expect("publisher task");
    assert_eq!(published.len(), lines.len());
    wait_for_stream_ids(&nats, &expected).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_broker_is_reconnected_and_nothing_is_lost() {
    let (nats, mut broker) = tokio::join!(NatsServer::start(), RabbitMq::start());
    let lines = corpus_with_ids(200);
    let file = corpus_file(&lines);
    let expected = msg_ids(&lines);
    let admin = free_port();
    let env = nats_env(&nats, &amqp_settings(&broker, admin));
    let _ingestor = Service::start("ingestor", &env, &[]);
    let publishing = tokio::spawn({
        let url = broker.url.clone();
        let paths = files(&file);
        async move { publish_amqp(&url, &["--queue", QUEUE, "--rate", "40"], &paths).await }
    });
    wait_for(
        "a part of the stream to be stored",
        Duration::from_secs(240),
        || async { (stream_ids(&nats).await.len() >= 40).then_some(()) },
    )
    .await;
    // While the broker is down the ingestor says it is not ready, naming the source; it is
    // ready again once it consumes.
    broker.stop().await;
    let stopped = std::time::Instant::now();
    let readyz = format!("http://127.0.0.1:{admin}/health/readyz");
    let verdict = wait_for(
        "readiness to name the AMQP source down",
        Duration::from_secs(60),
        || async {
            let response = reqwest::get(&readyz).await.ok()?;
            let status = response.status();
            let body = response.text().await.ok()?;
            (status == reqwest::StatusCode::SERVICE_UNAVAILABLE && body.contains("amqp: down"))
                .then_some(body)
        },
    )
    .await;
    eprintln!(
        "not ready {:?} after the broker stopped: {verdict}",
        stopped.elapsed()
    );
    broker.start_again().await;
    let published = publishing.await.expect("publisher task");
    assert_eq!(published.len(), lines.len());
    wait_for_stream_ids(&nats, &expected).await;
    wait_until_ok(&readyz).await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    assert!(
        metrics.contains("statscache_ingestor_source_errors_total{source=\"amqp\"}"),
        "the broker restart was not noticed: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_deliveries_are_dead_lettered_and_do_not_block_the_queue() {
    let (nats, broker) = tokio::join!(NatsServer::start(), RabbitMq::start());
    let admin = free_port();
    let env = nats_env(&nats, &amqp_settings(&broker, admin));
    let ingestor = Service::start("ingestor", &env, &[]);
    let lines = corpus_with_ids(20);
    let file = corpus_file(&lines);
    let published = publish_amqp(&broker.url, &["--queue", QUEUE, "--poison"], &files(&file)).await;
    let expected: BTreeSet<String> = published.iter().map(|sent| sent.id.clone()).collect();
    wait_for_stream_ids(&nats, &expected).await;

    let reasons = wait_for("three dead letters", Duration::from_secs(120), || async {
        let reasons = header_values(&nats.url, "STATSCACHE_DEAD_LETTER", "Statscache-Reason").await;
        (reasons.len() >= 3).then_some(reasons)
    })
    .await;
    let reasons: BTreeSet<String> = reasons.into_iter().collect();
    let wanted: BTreeSet<String> = ["missing_msg_id", "not_json", "too_large"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(reasons, wanted);

    // Every delivery was acked: once the ingestor is gone, nothing returns to the queue.
    let exited = ingestor.terminate_within(Duration::from_secs(60)).await;
    assert!(
        exited.is_some_and(|status| status.success()),
        "the ingestor did not exit cleanly on SIGTERM: {exited:?}"
    );
    let left = queue_depth(&broker).await;
    assert_eq!(left, 0, "deliveries left in the queue");
}

/// Messages ready in the test queue (pika's passive declare).
async fn queue_depth(broker: &RabbitMq) -> u64 {
    let script = format!(
        "import pika\nc = pika.BlockingConnection(pika.URLParameters({url:?}))\nprint(c.channel().queue_declare({QUEUE:?}, passive=True).method.message_count)",
        url = broker.url
    );
    let output = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .await
        .expect("run python3");
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim().parse().unwrap_or_else(|_| {
        panic!(
            "queue depth: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Midnight UTC of 2026-11-23: the days the bridged test's messages cross into.
const BRIDGE_MIDNIGHT: f64 = 1_795_910_400.0;

/// The ZeroMQ original and the zmq->amqp bridge's copy of message `index` of `original`: the
/// copy carries the bridge's clock, later than the original by enough to cross a second, a
/// minute, an hour or a day boundary (`index % 4`), on one of eight days.
fn original_and_bridged(original: &str, index: usize) -> (String, String) {
    let day = BRIDGE_MIDNIGHT - (index / 4) as f64 * 86_400.0;
    let two_hours_before = day - 7_200.0;
    let (timestamp, delay) = match index % 4 {
        0 => (two_hours_before - 30.0 + 0.7, 0.5),
        1 => (two_hours_before - 0.3, 2.0),
        2 => (two_hours_before - 20.0, 150.0),
        _ => (day - 20.0, 150.0),
    };
    let mut envelope: Value = serde_json::from_str(original).expect("corpus line");
    envelope["timestamp"] = Value::from(timestamp);
    let zeromq = envelope.to_string();
    envelope["timestamp"] = Value::from(timestamp + delay);
    (zeromq, envelope.to_string())
}

/// Publishes `zeromq` with a ZeroMQ publisher on `endpoint` and `bridged` with the
/// fedora-messaging publisher, `sent-at` from their timestamps, at once.
async fn publish_on_both(endpoint: &str, broker: &RabbitMq, zeromq: &[String], bridged: &[String]) {
    let (zeromq, bridged) = (corpus_file(zeromq), corpus_file(bridged));
    let (zeromq, bridged) = (files(&zeromq), files(&bridged));
    let options = ["--queue", QUEUE, "--sent-at-from-envelope"];
    tokio::join!(
        publish_corpus(endpoint, &zeromq, 1, &[]),
        publish_amqp(&broker.url, &options, &bridged),
    );
}

async fn summed_metric(admins: &[u16], name: &str) -> u64 {
    let mut sum = 0.0;
    for admin in admins {
        let text = statscache_tests::admin_metrics(*admin).await;
        sum += statscache_tests::metric(&text, name);
    }
    sum as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn bridged_copies_stamped_later_count_once_as_the_copy_that_arrived_first() {
    let (servers, broker) = tokio::join!(Servers::start(), RabbitMq::start());
    let api_port = free_port();
    let admin = free_port();
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let window = Duration::from_secs(2);
    let mut settings = amqp_settings(&broker, admin);
    settings.push(("STATSCACHE_API__LISTEN", format!("127.0.0.1:{api_port}")));
    settings.push((
        "STATSCACHE_INGESTOR__ZEROMQ__ENDPOINTS",
        format!("[{endpoint}]"),
    ));
    settings.push((
        "STATSCACHE_NATS__DUPLICATE_WINDOW",
        format!("{}s", window.as_secs()),
    ));
    let env = servers.env(&settings);
    let worker_admins = [free_port(), free_port()];
    let mut services = Vec::new();
    for (worker_admin, batch) in worker_admins.iter().zip([3, 5]) {
        let mut worker_env = env.clone();
        worker_env.push((
            "STATSCACHE_WORKER__ADMIN_LISTEN".into(),
            format!("127.0.0.1:{worker_admin}"),
        ));
        worker_env.push(("STATSCACHE_WORKER__BATCH_SIZE".into(), batch.to_string()));
        services.push(Service::start("worker", &worker_env, &[]));
    }
    services.push(Service::start("api", &env, &[]));
    services.push(Service::start("ingestor", &env, &[]));
    let api = format!("http://127.0.0.1:{api_port}");
    wait_until_ok(&format!("{api}/health/readyz")).await;
    wait_until_ok(&format!("http://127.0.0.1:{admin}/health/readyz")).await;

    // Half the messages reach ZeroMQ first, the other half the bridge first.
    let originals = corpus_with_ids(32);
    let mut counted = Vec::new();
    let mut arrive_first: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let mut arrive_second: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for (index, original) in originals.iter().enumerate() {
        let (zeromq, bridged) = original_and_bridged(original, index);
        if (index / 4) % 2 == 0 {
            counted.push(zeromq.clone());
            arrive_first[0].push(zeromq);
            arrive_second[1].push(bridged);
        } else {
            counted.push(bridged.clone());
            arrive_first[1].push(bridged);
            arrive_second[0].push(zeromq);
        }
    }
    let [zeromq_first, amqp_first] = arrive_first;
    let [zeromq_second, amqp_second] = arrive_second;
    publish_on_both(&endpoint, &broker, &zeromq_first, &amqp_first).await;
    wait_for_stream_ids(&servers.nats, &msg_ids(&originals)).await;
    // Then, the duplicate window past, the other copies: all stored, none counted.
    tokio::time::sleep(window + Duration::from_secs(1)).await;
    publish_on_both(&endpoint, &broker, &zeromq_second, &amqp_second).await;
    wait_for(
        "the stream to keep both copies",
        Duration::from_secs(240),
        || async { (stream_ids(&servers.nats).await.len() == 2 * originals.len()).then_some(()) },
    )
    .await;
    statscache_tests::wait_for_consumer_drained(&servers.nats.url).await;

    assert_served(&api, &every_bucket(&counted)).await;
    assert_history_lists_each_once(&api, &counted).await;
    let copies = summed_metric(&worker_admins, "statscache_worker_copies_total").await;
    assert_eq!(
        copies,
        originals.len() as u64,
        "copies counted by the workers"
    );
    let restamped = summed_metric(
        &worker_admins,
        r#"statscache_worker_copy_differences_total{field="timestamp"}"#,
    )
    .await;
    assert_eq!(restamped, originals.len() as u64, "re-stamped copies");

    for mode in ["--check", "--rebuild", "--check"] {
        let output = statscache_tests::run_command("worker", &env, &["rollup", mode]).await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "rollup {mode}: {stdout}");
        if mode == "--check" {
            assert_eq!(stdout, "", "rollup --check found differences");
        }
    }
    assert_served(&api, &every_bucket(&counted)).await;
}
