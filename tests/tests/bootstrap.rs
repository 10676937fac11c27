//! `statscache-worker bootstrap` against a real PostgreSQL holding datanommer's database, filled
//! by the real `datanommer.models` (PyPI), and against a custom-format dump of it read without
//! any server: every message stored once (datanommer's own copies of one `msg_id` too), rows
//! that are not messages dead-lettered, every statistic equal to a count over datanommer's rows
//! read back with psql, `rollup --check` clean; a bootstrap killed half-way and run again loses
//! and doubles nothing; messages the live stream carries while the bootstrap runs count once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;
use statscache_tests::corpus::{publish_to_stream, restamped_corpus};
use statscache_tests::postgres::{PostgresServer, DATABASE};
use statscache_tests::reference::{assert_history_lists_each_once, assert_served, every_bucket};
use statscache_tests::{
    free_port, run_command, wait_for, wait_for_consumer_drained, wait_until_ok, Servers, Service,
};

/// `count` re-stamped corpus messages, the first `with_sent_at` of them carrying fedora-messaging
/// headers (stored by datanommer's `add`), and datanommer's own second copies of the first
/// `copies` (same `msg_id`, 150 s later: its unique key is `(msg_id, timestamp)`).
fn datanommer_lines(count: usize, with_sent_at: usize, copies: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for (index, line) in restamped_corpus(count).into_iter().enumerate() {
        let mut envelope: Value = serde_json::from_str(&line).expect("envelope");
        if index < with_sent_at {
            let seconds = envelope["timestamp"].as_f64().expect("timestamp");
            let moment =
                chrono::DateTime::from_timestamp_micros((seconds * 1e6) as i64).expect("time");
            envelope["headers"] = serde_json::json!({ "sent-at": moment.to_rfc3339() });
        }
        if index < copies {
            let mut copy = envelope.clone();
            copy["timestamp"] = Value::from(envelope["timestamp"].as_f64().unwrap_or(0.0) + 150.0);
            copy.as_object_mut().map(|fields| fields.remove("headers"));
            lines.push(envelope.to_string());
            lines.push(copy.to_string());
            continue;
        }
        lines.push(envelope.to_string());
    }
    lines
}

/// Two rows datanommer holds that cannot be messages: an empty topic, a `msg` that is not JSON.
fn add_bad_rows(postgres: &PostgresServer) {
    for (msg_id, topic, msg) in [
        ("bad-topic", "", "{}"),
        ("bad-msg", "org.f.prod.a.b", "{not json"),
    ] {
        postgres
            .psql(
                DATABASE,
                &format!(
                    "INSERT INTO messages (msg_id, i, topic, timestamp, category, msg) \
                     VALUES ('{msg_id}', 0, '{topic}', '2026-10-01 12:00:00', 'x', '{msg}')"
                ),
            )
            .expect("insert a bad row");
    }
}

/// The messages that must count, read back from datanommer with psql (independently of the
/// bootstrap's reading): per `msg_id`, its first row in `(timestamp, id)` order, as the
/// envelope fields the references need. Rows with a `bad-` id are left out.
fn counted_from_datanommer(postgres: &PostgresServer) -> Vec<String> {
    let rows = postgres
        .psql(
            DATABASE,
            "SELECT msg_id || E'\\t' || topic || E'\\t' || extract(epoch from timestamp)::text \
             FROM messages WHERE msg_id NOT LIKE 'bad-%' ORDER BY timestamp, id",
        )
        .expect("read datanommer back");
    let mut seen = BTreeSet::new();
    let mut counted = Vec::new();
    for row in rows.lines() {
        let fields: Vec<&str> = row.split('\t').collect();
        let [msg_id, topic, epoch] = fields[..] else {
            panic!("unexpected psql row {row:?}");
        };
        if !seen.insert(msg_id.to_string()) {
            continue;
        }
        let timestamp: f64 = epoch.parse().expect("epoch");
        counted.push(
            serde_json::json!({"msg_id": msg_id, "topic": topic, "timestamp": timestamp})
                .to_string(),
        );
    }
    counted
}

/// `statscache-worker bootstrap <args>` to its end; what it printed on stderr.
async fn bootstrap(env: &[(String, String)], args: &[&str]) -> String {
    let mut all = vec!["bootstrap"];
    all.extend_from_slice(args);
    let output = run_command("worker", env, &all).await;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "bootstrap {args:?}: {stderr}");
    stderr
}

/// Distinct identities stored, and identities stored at more than one time (must be none).
async fn stored(servers: &Servers) -> (u64, u64) {
    let client = servers.client();
    let distinct: u64 = client
        .query("SELECT uniqExact(msg_id) FROM messages")
        .fetch_one()
        .await
        .expect("count messages");
    let doubled: u64 = client
        .query("SELECT count() FROM (SELECT msg_id FROM messages GROUP BY msg_id HAVING uniqExact(time) > 1)")
        .fetch_one()
        .await
        .expect("count doubled messages");
    (distinct, doubled)
}

async fn assert_rollups_agree(env: &[(String, String)]) {
    let output = run_command("worker", env, &["rollup", "--check"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.is_empty(),
        "rollup --check: {stdout}"
    );
}

/// An api on `servers`; its base URL, with the service.
async fn api(servers: &Servers) -> (String, Service) {
    let port = free_port();
    let env = servers.env(&[("STATSCACHE_API__LISTEN", format!("127.0.0.1:{port}"))]);
    let service = Service::start("api", &env, &[]);
    let url = format!("http://127.0.0.1:{port}");
    wait_until_ok(&format!("{url}/health/readyz")).await;
    (url, service)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_datanommer_database_and_its_dump_are_stored_once_each_as_datanommer_holds_them() {
    let postgres = PostgresServer::start().await;
    postgres.fill(&datanommer_lines(300, 40, 10)).await;
    add_bad_rows(&postgres);
    let counted = counted_from_datanommer(&postgres);
    assert_eq!(counted.len(), 300);
    let scratch = tempfile::tempdir().expect("scratch");
    let archive = postgres.dump(scratch.path());

    for source in ["postgres", "dump"] {
        let servers = Servers::start().await;
        let env = servers.env(&[]);
        let args = match source {
            "postgres" => vec!["--postgres", postgres.url.as_str(), "--batch-size", "37"],
            _ => vec![
                "--dump",
                archive.to_str().expect("path"),
                "--scratch",
                scratch.path().to_str().expect("path"),
                "--batch-size",
                "37",
            ],
        };
        let said = bootstrap(&env, &args).await;
        assert!(
            said.contains("finished: 312 rows read, 2 not messages"),
            "{source}: {said}"
        );
        assert_eq!(stored(&servers).await, (300, 0), "{source}");
        // The api after the bootstrap, which created the database it reads.
        let (api, _api) = api(&servers).await;
        assert_served(&api, &every_bucket(&counted)).await;
        assert_history_lists_each_once(&api, &counted).await;
        assert_rollups_agree(&env).await;
        // Run again: read from where it ended, nothing more.
        let said = bootstrap(&env, &args).await;
        assert!(said.contains("finished: 0 rows read"), "{source}: {said}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bootstrap_killed_half_way_and_run_again_loses_and_doubles_nothing() {
    let (postgres, servers) = tokio::join!(PostgresServer::start(), Servers::start());
    postgres.fill(&datanommer_lines(2_000, 0, 0)).await;
    let counted = counted_from_datanommer(&postgres);
    let env = servers.env(&[]);
    let args = [
        "bootstrap",
        "--postgres",
        postgres.url.as_str(),
        "--batch-size",
        "50",
    ];
    let first = Service::start("worker", &env, &args);
    let client = servers.client();
    wait_for(
        "a third of the rows to be stored",
        Duration::from_secs(300),
        || async {
            let stored: u64 = client
                .query("SELECT uniqExact(msg_id) FROM messages")
                .fetch_one()
                .await
                .ok()?;
            (stored >= 700).then_some(())
        },
    )
    .await;
    first.kill();
    let said = bootstrap(&env, &args[1..]).await;
    assert!(said.contains("finished"), "{said}");
    assert_eq!(stored(&servers).await, (2_000, 0));
    let (api, _api) = api(&servers).await;
    assert_served(&api, &every_bucket(&counted)).await;
    assert_rollups_agree(&env).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn live_copies_stored_while_the_bootstrap_runs_count_once() {
    let (postgres, servers) = tokio::join!(PostgresServer::start(), Servers::start());
    let lines = datanommer_lines(600, 0, 0);
    postgres.fill(&lines).await;
    let counted = counted_from_datanommer(&postgres);
    // The live bus's copies: the same message (other bytes: its `i`), and for a tenth of them
    // a bridge's copy stamped 150 s later.
    let mut live = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let mut envelope: Value = serde_json::from_str(line).expect("envelope");
        envelope["i"] = Value::from(index as u64 + 1);
        if index % 10 == 0 {
            let timestamp = envelope["timestamp"].as_f64().unwrap_or(0.0);
            envelope["timestamp"] = Value::from(timestamp + 150.0);
        }
        live.push(envelope.to_string());
    }
    let worker_admin = free_port();
    let env = servers.env(&[
        ("STATSCACHE_WORKER__BATCH_SIZE", "20".to_string()),
        (
            "STATSCACHE_WORKER__ADMIN_LISTEN",
            format!("127.0.0.1:{worker_admin}"),
        ),
    ]);
    let _worker = Service::start("worker", &env, &[]);
    wait_until_ok(&format!("http://127.0.0.1:{worker_admin}/health/readyz")).await;
    let url = postgres.url.clone();
    let booting = tokio::spawn({
        let env = env.clone();
        async move { bootstrap(&env, &["--postgres", &url, "--batch-size", "40"]).await }
    });
    publish_to_stream(&servers.nats.url, &live, true).await;
    let said = booting.await.expect("bootstrap task");
    assert!(said.contains("finished: 600 rows read"), "{said}");
    wait_for_consumer_drained(&servers.nats.url).await;

    assert_eq!(stored(&servers).await, (600, 0));
    let copies: u64 = servers
        .client()
        .query("SELECT uniqExact(msg_id, fingerprint) FROM message_copies")
        .fetch_one()
        .await
        .expect("message_copies");
    assert_eq!(copies, 600, "one copy of every message kept aside");
    let (api, _api) = api(&servers).await;
    // Which copy counts depends on which was stored first; every identity counts once either
    // way, and those whose copies share a time count in the same periods.
    let mut totals = BTreeMap::new();
    totals.insert((0, String::new()), 600);
    let mut checks = every_bucket(&counted);
    checks.retain(|check| check.plugin == "volume" && check.query == "bucket=all");
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].expected, totals);
    assert_served(&api, &checks).await;
    assert_rollups_agree(&env).await;
}
