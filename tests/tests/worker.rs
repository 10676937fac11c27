//! The worker's exactly-once statistics, against real nats-server and clickhouse-server:
//! duplicates, crashes between write and ack, several replicas, declarative plugins.

use std::collections::BTreeMap;
use std::time::Duration;

use statscache_tests::corpus::{
    category_of, publish_to_stream, real_lines, reference_counts, served_counts, topic_of,
};
use statscache_tests::{
    consumer_backlog, free_port, run_command, send_signal, wait_for, wait_for_consumer_drained,
    wait_for_history_lookups, Servers, Service,
};

const CORPUS_SIZE: u64 = 324;

struct Stack {
    servers: Servers,
    api: String,
    _api_service: Service,
}

impl Stack {
    async fn start() -> Stack {
        let servers = Servers::start().await;
        let api_port = free_port();
        let env = servers.env(&[("STATSCACHE_API__LISTEN", format!("127.0.0.1:{api_port}"))]);
        let api_service = Service::start("api", &env, &[]);
        Stack {
            servers,
            api: format!("http://127.0.0.1:{api_port}"),
            _api_service: api_service,
        }
    }

    /// A worker with its own admin port; returns it and its metrics URL.
    async fn worker(&self, extra: &[(&str, String)], args: &[&str]) -> (Service, String) {
        let admin = free_port();
        let mut settings = vec![(
            "STATSCACHE_WORKER__ADMIN_LISTEN",
            format!("127.0.0.1:{admin}"),
        )];
        settings.extend(extra.iter().cloned());
        let worker = Service::start("worker", &self.servers.env(&settings), args);
        statscache_tests::wait_until_ok(&format!("http://127.0.0.1:{admin}/health/readyz")).await;
        (worker, format!("http://127.0.0.1:{admin}/metrics"))
    }

    /// Waits until the plugin serves `expected`, then returns what it serves.
    async fn wait_for_statistic(
        &self,
        plugin: &str,
        expected: &BTreeMap<String, u64>,
    ) -> BTreeMap<String, u64> {
        let api = self.api.clone();
        wait_for(
            &format!("{plugin} to reach its reference"),
            Duration::from_secs(120),
            || {
                let api = api.clone();
                async move {
                    served_counts(&api, plugin)
                        .await
                        .filter(|served| served == expected)
                }
            },
        )
        .await
    }

    /// Messages in the `messages` table, counted by identity.
    async fn distinct_messages(&self) -> u64 {
        self.servers
            .client()
            .query("SELECT uniqExact(msg_id) FROM messages")
            .fetch_one()
            .await
            .expect("count messages")
    }
}

fn total_reference() -> BTreeMap<String, u64> {
    BTreeMap::from([(String::new(), CORPUS_SIZE)])
}

/// A counter's value from Prometheus text, 0 if absent.
async fn metric(url: &str, name: &str) -> u64 {
    let Ok(response) = reqwest::get(url).await else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    for line in text.lines() {
        if let Some(value) = line
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
        {
            return value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        }
    }
    0
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_and_a_crash_between_write_and_ack_change_no_statistic() {
    let stack = Stack::start().await;
    // This worker aborts right after its first batch is written, before acking it.
    // A short ack wait so that what the crashed worker held comes back quickly.
    let ack_wait = ("STATSCACHE_WORKER__ACK_WAIT", "2s".to_string());
    let (crashing, _) = stack
        .worker(
            &[
                ("FAULT_INJECTION_WORKER_ABORT_AFTER_WRITES", "1".to_string()),
                ack_wait.clone(),
            ],
            &[],
        )
        .await;
    let lines = real_lines();
    // The corpus twice: once de-duplicated by JetStream, once more as a late backfill would
    // arrive (outside the duplicate window), then the first half a third time.
    publish_to_stream(&stack.servers.nats.url, &lines, true).await;
    publish_to_stream(&stack.servers.nats.url, &lines, true).await;
    publish_to_stream(&stack.servers.nats.url, &lines, false).await;
    publish_to_stream(&stack.servers.nats.url, &lines[..lines.len() / 2], false).await;

    // The crashed worker wrote rows it never acked; a fresh worker gets them redelivered.
    wait_for(
        "the fault-injected worker to abort",
        Duration::from_secs(60),
        || {
            let client = stack.servers.client();
            async move {
                let stored: u64 = client
                    .query("SELECT count() FROM messages")
                    .fetch_one()
                    .await
                    .ok()?;
                (stored > 0).then_some(())
            }
        },
    )
    .await;
    crashing.kill();
    let (_worker, metrics) = stack.worker(&[ack_wait], &[]).await;
    wait_for(
        "the unacked batch to be redelivered",
        Duration::from_secs(60),
        || {
            let metrics = metrics.clone();
            async move {
                (metric(&metrics, "statscache_worker_redelivered_total").await > 0).then_some(())
            }
        },
    )
    .await;

    stack.wait_for_statistic("volume", &total_reference()).await;
    let by_category = reference_counts(category_of);
    assert_eq!(
        stack
            .wait_for_statistic("volume-by-category", &by_category)
            .await,
        by_category
    );
    let by_topic = reference_counts(topic_of);
    assert_eq!(
        stack.wait_for_statistic("volume-by-topic", &by_topic).await,
        by_topic
    );
    wait_for(
        "every message in the messages table",
        Duration::from_secs(60),
        || async { (stack.distinct_messages().await == CORPUS_SIZE).then_some(()) },
    )
    .await;
    // Redelivered and repeated messages leave the history lookup tables equal to `messages`.
    wait_for_history_lookups(&stack.servers.client()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_the_batch_in_flight_and_leaves_nothing_unacked() {
    let stack = Stack::start().await;
    // Small batches, so that the signal comes while the stream is being worked through.
    let small_batches = [("STATSCACHE_WORKER__BATCH_SIZE", "20".to_string())];
    let (worker, metrics_url) = stack.worker(&small_batches, &[]).await;
    publish_to_stream(&stack.servers.nats.url, &real_lines(), true).await;
    wait_for(
        "a first batch to be stored",
        Duration::from_secs(60),
        || {
            let url = metrics_url.clone();
            async move { (metric(&url, "statscache_worker_stored_total").await > 0).then_some(()) }
        },
    )
    .await;
    assert!(worker.terminate(), "the worker exits cleanly on SIGTERM");

    // Everything delivered to it was stored and acked (or given back): nothing waits out
    // ack-wait for another replica.
    let (_, unacked) = consumer_backlog(&stack.servers.nats.url)
        .await
        .expect("the consumer's counts");
    assert_eq!(unacked, 0, "messages left unacked by the stopped worker");

    // A new replica takes the rest; the statistics are exact.
    let (_worker, _) = stack.worker(&[], &[]).await;
    stack.wait_for_statistic("volume", &total_reference()).await;
    let by_category = reference_counts(category_of);
    assert_eq!(
        stack
            .wait_for_statistic("volume-by-category", &by_category)
            .await,
        by_category
    );
    // Statistics are visible once written, a moment before their acks land.
    wait_for_consumer_drained(&stack.servers.nats.url).await;
}

/// A worker stuck writing to a frozen ClickHouse still exits on SIGTERM, within its
/// `shutdown-timeout`; the batch it held is stored once ClickHouse is back.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_a_worker_stuck_on_a_frozen_clickhouse_and_its_batch_is_stored_later() {
    let stack = Stack::start().await;
    let bounded = [("STATSCACHE_SERVICE__SHUTDOWN_TIMEOUT", "10s".to_string())];
    let (worker, _) = stack.worker(&bounded, &[]).await;
    send_signal(stack.servers.clickhouse.pid(), "STOP");
    publish_to_stream(&stack.servers.nats.url, &real_lines(), true).await;
    let nats_url = stack.servers.nats.url.clone();
    wait_for(
        "the worker to hold a batch it cannot write",
        Duration::from_secs(60),
        || async {
            consumer_backlog(&nats_url)
                .await
                .filter(|(_, unacked)| *unacked > 0)
        },
    )
    .await;

    // Generous: the assertion is that it exits, not how fast.
    let exited = worker.terminate_within(Duration::from_secs(120)).await;
    assert!(exited.is_some(), "the worker did not exit after SIGTERM");

    send_signal(stack.servers.clickhouse.pid(), "CONT");
    let (_worker, _) = stack.worker(&[], &[]).await;
    stack.wait_for_statistic("volume", &total_reference()).await;
    wait_for_consumer_drained(&stack.servers.nats.url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_share_the_work_and_agree_with_one() {
    let stack = Stack::start().await;
    let small_batches = [("STATSCACHE_WORKER__BATCH_SIZE", "8".to_string())];
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(stack.worker(&small_batches, &[]).await);
    }
    let lines = real_lines();
    for _ in 0..3 {
        publish_to_stream(&stack.servers.nats.url, &lines, false).await;
    }
    stack.wait_for_statistic("volume", &total_reference()).await;
    let by_category = reference_counts(category_of);
    assert_eq!(
        stack
            .wait_for_statistic("volume-by-category", &by_category)
            .await,
        by_category
    );
    // Written without `Nats-Msg-Id`, every copy is published again with it by the replica
    // that takes it; JetStream then keeps one copy of each within its window.
    wait_for(
        "every message to be relayed again",
        Duration::from_secs(60),
        || {
            let urls: Vec<String> = workers.iter().map(|(_, url)| url.clone()).collect();
            async move {
                let mut rerelayed = 0;
                for url in &urls {
                    rerelayed += metric(url, "statscache_worker_rerelayed_total").await;
                }
                (rerelayed == 3 * CORPUS_SIZE).then_some(())
            }
        },
    )
    .await;
    wait_for_consumer_drained(&stack.servers.nats.url).await;
    let mut stored = 0;
    for (_, url) in &workers {
        stored += metric(url, "statscache_worker_stored_total").await;
    }
    assert!(stored >= CORPUS_SIZE, "{stored} stored");
    for (_, url) in &workers {
        let stored = metric(url, "statscache_worker_stored_total").await;
        assert!(stored > 0, "a replica processed nothing: {url}");
    }
}

/// Seconds since the epoch, now.
fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// A backlog delta whose cutoff falls in the middle of a gap of over a day between two corpus
/// messages, so that no message is near the edge while the test runs; with the cutoff time.
fn backlog_delta_between_corpus_messages() -> (u64, f64) {
    let mut timestamps = Vec::new();
    for line in real_lines() {
        let message: serde_json::Value = serde_json::from_str(&line).expect("corpus line");
        timestamps.push(message["timestamp"].as_f64().expect("timestamp"));
    }
    timestamps.sort_by(f64::total_cmp);
    let middle = timestamps.len() / 2;
    for index in middle..timestamps.len() - 1 {
        let (before, after) = (timestamps[index], timestamps[index + 1]);
        if after - before > 86_400.0 {
            let cutoff = (before + after) / 2.0;
            return ((now_seconds() - cutoff) as u64, cutoff);
        }
    }
    panic!("no gap of a day in the newer half of the corpus");
}

/// Text of a scalar as the declarative plugins read it (strings as they are).
fn scalar_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declarative_plugin_from_the_config_file_keeps_its_statistic() {
    let stack = Stack::start().await;
    let (backlog_seconds, cutoff) = backlog_delta_between_corpus_messages();
    let config = tempfile::NamedTempFile::new().expect("config file");
    std::fs::write(
        config.path(),
        format!(
            r#"
[[worker.plugins]]
name = "Git pushes by branch"
description = "Commits received per branch"
kind = "count"
topics = ["org.fedoraproject.*.git.receive.>"]
key = "msg.commit.branch"

[[worker.plugins]]
name = "Compose branches per topic"
kind = "distinct-count"
topics = ["*.*.*.compose.>"]
key = "topic"
value = "msg.branch"

[[worker.plugins]]
name = "Latest build per package"
kind = "latest"
topics = ["*.*.*.buildsys.build.state.change"]
key = "msg.name"
value = "msg.version"

[[worker.plugins]]
name = "Recent volume by category"
kind = "count"
key = "category"
backlog-delta = "{backlog_seconds}s"
"#
        ),
    )
    .expect("write config");
    let config_path = config.path().to_string_lossy().into_owned();
    let (_worker, _) = stack.worker(&[], &["--config", &config_path]).await;
    publish_to_stream(&stack.servers.nats.url, &real_lines(), true).await;

    let pushes = reference_counts(|message| {
        let topic = message["topic"].as_str().unwrap_or("");
        let tokens: Vec<&str> = topic.split('.').collect();
        let is_git_receive = tokens.len() > 5
            && tokens[0] == "org"
            && tokens[1] == "fedoraproject"
            && tokens[3] == "git"
            && tokens[4] == "receive";
        match message["msg"]["commit"]["branch"].as_str() {
            Some(branch) if is_git_receive => vec![branch.to_string()],
            _ => vec![],
        }
    });
    assert!(!pushes.is_empty());
    assert_eq!(
        stack
            .wait_for_statistic("git-pushes-by-branch", &pushes)
            .await,
        pushes
    );

    // Distinct branches per compose topic.
    let mut branches_by_topic: BTreeMap<String, std::collections::BTreeSet<String>> =
        BTreeMap::new();
    for line in real_lines() {
        let message: serde_json::Value = serde_json::from_str(&line).expect("corpus line");
        let topic = message["topic"].as_str().unwrap_or("").to_string();
        let tokens: Vec<&str> = topic.split('.').collect();
        if tokens.len() < 5 || tokens[3] != "compose" {
            continue;
        }
        if let Some(branch) = scalar_text(&message["msg"]["branch"]) {
            branches_by_topic.entry(topic).or_default().insert(branch);
        }
    }
    let mut distinct_branches = BTreeMap::new();
    for (topic, branches) in branches_by_topic {
        distinct_branches.insert(topic, branches.len() as u64);
    }
    assert!(distinct_branches.values().any(|count| *count > 1));
    assert_eq!(
        stack
            .wait_for_statistic("compose-branches-per-topic", &distinct_branches)
            .await,
        distinct_branches
    );

    // The newest version per package, by (timestamp, identity).
    let mut newest: BTreeMap<String, (f64, String, String)> = BTreeMap::new();
    for line in real_lines() {
        let message: serde_json::Value = serde_json::from_str(&line).expect("corpus line");
        let topic = message["topic"].as_str().unwrap_or("");
        let tokens: Vec<&str> = topic.split('.').collect();
        if tokens.len() != 7 || !topic.ends_with(".buildsys.build.state.change") {
            continue;
        }
        let (Some(name), Some(version)) = (
            scalar_text(&message["msg"]["name"]),
            scalar_text(&message["msg"]["version"]),
        ) else {
            continue;
        };
        let timestamp = message["timestamp"].as_f64().expect("timestamp");
        let identity = statscache_shared::message::Envelope::parse(line.as_bytes())
            .expect("envelope")
            .identity();
        let candidate = (timestamp, identity, version);
        let entry = newest.entry(name).or_insert_with(|| candidate.clone());
        if (candidate.0, &candidate.1) > (entry.0, &entry.1) {
            *entry = candidate;
        }
    }
    let mut expected_versions = BTreeMap::new();
    for (name, (_, _, version)) in newest {
        expected_versions.insert(name, version);
    }
    assert!(expected_versions.len() > 1);
    let latest_url = format!(
        "{}/api/latest-build-per-package?rows_per_page=100",
        stack.api
    );
    let served_versions = wait_for(
        "the latest build per package",
        Duration::from_secs(120),
        || {
            let url = latest_url.clone();
            let expected = expected_versions.clone();
            async move {
                let page = statscache_tests::get_json(&url).await?;
                let mut served = BTreeMap::new();
                for row in page["rows"].as_array()? {
                    served.insert(
                        row["key"].as_str()?.to_string(),
                        row["value"].as_str()?.to_string(),
                    );
                }
                (served == expected).then_some(served)
            }
        },
    )
    .await;
    assert_eq!(served_versions, expected_versions);

    // A backlog delta: only messages newer than now minus the delta are counted.
    let recent = reference_counts(|message| {
        let timestamp = message["timestamp"].as_f64().unwrap_or(0.0);
        if timestamp >= cutoff {
            category_of(message)
        } else {
            vec![]
        }
    });
    let recent_total: u64 = recent.values().sum();
    assert!(recent_total > 0 && recent_total < CORPUS_SIZE);
    assert_eq!(
        stack
            .wait_for_statistic("recent-volume-by-category", &recent)
            .await,
        recent
    );

    let plugins = statscache_tests::get_json(&format!("{}/api/", stack.api))
        .await
        .expect("plugins");
    let mut backlog_listed = None;
    for plugin in plugins.as_array().expect("array") {
        if plugin["identifier"] == "recent-volume-by-category" {
            backlog_listed = plugin["backlog_delta_seconds"].as_u64();
        }
    }
    assert_eq!(backlog_listed, Some(backlog_seconds));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_added_later_is_filled_by_a_replay_and_a_rebuild_changes_nothing() {
    let stack = Stack::start().await;
    let (_worker, _) = stack.worker(&[], &[]).await;
    publish_to_stream(&stack.servers.nats.url, &real_lines(), true).await;
    let by_category = reference_counts(category_of);
    stack
        .wait_for_statistic("volume-by-category", &by_category)
        .await;

    // A statistic defined after the messages arrived: the running worker never saw them.
    let config = tempfile::NamedTempFile::new().expect("config file");
    std::fs::write(
        config.path(),
        "[[worker.plugins]]\nname = \"Messages per category\"\nkind = \"count\"\nkey = \"category\"\n",
    )
    .expect("write config");
    let config_path = config.path().to_string_lossy().into_owned();
    let env = stack.servers.env(&[]);
    let args = [
        "--config",
        config_path.as_str(),
        "replay",
        "--plugin",
        "messages-per-category",
        "--from-sequence",
        "1",
    ];
    let output = run_command("worker", &env, &args).await;
    assert!(
        output.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        served_counts(&stack.api, "messages-per-category").await,
        Some(by_category.clone())
    );

    // Rebuilding a built-in from the stream gives the same statistic.
    let rebuild = [
        "replay",
        "--plugin",
        "volume-by-category",
        "--from-sequence",
        "1",
        "--rebuild",
    ];
    let output = run_command("worker", &env, &rebuild).await;
    assert!(
        output.status.success(),
        "rebuild failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        served_counts(&stack.api, "volume-by-category").await,
        Some(by_category)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_added_after_the_stream_forgot_its_history_is_filled_from_the_archive() {
    let stack = Stack::start().await;
    let (_worker, _) = stack.worker(&[], &[]).await;
    publish_to_stream(&stack.servers.nats.url, &real_lines(), true).await;
    let by_category = reference_counts(category_of);
    stack
        .wait_for_statistic("volume-by-category", &by_category)
        .await;
    wait_for_consumer_drained(&stack.servers.nats.url).await;
    // The stream's retention passed: it holds none of those messages any more.
    let client = async_nats::connect(&stack.servers.nats.url)
        .await
        .expect("nats");
    let mut stream = async_nats::jetstream::new(client)
        .get_stream("FEDMSG")
        .await
        .expect("stream");
    stream.purge().await.expect("purge the stream");
    assert_eq!(stream.info().await.expect("info").state.messages, 0);

    let config = tempfile::NamedTempFile::new().expect("config file");
    std::fs::write(
        config.path(),
        "[[worker.plugins]]\nname = \"Messages per category\"\nkind = \"count\"\nkey = \"category\"\n",
    )
    .expect("write config");
    let config_path = config.path().to_string_lossy().into_owned();
    let env = stack.servers.env(&[]);
    for args in [
        vec![
            "--config",
            config_path.as_str(),
            "replay",
            "--plugin",
            "messages-per-category",
            "--from-archive",
        ],
        vec![
            "replay",
            "--plugin",
            "volume-by-category",
            "--from-archive",
            "--rebuild",
        ],
    ] {
        let output = run_command("worker", &env, &args).await;
        assert!(
            output.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for plugin in ["messages-per-category", "volume-by-category"] {
        assert_eq!(
            served_counts(&stack.api, plugin).await,
            Some(by_category.clone()),
            "{plugin}"
        );
    }
}

/// The corpus lines whose usernames and packages fedmsg.meta's own tests state (and which the
/// offline port can reproduce), with those expectations.
fn lines_with_meta_expectations() -> Vec<(String, Vec<String>, Vec<String>)> {
    let expectations =
        std::fs::read_to_string(statscache_tests::fixture("fedmsg-real-meta-expected.jsonl"))
            .expect("expectations");
    let mut selected = Vec::new();
    for (line, expectation) in real_lines().into_iter().zip(expectations.lines()) {
        let expectation: serde_json::Value =
            serde_json::from_str(expectation).expect("expectation line");
        let origin = expectation["origin"].as_str().unwrap_or("");
        let needs_fas = statscache_worker::meta::KNOWN_DIFFERENCES
            .iter()
            .any(|(class, _)| origin.ends_with(class));
        let names = |field: &str| -> Option<Vec<String>> {
            let list = expectation[field].as_array()?;
            Some(
                list.iter()
                    .filter_map(|name| name.as_str().map(str::to_string))
                    .collect(),
            )
        };
        if let (Some(usernames), Some(packages), false) =
            (names("usernames"), names("packages"), needs_fas)
        {
            selected.push((line, usernames, packages));
        }
    }
    selected
}

#[tokio::test(flavor = "multi_thread")]
async fn every_builtin_statistic_equals_an_independent_reference() {
    let stack = Stack::start().await;
    let (_worker, _) = stack.worker(&[], &[]).await;
    let selected = lines_with_meta_expectations();
    let lines: Vec<String> = selected.iter().map(|(line, _, _)| line.clone()).collect();
    publish_to_stream(&stack.servers.nats.url, &lines, true).await;

    let mut by_user = BTreeMap::new();
    let mut by_package = BTreeMap::new();
    let mut by_category = BTreeMap::new();
    let mut by_topic = BTreeMap::new();
    for (line, usernames, packages) in &selected {
        let message: serde_json::Value = serde_json::from_str(line).expect("line");
        for (counts, keys) in [
            (&mut by_user, usernames.clone()),
            (&mut by_package, packages.clone()),
            (&mut by_category, category_of(&message)),
            (&mut by_topic, topic_of(&message)),
        ] {
            let mut keys = keys;
            keys.sort();
            keys.dedup();
            for key in keys {
                *counts.entry(key).or_insert(0u64) += 1;
            }
        }
    }
    let total = BTreeMap::from([(String::new(), lines.len() as u64)]);
    assert_eq!(stack.wait_for_statistic("volume", &total).await, total);
    assert_eq!(
        stack
            .wait_for_statistic("volume-by-category", &by_category)
            .await,
        by_category
    );
    assert_eq!(
        stack.wait_for_statistic("volume-by-topic", &by_topic).await,
        by_topic
    );
    assert_eq!(
        stack.wait_for_statistic("volume-by-user", &by_user).await,
        by_user
    );
    assert_eq!(
        stack
            .wait_for_statistic("volume-by-package", &by_package)
            .await,
        by_package
    );

    // The release-engineering dashboard: the newest event per slot, read off the corpus by hand
    // (bodhi composes of 2019-06 and a fedimg publish).
    let page = statscache_tests::get_json(&format!(
        "{}/api/releng-dashboard?rows_per_page=100",
        stack.api
    ))
    .await
    .expect("releng dashboard");
    let mut statuses = BTreeMap::new();
    for row in page["rows"].as_array().expect("rows") {
        let key = row["key"].as_str().expect("key").to_string();
        statuses.insert(
            key,
            row["value"]["status"].as_str().unwrap_or("").to_string(),
        );
    }
    for (slot, status) in [
        ("updates/f29-updates-testing", "complete"),
        ("updates/dist-6E-epel-testing", "sync.done"),
        (
            "image/eu-west-2/Fedora-Atomic-27-20180507.0.x86_64",
            "publish",
        ),
    ] {
        assert_eq!(
            statuses.get(slot).map(String::as_str),
            Some(status),
            "{slot} in {statuses:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undecodable_message_in_the_stream_is_parked_and_the_rest_is_counted() {
    let stack = Stack::start().await;
    let (_worker, metrics) = stack.worker(&[], &[]).await;
    // Written straight to the stream (an operator's mistake, another publisher): not an envelope.
    let client = async_nats::connect(&stack.servers.nats.url)
        .await
        .expect("nats");
    let jetstream = async_nats::jetstream::new(client);
    let ack = jetstream
        .publish(
            "fedmsg.org.fedoraproject.prod.garbage",
            "definitely not json".into(),
        )
        .await
        .expect("publish garbage");
    ack.await.expect("garbage ack");
    publish_to_stream(&stack.servers.nats.url, &real_lines(), true).await;

    stack.wait_for_statistic("volume", &total_reference()).await;
    wait_for("the garbage to be parked", Duration::from_secs(60), || {
        let metrics = metrics.clone();
        async move {
            let parked = metric(
                &metrics,
                r#"statscache_worker_dead_letters_total{reason="not_json"}"#,
            )
            .await;
            (parked == 1).then_some(())
        }
    })
    .await;
    let mut dead_letters = jetstream
        .get_stream("STATSCACHE_DEAD_LETTER")
        .await
        .expect("dead letters");
    assert_eq!(dead_letters.info().await.expect("info").state.messages, 1);
    let parked = dead_letters
        .get_raw_message(1)
        .await
        .expect("parked message");
    assert_eq!(parked.subject.as_str(), "statscache.dead-letter.worker");
    assert_eq!(&parked.payload[..], b"definitely not json");
    assert_eq!(
        parked
            .headers
            .get("Statscache-Stream-Sequence")
            .map(|v| v.to_string()),
        Some("1".to_string())
    );
}
