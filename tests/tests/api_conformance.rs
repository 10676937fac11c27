//! The API keeps its contract with clients that read its OpenAPI document, and survives many
//! clients at once, against real servers on the real corpus:
//!
//! - schemathesis (PyPI, pinned in `deploy/local/install.sh`) generates requests from
//!   `/openapi.json`, valid and invalid, and checks every answer against the document
//!   (`--checks all`: status codes, headers, content types, response schemas, that valid input
//!   is accepted and invalid input refused, `Allow` on 405…): no failure. The few exclusions,
//!   each with its reason, are in `tests/support/schemathesis.toml`.
//! - 200 concurrent `/raw` clients: the api queues them behind its ClickHouse concurrency limit
//!   (`api.max-concurrent-requests`) and every one is answered 200, none 5xx.
//! - Slow senders (a byte of request head per second) are cut off once `api.header-read-timeout`
//!   has passed, while normal requests keep being served meanwhile.

use std::time::Duration;

use reqwest::StatusCode;
use statscache_tests::corpus::real_lines;
use statscache_tests::stack::CorpusStack;
use statscache_tests::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generated cases per operation: enough to reach every parameter in both modes, and a run of
/// a couple of minutes on two cores.
const SCHEMATHESIS_EXAMPLES: &str = "100";

/// How long the whole schemathesis run may take before the test gives up on it.
const SCHEMATHESIS_DEADLINE: Duration = Duration::from_secs(900);

/// A `/raw` request every concurrent client sends: August 2012, 72 messages of the corpus.
const RAW_WINDOW: &str = "/raw?start=1344344053&end=1346000000&rows_per_page=100";

/// Operations whose rules OpenAPI 3.0 cannot state fully (see `tests/support/schemathesis.toml`):
/// every check but positive_data_acceptance runs on them.
const PARTLY_DESCRIBED: &str = r"^/(raw|id|api/\{plugin\})$";

/// Runs schemathesis on the operations matching `paths` with `--checks all` less `excluded`;
/// returns whether it found nothing.
async fn schemathesis(spec: &str, paths: &str, excluded: &[&str]) -> bool {
    let settings = statscache_tests::repo_root().join("tests/support/schemathesis.toml");
    let report_dir = tempfile::tempdir().expect("report dir");
    let mut command = tokio::process::Command::new("schemathesis");
    command
        .arg("--config-file")
        .arg(&settings)
        .arg("run")
        .arg(spec)
        .args(["--include-path-regex", paths])
        .args(["--checks", "all"])
        .args(["--max-examples", SCHEMATHESIS_EXAMPLES])
        .args(["--seed", "1"])
        .args(["--workers", "2"])
        .args(["--generation-database", "none"])
        .args(["--request-timeout", "60"])
        .arg("--no-color")
        .arg("--report-dir")
        .arg(report_dir.path())
        // schemathesis keeps a cache in its working directory: not in the repository.
        .current_dir(report_dir.path())
        .kill_on_drop(true);
    for check in excluded {
        command.args(["--exclude-checks", check]);
    }
    let run = tokio::time::timeout(SCHEMATHESIS_DEADLINE, command.output())
        .await
        .expect("schemathesis finishes within its deadline")
        .expect("run schemathesis (installed by deploy/local/install.sh)");
    println!("{}", String::from_utf8_lossy(&run.stdout));
    eprintln!("{}", String::from_utf8_lossy(&run.stderr));
    run.status.success()
}

#[tokio::test]
async fn schemathesis_finds_nothing_against_the_openapi_document() {
    statscache_tests::ensure_installed();
    let stack = CorpusStack::start(&real_lines(), &[]).await;
    let spec = format!("{}/openapi.json", stack.api);
    let fully_described = r"^/api(/\{plugin\}/layout)?$";
    let described_ok = schemathesis(&spec, fully_described, &[]).await;
    let partly_ok = schemathesis(&spec, PARTLY_DESCRIBED, &["positive_data_acceptance"]).await;
    assert!(
        described_ok,
        "schemathesis found failures on {fully_described}"
    );
    assert!(
        partly_ok,
        "schemathesis found failures on {PARTLY_DESCRIBED}"
    );
}

#[tokio::test]
async fn two_hundred_concurrent_raw_clients_are_all_served() {
    statscache_tests::ensure_installed();
    // A generous queue wait: the point is that overload waits for a turn instead of failing,
    // whatever the speed of the machine running the test.
    let settings = [("STATSCACHE_API__QUEUE_TIMEOUT", "120s".to_string())];
    let stack = CorpusStack::start(&real_lines(), &settings).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(300))
        .build()
        .expect("http client");
    let url = format!("{}{RAW_WINDOW}", stack.api);
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let http = http.clone();
        let url = url.clone();
        clients.spawn(async move {
            let response = http.get(&url).send().await.map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response.text().await.map_err(|e| e.to_string())?;
            Ok::<(StatusCode, String), String>((status, body))
        });
    }
    let mut answered = 0;
    let mut failures = Vec::new();
    while let Some(joined) = clients.join_next().await {
        match joined.expect("client task") {
            Ok((StatusCode::OK, body)) => {
                let page: serde_json::Value = serde_json::from_str(&body).expect("JSON page");
                assert_eq!(page["total"], 72, "{body}");
                answered += 1;
            }
            Ok((status, body)) => failures.push(format!("{status}: {body}")),
            Err(error) => failures.push(error),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert_eq!(answered, 200);
}

/// Opens a connection and sends the head of a request one byte per second; returns once the
/// server closed the connection, or after `max_bytes` bytes were sent.
async fn slow_sender(address: String, max_bytes: usize) -> Result<usize, String> {
    let head = b"GET /raw HTTP/1.1\r\nHost: statscache\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut stream = TcpStream::connect(&address)
        .await
        .map_err(|e| e.to_string())?;
    for (sent, byte) in head.iter().cycle().take(max_bytes).enumerate() {
        if stream.write_all(&[*byte]).await.is_err() {
            return Ok(sent);
        }
        let mut buffer = [0u8; 1024];
        // Waits a second for the server to close (or answer) before the next byte.
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(sent + 1),
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    Err(format!("still open after {max_bytes} bytes"))
}

#[tokio::test]
async fn slow_senders_are_cut_off_while_others_are_served() {
    statscache_tests::ensure_installed();
    let settings = [("STATSCACHE_API__HEADER_READ_TIMEOUT", "3s".to_string())];
    let stack = CorpusStack::start(&real_lines(), &settings).await;
    let address = stack.api.trim_start_matches("http://").to_string();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..50 {
        // Far more bytes than a 3 s header timeout lets through at one per second.
        senders.spawn(slow_sender(address.clone(), 120));
    }
    // While the slow senders hold their connections, normal requests are served.
    let url = format!("{}{RAW_WINDOW}", stack.api);
    for _ in 0..5 {
        let response = reqwest::get(&url).await.expect("normal request");
        assert_eq!(response.status(), StatusCode::OK);
    }
    let mut cut_off = 0;
    while let Some(joined) = senders.join_next().await {
        let sent = joined
            .expect("sender task")
            .expect("the server cut the sender off");
        assert!(sent < 120);
        cut_off += 1;
    }
    assert_eq!(cut_off, 50);
    // And the server still serves afterwards.
    wait_for(
        "the api to answer after the slow senders",
        Duration::from_secs(60),
        || {
            let url = url.clone();
            async move {
                let response = reqwest::get(&url).await.ok()?;
                (response.status() == StatusCode::OK).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn negotiation_aliases_and_methods_follow_http() {
    statscache_tests::ensure_installed();
    let stack = CorpusStack::start(&real_lines(), &[]).await;
    let http = reqwest::Client::new();
    let api = &stack.api;
    let content_type = |response: &reqwest::Response| {
        let value = response.headers().get("content-type");
        value
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };

    // q-values: CSV is acceptable but less preferred than anything else, so JSON.
    let plugins = format!("{api}/api/");
    for (accept, expected) in [
        ("text/csv;q=0.5, */*", "application/json"),
        ("text/csv", "text/csv"),
        (
            "application/json;q=0.2, application/x-ndjson",
            "application/x-ndjson",
        ),
    ] {
        let response = http.get(&plugins).header("accept", accept).send().await;
        let response = response.expect("GET /api/");
        assert_eq!(response.status(), StatusCode::OK, "{accept}");
        assert!(content_type(&response).starts_with(expected), "{accept}");
    }

    // Two names of one parameter: refused, naming both.
    for (plugin, query) in [
        ("volume", "end=1400000000&stop=1400000000"),
        ("volume", "rows_per_page=5&limit=5"),
        ("volume-daily", "bucket=hour"),
    ] {
        let response = http.get(format!("{api}/api/{plugin}?{query}")).send().await;
        let response = response.expect("GET with aliases");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let body: serde_json::Value = response.json().await.expect("JSON error");
        let message = body["message"].as_str().unwrap_or("");
        for (name, _) in query.split('&').filter_map(|pair| pair.split_once('=')) {
            assert!(message.contains(name), "{query}: {body}");
        }
    }
    let agreeing = http
        .get(format!("{api}/api/volume-daily?bucket=daily"))
        .send()
        .await;
    assert_eq!(agreeing.expect("GET").status(), StatusCode::OK);

    // Another method: 405 saying what is allowed, and what it says is true.
    let raw = format!("{api}{RAW_WINDOW}");
    let response = http.delete(&raw).send().await.expect("DELETE /raw");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = response.headers().get("allow").cloned();
    assert_eq!(
        allow.as_ref().and_then(|v| v.to_str().ok()),
        Some("GET, HEAD")
    );
    let head = http.head(&raw).send().await.expect("HEAD /raw");
    assert_eq!(head.status(), StatusCode::OK);

    // An empty callback is no JSONP, as datagrepper reads it.
    let response = http.get(format!("{raw}&callback=")).send().await;
    assert_eq!(response.expect("GET /raw").status(), StatusCode::OK);
}
