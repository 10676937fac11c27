//! An AMQP delivery as the envelope the rest of statscache knows, the way datanommer stores a
//! fedora-messaging message: the routing key is the `topic`, the AMQP `message_id` the `msg_id`
//! (unchanged, so a copy bridged from fedmsg, which carries the fedmsg `msg_id`, has the
//! identity of its ZeroMQ copy, and datagrepper's copy has it too), the JSON body the `msg`, the
//! `sent-at` header the `timestamp`, and every header kept in `headers`. `/raw` and `/id` then
//! return it as datagrepper does.

use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use serde_json::{json, Map, Value};
use statscache_shared::time::parse_time;

use crate::source::{Incoming, Refusal};

/// The `Statscache-Source` of messages from this source.
pub(super) const SOURCE: &str = "amqp";

/// The header fedora-messaging stamps with the publishing time (ISO 8601).
const SENT_AT: &str = "sent-at";

/// The envelope of one delivery, or its raw bytes and why it cannot be one.
pub(super) fn to_incoming(
    routing_key: &str,
    properties: &BasicProperties,
    data: &[u8],
) -> Incoming {
    match envelope(routing_key, properties, data) {
        Ok(envelope) => Incoming::new(SOURCE, None, envelope.to_string().into()),
        Err(refusal) => Incoming::refused(
            SOURCE,
            Some(routing_key.to_string().into()),
            data.to_vec().into(),
            refusal,
        ),
    }
}

fn envelope(
    routing_key: &str,
    properties: &BasicProperties,
    data: &[u8],
) -> Result<Value, Refusal> {
    let msg_id = match properties.message_id() {
        Some(id) if !id.as_str().trim().is_empty() => id.as_str().trim().to_string(),
        _ => {
            return Err(Refusal {
                reason: "missing_msg_id",
                detail: "the delivery has no message_id property".into(),
            })
        }
    };
    let text = std::str::from_utf8(data).map_err(|error| Refusal {
        reason: "not_utf8",
        detail: format!("body is not UTF-8 (at byte {})", error.valid_up_to()),
    })?;
    let body: Value = serde_json::from_str(text).map_err(|error| Refusal {
        reason: "not_json",
        detail: format!("body is not JSON: {error}"),
    })?;
    let headers = match properties.headers() {
        Some(table) => table_to_json(table),
        None => Map::new(),
    };
    let mut envelope = json!({
        "topic": routing_key,
        "msg": body,
        "msg_id": msg_id,
        "headers": headers,
    });
    // Without a time the relay dead-letters it as `missing_timestamp`.
    if let Some(timestamp) = event_time(&headers, properties)? {
        envelope["timestamp"] = json!(timestamp);
    }
    Ok(envelope)
}

/// `sent-at`, or the AMQP `timestamp` property for publishers that set only that.
fn event_time(
    headers: &Map<String, Value>,
    properties: &BasicProperties,
) -> Result<Option<f64>, Refusal> {
    if let Some(sent_at) = headers.get(SENT_AT) {
        let Some(text) = sent_at.as_str() else {
            return Err(Refusal {
                reason: "bad_timestamp",
                detail: format!("sent-at {sent_at} is not a string"),
            });
        };
        return match parse_time(text) {
            Ok(seconds) => Ok(Some(seconds)),
            Err(invalid) => Err(Refusal {
                reason: "bad_timestamp",
                detail: format!("sent-at: {invalid}"),
            }),
        };
    }
    Ok(properties.timestamp().map(|seconds| seconds as f64))
}

fn table_to_json(table: &FieldTable) -> Map<String, Value> {
    let mut object = Map::new();
    for (key, value) in table.inner() {
        object.insert(key.as_str().to_string(), value_to_json(value));
    }
    object
}

/// A header value as JSON, as pika (fedora-messaging's client) would decode it: strings as
/// text (bytes that are not UTF-8 replaced), numbers as numbers, tables as objects.
fn value_to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(flag) => json!(flag),
        AMQPValue::ShortShortInt(number) => json!(number),
        AMQPValue::ShortShortUInt(number) => json!(number),
        AMQPValue::ShortInt(number) => json!(number),
        AMQPValue::ShortUInt(number) => json!(number),
        AMQPValue::LongInt(number) => json!(number),
        AMQPValue::LongUInt(number) => json!(number),
        AMQPValue::LongLongInt(number) => json!(number),
        AMQPValue::Float(number) => json!(number),
        AMQPValue::Double(number) => json!(number),
        AMQPValue::DecimalValue(decimal) => {
            json!(f64::from(decimal.value) / 10f64.powi(i32::from(decimal.scale)))
        }
        AMQPValue::ShortString(text) => json!(text.as_str()),
        AMQPValue::LongString(text) => json!(String::from_utf8_lossy(text.as_bytes())),
        AMQPValue::ByteArray(bytes) => json!(String::from_utf8_lossy(bytes.as_slice())),
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(value_to_json).collect())
        }
        AMQPValue::Timestamp(seconds) => json!(seconds),
        AMQPValue::FieldTable(table) => Value::Object(table_to_json(table)),
        AMQPValue::Void => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString, ShortString};
    use statscache_shared::message::Envelope;

    const TOPIC: &str = "org.fedoraproject.prod.bodhi.update.comment";

    fn fedora_messaging_properties(id: Option<&str>) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(
            "fedora_messaging_schema".into(),
            AMQPValue::LongString(LongString::from("bodhi.update.comment.v1")),
        );
        headers.insert(
            SENT_AT.into(),
            AMQPValue::LongString(LongString::from("2026-12-01T16:00:00.250000+00:00")),
        );
        headers.insert("priority".into(), AMQPValue::LongInt(0));
        headers.insert(
            "fedora_messaging_user_alice".into(),
            AMQPValue::Boolean(true),
        );
        headers.insert(
            "x-list".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Void])),
        );
        let properties = BasicProperties::default().with_headers(headers);
        match id {
            Some(id) => properties.with_message_id(ShortString::from(id)),
            None => properties,
        }
    }

    #[test]
    fn a_fedora_messaging_message_becomes_a_datanommer_envelope() {
        let properties = fedora_messaging_properties(Some("2026-9b1b5c4a"));
        let incoming = to_incoming(TOPIC, &properties, br#"{"comment": {"text": "ok"}}"#);
        assert!(incoming.refusal.is_none());
        assert_eq!(incoming.source, SOURCE);
        let envelope = Envelope::parse(&incoming.body).expect("a valid envelope");
        assert_eq!(envelope.topic, TOPIC);
        assert_eq!(envelope.identity(), "2026-9b1b5c4a");
        assert_eq!(envelope.timestamp, Some(1_796_140_800.25));
        assert_eq!(envelope.msg, json!({"comment": {"text": "ok"}}));
        let headers = envelope.headers.expect("headers kept");
        assert_eq!(
            headers["fedora_messaging_schema"],
            "bodhi.update.comment.v1"
        );
        assert_eq!(headers["fedora_messaging_user_alice"], true);
        assert_eq!(headers["priority"], 0);
        assert_eq!(headers["x-list"], json!([null]));
    }

    #[test]
    fn unusable_deliveries_are_refused_with_their_bytes() {
        let cases: [(Option<&str>, &[u8], &str); 3] = [
            (None, b"{}", "missing_msg_id"),
            (Some("id"), b"not json", "not_json"),
            (Some("id"), b"\xff\xfe", "not_utf8"),
        ];
        for (id, body, reason) in cases {
            let incoming = to_incoming(TOPIC, &fedora_messaging_properties(id), body);
            let refusal = incoming.refusal.as_ref();
            assert_eq!(refusal.map(|refusal| refusal.reason), Some(reason));
            assert_eq!(&incoming.body[..], body);
            assert_eq!(incoming.transport_topic.as_deref(), Some(TOPIC.as_bytes()));
        }
    }

    #[test]
    fn the_time_comes_from_sent_at_or_the_timestamp_property() {
        let mut headers = FieldTable::default();
        headers.insert(
            SENT_AT.into(),
            AMQPValue::LongString(LongString::from("yesterday")),
        );
        let bad = BasicProperties::default()
            .with_message_id("id".into())
            .with_headers(headers);
        let refused = to_incoming(TOPIC, &bad, b"{}");
        let refusal = refused.refusal.as_ref();
        assert_eq!(refusal.map(|refusal| refusal.reason), Some("bad_timestamp"));
        let detail = refusal.map(|refusal| refusal.detail.as_str());
        assert_eq!(
            detail,
            Some(
                r#"sent-at: invalid time "yesterday": expected epoch seconds or ISO 8601 (e.g. 2019-08-06T19:06:17Z), between 1970 and 2200"#
            )
        );
        // A time, but one we do not take: said so, not called unreadable.
        let mut far = FieldTable::default();
        far.insert(
            SENT_AT.into(),
            AMQPValue::LongString(LongString::from("9999-12-31T23:59:59+00:00")),
        );
        let far = BasicProperties::default()
            .with_message_id("id".into())
            .with_headers(far);
        let refused = to_incoming(TOPIC, &far, b"{}");
        let detail = refused
            .refusal
            .as_ref()
            .map(|refusal| refusal.detail.as_str());
        assert_eq!(
            detail,
            Some(
                r#"sent-at: time "9999-12-31T23:59:59+00:00" is out of the supported range: 1970 to 2200"#
            )
        );

        let stamped = BasicProperties::default()
            .with_message_id("id".into())
            .with_timestamp(1_700_000_000);
        let incoming = to_incoming(TOPIC, &stamped, b"{}");
        assert!(incoming.refusal.is_none());
        let envelope = Envelope::parse(&incoming.body).expect("valid");
        assert_eq!(envelope.timestamp, Some(1_700_000_000.0));

        let untimed = BasicProperties::default().with_message_id("id".into());
        let incoming = to_incoming(TOPIC, &untimed, b"{}");
        let missing = Envelope::parse(&incoming.body).expect_err("no time");
        assert_eq!(missing.reason(), "missing_timestamp");
    }
}
