//! The SQL statscache sends runs alike on Debian's ClickHouse 18.16 and on a current ClickHouse.
//!
//! A real worker stores the real corpus in a ClickHouse 18.16 that logs every query; then every
//! route of the api is asked with representative parameters (every plugin the catalog lists, in
//! every bucket, with key filters, pages, orders and windows; `/raw` with each filter; `/id`;
//! `/api/` and the layouts; every statscache identifier of `/statscache/api/`), so that every
//! query shape the worker and the api send has run.
//! `tests/support/clickhouse_compat.py` then takes those statements from `system.query_log`
//! (never from a list kept here, so new SQL is covered as soon as it is sent) and replays them in
//! chdb-core, the current engine embedded in Python: the schema from the captured DDL, the same
//! rows through the captured INSERTs, and every read compared with 18.16's answer. See that
//! script for the rules; its report is printed, and any statement that fails on the current
//! engine or answers differently fails this test.

use reqwest::{StatusCode, Url};
use serde_json::Value;
use statscache_shared::schema::CLIENT_PRODUCT;
use statscache_tests::corpus::real_lines;
use statscache_tests::stack::CorpusStack;
use statscache_tests::{repo_root, wait_for_consumer_drained, Servers};

/// August 2012, 72 messages of the corpus.
const WINDOW: [(&str, &str); 2] = [("start", "1344344053"), ("end", "1346000000")];

/// Plugins of a kind the built-ins lack (a distinct count), and a latest value holding JSON.
const DECLARATIVE_PLUGINS: &str = r#"
[[worker.plugins]]
name = "People per category"
description = "Distinct people named by the messages of each category"
kind = "distinct-count"
key = "category"
value = "usernames"

[[worker.plugins]]
name = "Last body per category"
description = "The newest message body of each category, as JSON"
kind = "latest"
key = "category"
value = "msg"
"#;

/// GETs `path` with the query `pairs` from the api; it must answer `expected`. Returns the JSON
/// body, if any.
async fn get(api: &str, path: &str, pairs: &[(&str, &str)], expected: StatusCode) -> Value {
    let url = Url::parse_with_params(&format!("{api}{path}"), pairs).expect("url");
    let response = reqwest::get(url.clone())
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"));
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(status, expected, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// Text values of `field` in `items`.
fn texts(items: &Value, field: &str) -> Vec<String> {
    let mut values = Vec::new();
    for item in items.as_array().into_iter().flatten() {
        if let Some(text) = item[field].as_str() {
            values.push(text.to_string());
        }
    }
    values
}

/// The keys a layout lists.
fn layout_keys(layout: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    for group in layout["groups"].as_array().into_iter().flatten() {
        keys.extend(texts(&group["components"], "id"));
    }
    keys
}

/// Every statistic route: the catalog, then each plugin's layout and statistic in each bucket,
/// filtered by keys, paged, ordered, windowed, and under its statscache interval name.
async fn ask_every_statistic(api: &str) {
    for format in ["json", "csv", "ndjson"] {
        get(api, "/api/", &[("format", format)], StatusCode::OK).await;
    }
    let plugins = get(api, "/api/", &[], StatusCode::OK).await;
    let plugins = plugins.as_array().expect("the plugin list").clone();
    assert!(plugins.len() > 6, "built-ins and declarative plugins");
    for plugin in plugins {
        let identifier = plugin["identifier"].as_str().expect("identifier");
        let path = format!("/api/{identifier}");
        let layout = get(api, &format!("{path}/layout"), &[], StatusCode::OK).await;
        let keys = layout_keys(&layout);
        for bucket in plugin["buckets"].as_array().into_iter().flatten() {
            let bucket = bucket.as_str().expect("bucket name");
            get(api, &path, &[("bucket", bucket)], StatusCode::OK).await;
        }
        let paged = [
            ("bucket", "day"),
            ("order", "asc"),
            ("rows_per_page", "3"),
            ("page", "2"),
        ];
        get(api, &path, &paged, StatusCode::OK).await;
        let windowed = [WINDOW[0], WINDOW[1], ("bucket", "week")];
        get(api, &path, &windowed, StatusCode::OK).await;
        let legacy_name = format!("{path}-daily");
        get(api, &legacy_name, &[("format", "csv")], StatusCode::OK).await;
        if let [first, second, ..] = keys.as_slice() {
            let by_keys = [("bucket", "all"), ("key", first), ("key", second)];
            get(api, &path, &by_keys, StatusCode::OK).await;
            let narrowed = [
                WINDOW[0],
                WINDOW[1],
                ("bucket", "month"),
                ("key", first),
                ("format", "ndjson"),
            ];
            get(api, &path, &narrowed, StatusCode::OK).await;
        }
    }
}

/// statscache's API: every identifier's first page both ways and a window, a deep page of small
/// ones (its spans cut from years to hours), and the layout.
async fn ask_every_statscache_identifier(api: &str) {
    let identifiers = get(api, "/statscache/api/", &[], StatusCode::OK).await;
    for ident in identifiers.as_array().expect("identifiers") {
        let path = format!("/statscache/api/{}", ident.as_str().expect("identifier"));
        get(api, &path, &[], StatusCode::OK).await;
        let oldest = [("order", "asc"), ("rows_per_page", "3")];
        get(api, &path, &oldest, StatusCode::OK).await;
        let windowed = [WINDOW[0], ("stop", WINDOW[1].1), ("limit", "4")];
        get(api, &path, &windowed, StatusCode::OK).await;
    }
    let deep = [("rows_per_page", "2"), ("page", "60")];
    get(api, "/statscache/api/volume-1s", &deep, StatusCode::OK).await;
    let layout = "/statscache/api/release-engineering-event-logs/layout";
    get(api, layout, &[], StatusCode::OK).await;
}

/// The first value of `field` (a list of texts) among `messages`' meta.
fn first_meta(messages: &Value, field: &str) -> String {
    for message in messages.as_array().into_iter().flatten() {
        if let Some(first) = message["meta"][field].as_array().and_then(|v| v.first()) {
            return first.as_str().unwrap_or_default().to_string();
        }
    }
    panic!("no message of the window names any {field}");
}

/// `/raw` with each filter alone, with several, paged and in both orders; `/id` found and not.
async fn ask_every_history_query(api: &str) {
    let described = [
        WINDOW[0],
        WINDOW[1],
        ("rows_per_page", "100"),
        ("meta", "usernames"),
        ("meta", "packages"),
    ];
    let page = get(api, "/raw", &described, StatusCode::OK).await;
    let messages = &page["raw_messages"];
    let user = first_meta(messages, "usernames");
    let package = first_meta(messages, "packages");
    let topic = texts(messages, "topic")
        .into_iter()
        .next()
        .expect("a message in the window");
    let category = topic.split('.').nth(3).unwrap_or_default().to_string();
    let filters = [
        ("user", &user),
        ("package", &package),
        ("category", &category),
        ("topic", &topic),
        ("not_user", &user),
        ("not_package", &package),
        ("not_category", &category),
        ("not_topic", &topic),
    ];
    for (name, value) in filters {
        let filtered = [WINDOW[0], WINDOW[1], (name, value.as_str())];
        get(api, "/raw", &filtered, StatusCode::OK).await;
    }
    let combined = [
        WINDOW[0],
        WINDOW[1],
        ("user", user.as_str()),
        ("user", "nobody"),
        ("not_topic", topic.as_str()),
    ];
    get(api, "/raw", &combined, StatusCode::OK).await;
    let paged = [
        WINDOW[0],
        WINDOW[1],
        ("order", "asc"),
        ("rows_per_page", "5"),
        ("page", "2"),
    ];
    get(api, "/raw", &paged, StatusCode::OK).await;
    get(api, "/raw", &[], StatusCode::OK).await;
    // `contains` needs a recent window: the last hour (the default) holds no corpus message.
    let contains = [("contains", "bodhi"), ("category", category.as_str())];
    get(api, "/raw", &contains, StatusCode::OK).await;
    // Wildcards and escaped ones: ClickHouse's `like` escapes (`\%`, `\_`, `\\`).
    let wildcards = [
        ("contains", r#""agent":"%_\%\_\\"#),
        ("category", category.as_str()),
    ];
    get(api, "/raw", &wildcards, StatusCode::OK).await;

    let msg_id = texts(messages, "msg_id")
        .into_iter()
        .next()
        .expect("a message id");
    let found = [("id", msg_id.as_str()), ("meta", "usernames")];
    get(api, "/id", &found, StatusCode::OK).await;
    let missing = [("id", "no-such-message")];
    get(api, "/id", &missing, StatusCode::NOT_FOUND).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_statement_the_services_send_runs_alike_on_clickhouse_18_16_and_current() {
    let config = tempfile::NamedTempFile::new().expect("config file");
    std::fs::write(config.path(), DECLARATIVE_PLUGINS).expect("write config");
    let config_path = config.path().to_string_lossy().into_owned();
    let servers = Servers::start_logging_queries().await;
    let settings = [("STATSCACHE_CONFIG", config_path)];
    let stack = CorpusStack::start_on(servers, &real_lines(), &settings).await;
    // Every table of the last batch is written before its messages are acked.
    wait_for_consumer_drained(&stack.servers.nats.url).await;

    ask_every_statistic(&stack.api).await;
    ask_every_statscache_identifier(&stack.api).await;
    ask_every_history_query(&stack.api).await;
    get(&stack.api, "/health/readyz", &[], StatusCode::OK).await;

    let output = tokio::process::Command::new("python3")
        .arg(repo_root().join("tests/support/clickhouse_compat.py"))
        .args(["--url", &stack.servers.clickhouse.url])
        .args(["--database", &stack.servers.database])
        .args(["--product", CLIENT_PRODUCT])
        .output()
        .await
        .expect("run tests/support/clickhouse_compat.py");
    let report = String::from_utf8_lossy(&output.stdout);
    println!("{report}");
    assert!(
        output.status.success(),
        "statements that do not run alike on ClickHouse 18.16 and the current release:\n{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
