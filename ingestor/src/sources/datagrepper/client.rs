//! Requests for datagrepper `/raw` pages: one page per call, rate-limited, classified errors.
//!
//! Retrying and deciding what a failure means for a window is the fetcher's job
//! ([`super::fetch`]); this file only speaks HTTP. Every request asks for JSON explicitly,
//! because datagrepper renders HTML to clients that look like browsers.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::ACCEPT;
use reqwest::Url;
use serde::Deserialize;
use serde_json::Value;
use statscache_shared::config::DatagrepperConfig;
use tokio::time::Instant;

use super::error::{BackfillError, PageError};
use super::window::Window;

/// How much of an unexpected answer is quoted in errors.
const SNIPPET_CHARS: usize = 160;

/// The slowest pace the limiter keeps, whatever the configuration says.
const LONGEST_INTERVAL: Duration = Duration::from_secs(3600);

/// datagrepper's optional filters, repeated in every request of a backfill.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    pub topics: Vec<String>,
    pub categories: Vec<String>,
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty() && self.categories.is_empty()
    }
}

/// One `/raw` page as the backfill needs it.
#[derive(Debug, Clone, Deserialize)]
pub struct RawPage {
    /// The messages, kept as JSON values: an item that is not a valid envelope must still reach
    /// the relay, which dead-letters it with the reason.
    #[serde(rename = "raw_messages")]
    pub messages: Vec<Value>,
    /// Messages in the whole window (with the filters), counted when this page was served.
    pub total: u64,
    /// Pages of the window at `rows_per_page`.
    pub pages: u64,
}

/// Where pages come from. The HTTP implementation is [`HttpPages`]; the seam lets the paging
/// logic be tested against a datagrepper that misbehaves on purpose.
#[async_trait]
pub trait PageSource: Send + Sync + 'static {
    /// Page `page` (from 1) of `window`, oldest first.
    async fn page(&self, window: Window, page: u64) -> Result<RawPage, PageError>;
}

/// Spaces requests evenly: each caller takes the next free slot, so the rate holds across all
/// windows fetched at once. The lock is held only to book a slot, never across a wait.
struct RateLimiter {
    interval: Duration,
    next_slot: Mutex<Instant>,
}

impl RateLimiter {
    fn new(requests_per_second: f64) -> RateLimiter {
        let interval = Duration::try_from_secs_f64(1.0 / requests_per_second)
            .unwrap_or(LONGEST_INTERVAL)
            .min(LONGEST_INTERVAL);
        RateLimiter {
            interval,
            next_slot: Mutex::new(Instant::now()),
        }
    }

    async fn wait_for_slot(&self) {
        let slot = {
            let mut next_slot = match self.next_slot.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            let slot = (*next_slot).max(Instant::now());
            *next_slot = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// `/raw` pages over HTTP.
pub struct HttpPages {
    http: reqwest::Client,
    raw_url: Url,
    /// Rows per page when paging a window.
    rows_per_page: u32,
    request_timeout: Duration,
    filters: Filters,
    limiter: RateLimiter,
}

impl HttpPages {
    pub fn new(config: &DatagrepperConfig, filters: Filters) -> Result<HttpPages, BackfillError> {
        let raw = format!("{}/raw", config.url.trim_end_matches('/'));
        let raw_url = Url::parse(&raw).map_err(|error| BackfillError::Url {
            url: config.url.clone(),
            detail: error.to_string(),
        })?;
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .user_agent(concat!("statscache-ingestor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| BackfillError::HttpClient(error.to_string()))?;
        Ok(HttpPages {
            http,
            raw_url,
            rows_per_page: config.rows_per_page,
            request_timeout: config.request_timeout,
            filters,
            limiter: RateLimiter::new(config.requests_per_second),
        })
    }

    fn query(&self, window: Window, page: u64, rows_per_page: u32) -> Vec<(&'static str, String)> {
        let mut query = vec![
            ("start", window.start.to_string()),
            ("end", window.end.to_string()),
            ("rows_per_page", rows_per_page.to_string()),
            ("order", "asc".to_string()),
            ("page", page.to_string()),
        ];
        for topic in &self.filters.topics {
            query.push(("topic", topic.clone()));
        }
        for category in &self.filters.categories {
            query.push(("category", category.clone()));
        }
        query
    }

    fn classify(&self, error: reqwest::Error) -> PageError {
        if error.is_timeout() {
            return PageError::Timeout(self.request_timeout);
        }
        if error.is_connect() {
            return PageError::Connect(error.to_string());
        }
        PageError::Request(error.to_string())
    }
}

#[async_trait]
impl PageSource for HttpPages {
    async fn page(&self, window: Window, page: u64) -> Result<RawPage, PageError> {
        self.request(window, page, self.rows_per_page).await
    }
}

impl HttpPages {
    /// How many messages datagrepper holds in `window` (with the filters): one request for a
    /// one-row page.
    pub async fn total(&self, window: Window) -> Result<u64, PageError> {
        let first_row = self.request(window, 1, 1).await?;
        Ok(first_row.total)
    }

    async fn request(
        &self,
        window: Window,
        page: u64,
        rows_per_page: u32,
    ) -> Result<RawPage, PageError> {
        self.limiter.wait_for_slot().await;
        let response = self
            .http
            .get(self.raw_url.clone())
            .query(&self.query(window, page, rows_per_page))
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|error| self.classify(error))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|error| self.classify(error))?;
        if !status.is_success() {
            return Err(PageError::Status {
                status: status.as_u16(),
                snippet: snippet(&body),
                body,
            });
        }
        parse_page(body)
    }
}

/// Parses a `/raw` answer; anything else (an HTML error page, a cut body) is a [`PageError`].
pub fn parse_page(body: Bytes) -> Result<RawPage, PageError> {
    serde_json::from_slice(&body).map_err(|error| PageError::BadBody {
        detail: error.to_string(),
        snippet: snippet(&body),
        body,
    })
}

/// The start of a body, on one line, for error messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut snippet = String::new();
    for character in text.chars().take(SNIPPET_CHARS) {
        snippet.push(if character.is_control() {
            ' '
        } else {
            character
        });
    }
    snippet
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Bytes {
        let path = format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
        Bytes::from(bytes)
    }

    #[test]
    fn real_pages_parse() {
        let captured =
            parse_page(fixture("datagrepper-raw-page-captured-2017.json")).expect("captured page");
        assert_eq!((captured.total, captured.pages), (65, 3));
        assert_eq!(captured.messages.len(), 25);
        let assembled = parse_page(fixture("datagrepper-raw-page.json")).expect("page");
        assert_eq!(assembled.messages.len(), 20);
    }

    #[test]
    fn html_and_errors_are_bad_bodies() {
        let html_page =
            Bytes::from_static(b"<!DOCTYPE html>\n<html><body>Gateway Timeout</body></html>");
        let html = parse_page(html_page.clone()).expect_err("HTML is not a page");
        assert_eq!(html.kind(), "bad_body");
        let answer = html.bad_answer("page 1 of a window").expect("an answer");
        assert_eq!(answer.reason, "datagrepper_bad_body");
        assert_eq!(answer.body, html_page);
        assert!(answer
            .detail
            .starts_with("page 1 of a window: answer is not a /raw page"));
        assert!(
            html.to_string().contains("<!DOCTYPE html> <html>"),
            "{html}"
        );
        let datagrepper_error =
            Bytes::from_static(br#"{"error": "rows_per_page must be <= 100", "arguments": {}}"#);
        assert_eq!(
            parse_page(datagrepper_error).map_err(|e| e.kind()).err(),
            Some("bad_body")
        );
    }

    #[test]
    fn requests_carry_the_window_paging_and_filters() {
        let mut config = statscache_shared::config::Config::defaults()
            .ingestor
            .datagrepper;
        config.url = "http://datagrepper.example/datagrepper/".to_string();
        let filters = Filters {
            topics: vec!["org.fedoraproject.prod.git.receive".to_string()],
            categories: vec!["bodhi".to_string(), "koji".to_string()],
        };
        let pages = HttpPages::new(&config, filters).expect("client");
        assert_eq!(
            pages.raw_url.as_str(),
            "http://datagrepper.example/datagrepper/raw"
        );
        let query = pages.query(Window { start: 10, end: 20 }, 3, 100);
        assert_eq!(
            query,
            vec![
                ("start", "10".to_string()),
                ("end", "20".to_string()),
                ("rows_per_page", "100".to_string()),
                ("order", "asc".to_string()),
                ("page", "3".to_string()),
                ("topic", "org.fedoraproject.prod.git.receive".to_string()),
                ("category", "bodhi".to_string()),
                ("category", "koji".to_string()),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_spaces_requests_across_callers() {
        let limiter = std::sync::Arc::new(RateLimiter::new(4.0));
        let started = Instant::now();
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..9 {
            let limiter = limiter.clone();
            callers.spawn(async move { limiter.wait_for_slot().await });
        }
        while callers.join_next().await.is_some() {}
        // Nine slots at a quarter second apart: the last one two seconds after the first.
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }
}
