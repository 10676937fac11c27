//! The ZeroMQ edge against real pyzmq publishers that behave as production ones do: they bind
//! when they start (at any moment), send whoever listens, restart, and may send ZMTP
//! heartbeats. Nothing sent a second after a publisher binds may be lost; what fedmsg's `i`
//! says was lost is counted, exported and, with the real datagrepper configured, backfilled at
//! once; a restarted ingestor says how long it received nothing, and counts from `i` what it
//! missed meanwhile. A hostile peer declaring frames of any size only loses its connection.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream;
use serde_json::{json, Value};
use statscache_tests::tcp_proxy::TcpProxy;
use statscache_tests::zmtp_peer::{Declaration, HostilePeer};
use statscache_tests::{
    admin_metrics, fedmsg_python, free_port, header_values, ingestor_env, metric,
    publisher_command, repo_root, stream_messages, wait_for, wait_until_ok, Datagrepper,
    NatsServer, Service,
};

/// A production publisher's schedule: bind within `--bind-after-random` seconds, send one
/// second after binding (whoever has subscribed by then), paced.
const PRODUCTION_PUBLISHER: [&str; 6] = [
    "--bind-after-random",
    "3",
    "--send-after",
    "1",
    "--interval",
    "0.01",
];

/// A publisher that went silent without closing (a black hole between it and the ingestor) is
/// given up after `idle-timeout`, and a new publisher on the endpoint loses nothing it sends a
/// second after binding.
#[tokio::test(flavor = "multi_thread")]
async fn a_publisher_gone_silent_without_closing_is_replaced_and_its_successor_loses_nothing() {
    const MESSAGES: u64 = 30;
    let nats = NatsServer::start().await;
    let publisher_port = free_port();
    let publisher_endpoint = format!("tcp://127.0.0.1:{publisher_port}");
    let proxy = TcpProxy::start(publisher_port).await;
    let idle = [(
        "STATSCACHE_INGESTOR__ZEROMQ__IDLE_TIMEOUT".to_string(),
        "2s".to_string(),
    )];
    let (_ingestor, admin) = start_ingestor(&nats, &[proxy.endpoint()], &idle).await;
    let jetstream = jetstream_of(&nats).await;
    let work = tempfile::TempDir::new().expect("temp dir");

    // The first publisher, reached through the proxy, stays bound after sending.
    let first = write_lines(
        &work.path().join("first.jsonl"),
        &envelopes("silent-first", MESSAGES, epoch_now()),
    );
    let mut first_publisher = publisher_command(&publisher_endpoint, &[first])
        .args(["--subscribers", "1", "--linger", "600"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the first publisher");
    wait_for_stream(&jetstream, MESSAGES).await;

    // It goes silent without a word, then dies unseen behind the black hole.
    proxy.black_hole();
    first_publisher
        .kill()
        .await
        .expect("kill -9 the first publisher");
    wait_for(
        "the ingestor to give up the silent connection",
        Duration::from_secs(120),
        || async { (proxy.given_up_by_client() > 0).then_some(()) },
    )
    .await;

    // A new publisher binds the endpoint and sends one second later, whoever listens.
    proxy.reopen().await;
    let second = write_lines(
        &work.path().join("second.jsonl"),
        &envelopes("silent-second", MESSAGES, epoch_now()),
    );
    let output = run_publisher(
        &publisher_endpoint,
        &second,
        &["--send-after", "1", "--interval", "0.01"],
    )
    .await;
    assert!(
        output.contains(&format!("sent {MESSAGES} messages")),
        "{output}"
    );
    wait_for_stream(&jetstream, 2 * MESSAGES).await;
    let text = admin_metrics(admin).await;
    assert_eq!(
        endpoint_metric(&text, "missing_messages_total", &proxy.endpoint()),
        0.0,
        "{text}"
    );
}

/// `count` envelopes of one publishing process: `i` from 1, distinct ids, event times one
/// second apart from `first_time`.
fn envelopes(tag: &str, count: u64, first_time: i64) -> Vec<Value> {
    let mut messages = Vec::new();
    for index in 0..count {
        messages.push(json!({
            "topic": "org.fedoraproject.prod.edge.test",
            "msg": {"index": index},
            "msg_id": format!("2026-edge-{tag}-{index}"),
            "i": index + 1,
            "timestamp": first_time + index as i64,
            "username": "apache",
        }));
    }
    messages
}

fn write_lines(path: &Path, messages: &[Value]) -> PathBuf {
    let lines: Vec<String> = messages.iter().map(Value::to_string).collect();
    std::fs::write(path, lines.join("\n") + "\n").expect("write messages");
    path.to_path_buf()
}

fn epoch_now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn jetstream_of(nats: &NatsServer) -> jetstream::Context {
    jetstream::new(async_nats::connect(&nats.url).await.expect("nats"))
}

async fn wait_for_stream(jetstream: &jetstream::Context, expected: u64) {
    wait_for(
        &format!("{expected} messages in the stream"),
        Duration::from_secs(120),
        || async { (stream_messages(jetstream, "FEDMSG").await == expected).then_some(()) },
    )
    .await;
}

/// Runs a publisher to its end; returns its output.
async fn run_publisher(endpoint: &str, file: &Path, options: &[&str]) -> String {
    let mut command = publisher_command(endpoint, &[file.to_path_buf()]);
    command.args(options);
    statscache_tests::run_publisher(command).await
}

/// The `statscache_ingestor_<name>{endpoint="..."}` sample.
fn endpoint_metric(text: &str, name: &str, endpoint: &str) -> f64 {
    metric(
        text,
        &format!("statscache_ingestor_{name}{{endpoint=\"{endpoint}\"}}"),
    )
}

/// An ingestor subscribed to `endpoints` (plus `extra` settings), ready; with its admin port.
async fn start_ingestor(
    nats: &NatsServer,
    endpoints: &[String],
    extra: &[(String, String)],
) -> (Service, u16) {
    let admin = free_port();
    let mut env = ingestor_env(nats, endpoints, admin);
    env.extend_from_slice(extra);
    let ingestor = Service::start("ingestor", &env, &[]);
    wait_until_ok(&format!("http://127.0.0.1:{admin}/health/readyz")).await;
    (ingestor, admin)
}

#[tokio::test(flavor = "multi_thread")]
async fn publishers_binding_at_any_moment_lose_nothing_sent_a_second_after_binding() {
    const MESSAGES: u64 = 40;
    let nats = NatsServer::start().await;
    let endpoints: Vec<String> = (0..3)
        .map(|_| format!("tcp://127.0.0.1:{}", free_port()))
        .collect();
    let (_ingestor, admin) = start_ingestor(&nats, &endpoints, &[]).await;
    let jetstream = jetstream_of(&nats).await;
    let work = tempfile::TempDir::new().expect("temp dir");

    // Two rounds: every endpoint is bound by a new publisher process at a random moment, which
    // sends a second later and exits; the second round binds the same endpoints again.
    let mut expected = 0;
    for round in 0..2 {
        let mut publishers = Vec::new();
        for (index, endpoint) in endpoints.iter().enumerate() {
            let tag = format!("round{round}-endpoint{index}");
            let messages = envelopes(&tag, MESSAGES, epoch_now());
            let file = write_lines(&work.path().join(format!("{tag}.jsonl")), &messages);
            let endpoint = endpoint.clone();
            publishers.push(tokio::spawn(async move {
                run_publisher(&endpoint, &file, &PRODUCTION_PUBLISHER).await
            }));
        }
        for publisher in publishers {
            let output = publisher.await.expect("publisher task");
            assert!(
                output.contains(&format!("sent {MESSAGES} messages")),
                "{output}"
            );
        }
        expected += MESSAGES * endpoints.len() as u64;
        wait_for_stream(&jetstream, expected).await;
    }

    // A new process restarting `i` at 1 is not a loss.
    let text = admin_metrics(admin).await;
    for endpoint in &endpoints {
        assert_eq!(
            endpoint_metric(&text, "sequence_gaps_total", endpoint),
            0.0,
            "{text}"
        );
        assert_eq!(
            endpoint_metric(&text, "missing_messages_total", endpoint),
            0.0,
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publisher_killed_and_restarted_mid_stream_loses_nothing_sent_a_second_after_binding() {
    const MESSAGES: u64 = 60;
    let nats = NatsServer::start().await;
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let (_ingestor, admin) = start_ingestor(&nats, std::slice::from_ref(&endpoint), &[]).await;
    let jetstream = jetstream_of(&nats).await;
    let work = tempfile::TempDir::new().expect("temp dir");

    let mut expected = 0;
    for process in 0..3 {
        let tag = format!("process{process}");
        let messages = envelopes(&tag, MESSAGES, epoch_now());
        let file = write_lines(&work.path().join(format!("{tag}.jsonl")), &messages);
        // The process stays bound after sending, until it is killed as a crash would.
        let mut publisher = publisher_command(&endpoint, &[file])
            .args(PRODUCTION_PUBLISHER)
            .args(["--linger", "600"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the publisher");
        expected += MESSAGES;
        wait_for_stream(&jetstream, expected).await;
        publisher.kill().await.expect("kill -9 the publisher");
    }

    let text = admin_metrics(admin).await;
    assert_eq!(
        endpoint_metric(&text, "missing_messages_total", &endpoint),
        0.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "statscache_ingestor_source_errors_total{source=\"zeromq\"}"
        ) >= 2.0,
        "each kill is a lost connection: {text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_real_fedmsg_library_restarted_mid_stream_loses_nothing_and_shows_no_false_gap() {
    const MESSAGES: u64 = 50;
    let python = fedmsg_python().await;
    let nats = NatsServer::start().await;
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let (_ingestor, admin) = start_ingestor(&nats, std::slice::from_ref(&endpoint), &[]).await;
    let jetstream = jetstream_of(&nats).await;

    // fedmsg.init() binds, then sleeps its post_init_sleep (1 s) before anything is published;
    // here that second starts once the ingestor has connected, so a loaded machine that is slow
    // to notice the bind cannot lose the first messages (how soon a bind is noticed is checked
    // by the pyzmq publishers above; this test is about what the library sends).
    let mut expected = 0;
    for _process in 0..3 {
        let mut publisher = tokio::process::Command::new(&python)
            .arg(repo_root().join("tests/support/fedmsg_library_publish.py"))
            .arg(&endpoint)
            .arg(MESSAGES.to_string())
            .args([
                "--bind-after-random",
                "2",
                "--interval",
                "0.01",
                "--linger",
                "600",
                "--until-connected",
                "60",
            ])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start the fedmsg publisher");
        expected += MESSAGES;
        wait_for_stream(&jetstream, expected).await;
        publisher.kill().await.expect("kill -9 the publisher");
    }

    let text = admin_metrics(admin).await;
    assert_eq!(
        endpoint_metric(&text, "sequence_gaps_total", &endpoint),
        0.0,
        "{text}"
    );
    assert_eq!(
        endpoint_metric(&text, "missing_messages_total", &endpoint),
        0.0,
        "{text}"
    );
}

/// `count` messages from `first_time` with the ones at `lost` indexes left out of what the
/// publisher sends: (everything, what is sent).
fn with_losses(tag: &str, count: u64, first_time: i64, lost: &[u64]) -> (Vec<Value>, Vec<Value>) {
    let everything = envelopes(tag, count, first_time);
    let mut sent = Vec::new();
    for (index, message) in everything.iter().enumerate() {
        if !lost.contains(&(index as u64)) {
            sent.push(message.clone());
        }
    }
    (everything, sent)
}

/// Indexes the live feed loses: two gaps, of three messages and of one.
const LOST: [u64; 4] = [9, 10, 11, 24];
const GAP_MESSAGES: u64 = 30;

#[tokio::test(flavor = "multi_thread")]
async fn a_gap_in_i_is_counted_and_exported_and_a_restart_reports_the_downtime_not_backfilled() {
    let nats = NatsServer::start().await;
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let (ingestor, admin) = start_ingestor(&nats, std::slice::from_ref(&endpoint), &[]).await;
    let jetstream = jetstream_of(&nats).await;
    let work = tempfile::TempDir::new().expect("temp dir");

    // Event times ten minutes ago: the stream's newest message is that old at the restart.
    let (_, sent) = with_losses("gap", GAP_MESSAGES, epoch_now() - 600, &LOST);
    let file = write_lines(&work.path().join("sent.jsonl"), &sent);
    let output = run_publisher(&endpoint, &file, &["--subscribers", "1"]).await;
    assert!(output.contains("sent 26 messages"), "{output}");
    wait_for_stream(&jetstream, sent.len() as u64).await;
    let text = wait_for(
        "the gaps to be counted",
        Duration::from_secs(60),
        || async {
            let text = admin_metrics(admin).await;
            (endpoint_metric(&text, "sequence_gaps_total", &endpoint) == 2.0).then_some(text)
        },
    )
    .await;
    assert_eq!(
        endpoint_metric(&text, "missing_messages_total", &endpoint),
        LOST.len() as f64,
        "{text}"
    );

    // Restarted without datagrepper: the time since the newest message arrived is not
    // backfilled, and the ingestor says so. It is measured from the arrival, seconds ago, not
    // from the event times ten minutes old (old history arriving last is no downtime).
    assert!(ingestor.terminate(), "the ingestor exits cleanly");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_restarted, admin) = start_ingestor(&nats, std::slice::from_ref(&endpoint), &[]).await;
    let readiness = reqwest::get(format!("http://127.0.0.1:{admin}/health/readyz"))
        .await
        .expect("readyz")
        .text()
        .await
        .expect("readyz body");
    assert!(readiness.starts_with("ready"), "{readiness}");
    assert!(
        readiness.contains("not backfilled (no datagrepper is configured)"),
        "{readiness}"
    );
    let text = admin_metrics(admin).await;
    let downtime = metric(&text, "statscache_ingestor_startup_downtime_seconds");
    let not_backfilled = metric(&text, "statscache_ingestor_downtime_not_backfilled_seconds");
    assert!((1.0..300.0).contains(&downtime), "{text}");
    assert_eq!(not_backfilled, downtime, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gap_in_i_is_backfilled_from_datagrepper_without_waiting_for_reconciliation() {
    let nats = NatsServer::start().await;
    let work = tempfile::TempDir::new().expect("temp dir");
    let (everything, sent) = with_losses("backfill", GAP_MESSAGES, epoch_now() - 3600, &LOST);
    let datagrepper =
        Datagrepper::start(&write_lines(&work.path().join("all.jsonl"), &everything)).await;
    // Only the lost spans can bring the lost messages: no start-up backfill, no reconciliation.
    let mut settings = Vec::new();
    for (key, value) in [
        ("URL", datagrepper.url.as_str()),
        ("STARTUP_MAX_BACKFILL", "0s"),
        ("RECONCILE", "false"),
        ("REQUESTS_PER_SECOND", "50"),
        ("REQUEST_TIMEOUT", "5s"),
    ] {
        settings.push((
            format!("STATSCACHE_INGESTOR__DATAGREPPER__{key}"),
            value.to_string(),
        ));
    }
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let (_ingestor, admin) =
        start_ingestor(&nats, std::slice::from_ref(&endpoint), &settings).await;
    let jetstream = jetstream_of(&nats).await;

    let file = write_lines(&work.path().join("sent.jsonl"), &sent);
    let output = run_publisher(&endpoint, &file, &["--subscribers", "1"]).await;
    assert!(output.contains("sent 26 messages"), "{output}");
    wait_for_stream(&jetstream, everything.len() as u64).await;

    let text = admin_metrics(admin).await;
    assert_eq!(
        endpoint_metric(&text, "sequence_gaps_total", &endpoint),
        2.0,
        "{text}"
    );
    assert_eq!(
        endpoint_metric(&text, "missing_messages_total", &endpoint),
        LOST.len() as f64,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "statscache_ingestor_relayed_total{source=\"datagrepper\"}"
        ) >= LOST.len() as f64,
        "{text}"
    );
}

/// A peer at a configured endpoint declaring frames over the message limit (NATS' payload
/// limit and a topic) — just over it, 64 GiB, 2^63 and 2^64 − 1 bytes, and 300 MB sent for
/// real — loses each connection, counted, before anything is buffered (the one just over the
/// limit, whose body never comes, once it has stalled): the ingestor lives, stays small, and a
/// real publisher on another endpoint loses nothing meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn frames_over_the_limit_end_their_connection_unread_and_other_endpoints_keep_flowing() {
    const MESSAGES: u64 = 300;
    let nats = NatsServer::start().await;
    let client = async_nats::connect(&nats.url).await.expect("nats");
    let limit = client.server_info().max_payload as u64 + 1024;
    let declarations = vec![
        Declaration {
            declared: limit + 1,
            sent: 0,
        },
        Declaration {
            declared: 1 << 36,
            sent: 0,
        },
        Declaration {
            declared: 1 << 63,
            sent: 0,
        },
        Declaration {
            declared: u64::MAX,
            sent: 0,
        },
        Declaration {
            declared: 300 << 20,
            sent: 300 << 20,
        },
    ];
    let peer = HostilePeer::start(declarations.clone()).await;
    let good = format!("tcp://127.0.0.1:{}", free_port());
    let (mut ingestor, admin) = start_ingestor(&nats, &[peer.endpoint(), good.clone()], &[]).await;
    let jetstream = jetstream_of(&nats).await;
    let work = tempfile::TempDir::new().expect("temp dir");

    let file = write_lines(
        &work.path().join("good.jsonl"),
        &envelopes("beside-hostile", MESSAGES, epoch_now()),
    );
    let output = run_publisher(&good, &file, &["--subscribers", "1", "--interval", "0.01"]).await;
    assert!(
        output.contains(&format!("sent {MESSAGES} messages")),
        "{output}"
    );
    wait_for_stream(&jetstream, MESSAGES).await;

    let dropped_sample = format!(
        "statscache_ingestor_zeromq_protocol_errors_total{{endpoint=\"{}\",reason=\"frame_too_large\"}}",
        peer.endpoint()
    );
    let text = wait_for(
        "every declaration to cost its connection",
        Duration::from_secs(120),
        || async {
            let text = admin_metrics(admin).await;
            (metric(&text, &dropped_sample) >= declarations.len() as f64).then_some(text)
        },
    )
    .await;
    assert!(!ingestor.has_exited(), "the ingestor died");
    let readyz = reqwest::get(format!("http://127.0.0.1:{admin}/health/readyz"))
        .await
        .expect("readyz");
    assert!(readyz.status().is_success());
    let peak = ingestor.peak_memory().expect("the ingestor runs");
    eprintln!(
        "{} hostile connections, each dropped; ingestor peak memory {} MiB",
        peer.connections(),
        peak >> 20
    );
    assert!(peak < 200 << 20, "peak memory {peak} bytes");
    assert_eq!(
        endpoint_metric(&text, "missing_messages_total", &good),
        0.0,
        "{text}"
    );
    // Each dropped connection left a dead letter saying what was declared.
    let reasons = header_values(&nats.url, "STATSCACHE_DEAD_LETTER", "Statscache-Reason").await;
    assert!(reasons.len() >= declarations.len(), "{reasons:?}");
    assert!(
        reasons.iter().all(|reason| reason == "frame_too_large"),
        "{reasons:?}"
    );
    let details = header_values(&nats.url, "STATSCACHE_DEAD_LETTER", "Statscache-Detail").await;
    let declared_2_63 = format!("a frame of {} bytes was declared", 1u64 << 63);
    assert!(
        details.iter().any(|detail| detail.contains(&declared_2_63)),
        "{details:?}"
    );
}

/// libzmq publishers (and proxies) may send ZMTP heartbeats: every PING is answered and the
/// connection kept, so nothing is lost (the `zeromq` crate alone dropped the connection at
/// each; the guard in front of it answers them).
#[tokio::test(flavor = "multi_thread")]
async fn a_libzmq_publisher_sending_heartbeats_every_100ms_loses_nothing() {
    const MESSAGES: u64 = 10_000;
    let nats = NatsServer::start().await;
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let (_ingestor, admin) = start_ingestor(&nats, std::slice::from_ref(&endpoint), &[]).await;
    let jetstream = jetstream_of(&nats).await;
    let work = tempfile::TempDir::new().expect("temp dir");

    let file = write_lines(
        &work.path().join("heartbeats.jsonl"),
        &envelopes("heartbeats", MESSAGES, epoch_now()),
    );
    // 20 s of sending: some 200 PINGs. The publisher drops a subscriber that has not answered
    // within 2 s (a wide margin on a loaded machine; without PONGs it would drop us at once).
    // It stays bound after sending, so that its exit is no lost connection.
    let mut publisher = publisher_command(&endpoint, &[file])
        .args([
            "--subscribers",
            "1",
            "--rate",
            "500",
            "--heartbeat-ivl",
            "100",
            "--heartbeat-timeout",
            "2000",
            "--linger",
            "600",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the publisher");
    wait_for_stream(&jetstream, MESSAGES).await;
    let text = admin_metrics(admin).await;
    assert_eq!(
        metric(
            &text,
            "statscache_ingestor_source_errors_total{source=\"zeromq\"}"
        ),
        0.0,
        "a connection was lost: {text}"
    );
    assert_eq!(
        endpoint_metric(&text, "missing_messages_total", &endpoint),
        0.0,
        "{text}"
    );
    publisher.kill().await.expect("stop the publisher");
}

/// A real publisher's one message over the limit (3 MiB, among 200 valid ones) is dropped
/// unread and dead-lettered, and costs nothing else: the connection is kept, and every
/// message after it is stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_publishers_one_message_over_the_limit_costs_only_itself() {
    const MESSAGES: u64 = 200;
    let nats = NatsServer::start().await;
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let (_ingestor, admin) = start_ingestor(&nats, std::slice::from_ref(&endpoint), &[]).await;
    let jetstream = jetstream_of(&nats).await;
    let work = tempfile::TempDir::new().expect("temp dir");

    let mut messages = envelopes("around-giant", MESSAGES, epoch_now());
    let giant = json!({
        "topic": "org.fedoraproject.prod.edge.giant",
        "msg": {"blob": "x".repeat(3 << 20)},
        "msg_id": "2026-edge-giant",
        "i": 1,
        "timestamp": epoch_now(),
        "username": "giant",
    });
    messages.insert(MESSAGES as usize / 2, giant);
    let file = write_lines(&work.path().join("giant.jsonl"), &messages);
    // It stays bound after sending, so that its exit is no lost connection.
    let mut publisher = publisher_command(&endpoint, &[file])
        .args(["--subscribers", "1", "--linger", "600"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the publisher");
    wait_for_stream(&jetstream, MESSAGES).await;

    let reasons = header_values(&nats.url, "STATSCACHE_DEAD_LETTER", "Statscache-Reason").await;
    assert_eq!(reasons, ["frame_too_large"]);
    let details = header_values(&nats.url, "STATSCACHE_DEAD_LETTER", "Statscache-Detail").await;
    assert!(details[0].contains("connection kept"), "{details:?}");
    let text = admin_metrics(admin).await;
    assert_eq!(
        metric(
            &text,
            "statscache_ingestor_source_errors_total{source=\"zeromq\"}"
        ),
        0.0,
        "the connection was lost: {text}"
    );
    assert_eq!(
        metric(
            &text,
            &format!("statscache_ingestor_zeromq_protocol_errors_total{{endpoint=\"{endpoint}\",reason=\"frame_too_large\"}}")
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        endpoint_metric(&text, "missing_messages_total", &endpoint),
        0.0,
        "{text}"
    );
    publisher.kill().await.expect("stop the publisher");
}

/// An ingestor killed -9 mid-stream at 800 messages a second, with no datagrepper, restarted
/// a few seconds later: it reads each publisher's last `i` back from the stream, and counts
/// from the first message after its start how many it missed, within 10 % of the truth.
#[tokio::test(flavor = "multi_thread")]
async fn an_ingestor_killed_at_800_a_second_counts_what_it_missed_from_i() {
    const MESSAGES: u64 = 20_000;
    let nats = NatsServer::start().await;
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let admin = free_port();
    let env = ingestor_env(&nats, std::slice::from_ref(&endpoint), admin);
    let first = Service::start("ingestor", &env, &[]);
    wait_until_ok(&format!("http://127.0.0.1:{admin}/health/readyz")).await;
    let jetstream = jetstream_of(&nats).await;
    let work = tempfile::TempDir::new().expect("temp dir");

    let file = write_lines(
        &work.path().join("steady.jsonl"),
        &envelopes("killed", MESSAGES, epoch_now()),
    );
    let mut publisher = publisher_command(&endpoint, &[file]);
    publisher.args(["--subscribers", "1", "--rate", "800", "--linger", "5"]);
    let publishing = tokio::spawn(statscache_tests::run_publisher(publisher));

    wait_for(
        "a third of the messages stored",
        Duration::from_secs(120),
        || async { (stream_messages(&jetstream, "FEDMSG").await >= MESSAGES / 3).then_some(()) },
    )
    .await;
    first.kill();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let restarted_admin = free_port();
    let env = ingestor_env(&nats, std::slice::from_ref(&endpoint), restarted_admin);
    let _restarted = Service::start("ingestor", &env, &[]);
    let output = publishing.await.expect("publisher task");
    assert!(
        output.contains(&format!("sent {MESSAGES} messages")),
        "{output}"
    );

    // Stored: everything that reached the stream, once the restarted ingestor is done.
    let stored = wait_for(
        "the stream to stop growing",
        Duration::from_secs(120),
        || {
            let jetstream = jetstream.clone();
            async move {
                let before = stream_messages(&jetstream, "FEDMSG").await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                let after = stream_messages(&jetstream, "FEDMSG").await;
                (before == after).then_some(after)
            }
        },
    )
    .await;
    let lost = MESSAGES - stored;
    let text = admin_metrics(restarted_admin).await;
    let reported = endpoint_metric(&text, "missing_messages_total", &endpoint);
    eprintln!("lost {lost} of {MESSAGES}; the restarted ingestor reported {reported}");
    assert!(lost > 0, "the kill lost nothing: the test proves nothing");
    let error = (reported - lost as f64).abs();
    assert!(
        error <= lost as f64 / 10.0,
        "reported {reported} missing, {lost} lost: {text}"
    );
    assert!(
        endpoint_metric(&text, "sequence_gaps_total", &endpoint) >= 1.0,
        "{text}"
    );
}

/// One envelope of a publishing process behind a relay: `username`, `certificate` (empty: an
/// unsigned message) and `topic` make its identity; `i` its number.
fn relayed_envelope(
    (username, certificate, topic): (&str, &str, &str),
    i: u64,
    msg_id: &str,
    timestamp: i64,
) -> Value {
    let mut envelope = json!({
        "topic": topic,
        "msg": {"relayed": msg_id},
        "msg_id": msg_id,
        "i": i,
        "timestamp": timestamp,
        "username": username,
    });
    if !certificate.is_empty() {
        envelope["crypto"] = json!("x509");
        envelope["certificate"] = json!(certificate);
    }
    envelope
}

/// Behind a relay, processes interleave: a long-running service, three worker processes of one
/// signed service (one identity), fedmsg-logger one-shots (`i` = 1 each), and odd numbers (`i`
/// = 0, `u64::MAX`). None of it is a loss. Restarted, the ingestor reads their numbers back
/// from the stream, and the long-running service's real gap of 7 is counted exactly.
#[tokio::test(flavor = "multi_thread")]
async fn behind_a_relay_interleaved_publishers_show_no_false_loss_and_a_real_one_is_counted() {
    const SERVICE: (&str, &str, &str) =
        ("apache", "", "org.fedoraproject.prod.bodhi.update.comment");
    const WORKERS: (&str, &str, &str) = (
        "apache",
        "CERT-koji-koji01",
        "org.fedoraproject.prod.buildsys.tag",
    );
    const ONE_SHOT: (&str, &str, &str) = ("threebean", "", "org.fedoraproject.prod.logger.log");
    let nats = NatsServer::start().await;
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let (ingestor, admin) = start_ingestor(&nats, std::slice::from_ref(&endpoint), &[]).await;
    let jetstream = jetstream_of(&nats).await;
    let work = tempfile::TempDir::new().expect("temp dir");
    let now = epoch_now();

    // Round one: the service at 1..60, each worker at 1..20, 30 one-shots, two odd numbers.
    let mut first = Vec::new();
    let mut workers = [0u64; 3];
    for step in 1..=60u64 {
        first.push(relayed_envelope(
            SERVICE,
            step,
            &format!("2026-service-{step}"),
            now,
        ));
        let worker = (step % 3) as usize;
        if workers[worker] < 20 {
            workers[worker] += 1;
            let i = workers[worker];
            first.push(relayed_envelope(
                WORKERS,
                i,
                &format!("2026-worker{worker}-{i}"),
                now,
            ));
        }
        if step % 2 == 0 {
            first.push(relayed_envelope(
                ONE_SHOT,
                1,
                &format!("2026-one-shot-a{step}"),
                now,
            ));
        }
    }
    first.push(relayed_envelope(SERVICE, 0, "2026-odd-zero", now));
    first.push(relayed_envelope(SERVICE, u64::MAX, "2026-odd-max", now));
    let file = write_lines(&work.path().join("first.jsonl"), &first);
    let output = run_publisher(&endpoint, &file, &["--subscribers", "1"]).await;
    assert!(
        output.contains(&format!("sent {} messages", first.len())),
        "{output}"
    );
    wait_for_stream(&jetstream, first.len() as u64).await;
    let text = admin_metrics(admin).await;
    assert_eq!(
        endpoint_metric(&text, "missing_messages_total", &endpoint),
        0.0,
        "{text}"
    );
    assert_eq!(
        endpoint_metric(&text, "sequence_gaps_total", &endpoint),
        0.0,
        "{text}"
    );

    // Restarted, the relay too: the service goes on from 61 but 66..=72 are lost; the workers go
    // on without loss; more one-shots.
    assert!(ingestor.terminate(), "the ingestor exits cleanly");
    let (_restarted, admin) = start_ingestor(&nats, std::slice::from_ref(&endpoint), &[]).await;
    let mut second = Vec::new();
    for i in 61..=80u64 {
        if !(66..=72).contains(&i) {
            second.push(relayed_envelope(
                SERVICE,
                i,
                &format!("2026-service-{i}"),
                now,
            ));
        }
        let worker = (i % 3) as usize;
        workers[worker] += 1;
        let next = workers[worker];
        second.push(relayed_envelope(
            WORKERS,
            next,
            &format!("2026-worker{worker}-{next}"),
            now,
        ));
        second.push(relayed_envelope(
            ONE_SHOT,
            1,
            &format!("2026-one-shot-b{i}"),
            now,
        ));
    }
    let file = write_lines(&work.path().join("second.jsonl"), &second);
    let output = run_publisher(&endpoint, &file, &["--subscribers", "1"]).await;
    assert!(
        output.contains(&format!("sent {} messages", second.len())),
        "{output}"
    );
    wait_for_stream(&jetstream, (first.len() + second.len()) as u64).await;
    let text = wait_for("the gap to be counted", Duration::from_secs(60), || async {
        let text = admin_metrics(admin).await;
        (endpoint_metric(&text, "sequence_gaps_total", &endpoint) >= 1.0).then_some(text)
    })
    .await;
    assert_eq!(
        endpoint_metric(&text, "missing_messages_total", &endpoint),
        7.0,
        "{text}"
    );
    assert_eq!(
        endpoint_metric(&text, "sequence_gaps_total", &endpoint),
        1.0,
        "{text}"
    );
}
