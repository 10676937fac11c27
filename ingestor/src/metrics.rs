//! The ingestor's Prometheus metrics.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

pub struct Metrics {
    /// Messages received, by source.
    pub received: IntCounterVec,
    /// Messages stored in the stream (publish acked), by source.
    pub relayed: IntCounterVec,
    /// Publishes JetStream recognised as duplicates (same Nats-Msg-Id within its window).
    pub duplicates: IntCounterVec,
    /// Rejected input, by source and reason; each is on the dead-letter stream.
    pub invalid: IntCounterVec,
    /// Publishes sent again after a timeout or error.
    pub publish_retries: IntCounterVec,
    /// Errors of the sources themselves (disconnects, failed HTTP requests), by source.
    pub source_errors: IntCounterVec,
    /// Seconds from sending a publish to its ack.
    pub publish_seconds: Histogram,
    /// Publishes awaiting their ack.
    pub in_flight: IntGauge,
    /// datagrepper windows by outcome: `complete` (fetched and stored), `skipped` (recorded
    /// complete earlier), `verified` (reconciliation found the stream holds it already),
    /// `failed` (a page failed every attempt, or the window stayed short of its total).
    pub backfill_windows: IntCounterVec,
    /// datagrepper page requests by outcome: `ok`, or why they failed (`server_error`,
    /// `timeout`, `connect`, `bad_body`, ...); a failed request is tried again.
    pub backfill_pages: IntCounterVec,
    /// Distinct messages fetched from datagrepper and handed to the relay.
    pub backfill_messages: IntCounter,
    /// Pagings of a window that found fewer distinct messages than its total: the window is
    /// paged again, then split, rather than accepted with a hole.
    pub backfill_short_windows: IntCounter,
    /// Windows of the running backfills not finished yet.
    pub backfill_windows_remaining: IntGauge,
    /// Closed windows in which reconciliation found fewer messages in the stream than
    /// datagrepper has: gaps in live delivery, each then backfilled.
    pub gaps: IntCounter,
    /// Dead letters that could not be stored either (logged), by reason: nothing else keeps
    /// that input.
    pub dead_letters_lost: IntCounterVec,
    /// Gaps in a publishing process's `i` on an endpoint (messages lost between two received
    /// ones, or before a new process's first), by endpoint.
    pub sequence_gaps: IntCounterVec,
    /// Messages those jumps say were lost, by endpoint.
    pub missing_messages: IntCounterVec,
    /// Dead letters the dead-letter stream's bounds dropped (its oldest), or an operator deleted.
    pub dead_letters_dropped: IntCounter,
    /// Letters and bytes in the dead-letter stream.
    pub dead_letter_messages: IntGauge,
    pub dead_letter_bytes: IntGauge,
    /// Publishes (messages and dead letters) JetStream refused to store for lack of room, by
    /// stream: the service is not ready until one is stored again.
    pub store_refusals: IntCounterVec,
    /// ZeroMQ peers breaking ZMTP or our bounds (a message over the limit, dropped alone or
    /// with the connection; a foreign greeting), by endpoint and reason.
    pub zeromq_protocol_errors: IntCounterVec,
    /// At start-up, seconds since the stream's newest message arrived: nothing published in
    /// that time was received live.
    pub startup_downtime_seconds: IntGauge,
    /// The part of that downtime no start-up backfill recovers (no datagrepper configured, or
    /// beyond `startup-max-backfill`).
    pub downtime_not_backfilled_seconds: IntGauge,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let metrics = Metrics {
            received: counter(
                "statscache_ingestor_received_total",
                "Messages received",
                &["source"],
            )?,
            relayed: counter(
                "statscache_ingestor_relayed_total",
                "Messages acked by JetStream",
                &["source"],
            )?,
            duplicates: counter(
                "statscache_ingestor_duplicates_total",
                "Publishes de-duplicated by JetStream",
                &["source"],
            )?,
            invalid: counter(
                "statscache_ingestor_invalid_total",
                "Rejected input, dead-lettered",
                &["source", "reason"],
            )?,
            publish_retries: counter(
                "statscache_ingestor_publish_retries_total",
                "Publishes retried",
                &["source"],
            )?,
            source_errors: counter(
                "statscache_ingestor_source_errors_total",
                "Source failures",
                &["source"],
            )?,
            publish_seconds: Histogram::with_opts(HistogramOpts::new(
                "statscache_ingestor_publish_seconds",
                "Time from publish to JetStream ack",
            ))?,
            in_flight: IntGauge::new(
                "statscache_ingestor_in_flight",
                "Publishes awaiting their ack",
            )?,
            backfill_windows: counter(
                "statscache_ingestor_backfill_windows_total",
                "datagrepper backfill windows by outcome",
                &["outcome"],
            )?,
            backfill_pages: counter(
                "statscache_ingestor_backfill_pages_total",
                "datagrepper page requests by outcome",
                &["outcome"],
            )?,
            backfill_messages: IntCounter::new(
                "statscache_ingestor_backfill_messages_total",
                "Distinct messages fetched from datagrepper and handed to the relay",
            )?,
            backfill_short_windows: IntCounter::new(
                "statscache_ingestor_backfill_short_windows_total",
                "Pagings of a window that found fewer distinct messages than its total",
            )?,
            backfill_windows_remaining: IntGauge::new(
                "statscache_ingestor_backfill_windows_remaining",
                "datagrepper backfill windows not finished yet",
            )?,
            gaps: IntCounter::new(
                "statscache_ingestor_gaps_total",
                "Closed windows in which the stream held fewer messages than datagrepper",
            )?,
            dead_letters_lost: counter(
                "statscache_ingestor_dead_letters_lost_total",
                "Dead letters that could not be stored",
                &["reason"],
            )?,
            sequence_gaps: counter(
                "statscache_ingestor_sequence_gaps_total",
                "Gaps in fedmsg's i counter of a publishing process on an endpoint (messages lost)",
                &["endpoint"],
            )?,
            missing_messages: counter(
                "statscache_ingestor_missing_messages_total",
                "Messages fedmsg's i counter says were lost on an endpoint",
                &["endpoint"],
            )?,
            dead_letters_dropped: IntCounter::new(
                "statscache_ingestor_dead_letters_dropped_total",
                "Dead letters dropped by the dead-letter stream's bounds (its oldest), or deleted",
            )?,
            dead_letter_messages: IntGauge::new(
                "statscache_ingestor_dead_letter_stream_messages",
                "Letters in the dead-letter stream",
            )?,
            dead_letter_bytes: IntGauge::new(
                "statscache_ingestor_dead_letter_stream_bytes",
                "Bytes of the dead-letter stream",
            )?,
            store_refusals: counter(
                "statscache_ingestor_store_refusals_total",
                "Publishes JetStream refused to store for lack of room (store full, stream limit)",
                &["stream"],
            )?,
            zeromq_protocol_errors: counter(
                "statscache_ingestor_zeromq_protocol_errors_total",
                "ZeroMQ peers breaking ZMTP or the message limit (the message or the connection dropped)",
                &["endpoint", "reason"],
            )?,
            startup_downtime_seconds: IntGauge::new(
                "statscache_ingestor_startup_downtime_seconds",
                "At start-up, seconds since the stream's newest message arrived",
            )?,
            downtime_not_backfilled_seconds: IntGauge::new(
                "statscache_ingestor_downtime_not_backfilled_seconds",
                "Seconds of the start-up downtime no backfill recovers",
            )?,
        };
        // Every outcome exported from the start (at 0), so that dashboards and alerts see a
        // series before the first backfill.
        for outcome in ["complete", "skipped", "verified", "failed"] {
            metrics.backfill_windows.with_label_values(&[outcome]);
        }
        registry.register(Box::new(metrics.sequence_gaps.clone()))?;
        registry.register(Box::new(metrics.missing_messages.clone()))?;
        registry.register(Box::new(metrics.zeromq_protocol_errors.clone()))?;
        registry.register(Box::new(metrics.store_refusals.clone()))?;
        registry.register(Box::new(metrics.dead_letters_dropped.clone()))?;
        registry.register(Box::new(metrics.dead_letter_messages.clone()))?;
        registry.register(Box::new(metrics.dead_letter_bytes.clone()))?;
        registry.register(Box::new(metrics.startup_downtime_seconds.clone()))?;
        registry.register(Box::new(metrics.downtime_not_backfilled_seconds.clone()))?;
        registry.register(Box::new(metrics.received.clone()))?;
        registry.register(Box::new(metrics.backfill_windows.clone()))?;
        registry.register(Box::new(metrics.backfill_pages.clone()))?;
        registry.register(Box::new(metrics.backfill_messages.clone()))?;
        registry.register(Box::new(metrics.backfill_short_windows.clone()))?;
        registry.register(Box::new(metrics.backfill_windows_remaining.clone()))?;
        registry.register(Box::new(metrics.gaps.clone()))?;
        registry.register(Box::new(metrics.relayed.clone()))?;
        registry.register(Box::new(metrics.duplicates.clone()))?;
        registry.register(Box::new(metrics.invalid.clone()))?;
        registry.register(Box::new(metrics.publish_retries.clone()))?;
        registry.register(Box::new(metrics.source_errors.clone()))?;
        registry.register(Box::new(metrics.publish_seconds.clone()))?;
        registry.register(Box::new(metrics.in_flight.clone()))?;
        registry.register(Box::new(metrics.dead_letters_lost.clone()))?;
        Ok(metrics)
    }
}
