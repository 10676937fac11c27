//! The Fedora package database (`pkgdb.*`): fedmsg.meta's `PkgdbProcessor`. ACLs, owners,
//! branches, collections and package requests; most messages carry a `package_listing`
//! (a package on one branch), older ones name the package directly.

use serde_json::Value;

use crate::message::Envelope;

use super::{at, avatar, py_str, truthy, Fields};

const ICON: &str = "https://apps.fedoraproject.org/packages/images/icons/package_128x128.png";
const PACKAGE_PAGE: &str = "https://admin.fedoraproject.org/pkgdb/package";

pub(super) fn fields(envelope: &Envelope) -> Fields {
    let msg = &envelope.msg;
    let topic = envelope.topic.as_str();
    Fields {
        subtitle: Some(Some(subtitle(msg, topic).unwrap_or_default())),
        link: link(msg, topic).map(Some),
        icon: Some(Some(ICON.to_string())),
        secondary_icon: Some(Some(secondary_icon(msg))),
        objects: objects(msg, topic),
    }
}

/// The acting user; legacy messages had a list of agents.
fn agent(msg: &Value) -> Option<String> {
    match msg.get("agent")? {
        Value::Array(agents) => agents.first().map(py_str),
        agent => Some(py_str(agent)),
    }
}

/// `namespace` and `name` of a package object (`rpms` by default).
fn namespaced(package: &Value) -> Option<(String, String)> {
    let namespace = package
        .get("namespace")
        .map(py_str)
        .unwrap_or_else(|| "rpms".to_string());
    Some((namespace, py_str(package.get("name")?)))
}

/// The package of the `package_listing`.
fn listed(msg: &Value) -> Option<(String, String)> {
    namespaced(msg.pointer("/package_listing/package")?)
}

/// The branch of the `package_listing`.
fn listed_branch(msg: &Value) -> Option<String> {
    at(msg, "/package_listing/collection/branchname")
}

/// The package of a `package.update` message: the listing's, or the message's own `package`
/// (a name, or an object in newer messages).
fn updated_package(msg: &Value) -> Option<(String, String)> {
    if let Some(found) = listed(msg) {
        return Some(found);
    }
    let namespace = msg
        .get("namespace")
        .map(py_str)
        .unwrap_or_else(|| "rpms".to_string());
    match msg.get("package")? {
        Value::Object(package) => {
            let namespace = package.get("namespace").map(py_str).unwrap_or(namespace);
            Some((namespace, py_str(package.get("name")?)))
        }
        package => Some((namespace, py_str(package))),
    }
}

/// The `package` object of the message.
fn own_package(msg: &Value) -> Option<(String, String)> {
    namespaced(msg.get("package")?)
}

/// `new_status` words for a package's status change.
fn status_verb(previous: Option<&Value>, current: Option<&Value>) -> &'static str {
    let mut verb = "made some updates to";
    for (status, undo, done) in [
        ("Orphaned", "unorphaned", "orphaned"),
        ("Retired", "unretired", "retired"),
    ] {
        let was = previous.is_some_and(|value| value == status);
        let is = current.is_some_and(|value| value == status);
        if was && !is {
            verb = undo;
        } else if !was && is {
            verb = done;
        }
    }
    verb
}

fn joined(value: Option<&Value>) -> Option<String> {
    let items = value?.as_array()?;
    Some(items.iter().map(py_str).collect::<Vec<_>>().join(", "))
}

/// `None` where the original raises (a missing field, or a topic it has no sentence for).
fn subtitle(msg: &Value, topic: &str) -> Option<String> {
    let is = |event: &str| topic.contains(event);
    let ends = |event: &str| topic.ends_with(event);
    let sentence = if is("pkgdb.acl.update") {
        let user = at(msg, "/username")?;
        let status = at(msg, "/status")?;
        let (namespace, package) = listed(msg)?;
        let acl = at(msg, "/acl")?;
        let agent = agent(msg)?;
        let branch = listed_branch(msg)?;
        format!("{agent} changed {user}'s '{acl}' permission on {namespace}/{package} ({branch}) to '{status}'")
    } else if is("pkgdb.branch.clone") {
        let agent = agent(msg)?;
        let namespace = msg
            .get("namespace")
            .map(py_str)
            .unwrap_or_else(|| "rpms".to_string());
        let package = at(msg, "/package")?;
        let branch = at(msg, "/branch")?;
        let master = at(msg, "/master")?;
        format!("{agent} branched {namespace}/{package} {branch} from {master}")
    } else if is("pkgdb.package.update.status") {
        let extra = match msg.get("package_listing") {
            Some(_) => format!(" in {}", listed_branch(msg)?),
            None => String::new(),
        };
        let verb = status_verb(msg.get("prev_status"), msg.get("status"));
        let agent = agent(msg)?;
        let (namespace, package) = match listed(msg) {
            Some(found) => found,
            None => (
                msg.get("namespace")
                    .map(py_str)
                    .unwrap_or_else(|| "rpms".to_string()),
                at(msg, "/package")?,
            ),
        };
        format!("{agent} {verb} {namespace}/{package}{extra}")
    } else if ends("pkgdb.package.update") {
        let agent = agent(msg)?;
        let (namespace, package) = updated_package(msg)?;
        match msg.get("fields") {
            Some(fields) => format!(
                "{agent} updated: {} of {namespace}/{package}",
                joined(Some(fields))?
            ),
            None => format!("{agent} made some updates to {namespace}/{package}"),
        }
    } else if is("pkgdb.critpath.update") {
        format!(
            "{} altered the critpath status for some packages",
            agent(msg)?
        )
    } else if ends("pkgdb.package.new") {
        let agent = agent(msg)?;
        let (namespace, package) = listed(msg)?;
        let branch = listed_branch(msg)?;
        format!("{agent} added a new package '{namespace}/{package}' ({branch})")
    } else if is("pkgdb.acl.request.toggle") {
        let (namespace, package) = listed(msg)?;
        let acl = at(msg, "/acl")?;
        let agent = agent(msg)?;
        let branch = listed_branch(msg)?;
        let action = at(msg, "/acl_action")?;
        format!("{agent} has {action} '{acl}' on {namespace}/{package} ({branch})")
    } else if is("pkgdb.package.retire") {
        let (namespace, package) = listed(msg)?;
        let action = at(msg, "/retirement")?;
        let agent = agent(msg)?;
        let branch = listed_branch(msg)?;
        format!("{agent} {action} {namespace}/{package} ({branch})!")
    } else if is("pkgdb.owner.update") {
        // Owners became points of contact in pkgdb2.
        let owner = at(msg, "/package_listing/point_of_contact")
            .or_else(|| at(msg, "/package_listing/owner"))?;
        let (namespace, package) = listed(msg)?;
        let agent = agent(msg)?;
        let branch = listed_branch(msg)?;
        format!("{agent} changed owner of {namespace}/{package} ({branch}) to '{owner}'")
    } else if is("pkgdb.acl.user.remove") {
        let listings = msg.get("package_listings")?.as_array()?;
        let (namespace, package) = namespaced(listings.first()?.get("package")?)?;
        let user = at(msg, "/username")?;
        let agent = agent(msg)?;
        let mut branches = Vec::new();
        for listing in listings {
            branches.push(at(listing, "/collection/branchname")?);
        }
        format!(
            "{agent} removed {user} from {namespace}/{package} ({})",
            branches.join(", ")
        )
    } else if is("pkgdb.branch.start") || is("pkgdb.branch.complete") {
        let agent = agent(msg)?;
        let from = at(msg, "/collection_from/branchname")?;
        let to = at(msg, "/collection_to/branchname")?;
        if is("pkgdb.branch.start") {
            format!("{agent} started a branch of {to} from {from}")
        } else {
            format!("{agent}'s branch of {to} from {from} completed")
        }
    } else if is("pkgdb.collection.new") {
        let agent = agent(msg)?;
        let name = at(msg, "/collection/name")?;
        let version = at(msg, "/collection/version")?;
        format!("{agent} created a new collection for {name} {version}")
    } else if is("pkgdb.collection.update") {
        let agent = agent(msg)?;
        let name = at(msg, "/collection/name")?;
        let version = at(msg, "/collection/version")?;
        let fields = joined(msg.get("fields"))?;
        format!("{agent} updated the following fields of the {name} {version} collection: {fields}")
    } else if is("pkgdb.package.delete") {
        let agent = agent(msg)?;
        let (namespace, package) = own_package(msg)?;
        format!("{agent} deleted the '{namespace}/{package}' package from the pkgdb")
    } else if is("pkgdb.package.branch.delete") {
        let agent = agent(msg)?;
        let (namespace, package) = listed(msg)?;
        let branch = listed_branch(msg)?;
        format!("{agent} deleted the {branch} branch of the '{namespace}/{package}' package")
    } else if ends("pkgdb.package.branch.new") {
        let agent = agent(msg)?;
        let (namespace, package) = own_package(msg)?;
        let branch = listed_branch(msg)?;
        format!("{agent} created the branch '{branch}' for the package '{namespace}/{package}'")
    } else if is("pkgdb.acl.delete") {
        let acl = msg.get("acl")?;
        let (namespace, package) = namespaced(acl.pointer("/packagelist/package")?)?;
        let branch = at(acl, "/packagelist/collection/branchname")?;
        let right = at(acl, "/acl")?;
        let user = at(acl, "/fas_name")?;
        let agent = at(msg, "/agent")?;
        format!("{agent} deleted {user}'s {right} rights from {namespace}/{package} ({branch})")
    } else if ends("pkgdb.package.branch.request") {
        let (namespace, package) = own_package(msg)?;
        let new_branch = at(msg, "/collection_to/branchname")?;
        let agent = at(msg, "/agent")?;
        format!("{agent} requested branch {new_branch} for package {namespace}/{package}")
    } else if ends("pkgdb.package.new.request") {
        let info = msg.get("info")?;
        let namespace = info
            .get("namespace")
            .map(py_str)
            .unwrap_or_else(|| "rpms".to_string());
        let package = at(info, "/pkg_name")?;
        let branch = at(msg, "/collection/branchname")?;
        let agent = at(msg, "/agent")?;
        format!("{agent} requested package {namespace}/{package} on branch {branch}")
    } else if ends("pkgdb.admin.action.status.update") {
        admin_action(msg)?
    } else if ends("pkgdb.package.critpath.update") {
        let agent = at(msg, "/agent")?;
        let action = match msg.get("critpath")? {
            Value::Bool(true) => "set",
            Value::Bool(false) => "unset",
            number => match number.as_u64()? {
                0 => "unset",
                1 => "set",
                _ => return None,
            },
        };
        let (namespace, package) = own_package(msg)?;
        let branches = joined(msg.get("branches"))?;
        format!(
            "{agent} {action} the critpath flag on the {namespace}/{package} package ({branches})"
        )
    } else if ends("pkgdb.package.monitor.update") || ends("pkgdb.package.koschei.update") {
        let agent = at(msg, "/agent")?;
        let status = at(msg, "/status")?;
        let (namespace, package) = own_package(msg)?;
        let flag = if ends("pkgdb.package.monitor.update") {
            "monitor"
        } else {
            "koschei monitoring"
        };
        format!("{agent} set the {flag} flag of {namespace}/{package} to {status}")
    } else if ends("pkgdb.package.unretire.request") {
        let agent = at(msg, "/agent")?;
        let branch = at(msg, "/collection/branchname")?;
        let (namespace, package) = own_package(msg)?;
        format!("{agent} asks that {namespace}/{package} be unretired on {branch}")
    } else {
        // The original raises NotImplementedError (datagrepper: 500).
        return None;
    };
    Some(sentence)
}

/// The package of an admin action: its request `info`, or its `package`.
fn action_package(action: &Value) -> Option<(String, String)> {
    if let Some(info) = action.get("info") {
        if let Some(name) = info.get("pkg_name") {
            let namespace = info
                .get("namespace")
                .map(py_str)
                .unwrap_or_else(|| "rpms".to_string());
            return Some((namespace, py_str(name)));
        }
    }
    namespaced(action.get("package")?)
}

fn admin_action(msg: &Value) -> Option<String> {
    let agent = at(msg, "/agent")?;
    let action = msg.get("action")?;
    let owner = at(action, "/user")?;
    let branch = at(action, "/collection/branchname")?;
    let (namespace, package) = action_package(action)?;
    let kind = match at(action, "/action")?.as_str() {
        "request.package" => "package request".to_string(),
        "request.branch" => "branch request".to_string(),
        other => other.to_string(),
    };
    let old_status = at(msg, "/old_status")?;
    let new_status = at(msg, "/new_status")?;
    let mut sentence = format!(
        "{agent} changed {owner}'s {kind} for {namespace}/{package} in {branch} from {old_status} to {new_status}"
    );
    if let Some(message) = action.get("message").filter(|message| truthy(message)) {
        sentence.push_str(&format!(" with message: {}", py_str(message)));
    }
    Some(sentence)
}

/// The avatar of the `username`, or else of the agent; `""` when neither names anyone.
fn secondary_icon(msg: &Value) -> String {
    let user = at(msg, "/username").or_else(|| agent(msg));
    match user.filter(|user| !user.is_empty()) {
        Some(user) => avatar::of_user(&user),
        None => String::new(),
    }
}

fn page(namespace: &str, package: &str) -> String {
    format!("{PACKAGE_PAGE}/{namespace}/{package}/")
}

fn link(msg: &Value, topic: &str) -> Option<String> {
    let is = |event: &str| topic.contains(event);
    if is("pkgdb.package.new.request") {
        let info = msg.get("info")?;
        let namespace = info
            .get("namespace")
            .map(py_str)
            .unwrap_or_else(|| "rpms".to_string());
        return Some(page(&namespace, &at(info, "/pkg_name")?));
    }
    if is("pkgdb.admin.action.status.update") {
        let (namespace, package) = action_package(msg.get("action")?)?;
        return Some(page(&namespace, &package));
    }
    let about_listing = [
        "pkgdb.acl.update",
        "pkgdb.acl.request.toggle",
        "pkgdb.owner.update",
        "pkgdb.package.retire",
        "pkgdb.package.new",
        "pkgdb.package.branch.new",
    ];
    if about_listing.iter().any(|event| is(event)) {
        let (namespace, package) = listed(msg)?;
        return Some(page(&namespace, &package));
    }
    if is("pkgdb.acl.user.remove") {
        let first = msg.get("package_listings")?.as_array()?.first()?;
        let (namespace, package) = namespaced(first.get("package")?)?;
        return Some(page(&namespace, &package));
    }
    if is("pkgdb.package.update") || is("pkgdb.branch.clone") || is("package.branch.request") {
        let (namespace, package) = updated_package(msg)?;
        return Some(page(&namespace, &package));
    }
    Some(String::new())
}

fn objects(msg: &Value, topic: &str) -> Option<Vec<String>> {
    let is = |event: &str| topic.contains(event);
    let ends = |event: &str| topic.ends_with(event);
    let listed_name = || at(msg, "/package_listing/package/name");
    let own_name = || at(msg, "/package/name");
    let object = if is("pkgdb.acl.update") || is("pkgdb.acl.request.toggle") {
        let user_key = if is("pkgdb.acl.update") {
            "/username"
        } else {
            "/agent"
        };
        format!(
            "{}/acls/{}/{}/{}",
            listed_name()?,
            listed_branch(msg)?,
            at(msg, "/acl")?,
            at(msg, user_key)?
        )
    } else if ends("pkgdb.package.new") {
        format!("{}/create", listed_name()?)
    } else if is("pkgdb.package.retire") {
        format!("{}/retire", listed_name()?)
    } else if is("pkgdb.acl.user.remove") {
        let first = msg.get("package_listings")?.as_array()?.first()?;
        format!(
            "{}/remove/{}",
            at(first, "/package/name")?,
            at(msg, "/username")?
        )
    } else if is("pkgdb.owner.update") {
        format!("{}/owner/{}", listed_name()?, listed_branch(msg)?)
    } else if is("pkgdb.package.update") {
        let package = match listed_name() {
            Some(name) => name,
            None => match msg.get("package")? {
                Value::Object(package) => py_str(package.get("name")?),
                package => py_str(package),
            },
        };
        format!("{package}/update")
    } else if is("pkgdb.branch.clone") {
        format!("{}/branch", at(msg, "/package")?)
    } else if is("pkgdb.package.delete") {
        format!("{}/package/delete", own_name()?)
    } else if is("pkgdb.package.branch.delete") {
        format!("{}/{}/delete", listed_name()?, listed_branch(msg)?)
    } else if is("pkgdb.package.branch.new") {
        format!("{}/{}/new", own_name()?, listed_branch(msg)?)
    } else if is("pkgdb.acl.delete") {
        let acl = msg.get("acl")?;
        format!(
            "{}/acls/{}/{}/{}",
            at(acl, "/packagelist/package/name")?,
            at(acl, "/packagelist/collection/branchname")?,
            at(acl, "/acl")?,
            at(acl, "/fas_name")?
        )
    } else if ends("pkgdb.package.branch.request") {
        format!(
            "{}/branch/request/{}/{}",
            own_name()?,
            at(msg, "/collection_to/branchname")?,
            at(msg, "/agent")?
        )
    } else if ends("pkgdb.package.new.request") {
        format!(
            "new/package/request/{}/{}/{}",
            at(msg, "/info/pkg_name")?,
            at(msg, "/collection/branchname")?,
            at(msg, "/agent")?
        )
    } else if ends("pkgdb.admin.action.status.update") {
        let action = msg.get("action")?;
        let package = match at(action, "/info/pkg_name") {
            Some(name) => name,
            None => at(action, "/package/name")?,
        };
        format!(
            "action/{}/status/{package}/{}/{}",
            at(action, "/id")?,
            at(action, "/collection/branchname")?,
            at(msg, "/agent")?
        )
    } else if ends("pkgdb.package.critpath.update") {
        format!("{}/critpath", own_name()?)
    } else if ends("pkgdb.package.monitor.update") || ends("pkgdb.package.koschei.update") {
        let flag = if ends("pkgdb.package.monitor.update") {
            "monitor"
        } else {
            "koschei"
        };
        let status = at(msg, "/status")?.to_lowercase();
        format!("{}/{flag}/{status}", own_name()?)
    } else if ends("pkgdb.package.unretire.request") {
        format!(
            "{}/unretire/{}",
            own_name()?,
            at(msg, "/collection/branchname")?
        )
    } else {
        return Some(Vec::new());
    };
    Some(vec![object])
}
