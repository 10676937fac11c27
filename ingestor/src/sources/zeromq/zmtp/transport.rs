//! The byte stream to a publisher: one TCP or IPC connect, and nothing more.
//!
//! A connect is refused at once when nothing listens, with no retries of its own: the
//! subscriber's schedule (`reconnect-min` doubling to `reconnect-max`) is the only one, and a
//! refusal tells it that the publisher is absent (which the gap tracker needs to know).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::Endpoint;

/// A connected byte stream, TCP or IPC.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// Why a publisher could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing listens at the endpoint (refused, or no such socket file): the usual state of
    /// an endpoint whose publisher is not running.
    #[error("nothing listens: {0}")]
    NothingListens(std::io::Error),
    #[error("cannot connect: {0}")]
    Failed(std::io::Error),
    #[error("no connection within {0:?}")]
    TimedOut(Duration),
}

/// Connects to `endpoint` within `timeout`.
pub async fn connect(
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<Box<dyn Transport>, ConnectError> {
    tokio::time::timeout(timeout, connect_now(endpoint))
        .await
        .map_err(|_elapsed| ConnectError::TimedOut(timeout))?
}

async fn connect_now(endpoint: &Endpoint) -> Result<Box<dyn Transport>, ConnectError> {
    let refused = |error: std::io::Error| match error.kind() {
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => {
            ConnectError::NothingListens(error)
        }
        _ => ConnectError::Failed(error),
    };
    match endpoint {
        Endpoint::Tcp { host, port } => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(refused)?;
            stream.set_nodelay(true).map_err(ConnectError::Failed)?;
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

    #[tokio::test]
    async fn nothing_listening_is_told_apart_at_once() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        drop(listener);
        let endpoint = Endpoint::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        let connected = connect(&endpoint, Duration::from_secs(5)).await;
        assert!(matches!(connected, Err(ConnectError::NothingListens(_))));
        let missing = Endpoint::Ipc {
            path: "/nonexistent/statscache/publisher.socket".into(),
        };
        let connected = connect(&missing, Duration::from_secs(5)).await;
        assert!(matches!(connected, Err(ConnectError::NothingListens(_))));
    }
}
