//! statscache-worker: durable JetStream consumers that run the plugins and batch-write their
//! statistics to ClickHouse. Any number of replicas share one durable consumer.
//!
//! - [`plugin`]: the plugin trait, its facts and metadata; [`topic_filter`]: topic patterns.
//! - [`plugins`]: the built-in plugins and the declarative ones from the config file.
//! - [`meta`]: usernames and packages a message names (a port of fedmsg.meta's rules).
//! - [`consumer`]: fetch a batch → rows → write → ack; dead letters and poison messages.
//! - [`sink`]: the batched ClickHouse writes; [`catalog`]: the `plugins` table.
//! - [`metrics`]: Prometheus metrics.
//! - [`generate`]: synthetic Fedora-shaped history for the scale benchmark.

pub mod catalog;
pub mod consumer;
pub mod generate;
pub mod meta;
pub mod metrics;
pub mod plugin;
pub mod plugins;
pub mod sink;
pub mod topic_filter;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_nats::jetstream::consumer::DeliverPolicy;
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
    #[error("no plugin {0:?} in this configuration (see `statscache-worker plugins`)")]
    UnknownPlugin(String),
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
    #[error("cannot write to ClickHouse: {0}")]
    Write(clickhouse::error::Error),
    #[error("generate: {0}")]
    Generate(String),
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
    let consumer_error = |detail: String| WorkerError::Consumer {
        name: config.worker.consumer.clone(),
        detail,
    };
    let durable = prepared
        .stream
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
        jetstream: prepared.jetstream,
        consumer: durable,
        clickhouse: prepared.clickhouse,
        plugins,
        metrics,
        health,
        abort_after_writes: fault_injection_abort_after_writes(),
        batches_written: std::sync::atomic::AtomicU64::new(0),
    };
    worker.run(shutdown.clone()).await?;
    shutdown.cancel();
    admin_server.finish().await.map_err(WorkerError::Admin)
}

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReplayStart {
    /// A stream sequence number (1 is the oldest message the stream ever held).
    Sequence(u64),
    /// Messages that arrived in the stream at or after this time (epoch seconds).
    ArrivedSince(f64),
}

/// What `statscache-worker replay` does: re-run `plugins` over a range of the stream.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    pub plugins: Vec<String>,
    pub start: ReplayStart,
    /// Drop the plugins' fact tables first: for a plugin whose logic changed.
    pub rebuild: bool,
}

/// Replays the stream from `request.start` up to its head at the time of the call into the
/// chosen plugins, with an ephemeral consumer beside the durable one. Because statistics are
/// sets of facts, replaying is always safe: what is already counted is not counted again.
/// Returns the number of messages stored.
pub async fn replay(
    config: Config,
    shutdown: CancellationToken,
    request: ReplayRequest,
) -> Result<u64, WorkerError> {
    let mut chosen = Vec::new();
    for plugin in plugins::load(&config.worker)? {
        if request.plugins.contains(&plugin.info().identifier) {
            chosen.push(plugin);
        }
    }
    for wanted in &request.plugins {
        if !chosen
            .iter()
            .any(|plugin| &plugin.info().identifier == wanted)
        {
            return Err(WorkerError::UnknownPlugin(wanted.clone()));
        }
    }
    let clickhouse = schema::client(&config.clickhouse);
    if request.rebuild {
        for plugin in &chosen {
            let table = &plugin.info().table;
            tracing::warn!(%table, "rebuild: dropping the plugin's facts before the replay");
            schema::drop_stat_table(&clickhouse, table).await?;
        }
    }
    let prepared = prepare(&config, &chosen).await?;
    let mut stream = prepared.stream;
    let consumer_error = |detail: String| WorkerError::Consumer {
        name: "replay".into(),
        detail,
    };
    let last_sequence = stream
        .info()
        .await
        .map_err(|e| consumer_error(e.to_string()))?
        .state
        .last_sequence;
    let deliver_policy = match request.start {
        ReplayStart::Sequence(sequence) => DeliverPolicy::ByStartSequence {
            start_sequence: sequence.max(1),
        },
        ReplayStart::ArrivedSince(seconds) => {
            let start_time = time::OffsetDateTime::from_unix_timestamp(seconds as i64)
                .map_err(|e| consumer_error(format!("bad start time: {e}")))?;
            DeliverPolicy::ByStartTime { start_time }
        }
    };
    let mut consumer_config = consumer::consumer_config(&config);
    consumer_config.durable_name = None;
    consumer_config.description = Some(format!("statscache replay into {:?}", request.plugins));
    consumer_config.deliver_policy = deliver_policy;
    consumer_config.inactive_threshold = std::time::Duration::from_secs(300);
    let ephemeral = stream
        .create_consumer(consumer_config)
        .await
        .map_err(|e| consumer_error(e.to_string()))?;
    tracing::info!(plugins = ?request.plugins, start = ?request.start, last_sequence, "replaying");

    let registry = prometheus::Registry::new();
    let replayer = consumer::Consumer {
        config,
        jetstream: prepared.jetstream,
        consumer: ephemeral,
        clickhouse: prepared.clickhouse,
        plugins: chosen,
        metrics: Arc::new(metrics::Metrics::new(&registry)?),
        health: Health::default(),
        abort_after_writes: None,
        batches_written: std::sync::atomic::AtomicU64::new(0),
    };
    replayer.replay(shutdown, last_sequence).await
}

/// What both `run` and `replay` need: the schema, the plugins' tables and catalog, the streams.
struct Prepared {
    clickhouse: clickhouse::Client,
    jetstream: async_nats::jetstream::Context,
    stream: async_nats::jetstream::stream::Stream,
}

/// The ClickHouse side of [`prepare`]: the schema, the plugins' tables and catalog.
async fn prepare_clickhouse(
    config: &Config,
    plugins: &[Box<dyn plugin::Plugin>],
) -> Result<clickhouse::Client, WorkerError> {
    schema::migrate(&config.clickhouse).await?;
    let clickhouse = schema::client(&config.clickhouse);
    for plugin in plugins {
        schema::create_stat_table(&clickhouse, &plugin.info().table).await?;
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

async fn prepare(
    config: &Config,
    plugins: &[Box<dyn plugin::Plugin>],
) -> Result<Prepared, WorkerError> {
    let clickhouse = prepare_clickhouse(config, plugins).await?;

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
