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
//! Migrations are versioned and idempotent (`IF NOT EXISTS`), so several worker replicas may run
//! them at once. With `clickhouse.cluster` set every DDL statement goes through [`Placement`]:
//! `ON CLUSTER`, tables named with their database, and each engine replaced by its `Replicated`
//! form, so every replica holds every table and ZooKeeper replicates the rows written to any. The SQL sticks to what ClickHouse 18.16 (Debian) and current releases share: no
//! DateTime64, no LowCardinality, no server-side query parameters.

use serde::{Deserialize, Serialize};

use crate::config::{ClickHouseConfig, StatisticKind};
use crate::period::Level;

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

fn client_without_database(config: &ClickHouseConfig) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(&config.url)
        .with_user(&config.user)
        .with_password(&config.password)
        .with_validation(false)
        .with_product_info(CLIENT_PRODUCT, env!("CARGO_PKG_VERSION"))
}

/// Where the schema lives: the database, and the cluster whose replicas each hold every table
/// (empty: one server). Every DDL statement goes through [`Placement::place`].
#[derive(Debug, Clone, Copy)]
pub struct Placement<'a> {
    pub database: &'a str,
    pub cluster: &'a str,
}

/// The statements [`Placement::place`] rewrites, and what they name.
const DDL_PREFIXES: [(&str, DdlTarget); 4] = [
    ("CREATE TABLE IF NOT EXISTS ", DdlTarget::CreateTable),
    ("CREATE DATABASE IF NOT EXISTS ", DdlTarget::CreateDatabase),
    ("DROP TABLE IF EXISTS ", DdlTarget::DropTable),
    ("ALTER TABLE ", DdlTarget::AlterTable),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DdlTarget {
    CreateTable,
    CreateDatabase,
    DropTable,
    AlterTable,
}

impl<'a> Placement<'a> {
    pub fn of(config: &'a ClickHouseConfig) -> Placement<'a> {
        Placement {
            database: &config.database,
            cluster: &config.cluster,
        }
    }

    /// `statement` as run where the schema lives: unchanged on one server; on a cluster the
    /// table or database gets `ON CLUSTER` (tables named with their database, as each replica
    /// runs the statement in its own default database) and the engine its replicated form
    /// ([`Placement::engine`]). Other statements (INSERT...) are unchanged: an insert into
    /// any replica is replicated.
    pub fn place(&self, statement: &str) -> String {
        let Some((prefix, target, name, rest)) = ddl_parts(statement) else {
            return statement.to_string();
        };
        if self.cluster.is_empty() {
            return statement.to_string();
        }
        let (qualified, rest) = match target {
            DdlTarget::CreateDatabase => (name.to_string(), rest.to_string()),
            DdlTarget::DropTable | DdlTarget::AlterTable => {
                (format!("{}.{name}", self.database), rest.to_string())
            }
            DdlTarget::CreateTable => (
                format!("{}.{name}", self.database),
                self.replicated_engine(name, rest),
            ),
        };
        format!("{prefix}{qualified} ON CLUSTER {}{rest}", self.cluster)
    }

    /// `rest` of a CREATE TABLE with its `ENGINE = X(args)` replaced by [`Placement::engine`].
    fn replicated_engine(&self, table: &str, rest: &str) -> String {
        let Some(start) = rest.find("ENGINE = ") else {
            return rest.to_string();
        };
        let engine_start = start + "ENGINE = ".len();
        let engine_end = rest[engine_start..]
            .find(char::is_whitespace)
            .map_or(rest.len(), |end| engine_start + end);
        let engine = self.engine(table, &rest[engine_start..engine_end]);
        format!("{}{engine}{}", &rest[..engine_start], &rest[engine_end..])
    }

    /// The engine of `table`: `engine` as written for one server (`ReplacingMergeTree(count)`);
    /// on a cluster its replicated form, `ReplicatedReplacingMergeTree('/clickhouse/tables/
    /// {shard}/<database>/<table>', '{replica}', count)`, the shard and replica taken from each
    /// server's macros. The one place engines are chosen.
    pub fn engine(&self, table: &str, engine: &str) -> String {
        if self.cluster.is_empty() {
            return engine.to_string();
        }
        let (name, arguments) = engine.split_once('(').unwrap_or((engine, ")"));
        let arguments = arguments.trim_end_matches(')').trim();
        let coordinates = format!(
            "'/clickhouse/tables/{{shard}}/{}/{table}', '{{replica}}'",
            self.database
        );
        if arguments.is_empty() {
            format!("Replicated{name}({coordinates})")
        } else {
            format!("Replicated{name}({coordinates}, {arguments})")
        }
    }
}

/// A DDL statement's prefix, target kind, object name and the text after the name.
fn ddl_parts(statement: &str) -> Option<(&'static str, DdlTarget, &str, &str)> {
    let statement = statement.trim_start();
    for (prefix, target) in DDL_PREFIXES {
        let Some(after) = statement.strip_prefix(prefix) else {
            continue;
        };
        let end = after
            .find(|c: char| c.is_whitespace() || c == '(')
            .unwrap_or(after.len());
        return Some((prefix, target, &after[..end], &after[end..]));
    }
    None
}

/// Runs DDL `statement` where the schema lives ([`Placement::place`]). On a cluster, creating
/// what this server already has is skipped: `ON CLUSTER` waits for every replica, so a worker
/// starting while one is down would wait out `distributed_ddl_task_timeout` (3 min) and fail.
async fn run_ddl(
    client: &clickhouse::Client,
    placement: Placement<'_>,
    statement: &str,
) -> Result<(), clickhouse::error::Error> {
    let existing = match ddl_parts(statement) {
        _ if placement.cluster.is_empty() => None,
        Some((_, DdlTarget::CreateTable, table, _)) => Some(
            client
                .query("SELECT count() FROM system.tables WHERE database = ? AND name = ?")
                .bind(placement.database)
                .bind(table),
        ),
        Some((_, DdlTarget::CreateDatabase, database, _)) => Some(
            client
                .query("SELECT count() FROM system.databases WHERE name = ?")
                .bind(database),
        ),
        _ => None,
    };
    if let Some(existing) = existing {
        if existing.fetch_one::<u64>().await? > 0 {
            return Ok(());
        }
    }
    client.query(&placement.place(statement)).execute().await
}

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

/// Which keys have facts in a day or a month, per plugin (schema version 5).
pub const ROLLUP_KEYS: &str = "rollup_keys";
/// How many keys have facts in a day or a month, per plugin; readers take `max(keys)`.
pub const ROLLUP_KEY_COUNTS: &str = "rollup_key_counts";
/// The levels whose keys are counted: the buckets (`day`, `month`) read over long ranges.
pub const KEY_COUNT_LEVELS: [Level; 2] = [Level::Day, Level::Month];

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_tables_are_safe_identifiers() {
        assert_eq!(stat_table("volume-by-topic"), "stat_volume_by_topic");
        assert_eq!(stat_table("Weird name; DROP"), "stat_weird_name__drop");
    }

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

    #[test]
    fn a_cluster_gets_replicated_tables_on_every_replica() {
        let placement = Placement {
            database: "statscache",
            cluster: "statscache",
        };
        let create = "CREATE TABLE IF NOT EXISTS stat_volume_hourly (
                key String, period DateTime, count UInt64
            ) ENGINE = ReplacingMergeTree(count)
            ORDER BY (key, period)";
        let placed = placement.place(create);
        assert!(
            placed.starts_with(
                "CREATE TABLE IF NOT EXISTS statscache.stat_volume_hourly ON CLUSTER statscache ("
            ),
            "{placed}"
        );
        assert!(
            placed.contains(
                "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/statscache/\
                 stat_volume_hourly', '{replica}', count)\n"
            ),
            "{placed}"
        );
        assert_eq!(
            placement.engine("messages", "ReplacingMergeTree()"),
            "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/statscache/messages', \
             '{replica}')"
        );
        assert_eq!(
            placement.place("DROP TABLE IF EXISTS stat_volume"),
            "DROP TABLE IF EXISTS statscache.stat_volume ON CLUSTER statscache"
        );
        assert_eq!(
            placement.place("ALTER TABLE rollup_keys DROP PARTITION 'stat_volume'"),
            "ALTER TABLE statscache.rollup_keys ON CLUSTER statscache DROP PARTITION 'stat_volume'"
        );
        assert_eq!(
            placement.place("CREATE DATABASE IF NOT EXISTS statscache"),
            "CREATE DATABASE IF NOT EXISTS statscache ON CLUSTER statscache"
        );
        assert_eq!(
            placement.place(FILL_MESSAGE_INDEX),
            FILL_MESSAGE_INDEX,
            "inserts replicate by themselves"
        );
    }
}
