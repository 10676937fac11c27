//! Per-period key counts: how many keys have facts in each day and month of a plugin, so that the
//! api counts the rows of a `bucket=day` or `bucket=month` answer from one row per period
//! (`rollup_key_counts`) instead of reading every (key, period) of the range, which grows with
//! history.
//!
//! Like a rollup, a count is only ever recomputed, never incremented: each batch writes the
//! presence rows of its facts — (plugin, level, period, key) in `rollup_keys` — in the same
//! round as the facts, and recounts the periods it touched before its ack ([`recount_touched`]).
//! A period's set of keys only grows, so every count inserted is the size of a subset of the
//! final set and readers take the greatest; the count that read last saw every presence row,
//! since each batch inserted its own before counting. ARCHITECTURE.md, "Rollups", has the
//! argument in full.

use std::collections::{BTreeMap, BTreeSet};

use statscache_shared::period::Level;
use statscache_shared::schema::{rollup_table, KEY_COUNT_LEVELS, ROLLUP_KEYS, ROLLUP_KEY_COUNTS};
use statscache_shared::sql::{bind_all, clamp_time, placeholders, Bound};

use crate::rollup::{self, Difference, Subject};
use crate::rows::KeyRow;

/// Recounts the keys of every (plugin, level, period) that `rows` (one batch's presence rows,
/// already stored) name, every plugin in one statement. Returns the number of periods.
pub async fn recount_touched<'a>(
    client: &clickhouse::Client,
    rows: impl IntoIterator<Item = &'a KeyRow>,
) -> Result<usize, clickhouse::error::Error> {
    let (condition, binds, periods) = touched_condition(rows);
    if periods == 0 {
        return Ok(0);
    }
    insert_counts(client, &condition, &binds).await?;
    Ok(periods)
}

/// The condition on `rollup_keys` selecting the periods `rows` name, its values, and how many
/// periods that is.
fn touched_condition<'a>(
    rows: impl IntoIterator<Item = &'a KeyRow>,
) -> (String, Vec<Bound>, usize) {
    let mut periods: BTreeMap<(&str, &str), BTreeSet<u32>> = BTreeMap::new();
    for row in rows {
        periods
            .entry((&row.stat_table, &row.level))
            .or_default()
            .insert(row.period);
    }
    let mut conditions = Vec::with_capacity(periods.len());
    let mut binds = Vec::new();
    let mut count = 0;
    for ((stat_table, level), starts) in &periods {
        let (Some(first), Some(last)) = (starts.first(), starts.last()) else {
            continue;
        };
        // The range lets the sort key prune; the list picks the periods inside it.
        conditions.push(format!(
            "(stat_table = ? AND level = ? AND period >= toDateTime(?) \
             AND period <= toDateTime(?) AND toUInt32(period) IN ({}))",
            placeholders(starts.len())
        ));
        binds.push(Bound::Text(stat_table.to_string()));
        binds.push(Bound::Text(level.to_string()));
        binds.push(Bound::Time(*first));
        binds.push(Bound::Time(*last));
        binds.extend(starts.iter().map(|start| Bound::Time(*start)));
        count += starts.len();
    }
    (conditions.join(" OR "), binds, count)
}

/// Inserts the number of keys of every (plugin, level, period) of `rollup_keys` matching
/// `condition`, read from the presence rows stored now.
async fn insert_counts(
    client: &clickhouse::Client,
    condition: &str,
    binds: &[Bound],
) -> Result<(), clickhouse::error::Error> {
    let insert = format!(
        "INSERT INTO {ROLLUP_KEY_COUNTS} (stat_table, level, period, keys)
         SELECT stat_table, level, period, uniqExact(key) FROM {ROLLUP_KEYS}
         WHERE {condition} GROUP BY stat_table, level, period"
    );
    bind_all(client.query(&insert), binds).execute().await
}

/// Writes the presence rows of `stat_table`'s days and months starting in `[start, end]` from
/// its daily and monthly rollups, then counts those periods. Run by a rebuild, for each month
/// once its rollups are recomputed from the facts, and by the one-off fill of an installation
/// older than key counts over all of history (its rollups hold a row per key with facts in a
/// period). Safe while workers run: a batch's presence rows are either seen by this count, or
/// stored after it began, and then that batch's own count, which follows, sees these.
pub async fn refill(
    client: &clickhouse::Client,
    stat_table: &str,
    start: u64,
    end: u64,
) -> Result<(), clickhouse::error::Error> {
    let range = [Bound::Time(clamp_time(start)), Bound::Time(clamp_time(end))];
    for level in KEY_COUNT_LEVELS {
        let insert = format!(
            "INSERT INTO {ROLLUP_KEYS} (stat_table, level, period, key)
             SELECT DISTINCT ?, ?, period, key FROM {}
             WHERE period >= toDateTime(?) AND period <= toDateTime(?)",
            rollup_table(stat_table, level)
        );
        let query = client.query(&insert).bind(stat_table).bind(level.name());
        bind_all(query, &range).execute().await?;
    }
    let mut binds = vec![Bound::Text(stat_table.to_string())];
    binds.extend(range);
    insert_counts(
        client,
        "stat_table = ? AND period >= toDateTime(?) AND period <= toDateTime(?)",
        &binds,
    )
    .await
}

/// [`refill`] over the month starting at `month`: what a rebuild runs once the month's rollups
/// are recomputed.
pub async fn refill_month(
    client: &clickhouse::Client,
    stat_table: &str,
    month: u64,
) -> Result<(), clickhouse::error::Error> {
    let month_end = Level::Month.next(month).saturating_sub(1);
    refill(client, stat_table, month, month_end).await
}

/// Compares the key counts of the days and the month of `month` with the distinct keys of the
/// facts there.
pub async fn check_month(
    client: &clickhouse::Client,
    stat_table: &str,
    month: u64,
) -> Result<Vec<Difference>, clickhouse::error::Error> {
    let range = [
        Bound::Time(clamp_time(month)),
        Bound::Time(clamp_time(Level::Month.next(month).saturating_sub(1))),
    ];
    let mut differences = Vec::new();
    for level in KEY_COUNT_LEVELS {
        let facts_sql = format!(
            "SELECT {} AS fact_period, '' AS no_key, toString(uniqExact(key)) AS answer
             FROM {stat_table} WHERE time >= toDateTime(?) AND time <= toDateTime(?)
             GROUP BY fact_period",
            level.sql("time")
        );
        let counts_sql = format!(
            "SELECT toUInt32(period) AS count_period, '' AS no_key,
                    toString(max(keys)) AS answer
             FROM {ROLLUP_KEY_COUNTS}
             WHERE stat_table = ? AND level = ? AND period >= toDateTime(?)
               AND period <= toDateTime(?)
             GROUP BY count_period"
        );
        let mut count_binds = vec![
            Bound::Text(stat_table.to_string()),
            Bound::Text(level.name().to_string()),
        ];
        count_binds.extend(range.iter().cloned());
        let from_facts = rollup::answers(client, &facts_sql, &range).await?;
        let from_counts = rollup::answers(client, &counts_sql, &count_binds).await?;
        differences.extend(rollup::compare(
            level,
            Subject::KeyCount,
            from_facts,
            from_counts,
        ));
    }
    Ok(differences)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fact_is_present_in_its_day_and_its_month() {
        // 2024-02-29T13:45:10Z.
        let rows = KeyRow::of("stat_volume", 1_709_214_310, "a");
        assert_eq!(
            (rows[0].level.as_str(), rows[0].period),
            ("daily", 1_709_164_800)
        );
        assert_eq!(
            (rows[1].level.as_str(), rows[1].period),
            ("monthly", 1_706_745_600)
        );
        assert!(rows
            .iter()
            .all(|row| row.key == "a" && row.stat_table == "stat_volume"));
    }

    #[test]
    fn a_batch_recounts_each_touched_period_once() {
        let mut rows = BTreeSet::new();
        for (table, time, key) in [
            ("stat_volume", 1_709_214_310, ""),
            ("stat_volume", 1_709_214_311, ""),
            ("stat_volume_by_topic", 1_709_214_310, "a"),
            ("stat_volume_by_topic", 1_709_300_000, "b"),
        ] {
            rows.extend(KeyRow::of(table, time, key));
        }
        let (condition, binds, periods) = touched_condition(&rows);
        // stat_volume: a day and a month; stat_volume_by_topic: 2024-02-29 and 2024-03-01, in
        // two months.
        assert_eq!(periods, 6);
        assert_eq!(condition.matches(" OR ").count(), 3, "{condition}");
        assert_eq!(condition.matches('?').count(), binds.len());
        assert_eq!(touched_condition(&BTreeSet::new()).2, 0);
    }
}
