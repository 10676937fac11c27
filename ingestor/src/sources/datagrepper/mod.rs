//! History from datagrepper's `/raw`, relayed exactly like live messages.
//!
//! Why: ZeroMQ cannot tell a quiet bus from a lost message, and nothing is received while the
//! ingestor is down. datagrepper serves everything datanommer stored, so the ingestor fills
//! gaps from it: the downtime at start-up ([`backfill_downtime`]), the spans in which fedmsg's
//! `i` says live delivery lost messages, as soon as that is seen ([`backfill_lost_spans`]),
//! every closed window in which live delivery lost messages ([`reconcile`]), and any range an
//! operator asks for (`statscache-ingestor backfill`). The original statscache skipped datagrepper
//! pages that failed, silently losing history; here a backfill either completes every window
//! or fails and names the windows that are incomplete.
//!
//! How a range flows:
//!
//! 1. It is cut into windows aligned to `window` ([`window`]); windows recorded complete in
//!    the progress bucket are skipped ([`progress`]).
//! 2. Up to `parallelism` windows are fetched at once, at most `requests-per-second` overall
//!    ([`client`]); each is paged until its distinct messages reach datagrepper's `total`,
//!    every failed page tried again with backoff ([`fetch`]). Answers that were not pages
//!    (error statuses, HTML, garbage) are dead-lettered with their bodies, after the window.
//! 3. Windows are handed to the relay one after the other in time order, each window's
//!    messages sorted by event time. Each `raw_messages` item goes in re-serialised, as an
//!    [`Incoming`] of source `datagrepper`: the relay validates it (dead-lettering what is not
//!    an envelope), computes its identity and publishes it with `Nats-Msg-Id`, so history that
//!    overlaps what the stream holds is dropped by JetStream or, later, by storage.
//! 4. Only when all of a window's messages are stored is it recorded complete (a message the
//!    relay gave up on after failing tries fails the window, to be fetched again).
//!
//! Step 4 is why each window gets its own run of the shared [`Relay`] over its own channel
//! rather than going through the live sources' channel: a relay run returns once every message
//! it took is acked or dead-lettered, which is exactly the moment a window may be recorded
//! complete. Recording it any earlier would let a crash turn it into a hole no later backfill
//! fills. It also keeps a large backfill from queueing ahead of live messages.

mod client;
mod error;
mod fetch;
mod progress;
mod reconcile;
mod window;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use prometheus::IntGauge;
use statscache_shared::config::{DatagrepperConfig, NatsConfig};
use statscache_shared::nats::{DeadLetter, HEADER_SOURCE};
use statscache_shared::retry::backoff;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use client::Filters;
pub use error::{BackfillError, FailedWindow, FailedWindows};
pub use progress::{newest_in_stream, Newest, ProgressStore};
pub use window::Window;

use crate::metrics::Metrics;
use crate::relay::{Relay, RelaySummary};
use crate::source::{Incoming, LostSpan};
use client::HttpPages;
use error::BadAnswer;
use fetch::{Failures, FetchedWindow, Outcome, WindowFetcher};
use window::{Collected, FetchedMessage};

/// The `Statscache-Source` header and metric label of backfilled messages.
pub const SOURCE_NAME: &str = "datagrepper";

/// The start-up backfill reaches this much before the newest message of the stream: messages
/// just before a crash do not reach the stream in event-time order.
const STARTUP_OVERLAP_SECONDS: i64 = 300;

/// Messages buffered between a window and its relay run.
const RELAY_CHANNEL_CAPACITY: usize = 256;

/// Waits between rounds of a start-up backfill that left windows failed.
const STARTUP_RETRY_MIN: Duration = Duration::from_secs(60);
const STARTUP_RETRY_MAX: Duration = Duration::from_secs(30 * 60);

/// Where a backfill run stands, published after every window on the channel given to
/// [`Backfill::new`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Windows of the range.
    pub windows: usize,
    pub complete: usize,
    /// Recorded complete by an earlier backfill.
    pub skipped: usize,
    pub failed: usize,
    /// Distinct messages handed to the relay (and stored, or dead-lettered).
    pub messages: u64,
    /// Of those, stored new to the stream (the others it held already, or were invalid).
    pub new_messages: u64,
    /// Requests that failed and were tried again.
    pub failed_requests: u64,
}

impl Progress {
    pub fn finished(&self) -> usize {
        self.complete + self.skipped + self.failed
    }
}

/// Backfills ranges from datagrepper into the relay.
pub struct Backfill {
    fetcher: Arc<WindowFetcher<HttpPages>>,
    relay: Arc<Relay>,
    metrics: Arc<Metrics>,
    progress_store: Option<ProgressStore>,
    /// datagrepper's filters, and the progress keys' scope derived from them.
    filters: Filters,
    scope: String,
    /// Seconds, at least 1.
    window_length: i64,
    parallelism: usize,
    attempts: u32,
    progress: watch::Sender<Progress>,
}

impl Backfill {
    /// A backfill with `config`'s datagrepper and limits, `filters` instead of the configured
    /// ones, recording completed windows in `progress_store` if there is one and publishing
    /// its [`Progress`] on `progress`.
    pub fn new(
        config: &DatagrepperConfig,
        filters: Filters,
        relay: Arc<Relay>,
        progress_store: Option<ProgressStore>,
        progress: watch::Sender<Progress>,
    ) -> Result<Backfill, BackfillError> {
        let metrics = relay.metrics.clone();
        let scope = progress::scope(&filters);
        let pages = HttpPages::new(config, filters.clone())?;
        let fetcher = WindowFetcher::new(pages, config.attempts, metrics.clone());
        let window_length = i64::try_from(config.window.as_secs()).unwrap_or(i64::MAX);
        Ok(Backfill {
            fetcher: Arc::new(fetcher),
            relay,
            metrics,
            progress_store,
            filters,
            scope,
            window_length: window_length.max(1),
            parallelism: usize::try_from(config.parallelism).unwrap_or(1).max(1),
            attempts: config.attempts.max(1),
            progress,
        })
    }

    /// Backfills `range` (both ends included). With `resume`, windows recorded complete are
    /// skipped. Returns the counts when every window completed; otherwise an error naming the
    /// failed windows (what they did fetch is relayed all the same).
    pub async fn run(
        &self,
        range: Window,
        resume: bool,
        shutdown: &CancellationToken,
    ) -> Result<Progress, BackfillError> {
        let windows = range.split_into(self.window_length);
        let mut progress = Progress {
            windows: windows.len(),
            ..Progress::default()
        };
        let mut remaining = RemainingWindows::new(
            self.metrics.backfill_windows_remaining.clone(),
            windows.len(),
        );
        tracing::info!(%range, windows = windows.len(), resume, "datagrepper backfill starting");

        let mut to_fetch = Vec::new();
        for window in windows {
            if resume && self.is_recorded_complete(window).await {
                progress.skipped += 1;
                self.metrics
                    .backfill_windows
                    .with_label_values(&["skipped"])
                    .inc();
                remaining.finish_one();
                continue;
            }
            to_fetch.push(window);
        }
        self.progress.send_replace(progress.clone());

        let mut fetched_in_order = futures::stream::iter(to_fetch)
            .map(|window| self.spawn_fetch(window, shutdown))
            .buffered(self.parallelism);
        let mut failed = Vec::new();
        let mut interrupted = 0;
        while let Some(fetched) = fetched_in_order.next().await {
            let window = fetched.window;
            progress.failed_requests += fetched.failures.requests;
            self.dead_letter_bad_answers(fetched.failures.bad_answers)
                .await;
            let (handed, summary) = self.relay_window(fetched.collected).await?;
            progress.messages += handed as u64;
            progress.new_messages += summary.stored as u64;
            let outcome = if summary.given_up > 0 {
                // Not in the stream: the window must be fetched again, not recorded complete.
                let reason = format!("{} messages could not be stored", summary.given_up);
                Outcome::Failed(reason)
            } else {
                fetched.outcome
            };
            match outcome {
                Outcome::Complete => {
                    if let Some(store) = &self.progress_store {
                        store.record_complete(&self.scope, window, handed).await;
                    }
                    progress.complete += 1;
                    self.metrics
                        .backfill_windows
                        .with_label_values(&["complete"])
                        .inc();
                    tracing::debug!(%window, messages = handed, "backfill window complete");
                }
                Outcome::Failed(reason) => {
                    tracing::error!(%window, %reason, "backfill window failed: its history may be incomplete");
                    progress.failed += 1;
                    self.metrics
                        .backfill_windows
                        .with_label_values(&["failed"])
                        .inc();
                    failed.push(FailedWindow { window, reason });
                }
                Outcome::Interrupted => interrupted += 1,
            }
            remaining.finish_one();
            self.progress.send_replace(progress.clone());
        }

        if !failed.is_empty() {
            return Err(BackfillError::WindowsFailed {
                windows: progress.windows,
                failed: FailedWindows(failed),
            });
        }
        if interrupted > 0 {
            return Err(BackfillError::Interrupted {
                windows: progress.windows,
                remaining: interrupted,
            });
        }
        tracing::info!(%range, ?progress, "datagrepper backfill complete");
        Ok(progress)
    }

    async fn is_recorded_complete(&self, window: Window) -> bool {
        match &self.progress_store {
            Some(store) => store.is_complete(&self.scope, window).await,
            None => false,
        }
    }

    /// Fetches `window` on its own task, so fetching goes on while earlier windows are relayed.
    fn spawn_fetch(
        &self,
        window: Window,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = FetchedWindow> {
        let fetcher = self.fetcher.clone();
        let shutdown = shutdown.clone();
        let task = tokio::spawn(async move { fetcher.fetch(window, &shutdown).await });
        async move {
            match task.await {
                Ok(fetched) => fetched,
                Err(join_error) => FetchedWindow {
                    window,
                    collected: Collected::default(),
                    outcome: Outcome::Failed(format!("the fetch task failed: {join_error}")),
                    failures: Failures::default(),
                },
            }
        }
    }

    /// Keeps datagrepper's failed answers on the dead-letter stream, for inspection: the pages
    /// they stood for were asked again (or failed their window), so nothing of them is lost.
    pub(super) async fn dead_letter_bad_answers(&self, bad_answers: Vec<BadAnswer>) {
        for answer in bad_answers {
            let letter = DeadLetter {
                service: "ingestor",
                reason: answer.reason,
                detail: answer.detail,
                payload: &answer.body,
                headers: vec![(HEADER_SOURCE, SOURCE_NAME.to_string())],
            };
            self.relay.dead_letter(letter).await;
        }
    }

    /// Hands a window's messages to the relay in event-time order and returns, with their
    /// number and what the relay could not store, once every one is stored or dead-lettered.
    async fn relay_window(
        &self,
        collected: Collected,
    ) -> Result<(usize, RelaySummary), BackfillError> {
        let messages: Vec<FetchedMessage> = collected.into_time_order();
        let count = messages.len();
        if messages.is_empty() {
            return Ok((0, RelaySummary::default()));
        }
        let (sender, receiver) = mpsc::channel(RELAY_CHANNEL_CAPACITY);
        let relay_run = tokio::spawn(self.relay.clone().run(receiver));
        for message in messages {
            self.metrics
                .received
                .with_label_values(&[SOURCE_NAME])
                .inc();
            self.metrics.backfill_messages.inc();
            let incoming = Incoming::new(SOURCE_NAME, None, message.body);
            if sender.send(incoming).await.is_err() {
                break; // the relay run ended early; its join error says why
            }
        }
        drop(sender);
        let summary = relay_run
            .await
            .map_err(|error| BackfillError::Relay(error.to_string()))?;
        Ok((count, summary))
    }

    async fn pending_ranges(&self) -> Vec<Window> {
        match &self.progress_store {
            Some(store) => store.pending(&self.scope).await,
            None => Vec::new(),
        }
    }

    async fn add_pending(&self, range: Window) {
        if let Some(store) = &self.progress_store {
            store.add_pending(&self.scope, range).await;
        }
    }

    async fn remove_pending(&self, range: Window) {
        if let Some(store) = &self.progress_store {
            store.remove_pending(&self.scope, range).await;
        }
    }
}

/// Keeps the windows-remaining gauge right whichever way a run ends.
struct RemainingWindows {
    gauge: IntGauge,
    remaining: usize,
}

impl RemainingWindows {
    fn new(gauge: IntGauge, windows: usize) -> RemainingWindows {
        gauge.add(windows as i64);
        RemainingWindows {
            gauge,
            remaining: windows,
        }
    }

    fn finish_one(&mut self) {
        if self.remaining > 0 {
            self.remaining -= 1;
            self.gauge.dec();
        }
    }
}

impl Drop for RemainingWindows {
    fn drop(&mut self) {
        self.gauge.sub(self.remaining as i64);
    }
}

/// The range a start-up backfill covers: from a little before the newest message of the
/// stream, but no further back than `max_backfill`, to `now` (epoch seconds).
pub fn startup_range(now: i64, newest_in_stream: Option<f64>, max_backfill: Duration) -> Window {
    let max_backfill_seconds = i64::try_from(max_backfill.as_secs()).unwrap_or(i64::MAX);
    let earliest = now.saturating_sub(max_backfill_seconds);
    let start = match newest_in_stream {
        Some(newest) => (newest.floor() as i64 - STARTUP_OVERLAP_SECONDS).max(earliest),
        None => earliest,
    };
    Window {
        start: start.min(now),
        end: now,
    }
}

/// The ingestor's datagrepper task: backfills the downtime and, if configured, reconciles
/// each window that closes while it runs; returns at shutdown.
pub async fn run_in_service(
    backfill: Arc<Backfill>,
    jetstream: jetstream::Context,
    nats: NatsConfig,
    config: DatagrepperConfig,
    shutdown: CancellationToken,
) {
    let started_at = chrono::Utc::now().timestamp();
    let startup = backfill_downtime(
        &backfill,
        &jetstream,
        &nats,
        config.startup_max_backfill,
        &shutdown,
    );
    let reconciliation = async {
        if config.reconcile {
            reconcile::reconcile_closed_windows(
                &backfill,
                &jetstream,
                &nats,
                config.reconcile_grace,
                started_at,
                &shutdown,
            )
            .await;
        }
    };
    tokio::join!(startup, reconciliation);
    shutdown.cancelled().await;
}

/// Backfills each span a live source reports lost (fedmsg's `i` jumped), as it comes, without
/// waiting for its window to be reconciled; returns at shutdown. A span that cannot be fetched
/// now is left pending for the next start-up backfill (and its window's reconciliation).
pub async fn backfill_lost_spans(
    backfill: Arc<Backfill>,
    mut lost_spans: mpsc::Receiver<LostSpan>,
    shutdown: CancellationToken,
) {
    loop {
        let span = tokio::select! {
            _ = shutdown.cancelled() => return,
            span = lost_spans.recv() => span,
        };
        let Some(span) = span else { return };
        let range = lost_span_range(span);
        match backfill.run(range, false, &shutdown).await {
            Ok(progress) if progress.new_messages >= span.missing => {
                tracing::info!(%range, missing = span.missing, fetched = progress.messages, new = progress.new_messages, "backfilled a span fedmsg's `i` said was lost: datagrepper had the messages missing");
            }
            Ok(progress) => {
                tracing::warn!(%range, missing = span.missing, fetched = progress.messages, new = progress.new_messages, "backfilled a span fedmsg's `i` said was lost, but datagrepper had fewer new messages than were missing: the rest stay lost until reconciliation finds them (datagrepper may lag) or for good");
            }
            Err(interrupted @ BackfillError::Interrupted { .. }) => {
                tracing::info!(%range, %interrupted, "lost span not backfilled; the next start-up backfill fetches it");
                backfill.add_pending(range).await;
                return;
            }
            Err(error) => {
                tracing::error!(%range, %error, "cannot backfill a lost span now; the next start-up backfill will");
                backfill.add_pending(range).await;
            }
        }
    }
}

/// The whole seconds a lost span covers: both event times included (fedmsg's timestamps are
/// whole seconds, so they often coincide), earlier first whatever the publishers' clocks did.
fn lost_span_range(span: LostSpan) -> Window {
    let covering = Window::covering(span.after.min(span.before), span.after.max(span.before));
    Window {
        start: covering.start,
        end: covering.end.max(covering.start + 1),
    }
}

/// Backfills the downtime: [`startup_range`], plus every range an earlier run left pending.
///
/// Ranges with failed windows are tried again (only their incomplete windows) with growing
/// pauses until they complete: a gap is never given up on while the ingestor runs. Live
/// sources run meanwhile; their messages and the backfill's overlap harmlessly.
pub async fn backfill_downtime(
    backfill: &Backfill,
    jetstream: &jetstream::Context,
    nats: &NatsConfig,
    max_backfill: Duration,
    shutdown: &CancellationToken,
) {
    if max_backfill.is_zero() {
        tracing::info!("start-up backfill disabled (startup-max-backfill = 0s)");
        return;
    }
    let newest = match progress::newest_in_stream(jetstream, nats).await {
        Ok(newest) => newest.map(|newest| newest.event_time),
        Err(error) => {
            tracing::warn!(%error, "backfilling the longest allowed range");
            None
        }
    };
    let now = chrono::Utc::now().timestamp();
    let this_start = startup_range(now, newest, max_backfill);
    let mut ranges = backfill.pending_ranges().await;
    if !this_start.is_empty() {
        backfill.add_pending(this_start).await;
        ranges.push(this_start);
    }
    let mut round = 0;
    loop {
        let mut incomplete = Vec::new();
        for range in ranges {
            match backfill.run(range, true, shutdown).await {
                Ok(_) => backfill.remove_pending(range).await,
                Err(interrupted @ BackfillError::Interrupted { .. }) => {
                    tracing::info!(%range, %interrupted, "start-up backfill abandoned; the next start fetches what is left");
                    return;
                }
                Err(error) => {
                    tracing::error!(%range, %error, "start-up backfill incomplete; trying its failed windows again later");
                    incomplete.push(range);
                }
            }
        }
        if incomplete.is_empty() {
            return;
        }
        ranges = incomplete;
        let pause = backoff(round, STARTUP_RETRY_MIN, STARTUP_RETRY_MAX);
        round += 1;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86400);

    #[test]
    fn startup_covers_the_downtime_within_the_limit() {
        let now = 1_700_000_000;
        // Down for an hour: from a little before the newest message.
        assert_eq!(
            startup_range(now, Some((now - 3600) as f64 + 0.5), DAY),
            Window {
                start: now - 3600 - STARTUP_OVERLAP_SECONDS,
                end: now
            }
        );
        // Down for a week, or an empty stream: the limit.
        assert_eq!(
            startup_range(now, Some((now - 7 * 86400) as f64), DAY),
            Window {
                start: now - 86400,
                end: now
            }
        );
        assert_eq!(
            startup_range(now, None, DAY),
            Window {
                start: now - 86400,
                end: now
            }
        );
        // A message from the future does not push the start past now.
        assert!(startup_range(now, Some((now + 9000) as f64), DAY).is_empty());
    }

    #[test]
    fn a_lost_span_covers_both_event_times_in_whole_seconds() {
        let span = |after, before| LostSpan {
            missing: 1,
            after,
            before,
        };
        let window = |start, end| Window { start, end };
        assert_eq!(lost_span_range(span(100.0, 100.0)), window(100, 101));
        assert_eq!(lost_span_range(span(100.5, 103.2)), window(100, 104));
        assert_eq!(lost_span_range(span(103.0, 100.0)), window(100, 103));
    }

    #[test]
    fn the_remaining_gauge_is_restored_however_a_run_ends() {
        let gauge = IntGauge::new("remaining", "test").expect("gauge");
        {
            let mut remaining = RemainingWindows::new(gauge.clone(), 5);
            remaining.finish_one();
            assert_eq!(gauge.get(), 4);
        }
        assert_eq!(gauge.get(), 0);
    }
}
