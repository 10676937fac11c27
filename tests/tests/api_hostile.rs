//! The API under hostile input and outages, against real servers on the real corpus.
//!
//! - Every parameter of `/api/`, `/api/<plugin>` (and its `/layout`), `/raw` and `/id` gets SQL
//!   injection strings, bounds breakers (huge ranges and pages, bad dates), unknown enumerations,
//!   bytes that are not UTF-8, repetitions and very long values. Each answer is a 4xx with our
//!   JSON error body, or — for a free-text filter, where an injection string is just a value
//!   nobody has — a 200 that matches nothing. Never a 5xx. Afterwards the data is exactly what it was: no injection took effect.
//! - ClickHouse paused: requests end after `api.request-timeout` with a 503 JSON body.
//! - ClickHouse killed: the routes and `/health/readyz` answer 503 JSON; once it is back on the
//!   same ports, the same api process serves the same data again, without a restart.

use clickhouse::Row;
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;
use statscache_tests::corpus::real_lines;
use statscache_tests::get_json;
use statscache_tests::stack::CorpusStack;

const CORPUS_SIZE: u64 = 324;

/// August 2012, 72 messages of the corpus: a window every `/raw` case can use.
const WINDOW: [(&str, &str); 2] = [("start", "1344344053"), ("end", "1346000000")];
const WINDOW_TOTAL: u64 = 72;

const INJECTIONS: &[&str] = &[
    "'; DROP TABLE messages; --",
    "' OR '1'='1",
    "\\'; DROP DATABASE statscache; --",
    "1) OR (1=1",
    "x' UNION ALL SELECT name FROM system.tables --",
    "?",
    "??",
    "%",
    "_",
    "\u{0}",
    "\"; TRUNCATE TABLE plugins; --",
    "`messages`",
];

/// NATS, ClickHouse, a worker and an api, with the corpus stored.
async fn start_stack() -> CorpusStack {
    let settings = [("STATSCACHE_API__REQUEST_TIMEOUT", "5s".to_string())];
    CorpusStack::start(&real_lines(), &settings).await
}

/// `api` + `path` with the pairs form-encoded.
fn url(api: &str, path: &str, pairs: &[(&str, &str)]) -> String {
    let mut url = Url::parse(&format!("{api}{path}")).expect("url");
    for (name, value) in pairs {
        url.query_pairs_mut().append_pair(name, value);
    }
    url.to_string()
}

/// What a case must get.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// A 4xx with our JSON error body.
    Refused,
    /// A 200 where nothing matches (`rows` or `raw_messages` empty).
    NothingMatches,
    /// A 200 `/raw` page over [`WINDOW`] that excluded nothing.
    NothingExcluded,
}

struct Case {
    url: String,
    expect: Expect,
}

fn case(url: String, expect: Expect) -> Case {
    Case { url, expect }
}

fn with_window<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = WINDOW.to_vec();
    all.extend_from_slice(pairs);
    all
}

fn statistic_cases(api: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let plugin = "/api/volume-by-topic";
    for injection in INJECTIONS {
        for parameter in [
            "start",
            "end",
            "stop",
            "bucket",
            "order",
            "format",
            "page",
            "rows_per_page",
            "limit",
        ] {
            cases.push(case(
                url(api, plugin, &[(parameter, injection)]),
                Expect::Refused,
            ));
        }
        // A key is free text: an injection string is a key nobody has.
        cases.push(case(
            url(api, plugin, &[("key", injection)]),
            Expect::NothingMatches,
        ));
        let name = injection.replace('/', "");
        for path in [format!("/api/{name}"), format!("/api/{name}/layout")] {
            let mut plugin_url = Url::parse(api).expect("url");
            plugin_url.set_path(&path);
            cases.push(case(plugin_url.to_string(), Expect::Refused));
        }
    }
    let refused: &[&[(&str, &str)]] = &[
        // Out of bounds (the whole history, start=0, is this route's default and allowed).
        &[("end", "1e20")],
        &[("start", "-1")],
        &[("start", "1e308")],
        &[("end", "inf")],
        &[("start", "1344344053"), ("end", "1")],
        // Pages.
        &[("page", "0")],
        &[("page", "-1")],
        &[("page", "99999999999")],
        &[("page", "99999999999999999999999")],
        &[("page", "1.5")],
        &[("rows_per_page", "0")],
        &[("rows_per_page", "-5")],
        &[("rows_per_page", "101")],
        &[("limit", "1000000")],
        // Dates.
        &[("start", "2012-13-45")],
        &[("start", "yesterday")],
        &[("end", "NaN")],
        &[("start", "")],
        // Unknown enumerations.
        &[("format", "xml")],
        &[("bucket", "fortnight")],
        &[("order", "sideways")],
        // Repetitions of single-valued parameters.
        &[("start", "1"), ("start", "2")],
        &[("bucket", "day"), ("bucket", "all")],
        &[("page", "1"), ("page", "1")],
    ];
    for pairs in refused {
        cases.push(case(url(api, plugin, pairs), Expect::Refused));
    }
    let long = "k".repeat(10_000);
    cases.push(case(url(api, plugin, &[("key", &long)]), Expect::Refused));
    cases.push(case(format!("{api}{plugin}?key=%FF"), Expect::Refused));
    cases.push(case(format!("{api}{plugin}?key=%C3%28"), Expect::Refused));
    cases.push(case(format!("{api}{plugin}?%FE=1"), Expect::Refused));
    cases.push(case(format!("{api}/api/%FF%FE"), Expect::Refused));
    cases.push(case(format!("{api}/api/%FF%FE/layout"), Expect::Refused));
    cases.push(case(format!("{api}/api/?format=xml"), Expect::Refused));
    cases.push(case(
        format!("{api}/api/?format=csv&format=json"),
        Expect::Refused,
    ));
    cases
}

fn history_cases(api: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    for injection in INJECTIONS {
        for parameter in ["user", "package", "category", "topic"] {
            let pairs = with_window(&[(parameter, injection)]);
            cases.push(case(url(api, "/raw", &pairs), Expect::NothingMatches));
        }
        for parameter in ["not_user", "not_package", "not_category", "not_topic"] {
            let pairs = with_window(&[(parameter, injection)]);
            cases.push(case(url(api, "/raw", &pairs), Expect::NothingExcluded));
        }
        // `contains` with a recent window, as datagrepper requires: bound, it matches nothing.
        let pairs = [("contains", *injection), ("topic", "x"), ("delta", "3600")];
        cases.push(case(url(api, "/raw", &pairs), Expect::NothingMatches));
        for parameter in [
            "start",
            "end",
            "delta",
            "page",
            "rows_per_page",
            "order",
            "meta",
            "grouped",
            "size",
            "chrome",
            "callback",
        ] {
            cases.push(case(
                url(api, "/raw", &[(parameter, injection)]),
                Expect::Refused,
            ));
        }
        cases.push(case(url(api, "/id", &[("id", injection)]), Expect::Refused));
        for parameter in ["meta", "size", "chrome", "is_raw", "callback"] {
            let pairs = [("id", "2019-x"), (parameter, *injection)];
            cases.push(case(url(api, "/id", &pairs), Expect::Refused));
        }
    }
    let refused: &[&[(&str, &str)]] = &[
        // Ranges: the whole history, years, inverted, over-specified, out of bounds.
        &[("start", "0"), ("end", "4294967295")],
        &[("start", "1344344053"), ("end", "1400000000")],
        &[("delta", "1e308")],
        &[("delta", "-5")],
        &[("delta", "inf")],
        &[("start", "5"), ("end", "1")],
        &[
            ("start", "1344344053"),
            ("end", "1344350851"),
            ("delta", "5"),
        ],
        &[("end", "1e20")],
        &[("start", "-1e300")],
        // Pages: zero, negative, huge, too deep, not integers.
        &[("page", "0")],
        &[("page", "-1")],
        &[("page", "99999")],
        &[("page", "99999999999999999999999")],
        &[("page", "1e3")],
        &[("rows_per_page", "0")],
        &[("rows_per_page", "-1")],
        &[("rows_per_page", "101")],
        &[("rows_per_page", "100"), ("page", "101")],
        // Dates.
        &[("start", "2012-13-45"), ("delta", "60")],
        &[("end", "yesterday")],
        &[("end", "NaN")],
        &[("start", "")],
        // Enumerations and unsupported options.
        &[("order", "sideways")],
        &[("order", "DESC")],
        &[("meta", "date")],
        &[("meta", "bogus")],
        &[("grouped", "true")],
        &[("grouped", "maybe")],
        &[("size", "huge")],
        &[("chrome", "perhaps")],
        &[("callback", "alert")],
        // datagrepper's rules for contains: a topic or category, a recent start.
        &[("contains", "koji"), ("delta", "60")],
        &[
            ("contains", "koji"),
            ("topic", "x"),
            ("start", "1344344053"),
            ("delta", "60"),
        ],
        // Repetitions of single-valued parameters.
        &[("start", "1344344053"), ("start", "1344344054")],
        &[("page", "1"), ("page", "2")],
        &[("order", "asc"), ("order", "desc")],
    ];
    for pairs in refused {
        cases.push(case(url(api, "/raw", pairs), Expect::Refused));
    }
    cases.push(case(url(api, "/id", &[]), Expect::Refused));
    cases.push(case(
        url(api, "/id", &[("id", "a"), ("id", "b")]),
        Expect::Refused,
    ));
    let long = "t".repeat(10_000);
    cases.push(case(
        url(api, "/raw", &with_window(&[("topic", &long)])),
        Expect::Refused,
    ));
    cases.push(case(url(api, "/id", &[("id", &long)]), Expect::Refused));
    let many_topics: Vec<(&str, &str)> = (0..2_000).map(|_| ("topic", "abcd")).collect();
    cases.push(case(url(api, "/raw", &many_topics), Expect::Refused));
    cases.push(case(format!("{api}/raw?topic=%FF"), Expect::Refused));
    cases.push(case(format!("{api}/raw?user=%ED%A0%80"), Expect::Refused));
    cases.push(case(format!("{api}/id?id=%C0%AF"), Expect::Refused));
    cases
}

/// What must not change, whatever the requests were.
#[derive(Debug)]
struct Fingerprint {
    tables: Vec<String>,
    messages: u64,
    distinct_messages: u64,
    volume: Value,
    window: Value,
}

#[derive(Debug, Row, Deserialize)]
struct Counts {
    rows: u64,
    distinct: u64,
}

async fn fingerprint(stack: &CorpusStack) -> Fingerprint {
    let client = stack.servers.client();
    let tables: Vec<String> = client
        .query("SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name")
        .fetch_all()
        .await
        .expect("tables");
    let counts: Counts = client
        .query("SELECT count() AS rows, uniqExact(msg_id) AS distinct FROM messages")
        .fetch_one()
        .await
        .expect("message counts");
    let volume_url = format!(
        "{}/api/volume-by-category?bucket=all&rows_per_page=100",
        stack.api
    );
    let mut volume = get_json(&volume_url).await.expect("volume by category");
    // `end` defaults to now; everything else must stay the same.
    volume["end"] = Value::Null;
    let window = get_json(&url(
        &stack.api,
        "/raw",
        &with_window(&[("rows_per_page", "100")]),
    ))
    .await
    .expect("history window");
    Fingerprint {
        tables,
        messages: counts.rows,
        distinct_messages: counts.distinct,
        volume,
        window,
    }
}

/// Checks one answer against what its case expects; returns a complaint, if any.
async fn check(http: &reqwest::Client, case: &Case) -> Option<String> {
    let response = match http.get(&case.url).send().await {
        Ok(response) => response,
        Err(error) => return Some(format!("{}: request failed: {error}", case.url)),
    };
    let status = response.status();
    let body: Value = match response.json().await {
        Ok(body) => body,
        Err(error) => {
            return Some(format!(
                "{}: {status} without a JSON body: {error}",
                case.url
            ))
        }
    };
    let answered = match case.expect {
        Expect::Refused => {
            status.is_client_error() && body["error"].is_string() && body["message"].is_string()
        }
        Expect::NothingMatches => {
            let rows = body.get("rows").or_else(|| body.get("raw_messages"));
            status == StatusCode::OK && rows.and_then(Value::as_array).is_some_and(Vec::is_empty)
        }
        Expect::NothingExcluded => {
            status == StatusCode::OK && body["total"].as_u64() == Some(WINDOW_TOTAL)
        }
    };
    if answered {
        return None;
    }
    let shown: String = body.to_string().chars().take(300).collect();
    Some(format!(
        "{} expected {:?}, got {status} {shown}",
        case.url, case.expect
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_get_4xx_json_and_change_nothing() {
    let stack = start_stack().await;
    let before = fingerprint(&stack).await;
    assert_eq!(before.messages, CORPUS_SIZE);
    assert_eq!(before.window["total"], WINDOW_TOTAL);

    let http = reqwest::Client::new();
    let mut cases = statistic_cases(&stack.api);
    cases.extend(history_cases(&stack.api));
    let mut complaints = Vec::new();
    for case in &cases {
        if let Some(complaint) = check(&http, case).await {
            complaints.push(complaint);
        }
    }
    assert!(
        complaints.is_empty(),
        "{} of {} cases failed:\n{}",
        complaints.len(),
        cases.len(),
        complaints.join("\n")
    );

    let after = fingerprint(&stack).await;
    assert_eq!(before.tables, after.tables, "tables changed");
    assert_eq!(before.messages, after.messages);
    assert_eq!(before.distinct_messages, after.distinct_messages);
    assert_eq!(before.volume, after.volume, "a statistic changed");
    assert_eq!(before.window, after.window, "the history changed");
}

async fn status_and_error(url: &str) -> (StatusCode, Value) {
    let response = reqwest::get(url).await.expect("request");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn pid_signal(signal: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_outages_give_503_and_the_api_recovers_by_itself() {
    let mut stack = start_stack().await;
    let api = stack.api.clone();
    let routes = [
        format!("{api}/api/"),
        format!("{api}/api/volume?bucket=all"),
        url(&api, "/raw", &WINDOW),
        url(&api, "/id", &[("id", "2019-x")]),
    ];
    let volume_before = get_json(&routes[1]).await.expect("volume");

    // Paused: nothing answers, so each request ends at api.request-timeout (5 s here).
    pid_signal("-STOP", stack.servers.clickhouse.pid());
    for route in &routes {
        let (status, body) = status_and_error(route).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{route}: {body}");
        assert!(body["error"].is_string(), "{route}: {body}");
    }
    pid_signal("-CONT", stack.servers.clickhouse.pid());
    statscache_tests::wait_until_ok(&routes[1]).await;

    // Down.
    stack.servers.clickhouse.stop();
    for route in &routes {
        let (status, body) = status_and_error(route).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{route}: {body}");
        assert_eq!(body["error"], "unavailable", "{route}: {body}");
    }
    // Readiness follows within a probe period.
    let ready_url = format!("{api}/health/readyz");
    statscache_tests::wait_for(
        "readiness to say ClickHouse is down",
        std::time::Duration::from_secs(60),
        || async {
            let ready = reqwest::get(&ready_url).await.ok()?;
            (ready.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(())
        },
    )
    .await;

    // Back on the same ports: the same api process answers again, with the same data.
    stack.servers.clickhouse.restart().await;
    statscache_tests::wait_until_ok(&format!("{api}/health/readyz")).await;
    for route in &routes[..3] {
        statscache_tests::wait_until_ok(route).await;
    }
    let volume_after = get_json(&routes[1]).await.expect("volume");
    assert_eq!(volume_before["rows"], volume_after["rows"]);
    let (status, _) = status_and_error(&routes[3]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
