//! Ask Fedora (`askbot.*`): fedmsg.meta's `AskbotProcessor`. Questions, answers, tags and
//! offensive-content flags.

use serde_json::Value;

use crate::message::Envelope;

use super::{at, avatar, py_str, truthy, Fields};

const ICON: &str = "https://apps.fedoraproject.org/img/icons/ask_fedora.png";

pub(super) fn fields(envelope: &Envelope) -> Fields {
    let msg = &envelope.msg;
    let topic = envelope.topic.as_str();
    let agent = msg.get("agent").filter(|agent| truthy(agent)).map(py_str);
    Fields {
        subtitle: Some(Some(subtitle(msg, topic).unwrap_or_default())),
        link: link(msg, topic).map(Some),
        icon: Some(Some(ICON.to_string())),
        secondary_icon: Some(Some(
            agent
                .map(|agent| avatar::of_user(&agent))
                .unwrap_or_default(),
        )),
        objects: objects(msg),
    }
}

/// `None` where the original raises (a missing field, or an event it has no sentence for).
fn subtitle(msg: &Value, topic: &str) -> Option<String> {
    let user = at(msg, "/agent")?;
    let title = || at(msg, "/thread/title");
    let is_question = |pointer: &str| -> Option<bool> { Some(msg.pointer(pointer)? == "question") };
    let sentence = if topic.contains("askbot.post.edit") {
        let title = title()?;
        let created = truthy(msg.get("created")?);
        match (created, is_question("/post/post_type")?) {
            (true, true) => format!("{user} asked the question '{title}'"),
            (true, false) => format!("{user} suggested an answer to the question '{title}'"),
            (false, true) => format!("{user} updated the question '{title}'"),
            (false, false) => format!("{user} updated an answer to the question '{title}'"),
        }
    } else if topic.contains("askbot.tag.update") {
        format!("{user} altered tags on askbot question '{}'", title()?)
    } else if topic.contains("askbot.post.flag_offensive.add") {
        title()?;
        if is_question("/instance/post_type")? {
            format!("{user} flagged a question as offensive!")
        } else {
            format!("{user} flagged an answer as offensive!")
        }
    } else if topic.contains("askbot.post.flag_offensive.delete") {
        if is_question("/instance/post_type")? {
            format!("{user} unflagged a question as offensive...")
        } else {
            format!("{user} unflagged an answer as offensive...")
        }
    } else if topic.contains("askbot.post.delete") {
        let title = title()?;
        if is_question("/instance/post_type")? {
            format!("{user} deleted the question '{title}'")
        } else {
            format!("{user} deleted an answer on '{title}'")
        }
    } else {
        // The original raises NotImplementedError (datagrepper: 500).
        return None;
    };
    Some(sentence)
}

/// The question page (of the topmost post).
fn link(msg: &Value, topic: &str) -> Option<String> {
    let host = if topic.contains("stg") {
        "ask.stg.fedoraproject.org"
    } else {
        "ask.fedoraproject.org"
    };
    let question = at(msg, "/topmost_post_id")?;
    // The original also reads the post's key (unused by its template): a `KeyError` there too.
    if msg.get("post").is_some() {
        msg.pointer("/post/pk")?;
    } else if msg.get("instance").is_some() {
        msg.pointer("/instance/pk")?;
    }
    Some(format!("https://{host}/question/{question}/"))
}

/// `tags/<tag>` for the message's (or its thread's) tags, and `threads/<pk>`.
fn objects(msg: &Value) -> Option<Vec<String>> {
    let tags = if msg.get("tags").is_some() {
        msg.get("tags")
    } else if msg.get("thread").is_some() {
        Some(msg.pointer("/thread/tagnames")?)
    } else {
        None
    };
    let mut objects = Vec::new();
    if let Some(tags) = tags {
        for tag in tags.as_array()? {
            if truthy(tag) {
                objects.push(format!("tags/{}", py_str(tag)));
            }
        }
    }
    if msg.get("thread").is_some() {
        objects.push(format!("threads/{}", at(msg, "/thread/pk")?));
    }
    Some(objects)
}
