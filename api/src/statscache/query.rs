//! Reading a page of an identifier's model rows, three ways:
//! - windows shorter than a day ([`windowed`]): the page located from the `statscache-rows`
//!   plugin's counts (`spans`), its rows listed from that plugin's facts (sorted by identifier
//!   then time: one range), their volumes counted from our plugin's facts of the page's keys and
//!   windows only;
//! - days ([`daily`]): our plugin's `bucket=day` answer (`statistics::fetch`), whose days are
//!   statscache's windows of a day, read from the daily rollup and its key counts;
//! - the release-engineering log ([`log`]): the latest row per key, from the yearly rollup.
//!
//! Rows of one timestamp are ordered by key (statscache left them in table order).

use std::collections::HashMap;

use clickhouse::Row;
use serde::Deserialize;
use statscache_shared::config::StatisticKind;
use statscache_shared::period::Level;
use statscache_shared::schema::rollup_table;
use statscache_shared::sql::{bind_all, clamp_time, placeholders, Bound};
use statscache_shared::statscache::DAY;

use super::params::Params;
use super::spans::{self, Located};
use super::window::seconds_of_windows;
use crate::error::ApiError;
use crate::params::Page;
use crate::segments::decompose;
use crate::statistics::{self, Bucket, StatisticQuery};

/// A value of a model column.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Count(u64),
}

/// One model row: its timestamp (epoch seconds, whole), then its other columns by name.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRow {
    pub timestamp: f64,
    pub columns: Vec<(&'static str, Cell)>,
}

/// A page of rows and how many rows the request has in all (after `limit`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPage {
    pub rows: Vec<ModelRow>,
    pub items: u64,
}

/// How an identifier's rows are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading<'a> {
    /// Windows of `seconds`, shorter than a day, counted in `rows_table` (the
    /// `statscache-rows` plugin's facts) and its rollups.
    Windows { seconds: u32, rows_table: &'a str },
    /// Windows of a day.
    Days,
    /// The release-engineering log.
    Log,
}

/// What to read: where the identifier's facts are, and how its rows look.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    pub ident: &'a str,
    /// Our plugin's fact table.
    pub table: &'a str,
    /// The column holding our plugin's key, if any.
    pub column: Option<&'static str>,
    pub reading: Reading<'a>,
}

/// How many of `total` rows the request keeps (`limit`), and the page's rows: `take` from
/// `offset`. A page past them is a 400 (statscache's `abort(400)`); the page right after the
/// last is empty, as statscache's was.
fn bounds(params: &Params, total: u64) -> Result<(u64, u64), ApiError> {
    let items = params.limit.map_or(total, |limit| limit.min(total));
    let offset = params.offset();
    if offset > items {
        return Err(ApiError::bad_parameter(
            "page",
            format!(
                "page {} starts past the {items} rows of this request",
                params.page
            ),
        ));
    }
    Ok((items, params.rows_per_page.min(items - offset)))
}

/// A volume row: stamped with its window's end, its key under `column`.
fn volume_row(end: u64, column: Option<&'static str>, key: String, volume: u64) -> ModelRow {
    let mut columns = Vec::with_capacity(2);
    if let Some(column) = column {
        columns.push((column, Cell::Text(key)));
    }
    columns.push(("volume", Cell::Count(volume)));
    ModelRow {
        timestamp: end as f64,
        columns,
    }
}

/// Reads the page `params` asks for from `source`.
pub async fn read(
    client: &clickhouse::Client,
    source: &Source<'_>,
    params: &Params,
) -> Result<ModelPage, ApiError> {
    match source.reading {
        Reading::Windows {
            seconds,
            rows_table,
        } => windowed(client, source, seconds, rows_table, params).await,
        Reading::Days => daily(client, source, params).await,
        Reading::Log => log(client, source, params).await,
    }
}

#[derive(Debug, Row, Deserialize)]
struct WindowRow {
    window_start: u32,
    row_key: String,
}

#[derive(Debug, Row, Deserialize)]
struct VolumeRow {
    window_start: u32,
    key: String,
    volume: u64,
}

/// A window shorter than a day (see the module documentation).
async fn windowed(
    client: &clickhouse::Client,
    source: &Source<'_>,
    seconds: u32,
    rows_table: &str,
    params: &Params,
) -> Result<ModelPage, ApiError> {
    let empty = ModelPage {
        rows: Vec::new(),
        items: 0,
    };
    let Some((first, end)) = seconds_of_windows(seconds, params.start, params.stop) else {
        return bounds(params, 0).map(|_| empty);
    };
    let segments = decompose(first, end, Some(Level::Year));
    let mut spans = spans::count(client, rows_table, source.ident, &segments).await?;
    let total: u64 = spans.iter().map(|span| span.rows).sum();
    let (items, take) = bounds(params, total)?;
    if take == 0 {
        return Ok(ModelPage {
            rows: Vec::new(),
            items,
        });
    }
    let (page_start, page_end, skip) = loop {
        match spans::locate(&spans, params.order, params.offset(), take) {
            Located::Page { start, end, skip } => break (start, end, skip),
            Located::Cut(index) => {
                let span = spans[index];
                let finer = span.level.and_then(Level::source);
                let parts = decompose(span.start, span.end, finer);
                let cut = spans::count(client, rows_table, source.ident, &parts).await?;
                spans.splice(index..=index, cut);
            }
        }
    };
    if page_start >= page_end {
        return Ok(ModelPage {
            rows: Vec::new(),
            items,
        });
    }
    let order = params.order.sql();
    let listed: Vec<WindowRow> = client
        .query(&format!(
            "SELECT toUInt32(time) AS window_start, value AS row_key FROM {rows_table}
             WHERE key = ? AND time >= toDateTime(?) AND time <= toDateTime(?)
             GROUP BY window_start, row_key
             ORDER BY window_start {order}, row_key ASC LIMIT ? OFFSET ?"
        ))
        .bind(source.ident)
        .bind(clamp_time(page_start))
        .bind(clamp_time(page_end - 1))
        .bind(take)
        .bind(skip)
        .fetch_all()
        .await
        .map_err(ApiError::unavailable)?;
    let volumes = volumes(client, source.table, seconds, &listed).await?;
    let mut rows = Vec::with_capacity(listed.len());
    for row in listed {
        let volume = volumes
            .get(&(row.window_start, row.row_key.clone()))
            .copied()
            .unwrap_or_default();
        let end = u64::from(row.window_start) + u64::from(seconds);
        rows.push(volume_row(end, source.column, row.row_key, volume));
    }
    Ok(ModelPage { rows, items })
}

/// The messages of each listed (window, key), from our plugin's facts of those keys and
/// windows only.
async fn volumes(
    client: &clickhouse::Client,
    table: &str,
    seconds: u32,
    listed: &[WindowRow],
) -> Result<HashMap<(u32, String), u64>, ApiError> {
    let mut counts = HashMap::new();
    let (Some(earliest), Some(latest)) = (
        listed.iter().map(|row| row.window_start).min(),
        listed.iter().map(|row| row.window_start).max(),
    ) else {
        return Ok(counts);
    };
    let mut keys: Vec<&str> = listed.iter().map(|row| row.row_key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut binds: Vec<Bound> = keys
        .iter()
        .map(|key| Bound::Text(key.to_string()))
        .collect();
    binds.push(Bound::Time(earliest));
    binds.push(Bound::Time(clamp_time(
        u64::from(latest) + u64::from(seconds) - 1,
    )));
    let sql = format!(
        "SELECT toUInt32(intDiv(toUInt32(time), {seconds}) * {seconds}) AS window_start, key,
                uniqExact(msg_id) AS volume
         FROM {table} WHERE key IN ({}) AND time >= toDateTime(?) AND time <= toDateTime(?)
         GROUP BY window_start, key",
        placeholders(keys.len())
    );
    let rows: Vec<VolumeRow> = bind_all(client.query(&sql), &binds)
        .fetch_all()
        .await
        .map_err(ApiError::unavailable)?;
    for row in rows {
        counts.insert((row.window_start, row.key), row.volume);
    }
    Ok(counts)
}

/// Windows of a day: our plugin's days, stamped with their end.
async fn daily(
    client: &clickhouse::Client,
    source: &Source<'_>,
    params: &Params,
) -> Result<ModelPage, ApiError> {
    let Some((first, end)) = seconds_of_windows(DAY, params.start, params.stop) else {
        return bounds(params, 0).map(|_| ModelPage {
            rows: Vec::new(),
            items: 0,
        });
    };
    // The page as `statistics::fetch` counts pages; a page number past u32 is past the rows.
    let number = u32::try_from(params.page).unwrap_or(u32::MAX);
    let rows_per_page = u32::try_from(params.rows_per_page).unwrap_or(u32::MAX);
    let query = StatisticQuery {
        start: first as f64,
        end: (end - 1) as f64,
        bucket: Bucket::Day,
        keys: Vec::new(),
        order: params.order,
        page: Page {
            number,
            rows_per_page,
        },
    };
    let (found, total) =
        statistics::fetch(client, source.table, StatisticKind::Count, &query).await?;
    let (items, take) = bounds(params, total)?;
    let mut rows = Vec::with_capacity(found.len());
    for row in found.into_iter().take(take as usize) {
        let day = u64::from(row.bucket.unwrap_or_default());
        let volume = row.count.unwrap_or_default();
        rows.push(volume_row(
            day + u64::from(DAY),
            source.column,
            row.key,
            volume,
        ));
    }
    Ok(ModelPage { rows, items })
}

#[derive(Debug, Row, Deserialize)]
struct LogRow {
    key: String,
    value: String,
    timestamp: f64,
}

/// The release-engineering log: each key's latest event over all history (from the yearly
/// rollup: a row per key and year), kept when its time is in `[start, stop]`.
async fn log(
    client: &clickhouse::Client,
    source: &Source<'_>,
    params: &Params,
) -> Result<ModelPage, ApiError> {
    let yearly = rollup_table(source.table, Level::Year);
    let latest = format!(
        "SELECT key, value, timestamp FROM (
             SELECT key, value, timestamp, msg_id FROM {yearly}
             ORDER BY key, timestamp DESC, msg_id DESC, value DESC LIMIT 1 BY key)
         WHERE timestamp >= ? AND timestamp <= ?"
    );
    let start = params.start.unwrap_or(0.0);
    let total: u64 = client
        .query(&format!("SELECT count() FROM ({latest})"))
        .bind(start)
        .bind(params.stop)
        .fetch_one()
        .await
        .map_err(ApiError::unavailable)?;
    let (items, take) = bounds(params, total)?;
    if take == 0 {
        return Ok(ModelPage {
            rows: Vec::new(),
            items,
        });
    }
    let order = params.order.sql();
    let found: Vec<LogRow> = client
        .query(&format!(
            "{latest} ORDER BY timestamp {order}, key ASC LIMIT ? OFFSET ?"
        ))
        .bind(start)
        .bind(params.stop)
        .bind(take)
        .bind(params.offset())
        .fetch_all()
        .await
        .map_err(ApiError::unavailable)?;
    let mut rows = Vec::with_capacity(found.len());
    for row in found {
        let (category, constraint) = row.key.split_once('/').unwrap_or((row.key.as_str(), ""));
        rows.push(ModelRow {
            timestamp: row.timestamp.floor(),
            columns: vec![
                ("category", Cell::Text(category.to_string())),
                ("category_constraint", Cell::Text(constraint.to_string())),
                ("message", Cell::Text(row.value.clone())),
            ],
        });
    }
    Ok(ModelPage { rows, items })
}
