//! statscache-ingestor: relays every fedmsg message into NATS JetStream, once and in order.
//!
//! Stateless: any number of replicas may run on the same endpoints; JetStream's `Nats-Msg-Id`
//! de-duplication keeps one copy of each message.
//!
//! - [`source`]: the trait every input implements; [`sources`]: one folder per input (ZeroMQ).
//! - [`relay`]: validation, dead letters, ordered publishing with bounded in-flight acks.
//! - [`metrics`]: Prometheus metrics.

pub mod metrics;
pub mod relay;
pub mod source;
pub mod sources;

use std::sync::Arc;

use statscache_shared::admin::{self, Health};
use statscache_shared::config::Config;
use statscache_shared::nats;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::source::Source;

/// Messages buffered between the sources and the relay.
const CHANNEL_CAPACITY: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum IngestorError {
    #[error(transparent)]
    Nats(#[from] nats::NatsError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("admin server: {0}")]
    Admin(std::io::Error),
}

/// Runs the configured sources and the relay until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), IngestorError> {
    let config = Arc::new(config);
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(metrics::Metrics::new(&registry)?);
    let health = Health::default();
    let admin_server = tokio::spawn(admin::serve(
        config.ingestor.admin_listen,
        health.clone(),
        registry,
        shutdown.clone(),
    ));

    health.set_not_ready("connecting to NATS");
    let client = nats::connect(&config.nats, "statscache-ingestor").await?;
    let jetstream = async_nats::jetstream::ContextBuilder::new()
        .timeout(config.ingestor.publish_timeout)
        .build(client);
    nats::ensure_streams(&jetstream, &config.nats).await?;

    let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    if !config.ingestor.zeromq.endpoints.is_empty() {
        sources.push(Box::new(sources::zeromq::ZeroMqSource::new(
            config.ingestor.zeromq.clone(),
            metrics.clone(),
        )));
    }
    if sources.is_empty() {
        tracing::warn!("no source configured: set [ingestor.zeromq] endpoints");
    }
    let mut source_tasks = tokio::task::JoinSet::new();
    for source in sources {
        tracing::info!(source = source.name(), "starting source");
        source_tasks.spawn(source.run(sender.clone(), shutdown.clone()));
    }
    drop(sender);

    let relay = Arc::new(relay::Relay {
        config: config.clone(),
        jetstream,
        metrics,
        health: health.clone(),
    });
    health.set_ready();
    relay.run(receiver).await;
    while source_tasks.join_next().await.is_some() {}
    tracing::info!("ingestor stopped");
    shutdown.cancel();
    match admin_server.await {
        Ok(result) => result.map_err(IngestorError::Admin),
        Err(join_error) => Err(IngestorError::Admin(std::io::Error::other(join_error))),
    }
}
