//! Watches the dead-letter stream: how full it is, and how many letters its bounds dropped.
//!
//! Why: the stream is bounded (`nats.dead-letter-max-*`) and drops its oldest letters past a
//! bound, so that a broken or hostile publisher cannot fill JetStream's store and starve the
//! message stream. Dropping is JetStream's, silent; this counts it, from the stream's first
//! sequence moving on (letters before it are gone), and exports the stream's size, so that an
//! operator sees letters go before they miss them.

use std::time::Duration;

use async_nats::jetstream;
use statscache_shared::config::NatsConfig;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How often the stream's state is read.
const INTERVAL: Duration = Duration::from_secs(2);

/// Reads the dead-letter stream's state every two seconds until `shutdown`.
pub async fn watch(
    jetstream: jetstream::Context,
    config: NatsConfig,
    metrics: std::sync::Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first sequence last seen; letters before it were dropped or deleted.
    let mut first_seen: Option<u64> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let state = match read_state(&jetstream, &config.dead_letter_stream).await {
            Ok(state) => state,
            Err(error) => {
                tracing::debug!(%error, "cannot read the dead-letter stream's state");
                continue;
            }
        };
        metrics.dead_letter_messages.set(gauge(state.messages));
        metrics.dead_letter_bytes.set(gauge(state.bytes));
        // A stream never written to says 0; one emptied says the next sequence to come.
        let first = state.first_sequence.max(1);
        if let Some(previous) = first_seen {
            let dropped = first.saturating_sub(previous);
            if dropped > 0 {
                metrics.dead_letters_dropped.inc_by(dropped);
                tracing::debug!(
                    dropped,
                    "the dead-letter stream's bounds dropped its oldest letters"
                );
            }
        }
        first_seen = Some(first);
    }
}

async fn read_state(
    jetstream: &jetstream::Context,
    name: &str,
) -> Result<jetstream::stream::State, String> {
    let stream = jetstream
        .get_stream(name)
        .await
        .map_err(|error| error.to_string())?;
    Ok(stream.cached_info().state.clone())
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
