//! One endpoint, kept subscribed until shutdown, as libzmq would keep it.
//!
//! The cycle: connect (refused at once while nothing listens; tried again every
//! `reconnect-min`, doubling up to `reconnect-max`, forever), handshake, receive until the
//! publisher disconnects, breaks the protocol or our bounds, or stays silent; start again.
//! Silence is checked with ZMTP heartbeats: a connection silent for `idle-timeout` gets a PING,
//! and only one that does not answer within [`HEARTBEAT_GRACE`] is replaced (a ZMTP 3.0
//! publisher, which knows no PING, is replaced at once), so a quiet but healthy publisher is
//! never cut off, while one that died without a word (a firewall dropping idle state, a host
//! gone) is not listened to forever.
//!
//! Every message's `i` goes through the endpoint's [`SequenceTracker`] (when subscribed to
//! every topic), which outlives the connections, so what is lost while reconnecting is counted
//! too and its time span handed to the datagrepper backfill if there is one; each message takes
//! its publisher's sequence to the stream in a header, for the next start-up.

use std::sync::Arc;
use std::time::Duration;

use statscache_shared::config::ZeroMqConfig;
use statscache_shared::nats::HEADER_PUBLISHER;
use statscache_shared::retry::backoff;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::publisher::Sequencer;
use super::sequence::{Finding, GapKind, Observation, SequenceTracker};
use super::to_incoming;
use super::zmtp::{Connection, Endpoint, Event, ZmtpError};
use crate::metrics::Metrics;
use crate::source::{Incoming, LostSpan, Refusal};

/// Connecting and completing the handshake, each.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a silent connection has to answer a PING before it is replaced.
const HEARTBEAT_GRACE: Duration = Duration::from_secs(5);

/// Why a connection ended.
enum Ended {
    Shutdown,
    /// The relay is gone: the ingestor is stopping.
    RelayClosed,
    Lost(ZmtpError),
    Idle,
}

pub struct Subscriber {
    pub endpoint: String,
    pub config: ZeroMqConfig,
    /// Largest message accepted (all frames): bigger ones end the connection unread.
    pub max_message_bytes: usize,
    pub relay: mpsc::Sender<Incoming>,
    pub metrics: Arc<Metrics>,
    /// Where spans known to be lost go (the datagrepper backfill), if anywhere.
    pub lost_spans: Option<mpsc::Sender<LostSpan>>,
}

impl Subscriber {
    /// Keeps the endpoint subscribed until `shutdown`; `known` is what the stream says the
    /// endpoint carried before, oldest first.
    pub async fn run(self, known: Vec<Observation>, shutdown: CancellationToken) {
        let endpoint: Endpoint = match self.endpoint.parse() {
            Ok(endpoint) => endpoint,
            Err(detail) => {
                tracing::error!(endpoint = %self.endpoint, %detail, "cannot subscribe to this endpoint");
                return;
            }
        };
        let started = Instant::now();
        // Exported from the start, so "none" reads 0 rather than nothing.
        self.metrics
            .zeromq_protocol_errors
            .with_label_values(&[self.endpoint.as_str(), "frame_too_large"]);
        let mut sequence = self.sequence_tracker(&known);
        let sequencer = Sequencer::new(&self.endpoint);
        let mut attempt = 0;
        // Replacing a silent connection is routine: logged at debug level only.
        let mut replacing_idle = false;
        loop {
            let opened = tokio::select! {
                _ = shutdown.cancelled() => return,
                opened = Connection::open(&endpoint, &self.config.topic_prefixes, self.max_message_bytes, CONNECT_TIMEOUT) => opened,
            };
            let connection = match opened {
                Ok(connection) => connection,
                Err(error) => {
                    self.failed_to_connect(&error, attempt);
                    if let (ZmtpError::NothingListens(_), Some(tracker)) =
                        (&error, sequence.as_mut())
                    {
                        // No process is bound: the next one starts while we listen.
                        tracker.publisher_absent();
                    }
                    if !self.pause(attempt, &shutdown).await {
                        return;
                    }
                    attempt = attempt.saturating_add(1);
                    continue;
                }
            };
            if replacing_idle {
                tracing::debug!(endpoint = %self.endpoint, "subscribed again");
            } else {
                tracing::info!(endpoint = %self.endpoint, prefixes = ?self.config.topic_prefixes, heartbeats = connection.supports_heartbeats(), "subscribed to fedmsg endpoint");
            }
            if let Some(tracker) = sequence.as_mut() {
                tracker.connected();
            }
            let ended = self
                .receive(
                    connection,
                    sequence.as_mut(),
                    &sequencer,
                    started,
                    &shutdown,
                )
                .await;
            replacing_idle = matches!(ended, Ended::Idle);
            match ended {
                Ended::Shutdown | Ended::RelayClosed => return,
                Ended::Lost(error) => {
                    self.metrics
                        .source_errors
                        .with_label_values(&["zeromq"])
                        .inc();
                    if let Some(reason) = error.protocol_reason() {
                        self.count_protocol_error(reason);
                        // A peer breaking the protocol again and again is not reconnected to
                        // in a tight loop.
                        attempt = attempt.saturating_add(1);
                    } else {
                        attempt = 0;
                    }
                    tracing::warn!(endpoint = %self.endpoint, %error, "ZeroMQ endpoint lost; reconnecting");
                    if attempt > 0 && !self.pause(attempt - 1, &shutdown).await {
                        return;
                    }
                }
                Ended::Idle => {
                    attempt = 0;
                    tracing::debug!(endpoint = %self.endpoint, idle = ?self.config.idle_timeout, "no answer after a silence; replacing the connection");
                }
            }
        }
    }

    /// Logs (and counts, unless nothing listens) a failed connection attempt.
    fn failed_to_connect(&self, error: &ZmtpError, attempt: u32) {
        if let ZmtpError::NothingListens(detail) = error {
            if attempt == 0 {
                tracing::info!(endpoint = %self.endpoint, %detail, "nothing listens at the endpoint yet; trying again until a publisher binds it");
            }
            return;
        }
        self.metrics
            .source_errors
            .with_label_values(&["zeromq"])
            .inc();
        if let Some(reason) = error.protocol_reason() {
            self.count_protocol_error(reason);
        }
        tracing::warn!(endpoint = %self.endpoint, %error, "cannot subscribe to the endpoint; trying again");
    }

    fn count_protocol_error(&self, reason: &'static str) {
        self.metrics
            .zeromq_protocol_errors
            .with_label_values(&[self.endpoint.as_str(), reason])
            .inc();
    }

    /// The endpoint's `i` tracker, or `None` when subscribed to only some topics: `i` counts
    /// every topic the publisher sends, so gaps would be messages we never asked for.
    fn sequence_tracker(&self, known: &[Observation]) -> Option<SequenceTracker> {
        let every_topic = self.config.topic_prefixes.iter().any(String::is_empty);
        if !every_topic {
            tracing::info!(endpoint = %self.endpoint, prefixes = ?self.config.topic_prefixes, "subscribed to some topics only: fedmsg's `i` counts every topic, so sequence gaps are not tracked");
            return None;
        }
        // Exported from the start, so "no loss" reads 0 rather than nothing.
        let label = [self.endpoint.as_str()];
        self.metrics.sequence_gaps.with_label_values(&label);
        self.metrics.missing_messages.with_label_values(&label);
        let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
        let mut tracker = SequenceTracker::new(now);
        if !known.is_empty() {
            for observation in known {
                tracker.restore(*observation);
            }
            tracker.end_restore();
            tracing::info!(endpoint = %self.endpoint, messages = known.len(), multiplexing = tracker.is_multiplexing(), "publishers' sequences read back from the stream");
        }
        Some(tracker)
    }

    /// Waits before connection attempt `attempt + 1`; `false` if shutdown came first.
    async fn pause(&self, attempt: u32, shutdown: &CancellationToken) -> bool {
        let wait = backoff(
            attempt,
            self.config.reconnect_min,
            self.config.reconnect_max,
        );
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }

    /// Relays what the connection receives until it ends.
    async fn receive(
        &self,
        mut connection: Connection,
        mut sequence: Option<&mut SequenceTracker>,
        sequencer: &Sequencer,
        started: Instant,
        shutdown: &CancellationToken,
    ) -> Ended {
        let idle_timeout = self.config.idle_timeout;
        let checks_idle = !idle_timeout.is_zero();
        let mut pinged = false;
        // Reset by everything the peer sends; never selected when the check is disabled.
        let silence = tokio::time::sleep(idle_timeout);
        tokio::pin!(silence);
        loop {
            let event = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ended::Shutdown,
                event = connection.recv() => event,
                _ = &mut silence, if checks_idle => {
                    if pinged || !connection.ping() {
                        return Ended::Idle;
                    }
                    pinged = true;
                    silence.as_mut().reset(Instant::now() + HEARTBEAT_GRACE.min(idle_timeout));
                    continue;
                }
            };
            let frames = match event {
                Ok(Event::Message(frames)) => frames,
                Ok(Event::Heartbeat) => {
                    pinged = false;
                    silence.as_mut().reset(Instant::now() + idle_timeout);
                    continue;
                }
                Err(error) => {
                    if let ZmtpError::Protocol(violation) = &error {
                        // What came of the message is kept, with why the connection ended.
                        let refusal = Refusal {
                            reason: violation.reason(),
                            detail: format!(
                                "{violation}; the connection to {} was dropped",
                                self.endpoint
                            ),
                        };
                        let partial = to_incoming(connection.partial_message().to_vec());
                        let refused = Incoming::refused(
                            "zeromq",
                            partial.transport_topic,
                            partial.body,
                            refusal,
                        );
                        if self.relay.send(refused).await.is_err() {
                            return Ended::RelayClosed;
                        }
                    }
                    return Ended::Lost(error);
                }
            };
            pinged = false;
            silence.as_mut().reset(Instant::now() + idle_timeout);
            self.metrics.received.with_label_values(&["zeromq"]).inc();
            let mut incoming = to_incoming(frames);
            if let Some(tracker) = sequence.as_deref_mut() {
                self.track(tracker, sequencer, &mut incoming, started);
            }
            if self.relay.send(incoming).await.is_err() {
                return Ended::RelayClosed;
            }
        }
    }

    /// Takes the message's sequence, and adds it to the message as a header.
    fn track(
        &self,
        tracker: &mut SequenceTracker,
        sequencer: &Sequencer,
        incoming: &mut Incoming,
        started: Instant,
    ) {
        if incoming.refusal.is_some() {
            return;
        }
        let topic = incoming.transport_topic.clone().unwrap_or_default();
        let Some(sequenced) = sequencer.sequenced(&topic, &incoming.body) else {
            return;
        };
        incoming.headers.push((HEADER_PUBLISHER, sequenced.header));
        let was_multiplexing = tracker.is_multiplexing();
        let arrival = started.elapsed().as_secs_f64();
        for finding in tracker.observe(sequenced.observation, arrival) {
            self.report(finding);
        }
        for implausible in tracker.take_implausible() {
            tracing::warn!(endpoint = %self.endpoint, publisher = %format!("{:016x}", implausible.key), last_i = implausible.last_i, next_i = implausible.next_i, "fedmsg's `i` jumped implausibly far: not counted as lost (a forged or broken counter)");
        }
        if tracker.is_multiplexing() && !was_multiplexing {
            tracing::info!(endpoint = %self.endpoint, "this endpoint carries several publishing processes (a fedmsg relay or gateway): sequence gaps are tracked per process, and a process first heard after its first messages is not counted as a loss here");
        }
    }

    /// Counts, logs and hands on for backfill what the tracker found.
    fn report(&self, finding: Finding) {
        let endpoint = self.endpoint.as_str();
        let span = finding.span;
        self.metrics
            .sequence_gaps
            .with_label_values(&[endpoint])
            .inc();
        self.metrics
            .missing_messages
            .with_label_values(&[endpoint])
            .inc_by(span.missing);
        let publisher = format!("{:016x}", finding.key);
        let what = match finding.kind {
            GapKind::Jump => {
                "fedmsg's `i` jumped: messages sent between these event times were lost"
            }
            GapKind::Head => {
                "a new publishing process was first heard after its first messages: they were lost"
            }
        };
        tracing::warn!(
            endpoint,
            publisher,
            last_i = finding.last_i,
            next_i = finding.next_i,
            missing = span.missing,
            after = span.after,
            before = span.before,
            backfill = self.lost_spans.is_some(),
            "{what}"
        );
        if let Some(lost_spans) = &self.lost_spans {
            if lost_spans.try_send(span).is_err() {
                tracing::warn!(endpoint, "too many lost spans waiting for their backfill; reconciliation will find this one");
            }
        }
    }
}
