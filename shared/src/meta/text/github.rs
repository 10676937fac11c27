//! GitHub webhooks relayed to the bus (`github.*`): fedmsg.meta's `GithubProcessor`. The
//! relay adds `fas_usernames` (GitHub login → FAS name), which the sentences use.

use serde_json::Value;

use crate::message::Envelope;

use super::{at, avatar, present, py_str, truthy, Fields};

const ICON: &str = "https://apps.fedoraproject.org/img/icons/github.png";

pub(super) fn fields(envelope: &Envelope) -> Fields {
    let msg = &envelope.msg;
    let topic = envelope.topic.as_str();
    let secondary_icon = if topic.contains("github.webhook") {
        Some(Some(ICON.to_string()))
    } else {
        user(msg).map(|user| Some(avatar::of_user(&user.unwrap_or_else(|| "None".to_string()))))
    };
    Fields {
        subtitle: subtitle(msg, topic),
        link: link(msg, topic),
        icon: Some(Some(ICON.to_string())),
        secondary_icon,
        objects: objects(msg, topic),
    }
}

/// The FAS name of a GitHub login, when the relay knew it.
fn fas_name(msg: &Value, login: &Value) -> Option<String> {
    let names = msg.get("fas_usernames")?;
    let login = py_str(login);
    Some(names.get(&login).map(py_str).unwrap_or(login))
}

/// Who acted: the commit author, pusher, sender or forkee owner. Outer `None` where the
/// original raises `KeyError`, inner `None` when nobody is named.
fn user(msg: &Value) -> Option<Option<String>> {
    if present(msg.get("commit")) {
        let author = msg.pointer("/commit/author");
        let login = if present(author) {
            author.and_then(|author| author.get("login"))
        } else {
            author
        };
        if let Some(login) = login.filter(|login| truthy(login)) {
            return Some(Some(fas_name(msg, login)?));
        }
    }
    for (key, pointer) in [
        ("pusher", "/pusher/name"),
        ("sender", "/sender/login"),
        ("forkee", "/forkee/owner/login"),
    ] {
        if present(msg.get(key)) {
            return Some(Some(fas_name(msg, msg.pointer(pointer)?)?));
        }
    }
    Some(None)
}

/// `owner/name` of the repository, `None` when it is not named.
fn repo(msg: &Value) -> Option<String> {
    let repository = msg.get("repository")?;
    let owner = repository.get("owner")?;
    let owner_name = match owner.get("login") {
        Some(login) => py_str(login),
        None => py_str(owner.get("name")?),
    };
    Some(format!("{owner_name}/{}", py_str(repository.get("name")?)))
}

/// A URL as the message holds it (`null` stays null).
fn url(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        other => Some(py_str(other)),
    }
}

fn link(msg: &Value, topic: &str) -> Option<Option<String>> {
    if topic.contains("github.deployment_status") {
        return Some(url(msg.pointer("/deployment_status/target_url")?));
    }
    for (event, suffix) in [
        ("github.watch", "/watchers"),
        ("github.star", "/stargazers"),
    ] {
        if topic.contains(event) {
            return Some(Some(at(msg, "/repository/html_url")? + suffix));
        }
    }
    if topic.contains("github.page_build") {
        let html_url = at(msg, "/repository/html_url")?;
        let mut parts = html_url.rsplit('/');
        let name = parts.next().unwrap_or_default();
        let owner = parts.next()?;
        return Some(Some(format!("http://{owner}.github.io/{name}/")));
    }
    let places = [
        ("release", "/release/html_url"),
        ("target_url", "/target_url"),
        ("compare", "/compare"),
        ("comment", "/comment/html_url"),
        ("review", "/review/html_url"),
        ("pull_request", "/pull_request/html_url"),
        ("issue", "/issue/html_url"),
        ("forkee", "/forkee/html_url"),
        ("repository", "/repository/html_url"),
    ];
    for (key, pointer) in places {
        if msg.get(key).is_some() {
            return Some(url(msg.pointer(pointer)?));
        }
    }
    Some(None)
}

fn subtitle(msg: &Value, topic: &str) -> Option<Option<String>> {
    let user = user(msg)?.unwrap_or_else(|| "None".to_string());
    let repo = repo(msg).unwrap_or_else(|| "None".to_string());
    let is = |event: &str| topic.contains(event);
    let sentence = if is("github.webhook") {
        "A new github repository has been added to fedmsg".to_string()
    } else if is("github.deployment_status") {
        let status = at(msg, "/deployment_status/state")?;
        format!("{user}'s deployment status for {repo} updated to \"{status}\"")
    } else if is("github.push") {
        let count = msg.get("commits")?.as_array()?.len();
        format!("{user} pushed {count} commit(s) to {repo}")
    } else if is("github.pull_request.") {
        let mut action = at(msg, "/action")?;
        if action == "synchronize" {
            action = "synchronized".to_string();
        }
        let number = at(msg, "/number")?;
        if action == "opened" {
            let title = at(msg, "/pull_request/title")?;
            format!("{user} {action} pull request #{number} on {repo}: {title}")
        } else {
            format!("{user} {action} pull request #{number} on {repo}")
        }
    } else if is("github.issue.") {
        let action = if msg.get("comment").is_some() {
            "commented on".to_string()
        } else {
            at(msg, "/action")?
        };
        let number = at(msg, "/number").or_else(|| at(msg, "/issue/number"))?;
        match action.as_str() {
            "opened" => {
                let title = at(msg, "/issue/title")?;
                format!("{user} {action} issue #{number} on {repo}: {title}")
            }
            "labeled" => {
                let label = at(msg, "/label/name")?;
                format!("{user} added label {label} to issue #{number} on {repo}")
            }
            _ => format!("{user} {action} issue #{number} on {repo}"),
        }
    } else if is("github.pull_request_review") && !is("github.pull_request_review_comment") {
        let number = at(msg, "/pull_request/number")?;
        let state = at(msg, "/review/state")?;
        match state.as_str() {
            "pending" => {
                format!("{user} commented on PR #{number} on {repo} which is in {state} state")
            }
            "approved" => format!("{user} {state} the changes on PR #{number} on {repo}"),
            "changes_requested" => format!("{user} requested changes on PR #{number} on {repo}"),
            "commented" => format!("{user} {state} on PR #{number} on {repo}"),
            // The original has no sentence for other states (datagrepper: 500).
            _ => String::new(),
        }
    } else if is("github.pull_request_review_comment") {
        let number = at(msg, "/pull_request/number")?;
        format!("{user} commented on PR #{number} on {repo}")
    } else if is("github.commit_comment") {
        format!("{user} commented on a commit on {repo}")
    } else if is("github.create") || is("github.delete") {
        let kind = at(msg, "/ref_type")?;
        let name = at(msg, "/ref")?;
        if is("github.create") {
            format!("{user} created a new {kind} \"{name}\" at {repo}")
        } else {
            format!("{user} deleted the \"{name}\" {kind} at {repo}")
        }
    } else if is("github.fork") {
        format!("{user} forked {repo}")
    } else if is("github.status") {
        let description = at(msg, "/description")?;
        let sha: String = msg.get("sha")?.as_str()?.chars().take(8).collect();
        format!("{description} for {repo} {sha}")
    } else if is("github.watch") {
        let action = at(msg, "/action")?;
        format!("{user} {action} watching {repo}")
    } else if is("github.star") {
        let action = if at(msg, "/action")? == "started" {
            "starred"
        } else {
            "unstarred"
        };
        format!("{user} {action} {repo}")
    } else if is("github.release") {
        let version = at(msg, "/release/tag_name")?;
        let name = repo
            .split_once('/')
            .map(|(_, name)| name)
            .unwrap_or_default();
        format!("{user} cut a release of {name}, version {version}")
    } else if is("github.page_build") {
        format!("{user} rebuilt the github.io page for {repo}")
    } else if is("github.team_add") {
        let team = at(msg, "/team/slug")?;
        format!("The '{team}' team was added to the {repo} repository")
    } else if is("github.member") {
        let added = at(msg, "/action")? == "added";
        let member = at(msg, "/member/login")?;
        if added {
            format!("{user} added {member} as a member of {repo}")
        } else {
            format!("{user} removed member {member} from {repo}")
        }
    } else {
        return Some(None);
    };
    Some(Some(sentence))
}

/// The kind of page each event's objects live under (`None`: directly under the repository).
const OBJECT_KINDS: &[(&str, Option<&str>)] = &[
    ("github.push", Some("tree")),
    ("github.issue", Some("issues")),
    ("github.fork", Some("forks")),
    ("github.status", Some("status")),
    ("github.pull_request", Some("pull")),
    ("github.pull_request_review", Some("pull")),
    ("github.pull_request_review_comment", Some("pull")),
    ("github.commit_comment", Some("tree")),
    ("github.release", Some("releases")),
    ("github.create", None),
    ("github.delete", None),
    ("github.watch", None),
    ("github.star", None),
    ("github.page_build", Some("page_build")),
    ("github.team_add", Some("team_add")),
    ("github.member", Some("member")),
    ("github.deployment_status", Some("deployment_status")),
];

fn objects(msg: &Value, topic: &str) -> Option<Vec<String>> {
    let suffix: Vec<&str> = topic.split('.').skip(3).take(2).collect();
    let suffix = suffix.join(".");
    let Some((_, kind)) = OBJECT_KINDS.iter().find(|(event, _)| *event == suffix) else {
        return Some(Vec::new());
    };
    let mut base = repo(msg)?;
    if let Some(kind) = kind {
        base = format!("{base}/{kind}");
    }
    let items: Vec<String> = if let Some(commits) = msg.get("commits") {
        // Only the last commit's files count, as in the original.
        match commits.as_array()?.last() {
            Some(commit) => {
                let mut files = Vec::new();
                for key in ["added", "removed", "modified"] {
                    files.extend(commit.get(key)?.as_array()?.iter().map(py_str));
                }
                files
            }
            None => Vec::new(),
        }
    } else {
        match suffix.as_str() {
            "github.pull_request" => vec![at(msg, "/number")?],
            "github.issue" => vec![at(msg, "/number").or_else(|| at(msg, "/issue/number"))?],
            "github.pull_request_review" | "github.pull_request_review_comment" => {
                vec![at(msg, "/pull_request/number")?]
            }
            "github.fork" => vec![user(msg)??],
            "github.create" | "github.delete" => {
                vec![format!("{}/{}", at(msg, "/ref_type")?, at(msg, "/ref")?)]
            }
            "github.status" => vec![at(msg, "/commit/sha")?],
            "github.commit_comment" => vec![at(msg, "/comment/path")?],
            "github.release" => vec![at(msg, "/release/tag_name")?],
            "github.watch" => vec!["watchers".to_string()],
            "github.star" => vec!["stargazers".to_string()],
            _ => Vec::new(),
        }
    };
    if items.is_empty() {
        return Some(vec![base]);
    }
    Some(items.iter().map(|item| format!("{base}/{item}")).collect())
}
