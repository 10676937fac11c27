//! The plugins' tables made ready, and rebuilt month by month.
//!
//! Every role that writes (the service, `replay`, `rollup`, `generate`) first migrates the
//! schema and creates each plugin's fact and rollup tables; derived tables an installation
//! lacks (rollups, key counts, yearly rollups added by a later version) are filled from what it
//! has, once. [`rebuild_rollups`] is that fill and `rollup --rebuild` alike.

use statscache_shared::config::Config;
use statscache_shared::period::Level;
use statscache_shared::progress::Progress;
use statscache_shared::schema::{self, Fill};

use crate::{key_counts, plugin, rollup, WorkerError};

/// Migrates the schema and creates the plugins' fact and rollup tables. Rollups never filled
/// from the facts (an installation older than rollups, a plugin's first start) are filled
/// first, with the key counts, so the api does not read empty rollups over a full fact table
/// for long; key counts and yearly rollups never filled (an installation older than them) are
/// filled from the other rollups. Each fill is recorded only once complete: a worker stopped
/// during one fills again.
pub async fn prepare_tables(
    config: &Config,
    plugins: &[Box<dyn plugin::Plugin>],
) -> Result<clickhouse::Client, WorkerError> {
    schema::migrate(&config.clickhouse).await?;
    let clickhouse = schema::client(&config.clickhouse);
    let placement = schema::Placement::of(&config.clickhouse);
    for plugin in plugins {
        let info = plugin.info();
        schema::create_stat_table(&clickhouse, placement, &info.table).await?;
        schema::create_rollup_tables(&clickhouse, placement, &info.table, info.kind).await?;
        fill_once(&clickhouse, info).await?;
    }
    Ok(clickhouse)
}

/// The one-off fills of [`prepare_tables`] for one plugin.
async fn fill_once(
    clickhouse: &clickhouse::Client,
    info: &plugin::PluginInfo,
) -> Result<(), WorkerError> {
    let failed = |source| rollup_error(info, source);
    let table = &info.table;
    if !schema::filled(clickhouse, Fill::Rollups, table)
        .await
        .map_err(failed)?
    {
        tracing::info!(%table, "filling the rollups and key counts from the existing facts");
        rebuild_rollups(clickhouse, &[info], 0).await?;
        for fill in [Fill::Rollups, Fill::KeyCounts, Fill::YearlyRollups] {
            schema::record_filled(clickhouse, fill, table)
                .await
                .map_err(failed)?;
        }
        return Ok(());
    }
    if !schema::filled(clickhouse, Fill::KeyCounts, table)
        .await
        .map_err(failed)?
    {
        tracing::info!(%table, "filling the key counts from the existing rollups");
        key_counts::refill(clickhouse, table, 0, u64::from(u32::MAX))
            .await
            .map_err(failed)?;
        schema::record_filled(clickhouse, Fill::KeyCounts, table)
            .await
            .map_err(failed)?;
    }
    if !schema::filled(clickhouse, Fill::YearlyRollups, table)
        .await
        .map_err(failed)?
    {
        tracing::info!(%table, "filling the yearly rollups from the monthly ones");
        let months = rollup::months_with_facts(clickhouse, table, 0, u64::from(u32::MAX))
            .await
            .map_err(failed)?;
        let years: std::collections::BTreeSet<u64> = months
            .iter()
            .map(|month| Level::Year.start(*month))
            .collect();
        for year in years {
            rollup::rebuild_year(clickhouse, table, info.kind, year)
                .await
                .map_err(failed)?;
        }
        schema::record_filled(clickhouse, Fill::YearlyRollups, table)
            .await
            .map_err(failed)?;
    }
    Ok(())
}

/// Recomputes every level of `plugins` and their key counts from the facts, month by month
/// from `since`'s month, each year once its last month is done. Returns the months recomputed.
pub async fn rebuild_rollups(
    clickhouse: &clickhouse::Client,
    plugins: &[&plugin::PluginInfo],
    since: u64,
) -> Result<u64, WorkerError> {
    let work = months_per_plugin(clickhouse, plugins, since, u64::from(u32::MAX)).await?;
    let total = work.iter().map(|(_, months)| months.len() as u64).sum();
    let mut progress = Progress::new("rebuilding rollups", "months", total);
    for (info, months) in &work {
        for (index, month) in months.iter().enumerate() {
            rebuild_month(clickhouse, info, *month, ends_a_year(months, index)).await?;
            progress.step(&format!("{} {}", info.identifier, month_name(*month)));
        }
    }
    progress.finish();
    Ok(total)
}

/// Recomputes `month` of one plugin — every level and the key counts — from its facts, then
/// its year from its months if `and_year`. Safe while workers run (see `rollup`).
pub async fn rebuild_month(
    clickhouse: &clickhouse::Client,
    info: &plugin::PluginInfo,
    month: u64,
    and_year: bool,
) -> Result<(), WorkerError> {
    let failed = |source| rollup_error(info, source);
    rollup::rebuild_month(clickhouse, &info.table, info.kind, month)
        .await
        .map_err(failed)?;
    key_counts::refill_month(clickhouse, &info.table, month)
        .await
        .map_err(failed)?;
    if and_year {
        rollup::rebuild_year(clickhouse, &info.table, info.kind, month)
            .await
            .map_err(failed)?;
    }
    Ok(())
}

/// Whether `months[index]` is the last of its year in `months` (ascending): where a rebuild or
/// a check, having done the year's months, does the year.
pub fn ends_a_year(months: &[u64], index: usize) -> bool {
    let year = Level::Year.start(months[index]);
    match months.get(index + 1) {
        Some(next) => Level::Year.start(*next) != year,
        None => true,
    }
}

/// The months with facts of each of `plugins` in `[since, until]`, widened to whole months.
pub async fn months_per_plugin<'a>(
    clickhouse: &clickhouse::Client,
    plugins: &[&'a plugin::PluginInfo],
    since: u64,
    until: u64,
) -> Result<Vec<(&'a plugin::PluginInfo, Vec<u64>)>, WorkerError> {
    let since = Level::Month.start(since);
    let until = Level::Month.next(until).saturating_sub(1);
    let mut work = Vec::new();
    for info in plugins {
        let months = rollup::months_with_facts(clickhouse, &info.table, since, until)
            .await
            .map_err(|source| rollup_error(info, source))?;
        work.push((*info, months));
    }
    Ok(work)
}

pub fn rollup_error(info: &plugin::PluginInfo, source: clickhouse::error::Error) -> WorkerError {
    WorkerError::Rollup {
        plugin: info.identifier.clone(),
        source,
    }
}

/// `2024-02` for the month starting at `month`.
pub fn month_name(month: u64) -> String {
    let seconds = i64::try_from(month).unwrap_or(i64::MAX);
    match chrono::DateTime::from_timestamp(seconds, 0) {
        Some(moment) => moment.format("%Y-%m").to_string(),
        None => month.to_string(),
    }
}
