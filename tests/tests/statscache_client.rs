//! statscache's own client logic against our API, in a real browser: its `display.html` feed
//! loop and its `examples/simple.html` data handling, re-implemented from their source in
//! `tests/support/statscache-client/client.html` on Debian's jQuery and moment, served from
//! another origin than the api's (CORS, as statscache's dashboards elsewhere), run in headless
//! Chromium over the real corpus. What they render must equal a direct SQL count over our facts.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use statscache_tests::browser::Browser;
use statscache_tests::corpus::real_lines;
use statscache_tests::stack::CorpusStack;
use statscache_tests::{free_port, repo_root, wait_for};

/// Debian's jQuery and moment (libjs-jquery, libjs-moment), as the page loads them.
const SCRIPTS: [(&str, &str); 2] = [
    ("/usr/share/javascript/jquery/jquery.min.js", "jquery.js"),
    ("/usr/share/javascript/moment/moment.min.js", "moment.js"),
];

/// The client page and its scripts, served by Python's `http.server` on a port of their own.
struct ClientSite {
    url: String,
    server: Child,
    _directory: tempfile::TempDir,
}

impl ClientSite {
    async fn start() -> ClientSite {
        let directory = tempfile::tempdir().expect("site directory");
        let page = repo_root().join("tests/support/statscache-client/client.html");
        std::fs::copy(&page, directory.path().join("client.html")).expect("copy the page");
        for (installed, name) in SCRIPTS {
            std::fs::copy(installed, directory.path().join(name))
                .unwrap_or_else(|error| panic!("{installed} (deploy/local/install.sh): {error}"));
        }
        let port = free_port();
        let server = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(directory.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let url = format!("http://127.0.0.1:{port}/client.html");
        wait_for("the client site", Duration::from_secs(30), || {
            let url = url.clone();
            async move {
                reqwest::get(&url)
                    .await
                    .ok()?
                    .status()
                    .is_success()
                    .then_some(())
            }
        })
        .await;
        ClientSite {
            url,
            server,
            _directory: directory,
        }
    }
}

impl Drop for ClientSite {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Runs the page with `options` (its hash) and returns its outcome.
async fn run(browser: &Browser, site: &ClientSite, run: u32, options: &str) -> Value {
    browser
        .goto(&format!("{}?run={run}#{options}", site.url))
        .await;
    wait_for(options, Duration::from_secs(120), || async {
        let outcome = browser.execute("return window.outcome || null;").await;
        (!outcome.is_null()).then_some(outcome)
    })
    .await
}

/// (window end, key, volume) of a plugin's facts in windows of `seconds`, newest first (keys in
/// order within a window): the direct SQL count.
async fn sql_rows(stack: &CorpusStack, table: &str, seconds: u32) -> Vec<(i64, String, u64)> {
    let rows: Vec<(u32, String, u64)> = stack
        .servers
        .client()
        .query(&format!(
            "SELECT toUInt32(intDiv(toUInt32(time), {seconds}) * {seconds} + {seconds}) AS ts,
                    key, uniqExact(msg_id) FROM {table}
             GROUP BY ts, key ORDER BY ts DESC, key ASC"
        ))
        .fetch_all()
        .await
        .expect("SQL over the facts");
    rows.into_iter()
        .map(|(end, key, volume)| (i64::from(end), key, volume))
        .collect()
}

/// A timestamp as the page renders it (`Date.toUTCString`).
fn utc(timestamp: i64) -> String {
    chrono::DateTime::from_timestamp(timestamp, 0)
        .expect("time")
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|item| item.as_str().expect("a string").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn statscache_s_pages_render_what_sql_counts() {
    let stack = CorpusStack::start(&real_lines(), &[]).await;
    let site = ClientSite::start().await;
    let browser = Browser::start(1280, 900).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let stop = now - now % 60;
    // The rows plugin's rollups are recomputed in the batches the stack waited for, by other
    // statements: wait until its count of the 1-second rows is the facts'.
    let expected = sql_rows(&stack, "stat_volume_by_category", 1).await;
    let api = stack.api.clone();
    let total = expected.len().to_string();
    wait_for("every row counted", Duration::from_secs(60), || async {
        let url = format!("{api}/statscache/api/volume-by-category-1s?rows_per_page=1");
        let response = reqwest::get(&url).await.ok()?;
        (response.headers().get("x-link-count")?.to_str().ok()? == total).then_some(())
    })
    .await;

    // display.html's feed, newest first, pages of 100: every row once, in order.
    let options = format!(
        "mode=feed&api={}&ident=volume-by-category-1s&rows_per_page=100&start=0&stop={stop}&order=desc",
        stack.api
    );
    let outcome = run(&browser, &site, 1, &options).await;
    assert_eq!(
        strings(&outcome["columns"]),
        ["timestamp", "category", "volume"]
    );
    let mut rendered = Vec::new();
    for row in outcome["rows"].as_array().expect("rows") {
        rendered.push(strings(row));
    }
    let mut counted = Vec::new();
    for (end, key, volume) in &expected {
        counted.push(vec![utc(*end), key.clone(), volume.to_string()]);
    }
    assert_eq!(rendered, counted);
    // Its loop ended as on statscache: the request after the last page was refused.
    assert_eq!(outcome["ended"], "400 error", "{outcome}");
    let pages = expected.len().div_ceil(100);
    let requests = outcome["requests"].as_array().expect("requests").len();
    assert!(
        requests == pages + 1 || requests == pages + 2,
        "{requests} requests for {pages} pages"
    );

    // The same feed oldest first, on a statistic without a key column.
    let options = format!(
        "mode=feed&api={}&ident=volume-1m&rows_per_page=100&start=0&stop={stop}&order=asc",
        stack.api
    );
    let outcome = run(&browser, &site, 2, &options).await;
    assert_eq!(strings(&outcome["columns"]), ["timestamp", "volume"]);
    let mut rendered = Vec::new();
    for row in outcome["rows"].as_array().expect("rows") {
        rendered.push(strings(row));
    }
    let mut counted = Vec::new();
    for (end, _, volume) in sql_rows(&stack, "stat_volume", 60).await.iter().rev() {
        counted.push(vec![utc(*end), volume.to_string()]);
    }
    assert_eq!(rendered, counted);

    // simple.html: the 10 newest minute rows, a series per category, oldest point first.
    let outcome = run(
        &browser,
        &site,
        3,
        &format!("mode=simple&api={}", stack.api),
    )
    .await;
    let newest = sql_rows(&stack, "stat_volume_by_category", 60).await;
    let newest = &newest[..10];
    let dataset = outcome["dataset"].as_object().expect("dataset");
    let mut categories: Vec<&String> = dataset.keys().collect();
    categories.sort();
    let mut expected_categories: Vec<&String> = newest.iter().map(|(_, key, _)| key).collect();
    expected_categories.sort();
    expected_categories.dedup();
    assert_eq!(categories, expected_categories);
    for (category, points) in dataset {
        let mut served = Vec::new();
        for point in points.as_array().expect("points") {
            assert!(point["name"]
                .as_str()
                .is_some_and(|name| name.ends_with("ago")));
            served.push((
                point["timestamp"].as_f64().expect("timestamp") as i64,
                point["value"].as_u64().expect("value"),
            ));
        }
        let mut counted: Vec<(i64, u64)> = newest
            .iter()
            .filter(|(_, key, _)| key == category)
            .map(|(end, _, volume)| (*end, *volume))
            .collect();
        counted.reverse();
        assert_eq!(served, counted, "{category}");
    }
    let console = browser.console().await;
    let errors: Vec<&Value> = console
        .iter()
        .filter(|entry| {
            entry["level"] == "SEVERE" && !entry["message"].as_str().unwrap_or("").contains("400")
        })
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}
