//! The relay: validate what the sources received and publish it to JetStream, once, in order.
//!
//! - Validation: framing, UTF-8, JSON, envelope shape, timestamp, topic, identity, size (body
//!   and headers under the server's `max_payload`). A rejection is counted, logged and published
//!   with its reason to the dead-letter stream; the next message flows on.
//! - Identity: `Nats-Msg-Id` is the message identity, so JetStream drops a second copy (another
//!   ingestor replica, a backfill overlapping live traffic) within its duplicate window; beyond
//!   the window the worker's storage de-duplicates by the same identity.
//! - Order and backpressure: publishes are *sent* in arrival order from this one task; their
//!   acks are awaited concurrently, at most `max-in-flight` at once. When that many are pending,
//!   the relay stops reading from the sources' channel, and the sources wait.
//! - No loss: a message counts as relayed only when its ack arrives. A publish that times out or
//!   fails is sent again with the same identity (JetStream de-duplicates a retry whose first
//!   attempt did land), with backoff, while NATS is away. But no message can hold a place in the
//!   in-flight window for good: one JetStream refuses for good (too large, a 4xx error) is
//!   dead-lettered at once with the reason, and one that keeps failing while NATS is connected
//!   is dead-lettered after [`MAX_CONNECTED_FAILURES`] tries (`publish_failed`) and reported to
//!   the caller, so a backfill window holding it is not recorded complete.
//! - Outcomes reported back: what the relay reads is a [`Handoff`]; once a message is stored or
//!   dead-lettered the relay tells it how it ended ([`Outcome`]), so a source with acks (AMQP)
//!   acks a delivery only after JetStream stored it, and gives back one the relay gave up on.
//! - Tracing: each message is published in its own `publish` span, the root of the message's
//!   trace; its W3C context goes with the message (`traceparent` header, counted in the size
//!   check like every header) so that the worker's `store` span continues the same trace.
//! - Dead letters never block: their headers are made safe and their payload cut to fit
//!   ([`nats::publish_dead_letter`]); one that still cannot be stored is counted
//!   (`statscache_ingestor_dead_letters_lost_total`) and logged, and the relay moves on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, publish::PublishAck};
use bytes::Bytes;
use statscache_shared::admin::Health;
use statscache_shared::config::Config;
use statscache_shared::message::{Envelope, InvalidMessage};
use statscache_shared::nats::{self, DeadLetter, HEADER_EVENT_TIME, HEADER_MSG_ID, HEADER_SOURCE};
use statscache_shared::retry::backoff;
use statscache_shared::topic::{topic_to_subject, MAX_TOPIC_BYTES};
use statscache_shared::trace_context;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::source::{Handoff, Incoming, Outcome};

/// Failed tries of one publish, while NATS is connected, before it is given up and
/// dead-lettered (about two minutes with backoff). Tries while NATS is away do not count.
pub const MAX_CONNECTED_FAILURES: u32 = 20;

/// The same for a dead letter, before it is counted lost.
const MAX_CONNECTED_DEAD_LETTER_FAILURES: u32 = 5;

/// The dead-letter header carrying the transport's topic frame.
const HEADER_TRANSPORT_TOPIC: &str = "Statscache-Transport-Topic";

/// The readiness condition set while JetStream refuses to store what the relay publishes.
const STORE_CONDITION: &str = "jetstream";

/// The readiness condition set while one publish keeps failing.
const PUBLISH_CONDITION: &str = "publishes";

pub struct Relay {
    pub(crate) config: Arc<Config>,
    pub(crate) jetstream: jetstream::Context,
    pub(crate) metrics: Arc<Metrics>,
    health: Health,
    /// Whether [`STORE_CONDITION`] is set: cleared by the next stored message.
    store_refusing: AtomicBool,
}

/// A message that passed validation, ready to publish.
struct Outgoing {
    source: &'static str,
    subject: String,
    identity: String,
    /// `Nats-Msg-Id`, source, event time and trace context: valid header values, counted in
    /// the size check.
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    /// From the first send to the ack (or giving up): the root of the message's trace.
    span: tracing::Span,
}

/// Why an incoming message was rejected, beyond what [`Envelope::parse`] checks.
enum Rejection {
    /// The source found it unusable: a reason code and what is wrong.
    Refused(&'static str, String),
    Invalid(InvalidMessage),
    /// JetStream refused the publish, or it kept failing: a reason code and what happened.
    Unstored(&'static str, String),
}

impl Rejection {
    fn reason(&self) -> &'static str {
        match self {
            Rejection::Refused(reason, _) => reason,
            Rejection::Invalid(invalid) => invalid.reason(),
            Rejection::Unstored(reason, _) => reason,
        }
    }

    fn detail(&self) -> String {
        match self {
            Rejection::Refused(_, detail) | Rejection::Unstored(_, detail) => detail.clone(),
            Rejection::Invalid(invalid) => invalid.to_string(),
        }
    }
}

/// How a run of the relay ended for the valid messages it took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelaySummary {
    /// Stored, new to the stream.
    pub stored: usize,
    /// Already in the stream (JetStream recognised the identity).
    pub duplicates: usize,
    /// Valid messages given up after [`MAX_CONNECTED_FAILURES`] failed tries (dead-lettered as
    /// `publish_failed`): worth fetching again later.
    pub given_up: usize,
}

/// Counts the failed tries of one publish and waits between them. Only failures while NATS is
/// connected count towards the limit: an outage is waited out, a message that fails on a
/// working connection is not tried forever.
struct Tries {
    failures: u32,
    connected_failures: u32,
    limit: u32,
}

impl Tries {
    fn new(limit: u32) -> Tries {
        Tries {
            failures: 0,
            connected_failures: 0,
            limit,
        }
    }

    /// Records a failure; `false` once the limit is reached.
    fn failed(&mut self, client: &async_nats::Client) -> bool {
        self.failures += 1;
        if client.connection_state() == State::Connected {
            self.connected_failures += 1;
        }
        self.connected_failures < self.limit
    }

    async fn pause(&self) {
        let wait = backoff(
            self.failures.saturating_sub(1),
            Duration::from_millis(100),
            Duration::from_secs(5),
        );
        tokio::time::sleep(wait).await;
    }
}

impl Relay {
    pub fn new(
        config: Arc<Config>,
        jetstream: jetstream::Context,
        metrics: Arc<Metrics>,
        health: Health,
    ) -> Relay {
        Relay {
            config,
            jetstream,
            metrics,
            health,
            store_refusing: AtomicBool::new(false),
        }
    }

    /// Relays until every source has dropped its sender, then waits for the acks in flight.
    /// Each message is told its [`Outcome`] once it is stored or dead-lettered.
    pub async fn run<H: Handoff>(self: Arc<Self>, mut incoming: mpsc::Receiver<H>) -> RelaySummary {
        let permits = Arc::new(Semaphore::new(self.config.ingestor.max_in_flight.max(1)));
        let mut in_flight = JoinSet::new();
        let mut summary = RelaySummary::default();
        while let Some(message) = incoming.recv().await {
            while let Some(ended) = in_flight.try_join_next() {
                summary.count(ended);
            }
            let validated = match &message.incoming().refusal {
                Some(refusal) => Err(Rejection::Refused(refusal.reason, refusal.detail.clone())),
                None => self.validate(message.incoming()),
            };
            let outgoing = match validated {
                Ok(outgoing) => outgoing,
                Err(rejection) => {
                    self.reject(message.incoming(), rejection).await;
                    message.settle(Outcome::DeadLettered).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            // Sent here, in arrival order; only the ack is awaited in the background.
            let span = outgoing.span.clone();
            let first_ack = self.send(&outgoing).instrument(span.clone()).await;
            let relay = self.clone();
            self.metrics.in_flight.inc();
            in_flight.spawn(async move {
                let outcome = relay.await_ack(outgoing, first_ack).instrument(span).await;
                relay.metrics.in_flight.dec();
                drop(permit);
                message.settle(outcome).await;
                outcome
            });
        }
        tracing::debug!(
            pending = in_flight.len(),
            "sources stopped; waiting for publish acks in flight"
        );
        while let Some(ended) = in_flight.join_next().await {
            summary.count(ended);
        }
        summary
    }

    fn validate(&self, message: &Incoming) -> Result<Outgoing, Rejection> {
        let max_payload = self.jetstream.client().max_payload();
        if message.body.len() > max_payload {
            let too_large = InvalidMessage::TooLarge {
                size: message.body.len(),
                limit: max_payload,
            };
            return Err(Rejection::Invalid(too_large));
        }
        let envelope = Envelope::parse(&message.body).map_err(Rejection::Invalid)?;
        if let Some(transport_topic) = &message.transport_topic {
            if transport_topic[..] != *envelope.topic.as_bytes() {
                // Cut: a topic frame can be megabytes long, and the detail is logged.
                let shown = &transport_topic[..transport_topic.len().min(MAX_TOPIC_BYTES)];
                let mismatch = InvalidMessage::TopicMismatch {
                    frame: String::from_utf8_lossy(shown).into_owned(),
                    envelope: envelope.topic,
                };
                return Err(Rejection::Invalid(mismatch));
            }
        }
        // Valid header values: the envelope's checks bound the identity and keep it one line.
        let identity = envelope.identity();
        let subject = topic_to_subject(&self.config.nats.subject_prefix, &envelope.topic);
        let span = tracing::info_span!(
            parent: None,
            "publish",
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.destination.name = %subject,
            messaging.message.id = %identity,
            statscache.source = message.source,
            messaging.nats.stream_sequence = tracing::field::Empty,
        );
        let mut headers = vec![
            (HEADER_MSG_ID, identity.clone()),
            (HEADER_SOURCE, message.source.to_string()),
            (HEADER_EVENT_TIME, envelope.event_time().to_string()),
        ];
        headers.extend(trace_context::headers_of(&span));
        headers.extend(message.headers.iter().cloned());
        let room = max_payload.saturating_sub(nats::header_block_len(&headers));
        if message.body.len() > room {
            let too_large = InvalidMessage::TooLarge {
                size: message.body.len(),
                limit: room,
            };
            return Err(Rejection::Invalid(too_large));
        }
        Ok(Outgoing {
            source: message.source,
            subject,
            identity,
            headers,
            body: message.body.clone(),
            span,
        })
    }

    async fn reject(&self, message: &Incoming, rejection: Rejection) {
        let reason = rejection.reason();
        let detail = rejection.detail();
        self.metrics
            .invalid
            .with_label_values(&[message.source, reason])
            .inc();
        tracing::warn!(source = message.source, reason, %detail, "rejected input; dead-lettering it");
        let mut headers = vec![(HEADER_SOURCE, message.source.to_string())];
        if let Some(topic) = &message.transport_topic {
            // Made a safe bounded line by the dead letter, like every header value.
            headers.push((
                HEADER_TRANSPORT_TOPIC,
                String::from_utf8_lossy(topic).into_owned(),
            ));
        }
        let letter = DeadLetter {
            service: "ingestor",
            reason,
            detail,
            payload: &message.body,
            headers,
        };
        self.dead_letter(letter).await;
    }

    /// Stores `letter` on the dead-letter stream. A failure that may pass is tried again (an
    /// outage is waited out); a letter that still cannot be stored is counted and logged, and
    /// the caller moves on.
    pub async fn dead_letter(&self, letter: DeadLetter<'_>) {
        let client = self.jetstream.client();
        let mut tries = Tries::new(MAX_CONNECTED_DEAD_LETTER_FAILURES);
        loop {
            let error =
                match nats::publish_dead_letter(&self.jetstream, &self.config.nats, letter.clone())
                    .await
                {
                    Ok(()) => return,
                    Err(error) => error,
                };
            if let Some(refusal) = error.store_refusal() {
                self.store_refused(&self.config.nats.dead_letter_stream, &refusal);
            }
            if error.is_permanent() || !tries.failed(&client) {
                self.metrics
                    .dead_letters_lost
                    .with_label_values(&[letter.reason])
                    .inc();
                tracing::error!(%error, reason = letter.reason, "cannot store a dead letter; dropping it");
                return;
            }
            tracing::warn!(%error, "cannot store dead letter; retrying");
            tries.pause().await;
        }
    }

    async fn send(&self, outgoing: &Outgoing) -> Result<PublishAckFuture, PublishError> {
        let publish = PublishMessage::build()
            .payload(outgoing.body.clone())
            .headers(nats::header_map(&outgoing.headers));
        self.jetstream
            .send_publish(outgoing.subject.clone(), publish)
            .await
    }

    /// Awaits the ack of `outgoing`, publishing again while the failures may pass; a publish
    /// refused for good, or failing too often, is dead-lettered.
    async fn await_ack(
        &self,
        outgoing: Outgoing,
        first_attempt: Result<PublishAckFuture, PublishError>,
    ) -> Outcome {
        let started = Instant::now();
        let client = self.jetstream.client();
        let mut tries = Tries::new(MAX_CONNECTED_FAILURES);
        let mut attempt = first_attempt;
        loop {
            let outcome = match attempt {
                Ok(ack_future) => ack_future.await,
                Err(error) => Err(error),
            };
            let error = match outcome {
                Ok(ack) => {
                    self.count_stored(&outgoing, &ack, started);
                    self.restore_readiness(&tries);
                    self.store_accepts();
                    if ack.duplicate {
                        return Outcome::Duplicate;
                    }
                    return Outcome::Stored;
                }
                Err(error) => error,
            };
            if let Some(refusal) = nats::store_refusal(&error) {
                self.store_refused(&self.config.nats.stream, &refusal);
            }
            if nats::is_permanent(&error) {
                let reason = match error.kind() {
                    PublishErrorKind::MaxPayloadExceeded => "too_large",
                    _ => "rejected_by_server",
                };
                self.give_up(&outgoing, Rejection::Unstored(reason, error.to_string()))
                    .await;
                self.restore_readiness(&tries);
                return Outcome::DeadLettered;
            }
            self.metrics
                .publish_retries
                .with_label_values(&[outgoing.source])
                .inc();
            if !tries.failed(&client) {
                let detail = format!("not acked after {} tries: {error}", tries.failures);
                self.give_up(&outgoing, Rejection::Unstored("publish_failed", detail))
                    .await;
                self.restore_readiness(&tries);
                return Outcome::GivenUp;
            }
            if tries.failures == 3 {
                self.health.set_condition(
                    PUBLISH_CONDITION,
                    Some(format!("JetStream publishes failing: {error}")),
                );
            }
            tracing::warn!(%error, identity = %outgoing.identity, failures = tries.failures, "publish not acked; sending again");
            tries.pause().await;
            attempt = self.send(&outgoing).await;
        }
    }

    fn count_stored(&self, outgoing: &Outgoing, ack: &PublishAck, started: Instant) {
        self.metrics
            .publish_seconds
            .observe(started.elapsed().as_secs_f64());
        outgoing
            .span
            .record("messaging.nats.stream_sequence", ack.sequence);
        let counter = if ack.duplicate {
            &self.metrics.duplicates
        } else {
            &self.metrics.relayed
        };
        counter.with_label_values(&[outgoing.source]).inc();
    }

    /// A message whose failures made the service not ready has ended, one way or the other.
    fn restore_readiness(&self, tries: &Tries) {
        if tries.failures >= 3 {
            self.health.set_condition(PUBLISH_CONDITION, None);
        }
    }

    /// JetStream refused to store a message on `stream` (its store is full, or the stream at a
    /// limit that refuses new messages): the service is not ready until a message is stored
    /// again, however each message ends (retried, given up, dead-lettered).
    fn store_refused(&self, stream: &str, refusal: &str) {
        self.metrics
            .store_refusals
            .with_label_values(&[stream])
            .inc();
        self.store_refusing.store(true, Ordering::Relaxed);
        self.health.set_condition(
            STORE_CONDITION,
            Some(format!("refusing writes to stream {stream}: {refusal}")),
        );
    }

    /// A message was stored: JetStream takes writes.
    fn store_accepts(&self) {
        if self.store_refusing.swap(false, Ordering::Relaxed) {
            self.health.set_condition(STORE_CONDITION, None);
        }
    }

    /// Dead-letters a valid message that could not be stored, with why.
    async fn give_up(&self, outgoing: &Outgoing, rejection: Rejection) {
        let incoming = Incoming::new(outgoing.source, None, outgoing.body.clone());
        self.reject(&incoming, rejection).await;
    }
}

impl RelaySummary {
    fn count(&mut self, ended: Result<Outcome, tokio::task::JoinError>) {
        match ended {
            Ok(Outcome::Stored) => self.stored += 1,
            Ok(Outcome::Duplicate) => self.duplicates += 1,
            Ok(Outcome::DeadLettered) => {}
            Ok(Outcome::GivenUp) => self.given_up += 1,
            Err(join_error) => {
                tracing::error!(%join_error, "a publish task failed");
                self.given_up += 1;
            }
        }
    }
}
