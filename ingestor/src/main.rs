//! The `statscache-ingestor` binary: see the library for what it does.

use anyhow::Context;
use clap::{Parser, Subcommand};
use statscache_ingestor::sources::datagrepper::{Filters, Progress, Window};
use statscache_ingestor::BackfillRequest;
use statscache_shared::config::ConfigArgs;
use statscache_shared::progress::Progress as ProgressBar;
use statscache_shared::time::parse_time;
use statscache_shared::{shutdown, telemetry};
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    version,
    about = "statscache ingestor: fedmsg (ZeroMQ) and datagrepper history → NATS JetStream"
)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Relay the configured sources into JetStream (the default).
    Run,
    /// Fetch a time range from datagrepper ([ingestor.datagrepper] url) into JetStream, then
    /// exit: 0 when every window is stored, 1 if any failed (they are named).
    ///
    /// Windows recorded complete by an earlier backfill are skipped, so a backfill that failed
    /// or was stopped is resumed by running it again. Messages already in the stream are not
    /// stored twice.
    Backfill {
        /// Start of the range (included): epoch seconds or ISO 8601, e.g. 2019-08-06T00:00:00Z.
        #[arg(long, value_parser = parse_time)]
        start: f64,
        /// End of the range (included): epoch seconds or ISO 8601.
        #[arg(long, value_parser = parse_time)]
        end: f64,
        /// Only this topic (repeatable); with --topic or --category, the configured filters
        /// are replaced.
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Only this category (repeatable).
        #[arg(long = "category")]
        categories: Vec<String>,
        /// Fetch windows recorded complete as well.
        #[arg(long)]
        refetch: bool,
    },
    /// Publish messages through the relay, as fedmsg-logger did: one new envelope for --topic
    /// and --msg, or the envelopes of a JSON Lines file (--file, `-` for stdin).
    Publish {
        /// Topic of the new message, e.g. org.fedoraproject.dev.logger.log.
        #[arg(long, requires = "msg", conflicts_with = "file")]
        topic: Option<String>,
        /// Body of the new message (JSON).
        #[arg(long)]
        msg: Option<String>,
        /// Envelopes to publish as they are, one JSON object per line.
        #[arg(long)]
        file: Option<String>,
    },
    /// Print messages as they reach the stream, as fedmsg-tail did.
    Tail {
        /// Only topics matching this pattern (`*` one token, `>` the rest).
        #[arg(long)]
        topic: Option<String>,
        /// Start this many messages back (default: only new messages).
        #[arg(long, default_value_t = 0)]
        last: u64,
    },
}

/// The envelopes `publish` was asked to send.
fn envelopes_to_publish(
    topic: Option<String>,
    msg: Option<String>,
    file: Option<String>,
) -> anyhow::Result<Vec<bytes::Bytes>> {
    if let (Some(topic), Some(msg)) = (topic, msg) {
        let body: serde_json::Value = serde_json::from_str(&msg).context("--msg is not JSON")?;
        return Ok(vec![statscache_ingestor::publish::new_envelope(
            &topic, body,
        )]);
    }
    let Some(path) = file else {
        anyhow::bail!("give --topic and --msg, or --file");
    };
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
    } else {
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?
    };
    let mut bodies = Vec::new();
    for line in text.lines() {
        if !line.trim().is_empty() {
            bodies.push(bytes::Bytes::from(line.to_string()));
        }
    }
    Ok(bodies)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.config.load()?;
    let command = cli.command.unwrap_or(Command::Run);
    let _telemetry = telemetry::init("statscache-ingestor", &config.telemetry)?;
    match command {
        Command::Publish { topic, msg, file } => {
            let bodies = envelopes_to_publish(topic, msg, file)?;
            let report = statscache_ingestor::publish::publish(config, bodies).await?;
            eprintln!(
                "{} relayed, {} already in the stream, {} rejected (see the dead-letter stream)",
                report.relayed, report.duplicates, report.rejected
            );
            if report.rejected > 0 {
                std::process::exit(1);
            }
        }
        Command::Tail { topic, last } => {
            let request = statscache_ingestor::tail::TailRequest {
                topic_pattern: topic,
                last,
            };
            let shutdown = shutdown::on_signals(config.service.shutdown_timeout);
            statscache_ingestor::tail::tail(config, request, shutdown).await?;
        }
        Command::Run => {
            let abandoned = shutdown::Abandoned::default();
            let shutdown =
                shutdown::on_signals_reporting(config.service.shutdown_timeout, abandoned.clone());
            statscache_ingestor::run(config, shutdown, abandoned)
                .await
                .context("ingestor failed")?;
        }
        Command::Backfill {
            start,
            end,
            topics,
            categories,
            refetch,
        } => {
            if end <= start {
                anyhow::bail!("--end must be after --start");
            }
            let filters = if topics.is_empty() && categories.is_empty() {
                None
            } else {
                Some(Filters { topics, categories })
            };
            let request = BackfillRequest {
                range: Window::covering(start, end),
                filters,
                refetch,
            };
            let shutdown = shutdown::on_signals(config.service.shutdown_timeout);
            let (progress, progress_updates) = watch::channel(Progress::default());
            let printer = tokio::spawn(print_progress(progress_updates));
            let outcome = statscache_ingestor::backfill(config, request, progress, shutdown).await;
            // The sender is gone with the backfill: the printer prints the last state and ends.
            let _ = printer.await;
            let report = outcome.context("backfill failed")?;
            eprintln!(
                "backfill complete: {}/{} windows ({} fetched, {} already complete), {} messages relayed ({} new to the stream), {} failed requests retried",
                report.finished(), report.windows, report.complete, report.skipped, report.messages, report.new_messages, report.failed_requests
            );
        }
    }
    Ok(())
}

/// Shows the backfill's progress whenever a window finishes: a bar on a terminal, log lines
/// otherwise. The number of windows is known once the backfill has planned them.
async fn print_progress(mut updates: watch::Receiver<Progress>) {
    let mut bar: Option<ProgressBar> = None;
    while updates.changed().await.is_ok() {
        let progress = updates.borrow_and_update().clone();
        if progress.windows == 0 {
            continue;
        }
        let bar = bar.get_or_insert_with(|| {
            ProgressBar::new("backfilling", "windows", progress.windows as u64)
        });
        bar.advance_to(progress.finished() as u64, &progress_detail(&progress));
    }
    if let Some(bar) = bar {
        bar.finish();
    }
}

fn progress_detail(progress: &Progress) -> String {
    format!(
        "{} failed, {} messages ({} new to the stream), {} requests retried",
        progress.failed, progress.messages, progress.new_messages, progress.failed_requests
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_progress_detail_counts_what_a_person_watches() {
        let progress = Progress {
            windows: 4,
            complete: 1,
            skipped: 1,
            failed: 0,
            messages: 120,
            new_messages: 100,
            failed_requests: 3,
        };
        assert_eq!(
            progress_detail(&progress),
            "0 failed, 120 messages (100 new to the stream), 3 requests retried"
        );
    }
}
