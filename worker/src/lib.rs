//! statscache-worker: durable JetStream consumers that run the plugins and batch-write their
//! statistics to ClickHouse. Any number of replicas share one durable consumer.
//!
//! - [`plugin`]: the plugin trait, its facts and metadata; [`topic_filter`]: topic patterns.
//! - [`plugins`]: the built-in plugins and the declarative ones from the config file.
//! - [`meta`]: usernames and packages a message names (the fedmsg.meta port, in the shared crate).
//! - [`consumer`]: fetch a batch → rows → write → ack; dead letters and poison messages.
//! - [`fetch`]: one batch from the durable consumer, closed by size or `batch-timeout`.
//! - [`identity`]: of the copies of a `msg_id`, the first to arrive is the one stored and
//!   counted (runs of held messages, the barrier before their lookup, the verdict on each).
//! - [`sink`]: the batched ClickHouse writes; [`catalog`]: the `plugins` table.
//! - [`rollup`]: the hourly/daily/monthly/yearly rollups each batch recomputes, their rebuild
//!   and check (progress drawn by `statscache_shared::progress`); [`key_counts`]: the number of
//!   keys per day and month, which the api counts a page's rows with.
//! - [`quorum`]: on a replicated ClickHouse, inserts that return once every replica holds them.
//! - [`metrics`]: Prometheus metrics.
//! - [`generate`]: synthetic Fedora-shaped history for the scale benchmark.

pub mod catalog;
pub mod consumer;
pub mod fetch;
pub mod generate;
pub mod identity;
pub mod key_counts;
pub mod metrics;
/// The fedmsg.meta port lives in the shared crate, where the api computes its text fields too.
pub use statscache_shared::meta;
pub mod plugin;
pub mod plugins;
pub mod quorum;
pub mod rollup;
pub mod sink;
pub mod topic_filter;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_nats::jetstream::consumer::DeliverPolicy;
use statscache_shared::admin::{self, Dependency, Health};
use statscache_shared::config::Config;
use statscache_shared::period::Level;
use statscache_shared::progress::Progress;
use statscache_shared::schema::Fill;
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
    #[error("cannot set up quorum inserts: {0}")]
    Quorum(clickhouse::error::Error),
    #[error(transparent)]
    Barrier(#[from] identity::barrier::BarrierError),
    #[error("generate: {0}")]
    Generate(String),
    #[error("cannot rebuild or check the rollups of {plugin}: {source}")]
    Rollup {
        plugin: String,
        source: clickhouse::error::Error,
    },
}

/// See [`consumer::Consumer::abort_after_writes`] and
/// [`consumer::Consumer::abort_before_rollup`]: test-only faults, off unless `variable` is set.
fn fault_injection(variable: &str) -> Option<u64> {
    let raw = std::env::var(variable).ok()?;
    let limit = raw.trim().parse().ok()?;
    tracing::warn!(
        limit,
        variable,
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
    let worker = consumer::Consumer {
        config,
        jetstream: prepared.jetstream,
        consumer: durable,
        clickhouse: prepared.clickhouse,
        plugins,
        metrics,
        health,
        abort_after_writes: fault_injection("FAULT_INJECTION_WORKER_ABORT_AFTER_WRITES"),
        abort_before_rollup: fault_injection("FAULT_INJECTION_WORKER_ABORT_BEFORE_ROLLUP"),
        batches_written: std::sync::atomic::AtomicU64::new(0),
    };
    worker.run(shutdown.clone(), barrier).await?;
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

/// Replays the stream from `request.start` up to what the workers have stored (the durable
/// consumer's ack floor; the whole stream if no worker ever ran) into the chosen plugins, with
/// an ephemeral consumer beside the durable one. Because statistics are sets of facts, and the
/// copy of each identity that counts was chosen when the workers stored it (`identity`),
/// replaying is always safe: what is already counted is not counted again, and a later copy
/// of a message stays uncounted. What the workers have not stored yet they store with every
/// plugin of their configuration. Returns the number of messages stored.
pub async fn replay(
    config: Config,
    shutdown: CancellationToken,
    request: ReplayRequest,
) -> Result<u64, WorkerError> {
    let chosen = choose_plugins(&config, &request.plugins)?;
    let clickhouse = schema::client(&config.clickhouse);
    let placement = schema::Placement::of(&config.clickhouse);
    if request.rebuild {
        for plugin in &chosen {
            let table = &plugin.info().table;
            tracing::warn!(%table, "rebuild: dropping the plugin's facts and rollups before the replay");
            schema::drop_stat_table(&clickhouse, placement, table).await?;
            schema::drop_rollup_tables(&clickhouse, placement, table).await?;
            schema::drop_key_counts(&clickhouse, placement, table).await?;
        }
    }
    let prepared = prepare(&config, &chosen).await?;
    let mut stream = prepared.stream;
    let consumer_error = |detail: String| WorkerError::Consumer {
        name: "replay".into(),
        detail,
    };
    let stream_end = stream
        .info()
        .await
        .map_err(|e| consumer_error(e.to_string()))?
        .state
        .last_sequence;
    let last_sequence = match stored_by_workers(&mut stream, &config.worker.consumer).await {
        Some(floor) if floor < stream_end => {
            tracing::info!(
                floor,
                stream_end,
                "the replay stops where the workers are: they store what follows, with every plugin"
            );
            floor
        }
        _ => stream_end,
    };
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
        abort_before_rollup: None,
        batches_written: std::sync::atomic::AtomicU64::new(0),
    };
    replayer.replay(shutdown, last_sequence).await
}

/// The last stream sequence below which the workers' durable consumer has settled everything,
/// or `None` if it does not exist (no worker ever ran).
async fn stored_by_workers(
    stream: &mut async_nats::jetstream::stream::Stream,
    durable: &str,
) -> Option<u64> {
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer(durable).await.ok()?;
    let info = consumer.info().await.ok()?;
    Some(info.ack_floor.stream_sequence)
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

async fn prepare(
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

/// Migrates the schema and creates the plugins' fact and rollup tables. Rollups never filled
/// from the facts (an installation older than rollups, a plugin's first start) are filled
/// first, with the key counts, so the api does not read empty rollups over a full fact table
/// for long; key counts and yearly rollups never filled (an installation older than them) are
/// filled from the other rollups. Each fill is recorded only once complete: a worker stopped
/// during one fills again.
async fn prepare_tables(
    config: &Config,
    plugins: &[Box<dyn plugin::Plugin>],
) -> Result<clickhouse::Client, WorkerError> {
    schema::migrate(&config.clickhouse).await?;
    let clickhouse = schema::client(&config.clickhouse);
    let placement = schema::Placement::of(&config.clickhouse);
    for plugin in plugins {
        let info = plugin.info();
        schema::create_stat_table(&clickhouse, placement, &info.table).await?;
        schema::create_rollup_tables(&clickhouse, placement, &info.table, info.kind).await?;
        fill_once(&clickhouse, info).await?;
    }
    Ok(clickhouse)
}

/// The one-off fills of [`prepare_tables`] for one plugin.
async fn fill_once(
    clickhouse: &clickhouse::Client,
    info: &plugin::PluginInfo,
) -> Result<(), WorkerError> {
    let failed = |source| rollup_error(info, source);
    let table = &info.table;
    if !schema::filled(clickhouse, Fill::Rollups, table)
        .await
        .map_err(failed)?
    {
        tracing::info!(%table, "filling the rollups and key counts from the existing facts");
        rebuild_rollups(clickhouse, &[info], 0).await?;
        for fill in [Fill::Rollups, Fill::KeyCounts, Fill::YearlyRollups] {
            schema::record_filled(clickhouse, fill, table)
                .await
                .map_err(failed)?;
        }
        return Ok(());
    }
    if !schema::filled(clickhouse, Fill::KeyCounts, table)
        .await
        .map_err(failed)?
    {
        tracing::info!(%table, "filling the key counts from the existing rollups");
        key_counts::refill(clickhouse, table, 0, u64::from(u32::MAX))
            .await
            .map_err(failed)?;
        schema::record_filled(clickhouse, Fill::KeyCounts, table)
            .await
            .map_err(failed)?;
    }
    if !schema::filled(clickhouse, Fill::YearlyRollups, table)
        .await
        .map_err(failed)?
    {
        tracing::info!(%table, "filling the yearly rollups from the monthly ones");
        let months = rollup::months_with_facts(clickhouse, table, 0, u64::from(u32::MAX))
            .await
            .map_err(failed)?;
        let years: std::collections::BTreeSet<u64> = months
            .iter()
            .map(|month| Level::Year.start(*month))
            .collect();
        for year in years {
            rollup::rebuild_year(clickhouse, table, info.kind, year)
                .await
                .map_err(failed)?;
        }
        schema::record_filled(clickhouse, Fill::YearlyRollups, table)
            .await
            .map_err(failed)?;
    }
    Ok(())
}

/// The plugins named in `names`, all of them if it is empty.
fn choose_plugins(
    config: &Config,
    names: &[String],
) -> Result<Vec<Box<dyn plugin::Plugin>>, WorkerError> {
    let mut chosen = Vec::new();
    for plugin in plugins::load(&config.worker)? {
        if names.is_empty() || names.contains(&plugin.info().identifier) {
            chosen.push(plugin);
        }
    }
    for wanted in names {
        if !chosen
            .iter()
            .any(|plugin| &plugin.info().identifier == wanted)
        {
            return Err(WorkerError::UnknownPlugin(wanted.clone()));
        }
    }
    Ok(chosen)
}

/// What `statscache-worker rollup` covers: some plugins (all if empty), a range of event time.
#[derive(Debug, Clone, Default)]
pub struct RollupRequest {
    pub plugins: Vec<String>,
    /// Epoch seconds; widened to the start of its month.
    pub since: Option<f64>,
    /// Epoch seconds; widened to the end of its month. Only `--check` takes it.
    pub until: Option<f64>,
}

impl RollupRequest {
    fn since(&self) -> u64 {
        self.since
            .map(|seconds| seconds.max(0.0) as u64)
            .unwrap_or(0)
    }

    fn until(&self) -> u64 {
        self.until
            .map(|seconds| seconds.max(0.0) as u64)
            .unwrap_or(u64::from(u32::MAX))
    }
}

/// `statscache-worker rollup --rebuild`: recomputes every level of the chosen plugins from
/// their facts, month by month from `since`'s month, and each month's key counts. Safe while
/// workers run (see `rollup`, `key_counts`).
/// Returns the number of months recomputed.
pub async fn rollup_rebuild(config: &Config, request: &RollupRequest) -> Result<u64, WorkerError> {
    let chosen = choose_plugins(config, &request.plugins)?;
    let clickhouse = prepare_tables(config, &chosen).await?;
    let infos: Vec<&plugin::PluginInfo> = chosen.iter().map(|plugin| plugin.info()).collect();
    rebuild_rollups(&clickhouse, &infos, request.since()).await
}

async fn rebuild_rollups(
    clickhouse: &clickhouse::Client,
    plugins: &[&plugin::PluginInfo],
    since: u64,
) -> Result<u64, WorkerError> {
    let work = months_per_plugin(clickhouse, plugins, since, u64::from(u32::MAX)).await?;
    let total = work.iter().map(|(_, months)| months.len() as u64).sum();
    let mut progress = Progress::new("rebuilding rollups", "months", total);
    for (info, months) in &work {
        let failed = |source| rollup_error(info, source);
        for (index, month) in months.iter().enumerate() {
            rollup::rebuild_month(clickhouse, &info.table, info.kind, *month)
                .await
                .map_err(failed)?;
            key_counts::refill_month(clickhouse, &info.table, *month)
                .await
                .map_err(failed)?;
            if ends_a_year(months, index) {
                rollup::rebuild_year(clickhouse, &info.table, info.kind, *month)
                    .await
                    .map_err(failed)?;
            }
            progress.step(&format!("{} {}", info.identifier, month_name(*month)));
        }
    }
    progress.finish();
    Ok(total)
}

/// Whether `months[index]` is the last of its year in `months` (ascending): where a rebuild or
/// a check, having done the year's months, does the year.
fn ends_a_year(months: &[u64], index: usize) -> bool {
    let year = Level::Year.start(months[index]);
    match months.get(index + 1) {
        Some(next) => Level::Year.start(*next) != year,
        None => true,
    }
}

/// One difference `rollup --check` found.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupDifference {
    pub plugin: String,
    pub difference: rollup::Difference,
}

/// `statscache-worker rollup --check`: compares each plugin's rollups and key counts with its
/// facts, month by month over `[since, until]`; returns every difference.
pub async fn rollup_check(
    config: &Config,
    request: &RollupRequest,
) -> Result<Vec<RollupDifference>, WorkerError> {
    let chosen = choose_plugins(config, &request.plugins)?;
    let clickhouse = prepare_tables(config, &chosen).await?;
    let infos: Vec<&plugin::PluginInfo> = chosen.iter().map(|plugin| plugin.info()).collect();
    let work = months_per_plugin(&clickhouse, &infos, request.since(), request.until()).await?;
    let total = work.iter().map(|(_, months)| months.len() as u64).sum();
    let mut progress = Progress::new("checking rollups", "months", total);
    let mut differences = Vec::new();
    for (info, months) in &work {
        let failed = |source| rollup_error(info, source);
        for (index, month) in months.iter().enumerate() {
            let mut found = rollup::check_month(&clickhouse, &info.table, info.kind, *month)
                .await
                .map_err(failed)?;
            let counts = key_counts::check_month(&clickhouse, &info.table, *month)
                .await
                .map_err(failed)?;
            found.extend(counts);
            if ends_a_year(months, index) {
                let year = rollup::check_year(&clickhouse, &info.table, info.kind, *month)
                    .await
                    .map_err(failed)?;
                found.extend(year);
            }
            for difference in found {
                differences.push(RollupDifference {
                    plugin: info.identifier.clone(),
                    difference,
                });
            }
            progress.step(&format!("{} {}", info.identifier, month_name(*month)));
        }
    }
    progress.finish();
    Ok(differences)
}

async fn months_per_plugin<'a>(
    clickhouse: &clickhouse::Client,
    plugins: &[&'a plugin::PluginInfo],
    since: u64,
    until: u64,
) -> Result<Vec<(&'a plugin::PluginInfo, Vec<u64>)>, WorkerError> {
    let since = Level::Month.start(since);
    let until = Level::Month.next(until).saturating_sub(1);
    let mut work = Vec::new();
    for info in plugins {
        let months = rollup::months_with_facts(clickhouse, &info.table, since, until)
            .await
            .map_err(|source| rollup_error(info, source))?;
        work.push((*info, months));
    }
    Ok(work)
}

fn rollup_error(info: &plugin::PluginInfo, source: clickhouse::error::Error) -> WorkerError {
    WorkerError::Rollup {
        plugin: info.identifier.clone(),
        source,
    }
}

/// `2024-02` for the month starting at `month`.
pub fn month_name(month: u64) -> String {
    let seconds = i64::try_from(month).unwrap_or(i64::MAX);
    match chrono::DateTime::from_timestamp(seconds, 0) {
        Some(moment) => moment.format("%Y-%m").to_string(),
        None => month.to_string(),
    }
}
