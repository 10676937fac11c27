//! Every request runs in a `request` span that continues the caller's trace when it sends a W3C
//! `traceparent` (a dashboard's backend, a proxy), so that an operator follows one request from
//! the caller into statscache and on to ClickHouse. A request without one, or with a malformed
//! one, starts a new trace (sampled by `telemetry.sample-ratio`).

use std::sync::Arc;

use poem::{Endpoint, IntoResponse, Request, Response};
use statscache_shared::trace_context;
use tracing::Instrument;

use crate::route_label;

/// Runs `request` through `endpoint` inside its `request` span; for `EndpointExt::around`.
pub async fn continue_caller_trace<E: Endpoint>(
    endpoint: Arc<E>,
    request: Request,
) -> poem::Result<Response> {
    let span = tracing::info_span!(
        parent: None,
        "request",
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = route_label(request.uri().path()),
        http.response.status_code = tracing::field::Empty,
    );
    trace_context::continue_trace(&span, trace_context::from_http(request.headers()));
    let response = match endpoint.call(request).instrument(span.clone()).await {
        Ok(response) => response.into_response(),
        Err(error) => {
            span.record("http.response.status_code", error.status().as_u16());
            return Err(error);
        }
    };
    span.record("http.response.status_code", response.status().as_u16());
    Ok(response)
}
