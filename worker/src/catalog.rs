//! Publishes the plugins a worker runs to the `plugins` table, which the api lists and analysts
//! read to find each statistic's table. Every replica writes the same rows; the table keeps the
//! newest version per identifier.

use statscache_shared::schema::PluginCatalogRow;

use crate::plugin::Plugin;

pub async fn publish(
    client: &clickhouse::Client,
    plugins: &[Box<dyn Plugin>],
    now: u32,
) -> Result<(), clickhouse::error::Error> {
    let mut insert = client.insert::<PluginCatalogRow>("plugins").await?;
    for plugin in plugins {
        let info = plugin.info();
        let row = PluginCatalogRow {
            identifier: info.identifier.clone(),
            name: info.name.clone(),
            description: info.description.clone(),
            kind: info.kind.as_str().to_string(),
            table_name: info.table.clone(),
            topics: info.topics.patterns(),
            backlog_delta_seconds: info.backlog_delta.map(|d| d.as_secs()).unwrap_or_default(),
            updated_at: now,
        };
        insert.write(&row).await?;
    }
    insert.end().await
}
