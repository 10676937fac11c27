//! Our `/raw` and `/id` against a real datagrepper 0.9.7 (datanommer.models 0.9.1, SQLite),
//! both holding the same corpus: for a table of queries, the same messages, `count`, `pages`,
//! `total` and `arguments`.
//!
//! The corpus is the real one with every timestamp moved by one whole number of seconds so that
//! its newest message is 30 minutes old: datagrepper only allows `contains` over the last 32
//! weeks, and our default window (no `start`, `end`, `delta`) is the last hour.
//!
//! How messages are compared: by topic, timestamp, body and the other envelope fields, and by
//! `msg_id` only where the envelope had one (datanommer invents a random id for the others; we
//! use a content hash). `source_name`/`source_version` are left out: datanommer writes its own
//! name and version there, we keep the envelope's (a documented difference).
//!
//! `meta=` text fields (`title`, `subtitle`, `link`, `icon`, `secondary_icon`, `objects`) are
//! compared on every corpus message of the services our fedmsg.meta port covers.
//!
//! Order: both sides get the corpus in file order (datanommer's row ids, our stream sequence),
//! and 47 corpus messages share one timestamp, 12 another. Pages are compared message by
//! message, in order, so pages whose edge cuts a tie hold the same messages on both sides. One
//! exception, SQLite's and not datagrepper's: with a `category` or `topic` filter SQLite reads
//! through that index and sorts the rows itself, keeping ties in row id order even for `desc`
//! (without one it reads the timestamp index backwards, reversing them, as we do). For those
//! descending queries our page is compared with datagrepper's ascending result, reversed.
//!
//! `contains` is compared on the corpus and on a few messages added to it (`contains_probes`):
//! published with spaces, unsorted keys, non-ASCII text and numbers Python spells differently,
//! so that only datanommer's own text of `msg` matches as datagrepper does. The test datagrepper
//! runs SQLite with case-sensitive `LIKE`, as PostgreSQL's (see serve.sh).

use std::collections::BTreeSet;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::{StatusCode, Url};
use serde_json::Value;
use statscache_shared::message::Envelope;
use statscache_shared::meta::text;
use statscache_tests::corpus::real_lines;
use statscache_tests::stack::CorpusStack;
use statscache_tests::Datagrepper;

const NEWEST_ORIGINAL_TIMESTAMP: i64 = 1_565_118_377;

/// fedmsg.meta's text fields, as `meta=` names them.
const TEXT_FIELDS: [&str; 6] = [
    "title",
    "subtitle",
    "link",
    "icon",
    "secondary_icon",
    "objects",
];

/// Messages for `contains`, in July 2019 (original time, outside every other window of the
/// table): envelopes as a non-Python publisher might write them, three of them tied in time.
fn contains_probes() -> Vec<String> {
    let probes = [
        r#"{"topic": "org.fedoraproject.prod.pagure.issue.new", "timestamp": 1562000000.25, "msg_id": "zz-probe-1", "msg": {"title": "Caf\u00e9 \ud83d\ude00", "author": "ralph", "ratio": 0.00001, "size": 1.50, "path": "a\/b"}}"#,
        r#"{"timestamp":1562000000.25,"topic":"org.fedoraproject.prod.pagure.issue.edit","msg_id":"zz-probe-2","msg":{"z":{"b":2,"a":1},"author":"Ralph","note":"100% done_ok"}}"#,
        r#"{"topic": "org.fedoraproject.prod.pagure.issue.edit", "timestamp": 1562000000.25, "msg_id": "zz-probe-3", "msg": {"author": "ralph", "big": 1E16, "agent": "releng"}}"#,
        r#"{"topic": "org.fedoraproject.prod.pagure.issue.comment", "timestamp": 1562000001.5, "msg_id": "zz-probe-4", "msg": {"author": "kalev", "comment": "R\u00e9sum\u00e9: 50% of f29"}}"#,
    ];
    probes.iter().map(|probe| probe.to_string()).collect()
}

/// The corpus and the `contains` probes, shifted by `shift` seconds.
fn shifted_corpus(shift: i64) -> Vec<String> {
    let mut lines = Vec::new();
    let mut all = real_lines();
    all.extend(contains_probes());
    for line in all {
        let envelope: Value = serde_json::from_str(&line).expect("corpus line");
        let timestamp = &envelope["timestamp"];
        let moved = match (timestamp.as_i64(), timestamp.as_f64()) {
            (Some(whole), _) => Value::from(whole + shift),
            (None, Some(seconds)) => Value::from(seconds + shift as f64),
            (None, None) => panic!("a corpus timestamp is not a number: {line}"),
        };
        lines.push(shift_text(&line, timestamp, &moved));
    }
    lines
}

/// `line` with its timestamp replaced, the rest as published (spacing, key order, escapes).
fn shift_text(line: &str, original: &Value, moved: &Value) -> String {
    let mut shifted = None;
    for separator in [":", ": "] {
        let from = format!("\"timestamp\"{separator}{original}");
        if line.contains(&from) {
            shifted = Some(line.replacen(&from, &format!("\"timestamp\"{separator}{moved}"), 1));
        }
    }
    shifted.unwrap_or_else(|| panic!("no timestamp {original} as written in {line}"))
}

struct Stack {
    api: String,
    datagrepper: Datagrepper,
    /// Added to every original corpus time.
    shift: i64,
    /// `msg_id`s present in the corpus envelopes (the others are made up by each side).
    corpus_ids: BTreeSet<String>,
    _corpus_stack: CorpusStack,
    _corpus_file: tempfile::NamedTempFile,
}

impl Stack {
    /// An original corpus time, moved as the corpus was.
    fn at(&self, original: f64) -> String {
        (original + self.shift as f64).to_string()
    }
}

async fn start_stack() -> Stack {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let shift = now - 1800 - NEWEST_ORIGINAL_TIMESTAMP;
    let lines = shifted_corpus(shift);
    let mut corpus_file = tempfile::NamedTempFile::new().expect("corpus file");
    for line in &lines {
        writeln!(corpus_file, "{line}").expect("write corpus");
    }
    let mut corpus_ids = BTreeSet::new();
    for line in &lines {
        let envelope: Value = serde_json::from_str(line).expect("line");
        if let Some(id) = envelope["msg_id"].as_str() {
            corpus_ids.insert(id.to_string());
        }
    }

    let (datagrepper, corpus_stack) = tokio::join!(
        Datagrepper::start(corpus_file.path()),
        CorpusStack::start(&lines, &[])
    );
    Stack {
        api: corpus_stack.api.clone(),
        datagrepper,
        shift,
        corpus_ids,
        _corpus_stack: corpus_stack,
        _corpus_file: corpus_file,
    }
}

fn url(base: &str, path: &str, pairs: &[(String, String)]) -> String {
    let mut url = Url::parse(&format!("{base}{path}")).expect("url");
    for (name, value) in pairs {
        url.query_pairs_mut().append_pair(name, value);
    }
    url.to_string()
}

async fn get(url: &str) -> (StatusCode, Value) {
    let response = reqwest::get(url).await.expect("request");
    let status = response.status();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A message as both sides must agree on it (see the module documentation).
fn comparable(message: &Value, corpus_ids: &BTreeSet<String>) -> String {
    let mut kept = serde_json::Map::new();
    for key in [
        "topic",
        "timestamp",
        "msg",
        "i",
        "username",
        "crypto",
        "certificate",
        "signature",
        "headers",
    ] {
        kept.insert(key.to_string(), message[key].clone());
    }
    let msg_id = message["msg_id"].as_str().unwrap_or("");
    if corpus_ids.contains(msg_id) {
        kept.insert("msg_id".to_string(), Value::from(msg_id));
    }
    // fedmsg.meta's sets come out in any order; its text fields are compared as they are.
    if let Some(meta) = message["meta"].as_object() {
        let mut sorted = serde_json::Map::new();
        for (name, value) in meta {
            let Some(list) = value.as_array() else {
                sorted.insert(name.clone(), value.clone());
                continue;
            };
            let mut names: Vec<String> = list.iter().map(|v| v.to_string()).collect();
            names.sort();
            sorted.insert(name.clone(), Value::from(names));
        }
        kept.insert("meta".to_string(), Value::Object(sorted));
    }
    Value::Object(kept).to_string()
}

/// A page's messages, in order, as comparables.
fn messages(page: &Value, corpus_ids: &BTreeSet<String>) -> Vec<String> {
    let mut messages = Vec::new();
    for message in page["raw_messages"].as_array().expect("raw_messages") {
        messages.push(comparable(message, corpus_ids));
    }
    messages
}

/// How `arguments` are compared: exactly, or with `start`/`end` read at slightly different
/// "now"s by the two servers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Clock {
    Fixed,
    RelativeToNow,
}

fn compare_arguments(ours: &Value, theirs: &Value, clock: Clock) -> Result<(), String> {
    if clock == Clock::Fixed {
        if ours == theirs {
            return Ok(());
        }
        return Err(format!(
            "arguments differ:\n  ours   {ours}\n  theirs {theirs}"
        ));
    }
    let (Some(ours_map), Some(theirs_map)) = (ours.as_object(), theirs.as_object()) else {
        return Err("arguments are not objects".to_string());
    };
    let our_keys: Vec<&String> = ours_map.keys().collect();
    let their_keys: Vec<&String> = theirs_map.keys().collect();
    if our_keys != their_keys {
        return Err(format!(
            "argument keys differ: {our_keys:?} / {their_keys:?}"
        ));
    }
    for (key, our_value) in ours_map {
        let their_value = &theirs_map[key];
        let close = match (our_value.as_f64(), their_value.as_f64()) {
            (Some(a), Some(b)) if ["start", "end", "delta"].contains(&key.as_str()) => {
                (a - b).abs() < 60.0
            }
            _ => our_value == their_value,
        };
        if !close {
            return Err(format!(
                "argument {key}: ours {our_value}, theirs {their_value}"
            ));
        }
    }
    Ok(())
}

/// One query of the table. `theirs` differs from `ours` only where our default differs from
/// the test datagrepper's configuration (see `DEFAULT_QUERY_DELTA`).
struct Query {
    name: &'static str,
    ours: Vec<(String, String)>,
    theirs: Vec<(String, String)>,
    clock: Clock,
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

fn same(name: &'static str, list: Vec<(String, String)>, clock: Clock) -> Query {
    Query {
        name,
        ours: list.clone(),
        theirs: list,
        clock,
    }
}

fn queries(stack: &Stack) -> Vec<Query> {
    // August 2012: 72 messages, 47 of them sharing one timestamp.
    let august_2012 = [
        ("start".to_string(), stack.at(1344344053.0)),
        ("end".to_string(), stack.at(1346000000.0)),
    ];
    // The first 15 of them (git, wiki, bodhi): fedmsg.meta needs no network for these.
    let git_window = [
        ("start".to_string(), stack.at(1344344053.0)),
        ("end".to_string(), stack.at(1344350851.0)),
    ];
    // April 2019: 20 CentOS CI messages; June 2019: bodhi and bugzilla. Both are recent enough,
    // once shifted, for `contains`.
    let april_2019 = [
        ("start".to_string(), stack.at(1554076800.0)),
        ("end".to_string(), stack.at(1556668800.0)),
    ];
    let june_2019 = [
        ("start".to_string(), stack.at(1559000000.0)),
        ("end".to_string(), stack.at(1561600000.0)),
    ];
    let with = |window: &[(String, String)], extra: &[(&str, &str)]| {
        let mut all = window.to_vec();
        all.extend(pairs(extra));
        all
    };
    let mut table = vec![
        // Our default window is Fedora's DEFAULT_QUERY_DELTA (3600 s); the test datagrepper has
        // none configured, so it is asked for the same window explicitly.
        Query {
            name: "no parameters = the last hour",
            ours: vec![],
            theirs: pairs(&[("delta", "3600")]),
            clock: Clock::RelativeToNow,
        },
        same(
            "delta alone",
            pairs(&[("delta", "7200")]),
            Clock::RelativeToNow,
        ),
        same(
            "start alone, to now",
            vec![("start".to_string(), stack.at(1564000000.0))],
            Clock::RelativeToNow,
        ),
        same(
            "end alone: the 600 s before it",
            vec![("end".to_string(), stack.at(1344350850.886738))],
            Clock::Fixed,
        ),
        same(
            "start and delta",
            vec![
                ("start".to_string(), stack.at(1554076800.0)),
                ("delta".to_string(), "2592000".to_string()),
            ],
            Clock::Fixed,
        ),
        same(
            "end and delta",
            vec![
                ("end".to_string(), stack.at(1565118377.0)),
                ("delta".to_string(), "2592000".to_string()),
                ("rows_per_page".to_string(), "100".to_string()),
            ],
            Clock::Fixed,
        ),
        same(
            "fractional start",
            vec![
                // Seven decimals, as text: datagrepper rounds it to microseconds.
                (
                    "start".to_string(),
                    format!("{}.2337211", 1344344053 + stack.shift),
                ),
                ("end".to_string(), stack.at(1344432055.0)),
            ],
            Clock::Fixed,
        ),
        same(
            "window, one page of 100",
            with(&august_2012, &[("rows_per_page", "100")]),
            Clock::Fixed,
        ),
        same(
            "window, rows_per_page=7 page 5",
            with(&august_2012, &[("rows_per_page", "7"), ("page", "5")]),
            Clock::Fixed,
        ),
        same(
            "window, rows_per_page=1 page 72",
            with(&august_2012, &[("rows_per_page", "1"), ("page", "72")]),
            Clock::Fixed,
        ),
        same(
            "window, past the last page",
            with(&august_2012, &[("page", "4")]),
            Clock::Fixed,
        ),
        same(
            "user",
            with(&august_2012, &[("user", "limburgher")]),
            Clock::Fixed,
        ),
        same(
            "users ORed",
            with(
                &august_2012,
                &[("user", "limburgher"), ("user", "mjw"), ("user", "ralph")],
            ),
            Clock::Fixed,
        ),
        same(
            "package",
            with(&august_2012, &[("package", "valgrind")]),
            Clock::Fixed,
        ),
        same(
            "packages ORed",
            with(
                &august_2012,
                &[("package", "valgrind"), ("package", "nethack")],
            ),
            Clock::Fixed,
        ),
        same(
            "category",
            with(&august_2012, &[("category", "git")]),
            Clock::Fixed,
        ),
        same(
            "categories ORed",
            with(&august_2012, &[("category", "git"), ("category", "wiki")]),
            Clock::Fixed,
        ),
        same(
            "topics ORed",
            with(
                &august_2012,
                &[
                    ("topic", "org.fedoraproject.prod.git.branch"),
                    ("topic", "org.fedoraproject.stg.wiki.article.edit"),
                ],
            ),
            Clock::Fixed,
        ),
        same(
            "filters ANDed",
            with(
                &august_2012,
                &[
                    ("category", "git"),
                    ("user", "limburgher"),
                    ("package", "foo"),
                ],
            ),
            Clock::Fixed,
        ),
        same(
            "not_user",
            with(
                &august_2012,
                &[("not_user", "limburgher"), ("rows_per_page", "100")],
            ),
            Clock::Fixed,
        ),
        same(
            "not_package repeated",
            with(
                &august_2012,
                &[
                    ("not_package", "foo"),
                    ("not_package", "valgrind"),
                    ("rows_per_page", "100"),
                ],
            ),
            Clock::Fixed,
        ),
        same(
            "not_category repeated",
            with(
                &august_2012,
                &[
                    ("not_category", "compose"),
                    ("not_category", "git"),
                    ("rows_per_page", "100"),
                ],
            ),
            Clock::Fixed,
        ),
        same(
            "not_topic",
            with(
                &august_2012,
                &[
                    ("not_topic", "org.fedoraproject.prod.compose.rawhide.start"),
                    ("order", "asc"),
                    ("rows_per_page", "100"),
                ],
            ),
            Clock::Fixed,
        ),
        same(
            "positive and negative",
            with(
                &august_2012,
                &[
                    ("category", "compose"),
                    ("not_topic", "org.fedoraproject.prod.compose.rawhide.start"),
                ],
            ),
            Clock::Fixed,
        ),
        same(
            "nothing matches",
            with(
                &august_2012,
                &[("topic", "org.fedoraproject.prod.no.such.topic")],
            ),
            Clock::Fixed,
        ),
        same(
            "meta",
            with(
                &git_window,
                &[
                    ("meta", "usernames"),
                    ("meta", "packages"),
                    ("rows_per_page", "100"),
                ],
            ),
            Clock::Fixed,
        ),
        same(
            "contains",
            with(
                &april_2019,
                &[("category", "ci"), ("contains", "fedora-f28")],
            ),
            Clock::Fixed,
        ),
        same(
            "contains ORed",
            with(
                &april_2019,
                &[
                    ("category", "ci"),
                    ("contains", "fedora-f28"),
                    ("contains", "fedora-pr-new"),
                ],
            ),
            Clock::Fixed,
        ),
        same(
            "contains with a topic",
            with(
                &june_2019,
                &[
                    ("topic", "org.fedoraproject.prod.bodhi.compose.complete"),
                    ("contains", "f29-updates-testing"),
                ],
            ),
            Clock::Fixed,
        ),
        same(
            "contains with a category, ascending",
            with(
                &june_2019,
                &[
                    ("category", "bodhi"),
                    ("contains", "releng"),
                    ("order", "asc"),
                ],
            ),
            Clock::Fixed,
        ),
        same(
            "grouped=false",
            with(&april_2019, &[("grouped", "false")]),
            Clock::Fixed,
        ),
    ];
    // The contains probes (`contains_probes`): July 2019.
    let july_2019 = [
        ("start".to_string(), stack.at(1561900000.0)),
        ("end".to_string(), stack.at(1562100000.0)),
    ];
    let contains_cases: [(&'static str, &[&str]); 16] = [
        ("contains is case-sensitive", &["Ralph"]),
        ("contains, lower case", &["ralph"]),
        ("contains, datanommer's spacing", &["\"author\":\"ralph\""]),
        (
            "contains, the publisher's spacing",
            &["\"author\": \"ralph\""],
        ),
        ("contains, _ is one character", &["_alph"]),
        ("contains, _ matches itself", &["done_ok"]),
        ("contains, % is any run", &["author%kalev"]),
        ("contains, % across a space", &["100%done"]),
        ("contains, datanommer's key order", &["\"a\":1,\"b\":2"]),
        ("contains, the publisher's key order", &["\"b\":2,\"a\":1"]),
        ("contains, non-ASCII as \\u escapes", &["Caf_u00e9"]),
        ("contains, non-ASCII as published", &["Café"]),
        (
            "contains, Python's floats",
            &["\"ratio\":1e-05,\"size\":1.5"],
        ),
        ("contains, Python's exponent", &["\"big\":1e+16"]),
        ("contains, / unescaped", &["\"path\":\"a/b\""]),
        ("contains, several values ORed", &["kalev", "Ralph"]),
    ];
    for (name, needles) in contains_cases {
        let mut query = with(&july_2019, &[("category", "pagure")]);
        for needle in needles {
            query.push(("contains".to_string(), needle.to_string()));
        }
        table.push(same(name, query, Clock::Fixed));
    }
    // Pages cut through ties: the probes (three share a time) by `contains`, the git tie (12
    // messages) through the lookup tables (`user`, `package`) and through `category`.
    for order in ["desc", "asc"] {
        for page in 1..=2 {
            let page = page.to_string();
            table.push(same(
                "contains, pages cut through a tie",
                with(
                    &july_2019,
                    &[
                        ("category", "pagure"),
                        ("contains", "a"),
                        ("rows_per_page", "2"),
                        ("order", order),
                        ("page", &page),
                    ],
                ),
                Clock::Fixed,
            ));
        }
        for page in 1..=4 {
            let page = page.to_string();
            for (filter, value) in [
                ("user", "limburgher"),
                ("package", "valgrind"),
                ("category", "git"),
            ] {
                table.push(same(
                    "lookup and category pages cut through a tie",
                    with(
                        &august_2012,
                        &[
                            (filter, value),
                            ("rows_per_page", "3"),
                            ("order", order),
                            ("page", &page),
                        ],
                    ),
                    Clock::Fixed,
                ));
            }
        }
    }
    // Every page of the window in both orders, and pages of 10.
    for order in ["desc", "asc"] {
        for page in 1..=3 {
            table.push(Query {
                name: "window, every page",
                ours: with(
                    &august_2012,
                    &[("order", order), ("page", &page.to_string())],
                ),
                theirs: with(
                    &august_2012,
                    &[("order", order), ("page", &page.to_string())],
                ),
                clock: Clock::Fixed,
            });
        }
    }
    for page in 1..=8 {
        table.push(same(
            "window, pages of 10",
            with(
                &august_2012,
                &[("rows_per_page", "10"), ("page", &page.to_string())],
            ),
            Clock::Fixed,
        ));
    }
    table
}

fn value_of<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Whether datagrepper's SQLite sorts this query's rows itself, keeping ties in row id order
/// in both directions (see the module documentation): a descending query with a `category` or
/// `topic` filter.
fn sqlite_keeps_ties_ascending(query: &[(String, String)]) -> bool {
    let descending = value_of(query, "order") != Some("asc");
    let filtered = value_of(query, "category").is_some() || value_of(query, "topic").is_some();
    descending && filtered
}

/// The page of `query` cut from datagrepper's whole result in ascending order, reversed: the
/// descending order with ties reversed too, as SQLite's timestamp index would give it.
async fn reversed_ascending_page(stack: &Stack, query: &[(String, String)]) -> Vec<String> {
    let page: usize = value_of(query, "page").map_or(1, |page| page.parse().expect("page"));
    let rows: usize =
        value_of(query, "rows_per_page").map_or(25, |rows| rows.parse().expect("rows"));
    let mut ascending: Vec<(String, String)> = Vec::new();
    for (name, value) in query {
        if !["page", "rows_per_page", "order"].contains(&name.as_str()) {
            ascending.push((name.clone(), value.clone()));
        }
    }
    ascending.push(("order".to_string(), "asc".to_string()));
    ascending.push(("rows_per_page".to_string(), "100".to_string()));
    let (status, whole) = get(&url(&stack.datagrepper.url, "/raw", &ascending)).await;
    assert_eq!(status, StatusCode::OK, "{ascending:?}: {whole}");
    assert!(
        whole["pages"].as_u64() <= Some(1),
        "{ascending:?} needs more than one page"
    );
    let mut all = messages(&whole, &stack.corpus_ids);
    all.reverse();
    all.into_iter().skip((page - 1) * rows).take(rows).collect()
}

/// Compares one query; on success returns datagrepper's `total` and `count`.
async fn compare(stack: &Stack, query: &Query) -> Result<(u64, u64), String> {
    let (our_status, ours) = get(&url(&stack.api, "/raw", &query.ours)).await;
    let (their_status, theirs) = get(&url(&stack.datagrepper.url, "/raw", &query.theirs)).await;
    if our_status != StatusCode::OK || their_status != StatusCode::OK {
        return Err(format!(
            "status ours {our_status} {ours}, theirs {their_status}"
        ));
    }
    for field in ["count", "pages", "total"] {
        if ours[field] != theirs[field] {
            return Err(format!(
                "{field}: ours {}, theirs {}",
                ours[field], theirs[field]
            ));
        }
    }
    compare_arguments(&ours["arguments"], &theirs["arguments"], query.clock)?;
    let our_messages = messages(&ours, &stack.corpus_ids);
    let expected = if sqlite_keeps_ties_ascending(&query.theirs) {
        reversed_ascending_page(stack, &query.theirs).await
    } else {
        messages(&theirs, &stack.corpus_ids)
    };
    if our_messages != expected {
        return Err(format!(
            "messages differ:\n  ours   {our_messages:#?}\n  theirs {expected:#?}"
        ));
    }
    let total = theirs["total"].as_u64().unwrap_or(0);
    let count = theirs["count"].as_u64().unwrap_or(0);
    Ok((total, count))
}

/// One stack for the three checks: each starts ClickHouse, NATS, our services and a datagrepper.
#[tokio::test(flavor = "multi_thread")]
async fn statscache_answers_as_the_real_datagrepper_does() {
    let stack = start_stack().await;
    raw_answers_match(&stack).await;
    meta_text_fields_match(&stack).await;
    id_answers_match(&stack).await;
    refusals_are_json_400s(&stack).await;
}

async fn raw_answers_match(stack: &Stack) {
    let table = queries(stack);
    let mut failures = Vec::new();
    for query in &table {
        match compare(stack, query).await {
            Ok((total, count)) => println!("same: {} (total {total}, count {count})", query.name),
            Err(reason) => failures.push(format!("{} {:?}: {reason}", query.name, query.ours)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} queries differ:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );

    // The corpus pages through identically, in the same order, ties cut by page edges included.
    let mut ours_all = Vec::new();
    let mut theirs_all = Vec::new();
    let window = [
        ("start".to_string(), stack.at(1344344053.0)),
        ("end".to_string(), stack.at(1346000000.0)),
    ];
    for page in 1..=3 {
        let mut query = window.to_vec();
        query.push(("page".to_string(), page.to_string()));
        let (_, ours) = get(&url(&stack.api, "/raw", &query)).await;
        let (_, theirs) = get(&url(&stack.datagrepper.url, "/raw", &query)).await;
        for message in ours["raw_messages"].as_array().expect("ours") {
            ours_all.push(comparable(message, &stack.corpus_ids));
        }
        for message in theirs["raw_messages"].as_array().expect("theirs") {
            theirs_all.push(comparable(message, &stack.corpus_ids));
        }
    }
    assert_eq!(ours_all.len(), 72);
    assert_eq!(ours_all, theirs_all);
}

/// fedmsg.meta's text fields, on every corpus message of a service our port covers (the real
/// fedmsg.meta computes them in datagrepper): one `/raw` per topic and second, asking for all six
/// fields. No field differs by design on these messages.
async fn meta_text_fields_match(stack: &Stack) {
    let mut described = 0;
    let mut asked = BTreeSet::new();
    for line in shifted_corpus(stack.shift) {
        let envelope = Envelope::parse(line.as_bytes()).expect("corpus envelope");
        if text::describe(&envelope).is_none() {
            continue;
        }
        described += 1;
        let second = envelope.event_time().floor() as i64;
        asked.insert((envelope.topic.clone(), second));
    }
    let mut compared = 0;
    let mut failures = Vec::new();
    for (topic, second) in &asked {
        let mut query = vec![
            ("topic".to_string(), topic.clone()),
            ("start".to_string(), second.to_string()),
            ("end".to_string(), (second + 1).to_string()),
            ("rows_per_page".to_string(), "100".to_string()),
            // Ascending: SQLite's tie order under a topic filter (see the module documentation).
            ("order".to_string(), "asc".to_string()),
        ];
        for field in TEXT_FIELDS {
            query.push(("meta".to_string(), field.to_string()));
        }
        let (our_status, ours) = get(&url(&stack.api, "/raw", &query)).await;
        let (their_status, theirs) = get(&url(&stack.datagrepper.url, "/raw", &query)).await;
        assert_eq!(
            (our_status, their_status),
            (StatusCode::OK, StatusCode::OK),
            "{query:?}: {ours} {theirs}"
        );
        let our_messages = messages(&ours, &stack.corpus_ids);
        let their_messages = messages(&theirs, &stack.corpus_ids);
        if our_messages != their_messages {
            failures.push(format!(
                "{topic} at {second}:\n  ours   {our_messages:?}\n  theirs {their_messages:?}"
            ));
        }
        compared += ours["raw_messages"].as_array().map(Vec::len).unwrap_or(0);
    }
    println!("meta text fields compared on {compared} messages ({described} described)");
    assert!(
        failures.is_empty(),
        "{} of {} queries differ:\n{}",
        failures.len(),
        asked.len(),
        failures.join("\n")
    );
    assert!(compared >= described, "{compared} < {described}");
}

async fn id_answers_match(stack: &Stack) {
    let mut checked = 0;
    for msg_id in stack.corpus_ids.iter().take(40) {
        let query = [("id".to_string(), msg_id.clone())];
        let (our_status, ours) = get(&url(&stack.api, "/id", &query)).await;
        let (their_status, theirs) = get(&url(&stack.datagrepper.url, "/id", &query)).await;
        assert_eq!(
            (our_status, their_status),
            (StatusCode::OK, StatusCode::OK),
            "{msg_id}"
        );
        assert_eq!(
            comparable(&ours, &stack.corpus_ids),
            comparable(&theirs, &stack.corpus_ids),
            "{msg_id}"
        );
        checked += 1;
    }
    assert_eq!(checked, 40);
    let unknown = [("id".to_string(), "2019-no-such-message".to_string())];
    let (our_status, ours) = get(&url(&stack.api, "/id", &unknown)).await;
    let (their_status, theirs) = get(&url(&stack.datagrepper.url, "/id", &unknown)).await;
    assert_eq!(
        (our_status, their_status),
        (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND)
    );
    assert_eq!(ours["error"], theirs["error"]);
}

/// Where datagrepper fails (a 500, or an HTML 400), we answer 400 with a JSON error; and where
/// our bounds refuse what datagrepper would run, we say why. Both lists are the documented
/// differences.
async fn refusals_are_json_400s(stack: &Stack) {
    let window = [
        ("start", stack.at(1344344053.0)),
        ("end", stack.at(1346000000.0)),
    ];
    let in_window = |extra: &[(&str, &str)]| {
        let mut all: Vec<(String, String)> = window
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect();
        all.extend(pairs(extra));
        all
    };
    let datagrepper_fails = vec![
        in_window(&[("page", "0")]),
        in_window(&[("rows_per_page", "0")]),
        in_window(&[("rows_per_page", "101")]),
        in_window(&[("order", "sideways")]),
        in_window(&[("meta", "bogus")]),
        in_window(&[("delta", "5")]),
        in_window(&[("contains", "koji")]),
        in_window(&[("contains", "koji"), ("topic", "x")]),
        pairs(&[("start", "abc")]),
        pairs(&[("start", "")]),
    ];
    for query in &datagrepper_fails {
        let (their_status, _) = get(&url(&stack.datagrepper.url, "/raw", query)).await;
        assert!(
            their_status.as_u16() >= 400,
            "datagrepper accepted {query:?}"
        );
        let (our_status, ours) = get(&url(&stack.api, "/raw", query)).await;
        assert_eq!(our_status, StatusCode::BAD_REQUEST, "{query:?}: {ours}");
        assert_eq!(ours["error"], "bad_parameter", "{query:?}: {ours}");
    }
    let only_we_refuse = vec![
        pairs(&[("start", "0"), ("end", "2000000000")]),
        in_window(&[("page", "99999")]),
        pairs(&[("start", "5"), ("end", "1")]),
        pairs(&[("delta", "-5")]),
        // (The newest message and the git window need no network for fedmsg.meta; `date` is
        // arrow's "7 years ago", not offered.)
        pairs(&[("grouped", "true"), ("rows_per_page", "1")]),
        vec![
            ("start".to_string(), stack.at(1344344053.0)),
            ("end".to_string(), stack.at(1344350851.0)),
            ("meta".to_string(), "date".to_string()),
        ],
    ];
    for query in &only_we_refuse {
        let (their_status, _) = get(&url(&stack.datagrepper.url, "/raw", query)).await;
        assert_eq!(
            their_status,
            StatusCode::OK,
            "datagrepper refused {query:?}"
        );
        let (our_status, ours) = get(&url(&stack.api, "/raw", query)).await;
        assert_eq!(our_status, StatusCode::BAD_REQUEST, "{query:?}: {ours}");
        assert!(ours["message"].is_string(), "{query:?}: {ours}");
    }
}
