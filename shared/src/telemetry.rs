//! Logging and tracing, set up the same way by every service.
//!
//! Logs go to stderr as text or JSON (`[telemetry] log-format`); when `otlp-endpoint` is set,
//! spans are also exported over OTLP/gRPC so that one message can be followed from ingestor to
//! worker: the trace context crosses NATS in the message headers ([`crate::trace_context`]).
//! Sampling is parent-based: `sample-ratio` decides where a trace starts, and every later span
//! follows that decision, so a kept trace is whole. The returned guard flushes pending spans
//! when dropped at shutdown.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetryConfig};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("cannot build the OTLP exporter for {endpoint}: {source}")]
    Otlp {
        endpoint: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("a global tracing subscriber is already installed")]
    AlreadyInitialised,
}

/// Flushes and shuts down the span exporter when dropped.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(error) = provider.shutdown() {
                eprintln!("failed to flush traces: {error}");
            }
        }
    }
}

/// Installs the global subscriber for `service` (e.g. `statscache-worker`).
pub fn init(
    service: &'static str,
    config: &TelemetryConfig,
) -> Result<TelemetryGuard, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_environment) if !from_environment.is_empty() => from_environment,
        _ => config.log_filter.clone(),
    };
    let env_filter = EnvFilter::try_new(&filter).map_err(|source| TelemetryError::Filter {
        filter: filter.clone(),
        source,
    })?;

    let log_layer = match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            // Colours only on a terminal: not in files, journald or `kubectl logs`.
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(env_filter);

    let mut provider = None;
    let otel_layer = if config.otlp_endpoint.is_empty() {
        None
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.otlp_endpoint.clone())
            .build()
            .map_err(|source| TelemetryError::Otlp {
                endpoint: config.otlp_endpoint.clone(),
                source,
            })?;
        let new_traces = Sampler::TraceIdRatioBased(config.sample_ratio);
        let tracer_provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(new_traces)))
            .with_resource(Resource::builder().with_service_name(service).build())
            .build();
        let tracer = tracer_provider.tracer(service);
        provider = Some(tracer_provider);
        // Its own filter: traces do not depend on how verbose the logs are, and the spans of
        // dependencies (the exporter's own HTTP/2 among them) stay out.
        let own_spans = Targets::new().with_target("statscache", Level::INFO);
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(own_spans),
        )
    };

    tracing_subscriber::registry()
        .with(log_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInitialised)?;
    Ok(TelemetryGuard { provider })
}
