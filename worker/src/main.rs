//! The `statscache-worker` binary: see the library for what it does.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use statscache_shared::config::Config;
use statscache_shared::{schema, shutdown, telemetry};

#[derive(Parser)]
#[command(version, about = "statscache worker: JetStream → plugins → ClickHouse")]
struct Cli {
    /// TOML configuration file (defaults, then this file, then STATSCACHE_* variables).
    #[arg(long, env = "STATSCACHE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume the stream and keep the statistics (the default).
    Run,
    /// Create or migrate the ClickHouse schema and exit.
    Migrate,
    /// List the plugins this configuration runs.
    Plugins,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref())?;
    let _telemetry = telemetry::init("statscache-worker", &config.telemetry)?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let shutdown = shutdown::on_signals();
            statscache_worker::run(config, shutdown)
                .await
                .context("worker failed")?;
        }
        Command::Migrate => {
            schema::migrate(&config.clickhouse)
                .await
                .context("migration failed")?;
        }
        Command::Plugins => {
            for plugin in statscache_worker::plugins::load(&config.worker)? {
                let info = plugin.info();
                println!(
                    "{}\t{}\t{}\t{}",
                    info.identifier,
                    info.kind.as_str(),
                    info.table,
                    info.description
                );
            }
        }
    }
    Ok(())
}
