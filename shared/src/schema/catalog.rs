//! The plugin catalog: one row per plugin in the `plugins` table, written by every worker at
//! start-up and read by the api, which learns each statistic's identifier, kind and tables
//! from it rather than from a configuration of its own.

use serde::{Deserialize, Serialize};

use crate::config::StatisticKind;

/// A row of the `plugins` table: written by every worker at start-up, read by the api.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct PluginCatalogRow {
    pub identifier: String,
    pub name: String,
    pub description: String,
    /// [`StatisticKind::as_str`].
    pub kind: String,
    pub table_name: String,
    pub topics: Vec<String>,
    pub backlog_delta_seconds: u64,
    /// Epoch seconds; the table keeps the newest row per identifier.
    pub updated_at: u32,
}

impl PluginCatalogRow {
    pub fn kind(&self) -> Option<StatisticKind> {
        StatisticKind::parse(&self.kind)
    }
}
