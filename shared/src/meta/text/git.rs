//! Fedora's package git (`git.*`: pushes, branches, lookaside uploads, mass branching):
//! fedmsg.meta's `SCMProcessor`. Old messages name the repository and branch only in the topic
//! (`git.receive.<repo>.<branch>`), so several fields fall back to the topic's parts.

use serde_json::Value;

use crate::message::Envelope;

use super::{avatar, fill, py_str, text, Fields};

const ICON: &str = "https://apps.fedoraproject.org/img/icons/git-logo.png";
const PREFIX: &str = "https://src.fedoraproject.org";
const LOOKASIDE: &str = "https://src.fedoraproject.org/lookaside/pkgs";

pub(super) fn fields(envelope: &Envelope) -> Fields {
    Fields {
        subtitle: subtitle(envelope).map(Some),
        link: link(envelope),
        icon: Some(Some(ICON.to_string())),
        secondary_icon: secondary_icon(envelope),
        objects: objects(envelope),
    }
}

/// The repository named by an old topic: its parts between the 6th and the last.
fn repo_from_topic(topic: &str) -> String {
    let parts: Vec<&str> = topic.split('.').collect();
    match parts.get(5..parts.len().saturating_sub(1)) {
        Some(middle) => middle.join("."),
        None => String::new(),
    }
}

/// The pushed commit's repository, from the commit or else the topic.
fn pushed_repo(envelope: &Envelope) -> String {
    match envelope.msg.pointer("/commit/repo") {
        Some(repo) => py_str(repo),
        None => repo_from_topic(&envelope.topic),
    }
}

/// The branched repository and branch, from the body or else the topic.
fn branched(envelope: &Envelope) -> (String, String) {
    let msg = &envelope.msg;
    if let (Some(name), Some(branch)) = (msg.get("name"), msg.get("branch")) {
        return (py_str(name), py_str(branch));
    }
    let branch = envelope.topic.rsplit('.').next().unwrap_or_default();
    (repo_from_topic(&envelope.topic), branch.to_string())
}

fn secondary_icon(envelope: &Envelope) -> Option<Option<String>> {
    let msg = &envelope.msg;
    let topic = envelope.topic.as_str();
    if topic.contains(".git.receive") {
        let commit = msg.get("commit")?;
        if let Some(username) = commit.get("username") {
            return Some(Some(avatar::of_user(&py_str(username))));
        }
        let email = commit.get("email")?;
        return Some(Some(avatar::of_email(&py_str(email))));
    }
    if topic.contains(".git.lookaside") || msg.get("agent").is_some() {
        let agent = msg.get("agent")?;
        return Some(Some(avatar::of_user(&py_str(agent))));
    }
    Some(None)
}

fn subtitle(envelope: &Envelope) -> Option<String> {
    let msg = &envelope.msg;
    let topic = envelope.topic.as_str();
    if topic.contains(".git.receive") {
        let commit = msg.get("commit")?;
        let repo = pushed_repo(envelope);
        let namespace = match commit.get("namespace") {
            Some(namespace) => format!("{}/", py_str(namespace)),
            None => String::new(),
        };
        let user = commit.get("username").or_else(|| commit.get("email"))?;
        let mut summary = text(commit, "/summary")?.to_string();
        let whole = text(commit, "/message")?;
        if summary.trim() != whole.trim() {
            summary.push_str(" (..more)");
        }
        let branch = commit.get("branch")?;
        return Some(fill(
            "{user} pushed to {namespace}{repo} ({branch}).  \"{summary}\"",
            &[
                ("user", &py_str(user)),
                ("namespace", &namespace),
                ("repo", &repo),
                ("branch", &py_str(branch)),
                ("summary", &summary),
            ],
        ));
    }
    if topic.contains(".git.branch") {
        let (mut repo, branch) = branched(envelope);
        if let Some(namespace) = msg.pointer("/commit/namespace") {
            repo = format!("{}/{repo}", py_str(namespace));
        }
        let agent = msg.get("agent")?;
        return Some(fill(
            "{agent} created branch '{branch}' for the '{repo}' package",
            &[
                ("agent", &py_str(agent)),
                ("branch", &branch),
                ("repo", &repo),
            ],
        ));
    }
    if topic.contains(".git.lookaside") {
        let name = msg.get("name")?;
        let agent = msg.get("agent")?;
        let filename = msg.get("filename")?;
        return Some(fill(
            "{agent} uploaded {filename} for {name}",
            &[
                ("agent", &py_str(agent)),
                ("filename", &py_str(filename)),
                ("name", &py_str(name)),
            ],
        ));
    }
    let template = if topic.contains(".git.mass_branch.start") {
        "{agent} started a mass branch".to_string()
    } else if topic.contains(".git.mass_branch.complete") {
        "mass branch started by {agent} completed".to_string()
    } else if topic.contains(".git.pkgdb2branch.start") {
        "{agent} started a run of pkgdb2branch".to_string()
    } else if topic.contains(".git.pkgdb2branch.complete") {
        let errors = match msg.get("unbranchedPackages") {
            Some(Value::Array(packages)) => packages.len(),
            _ => 0,
        };
        match errors {
            0 => "run of pkgdb2branch started by {agent} completed".to_string(),
            1 => "run of pkgdb2branch started by {agent} completed with 1 error".to_string(),
            n => format!("run of pkgdb2branch started by {{agent}} completed with {n} errors"),
        }
    } else {
        // The original fails here (no template); datagrepper would answer 500.
        return Some(String::new());
    };
    let agent = msg
        .get("agent")
        .map(py_str)
        .unwrap_or_else(|| "(somebody)".to_string());
    Some(fill(&template, &[("agent", &agent)]))
}

fn link(envelope: &Envelope) -> Option<Option<String>> {
    let msg = &envelope.msg;
    let topic = envelope.topic.as_str();
    if topic.contains(".git.receive") {
        let commit = msg.get("commit")?;
        let repo = pushed_repo(envelope);
        let namespace = commit.get("namespace").map(py_str);
        let rev = py_str(commit.get("rev")?);
        let branch = py_str(commit.get("branch")?);
        let namespace = namespace.as_deref().unwrap_or("rpms");
        return Some(Some(format!(
            "{PREFIX}/{namespace}/{repo}/c/{rev}?branch={branch}"
        )));
    }
    if topic.contains(".git.branch") {
        let (repo, branch) = branched(envelope);
        let namespace = msg.get("namespace").map(py_str);
        let namespace = namespace.as_deref().unwrap_or("rpms");
        return Some(Some(format!(
            "{PREFIX}/{namespace}/{repo}/commits/{branch}"
        )));
    }
    if topic.contains(".git.lookaside") {
        let path = match msg.get("path") {
            Some(path) => py_str(path),
            None => {
                let name = py_str(msg.get("name")?);
                let md5sum = py_str(msg.get("md5sum")?);
                let filename = py_str(msg.get("filename")?);
                format!("{name}/{filename}/{md5sum}/{filename}")
            }
        };
        return Some(Some(format!("{LOOKASIDE}/{path}")));
    }
    Some(None)
}

/// The packages of a pkgdb2branch run, as the original's `packages` finds them.
fn branched_packages(msg: &Value) -> Vec<String> {
    let outside_rpms = match msg.pointer("/commit/namespace") {
        Some(namespace) => !matches!(namespace.as_str(), Some("rpms" | "rpms-checks")),
        None => false,
    };
    if outside_rpms {
        return Vec::new();
    }
    let mut packages = Vec::new();
    for key in ["unbranchedPackages", "branchedPackages"] {
        if let Some(Value::Array(names)) = msg.get(key) {
            packages.extend(names.iter().map(py_str));
        }
    }
    packages
}

fn objects(envelope: &Envelope) -> Option<Vec<String>> {
    let msg = &envelope.msg;
    let topic = envelope.topic.as_str();
    if topic.contains("git.receive") {
        let repo = pushed_repo(envelope);
        let files: Vec<String> = match msg.pointer("/commit/stats/files")? {
            Value::Object(files) => files.keys().cloned().collect(),
            Value::Array(files) => files.iter().map(py_str).collect(),
            _ => return None,
        };
        return Some(files.iter().map(|file| format!("{repo}/{file}")).collect());
    }
    if topic.contains(".git.branch") {
        let repo = match msg.get("name") {
            Some(name) => py_str(name),
            None => repo_from_topic(topic),
        };
        return Some(vec![format!("{repo}/__git__")]);
    }
    if topic.contains(".git.pkgdb2branch.complete") {
        let packages = branched_packages(msg);
        return Some(
            packages
                .iter()
                .map(|name| format!("{name}/__git__"))
                .collect(),
        );
    }
    if topic.contains(".git.lookaside") {
        let name = py_str(msg.get("name")?);
        let filename = py_str(msg.get("filename")?);
        return Some(vec![format!("{name}/{filename}")]);
    }
    Some(Vec::new())
}
