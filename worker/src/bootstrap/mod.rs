//! `statscache-worker bootstrap`: all of datanommer's history into a deployment, from its
//! PostgreSQL ([`postgres`]) or from a dump of it without any server ([`dump`]).
//!
//! Why not through the stream: Fedora's history is ~200 M messages, which would sit in the
//! stream's retention for a year, and pass one by one through NATS and the workers' batches.
//! Instead the bootstrap reads datanommer in time order and hands large, time-ordered batches
//! straight to the workers' write path ([`Writer`]): the same validation ([`row`]), identities,
//! copies, plugins, rollups and key counts as any message; a batch spanning hours of history
//! touches few rollup periods.
//!
//! Safe while the workers run: a batch looks its identities up and stores them in its turn
//! (`identity::turns`), never while a run does, so a message the live stream also carries is
//! counted once, as whichever copy was stored first. Copies datanommer itself holds (its unique
//! key is `(msg_id, timestamp)`) are decided in reading order, the first counting.
//!
//! Resumable: after each stored batch the position of its last row is recorded in the
//! `statscache_bootstrap` bucket under the bootstrap's name; a bootstrap started again with
//! that name reads from there. A batch stored but not recorded (killed in between) is read
//! again and changes nothing: its copies are the stored ones, byte for byte.

pub mod dump;
pub mod postgres;
pub mod row;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use statscache_shared::admin::Health;
use statscache_shared::config::Config;
use statscache_shared::nats::{self, open_bucket, Bucket, DeadLetter};
use statscache_shared::period::Level;
use statscache_shared::progress::Progress;
use tokio_util::sync::CancellationToken;

use crate::faults::Faults;
use crate::identity::turns::Turns;
use crate::plugin::Message;
use crate::service::{prepare, process_name};
use crate::tables::rebuild_month;
use crate::writer::{Pending, Prepared, Writer, Written};
use crate::{meta, metrics, plugins, WorkerError};
use dump::Dump;
use postgres::Postgres;
use row::{Position, Row};

/// The bucket recording each bootstrap's position.
pub const PROGRESS_BUCKET: &str = "statscache_bootstrap";

/// How long a failed read or turn waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Where the history comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A datanommer database: a libpq URL.
    Postgres(String),
    /// A `pg_dump` custom-format archive of one, read with `pg_restore`, sorted in `scratch`.
    Dump { archive: PathBuf, scratch: PathBuf },
}

/// What `statscache-worker bootstrap` does.
#[derive(Debug, Clone)]
pub struct BootstrapRequest {
    pub source: Source,
    /// Rows per batch.
    pub batch_size: usize,
    /// The progress record's name: the same name resumes.
    pub name: String,
}

/// What a bootstrap did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BootstrapReport {
    /// Rows read (this run, after the recorded position).
    pub read: u64,
    /// Rows that could not be a message, dead-lettered.
    pub rejected: u64,
    /// Whether it read to the end (rather than being stopped).
    pub finished: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Postgres(#[from] postgres::PostgresError),
    #[error(transparent)]
    Dump(#[from] dump::DumpError),
    #[error("cannot read or record the progress of bootstrap {name}: {detail}")]
    Progress { name: String, detail: String },
    #[error("the bootstrap's name {0:?} must be letters, digits, '-' and '_'")]
    BadName(String),
}

/// The rows, from either source.
enum Reader {
    Postgres(Postgres),
    /// In an `Option` while a blocking read has it.
    Dump(Option<Dump>),
}

impl Reader {
    async fn open(source: &Source) -> Result<Reader, BootstrapError> {
        match source {
            Source::Postgres(url) => Ok(Reader::Postgres(Postgres::connect(url).await?)),
            Source::Dump { archive, scratch } => {
                let (archive, scratch) = (archive.clone(), scratch.clone());
                tracing::info!(archive = %archive.display(), "restoring and sorting the dump's messages");
                let sorted = tokio::task::spawn_blocking(move || Dump::sort(&archive, &scratch))
                    .await
                    .map_err(|error| dump::DumpError::Runs(std::io::Error::other(error)))??;
                Ok(Reader::Dump(Some(sorted)))
            }
        }
    }

    /// Rows after `position`, for the progress bar.
    async fn remaining(&self, position: &Position) -> Result<u64, BootstrapError> {
        match self {
            Reader::Postgres(postgres) => Ok(postgres.count_after(position).await?),
            Reader::Dump(dump) => Ok(dump.as_ref().map_or(0, |dump| dump.rows)),
        }
    }

    async fn rows_after(
        &mut self,
        after: &Position,
        limit: usize,
    ) -> Result<Vec<Row>, BootstrapError> {
        match self {
            Reader::Postgres(postgres) => Ok(postgres.rows_after(after, limit).await?),
            Reader::Dump(slot) => {
                let Some(mut dump) = slot.take() else {
                    return Ok(Vec::new());
                };
                let after = after.clone();
                let (dump, rows) = tokio::task::spawn_blocking(move || {
                    let rows = dump.rows_after(&after, limit);
                    (dump, rows)
                })
                .await
                .map_err(|error| dump::DumpError::Runs(std::io::Error::other(error)))?;
                *slot = Some(dump);
                Ok(rows?)
            }
        }
    }
}

/// Runs a bootstrap to the end of the source, or until `shutdown`.
pub async fn bootstrap(
    config: Config,
    shutdown: CancellationToken,
    request: BootstrapRequest,
) -> Result<BootstrapReport, WorkerError> {
    let valid_name = !request.name.is_empty()
        && request
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid_name {
        return Err(BootstrapError::BadName(request.name.clone()).into());
    }
    let plugins = plugins::load(&config.worker)?;
    let prepared = prepare(&config, &plugins).await?;
    let turns = Turns::open(
        &prepared.jetstream,
        &config.nats,
        &process_name("bootstrap"),
    )
    .await?;
    let progress_store = open_bucket(
        &prepared.jetstream,
        &config.nats,
        Bucket {
            name: PROGRESS_BUCKET,
            description: "statscache-worker bootstrap: the position each bootstrap reached",
            max_age: Duration::ZERO,
        },
    )
    .await?;
    let progress_error = |detail: String| BootstrapError::Progress {
        name: request.name.clone(),
        detail,
    };
    let position = match progress_store.get(&request.name).await {
        Ok(Some(value)) => std::str::from_utf8(&value)
            .ok()
            .and_then(Position::decode)
            .ok_or_else(|| progress_error("the recorded position is unreadable".into()))?,
        Ok(None) => Position::start(),
        Err(error) => return Err(progress_error(error.to_string()).into()),
    };
    if position != Position::start() {
        tracing::info!(name = %request.name, from = %position.encode(), "resuming");
    }

    let registry = prometheus::Registry::new();
    let writer = Writer {
        jetstream: prepared.jetstream.clone(),
        clickhouse: prepared.clickhouse,
        plugins,
        metrics: Arc::new(metrics::Metrics::new(&registry)?),
        health: Health::default(),
        faults: Faults::from_env(),
        config,
    };
    let mut reader = Reader::open(&request.source).await?;
    let remaining = reader.remaining(&position).await?;
    let mut bar = Progress::new("bootstrapping", "messages", remaining);
    let mut report = BootstrapReport::default();
    // Three batches at once: one read and prepared (its plugins run), the one before written
    // in its turn, and behind them the months read past rolled up and the position recorded.
    let size = request.batch_size;
    let mut months = MonthsToRollUp::default();
    let mut current = load(&mut reader, &writer, &position, size, &shutdown).await?;
    let mut written_before: Option<(Vec<u64>, Position, u64)> = None;
    while let Some(batch) = current.take() {
        let finished_months = written_before
            .as_ref()
            .map(|(months, _, _)| months.as_slice());
        let (written, rolled_up, next) = tokio::join!(
            write_in_turn(&turns, &writer, batch.prepared, &shutdown),
            roll_up_months(&writer, finished_months.unwrap_or_default(), false),
            load(&mut reader, &writer, &batch.last, size, &shutdown),
        );
        if let Some((_, last, rows)) = written_before.take() {
            rolled_up?;
            record(&progress_store, &request.name, &last).await?;
            report.read += rows;
            bar.advance_to(report.read, &last.timestamp);
        }
        if written?.is_none() {
            break;
        }
        report.rejected += batch.rejected;
        let finished = months.read_up_to(batch.first_epoch, batch.last_epoch);
        written_before = Some((finished, batch.last, batch.rows));
        current = next?;
    }
    if let Some((finished, last, rows)) = written_before {
        roll_up_months(&writer, &finished, false).await?;
        record(&progress_store, &request.name, &last).await?;
        report.read += rows;
        bar.advance_to(report.read, &last.timestamp);
    }
    // The month being read when the bootstrap stopped, and its year: complete as far as read.
    roll_up_months(&writer, &months.open(), true).await?;
    report.finished = !shutdown.is_cancelled();
    bar.finish();
    Ok(report)
}

/// The months a bootstrap has written facts into and not rolled up yet. A batch's rollups are
/// not recomputed batch by batch (a month would be recomputed at each of its hundreds of
/// batches, a year at each of its thousands): datanommer is read in time order, so once the
/// reading has passed a month, all of its facts are written, and the month is recomputed
/// once, every key of it, from its facts, with its year when the year is passed too. Statistics
/// of the month being read are low until then. A bootstrap resumed after a crash recomputes
/// the months it reads past from all of their facts, those written before the crash included.
#[derive(Debug, Default)]
struct MonthsToRollUp {
    /// The first month with facts not rolled up, if any.
    first: Option<u64>,
}

impl MonthsToRollUp {
    /// Facts of `[first_epoch, last_epoch]` written: returns the months now read past (month
    /// starts, ascending), which are then taken as rolled up.
    fn read_up_to(&mut self, first_epoch: f64, last_epoch: f64) -> Vec<u64> {
        let reading = Level::Month.start(last_epoch.max(0.0) as u64);
        let first = *self
            .first
            .get_or_insert(Level::Month.start(first_epoch.max(0.0) as u64));
        let mut finished = Vec::new();
        let mut month = first;
        while month < reading {
            finished.push(month);
            month = Level::Month.next(month);
        }
        self.first = Some(reading);
        finished
    }

    /// The month being read, if any.
    fn open(&self) -> Vec<u64> {
        self.first.into_iter().collect()
    }
}

/// Rolls `months` (month starts, ascending) of every plugin up from their facts; each year is
/// recomputed from its months after its last month here, or after the last one if `last_year`.
async fn roll_up_months(
    writer: &Writer,
    months: &[u64],
    last_year: bool,
) -> Result<(), WorkerError> {
    for (index, month) in months.iter().enumerate() {
        let year_passed = match months.get(index + 1) {
            Some(next) => Level::Year.start(*next) != Level::Year.start(*month),
            None => {
                last_year
                    || Level::Year.start(Level::Month.next(*month)) != Level::Year.start(*month)
            }
        };
        let mut rebuilds = Vec::with_capacity(writer.plugins.len());
        for plugin in &writer.plugins {
            rebuilds.push(rebuild_month(
                &writer.clickhouse,
                plugin.info(),
                *month,
                year_passed,
            ));
        }
        futures::future::try_join_all(rebuilds).await?;
    }
    Ok(())
}

/// A batch read and prepared.
struct Loaded {
    prepared: Vec<Prepared>,
    /// Its last row's position.
    last: Position,
    /// Its first and last rows' times, epoch seconds.
    first_epoch: f64,
    last_epoch: f64,
    /// Rows read, messages or not.
    rows: u64,
    /// Rows that were not messages (dead-lettered).
    rejected: u64,
}

/// The next batch after `after`, read (again until datanommer answers), its rows made messages
/// and prepared; `None` at the end, or once shutdown came.
async fn load(
    reader: &mut Reader,
    writer: &Writer,
    after: &Position,
    size: usize,
    shutdown: &CancellationToken,
) -> Result<Option<Loaded>, WorkerError> {
    let rows = loop {
        if shutdown.is_cancelled() {
            return Ok(None);
        }
        match reader.rows_after(after, size).await {
            Ok(rows) => break rows,
            Err(error) => {
                tracing::warn!(%error, "cannot read datanommer; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok(None);
    };
    let (first_epoch, last_epoch) = (first.epoch, last.epoch);
    let last = last.position.clone();
    let count = rows.len() as u64;
    let (pending, rejected) = pending_messages(writer, rows).await?;
    let prepared = tokio::task::block_in_place(|| writer.prepare(pending));
    Ok(Some(Loaded {
        prepared,
        last,
        first_epoch,
        last_epoch,
        rows: count,
        rejected,
    }))
}

/// Writes `prepared` in the bootstrap's turn (taken again until NATS answers); `None` if
/// shutdown came first.
async fn write_in_turn(
    turns: &Turns,
    writer: &Writer,
    prepared: Vec<Prepared>,
    shutdown: &CancellationToken,
) -> Result<Option<Written>, WorkerError> {
    let turn = loop {
        match turns.bootstrap_turn().await {
            Ok(turn) => break turn,
            Err(error) => {
                tracing::warn!(%error, "cannot take a turn; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    let written = writer.write(prepared, &[], shutdown).await;
    turn.give_back().await;
    written
}

/// Records that everything up to `last` is stored and rolled up.
async fn record(store: &kv::Store, name: &str, last: &Position) -> Result<(), WorkerError> {
    store
        .put(name, Bytes::from(last.encode()))
        .await
        .map_err(|error| BootstrapError::Progress {
            name: name.to_string(),
            detail: error.to_string(),
        })?;
    Ok(())
}

/// The messages of `rows`, in reading order; a row that cannot be a message is dead-lettered
/// (service `bootstrap`, its reason and the row's id) and counted.
async fn pending_messages(
    writer: &Writer,
    rows: Vec<Row>,
) -> Result<(Vec<Pending>, u64), WorkerError> {
    let mut pending = Vec::with_capacity(rows.len());
    let mut rejected = 0;
    for row in rows {
        let envelope = match row.envelope() {
            Ok(envelope) => envelope,
            Err(error) => {
                rejected += 1;
                tracing::warn!(%error, "a datanommer row is not a message; dead-lettered");
                let payload = format!("{}\t{}\t{}", row.position.encode(), row.topic, row.msg);
                let letter = DeadLetter {
                    service: "bootstrap",
                    reason: "bad_row",
                    detail: error.to_string(),
                    payload: payload.as_bytes(),
                    headers: Vec::new(),
                };
                nats::publish_dead_letter(&writer.jetstream, &writer.config.nats, letter)
                    .await
                    .map_err(WorkerError::DeadLetter)?;
                writer
                    .metrics
                    .dead_letters
                    .with_label_values(&["bad_row"])
                    .inc();
                continue;
            }
        };
        let payload = Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default());
        let identity = envelope.identity();
        let meta = meta::extract(&envelope);
        pending.push(Pending {
            message: Message {
                envelope,
                identity,
                meta,
                stream_sequence: 0,
            },
            payload,
            source: "bootstrap".to_string(),
        });
    }
    Ok((pending, rejected))
}
