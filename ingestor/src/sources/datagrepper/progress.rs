//! Where a backfill resumes from. The ingestor keeps no state of its own, so this lives in
//! JetStream:
//!
//! - **The newest message of the stream** ([`newest_event_time`]): the start-up backfill
//!   covers the downtime, from the event time of the message that arrived last (its
//!   `Statscache-Event-Time` header) to now.
//! - **A key-value bucket** (`progress-bucket`, default `statscache_backfill`) with two kinds of
//!   keys, `<scope>` being `all` for a backfill without filters, or `filtered-<hash>` of its
//!   topics and categories (a window complete for one topic is not complete for all):
//!   - `done.<scope>.<start>-<end>`: the window `[start, end]` (epoch seconds) was fetched
//!     completely *and* every message of it is stored in the stream (or dead-lettered). A
//!     backfill skips such windows, so one run again after a failure or a restart fetches only
//!     what is missing. The value records the message count and when, for operators.
//!   - `pending.<scope>.<start>-<end>`: a start-up backfill range not completed yet. Written
//!     before the range is fetched and deleted once it is complete, so a range interrupted by a
//!     crash is resumed by the next start-up even though live messages newer than it have
//!     reached the stream since.
//!
//!   Keys expire with the stream's `max-age`: once the stream no longer holds a window's
//!   messages, the record that it does must go too.
//!
//! Reading or writing the bucket can fail without harm to correctness: a window not known to
//! be complete is fetched again, and fetching twice is safe (identities de-duplicate). So such
//! failures are logged, not fatal.

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use statscache_shared::config::NatsConfig;
use statscache_shared::message::Envelope;
use statscache_shared::nats::{open_bucket, Bucket, HEADER_EVENT_TIME};

use super::client::Filters;
use super::error::BackfillError;
use super::window::Window;

/// The completed windows and pending ranges of backfills, in a JetStream KV bucket.
#[derive(Clone)]
pub struct ProgressStore {
    store: kv::Store,
    bucket: String,
}

impl ProgressStore {
    /// Opens the bucket, creating it on first use and bringing its retention in line with the
    /// stream's.
    pub async fn open(
        jetstream: &jetstream::Context,
        nats: &NatsConfig,
        bucket: &str,
    ) -> Result<ProgressStore, BackfillError> {
        let settings = Bucket {
            name: bucket,
            description: "statscache-ingestor: completed datagrepper backfill windows",
            max_age: nats.max_age,
        };
        let store = open_bucket(jetstream, nats, settings)
            .await
            .map_err(|error| BackfillError::Progress {
                bucket: bucket.to_string(),
                action: "open the bucket",
                detail: error.to_string(),
            })?;
        Ok(ProgressStore {
            store,
            bucket: bucket.to_string(),
        })
    }

    /// Whether `window` was recorded complete for `scope`. Unknown counts as not complete.
    pub async fn is_complete(&self, scope: &str, window: Window) -> bool {
        match self.store.get(done_key(scope, window)).await {
            Ok(value) => value.is_some(),
            Err(error) => {
                tracing::warn!(bucket = %self.bucket, %window, %error, "cannot read backfill progress; fetching the window again");
                false
            }
        }
    }

    /// Records `window` complete for `scope`: call only once its messages are stored.
    pub async fn record_complete(&self, scope: &str, window: Window, messages: usize) {
        let record = serde_json::json!({
            "window": window.to_string(),
            "messages": messages,
            "completed_at": chrono::Utc::now().to_rfc3339(),
        });
        let put = self
            .store
            .put(done_key(scope, window), record.to_string().into())
            .await;
        if let Err(error) = put {
            tracing::warn!(bucket = %self.bucket, %window, %error, "cannot record the completed window; a later backfill will fetch it again");
        }
    }

    /// Records a start-up range as pending until [`ProgressStore::remove_pending`].
    pub async fn add_pending(&self, scope: &str, range: Window) {
        let put = self
            .store
            .put(pending_key(scope, range), range.to_string().into())
            .await;
        if let Err(error) = put {
            tracing::warn!(bucket = %self.bucket, %range, %error, "cannot record the pending start-up backfill; a crash before it completes would leave it to reconciliation");
        }
    }

    pub async fn remove_pending(&self, scope: &str, range: Window) {
        if let Err(error) = self.store.delete(pending_key(scope, range)).await {
            tracing::warn!(bucket = %self.bucket, %range, %error, "cannot clear the completed start-up backfill; the next start-up will find its windows done");
        }
    }

    /// The pending start-up ranges of `scope`, oldest first.
    pub async fn pending(&self, scope: &str) -> Vec<Window> {
        let prefix = format!("pending.{scope}.");
        let mut ranges = Vec::new();
        let mut keys = match self.store.keys().await {
            Ok(keys) => keys,
            Err(error) => {
                tracing::warn!(bucket = %self.bucket, %error, "cannot list pending start-up backfills");
                return ranges;
            }
        };
        while let Some(key) = keys.next().await {
            let key = match key {
                Ok(key) => key,
                Err(error) => {
                    tracing::warn!(bucket = %self.bucket, %error, "cannot list pending start-up backfills");
                    break;
                }
            };
            let Some(bounds) = key.strip_prefix(&prefix) else {
                continue;
            };
            match parse_bounds(bounds) {
                Some(range) => ranges.push(range),
                None => {
                    tracing::warn!(bucket = %self.bucket, %key, "ignoring a malformed pending key")
                }
            }
        }
        ranges.sort();
        ranges
    }
}

fn done_key(scope: &str, window: Window) -> String {
    format!("done.{scope}.{}", window.key())
}

fn pending_key(scope: &str, range: Window) -> String {
    format!("pending.{scope}.{}", range.key())
}

/// The inverse of [`Window::key`].
fn parse_bounds(bounds: &str) -> Option<Window> {
    let (start, end) = bounds.split_once('-')?;
    Some(Window {
        start: start.parse().ok()?,
        end: end.parse().ok()?,
    })
}

/// `all` without filters, else `filtered-` and a hash of them (stable across versions and
/// hosts, unlike `std`'s hasher), short enough for a key token.
pub fn scope(filters: &Filters) -> String {
    if filters.is_empty() {
        return "all".to_string();
    }
    let mut topics = filters.topics.clone();
    topics.sort();
    let mut categories = filters.categories.clone();
    categories.sort();
    let canonical = serde_json::json!({"topics": topics, "categories": categories}).to_string();
    let digest = Sha256::digest(canonical.as_bytes());
    let mut scope = String::from("filtered-");
    for byte in &digest[..8] {
        scope.push_str(&format!("{byte:02x}"));
    }
    scope
}

/// The message that arrived last in the stream: when it arrived (the server's clock) and its
/// event time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Newest {
    /// Epoch seconds the stream stored it at.
    pub arrival: f64,
    /// Its envelope's time, epoch seconds.
    pub event_time: f64,
}

/// The message that arrived last in the stream, `None` when it is empty.
///
/// The last arrival, not the greatest event time: the stream is ordered by arrival. Its arrival
/// says since when nothing was received (a backfilled or late copy of old history can be the
/// last to arrive: its event time is no measure of downtime); its event time is where the
/// start-up backfill begins (if it was itself old, the backfill reaches further back than
/// needed, which costs requests, not correctness).
pub async fn newest_in_stream(
    jetstream: &jetstream::Context,
    nats: &NatsConfig,
) -> Result<Option<Newest>, BackfillError> {
    let failed = |detail: String| BackfillError::NewestInStream {
        stream: nats.stream.clone(),
        detail,
    };
    let stream = jetstream
        .get_stream(&nats.stream)
        .await
        .map_err(|error| failed(error.to_string()))?;
    let every_subject = format!("{}.>", nats.subject_prefix);
    let last = match stream.get_last_raw_message_by_subject(&every_subject).await {
        Ok(last) => last,
        Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
        Err(error) => return Err(failed(error.to_string())),
    };
    let arrival = last.time.unix_timestamp_nanos() as f64 / 1e9;
    if let Some(header) = last.headers.get(HEADER_EVENT_TIME) {
        if let Ok(event_time) = header.as_str().parse::<f64>() {
            return Ok(Some(Newest {
                arrival,
                event_time,
            }));
        }
    }
    // Published by something other than the relay: the envelope has the time too.
    match Envelope::parse(&last.payload) {
        Ok(envelope) => Ok(Some(Newest {
            arrival,
            event_time: envelope.event_time(),
        })),
        Err(invalid) => Err(failed(format!(
            "message {} has no event time: {invalid}",
            last.sequence
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_their_bounds() {
        let window = Window {
            start: 1565118000,
            end: 1565121600,
        };
        assert_eq!(done_key("all", window), "done.all.1565118000-1565121600");
        let key = pending_key("all", window);
        let bounds = key.strip_prefix("pending.all.").expect("prefix");
        assert_eq!(parse_bounds(bounds), Some(window));
        assert_eq!(parse_bounds("12"), None);
        assert_eq!(parse_bounds("a-b"), None);
    }

    #[test]
    fn scopes_separate_filtered_backfills() {
        assert_eq!(scope(&Filters::default()), "all");
        let bodhi = Filters {
            topics: Vec::new(),
            categories: vec!["bodhi".to_string(), "koji".to_string()],
        };
        let same_in_another_order = Filters {
            topics: Vec::new(),
            categories: vec!["koji".to_string(), "bodhi".to_string()],
        };
        let as_topics = Filters {
            topics: vec!["bodhi".to_string(), "koji".to_string()],
            categories: Vec::new(),
        };
        assert_eq!(scope(&bodhi), scope(&same_in_another_order));
        assert_ne!(scope(&bodhi), scope(&as_topics));
        assert!(scope(&bodhi).starts_with("filtered-"));
        assert_eq!(scope(&bodhi).len(), "filtered-".len() + 16);
    }
}
