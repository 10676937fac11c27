//! The release-engineering dashboard: the latest event per component, as statscache's
//! `releng` plugins kept for releng-dash (composes, updates pushes, repo syncs, cloud images).
//!
//! Each matching message gives one fact: the key names the dashboard slot
//! (`compose/rawhide/primary`, `updates/f29-updates-testing`, `image/eu-west-1/...`), the value
//! is a small JSON object with the status word and the message's topic. The statistic keeps the
//! newest fact per key by (timestamp, msg_id), whatever order messages arrive in.

use serde_json::{json, Value};
use statscache_shared::config::StatisticKind;

use crate::plugin::{Fact, Message, Plugin, PluginError, PluginInfo};
use crate::topic_filter::TopicFilter;

pub struct RelengDashboard {
    info: PluginInfo,
}

impl RelengDashboard {
    pub fn new() -> RelengDashboard {
        let topics = TopicFilter::new(&[
            "*.*.*.compose.>",
            "*.*.*.pungi.compose.>",
            "*.*.*.bodhi.mashtask.>",
            "*.*.*.bodhi.compose.>",
            "*.*.*.bodhi.updates.>",
            "*.*.*.fedimg.image.>",
            "*.*.*.autocloud.image.>",
        ]);
        let info = PluginInfo::new(
            "Releng Dashboard",
            "Latest release-engineering event per component: composes, updates pushes, repo syncs, cloud images.",
            StatisticKind::Latest,
            topics,
        );
        RelengDashboard { info }
    }
}

impl Default for RelengDashboard {
    fn default() -> Self {
        RelengDashboard::new()
    }
}

fn text<'a>(msg: &'a Value, field: &str) -> Option<&'a str> {
    msg.get(field)
        .and_then(Value::as_str)
        .filter(|value| !value.is_empty())
}

/// The dashboard slot and status word for a message, when it is a releng event.
fn slot_and_status(message: &Message) -> Option<(String, String)> {
    let topic = message.envelope.topic.as_str();
    let msg = &message.envelope.msg;
    let tokens: Vec<&str> = topic.split('.').collect();
    let category = tokens.get(3).copied()?;
    let rest = tokens.get(4..).unwrap_or_default();
    let event = rest.last().copied()?;
    match category {
        // org.fedoraproject.prod.compose.<branch>[.<stage>].<event>
        "compose" => {
            let branch = text(msg, "branch").or(rest.first().copied())?;
            let arch = text(msg, "arch").unwrap_or("primary");
            let stage = if rest.len() > 2 {
                rest[1..rest.len() - 1].join(".")
            } else {
                "compose".into()
            };
            Some((
                format!("compose/{branch}/{arch}"),
                format!("{stage} {event}"),
            ))
        }
        "pungi" => {
            let compose_id = text(msg, "compose_id")?;
            let status = text(msg, "status").unwrap_or(event).to_ascii_lowercase();
            Some((format!("pungi/{}", compose_family(compose_id)), status))
        }
        "bodhi" => {
            let object = rest.first().copied()?;
            if object == "updates" {
                let family = rest.get(1).copied()?;
                let release = text(msg, "release")?;
                let repo = text(msg, "repo").unwrap_or("updates");
                return Some((format!("sync/{family}-{release}-{repo}"), "synced".into()));
            }
            let repo = text(msg, "repo")?;
            let status = match msg.get("success").and_then(Value::as_bool) {
                Some(false) => "failed".to_string(),
                _ => rest[1..].join("."),
            };
            Some((format!("updates/{repo}"), status))
        }
        "fedimg" | "autocloud" => {
            let image = text(msg, "image_name")?;
            let destination = text(msg, "destination").unwrap_or("-");
            let status = text(msg, "status").unwrap_or(event);
            Some((format!("image/{destination}/{image}"), status.to_string()))
        }
        _ => None,
    }
}

/// `Fedora-Atomic-27-20180507.0` → `Fedora-Atomic-27`: the compose family, without its date.
fn compose_family(compose_id: &str) -> &str {
    let mut end = compose_id.len();
    for (index, part) in compose_id.match_indices('-') {
        let next = &compose_id[index + part.len()..];
        if next.len() >= 8 && next[..8].chars().all(|c| c.is_ascii_digit()) {
            end = index;
            break;
        }
    }
    &compose_id[..end]
}

impl Plugin for RelengDashboard {
    fn info(&self) -> &PluginInfo {
        &self.info
    }

    fn process(&self, message: &Message, facts: &mut Vec<Fact>) -> Result<(), PluginError> {
        let Some((slot, status)) = slot_and_status(message) else {
            return Ok(());
        };
        let value = json!({ "status": status, "topic": message.envelope.topic });
        facts.push(Fact::key_value(slot, value.to_string()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Meta;
    use statscache_shared::message::Envelope;

    fn facts_for(json: &str) -> Vec<Fact> {
        let envelope = Envelope::parse(json.as_bytes()).unwrap();
        let message = Message {
            identity: envelope.identity(),
            envelope,
            meta: Meta::default(),
            stream_sequence: 1,
        };
        let plugin = RelengDashboard::new();
        assert!(plugin.info().topics.matches(&message.envelope.topic));
        let mut facts = Vec::new();
        plugin.process(&message, &mut facts).unwrap();
        facts
    }

    #[test]
    fn slots_and_statuses() {
        let cases = [
            (
                r#"{"topic":"org.fedoraproject.prod.compose.rawhide.rsync.complete","timestamp":1,"msg":{"arch":"arm","branch":"rawhide"}}"#,
                "compose/rawhide/arm",
                "rsync complete",
            ),
            (
                r#"{"topic":"org.fedoraproject.prod.compose.rawhide.complete","timestamp":1,"msg":{"branch":"rawhide"}}"#,
                "compose/rawhide/primary",
                "compose complete",
            ),
            (
                r#"{"topic":"org.fedoraproject.prod.bodhi.mashtask.complete","timestamp":1,"msg":{"repo":"f29-updates","success":false}}"#,
                "updates/f29-updates",
                "failed",
            ),
            (
                r#"{"topic":"org.fedoraproject.prod.bodhi.updates.epel.sync","timestamp":1,"msg":{"release":"7","repo":"epel-testing"}}"#,
                "sync/epel-7-epel-testing",
                "synced",
            ),
            (
                r#"{"topic":"org.fedoraproject.prod.pungi.compose.status.change","timestamp":1,"msg":{"compose_id":"Fedora-24-20151208.n.7","status":"FINISHED"}}"#,
                "pungi/Fedora-24",
                "finished",
            ),
        ];
        for (json, slot, status) in cases {
            let facts = facts_for(json);
            assert_eq!(facts.len(), 1, "{json}");
            assert_eq!(facts[0].key, slot);
            let value: Value = serde_json::from_str(&facts[0].value).unwrap();
            assert_eq!(value["status"], status);
        }
    }

    #[test]
    fn unrelated_or_incomplete_messages_give_nothing() {
        assert!(facts_for(
            r#"{"topic":"org.fedoraproject.prod.bodhi.compose.start","timestamp":1,"msg":{}}"#
        )
        .is_empty());
    }
}
