//! The ClickHouse schema: the documented, stable interface analysts query directly.
//!
//! Tables (in the configured database, `statscache` by default):
//! - `messages`: every unique message (datanommer's role), for history and ad-hoc analysis;
//!   `datanommer_msg` is its `msg` as datanommer stores it, what `/raw?contains=` searches.
//!   It holds one copy of each message identity: the first to arrive (see `message_identities`).
//! - `message_identities`: one row per message identity, the copy that counts (its event time,
//!   topic and fingerprints): what the workers look an arriving message up in, to store the
//!   first copy of a `msg_id` and only that one, whatever time later copies carry.
//! - `message_copies`: every later copy of a stored identity (re-stamped by a bridge, backfilled,
//!   edited), with the fields in which it `differs` from the copy that counts. Kept, not counted.
//! - `plugins`: the catalog of statistics the workers keep (identifier, kind, table...).
//! - `message_index` (msg_id → time), `message_users` and `message_packages` (a person or package
//!   → the messages naming it, with their time, topic, category and stream sequence, the order
//!   `/raw` breaks ties in time with): lookup tables the workers
//!   write in the same batch as `messages`, so that `/id` and filtered `/raw` read a sort-key
//!   range instead of every message of the window (`messages` is ordered by time).
//! - `stat_<plugin>`: one per plugin, the *facts* its statistic is computed from: one row per
//!   (message, key, value). A count is `uniqExact(msg_id)`, a distinct count `uniqExact(value)`,
//!   a latest value the row with the greatest (timestamp, msg_id).
//! - `stat_<plugin>_hourly`, `_daily`, `_monthly`, `_yearly`: the plugin's *rollups*, one row
//!   per (key, period) and recomputation, `period` the UTC start of the hour, day, month or
//!   year. Count plugins keep `count UInt64`, latest plugins the period's latest `(timestamp,
//!   msg_id, value)`, distinct-count plugins `distinct_values AggregateFunction(uniqExact,
//!   String)`. A (key, period) may hold several rows until merges fold them: its answer is the
//!   greatest `count` (`max(count)`), the greatest `(timestamp, msg_id, value)`, or the merge of
//!   the states (`uniqExactMerge(distinct_values)`). Why that is exact: see ARCHITECTURE.md,
//!   "Rollups".
//! - `rollups_filled`: the fact tables whose rollups were filled from existing facts;
//!   `yearly_rollups_filled`: those whose yearly rollups were filled from their monthly ones.
//! - `rollup_keys` and `rollup_key_counts`, shared by every plugin (`stat_table` names it):
//!   which keys have facts in a day or a month (`level` `daily` or `monthly`, `period` its UTC
//!   start), and how many, so that the api counts the rows of a day or a month of an answer from
//!   one row instead of every (key, period) of the range. A period's count may have several rows
//!   until merges fold them: its answer is the greatest (`max(keys)`); why that is exact: see
//!   ARCHITECTURE.md, "Rollups". `key_counts_filled`: the fact tables whose key counts were
//!   filled (an installation older than them fills them from its rollups once).
//!
//! Why facts and not running counters: a redelivered, replayed or backfilled message writes the
//! same fact rows again, and the statistic — computed over distinct identities — does not change.
//! That is the exactly-once invariant, held by the storage itself instead of by bookkeeping that a
//! crash could tear. `ReplacingMergeTree` later folds the duplicate rows away to save space;
//! queries never depend on that having happened.
//!
//! Tables are partitioned by year: an INSERT writes one part per partition it touches, and a
//! backfill of old history spreads a batch over many months; yearly partitions keep that cheap
//! while keeping parts of a manageable size at Fedora's volume (a few million messages a year).
//!
//! The modules:
//! - `catalog`: the `plugins` table's rows, which workers write and the api reads;
//! - `migrations`: the versioned, idempotent schema changes and the fills they run;
//! - `placement`: where a statement runs, on one server or `ON CLUSTER` with replicated
//!   engines;
//! - `plugin_tables`: each plugin's fact and rollup tables, created and dropped;
//! - `fills`: the ledger of one-off fills from existing data (rollups, key counts, years).

mod catalog;
mod fills;
mod migrations;
mod placement;
mod plugin_tables;

pub use catalog::PluginCatalogRow;
pub use fills::{filled, record_filled, Fill};
pub use migrations::{
    migrate, FILL_MESSAGE_IDENTITIES, FILL_MESSAGE_INDEX, FILL_MESSAGE_PACKAGES, FILL_MESSAGE_USERS,
};
pub use placement::Placement;
pub use plugin_tables::{
    create_rollup_tables, create_stat_table, drop_key_counts, drop_rollup_tables, drop_stat_table,
    rollup_table, rollup_value_columns,
};

use crate::config::ClickHouseConfig;
use crate::period::Level;

/// Name of the per-plugin fact table for a plugin identifier (`volume-by-topic` →
/// `stat_volume_by_topic`).
pub fn stat_table(identifier: &str) -> String {
    let mut table = String::from("stat_");
    for character in identifier.chars() {
        if character.is_ascii_alphanumeric() {
            table.push(character.to_ascii_lowercase());
        } else {
            table.push('_');
        }
    }
    table
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("database name {0:?} must be ASCII letters, digits and underscores")]
    BadDatabaseName(String),
    #[error("migration {version} ({description}) failed: {source}")]
    Migration {
        version: u32,
        description: &'static str,
        source: clickhouse::error::Error,
    },
    #[error("cannot create, drop or alter table {table}: {source}")]
    CreateTable {
        table: String,
        source: clickhouse::error::Error,
    },
}

/// A client for the configured database. Validation is off: it needs a setting ClickHouse 18.16
/// lacks, and our row types are checked by the integration tests instead.
pub fn client(config: &ClickHouseConfig) -> clickhouse::Client {
    client_without_database(config).with_database(&config.database)
}

/// The product our requests name in their `User-Agent` (`statscache/<version> clickhouse-rs/…`),
/// so that `system.query_log.http_user_agent` tells statscache's queries from others'.
pub const CLIENT_PRODUCT: &str = "statscache";

pub(crate) fn client_without_database(config: &ClickHouseConfig) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(&config.url)
        .with_user(&config.user)
        .with_password(&config.password)
        .with_validation(false)
        .with_product_info(CLIENT_PRODUCT, env!("CARGO_PKG_VERSION"))
}

/// Which keys have facts in a day or a month, per plugin (schema version 5).
pub const ROLLUP_KEYS: &str = "rollup_keys";
/// How many keys have facts in a day or a month, per plugin; readers take `max(keys)`.
pub const ROLLUP_KEY_COUNTS: &str = "rollup_key_counts";
/// The levels whose keys are counted: the buckets (`day`, `month`) read over long ranges.
pub const KEY_COUNT_LEVELS: [Level; 2] = [Level::Day, Level::Month];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_tables_are_safe_identifiers() {
        assert_eq!(stat_table("volume-by-topic"), "stat_volume_by_topic");
        assert_eq!(stat_table("Weird name; DROP"), "stat_weird_name__drop");
    }
}
