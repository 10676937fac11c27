//! The relay: validate what the sources received and publish it to JetStream, once, in order.
//!
//! - Validation: framing, UTF-8, JSON, envelope shape, timestamp, topic, size. A rejection is
//!   counted, logged and published with its reason to the dead-letter stream; the next message
//!   flows on.
//! - Identity: `Nats-Msg-Id` is the message identity, so JetStream drops a second copy (another
//!   ingestor replica, a backfill overlapping live traffic) within its duplicate window; beyond
//!   the window the worker's storage de-duplicates by the same identity.
//! - Order and backpressure: publishes are *sent* in arrival order from this one task; their
//!   acks are awaited concurrently, at most `max-in-flight` at once. When that many are pending,
//!   the relay stops reading from the sources' channel, and the sources wait.
//! - No loss: a message counts as relayed only when its ack arrives. A publish that times out or
//!   fails is sent again with the same identity (JetStream de-duplicates a retry whose first
//!   attempt did land), with backoff, until it is acked or the ingestor is killed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;
use statscache_shared::admin::Health;
use statscache_shared::config::Config;
use statscache_shared::message::{Envelope, InvalidMessage};
use statscache_shared::nats::{self, DeadLetter, HEADER_EVENT_TIME, HEADER_MSG_ID, HEADER_SOURCE};
use statscache_shared::retry::backoff;
use statscache_shared::topic::topic_to_subject;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::metrics::Metrics;
use crate::source::Incoming;

/// Room left for headers under the server's max payload.
const HEADER_ALLOWANCE: usize = 1024;

pub struct Relay {
    pub config: Arc<Config>,
    pub jetstream: jetstream::Context,
    pub metrics: Arc<Metrics>,
    pub health: Health,
}

/// A message that passed validation, ready to publish.
struct Outgoing {
    source: &'static str,
    subject: String,
    identity: String,
    event_time: String,
    body: Bytes,
}

/// Why an incoming message was rejected, beyond what [`Envelope::parse`] checks.
enum Rejection {
    Framing(String),
    Invalid(InvalidMessage),
}

impl Rejection {
    fn reason(&self) -> &'static str {
        match self {
            Rejection::Framing(_) => "bad_frames",
            Rejection::Invalid(invalid) => invalid.reason(),
        }
    }

    fn detail(&self) -> String {
        match self {
            Rejection::Framing(detail) => detail.clone(),
            Rejection::Invalid(invalid) => invalid.to_string(),
        }
    }
}

impl Relay {
    /// Relays until every source has dropped its sender, then waits for the acks in flight.
    pub async fn run(self: Arc<Self>, mut incoming: mpsc::Receiver<Incoming>) {
        let permits = Arc::new(Semaphore::new(self.config.ingestor.max_in_flight.max(1)));
        let mut in_flight = JoinSet::new();
        while let Some(message) = incoming.recv().await {
            while in_flight.try_join_next().is_some() {}
            let outgoing = match self.validate(&message) {
                Ok(outgoing) => outgoing,
                Err(rejection) => {
                    self.reject(&message, rejection).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            // Sent here, in arrival order; only the ack is awaited in the background.
            let first_ack = self.send(&outgoing).await;
            let relay = self.clone();
            self.metrics.in_flight.inc();
            in_flight.spawn(async move {
                relay.await_ack(outgoing, first_ack).await;
                relay.metrics.in_flight.dec();
                drop(permit);
            });
        }
        tracing::debug!(
            pending = in_flight.len(),
            "sources stopped; waiting for publish acks in flight"
        );
        while in_flight.join_next().await.is_some() {}
    }

    fn validate(&self, message: &Incoming) -> Result<Outgoing, Rejection> {
        if let Some(problem) = &message.framing_error {
            return Err(Rejection::Framing(problem.clone()));
        }
        let limit = self
            .jetstream
            .client()
            .server_info()
            .max_payload
            .saturating_sub(HEADER_ALLOWANCE);
        if message.body.len() > limit {
            let too_large = InvalidMessage::TooLarge {
                size: message.body.len(),
                limit,
            };
            return Err(Rejection::Invalid(too_large));
        }
        let envelope = Envelope::parse(&message.body).map_err(Rejection::Invalid)?;
        if let Some(transport_topic) = &message.transport_topic {
            let frame = String::from_utf8_lossy(transport_topic);
            if frame != envelope.topic {
                let mismatch = InvalidMessage::TopicMismatch {
                    frame: frame.into_owned(),
                    envelope: envelope.topic,
                };
                return Err(Rejection::Invalid(mismatch));
            }
        }
        Ok(Outgoing {
            source: message.source,
            subject: topic_to_subject(&self.config.nats.subject_prefix, &envelope.topic),
            identity: envelope.identity(),
            event_time: envelope.event_time().to_string(),
            body: message.body.clone(),
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
            headers.push((
                "Statscache-Transport-Topic",
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

    /// Stores `letter` on the dead-letter stream, retrying until JetStream takes it: a dead
    /// letter must not be lost either.
    pub async fn dead_letter(&self, letter: DeadLetter<'_>) {
        let mut attempt = 0;
        while let Err(error) =
            nats::publish_dead_letter(&self.jetstream, &self.config.nats, letter.clone()).await
        {
            tracing::warn!(%error, "cannot store dead letter; retrying");
            tokio::time::sleep(backoff(
                attempt,
                Duration::from_millis(100),
                Duration::from_secs(5),
            ))
            .await;
            attempt += 1;
        }
    }

    async fn send(&self, outgoing: &Outgoing) -> Result<PublishAckFuture, String> {
        let publish = PublishMessage::build()
            .payload(outgoing.body.clone())
            .header(HEADER_MSG_ID, outgoing.identity.as_str())
            .header(HEADER_SOURCE, outgoing.source)
            .header(HEADER_EVENT_TIME, outgoing.event_time.as_str());
        self.jetstream
            .send_publish(outgoing.subject.clone(), publish)
            .await
            .map_err(|error| error.to_string())
    }

    /// Awaits the ack of `outgoing`, publishing again until one arrives.
    async fn await_ack(&self, outgoing: Outgoing, first_attempt: Result<PublishAckFuture, String>) {
        let started = Instant::now();
        let mut attempt = first_attempt;
        let mut retries = 0;
        loop {
            let outcome = match attempt {
                Ok(ack_future) => ack_future.await.map_err(|error| error.to_string()),
                Err(error) => Err(error),
            };
            match outcome {
                Ok(ack) => {
                    self.metrics
                        .publish_seconds
                        .observe(started.elapsed().as_secs_f64());
                    if ack.duplicate {
                        self.metrics
                            .duplicates
                            .with_label_values(&[outgoing.source])
                            .inc();
                    } else {
                        self.metrics
                            .relayed
                            .with_label_values(&[outgoing.source])
                            .inc();
                    }
                    if retries > 0 {
                        self.health.set_ready();
                    }
                    return;
                }
                Err(error) => {
                    self.metrics
                        .publish_retries
                        .with_label_values(&[outgoing.source])
                        .inc();
                    if retries == 3 {
                        self.health
                            .set_not_ready(format!("JetStream publishes failing: {error}"));
                    }
                    tracing::warn!(%error, identity = %outgoing.identity, retries, "publish not acked; sending again");
                    tokio::time::sleep(backoff(
                        retries,
                        Duration::from_millis(100),
                        Duration::from_secs(5),
                    ))
                    .await;
                    retries += 1;
                    attempt = self.send(&outgoing).await;
                }
            }
        }
    }
}
