//! Rules for the packaging services: builds, updates, package metadata, upstream releases and
//! bugs. Each function ports the `usernames` and `packages` methods of the fedmsg.meta processor
//! of the same name; the comments say where a message's shape explains a branch.

use crate::message::Envelope;
use serde_json::Value;

use super::{has, items, name_from_nvr, text, username_from_email, Found};

/// release-monitoring.org (anitya): the agent, and the Fedora packages of a project.
pub(super) fn anitya(envelope: &Envelope, found: &mut Found) {
    let msg = &envelope.msg;
    let topic = envelope.topic.as_str();
    found.user(anitya_user(envelope));

    if topic.contains("project.map.update") || topic.contains("project.map.new") {
        let distro = text(msg, "/distro/name").unwrap_or_default();
        if !distro.eq_ignore_ascii_case("fedora") {
            return;
        }
        found.package(text(msg, "/message/new"));
        if topic.contains("project.map.update") {
            found.package(text(msg, "/message/prev"));
        }
    } else if topic.contains("project.version.update") {
        // Newer messages wrap the details in "message".
        let packages = if has(msg, "message") {
            items(msg, "/message/packages")
        } else {
            items(msg, "/packages")
        };
        add_fedora_packages(packages, found);
    } else if topic.ends_with("project.flag") {
        add_fedora_packages(items(msg, "/packages"), found);
    }
}

/// Who acted on anitya: `message.agent` is an OpenID URL, an email or a plain name; messages
/// without one were sent by anitya's own cron job, named by the envelope.
fn anitya_user(envelope: &Envelope) -> Option<&str> {
    let Some(agent) = text(&envelope.msg, "/message/agent") else {
        return Some(envelope.username.as_deref().unwrap_or("anitya"));
    };
    if agent.contains("id.fedoraproject.org") {
        // An OpenID URL, `https://<name>.id.fedoraproject.org/`.
        let before_domain = agent
            .split(".id.fedoraproject.org")
            .next()
            .unwrap_or_default();
        return before_domain.split_once("//").map(|(_, name)| name);
    }
    if agent.contains('@') {
        return username_from_email(agent);
    }
    Some(agent)
}

/// Adds the `package_name` of every entry whose `distro` is Fedora.
fn add_fedora_packages(packages: &[Value], found: &mut Found) {
    for package in packages {
        let distro = text(package, "/distro").unwrap_or_default();
        if distro.eq_ignore_ascii_case("fedora") {
            found.package(text(package, "/package_name"));
        }
    }
}

/// Bodhi topics about one update (fedmsg.meta's `_updatetopics`), shared with the text port.
pub(super) const BODHI_UPDATE_TOPICS: &[&str] = &[
    "bodhi.update.comment",
    "bodhi.update.complete",
    "bodhi.update.request",
    "bodhi.update.edit",
    "bodhi.update.eject",
    "bodhi.update.karma.threshold",
    "bodhi.update.requirements_met",
    "bodhi.errata.publish",
];

/// Bodhi: submitters, commenters and people @mentioned in comments; the packages of the update,
/// override, stack or mash the message is about.
pub(super) fn bodhi(envelope: &Envelope, found: &mut Found) {
    let msg = &envelope.msg;
    let topic = envelope.topic.as_str();

    // Bodhi 2+ sends `user: {name}`, older bodhi `author`/`submitter` strings.
    if let Some(comment) = msg.get("comment") {
        let author = if has(comment, "user") {
            comment.get("user")
        } else {
            comment.get("author")
        };
        found.user(author.and_then(bodhi_person));
        for mention in mentions(text(comment, "/text").unwrap_or_default()) {
            found.user(Some(mention));
        }
    }
    if let Some(update) = msg.get("update") {
        let submitter = if has(update, "user") {
            update.get("user")
        } else {
            update.get("submitter")
        };
        found.user(submitter.and_then(bodhi_person));
    }
    found.user(msg.pointer("/override/submitter").and_then(bodhi_person));
    found.user(text(msg, "/agent"));

    if topic.contains("bodhi.update.comment") {
        // Bodhi 4 comments carry the whole update instead of its title.
        let title = text(msg, "/comment/update_title").or(text(msg, "/comment/update/title"));
        add_update_packages(title.unwrap_or_default(), found);
    } else if BODHI_UPDATE_TOPICS.iter().any(|kind| topic.contains(kind)) {
        add_update_packages(text(msg, "/update/title").unwrap_or_default(), found);
    } else if topic.contains("bodhi.buildroot_override.") {
        // The build is an NVR string, or in newer messages an object with one.
        let nvr = match msg.pointer("/override/build") {
            Some(build @ Value::Object(_)) => text(build, "/nvr"),
            Some(build) => build.as_str(),
            None => None,
        };
        add_update_packages(nvr.unwrap_or_default(), found);
    } else if topic.contains("bodhi.stack") {
        for package in items(msg, "/stack/packages") {
            found.package(text(package, "/name"));
        }
    } else if topic.contains("bodhi.masher.start") {
        for update in items(msg, "/updates") {
            add_update_packages(update.as_str().unwrap_or_default(), found);
        }
    }
}

/// A bodhi person: a username string, or an object with a `name`.
fn bodhi_person(value: &Value) -> Option<&str> {
    match value {
        Value::Object(_) => text(value, "/name"),
        _ => value.as_str(),
    }
}

/// The packages of an update title: builds separated by spaces or commas.
fn add_update_packages(title: &str, found: &mut Found) {
    for build in title.split([' ', ',']) {
        found.package(Some(name_from_nvr(build)));
    }
}

/// The names @mentioned in a text: every `@` followed by word characters (regex `@\w+`).
fn mentions(text: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        let after = &rest[at + 1..];
        let end = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if end > 0 {
            names.push(&after[..end]);
        }
        rest = &after[end..];
    }
    names
}

/// Red Hat Bugzilla: everyone involved whose address is a Fedora one; the component.
pub(super) fn bugzilla(envelope: &Envelope, found: &mut Found) {
    let msg = &envelope.msg;
    let mut emails = vec![
        text(msg, "/bug/creator"),
        text(msg, "/bug/assigned_to"),
        text(msg, "/comment/author"),
        text(msg, "/event/who"),
    ];
    for email in items(msg, "/bug/cc") {
        emails.push(email.as_str());
    }
    for email in emails.into_iter().flatten() {
        // Mailing lists are assignees and CCs, not people.
        if email.ends_with("lists.fedoraproject.org") {
            continue;
        }
        found.user(username_from_email(email));
    }

    let component = text(msg, "/bug/component");
    // Reviews of new packages are filed against this pseudo-component.
    if component != Some("Package Review") {
        found.package(component);
    }
}

/// Koji: the build or task owner and whoever tagged; the package built, tagged or signed.
pub(super) fn buildsys(envelope: &Envelope, found: &mut Found) {
    let msg = &envelope.msg;
    let topic = envelope.topic.as_str();
    if topic.contains("buildsys.tag") || topic.contains("buildsys.untag") {
        found.user(text(msg, "/owner"));
        found.user(text(msg, "/user"));
        found.package(text(msg, "/name"));
    } else if topic.contains("buildsys.package.list.change") {
        found.package(text(msg, "/package"));
    } else if topic.contains("buildsys.rpm.sign") {
        // Older messages name the RPM in "rpm" rather than "info".
        if has(msg, "info") {
            found.package(text(msg, "/info/name"));
        } else {
            found.package(text(msg, "/rpm/name"));
        }
    } else if topic.contains("buildsys.build.state.change") {
        found.user(text(msg, "/owner"));
        found.package(text(msg, "/name"));
    } else if topic.contains("buildsys.task.state.change") {
        // Scratch builds are not associated with a package.
        found.user(text(msg, "/owner"));
    }
}

/// Copr: the user who acted and the owner of the project.
pub(super) fn copr(envelope: &Envelope, found: &mut Found) {
    found.user(text(&envelope.msg, "/user"));
    found.user(text(&envelope.msg, "/owner"));
}

/// ABRT's crash analysis server (FAF): the maintainers and packages of a crashing component.
pub(super) fn faf(envelope: &Envelope, found: &mut Found) {
    for maintainer in items(&envelope.msg, "/maintainers") {
        found.user(maintainer.as_str());
    }
    for component in items(&envelope.msg, "/components") {
        found.package(component.as_str());
    }
}

/// Fedora Tagger: the voter or rater unless anonymous; the package tagged, rated or used.
pub(super) fn fedoratagger(envelope: &Envelope, found: &mut Found) {
    let msg = &envelope.msg;
    let topic = envelope.topic.as_str();
    let user = if topic.contains("fedoratagger.tag.") {
        text(msg, "/vote/user/username")
    } else if topic.contains("fedoratagger.user.rank.update")
        || topic.contains("fedoratagger.usage.toggle")
    {
        text(msg, "/user/username")
    } else if topic.contains("fedoratagger.rating.update") {
        text(msg, "/rating/user/username")
    } else {
        None
    };
    if user != Some("anonymous") {
        found.user(user);
    }

    if topic.contains("fedoratagger.tag.") {
        // Old tagger messages had a {name: ...} object where newer ones have the name.
        match msg.pointer("/vote/tag/package") {
            Some(Value::Object(package)) => {
                found.package(package.keys().next().map(String::as_str))
            }
            Some(package) => found.package(package.as_str()),
            None => {}
        }
    } else if topic.contains("fedoratagger.rating.update") {
        found.package(text(msg, "/rating/package/name"));
    } else if topic.contains("fedoratagger.usage.toggle") {
        found.package(text(msg, "/package/name"));
    }
}

/// Dist-git (the `git` category): the pusher or agent; the repository pushed, branched or
/// uploaded to, if it holds an RPM package.
pub(super) fn git(envelope: &Envelope, found: &mut Found) {
    let msg = &envelope.msg;
    let topic = envelope.topic.as_str();
    if has(msg, "agent") {
        found.user(text(msg, "/agent"));
    } else {
        found.user(text(msg, "/commit/username"));
    }

    // Repositories outside these namespaces (modules, containers, tests) are not packages.
    // Pushes carry the namespace in the commit.
    let namespace = text(msg, "/namespace").or(text(msg, "/commit/namespace"));
    if namespace.is_some_and(|namespace| !["rpms", "rpms-checks"].contains(&namespace)) {
        return;
    }
    // The oldest messages name the repository only in the topic: `git.receive.<repo>.<branch>`.
    let repo_in_topic = || {
        let tokens: Vec<&str> = topic.split('.').collect();
        tokens
            .get(5..tokens.len().saturating_sub(1))
            .map(|repo| repo.join("."))
    };
    if topic.contains("git.receive") {
        match text(msg, "/commit/repo") {
            Some(repo) => found.package(Some(repo)),
            None => found.package(repo_in_topic().as_deref()),
        }
    } else if topic.contains("git.branch") {
        match text(msg, "/name") {
            Some(repo) => found.package(Some(repo)),
            None => found.package(repo_in_topic().as_deref()),
        }
    } else if topic.contains(".git.pkgdb2branch.complete") {
        for package in items(msg, "/unbranchedPackages")
            .iter()
            .chain(items(msg, "/branchedPackages"))
        {
            found.package(package.as_str());
        }
    } else if topic.contains(".git.lookaside") {
        found.package(text(msg, "/name"));
    }
}

/// Greenwave: the packages of the Koji builds a gating decision is about.
pub(super) fn greenwave(envelope: &Envelope, found: &mut Found) {
    for subject in items(&envelope.msg, "/subject") {
        if text(subject, "/type") == Some("koji_build") {
            found.package(text(subject, "/item").map(name_from_nvr));
        }
    }
}

/// the-new-hotness: the owner of a triggering build; the packages of the triggering message.
pub(super) fn hotness(envelope: &Envelope, found: &mut Found) {
    let trigger_topic = text(&envelope.msg, "/trigger/topic").unwrap_or_default();
    let Some(original) = envelope.msg.pointer("/trigger/msg") else {
        return;
    };
    let triggered_by_build = trigger_topic.contains("buildsys.build");
    if triggered_by_build {
        found.user(text(original, "/owner"));
    }

    if trigger_topic.contains("anitya") {
        let packages = if original.pointer("/message/packages").is_some() {
            items(original, "/message/packages")
        } else {
            items(original, "/packages")
        };
        // An anitya trigger that lists no packages at all falls through to the cases below.
        if !packages.is_empty() {
            add_fedora_packages(packages, found);
            return;
        }
    }
    if has(original, "package_listing") {
        found.package(text(original, "/package_listing/package/name"));
    } else if triggered_by_build {
        found.package(text(original, "/name"));
    } else if has(original, "package") {
        found.package(text(original, "/package/name"));
    }
}

/// Kernel tests: the tester; always the kernel.
pub(super) fn kerneltest(envelope: &Envelope, found: &mut Found) {
    found.user(text(&envelope.msg, "/agent"));
    found.package(Some("kernel"));
}

/// Koschei: the package whose state changed.
pub(super) fn koschei(envelope: &Envelope, found: &mut Found) {
    if envelope.topic.contains("koschei.package.state.change") {
        found.package(text(&envelope.msg, "/name"));
    }
}

/// Module Build Service: the owner of the module build.
pub(super) fn mbs(envelope: &Envelope, found: &mut Found) {
    found.user(text(&envelope.msg, "/owner"));
}

/// mdapi: the packages whose repository metadata changed.
pub(super) fn mdapi(envelope: &Envelope, found: &mut Found) {
    let msg = &envelope.msg;
    let Some(differences) = msg.get("differences").and_then(Value::as_object) else {
        for package in items(msg, "/packages") {
            found.package(package.as_str());
        }
        return;
    };
    // Old messages: {category: {action: [[name-or-path, ..., name], ...]}}, where a name may
    // carry a "(version)" suffix.
    for actions in differences.values().filter_map(Value::as_object) {
        for details in actions.values().filter_map(Value::as_array) {
            for detail in details.iter().filter_map(Value::as_array) {
                let first = detail.first().and_then(Value::as_str).unwrap_or_default();
                let name = if first.contains('/') {
                    detail.last().and_then(Value::as_str)
                } else {
                    Some(first)
                };
                found.package(name.and_then(|name| name.split('(').next()));
            }
        }
    }
}

/// The package database: the agent, the user an ACL is about, and every package named, unless
/// it lives outside the `rpms` namespace.
pub(super) fn pkgdb(envelope: &Envelope, found: &mut Found) {
    let msg = &envelope.msg;
    // Legacy messages had a list of agents; the first one acted.
    let agent = match msg.get("agent") {
        Some(Value::Array(agents)) => agents.first().and_then(Value::as_str),
        Some(agent) => agent.as_str(),
        None => None,
    };
    for user in [agent, text(msg, "/acl/fas_name"), text(msg, "/username")] {
        // "orphan" is the pseudo-owner of unowned packages.
        if user != Some("orphan") {
            found.user(user);
        }
    }

    add_rpms_package(msg.pointer("/package_listing/package"), found);
    for listing in items(msg, "/package_listings") {
        add_rpms_package(listing.get("package"), found);
    }
    add_rpms_package(msg.pointer("/acl/packagelist/package"), found);
    add_rpms_package(msg.pointer("/action/package"), found);
    // "package" is a name (namespaced by the message) or a package object.
    match msg.get("package") {
        Some(Value::String(name)) => {
            if in_rpms_namespace(msg.get("namespace")) {
                found.package(Some(name));
            }
        }
        package => add_rpms_package(package, found),
    }
    // Package requests name the package in an "info" object.
    for info in [msg.get("info"), msg.pointer("/action/info")]
        .into_iter()
        .flatten()
    {
        if in_rpms_namespace(info.get("pkg_namespace")) {
            found.package(text(info, "/pkg_name"));
        }
    }
}

/// Adds a pkgdb package object's name, if it is in the `rpms` namespace.
fn add_rpms_package(package: Option<&Value>, found: &mut Found) {
    if let Some(package) = package.filter(|package| in_rpms_namespace(package.get("namespace"))) {
        found.package(text(package, "/name"));
    }
}

/// Whether a pkgdb namespace field means `rpms`; packages from before namespaces have none.
fn in_rpms_namespace(namespace: Option<&Value>) -> bool {
    match namespace {
        None => true,
        Some(namespace) => namespace.as_str() == Some("rpms"),
    }
}

/// summershum: who uploaded the source file, and its package.
pub(super) fn summershum(envelope: &Envelope, found: &mut Found) {
    found.user(text(&envelope.msg, "/original/agent"));
    found.package(text(&envelope.msg, "/original/name"));
}

/// Taskotron: the package of a Koji build that was tested. (Results about bodhi updates need a
/// bodhi query to find their packages, so they name none here.)
pub(super) fn taskotron(envelope: &Envelope, found: &mut Found) {
    if text(&envelope.msg, "/task/type") == Some("koji_build") {
        found.package(text(&envelope.msg, "/task/item").map(name_from_nvr));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_at_signs_followed_by_word_characters() {
        let text = "thanks @kalev and @the_bot, mail me at x@example.org; @ alone, @@twice";
        assert_eq!(
            mentions(text),
            ["kalev", "the_bot", "example", "twice"].to_vec()
        );
    }
}
