//! What the three statscache services share.
//!
//! - [`message`]: the fedmsg envelope, its validation and its identity (`msg_id` or content hash).
//! - [`topic`]: fedmsg topics, their category, and the reversible mapping to NATS subjects.
//! - [`config`]: figment configuration (defaults → TOML file → `STATSCACHE_*` environment).
//! - [`nats`]: the JetStream streams, header names and dead letters.
//! - [`server_urls`]: the several URLs of a clustered server under one key.
//! - [`schema`]: the ClickHouse tables (the interface analysts query) and their migrations.
//! - [`period`]: the hours, days and months rollups cut time into; [`sql`]: bound values.
//! - [`telemetry`]: logs and OTLP traces; [`admin`]: health probes and Prometheus metrics.
//! - [`shutdown`]: the signal-driven cancellation every service drains on; [`retry`]: backoff.
//! - [`time`]: the times people type (`--since`, `?start=`), parsed one way everywhere.

pub mod admin;
pub mod config;
pub mod message;
pub mod nats;
pub mod period;
pub mod retry;
pub mod schema;
pub mod server_urls;
pub mod shutdown;
pub mod sql;
pub mod telemetry;
pub mod time;
pub mod topic;
