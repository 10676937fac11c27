//! An installation at schema version 3 (before `/raw` broke ties by arrival) upgrades in place:
//! `statscache-worker migrate` adds `stream_sequence` to the lookup tables and `datanommer_msg`
//! to `messages` (ClickHouse 18.16 has no `ADD COLUMN IF NOT EXISTS`), writes the lookup rows
//! again with their sequence, fills `message_identities` from `messages` (version 7), and
//! running it a second time changes nothing.

use statscache_tests::{run_command, Servers};
use statscache_worker::identity::fingerprint;

/// The tables as schema version 3 created them, with the ledger saying so.
const VERSION_3: &[&str] = &[
    "CREATE TABLE messages (msg_id String, topic String, category String, timestamp Float64, \
     time DateTime, i UInt64, username String, usernames Array(String), packages Array(String), \
     body String, source String, stream_sequence UInt64, ingested_at DateTime) \
     ENGINE = ReplacingMergeTree() PARTITION BY toYear(time) ORDER BY (time, msg_id)",
    "CREATE TABLE message_users (name String, time DateTime, timestamp Float64, msg_id String, \
     topic String, category String) ENGINE = ReplacingMergeTree() PARTITION BY toYear(time) \
     ORDER BY (name, time, msg_id)",
    "CREATE TABLE message_packages (name String, time DateTime, timestamp Float64, \
     msg_id String, topic String, category String) ENGINE = ReplacingMergeTree() \
     PARTITION BY toYear(time) ORDER BY (name, time, msg_id)",
    "CREATE TABLE schema_migrations (version UInt32, description String, applied_at DateTime) \
     ENGINE = ReplacingMergeTree() ORDER BY version",
    "INSERT INTO schema_migrations VALUES (1, 'a', now()), (2, 'b', now()), (3, 'c', now())",
    "INSERT INTO messages VALUES ('m1', 'org.fedoraproject.prod.git.branch', 'git', \
     1344350850.5, toDateTime(1344350850), 0, '', ['ralph'], ['valgrind'], '{}', 'test', 7, now())",
    "INSERT INTO message_users VALUES ('ralph', toDateTime(1344350850), 1344350850.5, 'm1', \
     'org.fedoraproject.prod.git.branch', 'git')",
];

#[tokio::test(flavor = "multi_thread")]
async fn version_3_installations_get_the_arrival_order_and_datanommer_text() {
    let servers = Servers::start().await;
    let root = servers.clickhouse.client("default");
    root.query("CREATE DATABASE statscache")
        .execute()
        .await
        .expect("create database");
    let client = servers.client();
    for statement in VERSION_3 {
        client.query(statement).execute().await.expect(statement);
    }

    let env = servers.env(&[]);
    for run in 1..=2 {
        let output = run_command("worker", &env, &["migrate"]).await;
        assert!(
            output.status.success(),
            "migrate (run {run}): {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let added: Vec<(String, String)> = client
        .query(
            "SELECT table, name FROM system.columns WHERE database = 'statscache' \
             AND table IN ('messages', 'message_users', 'message_packages') \
             AND name IN ('stream_sequence', 'datanommer_msg') ORDER BY table, name",
        )
        .fetch_all()
        .await
        .expect("columns");
    let expected = [
        ("message_packages", "stream_sequence"),
        ("message_users", "stream_sequence"),
        ("messages", "datanommer_msg"),
        ("messages", "stream_sequence"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(table, name)| (table.to_string(), name.to_string()))
        .collect();
    assert_eq!(added, expected);

    // The old row (sequence 0) stays until merges fold it; readers take the greatest.
    let users: Vec<(String, u64)> = client
        .query("SELECT name, max(stream_sequence) FROM message_users GROUP BY name")
        .fetch_all()
        .await
        .expect("message_users");
    assert_eq!(users, vec![("ralph".to_string(), 7)]);
    let packages: Vec<(String, u64)> = client
        .query("SELECT name, stream_sequence FROM message_packages")
        .fetch_all()
        .await
        .expect("message_packages");
    assert_eq!(packages, vec![("valgrind".to_string(), 7)]);
    let versions: Vec<u32> = client
        .query("SELECT DISTINCT version FROM schema_migrations ORDER BY version")
        .fetch_all()
        .await
        .expect("ledger");
    assert_eq!(versions, vec![1, 2, 3, 4, 5, 6, 7]);

    // Version 7: the stored message is its identity's counted copy, fingerprinted in SQL as
    // the workers fingerprint what they store.
    let identities: Vec<(String, u32, u64, u64)> = client
        .query("SELECT msg_id, toUInt32(time), fingerprint, content_fingerprint FROM message_identities")
        .fetch_all()
        .await
        .expect("message_identities");
    assert_eq!(
        identities,
        vec![("m1".to_string(), 1344350850, fingerprint::of_copy(b"{}"), 0)]
    );
}
