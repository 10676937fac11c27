//! fedmsg over ZeroMQ: SUB sockets connected to the configured endpoints.
//!
//! One task per endpoint, each with its own socket, so a dead endpoint never delays the others.
//! A fedmsg message is a two-frame multipart `[topic, json envelope]`; anything else is passed on
//! with a framing error so the relay can dead-letter it. Note that a SUB `connect` can succeed
//! before any publisher exists and that a PUB drops what a SUB missed: this source cannot tell a
//! quiet bus from a lost message, which is why the ingestor reconciles with datagrepper.

mod error;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use statscache_shared::config::ZeroMqConfig;
use statscache_shared::retry::backoff;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zeromq::{Socket, SocketRecv, SubSocket, ZmqMessage};

pub use error::ZeroMqError;

use crate::metrics::Metrics;
use crate::source::{Incoming, Source};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ZeroMqSource {
    config: ZeroMqConfig,
    metrics: Arc<Metrics>,
}

impl ZeroMqSource {
    pub fn new(config: ZeroMqConfig, metrics: Arc<Metrics>) -> ZeroMqSource {
        ZeroMqSource { config, metrics }
    }
}

#[async_trait]
impl Source for ZeroMqSource {
    fn name(&self) -> &'static str {
        "zeromq"
    }

    async fn run(self: Box<Self>, relay: mpsc::Sender<Incoming>, shutdown: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        for endpoint in &self.config.endpoints {
            tasks.spawn(subscribe_forever(
                endpoint.clone(),
                self.config.clone(),
                relay.clone(),
                self.metrics.clone(),
                shutdown.clone(),
            ));
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// Keeps one endpoint subscribed until shutdown, reconnecting with backoff.
async fn subscribe_forever(
    endpoint: String,
    config: ZeroMqConfig,
    relay: mpsc::Sender<Incoming>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut attempt = 0;
    while !shutdown.is_cancelled() {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = receive_from(&endpoint, &config, &relay, &metrics, &mut attempt) => outcome,
        };
        match outcome {
            Ok(()) => return, // the relay is gone: the ingestor is stopping
            Err(error) => {
                metrics.source_errors.with_label_values(&["zeromq"]).inc();
                tracing::warn!(%error, "ZeroMQ endpoint failed; reconnecting");
            }
        }
        let wait = backoff(attempt, config.reconnect_min, config.reconnect_max);
        attempt += 1;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Connects, subscribes and forwards messages until an error. `Ok` means the relay closed.
async fn receive_from(
    endpoint: &str,
    config: &ZeroMqConfig,
    relay: &mpsc::Sender<Incoming>,
    metrics: &Metrics,
    attempt: &mut u32,
) -> Result<(), ZeroMqError> {
    let mut socket = SubSocket::new();
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(endpoint)).await;
    let connect_error = |detail: String| ZeroMqError::Connect {
        endpoint: endpoint.to_string(),
        timeout: CONNECT_TIMEOUT,
        detail,
    };
    match connected {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(connect_error(error.to_string())),
        Err(_elapsed) => return Err(connect_error("timed out".into())),
    }
    for prefix in &config.topic_prefixes {
        socket
            .subscribe(prefix)
            .await
            .map_err(|error| ZeroMqError::Subscribe {
                endpoint: endpoint.to_string(),
                prefix: prefix.clone(),
                detail: error.to_string(),
            })?;
    }
    tracing::info!(endpoint, prefixes = ?config.topic_prefixes, "subscribed to fedmsg endpoint");
    *attempt = 0;
    loop {
        let message = socket.recv().await.map_err(|error| ZeroMqError::Receive {
            endpoint: endpoint.to_string(),
            detail: error.to_string(),
        })?;
        metrics.received.with_label_values(&["zeromq"]).inc();
        if relay.send(to_incoming(message)).await.is_err() {
            return Ok(());
        }
    }
}

/// fedmsg frames: `[topic, envelope]`. Other shapes keep their bytes and say what is wrong.
fn to_incoming(message: ZmqMessage) -> Incoming {
    let mut frames: Vec<Bytes> = message.into_vec();
    if frames.len() == 2 {
        let body = frames.pop().unwrap_or_default();
        let topic = frames.pop().unwrap_or_default();
        return Incoming {
            source: "zeromq",
            transport_topic: Some(topic),
            body,
            framing_error: None,
        };
    }
    let framing_error = Some(format!(
        "expected 2 frames [topic, envelope], got {}",
        frames.len()
    ));
    let mut body = Vec::new();
    for (index, frame) in frames.iter().enumerate() {
        if index > 0 {
            body.push(b'\n');
        }
        body.extend_from_slice(frame);
    }
    Incoming {
        source: "zeromq",
        transport_topic: None,
        body: Bytes::from(body),
        framing_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_frames_are_topic_and_body() {
        let mut message = ZmqMessage::from(Bytes::from_static(b"org.fedoraproject.prod.a.b"));
        message.push_back(Bytes::from_static(b"{}"));
        let incoming = to_incoming(message);
        assert_eq!(
            incoming.transport_topic.as_deref(),
            Some(&b"org.fedoraproject.prod.a.b"[..])
        );
        assert_eq!(&incoming.body[..], b"{}");
        assert!(incoming.framing_error.is_none());
    }

    #[test]
    fn other_frame_counts_are_framing_errors_that_keep_the_bytes() {
        let single = to_incoming(ZmqMessage::from(Bytes::from_static(b"lonely")));
        assert!(single.framing_error.is_some());
        assert_eq!(&single.body[..], b"lonely");
        let mut three = ZmqMessage::from(Bytes::from_static(b"a"));
        three.push_back(Bytes::from_static(b"b"));
        three.push_back(Bytes::from_static(b"c"));
        assert_eq!(&to_incoming(three).body[..], b"a\nb\nc");
    }
}
