//! statscache-ingestor: relays every fedmsg message into NATS JetStream, once and in order.
//!
//! Stateless: any number of replicas may run on the same endpoints; JetStream's `Nats-Msg-Id`
//! de-duplication keeps one copy of each message. What a backfill needs to resume is kept in
//! JetStream too.
//!
//! - [`source`]: the trait every input implements; [`sources`]: one folder per input (ZeroMQ,
//!   fedora-messaging over AMQP, datagrepper history).
//! - [`relay`]: validation, dead letters, ordered publishing with bounded in-flight acks.
//! - [`metrics`]: Prometheus metrics; [`downtime`]: what start-up says about the time nothing
//!   was received; [`dead_letters`]: the bounded dead-letter stream's size and drops.
//! - [`run`]: the service; [`backfill`]: the one-off `backfill` command.
//! - [`publish`] and [`tail`]: the operator's `fedmsg-logger` and `fedmsg-tail`.

pub mod dead_letters;
pub mod downtime;
pub mod metrics;
pub mod publish;
pub mod relay;
pub mod source;
pub mod sources;
pub mod tail;

use std::sync::Arc;

use statscache_shared::admin::{self, Dependency, Health};
use statscache_shared::config::Config;
use statscache_shared::nats;
use statscache_shared::shutdown::Abandoned;
use statscache_shared::topic::MAX_TOPIC_BYTES;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::source::Source;
use crate::sources::datagrepper::{self, Backfill, BackfillError, Filters, Progress, Window};

/// Messages buffered between the sources and the relay.
const CHANNEL_CAPACITY: usize = 1024;

/// Lost spans waiting for their backfill; more are left to reconciliation.
const LOST_SPANS_CAPACITY: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum IngestorError {
    #[error(transparent)]
    Nats(#[from] nats::NatsError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("admin server: {0}")]
    Admin(std::io::Error),
    #[error(transparent)]
    Backfill(#[from] BackfillError),
    #[error(transparent)]
    Amqp(#[from] sources::amqp::AmqpError),
    #[error(transparent)]
    ZeroMq(#[from] sources::zeromq::ZeroMqError),
    #[error("cannot tail the stream: {0}")]
    Tail(String),
}

/// Connects to NATS and declares the streams: what the service and every command need.
async fn connect_jetstream(
    config: &Config,
) -> Result<async_nats::jetstream::Context, IngestorError> {
    let client = nats::connect(&config.nats, "statscache-ingestor").await?;
    let jetstream = async_nats::jetstream::ContextBuilder::new()
        .timeout(config.ingestor.publish_timeout)
        .build(client);
    nats::ensure_streams(&jetstream, &config.nats).await?;
    Ok(jetstream)
}

/// The bucket recording completed backfill windows, or `None` (with a warning) if it cannot be
/// opened: backfills then fetch every window, which is slower but just as correct.
async fn open_progress_store(
    jetstream: &async_nats::jetstream::Context,
    config: &Config,
) -> Option<datagrepper::ProgressStore> {
    let bucket = &config.ingestor.datagrepper.progress_bucket;
    match datagrepper::ProgressStore::open(jetstream, &config.nats, bucket).await {
        Ok(store) => Some(store),
        Err(error) => {
            tracing::warn!(%error, "backfills will not skip windows completed earlier");
            None
        }
    }
}

/// The filters configured under `[ingestor.datagrepper]`.
fn configured_filters(config: &Config) -> Filters {
    Filters {
        topics: config.ingestor.datagrepper.topics.clone(),
        categories: config.ingestor.datagrepper.categories.clone(),
    }
}

/// Runs the configured sources and the relay until `shutdown` is cancelled; `abandoned` is told
/// how to say what a shutdown cut short leaves unstored.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    abandoned: Abandoned,
) -> Result<(), IngestorError> {
    let config = Arc::new(config);
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(metrics::Metrics::new(&registry)?);
    let health = Health::default();
    let admin_server = admin::AdminServer::start(
        config.ingestor.admin_listen,
        health.clone(),
        registry,
        shutdown.clone(),
    )
    .await
    .map_err(IngestorError::Admin)?;

    // Exported from the start, so "none" reads 0 rather than nothing.
    for stream in [&config.nats.stream, &config.nats.dead_letter_stream] {
        metrics.store_refusals.with_label_values(&[stream.as_str()]);
    }
    health.set_not_ready("connecting to NATS");
    let jetstream = connect_jetstream(&config).await?;
    health.watch(vec![Dependency::Nats(jetstream.client())], shutdown.clone());
    let relay = Arc::new(relay::Relay::new(
        config.clone(),
        jetstream.clone(),
        metrics.clone(),
        health.clone(),
    ));

    downtime::report_startup_downtime(&jetstream, &config, &metrics, &health).await;
    let dead_letter_watch = tokio::spawn(dead_letters::watch(
        jetstream.clone(),
        config.nats.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));

    let datagrepper_config = &config.ingestor.datagrepper;
    let mut backfill_tasks = Vec::new();
    let mut lost_spans = None;
    if !datagrepper_config.url.is_empty() {
        let progress_store = open_progress_store(&jetstream, &config).await;
        let backfill = Arc::new(Backfill::new(
            datagrepper_config,
            configured_filters(&config),
            relay.clone(),
            progress_store,
            watch::Sender::new(Progress::default()),
        )?);
        tracing::info!(url = %datagrepper_config.url, "starting the datagrepper backfill and reconciliation");
        backfill_tasks.push(tokio::spawn(datagrepper::run_in_service(
            backfill.clone(),
            jetstream.clone(),
            config.nats.clone(),
            datagrepper_config.clone(),
            shutdown.clone(),
        )));
        let (lost_span_sender, lost_span_receiver) = mpsc::channel(LOST_SPANS_CAPACITY);
        lost_spans = Some(lost_span_sender);
        backfill_tasks.push(tokio::spawn(datagrepper::backfill_lost_spans(
            backfill,
            lost_span_receiver,
            shutdown.clone(),
        )));
    }
    let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
    describe_abandoned(&abandoned, &metrics, sender.downgrade());
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    if !config.ingestor.zeromq.endpoints.is_empty() {
        let restored = restore_publisher_sequences(&jetstream, &config).await;
        // A message can be stored only if its envelope fits NATS' `max_payload` (the topic
        // frame comes beside it): anything bigger is dropped before it is buffered.
        let max_message_bytes = jetstream.client().max_payload() + MAX_TOPIC_BYTES;
        sources.push(Box::new(sources::zeromq::ZeroMqSource::new(
            config.ingestor.zeromq.clone(),
            max_message_bytes,
            metrics.clone(),
            lost_spans,
            restored,
        )?));
    }
    // AMQP deliveries carry their acks, so they have a relay loop of their own that settles
    // each one; it shares the relay (connection, metrics, health) with the other sources.
    let mut amqp_tasks = tokio::task::JoinSet::new();
    if !config.ingestor.amqp.url.is_empty() {
        let source = sources::amqp::AmqpSource::new(
            config.ingestor.amqp.clone(),
            config.ingestor.max_in_flight,
            metrics.clone(),
            health.clone(),
        )?;
        let (amqp_sender, amqp_receiver) = mpsc::channel(CHANNEL_CAPACITY);
        tracing::info!(source = source.name(), "starting source");
        amqp_tasks.spawn(source.run(amqp_sender, shutdown.clone()));
        let amqp_relay = relay.clone();
        amqp_tasks.spawn(async move {
            amqp_relay.run(amqp_receiver).await;
        });
    }
    if sources.is_empty() && backfill_tasks.is_empty() && amqp_tasks.is_empty() {
        tracing::warn!(
            "no source configured: set [ingestor.zeromq] endpoints, [ingestor.amqp] url or [ingestor.datagrepper] url"
        );
    }
    let mut source_tasks = tokio::task::JoinSet::new();
    for source in sources {
        tracing::info!(source = source.name(), "starting source");
        source_tasks.spawn(source.run(sender.clone(), shutdown.clone()));
    }
    drop(sender);

    health.set_ready();
    relay.run(receiver).await;
    while source_tasks.join_next().await.is_some() {}
    while amqp_tasks.join_next().await.is_some() {}
    for task in backfill_tasks {
        if let Err(join_error) = task.await {
            tracing::error!(%join_error, "a datagrepper task failed");
        }
    }
    tracing::info!("ingestor stopped");
    shutdown.cancel();
    let _ = dead_letter_watch.await;
    admin_server.finish().await.map_err(IngestorError::Admin)
}

/// What the stream's tail says the fedmsg endpoints carried, so that what was missed while the
/// ingestor was down is counted; empty (with a warning) if it cannot be read.
async fn restore_publisher_sequences(
    jetstream: &async_nats::jetstream::Context,
    config: &Config,
) -> sources::zeromq::publisher::Restored {
    let started = std::time::Instant::now();
    match sources::zeromq::publisher::restore(jetstream, &config.nats).await {
        Ok(restored) => {
            tracing::info!(messages = restored.len(), elapsed = ?started.elapsed(), "read fedmsg publishers' sequences back from the stream");
            restored
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read publishers' sequences back: losses while the ingestor was down are counted only as downtime");
            sources::zeromq::publisher::Restored::default()
        }
    }
}

/// What exiting abandons: the publishes awaiting JetStream's ack and the messages queued for
/// the relay. ZeroMQ has no redelivery, so its messages among them are lost (fedmsg's `i` shows
/// it at the next start); AMQP deliveries and datagrepper windows come again.
fn describe_abandoned(
    abandoned: &Abandoned,
    metrics: &Arc<metrics::Metrics>,
    queue: mpsc::WeakSender<source::Incoming>,
) {
    let awaiting_ack = metrics.in_flight.clone();
    abandoned.describe_with(move || {
        let queued = queue
            .upgrade()
            .map(|sender| sender.max_capacity() - sender.capacity())
            .unwrap_or(0);
        format!(
            "{} publishes awaiting JetStream's ack and {queued} messages queued for the relay, not stored (ZeroMQ's are lost unless datagrepper backfills them; AMQP deliveries and datagrepper windows come again)",
            awaiting_ack.get()
        )
    });
}

/// What the `backfill` command asks for.
#[derive(Debug, Clone)]
pub struct BackfillRequest {
    /// Epoch seconds, both included.
    pub range: Window,
    /// Filters instead of the configured ones, if given.
    pub filters: Option<Filters>,
    /// Fetch windows recorded complete too (their messages are de-duplicated, not doubled).
    pub refetch: bool,
}

/// Runs one backfill through the relay and returns when every window is stored (`Ok`) or
/// some failed (an error naming them), publishing [`Progress`] on `progress` as it goes.
pub async fn backfill(
    config: Config,
    request: BackfillRequest,
    progress: watch::Sender<Progress>,
    shutdown: CancellationToken,
) -> Result<Progress, IngestorError> {
    if config.ingestor.datagrepper.url.is_empty() {
        return Err(IngestorError::Backfill(BackfillError::Url {
            url: String::new(),
            detail: "set [ingestor.datagrepper] url".to_string(),
        }));
    }
    let config = Arc::new(config);
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(metrics::Metrics::new(&registry)?);
    let jetstream = connect_jetstream(&config).await?;
    let relay = Arc::new(relay::Relay::new(
        config.clone(),
        jetstream.clone(),
        metrics,
        Health::default(),
    ));
    let progress_store = open_progress_store(&jetstream, &config).await;
    let filters = match request.filters {
        Some(filters) => filters,
        None => configured_filters(&config),
    };
    let backfill = Backfill::new(
        &config.ingestor.datagrepper,
        filters,
        relay,
        progress_store,
        progress,
    )?;
    let report = backfill
        .run(request.range, !request.refetch, &shutdown)
        .await?;
    Ok(report)
}
