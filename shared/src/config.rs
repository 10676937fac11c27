//! Configuration, layered with figment: built-in defaults (`default.toml`, embedded), then an
//! optional TOML file, then `STATSCACHE_*` environment variables.
//!
//! Environment keys use `__` between sections and `_` for the dashes of kebab-case keys, so
//! `STATSCACHE_NATS__DUPLICATE_WINDOW=5m` sets `[nats] duplicate-window`. One struct serves all
//! three services so that the stream, tables and plugins they share are configured in one place;
//! each service reads only its own section besides the shared ones. Unknown keys are errors: a
//! misspelt key must not silently fall back to a default.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::server_urls::ServerUrls;

/// The defaults, also the commented example configuration (`shared/src/default.toml`).
pub const DEFAULT_TOML: &str = include_str!("default.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    pub service: ServiceConfig,
    pub nats: NatsConfig,
    pub clickhouse: ClickHouseConfig,
    pub telemetry: TelemetryConfig,
    pub ingestor: IngestorConfig,
    pub worker: WorkerConfig,
    pub api: ApiConfig,
}

/// What every role shares about its own process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServiceConfig {
    /// After the first SIGTERM, the process exits within this time even if its work in flight
    /// is stuck (a frozen server, say), logging what it abandons (see `shutdown`).
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NatsConfig {
    /// Every seed URL of the cluster (one server: one URL); the client fails over between them.
    pub url: ServerUrls,
    /// JetStream stream holding every fedmsg message.
    pub stream: String,
    /// Subjects are `<subject-prefix>.<escaped topic>`.
    pub subject_prefix: String,
    /// Dead letters go to `<dead-letter-prefix>.<service>`, kept in their own stream.
    pub dead_letter_prefix: String,
    pub dead_letter_stream: String,
    /// Bounds of the dead-letter stream: past any of them its oldest letters are dropped
    /// (counted by the ingestor), so rejected input can never take the room the message stream
    /// needs. Messages and bytes: -1 for unlimited (not advised).
    pub dead_letter_max_messages: i64,
    pub dead_letter_max_bytes: i64,
    #[serde(with = "humantime_serde")]
    pub dead_letter_max_age: Duration,
    /// Bytes of a rejected payload kept in its dead letter (the rest is cut, its size kept in
    /// `Statscache-Original-Size`).
    pub dead_letter_max_body: usize,
    pub storage: StorageKind,
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Bytes; -1 for unlimited.
    pub max_bytes: i64,
    pub replicas: usize,
    /// JetStream forgets a `Nats-Msg-Id` this long after storing it. The worker relies on two
    /// stored copies of one identity being at least this far apart (`worker/src/identity`).
    #[serde(
        deserialize_with = "duplicate_window",
        serialize_with = "humantime_serde::serialize"
    )]
    pub duplicate_window: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StorageKind {
    File,
    Memory,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: String,
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// A cluster of `remote_servers` (replicas coordinated by ZooKeeper): tables are created
    /// `ON CLUSTER` with `Replicated*MergeTree` engines. Empty: one server.
    pub cluster: String,
    /// With `cluster` set: how many replicas must hold a worker's insert before it returns
    /// (`insert_quorum`). 0: every replica of the shard, which keeps rollups exact whichever
    /// replica each worker writes through; fewer keeps writing while replicas are down, at
    /// the cost of rollups possibly left low (ARCHITECTURE.md, "Clusters").
    pub insert_quorum: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` directive; `RUST_LOG` wins when set.
    pub log_filter: String,
    /// OTLP/gRPC endpoint for traces, e.g. `http://otel-collector:4317`; empty disables export.
    pub otlp_endpoint: String,
    /// Share of new traces recorded, 0 to 1; a span with a parent follows its parent's decision,
    /// so a message's trace is kept or dropped whole.
    #[serde(deserialize_with = "sample_ratio")]
    pub sample_ratio: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct IngestorConfig {
    /// `/health/livez`, `/health/readyz` and `/metrics`.
    pub admin_listen: SocketAddr,
    /// Publishes awaiting a JetStream ack at once; more waits (backpressure on the sources).
    pub max_in_flight: usize,
    /// A publish not acked within this time is sent again (same `Nats-Msg-Id`, so no duplicate).
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    pub zeromq: ZeroMqConfig,
    pub amqp: AmqpConfig,
    pub datagrepper: DatagrepperConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ZeroMqConfig {
    /// fedmsg endpoints to SUB to (fedmsg's `endpoints` values), e.g. `tcp://hub.fedoraproject.org:9940`.
    pub endpoints: Vec<String>,
    /// Topic prefixes to subscribe to; `[""]` receives everything.
    pub topic_prefixes: Vec<String>,
    /// Pause between connection attempts to an endpoint nobody listens on: doubling from
    /// `reconnect-min` up to `reconnect-max`, forever (libzmq retries every 100 ms).
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// An endpoint silent this long is checked: the ZMTP guard in front of the `zeromq` socket
    /// sends a PING, and replaces the connection if nothing answers within 5 s, so a
    /// connection that died without a word is not kept forever. `0s` disables the check.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

/// fedora-messaging (AMQP 0-9-1 on RabbitMQ): a durable queue bound to the topic exchange.
/// Credentials go in the URL (`amqps://user:password@host/%2Fvhost`); certificate auth is
/// `?auth_mechanism=external` in the URL with `tls-cert-file` and `tls-key-file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AmqpConfig {
    /// The broker, e.g. `amqps://fedora:@rabbitmq.fedoraproject.org/%2Fpublic_pubsub`. Empty
    /// disables the source.
    pub url: String,
    /// The queue to consume; declared durable, so messages wait in it while the ingestor is down.
    pub queue: String,
    /// The exchange the queue is bound to (fedora-messaging publishes to `amq.topic`).
    pub exchange: String,
    /// Binding keys (`*` one word, `#` any words); `["#"]` receives every topic.
    pub routing_keys: Vec<String>,
    /// PEM file of the CA certificates that sign the broker's certificate; empty: the system's.
    pub tls_ca_file: String,
    /// PEM client certificate and its PKCS#8 PEM key, for certificate authentication.
    pub tls_cert_file: String,
    pub tls_key_file: String,
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
}

/// History from datagrepper's `/raw`: the start-up backfill of the downtime, the continuous
/// reconciliation of closed windows, and the `statscache-ingestor backfill` command.
///
/// datagrepper is slow on big ranges and pages by OFFSET, so a range is fetched as windows of
/// `window`, a few at once (`parallelism`), at most `requests-per-second` overall, each page
/// tried `attempts` times. Values that datagrepper or the backfill cannot work with are rejected
/// when the configuration is loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DatagrepperConfig {
    /// datagrepper's base URL (the part before `/raw`), e.g.
    /// `https://apps.fedoraproject.org/datagrepper`. Empty disables the start-up backfill and
    /// reconciliation.
    pub url: String,
    /// Messages per `/raw` page; datagrepper refuses more than 100.
    #[serde(deserialize_with = "rows_per_page")]
    pub rows_per_page: u32,
    /// Length of the windows a range is split into (aligned to multiples of it since the epoch);
    /// whole seconds, since datagrepper's bounds are.
    #[serde(
        serialize_with = "humantime_serde::serialize",
        deserialize_with = "window_length"
    )]
    pub window: Duration,
    /// Windows fetched at once.
    #[serde(deserialize_with = "at_least_one")]
    pub parallelism: u32,
    /// Requests per second to datagrepper, across all windows fetched at once.
    #[serde(deserialize_with = "positive_rate")]
    pub requests_per_second: f64,
    /// A request not answered in full within this time is tried again.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Tries of one page before its window is reported failed.
    #[serde(deserialize_with = "at_least_one")]
    pub attempts: u32,
    /// At start-up, backfill from the newest message in the stream, but at most this far back;
    /// `0s` disables the start-up backfill.
    #[serde(with = "humantime_serde")]
    pub startup_max_backfill: Duration,
    /// While running, compare each closed window with datagrepper's total and backfill it when
    /// the stream holds fewer messages (what ZeroMQ lost).
    pub reconcile: bool,
    /// How long after a window closes it is reconciled: datanommer stores messages with a
    /// delay, and late messages still arrive live.
    #[serde(with = "humantime_serde")]
    pub reconcile_grace: Duration,
    /// Only these topics (datagrepper's repeatable `topic` filter); empty: all.
    pub topics: Vec<String>,
    /// Only these categories (datagrepper's repeatable `category` filter); empty: all.
    pub categories: Vec<String>,
    /// JetStream key-value bucket recording completed windows, so a backfill run again does not
    /// fetch them again.
    pub progress_bucket: String,
}

/// datagrepper answers `rows_per_page` above 100 with an error, and 0 would never progress.
fn rows_per_page<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let rows = u32::deserialize(deserializer)?;
    if !(1..=100).contains(&rows) {
        return Err(serde::de::Error::custom(format!(
            "rows-per-page must be between 1 and 100 (datagrepper's limit), not {rows}"
        )));
    }
    Ok(rows)
}

/// Windows are whole seconds: at least one, fractions dropped.
fn window_length<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let length: Duration = humantime_serde::deserialize(deserializer)?;
    if length.as_secs() == 0 {
        return Err(serde::de::Error::custom(format!(
            "window must be at least 1s, not {length:?}"
        )));
    }
    Ok(Duration::from_secs(length.as_secs()))
}

/// The shortest duplicate window: the worker takes [`DUPLICATE_WINDOW_MARGIN`] off it.
pub const MIN_DUPLICATE_WINDOW: Duration = Duration::from_secs(2);

/// What the worker takes off the stream's duplicate window when it reasons about arrival times
/// (clocks of the servers of a NATS cluster, rounding).
pub const DUPLICATE_WINDOW_MARGIN: Duration = Duration::from_secs(1);

fn duplicate_window<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    let window: Duration = humantime_serde::deserialize(deserializer)?;
    if window < MIN_DUPLICATE_WINDOW {
        return Err(serde::de::Error::custom(format!(
            "duplicate-window must be at least {MIN_DUPLICATE_WINDOW:?}, not {window:?}"
        )));
    }
    Ok(window)
}

fn at_least_one<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = u32::deserialize(deserializer)?;
    if value == 0 {
        return Err(serde::de::Error::custom("must be at least 1"));
    }
    Ok(value)
}

fn sample_ratio<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    let ratio = f64::deserialize(deserializer)?;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(serde::de::Error::custom(format!(
            "sample-ratio must be between 0 and 1, not {ratio}"
        )));
    }
    Ok(ratio)
}

fn positive_rate<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    let rate = f64::deserialize(deserializer)?;
    if !rate.is_finite() || rate <= 0.0 {
        return Err(serde::de::Error::custom(format!(
            "must be a positive number of requests per second, not {rate}"
        )));
    }
    Ok(rate)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct WorkerConfig {
    pub admin_listen: SocketAddr,
    /// Durable consumer shared by every worker replica.
    pub consumer: String,
    /// Most messages per ClickHouse write.
    pub batch_size: usize,
    /// Longest wait for a batch to fill before it is written anyway.
    #[serde(with = "humantime_serde")]
    pub batch_timeout: Duration,
    /// JetStream redelivers a message not acked within this time; must exceed a batch's write.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Deliveries of a message before it is parked as a poison message.
    pub max_deliver: i64,
    /// Built-in plugins to leave out, by identifier.
    pub disabled_plugins: Vec<String>,
    /// Declarative plugins: statistics defined here, without code.
    pub plugins: Vec<DeclarativePluginConfig>,
}

/// A statistic defined in the configuration file.
///
/// ```toml
/// [[worker.plugins]]
/// name = "Builds by owner"
/// description = "Koji build state changes per build owner."
/// kind = "count"
/// topics = ["org.fedoraproject.*.buildsys.build.state.change"]
/// key = "msg.owner"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DeclarativePluginConfig {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub kind: StatisticKind,
    /// NATS-style patterns over the topic: `*` one token, `>` the rest. Empty matches all.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Where the key comes from: `topic`, `category`, `usernames`, `packages`, or a dotted path
    /// into the envelope such as `msg.owner`. Arrays give one key per element.
    pub key: String,
    /// For `distinct-count` and `latest`: the value counted or kept, same syntax as `key`.
    #[serde(default)]
    pub value: Option<String>,
    /// Only messages newer than now minus this are processed.
    #[serde(default, with = "humantime_serde")]
    pub backlog_delta: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatisticKind {
    /// Messages per key per bucket.
    Count,
    /// Distinct values per key per bucket.
    DistinctCount,
    /// The newest value per key, by (timestamp, msg_id).
    Latest,
}

impl StatisticKind {
    /// The inverse of [`StatisticKind::as_str`].
    pub fn parse(text: &str) -> Option<StatisticKind> {
        match text {
            "count" => Some(StatisticKind::Count),
            "distinct-count" => Some(StatisticKind::DistinctCount),
            "latest" => Some(StatisticKind::Latest),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StatisticKind::Count => "count",
            StatisticKind::DistinctCount => "distinct-count",
            StatisticKind::Latest => "latest",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub default_rows_per_page: u32,
    pub max_rows_per_page: u32,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Requests that query ClickHouse at once, per replica (each runs at most two queries at a
    /// time); the others wait for a turn.
    pub max_concurrent_requests: usize,
    /// How long a request may wait for its turn before it is answered 503 with `Retry-After`.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// How long a client may take to send a request's head, from its first byte.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no traffic for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

/// The `--config` option every binary takes (flatten it into the command line).
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// TOML configuration file (defaults, then this file, then STATSCACHE_* variables).
    #[arg(
        id = "config",
        long = "config",
        value_name = "FILE",
        env = "STATSCACHE_CONFIG",
        global = true
    )]
    pub config_file: Option<std::path::PathBuf>,
}

impl ConfigArgs {
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(self.config_file.as_deref())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(#[from] Box<figment::Error>);

impl Config {
    /// Loads defaults, then `file` if given, then `STATSCACHE_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(environment());
        figment.extract().map_err(|e| ConfigError(Box::new(e)))
    }

    /// The defaults alone, for tests and tools.
    pub fn defaults() -> Config {
        match Figment::from(Toml::string(DEFAULT_TOML)).extract() {
            Ok(config) => config,
            Err(error) => panic!("the embedded default.toml is invalid: {error}"),
        }
    }
}

/// `STATSCACHE_A__B_C` becomes the key `a.b-c`. Every key lives in a section, so only variables
/// with a `__` are configuration: `STATSCACHE_CONFIG` (the file) and the `STATSCACHE_API_PORT`
/// style variables Kubernetes injects for a Service named `statscache-api` are left alone.
fn environment() -> Env {
    Env::prefixed("STATSCACHE_")
        .filter(|key| key.as_str().contains("__"))
        .map(|key| key.as_str().replace("__", ".").replace('_', "-").into())
}

#[cfg(test)]
// figment's Jail API returns its large error type by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let config = Config::defaults();
        assert_eq!(config.nats.stream, "FEDMSG");
        assert_eq!(config.api.max_rows_per_page, 100);
    }

    #[test]
    fn file_then_environment_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "statscache.toml",
                "[nats]\nstream = \"FROM_FILE\"\nduplicate-window = \"5m\"\n[worker]\nbatch-size = 7\n",
            )?;
            jail.set_env("STATSCACHE_WORKER__BATCH_SIZE", "9");
            jail.set_env(
                "STATSCACHE_INGESTOR__ZEROMQ__ENDPOINTS",
                "[tcp://a:1, tcp://b:2]",
            );
            let config =
                Config::load(Some(Path::new("statscache.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.nats.stream, "FROM_FILE");
            assert_eq!(config.nats.duplicate_window, Duration::from_secs(300));
            assert_eq!(config.worker.batch_size, 9);
            assert_eq!(
                config.ingestor.zeromq.endpoints,
                vec!["tcp://a:1", "tcp://b:2"]
            );
            Ok(())
        });
    }

    #[test]
    fn nats_takes_every_seed_url_of_a_cluster() {
        figment::Jail::expect_with(|jail| {
            let seeds = ["nats://a:4222", "nats://b:4222", "nats://c:4222"];
            jail.set_env("STATSCACHE_NATS__URL", seeds.join(","));
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.nats.url.as_slice(), seeds);
            jail.set_env("STATSCACHE_NATS__URL", format!("[{}]", seeds.join(", ")));
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.nats.url.as_slice(), seeds);
            jail.create_file("one.toml", "[nats]\nurl = \"nats://one:4222\"\n")?;
            jail.clear_env();
            let config = Config::load(Some(Path::new("one.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.nats.url.as_slice(), ["nats://one:4222"]);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[nats]\nstreem = \"typo\"\n")?;
            let error = Config::load(Some(Path::new("bad.toml"))).expect_err("typo must fail");
            assert!(error.to_string().contains("streem"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn datagrepper_settings_are_validated() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("STATSCACHE_INGESTOR__DATAGREPPER__ROWS_PER_PAGE", "10");
            jail.set_env("STATSCACHE_INGESTOR__DATAGREPPER__WINDOW", "90d");
            jail.set_env(
                "STATSCACHE_INGESTOR__DATAGREPPER__REQUESTS_PER_SECOND",
                "50",
            );
            let config = Config::load(None).map_err(|e| e.to_string())?;
            let datagrepper = &config.ingestor.datagrepper;
            assert_eq!(datagrepper.rows_per_page, 10);
            assert_eq!(datagrepper.window, Duration::from_secs(90 * 86400));
            assert_eq!(datagrepper.requests_per_second, 50.0);
            for (key, value, complaint) in [
                ("ROWS_PER_PAGE", "101", "between 1 and 100"),
                ("ROWS_PER_PAGE", "0", "between 1 and 100"),
                ("PARALLELISM", "0", "at least 1"),
                ("ATTEMPTS", "0", "at least 1"),
                ("REQUESTS_PER_SECOND", "0", "positive"),
                ("WINDOW", "500ms", "at least 1s"),
            ] {
                let variable = format!("STATSCACHE_INGESTOR__DATAGREPPER__{key}");
                jail.clear_env();
                jail.set_env(&variable, value);
                let error = Config::load(None).expect_err("invalid value must fail");
                assert!(error.to_string().contains(complaint), "{variable}: {error}");
            }
            Ok(())
        });
    }

    #[test]
    fn sample_ratio_is_a_share() {
        figment::Jail::expect_with(|jail| {
            assert_eq!(Config::defaults().telemetry.sample_ratio, 1.0);
            jail.set_env("STATSCACHE_TELEMETRY__SAMPLE_RATIO", "0.25");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.telemetry.sample_ratio, 0.25);
            jail.set_env("STATSCACHE_TELEMETRY__SAMPLE_RATIO", "1.5");
            let error = Config::load(None).expect_err("a ratio above 1 must fail");
            assert!(error.to_string().contains("between 0 and 1"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn declarative_plugins_parse() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "plugins.toml",
                r#"
                [[worker.plugins]]
                name = "Builds by owner"
                kind = "count"
                topics = ["org.fedoraproject.*.buildsys.build.state.change"]
                key = "msg.owner"
                backlog-delta = "30d"
                "#,
            )?;
            let config =
                Config::load(Some(Path::new("plugins.toml"))).map_err(|e| e.to_string())?;
            let plugin = &config.worker.plugins[0];
            assert_eq!(plugin.kind, StatisticKind::Count);
            assert_eq!(plugin.backlog_delta, Some(Duration::from_secs(30 * 86400)));
            Ok(())
        });
    }
}
