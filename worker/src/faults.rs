//! Faults the crash-consistency tests inject into a real worker process: abort it after so many
//! batches were written, either before their rollups are recomputed or before they are acked.
//!
//! Off unless the test sets `FAULT_INJECTION_WORKER_ABORT_BEFORE_ROLLUP` or
//! `FAULT_INJECTION_WORKER_ABORT_AFTER_WRITES` (a number of batches); the batch loop only calls
//! [`Faults::facts_written`] and [`Faults::before_ack`], which do nothing then.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the test asked for, and the batches written so far.
#[derive(Debug, Default)]
pub struct Faults {
    abort_before_rollup: Option<u64>,
    abort_before_ack: Option<u64>,
    batches_written: AtomicU64,
}

impl Faults {
    /// The faults the environment asks for (none in production).
    pub fn from_env() -> Faults {
        Faults {
            abort_before_rollup: limit("FAULT_INJECTION_WORKER_ABORT_BEFORE_ROLLUP"),
            abort_before_ack: limit("FAULT_INJECTION_WORKER_ABORT_AFTER_WRITES"),
            batches_written: AtomicU64::new(0),
        }
    }

    /// A batch's facts are written: counted, and the process aborts here if asked to die
    /// between the facts and the rollups.
    pub fn facts_written(&self) {
        let written = self.batches_written.fetch_add(1, Ordering::SeqCst) + 1;
        if self
            .abort_before_rollup
            .is_some_and(|limit| written >= limit)
        {
            tracing::error!(
                written,
                "fault injection: aborting between the facts and the rollups"
            );
            std::process::abort();
        }
    }

    /// A batch is stored and rolled up: the process aborts here if asked to die before the ack.
    pub fn before_ack(&self) {
        let Some(limit) = self.abort_before_ack else {
            return;
        };
        let written = self.batches_written.load(Ordering::SeqCst);
        if written >= limit {
            tracing::error!(written, "fault injection: aborting between write and ack");
            std::process::abort();
        }
    }
}

/// The number of batches `variable` says, if set.
fn limit(variable: &str) -> Option<u64> {
    let raw = std::env::var(variable).ok()?;
    let limit = raw.trim().parse().ok()?;
    tracing::warn!(
        limit,
        variable,
        "fault injection enabled: the worker will abort after {limit} batch writes"
    );
    Some(limit)
}
