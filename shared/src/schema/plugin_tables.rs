//! Each plugin's tables: its facts (`stat_<plugin>`) and rollups (`_hourly` … `_yearly`),
//! created when a worker starts with the plugin, dropped by `replay --rebuild` (with the
//! plugin's rows of the shared key-count tables).

use super::placement::{run_ddl, Placement};
use super::{SchemaError, ROLLUP_KEYS, ROLLUP_KEY_COUNTS};
use crate::config::StatisticKind;
use crate::period::Level;

/// Creates a plugin's fact table if it does not exist.
pub async fn create_stat_table(
    client: &clickhouse::Client,
    placement: Placement<'_>,
    table: &str,
) -> Result<(), SchemaError> {
    let statement = format!(
        "CREATE TABLE IF NOT EXISTS {table} (
            time DateTime,
            timestamp Float64,
            msg_id String,
            key String,
            value String
        ) ENGINE = ReplacingMergeTree()
        PARTITION BY toYear(time)
        ORDER BY (key, time, msg_id, value)"
    );
    run_ddl(client, placement, &statement)
        .await
        .map_err(|source| SchemaError::CreateTable {
            table: table.to_string(),
            source,
        })
}

/// Name of a plugin's rollup table at `level` (`stat_volume` → `stat_volume_daily`).
pub fn rollup_table(stat_table: &str, level: Level) -> String {
    format!("{stat_table}_{}", level.name())
}

/// The columns of a rollup table after `key, period`, by statistic kind.
pub fn rollup_value_columns(kind: StatisticKind) -> &'static str {
    match kind {
        StatisticKind::Count => "count",
        StatisticKind::Latest => "timestamp, msg_id, value",
        StatisticKind::DistinctCount => "distinct_values",
    }
}

/// Creates a plugin's rollup tables if they do not exist.
///
/// Engines: a count only grows as facts arrive, so merges keep the greatest (`ReplacingMergeTree
/// (count)`); latest rows differ in their sort key, so merges only fold identical rows; distinct
/// sets are merged by union (`AggregatingMergeTree`). Readers never depend on merges.
pub async fn create_rollup_tables(
    client: &clickhouse::Client,
    placement: Placement<'_>,
    stat_table: &str,
    kind: StatisticKind,
) -> Result<(), SchemaError> {
    let (columns, engine, order) = match kind {
        StatisticKind::Count => ("count UInt64", "ReplacingMergeTree(count)", "key, period"),
        StatisticKind::Latest => (
            "timestamp Float64, msg_id String, value String",
            "ReplacingMergeTree()",
            "key, period, timestamp, msg_id, value",
        ),
        StatisticKind::DistinctCount => (
            "distinct_values AggregateFunction(uniqExact, String)",
            "AggregatingMergeTree()",
            "key, period",
        ),
    };
    for level in Level::ALL {
        let table = rollup_table(stat_table, level);
        let failed = |source| SchemaError::CreateTable {
            table: table.clone(),
            source,
        };
        let statement = format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                key String,
                period DateTime,
                {columns}
            ) ENGINE = {engine}
            PARTITION BY toYear(period)
            ORDER BY ({order})"
        );
        run_ddl(client, placement, &statement)
            .await
            .map_err(failed)?;
    }
    Ok(())
}

/// Drops a plugin's rollup tables (for `statscache-worker replay --rebuild`).
pub async fn drop_rollup_tables(
    client: &clickhouse::Client,
    placement: Placement<'_>,
    stat_table: &str,
) -> Result<(), SchemaError> {
    for level in Level::ALL {
        drop_stat_table(client, placement, &rollup_table(stat_table, level)).await?;
    }
    Ok(())
}

/// Drops a plugin's rows of `rollup_keys` and `rollup_key_counts` (its partition of each), for
/// `statscache-worker replay --rebuild`.
pub async fn drop_key_counts(
    client: &clickhouse::Client,
    placement: Placement<'_>,
    stat_table: &str,
) -> Result<(), SchemaError> {
    for table in [ROLLUP_KEYS, ROLLUP_KEY_COUNTS] {
        // `stat_table` is letters, digits and underscores ([`stat_table`]): a safe literal.
        let statement = format!("ALTER TABLE {table} DROP PARTITION '{stat_table}'");
        run_ddl(client, placement, &statement)
            .await
            .map_err(|source| SchemaError::CreateTable {
                table: table.to_string(),
                source,
            })?;
    }
    Ok(())
}

/// Drops a plugin's fact table (for `statscache-worker replay --rebuild`).
pub async fn drop_stat_table(
    client: &clickhouse::Client,
    placement: Placement<'_>,
    table: &str,
) -> Result<(), SchemaError> {
    run_ddl(client, placement, &format!("DROP TABLE IF EXISTS {table}"))
        .await
        .map_err(|source| SchemaError::CreateTable {
            table: table.to_string(),
            source,
        })
}
