//! Where DDL runs: on one server as written, or on a cluster `ON CLUSTER`, tables named with
//! their database and each engine swapped for its `Replicated` form (ZooKeeper), so that every
//! replica holds every table and the rows written to any.

use crate::config::ClickHouseConfig;

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
pub(super) async fn run_ddl(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::FILL_MESSAGE_INDEX;

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
