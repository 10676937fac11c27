//! IRC meetings run by zodbot (`meetbot.meeting.*`): fedmsg.meta's `SupybotProcessor`. IRC
//! nicks stay nicks (fedmsg.meta maps them to FAS names only with a FAS cache, which it has
//! not offline either).

use serde_json::Value;

use crate::message::Envelope;

use super::{at, avatar, fill, py_str, truthy, Fields};

const ICON: &str = "https://apps.fedoraproject.org/img/icons/meetbot.png";

/// What a `meeting.item.<kind>` message says someone did.
const ITEM_ACTIONS: &[(&str, &str)] = &[
    ("agreed", "noted agreement"),
    ("accepted", "accepted an item"),
    ("rejected", "rejected an item"),
    ("action", "noted an action"),
    ("info", "raised a point of information"),
    ("idea", "proposed an idea"),
    ("help", "called for help"),
    ("link", "linked to more information"),
];

/// The bot itself attends every meeting; it is not an attendee.
const NOT_PEOPLE: &[&str] = &["zodbot"];

pub(super) fn fields(envelope: &Envelope) -> Fields {
    let msg = &envelope.msg;
    let topic = envelope.topic.as_str();
    let person = match msg.get("details") {
        Some(details) => details.get("nick"),
        None => msg.get("owner"),
    };
    Fields {
        subtitle: Some(Some(subtitle(msg, topic).unwrap_or_default())),
        link: link(msg, topic),
        icon: Some(Some(ICON.to_string())),
        secondary_icon: person.map(|nick| Some(avatar::of_user(&py_str(nick)))),
        objects: objects(msg),
    }
}

/// The first URL of an IRC line, as the original's `(https?://[a-z0-9.:].*?)[ $]` finds it: a
/// URL ends at a space or a `$`, and one running into the end of the line or a newline is
/// not found.
fn first_url(line: &str) -> Option<&str> {
    let mut search_from = 0;
    while let Some(found) = line[search_from..].find("http") {
        let start = search_from + found;
        search_from = start + 4;
        let rest = &line[start + 4..];
        let rest = rest.strip_prefix('s').unwrap_or(rest);
        let Some(after_scheme) = rest.strip_prefix("://") else {
            continue;
        };
        let mut chars = after_scheme.char_indices();
        let Some((_, first)) = chars.next() else {
            continue;
        };
        if !(first.is_ascii_lowercase() || first.is_ascii_digit() || first == '.' || first == ':') {
            continue;
        }
        let body_start = line.len() - after_scheme.len();
        for (offset, c) in chars {
            if c == '\n' {
                break;
            }
            if c == ' ' || c == '$' {
                return Some(&line[start..body_start + offset]);
            }
        }
    }
    None
}

fn link(msg: &Value, topic: &str) -> Option<Option<String>> {
    if topic.contains("meetbot.meeting.complete") {
        let url = msg.get("url")?.as_str()?;
        return Some(Some(format!("{}.html", url.replace("http://", "https://"))));
    }
    if topic.contains("meetbot.meeting.item.link") {
        let line = msg.pointer("/details/line")?.as_str()?;
        return Some(first_url(line).map(str::to_string));
    }
    Some(None)
}

/// `None` where the original raises (a missing field, or an event it has no sentence for).
fn subtitle(msg: &Value, topic: &str) -> Option<String> {
    let titled = truthy(msg.get("meeting_topic")?);
    let mut action = "None";
    let mut line = "None".to_string();
    let template = if topic.contains("meetbot.meeting.start") {
        if titled {
            "{owner} started meeting \"{name}\" in {channel}"
        } else {
            "{owner} started a meeting in {channel}"
        }
    } else if topic.contains("meetbot.meeting.complete") {
        if titled {
            "{owner}'s meeting titled \"{name}\" ended in {channel}"
        } else {
            "{owner}'s meeting ended in {channel}"
        }
    } else if topic.contains("meetbot.meeting.topic.update") {
        if titled {
            "The topic of {owner}'s \"{name}\" meeting changed to \"{topic}\" in {channel}"
        } else {
            "The topic of {owner}'s meeting changed to \"{topic}\" in {channel}"
        }
    } else if topic.contains("meetbot.meeting.item.") {
        let kind = topic.rsplit('.').next().unwrap_or_default();
        let (_, item_action) = ITEM_ACTIONS.iter().find(|(known, _)| *known == kind)?;
        action = item_action;
        line = at(msg, "/details/line")?;
        if titled {
            "{agent} {action} in the \"{name}\" meeting in {channel}: \"{line}\""
        } else {
            "{agent} {action} in a meeting in {channel}: \"{line}\""
        }
    } else {
        return None;
    };
    let agent = match msg.get("details") {
        Some(details) => py_str(details.get("nick")?),
        None => "None".to_string(),
    };
    let owner = at(msg, "/owner")?;
    let name = at(msg, "/meeting_topic")?;
    let channel = at(msg, "/channel")?;
    let meeting_topic = at(msg, "/topic").unwrap_or_else(|| "no topic".to_string());
    Some(fill(
        template,
        &[
            ("owner", &owner),
            ("agent", &agent),
            ("name", &name),
            ("channel", &channel),
            ("topic", &meeting_topic),
            ("action", action),
            ("line", &line),
        ],
    ))
}

/// Attendees, the channel, and the meeting's title and topic when it has them.
fn objects(msg: &Value) -> Option<Vec<String>> {
    let mut objects = Vec::new();
    // A dict of nick → lines said (a list in older messages): its keys are the people.
    let people: Vec<String> = match msg.get("attendees")? {
        Value::Object(attendees) => attendees.keys().cloned().collect(),
        Value::Array(attendees) => attendees.iter().map(py_str).collect(),
        _ => return None,
    };
    for nick in people {
        if !NOT_PEOPLE.contains(&nick.as_str()) {
            objects.push(format!("attendees/{nick}"));
        }
    }
    objects.push(format!("channels/{}", at(msg, "/channel")?));
    let title = msg.get("meeting_topic")?;
    if truthy(title) {
        objects.push(format!("titles/{}", py_str(title)));
    }
    if let Some(topic) = msg.get("topic").filter(|topic| truthy(topic)) {
        objects.push(format!("topics/{}", py_str(topic)));
    }
    Some(objects)
}
