//! At start-up: how long nothing was received live, and whether that time is recovered.
//!
//! Why: a SUB socket receives nothing while the ingestor is down, and fedmsg does not resend.
//! With datagrepper configured the start-up backfill recovers the downtime; without it those
//! messages are lost, and an operator must be told rather than find out from short statistics.
//! The downtime is measured from when the stream's newest message *arrived* (the server's
//! clock), not from its event time: a backfill or a late copy of old history may be the last
//! to arrive, and would read as hours of downtime. It is an upper bound: the bus may simply
//! have been quiet. What fedmsg's `i` says was lost meanwhile is counted apart, from each
//! publisher's first message after the start (`sources::zeromq::sequence`).

use std::time::Duration;

use statscache_shared::admin::Health;
use statscache_shared::config::Config;

use crate::metrics::Metrics;
use crate::sources::datagrepper;

/// The readiness detail this module sets.
const DETAIL: &str = "downtime";

/// Logs the downtime, exports it (`startup_downtime_seconds`, and the part no backfill
/// recovers in `downtime_not_backfilled_seconds`) and states it in the readiness details.
pub async fn report_startup_downtime(
    jetstream: &async_nats::jetstream::Context,
    config: &Config,
    metrics: &Metrics,
    health: &Health,
) {
    let newest = match datagrepper::newest_in_stream(jetstream, &config.nats).await {
        Ok(Some(newest)) => newest.arrival,
        Ok(None) => {
            health.set_detail(DETAIL, "none known (the stream is empty)");
            return;
        }
        Err(error) => {
            tracing::warn!(%error, "cannot tell how long nothing was received");
            return;
        }
    };
    let datagrepper = &config.ingestor.datagrepper;
    let backfill_limit = if datagrepper.url.is_empty() {
        Duration::ZERO
    } else {
        datagrepper.startup_max_backfill
    };
    let now = chrono::Utc::now().timestamp();
    let (downtime, backfilled) = split_downtime(now, newest, backfill_limit);
    let not_backfilled = downtime - backfilled;
    metrics.startup_downtime_seconds.set(downtime);
    metrics.downtime_not_backfilled_seconds.set(not_backfilled);
    if not_backfilled == 0 {
        let recovery = if backfilled > 0 {
            "recovered by the start-up backfill from datagrepper"
        } else {
            "nothing to recover"
        };
        tracing::info!(
            downtime_seconds = downtime,
            "the stream's newest message arrived this long ago: {recovery}"
        );
        health.set_detail(
            DETAIL,
            format!("{downtime} s since the stream's newest message arrived, {recovery}"),
        );
        return;
    }
    let why = if datagrepper.url.is_empty() {
        "no datagrepper is configured"
    } else {
        "it is longer than [ingestor.datagrepper] startup-max-backfill"
    };
    tracing::warn!(
        downtime_seconds = downtime,
        not_backfilled_seconds = not_backfilled,
        "messages published since the stream's newest message arrived were not received, and {not_backfilled} s of that will not be backfilled: {why}"
    );
    health.set_detail(
        DETAIL,
        format!("{downtime} s since the stream's newest message arrived, {not_backfilled} s of it not backfilled ({why})"),
    );
}

/// Seconds since `newest` at `now`, and how many of them a start-up backfill reaching back at
/// most `backfill_limit` recovers.
fn split_downtime(now: i64, newest: f64, backfill_limit: Duration) -> (i64, i64) {
    let downtime = now.saturating_sub(newest.floor() as i64).max(0);
    let limit = i64::try_from(backfill_limit.as_secs()).unwrap_or(i64::MAX);
    (downtime, downtime.min(limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_downtime_is_backfilled_up_to_the_limit() {
        let now = 1_700_000_000;
        let hour = Duration::from_secs(3600);
        assert_eq!(
            split_downtime(now, (now - 600) as f64 + 0.7, hour),
            (600, 600)
        );
        assert_eq!(split_downtime(now, (now - 7200) as f64, hour), (7200, 3600));
        assert_eq!(
            split_downtime(now, (now - 600) as f64, Duration::ZERO),
            (600, 0)
        );
        // A newest message from the future is no downtime.
        assert_eq!(split_downtime(now, (now + 60) as f64, hour), (0, 0));
    }
}
