//! `statscache-worker rollup --rebuild` and `--check`: every level of the chosen plugins
//! recomputed from, or compared with, their facts, month by month, each year once its last
//! month is done; with the key counts. Safe while workers run (see `rollup`, `key_counts`).

use statscache_shared::config::Config;
use statscache_shared::progress::Progress;

use crate::tables::{
    ends_a_year, month_name, months_per_plugin, prepare_tables, rebuild_rollups, rollup_error,
};
use crate::{key_counts, plugin, plugins, rollup, WorkerError};

/// What `statscache-worker rollup` covers: some plugins (all if empty), a range of event time.
#[derive(Debug, Clone, Default)]
pub struct RollupRequest {
    pub plugins: Vec<String>,
    /// Epoch seconds; widened to the start of its month.
    pub since: Option<f64>,
    /// Epoch seconds; widened to the end of its month. Only `--check` takes it.
    pub until: Option<f64>,
}

impl RollupRequest {
    fn since(&self) -> u64 {
        self.since
            .map(|seconds| seconds.max(0.0) as u64)
            .unwrap_or(0)
    }

    fn until(&self) -> u64 {
        self.until
            .map(|seconds| seconds.max(0.0) as u64)
            .unwrap_or(u64::from(u32::MAX))
    }
}

/// `statscache-worker rollup --rebuild`: recomputes every level of the chosen plugins from
/// their facts, month by month from `since`'s month, and each month's key counts. Safe while
/// workers run (see `rollup`, `key_counts`).
/// Returns the number of months recomputed.
pub async fn rollup_rebuild(config: &Config, request: &RollupRequest) -> Result<u64, WorkerError> {
    let chosen = plugins::choose(&config.worker, &request.plugins)?;
    let clickhouse = prepare_tables(config, &chosen).await?;
    let infos: Vec<&plugin::PluginInfo> = chosen.iter().map(|plugin| plugin.info()).collect();
    rebuild_rollups(&clickhouse, &infos, request.since()).await
}

/// One difference `rollup --check` found.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupDifference {
    pub plugin: String,
    pub difference: rollup::Difference,
}

/// `statscache-worker rollup --check`: compares each plugin's rollups and key counts with its
/// facts, month by month over `[since, until]`; returns every difference.
pub async fn rollup_check(
    config: &Config,
    request: &RollupRequest,
) -> Result<Vec<RollupDifference>, WorkerError> {
    let chosen = plugins::choose(&config.worker, &request.plugins)?;
    let clickhouse = prepare_tables(config, &chosen).await?;
    let infos: Vec<&plugin::PluginInfo> = chosen.iter().map(|plugin| plugin.info()).collect();
    let work = months_per_plugin(&clickhouse, &infos, request.since(), request.until()).await?;
    let total = work.iter().map(|(_, months)| months.len() as u64).sum();
    let mut progress = Progress::new("checking rollups", "months", total);
    let mut differences = Vec::new();
    for (info, months) in &work {
        let failed = |source| rollup_error(info, source);
        for (index, month) in months.iter().enumerate() {
            let mut found = rollup::check_month(&clickhouse, &info.table, info.kind, *month)
                .await
                .map_err(failed)?;
            let counts = key_counts::check_month(&clickhouse, &info.table, *month)
                .await
                .map_err(failed)?;
            found.extend(counts);
            if ends_a_year(months, index) {
                let year = rollup::check_year(&clickhouse, &info.table, info.kind, *month)
                    .await
                    .map_err(failed)?;
                found.extend(year);
            }
            for difference in found {
                differences.push(RollupDifference {
                    plugin: info.identifier.clone(),
                    difference,
                });
            }
            progress.step(&format!("{} {}", info.identifier, month_name(*month)));
        }
    }
    progress.finish();
    Ok(differences)
}
