//! `statscache-worker replay`: re-run plugins over a range of the stream with an ephemeral
//! consumer beside the durable one, to fill a plugin added after the fact or re-run one whose
//! logic changed (`--rebuild`); or over the archive (`--from-archive`: the stored messages,
//! for history older than the stream's retention).

use std::sync::Arc;

use async_nats::jetstream::consumer::DeliverPolicy;
use bytes::Bytes;
use serde::Deserialize;
use statscache_shared::admin::Health;
use statscache_shared::config::Config;
use statscache_shared::message::Envelope;
use statscache_shared::progress::Progress;
use statscache_shared::schema;
use tokio_util::sync::CancellationToken;

use crate::faults::Faults;
use crate::identity::turns::Turns;
use crate::plugin::Message;
use crate::service::{prepare, process_name};
use crate::writer::{Pending, Writer};
use crate::{consumer, meta, metrics, plugins, WorkerError};

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReplayStart {
    /// A stream sequence number (1 is the oldest message the stream ever held).
    Sequence(u64),
    /// Messages that arrived in the stream at or after this time (epoch seconds).
    ArrivedSince(f64),
    /// The archive, not the stream: the stored messages (ClickHouse's `messages`, one copy per
    /// identity) whose event time is at or after this time (epoch seconds), in time order,
    /// however long ago the stream forgot them.
    Archive(f64),
}

/// Messages read from the archive at a time.
const ARCHIVE_BATCH: u64 = 5_000;

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
    let chosen = plugins::choose(&config.worker, &request.plugins)?;
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
    let registry = prometheus::Registry::new();
    let writer = Writer {
        config,
        jetstream: prepared.jetstream,
        clickhouse: prepared.clickhouse,
        plugins: chosen,
        metrics: Arc::new(metrics::Metrics::new(&registry)?),
        health: Health::default(),
        faults: Faults::default(),
    };
    let consumer_error = |detail: String| WorkerError::Consumer {
        name: "replay".into(),
        detail,
    };
    let deliver_policy = match request.start {
        ReplayStart::Archive(since) => return replay_archive(&writer, since, &shutdown).await,
        ReplayStart::Sequence(sequence) => DeliverPolicy::ByStartSequence {
            start_sequence: sequence.max(1),
        },
        ReplayStart::ArrivedSince(seconds) => {
            let start_time = time::OffsetDateTime::from_unix_timestamp(seconds as i64)
                .map_err(|e| consumer_error(format!("bad start time: {e}")))?;
            DeliverPolicy::ByStartTime { start_time }
        }
    };
    let mut stream = prepared.stream;
    let stream_end = stream
        .info()
        .await
        .map_err(|e| consumer_error(e.to_string()))?
        .state
        .last_sequence;
    let last_sequence = match stored_by_workers(&mut stream, &writer.config.worker.consumer).await {
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
    let mut consumer_config = consumer::consumer_config(&writer.config);
    consumer_config.durable_name = None;
    consumer_config.description = Some(format!("statscache replay into {:?}", request.plugins));
    consumer_config.deliver_policy = deliver_policy;
    consumer_config.inactive_threshold = std::time::Duration::from_secs(300);
    let ephemeral = stream
        .create_consumer(consumer_config)
        .await
        .map_err(|e| consumer_error(e.to_string()))?;
    tracing::info!(plugins = ?request.plugins, start = ?request.start, last_sequence, "replaying");

    let turns = Turns::open(
        &writer.jetstream,
        &writer.config.nats,
        &process_name("replay"),
    )
    .await?;
    let replayer = consumer::Consumer {
        writer,
        consumer: ephemeral,
        turns,
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

/// A stored message as the archive replay reads it.
#[derive(Debug, clickhouse::Row, Deserialize)]
struct Archived {
    time: u32,
    msg_id: String,
    body: String,
    source: String,
}

/// Replays the archive from event time `since` into `writer`'s plugins: every stored message,
/// once (the copy that counts, which the writer recognises as such: its identity row has the
/// fingerprint of these bytes), a batch of [`ARCHIVE_BATCH`] at a time in `(time, msg_id)`
/// order, the sort key of `messages`. Returns the number of messages stored.
async fn replay_archive(
    writer: &Writer,
    since: f64,
    shutdown: &CancellationToken,
) -> Result<u64, WorkerError> {
    let failed = |source| WorkerError::Archive(source);
    let since = since.max(0.0) as u32;
    let total: u64 = writer
        .clickhouse
        .query("SELECT count() FROM messages WHERE time >= toDateTime(?)")
        .bind(since)
        .fetch_one()
        .await
        .map_err(failed)?;
    tracing::info!(since, total, "replaying the archive");
    let mut bar = Progress::new("replaying the archive", "messages", total);
    let (mut after_time, mut after_id) = (since, String::new());
    let mut stored = 0;
    while !shutdown.is_cancelled() {
        let archived: Vec<Archived> = writer
            .clickhouse
            .query(
                "SELECT toUInt32(time) AS time, msg_id, body, source FROM messages \
                 WHERE time >= toDateTime(?) AND (time > toDateTime(?) OR msg_id > ?) \
                 ORDER BY time, msg_id LIMIT ?",
            )
            .bind(after_time)
            .bind(after_time)
            .bind(after_id.as_str())
            .bind(ARCHIVE_BATCH)
            .fetch_all()
            .await
            .map_err(failed)?;
        let Some(last) = archived.last() else {
            break;
        };
        (after_time, after_id) = (last.time, last.msg_id.clone());
        let mut pending = Vec::with_capacity(archived.len());
        for row in archived {
            let envelope = match Envelope::parse(row.body.as_bytes()) {
                Ok(envelope) => envelope,
                Err(error) => {
                    tracing::warn!(msg_id = %row.msg_id, %error, "a stored message no longer parses; skipped");
                    continue;
                }
            };
            let meta = meta::extract(&envelope);
            pending.push(Pending {
                message: Message {
                    identity: envelope.identity(),
                    envelope,
                    meta,
                    stream_sequence: 0,
                },
                payload: Bytes::from(row.body),
                source: row.source,
            });
        }
        let count = pending.len() as u64;
        let prepared = tokio::task::block_in_place(|| writer.prepare(pending));
        if writer.store(prepared, &[], shutdown).await?.is_none() {
            break;
        }
        stored += count;
        bar.advance_to(stored, &crate::tables::month_name(u64::from(after_time)));
    }
    bar.finish();
    Ok(stored)
}
