//! The statistics shipped with statscache-rs, matching the original statscache_plugins:
//! message volume (all, by category, by topic), activity by user and by package, and the
//! release-engineering "latest event" log.

use statscache_shared::config::StatisticKind;

use super::declarative::{DeclarativePlugin, Field};
use super::releng::RelengDashboard;
use crate::plugin::{Plugin, PluginInfo};
use crate::topic_filter::TopicFilter;

/// Every built-in plugin, in the order they are listed by the API.
pub fn builtin_plugins() -> Vec<Box<dyn Plugin>> {
    let count = |name: &str, description: &str, key: Field| -> Box<dyn Plugin> {
        let info = PluginInfo::new(name, description, StatisticKind::Count, TopicFilter::all());
        Box::new(DeclarativePlugin::new(info, key, None))
    };
    vec![
        count(
            "Volume",
            "Number of messages on the bus.",
            Field::Constant(String::new()),
        ),
        count(
            "Volume by Category",
            "Number of messages per category (fedmsg modname).",
            Field::Category,
        ),
        count(
            "Volume by Topic",
            "Number of messages per topic.",
            Field::Topic,
        ),
        count(
            "Volume by User",
            "Number of messages naming each user (fedmsg.meta usernames).",
            Field::Usernames,
        ),
        count(
            "Volume by Package",
            "Number of messages naming each package (fedmsg.meta packages).",
            Field::Packages,
        ),
        Box::new(RelengDashboard::new()),
    ]
}
