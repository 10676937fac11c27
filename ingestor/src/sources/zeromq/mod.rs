//! fedmsg over ZeroMQ: SUB sockets of the `zeromq` crate, one per configured endpoint.
//!
//! One task per endpoint ([`subscriber`]), each with its own socket, so a dead endpoint never
//! delays the others. Each socket reaches its publisher through a [`guard`] of ours, which
//! bounds what a peer can make us buffer before anything is allocated, drops messages over
//! the limit, and answers ZMTP heartbeats, none of which the crate does (the guard says why);
//! the socket connects to the guard over a private IPC listener ([`loopback`]). Each endpoint
//! is kept subscribed as libzmq would keep it, and fedmsg's `i` is tracked per publishing
//! process to detect losses ([`sequence`], [`publisher`]). A fedmsg message is a two-frame
//! multipart `[topic, json envelope]`; anything else is passed on refused, so the relay can
//! dead-letter it. A PUB drops what a SUB missed, so what the source cannot see (a loss with
//! no later message, topic-filtered subscriptions) is left to reconciliation with datagrepper.

mod error;
mod guard;
mod loopback;
pub mod publisher;
mod sequence;
mod subscriber;
mod zmtp;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use statscache_shared::config::ZeroMqConfig;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use error::ZeroMqError;

use crate::metrics::Metrics;
use crate::source::{Incoming, LostSpan, Refusal, Source};
use publisher::Restored;
use subscriber::Subscriber;

/// The `Statscache-Source` and metric label of this source.
const SOURCE: &str = "zeromq";

pub struct ZeroMqSource {
    config: ZeroMqConfig,
    max_message_bytes: usize,
    metrics: Arc<Metrics>,
    lost_spans: Option<mpsc::Sender<LostSpan>>,
    restored: Restored,
}

impl ZeroMqSource {
    /// A source for `config`'s endpoints. Messages over `max_message_bytes` (all frames) are
    /// dropped unread. Spans that fedmsg's `i` says were lost go to `lost_spans` (for
    /// backfill) if given; `restored` is what the stream says each endpoint carried before.
    /// Fails if the private listeners the crate's sockets connect to cannot be made.
    pub fn new(
        config: ZeroMqConfig,
        max_message_bytes: usize,
        metrics: Arc<Metrics>,
        lost_spans: Option<mpsc::Sender<LostSpan>>,
        restored: Restored,
    ) -> Result<ZeroMqSource, ZeroMqError> {
        loopback::check().map_err(ZeroMqError::Loopback)?;
        Ok(ZeroMqSource {
            config,
            max_message_bytes,
            metrics,
            lost_spans,
            restored,
        })
    }
}

#[async_trait]
impl Source for ZeroMqSource {
    fn name(&self) -> &'static str {
        SOURCE
    }

    async fn run(self: Box<Self>, relay: mpsc::Sender<Incoming>, shutdown: CancellationToken) {
        let ZeroMqSource {
            config,
            max_message_bytes,
            metrics,
            lost_spans,
            mut restored,
        } = *self;
        let mut tasks = tokio::task::JoinSet::new();
        for endpoint in &config.endpoints {
            let known = restored.take(endpoint);
            let subscriber = Subscriber {
                endpoint: endpoint.clone(),
                config: config.clone(),
                max_message_bytes,
                relay: relay.clone(),
                metrics: metrics.clone(),
                lost_spans: lost_spans.clone(),
            };
            tasks.spawn(subscriber.run(known, shutdown.clone()));
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// fedmsg frames: `[topic, envelope]`. Other shapes keep their bytes and are refused.
fn to_incoming(mut frames: Vec<Bytes>) -> Incoming {
    if frames.len() == 2 {
        let body = frames.pop().unwrap_or_default();
        let topic = frames.pop().unwrap_or_default();
        return Incoming::new(SOURCE, Some(topic), body);
    }
    let refusal = Refusal {
        reason: "bad_frames",
        detail: format!("expected 2 frames [topic, envelope], got {}", frames.len()),
    };
    let mut body = Vec::new();
    for (index, frame) in frames.iter().enumerate() {
        if index > 0 {
            body.push(b'\n');
        }
        body.extend_from_slice(frame);
    }
    Incoming::refused(SOURCE, None, Bytes::from(body), refusal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_frames_are_topic_and_body() {
        let frames = vec![
            Bytes::from_static(b"org.fedoraproject.prod.a.b"),
            Bytes::from_static(b"{}"),
        ];
        let incoming = to_incoming(frames);
        assert_eq!(
            incoming.transport_topic.as_deref(),
            Some(&b"org.fedoraproject.prod.a.b"[..])
        );
        assert_eq!(&incoming.body[..], b"{}");
        assert!(incoming.refusal.is_none());
    }

    #[test]
    fn other_frame_counts_are_refused_with_their_bytes() {
        let single = to_incoming(vec![Bytes::from_static(b"lonely")]);
        assert_eq!(
            single.refusal.map(|refusal| refusal.reason),
            Some("bad_frames")
        );
        assert_eq!(&single.body[..], b"lonely");
        let three = vec![
            Bytes::from_static(b"a"),
            Bytes::from_static(b"b"),
            Bytes::from_static(b"c"),
        ];
        assert_eq!(&to_incoming(three).body[..], b"a\nb\nc");
    }
}
