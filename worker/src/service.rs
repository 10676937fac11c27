//! The worker service: the schema and the plugins' tables made ready (one-off fills
//! included), the streams and the durable consumer, the admin server, then the consumer's loop
//! until shutdown.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use statscache_shared::admin::{self, Dependency, Health};
use statscache_shared::config::Config;
use statscache_shared::nats;
use tokio_util::sync::CancellationToken;

use crate::faults::Faults;
use crate::identity::turns::Turns;
use crate::tables::prepare_tables;
use crate::writer::Writer;
use crate::{catalog, consumer, identity, metrics, plugin, plugins, quorum, WorkerError};

/// Runs the worker until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), WorkerError> {
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(metrics::Metrics::new(&registry)?);
    let health = Health::default();
    let admin_server = admin::AdminServer::start(
        config.worker.admin_listen,
        health.clone(),
        registry,
        shutdown.clone(),
    )
    .await
    .map_err(WorkerError::Admin)?;

    let plugins = plugins::load(&config.worker)?;
    health.set_not_ready("migrating the ClickHouse schema and connecting to NATS");
    let prepared = prepare(&config, &plugins).await?;
    health.watch(
        vec![
            Dependency::Nats(prepared.jetstream.client()),
            Dependency::ClickHouse(prepared.clickhouse.clone()),
        ],
        shutdown.clone(),
    );
    let consumer_error = |detail: String| WorkerError::Consumer {
        name: config.worker.consumer.clone(),
        detail,
    };
    // Create or update: a changed setting (say `ack-wait`) reaches an existing consumer.
    let durable = prepared
        .stream
        .create_consumer(consumer::consumer_config(&config))
        .await
        .map_err(|e| consumer_error(e.to_string()))?;
    tracing::info!(
        plugins = plugins.len(),
        consumer = %config.worker.consumer,
        stream = %config.nats.stream,
        "worker started"
    );

    let barrier = identity::barrier::Barrier::new(
        durable.clone(),
        prepared.stream.clone(),
        format!("{}.>", config.nats.subject_prefix),
    )
    .await
    .map_err(WorkerError::Barrier)?;
    let turns = Turns::open(&prepared.jetstream, &config.nats, &process_name("worker")).await?;
    let writer = Writer {
        config,
        jetstream: prepared.jetstream,
        clickhouse: prepared.clickhouse,
        plugins,
        metrics,
        health,
        faults: Faults::from_env(),
    };
    let worker = consumer::Consumer {
        writer,
        consumer: durable,
        turns,
    };
    worker.run(shutdown.clone(), barrier).await?;
    shutdown.cancel();
    admin_server.finish().await.map_err(WorkerError::Admin)
}

/// What both `run` and `replay` need: the schema, the plugins' tables and catalog, the streams.
pub(crate) struct Prepared {
    pub clickhouse: clickhouse::Client,
    pub jetstream: async_nats::jetstream::Context,
    pub stream: async_nats::jetstream::stream::Stream,
}

/// The ClickHouse side of [`prepare`]: the schema, the plugins' tables and catalog.
pub(crate) async fn prepare_clickhouse(
    config: &Config,
    plugins: &[Box<dyn plugin::Plugin>],
) -> Result<clickhouse::Client, WorkerError> {
    let clickhouse = prepare_tables(config, plugins).await?;
    for plugin in plugins {
        plugin.on_start();
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or_default();
    catalog::publish(&clickhouse, plugins, now)
        .await
        .map_err(WorkerError::Catalog)?;
    Ok(clickhouse)
}

pub(crate) async fn prepare(
    config: &Config,
    plugins: &[Box<dyn plugin::Plugin>],
) -> Result<Prepared, WorkerError> {
    let clickhouse = prepare_clickhouse(config, plugins).await?;
    // The batches' writes and rollup recomputes only: a worker starting while a replica is down
    // can still publish its catalog (the one-off fill of rollups above is a `rollup --rebuild`).
    let (clickhouse, quorum) = quorum::apply(clickhouse, &config.clickhouse)
        .await
        .map_err(WorkerError::Quorum)?;
    if !config.clickhouse.cluster.is_empty() {
        tracing::info!(quorum, "inserts return once this many replicas hold them");
    }

    let client = nats::connect(&config.nats, "statscache-worker").await?;
    let jetstream = async_nats::jetstream::new(client);
    nats::ensure_streams(&jetstream, &config.nats).await?;
    let stream = jetstream
        .get_stream(&config.nats.stream)
        .await
        .map_err(|e| WorkerError::Consumer {
            name: config.nats.stream.clone(),
            detail: e.to_string(),
        })?;
    Ok(Prepared {
        clickhouse,
        jetstream,
        stream,
    })
}

/// A name no other process shares: `<role>-<host>-<random>`, for the keys it holds.
pub(crate) fn process_name(role: &str) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    format!("{role}-{host}-{}", uuid::Uuid::new_v4().simple())
}
