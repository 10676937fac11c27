//! The real corpus, independent reference statistics computed from it, and ways to feed it in.
//!
//! The references here are computed from the corpus files with plain code written for the tests
//! — never with the plugins' code — so that a test compares two independent computations.

use std::collections::BTreeMap;

use async_nats::jetstream;
use async_nats::HeaderMap;
use serde_json::Value;
use statscache_shared::message::Envelope;
use statscache_shared::topic::topic_to_subject;

use crate::fixture;

/// The envelopes of `tests/fixtures/fedmsg-real.jsonl`, as raw lines.
pub fn real_lines() -> Vec<String> {
    let text = std::fs::read_to_string(fixture("fedmsg-real.jsonl")).expect("read the corpus");
    text.lines().map(str::to_string).collect()
}

/// 2026-10-01T12:00:00Z: the first of [`restamped_corpus`]'s messages (the api reads up to
/// now by default: 2 000 of them, 23 days, end in the past).
pub const RESTAMPED_FROM: f64 = 1_790_856_000.0;

/// `count` corpus envelopes that carry a `msg_id` (the corpus again, under new ids, when it runs
/// out), re-stamped a quarter of an hour apart plus a fraction from [`RESTAMPED_FROM`]: close
/// enough for `/raw` to list them all (31 days at most), spread over hours and days. An envelope
/// without `msg_id` is left out: its identity hashes its time, so its copies would be other
/// messages.
pub fn restamped_corpus(count: usize) -> Vec<String> {
    let with_ids: Vec<Value> = real_lines()
        .iter()
        .map(|line| serde_json::from_str::<Value>(line).expect("corpus line"))
        .filter(|envelope| !envelope["msg_id"].as_str().unwrap_or("").is_empty())
        .collect();
    let mut lines = Vec::with_capacity(count);
    for index in 0..count {
        let mut envelope = with_ids[index % with_ids.len()].clone();
        let round = index / with_ids.len();
        if round > 0 {
            let id = envelope["msg_id"].as_str().unwrap_or("").to_string();
            envelope["msg_id"] = Value::from(format!("{id}-{round}"));
        }
        envelope["timestamp"] = Value::from(RESTAMPED_FROM + index as f64 * 977.0 + 0.3);
        lines.push(envelope.to_string());
    }
    lines
}

/// Messages per key, where `key_of` gives the keys of one parsed envelope.
pub fn reference_counts(key_of: impl Fn(&Value) -> Vec<String>) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in real_lines() {
        let message: Value = serde_json::from_str(&line).expect("corpus line");
        let mut keys = key_of(&message);
        keys.sort();
        keys.dedup();
        for key in keys {
            *counts.entry(key).or_insert(0) += 1;
        }
    }
    counts
}

/// The category as statscache keyed it: the 4th topic token.
pub fn category_of(message: &Value) -> Vec<String> {
    let topic = message["topic"].as_str().unwrap_or("");
    vec![topic.split('.').nth(3).unwrap_or("").to_string()]
}

pub fn topic_of(message: &Value) -> Vec<String> {
    vec![message["topic"].as_str().unwrap_or("").to_string()]
}

/// Publishes `lines` straight into the stream, as an operator replay would. With `msg_id`
/// the `Nats-Msg-Id` header is set (JetStream de-duplicates within its window); without it,
/// every copy is stored, as a backfill arriving after the window would be.
pub async fn publish_to_stream(nats_url: &str, lines: &[String], msg_id: bool) {
    let client = async_nats::connect(nats_url)
        .await
        .expect("connect to NATS");
    let jetstream = jetstream::new(client);
    // Acks are awaited in a sliding window: each pending ack holds one of the context's
    // in-flight permits, so holding them all would stall the publishing.
    let mut acks = std::collections::VecDeque::new();
    for line in lines {
        let envelope = Envelope::parse(line.as_bytes()).expect("corpus envelope");
        let mut headers = HeaderMap::new();
        if msg_id {
            headers.insert("Nats-Msg-Id", envelope.identity().as_str());
        }
        headers.insert("Statscache-Source", "test");
        let subject = topic_to_subject("fedmsg", &envelope.topic);
        let ack = jetstream
            .publish_with_headers(subject, headers, line.clone().into())
            .await
            .expect("publish");
        acks.push_back(ack);
        if acks.len() >= 256 {
            if let Some(oldest) = acks.pop_front() {
                oldest.await.expect("publish ack");
            }
        }
    }
    for ack in acks {
        ack.await.expect("publish ack");
    }
}

/// A whole statistic from the API (`bucket=all`), key → count, following every page.
pub async fn served_counts(api: &str, plugin: &str) -> Option<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    let mut page: u64 = 1;
    loop {
        let url = format!("{api}/api/{plugin}?bucket=all&rows_per_page=100&page={page}");
        let body = crate::get_json(&url).await?;
        for row in body["rows"].as_array()? {
            counts.insert(row["key"].as_str()?.to_string(), row["count"].as_u64()?);
        }
        if page >= body["pages"].as_u64()? {
            return Some(counts);
        }
        page += 1;
    }
}
