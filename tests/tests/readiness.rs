//! Readiness follows the dependencies each role needs, within seconds: NATS for the ingestor and
//! the worker, ClickHouse for the worker and the api. The servers are frozen (SIGSTOP) as a hung
//! machine would be: their connections stay open, so only a probe that asks something notices.

use std::time::Duration;

use statscache_tests::{free_port, send_signal, wait_for, wait_until_ok, Servers, Service};

/// Waits until `url` answers 503 naming `dependency`.
async fn wait_until_not_ready(url: &str, dependency: &str) {
    wait_for(
        &format!("{url} to say {dependency} is down"),
        Duration::from_secs(60),
        || async {
            let response = reqwest::get(url).await.ok()?;
            if response.status() != reqwest::StatusCode::SERVICE_UNAVAILABLE {
                return None;
            }
            let body = response.text().await.ok()?;
            body.contains(&format!("{dependency}: down")).then_some(())
        },
    )
    .await;
}

async fn status(url: &str) -> u16 {
    match reqwest::get(url).await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_follows_the_frozen_dependencies_of_each_role() {
    let servers = Servers::start().await;
    let ingestor_admin = free_port();
    let worker_admin = free_port();
    let api_port = free_port();
    let env = servers.env(&[
        (
            "STATSCACHE_INGESTOR__ADMIN_LISTEN",
            format!("127.0.0.1:{ingestor_admin}"),
        ),
        (
            "STATSCACHE_WORKER__ADMIN_LISTEN",
            format!("127.0.0.1:{worker_admin}"),
        ),
        ("STATSCACHE_API__LISTEN", format!("127.0.0.1:{api_port}")),
        // A source for the ingestor to run (nobody publishes there).
        (
            "STATSCACHE_INGESTOR__ZEROMQ__ENDPOINTS",
            format!("[tcp://127.0.0.1:{}]", free_port()),
        ),
    ]);
    let _worker = Service::start("worker", &env, &[]);
    let _api = Service::start("api", &env, &[]);
    let _ingestor = Service::start("ingestor", &env, &[]);
    let ingestor = format!("http://127.0.0.1:{ingestor_admin}/health/readyz");
    let worker = format!("http://127.0.0.1:{worker_admin}/health/readyz");
    let api = format!("http://127.0.0.1:{api_port}/health/readyz");
    for url in [&ingestor, &worker, &api] {
        wait_until_ok(url).await;
    }

    send_signal(servers.clickhouse.pid(), "STOP");
    wait_until_not_ready(&worker, "clickhouse").await;
    wait_until_not_ready(&api, "clickhouse").await;
    assert_eq!(
        status(&ingestor).await,
        200,
        "the ingestor needs no ClickHouse"
    );
    send_signal(servers.clickhouse.pid(), "CONT");
    for url in [&ingestor, &worker, &api] {
        wait_until_ok(url).await;
    }

    send_signal(servers.nats.pid(), "STOP");
    wait_until_not_ready(&ingestor, "nats").await;
    wait_until_not_ready(&worker, "nats").await;
    assert_eq!(status(&api).await, 200, "the api needs no NATS");
    send_signal(servers.nats.pid(), "CONT");
    for url in [&ingestor, &worker, &api] {
        wait_until_ok(url).await;
    }
}
