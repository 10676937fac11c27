//! Release engineering composes (`compose.*`): fedmsg.meta's `ComposeProcessor`. The subtitle
//! is assembled from the event in the topic, the release, the arch and the compose id, with the
//! guesses the original makes for old messages that lack some of them.

use crate::message::Envelope;

use super::{capitalize, text, Fields};

/// Events of the old `make-updates` composes, with their subtitle text.
const MAKE_UPDATES_EVENTS: &[(&str, &str)] = &[
    (".make-updates.", ""),
    (".cloudimg-build.", " building images for"),
    (".mash-atomic", " Atomic updates mash for"),
    (".atomic-lorax", " Atomic lorax run for"),
    (".cloudimg-checksum.", " image checksum generation for"),
    (".cloudimg-staging.", " master mirror publication for"),
];

/// Events from before pungi 4: always for plain Fedora.
const PRE_PUNGI4_EVENTS: &[(&str, &str)] = &[
    (".mash.", " mashing"),
    (".pungify.", " building boot.iso for"),
    (".image.", " building other images for"),
];

/// Events that still exist since pungi 4.
const PUNGI4_EVENTS: &[(&str, &str)] = &[(".rsync.", " master mirror publication for")];

const DEFAULT_LINK: &str = "https://kojipkgs.fedoraproject.org/compose/";

pub(super) fn fields(envelope: &Envelope) -> Fields {
    Fields {
        subtitle: Some(Some(subtitle(envelope))),
        link: Some(link(envelope)),
        icon: Some(None),
        secondary_icon: Some(None),
        objects: objects(envelope),
    }
}

/// The event a topic names, searched in the original's (dict) order: `None` for a whole
/// compose's start or end.
fn event(topic: &str) -> Option<(&'static str, &'static str)> {
    let mut events = PRE_PUNGI4_EVENTS
        .iter()
        .chain(MAKE_UPDATES_EVENTS)
        .chain(PUNGI4_EVENTS);
    events.find(|(event, _)| topic.contains(event)).copied()
}

fn subtitle(envelope: &Envelope) -> String {
    let topic = envelope.topic.as_str();
    let msg = &envelope.msg;
    let event = event(topic);
    let event_text = event.map(|(_, text)| text).unwrap_or_default();
    let is_event_of = |list: &[(&str, &str)]| {
        event.is_some_and(|(name, _)| list.iter().any(|(known, _)| *known == name))
    };
    let branch = text(msg, "/branch");
    let release = match branch {
        Some(branch) => capitalize(branch.rsplit("Modular-").next().unwrap_or_default()),
        None => release_from_topic(topic),
    };
    let arch = match text(msg, "/arch") {
        Some(arch) if !arch.is_empty() => format!(" ({arch})"),
        _ => String::new(),
    };
    let make_updates = is_event_of(MAKE_UPDATES_EVENTS);
    let mut compose_text = if make_updates {
        "post-release Cloud/Atomic/Docker respin compose".to_string()
    } else {
        "compose".to_string()
    };
    if let Some(id) = text(msg, "/compose_id").filter(|id| !id.is_empty()) {
        compose_text.push(' ');
        compose_text.push_str(id);
    }
    let short = match text(msg, "/short") {
        Some(short) => short.to_string(),
        None => {
            let old_event = make_updates || is_event_of(PRE_PUNGI4_EVENTS);
            let is_number = !release.is_empty() && release.chars().all(|c| c.is_ascii_digit());
            let ambiguous = is_number
                && !old_event
                && msg.get("compose_id").is_none()
                && arch.is_empty()
                && !topic.contains("branched");
            if ambiguous {
                "Fedora, Fedora-Atomic, Fedora-Cloud or Fedora-Docker".to_string()
            } else if branch.is_some_and(|branch| branch.to_lowercase().contains("modular")) {
                "Fedora-Modular".to_string()
            } else {
                "Fedora".to_string()
            }
        }
    };
    let action = match topic.rsplit('.').next().unwrap_or_default() {
        "start" => "Started",
        "complete" | "done" | "stop" => "Completed",
        _ => "Did something to do with",
    };
    format!("{action}{event_text} {short} {release}{arch} {compose_text}")
}

/// The release of an old message without a `branch`, from its topic.
fn release_from_topic(topic: &str) -> String {
    let parts: Vec<&str> = topic.split('.').collect();
    if parts.contains(&"rawhide") {
        return "Rawhide".to_string();
    }
    if parts.contains(&"epelbeta") {
        return "EPEL Beta".to_string();
    }
    let two_digits = |part: &&&str| part.len() == 2 && part.chars().all(|c| c.is_ascii_digit());
    match parts.iter().find(two_digits) {
        Some(number) => number.to_string(),
        None => "(unknown release)".to_string(),
    }
}

/// The compose's location; a `null` one stays null, as in the original.
fn link(envelope: &Envelope) -> Option<String> {
    match envelope.msg.get("location") {
        Some(serde_json::Value::Null) => None,
        Some(location) => Some(location.as_str().unwrap_or(DEFAULT_LINK).to_string()),
        None => Some(DEFAULT_LINK.to_string()),
    }
}

/// `<branch>/<arch>`, the branch being the topic's fifth part.
fn objects(envelope: &Envelope) -> Option<Vec<String>> {
    let branch = envelope.topic.split('.').nth(4)?;
    let arch = text(&envelope.msg, "/arch")
        .filter(|arch| !arch.is_empty())
        .unwrap_or("primary");
    Some(vec![format!("{branch}/{arch}")])
}
