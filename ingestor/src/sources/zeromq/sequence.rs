//! Loss detection from fedmsg's `i`: the number of messages a publishing process has sent.
//!
//! Why: a SUB socket cannot tell a quiet bus from a lost message, but fedmsg numbers what each
//! process publishes (1, 2, 3, ...), and each process binds its own endpoint. So on one
//! endpoint, a jump of `i` is direct evidence of loss, seconds after it happened, where
//! reconciliation with datagrepper needs a closed window.
//!
//! - A jump (`i` > last + 1) misses the messages in between, sent between the two event times.
//! - A drop of `i` is a new process (a restart): its messages before the first one received
//!   (`i` - 1 of them) were missed, sent after the old process's last message (the endpoint is
//!   bound by one process at a time).
//! - The same `i` again is a duplicate, not a loss.
//! - `i` counts every topic the process sent, so gaps mean something only when subscribed to
//!   every topic; the source does not track them otherwise.
//! - A relay or gateway (e.g. Fedora's hub.fedoraproject.org:9940) forwards many processes, so
//!   their counters interleave and every step looks like a loss. A finding is therefore held
//!   until the next message: if that one continues a counter left behind (`i` equal to or one
//!   past a value seen before a jump or drop), the endpoint interleaves, the finding is
//!   dropped and the endpoint is no longer tracked. A burst from one newly seen process can
//!   still be counted once before the interleaving shows. The first message an endpoint sends
//!   after start-up is the baseline: what came before is the start-up downtime's business.

use std::collections::VecDeque;

use serde::Deserialize;

use crate::source::LostSpan;

/// Counter values left behind by jumps and drops, kept to recognise interleaving.
const REMEMBERED: usize = 8;

/// What the tracker concluded from one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// Messages were lost between `last_i` and `next_i` (of the same or a new process).
    Gap {
        last_i: u64,
        next_i: u64,
        span: LostSpan,
    },
    /// Several publishers' counters interleave on this endpoint: no longer tracked.
    Interleaved,
}

/// The two envelope fields the tracker reads; serde skips the rest without keeping it.
#[derive(Deserialize)]
struct Counter {
    i: Option<u64>,
    timestamp: Option<f64>,
}

/// `(i, timestamp)` of an envelope, if it has both (old or foreign envelopes may not).
pub fn counter_of(body: &[u8]) -> Option<(u64, f64)> {
    let counter: Counter = serde_json::from_slice(body).ok()?;
    let timestamp = counter.timestamp.filter(|t| t.is_finite())?;
    Some((counter.i?, timestamp))
}

/// One endpoint's sequence, kept across reconnections so losses while disconnected count.
#[derive(Debug, Default)]
pub struct SequenceTracker {
    /// The last `(i, timestamp)` received.
    last: Option<(u64, f64)>,
    /// A gap waiting for the next message to rule out interleaving.
    pending: Option<Finding>,
    left_behind: VecDeque<u64>,
    interleaved: bool,
}

impl SequenceTracker {
    /// Takes the next message's `i` and event time; returns a confirmed finding, if any.
    pub fn observe(&mut self, i: u64, timestamp: f64) -> Option<Finding> {
        if self.interleaved {
            return None;
        }
        let Some((last_i, last_time)) = self.last else {
            self.last = Some((i, timestamp));
            return None;
        };
        let mut confirmed = None;
        if let Some(pending) = self.pending.take() {
            let continues_another = self
                .left_behind
                .iter()
                .any(|&earlier| i == earlier || i == earlier.saturating_add(1));
            if continues_another {
                self.interleaved = true;
                return Some(Finding::Interleaved);
            }
            confirmed = Some(pending);
        }
        if i == last_i || i == last_i.saturating_add(1) {
            self.last = Some((i, timestamp));
            return confirmed;
        }
        let missing = if i > last_i { i - last_i - 1 } else { i - 1 };
        self.remember(last_i);
        self.last = Some((i, timestamp));
        if missing > 0 {
            let span = LostSpan {
                missing,
                after: last_time,
                before: timestamp,
            };
            self.pending = Some(Finding::Gap {
                last_i,
                next_i: i,
                span,
            });
        }
        confirmed
    }

    /// The finding held for the next message, for when none comes (the endpoint went quiet).
    pub fn flush(&mut self) -> Option<Finding> {
        self.pending.take()
    }

    fn remember(&mut self, left_behind: u64) {
        if self.left_behind.len() == REMEMBERED {
            self.left_behind.pop_front();
        }
        self.left_behind.push_back(left_behind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(tracker: &mut SequenceTracker, counters: &[u64]) -> Vec<Finding> {
        let mut findings = Vec::new();
        for (position, &i) in counters.iter().enumerate() {
            findings.extend(tracker.observe(i, 1000.0 + position as f64));
        }
        findings
    }

    fn missing(findings: &[Finding]) -> Vec<u64> {
        let mut counts = Vec::new();
        for finding in findings {
            if let Finding::Gap { span, .. } = finding {
                counts.push(span.missing);
            }
        }
        counts
    }

    #[test]
    fn a_jump_is_a_gap_confirmed_by_the_next_message() {
        let mut tracker = SequenceTracker::default();
        let findings = feed(&mut tracker, &[5, 6, 7, 10]);
        assert!(findings.is_empty(), "held until the next message");
        let findings = feed(&mut tracker, &[11, 12, 14]);
        assert_eq!(
            findings,
            [Finding::Gap {
                last_i: 7,
                next_i: 10,
                span: LostSpan {
                    missing: 2,
                    after: 1002.0,
                    before: 1003.0
                }
            }]
        );
        assert_eq!(
            missing(&tracker.flush().into_iter().collect::<Vec<_>>()),
            [1]
        );
        assert_eq!(tracker.flush(), None);
    }

    #[test]
    fn a_restart_counts_only_what_the_new_process_sent_before_its_first_message() {
        let mut tracker = SequenceTracker::default();
        assert!(feed(&mut tracker, &[40, 41, 42, 1, 2, 3]).is_empty());
        let findings = feed(&mut tracker, &[4, 5, 1, 2, 3, 4, 7]);
        assert!(findings.is_empty(), "{findings:?}");
        let findings = feed(&mut tracker, &[8, 9]);
        assert_eq!(missing(&findings), [2]);
        // A new process first heard of at its 6th message: 5 were missed.
        let findings = feed(&mut tracker, &[6, 7]);
        assert_eq!(missing(&findings), [5]);
    }

    #[test]
    fn duplicates_and_the_first_message_are_not_losses() {
        let mut tracker = SequenceTracker::default();
        assert!(feed(&mut tracker, &[500, 500, 501, 501, 502]).is_empty());
        assert_eq!(tracker.flush(), None);
    }

    #[test]
    fn interleaved_publishers_are_recognised_and_not_counted() {
        // A gateway: two processes at 1000 and 50.
        let mut tracker = SequenceTracker::default();
        let findings = feed(&mut tracker, &[1000, 50, 1001, 51, 1002, 52, 3000]);
        assert_eq!(findings, [Finding::Interleaved]);
        assert!(feed(&mut tracker, &[4000, 1, 9]).is_empty());
        // A process first seen above the others, then the others again.
        let mut tracker = SequenceTracker::default();
        assert_eq!(
            feed(&mut tracker, &[10, 11, 90, 12]),
            [Finding::Interleaved]
        );
        // fedmsg's test corpus: many origins, mostly i = 1.
        let mut tracker = SequenceTracker::default();
        assert_eq!(
            feed(&mut tracker, &[1, 1, 1, 88, 1, 1, 16, 16]),
            [Finding::Interleaved]
        );
    }

    #[test]
    fn counters_are_read_from_envelopes_that_have_them() {
        assert_eq!(
            counter_of(br#"{"i": 7, "timestamp": 1600000000, "msg": {"i": "x"}}"#),
            Some((7, 1600000000.0))
        );
        assert_eq!(counter_of(br#"{"timestamp": 1600000000}"#), None);
        assert_eq!(counter_of(br#"{"i": -1, "timestamp": 1}"#), None);
        assert_eq!(counter_of(br#"{"i": 2}"#), None);
        assert_eq!(counter_of(b"not json"), None);
    }
}
