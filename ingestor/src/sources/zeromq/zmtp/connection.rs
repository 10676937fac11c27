//! One connection to a publisher: connect, handshake, subscribe, then messages.
//!
//! Reading and writing go on together in [`Connection::recv`] (PONGs and PINGs are queued and
//! written while waiting for the next message), each step cancel-safe: the read buffer and the
//! write queue live in the connection, so a `select!` that drops a pending `recv` loses nothing.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use super::codec::{self, Decoded, Decoder, FrameError, Greeting, GREETING_LEN};
use super::Endpoint;

/// Bytes read at a time when the next item's size is not known yet (or is smaller).
const READ_CHUNK: usize = 64 * 1024;

/// Why a connection could not be made, or ended.
#[derive(Debug, thiserror::Error)]
pub enum ZmtpError {
    /// Nothing listens at the endpoint (refused, or no such socket file): the usual state of
    /// an endpoint whose publisher is not running.
    #[error("nothing listens: {0}")]
    NothingListens(std::io::Error),
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error("the ZMTP handshake did not complete within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("the peer is a {0} socket, not a publisher")]
    NotAPublisher(String),
    #[error("the peer sent an ERROR command: {0}")]
    PeerError(String),
    #[error(transparent)]
    Protocol(#[from] FrameError),
    #[error("the peer closed the connection")]
    Closed,
    #[error("connection failed: {0}")]
    Io(std::io::Error),
}

impl ZmtpError {
    /// The protocol violation behind this error, if the peer broke ZMTP or our limits.
    pub fn protocol_reason(&self) -> Option<&'static str> {
        match self {
            ZmtpError::Protocol(frame_error) => Some(frame_error.reason()),
            ZmtpError::NotAPublisher(_) => Some("not_a_publisher"),
            ZmtpError::PeerError(_) => Some("peer_error"),
            ZmtpError::NothingListens(_)
            | ZmtpError::Connect(_)
            | ZmtpError::ConnectTimeout(_)
            | ZmtpError::HandshakeTimeout(_)
            | ZmtpError::Closed
            | ZmtpError::Io(_) => None,
        }
    }
}

/// What [`Connection::recv`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole message: its frames.
    Message(Vec<Bytes>),
    /// A PING (answered) or a PONG: the peer is there, with nothing to say.
    Heartbeat,
}

trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// A subscribed connection to one publisher.
pub struct Connection {
    reader: ReadHalf<Box<dyn Transport>>,
    writer: WriteHalf<Box<dyn Transport>>,
    read_buffer: BytesMut,
    write_buffer: BytesMut,
    decoder: Decoder,
    peer: Greeting,
}

impl Connection {
    /// Connects to `endpoint` (within `timeout`), completes the handshake (within `timeout`
    /// again) and subscribes to `prefixes`. Messages of more than `max_message_bytes` (all
    /// frames together) end the connection with [`FrameError::FrameTooLarge`].
    pub async fn open(
        endpoint: &Endpoint,
        prefixes: &[String],
        max_message_bytes: usize,
        timeout: Duration,
    ) -> Result<Connection, ZmtpError> {
        let transport = tokio::time::timeout(timeout, connect(endpoint))
            .await
            .map_err(|_elapsed| ZmtpError::ConnectTimeout(timeout))??;
        let (reader, writer) = tokio::io::split(transport);
        let mut connection = Connection {
            reader,
            writer,
            read_buffer: BytesMut::new(),
            write_buffer: BytesMut::new(),
            decoder: Decoder::new(max_message_bytes),
            peer: Greeting { major: 3, minor: 0 },
        };
        tokio::time::timeout(timeout, connection.handshake(prefixes))
            .await
            .map_err(|_elapsed| ZmtpError::HandshakeTimeout(timeout))??;
        Ok(connection)
    }

    /// Whether the peer speaks ZMTP 3.1 or later, and so answers [`Connection::ping`].
    pub fn supports_heartbeats(&self) -> bool {
        self.peer.supports_heartbeats()
    }

    /// Queues a PING, written while [`Connection::recv`] waits; its PONG comes back as
    /// [`Event::Heartbeat`]. Does nothing (`false`) for a ZMTP 3.0 peer.
    pub fn ping(&mut self) -> bool {
        if !self.supports_heartbeats() {
            return false;
        }
        codec::put_ping(&mut self.write_buffer);
        true
    }

    /// The frames received of the message an error cut short.
    pub fn partial_message(&self) -> &[Bytes] {
        self.decoder.partial_message()
    }

    /// The next message or heartbeat. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Event, ZmtpError> {
        loop {
            match self.decoder.decode(&mut self.read_buffer)? {
                Some(Decoded::Message(frames)) => return Ok(Event::Message(frames)),
                Some(Decoded::Command(command)) => {
                    if let Some(event) = self.on_command(&command)? {
                        return Ok(event);
                    }
                    continue;
                }
                None => {}
            }
            self.transfer().await?;
        }
    }

    /// Sends our greeting and READY, reads the peer's greeting and READY, then queues the
    /// subscriptions (written as soon as [`Connection::recv`] runs).
    async fn handshake(&mut self, prefixes: &[String]) -> Result<(), ZmtpError> {
        self.write_buffer.extend_from_slice(&codec::greeting());
        codec::put_ready(&mut self.write_buffer);
        self.read_peer_handshake().await?;
        // Only now: libzmq drops a connection whose first message arrives before it has sent
        // its own READY (it decodes what it has read in one go), as libzmq's own subscribers
        // never do.
        for prefix in prefixes {
            codec::put_subscription(&mut self.write_buffer, prefix.as_bytes());
        }
        Ok(())
    }

    /// The peer's greeting and READY (or ERROR).
    async fn read_peer_handshake(&mut self) -> Result<(), ZmtpError> {
        while self.read_buffer.len() < GREETING_LEN {
            self.read_buffer.reserve(GREETING_LEN);
            self.transfer().await?;
        }
        let mut greeting = [0u8; GREETING_LEN];
        greeting.copy_from_slice(&self.read_buffer.split_to(GREETING_LEN));
        self.peer = codec::parse_greeting(&greeting)?;
        loop {
            let command = match self.decoder.decode(&mut self.read_buffer)? {
                Some(Decoded::Command(command)) => command,
                Some(Decoded::Message(_)) => {
                    return Err(FrameError::BadCommand("a message before READY").into())
                }
                None => {
                    self.transfer().await?;
                    continue;
                }
            };
            match &command.name[..] {
                b"READY" => {
                    let socket_type = command.property(b"Socket-Type")?.unwrap_or_default();
                    if &socket_type[..] != b"PUB" && &socket_type[..] != b"XPUB" {
                        let shown = String::from_utf8_lossy(&socket_type).into_owned();
                        return Err(ZmtpError::NotAPublisher(shown));
                    }
                    return Ok(());
                }
                b"ERROR" => return Err(ZmtpError::PeerError(error_reason(&command.data))),
                _ => return Err(FrameError::BadCommand("expected READY").into()),
            }
        }
    }

    /// What a command after the handshake means: heartbeats are answered or noted, an ERROR
    /// ends the connection, anything else (a SUBSCRIBE echoed by a proxy, commands of later
    /// ZMTP versions) is ignored, as libzmq ignores it.
    fn on_command(&mut self, command: &codec::Command) -> Result<Option<Event>, ZmtpError> {
        match &command.name[..] {
            b"PING" => {
                command.put_pong(&mut self.write_buffer)?;
                Ok(Some(Event::Heartbeat))
            }
            b"PONG" => Ok(Some(Event::Heartbeat)),
            b"ERROR" => Err(ZmtpError::PeerError(error_reason(&command.data))),
            _ => Ok(None),
        }
    }

    /// Reads what comes, writing what is queued meanwhile; returns once something was read.
    async fn transfer(&mut self) -> Result<(), ZmtpError> {
        let wanted = self.decoder.wanted(&self.read_buffer).max(READ_CHUNK);
        self.read_buffer.reserve(wanted);
        loop {
            tokio::select! {
                read = self.reader.read_buf(&mut self.read_buffer) => {
                    return match read {
                        Ok(0) => Err(ZmtpError::Closed),
                        Ok(_) => Ok(()),
                        Err(error) => Err(ZmtpError::Io(error)),
                    };
                }
                written = self.writer.write_buf(&mut self.write_buffer), if !self.write_buffer.is_empty() => {
                    match written {
                        Ok(0) => return Err(ZmtpError::Closed),
                        Ok(_) => {}
                        Err(error) => return Err(ZmtpError::Io(error)),
                    }
                }
            }
        }
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

async fn connect(endpoint: &Endpoint) -> Result<Box<dyn Transport>, ZmtpError> {
    let refused = |error: std::io::Error| match error.kind() {
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => {
            ZmtpError::NothingListens(error)
        }
        _ => ZmtpError::Connect(error),
    };
    match endpoint {
        Endpoint::Tcp { host, port } => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(refused)?;
            stream.set_nodelay(true).map_err(ZmtpError::Connect)?;
            Ok(Box::new(stream))
        }
        Endpoint::Ipc { path } => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(refused)?;
            Ok(Box::new(stream))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A scripted peer: sends `script` after reading our greeting, then keeps reading.
    async fn peer(script: Vec<u8>) -> (Endpoint, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut received = vec![0u8; GREETING_LEN];
            socket.read_exact(&mut received).await.expect("greeting");
            socket.write_all(&script).await.expect("script");
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(Duration::from_millis(500), socket.read_to_end(&mut rest))
                .await;
            received.extend_from_slice(&rest);
            received
        });
        let endpoint = Endpoint::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        (endpoint, task)
    }

    fn publisher_handshake() -> BytesMut {
        let mut out = BytesMut::new();
        out.extend_from_slice(&codec::greeting());
        let mut metadata = BytesMut::new();
        metadata.extend_from_slice(b"\x0bSocket-Type\x00\x00\x00\x04XPUB");
        codec::put_command(&mut out, b"READY", &metadata);
        out
    }

    #[tokio::test]
    async fn pings_are_answered_and_messages_delivered() {
        let mut script = publisher_handshake();
        codec::put_command(&mut script, b"PING", b"\x00\x0ahi");
        script.extend_from_slice(b"\x01\x05topic\x00\x02{}");
        let (endpoint, peer) = peer(script.to_vec()).await;
        let mut connection =
            Connection::open(&endpoint, &[String::new()], 1024, Duration::from_secs(5))
                .await
                .expect("open");
        assert_eq!(connection.recv().await.expect("ping"), Event::Heartbeat);
        let Event::Message(frames) = connection.recv().await.expect("message") else {
            panic!("a message");
        };
        assert_eq!(frames, vec![Bytes::from("topic"), Bytes::from("{}")]);
        // The PONG is written while waiting for more.
        let waited = tokio::time::timeout(Duration::from_millis(200), connection.recv()).await;
        assert!(waited.is_err() || matches!(waited, Ok(Err(ZmtpError::Closed))));
        drop(connection);
        let received = peer.await.expect("peer");
        let after_greeting = &received[GREETING_LEN..];
        let ready_then_subscription_then_pong: &[u8] =
            b"\x04\x19\x05READY\x0bSocket-Type\x00\x00\x00\x03SUB\x00\x01\x01\x04\x07\x04PONGhi";
        assert_eq!(after_greeting, ready_then_subscription_then_pong);
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_ends_the_connection_without_waiting_for_its_body() {
        let mut script = publisher_handshake();
        script.extend_from_slice(b"\x01\x05topic");
        script.extend_from_slice(&[0x02]);
        script.extend_from_slice(&(1u64 << 36).to_be_bytes());
        let (endpoint, _peer) = peer(script.to_vec()).await;
        let mut connection =
            Connection::open(&endpoint, &[String::new()], 1024, Duration::from_secs(5))
                .await
                .expect("open");
        let refused = connection.recv().await;
        assert!(
            matches!(refused, Err(ZmtpError::Protocol(FrameError::FrameTooLarge { declared, .. })) if declared == 1 << 36),
            "{refused:?}"
        );
        assert_eq!(connection.partial_message(), [Bytes::from("topic")]);
    }

    #[tokio::test]
    async fn a_subscriber_is_not_a_publisher() {
        let mut script = BytesMut::new();
        script.extend_from_slice(&codec::greeting());
        codec::put_ready(&mut script);
        let (endpoint, _peer) = peer(script.to_vec()).await;
        let opened =
            Connection::open(&endpoint, &[String::new()], 1024, Duration::from_secs(5)).await;
        assert!(matches!(opened, Err(ZmtpError::NotAPublisher(ref kind)) if kind == "SUB"));
    }

    #[tokio::test]
    async fn nothing_listening_is_told_apart_at_once() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        drop(listener);
        let endpoint = Endpoint::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        let opened = Connection::open(&endpoint, &[], 1024, Duration::from_secs(5)).await;
        assert!(matches!(opened, Err(ZmtpError::NothingListens(_))));
    }
}
