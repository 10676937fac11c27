//! Admission: how many requests may query ClickHouse at once.
//!
//! ClickHouse refuses queries past its `max_concurrent_queries` (100 by default), and every
//! query holds one of its connections; an api that forwarded every concurrent request at once
//! would open hundreds of connections under a burst and have many of them refused. So each
//! replica admits at most `api.max-concurrent-requests` requests to its ClickHouse-backed
//! routes at a time (a request runs at most two queries at once); the others wait in a FIFO
//! queue (tokio's semaphore is fair) for at most `api.queue-timeout`, and only then get a 503
//! with `Retry-After`. A burst is therefore served late rather than refused.

use std::sync::Arc;
use std::time::Duration;

use poem_openapi::payload::Json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ErrorBody;

/// The shared turn counter of one replica.
#[derive(Clone)]
pub struct Admission {
    turns: Arc<Semaphore>,
    queue_timeout: Duration,
}

/// Waited `queue_timeout` without getting a turn.
#[derive(Debug, thiserror::Error)]
#[error("no turn within {0:?}")]
pub struct Overloaded(Duration);

impl Admission {
    pub fn new(max_concurrent_requests: usize, queue_timeout: Duration) -> Admission {
        Admission {
            turns: Arc::new(Semaphore::new(max_concurrent_requests.max(1))),
            queue_timeout,
        }
    }

    /// Waits for a turn; the request holds it until the permit is dropped.
    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, Overloaded> {
        let wait = self.turns.clone().acquire_owned();
        match tokio::time::timeout(self.queue_timeout, wait).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; treat it as overload all the same.
            Ok(Err(_)) | Err(_) => Err(Overloaded(self.queue_timeout)),
        }
    }

    /// Whether a request to `path` queries ClickHouse, and so needs a turn. Probes, metrics
    /// and the documents do not: they must answer even when the queue is full.
    pub fn needs_turn(path: &str) -> bool {
        path == "/raw"
            || path == "/id"
            || path == "/api"
            || path.starts_with("/api/")
            || path.starts_with("/statscache/api")
    }
}

/// The answer to a request that found no turn: 503, and when to try again (the queue wait,
/// rounded up to a whole second, is how long a turn may take to free up).
pub fn overloaded(Overloaded(waited): Overloaded) -> poem::Response {
    use poem::IntoResponse;
    tracing::warn!(?waited, "request refused: every ClickHouse turn is taken");
    let retry_after = waited.as_secs().max(1) + u64::from(waited.subsec_nanos() > 0);
    let body = ErrorBody {
        error: "overloaded".into(),
        parameter: None,
        message: format!("too many requests at once; waited {waited:?} for a turn, try again"),
    };
    let mut response = (poem::http::StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    response
        .headers_mut()
        .insert(poem::http::header::RETRY_AFTER, retry_after.into());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_for_a_turn_then_is_refused_with_retry_after() {
        let admission = Admission::new(1, Duration::from_millis(1500));
        let held = admission.enter().await.expect("the only turn is free");
        let refused = admission.enter().await.expect_err("the only turn is held");
        let response = overloaded(refused);
        assert_eq!(response.status(), 503);
        assert_eq!(
            response.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"2"[..])
        );
        drop(held);
        assert!(admission.enter().await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_freed_while_waiting_is_taken() {
        let admission = Admission::new(1, Duration::from_secs(10));
        let held = admission.enter().await.expect("the only turn is free");
        let waiting = tokio::spawn({
            let admission = admission.clone();
            async move { admission.enter().await.is_ok() }
        });
        tokio::task::yield_now().await;
        drop(held);
        assert!(waiting.await.expect("waiter"));
    }

    #[test]
    fn only_clickhouse_routes_need_a_turn() {
        for path in [
            "/raw",
            "/id",
            "/api",
            "/api/",
            "/api/volume",
            "/api/volume/layout",
        ] {
            assert!(Admission::needs_turn(path), "{path}");
        }
        for path in [
            "/health/readyz",
            "/metrics",
            "/openapi.json",
            "/docs",
            "/apix",
        ] {
            assert!(!Admission::needs_turn(path), "{path}");
        }
    }
}
