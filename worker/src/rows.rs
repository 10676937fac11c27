//! The rows the worker writes, one type per table, fields in the table's column order (the
//! `clickhouse` crate's `RowBinary` follows field order). Tables and columns are documented in
//! `statscache_shared::schema`.

use clickhouse::Row;
use serde::Serialize;
use statscache_shared::datanommer::datanommer_msg;
use statscache_shared::schema::KEY_COUNT_LEVELS;
use statscache_shared::sql::clamp_time;

use crate::plugin::Message;

/// A row of the `messages` table; field order matches the table.
#[derive(Debug, Clone, Row, Serialize)]
pub struct MessageRow {
    pub msg_id: String,
    pub topic: String,
    pub category: String,
    pub timestamp: f64,
    pub time: u32,
    pub i: u64,
    pub username: String,
    pub usernames: Vec<String>,
    pub packages: Vec<String>,
    pub body: String,
    pub source: String,
    pub stream_sequence: u64,
    pub ingested_at: u32,
    /// `msg` as datanommer stores it, for `/raw?contains=` (added by schema version 4).
    pub datanommer_msg: String,
}

impl MessageRow {
    /// The row of `message`, whose envelope as published is `body`.
    pub fn new(message: &Message, body: String, source: String, ingested_at: u32) -> MessageRow {
        let envelope = &message.envelope;
        let timestamp = envelope.event_time();
        MessageRow {
            msg_id: message.identity.clone(),
            topic: envelope.topic.clone(),
            category: envelope.category().to_string(),
            timestamp,
            time: timestamp as u32,
            i: envelope.i.unwrap_or_default(),
            username: envelope.username.clone().unwrap_or_default(),
            usernames: message.meta.usernames.clone(),
            packages: message.meta.packages.clone(),
            body,
            source,
            stream_sequence: message.stream_sequence,
            ingested_at,
            datanommer_msg: datanommer_msg(&envelope.msg),
        }
    }
}

/// A row of a `stat_<plugin>` table; field order matches the table.
#[derive(Debug, Clone, Row, Serialize)]
pub struct FactRow {
    pub time: u32,
    pub timestamp: f64,
    pub msg_id: String,
    pub key: String,
    pub value: String,
}

/// A row of `message_index`: where in time a message identity lives.
#[derive(Debug, Clone, Row, Serialize)]
pub struct IndexRow {
    pub msg_id: String,
    pub time: u32,
}

/// A row of `message_identities`: the copy of an identity that counts (`identity`).
#[derive(Debug, Clone, Row, Serialize)]
pub struct IdentityRow {
    pub msg_id: String,
    pub time: u32,
    pub timestamp: f64,
    pub topic: String,
    pub fingerprint: u64,
    pub content_fingerprint: u64,
    pub stream_sequence: u64,
}

/// A row of `message_copies`: a copy of an identity stored under another copy; not counted.
#[derive(Debug, Clone, Row, Serialize)]
pub struct CopyRow {
    pub msg_id: String,
    pub time: u32,
    pub timestamp: f64,
    pub topic: String,
    pub fingerprint: u64,
    pub stream_sequence: u64,
    pub source: String,
    pub canonical_timestamp: f64,
    pub canonical_topic: String,
    /// `timestamp`, `topic`, `body`: what differs from the copy that counts.
    pub differs: Vec<String>,
    pub body: String,
    pub seen_at: u32,
}

/// A row of `message_users` or `message_packages` (`name` is the person or the package).
#[derive(Debug, Clone, Row, Serialize)]
pub struct LookupRow {
    pub name: String,
    pub time: u32,
    pub timestamp: f64,
    pub msg_id: String,
    pub topic: String,
    pub category: String,
    /// The message's arrival order, which `/raw` breaks ties in time with.
    pub stream_sequence: u64,
}

impl LookupRow {
    pub fn of(name: &str, message: &MessageRow) -> LookupRow {
        LookupRow {
            name: name.to_string(),
            time: message.time,
            timestamp: message.timestamp,
            msg_id: message.msg_id.clone(),
            topic: message.topic.clone(),
            category: message.category.clone(),
            stream_sequence: message.stream_sequence,
        }
    }
}

/// A row of `rollup_keys`: `key` has facts of `stat_table` in the `level` period at `period`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Row, Serialize)]
pub struct KeyRow {
    pub stat_table: String,
    /// [`Level::name`] of a level of [`KEY_COUNT_LEVELS`].
    pub level: String,
    pub period: u32,
    pub key: String,
}

impl KeyRow {
    /// The presence rows of a fact of `stat_table` at `time` for `key`, one per counted level.
    pub fn of(stat_table: &str, time: u32, key: &str) -> [KeyRow; KEY_COUNT_LEVELS.len()] {
        KEY_COUNT_LEVELS.map(|level| KeyRow {
            stat_table: stat_table.to_string(),
            level: level.name().to_string(),
            period: clamp_time(level.start(u64::from(time))),
            key: key.to_string(),
        })
    }
}
