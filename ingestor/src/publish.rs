//! `statscache-ingestor publish`: put messages on the stream by hand, as `fedmsg-logger` did
//! on the bus. They go through the same relay as live traffic — validated, given their identity,
//! dead-lettered if invalid — so a test message is treated exactly like a real one.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{json, Value};
use statscache_shared::admin::Health;
use statscache_shared::config::Config;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::relay::Relay;
use crate::source::Incoming;
use crate::{connect_jetstream, IngestorError};

/// The source label of hand-published messages (header `Statscache-Source`, metrics).
const SOURCE: &str = "publish";

/// What became of the published messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishReport {
    pub relayed: u64,
    /// Already in the stream (same identity within the duplicate window).
    pub duplicates: u64,
    /// Rejected and dead-lettered.
    pub rejected: u64,
}

/// A new fedmsg envelope for `topic` with body `msg`, stamped now, as fedmsg-logger made them.
pub fn new_envelope(topic: &str, msg: Value) -> Bytes {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let username = std::env::var("USER").unwrap_or_default();
    let envelope = json!({
        "topic": topic,
        "msg": msg,
        "msg_id": new_msg_id(now.as_secs_f64()),
        "timestamp": now.as_secs_f64(),
        "i": 1,
        "username": username,
    });
    Bytes::from(envelope.to_string())
}

/// fedmsg's shape: `<year>-<uuid4>`.
fn new_msg_id(now: f64) -> String {
    let year = chrono::DateTime::from_timestamp(now as i64, 0)
        .map(|time| time.format("%Y").to_string())
        .unwrap_or_default();
    format!("{year}-{}", uuid::Uuid::new_v4())
}

/// Relays `bodies` (envelope JSON each) and waits until every one is acked or dead-lettered.
pub async fn publish(config: Config, bodies: Vec<Bytes>) -> Result<PublishReport, IngestorError> {
    let config = Arc::new(config);
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(Metrics::new(&registry)?);
    let jetstream = connect_jetstream(&config).await?;
    let relay = Arc::new(Relay::new(
        config,
        jetstream,
        metrics.clone(),
        Health::default(),
    ));
    let (sender, receiver) = mpsc::channel(bodies.len().max(1));
    for body in bodies {
        let incoming = Incoming::new(SOURCE, None, body);
        if sender.send(incoming).await.is_err() {
            break;
        }
    }
    drop(sender);
    relay.run(receiver).await;
    let mut rejected = 0;
    for family in registry.gather() {
        if family.name() == "statscache_ingestor_invalid_total" {
            for metric in family.get_metric() {
                rejected += metric.get_counter().get_value() as u64;
            }
        }
    }
    Ok(PublishReport {
        relayed: metrics.relayed.with_label_values(&[SOURCE]).get(),
        duplicates: metrics.duplicates.with_label_values(&[SOURCE]).get(),
        rejected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use statscache_shared::message::Envelope;

    #[test]
    fn new_envelopes_are_valid_and_distinct() {
        let first = new_envelope("org.fedoraproject.dev.logger.log", json!({"log": "hello"}));
        let second = new_envelope("org.fedoraproject.dev.logger.log", json!({"log": "hello"}));
        let first = Envelope::parse(&first).unwrap();
        let second = Envelope::parse(&second).unwrap();
        assert_eq!(first.category(), "logger");
        let msg_id = first.msg_id.clone().unwrap();
        assert_eq!(msg_id.len(), 4 + 1 + 36, "{msg_id}");
        assert_ne!(first.identity(), second.identity());
    }
}
