//! Bodhi, Fedora's update system (`bodhi.*`), and the `updates.*.sync` messages of its mirror
//! sync script: fedmsg.meta's `BodhiProcessor`. Updates are named by their title (the builds'
//! NVRs) or alias; old and new bodhi put the author in different places, hence the helpers.

use std::sync::LazyLock;

use serde_json::{Map, Value};

use crate::message::Envelope;

use super::super::name_from_nvr;
use super::super::packaging::BODHI_UPDATE_TOPICS as UPDATE_TOPICS;
use super::{avatar, fill, present, py_str, shown, Fields};

const ICON: &str = "https://apps.fedoraproject.org/img/icons/bodhi.png";
const PREFIX: &str = "https://bodhi.fedoraproject.org";
const PACKAGE_ICON: &str = "https://apps.fedoraproject.org/packages/images/icons/";

pub(super) fn fields(envelope: &Envelope) -> Fields {
    Fields {
        subtitle: subtitle(&envelope.msg, &envelope.topic),
        link: link(&envelope.msg, &envelope.topic).map(Some),
        icon: Some(Some(ICON.to_string())),
        secondary_icon: secondary_icon(&envelope.msg, &envelope.topic).map(Some),
        objects: objects(&envelope.msg, &envelope.topic),
    }
}

static EMPTY: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);

/// `value` as a dict, `{}` for anything else (where Python would fail or use the default).
fn dict(value: Option<&Value>) -> &Map<String, Value> {
    match value {
        Some(Value::Object(fields)) => fields,
        _ => &EMPTY,
    }
}

fn in_any(topic: &str, topics: &[&str]) -> bool {
    topics.iter().any(|known| topic.contains(known))
}

fn is_ftp_sync(topic: &str) -> bool {
    topic.contains("bodhi.updates.") && topic.ends_with(".sync")
}

/// The product of a sync topic (`…updates.fedora.sync` → `Fedora`).
fn sync_product(topic: &str) -> String {
    let product = topic.rsplit('.').nth(1).unwrap_or_default();
    match product {
        "fedora" => "Fedora".to_string(),
        "epel" => "EPEL".to_string(),
        other => other.to_string(),
    }
}

/// The synced release, without the `m` that marks a modular one.
fn sync_release(msg: &Value) -> Option<(String, bool)> {
    let release = msg.get("release")?.as_str()?;
    let modular = release.ends_with('m');
    Some((release.trim_end_matches('m').to_string(), modular))
}

/// At most 40 characters, then `...`.
fn truncate(title: &str) -> String {
    if title.chars().count() >= 40 {
        let mut short: String = title.chars().take(40).collect();
        short.push_str("...");
        return short;
    }
    title.to_string()
}

/// The update of a message: `update`, or the comment's `update`.
fn update_of(msg: &Value) -> &Map<String, Value> {
    let comment = dict(msg.get("comment"));
    match msg.get("update") {
        Some(update) => dict(Some(update)),
        None => dict(comment.get("update")),
    }
}

/// The update's title, or its builds' NVRs; `None` where a build has no `nvr`.
fn title_string(msg: &Value) -> Option<String> {
    let comment = dict(msg.get("comment"));
    let update = update_of(msg);
    if update.is_empty() {
        return Some(comment.get("update_title").map(py_str).unwrap_or_default());
    }
    if present(update.get("title")) {
        return Some(shown(update.get("title")));
    }
    let mut nvrs = Vec::new();
    if let Some(Value::Array(builds)) = update.get("builds") {
        for build in builds {
            nvrs.push(py_str(build.get("nvr")?));
        }
    }
    Some(nvrs.join(" "))
}

/// The update's alias, title, or the comment's.
fn title_or_alias(msg: &Value) -> String {
    let comment = dict(msg.get("comment"));
    let update = update_of(msg);
    let candidates = [
        update.get("alias"),
        update.get("title"),
        comment.get("update_alias"),
    ];
    if let Some(value) = candidates.into_iter().find(|value| present(*value)) {
        return shown(value);
    }
    comment.get("update_title").map(py_str).unwrap_or_default()
}

/// A `user`/`author` that is a name or a `{name}` object.
fn name_of(author: Option<&Value>) -> Option<&Value> {
    match author {
        Some(Value::Object(user)) => user.get("name"),
        other => other,
    }
}

fn comment_author(msg: &Value) -> Option<&Value> {
    let comment = dict(msg.get("comment"));
    name_of(comment.get("user").or_else(|| comment.get("author")))
}

fn update_author(msg: &Value) -> Option<&Value> {
    let update = dict(msg.get("update"));
    name_of(update.get("user").or_else(|| update.get("submitter")))
}

/// The override's submitter: outer `None` where the original raises `KeyError`.
fn override_author(msg: &Value) -> Option<Option<&Value>> {
    let Some(details) = msg.get("override").filter(|value| present(Some(value))) else {
        return Some(None);
    };
    match details.get("submitter")? {
        Value::Object(user) => Some(Some(user.get("name")?)),
        author => Some(Some(author)),
    }
}

fn override_nvr(msg: &Value) -> Option<&Value> {
    match dict(msg.get("override")).get("build") {
        Some(Value::Object(build)) => build.get("nvr"),
        build => build,
    }
}

/// Package names of space- or comma-separated NVRs.
fn names_of_nvrs(nvrs: &str) -> Vec<String> {
    nvrs.split([' ', ','])
        .map(|nvr| name_from_nvr(nvr).to_string())
        .collect()
}

fn secondary_icon(msg: &Value, topic: &str) -> Option<String> {
    let username = if topic.contains("bodhi.update.comment") {
        comment_author(msg)
    } else if topic.contains("bodhi.buildroot_override") {
        override_author(msg)?
    } else if topic.contains("bodhi.stack") {
        Some(msg.get("agent")?)
    } else if present(update_author(msg)) {
        update_author(msg)
    } else {
        msg.get("agent")
    };
    if present(username) {
        return Some(avatar::of_user(&shown(username)));
    }
    let title = title_string(msg)?;
    if title.is_empty() {
        return Some(ICON.to_string());
    }
    let first = names_of_nvrs(&title).into_iter().next().unwrap_or_default();
    Some(format!("{PACKAGE_ICON}{first}.png"))
}

fn subtitle(msg: &Value, topic: &str) -> Option<Option<String>> {
    let get = |key: &str| msg.get(key);
    let repo = || shown(get("repo"));
    let text_or =
        |key: &str, default: &str| get(key).map(py_str).unwrap_or_else(|| default.to_string());
    let sentence = if is_ftp_sync(topic) {
        let (release, modular) = sync_release(msg)?;
        fill(
            "New {product} {truerelease} {repo}{modular} content synced out ({bytes} changed with {deleted} files deleted)",
            &[
                ("product", &sync_product(topic)),
                ("truerelease", &release),
                ("modular", if modular { " modular" } else { "" }),
                ("repo", &py_str(get("repo")?)),
                ("bytes", &py_str(get("bytes")?)),
                ("deleted", &py_str(get("deleted")?)),
            ],
        )
    } else if topic.contains("bodhi.masher.start") || topic.contains("bodhi.composer.start") {
        let agent = py_str(get("agent")?);
        match get("updates") {
            Some(updates) => {
                let count = match updates {
                    Value::Array(items) => items.len(),
                    Value::Object(fields) => fields.len(),
                    Value::String(text) => text.chars().count(),
                    _ => return None,
                };
                format!("{agent} requested a mash of {count} updates")
            }
            None => format!("{agent} requested a mash of some updates"),
        }
    } else if topic.contains("bodhi.update.comment") {
        let comment = get("comment")?;
        let karma = py_str(comment.get("karma")?);
        let title = match comment.get("update_title") {
            Some(title) => py_str(title),
            None => dict(comment.get("update"))
                .get("title")
                .map(py_str)
                .unwrap_or_default(),
        };
        fill(
            "{author} commented on bodhi update {title} (karma: {karma})",
            &[
                ("author", &shown(comment_author(msg))),
                ("karma", &karma),
                ("title", &truncate(&title)),
            ],
        )
    } else if topic.contains("bodhi.update.complete.") {
        let status = py_str(get("update")?.get("status")?);
        fill(
            "{author}'s {pkgs} bodhi update completed push to {status}",
            &[
                ("author", &shown(update_author(msg))),
                ("pkgs", &truncate(&title_string(msg)?)),
                ("status", &status),
            ],
        )
    } else if topic.contains("bodhi.update.eject") {
        get("update")?;
        fill(
            "{author}'s {pkgs} bodhi update was ejected from the {repo} mash.  Reason: \"{reason}\"",
            &[
                ("author", &shown(update_author(msg))),
                ("pkgs", &truncate(&title_string(msg)?)),
                ("repo", &py_str(get("repo")?)),
                ("reason", &py_str(get("reason")?)),
            ],
        )
    } else if topic.contains("bodhi.update.edit") {
        let author = py_str(get("agent")?);
        format!("{author} edited {}", truncate(&title_string(msg)?))
    } else if topic.contains("bodhi.update.request") {
        let status = topic.rsplit('.').next().unwrap_or_default();
        let author = shown(get("agent"));
        let title = truncate(&title_string(msg)?);
        match status {
            "unpush" => format!("{author} {status}ed {title}"),
            "obsolete" | "revoke" => format!("{author} {status}d {title}"),
            _ => format!("{author} submitted {title} to {status}"),
        }
    } else if topic.contains("bodhi.mashtask.start") {
        "bodhi masher started a push".to_string()
    } else if topic.contains("bodhi.mashtask.mashing") {
        format!("bodhi masher started mashing {}", repo())
    } else if topic.contains("bodhi.mashtask.complete") {
        if present(Some(get("success")?)) {
            format!("bodhi masher successfully mashed {}", repo())
        } else {
            format!("bodhi masher failed to mash {}", repo())
        }
    } else if topic.contains("bodhi.mashtask.sync.wait") {
        format!(
            "bodhi masher is waiting for {} to hit the master mirror",
            repo()
        )
    } else if topic.contains("bodhi.mashtask.sync.done") {
        format!(
            "bodhi masher finished waiting for {} to hit the master mirror",
            repo()
        )
    } else if topic.contains("bodhi.compose.start") {
        "bodhi composer started a run".to_string()
    } else if topic.contains("bodhi.compose.composing") {
        let ctype = text_or("ctype", "unknown type");
        let repo = text_or("repo", "unknown repo");
        format!("bodhi {ctype} compose of repo {repo} started")
    } else if topic.contains("bodhi.repo.done") {
        let repo = text_or("repo", "unknown repo");
        format!("bodhi repo {repo} created")
    } else if topic.contains("bodhi.compose.complete") {
        let ctype = text_or("ctype", "unknown type");
        let repo = text_or("repo", "unknown repo");
        let result = match get("success") {
            None => "completed".to_string(),
            Some(Value::Bool(true)) => "succeeded".to_string(),
            Some(Value::Bool(false)) => "failed".to_string(),
            Some(other) => py_str(other),
        };
        format!("bodhi {ctype} compose of repo {repo} {result}")
    } else if topic.contains("bodhi.compose.sync.wait") {
        format!(
            "bodhi composer is waiting for {} to hit the master mirror",
            repo()
        )
    } else if topic.contains("bodhi.compose.sync.done") {
        format!(
            "bodhi composer finished waiting for {} to hit the master mirror",
            repo()
        )
    } else if topic.contains("bodhi.buildroot_override.tag")
        || topic.contains("bodhi.buildroot_override.untag")
    {
        let verb = if topic.contains("bodhi.buildroot_override.tag") {
            "submitted"
        } else {
            "expired"
        };
        let submitter = shown(override_author(msg)?);
        let build = shown(override_nvr(msg));
        format!("{submitter} {verb} a buildroot override for {build}")
    } else if topic.contains("bodhi.stack.save") || topic.contains("bodhi.stack.delete") {
        let verb = if topic.contains("bodhi.stack.save") {
            "updated"
        } else {
            "deleted"
        };
        let agent = py_str(get("agent")?);
        let name = py_str(get("stack")?.get("name")?);
        format!("{agent} {verb} the \"{name}\" stack")
    } else if topic.contains("bodhi.update.karma.threshold") {
        let title = truncate(&title_string(msg)?);
        let status = py_str(get("status")?);
        format!("{title} reached the {status} karma threshold")
    } else if topic.contains("bodhi.update.requirements_met") {
        let status = topic.rsplit('.').next().unwrap_or_default();
        let title = truncate(&title_string(msg)?);
        format!("{title} reached the {status} testing threshold")
    } else if topic.contains("bodhi.errata.publish") {
        py_str(get("subject")?)
    } else {
        return Some(None);
    };
    Some(Some(sentence))
}

fn link(msg: &Value, topic: &str) -> Option<String> {
    if in_any(topic, UPDATE_TOPICS) {
        return Some(format!("{PREFIX}/updates/{}", title_or_alias(msg)));
    }
    if topic.contains("bodhi.stack") {
        let name = py_str(msg.get("stack")?.get("name")?);
        return Some(format!("{PREFIX}/stacks/{name}"));
    }
    if topic.contains("bodhi.buildroot_override") {
        return Some(format!("{PREFIX}/overrides/{}", shown(override_nvr(msg))));
    }
    if !is_ftp_sync(topic) {
        return Some(PREFIX.to_string());
    }
    let repo = msg.get("repo")?.as_str()?;
    let (release, modular) = sync_release(msg)?;
    let product = sync_product(topic).to_lowercase();
    let mut link = format!("https://download.fedoraproject.org/pub/{product}/");
    if product == "fedora" {
        link.push_str(if repo == "atomic" {
            "linux/atomic/"
        } else {
            "linux/updates/"
        });
    }
    if repo.ends_with("testing") {
        link.push_str("testing/");
    }
    link.push_str(&release);
    link.push('/');
    if modular {
        link.push_str("Modular/");
    } else if let Ok(number) = release.parse::<u64>() {
        let everything = (product == "fedora" && number > 27) || (product == "epel" && number > 7);
        if everything && release.chars().all(|c| c.is_ascii_digit()) {
            link.push_str("Everything/");
        }
    }
    Some(link)
}

fn objects(msg: &Value, topic: &str) -> Option<Vec<String>> {
    if is_ftp_sync(topic) {
        let product = sync_product(topic).to_lowercase();
        let (release, _) = sync_release(msg)?;
        let repo = py_str(msg.get("repo")?);
        return Some(vec![format!("{product}/{repo}/{release}")]);
    }
    let repo_topics = ["bodhi.mashtask", "bodhi.compose", "bodhi.repo.done"];
    if let (Some(repo), true) = (msg.get("repo"), in_any(topic, &repo_topics)) {
        return Some(vec![format!("repos/{}", repo.as_str()?)]);
    }
    let packages = if in_any(topic, UPDATE_TOPICS) {
        names_of_nvrs(&title_string(msg)?)
    } else if topic.contains("bodhi.masher.start") {
        let mut names = Vec::new();
        if let Some(Value::Array(updates)) = msg.get("updates") {
            for update in updates {
                names.extend(names_of_nvrs(update.as_str()?));
            }
        }
        names
    } else if topic.contains("bodhi.buildroot_override.") {
        names_of_nvrs(override_nvr(msg)?.as_str()?)
    } else if topic.contains("bodhi.stack") {
        let stack = msg.get("stack")?;
        let mut objects = Vec::new();
        if let Value::Array(packages) = stack.get("packages")? {
            for package in packages {
                objects.push(format!("packages/{}", py_str(package.get("name")?)));
            }
        }
        objects.push(format!("stacks/{}", py_str(stack.get("name")?)));
        return Some(objects);
    } else {
        return Some(Vec::new());
    };
    Some(
        packages
            .iter()
            .map(|name| format!("packages/{name}"))
            .collect(),
    )
}
