//! A JetStream cluster of real nats-servers on loopback, for the tests that lose nodes.
//!
//! Production runs NATS as a 3-node JetStream cluster (the NATS Helm chart's default), where a
//! stream with 3 replicas has a leader that can die. Each node here has its own client, route
//! and monitoring ports and its own store directory, all kept across [`NatsCluster::kill`] and
//! [`NatsCluster::restart`], so a restarted node rejoins as the same peer and catches up.
//! Clustering needs a current nats-server ([`nats_server_binary`]): JetStream clustering changed
//! much since Debian's 2.9.10.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::stream::ClusterInfo;
use tempfile::TempDir;

use crate::{free_port, nats_server_binary, wait_for, Guarded};

/// The cluster's name in every node's `cluster` block.
const CLUSTER_NAME: &str = "statscache-test";

pub struct NatsCluster {
    pub nodes: Vec<ClusterNode>,
    binary: PathBuf,
}

/// One nats-server of the cluster; `process` is `None` while it is killed.
pub struct ClusterNode {
    /// The JetStream server name (what stream info calls the leader).
    pub name: String,
    pub url: String,
    port: u16,
    route_port: u16,
    monitor_port: u16,
    process: Option<Guarded>,
    data: TempDir,
}

impl NatsCluster {
    /// `size` nodes routed to each other; returns once JetStream answers on every node (a
    /// meta leader is elected).
    pub async fn start(size: usize) -> NatsCluster {
        let binary = nats_server_binary();
        let mut nodes = Vec::new();
        for index in 0..size {
            let port = free_port();
            nodes.push(ClusterNode {
                name: format!("n{}", index + 1),
                url: format!("nats://127.0.0.1:{port}"),
                port,
                route_port: free_port(),
                monitor_port: free_port(),
                process: None,
                data: TempDir::new().expect("nats node data dir"),
            });
        }
        let mut cluster = NatsCluster { nodes, binary };
        for index in 0..size {
            cluster.spawn(index);
        }
        for index in 0..size {
            cluster.wait_until_serving(index).await;
        }
        cluster
    }

    /// Every client URL, comma-separated: what `nats.url` is given.
    pub fn urls(&self) -> String {
        let urls: Vec<&str> = self.nodes.iter().map(|node| node.url.as_str()).collect();
        urls.join(",")
    }

    /// A JetStream context on a client given every node (it fails over as services do).
    pub async fn jetstream(&self) -> jetstream::Context {
        let urls: Vec<&str> = self.nodes.iter().map(|node| node.url.as_str()).collect();
        let client = async_nats::connect(urls)
            .await
            .expect("connect to the cluster");
        jetstream::new(client)
    }

    fn spawn(&mut self, index: usize) {
        let routes: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("nats://127.0.0.1:{}", node.route_port))
            .collect();
        let node = &mut self.nodes[index];
        let child = Command::new(&self.binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &node.port.to_string()])
            .args(["-n", &node.name, "--cluster_name", CLUSTER_NAME])
            .args([
                "--cluster",
                &format!("nats://127.0.0.1:{}", node.route_port),
            ])
            .args(["--routes", &routes.join(",")])
            .args(["-m", &node.monitor_port.to_string()])
            .arg("-sd")
            .arg(node.data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.binary.display()));
        node.process = Some(Guarded(child));
    }

    /// Waits until node `index` accepts clients and its JetStream answers.
    async fn wait_until_serving(&self, index: usize) {
        let url = self.nodes[index].url.clone();
        wait_for(
            "a cluster node to serve JetStream",
            Duration::from_secs(60),
            || {
                let url = url.clone();
                async move {
                    let client = async_nats::connect(url).await.ok()?;
                    jetstream::new(client)
                        .query_account()
                        .await
                        .ok()
                        .map(|_| ())
                }
            },
        )
        .await;
    }

    /// SIGKILL of node `index`, as a crash; its store and ports are kept.
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].process = None;
    }

    /// Starts killed node `index` again on its ports and store, and waits until it serves.
    pub async fn restart(&mut self, index: usize) {
        self.spawn(index);
        self.wait_until_serving(index).await;
    }

    /// The index of the node leading `stream` now.
    pub async fn stream_leader(&self, stream: &str) -> usize {
        let jetstream = self.jetstream().await;
        wait_for(
            "the stream to have a leader",
            Duration::from_secs(60),
            || {
                let jetstream = jetstream.clone();
                async move {
                    let leader = cluster_info(&jetstream, stream).await?.leader?;
                    self.nodes.iter().position(|node| node.name == leader)
                }
            },
        )
        .await
    }

    /// Waits until every replica of `stream` is current with its leader (a restarted node has
    /// caught up).
    pub async fn wait_for_replicas_current(&self, stream: &str) {
        let jetstream = self.jetstream().await;
        let replicas = self.nodes.len() - 1;
        wait_for(
            "every stream replica to be current",
            Duration::from_secs(90),
            || {
                let jetstream = jetstream.clone();
                async move {
                    let peers = cluster_info(&jetstream, stream).await?.replicas;
                    let current = peers
                        .iter()
                        .filter(|peer| peer.current && !peer.offline && peer.lag.unwrap_or(0) == 0)
                        .count();
                    (current == replicas).then_some(())
                }
            },
        )
        .await;
    }

    /// The index of the node a client named `client_name` is connected to (from each node's
    /// `/connz` monitoring page), once one is.
    pub async fn node_of_client(&self, client_name: &str) -> usize {
        wait_for(
            &format!("{client_name} to be connected"),
            Duration::from_secs(60),
            || async {
                for (index, node) in self.nodes.iter().enumerate() {
                    if node.process.is_none() {
                        continue;
                    }
                    let url = format!("http://127.0.0.1:{}/connz?limit=1024", node.monitor_port);
                    let Some(page) = crate::get_json(&url).await else {
                        continue;
                    };
                    let connections = page["connections"].as_array().cloned().unwrap_or_default();
                    if connections.iter().any(|c| c["name"] == client_name) {
                        return Some(index);
                    }
                }
                None
            },
        )
        .await
    }
}

/// The leader and replicas of `stream`, if it exists and has a leader to answer.
async fn cluster_info(jetstream: &jetstream::Context, stream: &str) -> Option<ClusterInfo> {
    let mut stream = jetstream.get_stream(stream).await.ok()?;
    let info = stream.info().await.ok()?;
    info.cluster.clone()
}
