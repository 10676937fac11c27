//! The worker's loop: fetch a bounded batch from the durable consumer, turn it into rows,
//! write them, then ack.
//!
//! All worker replicas pull from the *same* durable consumer, so JetStream spreads the messages
//! between them and a new replica takes a share at once. The order of operations is the
//! at-least-once half of the exactly-once invariant:
//!
//! 1. rejected messages (undecodable, a plugin error) are first published to the dead-letter
//!    stream, and only then acked;
//! 2. the batch's rows are written to ClickHouse, retried until they are stored (while a write
//!    is slow or retried, the messages' ack deadlines are extended so JetStream does not count
//!    a redelivery: `ack-wait` is short, so that a dead worker's batch comes back in seconds);
//! 3. the rollups of the (key, period)s the batch touched — hours, days, months, years — are
//!    recomputed from the stored facts (`rollup`), and the key counts of its days and months
//!    from the presence rows written with the facts (`key_counts`, beside the hours'
//!    recomputation), retried and held the same way:
//!    a worker that dies before this point gets its messages redelivered, and the redelivery
//!    recomputes them;
//! 4. only then are the messages acked.
//!
//! The other half — redelivered or duplicated messages not being counted twice — is the fact
//! model of `statscache_shared::schema`.
//!
//! While one batch goes through these steps, the next one is collected (`store_while_fetching`),
//! and that batch closes as soon as this one is stored (not later than `batch-timeout`), so a
//! message waits for about one write and its own, not for a write, a clock and a write.
//!
//! On shutdown the batch in flight — being fetched or being written — is finished and acked;
//! a batch whose write cannot complete in time is given back (nak) for another replica.
//!
//! Tracing: each message gets a `store` span, a child of the `publish` span whose context the
//! ingestor put in its headers, so one message is one trace from publish to ack; the batch's
//! shared work (fetch to ack, the ClickHouse writes and rollups) is one `store_batch` span that
//! each `store` span links to. Children rather than links for the messages: a span has one
//! parent, and a batch of a thousand messages belongs to a thousand traces.
//!
//! JetStream itself never drops a message for too many deliveries (`max_deliver` is unlimited on
//! the consumer). Instead a message that keeps coming back — because processing it crashed a
//! worker, say — is parked on the dead-letter stream once it reaches `[worker] max-deliver`.

use std::collections::BTreeSet;
use std::future::ready;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, AckKind};
use futures::channel::oneshot;
use statscache_shared::admin::Health;
use statscache_shared::config::Config;
use statscache_shared::message::Envelope;
use statscache_shared::nats::{
    self, DeadLetter, HEADER_MSG_ID, HEADER_SOURCE, HEADER_STREAM_SEQUENCE,
};
use statscache_shared::progress::Progress;
use statscache_shared::retry::backoff;
use statscache_shared::trace_context;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::faults::Faults;
use crate::fetch::Fetcher;
use crate::identity::barrier::Barrier;
use crate::identity::copies::{self, Candidate, StoredCopy, Verdict};
use crate::identity::fingerprint;
use crate::identity::turns::{self, Turns};
use crate::key_counts;
use crate::meta;
use crate::metrics::Metrics;
use crate::plugin::{Fact, Message, Plugin};
use crate::quorum;
use crate::rollup::{self, Touched};
use crate::rows::{CopyRow, MessageRow};
use crate::sink::{self, Batch};
use crate::WorkerError;

/// How long a run waiting at its barrier waits between two looks (pulling meanwhile).
const BARRIER_POLL: Duration = Duration::from_millis(250);

/// How many messages a run waiting at its barrier pulls at each look, at most.
const BARRIER_PULL: usize = 16;

/// How long, beyond twice `batch-timeout`, a fetch under way at shutdown may take to finish.
const FETCH_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A batch is open at least `batch-timeout` / this before it may close early, so a trickle of
/// messages makes at most this many batches per `batch-timeout`.
const LINGER_DIVISOR: u32 = 4;

/// The first wait after another worker's insert held a table's quorum (`quorum`); it doubles
/// up to a second. Such an insert usually completes within milliseconds on a healthy cluster.
const CONTENTION_WAIT: Duration = Duration::from_millis(50);

/// Quorum contentions of one write before they are reported as failures: a replica that died
/// under another insert leaves that insert's quorum unsatisfied until it comes back.
const CONTENTION_PATIENCE: u32 = 20;

/// Everything the loop needs, built once at start-up.
pub struct Consumer {
    pub config: Config,
    pub jetstream: jetstream::Context,
    pub consumer: jetstream::consumer::Consumer<pull::Config>,
    pub clickhouse: clickhouse::Client,
    pub plugins: Vec<Box<dyn Plugin>>,
    pub metrics: Arc<Metrics>,
    pub health: Health,
    /// Faults the crash-consistency tests inject (none in production).
    pub faults: Faults,
    /// Turns with bootstrap batches, which store identities outside the stream.
    pub turns: Turns,
}

/// The durable consumer's settings, shared by every replica.
pub fn consumer_config(config: &Config) -> pull::Config {
    pull::Config {
        durable_name: Some(config.worker.consumer.clone()),
        description: Some("statscache workers: every plugin, all replicas".to_string()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: config.worker.ack_wait,
        deliver_policy: DeliverPolicy::All,
        filter_subject: format!("{}.>", config.nats.subject_prefix),
        max_deliver: -1,
        max_ack_pending: (config.worker.batch_size * 16) as i64,
        ..Default::default()
    }
}

impl Consumer {
    /// Runs until `shutdown` is cancelled; the batch in flight is finished first.
    ///
    /// What the worker holds is stored one run at a time, oldest first, each once its barrier
    /// passes (`identity`): a run that waits keeps everything held and pulls a little more, so
    /// that an older message coming back to this worker is stored first.
    pub async fn run(
        &self,
        shutdown: CancellationToken,
        mut barrier: Barrier,
    ) -> Result<(), WorkerError> {
        let mut fetcher = Fetcher::new(self.consumer.clone(), self.jetstream.clone()).await?;
        self.health.set_ready();
        let batch_size = self.config.worker.batch_size;
        let mut held: Vec<jetstream::Message> = Vec::new();
        while !shutdown.is_cancelled() {
            if held.is_empty() {
                match self
                    .next_batch(&mut fetcher, &shutdown, ready(()), batch_size)
                    .await
                {
                    Some(messages) => held = messages,
                    None => continue,
                }
            }
            let Some(run) = self
                .settled_run(&mut held, &mut fetcher, &mut barrier, &shutdown)
                .await
            else {
                continue;
            };
            if let Some(next) = self
                .store_while_fetching(run, &held, &mut fetcher, &shutdown)
                .await?
            {
                held.extend(next);
            }
        }
        // Fetched while the last run was stored: stored too if nothing older is pending, else
        // given back, not left to wait out `ack-wait`.
        loop {
            match barrier.oldest_run(&mut held, batch_size).await {
                Ok(Some(run)) if run.settled => {
                    self.handle_batch(run.messages, &shutdown).await?;
                }
                Ok(Some(run)) => self.give_back(&run.messages).await,
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "cannot tell whether older messages are stored");
                    self.give_back(&held).await;
                    break;
                }
            }
        }
        fetcher.give_back_undelivered().await;
        self.flush_acks().await;
        tracing::info!("worker stopped");
        Ok(())
    }

    /// The oldest run of `held` once its barrier passes, or `None` if shutdown came first.
    ///
    /// While the run waits, everything held is kept (its ack deadlines extended) and a few
    /// messages more are pulled: what the run waits for may be an older message coming back
    /// after its holder died, delivered to this worker; it then opens the run instead.
    async fn settled_run(
        &self,
        held: &mut Vec<jetstream::Message>,
        fetcher: &mut Fetcher,
        barrier: &mut Barrier,
        shutdown: &CancellationToken,
    ) -> Option<Vec<jetstream::Message>> {
        let keep_alive_every = (self.config.worker.ack_wait / 3).max(Duration::from_millis(100));
        let mut waiting_since: Option<Instant> = None;
        let mut kept_alive = Instant::now();
        loop {
            if kept_alive.elapsed() >= keep_alive_every {
                self.extend_ack_deadlines(held).await;
                kept_alive = Instant::now();
            }
            if shutdown.is_cancelled() {
                return None;
            }
            let found = barrier
                .oldest_run(held, self.config.worker.batch_size)
                .await;
            let run = match found {
                Ok(Some(run)) => run,
                Ok(None) => return None,
                Err(error) => {
                    tracing::warn!(%error, "cannot tell whether older messages are stored; waiting");
                    tokio::time::sleep(BARRIER_POLL).await;
                    continue;
                }
            };
            if run.settled {
                if let Some(since) = waiting_since {
                    let waited = since.elapsed();
                    self.metrics
                        .barrier_wait_seconds
                        .observe(waited.as_secs_f64());
                    tracing::debug!(?waited, "older messages settled; storing the run");
                }
                return Some(run.messages);
            }
            if waiting_since.is_none() {
                waiting_since = Some(Instant::now());
                self.metrics.barrier_waits.inc();
                tracing::debug!(
                    first_sequence = run.bounds.first_sequence,
                    "waiting for older messages to be stored before looking identities up"
                );
            }
            held.extend(run.messages);
            let pulled = fetcher
                .next_batch(BARRIER_PULL, BARRIER_POLL, BARRIER_POLL, ready(()))
                .await;
            match pulled {
                Ok(messages) => held.extend(messages),
                Err(error) => {
                    tracing::warn!(%error, "cannot fetch from JetStream; retrying");
                    tokio::time::sleep(BARRIER_POLL).await;
                }
            }
        }
    }

    /// Acks are queued on the NATS connection, not sent at once: before the process exits,
    /// send what is queued, or the last batch stored would be redelivered for nothing.
    async fn flush_acks(&self) {
        let client = self.jetstream.client();
        match tokio::time::timeout(FETCH_SHUTDOWN_GRACE, client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot send the last acks; those messages will be redelivered")
            }
            Err(_elapsed) => tracing::warn!(
                "sending the last acks timed out; those messages will be redelivered"
            ),
        }
    }

    /// Processes the stream up to `last_sequence` (inclusive), then returns the number of
    /// messages stored. Used by `statscache-worker replay` with an ephemeral consumer.
    pub async fn replay(
        &self,
        shutdown: CancellationToken,
        last_sequence: u64,
    ) -> Result<u64, WorkerError> {
        let mut fetcher = Fetcher::new(self.consumer.clone(), self.jetstream.clone()).await?;
        let mut stored = 0;
        // The first sequence replayed is known with the first batch; the bar counts from it.
        let mut progress: Option<(u64, Progress)> = None;
        while !shutdown.is_cancelled() {
            let Some(messages) = self
                .next_batch(
                    &mut fetcher,
                    &shutdown,
                    ready(()),
                    self.config.worker.batch_size,
                )
                .await
            else {
                continue;
            };
            let batch_size = messages.len() as u64;
            let first_in_batch = messages
                .first()
                .and_then(|message| message.info().ok())
                .map(|info| info.stream_sequence);
            let Some(highest) = self.handle_batch(messages, &shutdown).await? else {
                continue;
            };
            stored += batch_size;
            let (first, bar) = progress.get_or_insert_with(|| {
                let first = first_in_batch.unwrap_or(1);
                let span = last_sequence.saturating_sub(first) + 1;
                (first, Progress::new("replaying", "messages", span))
            });
            let done = highest.saturating_sub(*first) + 1;
            bar.advance_to(done, &format!("sequence {highest}, {stored} stored"));
            if highest >= last_sequence {
                break;
            }
        }
        if let Some((_, bar)) = progress {
            bar.finish();
        }
        Ok(stored)
    }

    /// The next non-empty batch, or `None` (after a pause if fetching failed). It may close
    /// early once `previous_stored` has resolved (see [`Fetcher::next_batch`]); pass a ready
    /// future when no batch is being stored.
    ///
    /// A fetch under way when shutdown comes is allowed to finish (it ends by itself after
    /// `batch-timeout`, see [`Fetcher`]), so that what JetStream already delivered to this
    /// replica is stored and acked rather than left to wait out `ack-wait` before another
    /// replica gets it. Only a fetch still not done a grace period later is abandoned.
    /// NATS being down is reported by the readiness probe, not here.
    async fn next_batch(
        &self,
        fetcher: &mut Fetcher,
        shutdown: &CancellationToken,
        previous_stored: impl std::future::Future<Output = ()>,
        max_messages: usize,
    ) -> Option<Vec<jetstream::Message>> {
        let batch_timeout = self.config.worker.batch_timeout;
        let grace = batch_timeout * 2 + FETCH_SHUTDOWN_GRACE;
        let abandon = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        let fetch = fetcher.next_batch(
            max_messages,
            batch_timeout,
            batch_timeout / LINGER_DIVISOR,
            previous_stored,
        );
        let fetched = tokio::select! {
            _ = abandon => return None,
            fetched = fetch => fetched,
        };
        match fetched {
            Ok(messages) if messages.is_empty() => None,
            Ok(messages) => Some(messages),
            Err(error) => {
                tracing::warn!(%error, "cannot fetch from JetStream; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                None
            }
        }
    }

    /// Stores and acks `messages` while the next batch is collected; returns the next batch.
    ///
    /// Why both at once: one after the other, a message arriving while a batch is written
    /// waits for that write, then for the next batch to close (`batch-timeout`), then for its
    /// own write. Collected meanwhile, it waits for this write (at least a linger, at most one
    /// batch clock: the next batch closes once this one is stored) and its own write. A write
    /// that outlasts the collection holds the next batch's messages as it holds its own
    /// (progress acks), so a slow ClickHouse does not get them redelivered.
    ///
    /// `waiting` are the messages held for later runs: kept meanwhile, and counted against the
    /// next batch's size, so that a worker never holds much more than two batches.
    async fn store_while_fetching(
        &self,
        messages: Vec<jetstream::Message>,
        waiting: &[jetstream::Message],
        fetcher: &mut Fetcher,
        shutdown: &CancellationToken,
    ) -> Result<Option<Vec<jetstream::Message>>, WorkerError> {
        let (stored_sender, stored_receiver) = oneshot::channel::<()>();
        let store = async {
            let stored = self
                .holding(waiting, self.handle_batch(messages, shutdown))
                .await;
            let _ = stored_sender.send(());
            stored
        };
        tokio::pin!(store);
        let previous_stored = async {
            let _ = stored_receiver.await;
        };
        let room = self.config.worker.batch_size.saturating_sub(waiting.len());
        let fetch = async {
            if room == 0 {
                previous_stored.await;
                return None;
            }
            self.next_batch(fetcher, shutdown, previous_stored, room)
                .await
        };
        tokio::pin!(fetch);
        let (stored, next) = tokio::select! {
            stored = &mut store => (stored?, fetch.await),
            next = &mut fetch => {
                let held = next.as_deref().unwrap_or_default();
                (self.holding(held, &mut store).await?, next)
            }
        };
        if stored.is_none() {
            // Shutdown cut the write short (ClickHouse is stuck): the next batch would be too.
            if let Some(next) = next {
                self.give_back(&next).await;
            }
            return Ok(None);
        }
        Ok(next)
    }

    /// Stores one batch and acks it; returns the highest stream sequence it held, or `None`
    /// if shutdown interrupted the write (nothing acked).
    async fn handle_batch(
        &self,
        messages: Vec<jetstream::Message>,
        shutdown: &CancellationToken,
    ) -> Result<Option<u64>, WorkerError> {
        let batch_span = tracing::info_span!(
            parent: None,
            "store_batch",
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.batch.message_count = messages.len(),
        );
        self.store_batch(messages, shutdown, &batch_span)
            .instrument(batch_span.clone())
            .await
    }

    async fn store_batch(
        &self,
        messages: Vec<jetstream::Message>,
        shutdown: &CancellationToken,
        batch_span: &tracing::Span,
    ) -> Result<Option<u64>, WorkerError> {
        let started = Instant::now();
        let mut batch = Batch::default();
        // Each ends when dropped: after the ack, or when its message is parked or given back.
        let mut message_spans = Vec::with_capacity(messages.len());
        let mut facts_per_plugin = vec![0usize; self.plugins.len()];
        let mut highest_sequence = 0;
        let mut accepted = Vec::with_capacity(messages.len());
        for message in messages {
            self.metrics.received.inc();
            if let Ok(info) = message.info() {
                highest_sequence = highest_sequence.max(info.stream_sequence);
            }
            let message_span = store_span(&message, batch_span);
            match self
                .decode(&message)
                .instrument(message_span.clone())
                .await?
            {
                Decoded::Rejected => continue,
                Decoded::Accepted(decoded) => {
                    message_span.record("messaging.message.id", decoded.identity.as_str());
                    accepted.push((message, decoded));
                    message_spans.push(message_span);
                }
            }
        }
        accepted.sort_by_key(|(_, decoded)| decoded.stream_sequence);
        let (deliveries, decoded): (Vec<jetstream::Message>, Vec<Message>) = accepted
            .into_iter()
            .map(|(delivery, decoded)| (delivery, *decoded))
            .unzip();

        let Some(turn) = self.take_turn(&deliveries, shutdown).await else {
            self.give_back(&deliveries).await;
            return Ok(None);
        };
        let stored = self
            .store_accepted(
                deliveries,
                decoded,
                &mut batch,
                &mut facts_per_plugin,
                shutdown,
            )
            .await;
        turn.give_back().await;
        let Some(to_ack) = stored? else {
            return Ok(None);
        };
        for (index, plugin) in self.plugins.iter().enumerate() {
            if facts_per_plugin[index] > 0 {
                plugin.on_batch_written(facts_per_plugin[index]);
            }
        }
        self.metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(messages = to_ack, elapsed = ?started.elapsed(), "batch stored");
        Ok(Some(highest_sequence))
    }

    /// The run's turn to look its identities up and store them (`identity::turns`): while a
    /// bootstrap batch goes first, waits, keeping `held`. `None` if shutdown came first.
    async fn take_turn(
        &self,
        held: &[jetstream::Message],
        shutdown: &CancellationToken,
    ) -> Option<turns::Held> {
        let mut waiting = false;
        loop {
            match self.holding(held, self.turns.run_turn()).await {
                Ok(Some(turn)) => return Some(turn),
                Ok(None) if !waiting => {
                    tracing::debug!("a bootstrap batch stores its identities first; waiting");
                    waiting = true;
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "cannot take a turn; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = self.holding(held, tokio::time::sleep(BARRIER_POLL)) => {}
            }
        }
    }

    /// Looks up, writes, rolls up and acks the decoded messages of a batch (in stream order),
    /// during the run's turn. Returns how many were acked, or `None` if shutdown came first
    /// (they are given back).
    async fn store_accepted(
        &self,
        deliveries: Vec<jetstream::Message>,
        decoded: Vec<Message>,
        batch: &mut Batch,
        facts_per_plugin: &mut [usize],
        shutdown: &CancellationToken,
    ) -> Result<Option<usize>, WorkerError> {
        let mut to_ack = Vec::with_capacity(deliveries.len());
        let Some(verdicts) = self
            .verdicts_until_known(&deliveries, &decoded, shutdown)
            .await
        else {
            self.give_back(&deliveries).await;
            return Ok(None);
        };
        for ((message, decoded), verdict) in deliveries.into_iter().zip(decoded).zip(verdicts) {
            match verdict {
                Verdict::Counts => {
                    self.add_rows(&decoded, &message, batch, facts_per_plugin)
                        .await?;
                }
                Verdict::Copy { canonical, differs } => {
                    self.add_copy(&decoded, &message, &canonical, &differs, batch);
                }
            }
            to_ack.push(message);
        }

        let mut stored = self.write_until_stored(batch, &to_ack, shutdown).await;
        if stored {
            self.faults.facts_written();
            stored = self.roll_up_until_done(batch, &to_ack, shutdown).await;
        }
        if !stored {
            // Shutting down before the rows were stored and rolled up.
            self.give_back(&to_ack).await;
            return Ok(None);
        }
        self.faults.before_ack();
        for message in &to_ack {
            if let Err(error) = message.ack().await {
                // The rows are stored; a lost ack only means a harmless redelivery.
                tracing::warn!(%error, "ack failed; the message will be redelivered and de-duplicated");
            }
            self.metrics.stored.inc();
        }
        if let Some(last) = to_ack.last() {
            if let Ok(info) = last.info() {
                self.metrics.pending.set(info.pending as i64);
            }
        }
        Ok(Some(to_ack.len()))
    }

    /// Gives `messages` back (nak) so that JetStream redelivers them at once to a replica that
    /// can store them, rather than after `ack-wait`.
    async fn give_back(&self, messages: &[jetstream::Message]) {
        for message in messages {
            if let Err(error) = message.ack_with(AckKind::Nak(None)).await {
                tracing::warn!(%error, "cannot give a message back; it is redelivered after ack-wait");
            }
        }
    }

    /// Decodes one delivery, parking it on the dead-letter stream when it cannot be used.
    async fn decode(&self, message: &jetstream::Message) -> Result<Decoded, WorkerError> {
        let (stream_sequence, delivered) = match message.info() {
            Ok(info) => (info.stream_sequence, info.delivered),
            Err(_) => (0, 1),
        };
        if delivered > 1 {
            self.metrics.redelivered.inc();
        }
        if self.config.worker.max_deliver > 0 && delivered > self.config.worker.max_deliver {
            let detail = format!("delivered {delivered} times without being stored");
            self.park(message, stream_sequence, "poison", detail)
                .await?;
            return Ok(Decoded::Rejected);
        }
        let envelope = match Envelope::parse(&message.payload) {
            Ok(envelope) => envelope,
            Err(invalid) => {
                self.park(
                    message,
                    stream_sequence,
                    invalid.reason(),
                    invalid.to_string(),
                )
                .await?;
                return Ok(Decoded::Rejected);
            }
        };
        let identity = envelope.identity();
        if header_value(message, HEADER_MSG_ID) != identity {
            self.rerelay(message, &identity).await;
            return Ok(Decoded::Rejected);
        }
        let meta = meta::extract(&envelope);
        Ok(Decoded::Accepted(Box::new(Message {
            envelope,
            identity,
            meta,
            stream_sequence,
        })))
    }

    /// Publishes again, with its identity as `Nats-Msg-Id`, a message that reached the stream
    /// without it (written by hand, or by another publisher than the relay), then terminates
    /// the original. Why: two copies of an identity in the stream are a duplicate window apart
    /// only if JetStream de-duplicated them, which the worker's choice of the copy that counts
    /// relies on (`identity`). A copy within the window of another is dropped by JetStream; one
    /// beyond it is stored and treated like any copy. If the publish fails, the message is given
    /// back and tried again when it comes back.
    async fn rerelay(&self, message: &jetstream::Message, identity: &str) {
        let mut headers = message.headers.clone().unwrap_or_default();
        headers.insert(HEADER_MSG_ID, identity);
        let published = self
            .jetstream
            .publish_with_headers(message.subject.clone(), headers, message.payload.clone())
            .await;
        let acked = match published {
            Ok(ack) => ack.await.map(|_| ()).map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = acked {
            tracing::warn!(%error, identity, "cannot publish a message again with its identity; giving it back");
            self.give_back(std::slice::from_ref(message)).await;
            return;
        }
        self.metrics.rerelayed.inc();
        tracing::info!(identity, subject = %message.subject, "a message without its identity header was published again with it");
        if let Err(error) = message.ack_with(AckKind::Term).await {
            tracing::warn!(%error, "cannot terminate a message published again; it will be de-duplicated when it comes back");
        }
    }

    /// Dead-letters and acks (terminates) a message, so it is kept but never redelivered.
    async fn park(
        &self,
        message: &jetstream::Message,
        stream_sequence: u64,
        reason: &str,
        detail: String,
    ) -> Result<(), WorkerError> {
        tracing::warn!(stream_sequence, reason, %detail, "parking message on the dead-letter stream");
        let letter = DeadLetter {
            service: "worker",
            reason,
            detail,
            payload: &message.payload,
            headers: vec![(HEADER_STREAM_SEQUENCE, stream_sequence.to_string())],
        };
        nats::publish_dead_letter(&self.jetstream, &self.config.nats, letter)
            .await
            .map_err(WorkerError::DeadLetter)?;
        self.metrics.dead_letters.with_label_values(&[reason]).inc();
        if let Err(error) = message.ack_with(AckKind::Term).await {
            tracing::warn!(%error, "cannot terminate a parked message; it may come back and be parked again");
        }
        Ok(())
    }

    async fn add_rows(
        &self,
        message: &Message,
        delivery: &jetstream::Message,
        batch: &mut Batch,
        facts_per_plugin: &mut [usize],
    ) -> Result<(), WorkerError> {
        let envelope = &message.envelope;
        let timestamp = envelope.event_time();
        let source = header_value(delivery, HEADER_SOURCE);
        let body = String::from_utf8_lossy(&delivery.payload).into_owned();
        batch.push_message(
            MessageRow::new(message, body, source, now_seconds()),
            fingerprint::of_copy(&delivery.payload),
            fingerprint::of_content(&envelope.msg),
        );

        let mut facts: Vec<Fact> = Vec::new();
        for (index, plugin) in self.plugins.iter().enumerate() {
            let info = plugin.info();
            if !info.takes(&envelope.topic, timestamp, f64::from(now_seconds())) {
                continue;
            }
            facts.clear();
            self.metrics
                .processed
                .with_label_values(&[&info.identifier])
                .inc();
            if let Err(error) = plugin.process(message, &mut facts) {
                // The message still counts for every other plugin; this plugin's failure is kept.
                let detail = format!("plugin {}: {error}", info.identifier);
                let letter = DeadLetter {
                    service: "worker",
                    reason: "plugin_error",
                    detail,
                    payload: &delivery.payload,
                    headers: vec![(HEADER_STREAM_SEQUENCE, message.stream_sequence.to_string())],
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
            facts_per_plugin[index] += batch.push_facts(&info.table, message, &mut facts);
        }
        Ok(())
    }

    /// Which of `accepted` (in stream order) is the copy of its identity that counts
    /// (`identity::copies`), looked up until ClickHouse answers; `None` if shutdown came first.
    async fn verdicts_until_known(
        &self,
        deliveries: &[jetstream::Message],
        decoded: &[Message],
        shutdown: &CancellationToken,
    ) -> Option<Vec<Verdict>> {
        let mut candidates = Vec::with_capacity(decoded.len());
        let mut identities = BTreeSet::new();
        for (delivery, message) in deliveries.iter().zip(decoded) {
            identities.insert(message.identity.clone());
            candidates.push(Candidate {
                identity: message.identity.clone(),
                timestamp: message.envelope.event_time(),
                topic: message.envelope.topic.clone(),
                fingerprint: fingerprint::of_copy(&delivery.payload),
                content_fingerprint: fingerprint::of_content(&message.envelope.msg),
            });
        }
        if candidates.is_empty() {
            return Some(Vec::new());
        }
        let stored = self
            .retry_until_done("identities", deliveries, shutdown, || {
                copies::stored(&self.clickhouse, &identities)
            })
            .await?;
        Some(copies::decide(&candidates, &stored))
    }

    /// Keeps a copy of an identity that counts under another copy, and counts it.
    fn add_copy(
        &self,
        message: &Message,
        delivery: &jetstream::Message,
        canonical: &StoredCopy,
        differs: &[&'static str],
        batch: &mut Batch,
    ) {
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
            fingerprint: fingerprint::of_copy(&delivery.payload),
            stream_sequence: message.stream_sequence,
            source: header_value(delivery, HEADER_SOURCE),
            canonical_timestamp: canonical.timestamp,
            canonical_topic: canonical.topic.clone(),
            differs: differs.iter().map(|field| field.to_string()).collect(),
            body: String::from_utf8_lossy(&delivery.payload).into_owned(),
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
    async fn retry_until_done<T, F, Fut>(
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
    async fn unready_while_slow<T>(
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
    async fn holding<T>(
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
    async fn extend_ack_deadlines(&self, held: &[jetstream::Message]) {
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

/// The `store` span of one delivery: a child of the trace context its headers carry (a new
/// trace if none), linked to the batch it is stored with.
fn store_span(message: &jetstream::Message, batch: &tracing::Span) -> tracing::Span {
    let (stream_sequence, delivered) = match message.info() {
        Ok(info) => (info.stream_sequence, info.delivered),
        Err(_) => (0, 1),
    };
    let span = tracing::info_span!(
        parent: None,
        "store",
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.destination.name = %message.subject,
        messaging.message.id = tracing::field::Empty,
        messaging.nats.stream_sequence = stream_sequence,
        messaging.nats.delivered = delivered,
    );
    trace_context::continue_trace(&span, trace_context::from_nats(message.headers.as_ref()));
    trace_context::link(&span, batch);
    span
}

/// The value of header `name` of `delivery`, or `""`.
fn header_value(delivery: &jetstream::Message, name: &str) -> String {
    delivery
        .headers
        .as_ref()
        .and_then(|headers| headers.get(name))
        .map(|value| value.as_str().to_string())
        .unwrap_or_default()
}

enum Decoded {
    Accepted(Box<Message>),
    Rejected,
}

fn now_seconds() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or_default()
}
