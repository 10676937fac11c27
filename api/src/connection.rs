//! Connection deadlines poem does not give: a bound on how long a client may take to send a
//! request's head.
//!
//! poem 3 builds its hyper connection itself and exposes only `idle_timeout`, which closes a
//! connection after a stretch with *no* traffic; a slow sender (slowloris: a byte of header
//! every second) is never idle, so it would hold its connection, and a task, for ever. hyper's
//! own `header_read_timeout` is not reachable through poem. So the deadline is kept around the
//! listener: every accepted connection is wrapped in a [`HeadDeadline`] stream that watches the
//! bytes read. From the first byte of a request head, the head must be complete (the blank line
//! `\r\n\r\n`) within `api.header-read-timeout`, or reads fail with `TimedOut` and hyper drops
//! the connection. After a head, nothing is timed (the handler has `api.request-timeout`); once
//! the server writes its answer, the next byte read starts the next head's deadline. An HTTP/2
//! connection (its preface read) is left alone: hyper's HTTP/2 has its own limits.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// An acceptor whose connections carry a [`HeadDeadline`].
pub struct HeadDeadlineAcceptor<A> {
    inner: A,
    header_read_timeout: Duration,
}

impl<A: Acceptor> HeadDeadlineAcceptor<A> {
    pub fn new(inner: A, header_read_timeout: Duration) -> HeadDeadlineAcceptor<A> {
        HeadDeadlineAcceptor {
            inner,
            header_read_timeout,
        }
    }
}

impl<A: Acceptor> Acceptor for HeadDeadlineAcceptor<A> {
    type Io = HeadDeadline<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, scheme) = self.inner.accept().await?;
        Ok((
            HeadDeadline::new(io, self.header_read_timeout),
            local,
            remote,
            scheme,
        ))
    }
}

/// Where the connection is in its request/response cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No byte of the next head yet: not timed (the idle timeout covers a silent client).
    AwaitingHead,
    /// Reading a head; `matched` bytes of `\r\n\r\n` seen at its end so far.
    InHead { matched: usize },
    /// The head is complete: the request is the handler's until the answer is written.
    Served,
    /// An HTTP/2 connection: its frames have no blank line to wait for, and hyper's HTTP/2
    /// keeps its own limits; nothing is timed here.
    Unwatched,
}

/// How an HTTP/2 connection (prior knowledge, as poem accepts it) begins.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// A stream whose request heads must arrive within a deadline (see the module doc).
pub struct HeadDeadline<S> {
    inner: S,
    timeout: Duration,
    phase: Phase,
    deadline: Pin<Box<Sleep>>,
    /// Bytes read so far, up to the length of [`HTTP2_PREFACE`].
    start_seen: usize,
}

impl<S> HeadDeadline<S> {
    fn new(inner: S, timeout: Duration) -> HeadDeadline<S> {
        HeadDeadline {
            inner,
            timeout,
            phase: Phase::AwaitingHead,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            start_seen: 0,
        }
    }

    /// Moves the phase along with `bytes`, just read.
    fn observe(&mut self, bytes: &[u8]) {
        const END_OF_HEAD: &[u8] = b"\r\n\r\n";
        for &byte in bytes {
            if self.start_seen < HTTP2_PREFACE.len() {
                if byte != HTTP2_PREFACE[self.start_seen] {
                    // Not HTTP/2: stop comparing.
                    self.start_seen = usize::MAX;
                } else {
                    self.start_seen += 1;
                    if self.start_seen == HTTP2_PREFACE.len() {
                        self.phase = Phase::Unwatched;
                    }
                }
            }
            let matched = match self.phase {
                Phase::Served | Phase::Unwatched => return,
                Phase::AwaitingHead => {
                    self.deadline.as_mut().reset(Instant::now() + self.timeout);
                    0
                }
                Phase::InHead { matched } => matched,
            };
            let matched = if byte == END_OF_HEAD[matched] {
                matched + 1
            } else if byte == END_OF_HEAD[0] {
                1
            } else {
                0
            };
            self.phase = if matched == END_OF_HEAD.len() {
                Phase::Served
            } else {
                Phase::InHead { matched }
            };
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if matches!(this.phase, Phase::InHead { .. }) && this.deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not received within api.header-read-timeout",
            )));
        }
        let filled_before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.observe(&buf.filled()[filled_before..]);
            // A head started by these bytes needs its deadline polled, so that it wakes us.
            if matches!(this.phase, Phase::InHead { .. }) {
                let _ = this.deadline.as_mut().poll(cx);
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // An answer is going out: the next byte read begins the next request's head.
        if this.phase == Phase::Served {
            this.phase = Phase::AwaitingHead;
        }
        Pin::new(&mut this.inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_head_slower_than_the_deadline_fails_the_read() {
        let (client, server) = tokio::io::duplex(1024);
        let mut server = HeadDeadline::new(server, Duration::from_secs(3));
        let mut client = client;
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut buffer = [0u8; 64];
        assert!(server.read(&mut buffer).await.is_ok());
        // The blank line never comes: the next read fails once the deadline passes.
        let error = server.read(&mut buffer).await.expect_err("deadline");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn http2_connections_are_not_timed() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut server = HeadDeadline::new(server, Duration::from_secs(3));
        client.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        let mut buffer = [0u8; 64];
        assert!(server.read(&mut buffer).await.unwrap() > 0);
        assert_eq!(server.phase, Phase::Unwatched);
        tokio::time::sleep(Duration::from_secs(10)).await;
        client.write_all(b"\r\nSM\r\n\r\n").await.unwrap();
        assert!(server.read(&mut buffer).await.unwrap() > 0);
        assert_eq!(server.phase, Phase::Unwatched);
    }

    #[tokio::test(start_paused = true)]
    async fn complete_heads_are_not_timed_and_the_next_head_is() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut server = HeadDeadline::new(server, Duration::from_secs(3));
        client.write_all(b"GET / HTTP/1.1\r\n\r").await.unwrap();
        let mut buffer = [0u8; 64];
        assert!(server.read(&mut buffer).await.unwrap() > 0);
        assert_eq!(server.phase, Phase::InHead { matched: 3 });
        client.write_all(b"\n").await.unwrap();
        assert!(server.read(&mut buffer).await.unwrap() > 0);
        assert_eq!(server.phase, Phase::Served);
        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        assert_eq!(server.phase, Phase::AwaitingHead);
        // A silent keep-alive connection is not timed here (poem's idle timeout is).
        tokio::time::sleep(Duration::from_secs(10)).await;
        client
            .write_all(b"GET /next HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        assert!(server.read(&mut buffer).await.unwrap() > 0);
        assert_eq!(server.phase, Phase::Served);
    }
}
