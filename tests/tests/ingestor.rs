//! The ingestor against a real ZeroMQ publisher and a real nats-server: bad input of every kind
//! is counted and dead-lettered while good messages keep flowing; replicas do not duplicate.

use std::io::Write;
use std::time::Duration;

use async_nats::jetstream;
use statscache_shared::topic::subject_to_topic;
use statscache_tests::{
    admin_metrics, fixture, free_port, ingestor_env, publish_corpus, run_command, stream_messages,
    wait_for, NatsServer, Service,
};

async fn wait_subscribed(admin: u16) {
    statscache_tests::wait_until_ok(&format!("http://127.0.0.1:{admin}/health/readyz")).await;
}

/// An ingestor subscribed to one fresh endpoint, ready; with the endpoint and its admin port.
async fn ingestor_on_one_endpoint(nats: &NatsServer) -> (Service, String, u16) {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let admin = free_port();
    let ingestor = Service::start(
        "ingestor",
        &ingestor_env(nats, std::slice::from_ref(&endpoint), admin),
        &[],
    );
    wait_subscribed(admin).await;
    (ingestor, endpoint, admin)
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_counted_and_dead_lettered_and_good_messages_still_flow() {
    let nats = NatsServer::start().await;
    let (_ingestor, endpoint, admin) = ingestor_on_one_endpoint(&nats).await;

    let mut input = tempfile::NamedTempFile::new().expect("input file");
    // Just over NATS' 1 MiB payload, so never storable, yet within what the ZeroMQ source
    // reads (the payload limit and a topic): dead-lettered, cut, and the connection kept. (A
    // bigger message is dropped unread: `zeromq_edge.rs`.)
    let giant = format!(
        r#"{{"topic":"org.fedoraproject.prod.big.payload","msg":{{"blob":"{}"}},"timestamp":1600000000}}"#,
        "x".repeat(1024 * 1024 - 60)
    );
    let lines: Vec<Vec<u8>> = vec![
        b"{not json".to_vec(),
        br#"{"topic": 5, "msg": {}, "timestamp": 1600000000}"#.to_vec(),
        br#"{"topic": "org.fedoraproject.prod.bodhi.update", "msg": {}}"#.to_vec(),
        b"\xff\xfe{\"topic\": \"org.fedoraproject.prod.a.b\"}".to_vec(),
        giant.into_bytes(),
        // Valid, with a topic NATS could not use as a subject as it is: it must flow, escaped.
        br#"{"topic":"org.fedoraproject.prod.odd topic.with *.and >","msg":{},"timestamp":1600000000,"msg_id":"2026-odd"}"#.to_vec(),
        br#"{"topic":"org.fedoraproject.prod.git.receive","msg":{},"timestamp":1600000001,"msg_id":"2026-good-after"}"#.to_vec(),
    ];
    for line in &lines {
        input.write_all(line).expect("write");
        input.write_all(b"\n").expect("write");
    }
    input.flush().expect("flush");
    let output = publish_corpus(
        &endpoint,
        &[input.path().to_path_buf()],
        1,
        &["a lonely frame"],
    )
    .await;
    assert!(output.contains("published 8"), "{output}");

    let client = async_nats::connect(&nats.url).await.expect("nats");
    let jetstream = jetstream::new(client);
    wait_for(
        "six dead letters and two messages",
        Duration::from_secs(60),
        || {
            let jetstream = jetstream.clone();
            async move {
                let dead = stream_messages(&jetstream, "STATSCACHE_DEAD_LETTER").await;
                let relayed = stream_messages(&jetstream, "FEDMSG").await;
                (dead == 6 && relayed == 2).then_some(())
            }
        },
    )
    .await;

    let text = admin_metrics(admin).await;
    for reason in [
        "not_json",
        "wrong_shape",
        "missing_timestamp",
        "not_utf8",
        "too_large",
        "bad_frames",
    ] {
        let line =
            format!(r#"statscache_ingestor_invalid_total{{reason="{reason}",source="zeromq"}} 1"#);
        assert!(text.contains(&line), "missing {line} in\n{text}");
    }

    // Every dead letter says why, and the odd topic is stored under a subject that maps back.
    let stream = jetstream
        .get_stream("STATSCACHE_DEAD_LETTER")
        .await
        .expect("dead letters");
    let mut reasons = Vec::new();
    for sequence in 1..=6 {
        let message = stream.get_raw_message(sequence).await.expect("dead letter");
        let reason = message
            .headers
            .get("Statscache-Reason")
            .map(|value| value.to_string());
        reasons.push(reason.unwrap_or_default());
    }
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "bad_frames",
            "missing_timestamp",
            "not_json",
            "not_utf8",
            "too_large",
            "wrong_shape"
        ]
    );
    let messages = jetstream.get_stream("FEDMSG").await.expect("messages");
    let odd = messages.get_raw_message(1).await.expect("odd message");
    assert_eq!(
        subject_to_topic("fedmsg", odd.subject.as_str()).expect("subject maps back"),
        "org.fedoraproject.prod.odd topic.with *.and >"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_the_same_endpoint_store_each_message_once() {
    let nats = NatsServer::start().await;
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let (first_admin, second_admin) = (free_port(), free_port());
    let endpoints = [endpoint.clone()];
    let _first = Service::start(
        "ingestor",
        &ingestor_env(&nats, &endpoints, first_admin),
        &[],
    );
    let _second = Service::start(
        "ingestor",
        &ingestor_env(&nats, &endpoints, second_admin),
        &[],
    );
    wait_subscribed(first_admin).await;
    wait_subscribed(second_admin).await;

    let output = publish_corpus(&endpoint, &[fixture("fedmsg-real.jsonl")], 2, &[]).await;
    assert!(
        output.contains("published 324 messages to 2 subscribers"),
        "{output}"
    );

    let client = async_nats::connect(&nats.url).await.expect("nats");
    let jetstream = jetstream::new(client);
    wait_for(
        "both replicas to have relayed everything",
        Duration::from_secs(60),
        || async {
            let mut acked = 0;
            for admin in [first_admin, second_admin] {
                for line in admin_metrics(admin).await.lines() {
                    let value = line
                        .strip_prefix(r#"statscache_ingestor_relayed_total{source="zeromq"} "#)
                        .or_else(|| {
                            line.strip_prefix(
                                r#"statscache_ingestor_duplicates_total{source="zeromq"} "#,
                            )
                        });
                    acked += value
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
            (acked == 2 * 324).then_some(())
        },
    )
    .await;
    assert_eq!(stream_messages(&jetstream, "FEDMSG").await, 324);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publisher_that_restarts_is_subscribed_to_again() {
    let nats = NatsServer::start().await;
    let (_ingestor, endpoint, _) = ingestor_on_one_endpoint(&nats).await;

    // A fedmsg hub restarting: one publisher process binds, sends and exits, then another binds
    // the same endpoint. The publisher waits for the ingestor's subscription each time, so every
    // message it sends is one the ingestor must relay.
    let lines = statscache_tests::corpus::real_lines();
    let work = tempfile::TempDir::new().expect("temp dir");
    let (first, second) = (
        work.path().join("first.jsonl"),
        work.path().join("second.jsonl"),
    );
    std::fs::write(&first, lines[..100].join("\n") + "\n").expect("write");
    std::fs::write(&second, lines[100..].join("\n") + "\n").expect("write");
    let client = async_nats::connect(&nats.url).await.expect("nats");
    let jetstream = jetstream::new(client);
    let mut expected = 0;
    for (part, count) in [(first, 100), (second, lines.len() - 100)] {
        let output = publish_corpus(&endpoint, &[part], 1, &[]).await;
        assert!(
            output.contains(&format!("published {count} messages")),
            "{output}"
        );
        expected += count as u64;
        wait_for("the publisher's messages", Duration::from_secs(60), || {
            let jetstream = jetstream.clone();
            async move { (stream_messages(&jetstream, "FEDMSG").await == expected).then_some(()) }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_and_tail_work_like_fedmsg_logger_and_fedmsg_tail() {
    use tokio::io::AsyncBufReadExt;

    let nats = NatsServer::start().await;
    let env = vec![("STATSCACHE_NATS__URL".to_string(), nats.url.clone())];
    let corpus = fixture("fedmsg-real.jsonl").to_string_lossy().into_owned();

    let output = run_command("ingestor", &env, &["publish", "--file", &corpus]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("324 relayed, 0 already"));
    // Again: every message is recognised as already in the stream.
    let output = run_command("ingestor", &env, &["publish", "--file", &corpus]).await;
    assert!(String::from_utf8_lossy(&output.stderr).contains("0 relayed, 324 already"));

    // Tail the last two messages of the stream, then a new one published by hand.
    let mut tail = statscache_tests::command("ingestor", &env, &["tail", "--last", "2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start tail");
    let stdout = tail.stdout.take().expect("tail stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut printed = Vec::new();
    for _ in 0..2 {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
        printed.push(line.expect("tail prints").expect("read").expect("a line"));
    }
    assert!(printed[0].starts_with("323 "), "{printed:?}");
    assert!(printed[1].starts_with("324 "), "{printed:?}");
    let args = [
        "publish",
        "--topic",
        "org.fedoraproject.dev.logger.log",
        "--msg",
        r#"{"log": "hello"}"#,
    ];
    let output = run_command("ingestor", &env, &args).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
    let line = line.expect("tail prints").expect("read").expect("a line");
    assert!(
        line.starts_with("325 org.fedoraproject.dev.logger.log {"),
        "{line}"
    );
    assert!(line.contains(r#""log":"hello""#), "{line}");

    // An invalid envelope is refused with a non-zero exit, and dead-lettered.
    let mut bad = tempfile::NamedTempFile::new().expect("file");
    writeln!(
        bad,
        "{{\"topic\": \"org.fedoraproject.dev.x.y\", \"msg\": {{}}}}"
    )
    .expect("write");
    let bad_path = bad.path().to_string_lossy().into_owned();
    let output = run_command("ingestor", &env, &["publish", "--file", &bad_path]).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("1 rejected"));
}
