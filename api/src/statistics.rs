//! The statistics: `GET /api/` (the plugin catalog) and `GET /api/<plugin>` (one statistic).
//!
//! Statistics are computed at query time from the plugin's fact table, over distinct message
//! identities, so they are exact whatever was redelivered or replayed (see
//! `statscache_shared::schema`). Buckets are computed in SQL with arithmetic that does not depend
//! on the server's time zone; all times are UTC epoch seconds.

use clickhouse::Row;
use serde::Deserialize;
use statscache_shared::config::StatisticKind;

use crate::error::ApiError;
use crate::params::{Order, Page};

/// The catalog row of a plugin, as the workers publish it.
#[derive(Debug, Clone, Row, Deserialize)]
pub struct CatalogRow {
    pub identifier: String,
    pub name: String,
    pub description: String,
    pub kind: String,
    pub table_name: String,
    pub topics: Vec<String>,
    pub backlog_delta_seconds: u64,
    pub updated_at: u32,
}

impl CatalogRow {
    pub fn kind(&self) -> Option<StatisticKind> {
        match self.kind.as_str() {
            "count" => Some(StatisticKind::Count),
            "distinct-count" => Some(StatisticKind::DistinctCount),
            "latest" => Some(StatisticKind::Latest),
            _ => None,
        }
    }
}

pub async fn catalog(client: &clickhouse::Client) -> Result<Vec<CatalogRow>, ApiError> {
    client
        .query(
            "SELECT identifier, name, description, kind, table_name, topics, backlog_delta_seconds, updated_at
             FROM plugins FINAL ORDER BY identifier",
        )
        .fetch_all::<CatalogRow>()
        .await
        .map_err(ApiError::unavailable)
}

/// Time buckets. `All` aggregates the whole range into one row per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Minute,
    Hour,
    Day,
    Week,
    Month,
    All,
}

pub const BUCKET_NAMES: &[&str] = &["minute", "hour", "day", "week", "month", "all"];

impl Bucket {
    pub fn parse(raw: &str) -> Result<Bucket, ApiError> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "minute" | "minutely" => Ok(Bucket::Minute),
            "hour" | "hourly" => Ok(Bucket::Hour),
            "day" | "daily" => Ok(Bucket::Day),
            "week" | "weekly" => Ok(Bucket::Week),
            "month" | "monthly" => Ok(Bucket::Month),
            "all" | "none" => Ok(Bucket::All),
            other => Err(ApiError::bad_parameter(
                "bucket",
                format!("{other:?} is not one of {}", BUCKET_NAMES.join(", ")),
            )),
        }
    }

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

    /// SQL for the bucket start (UInt32 epoch seconds) of the `time` column.
    fn sql(self) -> &'static str {
        match self {
            Bucket::Minute => "toUInt32(intDiv(toUInt32(time), 60) * 60)",
            Bucket::Hour => "toUInt32(intDiv(toUInt32(time), 3600) * 3600)",
            Bucket::Day => "toUInt32(intDiv(toUInt32(time), 86400) * 86400)",
            // 1970-01-05 (epoch + 345600 s) was a Monday: weeks start on Mondays.
            Bucket::Week => "toUInt32(intDiv(toUInt32(time) - 345600, 604800) * 604800 + 345600)",
            Bucket::Month => "toUInt32(toDateTime(toStartOfMonth(time, 'UTC'), 'UTC'))",
            Bucket::All => "toUInt32(0)",
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
pub async fn fetch(
    client: &clickhouse::Client,
    table: &str,
    kind: StatisticKind,
    query: &StatisticQuery,
) -> Result<(Vec<StatisticRow>, u64), ApiError> {
    let bucket_sql = query.bucket.sql();
    let key_filter = if query.keys.is_empty() {
        ""
    } else {
        " AND has(?, key)"
    };
    let filter = format!("time >= toDateTime(?) AND time <= toDateTime(?){key_filter}");
    let order = query.order.sql();
    let bind_filter = |sql: clickhouse::query::Query| {
        let sql = sql
            .bind(query.start.floor() as u32)
            .bind(query.end.ceil().min(4_294_967_295.0) as u32);
        if query.keys.is_empty() {
            sql
        } else {
            sql.bind(query.keys.clone())
        }
    };

    let grouped = match kind {
        StatisticKind::Count => format!(
            "SELECT {bucket_sql} AS bucket, key, uniqExact(msg_id) AS count FROM {table}
             WHERE {filter} GROUP BY bucket, key"
        ),
        StatisticKind::DistinctCount => format!(
            "SELECT {bucket_sql} AS bucket, key, uniqExact(value) AS count FROM {table}
             WHERE {filter} GROUP BY bucket, key"
        ),
        StatisticKind::Latest => format!(
            "SELECT {bucket_sql} AS bucket, key, value, timestamp, msg_id FROM {table}
             WHERE {filter}
             ORDER BY bucket, key, timestamp DESC, msg_id DESC LIMIT 1 BY bucket, key"
        ),
    };
    let total: u64 = bind_filter(client.query(&format!("SELECT count() FROM ({grouped})")))
        .fetch_one()
        .await
        .map_err(ApiError::unavailable)?;
    let page_sql =
        format!("SELECT * FROM ({grouped}) ORDER BY bucket {order}, key ASC LIMIT ? OFFSET ?");
    let paged = bind_filter(client.query(&page_sql))
        .bind(query.page.rows_per_page)
        .bind(query.page.offset());
    let bucketed = query.bucket != Bucket::All;
    let mut rows = Vec::new();
    if kind == StatisticKind::Latest {
        for row in paged
            .fetch_all::<LatestRow>()
            .await
            .map_err(ApiError::unavailable)?
        {
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
        for row in paged
            .fetch_all::<CountRow>()
            .await
            .map_err(ApiError::unavailable)?
        {
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
    fn statscache_interval_names_map_to_buckets() {
        assert_eq!(
            split_interval_suffix("volume-by-topic-daily"),
            ("volume-by-topic", Some(Bucket::Day))
        );
        assert_eq!(split_interval_suffix("volume"), ("volume", None));
        assert!(Bucket::parse("fortnightly").is_err());
        assert_eq!(Bucket::parse("Hourly").ok(), Some(Bucket::Hour));
    }
}
