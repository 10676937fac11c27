//! A real RabbitMQ (Debian's `rabbitmq-server`) per test: its own Erlang node name, AMQP,
//! distribution and epmd ports on loopback, and a throwaway data directory, so tests never meet
//! another broker. It can be stopped and started again on the same ports and data, to test a
//! broker restart.

use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{ensure_installed, free_port, wait_for};

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

pub struct RabbitMq {
    /// `amqp://guest:guest@127.0.0.1:<port>/%2F`.
    pub url: String,
    pub port: u16,
    epmd_port: u16,
    process: Option<std::process::Child>,
    data: TempDir,
}

impl RabbitMq {
    pub async fn start() -> RabbitMq {
        ensure_installed();
        let data = TempDir::new().expect("rabbitmq data dir");
        let port = free_port();
        let config = format!("listeners.tcp.1 = 127.0.0.1:{port}\nloopback_users = none\n");
        std::fs::write(data.path().join("rabbitmq.conf"), config).expect("rabbitmq.conf");
        std::fs::write(data.path().join("enabled_plugins"), "[].\n").expect("enabled_plugins");
        let mut broker = RabbitMq {
            url: format!("amqp://guest:guest@127.0.0.1:{port}/%2F"),
            port,
            epmd_port: free_port(),
            process: None,
            data,
        };
        broker.launch().await;
        broker
    }

    /// Starts the node (again) and waits until it accepts AMQP connections.
    async fn launch(&mut self) {
        let node = format!("statscache-{}@localhost", self.port);
        let data = self.data.path();
        let mut command = Command::new(SERVER);
        command
            .env("HOME", data)
            .env("RABBITMQ_NODENAME", &node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", free_port().to_string())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_CONFIG_FILE", data.join("rabbitmq"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                data.join("enabled_plugins"),
            )
            .env("RABBITMQ_MNESIA_BASE", data.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", data.join("log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group: the script, the Erlang VM and its helpers are killed together.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        self.process = Some(command.spawn().expect("start rabbitmq-server"));
        let address = format!("127.0.0.1:{}", self.port);
        wait_for(
            "rabbitmq-server to accept connections",
            Duration::from_secs(120),
            || {
                let address = address.clone();
                async move {
                    tokio::net::TcpStream::connect(address)
                        .await
                        .ok()
                        .map(|_| ())
                }
            },
        )
        .await;
    }

    /// Stops the broker as an operator would (SIGTERM: `rabbitmqctl stop`), keeping its data:
    /// durable queues and persistent messages survive.
    pub async fn stop(&mut self) {
        let Some(mut process) = self.process.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &process.id().to_string()])
            .status();
        wait_for("rabbitmq-server to stop", Duration::from_secs(120), || {
            let exited = process.try_wait().ok().flatten();
            async move { exited.map(|_| ()) }
        })
        .await;
        kill_group(process.id());
    }

    /// Stops the broker and starts it again on the same ports and data.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }

    /// Starts a stopped broker again on the same ports and data.
    pub async fn start_again(&mut self) {
        self.launch().await;
    }
}

/// Kills what is left of a process group (the VM outlives its script when the script is killed).
fn kill_group(leader: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{leader}")])
        .stderr(Stdio::null())
        .status();
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            kill_group(process.id());
            let _ = process.wait();
        }
        // The Erlang VM started its own port mapper daemon on this test's port: stop it too,
        // once the killed VM is gone from its table (it refuses while a node is registered).
        for _ in 0..50 {
            let stopped = Command::new("epmd")
                .args(["-port", &self.epmd_port.to_string(), "-kill"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if stopped {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
