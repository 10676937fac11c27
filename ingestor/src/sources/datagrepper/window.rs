//! Time windows, and what the pagings of one window returned.
//!
//! This is the part of a backfill that decides whether history is complete, so it is kept free
//! of HTTP and NATS and tested on its own.
//!
//! - Bounds are whole epoch seconds and *both included*, as datagrepper's `start`/`end` are
//!   (datanommer filters with SQL `BETWEEN`). Two adjacent windows therefore share their
//!   boundary second; a message stored exactly on it is fetched twice, which de-duplication by
//!   identity absorbs. Leaving the boundary out instead could lose it.
//! - Windows are aligned to multiples of their length since the epoch, so the same hour is the
//!   same window whichever range asked for it, and a completed window recorded by one backfill
//!   is recognised by the next.
//! - datagrepper pages by OFFSET over a sort on the timestamp alone, so a page can repeat rows
//!   of the previous one or skip rows when timestamps tie or rows arrive while paging.
//!   [`Collected`] keeps one copy per identity, across pages and pagings, so that the number of
//!   distinct messages can be compared with the window's `total`.

use std::collections::HashSet;
use std::fmt;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat};
use serde_json::Value;
use statscache_shared::message::Envelope;

/// A span of time in whole epoch seconds, both bounds included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

impl Window {
    /// The smallest window of whole seconds that covers `start..=end` (fractions widen it).
    pub fn covering(start: f64, end: f64) -> Window {
        Window {
            start: start.floor() as i64,
            end: end.ceil() as i64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// The windows of `length` seconds, aligned to multiples of `length` since the epoch, that
    /// tile this one; the first and last are cut to its bounds.
    pub fn split_into(&self, length: i64) -> Vec<Window> {
        let mut windows = Vec::new();
        if self.is_empty() || length <= 0 {
            return windows;
        }
        let mut window_start = self.start;
        while window_start < self.end {
            let next_boundary = (window_start.div_euclid(length) + 1) * length;
            let window_end = next_boundary.min(self.end);
            windows.push(Window {
                start: window_start,
                end: window_end,
            });
            window_start = window_end;
        }
        windows
    }

    /// Two halves sharing the middle second, or `None` when the window is too short to split
    /// into whole seconds.
    pub fn halves(&self) -> Option<(Window, Window)> {
        if self.end - self.start < 2 {
            return None;
        }
        let middle = self.start + (self.end - self.start) / 2;
        Some((
            Window {
                start: self.start,
                end: middle,
            },
            Window {
                start: middle,
                end: self.end,
            },
        ))
    }

    /// `<start>-<end>` in epoch seconds: a key fragment valid in NATS KV keys.
    pub fn key(&self) -> String {
        format!("{}-{}", self.start, self.end)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "[{}, {}]",
            format_time(self.start),
            format_time(self.end)
        )
    }
}

/// RFC 3339 in UTC, or the raw number for a time chrono cannot represent.
fn format_time(seconds: i64) -> String {
    match DateTime::from_timestamp(seconds, 0) {
        Some(time) => time.to_rfc3339_opts(SecondsFormat::Secs, true),
        None => seconds.to_string(),
    }
}

/// One message as fetched, ready for the relay.
#[derive(Debug, Clone)]
pub struct FetchedMessage {
    /// Event time for ordering; for an item that is not a valid envelope, whatever timestamp it
    /// carries, else 0 (such items are dead-lettered by the relay, their order does not matter).
    pub event_time: f64,
    /// The identity, or for an invalid item its JSON text: what de-duplication compares.
    pub key: String,
    /// The `raw_messages` item re-serialised: what the relay validates and publishes.
    pub body: Bytes,
}

/// The distinct messages fetched for one window.
#[derive(Debug, Default)]
pub struct Collected {
    seen: HashSet<String>,
    messages: Vec<FetchedMessage>,
}

impl Collected {
    /// Adds one `raw_messages` item unless its identity was seen; returns whether it was new.
    ///
    /// An item that is not a valid envelope is kept too (keyed by its JSON text), so the relay
    /// dead-letters it with the reason instead of the backfill silently dropping it.
    pub fn add(&mut self, item: Value) -> bool {
        let text = item.to_string();
        let unvalidated_time = item.get("timestamp").and_then(Value::as_f64);
        let (event_time, key) = match Envelope::from_value(item) {
            Ok(envelope) => (envelope.event_time(), envelope.identity()),
            Err(_) => (unvalidated_time.unwrap_or(0.0), format!("invalid:{text}")),
        };
        if !self.seen.insert(key.clone()) {
            return false;
        }
        self.messages.push(FetchedMessage {
            event_time,
            key,
            body: Bytes::from(text),
        });
        true
    }

    /// Distinct messages so far: what is compared with datagrepper's `total`.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Adds the messages of `other` not already here.
    pub fn merge(&mut self, other: Collected) {
        for message in other.messages {
            if self.seen.insert(message.key.clone()) {
                self.messages.push(message);
            }
        }
    }

    /// The messages by event time (ties by key, so the order is the same on every run).
    pub fn into_time_order(self) -> Vec<FetchedMessage> {
        let mut messages = self.messages;
        messages.sort_by(|a, b| {
            a.event_time
                .total_cmp(&b.event_time)
                .then_with(|| a.key.cmp(&b.key))
        });
        messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HOUR: i64 = 3600;

    #[test]
    fn a_range_splits_into_aligned_windows_cut_to_its_bounds() {
        let range = Window {
            start: 10 * HOUR + 600,
            end: 13 * HOUR + 60,
        };
        let windows = range.split_into(HOUR);
        assert_eq!(
            windows,
            vec![
                Window {
                    start: 10 * HOUR + 600,
                    end: 11 * HOUR
                },
                Window {
                    start: 11 * HOUR,
                    end: 12 * HOUR
                },
                Window {
                    start: 12 * HOUR,
                    end: 13 * HOUR
                },
                Window {
                    start: 13 * HOUR,
                    end: 13 * HOUR + 60
                },
            ]
        );
        // Adjacent windows share their boundary second and together cover the whole range.
        for pair in windows.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
    }

    #[test]
    fn aligned_ranges_and_degenerate_ones() {
        let aligned = Window {
            start: 2 * HOUR,
            end: 4 * HOUR,
        };
        assert_eq!(aligned.split_into(HOUR).len(), 2);
        let shorter_than_a_window = Window {
            start: 100,
            end: 200,
        };
        assert_eq!(
            shorter_than_a_window.split_into(HOUR),
            vec![shorter_than_a_window]
        );
        assert!(Window { start: 5, end: 5 }.split_into(HOUR).is_empty());
        assert!(Window { start: 9, end: 5 }.split_into(HOUR).is_empty());
    }

    #[test]
    fn covering_widens_fractions_to_whole_seconds() {
        assert_eq!(
            Window::covering(1344344053.23372, 1565118377.5),
            Window {
                start: 1344344053,
                end: 1565118378
            }
        );
    }

    #[test]
    fn halves_share_the_middle_second_until_too_short() {
        let window = Window { start: 0, end: 10 };
        assert_eq!(
            window.halves(),
            Some((Window { start: 0, end: 5 }, Window { start: 5, end: 10 }))
        );
        assert_eq!(
            Window { start: 0, end: 3 }.halves(),
            Some((Window { start: 0, end: 1 }, Window { start: 1, end: 3 }))
        );
        assert_eq!(Window { start: 0, end: 1 }.halves(), None);
    }

    #[test]
    fn windows_display_and_key() {
        let window = Window {
            start: 1565118000,
            end: 1565121600,
        };
        assert_eq!(
            window.to_string(),
            "[2019-08-06T19:00:00Z, 2019-08-06T20:00:00Z]"
        );
        assert_eq!(window.key(), "1565118000-1565121600");
    }

    fn message(msg_id: &str, timestamp: f64) -> Value {
        json!({"topic": "org.fedoraproject.prod.git.receive", "msg": {}, "msg_id": msg_id, "timestamp": timestamp})
    }

    #[test]
    fn repeated_rows_are_kept_once_and_sent_in_time_order() {
        let mut collected = Collected::default();
        // Page 1 and an overlapping page 2, as OFFSET paging over tied timestamps can return.
        assert!(collected.add(message("2019-c", 30.0)));
        assert!(collected.add(message("2019-a", 10.0)));
        assert!(!collected.add(message("2019-a", 10.0)));
        assert!(collected.add(message("2019-b", 10.0)));
        assert_eq!(collected.len(), 3);
        let keys: Vec<String> = collected
            .into_time_order()
            .into_iter()
            .map(|message| message.key)
            .collect();
        assert_eq!(keys, ["2019-a", "2019-b", "2019-c"]);
    }

    #[test]
    fn invalid_items_are_kept_for_the_relay_to_dead_letter() {
        let mut collected = Collected::default();
        let without_timestamp = json!({"topic": "org.fedoraproject.prod.git.receive", "msg": {}});
        assert!(collected.add(without_timestamp.clone()));
        assert!(!collected.add(without_timestamp.clone()));
        assert!(collected.add(json!("not even an object")));
        assert_eq!(collected.len(), 2);
        let messages = collected.into_time_order();
        let bodies: Vec<Value> = messages
            .iter()
            .map(|message| serde_json::from_slice(&message.body).expect("JSON body"))
            .collect();
        assert!(bodies.contains(&without_timestamp));
    }

    #[test]
    fn merging_keeps_one_copy_of_boundary_messages() {
        let mut first_half = Collected::default();
        first_half.add(message("2019-a", 1.0));
        first_half.add(message("2019-boundary", 5.0));
        let mut second_half = Collected::default();
        second_half.add(message("2019-boundary", 5.0));
        second_half.add(message("2019-z", 9.0));
        first_half.merge(second_half);
        assert_eq!(first_half.len(), 3);
    }

    #[test]
    fn the_real_page_shape_collects_every_message() {
        let path = format!(
            "{}/../tests/fixtures/datagrepper-raw-page-captured-2017.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).expect("fixture");
        let page: Value = serde_json::from_str(&text).expect("fixture JSON");
        let items = page["raw_messages"]
            .as_array()
            .expect("raw_messages")
            .clone();
        let mut collected = Collected::default();
        for item in items.iter().cloned() {
            collected.add(item);
        }
        assert_eq!(collected.len(), items.len());
        for message in collected.into_time_order() {
            assert!(!message.key.starts_with("invalid:"), "{}", message.key);
        }
    }
}
