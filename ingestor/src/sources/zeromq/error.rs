use super::guard::GuardError;
use super::zmtp::ConnectError;

/// Why the ZeroMQ source could not start, or an endpoint's subscription failed or ended.
#[derive(Debug, thiserror::Error)]
pub enum ZeroMqError {
    #[error("cannot make a private listener for the zeromq socket: {0}")]
    Loopback(std::io::Error),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error("the zeromq socket failed: {0}")]
    Socket(#[from] zeromq::ZmqError),
    #[error("the zeromq socket lost its connection, and its guard did not say why")]
    Disconnected,
}

impl ZeroMqError {
    /// Whether it may well happen again at once (the publisher breaking ZMTP, no listener to
    /// be made): the endpoint is then tried again after a growing pause, not in a tight loop.
    pub fn backs_off(&self) -> bool {
        match self {
            ZeroMqError::Guard(error) => error.is_publisher_fault(),
            ZeroMqError::Loopback(_) => true,
            ZeroMqError::Connect(_) | ZeroMqError::Socket(_) | ZeroMqError::Disconnected => false,
        }
    }
}
