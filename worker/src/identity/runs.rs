//! Runs: the messages a worker holds, cut into groups that arrived within less than the
//! stream's duplicate window of each other, oldest first.
//!
//! Why: two stored copies of one identity arrived at least a duplicate window apart (JetStream
//! refuses the second within it), so a run never holds two copies, and the [`barrier`] can
//! speak of "everything that arrived a window before the run's newest message" as "everything
//! before the run". A run is also at most a batch.
//!
//! [`barrier`]: super::barrier

use async_nats::jetstream;
use time::OffsetDateTime;

/// Where a delivery stands in the stream: its sequence, and when JetStream stored it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Arrival {
    pub sequence: u64,
    /// Nanoseconds since the epoch, by the stream's clock.
    pub at: i128,
}

impl Arrival {
    /// A delivery's arrival; one whose metadata cannot be read counts as the oldest there is,
    /// so that it is handled first and alone rather than held back.
    pub fn of(message: &jetstream::Message) -> Arrival {
        match message.info() {
            Ok(info) => Arrival {
                sequence: info.stream_sequence,
                at: info.published.unix_timestamp_nanos(),
            },
            Err(_) => Arrival {
                sequence: 0,
                at: OffsetDateTime::UNIX_EPOCH.unix_timestamp_nanos(),
            },
        }
    }
}

/// The first and newest arrivals of a run: what the barrier needs to know of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunBounds {
    pub first_sequence: u64,
    pub newest_at: i128,
}

/// How many of `arrivals` (sorted by sequence) form the oldest run: at least one, at most
/// `max`, all arrived less than `window` (nanoseconds) after the earliest of them and before
/// the latest plus `window`.
pub fn oldest_run_length(arrivals: &[Arrival], window: i128, max: usize) -> usize {
    let Some(first) = arrivals.first() else {
        return 0;
    };
    let mut earliest = first.at;
    let mut latest = first.at;
    let mut length = 1;
    while length < arrivals.len() && length < max {
        let next = arrivals[length].at;
        let spans = latest.max(next) - earliest.min(next);
        if spans >= window {
            break;
        }
        earliest = earliest.min(next);
        latest = latest.max(next);
        length += 1;
    }
    length
}

/// Takes the oldest run out of `held` (left sorted by stream sequence) and returns it with
/// its bounds, or `None` if nothing is held.
pub fn take_oldest(
    held: &mut Vec<jetstream::Message>,
    window: i128,
    max: usize,
) -> Option<(Vec<jetstream::Message>, RunBounds)> {
    let mut arrivals: Vec<(Arrival, jetstream::Message)> = Vec::with_capacity(held.len());
    for message in held.drain(..) {
        arrivals.push((Arrival::of(&message), message));
    }
    arrivals.sort_by_key(|(arrival, _)| *arrival);
    let sorted: Vec<Arrival> = arrivals.iter().map(|(arrival, _)| *arrival).collect();
    let length = oldest_run_length(&sorted, window, max);
    if length == 0 {
        return None;
    }
    let bounds = RunBounds {
        first_sequence: sorted[0].sequence,
        newest_at: sorted[..length]
            .iter()
            .map(|arrival| arrival.at)
            .max()
            .unwrap_or(sorted[0].at),
    };
    let mut run = Vec::with_capacity(length);
    for (index, (_, message)) in arrivals.into_iter().enumerate() {
        if index < length {
            run.push(message);
        } else {
            held.push(message);
        }
    }
    Some((run, bounds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arrivals(times: &[i128]) -> Vec<Arrival> {
        let mut arrivals = Vec::new();
        for (index, at) in times.iter().enumerate() {
            arrivals.push(Arrival {
                sequence: index as u64 + 1,
                at: *at,
            });
        }
        arrivals
    }

    #[test]
    fn a_run_ends_where_the_window_would_be_spanned_or_the_batch_is_full() {
        assert_eq!(oldest_run_length(&[], 10, 5), 0);
        assert_eq!(oldest_run_length(&arrivals(&[0, 3, 9, 10, 11]), 10, 5), 3);
        assert_eq!(oldest_run_length(&arrivals(&[0, 3, 9]), 10, 2), 2);
        assert_eq!(oldest_run_length(&arrivals(&[0, 100]), 10, 5), 1);
        // Out of order by a clock step: the span counts both ways.
        assert_eq!(oldest_run_length(&arrivals(&[5, 0, 4, 14]), 10, 5), 3);
    }

    proptest! {
        #[test]
        fn runs_span_less_than_the_window(
            times in proptest::collection::vec(0i128..1_000, 1..40),
            window in 1i128..300,
            max in 1usize..50,
        ) {
            let arrivals = arrivals(&times);
            let length = oldest_run_length(&arrivals, window, max);
            prop_assert!(length >= 1 && length <= max.min(arrivals.len()));
            let run = &arrivals[..length];
            let earliest = run.iter().map(|a| a.at).min().unwrap();
            let latest = run.iter().map(|a| a.at).max().unwrap();
            prop_assert!(latest - earliest < window);
        }
    }
}
