//! Pagure forges (`io.pagure.*.pagure.*`) and Fedora's dist-git on pagure
//! (`org.fedoraproject.*.pagure.*`): fedmsg.meta's `PagureProcessor` and
//! `DistGitPagureProcessor`, which differ only in their links. Projects are shown as `name`,
//! `namespace/name`, or `fork/<user>/…` for forks.

use serde_json::Value;

use crate::message::Envelope;

use super::{at, avatar, fill, list_to_series, py_str, truthy, Fields};

const ICON: &str = "https://apps.fedoraproject.org/packages/images/icons/package_128x128.png";

/// The forge's web address, in production and in staging.
struct Site {
    link: &'static str,
    staging_link: &'static str,
}

const PAGURE_IO: Site = Site {
    link: "https://pagure.io",
    staging_link: "https://stg.pagure.io",
};

const DIST_GIT: Site = Site {
    link: "https://src.fedoraproject.org",
    staging_link: "https://src.stg.fedoraproject.org",
};

/// pagure.io and other standalone forges.
pub(super) fn forge(envelope: &Envelope) -> Fields {
    fields(envelope, &PAGURE_IO)
}

/// Fedora's dist-git.
pub(super) fn dist_git(envelope: &Envelope) -> Fields {
    fields(envelope, &DIST_GIT)
}

fn fields(envelope: &Envelope, site: &Site) -> Fields {
    let msg = &envelope.msg;
    let secondary_icon = match msg.get("agent") {
        Some(agent) if truthy(agent) => Some(avatar::of_user(&py_str(agent))),
        _ => None,
    };
    Fields {
        subtitle: subtitle(msg, &envelope.topic),
        link: link(msg, &envelope.topic, site).map(Some),
        icon: Some(Some(ICON.to_string())),
        secondary_icon: Some(secondary_icon),
        objects: objects(msg, &envelope.topic),
    }
}

/// The original's `_get_project`: `name`, `namespace/name`, or `fork/<user>/…`.
fn project_at(holder: &Value, key: &str) -> Option<String> {
    let project = holder.get(key)?;
    let mut name = py_str(project.get("name")?);
    if let Some(namespace) = project.get("namespace").filter(|ns| truthy(ns)) {
        name = format!("{}/{name}", py_str(namespace));
    }
    if truthy(project.get("parent")?) {
        let user = py_str(project.get("user")?.get("name")?);
        name = format!("fork/{user}/{name}");
    }
    Some(name)
}

/// The project a message is about, `(unknown)` when neither place names it.
fn project(msg: &Value) -> String {
    project_at(msg, "project")
        .or_else(|| project_at(msg.get("pullrequest")?, "project"))
        .unwrap_or_else(|| "(unknown)".to_string())
}

/// The key holding the pull request (it changed spelling over time).
fn pull_request_key(msg: &Value) -> &'static str {
    ["pullrequest", "pull_request", "pull-request"]
        .into_iter()
        .find(|key| msg.get(key).is_some())
        .unwrap_or("pullrequest")
}

/// A list of names in words (`a, b, and 2 others`).
fn series(value: &Value) -> Option<String> {
    match value {
        Value::Array(items) => Some(list_to_series(
            &items.iter().map(py_str).collect::<Vec<_>>(),
        )),
        _ => None,
    }
}

/// A branch name without `refs/heads/`.
fn branch_name(branch: &str) -> String {
    branch.replace("refs/heads/", "")
}

/// A `git.receive` of one commit (old pagure).
fn receive_one_commit(msg: &Value) -> Option<String> {
    let commit = msg.get("commit")?;
    let repo = project_at(commit, "repo")?;
    let email = py_str(commit.get("email")?);
    // Offline, only a Fedora address becomes a username; fedmsg.meta keeps any other one too.
    let user = match email.strip_suffix("@fedoraproject.org") {
        Some(name) => name.to_string(),
        None => email.clone(),
    };
    let mut summary = commit.get("summary")?.as_str()?.to_string();
    let whole = commit.get("message")?.as_str()?;
    if summary.trim() != whole.trim() {
        summary.push_str(" (..more)");
    }
    let branch = branch_name(&py_str(commit.get("branch")?));
    Some(fill(
        "{user} pushed to {repo} ({branch}). \"{summary}\"",
        &[
            ("user", if user.is_empty() { &email } else { &user }),
            ("repo", &repo),
            ("branch", &branch),
            ("summary", &summary),
        ],
    ))
}

/// A `git.receive` of several commits (newer pagure).
fn receive_commits(msg: &Value) -> Option<String> {
    let repo = project_at(msg, "repo")?;
    let user = at(msg, "/agent")?;
    let count = at(msg, "/total_commits")?;
    let label = if count == "1" { "commit" } else { "commits" };
    let branch = branch_name(&at(msg, "/branch")?);
    Some(format!(
        "{user} pushed {count} {label} to {repo} ({branch})"
    ))
}

fn subtitle(msg: &Value, topic: &str) -> Option<Option<String>> {
    let project = project(msg);
    let user = msg
        .get("agent")
        .map(py_str)
        .unwrap_or_else(|| "None".to_string());
    let is = |event: &str| topic.contains(event);
    let values = |extra: &[(&'static str, String)]| {
        let mut all = vec![("user", user.clone()), ("project", project.clone())];
        all.extend_from_slice(extra);
        all
    };
    let say = |template: &str, extra: &[(&'static str, String)]| {
        let all = values(extra);
        let pairs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
        fill(template, &pairs)
    };
    let issue_id = || at(msg, "/issue/id");
    let issue_title = || at(msg, "/issue/title");
    let pr_id = || at(msg, "/pullrequest/id");
    let sentence = if is("pagure.project.new") {
        say("{user} created a new project \"{project}\"", &[])
    } else if is("pagure.issue.new") {
        let (id, title) = (issue_id()?, issue_title()?);
        say(
            "{user} opened a new ticket {project}#{id}: \"{title}\"",
            &[("id", id), ("title", title)],
        )
    } else if is("pagure.issue.drop") {
        let (id, title) = (issue_id()?, issue_title()?);
        say(
            "{user} deleted ticket {project}#{id}: \"{title}\"",
            &[("id", id), ("title", title)],
        )
    } else if is("pagure.issue.comment.edited") {
        let (id, title) = (issue_id()?, issue_title()?);
        say(
            "{user} edited a comment on ticket {project}#{id}: \"{title}\"",
            &[("id", id), ("title", title)],
        )
    } else if is("pagure.issue.comment.added") {
        let (id, title) = (issue_id()?, issue_title()?);
        say(
            "{user} commented on ticket {project}#{id}: \"{title}\"",
            &[("id", id), ("title", title)],
        )
    } else if is("pagure.issue.tag.added") {
        let (id, tags) = (issue_id()?, series(msg.get("tags")?)?);
        say(
            "{user} tagged ticket {project}#{id}: {tags}",
            &[("id", id), ("tags", tags)],
        )
    } else if is("pagure.issue.tag.removed") {
        let (id, tags) = (issue_id()?, series(msg.get("tags")?)?);
        say(
            "{user} removed the {tags} tags from ticket {project}#{id}",
            &[("id", id), ("tags", tags)],
        )
    } else if is("pagure.pull-request.tag.added") {
        let (id, tags) = (at(msg, "/pull_request/id")?, series(msg.get("tags")?)?);
        say(
            "{user} tagged pull-request {project}#{id}: {tags}",
            &[("id", id), ("tags", tags)],
        )
    } else if is("pagure.pull-request.tag.removed") {
        let (id, tags) = (at(msg, "/pull_request/id")?, series(msg.get("tags")?)?);
        say(
            "{user} removed the {tags} tags from pull-request {project}#{id}",
            &[("id", id), ("tags", tags)],
        )
    } else if is("pagure.issue.assigned.added") {
        let id = issue_id()?;
        let assignee = assignee(msg.pointer("/issue/assignee")?)?;
        say(
            "{user} assigned ticket {project}#{id}{assignee}",
            &[("id", id), ("assignee", assignee)],
        )
    } else if is("pagure.issue.assigned.reset") {
        say(
            "{user} reset the assignee of ticket {project}#{id}",
            &[("id", issue_id()?)],
        )
    } else if is("pagure.issue.dependency.added") {
        let (id, dep_id) = (issue_id()?, at(msg, "/added_dependency")?);
        say(
            "{user} added ticket {project}#{id} as a dependency of ticket {project}#{dep_id}",
            &[("id", id), ("dep_id", dep_id)],
        )
    } else if is("pagure.issue.dependency.removed") {
        let (id, removed) = (issue_id()?, at(msg, "/removed_dependency")?);
        say(
            "{user} removed ticket {project}#{id} as a dependency of ticket {project}#{removed}",
            &[("id", id), ("removed", removed)],
        )
    } else if is("pagure.issue.edit") {
        let id = issue_id()?;
        let fields = msg.get("fields")?;
        if *fields == serde_json::json!(["status"]) {
            let status = at(msg, "/issue/status")?;
            say(
                "{user} set the status of ticket {project}#{id} to: {status}",
                &[("id", id), ("status", status)],
            )
        } else {
            let fields = series(fields)?;
            say(
                "{user} edited the {fields} fields of ticket {project}#{id}",
                &[("id", id), ("fields", fields)],
            )
        }
    } else if is("pagure.project.edit") {
        let fields = series(msg.get("fields")?)?;
        say(
            "{user} edited the {fields} fields of project {project}",
            &[("fields", fields)],
        )
    } else if is("pagure.project.group.added") {
        let group = at(msg, "/new_group")?;
        match msg.get("access").filter(|access| truthy(access)) {
            Some(access) => say(
                "{user} added group \"{new_group}\" to project {project} with {access} access",
                &[("new_group", group), ("access", py_str(access))],
            ),
            None => say(
                "{user} added group \"{new_group}\" to project {project}",
                &[("new_group", group)],
            ),
        }
    } else if is("pagure.project.group.access.updated") {
        let (group, access) = (at(msg, "/new_group")?, at(msg, "/new_access")?);
        say(
            "{user} updated access of group \"{new_group}\" to {new_access} on project {project}",
            &[("new_group", group), ("new_access", access)],
        )
    } else if is("pagure.project.user.added") {
        let new_user = at(msg, "/new_user")?;
        match msg.get("access").filter(|access| truthy(access)) {
            Some(access) => say(
                "{user} added \"{new_user}\" to project {project} with {access} access",
                &[("new_user", new_user), ("access", py_str(access))],
            ),
            None => say(
                "{user} added \"{new_user}\" to project {project}",
                &[("new_user", new_user)],
            ),
        }
    } else if is("pagure.project.user.access.updated") {
        let (new_user, access) = (at(msg, "/new_user")?, at(msg, "/new_access")?);
        say(
            "{user} updated access of \"{new_user}\" to {new_access} in project {project}",
            &[("new_user", new_user), ("new_access", access)],
        )
    } else if is("pagure.project.tag.removed") {
        let tags = series(msg.get("tags")?)?;
        say(
            "{user} removed tags \"{tags}\" from project {project}",
            &[("tags", tags)],
        )
    } else if is("pagure.project.tag.edited") {
        let (old, new) = (at(msg, "/old_tag")?, at(msg, "/new_tag")?);
        say(
            "{user} altered tags on project {project} from \"{old_tag}\" to \"{new_tag}\"",
            &[("old_tag", old), ("new_tag", new)],
        )
    } else if is("pagure.project.forked") {
        let parent = at(msg, "/project/parent/name")?;
        say(
            "{user} forked {old_project} to {project}",
            &[("old_project", parent)],
        )
    } else if is("pagure.pull-request.comment.added") {
        say(
            "{user} commented on PR #{id} on {project}",
            &[("id", pr_id()?)],
        )
    } else if is("pagure.pull-request.comment.edited") {
        say(
            "{user} edited a comment on PR #{id} on {project}",
            &[("id", pr_id()?)],
        )
    } else if is("pagure.pull-request.closed") {
        let id = pr_id()?;
        if truthy(msg.get("merged")?) {
            say(
                "{user} merged pull request #{id} on {project}",
                &[("id", id)],
            )
        } else {
            say(
                "{user} closed (without merging) pull request #{id} on {project}",
                &[("id", id)],
            )
        }
    } else if is("pagure.pull-request.new") {
        let (id, title) = (pr_id()?, at(msg, "/pullrequest/title")?);
        say(
            "{user} opened pull request #{id} on {project}: {title}",
            &[("id", id), ("title", title)],
        )
    } else if is("pagure.pull-request.updated") {
        say("Pull-request #{id} has been updated", &[("id", pr_id()?)])
    } else if is("pagure.pull-request.rebased") {
        say("Pull-request #{id} has been rebased", &[("id", pr_id()?)])
    } else if is("pagure.pull-request.flag.added") || is("pagure.pull-request.flag.updated") {
        let template = if is("pagure.pull-request.flag.added") {
            "{username} flagged {project}#{id} with \"{comment}\""
        } else {
            "{username} updated the flags on {project}#{id} with: \"{comment}\""
        };
        let id = pr_id()?;
        let (username, comment) = (at(msg, "/flag/username")?, at(msg, "/flag/comment")?);
        say(
            template,
            &[("id", id), ("username", username), ("comment", comment)],
        )
    } else if is("pagure.request.assigned.added") {
        let id = at(msg, "/request/id")?;
        let assignee = assignee(msg.pointer("/request/assignee")?)?;
        say(
            "{user} assigned PR {project}#{id}{assignee}",
            &[("id", id), ("assignee", assignee)],
        )
    } else if is("pagure.request.assigned.reset") {
        say(
            "{user} reset the assignee of PR {project}#{id}",
            &[("id", at(msg, "/request/id")?)],
        )
    } else if is("pagure.git.receive") {
        if msg.get("commit").is_some() {
            receive_one_commit(msg)?
        } else {
            receive_commits(msg)?
        }
    } else if is("pagure.project.deleted") {
        say("{user} deleted the project \"{project}\"", &[])
    } else if is("pagure.commit.flag.added") || is("pagure.commit.flag.updated") {
        let template = if is("pagure.commit.flag.added") {
            "{user} added a flag on the commit {commit} of the project {project}"
        } else {
            "{user} updated its flag on the commit {commit} of the project {project}"
        };
        let flagger = at(msg, "/flag/username")?;
        let repo = project_at(msg, "repo")?;
        let commit: String = at(msg, "/flag/commit_hash")?.chars().take(8).collect();
        fill(
            template,
            &[("user", &flagger), ("project", &repo), ("commit", &commit)],
        )
    } else if is("pagure.project.user.removed") {
        let removed = at(msg, "/removed_user")?;
        say(
            "{user} removed \"{removed_user}\" from the project {project}",
            &[("removed_user", removed)],
        )
    } else {
        return Some(None);
    };
    Some(Some(sentence))
}

/// ` to <name>` for an assignee, nothing when unassigned.
fn assignee(assignee: &Value) -> Option<String> {
    if !truthy(assignee) {
        return Some(String::new());
    }
    Some(format!(" to {}", py_str(assignee.get("name")?)))
}

fn link(msg: &Value, topic: &str, site: &Site) -> Option<String> {
    let project = project(msg);
    let base = if topic.contains(".stg.") {
        site.staging_link
    } else {
        site.link
    };
    let known = project != "(unknown)";
    if topic.contains("pagure.issue") {
        let id = at(msg, "/issue/id")?;
        if topic.contains("comment.edited") {
            let comment_id = msg
                .get("comment")
                .filter(|comment| truthy(comment))
                .and_then(|comment| comment.get("id"))
                .filter(|id| truthy(id));
            return Some(match (comment_id, known) {
                (Some(comment), true) => {
                    format!("{base}/{project}/issue/{id}#comment-{}", py_str(comment))
                }
                (None, true) => format!("{base}/{project}/issue/{id}"),
                _ => base.to_string(),
            });
        }
        if topic.contains("comment.added") {
            let comments = msg.pointer("/issue/comments")?;
            if truthy(comments) {
                let last = comments.as_array()?.last()?;
                return Some(format!(
                    "{base}/{project}/issue/{id}#comment-{}",
                    py_str(last.get("id")?)
                ));
            }
        }
        return Some(format!("{base}/{project}/issue/{id}"));
    }
    if topic.contains("pagure.pull-request") {
        let id = py_str(msg.get(pull_request_key(msg))?.get("id")?);
        if topic.contains("comment") {
            let comments = msg.pointer("/pullrequest/comments")?;
            if truthy(comments) {
                let last = comments.as_array()?.last()?;
                return Some(format!(
                    "{base}/{project}/pull-request/{id}#comment-{}",
                    py_str(last.get("id")?)
                ));
            }
            if let Some(comment) = msg.get("comment").filter(|comment| truthy(comment)) {
                let comment_id = py_str(comment.get("id")?);
                return Some(format!(
                    "{base}/{project}/pull-request/{id}#comment-{comment_id}"
                ));
            }
        }
        return Some(format!("{base}/{project}/pull-request/{id}"));
    }
    if topic.contains("pagure.request") {
        let id = at(msg, "/request/id")?;
        return Some(format!("{base}/{project}/pull-request/{id}"));
    }
    if topic.contains("pagure.project.deleted") {
        return Some(base.to_string());
    }
    if topic.contains("pagure.project") {
        return Some(format!("{base}/{project}"));
    }
    if topic.contains("pagure.commit.flag") {
        let repo = project_at(msg, "repo")?;
        let hash = at(msg, "/flag/commit_hash")?;
        return Some(format!("{base}/{repo}/c/{hash}"));
    }
    if topic.contains("pagure.git.receive") {
        if let Some(commit) = msg.get("commit") {
            let repo = project_at(commit, "repo")?;
            let rev = py_str(commit.get("rev")?);
            return Some(format!("{base}/{repo}/{rev}"));
        }
        let repo = project_at(msg, "repo")?;
        let branch = branch_name(&at(msg, "/branch")?);
        return Some(format!("{base}/{repo}/tree/{branch}"));
    }
    Some(base.to_string())
}

fn objects(msg: &Value, topic: &str) -> Option<Vec<String>> {
    let project = project(msg);
    let about_project = |name: String| Some(vec![format!("project/{name}")]);
    if topic.contains("pagure.project") {
        return about_project(project);
    }
    if topic.contains("pagure.issue") {
        let id = at(msg, "/issue/id")?;
        return Some(vec![format!("issue/{id}"), format!("project/{project}")]);
    }
    if topic.contains("pagure.pull-request") {
        let id = py_str(msg.get(pull_request_key(msg))?.get("id")?);
        return Some(vec![
            format!("pull-request/{id}"),
            format!("project/{project}"),
        ]);
    }
    if topic.contains("pagure.request") {
        let id = at(msg, "/request/id")?;
        return Some(vec![
            format!("pull-request/{id}"),
            format!("project/{project}"),
        ]);
    }
    if topic.contains("pagure.git.receive") {
        let holder = msg.get("commit").unwrap_or(msg);
        return about_project(project_at(holder, "repo")?);
    }
    if topic.contains("pagure.commit.flag") {
        return about_project(project_at(msg, "repo")?);
    }
    Some(Vec::new())
}
