//! Statistics computed independently from envelopes, and compared with what the api serves.
//!
//! A [`Check`] is one request (`/api/<plugin>?<query>`, every page read) and the answer a
//! plain count over the envelopes gives for it: messages per (bucket start, key), from each
//! envelope's own `timestamp` and fields. The tests hand the envelopes that must count — the
//! corpus, or the copy of each identity that counts — so that any message counted twice, in
//! the wrong period or not at all shows as a difference.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, NaiveDate};
use serde_json::Value;

use crate::corpus::{category_of, topic_of};
use crate::get_json;

/// Messages per (bucket start, key): a `bucket=all` answer has every bucket at 0.
pub type Counts = BTreeMap<(u64, String), u64>;

/// One request and the answer expected of it.
#[derive(Debug, Clone)]
pub struct Check {
    pub plugin: String,
    pub query: String,
    pub expected: Counts,
}

impl Check {
    pub fn new(plugin: &str, query: impl Into<String>, expected: Counts) -> Check {
        Check {
            plugin: plugin.to_string(),
            query: query.into(),
            expected,
        }
    }
}

/// The parsed envelopes and their event seconds.
pub fn parsed(lines: &[String]) -> Vec<(Value, u64)> {
    let mut messages = Vec::new();
    for line in lines {
        let message: Value = serde_json::from_str(line).expect("an envelope");
        let seconds = message["timestamp"].as_f64().expect("timestamp").floor() as u64;
        messages.push((message, seconds));
    }
    messages
}

/// Messages per (bucket start, key) of `lines` in `[from, to]` (seconds), `bucket_of` cutting
/// time, `keys_of` giving a message's keys.
pub fn reference(
    lines: &[String],
    from: u64,
    to: u64,
    bucket_of: impl Fn(u64) -> u64,
    keys_of: impl Fn(&Value) -> Vec<String>,
) -> Counts {
    let mut counts = BTreeMap::new();
    for (message, seconds) in parsed(lines) {
        if seconds < from || seconds > to {
            continue;
        }
        let keys: BTreeSet<String> = keys_of(&message).into_iter().collect();
        for key in keys {
            *counts.entry((bucket_of(seconds), key)).or_insert(0) += 1;
        }
    }
    counts
}

/// All of time, for [`reference`].
pub const EVERYTHING: u64 = u32::MAX as u64;

pub fn whole(_: u64) -> u64 {
    0
}

pub fn minute_of(seconds: u64) -> u64 {
    seconds / 60 * 60
}

pub fn hour_of(seconds: u64) -> u64 {
    seconds / 3_600 * 3_600
}

pub fn day_of(seconds: u64) -> u64 {
    seconds / 86_400 * 86_400
}

/// 1970-01-05 was a Monday.
pub fn week_of(seconds: u64) -> u64 {
    (seconds - 345_600) / 604_800 * 604_800 + 345_600
}

pub fn month_of(seconds: u64) -> u64 {
    let moment = DateTime::from_timestamp(seconds as i64, 0).expect("time");
    let first = NaiveDate::from_ymd_opt(moment.year(), moment.month(), 1)
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .expect("first of month");
    first.and_utc().timestamp() as u64
}

/// Every message under one key (`volume`).
pub fn everyone(_: &Value) -> Vec<String> {
    vec![String::new()]
}

/// What the api serves for a query, all pages read, and the answer's `total`.
pub struct Served {
    pub counts: Counts,
    pub total: u64,
}

/// `/api/<plugin>?<query>`, every page.
pub async fn served(api: &str, plugin: &str, query: &str) -> Option<Served> {
    let mut counts = BTreeMap::new();
    let mut page: u64 = 1;
    loop {
        let url = format!("{api}/api/{plugin}?{query}&rows_per_page=100&page={page}");
        let body = get_json(&url).await?;
        for row in body["rows"].as_array()? {
            let bucket = row["bucket"].as_u64().unwrap_or(0);
            let key = row["key"].as_str()?.to_string();
            counts.insert((bucket, key), row["count"].as_u64()?);
        }
        if page >= body["pages"].as_u64()? {
            let total = body["total"].as_u64()?;
            return Some(Served { counts, total });
        }
        page += 1;
    }
}

/// What the api serves that differs from `checks`, one line per request. `total` must be the
/// number of rows too (it is counted apart, from the rows per bucket).
pub async fn mismatches(api: &str, checks: &[Check]) -> Vec<String> {
    let mut found = Vec::new();
    for check in checks {
        let Some(answer) = served(api, &check.plugin, &check.query).await else {
            found.push(format!("{}?{}: no answer", check.plugin, check.query));
            continue;
        };
        let expected = &check.expected;
        if answer.counts != *expected || answer.total != expected.len() as u64 {
            found.push(format!(
                "{}?{}: served {:?} (total {}), reference {expected:?} ({} rows)",
                check.plugin,
                check.query,
                answer.counts,
                answer.total,
                expected.len()
            ));
        }
    }
    found
}

/// Waits until every check holds; panics with what still differs if they do not converge.
pub async fn assert_served(api: &str, checks: &[Check]) {
    let deadline = Duration::from_secs(120);
    let started = Instant::now();
    loop {
        let mismatches = mismatches(api, checks).await;
        if mismatches.is_empty() {
            return;
        }
        if started.elapsed() > deadline {
            panic!(
                "statistics differ from the reference:\n{}",
                mismatches.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `volume`, `volume-by-category` and `volume-by-topic` (the latter over a window with
/// ragged edges) at every bucket, with their references from `counted`.
pub fn every_bucket(counted: &[String]) -> Vec<Check> {
    let seconds: Vec<u64> = parsed(counted).iter().map(|(_, s)| *s).collect();
    let first = seconds.iter().min().copied().unwrap_or(0);
    let last = seconds.iter().max().copied().unwrap_or(0);
    // Ragged edges inside seconds, minutes and hours, read from the facts; the api reads
    // the seconds `[floor(start), ceil(end)]`.
    let (start, end) = (first + 3_671, last - 3_599);
    let window = format!("start={start}.6&end={end}.2");
    let mut checks = Vec::new();
    for (bucket, bucket_of) in [
        ("minute", minute_of as fn(u64) -> u64),
        ("hour", hour_of),
        ("day", day_of),
        ("week", week_of),
        ("month", month_of),
        ("all", whole),
    ] {
        checks.push(Check::new(
            "volume",
            format!("bucket={bucket}"),
            reference(counted, 0, EVERYTHING, bucket_of, everyone),
        ));
        checks.push(Check::new(
            "volume-by-category",
            format!("bucket={bucket}"),
            reference(counted, 0, EVERYTHING, bucket_of, category_of),
        ));
        checks.push(Check::new(
            "volume-by-topic",
            format!("bucket={bucket}&{window}"),
            reference(counted, start, end + 1, bucket_of, topic_of),
        ));
    }
    checks
}

/// Every message `/raw` lists over the days of `counted` (31 at most), by identity: its
/// timestamps.
async fn raw_listing(api: &str, counted: &[String]) -> BTreeMap<String, Vec<f64>> {
    let seconds: Vec<u64> = parsed(counted).iter().map(|(_, s)| *s).collect();
    let start = seconds.iter().min().copied().unwrap_or(0) - 10;
    let end = seconds.iter().max().copied().unwrap_or(0) + 10;
    let mut listed: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut page = 1;
    loop {
        let url =
            format!("{api}/raw?start={start}&end={end}&order=asc&rows_per_page=100&page={page}");
        let body = get_json(&url).await.expect("/raw answers");
        for message in body["raw_messages"].as_array().expect("raw_messages") {
            let id = message["msg_id"].as_str().expect("msg_id").to_string();
            let timestamp = message["timestamp"].as_f64().expect("timestamp");
            listed.entry(id).or_default().push(timestamp);
        }
        if page >= body["pages"].as_u64().expect("pages") {
            return listed;
        }
        page += 1;
    }
}

/// `/raw` and `/id` list every identity of `counted` once, as that envelope.
///
/// Timestamps are compared in whole seconds: `/raw` and `/id` cut them as datagrepper does.
pub async fn assert_history_lists_each_once(api: &str, counted: &[String]) {
    let mut expected: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (message, seconds) in parsed(counted) {
        let id = message["msg_id"].as_str().expect("msg_id").to_string();
        expected.insert(id, vec![seconds as f64]);
    }
    let mut listed = raw_listing(api, counted).await;
    for timestamps in listed.values_mut() {
        for timestamp in timestamps.iter_mut() {
            *timestamp = timestamp.floor();
        }
    }
    assert_eq!(listed, expected, "/raw");
    for (id, timestamps) in &expected {
        let found = get_json(&format!("{api}/id?id={id}"))
            .await
            .expect("/id answers");
        let timestamp = found["timestamp"].as_f64().map(f64::floor);
        assert_eq!(timestamp, Some(timestamps[0]), "/id?id={id}");
    }
}
