//! The plugin model: a plugin turns one message into the fact rows of one statistic.
//!
//! A plugin only says *which facts* a message contributes (`process`); the worker decides when to
//! call it (topic filter, backlog delta), batches the facts into the plugin's ClickHouse table and
//! acknowledges the messages after the write. Because a statistic is computed over distinct
//! message identities (see `statscache_shared::schema`), `process` never needs to know whether it
//! has seen a message before: it must only be a pure function of the message.

use std::time::Duration;

use statscache_shared::config::StatisticKind;
use statscache_shared::message::Envelope;
use statscache_shared::schema::stat_table;

use crate::meta::Meta;
use crate::topic_filter::TopicFilter;

/// A message as plugins see it: the envelope plus what the worker derived once for all plugins.
#[derive(Debug, Clone)]
pub struct Message {
    pub envelope: Envelope,
    /// `msg_id`, or the content hash for messages without one.
    pub identity: String,
    pub meta: Meta,
    pub stream_sequence: u64,
}

/// One row of a statistic: the message contributes `value` under `key`.
/// Count statistics leave `value` empty.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fact {
    pub key: String,
    pub value: String,
    /// What the fact counts when it is not the message itself; `None` for almost every plugin.
    pub counted: Option<Counted>,
}

/// Something other than its message that a fact stands for: a count counts distinct
/// identities, so a plugin counting, say, statscache's (window, key) rows gives each fact the
/// row's identity and the row's time instead of the message's. The time must lie in the hour
/// of the message's, so that every rollup period holding the message holds the fact too.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Counted {
    pub identity: String,
    /// Epoch seconds.
    pub time: u32,
}

impl Fact {
    pub fn key(key: impl Into<String>) -> Fact {
        Fact {
            key: key.into(),
            value: String::new(),
            counted: None,
        }
    }

    pub fn key_value(key: impl Into<String>, value: impl Into<String>) -> Fact {
        Fact {
            key: key.into(),
            value: value.into(),
            counted: None,
        }
    }

    /// A fact counting `counted` (see [`Counted`]) rather than its message.
    pub fn counting(key: impl Into<String>, value: impl Into<String>, counted: Counted) -> Fact {
        Fact {
            key: key.into(),
            value: value.into(),
            counted: Some(counted),
        }
    }
}

/// What every plugin declares about itself; the worker publishes it in the `plugins` table.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    /// Lower-case, dash-separated; derived from the name as statscache did.
    pub identifier: String,
    pub name: String,
    pub description: String,
    pub kind: StatisticKind,
    /// The topics it cares about; empty means all.
    pub topics: TopicFilter,
    /// Messages older than now minus this are not processed.
    pub backlog_delta: Option<Duration>,
    /// The ClickHouse table holding its facts.
    pub table: String,
}

impl PluginInfo {
    pub fn new(
        name: &str,
        description: &str,
        kind: StatisticKind,
        topics: TopicFilter,
    ) -> PluginInfo {
        let identifier = identifier_from_name(name);
        let table = stat_table(&identifier);
        PluginInfo {
            identifier,
            name: name.to_string(),
            description: description.to_string(),
            kind,
            topics,
            backlog_delta: None,
            table,
        }
    }

    pub fn with_backlog_delta(mut self, backlog_delta: Option<Duration>) -> PluginInfo {
        self.backlog_delta = backlog_delta;
        self
    }

    /// Whether a message of `topic` with event time `timestamp` is this plugin's: the topic
    /// matches and the message is within the backlog delta of `now` (epoch seconds).
    pub fn takes(&self, topic: &str, timestamp: f64, now: f64) -> bool {
        if !self.topics.matches(topic) {
            return false;
        }
        match self.backlog_delta {
            Some(delta) => timestamp >= now - delta.as_secs_f64(),
            None => true,
        }
    }
}

/// Why a plugin could not process a message. The message is parked, not retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PluginError(pub String);

/// A statistic. Implement `info` and `process`; the hooks default to doing nothing.
pub trait Plugin: Send + Sync {
    fn info(&self) -> &PluginInfo;

    /// Appends the facts `message` contributes. Called only for messages matching the topic
    /// filter and within the backlog delta.
    fn process(&self, message: &Message, facts: &mut Vec<Fact>) -> Result<(), PluginError>;

    /// Called once when the worker starts, after the plugin's table exists.
    fn on_start(&self) {}

    /// Called after a batch containing facts of this plugin was durably written.
    fn on_batch_written(&self, _facts_written: usize) {}
}

/// statscache's rule: lower-case, spaces to dashes, punctuation removed.
pub fn identifier_from_name(name: &str) -> String {
    let mut identifier = String::with_capacity(name.len());
    for character in name.trim().chars() {
        if character.is_ascii_alphanumeric() {
            identifier.push(character.to_ascii_lowercase());
        } else if (character.is_whitespace() || character == '-' || character == '_')
            && !identifier.ends_with('-')
        {
            identifier.push('-');
        }
    }
    identifier.trim_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_follow_statscache() {
        assert_eq!(identifier_from_name("Volume by Topic"), "volume-by-topic");
        assert_eq!(
            identifier_from_name("Releng: latest (events)!"),
            "releng-latest-events"
        );
        assert_eq!(identifier_from_name("  a  b "), "a-b");
    }
}
