//! The `statscache-ingestor` binary: see the library for what it does.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use statscache_shared::config::Config;
use statscache_shared::{shutdown, telemetry};

#[derive(Parser)]
#[command(
    version,
    about = "statscache ingestor: fedmsg (ZeroMQ) → NATS JetStream"
)]
struct Cli {
    /// TOML configuration file (defaults, then this file, then STATSCACHE_* variables).
    #[arg(long, env = "STATSCACHE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Relay the configured sources into JetStream (the default).
    Run,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref())?;
    let _telemetry = telemetry::init("statscache-ingestor", &config.telemetry)?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let shutdown = shutdown::on_signals();
            statscache_ingestor::run(config, shutdown)
                .await
                .context("ingestor failed")?;
        }
    }
    Ok(())
}
