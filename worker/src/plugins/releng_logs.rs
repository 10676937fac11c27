//! statscache's "Release engineering event logs" (identifier `release-engineering-event-logs`):
//! the latest event of each (category, constraint) for releng-dash, as statscache_plugins'
//! `releng` package kept them, with the same categories (the ids of its layout) and the same
//! `message` texts, so that a dashboard reading statscache reads us unchanged.
//!
//! Four sources, ported from their rules (not their code):
//! - composes: `org.fedoraproject.prod.compose.{rawhide,branched}[.{mash,pungify,rsync}]`
//!   `.{start,complete}` → `compose-<branch>_<arch or primary>`, constraint the stage;
//! - updates pushes: `org.fedoraproject.prod.bodhi.updates.{fedora,epel}.sync` →
//!   `updates-<distro>`, constraint `<release>-<repo>` (statscache stored no constraint for
//!   them, so every push added a row; here each repository keeps its latest, as its lookup
//!   meant);
//! - cloud images: completed `org.fedoraproject.prod.fedimg.image.{upload,test}` →
//!   `ami-{rawhide,branched}`, constraint `<image>-<region>`;
//! - appliance and live images built by `masher` (any topic) → `artifact-<method>_<arch>`.
//!
//! A message missing a field its source reads gives no fact (statscache's plugins raised).
//! Each fact's key is `<category>/<constraint>` (categories hold no `/`) and its value the
//! `message` text, JSON as Python's `json.dumps` writes it; the statistic keeps the newest
//! per key by (timestamp, msg_id), whatever order messages arrive in.

use serde_json::Value;
use statscache_shared::config::StatisticKind;
use statscache_shared::statscache;

use crate::plugin::{Fact, Message, Plugin, PluginError, PluginInfo};
use crate::topic_filter::TopicFilter;

const COMPOSE_TOPICS: [&str; 8] = [
    "org.fedoraproject.prod.compose.rawhide.mash",
    "org.fedoraproject.prod.compose.rawhide.pungify",
    "org.fedoraproject.prod.compose.rawhide.rsync",
    "org.fedoraproject.prod.compose.rawhide",
    "org.fedoraproject.prod.compose.branched.mash",
    "org.fedoraproject.prod.compose.branched.pungify",
    "org.fedoraproject.prod.compose.branched.rsync",
    "org.fedoraproject.prod.compose.branched",
];
const UPDATES_TOPICS: [&str; 2] = [
    "org.fedoraproject.prod.bodhi.updates.fedora.sync",
    "org.fedoraproject.prod.bodhi.updates.epel.sync",
];
const IMAGE_TOPICS: [&str; 2] = [
    "org.fedoraproject.prod.fedimg.image.upload",
    "org.fedoraproject.prod.fedimg.image.test",
];
const ARTIFACTS: [&str; 2] = ["appliance", "livecd"];
const AWS_LAUNCH: &str = "https://redirect.fedoraproject.org/console.aws.amazon.com/ec2/v2/home";
const KOJI_TASKS: &str = "https://kojipkgs.fedoraproject.org/work/tasks/";

pub struct RelengLogs {
    info: PluginInfo,
}

impl RelengLogs {
    pub fn new() -> RelengLogs {
        let info = PluginInfo::new(
            "Release engineering event logs",
            "Latest release-engineering event per category and constraint, as statscache's \
             releng plugins kept them for releng-dash: rawhide and branched composes, updates \
             pushes, cloud images, appliance and live images.",
            StatisticKind::Latest,
            TopicFilter::all(),
        );
        RelengLogs { info }
    }
}

impl Default for RelengLogs {
    fn default() -> Self {
        RelengLogs::new()
    }
}

/// One log row: category, constraint and the `message` text.
type LogEntry = (String, String, String);

fn text<'a>(msg: &'a Value, field: &str) -> Option<&'a str> {
    msg.get(field).and_then(Value::as_str)
}

/// A JSON value as Python's `"%s" %` would print it: strings bare, anything else as JSON.
fn printed(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The `message` text: `entries` as an object, as Python's `json.dumps` writes it (keys sorted).
fn python_json(entries: &[(&str, Value)]) -> String {
    let mut object = serde_json::Map::new();
    for (name, value) in entries {
        object.insert(name.to_string(), value.clone());
    }
    statscache::python_json(&Value::Object(object))
}

/// Python's `str.title()` of a lower-case word.
fn title(word: &str) -> String {
    let mut characters = word.chars();
    match characters.next() {
        Some(first) => first
            .to_uppercase()
            .chain(characters.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

/// statscache's `(?P<topic>[\w.]+)\.(?P<status>start|complete)` matched at the topic's start:
/// the longest run of word characters and dots, cut at its last `.start` or `.complete`.
fn compose_status(topic: &str) -> Option<(&str, &'static str)> {
    let run = topic
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(topic.len());
    let mut cut = run;
    while cut > 1 {
        cut -= 1;
        let rest = &topic[cut..];
        for status in ["start", "complete"] {
            if rest
                .strip_prefix('.')
                .is_some_and(|after| after.starts_with(status))
            {
                return Some((&topic[..cut], status));
            }
        }
    }
    None
}

fn compose(topic: &str, msg: &Value) -> Option<LogEntry> {
    let (compose_topic, status) = compose_status(topic)?;
    if !COMPOSE_TOPICS.contains(&compose_topic) {
        return None;
    }
    let tokens: Vec<&str> = compose_topic.split('.').collect();
    let branch = tokens.get(4)?;
    let name = tokens.last()?;
    let arch = match msg.get("arch") {
        Some(Value::String(arch)) if !arch.is_empty() => arch.clone(),
        _ => "primary".to_string(),
    };
    let message = python_json(&[
        ("name", Value::String(title(name))),
        ("status", Value::String(status.to_string())),
    ]);
    Some((
        format!("compose-{branch}_{arch}"),
        name.to_string(),
        message,
    ))
}

fn updates(topic: &str, msg: &Value) -> Option<LogEntry> {
    if !UPDATES_TOPICS.contains(&topic) {
        return None;
    }
    let distro = topic.split('.').rev().nth(1)?;
    let name = format!(
        "{}-{}",
        printed(msg.get("release")?),
        printed(msg.get("repo")?)
    );
    let message = python_json(&[
        ("name", Value::String(name.clone())),
        ("status", Value::String("synced out".to_string())),
    ]);
    Some((format!("updates-{distro}"), name, message))
}

fn image(topic: &str, msg: &Value) -> Option<LogEntry> {
    if !IMAGE_TOPICS.contains(&topic) || text(msg, "status") != Some("completed") {
        return None;
    }
    let image_name = text(msg, "image_name")?;
    let stem = image_name.split('.').next().unwrap_or(image_name);
    let version = stem.split('-').nth(3)?.to_lowercase();
    let destination = text(msg, "destination")?;
    let inside = destination.split('(').nth(1)?;
    let mut region = inside.chars();
    region.next_back();
    let region = region.as_str();
    let ami = printed(msg.get("extra")?.get("id")?);
    let branch = if version == "rawhide" {
        "rawhide"
    } else {
        "branched"
    };
    let link = format!("{AWS_LAUNCH}?region={destination}#LaunchInstanceWizard:ami={ami}");
    let message = python_json(&[
        ("name", Value::String(image_name.to_string())),
        ("extra_text", Value::String(destination.to_string())),
        ("extra_link", Value::String(link)),
        ("status", Value::String("completed".to_string())),
    ]);
    Some((
        format!("ami-{branch}"),
        format!("{image_name}-{region}"),
        message,
    ))
}

/// The name (with format and branch), download link and architecture of an image build task.
fn artifact_details(msg: &Value) -> Option<(String, Option<String>, String)> {
    let srpm = text(msg, "srpm")?;
    let arch = srpm.rsplit('-').next().unwrap_or(srpm).to_string();
    let mut name = srpm.to_string();
    // statscache read `request` from `info` (an empty object by default) and failed without
    // one, and failed on an `info` that is not an object.
    let info = msg.get("info").filter(|info| info.is_object())?;
    let request = info.get("request")?.as_array()?;
    let options = request.last().filter(|options| options.is_object())?;
    if let Some(format) = options.get("format").filter(|f| !is_falsy(f)) {
        name = format!("{name} ({})", printed(format));
    }
    let branch = match request.get(1)? {
        Value::String(branch) if branch == "rawhide" => "rawhide",
        _ => "branched",
    };
    name = format!("{name} ({branch})");
    let link = artifact_link(msg, info, request);
    Some((name, link, arch))
}

/// Python's truthiness of a JSON value, for `if options.get('format')`.
fn is_falsy(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(flag) => !flag,
        Value::String(text) => text.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.is_empty(),
        Value::Number(number) => number.as_f64() == Some(0.0),
    }
}

/// The image's download link, for a closed task with one child.
fn artifact_link(msg: &Value, info: &Value, request: &[Value]) -> Option<String> {
    if text(msg, "new") != Some("CLOSED") {
        return None;
    }
    let [child] = info.get("children")?.as_array()?.as_slice() else {
        return None;
    };
    let id = printed(child.get("id")?);
    let result = text(info, "result")?;
    let last_word = result.rsplit(' ').next().unwrap_or(result);
    let thing = last_word.split('/').nth(5)?;
    let options = request.get(5)?;
    let mut filename = format!(
        "{}-{}-{}",
        printed(request.first()?),
        printed(request.get(1)?),
        printed(options.get("release")?)
    );
    match options.get("format") {
        None | Some(Value::Null) => filename.push_str(".iso"),
        Some(Value::String(format)) if format == "qcow2" => filename.push_str("-sda.qcow2"),
        Some(Value::String(format)) if format == "raw" => filename.push_str("-sda.raw.xz"),
        Some(_) => {}
    }
    Some(format!("{KOJI_TASKS}{thing}/{id}/{filename}"))
}

fn artifact(msg: &Value) -> Option<LogEntry> {
    if text(msg, "owner") != Some("masher") {
        return None;
    }
    let method = text(msg, "method")?;
    if !ARTIFACTS.contains(&method) {
        return None;
    }
    let (name, link, arch) = artifact_details(msg)?;
    let link = if method == "livecd" { link } else { None };
    let message = python_json(&[
        ("name", Value::String(name.clone())),
        ("link", link.map_or(Value::Null, Value::String)),
        ("status", msg.get("new")?.clone()),
        ("extra_text", Value::String("(details)".to_string())),
        ("extra_link", Value::Null),
    ]);
    Some((format!("artifact-{method}_{arch}"), name, message))
}

impl Plugin for RelengLogs {
    fn info(&self) -> &PluginInfo {
        &self.info
    }

    fn process(&self, message: &Message, facts: &mut Vec<Fact>) -> Result<(), PluginError> {
        let topic = message.envelope.topic.as_str();
        let msg = &message.envelope.msg;
        let sources = [
            compose(topic, msg),
            updates(topic, msg),
            image(topic, msg),
            artifact(msg),
        ];
        for (category, constraint, text) in sources.into_iter().flatten() {
            facts.push(Fact::key_value(format!("{category}/{constraint}"), text));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn composes_by_branch_arch_and_stage() {
        let entry = compose(
            "org.fedoraproject.prod.compose.rawhide.rsync.start",
            &json!({"arch": "arm"}),
        );
        assert_eq!(
            entry,
            Some((
                "compose-rawhide_arm".to_string(),
                "rsync".to_string(),
                r#"{"name": "Rsync", "status": "start"}"#.to_string()
            ))
        );
        let whole = compose(
            "org.fedoraproject.prod.compose.branched.complete",
            &json!({"arch": ""}),
        );
        assert_eq!(
            whole.map(|(category, constraint, _)| (category, constraint)),
            Some(("compose-branched_primary".into(), "branched".into()))
        );
        for other in [
            "org.fedoraproject.prod.compose.branched.image.start",
            "org.fedoraproject.stg.compose.rawhide.start",
            "org.fedoraproject.prod.compose.23.cloudimg-staging.done",
            "org.fedoraproject.prod.compose.rawhide.mash",
        ] {
            assert_eq!(compose(other, &json!({})), None, "{other}");
        }
    }

    #[test]
    fn updates_pushes_by_repository() {
        let entry = updates(
            "org.fedoraproject.prod.bodhi.updates.epel.sync",
            &json!({"release": "7", "repo": "epel-testing"}),
        );
        assert_eq!(
            entry,
            Some((
                "updates-epel".to_string(),
                "7-epel-testing".to_string(),
                r#"{"name": "7-epel-testing", "status": "synced out"}"#.to_string()
            ))
        );
        assert_eq!(
            updates(
                "org.fedoraproject.prod.bodhi.updates.fedora.sync",
                &json!({"repo": "updates"})
            ),
            None
        );
    }

    #[test]
    fn completed_cloud_images_by_branch() {
        let msg = json!({
            "status": "completed",
            "image_name": "Fedora-Cloud-Base-rawhide-20150101.x86_64",
            "destination": "EC2 (eu-west-1)",
            "extra": {"id": "ami-123"},
        });
        let (category, constraint, message) =
            image("org.fedoraproject.prod.fedimg.image.upload", &msg).expect("an image");
        assert_eq!(category, "ami-rawhide");
        assert_eq!(
            constraint,
            "Fedora-Cloud-Base-rawhide-20150101.x86_64-eu-west-1"
        );
        let parsed: Value = serde_json::from_str(&message).unwrap();
        assert_eq!(
            parsed["extra_link"],
            "https://redirect.fedoraproject.org/console.aws.amazon.com/ec2/v2/home?region=EC2 \
             (eu-west-1)#LaunchInstanceWizard:ami=ami-123"
        );
        // A destination without a parenthesised region, or a started image: nothing.
        let mut plain = msg.clone();
        plain["destination"] = json!("eu-west-1");
        assert_eq!(
            image("org.fedoraproject.prod.fedimg.image.upload", &plain),
            None
        );
        let mut started = msg;
        started["status"] = json!("started");
        assert_eq!(
            image("org.fedoraproject.prod.fedimg.image.test", &started),
            None
        );
    }

    #[test]
    fn live_images_with_their_download_link() {
        let msg = json!({
            "owner": "masher",
            "method": "livecd",
            "srpm": "fedora-live-x86_64",
            "new": "CLOSED",
            "info": {
                "request": ["Fedora-Live", "rawhide", "x", "y", "z", {"release": "20150101"}],
                "children": [{"id": 42}],
                "result": "done: a/b/c/d/e/tasks/7/f",
            },
        });
        let (category, constraint, message) = artifact(&msg).expect("an artifact");
        assert_eq!(category, "artifact-livecd_x86_64");
        assert_eq!(constraint, "fedora-live-x86_64 (rawhide)");
        assert_eq!(
            message,
            r#"{"extra_link": null, "extra_text": "(details)", "link": "https://kojipkgs.fedoraproject.org/work/tasks/tasks/42/Fedora-Live-rawhide-20150101.iso", "name": "fedora-live-x86_64 (rawhide)", "status": "CLOSED"}"#
        );
        let mut other_owner = msg;
        other_owner["owner"] = json!("ralph");
        assert_eq!(artifact(&other_owner), None);
    }

    #[test]
    fn python_json_escapes_as_python() {
        assert_eq!(
            python_json(&[("b", json!("\u{e9}")), ("a", Value::Null)]),
            r#"{"a": null, "b": "\u00e9"}"#
        );
    }
}
