use std::time::Duration;

/// Why the ZeroMQ source had to reconnect to an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ZeroMqError {
    #[error("cannot connect to {endpoint} within {timeout:?}: {detail}")]
    Connect {
        endpoint: String,
        timeout: Duration,
        detail: String,
    },
    /// The endpoint stopped listening while a connection to it was being made.
    #[error("nothing listens at {endpoint} any more: {detail}")]
    NothingListens { endpoint: String, detail: String },
    #[error("cannot subscribe to {prefix:?} on {endpoint}: {detail}")]
    Subscribe {
        endpoint: String,
        prefix: String,
        detail: String,
    },
    #[error("receive failed on {endpoint}: {detail}")]
    Receive { endpoint: String, detail: String },
    #[error("the publisher at {endpoint} disconnected")]
    Disconnected { endpoint: String },
}
