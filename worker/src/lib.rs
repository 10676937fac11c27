//! statscache-worker: durable JetStream consumers that run the plugins and batch-write their
//! statistics to ClickHouse. Any number of replicas share one durable consumer.
//!
//! The service ([`run`], `service`) and its work:
//! - [`consumer`]: fetch → runs → rows → write → rollups → ack; dead letters, poison messages.
//! - [`fetch`]: one batch from the durable consumer, closed by size or `batch-timeout`.
//! - [`identity`]: of the copies of a `msg_id`, the first to arrive is the one stored and
//!   counted (runs of held messages, the barrier before their lookup, the verdict on each).
//! - [`rows`]: the rows of every table the worker writes; [`sink`]: a batch of them, written
//!   with one INSERT per table; [`catalog`]: the `plugins` table.
//! - [`rollup`]: the hourly/daily/monthly/yearly rollups each batch recomputes, their rebuild
//!   and check; [`key_counts`]: the number of keys per day and month, which the api counts a
//!   page's rows with.
//! - [`quorum`]: on a replicated ClickHouse, inserts that return once every replica holds them.
//! - [`tables`]: the schema and each plugin's tables made ready (one-off fills included), and
//!   the month-by-month rebuild of rollups.
//! - [`metrics`]: Prometheus metrics; [`faults`]: the faults tests inject (off in production).
//!
//! Plugins:
//! - [`plugin`]: the plugin trait, its facts and metadata; [`topic_filter`]: topic patterns.
//! - [`plugins`]: the built-in plugins and the declarative ones from the config file.
//! - [`meta`]: usernames and packages a message names (the fedmsg.meta port, in the shared crate).
//!
//! Operator commands, each in a file (or folder) of its own: [`replay()`] (`replay`), the
//! rollups' `--rebuild` and `--check` ([`rollup_command`]), all of datanommer's history
//! ([`bootstrap`]), synthetic history for the scale benchmark ([`generate`]).

pub mod bootstrap;
pub mod catalog;
pub mod consumer;
pub mod faults;
pub mod fetch;
pub mod generate;
pub mod identity;
pub mod key_counts;
pub mod metrics;
/// The fedmsg.meta port lives in the shared crate, where the api computes its text fields too.
pub use statscache_shared::meta;
pub mod plugin;
pub mod plugins;
pub mod quorum;
mod replay;
pub mod rollup;
pub mod rollup_command;
pub mod rows;
mod service;
pub mod sink;
pub mod tables;
pub mod topic_filter;
pub mod writer;

pub use replay::{replay, ReplayRequest, ReplayStart};
pub use rollup_command::{rollup_check, rollup_rebuild, RollupDifference, RollupRequest};
pub use service::run;

use statscache_shared::{nats, schema};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Plugin(#[from] plugins::declarative::DefinitionError),
    #[error(transparent)]
    Nats(#[from] nats::NatsError),
    #[error(transparent)]
    Schema(#[from] schema::SchemaError),
    #[error("cannot create the durable consumer {name}: {detail}")]
    Consumer { name: String, detail: String },
    #[error(transparent)]
    Choose(#[from] plugins::ChooseError),
    #[error("cannot fetch from JetStream: {0}")]
    Fetch(String),
    #[error("cannot publish the plugin catalog: {0}")]
    Catalog(clickhouse::error::Error),
    #[error(transparent)]
    DeadLetter(nats::NatsError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("admin server: {0}")]
    Admin(std::io::Error),
    #[error("cannot write to ClickHouse: {0}")]
    Write(clickhouse::error::Error),
    #[error("cannot set up quorum inserts: {0}")]
    Quorum(clickhouse::error::Error),
    #[error(transparent)]
    Barrier(#[from] identity::barrier::BarrierError),
    #[error(transparent)]
    Turn(#[from] identity::turns::TurnError),
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
    #[error("cannot read the archive of stored messages: {0}")]
    Archive(clickhouse::error::Error),
    #[error("generate: {0}")]
    Generate(String),
    #[error("cannot rebuild or check the rollups of {plugin}: {source}")]
    Rollup {
        plugin: String,
        source: clickhouse::error::Error,
    },
}
