//! CentOS CI pipelines (`org.centos.*.ci.pipeline.*` and the older `allpackages.pipeline`,
//! `container.pipeline`): fedmsg.meta's `AtomicCiProcessor` and its two subclasses. One
//! sentence per pipeline stage, about a revision of a package or container.

use serde_json::Value;

use crate::message::Envelope;

use super::{avatar, fill, py_str, truthy, Fields};

const ICON: &str = "https://ci.centos.org/static/ec6de755/images/headshot.png";
const LINK: &str = "http://ci.centos.org/";

/// Stages and their sentences; `{status}` is the outcome ("passed", "failed", …).
const STAGES: &[(&str, &str)] = &[
    (".package.ignore", "{revtype} \"{rev}\" of package {ns}/{pkg} is being ignored by the {pipeline_name} pipeline on branch {branch}"),
    (".complete", "{revtype} \"{rev}\" of package {ns}/{pkg} {status} the {pipeline_name} pipeline on branch {branch}"),
    (".package.complete", "{revtype} {rev} of package {ns}/{pkg} {status} building in the {pipeline_name} pipeline on branch {branch}"),
    (".package.queued", "{revtype} {rev} of package {ns}/{pkg} is queued to be built in the {pipeline_name} pipeline on branch {branch}"),
    (".package.running", "{revtype} {rev} of package {ns}/{pkg} is being built in the {pipeline_name} pipeline on branch {branch}"),
    (".package.test.functional.complete", "{revtype} {rev} of package {ns}/{pkg} {status} its functional tests in the {pipeline_name} pipeline on branch {branch}"),
    (".package.test.functional.queued", "{revtype} {rev} of package {ns}/{pkg} is queued for functional testing in the {pipeline_name} pipeline on branch {branch}"),
    (".package.test.functional.running", "{revtype} {rev} of package {ns}/{pkg} is running its functional tests in the {pipeline_name} pipeline on branch {branch}"),
    (".container.test.functional.complete", "{revtype} {rev} of container {ns}/{pkg} {status} its functional tests in the {pipeline_name} pipeline on branch {branch}"),
    (".container.test.functional.queued", "{revtype} {rev} of container {ns}/{pkg} is queued for functional testing in the {pipeline_name} pipeline on branch {branch}"),
    (".container.test.functional.running", "{revtype} {rev} of container {ns}/{pkg} is running its functional tests in the {pipeline_name} pipeline on branch {branch}"),
    (".compose.complete", "{revtype} {rev} of package {ns}/{pkg} {status} a compose in the {pipeline_name} pipeline on branch {branch}"),
    (".compose.queued", "{revtype} {rev} of package {ns}/{pkg} is queued for a compose in the {pipeline_name} pipeline on branch {branch}"),
    (".compose.running", "{revtype} {rev} of package {ns}/{pkg} is being part of a compose in the {pipeline_name} pipeline on branch {branch}"),
    (".compose.test.integration.complete", "{revtype} {rev} of package {ns}/{pkg} {status} its tests as part of a compose in the {pipeline_name} pipeline on branch {branch}"),
    (".compose.test.integration.queued", "{revtype} {rev} of package {ns}/{pkg} is queued for tests as part of a compose in the {pipeline_name} pipeline on branch {branch}"),
    (".compose.test.integration.running", "{revtype} {rev} of package {ns}/{pkg} is being tested as part of a compose in the {pipeline_name} pipeline on branch {branch}"),
    (".image.complete", "{revtype} {rev} of package {ns}/{pkg} {status} being built in an image in the {pipeline_name} pipeline on branch {branch}"),
    (".image.queued", "{revtype} {rev} of package {ns}/{pkg} is queued to be built in an image in the {pipeline_name} pipeline on branch {branch}"),
    (".image.running", "{revtype} {rev} of package {ns}/{pkg} is being built in an image in the {pipeline_name} pipeline on branch {branch}"),
    (".image.test.smoke.complete", "{revtype} {rev} of package {ns}/{pkg} {status} its tests in an image in the {pipeline_name} pipeline on branch {branch}"),
    (".image.test.smoke.queued", "{revtype} {rev} of package {ns}/{pkg} is queued to be tested in an image in the {pipeline_name} pipeline on branch {branch}"),
    (".image.test.smoke.running", "{revtype} {rev} of package {ns}/{pkg} is being tested in an image in the {pipeline_name} pipeline on branch {branch}"),
];

/// The current pipeline (`ci.pipeline`).
pub(super) fn atomic(envelope: &Envelope) -> Fields {
    fields(envelope, "ci.pipeline", "Atomic CI")
}

/// The old all-packages pipeline (`allpackages.pipeline`).
pub(super) fn old_allpackages(envelope: &Envelope) -> Fields {
    fields(envelope, "allpackages.pipeline", "All Packages CI")
}

/// The old container pipeline (`container.pipeline`).
pub(super) fn old_container(envelope: &Envelope) -> Fields {
    fields(envelope, "container.pipeline", "Container CI")
}

fn fields(envelope: &Envelope, name: &str, pipeline_name: &str) -> Fields {
    let msg = &envelope.msg;
    let secondary_icon = match msg.get("username") {
        Some(Value::String(user)) if !user.is_empty() => Some(avatar::of_user(user)),
        Some(Value::String(empty)) => Some(empty.clone()),
        _ => None,
    };
    let link = match msg.get("build_url") {
        Some(Value::Null) => None,
        Some(url) => Some(py_str(url)),
        None => Some(LINK.to_string()),
    };
    Fields {
        subtitle: subtitle(envelope, name, pipeline_name).map(Some),
        link: Some(link),
        icon: Some(Some(ICON.to_string())),
        secondary_icon: Some(secondary_icon),
        objects: objects(envelope),
    }
}

/// `msg[key] or default`: `None` when the key is missing (a `KeyError`).
fn or_default(msg: &Value, key: &str, default: &str) -> Option<String> {
    let value = msg.get(key)?;
    if !truthy(value) {
        return Some(default.to_string());
    }
    Some(py_str(value))
}

/// How a stage ended, in words.
fn outcome(status: &str) -> &'static str {
    match status.to_lowercase().as_str() {
        "success" => "passed",
        "aborted" => "was aborted on",
        "unstable" => "errored",
        _ => "failed",
    }
}

fn subtitle(envelope: &Envelope, name: &str, pipeline_name: &str) -> Option<String> {
    let msg = &envelope.msg;
    let topic = envelope.topic.as_str();
    let rev = or_default(msg, "rev", "")?;
    let (revtype, rev) = if let Some(task) = rev.strip_prefix("kojitask-") {
        (
            "Koji task",
            task.split("kojitask-")
                .next()
                .unwrap_or_default()
                .to_string(),
        )
    } else if let Some(request) = rev.strip_prefix("PR-") {
        (
            "Pull request",
            request.split("PR-").next().unwrap_or_default().to_string(),
        )
    } else {
        ("Commit", rev.chars().take(8).collect())
    };
    let branch = or_default(msg, "branch", "unknown_branch")?;
    let pkg = or_default(msg, "repo", "unknown_repo")?;
    let namespace = or_default(msg, "namespace", "unknown_namespace")?;
    let status = or_default(msg, "status", "unknown_status")?;

    let (name, pipeline_name) = if topic.contains(&format!("{name}.allpackages-build")) {
        (
            "ci.pipeline.allpackages-build".to_string(),
            "All Packages (Build) CI",
        )
    } else if topic.contains(&format!("{name}.allpackages-pr")) {
        (
            "ci.pipeline.allpackages-pr".to_string(),
            "All Packages (PR) CI",
        )
    } else if topic.contains(&format!("{name}.allpackages")) {
        ("ci.pipeline.allpackages".to_string(), "All Packages CI")
    } else if topic.contains(&format!("{name}.container")) {
        ("ci.pipeline.container-pr".to_string(), "Container CI")
    } else {
        (name.to_string(), pipeline_name)
    };
    let stage = STAGES
        .iter()
        .find(|(stage, _)| topic.contains(&format!("{name}{stage}")));
    let Some((stage, template)) = stage else {
        return Some(String::new());
    };
    let mut template = template.to_string();
    if *stage == ".complete" && pipeline_name == "Container CI" {
        template = template.replace("of package", "of container");
    }
    let status = if template.contains("{status}") {
        outcome(&status).to_string()
    } else {
        status
    };
    Some(fill(
        &template,
        &[
            ("revtype", revtype),
            ("rev", &rev),
            ("ns", &namespace),
            ("pkg", &pkg),
            ("branch", &branch),
            ("status", &status),
            ("pipeline_name", pipeline_name),
        ],
    ))
}

/// `<namespace>/<repo>/<rev>/<branch>/<stage parts…>`.
fn objects(envelope: &Envelope) -> Option<Vec<String>> {
    let msg = &envelope.msg;
    let namespace = or_default(msg, "namespace", "unknown_namespace")?;
    let pkg = or_default(msg, "repo", "unknown_pkg")?;
    let commit = or_default(msg, "rev", "unknown_rev")?;
    let branch = or_default(msg, "branch", "unknown_branch")?;
    let (_, actions) = envelope.topic.split_once(".pipeline.")?;
    let mut parts = vec![namespace, pkg, commit, branch];
    parts.extend(actions.split('.').map(str::to_string));
    Some(vec![parts.join("/")])
}
