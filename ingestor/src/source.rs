//! What an input source produces, and the trait every source implements.
//!
//! A source only receives bytes and hands them on as [`Incoming`]; it does not validate them nor
//! know about NATS. The relay validates, dead-letters and publishes. That keeps each source small:
//! a new input is a new folder under `sources/`, nothing more.
//!
//! A source whose transport redelivers what was not acknowledged (AMQP) hands the relay a
//! [`Handoff`] that carries its acknowledgement: the relay reports each message's [`Outcome`]
//! back, so the delivery is acked only once JetStream stored it (or its dead letter), and a crash
//! of the ingestor before that loses nothing.

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
    /// Set when the source already knows the message cannot be stored (a wrong number of
    /// frames, an AMQP delivery without an id): the relay dead-letters it under this reason.
    pub refusal: Option<Refusal>,
    /// Headers the source adds to the published message, beside the relay's own (the ZeroMQ
    /// source's publisher sequence). Names are constants; values are single lines the source
    /// made itself, never input.
    pub headers: Vec<(&'static str, String)>,
}

impl Incoming {
    /// A message from `source` with nothing known against it yet.
    pub fn new(source: &'static str, transport_topic: Option<Bytes>, body: Bytes) -> Incoming {
        Incoming {
            source,
            transport_topic,
            body,
            refusal: None,
            headers: Vec::new(),
        }
    }

    /// A message `source` already refuses, kept with its bytes for the dead letter.
    pub fn refused(
        source: &'static str,
        transport_topic: Option<Bytes>,
        body: Bytes,
        refusal: Refusal,
    ) -> Incoming {
        Incoming {
            refusal: Some(refusal),
            ..Incoming::new(source, transport_topic, body)
        }
    }
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

/// Why a source already knows a message cannot be stored (an AMQP delivery without an id, a
/// multipart message that is not fedmsg's two frames): the relay dead-letters it under this
/// reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// A short stable name: a metric label and the dead letter's reason.
    pub reason: &'static str,
    pub detail: String,
}

/// How the relay finished with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// JetStream acked the publish: a message new to the stream.
    Stored,
    /// JetStream recognised it as a copy of a message it holds (same identity).
    Duplicate,
    /// Invalid, or refused for good by JetStream: its dead letter is written.
    DeadLettered,
    /// Valid but failing too often while NATS was connected; dead-lettered as `publish_failed`,
    /// and worth delivering again.
    GivenUp,
}

/// What the relay reads from its channel: a message, and how to report its outcome.
#[async_trait]
pub trait Handoff: Send + 'static {
    fn incoming(&self) -> &Incoming;

    /// Called once, when the message's outcome is known. Sources without acks ignore it.
    async fn settle(self, _outcome: Outcome)
    where
        Self: Sized,
    {
    }
}

#[async_trait]
impl Handoff for Incoming {
    fn incoming(&self) -> &Incoming {
        self
    }
}

/// A source of fedmsg messages. It runs until `shutdown` is cancelled, sending what it receives
/// into `relay` (a bounded channel: when the relay is behind, the source waits).
#[async_trait]
pub trait Source: Send {
    fn name(&self) -> &'static str;

    async fn run(self: Box<Self>, relay: mpsc::Sender<Incoming>, shutdown: CancellationToken);
}
