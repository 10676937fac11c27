//! The dashboard at `/`, driven in headless Chromium (Debian's `chromium` and `chromium-driver`,
//! over WebDriver) against real servers holding the real corpus:
//!
//! - the page loads with no console error;
//! - the volume chart's bars and its data table, the top users/packages/topics and the releng
//!   table hold exactly what the API answers for the same parameters;
//! - the plugin browser's table is the API's page and its SVG chart loads;
//! - keyboard only: Tab to a bar and Enter zooms into its period, "Zoom out" comes back;
//! - a message published after the page loaded appears without a reload (the page polls with
//!   `If-None-Match`);
//! - a screenshot is written to `target/test-artifacts/dashboard.png`;
//! - over plain HTTP: the page revalidates (`ETag`, 304), its assets are immutable under a
//!   versioned path, and methods other than GET/HEAD are refused.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use reqwest::StatusCode;
use serde_json::Value;
use statscache_tests::browser::Browser;
use statscache_tests::corpus::{publish_to_stream, real_lines};
use statscache_tests::stack::CorpusStack;
use statscache_tests::{get_json, repo_root, wait_for};

/// WebDriver's Enter key.
const ENTER: &str = "\u{E007}";

/// Every row of a statistic, through its pages (the corpus needs a few at most).
async fn api_rows(api: &str, plugin: &str, query: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    for page in 1..=50 {
        let url = format!("{api}/api/{plugin}?{query}&rows_per_page=100&page={page}");
        let answer = get_json(&url).await.unwrap_or_else(|| panic!("GET {url}"));
        rows.extend(answer["rows"].as_array().cloned().unwrap_or_default());
        if answer["pages"].as_u64().unwrap_or(0) <= page {
            return rows;
        }
    }
    panic!("{plugin} has more than 50 pages")
}

/// (bucket, key) → count of rows.
fn counts(rows: &[Value]) -> BTreeMap<(u64, String), u64> {
    let mut counts = BTreeMap::new();
    for row in rows {
        let bucket = row["bucket"].as_u64().unwrap_or(0);
        let key = row["key"].as_str().unwrap_or_default().to_string();
        counts.insert((bucket, key), row["count"].as_u64().unwrap_or(0));
    }
    counts
}

/// The same from the page: `[bucket, key, count]` triples returned by a script.
fn page_counts(triples: &Value) -> BTreeMap<(u64, String), u64> {
    let mut counts = BTreeMap::new();
    for triple in triples.as_array().expect("an array from the page") {
        let bucket = triple[0].as_str().and_then(|b| b.parse().ok()).unwrap_or(0);
        let key = triple[1].as_str().unwrap_or_default().to_string();
        let count = triple[2].as_str().and_then(|c| c.parse().ok()).unwrap_or(0);
        counts.insert((bucket, key), count);
    }
    counts
}

/// Waits until the page finished `renders` renders and returns the volume section's query.
async fn rendered(browser: &Browser, renders: u64) -> String {
    let script = "return [document.body.dataset.renders || '0', \
                  document.getElementById('volume').dataset.query || ''];";
    let what = format!("the dashboard to finish render {renders}");
    wait_for(&what, Duration::from_secs(120), || async {
        let state = browser.execute(script).await;
        let done: u64 = state[0].as_str()?.parse().ok()?;
        (done >= renders).then(|| state[1].as_str().unwrap_or_default().to_string())
    })
    .await
}

async fn renders(browser: &Browser) -> u64 {
    let value = browser
        .execute("return document.body.dataset.renders || '0';")
        .await;
    value.as_str().and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Fails on any console error (`SEVERE`) since the last call.
async fn assert_no_console_errors(browser: &Browser) {
    let entries = browser.console().await;
    let errors: Vec<&Value> = entries
        .iter()
        .filter(|entry| entry["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

/// The volume chart's bars and table against the API for the page's own query.
async fn assert_volume_matches(browser: &Browser, api: &str, query: &str) {
    let expected = counts(&api_rows(api, "volume-by-category", query).await);
    let bars = browser
        .execute(
            "return [...document.querySelectorAll('#volume-chart rect[data-key]')]\
             .map(r => [r.parentNode.dataset.bucket, r.dataset.key, r.dataset.count]);",
        )
        .await;
    assert_eq!(page_counts(&bars), expected, "volume chart for {query}");
    let table = browser
        .execute(
            "return [...document.querySelectorAll('#volume-table tbody tr')]\
             .map(tr => [tr.dataset.bucket, tr.dataset.key, tr.dataset.count]);",
        )
        .await;
    assert_eq!(page_counts(&table), expected, "volume table for {query}");
    let total: u64 = expected.values().sum();
    let shown = browser
        .execute("return document.getElementById('volume-summary').dataset.total;")
        .await;
    assert_eq!(shown.as_str(), Some(total.to_string().as_str()));
}

/// A top table against the API: the 10 largest keys over the range, largest first.
async fn assert_top_matches(browser: &Browser, api: &str, plugin: &str, table: &str) {
    let mut rows = api_rows(api, plugin, "bucket=all").await;
    rows.sort_by(|a, b| {
        let count = |row: &Value| row["count"].as_u64().unwrap_or(0);
        let key = |row: &Value| row["key"].as_str().unwrap_or_default().to_string();
        count(b).cmp(&count(a)).then(key(a).cmp(&key(b)))
    });
    let mut expected = Vec::new();
    for row in rows.iter().take(10) {
        let key = row["key"].as_str().unwrap_or_default();
        expected.push(format!("{key}={}", row["count"]));
    }
    let script = format!(
        "return [...document.querySelectorAll('#{table} tbody tr[data-key]')]\
         .map(tr => tr.dataset.key + '=' + tr.dataset.count);"
    );
    let shown: Vec<String> = serde_json::from_value(browser.execute(&script).await).expect("rows");
    assert_eq!(shown, expected, "{table}");
    assert!(!shown.is_empty(), "{table} lists the corpus");
}

/// The releng table against the API: every component, newest first, with status and message.
async fn releng_expected(api: &str) -> Vec<String> {
    let mut rows = api_rows(api, "releng-dashboard", "bucket=all").await;
    rows.sort_by(|a, b| {
        let time = |row: &Value| row["timestamp"].as_f64().unwrap_or(0.0);
        let key = |row: &Value| row["key"].as_str().unwrap_or_default().to_string();
        time(b).total_cmp(&time(a)).then(key(a).cmp(&key(b)))
    });
    let mut expected = Vec::new();
    for row in rows {
        expected.push(format!(
            "{}|{}|{}",
            row["key"].as_str().unwrap_or_default(),
            row["value"]["status"].as_str().unwrap_or_default(),
            row["msg_id"].as_str().unwrap_or_default()
        ));
    }
    expected
}

async fn releng_shown(browser: &Browser) -> Vec<String> {
    let script = "return [...document.querySelectorAll('#releng-table tbody tr[data-key]')]\
                  .map(tr => [tr.dataset.key, tr.dataset.status, tr.dataset.msgId].join('|'));";
    serde_json::from_value(browser.execute(script).await).expect("releng rows")
}

/// A compose event of the corpus as a new message, sent now.
fn new_compose_message() -> (String, String) {
    for line in real_lines() {
        let mut envelope: Value = serde_json::from_str(&line).expect("corpus line");
        let topic = envelope["topic"].as_str().unwrap_or_default();
        if !topic.contains(".compose.") {
            continue;
        }
        let msg_id = "2026-dashboard-live-test-message".to_string();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        envelope["msg_id"] = Value::String(msg_id.clone());
        envelope["timestamp"] = Value::from(now);
        return (envelope.to_string(), msg_id);
    }
    panic!("the corpus has no compose event")
}

/// The page's and assets' cache headers, over plain HTTP.
async fn assert_cache_headers(api: &str) {
    let client = reqwest::Client::new();
    let page = client.get(format!("{api}/")).send().await.expect("GET /");
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()[CACHE_CONTROL], "no-cache");
    assert!(page.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/html"));
    let tag = page.headers()[ETAG].clone();
    let html = page.text().await.expect("page");
    let again = client
        .get(format!("{api}/"))
        .header(IF_NONE_MATCH, tag)
        .send()
        .await
        .expect("GET / again");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    let Some((_, rest)) = html.split_once("src=\"/assets/") else {
        panic!("the page names its script: {html}");
    };
    let Some((script_path, _)) = rest.split_once('"') else {
        panic!("a quoted script path: {rest}");
    };
    let script = client
        .get(format!("{api}/assets/{script_path}"))
        .send()
        .await
        .expect("GET script");
    assert_eq!(script.status(), StatusCode::OK);
    assert_eq!(
        script.headers()[CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert!(script.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/javascript"));
    let missing = client
        .get(format!("{api}/assets/0/nothing.js"))
        .send()
        .await
        .expect("GET missing asset");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let post = client.post(format!("{api}/")).send().await.expect("POST /");
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn the_dashboard_shows_what_the_api_serves() {
    let lines = real_lines();
    let stack = CorpusStack::start(&lines, &[]).await;
    let api = stack.api.clone();
    assert_cache_headers(&api).await;
    let browser = Browser::start(1280, 2400).await;
    browser.goto(&format!("{api}/")).await;
    let query = rendered(&browser, 1).await;
    assert_no_console_errors(&browser).await;

    // The default view: all time by month.
    assert!(query.contains("bucket=month"), "{query}");
    assert_volume_matches(&browser, &api, &query).await;
    let shown = browser
        .execute("return document.getElementById('volume-summary').dataset.total;")
        .await;
    assert_eq!(shown.as_str(), Some(lines.len().to_string().as_str()));
    assert_top_matches(&browser, &api, "volume-by-user", "top-users").await;
    assert_top_matches(&browser, &api, "volume-by-package", "top-packages").await;
    assert_top_matches(&browser, &api, "volume-by-topic", "top-topics").await;
    let expected = releng_expected(&api).await;
    assert!(!expected.is_empty(), "the corpus has releng events");
    assert_eq!(releng_shown(&browser).await, expected);

    // The plugin browser: its table is the API's page, its chart the API's SVG, loaded.
    let links: Vec<String> = serde_json::from_value(
        browser
            .execute("return [...document.querySelectorAll('#plugin-links a')].map(a => a.href);")
            .await,
    )
    .expect("links");
    let json_link = links
        .iter()
        .find(|link| link.contains("format=json"))
        .expect("a JSON link");
    assert!(links.iter().any(|link| link.contains("format=csv")));
    let answer = get_json(json_link).await.expect("the plugin's JSON");
    let mut expected_keys = Vec::new();
    for row in answer["rows"].as_array().expect("rows") {
        expected_keys.push(row["key"].as_str().unwrap_or_default().to_string());
    }
    let shown_keys: Vec<String> = serde_json::from_value(
        browser
            .execute(
                "return [...document.querySelectorAll('#plugin-table tbody tr')]\
                 .map(tr => tr.dataset.key);",
            )
            .await,
    )
    .expect("plugin rows");
    assert_eq!(shown_keys, expected_keys);
    wait_for(
        "the plugin's SVG chart to load",
        Duration::from_secs(60),
        || async {
            let loaded = browser
                .execute(
                    "const img = document.getElementById('plugin-chart'); \
                 return img.complete && img.naturalWidth > 0;",
                )
                .await;
            (loaded == true).then_some(())
        },
    )
    .await;

    let screenshot = browser.screenshot().await;
    let artifacts = repo_root().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    std::fs::write(artifacts.join("dashboard.png"), &screenshot).expect("write screenshot");
    assert!(screenshot.starts_with(b"\x89PNG"), "a PNG screenshot");

    // Another plugin in the browser: its table follows, and its chart is kept as an artefact.
    browser
        .execute(
            "const select = document.getElementById('plugin-select'); \
             select.value = 'volume-by-category'; \
             select.dispatchEvent(new Event('change'));",
        )
        .await;
    let answer = get_json(&format!(
        "{api}/api/volume-by-category?bucket=month&rows_per_page=100"
    ))
    .await
    .expect("volume-by-category by month");
    let expected = counts(answer["rows"].as_array().expect("rows"));
    wait_for("the plugin browser to show volume-by-category", Duration::from_secs(60), || async {
        let rows = browser
            .execute(
                "const img = document.getElementById('plugin-chart'); \
                 if (!img.complete || img.naturalWidth === 0 || !img.src.includes('volume-by-category')) return []; \
                 return [...document.querySelectorAll('#plugin-table tbody tr')]\
                 .map(tr => [tr.cells[0].dataset.bucket, tr.dataset.key, tr.dataset.count]);",
            )
            .await;
        (page_counts(&rows) == expected).then_some(())
    })
    .await;
    browser
        .execute("document.getElementById('plugins').scrollIntoView();")
        .await;
    let screenshot = browser.screenshot().await;
    std::fs::write(artifacts.join("dashboard-plugins.png"), &screenshot).expect("write screenshot");

    // Keyboard only: focus the first bar (as Tab would), Enter zooms into its month by day.
    let before = renders(&browser).await;
    browser
        .execute("document.querySelector('#volume-chart .bar').focus();")
        .await;
    browser.keys(ENTER).await;
    let zoomed = rendered(&browser, before + 1).await;
    assert!(
        zoomed.contains("bucket=day") && zoomed.contains("start="),
        "{zoomed}"
    );
    assert_volume_matches(&browser, &api, &zoomed).await;
    let before = renders(&browser).await;
    browser
        .execute("document.getElementById('zoom-out').focus();")
        .await;
    browser.keys(ENTER).await;
    let back = rendered(&browser, before + 1).await;
    assert_eq!(back, query, "zoom out returns to the previous range");

    // Live: a message published now appears without reloading the page.
    browser.execute("window.notReloaded = true;").await;
    let (line, msg_id) = new_compose_message();
    publish_to_stream(&stack.servers.nats.url, &[line], true).await;
    let total = (lines.len() + 1).to_string();
    wait_for(
        "the new message to appear on the page",
        Duration::from_secs(120),
        || async {
            let shown = browser
                .execute("return document.getElementById('volume-summary').dataset.total;")
                .await;
            let releng = releng_shown(&browser).await;
            let listed = releng
                .iter()
                .any(|row| row.ends_with(&format!("|{msg_id}")));
            (shown.as_str() == Some(total.as_str()) && listed).then_some(())
        },
    )
    .await;
    let still = browser.execute("return window.notReloaded === true;").await;
    assert_eq!(still, true, "the page was not reloaded");
    let query = rendered(&browser, 1).await;
    assert_volume_matches(&browser, &api, &query).await;
    assert_eq!(releng_shown(&browser).await, releng_expected(&api).await);
    assert_no_console_errors(&browser).await;
}
