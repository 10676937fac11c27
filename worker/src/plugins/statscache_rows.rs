//! `statscache-rows`: the rows of statscache's windowed identifiers shorter than a day
//! (`volume-1s`, `volume-by-category-15s`, … `volume-by-category-1h`), counted per period.
//!
//! Why a plugin: the api pages those identifiers as statscache did (newest window first, a
//! `X-Link-Count` of pages), which needs how many (window, key) rows every hour, day, month and
//! year holds. A count of distinct rows is exactly what a count plugin's rollups keep when its
//! facts count rows instead of messages ([`Counted`]): each message gives, per identifier and key,
//! a fact whose identity is its row — `<window start>:<key>` — stamped at the window's start (in
//! the message's hour, as windows shorter than a day divide hours). The rollups of this plugin,
//! keyed by identifier, then hold each period's number of rows, kept exact by the same
//! machinery as every statistic (recomputed per batch, rebuilt, checked), and its facts, sorted
//! by identifier then time, list the rows of a period in order for the page that falls there.
//! Facts of one row share key, time and identity, so merges fold them into one.

use statscache_shared::config::StatisticKind;
use statscache_shared::sql::clamp_time;
use statscache_shared::statscache::identifiers;

use super::declarative::Field;
use crate::plugin::{Counted, Fact, Message, Plugin, PluginError, PluginInfo};
use crate::topic_filter::TopicFilter;

/// One statscache identifier counted here.
struct Window {
    ident: String,
    /// Where the row's key comes from: the field of the plugin holding the identifier's facts.
    key: Field,
    seconds: u64,
}

pub struct StatscacheRows {
    info: PluginInfo,
    windows: Vec<Window>,
}

impl StatscacheRows {
    /// Counts the rows of every statscache identifier shorter than a day whose plugin is in
    /// `plugins` (a plugin identifier and the field its keys come from).
    pub fn new(plugins: &[(String, Field)]) -> StatscacheRows {
        let mut windows = Vec::new();
        for identifier in identifiers() {
            let Some(seconds) = identifier.window else {
                continue;
            };
            if !identifier.counted_by_rows_plugin() {
                continue;
            }
            let Some((_, field)) = plugins
                .iter()
                .find(|(plugin, _)| plugin == identifier.family.plugin)
            else {
                continue;
            };
            windows.push(Window {
                ident: identifier.ident,
                key: field.clone(),
                seconds: u64::from(seconds),
            });
        }
        let info = PluginInfo::new(
            "Statscache rows",
            "Rows of statscache's windowed identifiers shorter than a day (volume-1s, \
             volume-by-category-15s, ...) per period: their (window, key) pairs with messages. \
             The /statscache/api/ routes count and page those identifiers from it.",
            StatisticKind::Count,
            TopicFilter::all(),
        );
        StatscacheRows { info, windows }
    }
}

impl Plugin for StatscacheRows {
    fn info(&self) -> &PluginInfo {
        &self.info
    }

    fn process(&self, message: &Message, facts: &mut Vec<Fact>) -> Result<(), PluginError> {
        let time = message.envelope.event_time().max(0.0).floor() as u64;
        let mut keys = Vec::new();
        for window in &self.windows {
            keys.clear();
            window.key.values(message, &mut keys);
            let start = time / window.seconds * window.seconds;
            for key in &keys {
                let counted = Counted {
                    identity: format!("{start}:{key}"),
                    time: clamp_time(start),
                };
                facts.push(Fact::counting(window.ident.clone(), key.clone(), counted));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Meta;
    use statscache_shared::message::Envelope;

    #[test]
    fn each_identifier_counts_the_message_s_window_rows() {
        let plugins = [
            ("volume".to_string(), Field::Constant(String::new())),
            ("volume-by-user".to_string(), Field::Usernames),
        ];
        let plugin = StatscacheRows::new(&plugins);
        let envelope = Envelope::parse(
            br#"{"topic":"org.fedoraproject.prod.bodhi.update.comment","timestamp":1700000077.9,"msg":{}}"#,
        )
        .unwrap();
        let message = Message {
            identity: envelope.identity(),
            envelope,
            meta: Meta {
                usernames: vec!["ralph".into()],
                packages: vec![],
            },
            stream_sequence: 1,
        };
        let mut facts = Vec::new();
        plugin.process(&message, &mut facts).unwrap();
        let rows: Vec<(String, String, String, u32)> = facts
            .into_iter()
            .map(|fact| {
                let counted = fact.counted.expect("a row, not the message");
                (fact.key, fact.value, counted.identity, counted.time)
            })
            .collect();
        let row = |ident: &str, key: &str, start: u32| {
            (
                ident.to_string(),
                key.to_string(),
                format!("{start}:{key}"),
                start,
            )
        };
        assert_eq!(
            rows,
            [
                row("volume-1s", "", 1_700_000_077),
                row("volume-5s", "", 1_700_000_075),
                row("volume-1m", "", 1_700_000_040),
                row("volume-by-user-1s", "ralph", 1_700_000_077),
                row("volume-by-user-5s", "ralph", 1_700_000_075),
                row("volume-by-user-1m", "ralph", 1_700_000_040),
            ]
        );
        assert_eq!(
            plugin.info().identifier,
            statscache_shared::statscache::ROWS_PLUGIN
        );
        assert_eq!(plugin.info().table, "stat_statscache_rows");
    }
}
