//! The worker's Prometheus metrics, registered once and passed to the tasks that update them.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

pub struct Metrics {
    /// Messages taken from the stream, whatever became of them.
    pub received: IntCounter,
    /// Messages whose rows were written and which were acked.
    pub stored: IntCounter,
    /// Messages that were delivered more than once (crash or timeout of a previous holder).
    pub redelivered: IntCounter,
    /// Messages handed to each plugin, by plugin.
    pub processed: IntCounterVec,
    /// Fact rows written, by plugin.
    pub facts_stored: IntCounterVec,
    /// Messages parked on the dead-letter stream, by reason.
    pub dead_letters: IntCounterVec,
    /// Batch writes to ClickHouse that failed (and were retried).
    pub write_errors: IntCounter,
    /// Writes retried because another insert into a table still awaited its replicas (quorum).
    pub quorum_waits: IntCounter,
    /// Seconds from fetching a batch to acking it.
    pub batch_seconds: Histogram,
    /// Messages in the stream the consumer has not delivered yet: the lag behind the head.
    pub pending: IntGauge,
    /// Seconds to recompute the rollups a batch touched (all plugins, all levels).
    pub rollup_seconds: Histogram,
    /// Rollup periods recomputed, by level (`hourly`, `daily`, `monthly`, `yearly`).
    pub rollup_periods: IntCounterVec,
    /// Messages whose identity was already stored under another copy: kept, not counted.
    pub copies: IntCounter,
    /// Of those, the ones differing from the copy that counts, by field (`timestamp`, `topic`,
    /// `body`).
    pub copy_differences: IntCounterVec,
    /// Runs that waited for older messages to be settled before looking their identities up.
    pub barrier_waits: IntCounter,
    /// Seconds those runs waited.
    pub barrier_wait_seconds: Histogram,
    /// Messages found in the stream without the relay's identity header, published again with it.
    pub rerelayed: IntCounter,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let metrics = Metrics {
            received: IntCounter::new(
                "statscache_worker_received_total",
                "Messages received from JetStream",
            )?,
            stored: IntCounter::new(
                "statscache_worker_stored_total",
                "Messages stored and acked",
            )?,
            redelivered: IntCounter::new(
                "statscache_worker_redelivered_total",
                "Messages delivered again",
            )?,
            processed: IntCounterVec::new(
                Opts::new(
                    "statscache_worker_plugin_processed_total",
                    "Messages processed by a plugin",
                ),
                &["plugin"],
            )?,
            facts_stored: IntCounterVec::new(
                Opts::new(
                    "statscache_worker_plugin_facts_stored_total",
                    "Fact rows written for a plugin",
                ),
                &["plugin"],
            )?,
            dead_letters: IntCounterVec::new(
                Opts::new(
                    "statscache_worker_dead_letters_total",
                    "Messages parked, by reason",
                ),
                &["reason"],
            )?,
            write_errors: IntCounter::new(
                "statscache_worker_write_errors_total",
                "Failed ClickHouse batch writes",
            )?,
            quorum_waits: IntCounter::new(
                "statscache_worker_quorum_waits_total",
                "ClickHouse writes retried while another insert awaited its replicas",
            )?,
            batch_seconds: Histogram::with_opts(HistogramOpts::new(
                "statscache_worker_batch_seconds",
                "Time from fetching a batch to acking it",
            ))?,
            pending: IntGauge::new(
                "statscache_worker_pending_messages",
                "Messages not yet delivered to the consumer",
            )?,
            rollup_seconds: Histogram::with_opts(HistogramOpts::new(
                "statscache_worker_rollup_seconds",
                "Time to recompute the rollups one batch touched",
            ))?,
            rollup_periods: IntCounterVec::new(
                Opts::new(
                    "statscache_worker_rollup_periods_total",
                    "Rollup periods recomputed, by level",
                ),
                &["level"],
            )?,
            copies: IntCounter::new(
                "statscache_worker_copies_total",
                "Messages whose identity was stored under another copy (kept, not counted)",
            )?,
            copy_differences: IntCounterVec::new(
                Opts::new(
                    "statscache_worker_copy_differences_total",
                    "Copies differing from the copy that counts, by field",
                ),
                &["field"],
            )?,
            barrier_waits: IntCounter::new(
                "statscache_worker_barrier_waits_total",
                "Runs that waited for older messages to be settled",
            )?,
            barrier_wait_seconds: Histogram::with_opts(HistogramOpts::new(
                "statscache_worker_barrier_wait_seconds",
                "Time runs waited for older messages to be settled",
            ))?,
            rerelayed: IntCounter::new(
                "statscache_worker_rerelayed_total",
                "Messages without the identity header, published again with it",
            )?,
        };
        registry.register(Box::new(metrics.received.clone()))?;
        registry.register(Box::new(metrics.stored.clone()))?;
        registry.register(Box::new(metrics.redelivered.clone()))?;
        registry.register(Box::new(metrics.processed.clone()))?;
        registry.register(Box::new(metrics.facts_stored.clone()))?;
        registry.register(Box::new(metrics.dead_letters.clone()))?;
        registry.register(Box::new(metrics.write_errors.clone()))?;
        registry.register(Box::new(metrics.quorum_waits.clone()))?;
        registry.register(Box::new(metrics.batch_seconds.clone()))?;
        registry.register(Box::new(metrics.pending.clone()))?;
        registry.register(Box::new(metrics.rollup_seconds.clone()))?;
        registry.register(Box::new(metrics.rollup_periods.clone()))?;
        registry.register(Box::new(metrics.copies.clone()))?;
        registry.register(Box::new(metrics.copy_differences.clone()))?;
        registry.register(Box::new(metrics.barrier_waits.clone()))?;
        registry.register(Box::new(metrics.barrier_wait_seconds.clone()))?;
        registry.register(Box::new(metrics.rerelayed.clone()))?;
        Ok(metrics)
    }
}
