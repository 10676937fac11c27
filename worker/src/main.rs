//! The `statscache-worker` binary: see the library for what it does.

use anyhow::Context;
use clap::{Parser, Subcommand};
use statscache_shared::config::ConfigArgs;
use statscache_shared::time::parse_time;
use statscache_shared::{schema, shutdown, telemetry};
use statscache_worker::rollup::Subject;

#[derive(Parser)]
#[command(version, about = "statscache worker: JetStream → plugins → ClickHouse")]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
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
    /// Re-run plugins over a range of the stream (safe: statistics never count a message twice).
    Replay {
        /// Plugin identifier (repeatable; see `plugins`).
        #[arg(long = "plugin", required = true)]
        plugins: Vec<String>,
        /// Start at this stream sequence.
        #[arg(long, conflicts_with = "since")]
        from_sequence: Option<u64>,
        /// Start with messages that reached the stream at or after this time (with
        /// `--from-archive`: whose event time is at or after it), epoch seconds or ISO 8601
        /// (e.g. 2026-11-01T00:00:00Z).
        #[arg(long, value_parser = parse_time)]
        since: Option<f64>,
        /// Replay the stored messages (ClickHouse's `messages`, in time order) instead of the
        /// stream: for history older than the stream's retention.
        #[arg(long, conflicts_with = "from_sequence")]
        from_archive: bool,
        /// Drop the plugins' facts and rollups first, to rebuild a statistic whose logic changed.
        #[arg(long)]
        rebuild: bool,
    },
    /// Write N synthetic Fedora-shaped messages straight into the tables, for benchmarks,
    /// then rebuild the rollups of the generated months from their facts.
    Generate {
        /// How many messages.
        #[arg(long)]
        messages: u64,
        /// Over how many days, ending at `--end` (default: 70 000 messages a day).
        #[arg(long)]
        days: Option<f64>,
        /// The newest message's time (epoch seconds or ISO 8601; default now).
        #[arg(long, value_parser = parse_time)]
        end: Option<f64>,
        /// Seed of the deterministic random draws.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Envelopes (JSON lines) used as templates.
        #[arg(long, default_value = "tests/fixtures/fedmsg-real.jsonl")]
        templates: std::path::PathBuf,
    },
    /// Store all of datanommer's history, from its PostgreSQL or from a dump of it, in time
    /// order (resumable by name; safe while workers run: a message also in the stream counts once).
    Bootstrap {
        /// A datanommer database (libpq URL: postgresql://user:password@host/datanommer).
        #[arg(long, conflicts_with = "dump", required_unless_present = "dump")]
        postgres: Option<String>,
        /// A pg_dump custom-format archive of one (read with pg_restore, no server needed).
        #[arg(long)]
        dump: Option<std::path::PathBuf>,
        /// Where a dump's rows are sorted (temporary files about the size of its messages).
        #[arg(long, default_value = ".", requires = "dump")]
        scratch: std::path::PathBuf,
        /// The name the progress is recorded under: run again with it to resume.
        #[arg(long, default_value = "datanommer")]
        name: String,
        /// Rows per batch.
        #[arg(long, default_value_t = 10_000)]
        batch_size: usize,
    },
    /// Rebuild the rollups from the facts (`--rebuild`), or compare them (`--check`: prints
    /// every difference, exits 1 if there is any).
    Rollup {
        /// Recompute every rollup level and the key counts from the facts (safe while workers run).
        #[arg(long, conflicts_with = "check", required_unless_present = "check")]
        rebuild: bool,
        /// Compare every rollup level and the key counts with the facts.
        #[arg(long)]
        check: bool,
        /// Plugin identifier (repeatable); all plugins if none is given.
        #[arg(long = "plugin")]
        plugins: Vec<String>,
        /// Event times from the start of this time's month (epoch seconds or ISO 8601).
        #[arg(long, value_parser = parse_time)]
        since: Option<f64>,
        /// Event times up to the end of this time's month (`--check` only).
        #[arg(long, value_parser = parse_time, requires = "check")]
        until: Option<f64>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.config.load()?;
    let _telemetry = telemetry::init("statscache-worker", &config.telemetry)?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let shutdown = shutdown::on_signals(config.service.shutdown_timeout);
            statscache_worker::run(config, shutdown)
                .await
                .context("worker failed")?;
        }
        Command::Migrate => {
            schema::migrate(&config.clickhouse)
                .await
                .context("migration failed")?;
        }
        Command::Replay {
            plugins,
            from_sequence,
            since,
            from_archive,
            rebuild,
        } => {
            let start = match (from_archive, from_sequence, since) {
                (true, _, since) => statscache_worker::ReplayStart::Archive(since.unwrap_or(0.0)),
                (false, Some(sequence), _) => statscache_worker::ReplayStart::Sequence(sequence),
                (false, None, Some(seconds)) => {
                    statscache_worker::ReplayStart::ArrivedSince(seconds)
                }
                (false, None, None) => statscache_worker::ReplayStart::Sequence(1),
            };
            let request = statscache_worker::ReplayRequest {
                plugins,
                start,
                rebuild,
            };
            let shutdown = shutdown::on_signals(config.service.shutdown_timeout);
            let stored = statscache_worker::replay(config, shutdown, request)
                .await
                .context("replay failed")?;
            eprintln!("replayed {stored} messages");
        }
        Command::Bootstrap {
            postgres,
            dump,
            scratch,
            name,
            batch_size,
        } => {
            let source = match (postgres, dump) {
                (Some(url), _) => statscache_worker::bootstrap::Source::Postgres(url),
                (None, Some(archive)) => {
                    statscache_worker::bootstrap::Source::Dump { archive, scratch }
                }
                (None, None) => anyhow::bail!("--postgres or --dump is needed"),
            };
            let request = statscache_worker::bootstrap::BootstrapRequest {
                source,
                batch_size: batch_size.max(1),
                name,
            };
            let shutdown = shutdown::on_signals(config.service.shutdown_timeout);
            let report = statscache_worker::bootstrap::bootstrap(config, shutdown, request)
                .await
                .context("bootstrap failed")?;
            eprintln!(
                "bootstrap {}: {} rows read, {} not messages (dead-lettered)",
                if report.finished {
                    "finished"
                } else {
                    "stopped"
                },
                report.read,
                report.rejected
            );
        }
        Command::Generate {
            messages,
            days,
            end,
            seed,
            templates,
        } => {
            let default_days =
                messages as f64 / statscache_worker::generate::MESSAGES_PER_DAY as f64;
            let request = statscache_worker::generate::GenerateRequest {
                messages,
                days: days.unwrap_or(default_days),
                end: end.unwrap_or_else(|| chrono::Utc::now().timestamp() as f64),
                seed,
            };
            let written = statscache_worker::generate::generate(&config, &templates, request)
                .await
                .context("generation failed")?;
            eprintln!("generated {written} messages");
        }
        Command::Rollup {
            rebuild,
            check: _,
            plugins,
            since,
            until,
        } => {
            let request = statscache_worker::RollupRequest {
                plugins,
                since,
                until,
            };
            if rebuild {
                let months = statscache_worker::rollup_rebuild(&config, &request)
                    .await
                    .context("rollup rebuild failed")?;
                eprintln!("rebuilt {months} plugin-months of rollups");
                return Ok(());
            }
            let differences = statscache_worker::rollup_check(&config, &request)
                .await
                .context("rollup check failed")?;
            for found in &differences {
                let difference = &found.difference;
                let (key, derived) = match difference.subject {
                    Subject::Rollup => (difference.key.as_str(), "rollup"),
                    Subject::KeyCount => ("(number of keys)", "key_counts"),
                };
                println!(
                    "{}\t{}\t{}\t{}\tfacts={}\t{derived}={}",
                    found.plugin,
                    difference.level.name(),
                    difference.period,
                    key,
                    difference.facts.as_deref().unwrap_or("-"),
                    difference.rollup.as_deref().unwrap_or("-"),
                );
            }
            if !differences.is_empty() {
                eprintln!(
                    "{} differences between rollups and facts",
                    differences.len()
                );
                std::process::exit(1);
            }
            eprintln!("rollups agree with the facts");
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
