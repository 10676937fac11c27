//! The statistics shipped with statscache-rs, matching the original statscache_plugins:
//! message volume (all, by category, by topic), activity by user and by package, contributions
//! to pagure.io (total, by user, by project), the release-engineering event logs, our richer
//! release-engineering "latest event" dashboard, and the rows of statscache's windowed
//! identifiers (`statscache_rows.rs`).

use statscache_shared::config::StatisticKind;

use super::declarative::{DeclarativePlugin, Field};
use super::pagure::{PagureProjects, PAGURE_TOPICS};
use super::releng::RelengDashboard;
use super::releng_logs::RelengLogs;
use super::statscache_rows::StatscacheRows;
use crate::plugin::{Plugin, PluginInfo};
use crate::topic_filter::TopicFilter;

/// A count of messages per key, by `key`, of the messages on `topics` (all when empty).
fn count(name: &str, description: &str, topics: &[&str], key: Field) -> DeclarativePlugin {
    let topics = if topics.is_empty() {
        TopicFilter::all()
    } else {
        TopicFilter::new(topics)
    };
    let info = PluginInfo::new(name, description, StatisticKind::Count, topics);
    DeclarativePlugin::new(info, key, None)
}

/// Every built-in plugin whose identifier is not in `disabled`, in the order they are listed
/// by the API. The rows of statscache's windows are counted for the volume plugins kept.
pub fn builtin_plugins(disabled: &[String]) -> Vec<Box<dyn Plugin>> {
    let volume = [
        (
            "Volume",
            "Number of messages on the bus.",
            Field::Constant(String::new()),
        ),
        (
            "Volume by Category",
            "Number of messages per category (fedmsg modname).",
            Field::Category,
        ),
        (
            "Volume by Topic",
            "Number of messages per topic.",
            Field::Topic,
        ),
        (
            "Volume by User",
            "Number of messages naming each user (fedmsg.meta usernames).",
            Field::Usernames,
        ),
        (
            "Volume by Package",
            "Number of messages naming each package (fedmsg.meta packages).",
            Field::Packages,
        ),
    ];
    let mut plugins: Vec<Box<dyn Plugin>> = Vec::new();
    let mut windowed = Vec::new();
    for (name, description, key) in volume {
        let plugin = count(name, description, &[], key.clone());
        windowed.push((plugin.info().identifier.clone(), key));
        plugins.push(Box::new(plugin));
    }
    plugins.push(Box::new(count(
        "Pagure Contributions",
        "Messages of pagure.io (io.pagure.prod topics), as statscache's \
         number-of-contribution-to-pagure.io.",
        &[PAGURE_TOPICS],
        Field::Constant(String::new()),
    )));
    plugins.push(Box::new(count(
        "Pagure Contributions by User",
        "Messages of pagure.io (io.pagure.prod topics) naming each user (fedmsg.meta \
         usernames), as statscache's number-of-contribution-per-user-to-pagure.io.",
        &[PAGURE_TOPICS],
        Field::Usernames,
    )));
    plugins.push(Box::new(PagureProjects::new()));
    plugins.push(Box::new(RelengDashboard::new()));
    plugins.push(Box::new(RelengLogs::new()));
    plugins.retain(|plugin| !disabled.contains(&plugin.info().identifier));
    windowed.retain(|(identifier, _)| !disabled.contains(identifier));
    let rows = StatscacheRows::new(&windowed);
    if !disabled.contains(&rows.info().identifier) {
        plugins.push(Box::new(rows));
    }
    plugins
}
