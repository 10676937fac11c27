//! At start-up: how long nothing was received live, and whether that time is recovered.
//!
//! Why: a SUB socket receives nothing while the ingestor is down, and fedmsg does not resend.
//! With datagrepper configured the start-up backfill recovers the downtime; without it those
//! messages are lost, and an operator must be told rather than find out from short statistics.
//! The downtime is measured from the event time of the stream's newest message, so it is an
//! upper bound: the bus may simply have been quiet.

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
    let newest = match datagrepper::newest_event_time(jetstream, &config.nats).await {
        Ok(Some(newest)) => newest,
        Ok(None) => {
            health.set_detail(DETAIL, "none known (the stream is empty)");
            return;
        }
        Err(error) => {
            tracing::warn!(%error, "cannot tell how long nothing was received");
            return;
        }
    };
    let now = chrono::Utc::now().timestamp();
    let downtime = now.saturating_sub(newest.floor() as i64).max(0);
    let datagrepper = &config.ingestor.datagrepper;
    let backfilled = if datagrepper.url.is_empty() {
        0
    } else {
        let limit = i64::try_from(datagrepper.startup_max_backfill.as_secs()).unwrap_or(i64::MAX);
        downtime.min(limit)
    };
    let not_backfilled = downtime - backfilled;
    metrics.startup_downtime_seconds.set(downtime);
    metrics.downtime_not_backfilled_seconds.set(not_backfilled);
    if not_backfilled == 0 {
        tracing::info!(
            downtime_seconds = downtime,
            "the stream's newest message is this old; the start-up backfill covers it"
        );
        health.set_detail(
            DETAIL,
            format!("{downtime} s since the stream's newest message, backfilled from datagrepper"),
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
        "messages published since the stream's newest message were not received, and {not_backfilled} s of that will not be backfilled: {why}"
    );
    health.set_detail(
        DETAIL,
        format!("{downtime} s since the stream's newest message, {not_backfilled} s of it not backfilled ({why})"),
    );
}
