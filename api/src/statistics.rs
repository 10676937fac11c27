//! The statistics: `GET /api/` (the plugin catalog) and `GET /api/<plugin>` (one statistic).
//!
//! Statistics are computed at query time over distinct message identities, so they are exact
//! whatever was redelivered or replayed (see `statscache_shared::schema`): whole periods from the
//! plugin's rollups, the edges of the range from its facts (`segments`). Buckets are computed in
//! SQL with arithmetic that does not depend on the server's time zone; all times are UTC epoch
//! seconds.
//!
//! A statistic's default window is the whole history, which is the point of statistics; what
//! could exhaust ClickHouse is the number of (bucket, key) groups, e.g. per-user counts per
//! minute over years. ClickHouse is told to give up beyond [`MAX_STATISTIC_GROUPS`] groups, and
//! that becomes a 400 asking for a coarser bucket or a narrower window.

use std::collections::HashMap;

use clickhouse::Row;
use serde::Deserialize;
use statscache_shared::config::StatisticKind;
use statscache_shared::period::Level;
use statscache_shared::schema::{rollup_table, PluginCatalogRow};
use statscache_shared::sql::{bind_all, clamp_time};

use crate::bucket_pages::{self, BucketRows};
use crate::error::ApiError;
use crate::params::{Order, Page};
use crate::segments;

/// The most (bucket, key) groups one request may make ClickHouse hold.
pub const MAX_STATISTIC_GROUPS: u64 = 1_000_000;

/// ClickHouse's error code TOO_MANY_ROWS, which `group_by_overflow_mode = 'throw'` raises.
const TOO_MANY_ROWS: &str = "Code: 158";

/// Bounds the groups of `query` (see the module documentation).
fn with_group_limit(query: clickhouse::query::Query) -> clickhouse::query::Query {
    query
        .with_setting("max_rows_to_group_by", MAX_STATISTIC_GROUPS.to_string())
        .with_setting("group_by_overflow_mode", "throw")
}

/// A failed statistic query: too many groups is the request's fault, anything else the store's.
fn query_failed(error: clickhouse::error::Error) -> ApiError {
    if let clickhouse::error::Error::BadResponse(text) = &error {
        if text.contains(TOO_MANY_ROWS) {
            return ApiError::bad_parameter(
                "bucket",
                format!(
                    "the statistic has more than {MAX_STATISTIC_GROUPS} (bucket, key) rows in this \
                     window: use a coarser bucket, a narrower window (start, end) or key filters"
                ),
            );
        }
    }
    ApiError::unavailable(error)
}

pub async fn catalog(client: &clickhouse::Client) -> Result<Vec<PluginCatalogRow>, ApiError> {
    client
        .query(
            "SELECT identifier, name, description, kind, table_name, topics, backlog_delta_seconds, updated_at
             FROM plugins FINAL ORDER BY identifier",
        )
        .fetch_all::<PluginCatalogRow>()
        .await
        .map_err(ApiError::unavailable)
}

#[derive(Debug, Row, Deserialize)]
struct TableFreshness {
    table: String,
    newest: u32,
}

/// The newest fact `time` of each of `tables` that holds any, read from ClickHouse's part
/// metadata (`system.parts` keeps each part's min/max of the partition key column `time`), so it
/// costs no table scan. Freshness is an extra: if it cannot be read, the tables are left out.
pub async fn newest_fact_times(
    client: &clickhouse::Client,
    tables: Vec<String>,
) -> HashMap<String, u32> {
    let mut newest_by_table = HashMap::new();
    if tables.is_empty() {
        return newest_by_table;
    }
    let rows = client
        .query(
            "SELECT table, toUInt32(max(max_time)) AS newest FROM system.parts
             WHERE database = currentDatabase() AND active AND has(?, table)
             GROUP BY table",
        )
        .bind(tables)
        .fetch_all::<TableFreshness>()
        .await;
    match rows {
        Ok(rows) => {
            for row in rows {
                newest_by_table.insert(row.table, row.newest);
            }
        }
        Err(error) => tracing::warn!(%error, "cannot read the freshness of the fact tables"),
    }
    newest_by_table
}

/// The most keys a layout lists.
pub const MAX_LAYOUT_KEYS: u64 = 10_000;

/// The distinct keys of the statistic whose facts are in `table`, in order, at most `limit` of
/// them; read from its yearly rollup, which holds every key in a row per year.
pub async fn keys(
    client: &clickhouse::Client,
    table: &str,
    limit: u64,
) -> Result<Vec<String>, ApiError> {
    let yearly = rollup_table(table, Level::Year);
    client
        .query(&format!(
            "SELECT DISTINCT key FROM {yearly} ORDER BY key LIMIT ?"
        ))
        .bind(limit)
        .fetch_all::<String>()
        .await
        .map_err(query_failed)
}

/// Time buckets. `All` aggregates the whole range into one row per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum Bucket {
    Minute,
    Hour,
    Day,
    Week,
    Month,
    All,
}

/// Every bucket, as the plugin list offers them.
pub const BUCKETS: [Bucket; 6] = [
    Bucket::Minute,
    Bucket::Hour,
    Bucket::Day,
    Bucket::Week,
    Bucket::Month,
    Bucket::All,
];

/// The names `bucket` accepts: ours, and statscache's interval names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum BucketName {
    Minute,
    Minutely,
    Hour,
    Hourly,
    Day,
    Daily,
    Week,
    Weekly,
    Month,
    Monthly,
    All,
    None,
}

impl From<BucketName> for Bucket {
    fn from(name: BucketName) -> Bucket {
        match name {
            BucketName::Minute | BucketName::Minutely => Bucket::Minute,
            BucketName::Hour | BucketName::Hourly => Bucket::Hour,
            BucketName::Day | BucketName::Daily => Bucket::Day,
            BucketName::Week | BucketName::Weekly => Bucket::Week,
            BucketName::Month | BucketName::Monthly => Bucket::Month,
            BucketName::All | BucketName::None => Bucket::All,
        }
    }
}

impl Bucket {
    pub fn name(self) -> &'static str {
        match self {
            Bucket::Minute => "minute",
            Bucket::Hour => "hour",
            Bucket::Day => "day",
            Bucket::Week => "week",
            Bucket::Month => "month",
            Bucket::All => "all",
        }
    }

    /// The end (exclusive, epoch seconds) of the bucket starting at `start`.
    pub fn end(self, start: u32) -> u64 {
        let start = u64::from(start);
        match self {
            Bucket::Minute => start + 60,
            Bucket::Hour => start + 3600,
            Bucket::Day => start + 86_400,
            Bucket::Week => start + 604_800,
            Bucket::Month => Level::Month.next(start),
            Bucket::All => u64::MAX,
        }
    }

    /// SQL for the bucket start (UInt32 epoch seconds) of the `DateTime` `column`.
    pub fn sql(self, column: &str) -> String {
        match self {
            Bucket::Minute => format!("toUInt32(intDiv(toUInt32({column}), 60) * 60)"),
            Bucket::Hour => Level::Hour.sql(column),
            Bucket::Day => Level::Day.sql(column),
            // 1970-01-05 (epoch + 345600 s) was a Monday: weeks start on Mondays.
            Bucket::Week => {
                format!("toUInt32(intDiv(toUInt32({column}) - 345600, 604800) * 604800 + 345600)")
            }
            Bucket::Month => Level::Month.sql(column),
            Bucket::All => "toUInt32(0)".to_string(),
        }
    }
}

/// statscache named a plugin per interval (`volume-by-topic-daily`); those URLs keep working.
pub fn split_interval_suffix(identifier: &str) -> (&str, Option<Bucket>) {
    let suffixes = [
        ("-minutely", Bucket::Minute),
        ("-hourly", Bucket::Hour),
        ("-daily", Bucket::Day),
        ("-weekly", Bucket::Week),
        ("-monthly", Bucket::Month),
    ];
    for (suffix, bucket) in suffixes {
        if let Some(base) = identifier.strip_suffix(suffix) {
            return (base, Some(bucket));
        }
    }
    (identifier, None)
}

/// A validated statistic request.
#[derive(Debug, Clone)]
pub struct StatisticQuery {
    pub start: f64,
    pub end: f64,
    pub bucket: Bucket,
    pub keys: Vec<String>,
    pub order: Order,
    pub page: Page,
}

/// One row of a statistic. Counts fill `count`; latest statistics fill `value`, `timestamp`
/// and `msg_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatisticRow {
    /// Bucket start, epoch seconds; `None` for `bucket=all`.
    pub bucket: Option<u32>,
    pub key: String,
    pub count: Option<u64>,
    pub value: Option<String>,
    pub timestamp: Option<f64>,
    pub msg_id: Option<String>,
}

#[derive(Debug, Row, Deserialize)]
struct CountRow {
    bucket: u32,
    key: String,
    count: u64,
}

#[derive(Debug, Row, Deserialize)]
struct LatestRow {
    bucket: u32,
    key: String,
    value: String,
    timestamp: f64,
    msg_id: String,
}

/// Runs `query` over `table`; returns the page of rows and the total number of rows.
///
/// A range reaching past the newest fact (the usual "until now") is answered as if it were open
/// (its last periods read whole from the rollups, no edges from the hourly rollup or the facts,
/// whose reads by time alone cost a scan of the year's parts), and checked afterwards: if a
/// fact at or after `end` was stored meanwhile, the range is answered again as asked. Facts
/// are only ever added, so a check that finds none after the answer proves the answer exact.
pub async fn fetch(
    client: &clickhouse::Client,
    table: &str,
    kind: StatisticKind,
    query: &StatisticQuery,
) -> Result<(Vec<StatisticRow>, u64), ApiError> {
    // The request's seconds, `[floor(start), ceil(end)]`, as a half-open range.
    let start = u64::from(clamp_time(query.start.max(0.0).floor() as u64));
    let end = u64::from(clamp_time(query.end.max(0.0).ceil() as u64)) + 1;
    let coarsest = segments::coarsest_level(query.bucket);
    if let Some(open_end) = open_end(coarsest, end) {
        if nothing_stored_from(client, table, end).await {
            let answer = fetch_range(client, table, kind, query, start, open_end).await?;
            if nothing_stored_from(client, table, end).await {
                return Ok(answer);
            }
        }
    }
    fetch_range(client, table, kind, query, start, end).await
}

/// Where a range ending at `end` may be extended to if nothing lies beyond it: the end of the
/// coarsest period `end` falls in; `None` when that changes nothing.
fn open_end(coarsest: Option<Level>, end: u64) -> Option<u64> {
    let level = coarsest?;
    let open_end = level.ceil(end);
    (open_end > end).then_some(open_end)
}

/// Whether `table` holds no fact at or after `time` (from the parts' metadata; `false` when it
/// cannot be read).
async fn nothing_stored_from(client: &clickhouse::Client, table: &str, time: u64) -> bool {
    let newest = newest_fact_times(client, vec![table.to_string()]).await;
    match newest.get(table) {
        Some(newest) => u64::from(*newest) < time,
        // No part: no fact at all; but an unreadable table also lands here, so ask the exact way.
        None => false,
    }
}

/// Runs `query` over the seconds `[start, end)` of `table`: first the rows per bucket, which
/// give `total` and locate the page's buckets (`bucket_pages`), then the answer of those
/// buckets alone — of the page's keys alone if it lies within one whole day or month
/// (`segments::page_keys_sql`) — so a page costs the same however many buckets the range holds.
async fn fetch_range(
    client: &clickhouse::Client,
    table: &str,
    kind: StatisticKind,
    query: &StatisticQuery,
    start: u64,
    end: u64,
) -> Result<(Vec<StatisticRow>, u64), ApiError> {
    let coarsest = segments::coarsest_level(query.bucket);
    let segments = segments::decompose(start, end, coarsest);
    if segments.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let order = query.order.sql();
    let (per_bucket, binds) =
        segments::bucket_rows_sql(table, query.bucket, &query.keys, &segments);
    let per_bucket = format!("{per_bucket} ORDER BY bucket {order}");
    let buckets: Vec<BucketRows> = with_group_limit(bind_all(client.query(&per_bucket), &binds))
        .fetch_all()
        .await
        .map_err(query_failed)?;
    let mut total = 0u64;
    for bucket in &buckets {
        total = total.saturating_add(bucket.bucket_rows);
    }
    let rows_per_page = u64::from(query.page.rows_per_page);
    let Some(window) = bucket_pages::locate(&buckets, query.page.offset(), rows_per_page) else {
        return Ok((Vec::new(), total));
    };
    let page_start = start.max(u64::from(window.earliest));
    let page_end = end.min(query.bucket.end(window.latest));
    let page_segments = segments::decompose(page_start, page_end, coarsest);
    // A page within one whole day or month: its keys first, then its rows by those keys.
    let mut page_keys = query.keys.clone();
    let mut skip = window.skip;
    if let Some((sql, binds)) =
        segments::page_keys_sql(table, query.bucket, &query.keys, &page_segments)
    {
        let keys: Vec<String> = bind_all(client.query(&sql), &binds)
            .bind(rows_per_page)
            .bind(window.skip)
            .fetch_all()
            .await
            .map_err(query_failed)?;
        // No keys (presence rows not yet filled): the page is read by its period alone.
        if !keys.is_empty() {
            page_keys = keys;
            skip = 0;
        }
    }
    let (grouped, binds) =
        segments::statistic_sql(table, kind, query.bucket, &page_keys, &page_segments);
    let page_sql =
        format!("SELECT * FROM ({grouped}) ORDER BY bucket {order}, key ASC LIMIT ? OFFSET ?");
    let paged = with_group_limit(bind_all(client.query(&page_sql), &binds))
        .bind(rows_per_page)
        .bind(skip);
    let bucketed = query.bucket != Bucket::All;
    let mut rows = Vec::new();
    if kind == StatisticKind::Latest {
        for row in paged.fetch_all::<LatestRow>().await.map_err(query_failed)? {
            rows.push(StatisticRow {
                bucket: bucketed.then_some(row.bucket),
                key: row.key,
                count: None,
                value: Some(row.value),
                timestamp: Some(row.timestamp),
                msg_id: Some(row.msg_id),
            });
        }
    } else {
        for row in paged.fetch_all::<CountRow>().await.map_err(query_failed)? {
            rows.push(StatisticRow {
                bucket: bucketed.then_some(row.bucket),
                key: row.key,
                count: Some(row.count),
                value: None,
                timestamp: None,
                msg_id: None,
            });
        }
    }
    Ok((rows, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_range_ends_with_its_coarsest_period() {
        // 2024-01-15T12:00Z and 2024-02-01T00:00Z.
        let mid_january = 1_705_320_000;
        let february = 1_706_745_600;
        assert_eq!(open_end(Some(Level::Month), mid_january), Some(february));
        assert_eq!(
            open_end(Some(Level::Day), mid_january),
            Some(mid_january + 43_200)
        );
        assert_eq!(
            open_end(Some(Level::Month), february),
            None,
            "already whole"
        );
        assert_eq!(open_end(None, mid_january), None, "minutes read facts only");
    }

    #[test]
    fn too_many_groups_is_the_request_s_fault() {
        let too_many = clickhouse::error::Error::BadResponse(
            "Code: 158, e.displayText() = DB::Exception: Limit for rows to GROUP BY exceeded"
                .to_string(),
        );
        assert!(matches!(query_failed(too_many), ApiError::BadRequest(_)));
        let other = clickhouse::error::Error::BadResponse("Code: 241, memory".to_string());
        assert!(matches!(query_failed(other), ApiError::Unavailable(_)));
    }

    #[test]
    fn statscache_interval_names_map_to_buckets() {
        assert_eq!(
            split_interval_suffix("volume-by-topic-daily"),
            ("volume-by-topic", Some(Bucket::Day))
        );
        assert_eq!(split_interval_suffix("volume"), ("volume", None));
        assert_eq!(Bucket::from(BucketName::Hourly), Bucket::Hour);
        assert_eq!(Bucket::from(BucketName::None), Bucket::All);
    }
}
