//! statscache-worker: durable JetStream consumers that run the plugins and batch-write their
//! statistics to ClickHouse. Any number of replicas share one durable consumer.
//!
//! - [`plugin`]: the plugin trait, its facts and metadata; [`topic_filter`]: topic patterns.
//! - [`plugins`]: the built-in plugins and the declarative ones from the config file.
//! - [`meta`]: usernames and packages a message names (a port of fedmsg.meta's rules).
//! - [`consumer`]: fetch a batch → rows → write → ack; dead letters and poison messages.
//! - [`sink`]: the batched ClickHouse writes; [`catalog`]: the `plugins` table.
//! - [`metrics`]: Prometheus metrics.

pub mod catalog;
pub mod consumer;
pub mod meta;
pub mod metrics;
pub mod plugin;
pub mod plugins;
pub mod sink;
pub mod topic_filter;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use statscache_shared::admin::{self, Health};
use statscache_shared::config::Config;
use statscache_shared::{nats, schema};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Plugin(#[from] plugins::declarative::DefinitionError),
    #[error(transparent)]
    Nats(#[from] nats::NatsError),
    #[error(transparent)]
    Schema(#[from] schema::SchemaError),
    #[error("cannot create the durable consumer {name}: {detail}")]
    Consumer { name: String, detail: String },
    #[error("cannot fetch from JetStream: {0}")]
    Fetch(String),
    #[error("cannot publish the plugin catalog: {0}")]
    Catalog(clickhouse::error::Error),
    #[error(transparent)]
    DeadLetter(nats::NatsError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("admin server: {0}")]
    Admin(std::io::Error),
}

/// See [`consumer::Consumer::abort_after_writes`]: a test-only fault, off unless the variable is set.
fn fault_injection_abort_after_writes() -> Option<u64> {
    let raw = std::env::var("FAULT_INJECTION_WORKER_ABORT_AFTER_WRITES").ok()?;
    let limit = raw.trim().parse().ok()?;
    tracing::warn!(
        limit,
        "fault injection enabled: the worker will abort after {limit} batch writes"
    );
    Some(limit)
}

/// Runs the worker until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), WorkerError> {
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(metrics::Metrics::new(&registry)?);
    let health = Health::default();
    let admin_server = tokio::spawn(admin::serve(
        config.worker.admin_listen,
        health.clone(),
        registry,
        shutdown.clone(),
    ));

    let plugins = plugins::load(&config.worker)?;
    health.set_not_ready("migrating the ClickHouse schema");
    schema::migrate(&config.clickhouse).await?;
    let clickhouse = schema::client(&config.clickhouse);
    for plugin in &plugins {
        schema::create_stat_table(&clickhouse, &plugin.info().table).await?;
        plugin.on_start();
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or_default();
    catalog::publish(&clickhouse, &plugins, now)
        .await
        .map_err(WorkerError::Catalog)?;

    health.set_not_ready("connecting to NATS");
    let client = nats::connect(&config.nats, "statscache-worker").await?;
    let jetstream = async_nats::jetstream::new(client);
    nats::ensure_streams(&jetstream, &config.nats).await?;
    let consumer_error = |detail: String| WorkerError::Consumer {
        name: config.worker.consumer.clone(),
        detail,
    };
    let stream = jetstream
        .get_stream(&config.nats.stream)
        .await
        .map_err(|e| consumer_error(e.to_string()))?;
    let durable = stream
        .get_or_create_consumer(&config.worker.consumer, consumer::consumer_config(&config))
        .await
        .map_err(|e| consumer_error(e.to_string()))?;
    tracing::info!(
        plugins = plugins.len(),
        consumer = %config.worker.consumer,
        stream = %config.nats.stream,
        "worker started"
    );

    let worker = consumer::Consumer {
        config,
        jetstream,
        consumer: durable,
        clickhouse,
        plugins,
        metrics,
        health,
        abort_after_writes: fault_injection_abort_after_writes(),
        batches_written: std::sync::atomic::AtomicU64::new(0),
    };
    worker.run(shutdown.clone()).await?;
    shutdown.cancel();
    match admin_server.await {
        Ok(result) => result.map_err(WorkerError::Admin),
        Err(join_error) => Err(WorkerError::Admin(std::io::Error::other(join_error))),
    }
}
