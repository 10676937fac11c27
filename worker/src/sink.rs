//! Batched writes to ClickHouse: one INSERT per table per batch, never one per message.
//!
//! A batch holds the `messages` rows and every plugin's fact rows for the same set of JetStream
//! messages. The caller acks those messages only after [`write`] returns `Ok`, so a crash
//! anywhere in between leads to redelivery and the same rows being written again — which the
//! fact model makes harmless (see `statscache_shared::schema`).

use std::collections::BTreeMap;

use clickhouse::Row;
use futures::FutureExt;
use serde::Serialize;

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

/// The rows produced by one batch of messages.
#[derive(Debug, Default)]
pub struct Batch {
    pub messages: Vec<MessageRow>,
    /// Fact rows by table name.
    pub facts: BTreeMap<String, Vec<FactRow>>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.facts.values().all(Vec::is_empty)
    }
}

/// Writes every table of `batch`, the tables concurrently. Idempotent: writing the same batch
/// twice changes no statistic, so a partly failed write is simply written again whole.
pub async fn write(
    client: &clickhouse::Client,
    batch: &Batch,
) -> Result<(), clickhouse::error::Error> {
    let mut inserts = Vec::with_capacity(batch.facts.len() + 1);
    inserts.push(insert_rows(client, "messages", &batch.messages).boxed());
    for (table, rows) in &batch.facts {
        inserts.push(insert_rows(client, table, rows).boxed());
    }
    futures::future::try_join_all(inserts).await?;
    Ok(())
}

/// One INSERT of `rows` into `table` (none if there are no rows).
async fn insert_rows<T>(
    client: &clickhouse::Client,
    table: &str,
    rows: &[T],
) -> Result<(), clickhouse::error::Error>
where
    T: Row + Serialize + for<'a> Row<Value<'a> = T>,
{
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = client.insert::<T>(table).await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}
