//! A hostile ZeroMQ publisher: speaks ZMTP 3.1 as libzmq does (greeting, `NULL` handshake as an
//! XPUB), then sends a topic frame and a frame header declaring whatever size the test asks,
//! optionally followed by that many bytes for real, on every connection it accepts, each with
//! the next size of its list (the last one again once the list is done).
//!
//! Written from RFC 37 (ZMTP 3.1), not with a ZeroMQ library: libzmq cannot be made to declare
//! a frame it does not send, and the point is a peer that lies.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the peer sends after the handshake on one connection.
#[derive(Debug, Clone, Copy)]
pub struct Declaration {
    /// The body size the frame header declares.
    pub declared: u64,
    /// Bytes of body actually sent after the header (until the ingestor hangs up).
    pub sent: u64,
}

/// The peer, accepting until dropped.
pub struct HostilePeer {
    pub port: u16,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl HostilePeer {
    /// Binds a free loopback port and serves `declarations` in turn, one per connection.
    pub async fn start(declarations: Vec<Declaration>) -> HostilePeer {
        let listener = TcpListener::bind(("127.0.0.1", crate::free_port()))
            .await
            .expect("bind the hostile peer");
        let port = listener.local_addr().expect("address").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let turn = counted.fetch_add(1, Ordering::SeqCst);
                let declaration = declarations[turn.min(declarations.len() - 1)];
                tokio::spawn(serve(socket, declaration));
            }
        });
        HostilePeer {
            port,
            connections,
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for HostilePeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// libzmq's greeting (ZMTP 3.1, `NULL`, not as server).
fn greeting() -> Vec<u8> {
    let mut bytes = vec![0u8; 64];
    bytes[0] = 0xff;
    bytes[9] = 0x7f;
    bytes[10] = 3;
    bytes[11] = 1;
    bytes[12..16].copy_from_slice(b"NULL");
    bytes
}

/// A READY command for an XPUB socket.
fn ready() -> Vec<u8> {
    let mut body = vec![5];
    body.extend_from_slice(b"READY");
    body.push(11);
    body.extend_from_slice(b"Socket-Type");
    body.extend_from_slice(&4u32.to_be_bytes());
    body.extend_from_slice(b"XPUB");
    let mut command = vec![0x04, body.len() as u8];
    command.extend_from_slice(&body);
    command
}

async fn serve(mut socket: tokio::net::TcpStream, declaration: Declaration) {
    let mut handshake = greeting();
    handshake.extend_from_slice(&ready());
    if socket.write_all(&handshake).await.is_err() {
        return;
    }
    // The subscriber's greeting and READY, then its subscription.
    let mut received = vec![0u8; 64 + 2 + 25 + 3];
    if socket.read_exact(&mut received).await.is_err() {
        return;
    }
    let topic = b"org.fedoraproject.prod.hostile.frame";
    let mut message = vec![0x01, topic.len() as u8];
    message.extend_from_slice(topic);
    // Long frame, last of the message.
    message.push(0x02);
    message.extend_from_slice(&declaration.declared.to_be_bytes());
    if socket.write_all(&message).await.is_err() {
        return;
    }
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0u64;
    while sent < declaration.sent {
        let size = chunk.len().min((declaration.sent - sent) as usize);
        if socket.write_all(&chunk[..size]).await.is_err() {
            return;
        }
        sent += size as u64;
    }
    // Keep the connection until the subscriber hangs up.
    let mut rest = Vec::new();
    let _ = socket.read_to_end(&mut rest).await;
}
