//! Batched writes to ClickHouse: one INSERT per table per batch, never one per message.
//!
//! A batch holds the `messages` rows, their identity rows (`message_identities`) and history
//! lookup rows, every plugin's fact rows and their presence rows (`rollup_keys`, see
//! `key_counts`) for the same set of JetStream messages, and the copies of identities counted
//! elsewhere (`message_copies`, see `identity`). The caller acks those messages only after
//! [`write`] returns `Ok`, so a crash anywhere in between leads to redelivery and the same rows
//! being written again — which the fact model makes harmless (see `statscache_shared::schema`).

use std::collections::{BTreeMap, BTreeSet};

use clickhouse::Row;
use futures::FutureExt;
use serde::Serialize;
use statscache_shared::schema::ROLLUP_KEYS;

use crate::plugin::{Fact, Message};
use crate::rows::{CopyRow, FactRow, IdentityRow, IndexRow, KeyRow, LookupRow, MessageRow};

/// The rows produced by one batch of messages.
#[derive(Debug, Default)]
pub struct Batch {
    messages: Vec<MessageRow>,
    identities: Vec<IdentityRow>,
    copies: Vec<CopyRow>,
    index: Vec<IndexRow>,
    users: Vec<LookupRow>,
    packages: Vec<LookupRow>,
    /// Fact rows by table name.
    pub facts: BTreeMap<String, Vec<FactRow>>,
    /// The days and months each plugin's facts have keys in (`rollup_keys`), derived from the
    /// facts so that they are never written without them.
    keys: BTreeSet<KeyRow>,
}

impl Batch {
    /// Adds a message, the copy of its identity that counts (whose `fingerprint` and
    /// `content_fingerprint` are given), with its rows in the identity and history lookup
    /// tables, so that they can never be written without it (or it without them).
    pub fn push_message(
        &mut self,
        message: MessageRow,
        fingerprint: u64,
        content_fingerprint: u64,
    ) {
        self.identities.push(IdentityRow {
            msg_id: message.msg_id.clone(),
            time: message.time,
            timestamp: message.timestamp,
            topic: message.topic.clone(),
            fingerprint,
            content_fingerprint,
            stream_sequence: message.stream_sequence,
        });
        self.index.push(IndexRow {
            msg_id: message.msg_id.clone(),
            time: message.time,
        });
        for username in &message.usernames {
            self.users.push(LookupRow::of(username, &message));
        }
        for package in &message.packages {
            self.packages.push(LookupRow::of(package, &message));
        }
        self.messages.push(message);
    }

    /// Adds a copy of an identity whose counted copy is another one.
    pub fn push_copy(&mut self, copy: CopyRow) {
        self.copies.push(copy);
    }

    /// Adds the facts one plugin derived from `message` to its `table`, once each (`facts` is
    /// drained). Returns how many rows were added.
    pub fn push_facts(&mut self, table: &str, message: &Message, facts: &mut Vec<Fact>) -> usize {
        facts.sort();
        facts.dedup();
        let timestamp = message.envelope.event_time();
        let rows = self.facts.entry(table.to_string()).or_default();
        let added = facts.len();
        for fact in facts.drain(..) {
            let (time, timestamp, msg_id) = match fact.counted {
                None => (timestamp as u32, timestamp, message.identity.clone()),
                Some(counted) => (counted.time, f64::from(counted.time), counted.identity),
            };
            self.keys.extend(KeyRow::of(table, time, &fact.key));
            rows.push(FactRow {
                time,
                timestamp,
                msg_id,
                key: fact.key,
                value: fact.value,
            });
        }
        added
    }

    /// The presence rows of the batch's facts, in every plugin.
    pub fn key_rows(&self) -> &BTreeSet<KeyRow> {
        &self.keys
    }

    pub fn messages(&self) -> &[MessageRow] {
        &self.messages
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.copies.is_empty() && self.facts.values().all(Vec::is_empty)
    }
}

/// Writes every table of `batch`, the tables concurrently. Idempotent: writing the same batch
/// twice changes no statistic, so a partly failed write is simply written again whole.
pub async fn write(
    client: &clickhouse::Client,
    batch: &Batch,
) -> Result<(), clickhouse::error::Error> {
    let mut inserts = Vec::with_capacity(batch.facts.len() + 7);
    inserts.push(insert_rows(client, "messages", &batch.messages).boxed());
    inserts.push(insert_rows(client, "message_identities", &batch.identities).boxed());
    inserts.push(insert_rows(client, "message_copies", &batch.copies).boxed());
    inserts.push(insert_rows(client, "message_index", &batch.index).boxed());
    inserts.push(insert_rows(client, "message_users", &batch.users).boxed());
    inserts.push(insert_rows(client, "message_packages", &batch.packages).boxed());
    for (table, rows) in &batch.facts {
        inserts.push(insert_rows(client, table, rows).boxed());
    }
    inserts.push(insert_rows(client, ROLLUP_KEYS, &batch.keys).boxed());
    // Every insert runs to its end even if one fails: on a cluster one may fail only for
    // another worker's quorum (`quorum`), and the retry then re-sends blocks already stored,
    // which replicated tables recognise and skip, instead of ones cut off half-way.
    for outcome in futures::future::join_all(inserts).await {
        outcome?;
    }
    Ok(())
}

/// One INSERT of `rows` into `table` (none if there are no rows).
async fn insert_rows<'r, T, R>(
    client: &clickhouse::Client,
    table: &str,
    rows: R,
) -> Result<(), clickhouse::error::Error>
where
    T: Row + Serialize + for<'a> Row<Value<'a> = T> + 'r,
    R: IntoIterator<Item = &'r T>,
{
    let mut rows = rows.into_iter().peekable();
    if rows.peek().is_none() {
        return Ok(());
    }
    let mut insert = client.insert::<T>(table).await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}
