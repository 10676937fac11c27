//! Red Hat Bugzilla (`bugzilla.bug.*`): fedmsg.meta's `BugzillaProcessor`. People are email
//! addresses; offline, only `@fedoraproject.org` ones become FAS names (fedmsg.meta asks its
//! FAS cache for the others, and without one keeps the address, as here).

use serde_json::Value;

use crate::message::Envelope;

use super::{avatar, present, py_str, Fields};

const ICON: &str = "https://apps.fedoraproject.org/img/icons/bugzilla.png";

/// Bug summaries longer than this are cut.
const MAX_TITLE: usize = 40;

pub(super) fn fields(envelope: &Envelope) -> Fields {
    let msg = &envelope.msg;
    let secondary_icon = user(msg).map(|user| {
        if user.contains('@') {
            Some(avatar::of_email(&user))
        } else {
            Some(avatar::of_user(&user))
        }
    });
    Fields {
        subtitle: subtitle(msg, &envelope.topic).map(Some),
        link: link(msg).map(Some),
        icon: Some(Some(ICON.to_string())),
        secondary_icon,
        objects: objects(msg),
    }
}

/// Who acted: the commenter, the event's `who`, or the bug's creator, as a FAS name when the
/// address is a Fedora one.
fn user(msg: &Value) -> Option<String> {
    let comment = msg.get("comment");
    let event = msg.get("event");
    let email = if present(comment) {
        comment?.get("author")?
    } else if present(event) && present(event?.get("who")) {
        event?.get("who")?
    } else {
        msg.get("bug")?.get("creator")?
    };
    let email = email.as_str()?;
    Some(
        email
            .strip_suffix("@fedoraproject.org")
            .unwrap_or(email)
            .to_string(),
    )
}

/// `'a'`, `'a' and 'b'`, `'a', 'b', and 'c'`.
fn comma_join(fields: &[String]) -> String {
    let quoted: Vec<String> = fields.iter().map(|field| format!("'{field}'")).collect();
    match quoted.as_slice() {
        [] => "nothing? (likely bugzilla sent us a buggy message)".to_string(),
        [one] => one.clone(),
        [first, second] => format!("{first} and {second}"),
        [init @ .., last] => format!("{}, and {last}", init.join(", ")),
    }
}

fn subtitle(msg: &Value, topic: &str) -> Option<String> {
    let user = user(msg)?;
    let bug = msg.get("bug");
    let id = bug
        .and_then(|bug| bug.get("id"))
        .map(py_str)
        .unwrap_or_else(|| "None".to_string());
    let mut title = bug?.get("summary")?.as_str()?.to_string();
    if title.chars().count() > MAX_TITLE {
        title = title.chars().take(MAX_TITLE).collect::<String>() + "...";
    }
    let created = topic.contains("bug.new") || {
        let event = msg.get("event")?;
        event.get("target").is_some_and(|target| target == "bug")
            && event.get("action").is_some_and(|action| action == "create")
    };
    if created {
        return Some(format!("{user} filed a new bug RHBZ#{id} '{title}'"));
    }
    if present(msg.get("comment")) {
        return Some(format!("{user} commented on RHBZ#{id} '{title}'"));
    }
    if present(msg.get("event")) {
        let mut fields = Vec::new();
        for change in msg.pointer("/event/changes")?.as_array()? {
            fields.push(py_str(change.get("field_name")?));
        }
        let fields = comma_join(&fields);
        return Some(format!("{user} updated {fields} on RHBZ#{id} '{title}'"));
    }
    Some(format!("{user} updated RHBZ#{id} '{title}'"))
}

fn link(msg: &Value) -> Option<String> {
    let bug = msg.get("bug")?;
    if let Some(url) = bug.get("weburl").filter(|url| present(Some(url))) {
        return Some(py_str(url));
    }
    let id = py_str(bug.get("id")?);
    Some(format!("https://bugzilla.redhat.com/show_bug.cgi?id={id}"))
}

/// `<product>/<component>/<id>`; newer messages have `{name}` objects for both.
fn objects(msg: &Value) -> Option<Vec<String>> {
    let bug = msg.get("bug")?;
    let mut product = bug.get("product")?;
    let mut component = bug.get("component")?;
    if let Value::Object(details) = product {
        product = details.get("name")?;
        if let Value::Object(details) = component {
            component = details.get("name")?;
        }
    }
    let id = py_str(bug.get("id")?);
    Some(vec![format!(
        "{}/{}/{id}",
        py_str(product),
        py_str(component)
    )])
}
