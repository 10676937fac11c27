//! Where ingested input is stored: the dead-letter stream stays within its bounds however much
//! a hostile publisher sends (its oldest letters dropped and counted, the valid messages all
//! stored), and a JetStream store that refuses writes makes the ingestor not ready at once, and
//! ready again once it stores.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::json;
use statscache_tests::{
    admin_metrics, free_port, ingestor_env, metric, publish_frames, publisher_command,
    stream_contents, stream_messages, wait_for, wait_until_ok, NatsServer, Service,
};

const TOPIC: &str = "org.fedoraproject.prod.buildsys.build.state.change";

fn envelope(msg_id: &str, padding: usize) -> Vec<u8> {
    json!({
        "topic": TOPIC,
        "msg_id": msg_id,
        "timestamp": chrono::Utc::now().timestamp(),
        "msg": {"padding": "p".repeat(padding)},
    })
    .to_string()
    .into_bytes()
}

/// An ingestor on one new endpoint with `settings`, ready; with the endpoint and admin port.
async fn start_ingestor(nats: &NatsServer, settings: &[(&str, &str)]) -> (Service, String, u16) {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let admin = free_port();
    let mut env = ingestor_env(nats, std::slice::from_ref(&endpoint), admin);
    for (key, value) in settings {
        env.push((key.to_string(), value.to_string()));
    }
    let ingestor = Service::start("ingestor", &env, &[]);
    wait_until_ok(&format!("http://127.0.0.1:{admin}/health/readyz")).await;
    (ingestor, endpoint, admin)
}

/// A publisher sending 100 KB of junk per valid message fills the dead-letter stream to its
/// bound (20 letters here) and on: every valid message is stored, the stream keeps its newest
/// letters, each cut to the kept body size, and the dropped ones are counted.
#[tokio::test(flavor = "multi_thread")]
async fn the_dead_letter_stream_at_its_bound_drops_its_oldest_and_valid_messages_flow() {
    const PAIRS: usize = 200;
    const BOUND: u64 = 20;
    const KEPT_BODY: usize = 4096;
    let nats = NatsServer::start().await;
    let (_ingestor, endpoint, admin) = start_ingestor(
        &nats,
        &[
            ("STATSCACHE_NATS__DEAD_LETTER_MAX_MESSAGES", "20"),
            ("STATSCACHE_NATS__DEAD_LETTER_MAX_BODY", "4096"),
        ],
    )
    .await;
    let mut messages = Vec::new();
    for n in 0..PAIRS {
        messages.push(vec![TOPIC.as_bytes().to_vec(), vec![b'j'; 100_000]]);
        messages.push(vec![
            TOPIC.as_bytes().to_vec(),
            envelope(&format!("valid-{n}"), 0),
        ]);
    }
    let output = publish_frames(&endpoint, &messages, 1).await;
    assert!(
        output.contains(&format!("published {} ", 2 * PAIRS)),
        "{output}"
    );

    let client = async_nats::connect(&nats.url).await.expect("nats");
    let jetstream = jetstream::new(client);
    wait_for(
        "every valid message stored",
        Duration::from_secs(120),
        || async { (stream_messages(&jetstream, "FEDMSG").await == PAIRS as u64).then_some(()) },
    )
    .await;
    let text = wait_for(
        "the dropped letters to be counted",
        Duration::from_secs(60),
        || async {
            let text = admin_metrics(admin).await;
            let dropped = metric(&text, "statscache_ingestor_dead_letters_dropped_total");
            (dropped == (PAIRS as u64 - BOUND) as f64).then_some(text)
        },
    )
    .await;
    assert_eq!(
        metric(&text, "statscache_ingestor_dead_letter_stream_messages"),
        BOUND as f64,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "statscache_ingestor_dead_letters_lost_total{reason=\"not_json\"}"
        ),
        0.0,
        "{text}"
    );
    let letters = stream_contents(&nats.url, "STATSCACHE_DEAD_LETTER").await;
    assert_eq!(letters.len() as u64, BOUND);
    // The newest are kept.
    assert_eq!(letters[0].sequence, PAIRS as u64 - BOUND + 1);
    for letter in &letters {
        assert!(
            letter.payload.len() <= KEPT_BODY,
            "{}",
            letter.payload.len()
        );
        let original = letter.headers.get("Statscache-Original-Size");
        assert_eq!(original.map(|value| value.as_str()), Some("100000"));
    }
}

/// A JetStream store that fills up refuses every write: the ingestor says it is not ready within
/// 5 s of the first refusal (a direct publish, the test's own, tells when that is), names
/// JetStream, counts the refusals, and is ready again once room is made and a message stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_refuses_writes_makes_the_ingestor_not_ready_within_5s() {
    const MESSAGES: u64 = 1000;
    let nats = NatsServer::start_with_store_limit(16 << 20).await;
    // The dead-letter stream's reservation must fit the small store.
    let (_ingestor, endpoint, admin) = start_ingestor(
        &nats,
        &[("STATSCACHE_NATS__DEAD_LETTER_MAX_BYTES", "1048576")],
    )
    .await;
    let work = tempfile::TempDir::new().expect("temp dir");
    let lines: Vec<String> = (0..MESSAGES)
        .map(|n| {
            String::from_utf8_lossy(&envelope(&format!("filling-{n}"), 64 * 1024)).into_owned()
        })
        .collect();
    let file = work.path().join("filling.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").expect("write messages");
    // 64 MB at 50 messages a second: the 16 MB store is full after some 5 s.
    let mut publisher = publisher_command(&endpoint, &[file]);
    publisher.args(["--subscribers", "1", "--rate", "50", "--linger", "600"]);
    let _publisher = publisher
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the publisher");

    let client = async_nats::connect(&nats.url).await.expect("nats");
    let jetstream = jetstream::new(client);
    let readyz = format!("http://127.0.0.1:{admin}/health/readyz");
    let started = Instant::now();
    let mut first_refusal: Option<Instant> = None;
    let mut not_ready: Option<(Instant, String)> = None;
    while started.elapsed() < Duration::from_secs(120) && not_ready.is_none() {
        if first_refusal.is_none() {
            let probe = jetstream
                .publish(
                    format!("fedmsg.probe.{}", started.elapsed().as_millis()),
                    "probe".into(),
                )
                .await;
            let refused = match probe {
                Ok(ack) => ack.await.is_err(),
                Err(_) => true,
            };
            if refused {
                first_refusal = Some(Instant::now());
            }
        }
        if let Ok(response) = reqwest::get(&readyz).await {
            if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                let body = response.text().await.unwrap_or_default();
                not_ready = Some((Instant::now(), body));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some((not_ready_at, body)) = not_ready else {
        panic!("the ingestor stayed ready for 120 s while the store filled up");
    };
    let refused_at = first_refusal.unwrap_or(not_ready_at);
    let after = not_ready_at.saturating_duration_since(refused_at);
    eprintln!("not ready {after:?} after the store first refused a write: {body}");
    assert!(after <= Duration::from_secs(5), "{after:?}");
    assert!(body.contains("jetstream: refusing writes"), "{body}");
    let text = admin_metrics(admin).await;
    assert!(
        metric(
            &text,
            "statscache_ingestor_store_refusals_total{stream=\"FEDMSG\"}"
        ) > 0.0,
        "{text}"
    );

    // Room made: the next message stored makes it ready again.
    let stream = jetstream.get_stream("FEDMSG").await.expect("stream");
    stream.purge().await.expect("purge");
    wait_until_ok(&readyz).await;
}
