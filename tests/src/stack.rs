//! [`Pipeline`]: the whole pipeline (ingestor on a ZeroMQ endpoint, worker, api) on real servers.
//!
//! The stack the API tests read from: NATS, ClickHouse, a worker and an api, with a corpus
//! published into the stream and stored by the worker.
//!
//! The corpus goes straight into JetStream (as the ingestor would put it, with `Nats-Msg-Id`),
//! since these tests are about what the api serves, not about the ingestor. [`CorpusStack::start`]
//! returns once every message is in the `messages` table and counted by the `volume` and
//! `volume-by-category` statistics: a batch writes its tables concurrently, in no set order, so
//! each is waited for.

use std::time::Duration;

use crate::corpus::{publish_to_stream, served_counts};
use crate::{free_port, wait_for, wait_for_messages, wait_until_ok, Servers, Service};

/// Every role running on `servers`: an ingestor subscribed to `fedmsg_endpoint` (for the test's
/// publisher to bind), a worker and an api, each on its own free port.
pub struct Pipeline {
    pub servers: Servers,
    /// Where the ingestor subscribes: `tcp://127.0.0.1:<port>`.
    pub fedmsg_endpoint: String,
    /// The api's base URL.
    pub api: String,
    pub worker_admin: u16,
    pub ingestor_admin: u16,
    _services: Vec<Service>,
}

impl Pipeline {
    /// Starts worker and api, waits until both are ready, then starts the ingestor; `extra` are
    /// more `STATSCACHE_*` settings for all three.
    pub async fn start(servers: Servers, extra: &[(&str, String)]) -> Pipeline {
        let fedmsg_endpoint = format!("tcp://127.0.0.1:{}", free_port());
        let ingestor_admin = free_port();
        let mut settings = vec![
            (
                "STATSCACHE_INGESTOR__ADMIN_LISTEN",
                format!("127.0.0.1:{ingestor_admin}"),
            ),
            (
                "STATSCACHE_INGESTOR__ZEROMQ__ENDPOINTS",
                format!("[{fedmsg_endpoint}]"),
            ),
        ];
        settings.extend(extra.iter().cloned());
        let mut started = WorkerAndApi::start(&servers, &settings).await;
        started
            .services
            .push(Service::start("ingestor", &started.env, &[]));
        Pipeline {
            servers,
            fedmsg_endpoint,
            api: started.api,
            worker_admin: started.worker_admin,
            ingestor_admin,
            _services: started.services,
        }
    }
}

pub struct CorpusStack {
    pub servers: Servers,
    /// The api's base URL.
    pub api: String,
    _services: Vec<Service>,
}

/// A worker and an api on `servers`, both ready.
struct WorkerAndApi {
    services: Vec<Service>,
    /// The api's base URL.
    api: String,
    worker_admin: u16,
    /// The `STATSCACHE_*` variables they run with, for more roles.
    env: Vec<(String, String)>,
}

impl WorkerAndApi {
    /// With `extra` `STATSCACHE_*` settings besides their free ports.
    async fn start(servers: &Servers, extra: &[(&str, String)]) -> WorkerAndApi {
        let api_port = free_port();
        let worker_admin = free_port();
        let mut settings = vec![
            ("STATSCACHE_API__LISTEN", format!("127.0.0.1:{api_port}")),
            (
                "STATSCACHE_WORKER__ADMIN_LISTEN",
                format!("127.0.0.1:{worker_admin}"),
            ),
        ];
        settings.extend(extra.iter().cloned());
        let env = servers.env(&settings);
        let worker = Service::start("worker", &env, &[]);
        let api_service = Service::start("api", &env, &[]);
        let api = format!("http://127.0.0.1:{api_port}");
        wait_until_ok(&format!("http://127.0.0.1:{worker_admin}/health/readyz")).await;
        wait_until_ok(&format!("{api}/health/readyz")).await;
        WorkerAndApi {
            services: vec![worker, api_service],
            api,
            worker_admin,
            env,
        }
    }
}

impl CorpusStack {
    /// Starts the stack with `extra` `STATSCACHE_*` settings and stores `lines`, each a distinct
    /// message.
    pub async fn start(lines: &[String], extra: &[(&str, String)]) -> CorpusStack {
        CorpusStack::start_on(Servers::start().await, lines, extra).await
    }

    /// [`CorpusStack::start`] on servers started by the caller.
    pub async fn start_on(
        servers: Servers,
        lines: &[String],
        extra: &[(&str, String)],
    ) -> CorpusStack {
        let started = WorkerAndApi::start(&servers, extra).await;
        let api = started.api;

        publish_to_stream(&servers.nats.url, lines, true).await;
        let expected = lines.len() as u64;
        wait_for_messages(&servers.client(), expected).await;
        for plugin in ["volume", "volume-by-category"] {
            let what = format!("{plugin} to count the corpus");
            wait_for(&what, Duration::from_secs(120), || {
                let api = api.clone();
                async move {
                    let counts = served_counts(&api, plugin).await?;
                    (counts.values().sum::<u64>() == expected).then_some(())
                }
            })
            .await;
        }
        CorpusStack {
            servers,
            api,
            _services: started.services,
        }
    }
}
