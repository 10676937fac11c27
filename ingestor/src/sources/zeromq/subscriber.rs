//! One endpoint, kept subscribed until shutdown, as libzmq would keep it.
//!
//! The cycle: connect to the publisher (refused at once while nothing listens; tried again
//! every `reconnect-min`, doubling up to `reconnect-max`, forever); then a fresh `zeromq` SUB
//! socket, subscribed to the configured prefixes, connects through a [`Guard`] holding that
//! connection, and what it receives is relayed until the connection ends (the publisher goes,
//! breaks ZMTP or our limits, or stays silent: the guard says which); the socket is dropped
//! and the cycle starts again.
//!
//! Why a fresh socket per connection rather than the crate's own reconnection: after a
//! disconnect the crate reconnects on a fixed schedule growing to 30 s that cannot be
//! configured, so a publisher binding again during one of its pauses would be missed for that
//! long, and what it sent meanwhile lost. Connecting to the publisher first, ourselves, tells
//! an absent publisher (refused at once) from a present one without probing it, and the
//! crate's connect, to a listener that is there, succeeds on its first try. The socket is
//! known to be drained when the crate reports the disconnect: the guard hands it everything
//! decoded before closing its side.
//!
//! Every message's `i` goes through the endpoint's [`SequenceTracker`] (when subscribed to
//! every topic), which outlives the connections, so what is lost while reconnecting is counted
//! too and its time span handed to the datagrepper backfill if there is one; each message takes
//! its publisher's sequence to the stream in a header, for the next start-up.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use statscache_shared::config::ZeroMqConfig;
use statscache_shared::nats::HEADER_PUBLISHER;
use statscache_shared::retry::backoff;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zeromq::{Socket, SocketEvent, SocketOptions, SocketRecv, SubSocket};

use super::error::ZeroMqError;
use super::guard::{Guard, GuardEnded, GuardError};
use super::loopback;
use super::publisher::Sequencer;
use super::sequence::{Finding, GapKind, Observation, SequenceTracker};
use super::to_incoming;
use super::zmtp::{self, ConnectError, Endpoint, Transport};
use crate::metrics::Metrics;
use crate::source::{Incoming, LostSpan};

/// Connecting to the publisher, and the crate's connect and handshake through the guard, each.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a guard has to end once the crate's socket is gone (it ends at once).
const GUARD_EXIT: Duration = Duration::from_secs(5);

/// Why a connection ended.
enum Ended {
    Shutdown,
    /// The relay is gone: the ingestor is stopping.
    RelayClosed,
    Lost(ZeroMqError),
    Idle,
}

/// Why the crate's socket stopped receiving.
enum Received {
    Shutdown,
    RelayClosed,
    /// It reported the disconnect: everything it was handed is relayed.
    Disconnected,
    Failed(zeromq::ZmqError),
}

pub struct Subscriber {
    pub endpoint: String,
    pub config: ZeroMqConfig,
    /// Largest message accepted (all frames): bigger ones are dropped unread.
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
        let guard = Guard {
            endpoint: Arc::from(self.endpoint.as_str()),
            max_message_bytes: self.max_message_bytes,
            idle_timeout: self.config.idle_timeout,
            metrics: self.metrics.clone(),
            relay: self.relay.clone(),
        };
        let mut sequence = self.sequence_tracker(&known);
        let sequencer = Sequencer::new(&self.endpoint);
        let mut attempt = 0;
        // Replacing a silent connection is routine: logged at debug level only.
        let mut replacing_idle = false;
        loop {
            let connected = tokio::select! {
                _ = shutdown.cancelled() => return,
                connected = zmtp::connect(&endpoint, CONNECT_TIMEOUT) => connected,
            };
            let publisher = match connected {
                Ok(publisher) => publisher,
                Err(error) => {
                    self.failed_to_connect(&error, attempt);
                    if let (ConnectError::NothingListens(_), Some(tracker)) =
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
            let connection = Connection {
                sequence: sequence.as_mut(),
                sequencer: &sequencer,
                started,
                replacing_idle,
            };
            let ended = self
                .subscribe(publisher, &guard, connection, &shutdown)
                .await;
            replacing_idle = matches!(ended, Ended::Idle);
            match ended {
                Ended::Shutdown | Ended::RelayClosed => return,
                Ended::Lost(error) => {
                    self.metrics
                        .source_errors
                        .with_label_values(&["zeromq"])
                        .inc();
                    if error.backs_off() {
                        // A peer breaking the protocol again and again (or a listener that
                        // cannot be made) is not tried again in a tight loop.
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
    fn failed_to_connect(&self, error: &ConnectError, attempt: u32) {
        if let ConnectError::NothingListens(detail) = error {
            if attempt == 0 {
                tracing::info!(endpoint = %self.endpoint, %detail, "nothing listens at the endpoint yet; trying again until a publisher binds it");
            }
            return;
        }
        self.metrics
            .source_errors
            .with_label_values(&["zeromq"])
            .inc();
        tracing::warn!(endpoint = %self.endpoint, %error, "cannot subscribe to the endpoint; trying again");
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

    /// One connection to the publisher: a guard in front of it, a fresh socket of the crate
    /// through the guard, until either ends.
    async fn subscribe(
        &self,
        publisher: Box<dyn Transport>,
        guard: &Guard,
        connection: Connection<'_>,
        shutdown: &CancellationToken,
    ) -> Ended {
        let listener = match loopback::listen() {
            Ok(listener) => listener,
            Err(error) => return Ended::Lost(ZeroMqError::Loopback(error)),
        };
        let socket_endpoint = listener.endpoint().to_string();
        let (ready_sender, ready) = oneshot::channel();
        // A set, so that the guard is stopped with it if this ends first (shutdown).
        let mut guard_task = tokio::task::JoinSet::new();
        guard_task.spawn(guard.clone().run(publisher, listener, ready_sender));
        let received = self
            .receive(&socket_endpoint, ready, connection, shutdown)
            .await;
        let socket_failure = match received {
            Received::Shutdown => return Ended::Shutdown,
            Received::RelayClosed => return Ended::RelayClosed,
            Received::Disconnected => None,
            Received::Failed(error) => Some(error),
        };
        // The socket is gone: a guard still relaying sees its side closed, and ends.
        let guard_ended = match tokio::time::timeout(GUARD_EXIT, guard_task.join_next()).await {
            Ok(Some(Ok(ended))) => Some(ended),
            // Stuck (aborted with the set) or panicked: the socket's side is all we know.
            _ => None,
        };
        match (guard_ended, socket_failure) {
            (Some(GuardEnded::Idle), _) => Ended::Idle,
            (Some(GuardEnded::RelayClosed), _) => Ended::RelayClosed,
            // The crate closed first: its own error says why.
            (Some(GuardEnded::Lost(GuardError::SubscriberClosed)) | None, Some(error)) => {
                Ended::Lost(ZeroMqError::Socket(error))
            }
            (Some(GuardEnded::Lost(error)), _) => Ended::Lost(ZeroMqError::Guard(error)),
            (None, None) => Ended::Lost(ZeroMqError::Disconnected),
        }
    }

    /// Connects a fresh SUB socket of the crate to `socket_endpoint` (the guard) and relays
    /// what it receives until it reports the disconnect; the socket goes with the call (and
    /// with it the crate's own reconnection).
    async fn receive(
        &self,
        socket_endpoint: &str,
        ready: oneshot::Receiver<bool>,
        mut connection: Connection<'_>,
        shutdown: &CancellationToken,
    ) -> Received {
        let mut options = SocketOptions::default();
        options.connect_timeout(CONNECT_TIMEOUT);
        let mut socket = SubSocket::with_options(options);
        let mut events = socket.monitor();
        for prefix in &self.config.topic_prefixes {
            // No peer yet: remembered, and sent once the publisher's READY has come.
            if let Err(error) = socket.subscribe(prefix).await {
                return Received::Failed(error);
            }
        }
        let connected = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Received::Shutdown,
            connected = socket.connect(socket_endpoint) => connected,
        };
        if let Err(error) = connected {
            return Received::Failed(error);
        }
        // The guard said it before handing the crate the READY the connect waited for.
        let heartbeats = ready.await.unwrap_or(false);
        if connection.replacing_idle {
            tracing::debug!(endpoint = %self.endpoint, "subscribed again");
        } else {
            tracing::info!(endpoint = %self.endpoint, prefixes = ?self.config.topic_prefixes, heartbeats, "subscribed to fedmsg endpoint");
        }
        if let Some(tracker) = connection.sequence.as_deref_mut() {
            tracker.connected();
        }
        loop {
            let received = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Received::Shutdown,
                // Reported once the crate has handed out every message of the connection.
                event = events.next() => match event {
                    Some(SocketEvent::Disconnected(_)) | None => return Received::Disconnected,
                    Some(_) => continue,
                },
                received = socket.recv() => received,
            };
            let message = match received {
                Ok(message) => message,
                Err(error) => return Received::Failed(error),
            };
            self.metrics.received.with_label_values(&["zeromq"]).inc();
            let mut incoming = to_incoming(message.into_vec());
            if let Some(tracker) = connection.sequence.as_deref_mut() {
                self.track(
                    tracker,
                    connection.sequencer,
                    &mut incoming,
                    connection.started,
                );
            }
            if self.relay.send(incoming).await.is_err() {
                return Received::RelayClosed;
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

/// What one connection's messages go through, beside the subscriber's own settings.
struct Connection<'a> {
    sequence: Option<&'a mut SequenceTracker>,
    sequencer: &'a Sequencer,
    started: Instant,
    /// Whether it replaces a silent one (logged at debug level only).
    replacing_idle: bool,
}
