//! The worker's loop: fetch a bounded batch from the durable consumer, store it run by run
//! (`identity`: oldest first, each once its barrier passed and in its turn), then ack.
//!
//! All worker replicas pull from the *same* durable consumer, so JetStream spreads the messages
//! between them and a new replica takes a share at once. The order of operations is the
//! at-least-once half of the exactly-once invariant:
//!
//! 1. rejected messages (undecodable, a plugin error) are first published to the dead-letter
//!    stream, and only then acked;
//! 2. the run is stored by the [`Writer`]: which copy of each identity counts, then its rows,
//!    then the rollups and key counts of what it touched, each step retried until done; while a
//!    step is slow or retried, the messages' ack deadlines are extended so JetStream does not
//!    count a redelivery (`ack-wait` is short, so that a dead worker's batch comes back in
//!    seconds). A worker that dies before the end gets its messages redelivered, and the
//!    redelivery writes and recomputes them again;
//! 3. only then are the messages acked.
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

use std::future::ready;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, AckKind};
use futures::channel::oneshot;
use statscache_shared::config::Config;
use statscache_shared::message::Envelope;
use statscache_shared::nats::{
    self, DeadLetter, HEADER_MSG_ID, HEADER_SOURCE, HEADER_STREAM_SEQUENCE,
};
use statscache_shared::progress::Progress;
use statscache_shared::trace_context;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::fetch::Fetcher;
use crate::identity::barrier::Barrier;
use crate::identity::turns::{self, Turns};
use crate::meta;
use crate::plugin::Message;
use crate::writer::{Pending, Writer};
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

/// Everything the loop needs, built once at start-up.
pub struct Consumer {
    /// Stores what the loop takes.
    pub writer: Writer,
    pub consumer: jetstream::consumer::Consumer<pull::Config>,
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
        let mut fetcher =
            Fetcher::new(self.consumer.clone(), self.writer.jetstream.clone()).await?;
        self.writer.health.set_ready();
        let batch_size = self.writer.config.worker.batch_size;
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
        let keep_alive_every =
            (self.writer.config.worker.ack_wait / 3).max(Duration::from_millis(100));
        let mut waiting_since: Option<Instant> = None;
        let mut kept_alive = Instant::now();
        loop {
            if kept_alive.elapsed() >= keep_alive_every {
                self.writer.extend_ack_deadlines(held).await;
                kept_alive = Instant::now();
            }
            if shutdown.is_cancelled() {
                return None;
            }
            let found = barrier
                .oldest_run(held, self.writer.config.worker.batch_size)
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
                    self.writer
                        .metrics
                        .barrier_wait_seconds
                        .observe(waited.as_secs_f64());
                    tracing::debug!(?waited, "older messages settled; storing the run");
                }
                return Some(run.messages);
            }
            if waiting_since.is_none() {
                waiting_since = Some(Instant::now());
                self.writer.metrics.barrier_waits.inc();
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
        let client = self.writer.jetstream.client();
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
        let mut fetcher =
            Fetcher::new(self.consumer.clone(), self.writer.jetstream.clone()).await?;
        let mut stored = 0;
        // The first sequence replayed is known with the first batch; the bar counts from it.
        let mut progress: Option<(u64, Progress)> = None;
        while !shutdown.is_cancelled() {
            let Some(messages) = self
                .next_batch(
                    &mut fetcher,
                    &shutdown,
                    ready(()),
                    self.writer.config.worker.batch_size,
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
        let batch_timeout = self.writer.config.worker.batch_timeout;
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
                .writer
                .holding(waiting, self.handle_batch(messages, shutdown))
                .await;
            let _ = stored_sender.send(());
            stored
        };
        tokio::pin!(store);
        let previous_stored = async {
            let _ = stored_receiver.await;
        };
        let room = self
            .writer
            .config
            .worker
            .batch_size
            .saturating_sub(waiting.len());
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
                (self.writer.holding(held, &mut store).await?, next)
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
        // Each ends when dropped: after the ack, or when its message is parked or given back.
        let mut message_spans = Vec::with_capacity(messages.len());
        let mut highest_sequence = 0;
        let mut accepted = Vec::with_capacity(messages.len());
        for message in messages {
            self.writer.metrics.received.inc();
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
        let mut deliveries = Vec::with_capacity(accepted.len());
        let mut pending = Vec::with_capacity(accepted.len());
        for (delivery, decoded) in accepted {
            pending.push(Pending {
                message: *decoded,
                payload: delivery.payload.clone(),
                source: header_value(&delivery, HEADER_SOURCE),
            });
            deliveries.push(delivery);
        }

        // The plugins run outside the turn: only looking up and writing happen in it.
        let prepared = tokio::task::block_in_place(|| self.writer.prepare(pending));
        let Some(turn) = self.take_turn(&deliveries, shutdown).await else {
            self.give_back(&deliveries).await;
            return Ok(None);
        };
        let stored = self.writer.store(prepared, &deliveries, shutdown).await;
        turn.give_back().await;
        if stored?.is_none() {
            // Shutting down before the rows were stored and rolled up.
            self.give_back(&deliveries).await;
            return Ok(None);
        }
        self.writer.faults.before_ack();
        for message in &deliveries {
            if let Err(error) = message.ack().await {
                // The rows are stored; a lost ack only means a harmless redelivery.
                tracing::warn!(%error, "ack failed; the message will be redelivered and de-duplicated");
            }
            self.writer.metrics.stored.inc();
        }
        if let Some(last) = deliveries.last() {
            if let Ok(info) = last.info() {
                self.writer.metrics.pending.set(info.pending as i64);
            }
        }
        self.writer
            .metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(messages = deliveries.len(), elapsed = ?started.elapsed(), "batch stored");
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
            match self.writer.holding(held, self.turns.run_turn()).await {
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
                _ = self.writer.holding(held, tokio::time::sleep(BARRIER_POLL)) => {}
            }
        }
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
            self.writer.metrics.redelivered.inc();
        }
        if self.writer.config.worker.max_deliver > 0
            && delivered > self.writer.config.worker.max_deliver
        {
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
            .writer
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
        self.writer.metrics.rerelayed.inc();
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
        nats::publish_dead_letter(&self.writer.jetstream, &self.writer.config.nats, letter)
            .await
            .map_err(WorkerError::DeadLetter)?;
        self.writer
            .metrics
            .dead_letters
            .with_label_values(&[reason])
            .inc();
        if let Err(error) = message.ack_with(AckKind::Term).await {
            tracing::warn!(%error, "cannot terminate a parked message; it may come back and be parked again");
        }
        Ok(())
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
