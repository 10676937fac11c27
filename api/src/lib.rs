//! statscache-api: serves the statistics, and the message history, from ClickHouse.
//! Stateless; run as many replicas as the load needs.
//!
//! - [`routes`]: the OpenAPI-described statistics routes (`/api/`, `/api/<plugin>`).
//! - [`statistics`]: the statistic queries over the plugins' rollups and facts; [`segments`]:
//!   a request's range cut into the periods each rollup level answers; [`bucket_pages`]: the
//!   buckets one page of a statistic falls in, so a page reads those alone.
//! - [`history`]: datagrepper-compatible message history (`/raw`, `/id`) over `messages`, with
//!   [`timerange`] porting datagrepper's time-window rules and [`message_meta`] its `meta=`.
//! - [`statscache`]: Fedora's statscache API at `/statscache/api/`, unchanged for its clients.
//! - [`dashboard`]: the web page at `/` and its embedded scripts; [`svg`]: a statistic drawn
//!   as an SVG chart (`format=svg`).
//! - [`params`]: parsing and bounds of query parameters; [`error`]: JSON errors.
//! - [`app`] assembles the routes with `/openapi.json`, `/docs`, health probes and `/metrics`,
//!   and bounds every request by `api.request-timeout`; [`admission`] bounds how many query
//!   ClickHouse at once, [`connection`] how long a client may take to send a request head. Every answer may be read by a page of
//!   any origin (CORS), as statscache allowed: dashboards are web pages served elsewhere.
//!   [`request_trace`] continues the caller's W3C trace context in each request's span.

pub mod admission;
pub mod bucket_pages;
pub mod connection;
pub mod dashboard;
pub mod error;
pub mod history;
pub mod message_meta;
pub mod params;
pub mod request_trace;
pub mod routes;
pub mod segments;
pub mod statistics;
pub mod statscache;
pub mod svg;
pub mod timerange;

use std::sync::Arc;
use std::time::Instant;

use poem::http::{Method, StatusCode};
use poem::listener::{Listener, TcpListener};
use poem::middleware::{CatchPanic, Cors, NormalizePath, Tracing, TrailingSlash};
use poem::web::Data;
use poem::{
    get, handler, Endpoint, EndpointExt, IntoEndpoint, IntoResponse, Response, Route, Server,
};
use poem_openapi::OpenApiService;
use prometheus::{HistogramOpts, HistogramVec, Registry};
use statscache_shared::admin::{self, Dependency, Health};
use statscache_shared::config::Config;
use statscache_shared::schema;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::connection::HeadDeadlineAcceptor;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub clickhouse: clickhouse::Client,
}

#[derive(Clone)]
struct Telemetry {
    registry: Registry,
    requests: HistogramVec,
}

/// The OpenAPI service, also used to write the spec snapshot.
pub fn openapi(state: AppState) -> OpenApiService<(routes::Api, history::HistoryApi), ()> {
    let apis = (
        routes::Api {
            state: state.clone(),
        },
        history::HistoryApi { state },
    );
    OpenApiService::new(apis, "statscache", env!("CARGO_PKG_VERSION")).description(
        "Statistics of the Fedora message bus, computed by statscache plugins, \
         and the message history with datagrepper's /raw and /id interface.",
    )
}

/// The whole HTTP application.
pub fn app(state: AppState, health: Health) -> Result<impl Endpoint, prometheus::Error> {
    let registry = Registry::new();
    let requests = HistogramVec::new(
        HistogramOpts::new(
            "statscache_api_request_seconds",
            "Request latency by route and status",
        ),
        &["route", "status"],
    )?;
    registry.register(Box::new(requests.clone()))?;
    let telemetry = Telemetry { registry, requests };

    let request_timeout = state.config.api.request_timeout;
    let turns = Admission::new(
        state.config.api.max_concurrent_requests,
        state.config.api.queue_timeout,
    );
    let service = openapi(state.clone());
    let spec = service.spec_endpoint();
    let docs = service.swagger_ui();
    let app = Route::new()
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .at("/health/livez", get(livez))
        .at("/health/readyz", get(readyz))
        .at("/metrics", get(metrics))
        .at("/assets/:version/:name", get(dashboard::serve_asset))
        .nest("/statscache", statscache::routes())
        .nest("/", with_dashboard_page(service))
        .data(state)
        .data(health)
        .data(telemetry.clone())
        .around(move |endpoint, request| {
            let telemetry = telemetry.clone();
            let turns = turns.clone();
            async move {
                let route = route_label(request.uri().path());
                let started = Instant::now();
                let response = match params::check_query_string(request.uri()) {
                    Err(error) => error.into_response(),
                    Ok(()) => {
                        // The request's ClickHouse turn, held until its answer is built.
                        let _turn = if Admission::needs_turn(request.uri().path()) {
                            match turns.enter().await {
                                Ok(permit) => Some(permit),
                                Err(overloaded) => {
                                    let refusal = admission::overloaded(overloaded);
                                    return Ok(observed(&telemetry, route, started, refusal));
                                }
                            }
                        } else {
                            None
                        };
                        let call = endpoint.call(request);
                        match tokio::time::timeout(request_timeout, call).await {
                            Ok(Ok(response)) => response.into_response(),
                            Ok(Err(error)) => error::render_poem_error(error),
                            Err(_elapsed) => error::timed_out(request_timeout),
                        }
                    }
                };
                Ok(observed(&telemetry, route, started, response))
            }
        })
        .with(CatchPanic::new().with_handler(error::panicked))
        .with(NormalizePath::new(TrailingSlash::Trim))
        .with(cors())
        .with(Tracing)
        .around(request_trace::continue_caller_trace);
    Ok(app)
}

/// `service`, with `/` answered by the dashboard page: poem routes `/` to a nest at `/` even
/// when `/` has a route of its own.
fn with_dashboard_page<E>(service: E) -> impl Endpoint
where
    E: IntoEndpoint,
    E::Endpoint: 'static,
{
    service.into_endpoint().around(|api, request| async move {
        if request.uri().path() == "/" {
            if request.method() != Method::GET && request.method() != Method::HEAD {
                return Err(poem::Error::from_status(StatusCode::METHOD_NOT_ALLOWED));
            }
            return Ok(dashboard::page(request.headers()));
        }
        api.call(request).await.map(IntoResponse::into_response)
    })
}

/// Counts `response` in the latency histogram and hands it on.
fn observed(telemetry: &Telemetry, route: &str, started: Instant, response: Response) -> Response {
    let status = response.status().as_u16().to_string();
    telemetry
        .requests
        .with_label_values(&[route, &status])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Read-only, from any origin; the headers a dashboard needs to page and revalidate exposed.
fn cors() -> Cors {
    Cors::new()
        .allow_methods([Method::GET, Method::HEAD])
        .expose_headers(["ETag", "Link", "X-Link-Count", "X-Link-Number"])
}

/// A bounded set of labels: plugin names and ids must not explode the metric's cardinality.
pub(crate) fn route_label(path: &str) -> &'static str {
    if path == "/api/" || path == "/api" {
        "/api/"
    } else if path == "/statscache/api" || path == "/statscache/api/" {
        "/statscache/api/"
    } else if path.starts_with("/statscache/api/") {
        "/statscache/api/:ident"
    } else if path.starts_with("/api/") {
        "/api/:plugin"
    } else if path == "/raw" {
        "/raw"
    } else if path == "/id" {
        "/id"
    } else if path.starts_with("/health") {
        "/health"
    } else if path.starts_with("/docs") || path == "/openapi.json" {
        "/docs"
    } else if path == "/metrics" {
        "/metrics"
    } else if path == "/" {
        "/"
    } else if path.starts_with("/assets/") {
        "/assets"
    } else {
        "other"
    }
}

#[handler]
fn livez() -> &'static str {
    "ok"
}

/// Ready while ClickHouse answers: [`Health::watch`] probes it in the background.
#[handler]
fn readyz(health: Data<&Health>) -> Response {
    admin::readiness_response(&health)
}

#[handler]
fn metrics(telemetry: Data<&Telemetry>) -> Response {
    admin::render_metrics(&telemetry.registry)
}

/// Serves the API until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> std::io::Result<()> {
    let clickhouse = schema::client(&config.clickhouse).with_setting(
        "max_execution_time",
        config.clickhouse.query_timeout.as_secs().max(1).to_string(),
    );
    let listen = config.api.listen;
    let request_timeout = config.api.request_timeout;
    let idle_timeout = config.api.idle_timeout;
    let header_read_timeout = config.api.header_read_timeout;
    let health = Health::default();
    health.watch(
        vec![Dependency::ClickHouse(clickhouse.clone())],
        shutdown.clone(),
    );
    health.set_ready();
    let state = AppState {
        config: Arc::new(config),
        clickhouse,
    };
    let app = app(state, health).map_err(std::io::Error::other)?;
    tracing::info!(%listen, "api listening");
    let acceptor = TcpListener::bind(listen).into_acceptor().await?;
    let acceptor = HeadDeadlineAcceptor::new(acceptor, header_read_timeout);
    Server::new_with_acceptor(acceptor)
        .idle_timeout(idle_timeout)
        .run_with_graceful_shutdown(app, shutdown.cancelled_owned(), Some(request_timeout))
        .await
}
