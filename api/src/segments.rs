//! The read path of a statistic: its time range cut into aligned segments, each read from the
//! coarsest table that answers it exactly — whole years from the yearly rollup, whole months
//! from the monthly one, whole days from the daily one, whole hours from the hourly one, the
//! ragged edges from the facts — so a request over all of history reads a row per key and year
//! (plus the months, days and hours of its edges) instead of every fact.
//!
//! A level can serve a bucket only if every bucket is a union of the level's periods: minutes
//! need the facts, hours the hourly rollup at most, days and weeks (Mondays are day boundaries)
//! the daily one, months the monthly one, and `all` any level.
//!
//! Segments are disjoint in time and a message's facts all share its one `time`, so per (bucket,
//! key) the segments' partial answers combine exactly: counts add up, distinct sets merge, the
//! latest is the greatest `(timestamp, msg_id, value)`. Within one rollup (key, period) the rows of
//! several recomputations are combined as `statscache_shared::schema` documents (greatest count,
//! merged states, greatest latest).
//!
//! Cost at scale: the answer to "per day, per key, over all history" has as many rows as the daily
//! rollup, so the api never reads it whole: it reads the rows per bucket first
//! ([`bucket_rows_sql`], keys and times only) and then the answer of the page's buckets alone
//! (`bucket_pages`); without a key filter, whole days and months take their rows per bucket
//! from `rollup_key_counts`, one row per period. A segment whose periods *are* the buckets (days read from the daily rollup
//! for `bucket=day`), or the only segment, already holds whole (bucket, key) answers: it skips
//! the final re-aggregation, which only the few rows of the partial segments at the edges go
//! through. Segments summed over coarser buckets (`bucket=all` from years) are read with
//! `FINAL`: the merge-on-read of the sorted parts keeps the greatest count per (key, period) in
//! one streaming pass, without a hash table as large as the rollup.

use statscache_shared::config::StatisticKind;
use statscache_shared::period::Level;
use statscache_shared::schema::{rollup_table, KEY_COUNT_LEVELS, ROLLUP_KEYS, ROLLUP_KEY_COUNTS};
use statscache_shared::sql::{clamp_time, key_filter, Bound};

use crate::statistics::Bucket;

/// Where a segment is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Facts,
    Rollup(Level),
}

/// Seconds `[start, end)` read from `source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub source: Source,
    pub start: u64,
    pub end: u64,
}

/// The coarsest rollup level whose periods fit inside every bucket of `bucket`.
pub fn coarsest_level(bucket: Bucket) -> Option<Level> {
    match bucket {
        Bucket::Minute => None,
        Bucket::Hour => Some(Level::Hour),
        Bucket::Day | Bucket::Week => Some(Level::Day),
        Bucket::Month => Some(Level::Month),
        Bucket::All => Some(Level::Year),
    }
}

/// The level whose periods are exactly the buckets of `bucket`, if any.
fn bucket_level(bucket: Bucket) -> Option<Level> {
    match bucket {
        Bucket::Hour => Some(Level::Hour),
        Bucket::Day => Some(Level::Day),
        Bucket::Month => Some(Level::Month),
        Bucket::Minute | Bucket::Week | Bucket::All => None,
    }
}

/// Whether `segment` holds whole (bucket, key) answers: its periods are the buckets, or it is
/// the only segment (each segment groups by bucket and key itself).
fn holds_whole_buckets(segment: &Segment, bucket: Bucket, only_segment: bool) -> bool {
    only_segment
        || matches!(segment.source, Source::Rollup(level) if Some(level) == bucket_level(bucket))
}

/// Cuts `[start, end)` into segments: the coarsest periods (up to `coarsest`) that fit
/// whole, finer ones around them, facts at the edges. No segment is empty.
pub fn decompose(start: u64, end: u64, coarsest: Option<Level>) -> Vec<Segment> {
    let mut segments = Vec::new();
    if start < end {
        cover(start, end, Source::Facts, coarsest, &mut segments);
    }
    segments
}

/// Covers `[start, end)` with whole periods of the level coarser than `finer` (recursively),
/// leaving the edges to `finer`.
fn cover(start: u64, end: u64, finer: Source, coarsest: Option<Level>, out: &mut Vec<Segment>) {
    let coarser = match finer {
        Source::Facts => Some(Level::Hour),
        Source::Rollup(level) => level.coarser(),
    };
    let Some(coarser) = coarser.filter(|level| Some(*level) <= coarsest) else {
        out.push(Segment {
            source: finer,
            start,
            end,
        });
        return;
    };
    let inner_start = coarser.ceil(start);
    let inner_end = coarser.start(end);
    if inner_start >= inner_end {
        out.push(Segment {
            source: finer,
            start,
            end,
        });
        return;
    }
    if start < inner_start {
        out.push(Segment {
            source: finer,
            start,
            end: inner_start,
        });
    }
    cover(
        inner_start,
        inner_end,
        Source::Rollup(coarser),
        coarsest,
        out,
    );
    if inner_end < end {
        out.push(Segment {
            source: finer,
            start: inner_end,
            end,
        });
    }
}

/// The SQL of a statistic over `segments` of `table`: one row per (bucket, key) with columns
/// `bucket, key, count` (counts) or `bucket, key, value, timestamp, msg_id` (latest), and the
/// values to bind, in order.
pub fn statistic_sql(
    table: &str,
    kind: StatisticKind,
    bucket: Bucket,
    keys: &[String],
    segments: &[Segment],
) -> (String, Vec<Bound>) {
    let mut binds = Vec::new();
    let sql = match kind {
        StatisticKind::Count => count_sql(table, bucket, keys, segments, &mut binds),
        StatisticKind::DistinctCount => {
            let union = union_sql(table, kind, bucket, keys, segments, &mut binds);
            format!(
                "SELECT bucket, key, uniqExactMerge(segment_state) AS count FROM ({union})
                 GROUP BY bucket, key"
            )
        }
        StatisticKind::Latest => {
            let union = union_sql(table, kind, bucket, keys, segments, &mut binds);
            format!(
                "SELECT bucket, key, value, timestamp, msg_id FROM ({union})
                 ORDER BY bucket, key, timestamp DESC, msg_id DESC, value DESC
                 LIMIT 1 BY bucket, key"
            )
        }
    };
    (sql, binds)
}

/// Every segment's partial answer, one `UNION ALL`.
fn union_sql(
    table: &str,
    kind: StatisticKind,
    bucket: Bucket,
    keys: &[String],
    segments: &[Segment],
    binds: &mut Vec<Bound>,
) -> String {
    let mut parts = Vec::with_capacity(segments.len());
    for segment in segments {
        parts.push(segment_sql(table, kind, bucket, keys, segment, binds));
    }
    parts.join(" UNION ALL ")
}

/// A count statistic: the segments holding whole buckets pass their rows through, the others
/// are summed per (bucket, key). Their buckets never meet: a whole-bucket segment holds every
/// second of its buckets, and segments are disjoint in time.
fn count_sql(
    table: &str,
    bucket: Bucket,
    keys: &[String],
    segments: &[Segment],
    binds: &mut Vec<Bound>,
) -> String {
    let only_segment = segments.len() == 1;
    let mut parts = Vec::new();
    let mut partial = Vec::new();
    for segment in segments {
        if holds_whole_buckets(segment, bucket, only_segment) {
            let sql = segment_sql(table, StatisticKind::Count, bucket, keys, segment, binds);
            parts.push(format!(
                "SELECT bucket, key, segment_count AS count FROM ({sql})"
            ));
        } else {
            partial.push(*segment);
        }
    }
    if !partial.is_empty() {
        let union = union_sql(table, StatisticKind::Count, bucket, keys, &partial, binds);
        parts.push(format!(
            "SELECT bucket, key, sum(segment_count) AS count FROM ({union}) GROUP BY bucket, key"
        ));
    }
    parts.join(" UNION ALL ")
}

/// How many rows the answer has in each bucket, as columns `bucket, bucket_rows`: the distinct
/// keys with a row in any segment (a (bucket, key) is in the answer exactly when some segment
/// holds a row for it). Reads only keys and times, and merges no rollup rows, so it costs far
/// less than the answer itself; `bucket_pages` uses it to read only the buckets of one page.
///
/// Without a key filter, a segment of whole days (`bucket=day`) or months (`bucket=month`)
/// reads its buckets' rows from `rollup_key_counts`, one row per period however many keys it
/// has; only the edge segments count keys. Their buckets never meet those of the whole segment
/// (it holds every second of its buckets), so the two results are simply concatenated.
pub fn bucket_rows_sql(
    table: &str,
    bucket: Bucket,
    keys: &[String],
    segments: &[Segment],
) -> (String, Vec<Bound>) {
    let mut binds = Vec::new();
    let mut counted = Vec::new();
    let mut parts = Vec::with_capacity(segments.len());
    for segment in segments {
        match counted_level(bucket, keys, segment) {
            Some(level) => counted.push((level, segment)),
            None => {
                let (source, column, filter) = segment_source(table, keys, segment, &mut binds);
                let bucket_sql = bucket_of(bucket, segment, column);
                parts.push(format!(
                    "SELECT {bucket_sql} AS bucket, key FROM {source} WHERE {filter}"
                ));
            }
        }
    }
    let mut results = Vec::new();
    if !parts.is_empty() {
        let union = parts.join(" UNION ALL ");
        results.push(format!(
            "SELECT bucket, uniqExact(key) AS bucket_rows FROM ({union}) GROUP BY bucket"
        ));
    }
    for (level, segment) in counted {
        binds.push(Bound::Text(table.to_string()));
        binds.push(Bound::Text(level.name().to_string()));
        binds.push(Bound::Time(clamp_time(segment.start)));
        binds.push(Bound::Time(clamp_time(segment.end - 1)));
        results.push(format!(
            "SELECT toUInt32(period) AS bucket, max(keys) AS bucket_rows FROM {ROLLUP_KEY_COUNTS}
             WHERE stat_table = ? AND level = ? AND period >= toDateTime(?)
               AND period <= toDateTime(?)
             GROUP BY bucket"
        ));
    }
    let sql = match results.as_slice() {
        [only] => only.clone(),
        _ => format!(
            "SELECT bucket, bucket_rows FROM ({})",
            results.join(" UNION ALL ")
        ),
    };
    (sql, binds)
}

/// SQL for the keys of a page that lies within one whole day or month of an answer without a
/// key filter (`segments`, the page's, being that one period): its keys in key order, the page's
/// rows per page from its first row on, bound after the values returned (`LIMIT ? OFFSET ?`).
/// `None` for any other page.
///
/// Why: the rollups are sorted by key first, so the page's period alone, as a time condition,
/// reads its whole year partition — a year of the level's rows for a page of 25. The period's
/// presence rows (`rollup_keys`, sorted by plugin, level, period, then key) hold exactly the
/// keys with a row in that period, in the page's order; the page is then read with
/// `key IN (…)`, a few sort-key ranges.
pub fn page_keys_sql(
    table: &str,
    bucket: Bucket,
    keys: &[String],
    segments: &[Segment],
) -> Option<(String, Vec<Bound>)> {
    let [segment] = segments else {
        return None;
    };
    let level = counted_level(bucket, keys, segment)?;
    if segment.end != level.next(segment.start) {
        return None;
    }
    let sql = format!(
        "SELECT DISTINCT key FROM {ROLLUP_KEYS}
         WHERE stat_table = ? AND level = ? AND period = toDateTime(?)
         ORDER BY key LIMIT ? OFFSET ?"
    );
    let binds = vec![
        Bound::Text(table.to_string()),
        Bound::Text(level.name().to_string()),
        Bound::Time(clamp_time(segment.start)),
    ];
    Some((sql, binds))
}

/// The level whose key counts give `segment`'s rows per bucket: its periods are the buckets,
/// their keys are counted (`KEY_COUNT_LEVELS`), and no key filter narrows them.
fn counted_level(bucket: Bucket, keys: &[String], segment: &Segment) -> Option<Level> {
    let Source::Rollup(level) = segment.source else {
        return None;
    };
    let counted =
        keys.is_empty() && Some(level) == bucket_level(bucket) && KEY_COUNT_LEVELS.contains(&level);
    counted.then_some(level)
}

/// SQL for the bucket of a segment's rows: the period itself where the periods are the buckets
/// (cheaper than computing it, e.g. a month start, for every row), else computed from `column`.
fn bucket_of(bucket: Bucket, segment: &Segment, column: &str) -> String {
    match segment.source {
        Source::Rollup(level) if Some(level) == bucket_level(bucket) => {
            format!("toUInt32({column})")
        }
        _ => bucket.sql(column),
    }
}

/// The table a segment is read from, its time column, and the condition selecting the
/// segment's rows (its values appended to `binds`).
fn segment_source(
    table: &str,
    keys: &[String],
    segment: &Segment,
    binds: &mut Vec<Bound>,
) -> (String, &'static str, String) {
    let (source, column) = match segment.source {
        Source::Facts => (table.to_string(), "time"),
        Source::Rollup(level) => (rollup_table(table, level), "period"),
    };
    binds.push(Bound::Time(clamp_time(segment.start)));
    binds.push(Bound::Time(clamp_time(segment.end - 1)));
    let filter = format!(
        "{column} >= toDateTime(?) AND {column} <= toDateTime(?){}",
        key_filter(keys, binds)
    );
    (source, column, filter)
}

/// One segment's partial answer per (bucket, key).
fn segment_sql(
    table: &str,
    kind: StatisticKind,
    bucket: Bucket,
    keys: &[String],
    segment: &Segment,
    binds: &mut Vec<Bound>,
) -> String {
    let (source, column, filter) = segment_source(table, keys, segment, binds);
    let bucket_sql = bucket_of(bucket, segment, column);
    match (kind, segment.source) {
        (StatisticKind::Count, Source::Facts) => format!(
            "SELECT {bucket_sql} AS bucket, key, uniqExact(msg_id) AS segment_count
             FROM {source} WHERE {filter} GROUP BY bucket, key"
        ),
        // `bucket=all` has one bucket, so its page spans the whole range: FINAL merges on
        // read, keeping the greatest count per (key, period), without a hash table that size.
        (StatisticKind::Count, Source::Rollup(_)) if bucket == Bucket::All => format!(
            "SELECT {bucket_sql} AS bucket, key, sum(count) AS segment_count
             FROM {source} FINAL WHERE {filter} GROUP BY bucket, key"
        ),
        // Other buckets are read a page at a time (`bucket_pages`): the greatest count per
        // (key, period) of a few periods is grouped, where FINAL would merge every row of the
        // parts around them (their sort key starts with `key`).
        (StatisticKind::Count, Source::Rollup(level)) if Some(level) == bucket_level(bucket) => {
            format!(
                "SELECT {bucket_sql} AS bucket, key, max(count) AS segment_count
                 FROM {source} WHERE {filter} GROUP BY bucket, key"
            )
        }
        (StatisticKind::Count, Source::Rollup(_)) => format!(
            "SELECT bucket, key, sum(period_count) AS segment_count FROM (
                 SELECT {bucket_sql} AS bucket, key, period, max(count) AS period_count
                 FROM {source} WHERE {filter} GROUP BY bucket, key, period)
             GROUP BY bucket, key"
        ),
        (StatisticKind::DistinctCount, Source::Facts) => format!(
            "SELECT {bucket_sql} AS bucket, key, uniqExactState(value) AS segment_state
             FROM {source} WHERE {filter} GROUP BY bucket, key"
        ),
        (StatisticKind::DistinctCount, Source::Rollup(_)) => format!(
            "SELECT {bucket_sql} AS bucket, key, uniqExactMergeState(distinct_values) AS segment_state
             FROM {source} WHERE {filter} GROUP BY bucket, key"
        ),
        (StatisticKind::Latest, _) => format!(
            "SELECT {bucket_sql} AS bucket, key, value, timestamp, msg_id
             FROM {source} WHERE {filter}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3600;
    const DAY: u64 = 86400;
    // 2024-01-01T00:00Z, a Monday and a month start.
    const JAN_1: u64 = 1_704_067_200;
    const FEB_1: u64 = 1_706_745_600;
    const MAR_1: u64 = 1_709_251_200;

    fn segment(source: Source, start: u64, end: u64) -> Segment {
        Segment { source, start, end }
    }

    /// Every second of `[start, end)` in exactly one segment, none empty.
    fn assert_tiles(segments: &[Segment], start: u64, end: u64) {
        let mut sorted = segments.to_vec();
        sorted.sort_by_key(|segment| segment.start);
        let mut at = start;
        for segment in &sorted {
            assert_eq!(segment.start, at, "gap or overlap in {segments:?}");
            assert!(segment.start < segment.end, "empty segment in {segments:?}");
            at = segment.end;
        }
        assert_eq!(at, end);
    }

    #[test]
    fn whole_months_days_and_hours_with_ragged_edges_from_facts() {
        let start = JAN_1 - DAY - HOUR - 5; // 2023-12-30T22:59:55
        let end = MAR_1 + DAY + HOUR + 7; // 2024-03-02T01:00:07
        let segments = decompose(start, end, Some(Level::Month));
        assert_tiles(&segments, start, end);
        assert_eq!(
            segments,
            vec![
                segment(Source::Facts, start, JAN_1 - DAY - HOUR),
                segment(Source::Rollup(Level::Hour), JAN_1 - DAY - HOUR, JAN_1 - DAY),
                segment(Source::Rollup(Level::Day), JAN_1 - DAY, JAN_1),
                segment(Source::Rollup(Level::Month), JAN_1, MAR_1),
                segment(Source::Rollup(Level::Day), MAR_1, MAR_1 + DAY),
                segment(Source::Rollup(Level::Hour), MAR_1 + DAY, MAR_1 + DAY + HOUR),
                segment(Source::Facts, MAR_1 + DAY + HOUR, end),
            ]
        );
    }

    #[test]
    fn a_range_on_boundaries_needs_no_facts() {
        let segments = decompose(JAN_1, MAR_1, Some(Level::Month));
        assert_eq!(
            segments,
            vec![segment(Source::Rollup(Level::Month), JAN_1, MAR_1)]
        );
        let segments = decompose(JAN_1, FEB_1 + 3 * DAY, Some(Level::Month));
        assert_eq!(
            segments,
            vec![
                segment(Source::Rollup(Level::Month), JAN_1, FEB_1),
                segment(Source::Rollup(Level::Day), FEB_1, FEB_1 + 3 * DAY),
            ]
        );
    }

    #[test]
    fn sub_hour_ranges_are_read_from_facts() {
        let segments = decompose(JAN_1 + 60, JAN_1 + 120, Some(Level::Month));
        assert_eq!(
            segments,
            vec![segment(Source::Facts, JAN_1 + 60, JAN_1 + 120)]
        );
        // Less than an hour but across an hour boundary: still facts only.
        let segments = decompose(JAN_1 - 60, JAN_1 + 60, Some(Level::Month));
        assert_eq!(
            segments,
            vec![segment(Source::Facts, JAN_1 - 60, JAN_1 + 60)]
        );
        assert!(decompose(JAN_1, JAN_1, Some(Level::Month)).is_empty());
    }

    #[test]
    fn the_bucket_bounds_the_level() {
        // Minutes: facts only, whatever the range.
        let segments = decompose(JAN_1, MAR_1, coarsest_level(Bucket::Minute));
        assert_eq!(segments, vec![segment(Source::Facts, JAN_1, MAR_1)]);
        // Hours: never days or months.
        let segments = decompose(JAN_1, JAN_1 + 3 * DAY, coarsest_level(Bucket::Hour));
        assert_eq!(
            segments,
            vec![segment(Source::Rollup(Level::Hour), JAN_1, JAN_1 + 3 * DAY)]
        );
        // Weeks start on Monday 00:00 UTC, a day boundary: days serve them, months do not.
        let monday = JAN_1 + 7 * DAY;
        assert_eq!(
            (monday - 345_600) % 604_800,
            0,
            "the API's weeks start then"
        );
        let segments = decompose(JAN_1 + 5, MAR_1, coarsest_level(Bucket::Week));
        assert_tiles(&segments, JAN_1 + 5, MAR_1);
        assert!(segments
            .iter()
            .all(|segment| segment.source != Source::Rollup(Level::Month)));
        assert!(segments.contains(&segment(Source::Rollup(Level::Day), JAN_1 + DAY, MAR_1)));
    }

    #[test]
    fn all_history_reads_whole_years() {
        const JAN_1_2025: u64 = 1_735_689_600;
        // From the epoch to the end of an open year (what a request without a start reads when
        // nothing is stored past its end): one yearly segment, whatever the history's length.
        let segments = decompose(0, JAN_1_2025, coarsest_level(Bucket::All));
        assert_eq!(
            segments,
            vec![segment(Source::Rollup(Level::Year), 0, JAN_1_2025)]
        );
        // A start inside a year: its months, then whole years.
        let segments = decompose(FEB_1, JAN_1_2025 + DAY, coarsest_level(Bucket::All));
        assert_eq!(
            segments,
            vec![
                segment(Source::Rollup(Level::Month), FEB_1, JAN_1_2025),
                segment(Source::Rollup(Level::Day), JAN_1_2025, JAN_1_2025 + DAY),
            ]
        );
        let segments = decompose(JAN_1 - DAY, JAN_1_2025, coarsest_level(Bucket::All));
        assert_eq!(
            segments,
            vec![
                segment(Source::Rollup(Level::Day), JAN_1 - DAY, JAN_1),
                segment(Source::Rollup(Level::Year), JAN_1, JAN_1_2025),
            ]
        );
        // Months never read years.
        let segments = decompose(0, JAN_1_2025, coarsest_level(Bucket::Month));
        assert_eq!(
            segments,
            vec![segment(Source::Rollup(Level::Month), 0, JAN_1_2025)]
        );
    }

    #[test]
    fn month_boundaries_follow_the_calendar() {
        // 2024 is a leap year: February has 29 days.
        let segments = decompose(FEB_1 - DAY, MAR_1 + DAY, Some(Level::Month));
        assert_eq!(
            segments,
            vec![
                segment(Source::Rollup(Level::Day), FEB_1 - DAY, FEB_1),
                segment(Source::Rollup(Level::Month), FEB_1, MAR_1),
                segment(Source::Rollup(Level::Day), MAR_1, MAR_1 + DAY),
            ]
        );
        assert_eq!(MAR_1 - FEB_1, 29 * DAY);
    }

    #[test]
    fn counts_pass_whole_buckets_through_and_sum_only_the_edges() {
        let start = JAN_1 - HOUR - 5;
        let end = MAR_1 + 7;
        let segments = decompose(start, end, coarsest_level(Bucket::Day));
        let (sql, binds) = statistic_sql(
            "stat_volume",
            StatisticKind::Count,
            Bucket::Day,
            &[],
            &segments,
        );
        assert_eq!(sql.matches('?').count(), binds.len());
        // The days come straight from the daily rollup (greatest count per key and day), not
        // re-aggregated.
        assert!(sql.starts_with("SELECT bucket, key, segment_count AS count FROM (SELECT"));
        assert!(sql.contains("FROM stat_volume_daily WHERE"));
        assert!(
            !sql.contains("FINAL"),
            "a page's few periods are grouped: {sql}"
        );
        // Only the edges (an hour, facts) go through the sum per (bucket, key).
        let (_, summed) = sql
            .split_once("sum(segment_count)")
            .expect("the edges are summed");
        assert!(!summed.contains("stat_volume_daily"));
        assert!(summed.contains("FROM stat_volume_hourly WHERE"));
        assert!(summed.contains("FROM stat_volume WHERE"));
    }

    #[test]
    fn whole_days_and_months_count_their_rows_from_the_key_counts() {
        let start = JAN_1 - HOUR - 5;
        let end = MAR_1 + 7;
        for (bucket, level) in [(Bucket::Day, "daily"), (Bucket::Month, "monthly")] {
            let segments = decompose(start, end, coarsest_level(bucket));
            let (sql, binds) = bucket_rows_sql("stat_volume", bucket, &[], &segments);
            assert_eq!(sql.matches('?').count(), binds.len());
            assert!(
                sql.starts_with("SELECT bucket, bucket_rows FROM ("),
                "{sql}"
            );
            assert!(sql.contains("FROM rollup_key_counts"), "{sql}");
            assert!(binds.contains(&Bound::Text(level.to_string())));
            assert!(!sql.contains(&format!("stat_volume_{level}")), "{sql}");
            // The edges still count their keys.
            assert!(sql.contains("uniqExact(key)"), "{sql}");
        }
        // A key filter, or buckets that are not days or months: every segment counts keys.
        let segments = decompose(start, end, coarsest_level(Bucket::Day));
        let (sql, _) = bucket_rows_sql("stat_volume", Bucket::Day, &["a".to_string()], &segments);
        assert!(!sql.contains("rollup_key_counts"), "{sql}");
        let segments = decompose(JAN_1, MAR_1, coarsest_level(Bucket::Week));
        let (sql, _) = bucket_rows_sql("stat_volume", Bucket::Week, &[], &segments);
        assert!(!sql.contains("rollup_key_counts"), "{sql}");
        // Whole months alone: one statement, no union.
        let segments = decompose(JAN_1, MAR_1, coarsest_level(Bucket::Month));
        let (sql, binds) = bucket_rows_sql("stat_volume", Bucket::Month, &[], &segments);
        assert!(
            sql.starts_with("SELECT toUInt32(period) AS bucket"),
            "{sql}"
        );
        assert_eq!(sql.matches('?').count(), binds.len());
    }

    #[test]
    fn a_page_within_one_whole_day_or_month_reads_its_keys_first() {
        let one_month = decompose(FEB_1, MAR_1, coarsest_level(Bucket::Month));
        let (sql, binds) =
            page_keys_sql("stat_volume", Bucket::Month, &[], &one_month).expect("one month");
        assert!(sql.contains("FROM rollup_keys"), "{sql}");
        assert!(binds.contains(&Bound::Text("monthly".to_string())));
        assert_eq!(
            sql.matches('?').count(),
            binds.len() + 2,
            "LIMIT and OFFSET follow"
        );
        let one_day = decompose(FEB_1, FEB_1 + DAY, coarsest_level(Bucket::Day));
        assert!(page_keys_sql("stat_volume", Bucket::Day, &[], &one_day).is_some());
        // Not: a key filter, two periods, a partial period, a bucket without key counts.
        let named = ["a".to_string()];
        assert!(page_keys_sql("stat_volume", Bucket::Month, &named, &one_month).is_none());
        let two_months = decompose(JAN_1, MAR_1, coarsest_level(Bucket::Month));
        assert!(page_keys_sql("stat_volume", Bucket::Month, &[], &two_months).is_none());
        let partial = decompose(FEB_1 + HOUR, MAR_1, coarsest_level(Bucket::Month));
        assert!(page_keys_sql("stat_volume", Bucket::Month, &[], &partial).is_none());
        let week = decompose(JAN_1, JAN_1 + 7 * DAY, coarsest_level(Bucket::Week));
        assert!(page_keys_sql("stat_volume", Bucket::Week, &[], &week).is_none());
    }

    #[test]
    fn a_lone_segment_is_not_aggregated_twice() {
        let segments = decompose(JAN_1, MAR_1, coarsest_level(Bucket::All));
        let (sql, _) = statistic_sql(
            "stat_volume",
            StatisticKind::Count,
            Bucket::All,
            &[],
            &segments,
        );
        assert_eq!(sql.matches("GROUP BY").count(), 1, "{sql}");
    }

    #[test]
    fn the_whole_representable_range_decomposes() {
        let end = u64::from(u32::MAX) + 1;
        let segments = decompose(0, end, Some(Level::Month));
        assert_tiles(&segments, 0, end);
        let (sql, binds) = statistic_sql(
            "stat_volume",
            StatisticKind::Count,
            Bucket::All,
            &["a".to_string()],
            &segments,
        );
        assert_eq!(sql.matches('?').count(), binds.len());
        assert!(sql.contains("stat_volume_monthly"));
        assert!(sql.contains("key IN (?)"));
    }
}
