//! Fingerprints that tell the copies of one message identity apart.
//!
//! - [`of_copy`]: of the bytes of one stream message, the envelope as `messages.body` stores it.
//!   It says whether a delivery *is* the stored copy (a redelivery, a replay) or another one.
//!   It is ClickHouse's `sipHash64(body)` (SipHash-2-4, zero key), so the schema migration fills
//!   it for messages stored before it existed, in SQL.
//! - [`of_content`]: of the body (`msg`) as canonical JSON (keys sorted), so that two copies
//!   serialised differently but saying the same thing compare equal. 0 means unknown (rows
//!   filled by the migration); a real one is never 0.

use std::hash::Hasher;

use serde_json::Value;
use siphasher::sip::SipHasher24;
use statscache_shared::message::canonical_json;

/// `sipHash64(bytes)` as ClickHouse computes it.
pub fn of_copy(bytes: &[u8]) -> u64 {
    let mut hasher = SipHasher24::new_with_keys(0, 0);
    hasher.write(bytes);
    hasher.finish()
}

/// The content fingerprint of a message body; never 0.
pub fn of_content(body: &Value) -> u64 {
    of_copy(canonical_json(body).as_bytes()).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_fingerprinted_as_clickhouse_does() {
        // `SELECT sipHash64('hello'), sipHash64('')`, on ClickHouse 18.16 and 26.x alike.
        assert_eq!(of_copy(b"hello"), 10142490492830962361);
        assert_eq!(of_copy(b""), 2202906307356721367);
    }

    #[test]
    fn content_ignores_key_order_and_spacing() {
        let a: Value = serde_json::from_str(r#"{"a": 1, "b": [1, {"y": 2, "x": 1}]}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b":[1,{"x":1,"y":2}],"a":1}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"a": 2, "b": [1, {"y": 2, "x": 1}]}"#).unwrap();
        assert_eq!(of_content(&a), of_content(&b));
        assert_ne!(of_content(&a), of_content(&c));
    }
}
