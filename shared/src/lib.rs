//! What the three statscache services share.
//!
//! - [`message`]: the fedmsg envelope, its validation and its identity (`msg_id` or content hash).
//! - [`meta`]: the port of fedmsg.meta: usernames and packages (worker), text fields (api).
//! - [`topic`]: fedmsg topics, their category, and the reversible mapping to NATS subjects.
//! - [`config`]: figment configuration (defaults → TOML file → `STATSCACHE_*` environment).
//! - [`datanommer`]: a message's `msg` as datanommer stores it (what `contains=` searches).
//! - [`nats`]: the JetStream streams, header names and dead letters.
//! - [`server_urls`]: the several URLs of a clustered server under one key.
//! - [`schema`]: the ClickHouse tables (the interface analysts query) and their migrations.
//! - [`period`]: the hours, days, months and years rollups cut time into; [`sql`]: bound values.
//! - [`telemetry`]: logs and OTLP traces; [`trace_context`]: W3C trace context across NATS and
//!   HTTP; [`admin`]: health probes and Prometheus metrics.
//! - [`shutdown`]: the signal-driven cancellation every service drains on; [`retry`]: backoff.
//! - [`progress`]: progress bars (or log lines) of the long operator commands.
//! - [`time`]: the times people type (`--since`, `?start=`), parsed one way everywhere.
//! - [`statscache`]: Fedora's statscache identifiers (`volume-by-category-1m`...) and the plugins
//!   serving them, shared by the worker's `statscache-rows` plugin and the api.

pub mod admin;
pub mod config;
pub mod datanommer;
pub mod message;
pub mod meta;
pub mod nats;
pub mod period;
pub mod progress;
pub mod retry;
pub mod schema;
pub mod server_urls;
pub mod shutdown;
pub mod sql;
pub mod statscache;
pub mod telemetry;
pub mod time;
pub mod topic;
pub mod trace_context;
