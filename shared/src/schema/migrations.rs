//! Migrations are versioned and idempotent (`IF NOT EXISTS`), so several worker replicas may run
//! them at once. With `clickhouse.cluster` set every DDL statement goes through [`Placement`]:
//! `ON CLUSTER`, tables named with their database, and each engine replaced by its `Replicated`
//! form, so every replica holds every table and ZooKeeper replicates the rows written to any.
//! The SQL sticks to what ClickHouse 18.16 (Debian) and current releases share: no DateTime64,
//! no LowCardinality, no server-side query parameters.

use super::placement::{run_ddl, Placement};
use super::{client, client_without_database, SchemaError};
use crate::config::ClickHouseConfig;

/// One schema change: columns added first, then statements, which must be idempotent.
struct Migration {
    version: u32,
    description: &'static str,
    columns: &'static [AddedColumn],
    statements: &'static [&'static str],
}

/// A column added to an existing table. ClickHouse 18.16 has no `ADD COLUMN IF NOT EXISTS`, so
/// the migration adds it only when `system.columns` lacks it (see [`add_column`]).
struct AddedColumn {
    table: &'static str,
    column: &'static str,
    column_type: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "messages, plugin catalog",
        columns: &[],
        statements: &[
            "CREATE TABLE IF NOT EXISTS messages (
            msg_id String,
            topic String,
            category String,
            timestamp Float64,
            time DateTime,
            i UInt64,
            username String,
            usernames Array(String),
            packages Array(String),
            body String,
            source String,
            stream_sequence UInt64,
            ingested_at DateTime
        ) ENGINE = ReplacingMergeTree()
        PARTITION BY toYear(time)
        ORDER BY (time, msg_id)",
            "CREATE TABLE IF NOT EXISTS plugins (
            identifier String,
            name String,
            description String,
            kind String,
            table_name String,
            topics Array(String),
            backlog_delta_seconds UInt64,
            updated_at DateTime
        ) ENGINE = ReplacingMergeTree(updated_at)
        ORDER BY identifier",
        ],
    },
    Migration {
        version: 2,
        description: "ledger of rollups filled from existing facts",
        columns: &[],
        statements: &["CREATE TABLE IF NOT EXISTS rollups_filled (
            stat_table String,
            filled_at DateTime
        ) ENGINE = ReplacingMergeTree(filled_at)
        ORDER BY stat_table"],
    },
    Migration {
        version: 3,
        description: "history lookup tables: message_index, message_users, message_packages",
        columns: &[],
        statements: &[
            "CREATE TABLE IF NOT EXISTS message_index (
                msg_id String,
                time DateTime
            ) ENGINE = ReplacingMergeTree()
            ORDER BY (msg_id, time)",
            "CREATE TABLE IF NOT EXISTS message_users (
                name String,
                time DateTime,
                timestamp Float64,
                msg_id String,
                topic String,
                category String,
                stream_sequence UInt64
            ) ENGINE = ReplacingMergeTree()
            PARTITION BY toYear(time)
            ORDER BY (name, time, msg_id)",
            "CREATE TABLE IF NOT EXISTS message_packages (
                name String,
                time DateTime,
                timestamp Float64,
                msg_id String,
                topic String,
                category String,
                stream_sequence UInt64
            ) ENGINE = ReplacingMergeTree()
            PARTITION BY toYear(time)
            ORDER BY (name, time, msg_id)",
            // Existing installations: index what is already stored. Running these again (an
            // interrupted migration, two replicas at once) only writes duplicate rows, which
            // readers never count twice and merges fold away.
            FILL_MESSAGE_INDEX,
            FILL_MESSAGE_USERS,
            FILL_MESSAGE_PACKAGES,
        ],
    },
    Migration {
        version: 4,
        description: "history as datagrepper: stream_sequence in the lookup tables, datanommer_msg",
        // `/raw` orders ties in time by arrival (`stream_sequence`, datanommer's row id) and
        // matches `contains` on datanommer's text of `msg`. Lookup rows stored before have a
        // sequence of 0: they are written again with theirs (readers take the greatest).
        // Messages stored before have an empty `datanommer_msg` (not computable in SQL).
        columns: &[
            AddedColumn {
                table: "message_users",
                column: "stream_sequence",
                column_type: "UInt64",
            },
            AddedColumn {
                table: "message_packages",
                column: "stream_sequence",
                column_type: "UInt64",
            },
            AddedColumn {
                table: "messages",
                column: "datanommer_msg",
                column_type: "String",
            },
        ],
        statements: &[FILL_MESSAGE_USERS, FILL_MESSAGE_PACKAGES],
    },
    Migration {
        version: 5,
        description: "per-period key counts: rollup_keys, rollup_key_counts, key_counts_filled",
        // Partitioned by plugin, so `replay --rebuild` drops one plugin's rows at once. Filled
        // for existing data by the workers (`key_counts_filled`), which know the plugins.
        columns: &[],
        statements: &[
            "CREATE TABLE IF NOT EXISTS rollup_keys (
                stat_table String,
                level String,
                period DateTime,
                key String
            ) ENGINE = ReplacingMergeTree()
            PARTITION BY stat_table
            ORDER BY (stat_table, level, period, key)",
            "CREATE TABLE IF NOT EXISTS rollup_key_counts (
                stat_table String,
                level String,
                period DateTime,
                keys UInt64
            ) ENGINE = ReplacingMergeTree(keys)
            PARTITION BY stat_table
            ORDER BY (stat_table, level, period)",
            "CREATE TABLE IF NOT EXISTS key_counts_filled (
                stat_table String,
                filled_at DateTime
            ) ENGINE = ReplacingMergeTree(filled_at)
            ORDER BY stat_table",
        ],
    },
    Migration {
        version: 6,
        description: "ledger of yearly rollups filled from monthly ones: yearly_rollups_filled",
        // The `_yearly` tables themselves are created with each plugin's other rollups, and
        // filled for existing data by the workers, which know the plugins.
        columns: &[],
        statements: &["CREATE TABLE IF NOT EXISTS yearly_rollups_filled (
            stat_table String,
            filled_at DateTime
        ) ENGINE = ReplacingMergeTree(filled_at)
        ORDER BY stat_table"],
    },
    Migration {
        version: 7,
        description: "one canonical copy per message identity: message_identities, message_copies",
        // Small granules: a batch looks up its identities among all of history's, one random
        // key each, and each lookup reads a granule. Filled from `messages` for existing
        // installations (their copies' content fingerprints are unknown: 0).
        columns: &[],
        statements: &[
            "CREATE TABLE IF NOT EXISTS message_identities (
                msg_id String,
                time DateTime,
                timestamp Float64,
                topic String,
                fingerprint UInt64,
                content_fingerprint UInt64,
                stream_sequence UInt64
            ) ENGINE = ReplacingMergeTree()
            ORDER BY (msg_id, fingerprint)
            SETTINGS index_granularity = 256",
            "CREATE TABLE IF NOT EXISTS message_copies (
                msg_id String,
                time DateTime,
                timestamp Float64,
                topic String,
                fingerprint UInt64,
                stream_sequence UInt64,
                source String,
                canonical_timestamp Float64,
                canonical_topic String,
                differs Array(String),
                body String,
                seen_at DateTime
            ) ENGINE = ReplacingMergeTree()
            PARTITION BY toYear(time)
            ORDER BY (msg_id, fingerprint)",
            FILL_MESSAGE_IDENTITIES,
        ],
    },
];

/// Every stored message's identity row, from `messages` (schema version 7). `fingerprint` is
/// `sipHash64` of the envelope as stored, which the workers compute alike
/// (`worker/src/identity/fingerprint.rs`).
pub const FILL_MESSAGE_IDENTITIES: &str = "INSERT INTO message_identities \
     (msg_id, time, timestamp, topic, fingerprint, content_fingerprint, stream_sequence) \
     SELECT msg_id, time, timestamp, topic, sipHash64(body), 0, stream_sequence FROM messages";

/// The history lookup tables filled from `messages` (the migration runs these; an operator may
/// run them again, e.g. after old workers wrote messages during a rolling upgrade).
pub const FILL_MESSAGE_INDEX: &str = "INSERT INTO message_index (msg_id, time) \
     SELECT msg_id, time FROM messages";
pub const FILL_MESSAGE_USERS: &str = "INSERT INTO message_users \
     (name, time, timestamp, msg_id, topic, category, stream_sequence) \
     SELECT name, time, timestamp, msg_id, topic, category, stream_sequence \
     FROM messages ARRAY JOIN usernames AS name";
pub const FILL_MESSAGE_PACKAGES: &str = "INSERT INTO message_packages \
     (name, time, timestamp, msg_id, topic, category, stream_sequence) \
     SELECT name, time, timestamp, msg_id, topic, category, stream_sequence \
     FROM messages ARRAY JOIN packages AS name";

/// Creates the database and applies the migrations not yet recorded.
pub async fn migrate(config: &ClickHouseConfig) -> Result<(), SchemaError> {
    let database = &config.database;
    if database.is_empty()
        || !database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(SchemaError::BadDatabaseName(database.clone()));
    }
    let placement = Placement::of(config);
    let create_database = format!("CREATE DATABASE IF NOT EXISTS {database}");
    run_ddl(
        &client_without_database(config),
        placement,
        &create_database,
    )
    .await
    .map_err(|source| SchemaError::Migration {
        version: 0,
        description: "create database",
        source,
    })?;

    let client = client(config);
    let ledger = "CREATE TABLE IF NOT EXISTS schema_migrations (
            version UInt32, description String, applied_at DateTime
        ) ENGINE = ReplacingMergeTree() ORDER BY version";
    run_ddl(&client, placement, ledger)
        .await
        .map_err(|source| SchemaError::Migration {
            version: 0,
            description: "migration ledger",
            source,
        })?;
    let applied: Vec<u32> = client
        .query("SELECT DISTINCT version FROM schema_migrations")
        .fetch_all()
        .await
        .map_err(|source| SchemaError::Migration {
            version: 0,
            description: "read ledger",
            source,
        })?;

    for migration in MIGRATIONS {
        if applied.contains(&migration.version) {
            continue;
        }
        let failed = |source| SchemaError::Migration {
            version: migration.version,
            description: migration.description,
            source,
        };
        for column in migration.columns {
            add_column(&client, column).await.map_err(failed)?;
        }
        for statement in migration.statements {
            run_ddl(&client, placement, statement)
                .await
                .map_err(failed)?;
        }
        client
            .query("INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, now())")
            .bind(migration.version)
            .bind(migration.description)
            .execute()
            .await
            .map_err(failed)?;
        tracing::info!(
            version = migration.version,
            description = migration.description,
            "schema migrated"
        );
    }
    Ok(())
}

/// Adds `column` unless its table has it. Two replicas migrating at once may both try; the one
/// whose `ALTER` fails then finds the column there and carries on.
async fn add_column(
    client: &clickhouse::Client,
    column: &AddedColumn,
) -> Result<(), clickhouse::error::Error> {
    if has_column(client, column).await? {
        return Ok(());
    }
    let alter = format!(
        "ALTER TABLE {} ADD COLUMN {} {}",
        column.table, column.column, column.column_type
    );
    let Err(error) = client.query(&alter).execute().await else {
        return Ok(());
    };
    if has_column(client, column).await? {
        return Ok(());
    }
    Err(error)
}

async fn has_column(
    client: &clickhouse::Client,
    column: &AddedColumn,
) -> Result<bool, clickhouse::error::Error> {
    let found: u64 = client
        .query(
            "SELECT count() FROM system.columns \
             WHERE database = currentDatabase() AND table = ? AND name = ?",
        )
        .bind(column.table)
        .bind(column.column)
        .fetch_one()
        .await?;
    Ok(found > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_server_runs_statements_as_written() {
        let placement = Placement {
            database: "statscache",
            cluster: "",
        };
        for migration in MIGRATIONS {
            for statement in migration.statements {
                assert_eq!(placement.place(statement), *statement);
            }
        }
    }
}
