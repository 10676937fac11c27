//! Rollups stay exact, against real nats-server and clickhouse-server: copies stored again after
//! JetStream's duplicate window into hours already rolled up, replays over rolled-up hours, and a
//! worker killed between writing facts and recomputing rollups; an installation older than
//! rollups, one older than key counts and one older than yearly rollups, filled when a worker
//! starts. Each time every statistic the api serves — whole history (yearly rollups), per
//! hour/day/week/month, a window with ragged edges (months, days, hours and facts around whole
//! years) — equals a reference computed from the corpus, its `total` too (rows
//! per day and month are counted from the key counts), and
//! `statscache-worker rollup --check` finds no difference between rollups and facts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use statscache_tests::corpus::{category_of, publish_to_stream, real_lines, topic_of};
use statscache_tests::reference::{
    assert_served, day_of, everyone, hour_of, month_of, parsed, reference, week_of, whole, Check,
    Counts, EVERYTHING,
};
use statscache_tests::{free_port, run_command, wait_for, Servers, Service};

/// A declarative distinct-count plugin whose reference the corpus gives directly.
const PLUGINS: &str = r#"
[[worker.plugins]]
name = "Topics per category"
kind = "distinct-count"
key = "category"
value = "topic"
"#;

struct Stack {
    servers: Servers,
    api: String,
    env: Vec<(String, String)>,
    _config: tempfile::NamedTempFile,
    _api_service: Service,
}

impl Stack {
    /// Servers and an api; JetStream forgets message ids after two seconds (the shortest).
    async fn start() -> Stack {
        let servers = Servers::start().await;
        let config = tempfile::NamedTempFile::new().expect("config file");
        std::fs::write(config.path(), PLUGINS).expect("write config");
        let api_port = free_port();
        let env = servers.env(&[
            ("STATSCACHE_CONFIG", config.path().display().to_string()),
            ("STATSCACHE_NATS__DUPLICATE_WINDOW", "2s".to_string()),
            ("STATSCACHE_API__LISTEN", format!("127.0.0.1:{api_port}")),
            ("STATSCACHE_WORKER__ACK_WAIT", "2s".to_string()),
        ]);
        let api_service = Service::start("api", &env, &[]);
        Stack {
            servers,
            api: format!("http://127.0.0.1:{api_port}"),
            env,
            _config: config,
            _api_service: api_service,
        }
    }

    /// A worker with `extra` settings, ready.
    async fn worker(&self, extra: &[(&str, String)]) -> Service {
        let admin = free_port();
        let mut env = self.env.clone();
        env.push((
            "STATSCACHE_WORKER__ADMIN_LISTEN".to_string(),
            format!("127.0.0.1:{admin}"),
        ));
        for (key, value) in extra {
            env.push((key.to_string(), value.clone()));
        }
        let worker = Service::start("worker", &env, &[]);
        statscache_tests::wait_until_ok(&format!("http://127.0.0.1:{admin}/health/readyz")).await;
        worker
    }

    /// Runs `statscache-worker <args>`; returns whether it succeeded, and its stdout.
    async fn worker_command(&self, args: &[&str]) -> (bool, String) {
        let output = run_command("worker", &self.env, args).await;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            eprintln!(
                "worker {args:?} failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        (output.status.success(), stdout)
    }

    /// `rollup --check` over all plugins and all history must find nothing.
    async fn assert_rollups_agree_with_facts(&self) {
        let (clean, differences) = self.worker_command(&["rollup", "--check"]).await;
        assert!(clean, "rollup --check found differences:\n{differences}");
        assert_eq!(differences, "");
    }

    /// Messages the stream holds (copies included).
    async fn stream_messages(&self) -> u64 {
        let Ok(client) = async_nats::connect(&self.servers.nats.url).await else {
            return 0;
        };
        let jetstream = async_nats::jetstream::new(client);
        let Ok(mut stream) = jetstream.get_stream("FEDMSG").await else {
            return 0;
        };
        match stream.info().await {
            Ok(info) => info.state.messages,
            Err(_) => 0,
        }
    }

    /// Waits until every statistic served equals the reference of `lines`; panics with the
    /// remaining mismatches if they do not converge.
    async fn assert_statistics_equal_reference(&self, lines: &[String]) {
        assert_served(&self.api, &checks(lines)).await;
    }
}

/// Distinct topics per category, the whole corpus in one bucket.
fn topics_per_category(lines: &[String]) -> Counts {
    let mut topics: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (message, _) in parsed(lines) {
        let category = category_of(&message).concat();
        topics
            .entry(category)
            .or_default()
            .extend(topic_of(&message));
    }
    let mut counts = BTreeMap::new();
    for (category, topics) in topics {
        counts.insert((0, category), topics.len() as u64);
    }
    counts
}

/// Every statistic this file checks, with its reference computed from `lines`: whole history
/// (yearly rollups), per hour/day/week/month, a window with ragged edges (months, days, hours
/// and facts around whole years), a key filter, a distinct count.
fn checks(lines: &[String]) -> Vec<Check> {
    let seconds: Vec<u64> = parsed(lines).iter().map(|(_, seconds)| *seconds).collect();
    let first = seconds.iter().min().copied().unwrap_or(0);
    let last = seconds.iter().max().copied().unwrap_or(0);
    // A window starting and ending inside hours: its edges come from the facts.
    let window_start = first + 86_400 * 40 + 1_234;
    let window_end = last - 86_400 * 40 - 2_345;
    vec![
        Check::new(
            "volume",
            "bucket=all",
            reference(lines, 0, EVERYTHING, whole, everyone),
        ),
        Check::new(
            "volume-by-category",
            "bucket=all",
            reference(lines, 0, EVERYTHING, whole, category_of),
        ),
        Check::new(
            "volume",
            "bucket=month",
            reference(lines, 0, EVERYTHING, month_of, everyone),
        ),
        Check::new(
            "volume",
            "bucket=week",
            reference(lines, 0, EVERYTHING, week_of, everyone),
        ),
        Check::new(
            "volume",
            "bucket=day",
            reference(lines, 0, EVERYTHING, day_of, everyone),
        ),
        // Rows per day and per month over all of history are counted from the key counts.
        Check::new(
            "volume-by-category",
            "bucket=day",
            reference(lines, 0, EVERYTHING, day_of, category_of),
        ),
        Check::new(
            "volume-by-topic",
            "bucket=month",
            reference(lines, 0, EVERYTHING, month_of, topic_of),
        ),
        Check::new(
            "volume-by-category",
            "bucket=hour",
            reference(lines, 0, EVERYTHING, hour_of, category_of),
        ),
        Check::new(
            "volume-by-topic",
            format!("bucket=all&start={window_start}.25&end={window_end}.5"),
            reference(lines, window_start, window_end + 1, whole, topic_of),
        ),
        Check::new(
            "volume-by-category",
            format!("bucket=month&start={window_start}&end={window_end}&key=buildsys&key=git"),
            reference(lines, window_start, window_end, month_of, |message| {
                category_of(message)
                    .into_iter()
                    .filter(|category| category == "buildsys" || category == "git")
                    .collect()
            }),
        ),
        Check::new(
            "topics-per-category",
            "bucket=all",
            topics_per_category(lines),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn copies_stored_again_after_the_duplicate_window_into_rolled_up_hours_change_nothing() {
    let stack = Stack::start().await;
    let _worker = stack.worker(&[]).await;
    let lines = real_lines();
    let first_half = &lines[..lines.len() / 2];
    publish_to_stream(&stack.servers.nats.url, first_half, true).await;
    stack.assert_statistics_equal_reference(first_half).await;
    stack.assert_rollups_agree_with_facts().await;

    // The hours of the first half are rolled up. Once JetStream has forgotten their ids, the
    // whole corpus comes again under the same ids, as a late backfill would.
    tokio::time::sleep(Duration::from_secs(3)).await;
    publish_to_stream(&stack.servers.nats.url, &lines, true).await;
    let copies = (first_half.len() + lines.len()) as u64;
    wait_for(
        "the stream to keep the copies",
        Duration::from_secs(30),
        || async { (stack.stream_messages().await == copies).then_some(()) },
    )
    .await;
    stack.assert_statistics_equal_reference(&lines).await;
    stack.assert_rollups_agree_with_facts().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replays_and_rebuilds_over_rolled_up_hours_change_nothing() {
    let stack = Stack::start().await;
    let _worker = stack.worker(&[]).await;
    let lines = real_lines();
    publish_to_stream(&stack.servers.nats.url, &lines, true).await;
    stack.assert_statistics_equal_reference(&lines).await;

    let replay = [
        "replay",
        "--plugin",
        "volume",
        "--plugin",
        "volume-by-topic",
        "--plugin",
        "topics-per-category",
        "--plugin",
        "releng-dashboard",
        "--from-sequence",
        "1",
    ];
    assert!(stack.worker_command(&replay).await.0);
    stack.assert_statistics_equal_reference(&lines).await;
    stack.assert_rollups_agree_with_facts().await;

    // Facts and rollups dropped and rebuilt from the stream.
    let rebuild = [
        "replay",
        "--plugin",
        "volume-by-category",
        "--from-sequence",
        "1",
        "--rebuild",
    ];
    assert!(stack.worker_command(&rebuild).await.0);
    stack.assert_statistics_equal_reference(&lines).await;
    stack.assert_rollups_agree_with_facts().await;

    // Rollups recomputed from the facts, from a month on and for everything.
    let since = [
        "rollup",
        "--rebuild",
        "--plugin",
        "volume",
        "--since",
        "2015-06-10T00:00:00Z",
    ];
    assert!(stack.worker_command(&since).await.0);
    assert!(stack.worker_command(&["rollup", "--rebuild"]).await.0);
    stack.assert_statistics_equal_reference(&lines).await;
    stack.assert_rollups_agree_with_facts().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_between_facts_and_rollups_is_made_whole_by_the_redelivery() {
    let stack = Stack::start().await;
    let mut crashing = stack
        .worker(&[(
            "FAULT_INJECTION_WORKER_ABORT_BEFORE_ROLLUP",
            "1".to_string(),
        )])
        .await;
    let lines = real_lines();
    publish_to_stream(&stack.servers.nats.url, &lines, true).await;
    wait_for(
        "the fault-injected worker to abort",
        Duration::from_secs(60),
        || {
            let exited = crashing.has_exited();
            async move { exited.then_some(()) }
        },
    )
    .await;
    // It stored facts that no rollup reflects yet: the check sees the difference.
    let (clean, differences) = stack.worker_command(&["rollup", "--check"]).await;
    assert!(!clean, "the aborted batch left no difference");
    assert!(differences.contains("facts="), "{differences}");

    let _worker = stack.worker(&[]).await;
    stack.assert_statistics_equal_reference(&lines).await;
    stack.assert_rollups_agree_with_facts().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollups_missing_beside_existing_facts_are_filled_when_a_worker_starts() {
    let stack = Stack::start().await;
    let worker = stack.worker(&[]).await;
    let lines = real_lines();
    publish_to_stream(&stack.servers.nats.url, &lines, true).await;
    stack.assert_statistics_equal_reference(&lines).await;
    worker.kill();

    // What an installation older than rollups looks like: facts, no rollups.
    let client = stack.servers.client();
    let tables: Vec<String> = client
        .query("SELECT DISTINCT table_name FROM plugins")
        .fetch_all()
        .await
        .expect("plugin tables");
    for table in &tables {
        for level in ["hourly", "daily", "monthly", "yearly"] {
            client
                .query(&format!("DROP TABLE IF EXISTS {table}_{level}"))
                .execute()
                .await
                .expect("drop a rollup table");
        }
    }
    let key_counts = ["key_counts_filled", "rollup_keys", "rollup_key_counts"];
    forget(&client, &["rollups_filled"]).await;
    forget(&client, &key_counts).await;

    let worker = stack.worker(&[]).await;
    stack.assert_statistics_equal_reference(&lines).await;
    stack.assert_rollups_agree_with_facts().await;
    worker.kill();

    // An installation with rollups but older than key counts: they are filled from the rollups.
    forget(&client, &key_counts).await;
    let worker = stack.worker(&[]).await;
    stack.assert_statistics_equal_reference(&lines).await;
    stack.assert_rollups_agree_with_facts().await;
    worker.kill();

    // One older than yearly rollups: they are filled from the monthly ones.
    let yearly: Vec<String> = tables
        .iter()
        .map(|table| format!("{table}_yearly"))
        .collect();
    let yearly: Vec<&str> = yearly.iter().map(String::as_str).collect();
    forget(&client, &yearly).await;
    forget(&client, &["yearly_rollups_filled"]).await;
    let _worker = stack.worker(&[]).await;
    stack.assert_statistics_equal_reference(&lines).await;
    stack.assert_rollups_agree_with_facts().await;
}

/// Empties `tables`.
async fn forget(client: &clickhouse::Client, tables: &[&str]) {
    for table in tables {
        client
            .query(&format!("TRUNCATE TABLE {table}"))
            .execute()
            .await
            .expect("truncate");
    }
}
