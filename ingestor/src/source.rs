//! What an input source produces, and the trait every source implements.
//!
//! A source only receives bytes and hands them on as [`Incoming`]; it does not validate them nor
//! know about NATS. The relay validates, dead-letters and publishes. That keeps each source small
//! and makes the next one (fedora-messaging over AMQP) a new folder under `sources/`, nothing more.

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One message as a source received it, not yet validated.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// `zeromq`, `datagrepper`, ...: recorded in the `Statscache-Source` header and metrics.
    pub source: &'static str,
    /// The topic the transport carried beside the body (fedmsg's first frame), if any.
    pub transport_topic: Option<Bytes>,
    /// The envelope bytes exactly as received.
    pub body: Bytes,
    /// Set when the transport itself saw something wrong (e.g. a wrong number of frames).
    pub framing_error: Option<String>,
}

/// Messages a source knows it missed (fedmsg's `i` jumped), sent between two event times.
/// The ingestor backfills the span from datagrepper when it can.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LostSpan {
    /// How many messages are missing.
    pub missing: u64,
    /// Event time (epoch seconds) of the last message received before the loss.
    pub after: f64,
    /// Event time of the first message received after it.
    pub before: f64,
}

/// A source of fedmsg messages. It runs until `shutdown` is cancelled, sending what it receives
/// into `relay` (a bounded channel: when the relay is behind, the source waits).
#[async_trait]
pub trait Source: Send {
    fn name(&self) -> &'static str;

    async fn run(self: Box<Self>, relay: mpsc::Sender<Incoming>, shutdown: CancellationToken);
}
