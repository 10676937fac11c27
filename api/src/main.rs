//! The `statscache-api` binary: see the library for what it does.

use anyhow::Context;
use clap::{Parser, Subcommand};
use statscache_shared::config::ConfigArgs;
use statscache_shared::{shutdown, telemetry};

#[derive(Parser)]
#[command(version, about = "statscache api: statistics and history over HTTP")]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
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
    let config = cli.config.load()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let _telemetry = telemetry::init("statscache-api", &config.telemetry)?;
            let shutdown = shutdown::on_signals(config.service.shutdown_timeout);
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
