//! The `statscache-api` binary: see the library for what it does.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use statscache_shared::config::Config;
use statscache_shared::{shutdown, telemetry};

#[derive(Parser)]
#[command(version, about = "statscache api: statistics and history over HTTP")]
struct Cli {
    /// TOML configuration file (defaults, then this file, then STATSCACHE_* variables).
    #[arg(long, env = "STATSCACHE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Print the OpenAPI document (JSON) and exit.
    Openapi,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let _telemetry = telemetry::init("statscache-api", &config.telemetry)?;
            let shutdown = shutdown::on_signals();
            statscache_api::run(config, shutdown)
                .await
                .context("api failed")?;
        }
        Command::Openapi => {
            let clickhouse = statscache_shared::schema::client(&config.clickhouse);
            let state = statscache_api::AppState {
                config: std::sync::Arc::new(config),
                clickhouse,
            };
            println!("{}", statscache_api::openapi(state).spec());
        }
    }
    Ok(())
}
