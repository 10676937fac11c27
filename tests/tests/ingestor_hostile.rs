//! The ingestor against hostile ZeroMQ input (a real pyzmq publisher, a real nats-server): no
//! frame can crash it, fill its in-flight window with publishes that will never be acked, or
//! make a dead letter fail. Each hostile message is dead-lettered with a reason, every valid
//! message around it is stored, and afterwards the ingestor is ready and stops on one SIGTERM.
//!
//! Messages are as big as the ZeroMQ source reads (NATS' payload limit and a topic): bigger
//! ones are dropped unread, which `zeromq_edge.rs` tests with a raw ZMTP peer and a real
//! publisher.
//!
//! The property test draws a few hundred multipart messages (arbitrary bytes, CR/LF in topics,
//! odd identities, huge frames, envelopes at the payload limit) from `proptest` strategies, with
//! a fixed seed so a failure reproduces, and sends them in one batch, each followed by a valid
//! message: a real server round trip per case would make the suite too slow for the number of
//! cases that finds something.

use std::collections::BTreeSet;
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::json;
use statscache_shared::nats::{header_block_len, MAX_HEADER_VALUE_BYTES};
use statscache_tests::{
    free_port, header_values, publish_frames, stream_contents, wait_for, wait_until_ok, NatsServer,
    Service,
};

const TOPIC: &str = "org.fedoraproject.prod.buildsys.build.state.change";
const INJECTED: &str = "org.fedoraproject.prod.buildsys.build.state.change\r\nX-Injected: 1";
const TIMESTAMP: f64 = 1_600_000_000.0;
/// Small, so that a handful of near-limit messages is more than the window.
const MAX_IN_FLIGHT: usize = 8;
/// Generous: a SIGTERM'd ingestor with nothing stuck exits in well under a second.
const EXIT_DEADLINE: Duration = Duration::from_secs(60);

/// An envelope of `topic` with `msg_id`, its body padded to `length` bytes if given.
fn envelope(topic: &str, msg_id: &str, length: Option<usize>) -> Vec<u8> {
    let with_padding = |padding: usize| {
        json!({
            "topic": topic,
            "msg_id": msg_id,
            "timestamp": TIMESTAMP,
            "msg": {"padding": "p".repeat(padding)},
        })
        .to_string()
        .into_bytes()
    };
    let unpadded = with_padding(0);
    match length {
        Some(length) => with_padding(length.saturating_sub(unpadded.len())),
        None => unpadded,
    }
}

/// A valid fedmsg message (topic frame and envelope) with identity `good-<n>`.
fn good(n: usize) -> Vec<Vec<u8>> {
    let msg_id = format!("good-{n}");
    vec![TOPIC.into(), envelope(TOPIC, &msg_id, None)]
}

/// The headers the relay publishes a message with, as the size check counts them.
fn published_header_bytes(msg_id: &str) -> usize {
    header_block_len(&[
        ("Nats-Msg-Id", msg_id.to_string()),
        ("Statscache-Source", "zeromq".to_string()),
        ("Statscache-Event-Time", TIMESTAMP.to_string()),
    ])
}

async fn max_payload(nats: &NatsServer) -> usize {
    let client = async_nats::connect(&nats.url).await.expect("nats");
    client.server_info().max_payload
}

/// An ingestor on a fresh endpoint with a small in-flight window, ready; with the endpoint
/// and its admin port.
async fn start_ingestor(nats: &NatsServer) -> (Service, String, u16) {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let admin = free_port();
    let env = [
        ("STATSCACHE_NATS__URL", nats.url.clone()),
        (
            "STATSCACHE_INGESTOR__ZEROMQ__ENDPOINTS",
            format!("[{endpoint}]"),
        ),
        (
            "STATSCACHE_INGESTOR__ADMIN_LISTEN",
            format!("127.0.0.1:{admin}"),
        ),
        (
            "STATSCACHE_INGESTOR__MAX_IN_FLIGHT",
            MAX_IN_FLIGHT.to_string(),
        ),
    ];
    let env: Vec<(String, String)> = env.map(|(k, v)| (k.to_string(), v)).into();
    let ingestor = Service::start("ingestor", &env, &[]);
    wait_until_ok(&format!("http://127.0.0.1:{admin}/health/readyz")).await;
    (ingestor, endpoint, admin)
}

/// The sum of every sample of the metric family `name`.
async fn metric_sum(admin: u16, name: &str) -> u64 {
    let url = format!("http://127.0.0.1:{admin}/metrics");
    let text = reqwest::get(url).await.expect("metrics").text().await;
    let mut sum = 0;
    for line in text.expect("metrics body").lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if rest.starts_with('{') || rest.starts_with(' ') {
            let value = rest.rsplit(' ').next().unwrap_or_default();
            sum += value.parse::<u64>().unwrap_or(0);
        }
    }
    sum
}

/// Sends `hostile` messages, each followed by a valid one, and waits until the ingestor has
/// dealt with all of them. Returns the identities of the valid ones.
async fn send_between_good_ones(
    endpoint: &str,
    admin: u16,
    hostile: Vec<Vec<Vec<u8>>>,
) -> BTreeSet<String> {
    let mut messages = Vec::new();
    let mut good_ids = BTreeSet::new();
    for (n, frames) in hostile.into_iter().enumerate() {
        messages.push(frames);
        messages.push(good(n));
        good_ids.insert(format!("good-{n}"));
    }
    let sent = messages.len() as u64;
    let output = publish_frames(endpoint, &messages, 1).await;
    assert!(output.contains(&format!("published {sent} ")), "{output}");
    wait_for(
        "every message received to be stored or dead-lettered",
        Duration::from_secs(300),
        || async {
            let received = metric_sum(admin, "statscache_ingestor_received_total").await;
            let dealt_with = metric_sum(admin, "statscache_ingestor_relayed_total").await
                + metric_sum(admin, "statscache_ingestor_duplicates_total").await
                + metric_sum(admin, "statscache_ingestor_invalid_total").await;
            (received == sent && dealt_with == sent).then_some(())
        },
    )
    .await;
    good_ids
}

/// After hostile input: no dead letter was lost, every valid message is in the stream, the
/// ingestor is ready and one SIGTERM stops it.
async fn assert_unharmed(
    nats: &NatsServer,
    ingestor: Service,
    admin: u16,
    good_ids: &BTreeSet<String>,
) {
    assert_eq!(
        metric_sum(admin, "statscache_ingestor_dead_letters_lost_total").await,
        0
    );
    let stored: BTreeSet<String> = header_values(&nats.url, "FEDMSG", "Nats-Msg-Id")
        .await
        .into_iter()
        .collect();
    let missing: Vec<&String> = good_ids.difference(&stored).collect();
    assert!(missing.is_empty(), "valid messages not stored: {missing:?}");
    let readyz = format!("http://127.0.0.1:{admin}/health/readyz");
    let status = reqwest::get(&readyz).await.expect("readyz").status();
    assert!(status.is_success(), "not ready: {status}");
    let exited = ingestor.terminate_within(EXIT_DEADLINE).await;
    assert!(
        exited.is_some_and(|status| status.success()),
        "the ingestor did not exit cleanly on one SIGTERM: {exited:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_hostile_input_is_dead_lettered_and_the_valid_messages_around_it_are_stored() {
    let nats = NatsServer::start().await;
    let max_payload = max_payload(&nats).await;
    let (ingestor, endpoint, admin) = start_ingestor(&nats).await;

    let huge_topic = format!("{TOPIC}.{}", "x".repeat(max_payload - TOPIC.len() - 1));
    let mut hostile = vec![
        // The frame would inject a header; the envelope's topic is clean, or the same frame.
        vec![INJECTED.into(), envelope(TOPIC, "injected-1", None)],
        vec![INJECTED.into(), envelope(INJECTED, "injected-2", None)],
        vec![huge_topic.into(), envelope(TOPIC, "huge-topic", None)],
        // A control character in the identity, which would be written as Nats-Msg-Id.
        vec![
            TOPIC.into(),
            envelope(TOPIC, "2026-a\r\nX-Injected: 1", None),
        ],
        // One byte too many for the server once the headers are counted.
        vec![
            TOPIC.into(),
            envelope(
                TOPIC,
                "one-byte-over",
                Some(max_payload - published_header_bytes("one-byte-over") + 1),
            ),
        ],
    ];
    // More near-limit envelopes with a 2 000-character msg_id than the in-flight window holds.
    for n in 0..MAX_IN_FLIGHT + 4 {
        let msg_id = format!("{n}-{}", "i".repeat(2000));
        let near_limit = envelope(TOPIC, &msg_id, Some(max_payload - 100));
        hostile.push(vec![TOPIC.into(), near_limit]);
    }
    let hostile_count = hostile.len();
    // Exactly at the limit: valid, so stored.
    let fits = envelope(
        TOPIC,
        "fits",
        Some(max_payload - published_header_bytes("fits")),
    );
    hostile.push(vec![TOPIC.into(), fits]);

    let mut expected_ids = send_between_good_ones(&endpoint, admin, hostile).await;
    expected_ids.insert("fits".to_string());
    assert_unharmed(&nats, ingestor, admin, &expected_ids).await;

    let letters = stream_contents(&nats.url, "STATSCACHE_DEAD_LETTER").await;
    assert_eq!(letters.len(), hostile_count);
    let mut reasons = Vec::new();
    for letter in &letters {
        let header = |name: &str| {
            let value = letter.headers.get(name).map(|value| value.as_str());
            value.unwrap_or_default().to_string()
        };
        reasons.push(header("Statscache-Reason"));
        for name in ["Statscache-Detail", "Statscache-Transport-Topic"] {
            assert!(header(name).len() <= MAX_HEADER_VALUE_BYTES, "{name}");
        }
    }
    let mut expected_reasons = vec!["topic_mismatch", "bad_topic", "topic_mismatch"];
    expected_reasons.extend(["bad_msg_id", "too_large"]);
    expected_reasons.extend(["bad_msg_id"; MAX_IN_FLIGHT + 4]);
    assert_eq!(reasons, expected_reasons);
    // What the injected frame was is kept, percent-encoded, and injected nothing.
    let first = &letters[0].headers;
    let transport_topic = first
        .get("Statscache-Transport-Topic")
        .expect("topic frame");
    assert_eq!(
        transport_topic.as_str(),
        "org.fedoraproject.prod.buildsys.build.state.change%0D%0AX-Injected: 1"
    );
    assert!(first.get("X-Injected").is_none());
    // The huge frame's dead letter says how long it was.
    let huge = letters[2].headers.get("Statscache-Transport-Topic");
    let huge = huge.expect("topic frame").as_str();
    assert!(huge.ends_with(&format!("({max_payload} bytes)")));
}

/// Multipart messages of every hostile kind the relay has to survive.
fn hostile_message(max_payload: usize) -> impl Strategy<Value = Vec<Vec<u8>>> {
    let text = || prop::collection::vec(any::<char>(), 0..48).prop_map(String::from_iter);
    let arbitrary_frames = prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..=3);
    let line_break = prop::sample::select(vec!["\r\n", "\r", "\n", "\0", "\u{7f}", "\u{85}"]);
    let injected = (line_break, any::<bool>()).prop_map(|(line_break, same_topic)| {
        let topic = format!("{TOPIC}{line_break}X-Injected: 1");
        let envelope_topic = if same_topic { topic.as_str() } else { TOPIC };
        vec![
            topic.clone().into_bytes(),
            envelope(envelope_topic, "injected", None),
        ]
    });
    let odd_identity = text().prop_map(|msg_id| vec![TOPIC.into(), envelope(TOPIC, &msg_id, None)]);
    let odd_topic = (text(), text()).prop_map(|(topic, msg_id)| {
        vec![topic.clone().into_bytes(), envelope(&topic, &msg_id, None)]
    });
    let id_lengths = prop::sample::select(vec![36, 256, 257, 2000]);
    let near_limit = (0..2048usize, id_lengths).prop_map(move |(below, id_length)| {
        let msg_id = "n".repeat(id_length);
        let body = envelope(TOPIC, &msg_id, Some(max_payload - below));
        vec![TOPIC.into(), body]
    });
    // Up to the largest message the ZeroMQ source reads: the payload limit and a topic.
    let frame_sizes = prop::sample::select(vec![1025, max_payload, max_payload + 512]);
    let huge_frame = (frame_sizes, any::<bool>()).prop_map(|(size, huge_topic)| {
        let huge = vec![b'h'; size];
        if huge_topic {
            vec![huge, envelope(TOPIC, "huge", None)]
        } else {
            vec![TOPIC.into(), huge]
        }
    });
    prop_oneof![
        8 => arbitrary_frames,
        4 => injected,
        4 => odd_identity,
        4 => odd_topic,
        2 => near_limit,
        1 => huge_frame,
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn arbitrary_multipart_frames_never_crash_stall_or_lose_valid_messages() {
    const CASES: usize = 300;
    let nats = NatsServer::start().await;
    let max_payload = max_payload(&nats).await;
    let (ingestor, endpoint, admin) = start_ingestor(&nats).await;

    let strategy = hostile_message(max_payload);
    let mut runner = TestRunner::deterministic();
    let mut hostile = Vec::with_capacity(CASES);
    for _ in 0..CASES {
        let case = strategy.new_tree(&mut runner).expect("a generated case");
        hostile.push(case.current());
    }
    let good_ids = send_between_good_ones(&endpoint, admin, hostile).await;

    // Every rejection is on the dead-letter stream, and every valid message in the stream.
    let rejected = metric_sum(admin, "statscache_ingestor_invalid_total").await;
    let reasons = header_values(&nats.url, "STATSCACHE_DEAD_LETTER", "Statscache-Reason").await;
    assert_eq!(reasons.len() as u64, rejected);
    // The strategies reach every check of the relay (so a change to them cannot quietly
    // make this test trivial).
    let seen: BTreeSet<&str> = reasons.iter().map(String::as_str).collect();
    let every_check = [
        "bad_frames",
        "bad_msg_id",
        "bad_topic",
        "not_json",
        "not_utf8",
        "too_large",
        "topic_mismatch",
    ];
    assert_eq!(seen, BTreeSet::from(every_check));
    assert_unharmed(&nats, ingestor, admin, &good_ids).await;
}
