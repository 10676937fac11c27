//! Storing a batch of decoded messages: which copy of each identity counts, the rows of each,
//! the write and the rollups, every step retried until done.
//!
//! Two callers: the consumer (messages from the stream, acked once stored, their ack deadlines
//! extended while a step is slow) and the bootstrap (messages from datanommer's history,
//! nothing to ack). Each takes its turn first (`identity::turns`). The order of the steps is the
//! at-least-once half of the exactly-once invariant: the facts and every other row are written,
//! then the rollups and key counts recomputed from what is stored; a caller acknowledges or
//! records its progress only after [`Writer::store`] returned.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use statscache_shared::admin::Health;
use statscache_shared::config::Config;
use statscache_shared::nats::{self, DeadLetter, HEADER_STREAM_SEQUENCE};
use statscache_shared::retry::backoff;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::faults::Faults;
use crate::identity::copies::{self, Candidate, StoredCopy, Verdict};
use crate::identity::fingerprint;
use crate::key_counts;
use crate::metrics::Metrics;
use crate::plugin::{Fact, Message, Plugin, PluginError};
use crate::quorum;
use crate::rollup::{self, Touched};
use crate::rows::{CopyRow, MessageRow};
use crate::sink::{self, Batch};
use crate::WorkerError;

/// The first wait after another worker's insert held a table's quorum (`quorum`); it doubles
/// up to a second. Such an insert usually completes within milliseconds on a healthy cluster.
const CONTENTION_WAIT: Duration = Duration::from_millis(50);

/// Quorum contentions of one write before they are reported as failures: a replica that died
/// under another insert leaves that insert's quorum unsatisfied until it comes back.
const CONTENTION_PATIENCE: u32 = 20;

/// A decoded message to store, with the envelope as it is stored (`payload`) and where it came
/// from (`source`: `zeromq`, `amqp`, `datagrepper`, `bootstrap`...).
pub struct Pending {
    pub message: Message,
    pub payload: Bytes,
    pub source: String,
}

/// What storing needs, built once at start-up.
pub struct Writer {
    pub config: Config,
    /// For dead letters (a plugin failing on a message).
    pub jetstream: jetstream::Context,
    pub clickhouse: clickhouse::Client,
    pub plugins: Vec<Box<dyn Plugin>>,
    pub metrics: Arc<Metrics>,
    pub health: Health,
    /// Faults the crash-consistency tests inject (none in production).
    pub faults: Faults,
}

/// A message with its rows computed, before it is known whether it counts: running the
/// plugins is the CPU-heavy part of storing, and can go on while an earlier batch is written.
pub struct Prepared {
    pending: Pending,
    fingerprint: u64,
    content_fingerprint: u64,
    row: MessageRow,
    /// Each plugin's facts, by plugin index, or why the plugin failed on the message.
    facts: Vec<(usize, Result<Vec<Fact>, PluginError>)>,
}

/// A batch written: its rows, for the rollups, and how many facts each plugin gained.
pub struct Written {
    batch: Batch,
    facts_per_plugin: Vec<usize>,
}

impl Writer {
    /// Computes the rows of `pending`: every plugin whose topics and backlog take a message runs
    /// on it. No I/O.
    pub fn prepare(&self, pending: Vec<Pending>) -> Vec<Prepared> {
        let now = f64::from(now_seconds());
        let mut prepared = Vec::with_capacity(pending.len());
        for item in pending {
            let message = &item.message;
            let envelope = &message.envelope;
            let timestamp = envelope.event_time();
            let mut facts = Vec::new();
            for (index, plugin) in self.plugins.iter().enumerate() {
                let info = plugin.info();
                if !info.takes(&envelope.topic, timestamp, now) {
                    continue;
                }
                self.metrics
                    .processed
                    .with_label_values(&[&info.identifier])
                    .inc();
                let mut found = Vec::new();
                let outcome = plugin.process(message, &mut found).map(|()| found);
                facts.push((index, outcome));
            }
            let body = String::from_utf8_lossy(&item.payload).into_owned();
            let row = MessageRow::new(message, body, item.source.clone(), now_seconds());
            prepared.push(Prepared {
                fingerprint: fingerprint::of_copy(&item.payload),
                content_fingerprint: fingerprint::of_content(&envelope.msg),
                row,
                facts,
                pending: item,
            });
        }
        prepared
    }

    /// Stores `prepared` (in the order copies are decided between them: stream order, or the
    /// bootstrap's reading order): [`Writer::write`], then [`Writer::roll_up`]. Returns how
    /// many rows each plugin's facts gained, or `None` if shutdown came first (nothing is then
    /// known to be stored).
    pub async fn store(
        &self,
        prepared: Vec<Prepared>,
        held: &[jetstream::Message],
        shutdown: &CancellationToken,
    ) -> Result<Option<Vec<usize>>, WorkerError> {
        let Some(written) = self.write(prepared, held, shutdown).await? else {
            return Ok(None);
        };
        if !self.roll_up(&written, held, shutdown).await {
            return Ok(None);
        }
        Ok(Some(written.facts_per_plugin))
    }

    /// Decides which copy of each identity counts and writes the rows: the counted copies'
    /// messages, identities, history rows and facts, the others' copy rows. The rollups of
    /// what it touched are still to be recomputed ([`Writer::roll_up`]). `None` if shutdown
    /// came first.
    pub async fn write(
        &self,
        prepared: Vec<Prepared>,
        held: &[jetstream::Message],
        shutdown: &CancellationToken,
    ) -> Result<Option<Written>, WorkerError> {
        let started = Instant::now();
        let Some(verdicts) = self.verdicts_until_known(&prepared, held, shutdown).await else {
            return Ok(None);
        };
        let looked_up = started.elapsed();
        let messages = prepared.len();
        let mut batch = Batch::default();
        let mut facts_per_plugin = vec![0usize; self.plugins.len()];
        for (item, verdict) in prepared.into_iter().zip(verdicts) {
            match verdict {
                Verdict::Counts => {
                    self.add_rows(item, &mut batch, &mut facts_per_plugin)
                        .await?;
                }
                Verdict::Copy { canonical, differs } => {
                    self.add_copy(&item.pending, &canonical, &differs, &mut batch);
                }
            }
        }
        if !self.write_until_stored(&batch, held, shutdown).await {
            return Ok(None);
        }
        self.faults.facts_written();
        tracing::debug!(
            messages,
            ?looked_up,
            written = ?(started.elapsed() - looked_up),
            "batch written"
        );
        Ok(Some(Written {
            batch,
            facts_per_plugin,
        }))
    }

    /// Recomputes the rollups and key counts of what `written` touched, then tells the plugins.
    /// `false` if shutdown came first.
    pub async fn roll_up(
        &self,
        written: &Written,
        held: &[jetstream::Message],
        shutdown: &CancellationToken,
    ) -> bool {
        if !self
            .roll_up_until_done(&written.batch, held, shutdown)
            .await
        {
            return false;
        }
        for (index, plugin) in self.plugins.iter().enumerate() {
            if written.facts_per_plugin[index] > 0 {
                plugin.on_batch_written(written.facts_per_plugin[index]);
            }
        }
        true
    }

    /// Adds the rows of `prepared`, the copy of its identity that counts: its message, identity
    /// and history rows, and every plugin's facts. A plugin that failed on it has the message
    /// dead-lettered for that plugin; the others count it.
    async fn add_rows(
        &self,
        prepared: Prepared,
        batch: &mut Batch,
        facts_per_plugin: &mut [usize],
    ) -> Result<(), WorkerError> {
        let message = &prepared.pending.message;
        batch.push_message(
            prepared.row,
            prepared.fingerprint,
            prepared.content_fingerprint,
        );
        for (index, outcome) in prepared.facts {
            let info = self.plugins[index].info();
            let mut facts = match outcome {
                Ok(facts) => facts,
                Err(error) => {
                    // The message still counts for every other plugin; this failure is kept.
                    let detail = format!("plugin {}: {error}", info.identifier);
                    let letter = DeadLetter {
                        service: "worker",
                        reason: "plugin_error",
                        detail,
                        payload: &prepared.pending.payload,
                        headers: vec![(
                            HEADER_STREAM_SEQUENCE,
                            message.stream_sequence.to_string(),
                        )],
                    };
                    nats::publish_dead_letter(&self.jetstream, &self.config.nats, letter)
                        .await
                        .map_err(WorkerError::DeadLetter)?;
                    self.metrics
                        .dead_letters
                        .with_label_values(&["plugin_error"])
                        .inc();
                    continue;
                }
            };
            facts_per_plugin[index] += batch.push_facts(&info.table, message, &mut facts);
        }
        Ok(())
    }

    /// Which of `prepared` (in the order copies are decided) is the copy of its identity that
    /// counts (`identity::copies`), looked up until ClickHouse answers; `None` if shutdown came
    /// first.
    async fn verdicts_until_known(
        &self,
        prepared: &[Prepared],
        held: &[jetstream::Message],
        shutdown: &CancellationToken,
    ) -> Option<Vec<Verdict>> {
        let mut candidates = Vec::with_capacity(prepared.len());
        let mut identities = BTreeSet::new();
        for item in prepared {
            let message = &item.pending.message;
            identities.insert(message.identity.clone());
            candidates.push(Candidate {
                identity: message.identity.clone(),
                timestamp: message.envelope.event_time(),
                topic: message.envelope.topic.clone(),
                fingerprint: item.fingerprint,
                content_fingerprint: item.content_fingerprint,
            });
        }
        if candidates.is_empty() {
            return Some(Vec::new());
        }
        let stored = self
            .retry_until_done("identities", held, shutdown, || {
                copies::stored(&self.clickhouse, &identities)
            })
            .await?;
        Some(copies::decide(&candidates, &stored))
    }

    /// Keeps a copy of an identity that counts under another copy, and counts it.
    fn add_copy(
        &self,
        pending: &Pending,
        canonical: &StoredCopy,
        differs: &[&'static str],
        batch: &mut Batch,
    ) {
        let message = &pending.message;
        let envelope = &message.envelope;
        self.metrics.copies.inc();
        for field in differs {
            self.metrics
                .copy_differences
                .with_label_values(&[field])
                .inc();
        }
        tracing::debug!(
            identity = %message.identity,
            stream_sequence = message.stream_sequence,
            ?differs,
            "a copy of a stored message: kept aside, not counted"
        );
        let timestamp = envelope.event_time();
        batch.push_copy(CopyRow {
            msg_id: message.identity.clone(),
            time: timestamp as u32,
            timestamp,
            topic: envelope.topic.clone(),
            fingerprint: fingerprint::of_copy(&pending.payload),
            stream_sequence: message.stream_sequence,
            source: pending.source.clone(),
            canonical_timestamp: canonical.timestamp,
            canonical_topic: canonical.topic.clone(),
            differs: differs.iter().map(|field| field.to_string()).collect(),
            body: String::from_utf8_lossy(&pending.payload).into_owned(),
            seen_at: now_seconds(),
        });
    }

    /// Writes `batch`, retrying until it is stored. Returns `false` if shutdown came first: a
    /// write under way at shutdown may still finish within half of `shutdown-timeout`.
    async fn write_until_stored(
        &self,
        batch: &Batch,
        held: &[jetstream::Message],
        shutdown: &CancellationToken,
    ) -> bool {
        if batch.is_empty() {
            return true;
        }
        let written = self
            .retry_until_done("write", held, shutdown, || {
                sink::write(&self.clickhouse, batch)
            })
            .await
            .is_some();
        if written {
            for (table, rows) in &batch.facts {
                self.count_facts(table, rows.len());
            }
        }
        written
    }

    /// Recomputes the rollups and the key counts of what `batch` touched, retrying until done.
    /// Returns `false` if shutdown came first. The key counts read only presence rows, stored
    /// with the facts, so their one statement runs beside the rollups' rounds.
    async fn roll_up_until_done(
        &self,
        batch: &Batch,
        held: &[jetstream::Message],
        shutdown: &CancellationToken,
    ) -> bool {
        let started = Instant::now();
        let mut touched_plugins = Vec::new();
        for plugin in &self.plugins {
            let info = plugin.info();
            let Some(rows) = batch.facts.get(&info.table) else {
                continue;
            };
            if !rows.is_empty() {
                touched_plugins.push((info, Touched::of(rows)));
            }
        }
        if touched_plugins.is_empty() {
            return true;
        }
        let recompute_all = || async {
            let mut recomputes = Vec::with_capacity(touched_plugins.len());
            for (info, touched) in &touched_plugins {
                recomputes.push(rollup::recompute_touched(
                    &self.clickhouse,
                    &info.table,
                    info.kind,
                    touched,
                ));
            }
            let recount = key_counts::recount_touched(&self.clickhouse, batch.key_rows());
            let (recomputed, _) =
                futures::future::try_join(futures::future::try_join_all(recomputes), recount)
                    .await?;
            Ok(recomputed)
        };
        let Some(recomputed) = self
            .retry_until_done("rollup", held, shutdown, recompute_all)
            .await
        else {
            return false;
        };
        for per_plugin in recomputed {
            for (level, periods) in per_plugin {
                self.metrics
                    .rollup_periods
                    .with_label_values(&[level.name()])
                    .inc_by(periods as u64);
            }
        }
        self.metrics
            .rollup_seconds
            .observe(started.elapsed().as_secs_f64());
        true
    }

    /// Runs `attempt` until it succeeds, extending the ack deadlines of `held` between tries.
    /// Returns `None` if shutdown came first. Another worker's insert awaiting its quorum is a
    /// short wait, counted but not reported, unless it lasts (a replica died under that insert).
    pub async fn retry_until_done<T, F, Fut>(
        &self,
        what: &str,
        held: &[jetstream::Message],
        shutdown: &CancellationToken,
        mut attempt: F,
    ) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, clickhouse::error::Error>>,
    {
        let max_wait = self.config.worker.ack_wait / 3;
        let abandon_after = self.config.service.shutdown_timeout / 2;
        let mut failures = 0;
        let mut contended = 0;
        loop {
            let tries = failures + contended;
            let abandon = async {
                shutdown.cancelled().await;
                tokio::time::sleep(abandon_after).await;
            };
            let outcome = tokio::select! {
                _ = abandon => return None,
                outcome = self.holding(held, self.unready_while_slow(what, attempt()))
                    .instrument(tracing::info_span!("clickhouse", operation = what, tries)) => outcome,
            };
            let wait = match outcome {
                Ok(done) => {
                    if failures > 0 {
                        tracing::info!(what, tries, "ClickHouse succeeded after retries");
                        self.health.set_ready();
                    }
                    return Some(done);
                }
                Err(error) if quorum::is_contention(&error) && contended < CONTENTION_PATIENCE => {
                    self.metrics.quorum_waits.inc();
                    tracing::debug!(%error, what, tries, "another insert awaits its replicas; retrying");
                    contended += 1;
                    backoff(contended - 1, CONTENTION_WAIT, CONTENTION_WAIT * 20)
                }
                Err(error) => {
                    self.metrics.write_errors.inc();
                    self.health.set_not_ready(format!("clickhouse: {error}"));
                    tracing::warn!(%error, what, tries, "ClickHouse failed; retrying");
                    failures += 1;
                    backoff(failures - 1, Duration::from_millis(200), max_wait)
                }
            };
            self.extend_ack_deadlines(held).await;
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Runs `work`, one ClickHouse attempt; if it has not returned after half of `ack-wait`,
    /// the worker reports itself not ready until it does. Why: a frozen server, or quorum
    /// inserts waiting on a replica that is gone, keep their connection open and answer the
    /// readiness probe's `SELECT 1` (on a cluster, through a live replica), and an insert may
    /// wait a minute for its quorum before it fails.
    pub async fn unready_while_slow<T>(
        &self,
        what: &str,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let slow_after = self.config.worker.ack_wait / 2;
        tokio::pin!(work);
        tokio::select! {
            outcome = &mut work => return outcome,
            _ = tokio::time::sleep(slow_after) => {}
        }
        tracing::warn!(
            what,
            ?slow_after,
            "a ClickHouse request is slow; not ready until it returns"
        );
        self.health.set_not_ready(format!(
            "clickhouse: a {what} has not returned for {}s",
            slow_after.as_secs_f64()
        ));
        let outcome = work.await;
        self.health.set_ready();
        outcome
    }

    /// Runs `work` (a write, a rollup, or storing the batch before `held`). While it runs (a
    /// frozen ClickHouse can hold it for long), the held messages' ack deadlines are extended
    /// every third of `ack-wait`, so that JetStream does not redeliver them.
    pub async fn holding<T>(
        &self,
        held: &[jetstream::Message],
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let period = (self.config.worker.ack_wait / 3).max(Duration::from_millis(100));
        let mut keep_alive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tokio::pin!(work);
        loop {
            tokio::select! {
                outcome = &mut work => return outcome,
                _ = keep_alive.tick() => self.extend_ack_deadlines(held).await,
            }
        }
    }

    /// Keeps the messages ours: no redelivery, no delivery counted.
    pub async fn extend_ack_deadlines(&self, held: &[jetstream::Message]) {
        for message in held {
            let _ = message.ack_with(AckKind::Progress).await;
        }
    }

    fn count_facts(&self, table: &str, rows: usize) {
        for plugin in &self.plugins {
            if plugin.info().table == table {
                self.metrics
                    .facts_stored
                    .with_label_values(&[&plugin.info().identifier])
                    .inc_by(rows as u64);
            }
        }
    }
}

pub fn now_seconds() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or_default()
}
