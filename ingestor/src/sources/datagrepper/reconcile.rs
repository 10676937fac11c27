//! Continuous reconciliation: finding, window by window, what live delivery lost.
//!
//! fedmsg cannot prove a loss: a ZeroMQ PUB drops what a slow or reconnecting SUB misses, and
//! the per-publisher `i` counter resets and interleaves behind relays. datagrepper can, since it
//! counts what datanommer stored. So each window (of `window`), `reconcile-grace` after it
//! closes, is checked: the messages the stream holds with an event time in it are counted and
//! compared with datagrepper's `total`. If the stream holds fewer, the window is backfilled
//! (what the stream already has is de-duplicated). Either way it is then recorded complete in
//! the progress bucket, so other replicas and restarts skip it.
//!
//! Counting the stream by event time: the stream is ordered by arrival, so the count reads the
//! headers (not the payloads) of what arrived from `grace` before the window's start to `grace`
//! after its end, and keeps the distinct identities whose `Statscache-Event-Time` falls in the
//! window and which match the configured filters. A message that arrived outside that span (an
//! earlier backfill, a publisher with a clock far off) is not counted: the worst that does is a
//! backfill that was not needed, never a loss left in place.
//!
//! Reconciliation starts with the window the ingestor started in (earlier windows are the
//! start-up backfill's) and goes forward one window at a time. A window that cannot be
//! reconciled after `attempts` tries (datagrepper down) is counted failed and left pending for
//! the next start-up backfill, so one bad window does not hold up the following ones.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use statscache_shared::config::NatsConfig;
use statscache_shared::nats::{HEADER_EVENT_TIME, HEADER_MSG_ID};
use statscache_shared::retry::backoff;
use statscache_shared::topic::{subject_to_topic, Topic};
use tokio_util::sync::CancellationToken;

use super::client::Filters;
use super::error::BackfillError;
use super::window::Window;
use super::Backfill;

/// A stream scan that receives nothing for this long has stalled.
const SCAN_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits between tries of a window that could not be reconciled.
const RETRY_MIN: Duration = Duration::from_secs(10);
const RETRY_MAX: Duration = Duration::from_secs(10 * 60);

/// Reconciles every window that closes from `started_at` on, until shutdown.
pub async fn reconcile_closed_windows(
    backfill: &Backfill,
    jetstream: &jetstream::Context,
    nats: &NatsConfig,
    grace: Duration,
    started_at: i64,
    shutdown: &CancellationToken,
) {
    let length = backfill.window_length;
    let grace_seconds = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    let first_start = started_at.div_euclid(length) * length;
    let mut window = Window {
        start: first_start,
        end: first_start + length,
    };
    let mut failures = 0;
    loop {
        let due = window.end.saturating_add(grace_seconds);
        let now = chrono::Utc::now().timestamp();
        if now < due {
            let wait = Duration::from_secs(due.abs_diff(now));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        let outcome = reconcile_window(backfill, jetstream, nats, window, grace, shutdown).await;
        match outcome {
            Ok(()) => {}
            Err(BackfillError::Interrupted { .. }) => return,
            Err(error) => {
                failures += 1;
                if failures < backfill.attempts {
                    tracing::warn!(%window, %error, failures, "cannot reconcile the window; trying again");
                    let pause = backoff(failures - 1, RETRY_MIN, RETRY_MAX);
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    continue;
                }
                tracing::error!(%window, %error, "cannot reconcile the window; leaving it to the next start-up backfill");
                backfill
                    .metrics
                    .backfill_windows
                    .with_label_values(&["failed"])
                    .inc();
                backfill.add_pending(window).await;
            }
        }
        failures = 0;
        window = Window {
            start: window.end,
            end: window.end + length,
        };
    }
}

/// Compares one closed window with datagrepper and backfills it if the stream holds fewer.
async fn reconcile_window(
    backfill: &Backfill,
    jetstream: &jetstream::Context,
    nats: &NatsConfig,
    window: Window,
    grace: Duration,
    shutdown: &CancellationToken,
) -> Result<(), BackfillError> {
    if backfill.is_recorded_complete(window).await {
        return Ok(());
    }
    let total = match backfill.fetcher.pages().total(window).await {
        Ok(total) => total,
        Err(error) => {
            let request = format!("the count of {window}");
            if let Some(answer) = error.bad_answer(&request) {
                backfill.dead_letter_bad_answers(vec![answer]).await;
            }
            return Err(BackfillError::Count {
                window,
                detail: error.to_string(),
            });
        }
    };
    let held = count_in_stream(jetstream, nats, &backfill.filters, window, grace).await?;
    if held >= total {
        tracing::debug!(%window, held, total, "reconciled: the stream holds the window");
        backfill
            .metrics
            .backfill_windows
            .with_label_values(&["verified"])
            .inc();
        if let Some(store) = &backfill.progress_store {
            store
                .record_complete(&backfill.scope, window, held as usize)
                .await;
        }
        return Ok(());
    }
    backfill.metrics.gaps.inc();
    tracing::warn!(%window, held, total, "the stream misses messages datagrepper has; backfilling the window");
    backfill.run(window, false, shutdown).await?;
    Ok(())
}

/// Distinct identities in the stream with an event time in `window` (both ends included) that
/// match `filters`, among what arrived from `grace` before the window to `grace` after it.
async fn count_in_stream(
    jetstream: &jetstream::Context,
    nats: &NatsConfig,
    filters: &Filters,
    window: Window,
    grace: Duration,
) -> Result<u64, BackfillError> {
    let failed = |detail: String| BackfillError::Count { window, detail };
    let grace_seconds = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    let scan_from = window.start.saturating_sub(grace_seconds);
    let scan_until = window.end.saturating_add(grace_seconds);
    let start_time = time::OffsetDateTime::from_unix_timestamp(scan_from)
        .map_err(|error| failed(error.to_string()))?;
    let stream = jetstream
        .get_stream(&nats.stream)
        .await
        .map_err(|error| failed(error.to_string()))?;
    let scan = stream
        .create_consumer(consumer::pull::OrderedConfig {
            description: Some(format!("statscache-ingestor: reconcile {window}")),
            filter_subject: format!("{}.>", nats.subject_prefix),
            headers_only: true,
            deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time },
            ..Default::default()
        })
        .await
        .map_err(|error| failed(error.to_string()))?;
    let mut identities = HashSet::new();
    if scan.cached_info().num_pending == 0 {
        return Ok(0);
    }
    let mut messages = scan
        .messages()
        .await
        .map_err(|error| failed(error.to_string()))?;
    loop {
        let next = tokio::time::timeout(SCAN_IDLE_TIMEOUT, messages.next()).await;
        let message = match next {
            Err(_elapsed) => return Err(failed("the stream scan stalled".to_string())),
            Ok(None) => break,
            Ok(Some(Err(error))) => return Err(failed(error.to_string())),
            Ok(Some(Ok(message))) => message,
        };
        let info = message.info().map_err(|error| failed(error.to_string()))?;
        if info.published.unix_timestamp() > scan_until {
            break;
        }
        let pending = info.pending;
        if let Some(identity) = counted_identity(&message, nats, filters, window) {
            identities.insert(identity);
        }
        if pending == 0 {
            break;
        }
    }
    Ok(identities.len() as u64)
}

/// The identity of a scanned message if it counts for `window`: event time inside, topic
/// matching the filters as datagrepper applies them (any topic, and any category).
fn counted_identity(
    message: &jetstream::Message,
    nats: &NatsConfig,
    filters: &Filters,
    window: Window,
) -> Option<String> {
    let headers = message.headers.as_ref()?;
    let event_time: f64 = headers.get(HEADER_EVENT_TIME)?.as_str().parse().ok()?;
    if event_time < window.start as f64 || event_time > window.end as f64 {
        return None;
    }
    if !filters.is_empty() {
        let topic = subject_to_topic(&nats.subject_prefix, message.subject.as_str()).ok()?;
        if !matches_filters(&topic, filters) {
            return None;
        }
    }
    Some(headers.get(HEADER_MSG_ID)?.as_str().to_string())
}

/// datagrepper's conjunction: one of the topics (if any) and one of the categories (if any).
fn matches_filters(topic: &str, filters: &Filters) -> bool {
    let topic_matches = filters.topics.is_empty() || filters.topics.iter().any(|t| t == topic);
    let category = match Topic::parse(topic) {
        Ok(parsed) => parsed.category().to_string(),
        Err(_) => String::new(),
    };
    let category_matches = filters.categories.is_empty() || filters.categories.contains(&category);
    topic_matches && category_matches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_as_datagrepper_applies_them() {
        let topic = "org.fedoraproject.prod.bodhi.update.comment";
        assert!(matches_filters(topic, &Filters::default()));
        let bodhi = Filters {
            topics: Vec::new(),
            categories: vec!["koji".to_string(), "bodhi".to_string()],
        };
        assert!(matches_filters(topic, &bodhi));
        let other_topic_and_bodhi = Filters {
            topics: vec!["org.fedoraproject.prod.bodhi.update.request".to_string()],
            categories: vec!["bodhi".to_string()],
        };
        assert!(!matches_filters(topic, &other_topic_and_bodhi));
    }
}
