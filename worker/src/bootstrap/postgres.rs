//! Reading datanommer's rows from a live PostgreSQL, in time order, a page at a time.
//!
//! Keyset paging on `(timestamp, id)`: each page starts after the last row of the one before,
//! so a page costs the same however deep into history it is (datanommer indexes `timestamp`),
//! rows inserted meanwhile at the live edge are read when the reading gets there, and a resumed
//! bootstrap starts from its recorded position. A TimescaleDB hypertable answers the same query.

use tokio_postgres::{Client, NoTls};

use super::row::{Position, Row};

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(tokio_postgres::Error),
    #[error("cannot read datanommer's messages table: {0}")]
    Query(tokio_postgres::Error),
    #[error("datanommer's messages table has neither an agent_name nor a username column")]
    NoAgentColumn,
}

/// A connection to datanommer's database.
pub struct Postgres {
    client: Client,
    /// The page query, with datanommer's column for the sending agent.
    query: String,
}

impl Postgres {
    /// Connects to `url` (`postgresql://user:password@host/database`, libpq's syntax).
    pub async fn connect(url: &str) -> Result<Postgres, PostgresError> {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .map_err(PostgresError::Connect)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "the PostgreSQL connection ended");
            }
        });
        let agent = agent_column(&client).await?;
        // `to_char` with microseconds always: the text sorts in time order, as a position must.
        let query = format!(
            "SELECT to_char(timestamp, 'YYYY-MM-DD HH24:MI:SS.US'), id::int8, \
                    extract(epoch from timestamp)::float8, msg_id, i::int8, topic, certificate, \
                    signature, {agent}, crypto, source_name, source_version, msg::text, \
                    headers::text \
             FROM messages \
             WHERE timestamp > $1::text::timestamp \
                OR (timestamp = $1::text::timestamp AND id > $2::int8) \
             ORDER BY timestamp, id LIMIT $3::int8"
        );
        Ok(Postgres { client, query })
    }

    /// Up to `limit` rows after `after`, in time order; none at the end.
    pub async fn rows_after(
        &self,
        after: &Position,
        limit: usize,
    ) -> Result<Vec<Row>, PostgresError> {
        let start = if after.timestamp.is_empty() {
            "-infinity".to_string()
        } else {
            after.timestamp.clone()
        };
        let found = self
            .client
            .query(&self.query, &[&start, &after.id, &(limit as i64)])
            .await
            .map_err(PostgresError::Query)?;
        let mut rows = Vec::with_capacity(found.len());
        for row in found {
            rows.push(Row {
                position: Position {
                    timestamp: row.get(0),
                    id: row.get(1),
                },
                epoch: row.get(2),
                msg_id: row.get(3),
                i: row.get(4),
                topic: row.get(5),
                certificate: row.get(6),
                signature: row.get(7),
                agent_name: row.get(8),
                crypto: row.get(9),
                source_name: row.get(10),
                source_version: row.get(11),
                msg: row.get(12),
                headers: row.get(13),
            });
        }
        Ok(rows)
    }

    /// How many rows follow `after`: for the progress bar's length. A count over a table of
    /// hundreds of millions of rows takes a while, but it is taken once.
    pub async fn count_after(&self, after: &Position) -> Result<u64, PostgresError> {
        let start = if after.timestamp.is_empty() {
            "-infinity".to_string()
        } else {
            after.timestamp.clone()
        };
        let row = self
            .client
            .query_one(
                "SELECT count(*) FROM messages \
                 WHERE timestamp > $1::text::timestamp \
                    OR (timestamp = $1::text::timestamp AND id > $2::int8)",
                &[&start, &after.id],
            )
            .await
            .map_err(PostgresError::Query)?;
        let count: i64 = row.get(0);
        Ok(count.max(0) as u64)
    }
}

/// `agent_name` (datanommer ≥ 1.1) or `username` (before it).
async fn agent_column(client: &Client) -> Result<&'static str, PostgresError> {
    let columns = client
        .query(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_name = 'messages' AND column_name IN ('agent_name', 'username')",
            &[],
        )
        .await
        .map_err(PostgresError::Query)?;
    let names: Vec<String> = columns.iter().map(|row| row.get(0)).collect();
    if names.iter().any(|name| name == "agent_name") {
        return Ok("agent_name");
    }
    if names.iter().any(|name| name == "username") {
        return Ok("username");
    }
    Err(PostgresError::NoAgentColumn)
}
