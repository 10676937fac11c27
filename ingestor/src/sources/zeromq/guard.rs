//! The ZMTP guard: what stands between a publisher and the `zeromq` crate's SUB socket.
//!
//! Why: the ingestor subscribes with the `zeromq` crate, but the crate (0.7) reserves whatever
//! size a frame header declares before the body comes (one 9-byte header declaring 64 GiB
//! aborted the ingestor on the failed allocation), has no message size limit, and drops its
//! connection at the first ZMTP 3.1 PING (a libzmq publisher with `ZMQ_HEARTBEAT_IVL` lost
//! what was in flight at every heartbeat). None of that can be fixed from outside the crate,
//! and it connects only to endpoints (it takes no stream of ours), so its socket connects to
//! a listener of ours ([`super::loopback`]) and, for each of its connections, the guard holds
//! one to the real publisher and relays between the two, parsing what the publisher sends
//! with our bounded decoder ([`codec`]):
//!
//! - the publisher's greeting and READY are checked (ZMTP 3.0 or later, `NULL`, a PUB or XPUB
//!   socket) and passed on; the crate's greeting, READY and subscriptions reach the publisher
//!   unchanged (the crate sends its subscriptions only after the publisher's READY, as libzmq
//!   needs: it drops a peer whose first message comes before it has sent its own READY);
//! - a message over the limit is counted, dead-lettered with what came of it, and its bytes
//!   dropped as they come, never buffered, so one oversized message of a legitimate
//!   publisher costs only itself; one declaring more than [`MAX_DISCARD_BYTES`], or whose
//!   body stops coming for [`DISCARD_STALL`], ends the connection instead;
//! - the crate never sees a command after READY: PINGs are answered here with PONGs, and a
//!   connection silent for `idle-timeout` gets our own PING and is ended if nothing comes
//!   within [`HEARTBEAT_GRACE`] (a ZMTP 3.0 publisher, which knows no PING, at once): a quiet
//!   healthy publisher is kept, one gone without a word (a host lost, state dropped by a
//!   firewall) is not listened to forever.
//!
//! However the connection ends, what was already decoded is handed to the crate before its
//! side is closed, so nothing received is lost; the crate then reports the disconnect, which
//! is how the subscriber knows its socket is drained.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::loopback::Listener;
use super::zmtp::codec::{self, Command, Decoded, Decoder, FrameError, GREETING_LEN};
use super::zmtp::Transport;
use super::{to_incoming, SOURCE};
use crate::metrics::Metrics;
use crate::source::{Incoming, Refusal};

/// The publisher's greeting and READY, and the crate's connection to the guard, each.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a silent connection has to answer a PING before it is ended.
pub const HEARTBEAT_GRACE: Duration = Duration::from_secs(5);

/// Largest message (all frames, as declared) whose bytes are dropped with the connection
/// kept; a larger one ends the connection at its header. 64 MiB go by in well under a second
/// on any link a publisher would use, and a peer declaring more is not one we can read.
pub const MAX_DISCARD_BYTES: u64 = 64 << 20;

/// How long the body of a message being dropped may stop coming. A publisher writes a message
/// whole: one that stops in the middle for this long is broken or hostile, and a PING would
/// not help (its answer cannot come before the frame ends).
pub const DISCARD_STALL: Duration = Duration::from_secs(5);

/// Bytes read from a connection at a time (more when a message under the limit needs more).
const READ_CHUNK: usize = 64 * 1024;

/// What may wait for the crate to read it before the publisher is read no further: the
/// publisher then waits too (and drops for us what its high-water mark cannot hold, as it
/// would for any slow subscriber).
const TO_SUBSCRIBER_HIGH_WATER: usize = 256 * 1024;

/// Largest frame the crate may send (subscriptions and READY are a few dozen bytes).
const MAX_SUBSCRIBER_FRAME: u64 = codec::MAX_COMMAND_BYTES;

/// Why a guarded connection ended.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("the ZMTP handshake did not complete within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("the peer is a {0} socket, not a publisher")]
    NotAPublisher(String),
    #[error("the peer sent an ERROR command: {0}")]
    PeerError(String),
    #[error(transparent)]
    Protocol(#[from] FrameError),
    #[error("the body of a message over the limit stopped coming for {0:?}")]
    Stalled(Duration),
    #[error("the publisher closed the connection")]
    Closed,
    #[error("connection to the publisher failed: {0}")]
    Io(std::io::Error),
    #[error("the subscriber socket did not connect within {0:?}")]
    SubscriberAbsent(Duration),
    #[error("the subscriber socket closed its connection")]
    SubscriberClosed,
    #[error(
        "the subscriber socket sent a frame of {0} bytes, more than a command or subscription"
    )]
    SubscriberFrame(u64),
    #[error("the subscriber socket's connection failed: {0}")]
    SubscriberIo(std::io::Error),
}

impl GuardError {
    /// The label under which this is counted, if the publisher broke ZMTP or our limits.
    pub fn protocol_reason(&self) -> Option<&'static str> {
        match self {
            GuardError::Protocol(violation) => Some(violation.reason()),
            GuardError::NotAPublisher(_) => Some("not_a_publisher"),
            GuardError::PeerError(_) => Some("peer_error"),
            GuardError::HandshakeTimeout(_)
            | GuardError::Stalled(_)
            | GuardError::Closed
            | GuardError::Io(_)
            | GuardError::SubscriberAbsent(_)
            | GuardError::SubscriberClosed
            | GuardError::SubscriberFrame(_)
            | GuardError::SubscriberIo(_) => None,
        }
    }

    /// Whether the publisher is to blame: it is then reconnected to after a growing pause, not
    /// in a tight loop.
    pub fn is_publisher_fault(&self) -> bool {
        self.protocol_reason().is_some()
            || matches!(
                self,
                GuardError::Stalled(_) | GuardError::HandshakeTimeout(_)
            )
    }
}

/// How a guarded connection ended.
#[derive(Debug)]
pub enum GuardEnded {
    Lost(GuardError),
    /// Silent for `idle-timeout`, and nothing came after our PING.
    Idle,
    /// The relay is gone (the ingestor is stopping): a dead letter could not be handed on.
    RelayClosed,
}

/// One endpoint's guard: its limits, and where what it refuses goes.
#[derive(Clone)]
pub struct Guard {
    pub endpoint: Arc<str>,
    /// Largest message (all frames) handed to the crate.
    pub max_message_bytes: usize,
    /// Silence after which the publisher is asked whether it is there; zero: never.
    pub idle_timeout: Duration,
    pub metrics: Arc<Metrics>,
    /// Where dead letters of refused messages go.
    pub relay: mpsc::Sender<Incoming>,
}

/// Where the publisher's side of the handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Greeting,
    Ready,
    Traffic,
}

impl Guard {
    /// Accepts the crate's connection on `listener` and relays between it and `publisher`
    /// until either ends; `ready` learns, once the publisher's READY is passed on, whether it
    /// speaks ZMTP 3.1 (answers PINGs).
    pub async fn run(
        self,
        publisher: Box<dyn Transport>,
        listener: Listener,
        ready: oneshot::Sender<bool>,
    ) -> GuardEnded {
        let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, listener.accept()).await;
        let subscriber = match accepted {
            Ok(Ok(subscriber)) => subscriber,
            Ok(Err(error)) => return GuardEnded::Lost(GuardError::SubscriberIo(error)),
            Err(_elapsed) => {
                return GuardEnded::Lost(GuardError::SubscriberAbsent(HANDSHAKE_TIMEOUT))
            }
        };
        let (subscriber_read, subscriber_write) = subscriber.into_split();
        let (publisher_read, publisher_write) = tokio::io::split(publisher);
        let decoder = Decoder::new(self.max_message_bytes, MAX_DISCARD_BYTES);
        let mut relay = Relay {
            guard: self,
            publisher_read,
            publisher_write,
            subscriber_read,
            subscriber_write,
            from_publisher: BytesMut::new(),
            to_subscriber: BytesMut::new(),
            from_subscriber: BytesMut::new(),
            to_publisher: BytesMut::new(),
            subscriber_greeting_left: GREETING_LEN,
            subscriber_frames: 0,
            decoder,
            phase: Phase::Greeting,
            heartbeats: false,
            ready: Some(ready),
        };
        let ended = relay.run().await;
        relay.finish().await;
        ended
    }

    fn count(&self, reason: &'static str) {
        self.metrics
            .zeromq_protocol_errors
            .with_label_values(&[&*self.endpoint, reason])
            .inc();
    }

    /// Counts and logs a publisher breaking ZMTP or our limits.
    fn protocol_error(&self, error: &GuardError) {
        if let Some(reason) = error.protocol_reason() {
            self.count(reason);
        }
        tracing::warn!(endpoint = %self.endpoint, %error, "the ZeroMQ publisher broke ZMTP or the message limit; dropping the connection");
    }

    /// Dead-letters what came of a message refused for `violation`, saying what became of the
    /// connection; `false` if the relay is gone.
    async fn dead_letter(&self, frames: Vec<Bytes>, violation: &FrameError, kept: bool) -> bool {
        let what_next = if kept {
            "the rest of the message was dropped unread, the connection kept"
        } else {
            "the connection was dropped"
        };
        let refusal = Refusal {
            reason: violation.reason(),
            detail: format!("{violation}; {what_next} ({})", self.endpoint),
        };
        let partial = to_incoming(frames);
        let refused = Incoming::refused(SOURCE, partial.transport_topic, partial.body, refusal);
        self.relay.send(refused).await.is_ok()
    }
}

/// One guarded connection: the publisher's side, the crate's side, and what waits between.
struct Relay {
    guard: Guard,
    publisher_read: ReadHalf<Box<dyn Transport>>,
    publisher_write: WriteHalf<Box<dyn Transport>>,
    subscriber_read: OwnedReadHalf,
    subscriber_write: OwnedWriteHalf,
    from_publisher: BytesMut,
    /// Whole items (greeting, READY, messages) for the crate.
    to_subscriber: BytesMut,
    from_subscriber: BytesMut,
    /// Whole items (the crate's, and our PONGs and PINGs between them) for the publisher.
    to_publisher: BytesMut,
    /// Bytes of the crate's greeting not yet passed on (they go as they come).
    subscriber_greeting_left: usize,
    /// Whole frames passed on from the crate (its READY is the first).
    subscriber_frames: u64,
    decoder: Decoder,
    phase: Phase,
    /// Whether the publisher speaks ZMTP 3.1, and so answers PINGs.
    heartbeats: bool,
    ready: Option<oneshot::Sender<bool>>,
}

/// The clock of one connection, checked lazily: the timer fires at the earliest deadline
/// that may apply and is moved on if the actual one is later.
struct Clock {
    started: Instant,
    /// The last whole item from the publisher.
    heard: Instant,
    /// The last bytes from the publisher.
    read: Instant,
    pinged: Option<Instant>,
}

impl Relay {
    async fn run(&mut self) -> GuardEnded {
        let now = Instant::now();
        let mut clock = Clock {
            started: now,
            heard: now,
            read: now,
            pinged: None,
        };
        let timer = tokio::time::sleep_until(now + HANDSHAKE_TIMEOUT);
        tokio::pin!(timer);
        loop {
            let rearm = match self.take_from_publisher(&mut clock).await {
                Ok(rearm) => rearm,
                Err(ended) => return ended,
            };
            if rearm {
                timer.as_mut().reset(self.deadline(&clock));
            }
            if let Err(error) = self.take_from_subscriber() {
                return GuardEnded::Lost(error);
            }
            let reads_publisher = self.to_subscriber.len() < TO_SUBSCRIBER_HIGH_WATER;
            let reads_subscriber = self.to_publisher.len() < READ_CHUNK;
            if reads_publisher {
                let wanted = self.decoder.wanted(&self.from_publisher).max(READ_CHUNK);
                self.from_publisher.reserve(wanted);
            }
            tokio::select! {
                biased;
                written = self.subscriber_write.write_buf(&mut self.to_subscriber), if !self.to_subscriber.is_empty() => {
                    if let Err(error) = written {
                        return GuardEnded::Lost(GuardError::SubscriberIo(error));
                    }
                }
                written = self.publisher_write.write_buf(&mut self.to_publisher), if !self.to_publisher.is_empty() => {
                    if let Err(error) = written {
                        return GuardEnded::Lost(GuardError::Io(error));
                    }
                }
                read = self.publisher_read.read_buf(&mut self.from_publisher), if reads_publisher => {
                    match read {
                        Ok(0) => return GuardEnded::Lost(GuardError::Closed),
                        Ok(_) => clock.read = Instant::now(),
                        Err(error) => return GuardEnded::Lost(GuardError::Io(error)),
                    }
                }
                read = self.subscriber_read.read_buf(&mut self.from_subscriber), if reads_subscriber => {
                    match read {
                        Ok(0) => return GuardEnded::Lost(GuardError::SubscriberClosed),
                        Ok(_) => {}
                        Err(error) => return GuardEnded::Lost(GuardError::SubscriberIo(error)),
                    }
                }
                () = &mut timer => {
                    if let Some(ended) = self.on_timer(&mut clock) {
                        return ended;
                    }
                    timer.as_mut().reset(self.deadline(&clock));
                }
            }
        }
    }

    /// The deadline that applies now: the handshake's, a dropped body's stall, the silence
    /// before a PING, or the PING's answer. Far ahead when none does.
    fn deadline(&self, clock: &Clock) -> Instant {
        let idle_timeout = self.guard.idle_timeout;
        if self.phase != Phase::Traffic {
            return clock.started + HANDSHAKE_TIMEOUT;
        }
        if self.decoder.is_discarding() {
            return clock.read + DISCARD_STALL;
        }
        if idle_timeout.is_zero() {
            // Looked at again in an hour, for nothing.
            return Instant::now() + Duration::from_secs(3600);
        }
        match clock.pinged {
            Some(pinged) => pinged + HEARTBEAT_GRACE.min(idle_timeout),
            None => clock.heard + idle_timeout,
        }
    }

    /// The timer fired: an end, a PING, or nothing yet (the deadline moved on meanwhile).
    fn on_timer(&mut self, clock: &mut Clock) -> Option<GuardEnded> {
        let now = Instant::now();
        if now < self.deadline(clock) {
            return None;
        }
        if self.phase != Phase::Traffic {
            return Some(GuardEnded::Lost(GuardError::HandshakeTimeout(
                HANDSHAKE_TIMEOUT,
            )));
        }
        if self.decoder.is_discarding() {
            return Some(GuardEnded::Lost(GuardError::Stalled(DISCARD_STALL)));
        }
        // Our PING goes only after the crate's READY, which must come first.
        if clock.pinged.is_some() || !self.heartbeats || self.subscriber_frames == 0 {
            return Some(GuardEnded::Idle);
        }
        codec::put_ping(&mut self.to_publisher);
        clock.pinged = Some(now);
        None
    }

    /// Decodes what the publisher sent while the crate's side has room: the greeting and
    /// READY are checked and passed on, messages passed on, heartbeats answered here, messages
    /// over the limit reported and dropped. `Ok(true)` when the deadline to watch changed.
    async fn take_from_publisher(&mut self, clock: &mut Clock) -> Result<bool, GuardEnded> {
        let mut rearm = false;
        while self.to_subscriber.len() < TO_SUBSCRIBER_HIGH_WATER {
            if self.phase == Phase::Greeting {
                if self.from_publisher.len() < GREETING_LEN {
                    return Ok(rearm);
                }
                let bytes = self.from_publisher.split_to(GREETING_LEN);
                let mut greeting = [0u8; GREETING_LEN];
                greeting.copy_from_slice(&bytes);
                let parsed = codec::parse_greeting(&greeting)
                    .map_err(|violation| self.lost(GuardError::Protocol(violation)))?;
                self.heartbeats = parsed.supports_heartbeats();
                self.to_subscriber.extend_from_slice(&bytes);
                self.phase = Phase::Ready;
                continue;
            }
            let decoded = match self.decoder.decode(&mut self.from_publisher) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => return Ok(rearm),
                Err(violation) => return Err(self.refuse(violation).await),
            };
            clock.heard = Instant::now();
            clock.pinged = None;
            match decoded {
                Decoded::Command(command) if self.phase == Phase::Ready => {
                    self.on_ready(&command)?;
                    rearm = true;
                }
                Decoded::Command(command) => self.on_command(&command)?,
                Decoded::Message(_) if self.phase == Phase::Ready => {
                    let violation = FrameError::BadCommand("a message before READY");
                    return Err(self.lost(GuardError::Protocol(violation)));
                }
                Decoded::Message(frames) => codec::put_message(&mut self.to_subscriber, &frames),
                Decoded::Oversized { frames, violation } => {
                    self.guard.count(violation.reason());
                    tracing::warn!(endpoint = %self.guard.endpoint, %violation, "a ZeroMQ message over the limit: dropped unread, the connection kept");
                    if !self.guard.dead_letter(frames, &violation, true).await {
                        return Err(GuardEnded::RelayClosed);
                    }
                    // The stall of its body is watched from now.
                    clock.read = Instant::now();
                    rearm = true;
                }
            }
        }
        Ok(rearm)
    }

    /// The publisher's answer to the crate's READY: its own (passed on), or an ERROR.
    fn on_ready(&mut self, command: &Command) -> Result<(), GuardEnded> {
        match &command.name[..] {
            b"READY" => {
                let socket_type = command
                    .property(b"Socket-Type")
                    .map_err(|violation| self.lost(GuardError::Protocol(violation)))?
                    .unwrap_or_default();
                if &socket_type[..] != b"PUB" && &socket_type[..] != b"XPUB" {
                    let shown = String::from_utf8_lossy(&socket_type).into_owned();
                    return Err(self.lost(GuardError::NotAPublisher(shown)));
                }
                codec::put_command(&mut self.to_subscriber, &command.name, &command.data);
                self.phase = Phase::Traffic;
                if let Some(ready) = self.ready.take() {
                    // The subscriber may have stopped waiting: nothing to tell then.
                    let _ = ready.send(self.heartbeats);
                }
                Ok(())
            }
            b"ERROR" => Err(self.lost(GuardError::PeerError(error_reason(&command.data)))),
            _ => Err(self.lost(GuardError::Protocol(FrameError::BadCommand(
                "expected READY",
            )))),
        }
    }

    /// A command after the handshake: heartbeats are answered or noted, an ERROR ends the
    /// connection, anything else (a SUBSCRIBE echoed by a proxy, commands of later ZMTP
    /// versions) is ignored, as libzmq ignores it. None reaches the crate, which would drop
    /// the connection at any command but READY.
    fn on_command(&mut self, command: &Command) -> Result<(), GuardEnded> {
        match &command.name[..] {
            b"PING" => command
                .put_pong(&mut self.to_publisher)
                .map_err(|violation| self.lost(GuardError::Protocol(violation))),
            b"ERROR" => Err(self.lost(GuardError::PeerError(error_reason(&command.data)))),
            _ => Ok(()),
        }
    }

    /// Counts and logs a publisher's fault that ends the connection.
    fn lost(&self, error: GuardError) -> GuardEnded {
        self.guard.protocol_error(&error);
        GuardEnded::Lost(error)
    }

    /// A message the decoder refused outright: counted, and what came of it dead-lettered.
    async fn refuse(&mut self, violation: FrameError) -> GuardEnded {
        let partial = self.decoder.partial_message().to_vec();
        let error = GuardError::Protocol(violation.clone());
        self.guard.protocol_error(&error);
        if !self.guard.dead_letter(partial, &violation, false).await {
            return GuardEnded::RelayClosed;
        }
        GuardEnded::Lost(error)
    }

    /// Passes on the crate's bytes up to its last whole item, so that our PONGs and PINGs
    /// always fall between its frames.
    fn take_from_subscriber(&mut self) -> Result<(), GuardError> {
        if self.subscriber_greeting_left > 0 {
            let passed = self
                .subscriber_greeting_left
                .min(self.from_subscriber.len());
            let greeting = self.from_subscriber.split_to(passed);
            self.to_publisher.extend_from_slice(&greeting);
            self.subscriber_greeting_left -= passed;
            if self.subscriber_greeting_left > 0 {
                return Ok(());
            }
        }
        while let Some(header) = codec::peek_header(&self.from_subscriber) {
            if header.body_len > MAX_SUBSCRIBER_FRAME {
                return Err(GuardError::SubscriberFrame(header.body_len));
            }
            // At most MAX_SUBSCRIBER_FRAME.
            let frame_len = header.header_len + header.body_len as usize;
            if self.from_subscriber.len() < frame_len {
                break;
            }
            let frame = self.from_subscriber.split_to(frame_len);
            self.to_publisher.extend_from_slice(&frame);
            self.subscriber_frames += 1;
        }
        Ok(())
    }

    /// Hands the crate what was decoded, then closes its side: it reads to the end, and
    /// reports the disconnect.
    async fn finish(&mut self) {
        if !self.to_subscriber.is_empty()
            && self
                .subscriber_write
                .write_all_buf(&mut self.to_subscriber)
                .await
                .is_err()
        {
            return;
        }
        // Closed anyway when dropped; shut down here so that the crate sees the end after
        // everything written.
        let _ = self.subscriber_write.shutdown().await;
    }
}

/// An ERROR command's reason (one length byte, then the text).
fn error_reason(data: &Bytes) -> String {
    let Some((&length, text)) = data.split_first() else {
        return String::new();
    };
    let text = &text[..text.len().min(usize::from(length))];
    String::from_utf8_lossy(text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::zeromq::loopback;
    use crate::sources::zeromq::zmtp::codec::peer;
    use crate::sources::zeromq::zmtp::{self, Endpoint};
    use futures::StreamExt;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};
    use zeromq::{Socket, SocketEvent, SocketRecv, SubSocket};

    const LIMIT: usize = 1024;

    /// What the crate sends before any message: its greeting (64), READY (27), and the
    /// subscription to every topic (3).
    const SUBSCRIBER_HANDSHAKE: usize = 64 + 27 + 3;

    /// A crate socket connected through a guard to a scripted publisher.
    struct Guarded {
        socket: SubSocket,
        events: futures::channel::mpsc::Receiver<SocketEvent>,
        /// Where the socket connects to reach the guard.
        socket_endpoint: String,
        guard: tokio::task::JoinHandle<GuardEnded>,
        dead_letters: mpsc::Receiver<Incoming>,
        metrics: Arc<Metrics>,
        /// The publisher's end of its connection.
        publisher: TcpStream,
    }

    /// The publisher's greeting and READY of a `socket_type` socket.
    fn handshake(socket_type: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        out.extend_from_slice(&peer::greeting());
        peer::put_ready(&mut out, socket_type);
        out
    }

    /// Starts a guard between a publisher that first sends `first` and a fresh crate socket
    /// subscribed to every topic; the crate's connect is left to the caller.
    async fn start(first: BytesMut, idle_timeout: Duration) -> Guarded {
        let publisher_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = publisher_listener.local_addr().expect("address").port();
        let endpoint = Endpoint::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        let transport = zmtp::connect(&endpoint, Duration::from_secs(5))
            .await
            .expect("connect");
        let (mut publisher, _) = publisher_listener.accept().await.expect("accept");
        publisher.write_all(&first).await.expect("write");
        let listener = loopback::listen().expect("listen");
        let socket_endpoint = listener.endpoint().to_string();
        let registry = prometheus::Registry::new();
        let metrics = Arc::new(Metrics::new(&registry).expect("metrics"));
        let (relay, dead_letters) = mpsc::channel(16);
        let guard = Guard {
            endpoint: Arc::from("tcp://publisher"),
            max_message_bytes: LIMIT,
            idle_timeout,
            metrics: metrics.clone(),
            relay,
        };
        let (ready, _) = oneshot::channel();
        let guard = tokio::spawn(guard.run(transport, listener, ready));
        let mut socket = SubSocket::new();
        let events = socket.monitor();
        socket.subscribe("").await.expect("subscribe");
        Guarded {
            socket,
            events,
            socket_endpoint,
            guard,
            dead_letters,
            metrics,
            publisher,
        }
    }

    /// A guard with a PUB publisher that sent its handshake, and the crate connected.
    async fn connected(idle_timeout: Duration) -> Guarded {
        let mut guarded = start(handshake(b"PUB"), idle_timeout).await;
        guarded
            .socket
            .connect(&guarded.socket_endpoint)
            .await
            .expect("connected");
        let mut handshake = vec![0u8; SUBSCRIBER_HANDSHAKE];
        guarded
            .publisher
            .read_exact(&mut handshake)
            .await
            .expect("the crate's handshake");
        assert_eq!(&handshake[SUBSCRIBER_HANDSHAKE - 3..], b"\x00\x01\x01");
        guarded
    }

    fn message(frames: &[&[u8]]) -> BytesMut {
        let frames: Vec<Bytes> = frames.iter().map(|f| Bytes::copy_from_slice(f)).collect();
        let mut out = BytesMut::new();
        codec::put_message(&mut out, &frames);
        out
    }

    async fn received(guarded: &mut Guarded) -> Vec<Bytes> {
        let message = tokio::time::timeout(Duration::from_secs(5), guarded.socket.recv())
            .await
            .expect("in time")
            .expect("a message");
        message.into_vec()
    }

    /// Waits for the crate to report the disconnect, which it does when its socket is read
    /// past the end, as the subscriber does; no message may come first.
    async fn disconnected(guarded: &mut Guarded) {
        let deadline = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                event = guarded.events.next() => {
                    if matches!(event, Some(SocketEvent::Disconnected(_)) | None) {
                        return;
                    }
                }
                received = guarded.socket.recv() => panic!("a message after the end: {received:?}"),
                () = &mut deadline => panic!("no disconnect within 5 s"),
            }
        }
    }

    fn protocol_errors(guarded: &Guarded, reason: &str) -> u64 {
        guarded
            .metrics
            .zeromq_protocol_errors
            .with_label_values(&["tcp://publisher", reason])
            .get()
    }

    #[tokio::test]
    async fn subscriptions_go_only_after_the_publishers_ready() {
        let greeting_only = BytesMut::from(&peer::greeting()[..]);
        let mut guarded = start(greeting_only, Duration::ZERO).await;
        let mut socket = std::mem::replace(&mut guarded.socket, SubSocket::new());
        let socket_endpoint = guarded.socket_endpoint.clone();
        let connecting = tokio::spawn(async move {
            socket.connect(&socket_endpoint).await.expect("connected");
            socket
        });
        let mut greeting_and_ready = vec![0u8; 64 + 27];
        guarded
            .publisher
            .read_exact(&mut greeting_and_ready)
            .await
            .expect("greeting and READY");
        let mut more = [0u8; 1];
        let early = tokio::time::timeout(
            Duration::from_millis(300),
            guarded.publisher.read(&mut more),
        )
        .await;
        assert!(early.is_err(), "nothing before our READY: {early:?}");
        let mut ready = BytesMut::new();
        peer::put_ready(&mut ready, b"XPUB");
        guarded.publisher.write_all(&ready).await.expect("READY");
        let mut subscription = [0u8; 3];
        guarded
            .publisher
            .read_exact(&mut subscription)
            .await
            .expect("subscription");
        assert_eq!(&subscription, b"\x00\x01\x01");
        connecting.await.expect("connect task");
    }

    #[tokio::test]
    async fn pings_are_answered_here_and_messages_handed_to_the_socket() {
        let mut guarded = connected(Duration::ZERO).await;
        let mut script = BytesMut::new();
        codec::put_command(&mut script, b"PING", b"\x00\x0ahi");
        script.extend_from_slice(&message(&[b"topic", b"{}"]));
        guarded.publisher.write_all(&script).await.expect("write");
        assert_eq!(received(&mut guarded).await, [&b"topic"[..], &b"{}"[..]]);
        let mut pong = [0u8; 9];
        guarded.publisher.read_exact(&mut pong).await.expect("PONG");
        assert_eq!(&pong, b"\x04\x07\x04PONGhi");
        assert!(!guarded.guard.is_finished());
    }

    #[tokio::test]
    async fn a_message_over_the_limit_is_dropped_and_the_connection_kept() {
        let mut guarded = connected(Duration::ZERO).await;
        let mut script = message(&[b"org.fedoraproject.prod.big", &[b'x'; 5 * LIMIT]]);
        script.extend_from_slice(&message(&[b"next", b"{}"]));
        guarded.publisher.write_all(&script).await.expect("write");
        assert_eq!(received(&mut guarded).await, [&b"next"[..], &b"{}"[..]]);
        let letter = guarded.dead_letters.recv().await.expect("a dead letter");
        let refusal = letter.refusal.expect("refused");
        assert_eq!(refusal.reason, "frame_too_large");
        assert!(
            refusal.detail.contains("connection kept"),
            "{}",
            refusal.detail
        );
        assert_eq!(&letter.body[..], b"org.fedoraproject.prod.big");
        assert_eq!(protocol_errors(&guarded, "frame_too_large"), 1);
        assert!(!guarded.guard.is_finished());
    }

    #[tokio::test]
    async fn a_dropped_body_that_stops_coming_ends_the_connection() {
        let mut guarded = connected(Duration::ZERO).await;
        let mut script = BytesMut::from(&b"\x01\x05topic\x02"[..]);
        script.extend_from_slice(&(4 * LIMIT as u64).to_be_bytes());
        script.extend_from_slice(&[b'x'; LIMIT]);
        guarded.publisher.write_all(&script).await.expect("write");
        let letter = guarded.dead_letters.recv().await.expect("a dead letter");
        assert_eq!(&letter.body[..], b"topic");
        let ended = tokio::time::timeout(2 * DISCARD_STALL, &mut guarded.guard)
            .await
            .expect("in time")
            .expect("guard");
        assert!(
            matches!(ended, GuardEnded::Lost(GuardError::Stalled(_))),
            "{ended:?}"
        );
        disconnected(&mut guarded).await;
    }

    #[tokio::test]
    async fn a_frame_declared_beyond_the_discard_bound_ends_the_connection_unread() {
        let mut guarded = connected(Duration::ZERO).await;
        let mut script = message(&[b"first", b"{}"]);
        script.extend_from_slice(b"\x01\x05topic\x02");
        script.extend_from_slice(&(1u64 << 63).to_be_bytes());
        guarded.publisher.write_all(&script).await.expect("write");
        assert_eq!(received(&mut guarded).await, [&b"first"[..], &b"{}"[..]]);
        disconnected(&mut guarded).await;
        let ended = (&mut guarded.guard).await.expect("guard");
        assert!(
            matches!(ended, GuardEnded::Lost(GuardError::Protocol(FrameError::FrameTooLarge { declared, .. })) if declared == 1 << 63),
            "{ended:?}"
        );
        let letter = guarded.dead_letters.recv().await.expect("a dead letter");
        let detail = letter.refusal.expect("refused").detail;
        assert!(
            detail.contains(&format!("a frame of {} bytes", 1u64 << 63)),
            "{detail}"
        );
        assert!(detail.contains("connection was dropped"), "{detail}");
        assert_eq!(protocol_errors(&guarded, "frame_too_large"), 1);
    }

    #[tokio::test]
    async fn what_came_before_the_publisher_closed_is_all_handed_on() {
        let mut guarded = connected(Duration::ZERO).await;
        let mut script = BytesMut::new();
        for index in 0..500u32 {
            script.extend_from_slice(&message(&[b"topic", index.to_string().as_bytes()]));
        }
        guarded.publisher.write_all(&script).await.expect("write");
        guarded.publisher.shutdown().await.expect("close");
        for index in 0..500u32 {
            let frames = received(&mut guarded).await;
            assert_eq!(&frames[1][..], index.to_string().as_bytes());
        }
        disconnected(&mut guarded).await;
        let ended = guarded.guard.await.expect("guard");
        assert!(
            matches!(ended, GuardEnded::Lost(GuardError::Closed)),
            "{ended:?}"
        );
    }

    #[tokio::test]
    async fn a_silent_publisher_is_pinged_and_given_up_only_when_it_does_not_answer() {
        let idle = Duration::from_millis(200);
        let mut guarded = connected(idle).await;
        let ping = b"\x04\x07\x04PING\x00\x00";
        let mut received_ping = [0u8; 9];
        guarded
            .publisher
            .read_exact(&mut received_ping)
            .await
            .expect("a PING");
        assert_eq!(&received_ping, ping);
        let mut pong = BytesMut::new();
        codec::put_command(&mut pong, b"PONG", b"");
        guarded.publisher.write_all(&pong).await.expect("PONG");
        // Answered: kept, and asked again after the next silence; unanswered, given up.
        guarded
            .publisher
            .read_exact(&mut received_ping)
            .await
            .expect("a second PING");
        assert_eq!(&received_ping, ping);
        let ended = tokio::time::timeout(Duration::from_secs(5), &mut guarded.guard)
            .await
            .expect("in time")
            .expect("guard");
        assert!(matches!(ended, GuardEnded::Idle), "{ended:?}");
        disconnected(&mut guarded).await;
    }

    #[tokio::test]
    async fn a_subscriber_at_the_endpoint_is_not_a_publisher() {
        let mut guarded = start(handshake(b"SUB"), Duration::ZERO).await;
        let connected = guarded.socket.connect(&guarded.socket_endpoint).await;
        assert!(connected.is_err());
        let ended = (&mut guarded.guard).await.expect("guard");
        assert!(
            matches!(ended, GuardEnded::Lost(GuardError::NotAPublisher(ref kind)) if kind == "SUB"),
            "{ended:?}"
        );
        assert_eq!(protocol_errors(&guarded, "not_a_publisher"), 1);
    }
}
