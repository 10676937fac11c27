//! Plugins defined by data: "count / distinct-count / latest, by a key taken from the message,
//! for topics matching these patterns". The built-in volume and activity statistics are such
//! definitions too (see `builtin.rs`), so a statistic added in the config file behaves exactly
//! like the shipped ones.

use serde_json::Value;
use statscache_shared::config::{DeclarativePluginConfig, StatisticKind};

use crate::plugin::{Fact, Message, Plugin, PluginError, PluginInfo};
use crate::topic_filter::TopicFilter;

/// Where a key or value is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// A constant, for statistics without a key (total volume).
    Constant(String),
    Topic,
    Category,
    /// Users named by the message (fedmsg.meta's rules), one key each.
    Usernames,
    /// Packages named by the message (fedmsg.meta's rules), one key each.
    Packages,
    /// A dotted path into the envelope, e.g. `msg.owner`; arrays yield one key per element.
    Path(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin {plugin:?}: {problem}")]
pub struct DefinitionError {
    pub plugin: String,
    pub problem: String,
}

impl Field {
    pub fn parse(spec: &str) -> Result<Field, String> {
        let spec = spec.trim();
        match spec {
            "" => Err("an empty field; use topic, category, usernames, packages or a path".into()),
            "topic" => Ok(Field::Topic),
            "category" => Ok(Field::Category),
            "usernames" => Ok(Field::Usernames),
            "packages" => Ok(Field::Packages),
            path => {
                let segments: Vec<String> = path.split('.').map(str::to_string).collect();
                if segments.iter().any(String::is_empty) {
                    return Err(format!("path {path:?} has an empty segment"));
                }
                Ok(Field::Path(segments))
            }
        }
    }

    /// Appends every value of this field in `message` (none when the field is absent).
    pub(crate) fn values(&self, message: &Message, out: &mut Vec<String>) {
        match self {
            Field::Constant(constant) => out.push(constant.clone()),
            Field::Topic => out.push(message.envelope.topic.clone()),
            Field::Category => out.push(message.envelope.category().to_string()),
            Field::Usernames => out.extend(message.meta.usernames.iter().cloned()),
            Field::Packages => out.extend(message.meta.packages.iter().cloned()),
            Field::Path(segments) => {
                let Ok(envelope) = serde_json::to_value(&message.envelope) else {
                    return;
                };
                let mut current = &envelope;
                for segment in segments {
                    match current.get(segment.as_str()) {
                        Some(next) => current = next,
                        None => return,
                    }
                }
                push_scalars(current, out);
            }
        }
    }
}

fn push_scalars(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Null => {}
        Value::String(text) => out.push(text.clone()),
        Value::Array(items) => {
            for item in items {
                if !item.is_array() {
                    push_scalars(item, out);
                }
            }
        }
        other => out.push(other.to_string()),
    }
}

pub struct DeclarativePlugin {
    info: PluginInfo,
    key: Field,
    value: Option<Field>,
}

impl DeclarativePlugin {
    pub fn new(info: PluginInfo, key: Field, value: Option<Field>) -> DeclarativePlugin {
        DeclarativePlugin { info, key, value }
    }

    pub fn from_config(
        config: &DeclarativePluginConfig,
    ) -> Result<DeclarativePlugin, DefinitionError> {
        let problem = |problem: String| DefinitionError {
            plugin: config.name.clone(),
            problem,
        };
        let info = PluginInfo::new(
            &config.name,
            &config.description,
            config.kind,
            TopicFilter::new(&config.topics),
        )
        .with_backlog_delta(config.backlog_delta);
        if info.identifier.is_empty() {
            return Err(problem("the name must contain letters or digits".into()));
        }
        let key = Field::parse(&config.key).map_err(problem)?;
        let value = match (config.kind, config.value.as_deref()) {
            (StatisticKind::Count, None) => None,
            (StatisticKind::Count, Some(_)) => {
                return Err(problem("a count has no value; remove `value`".into()));
            }
            (_, None) => {
                return Err(problem(format!(
                    "a {} needs a `value`",
                    config.kind.as_str()
                )))
            }
            (_, Some(spec)) => Some(Field::parse(spec).map_err(problem)?),
        };
        Ok(DeclarativePlugin::new(info, key, value))
    }
}

impl Plugin for DeclarativePlugin {
    fn info(&self) -> &PluginInfo {
        &self.info
    }

    fn process(&self, message: &Message, facts: &mut Vec<Fact>) -> Result<(), PluginError> {
        let mut keys = Vec::new();
        self.key.values(message, &mut keys);
        let mut values = Vec::new();
        match &self.value {
            None => values.push(String::new()),
            Some(field) => field.values(message, &mut values),
        }
        for key in &keys {
            for value in &values {
                facts.push(Fact::key_value(key.clone(), value.clone()));
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

    fn message(json: &str, meta: Meta) -> Message {
        let envelope = Envelope::parse(json.as_bytes()).unwrap();
        Message {
            identity: envelope.identity(),
            envelope,
            meta,
            stream_sequence: 1,
        }
    }

    fn config(kind: StatisticKind, key: &str, value: Option<&str>) -> DeclarativePluginConfig {
        DeclarativePluginConfig {
            name: "Test stat".into(),
            description: String::new(),
            kind,
            topics: vec![],
            key: key.into(),
            value: value.map(str::to_string),
            backlog_delta: None,
        }
    }

    #[test]
    fn paths_arrays_and_meta_fields_become_facts() {
        let message = message(
            r#"{"topic":"org.fedoraproject.prod.buildsys.build.state.change","timestamp":1,
                "msg":{"owner":"ralph","tags":["f40","f41"],"n":3}}"#,
            Meta {
                usernames: vec!["a".into(), "b".into()],
                packages: vec!["pkg".into()],
            },
        );
        let cases = [
            (
                config(StatisticKind::Count, "msg.owner", None),
                vec![Fact::key("ralph")],
            ),
            (
                config(StatisticKind::Count, "msg.tags", None),
                vec![Fact::key("f40"), Fact::key("f41")],
            ),
            (config(StatisticKind::Count, "msg.missing", None), vec![]),
            (
                config(StatisticKind::DistinctCount, "category", Some("usernames")),
                vec![
                    Fact::key_value("buildsys", "a"),
                    Fact::key_value("buildsys", "b"),
                ],
            ),
            (
                config(StatisticKind::Latest, "packages", Some("msg.n")),
                vec![Fact::key_value("pkg", "3")],
            ),
        ];
        for (plugin_config, expected) in cases {
            let plugin = DeclarativePlugin::from_config(&plugin_config).unwrap();
            let mut facts = Vec::new();
            plugin.process(&message, &mut facts).unwrap();
            assert_eq!(facts, expected, "{plugin_config:?}");
        }
    }

    #[test]
    fn bad_definitions_are_explained() {
        let missing_value = config(StatisticKind::Latest, "topic", None);
        assert!(DeclarativePlugin::from_config(&missing_value).is_err());
        let value_on_count = config(StatisticKind::Count, "topic", Some("msg.x"));
        assert!(DeclarativePlugin::from_config(&value_on_count).is_err());
        let empty_segment = config(StatisticKind::Count, "msg..x", None);
        assert!(DeclarativePlugin::from_config(&empty_segment).is_err());
    }
}
