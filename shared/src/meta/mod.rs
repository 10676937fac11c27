//! The usernames and packages a fedmsg message names: a port of fedmsg.meta's rules.
//!
//! The original statscache's by-user and by-package plugins keyed their statistics on what
//! `fedmsg.meta.msg2usernames` and `fedmsg.meta.msg2packages` returned, which in turn came from
//! the per-service processors of `fedmsg_meta_fedora_infrastructure`. This module ports those
//! processors' `usernames` and `packages` rules, one function per service (topic category),
//! listed in `rule_for`.
//!
//! Differences from fedmsg.meta, all deliberate:
//! - Offline: no Fedora account system (FAS) lookups and no HTTP requests. An email address only
//!   becomes a username when it is `<name>@fedoraproject.org`; any other address is dropped
//!   rather than reported as a "username". IRC nicks are kept as they are, which is what
//!   fedmsg.meta does for nicks missing from its FAS cache.
//! - Lenient: messages are untrusted, so a field that is missing or has the wrong type just
//!   contributes nothing, where fedmsg.meta would raise and lose the whole set. Empty names are
//!   never reported.
//! - Services are chosen by the category (the 4th topic token) alone, whatever the topic prefix.
//!
//! The text fields datagrepper's `meta=` also offers (`title`, `subtitle`, …) are in [`text`].
//!
//! fedora-messaging messages declare their users and packages in headers ([`headers`]); those
//! are used when present, the rules otherwise.

mod collaboration;
mod headers;
mod packaging;
pub mod text;

use std::collections::BTreeSet;

use crate::message::Envelope;
use serde_json::Value;

/// Usernames and packages named by a message, sorted and de-duplicated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub usernames: Vec<String>,
    pub packages: Vec<String>,
}

/// Derives the usernames and packages a message names. Never fails: a message of an unknown
/// service, or one whose fields are not what the service's rule expects, names fewer things.
pub fn extract(envelope: &Envelope) -> Meta {
    let declared = headers::declared(envelope.headers.as_ref());
    let mut found = Found::default();
    let both_declared = declared.usernames.is_some() && declared.packages.is_some();
    if !both_declared {
        if let Some(rule) = rule_for(envelope.category()) {
            rule(envelope, &mut found);
        }
    }
    if let Some(usernames) = declared.usernames {
        found.usernames = usernames.into_iter().collect();
    }
    if let Some(packages) = declared.packages {
        found.packages = packages.into_iter().collect();
    }
    Meta {
        usernames: found.usernames.into_iter().collect(),
        packages: found.packages.into_iter().collect(),
    }
}

/// A service's rule: reads one message and records what it names.
type Rule = fn(&Envelope, &mut Found);

/// The rule for each service, by topic category.
fn rule_for(category: &str) -> Option<Rule> {
    let rule: Rule = match category {
        // Packaging: builds, updates, package metadata, upstream releases, bugs.
        "anitya" => packaging::anitya,
        "bodhi" => packaging::bodhi,
        "bugzilla" => packaging::bugzilla,
        "buildsys" => packaging::buildsys,
        "copr" => packaging::copr,
        "faf" => packaging::faf,
        "fedoratagger" => packaging::fedoratagger,
        "git" => packaging::git,
        "greenwave" => packaging::greenwave,
        "hotness" => packaging::hotness,
        "kerneltest" => packaging::kerneltest,
        "koschei" => packaging::koschei,
        "mbs" => packaging::mbs,
        "mdapi" => packaging::mdapi,
        "pkgdb" => packaging::pkgdb,
        "summershum" => packaging::summershum,
        "taskotron" => packaging::taskotron,
        // Collaboration: forges, CI, accounts, meetings, lists, infrastructure.
        "allpackages" | "ci" => collaboration::centos_ci,
        "ansible" => collaboration::ansible,
        "askbot" => collaboration::askbot,
        "fas" => collaboration::fas,
        "fedbadges" => collaboration::fedbadges,
        "fedocal" => collaboration::fedocal,
        "fedora_elections" => collaboration::fedora_elections,
        "fmn" => collaboration::fmn,
        "github" => collaboration::github,
        "hubs" => collaboration::hubs,
        "infragit" => collaboration::infragit,
        "irc" => collaboration::irc,
        "mailman" => collaboration::mailman,
        "meetbot" => collaboration::meetbot,
        "nagios" => collaboration::nagios,
        "nuancier" => collaboration::nuancier,
        "odcs" => collaboration::odcs,
        "openqa" => collaboration::openqa,
        "pagure" => collaboration::pagure,
        "planet" => collaboration::planet,
        "rats" => collaboration::rats,
        "trac" => collaboration::trac,
        "waiverdb" => collaboration::waiverdb,
        "wiki" => collaboration::wiki,
        // autocloud, compose, fedimg, jenkins, mirrormanager, pdc, pungi, releng and zanata name
        // no users and no packages in fedmsg.meta either.
        _ => return None,
    };
    Some(rule)
}

/// What a rule has found so far; the sets keep names sorted and unique.
#[derive(Debug, Default)]
struct Found {
    usernames: BTreeSet<String>,
    packages: BTreeSet<String>,
}

impl Found {
    /// Records a username; missing or empty names are ignored.
    fn user(&mut self, name: Option<&str>) {
        if let Some(name) = name.filter(|name| !name.is_empty()) {
            self.usernames.insert(name.to_string());
        }
    }

    /// Records a package name; missing or empty names are ignored.
    fn package(&mut self, name: Option<&str>) {
        if let Some(name) = name.filter(|name| !name.is_empty()) {
            self.packages.insert(name.to_string());
        }
    }
}

/// The string at a JSON pointer (`"/commit/username"`), if there is one.
fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer)?.as_str()
}

/// The array at a JSON pointer, or nothing when it is missing or not an array.
fn items<'a>(value: &'a Value, pointer: &str) -> &'a [Value] {
    match value.pointer(pointer) {
        Some(Value::Array(items)) => items,
        _ => &[],
    }
}

/// Whether an object has the key, whatever its value (Python's `key in dict`).
fn has(value: &Value, key: &str) -> bool {
    value.get(key).is_some()
}

/// The package name of an RPM name-version-release (`fedmsg-0.2.7-2.el6` → `fedmsg`): all but
/// the last two dash-separated parts, as fedmsg.meta's `nvr.rsplit('-', 2)[0]`.
fn name_from_nvr(nvr: &str) -> &str {
    nvr.rsplitn(3, '-').last().unwrap_or(nvr)
}

/// The FAS username for an email address, when it can be known without asking FAS.
fn username_from_email(email: &str) -> Option<&str> {
    let name = email.strip_suffix("@fedoraproject.org")?;
    if name.contains('@') {
        return None;
    }
    Some(name)
}

/// Where this port knowingly differs from fedmsg.meta's own test expectations (the corpus in
/// `tests/fixtures` comes from them), by test class, with the reason. Most need
/// the FAS cache that fedmsg.meta's test-suite fills with `threebean` → `ralph`,
/// `rbean@redhat.com` → `ralph`, `puiterwijk@gmail.com` → `puiterwijk` and
/// `nicolas.mailhot@laposte.net` → `nim`; offline there is no FAS to ask.
pub const KNOWN_DIFFERENCES: &[(&str, &str)] = &[
    (
        "tests/bz.py::TestLegacy030BugzillaUpdate",
        "CC addresses need FAS",
    ),
    (
        "tests/bz.py::TestLegacy84cd3720BugzillaComment",
        "assignee and CCs need FAS",
    ),
    (
        "tests/mailman3.py::TestMailman3NewReply",
        "sender address needs FAS",
    ),
    (
        "tests/pkgdb.py::TestPkgdbPackageBranchNewCustomNamespace",
        "test configures namespace docker, statscache uses the default rpms",
    ),
    (
        "tests/zodbot.py::TestSupybotChangeTopicNoTitle",
        "IRC nick threebean needs FAS",
    ),
    (
        "tests/zodbot.py::TestSupybotEndMeetingNoTitle",
        "IRC nick threebean needs FAS",
    ),
    (
        "tests/zodbot.py::TestSupybotMeetingItemHelp",
        "IRC nick threebean needs FAS",
    ),
    (
        "tests/zodbot.py::TestSupybotStartMeeting",
        "IRC nick threebean needs FAS",
    ),
    (
        "tests/zodbot.py::TestSupybotStartMeetingNoName",
        "IRC nick threebean needs FAS",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_headers_win_over_the_rules_kind_by_kind() {
        let raw = serde_json::json!({
            "topic": "org.fedoraproject.prod.buildsys.build.state.change",
            "msg": {"owner": "builder", "name": "kernel", "version": "6", "release": "1"},
            "timestamp": 1.0,
            "headers": {"fedora_messaging_user_alice": true},
        });
        let envelope = Envelope::from_value(raw).expect("valid envelope");
        let meta = extract(&envelope);
        assert_eq!(meta.usernames, ["alice"]);
        assert_eq!(
            meta.packages,
            ["kernel"],
            "packages still come from the rule"
        );
    }

    fn fixture(name: &str) -> Vec<String> {
        let path = format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        text.lines().map(str::to_string).collect()
    }

    /// The expected names for one field, or `None` when the fedmsg.meta test did not say.
    fn expected_names(expectation: &Value, field: &str) -> Option<Vec<String>> {
        let names = expectation.get(field)?.as_array()?;
        let mut names: Vec<String> = names
            .iter()
            .map(|name| name.as_str().expect("names are strings").to_string())
            .collect();
        names.sort();
        names.dedup();
        Some(names)
    }

    #[test]
    fn matches_fedmsg_meta_on_the_real_corpus() {
        let messages = fixture("fedmsg-real.jsonl");
        let expectations = fixture("fedmsg-real-meta-expected.jsonl");
        assert_eq!(messages.len(), expectations.len());

        let mut compared = 0;
        let mut matched = 0;
        let mut mismatches = Vec::new();
        let mut known_differences_that_match = Vec::new();
        for (line, (raw, expectation)) in messages.iter().zip(&expectations).enumerate() {
            let envelope = Envelope::parse(raw.as_bytes()).expect("fixture envelopes are valid");
            let expectation: Value = serde_json::from_str(expectation).expect("expectation JSON");
            let origin = expectation["origin"].as_str().unwrap_or_default();
            let known_difference = KNOWN_DIFFERENCES
                .iter()
                .find(|(test_class, _)| origin.ends_with(test_class))
                .map(|(_, reason)| *reason);
            let meta = extract(&envelope);

            let mut line_matches = true;
            for (field, actual) in [("usernames", &meta.usernames), ("packages", &meta.packages)] {
                let Some(expected) = expected_names(&expectation, field) else {
                    continue;
                };
                compared += 1;
                if *actual == expected {
                    matched += 1;
                    continue;
                }
                line_matches = false;
                let mismatch = format!(
                    "line {} {origin} ({}): {field} expected {expected:?}, got {actual:?}",
                    line + 1,
                    envelope.topic
                );
                match known_difference {
                    Some(reason) => println!("known difference, {reason}: {mismatch}"),
                    None => mismatches.push(mismatch),
                }
            }
            if known_difference.is_some() && line_matches {
                known_differences_that_match.push(origin.to_string());
            }
        }

        println!("{matched} of {compared} expectations match");
        assert!(
            mismatches.is_empty(),
            "{} mismatches ({matched} of {compared} expectations match):\n{}",
            mismatches.len(),
            mismatches.join("\n")
        );
        assert!(
            known_differences_that_match.is_empty(),
            "these now match, remove them from KNOWN_DIFFERENCES: {known_differences_that_match:?}"
        );
    }
    /// Collects the JSON pointer of every value inside `value`, down to `depth` levels.
    fn collect_pointers(value: &Value, prefix: &str, depth: usize, pointers: &mut Vec<String>) {
        if depth == 0 {
            return;
        }
        let children: Vec<(String, &Value)> = match value {
            Value::Object(fields) => fields
                .iter()
                .map(|(key, child)| (key.replace('~', "~0").replace('/', "~1"), child))
                .collect(),
            Value::Array(elements) => elements
                .iter()
                .enumerate()
                .map(|(index, child)| (index.to_string(), child))
                .collect(),
            _ => Vec::new(),
        };
        for (token, child) in children {
            let pointer = format!("{prefix}/{token}");
            collect_pointers(child, &pointer, depth - 1, pointers);
            pointers.push(pointer);
        }
    }

    #[test]
    fn wrongly_typed_fields_never_panic() {
        let wrong_values = [
            Value::Null,
            serde_json::json!(7),
            serde_json::json!("x"),
            serde_json::json!([1, "x"]),
            serde_json::json!({ "x": 1 }),
        ];
        for raw in fixture("fedmsg-real.jsonl") {
            let envelope = Envelope::parse(raw.as_bytes()).expect("fixture envelopes are valid");
            // The whole body (pointer ""), then every field four levels deep.
            let mut pointers = vec![String::new()];
            collect_pointers(&envelope.msg, "", 4, &mut pointers);
            for pointer in &pointers {
                for wrong in &wrong_values {
                    let mut mutated = envelope.clone();
                    if let Some(field) = mutated.msg.pointer_mut(pointer) {
                        *field = wrong.clone();
                    }
                    extract(&mutated);
                    text::describe(&mutated);
                }
            }
        }
    }

    #[test]
    fn services_missing_from_the_corpus() {
        // (topic, body, usernames, packages); bodies shaped like fedmsg.meta's test messages.
        let cases = [
            (
                "org.fedoraproject.prod.faf.report.threshold1",
                serde_json::json!({ "components": ["kernel"], "maintainers": ["jforbes"] }),
                vec!["jforbes"],
                vec!["kernel"],
            ),
            (
                "org.fedoraproject.prod.fedocal.meeting.new",
                serde_json::json!({ "agent": "pingou", "calendar": {}, "meeting": {} }),
                vec!["pingou"],
                vec![],
            ),
            (
                "org.fedoraproject.prod.hubs.user.role.added",
                serde_json::json!({
                    "username": "decause", "agent": "ralph",
                    "hub_name": "ralph", "hub_type": "user",
                }),
                vec!["decause", "ralph"],
                vec![],
            ),
            (
                "org.fedoraproject.prod.hubs.hub.updated",
                serde_json::json!({ "agent": "ralph", "hub_name": "ralph", "hub_type": "stream" }),
                vec![],
                vec![],
            ),
            (
                "org.fedoraproject.prod.infragit.receive",
                serde_json::json!({ "commit": { "username": "kevin", "path": "/git/ansible" } }),
                vec!["kevin"],
                vec![],
            ),
            (
                "org.fedoraproject.prod.odcs.compose.state-changed",
                serde_json::json!({ "compose": { "owner": "jkaluza", "id": 1 } }),
                vec!["jkaluza"],
                vec![],
            ),
            (
                "org.fedoraproject.prod.planet.post.new",
                serde_json::json!({ "username": "adamwill", "post": {} }),
                vec!["adamwill"],
                vec![],
            ),
            (
                // Finding the packages of a bodhi update would need a bodhi query.
                "org.fedoraproject.prod.taskotron.result.new",
                serde_json::json!({ "task": { "type": "bodhi_update", "item": "FEDORA-1" } }),
                vec![],
                vec![],
            ),
            (
                "org.fedoraproject.prod.taskotron.result.new",
                serde_json::json!({ "task": { "type": "koji_build", "item": "rpm-4.14.1-1.fc28" } }),
                vec![],
                vec!["rpm"],
            ),
            (
                "org.example.prod.unknown.thing",
                serde_json::json!({ "agent": "ralph", "package": "rpm" }),
                vec![],
                vec![],
            ),
        ];
        for (topic, body, usernames, packages) in cases {
            let envelope = Envelope::from_value(
                serde_json::json!({ "topic": topic, "msg": body, "timestamp": 1.0 }),
            )
            .expect("valid envelope");
            let meta = extract(&envelope);
            assert_eq!(meta.usernames, usernames, "{topic}");
            assert_eq!(meta.packages, packages, "{topic}");
        }
    }

    #[test]
    fn package_names_come_from_nvrs_like_python_rsplit() {
        assert_eq!(name_from_nvr("fedmsg-0.2.7-2.el6"), "fedmsg");
        assert_eq!(
            name_from_nvr("python-sqlalchemy0.5-0.5.8-1.fc20"),
            "python-sqlalchemy0.5"
        );
        assert_eq!(name_from_nvr("two-parts"), "two");
        assert_eq!(name_from_nvr("single"), "single");
        assert_eq!(name_from_nvr(""), "");
    }

    #[test]
    fn only_fedoraproject_addresses_become_usernames() {
        assert_eq!(username_from_email("spot@fedoraproject.org"), Some("spot"));
        assert_eq!(username_from_email("rbean@redhat.com"), None);
        assert_eq!(username_from_email("a@b@fedoraproject.org"), None);
        assert_eq!(username_from_email("@fedoraproject.org"), Some(""));
    }
}
