use std::fmt;
use std::time::Duration;

use bytes::Bytes;

use super::window::Window;

/// Why one request for a `/raw` page failed. Every kind is tried again (up to `attempts`):
/// datagrepper answers overload with 5xx or HTML error pages, and slow queries with timeouts.
/// A failure that came with an answer keeps its body, to be dead-lettered for inspection.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("datagrepper answered HTTP {status}: {snippet}")]
    Status {
        status: u16,
        snippet: String,
        body: Bytes,
    },
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Request(String),
    #[error("answer is not a /raw page ({detail}): {snippet}")]
    BadBody {
        detail: String,
        snippet: String,
        body: Bytes,
    },
}

impl PageError {
    /// A short stable name for the `outcome` label of the pages metric.
    pub fn kind(&self) -> &'static str {
        match self {
            PageError::Status { status, .. } if *status >= 500 => "server_error",
            PageError::Status { .. } => "client_error",
            PageError::Timeout(_) => "timeout",
            PageError::Connect(_) => "connect",
            PageError::Request(_) => "request",
            PageError::BadBody { .. } => "bad_body",
        }
    }

    /// The answer this failure came with, if it came with one, to be dead-lettered; `request`
    /// says what was asked (window and page).
    pub fn bad_answer(&self, request: &str) -> Option<BadAnswer> {
        let (reason, body) = match self {
            PageError::Status { status, body, .. } if *status >= 500 => {
                ("datagrepper_server_error", body)
            }
            PageError::Status { body, .. } => ("datagrepper_client_error", body),
            PageError::BadBody { body, .. } => ("datagrepper_bad_body", body),
            PageError::Timeout(_) | PageError::Connect(_) | PageError::Request(_) => return None,
        };
        Some(BadAnswer {
            reason,
            detail: format!("{request}: {self}"),
            body: body.clone(),
        })
    }
}

/// An answer of datagrepper's that was not a `/raw` page (an error status, HTML, garbage),
/// kept to be dead-lettered.
#[derive(Debug, Clone)]
pub struct BadAnswer {
    /// `datagrepper_server_error`, `datagrepper_client_error` or `datagrepper_bad_body`.
    pub reason: &'static str,
    /// What was asked (window and page) and what was wrong.
    pub detail: String,
    pub body: Bytes,
}

/// A window that could not be fetched completely, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedWindow {
    pub window: Window,
    pub reason: String,
}

/// The failed windows of a backfill, listed for the error message.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedWindows(pub Vec<FailedWindow>);

impl fmt::Display for FailedWindows {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, failed) in self.0.iter().enumerate() {
            if index > 0 {
                formatter.write_str("; ")?;
            }
            write!(formatter, "{}: {}", failed.window, failed.reason)?;
        }
        Ok(())
    }
}

/// Why a backfill did not complete.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("invalid datagrepper URL {url:?}: {detail}")]
    Url { url: String, detail: String },
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(String),
    #[error("empty range: end {end} is not after start {start}")]
    EmptyRange { start: f64, end: f64 },
    #[error("{count} of {windows} windows failed, history there is incomplete: {failed}", count = failed.0.len())]
    WindowsFailed {
        windows: usize,
        failed: FailedWindows,
    },
    #[error("stopped by shutdown with {remaining} of {windows} windows not completed")]
    Interrupted { windows: usize, remaining: usize },
    #[error("the relay stopped while taking backfilled messages: {0}")]
    Relay(String),
    #[error("cannot count the messages of {window}: {detail}")]
    Count { window: Window, detail: String },
    #[error("cannot read the newest message of stream {stream}: {detail}")]
    NewestInStream { stream: String, detail: String },
    #[error("backfill progress bucket {bucket}: cannot {action}: {detail}")]
    Progress {
        bucket: String,
        action: &'static str,
        detail: String,
    },
}
