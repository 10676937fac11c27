//! fedmsg over ZeroMQ: SUB sockets connected to the configured endpoints.
//!
//! One task per endpoint ([`subscriber`]), each with its own socket, so a dead endpoint never
//! delays the others. It reconnects as libzmq does, around the `zeromq` crate's own reconnection
//! ([`connection`] says why), and tracks fedmsg's `i` to detect losses ([`sequence`]). A fedmsg
//! message is a two-frame multipart `[topic, json envelope]`; anything else is passed on with a
//! framing error so the relay can dead-letter it. A PUB drops what a SUB missed, so what the
//! source cannot see (a loss with no later message, topic-filtered subscriptions) is left to
//! reconciliation with datagrepper.

mod connection;
mod error;
mod sequence;
mod subscriber;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use statscache_shared::config::ZeroMqConfig;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zeromq::ZmqMessage;

pub use error::ZeroMqError;

use crate::metrics::Metrics;
use crate::source::{Incoming, LostSpan, Source};
use subscriber::Subscriber;

pub struct ZeroMqSource {
    config: ZeroMqConfig,
    metrics: Arc<Metrics>,
    lost_spans: Option<mpsc::Sender<LostSpan>>,
}

impl ZeroMqSource {
    /// A source for `config`'s endpoints; spans that fedmsg's `i` says were lost go to
    /// `lost_spans` (for backfill) if given.
    pub fn new(
        config: ZeroMqConfig,
        metrics: Arc<Metrics>,
        lost_spans: Option<mpsc::Sender<LostSpan>>,
    ) -> ZeroMqSource {
        ZeroMqSource {
            config,
            metrics,
            lost_spans,
        }
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
            let subscriber = Subscriber {
                endpoint: endpoint.clone(),
                config: self.config.clone(),
                relay: relay.clone(),
                metrics: self.metrics.clone(),
                lost_spans: self.lost_spans.clone(),
            };
            tasks.spawn(subscriber.run(shutdown.clone()));
        }
        while tasks.join_next().await.is_some() {}
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
