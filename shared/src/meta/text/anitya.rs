//! release-monitoring.org (`org.release-monitoring.*.anitya.*`): fedmsg.meta's
//! `AnityaProcessor`. Projects, distros, their name mappings and new upstream versions.

use serde_json::Value;

use crate::message::Envelope;

use super::{at, avatar, fill, list_to_series, present, py_str, truthy, Fields};

const ICON: &str = "https://apps.fedoraproject.org/packages/images/icons/package_128x128.png";

pub(super) fn fields(envelope: &Envelope) -> Fields {
    Fields {
        subtitle: subtitle(envelope),
        link: link(&envelope.msg, &envelope.topic),
        icon: Some(Some(ICON.to_string())),
        secondary_icon: secondary_icon(envelope),
        objects: objects(&envelope.msg, &envelope.topic),
    }
}

/// Who acted: the `message.agent` (an OpenID URL, an email or a name), or else the envelope's
/// `username` (null in datanommer when absent).
fn user(envelope: &Envelope) -> Option<String> {
    let Some(agent) = envelope.msg.pointer("/message/agent") else {
        return envelope.username.clone();
    };
    let agent = py_str(agent);
    if agent.contains("id.fedoraproject.org") {
        let before = agent
            .split(".id.fedoraproject.org")
            .next()
            .unwrap_or_default();
        let name = before
            .split_once("//")
            .map(|(_, name)| name)
            .unwrap_or_default();
        return Some(name.to_string());
    }
    if let Some(name) = agent.strip_suffix("@fedoraproject.org") {
        return Some(
            name.split("@fedoraproject.org")
                .next()
                .unwrap_or_default()
                .to_string(),
        );
    }
    // Another address stays an address: fedmsg.meta would ask FAS, and falls back to it.
    Some(agent)
}

fn link(msg: &Value, topic: &str) -> Option<Option<String>> {
    let project = msg.get("project")?;
    if truthy(project) {
        let id = at(project, "/id")?;
        return Some(Some(format!(
            "https://release-monitoring.org/project/{id}/"
        )));
    }
    if topic.ends_with("project.flag.set") {
        return Some(Some("https://release-monitoring.org/".to_string()));
    }
    Some(Some("https://release-monitoring.org/distros".to_string()))
}

fn subtitle(envelope: &Envelope) -> Option<Option<String>> {
    let msg = &envelope.msg;
    let topic = envelope.topic.as_str();
    let user = user(envelope).unwrap_or_else(|| "None".to_string());
    let user = user.as_str();
    let project = || at(msg, "/project/name");
    let sentence = if topic.contains("project.map.new") {
        fill(
            "{user} mapped the name of \"{project}\" in {distro} to \"{new}\"",
            &[
                ("user", user),
                ("project", &project()?),
                ("distro", &at(msg, "/distro/name")?),
                ("new", &at(msg, "/message/new")?),
            ],
        )
    } else if topic.contains("project.map.update") {
        fill(
            "{user} updated the name of \"{project}\" in \"{distro}\" from \"{old}\" to \"{new}\"",
            &[
                ("user", user),
                ("project", &project()?),
                ("distro", &at(msg, "/distro/name")?),
                ("old", &at(msg, "/message/prev")?),
                ("new", &at(msg, "/message/new")?),
            ],
        )
    } else if topic.contains("distro.add") {
        fill(
            "{user} added the distro named \"{distro}\" to anitya",
            &[("user", user), ("distro", &at(msg, "/distro/name")?)],
        )
    } else if topic.contains("distro.edit") {
        fill(
            "{user} changed a distro name from \"{old}\" to \"{new}\"",
            &[
                ("user", user),
                ("old", &at(msg, "/message/old")?),
                ("new", &at(msg, "/message/new")?),
            ],
        )
    } else if topic.contains("project.add.tried") {
        fill(
            "{user} tried to add the project \"{project}\" to anitya (but it already exists there)",
            &[("user", user), ("project", &project()?)],
        )
    } else if topic.contains("project.add") {
        fill(
            "{user} added the project \"{project}\" to anitya",
            &[("user", user), ("project", &project()?)],
        )
    } else if topic.contains("project.edit") {
        let fields: Vec<String> = match msg.pointer("/message/fields")? {
            Value::Array(fields) => fields.iter().map(py_str).collect(),
            _ => return None,
        };
        fill(
            "{user} edited the following fields of the \"{project}\" project: {fields}",
            &[
                ("user", user),
                ("project", &project()?),
                ("fields", &fields.join(", ")),
            ],
        )
    } else if topic.contains("project.remove") {
        fill(
            "{user} deleted the \"{project}\" project",
            &[("user", user), ("project", &project()?)],
        )
    } else if topic.contains("project.map.remove") {
        fill(
            "{user} deleted the mapping of \"{project}\" project on \"{distro}\"",
            &[
                ("user", user),
                ("project", &project()?),
                ("distro", &at(msg, "/message/distro")?),
            ],
        )
    } else if topic.contains("project.version.update") {
        return version_update(msg).map(Some);
    } else if topic.contains("project.version.remove") {
        fill(
            "{user} deleted the version {version} of \"{project}\"",
            &[
                ("user", user),
                ("project", &project()?),
                ("version", &at(msg, "/message/version")?),
            ],
        )
    } else if topic.contains("distro.remove") {
        fill(
            "{user} deleted the distro \"{project}\"",
            &[("user", user), ("project", &at(msg, "/distro/name")?)],
        )
    } else if topic.ends_with("project.flag.set") {
        fill(
            "{user} {action} flag \"{flagid}\"",
            &[
                ("user", user),
                ("action", &at(msg, "/message/state")?),
                ("flagid", &at(msg, "/message/flag")?),
            ],
        )
    } else if topic.ends_with("project.flag") {
        fill(
            "{user} flagged the project \"{project}\"",
            &[("user", user), ("project", &project()?)],
        )
    } else {
        return Some(None);
    };
    Some(Some(sentence))
}

/// A new upstream version, with the Fedora packages it maps to.
fn version_update(msg: &Value) -> Option<String> {
    let project = at(msg, "/project/name")?;
    let message = msg.get("message").unwrap_or(msg);
    let mut packages = Vec::new();
    if let Some(Value::Array(entries)) = message.get("packages") {
        for entry in entries {
            if *entry.get("distro")? == "Fedora" {
                packages.push(py_str(entry.get("package_name")?));
            }
        }
    }
    let odd = present(message.get("odd_change"));
    let old = message.get("old_version")?;
    let new = py_str(message.get("upstream_version")?);
    let template = if truthy(old) && !odd {
        "A new version of \"{project}\" has been detected:  \"{new}\" newer than \"{old}\", packaged as \"{packages}\""
    } else {
        "A new version of \"{project}\" has been detected:  \"{new}\", packaged as \"{packages}\""
    };
    Some(fill(
        template,
        &[
            ("project", &project),
            ("new", &new),
            ("old", &py_str(old)),
            ("packages", &list_to_series(&packages)),
        ],
    ))
}

/// The acting person's avatar; without one, the icon of the (first) Fedora package.
fn secondary_icon(envelope: &Envelope) -> Option<Option<String>> {
    if let Some(user) = user(envelope).filter(|user| !user.is_empty()) {
        if user.contains('@') {
            return Some(Some(avatar::of_email(&user)));
        }
        return Some(Some(avatar::of_user(&user)));
    }
    let packages = fedora_packages(&envelope.msg, &envelope.topic)?;
    let mut packages = packages;
    packages.sort();
    Some(packages.first().map(|package| {
        format!("https://apps.fedoraproject.org/packages/images/icons/{package}.png")
    }))
}

/// The original's `packages`: Fedora package names the message maps or updates.
fn fedora_packages(msg: &Value, topic: &str) -> Option<Vec<String>> {
    let is_fedora = |distro: &Value| py_str(distro).to_lowercase() == "fedora";
    let mut packages = Vec::new();
    if topic.contains("project.map.update") {
        if is_fedora(msg.pointer("/distro/name")?) {
            packages.push(at(msg, "/message/new")?);
            packages.push(at(msg, "/message/prev")?);
        }
    } else if topic.contains("project.map.new") {
        if is_fedora(msg.pointer("/distro/name")?) {
            packages.push(at(msg, "/message/new")?);
        }
    } else if topic.contains("project.version.update") || topic.ends_with("project.flag") {
        let entries = if topic.ends_with("project.flag") {
            msg.get("packages")
        } else if msg.get("message").is_some() {
            Some(msg.pointer("/message/packages")?)
        } else {
            Some(msg.get("packages")?)
        };
        if let Some(Value::Array(entries)) = entries {
            for entry in entries {
                if is_fedora(entry.get("distro")?) {
                    packages.push(py_str(entry.get("package_name")?));
                }
            }
        }
    }
    Some(packages)
}

fn objects(msg: &Value, topic: &str) -> Option<Vec<String>> {
    let project = || Some(vec![format!("projects/{}", at(msg, "/project/name")?)]);
    if topic.contains("project.map.update") {
        let distro = at(msg, "/distro/name")?;
        return Some(vec![
            format!("mappings/{distro}/{}", at(msg, "/message/new")?),
            format!("mappings/{distro}/{}", at(msg, "/message/prev")?),
            format!("distros/{distro}"),
            format!("projects/{}", at(msg, "/project/name")?),
        ]);
    }
    if topic.contains("project.map.new") {
        let distro = at(msg, "/distro/name")?;
        return Some(vec![
            format!("mappings/{distro}/{}", at(msg, "/message/new")?),
            format!("distros/{distro}"),
            format!("projects/{}", at(msg, "/project/name")?),
        ]);
    }
    let about_project = [
        "project.version.remove",
        "project.remove",
        "project.map.remove",
        "project.version.update",
        "project.edit",
        "project.add.tried",
        "project.add",
    ];
    if about_project.iter().any(|event| topic.contains(event)) || topic.ends_with("project.flag") {
        return project();
    }
    if topic.contains("distro.add") || topic.contains("distro.remove") {
        return Some(vec![format!("distros/{}", at(msg, "/distro/name")?)]);
    }
    if topic.contains("distro.edit") {
        return Some(vec![
            format!("distros/{}", at(msg, "/message/old")?),
            format!("distros/{}", at(msg, "/message/new")?),
        ]);
    }
    if topic.ends_with("project.flag.set") {
        return Some(vec![format!("flag/{}", at(msg, "/message/flag")?)]);
    }
    Some(Vec::new())
}
