//! One connection to a fedmsg endpoint: wait until something listens, then a fresh SUB socket.
//!
//! Why not the `zeromq` crate's own reconnection: its `SubSocket::connect` retries a first
//! connect with a backoff growing to 30 s, and after a disconnect its background task
//! reconnects with a fixed `ReconnectConfig::default()` (100 ms doubling to 30 s) that cannot be
//! configured; a clean disconnect does not even reach `recv` (it waits on). A publisher that
//! binds, or binds again, during one of those pauses is missed for up to 30 s, and everything
//! it sends meanwhile is lost. The crate has no ZMTP heartbeats either (it knows only the READY
//! command). So the source supervises each endpoint itself: [`probe`] asks the transport
//! whether anything listens (a refused TCP connect costs the publisher nothing), on the
//! source's own schedule, and only then [`open`] connects a new socket, which succeeds on its
//! first try. The crate's disconnect event ends the socket, which is dropped with its
//! reconnection task, and the probing starts again.
//!
//! A probe can still reach a publisher in its last moments (killed, its listening socket not
//! yet closed); the connect that follows is then refused, and the crate would retry it on its
//! own growing schedule. So [`open`] keeps probing while it connects and gives up as soon as
//! nothing listens, handing the endpoint back to the source's schedule.

use std::time::Duration;

use futures::channel::mpsc;
use zeromq::{Endpoint, Socket, SocketEvent, SubSocket};

use super::error::ZeroMqError;

/// A probe that neither connects nor is refused within this time has failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Connecting and subscribing to an endpoint that just accepted a probe.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether anything accepts connections at `endpoint` now; the error says why not.
pub async fn probe(endpoint: &str) -> Result<(), String> {
    let parsed: Endpoint = endpoint.parse().map_err(|error| format!("{error}"))?;
    let attempt = async {
        match parsed {
            Endpoint::Tcp(host, port) => {
                let host = host.to_string();
                tokio::net::TcpStream::connect((host.as_str(), port))
                    .await
                    .map(drop)
            }
            Endpoint::Ipc(Some(path)) => tokio::net::UnixStream::connect(path).await.map(drop),
            // Nothing to probe (an ipc endpoint without a path): let the socket try.
            _ => Ok(()),
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_elapsed) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}

/// A new SUB socket connected to `endpoint` with `prefixes` subscribed, and its event stream
/// (which says when the publisher goes away). Probes the endpoint every `recheck` meanwhile:
/// [`ZeroMqError::NothingListens`] as soon as a probe is refused.
pub async fn open(
    endpoint: &str,
    prefixes: &[String],
    recheck: Duration,
) -> Result<(SubSocket, mpsc::Receiver<SocketEvent>), ZeroMqError> {
    let mut socket = SubSocket::new();
    let events = socket.monitor();
    // Subscribed before connecting: the socket sends its subscriptions right after the
    // handshake, so they reach the publisher as early as possible.
    for prefix in prefixes {
        socket
            .subscribe(prefix)
            .await
            .map_err(|error| ZeroMqError::Subscribe {
                endpoint: endpoint.to_string(),
                prefix: prefix.clone(),
                detail: error.to_string(),
            })?;
    }
    let connect_error = |detail: String| ZeroMqError::Connect {
        endpoint: endpoint.to_string(),
        timeout: CONNECT_TIMEOUT,
        detail,
    };
    let nobody_listens = async {
        loop {
            tokio::time::sleep(recheck).await;
            if let Err(detail) = probe(endpoint).await {
                return detail;
            }
        }
    };
    tokio::select! {
        connected = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(endpoint)) => match connected {
            Ok(Ok(())) => Ok((socket, events)),
            Ok(Err(error)) => Err(connect_error(error.to_string())),
            Err(_elapsed) => Err(connect_error("timed out".into())),
        },
        detail = nobody_listens => Err(ZeroMqError::NothingListens {
            endpoint: endpoint.to_string(),
            detail,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connect refused after a successful probe (the publisher died in between) is given
    /// up at the next probe rather than retried on the crate's schedule for `CONNECT_TIMEOUT`.
    #[tokio::test]
    async fn a_connect_to_a_vanished_publisher_is_given_up_at_the_next_probe() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = format!("tcp://{}", listener.local_addr().expect("address"));
        drop(listener);

        let opened = open(&endpoint, &[String::new()], Duration::from_millis(100)).await;

        match opened {
            Err(ZeroMqError::NothingListens { .. }) => {}
            Err(other) => panic!("expected NothingListens, got {other}"),
            Ok(_) => panic!("connected to a closed port"),
        }
    }
}
