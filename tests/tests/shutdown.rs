//! SIGTERM stops every role within `[service] shutdown-timeout`, whatever it is stuck on (the
//! worker's case is in `worker.rs`). The tests wait for the exit with a generous deadline and
//! assert that it happened, not how fast; a stuck ingestor's log says what it abandoned.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use statscache_tests::{
    admin_metrics, fixture, free_port, ingestor_env, metric, publish_corpus, send_signal, wait_for,
    wait_until_ok, NatsServer, Servers, Service,
};
use tokio::io::AsyncWriteExt;

/// Small, so that a stuck shutdown is cut short soon; the tests do not time it.
const SHUTDOWN_TIMEOUT: (&str, &str) = ("STATSCACHE_SERVICE__SHUTDOWN_TIMEOUT", "3s");

/// Far longer than any bound the process may take to exit.
const EXIT_DEADLINE: Duration = Duration::from_secs(120);

/// The shutdown timeout setting plus `extra`, as `STATSCACHE_*` variables.
fn bounded(extra: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env = vec![(
        SHUTDOWN_TIMEOUT.0.to_string(),
        SHUTDOWN_TIMEOUT.1.to_string(),
    )];
    for (key, value) in extra {
        env.push((key.to_string(), value.clone()));
    }
    env
}

fn read_log(log: &tempfile::NamedTempFile) -> String {
    std::fs::read_to_string(log.path()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_an_ingestor_stuck_on_a_frozen_nats_and_its_log_says_what_it_abandons() {
    let nats = NatsServer::start().await;
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let admin = free_port();
    let mut env = ingestor_env(&nats, std::slice::from_ref(&endpoint), admin);
    env.extend(bounded(&[]));
    let log = tempfile::NamedTempFile::new().expect("log file");
    let ingestor = Service::start_logging_to("ingestor", &env, &[], log.path());
    wait_until_ok(&format!("http://127.0.0.1:{admin}/health/readyz")).await;

    // Frozen, as a hung machine: the connection stays open, no publish is ever acked.
    send_signal(nats.pid(), "STOP");
    publish_corpus(&endpoint, &[fixture("fedmsg-real.jsonl")], 1, &[]).await;
    wait_for(
        "the ingestor to hold publishes it cannot get acked",
        Duration::from_secs(60),
        || async {
            let text = admin_metrics(admin).await;
            (metric(&text, "statscache_ingestor_in_flight") > 0.0).then_some(())
        },
    )
    .await;

    let exited = ingestor.terminate_within(EXIT_DEADLINE).await;
    send_signal(nats.pid(), "CONT");
    let status = exited.expect("the ingestor did not exit after SIGTERM");
    let log = read_log(&log);
    assert_eq!(
        status.code(),
        Some(statscache_shared::shutdown::EXIT_SHUTDOWN_TIMED_OUT),
        "the shutdown bound cut it short: {log}"
    );
    assert!(
        log.contains("publishes awaiting JetStream's ack"),
        "the log says what was abandoned: {log}"
    );
}

/// Accepts connections and never answers them; counts them.
async fn silent_server() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = listener.accept().await {
            held.push(connection);
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    (url, accepted)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_an_ingestor_waiting_on_a_datagrepper_that_never_answers() {
    let nats = NatsServer::start().await;
    let (datagrepper, accepted) = silent_server().await;
    let admin = free_port();
    let mut env = ingestor_env(&nats, &[], admin);
    env.extend(bounded(&[
        ("STATSCACHE_INGESTOR__DATAGREPPER__URL", datagrepper),
        // Longer than the test: only the shutdown can end the request.
        (
            "STATSCACHE_INGESTOR__DATAGREPPER__REQUEST_TIMEOUT",
            "1h".to_string(),
        ),
    ]));
    let log = tempfile::NamedTempFile::new().expect("log file");
    let ingestor = Service::start_logging_to("ingestor", &env, &[], log.path());
    wait_for(
        "the start-up backfill to ask datagrepper",
        Duration::from_secs(60),
        || async { (accepted.load(Ordering::SeqCst) > 0).then_some(()) },
    )
    .await;

    let exited = ingestor.terminate_within(EXIT_DEADLINE).await;
    let log = read_log(&log);
    assert!(
        exited.is_some(),
        "the ingestor did not exit after SIGTERM: {log}"
    );
    assert!(
        log.contains("start-up backfill abandoned"),
        "the log says what was abandoned: {log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_an_api_stuck_on_a_frozen_clickhouse_and_a_slow_client() {
    let servers = Servers::start().await;
    let port = free_port();
    let env = servers.env(&[
        ("STATSCACHE_API__LISTEN", format!("127.0.0.1:{port}")),
        (SHUTDOWN_TIMEOUT.0, SHUTDOWN_TIMEOUT.1.to_string()),
    ]);
    // The worker creates the schema the api's readiness probe asks about.
    let _worker = Service::start("worker", &env, &[]);
    let api = Service::start("api", &env, &[]);
    wait_until_ok(&format!("http://127.0.0.1:{port}/health/readyz")).await;

    // A client that sent half a request and stays silent.
    let mut slow_client = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    slow_client
        .write_all(b"GET /api/volume?bucket=all HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("half a request");
    // A request whose query the frozen ClickHouse never answers.
    send_signal(servers.clickhouse.pid(), "STOP");
    let url = format!("http://127.0.0.1:{port}/api/volume?bucket=all");
    let stuck_request = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status()) });
    // By the time readiness says ClickHouse is down, the request has long been sent.
    let readyz = format!("http://127.0.0.1:{port}/health/readyz");
    wait_for(
        "the api to notice the frozen ClickHouse",
        Duration::from_secs(60),
        || async {
            let status = reqwest::get(&readyz).await.ok()?.status();
            (status == reqwest::StatusCode::SERVICE_UNAVAILABLE).then_some(())
        },
    )
    .await;
    assert!(
        !stuck_request.is_finished(),
        "the request is stuck on ClickHouse"
    );

    let exited = api.terminate_within(EXIT_DEADLINE).await;
    send_signal(servers.clickhouse.pid(), "CONT");
    assert!(exited.is_some(), "the api did not exit after SIGTERM");
    stuck_request.abort();
    drop(slow_client);
}
