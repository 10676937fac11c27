//! Replicated ClickHouse on loopback: a ZooKeeper and clickhouse-servers that are replicas of
//! one shard of a cluster, for the tests that lose a replica.
//!
//! ClickHouse 18.16 (Debian's) has no built-in Keeper, so replication is coordinated by
//! Debian's `zookeeper` package, run here as a standalone server on its own port and data.
//! Each replica is a [`ClickHouseServer`] (killable and restartable on its ports and data)
//! whose config says its replica name, the cluster's replicas and the ZooKeeper
//! (`deploy/local/clickhouse-config.sh --replica`).

use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{ensure_installed, free_port, wait_for, ClickHouseServer, Guarded};

/// Debian's ZooKeeper jar and its configuration directory (log4j settings).
const ZOOKEEPER_CLASSPATH: &str = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar";

/// A standalone ZooKeeper, stopped when dropped.
pub struct ZooKeeper {
    pub port: u16,
    _process: Guarded,
    _data: TempDir,
}

impl ZooKeeper {
    pub async fn start() -> ZooKeeper {
        ensure_installed();
        let data = TempDir::new().expect("zookeeper data dir");
        let port = free_port();
        let child = Command::new("java")
            .args(["-cp", ZOOKEEPER_CLASSPATH])
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(port.to_string())
            .arg(data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start zookeeper (java)");
        let zookeeper = ZooKeeper {
            port,
            _process: Guarded(child),
            _data: data,
        };
        // Serving, not merely listening: a ClickHouse 18.16 replica whose first ZooKeeper
        // sessions fail can crash (a segfault in its DDL worker; it also happens with ZooKeeper
        // serving, see `wait_for_ddl_workers`), and Java binds the port before it serves, long
        // before on a loaded machine.
        wait_for(
            "zookeeper to serve requests",
            Duration::from_secs(120),
            || async move { serving(port).await.then_some(()) },
        )
        .await;
        zookeeper
    }
}

/// Whether the ZooKeeper on `port` serves requests: its `srvr` command (allowed by default in
/// every release) names its mode only then.
async fn serving(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut connection) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if connection.write_all(b"srvr").await.is_err() {
        return false;
    }
    let mut answer = String::new();
    let read = connection.read_to_string(&mut answer);
    match tokio::time::timeout(Duration::from_secs(5), read).await {
        Ok(Ok(_)) => answer.contains("Mode:"),
        _ => false,
    }
}

/// Replicas of one shard of cluster [`ClickHouseReplicas::CLUSTER`].
pub struct ClickHouseReplicas {
    pub replicas: Vec<ClickHouseServer>,
}

impl ClickHouseReplicas {
    /// The cluster name the replicas' `remote_servers` define (`clickhouse.cluster`).
    pub const CLUSTER: &'static str = "statscache";

    /// `count` replicas using `zookeeper`, started at once.
    pub async fn start(zookeeper: &ZooKeeper, count: usize) -> ClickHouseReplicas {
        let ports: Vec<(u16, u16, u16)> = (0..count)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let tcp_ports: Vec<String> = ports.iter().map(|(_, tcp, _)| tcp.to_string()).collect();
        let tcp_ports = tcp_ports.join(",");
        let zookeeper_port = zookeeper.port.to_string();
        let mut starting = Vec::new();
        for (index, (http, tcp, interserver)) in ports.into_iter().enumerate() {
            let name = format!("r{}", index + 1);
            let interserver = interserver.to_string();
            let tcp_ports = tcp_ports.clone();
            let zookeeper_port = zookeeper_port.clone();
            starting.push(async move {
                let options = [
                    "--replica",
                    name.as_str(),
                    Self::CLUSTER,
                    zookeeper_port.as_str(),
                    interserver.as_str(),
                    tcp_ports.as_str(),
                ];
                ClickHouseServer::start_on(http, tcp, &options).await
            });
        }
        let mut cluster = ClickHouseReplicas {
            replicas: futures::future::join_all(starting).await,
        };
        cluster.wait_for_ddl_workers().await;
        cluster
    }

    /// Waits until every replica runs distributed DDL (a no-op `ON CLUSTER` query), starting
    /// again, up to [`STARTS_PER_REPLICA`] times, the replicas that crashed at start.
    ///
    /// 18.16 can segfault in its DDL worker's first ZooKeeper call (`zkutil::ZooKeeper::
    /// createImpl`, NULL pointer) just after it starts, even with ZooKeeper serving; the server
    /// goes on answering queries but never runs an `ON CLUSTER` query again, so the workers'
    /// migrations would hang until `distributed_ddl_task_timeout`.
    async fn wait_for_ddl_workers(&mut self) {
        for _start in 1..STARTS_PER_REPLICA {
            // The query waits for every replica: a crashed one is seen in its log sooner.
            tokio::select! {
                result = self.run_on_cluster_noop() => match result {
                    Ok(()) => return,
                    Err(error) => eprintln!("a no-op ON CLUSTER query failed: {error}"),
                },
                () = self.until_a_replica_crashed() => {}
            }
            let mut restarted = false;
            for (index, replica) in self.replicas.iter_mut().enumerate() {
                if replica.crashed_since_start() {
                    eprintln!("replica {} crashed at start; starting it again", index + 1);
                    replica.restart().await;
                    restarted = true;
                }
            }
            if !restarted {
                panic!(
                    "the replicas do not run distributed DDL, and none crashed:\n{}",
                    self.log_tails()
                );
            }
        }
        if let Err(error) = self.run_on_cluster_noop().await {
            panic!(
                "the replicas do not run distributed DDL after {STARTS_PER_REPLICA} starts \
                 ({error}):\n{}",
                self.log_tails()
            );
        }
    }

    /// Returns once a replica has logged a crash since it started.
    async fn until_a_replica_crashed(&self) {
        while !self
            .replicas
            .iter()
            .any(ClickHouseServer::crashed_since_start)
        {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `CREATE DATABASE IF NOT EXISTS default ON CLUSTER`: every replica's DDL worker must run
    /// it (the database exists, so it changes nothing); bounded by a short DDL timeout.
    async fn run_on_cluster_noop(&self) -> Result<(), String> {
        let url = format!(
            "{}/?distributed_ddl_task_timeout={}&wait_end_of_query=1",
            self.replicas[0].url,
            DDL_PROBE_TIMEOUT.as_secs()
        );
        let sql = format!(
            "CREATE DATABASE IF NOT EXISTS default ON CLUSTER {}",
            Self::CLUSTER
        );
        let response = reqwest::Client::new()
            .post(url)
            .body(sql)
            .timeout(DDL_PROBE_TIMEOUT * 2)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.text().await.map_err(|e| e.to_string())?;
        if status.is_success() && !body.contains("Exception") {
            return Ok(());
        }
        Err(format!("{status}: {}", body.trim()))
    }

    /// The end of every replica's log, for failure messages.
    fn log_tails(&self) -> String {
        let tails: Vec<String> = self
            .replicas
            .iter()
            .map(ClickHouseServer::log_tail)
            .collect();
        tails.join("\n")
    }
}

/// How many times a replica is started before a crash at start fails the test.
const STARTS_PER_REPLICA: usize = 3;

/// How long every replica's DDL worker gets to run the no-op `ON CLUSTER` query.
const DDL_PROBE_TIMEOUT: Duration = Duration::from_secs(60);
