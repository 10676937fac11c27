//! Rollups: per plugin, hourly, daily, monthly and yearly aggregates that the api reads instead
//! of scanning every fact, so a statistic over all of history costs the same at any size.
//!
//! Facts stay the source of truth; a rollup row is only ever *recomputed* from what lies below
//! it — an hour from the facts, a day or a month from its hours (a rebuild reads a month from its
//! days), a year from its months — and inserted beside the rows of earlier recomputations. Each
//! batch recomputes the (key, period)s it touched after its facts are stored and before it acks
//! ([`recompute_touched`]).
//!
//! Why no version clock is needed: a (key, period)'s answer can only grow as facts arrive (a
//! count or a set of distinct values gets bigger, a latest value later), so every row inserted
//! for it is the answer over a *subset* of the final facts, and the row of the recomputation
//! that read last is the answer over all of them. Readers therefore take the greatest `count`,
//! the greatest `(timestamp, msg_id, value)`, or the union of the distinct sets — whatever order
//! concurrent workers inserted in, and whether or not merges ran. The argument in full is in
//! ARCHITECTURE.md ("Rollups").
//!
//! The operator commands live here too: [`rebuild_month`] and [`rebuild_year`] recompute the
//! levels from the facts, and [`check_month`] and [`check_year`] compare them with the same
//! answers computed from the facts.

use std::collections::{BTreeMap, BTreeSet};

use clickhouse::Row;
use serde::Deserialize;
use statscache_shared::config::StatisticKind;
use statscache_shared::period::Level;
use statscache_shared::schema::{rollup_table, rollup_value_columns};
use statscache_shared::sql::{bind_all, clamp_time, key_filter, placeholders, Bound};

use crate::rows::FactRow;

/// Which rows of one level a recomputation covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    /// Only these keys; empty means every key.
    pub keys: Vec<String>,
    /// Periods starting in `[start, end)`.
    pub start: u64,
    pub end: u64,
    /// Only these period starts; empty means every period in the range.
    pub periods: Vec<u64>,
}

impl Scope {
    /// Every key and period of `level` in `[start, end)`, widened to whole periods.
    pub fn range(level: Level, start: u64, end: u64) -> Scope {
        Scope {
            keys: Vec::new(),
            start: level.start(start),
            end: level.ceil(end),
            periods: Vec::new(),
        }
    }

    /// The SQL condition on `column` (a `DateTime` cut by `level`), with its values in bind order.
    fn condition(&self, level: Level, column: &str) -> (String, Vec<Bound>) {
        let mut sql = format!("{column} >= toDateTime(?) AND {column} <= toDateTime(?)");
        let mut binds = vec![
            Bound::Time(clamp_time(self.start)),
            Bound::Time(clamp_time(self.end.saturating_sub(1))),
        ];
        sql.push_str(&key_filter(&self.keys, &mut binds));
        if !self.periods.is_empty() {
            let period = level.sql(column);
            sql.push_str(&format!(
                " AND {period} IN ({})",
                placeholders(self.periods.len())
            ));
            for start in &self.periods {
                binds.push(Bound::Time(clamp_time(*start)));
            }
        }
        (sql, binds)
    }
}

/// The keys and hours one batch wrote facts for, in one plugin's table.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Touched {
    pub keys: BTreeSet<String>,
    pub hours: BTreeSet<u64>,
}

impl Touched {
    pub fn of(rows: &[FactRow]) -> Touched {
        let mut touched = Touched::default();
        for row in rows {
            touched.keys.insert(row.key.clone());
            touched.hours.insert(Level::Hour.start(u64::from(row.time)));
        }
        touched
    }

    /// The recomputation of `level` this batch needs: its keys, in the periods its hours lie in.
    pub fn scope(&self, level: Level) -> Option<Scope> {
        let periods: BTreeSet<u64> = self.hours.iter().map(|hour| level.start(*hour)).collect();
        let first = *periods.first()?;
        let last = *periods.last()?;
        Some(Scope {
            keys: self.keys.iter().cloned().collect(),
            start: first,
            end: level.next(last),
            periods: periods.into_iter().collect(),
        })
    }
}

/// Recomputes the rows of `level` in `scope` of the plugin whose facts are in `stat_table`, from
/// the finer level `from` (the facts if `None`), and inserts them beside the older rows.
pub async fn recompute(
    client: &clickhouse::Client,
    stat_table: &str,
    kind: StatisticKind,
    level: Level,
    from: Option<Level>,
    scope: &Scope,
) -> Result<(), clickhouse::error::Error> {
    let target = rollup_table(stat_table, level);
    let (source, column) = match from {
        None => (stat_table.to_string(), "time"),
        Some(finer) => (rollup_table(stat_table, finer), "period"),
    };
    let (condition, binds) = scope.condition(level, column);
    let period = level.sql(column);
    let select = match (kind, from) {
        (StatisticKind::Count, None) => format!(
            "SELECT key, toDateTime({period}) AS rollup_period, uniqExact(msg_id)
             FROM {source} WHERE {condition} GROUP BY key, rollup_period"
        ),
        (StatisticKind::Count, Some(_)) => format!(
            "SELECT key, toDateTime({period}) AS rollup_period, sum(period_count)
             FROM (SELECT key, period, max(count) AS period_count FROM {source}
                   WHERE {condition} GROUP BY key, period)
             GROUP BY key, rollup_period"
        ),
        (StatisticKind::Latest, _) => format!(
            "SELECT key, toDateTime({period}) AS rollup_period, timestamp, msg_id, value
             FROM {source} WHERE {condition}
             ORDER BY key, rollup_period, timestamp DESC, msg_id DESC, value DESC
             LIMIT 1 BY key, rollup_period"
        ),
        (StatisticKind::DistinctCount, None) => format!(
            "SELECT key, toDateTime({period}) AS rollup_period, uniqExactState(value)
             FROM {source} WHERE {condition} GROUP BY key, rollup_period"
        ),
        (StatisticKind::DistinctCount, Some(_)) => format!(
            "SELECT key, toDateTime({period}) AS rollup_period,
                    uniqExactMergeState(distinct_values)
             FROM {source} WHERE {condition} GROUP BY key, rollup_period"
        ),
    };
    let columns = rollup_value_columns(kind);
    let insert = format!("INSERT INTO {target} (key, period, {columns}) {select}");
    bind_all(client.query(&insert), &binds).execute().await
}

/// Recomputes every level for what one batch touched, each from the level below it once that
/// is stored: the hours from the facts, then the days and the months at once, both from the
/// hours, then the years from the months. Why months from hours rather than from days: it saves
/// a round trip on every batch's way to its ack, for a read of at most one row per hour of a
/// touched key's month. Years cannot be read from the hours as cheaply (up to 8 784 rows per
/// key), so they take a third round, of at most twelve rows per touched key. Returns the number
/// of periods recomputed per level.
pub async fn recompute_touched(
    client: &clickhouse::Client,
    stat_table: &str,
    kind: StatisticKind,
    touched: &Touched,
) -> Result<Vec<(Level, usize)>, clickhouse::error::Error> {
    let mut recomputed = Vec::new();
    let Some(hours) = touched.scope(Level::Hour) else {
        return Ok(recomputed);
    };
    recompute(client, stat_table, kind, Level::Hour, None, &hours).await?;
    recomputed.push((Level::Hour, hours.periods.len()));
    let mut coarser_scopes = Vec::new();
    for level in [Level::Day, Level::Month] {
        if let Some(scope) = touched.scope(level) {
            coarser_scopes.push((level, scope));
        }
    }
    let mut coarser = Vec::new();
    for (level, scope) in &coarser_scopes {
        coarser.push(recompute(
            client,
            stat_table,
            kind,
            *level,
            Some(Level::Hour),
            scope,
        ));
        recomputed.push((*level, scope.periods.len()));
    }
    futures::future::try_join_all(coarser).await?;
    if let Some(years) = touched.scope(Level::Year) {
        recompute_years(client, stat_table, kind, &years).await?;
        recomputed.push((Level::Year, years.periods.len()));
    }
    Ok(recomputed)
}

#[derive(Debug, Row, Deserialize)]
struct FactSpan {
    first: u32,
    last: u32,
    facts: u64,
}

/// The months holding facts of `stat_table` at or after `since`: the units of rebuild and check.
pub async fn months_with_facts(
    client: &clickhouse::Client,
    stat_table: &str,
    since: u64,
    until: u64,
) -> Result<Vec<u64>, clickhouse::error::Error> {
    let span: FactSpan = client
        .query(&format!(
            "SELECT toUInt32(min(time)) AS first, toUInt32(max(time)) AS last, count() AS facts
             FROM {stat_table} WHERE time >= toDateTime(?) AND time <= toDateTime(?)"
        ))
        .bind(clamp_time(since))
        .bind(clamp_time(until))
        .fetch_one()
        .await?;
    let mut months = Vec::new();
    if span.facts == 0 {
        return Ok(months);
    }
    let mut month = Level::Month.start(u64::from(span.first));
    while month <= u64::from(span.last) {
        months.push(month);
        month = Level::Month.next(month);
    }
    Ok(months)
}

/// The levels whose periods lie within a month: what [`rebuild_month`] and [`check_month`] cover.
const MONTH_LEVELS: [Level; 3] = [Level::Hour, Level::Day, Level::Month];

/// Recomputes the hours, days and month of one month from the facts (a month from its days).
pub async fn rebuild_month(
    client: &clickhouse::Client,
    stat_table: &str,
    kind: StatisticKind,
    month: u64,
) -> Result<(), clickhouse::error::Error> {
    let end = Level::Month.next(month);
    for level in MONTH_LEVELS {
        let scope = Scope::range(level, month, end);
        recompute(client, stat_table, kind, level, level.source(), &scope).await?;
    }
    Ok(())
}

/// Recomputes the year starting at (or containing) `year` from its monthly rows: run once the
/// months of the year that a rebuild covers are rebuilt.
pub async fn rebuild_year(
    client: &clickhouse::Client,
    stat_table: &str,
    kind: StatisticKind,
    year: u64,
) -> Result<(), clickhouse::error::Error> {
    let scope = Scope::range(Level::Year, year, Level::Year.next(year));
    recompute_years(client, stat_table, kind, &scope).await
}

/// Recomputes the years of `scope` from their months, the one source years have.
async fn recompute_years(
    client: &clickhouse::Client,
    stat_table: &str,
    kind: StatisticKind,
    scope: &Scope,
) -> Result<(), clickhouse::error::Error> {
    let from = Level::Year.source();
    recompute(client, stat_table, kind, Level::Year, from, scope).await
}

/// What a [`Difference`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// A key's answer in a rollup.
    Rollup,
    /// A period's number of keys in `rollup_key_counts` (`key` is then empty).
    KeyCount,
}

/// A (level, period, key) whose rollup answer, or a (level, period) whose key count, differs
/// from the facts'.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub subject: Subject,
    pub level: Level,
    pub period: u32,
    pub key: String,
    /// `None` where that side has no row.
    pub facts: Option<String>,
    pub rollup: Option<String>,
}

#[derive(Debug, Row, Deserialize)]
struct Answer {
    period: u32,
    key: String,
    answer: String,
}

/// Compares the hourly, daily and monthly rows of one month with the same answers computed
/// from the facts.
pub async fn check_month(
    client: &clickhouse::Client,
    stat_table: &str,
    kind: StatisticKind,
    month: u64,
) -> Result<Vec<Difference>, clickhouse::error::Error> {
    let end = Level::Month.next(month);
    let mut differences = Vec::new();
    for level in MONTH_LEVELS {
        let scope = Scope::range(level, month, end);
        differences.extend(check_level(client, stat_table, kind, level, &scope).await?);
    }
    Ok(differences)
}

/// Compares the yearly rows of the year starting at (or containing) `year` with the same
/// answers computed from the facts.
pub async fn check_year(
    client: &clickhouse::Client,
    stat_table: &str,
    kind: StatisticKind,
    year: u64,
) -> Result<Vec<Difference>, clickhouse::error::Error> {
    let scope = Scope::range(Level::Year, year, Level::Year.next(year));
    check_level(client, stat_table, kind, Level::Year, &scope).await
}

/// The differences between `level`'s rows in `scope` and the facts' answers.
async fn check_level(
    client: &clickhouse::Client,
    stat_table: &str,
    kind: StatisticKind,
    level: Level,
    scope: &Scope,
) -> Result<Vec<Difference>, clickhouse::error::Error> {
    let (fact_condition, binds) = scope.condition(level, "time");
    let (rollup_condition, _) = scope.condition(level, "period");
    let facts_sql = facts_answer_sql(stat_table, kind, level, &fact_condition);
    let rollup_sql = rollup_answer_sql(&rollup_table(stat_table, level), kind, &rollup_condition);
    let from_facts = answers(client, &facts_sql, &binds).await?;
    let from_rollup = answers(client, &rollup_sql, &binds).await?;
    Ok(compare(level, Subject::Rollup, from_facts, from_rollup))
}

/// The rows of `sql` (period, key, answer) by (period, key).
pub(crate) async fn answers(
    client: &clickhouse::Client,
    sql: &str,
    binds: &[Bound],
) -> Result<BTreeMap<(u32, String), String>, clickhouse::error::Error> {
    let rows: Vec<Answer> = bind_all(client.query(sql), binds).fetch_all().await?;
    let mut by_period_and_key = BTreeMap::new();
    for row in rows {
        by_period_and_key.insert((row.period, row.key), row.answer);
    }
    Ok(by_period_and_key)
}

/// What a latest row says, as one comparable string.
const LATEST_ANSWER: &str = "concat(toString(timestamp), ' ', msg_id, ' ', value)";

fn facts_answer_sql(
    stat_table: &str,
    kind: StatisticKind,
    level: Level,
    condition: &str,
) -> String {
    let period = level.sql("time");
    match kind {
        StatisticKind::Count => format!(
            "SELECT {period} AS period, key, toString(uniqExact(msg_id)) AS answer
             FROM {stat_table} WHERE {condition} GROUP BY period, key"
        ),
        StatisticKind::DistinctCount => format!(
            "SELECT {period} AS period, key, toString(uniqExact(value)) AS answer
             FROM {stat_table} WHERE {condition} GROUP BY period, key"
        ),
        StatisticKind::Latest => format!(
            "SELECT {period} AS period, key, {LATEST_ANSWER} AS answer
             FROM {stat_table} WHERE {condition}
             ORDER BY period, key, timestamp DESC, msg_id DESC, value DESC LIMIT 1 BY period, key"
        ),
    }
}

fn rollup_answer_sql(rollup: &str, kind: StatisticKind, condition: &str) -> String {
    match kind {
        StatisticKind::Count => format!(
            "SELECT toUInt32(period) AS rollup_period, key, toString(max(count)) AS answer
             FROM {rollup} WHERE {condition} GROUP BY rollup_period, key"
        ),
        StatisticKind::DistinctCount => format!(
            "SELECT toUInt32(period) AS rollup_period, key,
                    toString(uniqExactMerge(distinct_values)) AS answer
             FROM {rollup} WHERE {condition} GROUP BY rollup_period, key"
        ),
        StatisticKind::Latest => format!(
            "SELECT toUInt32(period) AS rollup_period, key, {LATEST_ANSWER} AS answer
             FROM {rollup} WHERE {condition}
             ORDER BY rollup_period, key, timestamp DESC, msg_id DESC, value DESC
             LIMIT 1 BY rollup_period, key"
        ),
    }
}

/// The differences between answers from the facts and from derived rows, about `subject`.
pub(crate) fn compare(
    level: Level,
    subject: Subject,
    from_facts: BTreeMap<(u32, String), String>,
    mut from_rollup: BTreeMap<(u32, String), String>,
) -> Vec<Difference> {
    let mut differences = Vec::new();
    for ((period, key), facts_answer) in from_facts {
        let rollup_answer = from_rollup.remove(&(period, key.clone()));
        if rollup_answer.as_deref() != Some(facts_answer.as_str()) {
            differences.push(Difference {
                subject,
                level,
                period,
                key,
                facts: Some(facts_answer),
                rollup: rollup_answer,
            });
        }
    }
    for ((period, key), rollup_answer) in from_rollup {
        differences.push(Difference {
            subject,
            level,
            period,
            key,
            facts: None,
            rollup: Some(rollup_answer),
        });
    }
    differences
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(time: u32, key: &str) -> FactRow {
        FactRow {
            time,
            timestamp: f64::from(time),
            msg_id: format!("id-{time}"),
            key: key.to_string(),
            value: String::new(),
        }
    }

    #[test]
    fn a_batch_touches_its_keys_in_the_periods_of_its_facts() {
        // 2024-01-31T23:30Z and 2024-02-01T00:10Z: two hours, two days, two months.
        let touched = Touched::of(&[fact(1_706_743_800, "a"), fact(1_706_746_200, "b")]);
        let hours = touched.scope(Level::Hour).expect("hours");
        assert_eq!(hours.periods, vec![1_706_742_000, 1_706_745_600]);
        assert_eq!(hours.keys, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(hours.end, 1_706_749_200);
        let months = touched.scope(Level::Month).expect("months");
        assert_eq!(months.periods, vec![1_704_067_200, 1_706_745_600]);
        assert_eq!(months.end, 1_709_251_200);
        assert_eq!(Touched::default().scope(Level::Day), None);
    }

    #[test]
    fn differences_name_both_sides() {
        let facts = BTreeMap::from([((0, "a".to_string()), "2".to_string())]);
        let rollup = BTreeMap::from([
            ((0, "a".to_string()), "1".to_string()),
            ((3600, "b".to_string()), "1".to_string()),
        ]);
        let differences = compare(Level::Hour, Subject::Rollup, facts, rollup);
        assert_eq!(differences.len(), 2);
        assert_eq!(differences[0].rollup.as_deref(), Some("1"));
        assert_eq!(differences[1].facts, None);
    }
}
