//! Reading datanommer's rows from a dump of its database, without a PostgreSQL server.
//!
//! Fedora publishes datanommer as a `pg_dump` custom-format archive. `pg_restore -f -` turns it
//! into SQL text whose `COPY <table> (<columns>) FROM stdin;` blocks hold the rows, one a line,
//! in PostgreSQL's text format. A TimescaleDB database keeps its rows in chunk tables
//! (`_timescaledb_internal._hyper_*_chunk`), each a block of its own: every block whose columns
//! are the messages table's is read.
//!
//! The blocks are in no useful order, and the writer wants time-ordered batches (a batch
//! spread over years costs many rollup periods). So the rows are sorted first, by an external
//! merge sort within bounded memory: runs of [`RUN_ROWS`] rows sorted by `(timestamp, id)` and
//! written to temporary files, then merged. Resuming skips the rows up to the recorded position.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::row::{Position, Row};

/// Rows sorted in memory at a time: a run of this many, about 2 KB each, bounds the sort's
/// memory at a few hundred megabytes at most.
const RUN_ROWS: usize = 50_000;

/// The columns a block must have to be datanommer's messages.
const REQUIRED_COLUMNS: [&str; 5] = ["id", "msg_id", "topic", "timestamp", "msg"];

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("cannot run pg_restore (package postgresql-client): {0}")]
    PgRestore(std::io::Error),
    #[error("pg_restore failed: {0}")]
    PgRestoreFailed(String),
    #[error("cannot read the dump's SQL: {0}")]
    Read(std::io::Error),
    #[error("cannot write or read the sorted runs: {0}")]
    Runs(std::io::Error),
    #[error("line {line} of table {table}: {detail}")]
    BadRow {
        table: String,
        line: u64,
        detail: String,
    },
    #[error("the dump holds no table with datanommer's messages columns")]
    NoMessages,
}

/// A row as a sorted run keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct StoredRow {
    timestamp: String,
    id: i64,
    epoch: f64,
    msg_id: Option<String>,
    i: Option<i64>,
    topic: String,
    certificate: Option<String>,
    signature: Option<String>,
    agent_name: Option<String>,
    crypto: Option<String>,
    source_name: Option<String>,
    source_version: Option<String>,
    msg: String,
    headers: Option<String>,
}

impl From<StoredRow> for Row {
    fn from(stored: StoredRow) -> Row {
        Row {
            position: Position {
                timestamp: stored.timestamp,
                id: stored.id,
            },
            epoch: stored.epoch,
            msg_id: stored.msg_id,
            i: stored.i,
            topic: stored.topic,
            certificate: stored.certificate,
            signature: stored.signature,
            agent_name: stored.agent_name,
            crypto: stored.crypto,
            source_name: stored.source_name,
            source_version: stored.source_version,
            msg: stored.msg,
            headers: stored.headers,
        }
    }
}

/// The dump's rows, sorted, read back in time order.
pub struct Dump {
    runs: Vec<BufReader<std::fs::File>>,
    /// The next row of each run, smallest position first.
    heads: BinaryHeap<Reverse<(Position, usize)>>,
    pending: Vec<Option<StoredRow>>,
    /// Rows in the dump.
    pub rows: u64,
    _directory: tempfile::TempDir,
}

impl Dump {
    /// Restores `archive` to SQL text with `pg_restore` and sorts its messages rows, in
    /// temporary files under `scratch`.
    pub fn sort(archive: &Path, scratch: &Path) -> Result<Dump, DumpError> {
        let mut restore = Command::new("pg_restore")
            .args(["--data-only", "--file", "-"])
            .arg(archive)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(DumpError::PgRestore)?;
        let stdout = restore
            .stdout
            .take()
            .ok_or_else(|| DumpError::PgRestoreFailed("no output".into()))?;
        let directory = tempfile::tempdir_in(scratch).map_err(DumpError::Runs)?;
        let sorted = sort_blocks(BufReader::new(stdout), directory.path());
        let output = restore.wait_with_output().map_err(DumpError::PgRestore)?;
        if !output.status.success() {
            return Err(DumpError::PgRestoreFailed(
                String::from_utf8_lossy(&output.stderr).trim().to_string(),
            ));
        }
        let (run_paths, rows) = sorted?;
        Dump::merging(run_paths, rows, directory)
    }

    /// The merge of the sorted runs at `run_paths` (in `directory`, removed with the dump).
    fn merging(
        run_paths: Vec<std::path::PathBuf>,
        rows: u64,
        directory: tempfile::TempDir,
    ) -> Result<Dump, DumpError> {
        let mut dump = Dump {
            runs: Vec::new(),
            heads: BinaryHeap::new(),
            pending: Vec::new(),
            rows,
            _directory: directory,
        };
        for path in run_paths {
            let file = std::fs::File::open(path).map_err(DumpError::Runs)?;
            dump.runs.push(BufReader::new(file));
            dump.pending.push(None);
            let run = dump.runs.len() - 1;
            dump.advance(run)?;
        }
        Ok(dump)
    }

    /// Up to `limit` rows after `after`, in time order; none at the end.
    pub fn rows_after(&mut self, after: &Position, limit: usize) -> Result<Vec<Row>, DumpError> {
        let mut rows = Vec::with_capacity(limit);
        while rows.len() < limit {
            let Some(Reverse((position, run))) = self.heads.pop() else {
                break;
            };
            let stored = self.pending[run].take();
            self.advance(run)?;
            let Some(stored) = stored else {
                continue;
            };
            if position <= *after {
                continue;
            }
            rows.push(Row::from(stored));
        }
        Ok(rows)
    }

    /// Reads the next row of `run` into its slot and the heap.
    fn advance(&mut self, run: usize) -> Result<(), DumpError> {
        let mut line = String::new();
        let read = self.runs[run]
            .read_line(&mut line)
            .map_err(DumpError::Runs)?;
        if read == 0 {
            return Ok(());
        }
        let stored: StoredRow = serde_json::from_str(&line)
            .map_err(|error| DumpError::Runs(std::io::Error::other(error)))?;
        let position = Position {
            timestamp: stored.timestamp.clone(),
            id: stored.id,
        };
        self.pending[run] = Some(stored);
        self.heads.push(Reverse((position, run)));
        Ok(())
    }
}

/// Reads every messages block of `sql`, writing sorted runs under `directory`; returns the
/// runs' paths and the number of rows.
fn sort_blocks(
    sql: impl BufRead,
    directory: &Path,
) -> Result<(Vec<std::path::PathBuf>, u64), DumpError> {
    let mut runs = Vec::new();
    let mut run: Vec<StoredRow> = Vec::with_capacity(RUN_ROWS);
    let mut rows = 0;
    let mut block: Option<(String, Vec<String>)> = None;
    let mut found_a_block = false;
    for (index, line) in sql.lines().enumerate() {
        let line = line.map_err(DumpError::Read)?;
        let Some((table, columns)) = &block else {
            block = copy_header(&line);
            if block.is_some() {
                found_a_block = true;
            }
            continue;
        };
        if line == "\\." {
            block = None;
            continue;
        }
        let stored = parse_row(&line, columns).map_err(|detail| DumpError::BadRow {
            table: table.clone(),
            line: index as u64 + 1,
            detail,
        })?;
        run.push(stored);
        rows += 1;
        if run.len() == RUN_ROWS {
            runs.push(write_run(&mut run, directory, runs.len())?);
        }
    }
    if !found_a_block {
        return Err(DumpError::NoMessages);
    }
    if !run.is_empty() {
        runs.push(write_run(&mut run, directory, runs.len())?);
    }
    Ok((runs, rows))
}

/// The table and columns of a `COPY ... FROM stdin;` line that holds datanommer's messages.
fn copy_header(line: &str) -> Option<(String, Vec<String>)> {
    let rest = line.strip_prefix("COPY ")?.strip_suffix(" FROM stdin;")?;
    let (table, columns) = rest.split_once(" (")?;
    let columns: Vec<String> = columns
        .strip_suffix(')')?
        .split(", ")
        .map(|column| column.trim_matches('"').to_string())
        .collect();
    let is_messages = REQUIRED_COLUMNS
        .iter()
        .all(|required| columns.iter().any(|column| column == required));
    is_messages.then(|| (table.to_string(), columns))
}

/// One row of a block, its fields in `columns`' order, in PostgreSQL's COPY text format.
fn parse_row(line: &str, columns: &[String]) -> Result<StoredRow, String> {
    let fields: Vec<Option<String>> = line.split('\t').map(unescape).collect();
    if fields.len() != columns.len() {
        return Err(format!(
            "{} fields where the block has {} columns",
            fields.len(),
            columns.len()
        ));
    }
    let field = |name: &str| -> Option<String> {
        let index = columns.iter().position(|column| column == name)?;
        fields[index].clone()
    };
    let required = |name: &str| field(name).ok_or_else(|| format!("no {name}"));
    let integer = |name: &str| -> Result<Option<i64>, String> {
        match field(name) {
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|_| format!("{name} {text:?} is not an integer")),
            None => Ok(None),
        }
    };
    let (timestamp, epoch) = timestamp_and_epoch(&required("timestamp")?)?;
    let agent_name = field("agent_name").or_else(|| field("username"));
    Ok(StoredRow {
        timestamp,
        id: integer("id")?.ok_or("no id")?,
        epoch,
        msg_id: field("msg_id"),
        i: integer("i")?,
        topic: required("topic")?,
        certificate: field("certificate"),
        signature: field("signature"),
        agent_name,
        crypto: field("crypto"),
        source_name: field("source_name"),
        source_version: field("source_version"),
        msg: required("msg")?,
        headers: field("headers"),
    })
}

/// A timestamp as COPY prints it (`2013-01-30 12:00:00.25`, fraction trimmed or absent), as
/// the position's fixed-width text and as epoch seconds.
fn timestamp_and_epoch(text: &str) -> Result<(String, f64), String> {
    let parsed = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .map_err(|error| format!("timestamp {text:?}: {error}"))?
        .and_utc();
    let fixed = parsed.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    let epoch = parsed.timestamp_micros() as f64 / 1_000_000.0;
    Ok((fixed, epoch))
}

/// A field of COPY's text format: `\N` is NULL, backslash escapes what follows.
fn unescape(field: &str) -> Option<String> {
    if field == "\\N" {
        return None;
    }
    if !field.contains('\\') {
        return Some(field.to_string());
    }
    let mut bytes = Vec::with_capacity(field.len());
    let raw = field.as_bytes();
    let mut index = 0;
    while index < raw.len() {
        if raw[index] != b'\\' || index + 1 == raw.len() {
            bytes.push(raw[index]);
            index += 1;
            continue;
        }
        let escaped = raw[index + 1];
        index += 2;
        match escaped {
            b'b' => bytes.push(0x08),
            b'f' => bytes.push(0x0c),
            b'n' => bytes.push(b'\n'),
            b'r' => bytes.push(b'\r'),
            b't' => bytes.push(b'\t'),
            b'v' => bytes.push(0x0b),
            b'x' => {
                let end = (index + 2).min(raw.len());
                let digits = &field[index..end];
                let hex_length = digits.chars().take_while(char::is_ascii_hexdigit).count();
                match u8::from_str_radix(&digits[..hex_length], 16) {
                    Ok(byte) if hex_length > 0 => {
                        bytes.push(byte);
                        index += hex_length;
                    }
                    _ => bytes.push(b'x'),
                }
            }
            b'0'..=b'7' => {
                let mut value = u32::from(escaped - b'0');
                let mut digits = 1;
                while digits < 3 && index < raw.len() && (b'0'..=b'7').contains(&raw[index]) {
                    value = value * 8 + u32::from(raw[index] - b'0');
                    index += 1;
                    digits += 1;
                }
                bytes.push(value as u8);
            }
            other => bytes.push(other),
        }
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Sorts `run` and writes it as JSON lines; returns its path. `run` is left empty.
fn write_run(
    run: &mut Vec<StoredRow>,
    directory: &Path,
    number: usize,
) -> Result<std::path::PathBuf, DumpError> {
    run.sort_by(|a, b| (&a.timestamp, a.id).cmp(&(&b.timestamp, b.id)));
    let path = directory.join(format!("run-{number:06}.jsonl"));
    let file = std::fs::File::create(&path).map_err(DumpError::Runs)?;
    let mut writer = BufWriter::new(file);
    for row in run.drain(..) {
        serde_json::to_writer(&mut writer, &row)
            .map_err(|error| DumpError::Runs(std::io::Error::other(error)))?;
        writer.write_all(b"\n").map_err(DumpError::Runs)?;
    }
    writer.flush().map_err(DumpError::Runs)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_fields_are_unescaped() {
        assert_eq!(unescape("\\N"), None);
        assert_eq!(unescape("plain").as_deref(), Some("plain"));
        assert_eq!(
            unescape("a\\tb\\nc\\\\d\\101\\x42").as_deref(),
            Some("a\tb\nc\\dAB")
        );
        assert_eq!(
            unescape(r#"{"k": "v\\\\u00e9"}"#).as_deref(),
            Some(r#"{"k": "v\\u00e9"}"#)
        );
    }

    #[test]
    fn messages_blocks_are_recognised_timescale_chunks_included() {
        let header = "COPY _timescaledb_internal._hyper_1_3_chunk (id, msg_id, i, topic, \
                      \"timestamp\", certificate, signature, category, crypto, source_name, \
                      source_version, msg, headers, agent_name) FROM stdin;";
        let (table, columns) = copy_header(header).unwrap();
        assert_eq!(table, "_timescaledb_internal._hyper_1_3_chunk");
        assert_eq!(columns[4], "timestamp");
        assert!(copy_header("COPY public.users (id, name) FROM stdin;").is_none());
    }

    #[test]
    fn rows_are_sorted_across_blocks_and_runs() {
        let sql = "\
SET statement_timeout = 0;
COPY public.messages (id, msg_id, i, topic, \"timestamp\", msg, headers) FROM stdin;
2\tb\t1\torg.f.prod.a.b\t2013-01-02 00:00:00\t{}\t\\N
1\ta\t1\torg.f.prod.a.b\t2013-01-03 00:00:00.5\t{}\t{\"x\": 1}
\\.
COPY public.users (id, name) FROM stdin;
1\tralph
\\.
COPY _timescaledb_internal._hyper_1_1_chunk (id, msg_id, i, topic, \"timestamp\", msg, headers) FROM stdin;
3\tc\t\\N\torg.f.prod.a.b\t2013-01-01 00:00:00.25\t{}\t\\N
\\.
";
        let directory = tempfile::tempdir().unwrap();
        let (paths, rows) = sort_blocks(sql.as_bytes(), directory.path()).unwrap();
        assert_eq!(rows, 3);
        let mut dump = Dump::merging(paths, rows, directory).unwrap();
        let all = dump.rows_after(&Position::start(), 10).unwrap();
        let ids: Vec<&str> = all
            .iter()
            .map(|row| row.msg_id.as_deref().unwrap())
            .collect();
        assert_eq!(ids, ["c", "b", "a"]);
        assert_eq!(all[0].position.timestamp, "2013-01-01 00:00:00.250000");
        assert_eq!(all[0].epoch, 1_356_998_400.25);
        assert_eq!(all[0].i, None);
        assert_eq!(all[2].headers.as_deref(), Some("{\"x\": 1}"));
    }
}
