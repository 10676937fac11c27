//! The operations surface every service exposes: `/health/livez`, `/health/readyz`, `/metrics`.
//!
//! Liveness only says the process answers. Readiness says the service can do its job now;
//! Kubernetes stops routing to, or waits on, a replica that is not ready. It is the role's own
//! state (starting, a write being retried) together with the [`Dependency`]s the role needs —
//! NATS for the ingestor and the worker, ClickHouse for the worker and the api — each asked a
//! cheap question every [`PROBE_INTERVAL`] by [`Health::watch`], the one mechanism of all three
//! roles. A connection state alone would miss a frozen server (its TCP connection stays open), so
//! the probe is a round trip bounded by [`PROBE_TIMEOUT`]. `/health/readyz` names what is down.
//! Metrics are Prometheus text from one registry.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use poem::http::StatusCode;
use poem::listener::{Listener, TcpAcceptor, TcpListener};
use poem::web::Data;
use poem::{get, handler, EndpointExt, IntoResponse, Response, Route, Server};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio_util::sync::CancellationToken;

/// How often each dependency is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// A probe not answered within this time counts as the dependency being down.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// JetStream's account information request.
const JETSTREAM_INFO_SUBJECT: &str = "$JS.API.INFO";

/// Something a role cannot work without, probed by [`Health::watch`].
#[derive(Clone)]
pub enum Dependency {
    /// NATS with JetStream: asked for the account's JetStream information.
    Nats(async_nats::Client),
    /// ClickHouse: asked `SELECT 1`.
    ClickHouse(clickhouse::Client),
}

impl Dependency {
    pub fn name(&self) -> &'static str {
        match self {
            Dependency::Nats(_) => "nats",
            Dependency::ClickHouse(_) => "clickhouse",
        }
    }

    /// `Ok(())` when the dependency answered in time, or why not.
    async fn probe(&self) -> Result<(), String> {
        let answered = match self {
            Dependency::Nats(client) => {
                // Any answer will do (its shape changes between server releases); a server
                // without JetStream answers "no responders".
                let request = client.request(JETSTREAM_INFO_SUBJECT, bytes::Bytes::new());
                tokio::time::timeout(PROBE_TIMEOUT, request)
                    .await
                    .map(|answer| answer.map(|_| ()).map_err(|error| error.to_string()))
            }
            Dependency::ClickHouse(client) => {
                let query = client.query("SELECT 1").fetch_one::<u8>();
                tokio::time::timeout(PROBE_TIMEOUT, query)
                    .await
                    .map(|answer| answer.map(|_| ()).map_err(|error| error.to_string()))
            }
        };
        match answered {
            Ok(outcome) => outcome,
            Err(_elapsed) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        }
    }
}

/// Shared readiness state: the role's own reason not to be ready, if any, and each probed
/// dependency's.
#[derive(Clone)]
pub struct Health {
    state: Arc<Mutex<State>>,
}

struct State {
    not_ready_reason: Option<String>,
    /// Name and, when down, why; in the order the role gave them.
    dependencies: Vec<(&'static str, Option<String>)>,
    /// Facts the readiness body reports under the verdict without changing it (e.g. a downtime
    /// that was not backfilled), by name.
    details: BTreeMap<&'static str, String>,
    /// Parts of the role that are down, by name (a source's connection, a store refusing
    /// writes): each makes the role not ready until cleared.
    conditions: BTreeMap<&'static str, String>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            state: Arc::new(Mutex::new(State {
                not_ready_reason: Some("starting".to_string()),
                dependencies: Vec::new(),
                details: BTreeMap::new(),
                conditions: BTreeMap::new(),
            })),
        }
    }
}

impl Health {
    pub fn set_ready(&self) {
        self.lock().not_ready_reason = None;
    }

    pub fn set_not_ready(&self, reason: impl Into<String>) {
        self.lock().not_ready_reason = Some(reason.into());
    }

    /// `Ok(())` when ready, or why not: one line per dependency down, then the role's reason.
    pub fn readiness(&self) -> Result<(), String> {
        let state = self.lock();
        let mut reasons = Vec::new();
        for (name, down) in &state.dependencies {
            if let Some(reason) = down {
                reasons.push(format!("{name}: down: {reason}"));
            }
        }
        for (name, reason) in &state.conditions {
            reasons.push(format!("{name}: {reason}"));
        }
        if let Some(reason) = &state.not_ready_reason {
            reasons.push(reason.clone());
        }
        if reasons.is_empty() {
            return Ok(());
        }
        Err(reasons.join("\n"))
    }

    /// Probes `dependencies` every [`PROBE_INTERVAL`] until `shutdown`, keeping readiness up to
    /// date; logs each change. Until a dependency's first answer it counts as down.
    pub fn watch(
        &self,
        dependencies: Vec<Dependency>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        self.lock().dependencies = dependencies
            .iter()
            .map(|dependency| (dependency.name(), Some("not probed yet".to_string())))
            .collect();
        let health = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(PROBE_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let probes = dependencies.iter().map(|dependency| dependency.probe());
                let outcomes = futures::future::join_all(probes).await;
                for (dependency, outcome) in dependencies.iter().zip(outcomes) {
                    health.record(dependency.name(), outcome.err());
                }
            }
        })
    }

    fn record(&self, name: &'static str, down: Option<String>) {
        let mut state = self.lock();
        let Some(entry) = state
            .dependencies
            .iter_mut()
            .find(|(known, _)| *known == name)
        else {
            return;
        };
        let was_up = entry.1.is_none();
        match (&down, was_up) {
            (Some(reason), true) => tracing::warn!(dependency = name, %reason, "dependency down"),
            (None, false) => tracing::info!(dependency = name, "dependency up"),
            _ => {}
        }
        entry.1 = down;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Makes the role not ready because its part `name` is down (`Some(why)`), or clears that
    /// (`None`): for what the role's own state says and no probe sees (a source's connection,
    /// JetStream refusing the role's writes). Logs each change.
    pub fn set_condition(&self, name: &'static str, down: Option<String>) {
        let mut state = self.lock();
        match down {
            Some(reason) => {
                if !state.conditions.contains_key(name) {
                    tracing::warn!(part = name, %reason, "not ready");
                }
                state.conditions.insert(name, reason);
            }
            None => {
                if state.conditions.remove(name).is_some() {
                    tracing::info!(part = name, "up again");
                }
            }
        }
    }

    /// Adds (or replaces) a line `<name>: <text>` under the readiness verdict.
    pub fn set_detail(&self, name: &'static str, text: impl Into<String>) {
        self.lock().details.insert(name, text.into());
    }

    /// The detail lines, one `\n<name>: <text>` each.
    fn detail_lines(&self) -> String {
        let mut lines = String::new();
        for (name, text) in &self.lock().details {
            lines.push_str(&format!("\n{name}: {text}"));
        }
        lines
    }
}

/// The `/health/readyz` answer: 200 `ready`, or 503 with what is not; then the detail lines.
pub fn readiness_response(health: &Health) -> Response {
    let details = health.detail_lines();
    match health.readiness() {
        Ok(()) => format!("ready{details}").into_response(),
        Err(reason) => Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(format!("{reason}{details}")),
    }
}

#[handler]
fn livez() -> &'static str {
    "ok"
}

#[handler]
fn readyz(health: Data<&Health>) -> Response {
    readiness_response(&health)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_names_each_dependency_down_and_the_role_reason() {
        let health = Health::default();
        health.lock().dependencies = vec![("nats", None), ("clickhouse", None)];
        assert_eq!(health.readiness(), Err("starting".to_string()));
        health.set_ready();
        assert_eq!(health.readiness(), Ok(()));

        health.record("clickhouse", Some("no answer within 2s".into()));
        health.set_not_ready("clickhouse: write failed");
        assert_eq!(
            health.readiness(),
            Err("clickhouse: down: no answer within 2s\nclickhouse: write failed".to_string())
        );
        health.record("clickhouse", None);
        health.set_ready();
        assert_eq!(health.readiness(), Ok(()));

        health.set_condition("amqp", Some("connection refused".into()));
        health.set_condition("jetstream", Some("refusing writes".into()));
        assert_eq!(
            health.readiness(),
            Err("amqp: connection refused\njetstream: refusing writes".to_string())
        );
        health.set_condition("amqp", None);
        health.set_condition("jetstream", None);
        assert_eq!(health.readiness(), Ok(()));
    }
}
