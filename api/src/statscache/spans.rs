//! Where a page of a windowed identifier lies, found from per-period row counts.
//!
//! Why: `volume-1s` over all history has a row per busy second, millions of them. statscache
//! sorted its table to cut a page (and counted it for `X-Link-Count`); that costs as much as
//! history is long. Here the rows of every hour, day, month and year are counted by the
//! `statscache-rows` plugin's rollups (key: the identifier), so the request's range is cut into
//! spans (`segments::decompose`: whole years, months, days and hours, facts at the edges), each
//! counted in one statement; the page's first and last spans, when coarser than an hour and
//! holding more than the page, are cut into their months, days or hours and counted again; and
//! then only the page's hours are read. A page costs a few statements of a few dozen rows each
//! however long history is.

use clickhouse::Row;
use serde::Deserialize;
use statscache_shared::period::Level;
use statscache_shared::schema::rollup_table;
use statscache_shared::sql::{bind_all, clamp_time, Bound};

use crate::error::ApiError;
use crate::params::Order;
use crate::segments::{Segment, Source};

/// A period (or an edge of facts) and how many rows of the identifier it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub end: u64,
    /// `None`: an edge read from the facts, never cut further.
    pub level: Option<Level>,
    pub rows: u64,
}

/// What [`locate`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Located {
    /// The span at this index (ascending) must be cut into finer spans first.
    Cut(usize),
    /// The page's rows are the `take` rows after the first `skip` rows (in the requested order)
    /// of the seconds `[start, end)`.
    Page { start: u64, end: u64, skip: u64 },
}

/// Whether reading `span` whole to cut a page out of it would read more than the page.
fn too_coarse(span: &Span, take: u64) -> bool {
    matches!(span.level, Some(Level::Day | Level::Month | Level::Year)) && span.rows > take
}

/// Where the `take` rows from `offset` (in `order`) lie among `spans` (ascending, disjoint,
/// none empty). `take` is at least 1 and `offset + take` at most the spans' rows.
pub fn locate(spans: &[Span], order: Order, offset: u64, take: u64) -> Located {
    let indexes: Vec<usize> = match order {
        Order::Asc => (0..spans.len()).collect(),
        Order::Desc => (0..spans.len()).rev().collect(),
    };
    let page_end = offset + take;
    let mut before = 0u64;
    let mut first: Option<(usize, u64)> = None;
    let mut last = 0usize;
    for index in indexes {
        let through = before + spans[index].rows;
        if first.is_none() && through > offset {
            first = Some((index, offset - before));
        }
        if first.is_some() {
            last = index;
            if through >= page_end {
                break;
            }
        }
        before = through;
    }
    let Some((first, skip)) = first else {
        return Located::Page {
            start: 0,
            end: 0,
            skip: 0,
        };
    };
    for index in [first, last] {
        if too_coarse(&spans[index], take) {
            return Located::Cut(index);
        }
    }
    let (low, high) = (first.min(last), first.max(last));
    Located::Page {
        start: spans[low].start,
        end: spans[high].end,
        skip,
    }
}

#[derive(Debug, Row, Deserialize)]
struct SpanRow {
    segment: u32,
    span_start: u32,
    span_rows: u64,
}

/// The non-empty spans of `segments` (ascending): one per period of a rollup segment, one per
/// facts segment, each with the rows of `ident` counted in `rows_table` (the `statscache-rows`
/// plugin's facts) and its rollups.
pub async fn count(
    client: &clickhouse::Client,
    rows_table: &str,
    ident: &str,
    segments: &[Segment],
) -> Result<Vec<Span>, ApiError> {
    if segments.is_empty() {
        return Ok(Vec::new());
    }
    let mut parts = Vec::with_capacity(segments.len());
    let mut binds = Vec::new();
    for (index, segment) in segments.iter().enumerate() {
        binds.push(Bound::Text(ident.to_string()));
        binds.push(Bound::Time(clamp_time(segment.start)));
        binds.push(Bound::Time(clamp_time(segment.end - 1)));
        parts.push(match segment.source {
            Source::Rollup(level) => format!(
                "SELECT toUInt32({index}) AS segment, toUInt32(period) AS span_start,
                        max(count) AS span_rows
                 FROM {} WHERE key = ? AND period >= toDateTime(?) AND period <= toDateTime(?)
                 GROUP BY span_start",
                rollup_table(rows_table, level)
            ),
            Source::Facts => format!(
                "SELECT toUInt32({index}) AS segment, toUInt32({}) AS span_start,
                        uniqExact(msg_id) AS span_rows
                 FROM {rows_table} WHERE key = ? AND time >= toDateTime(?) AND time <= toDateTime(?)",
                clamp_time(segment.start)
            ),
        });
    }
    let sql = format!(
        "SELECT segment, span_start, span_rows FROM ({})",
        parts.join(" UNION ALL ")
    );
    let rows: Vec<SpanRow> = bind_all(client.query(&sql), &binds)
        .fetch_all()
        .await
        .map_err(ApiError::unavailable)?;
    let mut spans = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(segment) = segments.get(row.segment as usize) else {
            continue;
        };
        if row.span_rows == 0 {
            continue;
        }
        let start = u64::from(row.span_start);
        let (level, end) = match segment.source {
            Source::Rollup(level) => (Some(level), level.next(start).min(segment.end)),
            Source::Facts => (None, segment.end),
        };
        spans.push(Span {
            start,
            end,
            level,
            rows: row.span_rows,
        });
    }
    spans.sort_by_key(|span| span.start);
    Ok(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start: u64, end: u64, level: Option<Level>, rows: u64) -> Span {
        Span {
            start,
            end,
            level,
            rows,
        }
    }

    #[test]
    fn a_page_in_hours_and_edges_is_read_from_them() {
        let spans = [
            span(0, 3600, Some(Level::Hour), 50),
            span(3600, 7200, Some(Level::Hour), 50),
            span(7200, 7260, None, 30),
        ];
        // Newest first: the edge's 30 rows, then 70 of the hour before.
        assert_eq!(
            locate(&spans, Order::Desc, 0, 100),
            Located::Page {
                start: 0,
                end: 7260,
                skip: 0
            }
        );
        assert_eq!(
            locate(&spans, Order::Desc, 40, 20),
            Located::Page {
                start: 3600,
                end: 7200,
                skip: 10
            }
        );
        assert_eq!(
            locate(&spans, Order::Asc, 60, 10),
            Located::Page {
                start: 3600,
                end: 7200,
                skip: 10
            }
        );
    }

    #[test]
    fn coarse_spans_at_the_page_s_ends_are_cut_first() {
        let day = 86_400;
        let spans = [
            span(0, 31 * day, Some(Level::Month), 5000),
            span(31 * day, 32 * day, Some(Level::Day), 20),
            span(32 * day, 32 * day + 3600, Some(Level::Hour), 10),
        ];
        // The first page ends inside the month: cut it.
        assert_eq!(locate(&spans, Order::Desc, 0, 100), Located::Cut(0));
        // Small coarse spans are read whole.
        assert_eq!(
            locate(&spans, Order::Desc, 0, 30),
            Located::Page {
                start: 31 * day,
                end: 32 * day + 3600,
                skip: 0
            }
        );
        assert_eq!(locate(&spans, Order::Asc, 0, 1), Located::Cut(0));
    }
}
