//! A loopback TCP proxy that can turn into a black hole: the connections it carries stop
//! passing anything either way without being closed, and it stops accepting new ones — a
//! peer that died without a word (a host gone, a firewall dropping state), which a test cannot
//! get from a real process (a killed one's kernel closes its connections). Reopened, it accepts
//! again and forwards to its upstream port, connecting as soon as something listens there.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long a connection waits for its upstream to listen before it is dropped.
const UPSTREAM_WAIT: Duration = Duration::from_secs(60);

pub struct TcpProxy {
    pub port: u16,
    upstream: u16,
    shared: Arc<Shared>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct Shared {
    /// Connections opened before the latest black hole pass nothing.
    black_holes: AtomicU64,
    /// Black-holed connections that their client closed.
    closed_by_client: AtomicUsize,
}

impl TcpProxy {
    /// Listens on a free loopback port, forwarding to `upstream` (which may not listen yet).
    pub async fn start(upstream: u16) -> TcpProxy {
        let proxy = TcpProxy {
            port: crate::free_port(),
            upstream,
            shared: Arc::new(Shared::default()),
            acceptor: Mutex::new(None),
        };
        proxy.reopen().await;
        proxy
    }

    /// The ZeroMQ endpoint of the proxy.
    pub fn endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// Freezes every connection (nothing passes, nothing is closed) and refuses new ones.
    pub fn black_hole(&self) {
        self.shared.black_holes.fetch_add(1, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.lock().expect("acceptor lock").take() {
            acceptor.abort();
        }
    }

    /// How many frozen connections their client has given up (closed).
    pub fn given_up_by_client(&self) -> usize {
        self.shared.closed_by_client.load(Ordering::SeqCst)
    }

    /// Accepts connections again (on the same port), forwarding them to the upstream port.
    pub async fn reopen(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the proxy port");
        let upstream = self.upstream;
        let shared = self.shared.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let generation = shared.black_holes.load(Ordering::SeqCst);
                tokio::spawn(forward(client, upstream, shared.clone(), generation));
            }
        });
        *self.acceptor.lock().expect("acceptor lock") = Some(acceptor);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.black_hole();
    }
}

/// Waits (bounded) until something listens on `port`.
async fn connect_upstream(port: u16) -> Option<TcpStream> {
    let started = std::time::Instant::now();
    while started.elapsed() < UPSTREAM_WAIT {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await {
            return Some(stream);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Copies both ways until either side closes; once black-holed, drops what either side sends
/// and keeps the client's connection open until the client closes it.
async fn forward(mut client: TcpStream, upstream: u16, shared: Arc<Shared>, generation: u64) {
    let Some(mut upstream) = connect_upstream(upstream).await else {
        return;
    };
    let black_holed = || shared.black_holes.load(Ordering::SeqCst) > generation;
    let mut from_client = [0u8; 16 * 1024];
    let mut from_upstream = [0u8; 16 * 1024];
    let mut upstream_open = true;
    loop {
        tokio::select! {
            read = client.read(&mut from_client) => {
                let size = read.unwrap_or(0);
                if size == 0 {
                    if black_holed() {
                        shared.closed_by_client.fetch_add(1, Ordering::SeqCst);
                    }
                    return;
                }
                if !black_holed() && upstream.write_all(&from_client[..size]).await.is_err() {
                    return;
                }
            }
            read = upstream.read(&mut from_upstream), if upstream_open => {
                let size = read.unwrap_or(0);
                if size == 0 {
                    if !black_holed() {
                        return;
                    }
                    // The client must not learn of it: wait for the client alone.
                    upstream_open = false;
                    continue;
                }
                if !black_holed() && client.write_all(&from_upstream[..size]).await.is_err() {
                    return;
                }
            }
        }
    }
}
