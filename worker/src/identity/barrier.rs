//! The barrier a run passes before it looks its identities up: every message that arrived a
//! duplicate window before the run's newest one is settled (stored, or parked).
//!
//! Why that is enough: a copy of a run's message that is not in the run arrived at least a
//! window before or after it (JetStream refuses a second `Nats-Msg-Id` within the window). One
//! before it is settled once the barrier passes, so its identity row is stored and the run's
//! lookup finds it. One after it waits at its own barrier until this run is settled, and then
//! finds this run's rows. So of any two copies, the later-arrived always sees the earlier, and
//! the first to arrive is the one stored: no two workers ever both store a copy.
//!
//! How it is read: the durable consumer's ack floor is the last sequence below which every
//! message is acked (JetStream acks a message only once its rows are stored, or parks it), and
//! the first message after the floor is the oldest one not settled. The barrier passes when
//! that message is the run's own first (nothing older is pending) or arrived after the run's
//! newest message less the window. Arrival times are the stream's clock; a cluster's servers
//! are assumed to agree within [`DUPLICATE_WINDOW_MARGIN`], which is taken off the window.
//!
//! The window is read from the stream before every run is cut, since copies are as far apart
//! as the window in force when the later one was stored. Lowering it is therefore always safe
//! (copies stored before are farther apart still); raising it is not (copies stored under the
//! old window, not yet settled, may be closer than the new one), so statscache never raises an
//! existing stream's window (`statscache_shared::nats::ensure_streams`).
//!
//! [`DUPLICATE_WINDOW_MARGIN`]: statscache_shared::config::DUPLICATE_WINDOW_MARGIN

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, Consumer};
use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};
use statscache_shared::config::DUPLICATE_WINDOW_MARGIN;

use async_nats::jetstream;

use super::runs::{self, Arrival, RunBounds};

#[derive(Debug, thiserror::Error)]
pub enum BarrierError {
    #[error("cannot read the consumer's ack floor: {0}")]
    ConsumerInfo(String),
    #[error("cannot read the stream's settings: {0}")]
    StreamInfo(String),
    #[error("cannot read the oldest message not yet settled: {0}")]
    OldestPending(String),
    #[error(
        "the stream's duplicate window ({0:?}) must exceed {DUPLICATE_WINDOW_MARGIN:?}: \
         copies of a message could then arrive together"
    )]
    WindowTooShort(Duration),
}

/// Whether a run whose bounds are `run` may look its identities up, given the consumer's ack
/// floor and the first message after it (`None`: there is none), with copies `window`
/// (nanoseconds, margin taken off) apart at least.
pub fn settled(
    run: RunBounds,
    ack_floor: u64,
    oldest_pending: Option<Arrival>,
    window: i128,
) -> bool {
    if ack_floor.saturating_add(1) >= run.first_sequence {
        return true;
    }
    let Some(oldest) = oldest_pending else {
        return true;
    };
    if oldest.sequence >= run.first_sequence {
        return true;
    }
    oldest.at > run.newest_at - window
}

/// The oldest run of what a worker holds, and whether its barrier passed.
pub struct Run {
    pub messages: Vec<jetstream::Message>,
    pub bounds: RunBounds,
    pub settled: bool,
}

/// Reads the ack floor of the shared durable consumer and the stream's duplicate window.
pub struct Barrier {
    consumer: Consumer<pull::Config>,
    stream: Stream,
    /// The consumer's subjects, to find the first message after the floor.
    filter_subject: String,
    /// The first message after the floor as last read: re-read only when the floor moved.
    oldest_pending: Option<(u64, Option<Arrival>)>,
}

impl Barrier {
    /// A barrier on `consumer` of `stream`, whose window is checked once (a stream whose window
    /// is too short to rely on is refused at start-up rather than at the first run).
    pub async fn new(
        consumer: Consumer<pull::Config>,
        stream: Stream,
        filter_subject: String,
    ) -> Result<Barrier, BarrierError> {
        let mut barrier = Barrier {
            consumer,
            stream,
            filter_subject,
            oldest_pending: None,
        };
        barrier.window().await?;
        Ok(barrier)
    }

    /// The stream's duplicate window now, less the margin, in nanoseconds: runs are cut to
    /// span less than it.
    async fn window(&mut self) -> Result<i128, BarrierError> {
        let info = self
            .stream
            .info()
            .await
            .map_err(|error| BarrierError::StreamInfo(error.to_string()))?;
        let window = info.config.duplicate_window;
        match window.checked_sub(DUPLICATE_WINDOW_MARGIN) {
            Some(usable) if !usable.is_zero() => Ok(usable.as_nanos() as i128),
            _ => Err(BarrierError::WindowTooShort(window)),
        }
    }

    /// Takes the oldest run out of `held` (at most `max` messages) and says whether it may
    /// look its identities up now; `None` if nothing is held. On an error `held` is untouched.
    pub async fn oldest_run(
        &mut self,
        held: &mut Vec<jetstream::Message>,
        max: usize,
    ) -> Result<Option<Run>, BarrierError> {
        let window = self.window().await?;
        let Some((messages, bounds)) = runs::take_oldest(held, window, max) else {
            return Ok(None);
        };
        match self.passes(bounds, window).await {
            Ok(settled) => Ok(Some(Run {
                messages,
                bounds,
                settled,
            })),
            Err(error) => {
                held.extend(messages);
                Err(error)
            }
        }
    }

    /// Whether `run`, cut with `window`, may look its identities up now (see the module doc).
    async fn passes(&mut self, run: RunBounds, window: i128) -> Result<bool, BarrierError> {
        let ack_floor = self
            .consumer
            .info()
            .await
            .map_err(|error| BarrierError::ConsumerInfo(error.to_string()))?
            .ack_floor
            .stream_sequence;
        if ack_floor.saturating_add(1) >= run.first_sequence {
            return Ok(true);
        }
        let oldest = self.oldest_pending(ack_floor).await?;
        Ok(settled(run, ack_floor, oldest, window))
    }

    /// The first message of the consumer's subjects after `ack_floor`.
    async fn oldest_pending(&mut self, ack_floor: u64) -> Result<Option<Arrival>, BarrierError> {
        if let Some((floor, oldest)) = self.oldest_pending {
            if floor == ack_floor {
                return Ok(oldest);
            }
        }
        let found = self
            .stream
            .raw_message_builder()
            .sequence(ack_floor + 1)
            .next_by_subject(self.filter_subject.clone())
            .send()
            .await;
        let oldest = match found {
            Ok(message) => Some(Arrival {
                sequence: message.sequence,
                at: message.time.unix_timestamp_nanos(),
            }),
            Err(error) if matches!(error.kind(), RawMessageErrorKind::NoMessageFound) => None,
            Err(error) => return Err(BarrierError::OldestPending(error.to_string())),
        };
        self.oldest_pending = Some((ack_floor, oldest));
        Ok(oldest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: i128 = 100;

    fn run(first_sequence: u64, newest_at: i128) -> RunBounds {
        RunBounds {
            first_sequence,
            newest_at,
        }
    }

    fn pending(sequence: u64, at: i128) -> Option<Arrival> {
        Some(Arrival { sequence, at })
    }

    #[test]
    fn a_run_with_everything_before_it_acked_passes() {
        assert!(settled(run(10, 1_000), 9, None, WINDOW));
        assert!(settled(run(10, 1_000), 12, None, WINDOW));
    }

    #[test]
    fn a_run_waits_for_what_arrived_a_window_before_its_newest_message() {
        // The oldest pending message arrived 100 before the run's newest: a copy could be it.
        assert!(!settled(run(10, 1_000), 4, pending(5, 900), WINDOW));
        // Arrived less than a window before: no copy of the run's messages can be that recent.
        assert!(settled(run(10, 1_000), 4, pending(5, 901), WINDOW));
        // The floor's next message is the run's own (the rest was deleted from the stream).
        assert!(settled(run(10, 1_000), 4, pending(10, 0), WINDOW));
        assert!(settled(run(10, 1_000), 4, None, WINDOW));
    }
}
