//! The ledgers of one-off fills: a table of derived data added to an installation that already
//! holds facts is filled from them once, by the first worker to start, and recorded only when
//! complete, so that a worker stopped half-way fills again.

/// A ledger of one-off fills from existing data, one row per fact table once its fill is
/// complete: a worker stopped half-way fills again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// `rollups_filled`: the rollups, from the facts (an installation older than rollups).
    Rollups,
    /// `key_counts_filled`: `rollup_keys` and `rollup_key_counts`, from the rollups (an
    /// installation older than key counts).
    KeyCounts,
    /// `yearly_rollups_filled`: the yearly rollups, from the monthly ones (an installation
    /// older than yearly rollups).
    YearlyRollups,
}

impl Fill {
    fn ledger(self) -> &'static str {
        match self {
            Fill::Rollups => "rollups_filled",
            Fill::KeyCounts => "key_counts_filled",
            Fill::YearlyRollups => "yearly_rollups_filled",
        }
    }
}

/// Whether `fill` of `stat_table` was ever completed. An installation older than rollups has
/// facts and empty rollups until then.
pub async fn filled(
    client: &clickhouse::Client,
    fill: Fill,
    stat_table: &str,
) -> Result<bool, clickhouse::error::Error> {
    let filled: u64 = client
        .query(&format!(
            "SELECT count() FROM {} WHERE stat_table = ?",
            fill.ledger()
        ))
        .bind(stat_table)
        .fetch_one()
        .await?;
    Ok(filled > 0)
}

/// Records that `fill` of `stat_table` holds everything the data it reads held at the start of
/// the fill; later facts are rolled up and counted by the batches that write them.
pub async fn record_filled(
    client: &clickhouse::Client,
    fill: Fill,
    stat_table: &str,
) -> Result<(), clickhouse::error::Error> {
    client
        .query(&format!(
            "INSERT INTO {} (stat_table, filled_at) VALUES (?, now())",
            fill.ledger()
        ))
        .bind(stat_table)
        .execute()
        .await
}
