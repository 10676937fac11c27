//! The fedmsg envelope, as it travels on the bus and as datagrepper returns it.
//!
//! Every service sees messages through [`Envelope`]: the ingestor validates what arrives with
//! [`Envelope::parse`], the worker decodes what JetStream delivers, the api renders history rows.
//! A message's identity ([`Envelope::identity`]) is what makes "count exactly once" possible: it
//! is the fedmsg `msg_id`, or for old messages that lack one a stable hash of their content.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::time::MAX_PLAUSIBLE_TIME;
use crate::topic::Topic;

/// Longest `msg_id` accepted, in bytes. fedmsg's are 41 (`<year>-<uuid4>`); the identity is
/// written as the `Nats-Msg-Id` header, and headers count against NATS's payload limit.
pub const MAX_MSG_ID_BYTES: usize = 256;

/// A fedmsg envelope with the fields fedmsg and datanommer define.
///
/// Unknown fields are kept in `extra` so that nothing a publisher sent is lost when a message is
/// re-serialised (for example when a datagrepper page is split into single messages).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub topic: String,
    #[serde(default)]
    pub msg: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<String>,
    /// Event time, epoch seconds. Optional here so that a missing one is reported by
    /// [`Envelope::parse`] with a clear reason rather than as a generic shape error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub i: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crypto: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Why bytes could not be accepted as a fedmsg envelope. Each kind is a metric label.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidMessage {
    #[error("payload is not valid UTF-8 (at byte {0})")]
    NotUtf8(usize),
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("payload is JSON but not a fedmsg envelope: {0}")]
    WrongShape(String),
    #[error("envelope has no timestamp, so its event time is unknown")]
    MissingTimestamp,
    #[error("envelope timestamp {0} is not a plausible epoch time")]
    BadTimestamp(f64),
    #[error("envelope topic is invalid: {0}")]
    BadTopic(String),
    #[error("frame topic {frame:?} differs from envelope topic {envelope:?}")]
    TopicMismatch { frame: String, envelope: String },
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("msg_id cannot be an identity: {0}")]
    BadMsgId(String),
}

impl InvalidMessage {
    /// A short stable name for metrics and dead-letter headers.
    pub fn reason(&self) -> &'static str {
        match self {
            InvalidMessage::NotUtf8(_) => "not_utf8",
            InvalidMessage::NotJson(_) => "not_json",
            InvalidMessage::WrongShape(_) => "wrong_shape",
            InvalidMessage::MissingTimestamp => "missing_timestamp",
            InvalidMessage::BadTimestamp(_) => "bad_timestamp",
            InvalidMessage::BadTopic(_) => "bad_topic",
            InvalidMessage::TopicMismatch { .. } => "topic_mismatch",
            InvalidMessage::TooLarge { .. } => "too_large",
            InvalidMessage::BadMsgId(_) => "bad_msg_id",
        }
    }
}

impl Envelope {
    /// Parses and validates one envelope from raw bytes.
    ///
    /// ```
    /// use statscache_shared::message::Envelope;
    /// let raw = br#"{"topic": "org.fedoraproject.prod.git.branch", "msg": {}, "timestamp": 1344350850.8}"#;
    /// let envelope = Envelope::parse(raw).unwrap();
    /// assert_eq!(envelope.category(), "git");
    /// ```
    pub fn parse(raw: &[u8]) -> Result<Envelope, InvalidMessage> {
        let text =
            std::str::from_utf8(raw).map_err(|e| InvalidMessage::NotUtf8(e.valid_up_to()))?;
        let value: Value =
            serde_json::from_str(text).map_err(|e| InvalidMessage::NotJson(e.to_string()))?;
        Envelope::from_value(value)
    }

    /// Validates an already decoded JSON value (a datagrepper `raw_messages` item, for example).
    pub fn from_value(value: Value) -> Result<Envelope, InvalidMessage> {
        if !value.is_object() {
            return Err(InvalidMessage::WrongShape("expected a JSON object".into()));
        }
        let envelope: Envelope =
            serde_json::from_value(value).map_err(|e| InvalidMessage::WrongShape(e.to_string()))?;
        Topic::parse(&envelope.topic).map_err(|e| InvalidMessage::BadTopic(e.to_string()))?;
        let Some(timestamp) = envelope.timestamp else {
            return Err(InvalidMessage::MissingTimestamp);
        };
        if !timestamp.is_finite() || !(0.0..MAX_PLAUSIBLE_TIME).contains(&timestamp) {
            return Err(InvalidMessage::BadTimestamp(timestamp));
        }
        check_msg_id(envelope.msg_id.as_deref())?;
        Ok(envelope)
    }

    /// The validated event time in epoch seconds.
    pub fn event_time(&self) -> f64 {
        self.timestamp.unwrap_or_default()
    }

    /// The message identity: `msg_id` when the publisher set one, otherwise
    /// `sha256:<hex>` over the canonical JSON of topic, timestamp and body.
    pub fn identity(&self) -> String {
        if let Some(msg_id) = self.msg_id.as_deref() {
            let trimmed = msg_id.trim();
            if !trimmed.is_empty() {
                return trimmed.to_string();
            }
        }
        let canonical = canonical_json(
            &serde_json::json!({ "topic": self.topic, "timestamp": self.timestamp, "msg": self.msg }),
        );
        let digest = Sha256::digest(canonical.as_bytes());
        let mut hex = String::with_capacity(7 + 64);
        hex.push_str("sha256:");
        for byte in digest {
            hex.push_str(&format!("{byte:02x}"));
        }
        hex
    }

    /// The topic's category (fedmsg's `modname`, the 4th token), or `""` for odd topics.
    pub fn category(&self) -> &str {
        match Topic::parse(&self.topic) {
            Ok(topic) => topic.category(),
            Err(_) => "",
        }
    }
}

/// A `msg_id` becomes the identity, a header value: it must be one line of bounded length.
/// Such an id is rejected rather than hashed: it is what datagrepper's `/id` and datanommer know
/// the message by, and no fedmsg publisher makes one, so it marks a broken or hostile sender.
fn check_msg_id(msg_id: Option<&str>) -> Result<(), InvalidMessage> {
    let Some(msg_id) = msg_id else {
        return Ok(());
    };
    let trimmed = msg_id.trim();
    if trimmed.len() > MAX_MSG_ID_BYTES {
        return Err(InvalidMessage::BadMsgId(format!(
            "{} bytes long, more than the {MAX_MSG_ID_BYTES} allowed",
            trimmed.len()
        )));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(InvalidMessage::BadMsgId(
            "it contains a control character".into(),
        ));
    }
    Ok(())
}

/// `value` as JSON with object keys sorted at every level: equal for equal values however they
/// were serialised (key order, spacing), so hashes of it compare content.
pub fn canonical_json(value: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(value, &mut canonical);
    canonical
}

/// Serialises JSON with object keys sorted at every level, independent of how serde_json's map
/// is configured, so the content hash is stable across crates and versions.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(name: &str) -> Vec<String> {
        let path = format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn every_real_message_parses() {
        let lines = corpus("fedmsg-real.jsonl");
        assert_eq!(lines.len(), 324);
        for line in &lines {
            let envelope =
                Envelope::parse(line.as_bytes()).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(!envelope.category().is_empty() || envelope.topic.split('.').count() < 4);
        }
    }

    #[test]
    fn identities_are_unique_across_the_real_corpus() {
        let mut identities = std::collections::HashSet::new();
        for line in corpus("fedmsg-real.jsonl") {
            let envelope = Envelope::parse(line.as_bytes()).unwrap();
            assert!(
                identities.insert(envelope.identity()),
                "duplicate identity for {line}"
            );
        }
        assert_eq!(identities.len(), 324);
    }

    #[test]
    fn identity_prefers_msg_id_and_hashes_stably_otherwise() {
        let with_id = Envelope::parse(
            br#"{"topic":"org.fedoraproject.prod.a.b","msg":{},"timestamp":1,"msg_id":"2026-x"}"#,
        )
        .unwrap();
        assert_eq!(with_id.identity(), "2026-x");
        let reordered_a = Envelope::parse(
            br#"{"topic":"org.f.prod.a.b","msg":{"x":1,"y":[1,{"b":2,"a":1}]},"timestamp":5}"#,
        )
        .unwrap();
        let reordered_b = Envelope::parse(
            br#"{"timestamp":5,"msg":{"y":[1,{"a":1,"b":2}],"x":1},"topic":"org.f.prod.a.b"}"#,
        )
        .unwrap();
        assert_eq!(reordered_a.identity(), reordered_b.identity());
        assert!(reordered_a.identity().starts_with("sha256:"));
    }

    #[test]
    fn incomplete_messages_are_rejected_with_a_reason() {
        for line in corpus("fedmsg-real-incomplete.jsonl") {
            assert_eq!(
                Envelope::parse(line.as_bytes()),
                Err(InvalidMessage::MissingTimestamp)
            );
        }
    }

    #[test]
    fn bad_inputs_have_distinct_reasons() {
        let cases: Vec<(&[u8], &str)> = vec![
            (b"\xff\xfe", "not_utf8"),
            (b"{not json", "not_json"),
            (b"[1,2]", "wrong_shape"),
            (br#"{"topic": 5, "msg": {}, "timestamp": 1}"#, "wrong_shape"),
            (
                br#"{"topic": "a.b.c.d", "msg": {}, "timestamp": "yesterday"}"#,
                "wrong_shape",
            ),
            (br#"{"topic": "", "msg": {}, "timestamp": 1}"#, "bad_topic"),
            (
                br#"{"topic": "a.b.c.d", "msg": {}, "timestamp": 1e15}"#,
                "bad_timestamp",
            ),
            (
                br#"{"topic": "a.b.c.d", "msg": {}, "timestamp": 1, "msg_id": "2026-a\r\nX: 1"}"#,
                "bad_msg_id",
            ),
        ];
        for (raw, reason) in cases {
            let error = Envelope::parse(raw).expect_err("must be rejected");
            assert_eq!(error.reason(), reason, "{error}");
        }
        let long_id = format!(
            r#"{{"topic": "a.b.c.d", "msg": {{}}, "timestamp": 1, "msg_id": "{}"}}"#,
            "x".repeat(2000)
        );
        let error = Envelope::parse(long_id.as_bytes()).expect_err("must be rejected");
        assert_eq!(error.reason(), "bad_msg_id", "{error}");
        // Surrounding whitespace is not part of the identity, so it does not make an id bad.
        let padded = br#"{"topic": "a.b.c.d", "msg": {}, "timestamp": 1, "msg_id": " 2026-a\n"}"#;
        assert_eq!(
            Envelope::parse(padded).map(|e| e.identity()),
            Ok("2026-a".to_string())
        );
    }

    #[test]
    fn datagrepper_page_messages_parse() {
        let page: Value = serde_json::from_str(
            &std::fs::read_to_string(format!(
                "{}/../tests/fixtures/datagrepper-raw-page-captured-2017.json",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap(),
        )
        .unwrap();
        let messages = page["raw_messages"].as_array().unwrap();
        assert_eq!(messages.len(), 25);
        for message in messages {
            let envelope = Envelope::from_value(message.clone()).unwrap();
            assert!(envelope.msg_id.is_some());
            assert!(envelope.certificate.is_some());
        }
    }
}
