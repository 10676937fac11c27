//! Quorum inserts: on a replicated ClickHouse, a worker's insert returns only once every replica
//! of its shard holds it, so that rollups stay exact whichever replica each worker writes through.
//!
//! Why: a rollup is recomputed from the facts (or finer rollup rows) the recomputing replica
//! holds. Two workers writing facts of one hour through different replicas could each recompute
//! before the other's facts were replicated, and no later recompute would come. With every
//! insert on every replica before it returns, of two recomputes of one (key, period) the one
//! that starts later starts after both writes returned, and sees both: the single-server
//! argument (ARCHITECTURE.md, "Rollups") holds on any replica. Facts and rollup recomputes both
//! need it: a day is recomputed from hourly rows other workers inserted elsewhere.
//!
//! The cost: while a replica is down, inserts wait (the worker holds its batch, nothing is lost),
//! unless `clickhouse.insert-quorum` is lowered. ClickHouse before 20.10 allows one quorum insert
//! at a time per table: a concurrent one fails with "Quorum for previous write has not been
//! satisfied yet", which the worker retries as contention ([`is_contention`]), not as a failure.

use std::time::Duration;

use serde::Deserialize;
use statscache_shared::config::ClickHouseConfig;

/// How long an insert waits for the other replicas before failing (and being retried): long
/// enough for a loaded replica to fetch a part, short enough that a dead replica is reported.
const QUORUM_TIMEOUT: Duration = Duration::from_secs(60);

/// What ClickHouse answers to a quorum insert while another one into the same table waits for
/// its replicas (`UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE`, code 286): "Quorum for previous write
/// has not been satisfied yet" once the other insert is written locally, "Another quorum insert
/// has been already started" while it is being written (18.16 says both; current releases the
/// first).
const CONTENTION: [&str; 2] = [
    "Quorum for previous write has not been satisfied yet",
    "Another quorum insert has been already started",
];

/// `client` with the quorum its inserts need: unchanged on one server (`clickhouse.cluster`
/// empty); else `clickhouse.insert-quorum`, or when that is 0 the number of replicas of the
/// shard `client`'s server belongs to (`system.clusters`). Returns the client and the quorum.
pub async fn apply(
    client: clickhouse::Client,
    config: &ClickHouseConfig,
) -> Result<(clickhouse::Client, u64), clickhouse::error::Error> {
    if config.cluster.is_empty() {
        return Ok((client, 1));
    }
    let quorum = match config.insert_quorum {
        0 => replicas_of_local_shard(&client, &config.cluster).await?,
        chosen => chosen,
    };
    if quorum <= 1 {
        return Ok((client, quorum));
    }
    let with_quorum = client
        .with_setting("insert_quorum", quorum.to_string())
        .with_setting(
            "insert_quorum_timeout",
            QUORUM_TIMEOUT.as_millis().to_string(),
        );
    Ok((with_quorum, quorum))
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct ShardReplicas {
    local_rows: u64,
    replicas: u64,
}

/// Replicas of the shard of `cluster` that the server `client` talks to is in.
async fn replicas_of_local_shard(
    client: &clickhouse::Client,
    cluster: &str,
) -> Result<u64, clickhouse::error::Error> {
    let found: ShardReplicas = client
        .query(
            "SELECT countIf(is_local) AS local_rows,
                    countIf(shard_num IN (SELECT shard_num FROM system.clusters
                                          WHERE cluster = ? AND is_local)) AS replicas
             FROM system.clusters WHERE cluster = ?",
        )
        .bind(cluster)
        .bind(cluster)
        .fetch_one()
        .await?;
    if found.local_rows == 0 {
        return Err(clickhouse::error::Error::Custom(format!(
            "this server is not a replica of cluster {cluster:?} (system.clusters); \
             point clickhouse.url at one of its replicas or set clickhouse.insert-quorum"
        )));
    }
    Ok(found.replicas)
}

/// Whether `error` is another insert's quorum still being awaited: a wait, not a failure.
pub fn is_contention(error: &clickhouse::error::Error) -> bool {
    let text = error.to_string();
    CONTENTION
        .iter()
        .any(|contention| text.contains(contention))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contention_is_told_from_failures() {
        let contention = clickhouse::error::Error::BadResponse(
            "Code: 286, e.displayText() = DB::Exception: Quorum for previous write has not been \
             satisfied yet. Status: version: 1"
                .to_string(),
        );
        let replica_down = clickhouse::error::Error::BadResponse(
            "Code: 285, e.displayText() = DB::Exception: Number of alive replicas (1) is less \
             than requested quorum (2)."
                .to_string(),
        );
        let started = clickhouse::error::Error::BadResponse(
            "Code: 286, e.displayText() = DB::Exception: Another quorum insert has been already \
             started, e.what() = DB::Exception"
                .to_string(),
        );
        assert!(is_contention(&contention));
        assert!(is_contention(&started));
        assert!(!is_contention(&replica_down));
    }
}
