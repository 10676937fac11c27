//! Fetching one window completely, or saying why not.
//!
//! A window is paged from page 1 until datagrepper's `pages`. Because datagrepper pages by
//! OFFSET over a sort without tie-breaker, one paging can skip rows; so after each paging the
//! number of distinct messages is compared with the window's `total`:
//!
//! 1. fewer: page the window again, keeping what was already fetched (the union grows), up to
//!    [`PAGINGS_BEFORE_SPLIT`] times;
//! 2. still fewer: split the window into halves and fetch each the same way (fewer rows per
//!    query, fewer ties across page boundaries), as long as a part spans two seconds or more;
//!    the window is complete as soon as everything fetched for it, from any part, reaches its
//!    total;
//! 3. still fewer: the window failed, with the counts in the reason.
//!
//! A page that fails is tried again with exponential backoff, up to `attempts` times; then the
//! window failed, naming the page. Every failed answer that came with a body (an error status,
//! HTML, garbage) is kept in [`Failures::bad_answers`], for the backfill to dead-letter. A failed window is never reported complete: whatever it did
//! fetch is still relayed (always safe, messages are de-duplicated by identity), but the
//! backfill as a whole fails and names it.

use std::sync::Arc;
use std::time::Duration;

use statscache_shared::retry::backoff;
use tokio_util::sync::CancellationToken;

use super::client::{PageSource, RawPage};
use super::error::BadAnswer;
use super::window::{Collected, Window};
use super::SOURCE_NAME;
use crate::metrics::Metrics;

/// Pagings of a window that came up short before it is split.
pub const PAGINGS_BEFORE_SPLIT: u32 = 3;

/// Wait before the second try of a page; doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// How fetching a window ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every message datagrepper counts in the window was fetched.
    Complete,
    /// History of the window may be incomplete; the reason says where.
    Failed(String),
    /// Shutdown came first.
    Interrupted,
}

/// What fetching one window produced: its distinct messages, even when incomplete.
#[derive(Debug)]
pub struct FetchedWindow {
    pub window: Window,
    pub collected: Collected,
    pub outcome: Outcome,
    pub failures: Failures,
}

/// The requests of a window that failed.
#[derive(Debug, Default)]
pub struct Failures {
    /// Requests that failed and were tried again (or made the window fail).
    pub requests: u64,
    /// The failed answers that had a body.
    pub bad_answers: Vec<BadAnswer>,
}

/// Why paging a part of a window stopped early.
enum Stop {
    PageFailed(String),
    Interrupted,
}

pub struct WindowFetcher<P> {
    pages: P,
    attempts: u32,
    metrics: Arc<Metrics>,
}

impl<P: PageSource> WindowFetcher<P> {
    pub fn new(pages: P, attempts: u32, metrics: Arc<Metrics>) -> WindowFetcher<P> {
        WindowFetcher {
            pages,
            attempts: attempts.max(1),
            metrics,
        }
    }

    /// Where the pages come from.
    pub fn pages(&self) -> &P {
        &self.pages
    }

    /// Fetches `window` completely, splitting it if pagings keep coming up short.
    pub async fn fetch(&self, window: Window, shutdown: &CancellationToken) -> FetchedWindow {
        let mut fetched = FetchedWindow {
            window,
            collected: Collected::default(),
            outcome: Outcome::Complete,
            failures: Failures::default(),
        };
        // The whole window's total, known after its first pagings: once everything fetched
        // (from any part) reaches it, the window is complete whatever parts remain.
        let mut window_total = None;
        // Parts still to fetch, the next one last; splitting pushes halves back on.
        let mut parts = vec![window];
        while let Some(part) = parts.pop() {
            let mut part_collected = Collected::default();
            let paged = self
                .page_until_complete(part, &mut part_collected, &mut fetched.failures, shutdown)
                .await;
            fetched.collected.merge(part_collected);
            let (distinct, total) = match paged {
                Ok(counts) => counts,
                Err(Stop::PageFailed(reason)) => {
                    fetched.outcome = Outcome::Failed(reason);
                    return fetched;
                }
                Err(Stop::Interrupted) => {
                    fetched.outcome = Outcome::Interrupted;
                    return fetched;
                }
            };
            if part == window {
                window_total = Some(total);
            }
            if let Some(window_total) = window_total {
                if window_is_complete(fetched.collected.len() as u64, window_total) {
                    return fetched;
                }
            }
            if window_is_complete(distinct, total) {
                continue;
            }
            let Some((first_half, second_half)) = part.halves() else {
                fetched.outcome = Outcome::Failed(format!(
                    "{part} still gives {distinct} distinct messages of a total of {total} \
                     after {PAGINGS_BEFORE_SPLIT} pagings, and is too short to split"
                ));
                return fetched;
            };
            tracing::warn!(window = %part, distinct, total, "window stays short of its total; splitting it");
            parts.push(second_half);
            parts.push(first_half);
        }
        fetched
    }

    /// Pages `part` until its distinct messages reach its total, at most
    /// [`PAGINGS_BEFORE_SPLIT`] times; returns the distinct messages and the total.
    async fn page_until_complete(
        &self,
        part: Window,
        collected: &mut Collected,
        failures: &mut Failures,
        shutdown: &CancellationToken,
    ) -> Result<(u64, u64), Stop> {
        let mut distinct = 0;
        let mut total = 0;
        for paging in 1..=PAGINGS_BEFORE_SPLIT {
            total = self
                .page_through(part, collected, failures, shutdown)
                .await?;
            distinct = collected.len() as u64;
            if window_is_complete(distinct, total) {
                break;
            }
            self.metrics.backfill_short_windows.inc();
            tracing::warn!(window = %part, distinct, total, paging, "fewer distinct messages than datagrepper's total: OFFSET paging skipped rows");
        }
        Ok((distinct, total))
    }

    /// One paging of `part`, from page 1 to the last; returns the largest `total` seen (rows
    /// arriving while paging make it grow).
    async fn page_through(
        &self,
        part: Window,
        collected: &mut Collected,
        failures: &mut Failures,
        shutdown: &CancellationToken,
    ) -> Result<u64, Stop> {
        let mut total = 0;
        let mut page = 1;
        loop {
            let raw_page = self.fetch_page(part, page, failures, shutdown).await?;
            total = total.max(raw_page.total);
            let last_page = page >= raw_page.pages || raw_page.messages.is_empty();
            for item in raw_page.messages {
                collected.add(item);
            }
            if last_page {
                return Ok(total);
            }
            page += 1;
        }
    }

    /// One page, tried up to `attempts` times with backoff.
    async fn fetch_page(
        &self,
        part: Window,
        page: u64,
        failures: &mut Failures,
        shutdown: &CancellationToken,
    ) -> Result<RawPage, Stop> {
        let mut attempts_failed = 0;
        loop {
            let answer = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Err(Stop::Interrupted),
                answer = self.pages.page(part, page) => answer,
            };
            let error = match answer {
                Ok(raw_page) => {
                    self.metrics.backfill_pages.with_label_values(&["ok"]).inc();
                    return Ok(raw_page);
                }
                Err(error) => error,
            };
            attempts_failed += 1;
            failures.requests += 1;
            let request = format!("page {page} of {part}");
            if let Some(answer) = error.bad_answer(&request) {
                failures.bad_answers.push(answer);
            }
            self.metrics
                .backfill_pages
                .with_label_values(&[error.kind()])
                .inc();
            self.metrics
                .source_errors
                .with_label_values(&[SOURCE_NAME])
                .inc();
            if attempts_failed >= self.attempts {
                return Err(Stop::PageFailed(format!(
                    "page {page} of {part} failed {attempts_failed} times, last: {error}"
                )));
            }
            tracing::warn!(window = %part, page, failures = attempts_failed, %error, "datagrepper page failed; trying again");
            let wait = backoff(attempts_failed - 1, RETRY_MIN, RETRY_MAX);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Err(Stop::Interrupted),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// A window is complete when at least as many distinct messages were fetched as datagrepper
/// counts in it (more is fine: rows can arrive between the count and the last page).
pub fn window_is_complete(distinct: u64, total: u64) -> bool {
    distinct >= total
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    use async_trait::async_trait;
    use serde_json::{json, Value};

    use super::*;
    use crate::sources::datagrepper::error::PageError;

    /// An in-memory datagrepper that pages the way the real one does — OFFSET over a sort on
    /// the timestamp alone — with an unstable order among equal timestamps that changes on
    /// every request, and optional injected failures.
    struct UnstableDatagrepper {
        rows: Vec<Value>,
        rows_per_page: usize,
        /// Extra rows `total` claims beyond those it can return (a persistent shortfall).
        phantom_rows: u64,
        /// Requests (1-based) that fail with a 500.
        failing_requests: Vec<u64>,
        requests: AtomicU64,
        shuffle_state: Mutex<u64>,
    }

    impl UnstableDatagrepper {
        fn new(rows: Vec<Value>, rows_per_page: usize) -> UnstableDatagrepper {
            UnstableDatagrepper {
                rows,
                rows_per_page,
                phantom_rows: 0,
                failing_requests: Vec::new(),
                requests: AtomicU64::new(0),
                shuffle_state: Mutex::new(0x9E37_79B9_7F4A_7C15),
            }
        }

        /// A pseudo-random number (xorshift), different on every call.
        fn next_random(&self) -> u64 {
            let mut state = self.shuffle_state.lock().expect("lock");
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            *state
        }
    }

    #[async_trait]
    impl PageSource for UnstableDatagrepper {
        async fn page(&self, window: Window, page: u64) -> Result<RawPage, PageError> {
            let request = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
            if self.failing_requests.contains(&request) {
                return Err(PageError::Status {
                    status: 500,
                    snippet: "injected".to_string(),
                    body: bytes::Bytes::from_static(b"injected"),
                });
            }
            let mut matching: Vec<(f64, u64, Value)> = Vec::new();
            for row in &self.rows {
                let timestamp = row["timestamp"].as_f64().expect("timestamp");
                if timestamp >= window.start as f64 && timestamp <= window.end as f64 {
                    matching.push((timestamp, self.next_random(), row.clone()));
                }
            }
            // Sorted by timestamp only; ties land in a random order, as without tie-breaker.
            matching.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let total = matching.len() as u64 + self.phantom_rows;
            let pages = total.div_ceil(self.rows_per_page as u64);
            let offset = (page as usize - 1) * self.rows_per_page;
            let messages = matching
                .into_iter()
                .skip(offset)
                .take(self.rows_per_page)
                .map(|(_, _, row)| row)
                .collect();
            Ok(RawPage {
                messages,
                total,
                pages,
            })
        }
    }

    /// `count` messages spread over few timestamps, so pages split ties.
    fn tied_rows(count: usize) -> Vec<Value> {
        let mut rows = Vec::new();
        for index in 0..count {
            rows.push(json!({
                "topic": "org.fedoraproject.prod.git.receive",
                "msg": {"index": index},
                "msg_id": format!("2019-{index:04}"),
                "timestamp": 100 + (index / 10) as i64,
            }));
        }
        rows
    }

    fn fetcher(source: UnstableDatagrepper, attempts: u32) -> WindowFetcher<UnstableDatagrepper> {
        let metrics = Arc::new(Metrics::new(&prometheus::Registry::new()).expect("metrics"));
        WindowFetcher::new(source, attempts, metrics)
    }

    const WINDOW: Window = Window {
        start: 100,
        end: 200,
    };

    #[test]
    fn more_distinct_messages_than_the_total_is_complete() {
        assert!(window_is_complete(10, 10));
        assert!(window_is_complete(11, 10));
        assert!(!window_is_complete(9, 10));
        assert!(window_is_complete(0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn unstable_offset_paging_is_repaged_until_every_message_is_fetched() {
        let fetcher = fetcher(UnstableDatagrepper::new(tied_rows(60), 7), 3);
        let fetched = fetcher.fetch(WINDOW, &CancellationToken::new()).await;
        assert_eq!(fetched.outcome, Outcome::Complete);
        assert_eq!(fetched.collected.len(), 60);
        // Pages split ties, so some pagings came up short and were done again or split.
        assert!(fetcher.metrics.backfill_short_windows.get() > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_that_stays_short_fails_with_the_counts() {
        let mut source = UnstableDatagrepper::new(tied_rows(20), 100);
        source.phantom_rows = 1;
        let fetcher = fetcher(source, 3);
        let fetched = fetcher.fetch(WINDOW, &CancellationToken::new()).await;
        let Outcome::Failed(reason) = &fetched.outcome else {
            panic!("expected a failure, got {:?}", fetched.outcome);
        };
        assert!(reason.contains("too short to split"), "{reason}");
        assert!(
            reason.contains("20 distinct messages of a total of 21"),
            "{reason}"
        );
        // What was fetched is still there, to be relayed.
        assert_eq!(fetched.collected.len(), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_pages_are_tried_again() {
        let mut source = UnstableDatagrepper::new(tied_rows(5), 100);
        source.failing_requests = vec![1, 2];
        let fetcher = fetcher(source, 3);
        let fetched = fetcher.fetch(WINDOW, &CancellationToken::new()).await;
        assert_eq!(fetched.outcome, Outcome::Complete);
        assert_eq!(fetched.collected.len(), 5);
        assert_eq!(fetched.failures.requests, 2);
        let mut reasons = Vec::new();
        for answer in &fetched.failures.bad_answers {
            assert_eq!(answer.body.as_ref(), b"injected");
            reasons.push(answer.reason);
        }
        assert_eq!(reasons, ["datagrepper_server_error"; 2]);
        let server_errors = fetcher
            .metrics
            .backfill_pages
            .with_label_values(&["server_error"]);
        assert_eq!(server_errors.get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_page_failing_every_attempt_fails_the_window_and_names_the_page() {
        let mut source = UnstableDatagrepper::new(tied_rows(15), 10);
        // Page 1 succeeds, page 2 fails three times.
        source.failing_requests = vec![2, 3, 4];
        let fetcher = fetcher(source, 3);
        let fetched = fetcher.fetch(WINDOW, &CancellationToken::new()).await;
        let Outcome::Failed(reason) = &fetched.outcome else {
            panic!("expected a failure, got {:?}", fetched.outcome);
        };
        assert!(
            reason.starts_with("page 2 of [1970-01-01T00:01:40Z"),
            "{reason}"
        );
        assert!(reason.contains("failed 3 times"), "{reason}");
        assert_eq!(fetched.collected.len(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_interrupts_a_fetch() {
        let mut source = UnstableDatagrepper::new(tied_rows(5), 100);
        source.failing_requests = vec![1];
        let fetcher = fetcher(source, 3);
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let fetched = fetcher.fetch(WINDOW, &shutdown).await;
        assert_eq!(fetched.outcome, Outcome::Interrupted);
    }
}
