//! End to end: a real ZeroMQ publisher → ingestor → nats-server (JetStream) → worker →
//! clickhouse-server → api, on the real fedmsg corpus; on the current nats-server and, for
//! correctness only, on Debian's 2.9.10 (not supported for its latency under load).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use statscache_tests::stack::Pipeline;
use statscache_tests::{
    fixture, get_json, publish_corpus, wait_for, wait_for_consumer_drained, Servers,
    DEBIAN_NATS_SERVER,
};

const CORPUS_SIZE: u64 = 324;

/// Messages per category, computed from the corpus file as statscache did: the 4th topic token.
fn reference_volume_by_category() -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(fixture("fedmsg-real.jsonl")).expect("corpus");
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let message: Value = serde_json::from_str(line).expect("corpus line");
        let topic = message["topic"].as_str().expect("topic");
        let category = topic.split('.').nth(3).unwrap_or("").to_string();
        *counts.entry(category).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn the_real_corpus_flows_from_zeromq_to_the_api() {
    the_real_corpus_flows(Servers::start().await).await;
}

/// The same on Debian's nats-server 2.9.10: not supported (its pull consumers can trickle
/// under load, README), but nothing may be lost or doubled on it either.
#[tokio::test(flavor = "multi_thread")]
async fn the_real_corpus_flows_on_debians_nats_server() {
    let debian = Path::new(DEBIAN_NATS_SERVER);
    the_real_corpus_flows(Servers::start_with_nats(debian).await).await;
}

async fn the_real_corpus_flows(servers: Servers) {
    let pipeline = Pipeline::start(servers, &[]).await;
    let servers = &pipeline.servers;
    let ingestor_admin = pipeline.ingestor_admin;

    let output = publish_corpus(
        &pipeline.fedmsg_endpoint,
        &[
            fixture("fedmsg-real.jsonl"),
            fixture("fedmsg-real-incomplete.jsonl"),
        ],
        1,
        &[],
    )
    .await;
    assert!(output.contains("published 348"), "{output}");

    let api = pipeline.api.clone();
    let volume_url = format!("{api}/api/volume?bucket=all");
    let total = wait_for(
        "the whole corpus to be counted",
        Duration::from_secs(120),
        || {
            let url = volume_url.clone();
            async move {
                let page = get_json(&url).await?;
                let count = page["rows"].get(0)?["count"].as_u64()?;
                (count == CORPUS_SIZE).then_some(count)
            }
        },
    )
    .await;
    assert_eq!(total, CORPUS_SIZE);
    // Every plugin's rollups are recomputed before a batch is acked, not all at the same moment:
    // once nothing is left unacked, every statistic holds the whole corpus.
    wait_for_consumer_drained(&servers.nats.url).await;

    // The plugin catalog, with and without statscache's trailing slash.
    let plugins = get_json(&format!("{api}/api/")).await.expect("plugin list");
    let identifiers: Vec<&str> = plugins
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|p| p["identifier"].as_str())
        .collect();
    for expected in [
        "volume",
        "volume-by-category",
        "volume-by-topic",
        "volume-by-user",
        "volume-by-package",
        "releng-dashboard",
    ] {
        assert!(
            identifiers.contains(&expected),
            "{expected} missing from {identifiers:?}"
        );
    }

    // Volume by category equals the reference computed from the corpus file.
    let page = get_json(&format!(
        "{api}/api/volume-by-category?bucket=all&rows_per_page=100"
    ))
    .await
    .expect("volume by category");
    let mut served = BTreeMap::new();
    for row in page["rows"].as_array().expect("rows") {
        served.insert(
            row["key"].as_str().expect("key").to_string(),
            row["count"].as_u64().expect("count"),
        );
    }
    assert_eq!(served, reference_volume_by_category());

    // The same statistic as CSV, through statscache's interval-suffixed name.
    let csv = reqwest::Client::new()
        .get(format!(
            "{api}/api/volume-by-category-monthly?key=compose&rows_per_page=100"
        ))
        .header("accept", "text/csv")
        .send()
        .await
        .expect("csv request");
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let body = csv.text().await.expect("csv body");
    let mut compose_total = 0;
    for line in body.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields[1], "compose", "{line}");
        compose_total += fields[2].parse::<u64>().expect("count");
    }
    assert_eq!(compose_total, reference_volume_by_category()["compose"]);

    // The 24 messages without a timestamp were rejected, counted and dead-lettered.
    let metrics = reqwest::get(format!("http://127.0.0.1:{ingestor_admin}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    assert!(
        metrics.contains(
            r#"statscache_ingestor_invalid_total{reason="missing_timestamp",source="zeromq"} 24"#
        ),
        "{metrics}"
    );
    let nats = async_nats::connect(&servers.nats.url).await.expect("nats");
    let jetstream = async_nats::jetstream::new(nats);
    let mut dead_letters = jetstream
        .get_stream("STATSCACHE_DEAD_LETTER")
        .await
        .expect("dead-letter stream");
    assert_eq!(dead_letters.info().await.expect("info").state.messages, 24);
    let mut stream = jetstream
        .get_stream("FEDMSG")
        .await
        .expect("message stream");
    assert_eq!(
        stream.info().await.expect("info").state.messages,
        CORPUS_SIZE
    );
}
