//! The operations surface every service exposes: `/health/livez`, `/health/readyz`, `/metrics`.
//!
//! Liveness only says the process answers. Readiness says the service can do its job now (NATS
//! and ClickHouse reachable, stream and consumer in place); Kubernetes stops routing to, or
//! waits on, a replica that is not ready. Metrics are Prometheus text from one registry.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use poem::http::StatusCode;
use poem::listener::{Listener, TcpAcceptor, TcpListener};
use poem::web::Data;
use poem::{get, handler, EndpointExt, IntoResponse, Response, Route, Server};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio_util::sync::CancellationToken;

/// Shared readiness state: `None` when ready, otherwise why not.
#[derive(Clone)]
pub struct Health {
    not_ready_reason: Arc<Mutex<Option<String>>>,
    /// Facts the readiness body reports under the verdict without changing it (e.g. a downtime
    /// that was not backfilled), by name.
    details: Arc<Mutex<BTreeMap<&'static str, String>>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            not_ready_reason: Arc::new(Mutex::new(Some("starting".to_string()))),
            details: Arc::default(),
        }
    }
}

impl Health {
    pub fn set_ready(&self) {
        self.set(None);
    }

    pub fn set_not_ready(&self, reason: impl Into<String>) {
        self.set(Some(reason.into()));
    }

    /// `Ok(())` when ready, or the reason it is not.
    pub fn readiness(&self) -> Result<(), String> {
        let guard = match self.not_ready_reason.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        match guard.as_ref() {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        }
    }

    /// Adds (or replaces) a line `<name>: <text>` under the readiness verdict.
    pub fn set_detail(&self, name: &'static str, text: impl Into<String>) {
        let mut guard = match self.details.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.insert(name, text.into());
    }

    /// The detail lines, one `\n<name>: <text>` each.
    fn detail_lines(&self) -> String {
        let guard = match self.details.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut lines = String::new();
        for (name, text) in guard.iter() {
            lines.push_str(&format!("\n{name}: {text}"));
        }
        lines
    }

    fn set(&self, reason: Option<String>) {
        let mut guard = match self.not_ready_reason.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = reason;
    }
}

#[handler]
fn livez() -> &'static str {
    "ok"
}

#[handler]
fn readyz(health: Data<&Health>) -> Response {
    let details = health.detail_lines();
    match health.readiness() {
        Ok(()) => format!("ready{details}").into_response(),
        Err(reason) => Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(format!("{reason}{details}")),
    }
}

#[handler]
fn metrics(registry: Data<&Registry>) -> Response {
    render_metrics(&registry)
}

/// Prometheus text exposition of `registry`.
pub fn render_metrics(registry: &Registry) -> Response {
    let mut buffer = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(error) = encoder.encode(&registry.gather(), &mut buffer) {
        return Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(format!("cannot encode metrics: {error}"));
    }
    Response::builder()
        .content_type(encoder.format_type())
        .body(buffer)
}

/// The admin server running in the background of a service.
pub struct AdminServer {
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl AdminServer {
    /// Binds `listen` and serves on it in the background until `shutdown` is cancelled.
    ///
    /// The port is bound before this returns, so a service whose admin port is taken fails at
    /// start-up with that error instead of running without probes (which an orchestrator would
    /// only notice as a replica that never becomes ready).
    pub async fn start(
        listen: SocketAddr,
        health: Health,
        registry: Registry,
        shutdown: CancellationToken,
    ) -> std::io::Result<AdminServer> {
        let acceptor = TcpListener::bind(listen).into_acceptor().await?;
        Ok(AdminServer {
            task: tokio::spawn(serve(acceptor, health, registry, shutdown)),
        })
    }

    /// Waits for the server to stop (after `shutdown` is cancelled); reports why it failed, if it
    /// did.
    pub async fn finish(self) -> std::io::Result<()> {
        match self.task.await {
            Ok(result) => result,
            Err(join_error) => Err(std::io::Error::other(join_error)),
        }
    }
}

/// Serves the admin routes on `acceptor` until `shutdown` is cancelled.
async fn serve(
    acceptor: TcpAcceptor,
    health: Health,
    registry: Registry,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Route::new()
        .at("/health/livez", get(livez))
        .at("/health/readyz", get(readyz))
        .at("/metrics", get(metrics))
        .data(health)
        .data(registry);
    Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(app, shutdown.cancelled_owned(), None)
        .await
}
