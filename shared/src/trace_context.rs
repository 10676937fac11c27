//! W3C trace context (`traceparent`, `tracestate`) carried across NATS and HTTP, so that one
//! message is one trace from the ingestor's publish to the worker's store, and an API request
//! continues its caller's trace.
//!
//! Only the W3C format is spoken, without a global propagator: what is written and read is
//! fixed here, beside the other header names. Both directions are hostile-input safe: what is
//! written is checked to be a bounded single line (it counts against NATS' `max_payload` like
//! any header), and what is read goes through the propagator's strict parser, which gives an
//! empty context (a new trace) for anything malformed.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::nats::header_value;

/// The W3C trace context header names, as the specification spells them.
pub const HEADER_TRACEPARENT: &str = "traceparent";
pub const HEADER_TRACESTATE: &str = "tracestate";

/// The trace context headers of `span`: none when the span is not exported (no OTLP endpoint),
/// and only values that are already safe single lines.
pub fn headers_of(span: &tracing::Span) -> Vec<(&'static str, String)> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    let mut headers = Vec::new();
    for name in [HEADER_TRACEPARENT, HEADER_TRACESTATE] {
        let Some(value) = carrier.remove(name) else {
            continue;
        };
        if !value.is_empty() && header_value(&value) == value {
            headers.push((name, value));
        }
    }
    headers
}

/// The context a NATS message carries; empty when it carries none or a malformed one.
pub fn from_nats(headers: Option<&async_nats::HeaderMap>) -> Context {
    match headers {
        Some(headers) => TraceContextPropagator::new().extract(&NatsHeaders(headers)),
        None => Context::new(),
    }
}

/// The context an HTTP request carries; empty when it carries none or a malformed one.
pub fn from_http(headers: &poem::http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HttpHeaders(headers))
}

/// Makes `span` a child of the remote `parent`; a span in an empty context stays a root.
pub fn continue_trace(span: &tracing::Span, parent: Context) {
    // Fails only when no OpenTelemetry layer is installed: then there is nothing to continue.
    let _ = span.set_parent(parent);
}

/// Links `span` to `target`: related work in another trace (a message to the batch it was
/// stored with).
pub fn link(span: &tracing::Span, target: &tracing::Span) {
    span.add_link(target.context().span().span_context().clone());
}

struct NatsHeaders<'a>(&'a async_nats::HeaderMap);

impl Extractor for NatsHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

struct HttpHeaders<'a>(&'a poem::http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn nats_headers(values: &[(&str, &str)]) -> async_nats::HeaderMap {
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in values {
            headers.insert(*name, *value);
        }
        headers
    }

    #[test]
    fn a_valid_traceparent_is_continued() {
        let headers = nats_headers(&[
            (HEADER_TRACEPARENT, TRACEPARENT),
            (HEADER_TRACESTATE, "a=1"),
        ]);
        let context = from_nats(Some(&headers));
        let span_context = context.span().span_context().clone();
        assert!(span_context.is_remote());
        assert_eq!(
            span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(span_context.is_sampled());
        assert_eq!(span_context.trace_state().header(), "a=1");
    }

    #[test]
    fn hostile_trace_headers_start_a_new_trace() {
        let long = "f".repeat(10_000);
        for hostile in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            long.as_str(),
        ] {
            let headers = nats_headers(&[(HEADER_TRACEPARENT, hostile)]);
            let context = from_nats(Some(&headers));
            assert!(!context.span().span_context().is_valid(), "{hostile}");
        }
        assert!(!from_nats(None).span().span_context().is_valid());
        let mut http = poem::http::HeaderMap::new();
        let bytes = poem::http::HeaderValue::from_bytes(b"00-\xff").expect("opaque bytes");
        http.insert(HEADER_TRACEPARENT, bytes);
        assert!(!from_http(&http).span().span_context().is_valid());
    }

    #[test]
    fn an_http_traceparent_is_continued() {
        let mut http = poem::http::HeaderMap::new();
        http.insert(
            HEADER_TRACEPARENT,
            poem::http::HeaderValue::from_static(TRACEPARENT),
        );
        assert!(from_http(&http).span().span_context().is_valid());
    }

    #[test]
    fn exported_spans_write_a_traceparent_that_reads_back() {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;

        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("publish");
            let headers = headers_of(&span);
            assert_eq!(headers.len(), 1, "{headers:?}");
            let (name, traceparent) = &headers[0];
            assert_eq!(*name, HEADER_TRACEPARENT);
            let map = nats_headers(&[(HEADER_TRACEPARENT, traceparent)]);
            let read_back = from_nats(Some(&map)).span().span_context().clone();
            assert_eq!(
                read_back.trace_id(),
                span.context().span().span_context().trace_id()
            );
        });
    }

    #[test]
    fn unexported_spans_write_no_headers() {
        // No OpenTelemetry layer in unit tests: nothing to propagate, nothing written.
        assert!(headers_of(&tracing::info_span!("publish")).is_empty());
    }
}
