//! One endpoint, kept subscribed until shutdown, as libzmq would keep it.
//!
//! The cycle: probe until something listens (every `reconnect-min`, doubling up to
//! `reconnect-max`, forever), connect a fresh socket, receive until the publisher disconnects
//! or the connection has been silent for `idle-timeout`, start again. The idle check stands in
//! for ZMTP heartbeats, which the `zeromq` crate lacks: a connection that died without a word
//! (a firewall dropping idle state, a host gone) is replaced rather than listened to forever.
//! Replacing a connection leaves a moment in which a message could be missed; on a bus that
//! has been silent for the whole timeout that is unlikely, and fedmsg's `i` reveals it.
//!
//! Every message's `i` goes through the endpoint's [`SequenceTracker`] (when subscribed to
//! every topic), which outlives the connections, so what is lost while reconnecting is counted
//! too and its time span handed to the datagrepper backfill if there is one.

use std::sync::Arc;

use futures::StreamExt;
use statscache_shared::config::ZeroMqConfig;
use statscache_shared::retry::backoff;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zeromq::{SocketEvent, SocketRecv, SubSocket};

use super::connection;
use super::error::ZeroMqError;
use super::sequence::{counter_of, Finding, SequenceTracker};
use super::to_incoming;
use crate::metrics::Metrics;
use crate::source::{Incoming, LostSpan};

/// Why a connection ended.
enum Ended {
    Shutdown,
    /// The relay is gone: the ingestor is stopping.
    RelayClosed,
    Lost(ZeroMqError),
    Idle,
}

pub struct Subscriber {
    pub endpoint: String,
    pub config: ZeroMqConfig,
    pub relay: mpsc::Sender<Incoming>,
    pub metrics: Arc<Metrics>,
    /// Where spans known to be lost go (the datagrepper backfill), if anywhere.
    pub lost_spans: Option<mpsc::Sender<LostSpan>>,
}

impl Subscriber {
    /// Keeps the endpoint subscribed until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut sequence = self.sequence_tracker();
        let mut attempt = 0;
        // Replacing a silent connection is routine: logged at debug level only.
        let mut replacing_idle = false;
        loop {
            if let Err(detail) = connection::probe(&self.endpoint).await {
                if attempt == 0 {
                    tracing::info!(endpoint = %self.endpoint, %detail, "nothing listens at the endpoint yet; trying again until a publisher binds it");
                }
                if !self.pause(attempt, &shutdown).await {
                    return;
                }
                attempt = attempt.saturating_add(1);
                continue;
            }
            let opened = tokio::select! {
                _ = shutdown.cancelled() => return,
                opened = connection::open(&self.endpoint, &self.config.topic_prefixes, self.config.reconnect_min) => opened,
            };
            let (socket, events) = match opened {
                Ok(opened) => opened,
                Err(error) => {
                    if matches!(error, ZeroMqError::NothingListens { .. }) {
                        // The publisher went away as it was reached (killed, say): not a failure.
                        tracing::debug!(%error, "the endpoint stopped listening; probing again");
                    } else {
                        self.metrics
                            .source_errors
                            .with_label_values(&["zeromq"])
                            .inc();
                        tracing::warn!(%error, "cannot subscribe to the endpoint; trying again");
                    }
                    if !self.pause(attempt, &shutdown).await {
                        return;
                    }
                    attempt = attempt.saturating_add(1);
                    continue;
                }
            };
            attempt = 0;
            if replacing_idle {
                tracing::debug!(endpoint = %self.endpoint, "subscribed again");
            } else {
                tracing::info!(endpoint = %self.endpoint, prefixes = ?self.config.topic_prefixes, "subscribed to fedmsg endpoint");
            }
            let ended = self
                .receive(socket, events, sequence.as_mut(), &shutdown)
                .await;
            if let Some(tracker) = sequence.as_mut() {
                // No next message may come to confirm a gap held back: report it now.
                self.report(tracker.flush());
            }
            replacing_idle = matches!(ended, Ended::Idle);
            match ended {
                Ended::Shutdown | Ended::RelayClosed => return,
                Ended::Lost(error) => {
                    self.metrics
                        .source_errors
                        .with_label_values(&["zeromq"])
                        .inc();
                    tracing::warn!(%error, "ZeroMQ endpoint lost; reconnecting");
                }
                Ended::Idle => {
                    tracing::debug!(endpoint = %self.endpoint, idle = ?self.config.idle_timeout, "no message for a while; replacing the connection");
                }
            }
        }
    }

    /// The endpoint's `i` tracker, or `None` when subscribed to only some topics: `i` counts
    /// every topic the publisher sends, so gaps would be messages we never asked for.
    fn sequence_tracker(&self) -> Option<SequenceTracker> {
        let every_topic = self.config.topic_prefixes.iter().any(String::is_empty);
        if !every_topic {
            tracing::info!(endpoint = %self.endpoint, prefixes = ?self.config.topic_prefixes, "subscribed to some topics only: fedmsg's `i` counts every topic, so sequence gaps are not tracked");
            return None;
        }
        // Exported from the start, so "no loss" reads 0 rather than nothing.
        let label = [self.endpoint.as_str()];
        self.metrics.sequence_gaps.with_label_values(&label);
        self.metrics.missing_messages.with_label_values(&label);
        Some(SequenceTracker::default())
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

    /// Relays what the socket receives until the connection ends.
    async fn receive(
        &self,
        mut socket: SubSocket,
        mut events: futures::channel::mpsc::Receiver<SocketEvent>,
        mut sequence: Option<&mut SequenceTracker>,
        shutdown: &CancellationToken,
    ) -> Ended {
        let idle_timeout = self.config.idle_timeout;
        let checks_idle = !idle_timeout.is_zero();
        // Reset by every message; never selected when the check is disabled.
        let silence = tokio::time::sleep(idle_timeout);
        tokio::pin!(silence);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ended::Shutdown,
                event = events.next() => match event {
                    Some(SocketEvent::Disconnected(_)) | None => {
                        return Ended::Lost(ZeroMqError::Disconnected { endpoint: self.endpoint.clone() });
                    }
                    Some(_) => continue,
                },
                received = socket.recv() => {
                    let message = match received {
                        Ok(message) => message,
                        Err(error) => {
                            let endpoint = self.endpoint.clone();
                            return Ended::Lost(ZeroMqError::Receive { endpoint, detail: error.to_string() });
                        }
                    };
                    silence.as_mut().reset(Instant::now() + idle_timeout);
                    self.metrics.received.with_label_values(&["zeromq"]).inc();
                    let incoming = to_incoming(message);
                    if let Some(tracker) = sequence.as_deref_mut() {
                        self.track(tracker, &incoming);
                    }
                    if self.relay.send(incoming).await.is_err() {
                        return Ended::RelayClosed;
                    }
                }
                _ = &mut silence, if checks_idle => return Ended::Idle,
            }
        }
    }

    fn track(&self, tracker: &mut SequenceTracker, incoming: &Incoming) {
        if incoming.framing_error.is_some() {
            return;
        }
        if let Some((i, timestamp)) = counter_of(&incoming.body) {
            self.report(tracker.observe(i, timestamp));
        }
    }

    /// Counts, logs and hands on for backfill what the tracker found.
    fn report(&self, finding: Option<Finding>) {
        let endpoint = self.endpoint.as_str();
        match finding {
            None => {}
            Some(Finding::Interleaved) => {
                tracing::warn!(endpoint, "several publishers' `i` counters interleave on this endpoint (a fedmsg relay or gateway): sequence gaps are no longer tracked on it; reconciliation with datagrepper still finds losses");
            }
            Some(Finding::Gap {
                last_i,
                next_i,
                span,
            }) => {
                self.metrics
                    .sequence_gaps
                    .with_label_values(&[endpoint])
                    .inc();
                self.metrics
                    .missing_messages
                    .with_label_values(&[endpoint])
                    .inc_by(span.missing);
                tracing::warn!(
                    endpoint,
                    last_i,
                    next_i,
                    missing = span.missing,
                    after = span.after,
                    before = span.before,
                    backfill = self.lost_spans.is_some(),
                    "fedmsg's `i` jumped: messages sent between these event times were lost"
                );
                if let Some(lost_spans) = &self.lost_spans {
                    if lost_spans.try_send(span).is_err() {
                        tracing::warn!(endpoint, "too many lost spans waiting for their backfill; reconciliation will find this one");
                    }
                }
            }
        }
    }
}
