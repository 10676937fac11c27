//! The operator's dashboard and alerts (`deploy/observability/`) are checked by the tools that
//! will read them, and against the metrics the roles really export:
//! - `promtool check rules` and `promtool test rules` (Debian's `prometheus` package);
//! - the dashboard against its JSON schema (Python `jsonschema`), which must reject a broken one;
//! - every metric the dashboard and the alerts query is in the `/metrics` of a running pipeline
//!   that saw valid and invalid input: a renamed metric cannot leave a panel silently empty.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use statscache_tests::stack::Pipeline;
use statscache_tests::{
    admin_metrics, ensure_installed, fixture, metric, publish_corpus, repo_root, wait_for,
    wait_for_consumer_drained, Servers,
};

fn observability_dir() -> PathBuf {
    repo_root().join("deploy/observability")
}

/// Runs `program` with `args` in `deploy/observability`; panics with its output on failure.
fn run_checked(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(observability_dir())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{program} {args:?}:\n{text}");
    text
}

#[test]
fn alerting_rules_pass_promtool() {
    ensure_installed();
    let checked = run_checked("promtool", &["check", "rules", "alerts.yml"]);
    assert!(checked.contains("SUCCESS: 12 rules found"), "{checked}");
    let tested = run_checked("promtool", &["test", "rules", "alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// Validates the dashboard, and a copy with a panel's queries removed, against the schema.
const SCHEMA_CHECK: &str = r#"
import copy, json, jsonschema
schema = json.load(open("dashboard.schema.json"))
jsonschema.Draft202012Validator.check_schema(schema)
dashboard = json.load(open("statscache-dashboard.json"))
jsonschema.validate(dashboard, schema, cls=jsonschema.Draft202012Validator)
broken = copy.deepcopy(dashboard)
del next(p for p in broken["panels"] if p["type"] != "row")["targets"]
try:
    jsonschema.validate(broken, schema, cls=jsonschema.Draft202012Validator)
    print("a panel without queries passed")
except jsonschema.ValidationError:
    print("dashboard valid; broken copy rejected")
"#;

#[test]
fn the_dashboard_matches_its_schema() {
    ensure_installed();
    let output = run_checked("python3", &["-c", SCHEMA_CHECK]);
    assert!(
        output.contains("dashboard valid; broken copy rejected"),
        "{output}"
    );
}

/// The `statscache_*` metric names in `text` (PromQL, or a whole rules file).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("statscache_") {
        let candidate = &rest[start..];
        let length = candidate
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(candidate.len());
        names.insert(candidate[..length].to_string());
        rest = &candidate[length..];
    }
    names
}

/// The metric names the dashboard's panels and the alerting rules query.
fn queried_metric_names() -> BTreeSet<String> {
    let dashboard_text =
        std::fs::read_to_string(observability_dir().join("statscache-dashboard.json"))
            .expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard_text).expect("JSON");
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            names.extend(metric_names(target["expr"].as_str().expect("expr")));
        }
    }
    let rules = std::fs::read_to_string(observability_dir().join("alerts.yml")).expect("rules");
    names.extend(metric_names(&rules));
    names
}

/// The sample names (`name` before `{` or the value) in Prometheus text.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        names.insert(line[..end].to_string());
    }
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_dashboard_and_alerts_query_is_exported() {
    let pipeline = Pipeline::start(Servers::start().await, &[]).await;
    let servers = &pipeline.servers;
    let (api, fedmsg_endpoint) = (&pipeline.api, &pipeline.fedmsg_endpoint);
    let (worker_admin, ingestor_admin) = (pipeline.worker_admin, pipeline.ingestor_admin);

    // Valid and invalid input through the ingestor, and a message only the worker can reject
    // (not an envelope) straight into the stream: every labelled series gets a sample.
    let files = [
        fixture("fedmsg-real.jsonl"),
        fixture("fedmsg-real-incomplete.jsonl"),
    ];
    let output = publish_corpus(fedmsg_endpoint, &files, 1, &[]).await;
    assert!(output.contains("published 348"), "{output}");
    let client = async_nats::connect(servers.nats.url.as_str())
        .await
        .expect("connect to NATS");
    let jetstream = async_nats::jetstream::new(client);
    let ack = jetstream
        .publish("fedmsg.org.fedoraproject.prod.not.an.envelope", "{}".into())
        .await
        .expect("publish");
    ack.await.expect("ack");
    wait_for_consumer_drained(&servers.nats.url).await;
    let answered = reqwest::get(format!("{api}/api/volume?bucket=all"))
        .await
        .expect("api request");
    assert!(answered.status().is_success());

    // A message again (a duplicate) and invalid input once the dead-letter stream is gone (its
    // dead letter lost): the series only such events create.
    jetstream
        .delete_stream("STATSCACHE_DEAD_LETTER")
        .await
        .expect("delete the dead-letter stream");
    let again = tempfile::NamedTempFile::new().expect("temporary corpus");
    let mut lines = String::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("corpus");
        lines.push_str(text.lines().next().expect("a line"));
        lines.push('\n');
    }
    std::fs::write(again.path(), lines).expect("write corpus");
    let output = publish_corpus(fedmsg_endpoint, &[again.path().to_path_buf()], 1, &[]).await;
    assert!(output.contains("published 2"), "{output}");
    let lost = "statscache_ingestor_dead_letters_lost_total{";
    wait_for(
        "the dead letter to be lost",
        Duration::from_secs(60),
        || async {
            admin_metrics(ingestor_admin)
                .await
                .contains(lost)
                .then_some(())
        },
    )
    .await;

    let worker_metrics = wait_for(
        "the worker to park the non-envelope",
        Duration::from_secs(60),
        || async {
            let text = admin_metrics(worker_admin).await;
            text.contains("statscache_worker_dead_letters_total{")
                .then_some(text)
        },
    )
    .await;
    let ingestor_metrics = admin_metrics(ingestor_admin).await;
    assert!(
        metric(
            &ingestor_metrics,
            "statscache_ingestor_relayed_total{source=\"zeromq\"}"
        ) > 0.0
    );
    let api_metrics = reqwest::get(format!("{api}/metrics"))
        .await
        .expect("api metrics")
        .text()
        .await
        .expect("metrics text");

    let mut exported = exported_names(&worker_metrics);
    exported.extend(exported_names(&ingestor_metrics));
    exported.extend(exported_names(&api_metrics));
    let queried = queried_metric_names();
    assert!(queried.len() > 15, "{queried:?}");
    let missing: Vec<&String> = queried.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:?}\nexported: {exported:?}"
    );
}
