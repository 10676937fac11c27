//! Koji, the build system (`buildsys.*`): fedmsg.meta's `KojiProcessor`. Its sentences are
//! templates filled from the message body itself (`{owner}'s {name}-{version}-{release}…`),
//! so a missing body field leaves the subtitle empty, as the original's `KeyError` does.

use serde_json::Value;

use crate::message::Envelope;

use super::{avatar, fill, list_to_series, py_str, truthy, Fields};

const ICON: &str =
    "https://fedoraproject.org/w/uploads/2/20/Artwork_DesignService_koji-icon-48.png";

/// `build.state.change` sentences, by the build's new state (koji's numbering).
const BUILD_STATES: [&str; 5] = [
    "{owner}'s {name}-{version}-{release} started building{inst}",
    "{owner}'s {name}-{version}-{release} completed{inst}",
    "{owner}'s {name}-{version}-{release} was deleted{inst}",
    "{owner}'s {name}-{version}-{release} failed to build{inst}",
    "{owner}'s {name}-{version}-{release} was cancelled{inst}",
];

/// `task.state.change` sentences for scratch builds, by the task's new state.
const TASK_STATES: &[(&str, &str)] = &[
    (
        "OPEN",
        "{owner}'s scratch build of {srpm}{target} started{inst}",
    ),
    (
        "FAILED",
        "{owner}'s scratch build of {srpm}{target} failed{inst}",
    ),
    (
        "CLOSED",
        "{owner}'s scratch build of {srpm}{target} completed{inst}",
    ),
    (
        "CANCELED",
        "{owner}'s scratch build of {srpm}{target} was cancelled{inst}",
    ),
];
const TASK_OTHER_STATE: &str = "{owner}'s scratch build of {srpm}{target} changed{inst}";

/// Koji instances and their web addresses.
const INSTANCES: &[(&str, &str)] = &[
    ("primary", "http://koji.fedoraproject.org/koji"),
    ("ppc", "http://ppc.koji.fedoraproject.org/koji"),
    ("s390", "http://s390.koji.fedoraproject.org/koji"),
    ("arm", "http://arm.koji.fedoraproject.org/koji"),
];

pub(super) fn fields(envelope: &Envelope) -> Fields {
    let msg = &envelope.msg;
    let topic = envelope.topic.as_str();
    let owner = msg.get("owner").filter(|owner| truthy(owner));
    let secondary_icon = match owner {
        Some(owner) => avatar::of_user(&py_str(owner)),
        None => ICON.to_string(),
    };
    Fields {
        subtitle: Some(subtitle(msg, topic)),
        link: link(msg, topic),
        icon: Some(Some(ICON.to_string())),
        secondary_icon: Some(Some(secondary_icon)),
        objects: objects(msg, topic),
    }
}

/// The koji instance (`primary` unless the message says).
fn instance(msg: &Value) -> String {
    msg.get("instance")
        .map(py_str)
        .unwrap_or_else(|| "primary".to_string())
}

/// Fills every `{name}` of `template` from `extra`, else from the fields of `body`; `None`
/// when one is in neither (the original's `str.format(**msg)` raising `KeyError`).
fn fill_from(template: &str, body: &Value, extra: &[(&str, &str)]) -> Option<String> {
    let mut values: Vec<(String, String)> = Vec::new();
    for piece in template.split('{').skip(1) {
        let name = piece.split('}').next().unwrap_or_default();
        if extra.iter().any(|(known, _)| *known == name) {
            continue;
        }
        values.push((name.to_string(), py_str(body.get(name)?)));
    }
    let mut pairs: Vec<(&str, &str)> = extra.to_vec();
    pairs.extend(
        values
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    );
    Some(fill(template, &pairs))
}

/// A template without its `{owner}'s ` prefix when the build has no owner.
fn without_owner<'a>(msg: &Value, template: &'a str) -> Option<&'a str> {
    if truthy(msg.get("owner")?) {
        return Some(template);
    }
    Some(template.strip_prefix("{owner}'s ").unwrap_or(template))
}

/// The scratch build's targets (` for f30-candidate`): the request items that are not RPMs.
fn scratch_targets(msg: &Value) -> Option<String> {
    let request = msg.pointer("/info/request");
    let Some(Value::Array(items)) = request.filter(|request| truthy(request)) else {
        return Some(String::new());
    };
    let mut targets = Vec::new();
    for item in items {
        if item.is_object() || item.is_array() {
            continue;
        }
        let item = item.as_str()?;
        if !item.ends_with(".rpm") {
            targets.push(item.to_string());
        }
    }
    if targets.is_empty() {
        return Some(String::new());
    }
    Some(format!(" for {}", list_to_series(&targets)))
}

fn subtitle(msg: &Value, topic: &str) -> Option<String> {
    let instance = instance(msg);
    let inst = if instance == "primary" {
        String::new()
    } else {
        format!(" ({instance})")
    };
    let inst = inst.as_str();
    let is = |event: &str| topic.contains(event);
    if is("buildsys.tag") {
        let template = "{owner}'s {name}-{version}-{release} tagged into {tag} by {user}{inst}";
        return fill_from(template, msg, &[("inst", inst)]);
    }
    if is("buildsys.untag") {
        let template = "{owner}'s {name}-{version}-{release} untagged from {tag} by {user}{inst}";
        return fill_from(template, msg, &[("inst", inst)]);
    }
    if is("buildsys.repo.init") || is("buildsys.repo.done") {
        let tag = msg
            .get("tag")
            .map(py_str)
            .unwrap_or_else(|| "unknown".to_string());
        let what = if is("buildsys.repo.init") {
            "initialized"
        } else {
            "done"
        };
        return Some(format!("Repo {what}:  {tag}{inst}"));
    }
    if is("buildsys.package.list.change") {
        return fill_from(
            "Package list change for {package}:  '{tag}'{inst}",
            msg,
            &[("inst", inst)],
        );
    }
    if is("buildsys.rpm.sign") {
        let template =
            "Koji build {name}-{version}-{release}.{arch}.rpm signed with sigkey '{sigkey}'";
        if let Some(info) = msg.get("info") {
            return fill_from(template, info, &[]);
        }
        let sigkey = py_str(msg.get("sigkey")?);
        return fill_from(template, msg.get("rpm")?, &[("sigkey", &sigkey)]);
    }
    if is("buildsys.build.state.change") {
        let state = msg.get("new")?.as_i64()?;
        let index = if state < 0 { state + 5 } else { state };
        let template = BUILD_STATES.get(usize::try_from(index).ok()?)?;
        return fill_from(without_owner(msg, template)?, msg, &[("inst", inst)]);
    }
    if is("buildsys.task.state.change") {
        let target = scratch_targets(msg)?;
        let state = msg.get("new")?;
        let template = TASK_STATES
            .iter()
            .find(|(name, _)| *state == *name)
            .map(|(_, template)| *template)
            .unwrap_or(TASK_OTHER_STATE);
        let template = without_owner(msg, template)?;
        return fill_from(template, msg, &[("inst", inst), ("target", &target)]);
    }
    Some(String::new())
}

/// An integer field as `%i` shows it.
fn integer(value: &Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_f64().map(|number| number.trunc() as i64))
}

fn link(msg: &Value, topic: &str) -> Option<Option<String>> {
    let instance = instance(msg);
    // The original raises for an unknown instance (datagrepper: 500).
    let (_, base) = INSTANCES.iter().find(|(name, _)| *name == instance)?;
    let base = if topic.contains(".stg.") {
        "http://koji.stg.fedoraproject.org/koji"
    } else {
        base
    };
    let is = |event: &str| topic.contains(event);
    let tag_events = [
        "buildsys.tag",
        "buildsys.untag",
        "buildsys.repo.init",
        "buildsys.repo.done",
    ];
    if let Some(tag_id) = msg.get("tag_id") {
        if tag_events.iter().any(|event| is(event)) {
            return Some(Some(format!("{base}/taginfo?tagID={}", integer(tag_id)?)));
        }
    }
    if is("buildsys.build.state.change") {
        let id = integer(msg.get("build_id")?)?;
        return Some(Some(format!("{base}/buildinfo?buildID={id}")));
    }
    if is("buildsys.task.state.change") {
        let id = integer(msg.get("id")?)?;
        return Some(Some(format!("{base}/taskinfo?taskID={id}")));
    }
    if is("buildsys.package.list.change") {
        return Some(None);
    }
    if is("buildsys.rpm.sign") {
        let holder = msg.get("info").or_else(|| msg.get("rpm"))?;
        let id = integer(holder.get("build_id")?)?;
        return Some(Some(format!("{base}/buildinfo?buildID={id}")));
    }
    Some(Some(base.to_string()))
}

fn objects(msg: &Value, topic: &str) -> Option<Vec<String>> {
    let instance = instance(msg);
    let is = |event: &str| topic.contains(event);
    let field = |key: &str| msg.get(key).map(py_str);
    let tag_or_unknown = || field("tag").unwrap_or_else(|| "unknown".to_string());
    let build = || -> Option<String> {
        Some(format!(
            "{instance}/builds/{}/{}/{}",
            field("name")?,
            field("version")?,
            field("release")?
        ))
    };
    if is("buildsys.tag") {
        return Some(vec![build()?, format!("{instance}/tags/{}", field("tag")?)]);
    }
    if is("buildsys.untag") {
        return Some(vec![
            build()?,
            format!("{instance}/tags/{}", tag_or_unknown()),
        ]);
    }
    if is("buildsys.build.state.change") {
        return Some(vec![build()?]);
    }
    if is("buildsys.task.state.change") {
        return Some(vec![format!(
            "{instance}/scratch_builds/{}",
            field("srpm")?
        )]);
    }
    if is("buildsys.repo.init") || is("buildsys.repo.done") {
        return Some(vec![format!("{instance}/repos/{}", tag_or_unknown())]);
    }
    if is("buildsys.package.list.change") {
        return Some(vec![format!("{instance}/tags/{}", tag_or_unknown())]);
    }
    if is("buildsys.rpm.sign") {
        let holder = msg.get("info").or_else(|| msg.get("rpm"))?;
        return Some(vec![format!("signatures/{}", py_str(holder.get("name")?))]);
    }
    Some(Vec::new())
}
