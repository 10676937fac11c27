//! statscache_plugins' pagure and releng plugins, as ours, over the real corpus: every row
//! statscache's API serves for them equals a reference computed here with plain code from the
//! corpus file and the rules of statscache_plugins' source (not with the plugins' code).
//!
//! The plugins read production topics only (`io.pagure.prod`, `org.fedoraproject.prod`); the
//! corpus's pagure.io messages are mostly from pagure's development instance (`io.pagure.dev`),
//! and its cloud-image messages from staging, so those are re-topicked to production before they
//! are published (their bodies unchanged). Users come from fedmsg.meta's own expectations
//! (`fedmsg-real-meta-expected.jsonl`), not from our port of it.

use std::collections::BTreeMap;

use serde_json::Value;
use statscache_shared::message::Envelope;
use statscache_tests::corpus::real_lines;
use statscache_tests::stack::CorpusStack;
use statscache_tests::{fixture, wait_for};

const DAY: i64 = 86_400;

/// The corpus, pagure.io's development and fedimg's staging topics moved to production, with
/// fedmsg.meta's expected usernames of each message.
fn retopicked() -> Vec<(Value, Vec<String>)> {
    let expectations =
        std::fs::read_to_string(fixture("fedmsg-real-meta-expected.jsonl")).expect("expectations");
    let mut messages = Vec::new();
    for (line, expectation) in real_lines().iter().zip(expectations.lines()) {
        let mut envelope: Value = serde_json::from_str(line).expect("corpus line");
        let topic = envelope["topic"].as_str().expect("topic").to_string();
        let moved = topic
            .replacen("io.pagure.dev.", "io.pagure.prod.", 1)
            .replacen(
                "org.fedoraproject.stg.fedimg.",
                "org.fedoraproject.prod.fedimg.",
                1,
            );
        envelope["topic"] = Value::String(moved);
        let expectation: Value = serde_json::from_str(expectation).expect("expectation");
        let mut usernames = Vec::new();
        for name in expectation["usernames"].as_array().into_iter().flatten() {
            usernames.push(name.as_str().expect("a username").to_string());
        }
        messages.push((envelope, usernames));
    }
    messages
}

fn day_end(envelope: &Value) -> i64 {
    let time = envelope["timestamp"].as_f64().expect("timestamp").floor() as i64;
    (time / DAY + 1) * DAY
}

/// statscache's pagure rule for the project a message counts for.
fn pagure_project(topic: &str, msg: &Value) -> Option<String> {
    if topic == "io.pagure.prod.pagure.issue.comment.edited" {
        return None;
    }
    let name = if topic.contains("io.pagure.prod.pagure.pull-request") {
        &msg["pullrequest"]["project"]["name"]
    } else if topic == "io.pagure.prod.pagure.git.receive" {
        &msg["repo"]["name"]
    } else {
        &msg["project"]["name"]
    };
    name.as_str().map(str::to_string)
}

/// (day end, key) → messages, of the pagure.io messages, keyed by `keys`.
fn pagure_rows(
    messages: &[(Value, Vec<String>)],
    keys: impl Fn(&Value, &[String]) -> Vec<String>,
) -> BTreeMap<(i64, String), u64> {
    let mut rows = BTreeMap::new();
    for (envelope, usernames) in messages {
        let topic = envelope["topic"].as_str().unwrap_or("");
        if !topic.contains("io.pagure.prod") {
            continue;
        }
        let mut message_keys = keys(envelope, usernames);
        message_keys.sort();
        message_keys.dedup();
        for key in message_keys {
            *rows.entry((day_end(envelope), key)).or_insert(0) += 1;
        }
    }
    rows
}

/// Every row of a statscache identifier (JSON pages of 100, oldest first), as (timestamp, the
/// other columns).
async fn served(api: &str, ident: &str) -> Vec<(f64, BTreeMap<String, Value>)> {
    let mut rows = Vec::new();
    let mut page = 1u64;
    loop {
        let url = format!("{api}/statscache/api/{ident}?order=asc&rows_per_page=100&page={page}");
        let response = reqwest::get(&url).await.expect("request");
        assert!(response.status().is_success(), "{url}");
        let pages: u64 = response.headers()["x-link-count"]
            .to_str()
            .expect("header")
            .parse()
            .expect("pages");
        let body: Value = response.json().await.expect("JSON");
        for row in body.as_array().expect("an array").clone() {
            let mut columns: BTreeMap<String, Value> =
                serde_json::from_value(row).expect("an object");
            let timestamp = columns.remove("timestamp").and_then(|t| t.as_f64());
            rows.push((timestamp.expect("timestamp"), columns));
        }
        if page >= pages {
            return rows;
        }
        page += 1;
    }
}

/// A volume identifier's rows as (timestamp, key) → volume.
async fn served_volumes(
    api: &str,
    ident: &str,
    column: Option<&str>,
) -> BTreeMap<(i64, String), u64> {
    let mut volumes = BTreeMap::new();
    for (timestamp, columns) in served(api, ident).await {
        let key = column
            .map(|column| columns[column].as_str().expect("key").to_string())
            .unwrap_or_default();
        volumes.insert(
            (timestamp as i64, key),
            columns["volume"].as_u64().expect("volume"),
        );
    }
    volumes
}

/// statscache's releng rules for composes and updates pushes (the corpus's releng messages),
/// as (category, constraint, message).
fn releng_entry(topic: &str, msg: &Value) -> Option<(String, String, String)> {
    if let Some(distro) = topic
        .strip_prefix("org.fedoraproject.prod.bodhi.updates.")
        .and_then(|rest| rest.strip_suffix(".sync"))
    {
        let name = format!("{}-{}", msg["release"].as_str()?, msg["repo"].as_str()?);
        let message = format!(r#"{{"name": "{name}", "status": "synced out"}}"#);
        return Some((format!("updates-{distro}"), name, message));
    }
    let (compose_topic, status) = topic.rsplit_once('.')?;
    if status != "start" && status != "complete" {
        return None;
    }
    let stage = compose_topic.strip_prefix("org.fedoraproject.prod.compose.")?;
    let (branch, name) = match stage.split_once('.') {
        Some((branch, name)) if ["mash", "pungify", "rsync"].contains(&name) => (branch, name),
        Some(_) => return None,
        None => (stage, stage),
    };
    if branch != "rawhide" && branch != "branched" {
        return None;
    }
    let arch = msg["arch"]
        .as_str()
        .filter(|arch| !arch.is_empty())
        .unwrap_or("primary");
    let mut title = name.to_string();
    title[..1].make_ascii_uppercase();
    let message = format!(r#"{{"name": "{title}", "status": "{status}"}}"#);
    Some((
        format!("compose-{branch}_{arch}"),
        name.to_string(),
        message,
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn pagure_and_releng_plugins_equal_statscache_s_rules() {
    let messages = retopicked();
    let lines: Vec<String> = messages.iter().map(|(e, _)| e.to_string()).collect();
    let stack = CorpusStack::start(&lines, &[]).await;
    let api = stack.api.as_str();

    let total = pagure_rows(&messages, |_, _| vec![String::new()]);
    let by_user = pagure_rows(&messages, |_, usernames| usernames.to_vec());
    let by_project = pagure_rows(&messages, |envelope, _| {
        let topic = envelope["topic"].as_str().unwrap_or("");
        pagure_project(topic, &envelope["msg"])
            .into_iter()
            .collect()
    });
    assert_eq!(
        total.values().sum::<u64>(),
        33,
        "the corpus's pagure.io messages"
    );
    assert!(by_project.len() > 10 && by_user.len() > 10);
    for (ident, column, expected) in [
        ("number-of-contribution-to-pagure.io-1d", None, &total),
        (
            "number-of-contribution-per-user-to-pagure.io-1d",
            Some("user"),
            &by_user,
        ),
        (
            "number-of-contribution-per-project-to-pagure.io-1d",
            Some("project"),
            &by_project,
        ),
    ] {
        let what = format!("{ident} to equal the reference");
        let served = wait_for(&what, std::time::Duration::from_secs(60), || async {
            let served = served_volumes(api, ident, column).await;
            (&served == expected).then_some(served)
        })
        .await;
        assert_eq!(&served, expected, "{ident}");
    }

    // The log: each (category, constraint)'s latest event — the greatest (timestamp, message
    // identity), as every latest statistic here breaks ties in time (many corpus messages
    // share one) — oldest first.
    let mut latest: BTreeMap<(String, String), (f64, String, String)> = BTreeMap::new();
    for (line, (envelope, _)) in lines.iter().zip(&messages) {
        let topic = envelope["topic"].as_str().unwrap_or("");
        let Some((category, constraint, message)) = releng_entry(topic, &envelope["msg"]) else {
            continue;
        };
        let timestamp = envelope["timestamp"].as_f64().expect("timestamp");
        let identity = Envelope::parse(line.as_bytes())
            .expect("envelope")
            .identity();
        let candidate = (timestamp, identity, message);
        let slot = latest
            .entry((category, constraint))
            .or_insert_with(|| candidate.clone());
        if (candidate.0, &candidate.1) > (slot.0, &slot.1) {
            *slot = candidate;
        }
    }
    assert!(latest.len() > 15, "composes and updates: {latest:?}");
    let mut expected = Vec::new();
    for ((category, constraint), (timestamp, _, message)) in &latest {
        expected.push((
            *timestamp,
            format!("{category}/{constraint}"),
            serde_json::json!({
                "category": category,
                "category_constraint": constraint,
                "message": message,
            }),
        ));
    }
    expected.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let expected: Vec<(f64, Value)> = expected
        .into_iter()
        .map(|(timestamp, _, row)| (timestamp.floor(), row))
        .collect();
    let ident = "release-engineering-event-logs";
    let served = wait_for(
        "the releng log",
        std::time::Duration::from_secs(60),
        || async {
            let rows: Vec<(f64, Value)> = served(api, ident)
                .await
                .into_iter()
                .map(|(t, columns)| (t, serde_json::to_value(columns).expect("row")))
                .collect();
            (rows.len() == expected.len()).then_some(rows)
        },
    )
    .await;
    assert_eq!(served, expected);
}
