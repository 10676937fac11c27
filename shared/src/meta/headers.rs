//! Usernames and packages a fedora-messaging message declares in its headers.
//!
//! fedora-messaging schemas publish their `usernames`, `packages`, `containers`, `modules` and
//! `flatpaks` properties as one boolean header per name (`fedora_messaging_user_<name>`,
//! `fedora_messaging_rpm_<name>`, ...), so that brokers can filter on them. They are the
//! publisher's own answer, better than any rule guessed from the body, so they win when present.

use serde_json::Value;

const USER_PREFIX: &str = "fedora_messaging_user_";

/// Packages of every kind a schema can name: RPMs, containers, modules, flatpaks.
const PACKAGE_PREFIXES: [&str; 4] = [
    "fedora_messaging_rpm_",
    "fedora_messaging_container_",
    "fedora_messaging_module_",
    "fedora_messaging_flatpak_",
];

/// What the headers declare; `None` for a kind no header names (then the body's rules apply).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Declared {
    pub usernames: Option<Vec<String>>,
    pub packages: Option<Vec<String>>,
}

/// Reads the `fedora_messaging_*` name headers of an envelope's `headers` object.
pub(super) fn declared(headers: Option<&Value>) -> Declared {
    let mut found = Declared::default();
    let Some(Value::Object(headers)) = headers else {
        return found;
    };
    for (key, value) in headers {
        // fedora-messaging sets these to true; a false one names nothing.
        if value != &Value::Bool(true) {
            continue;
        }
        if let Some(name) = key.strip_prefix(USER_PREFIX) {
            add(&mut found.usernames, name);
            continue;
        }
        for prefix in PACKAGE_PREFIXES {
            if let Some(name) = key.strip_prefix(prefix) {
                add(&mut found.packages, name);
            }
        }
    }
    found
}

fn add(names: &mut Option<Vec<String>>, name: &str) {
    if name.is_empty() {
        return;
    }
    names.get_or_insert_with(Vec::new).push(name.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_kind_of_name_header_is_read() {
        let headers = json!({
            "fedora_messaging_schema": "bodhi.update.comment.v1",
            "fedora_messaging_user_alice": true,
            "fedora_messaging_user_bob": true,
            "fedora_messaging_rpm_kernel": true,
            "fedora_messaging_container_httpd": true,
            "fedora_messaging_module_nodejs": true,
            "fedora_messaging_flatpak_firefox": true,
            "fedora_messaging_user_": true,
            "fedora_messaging_rpm_ignored": false,
            "sent-at": "2026-12-01T16:00:00+00:00",
        });
        let found = declared(Some(&headers));
        assert_eq!(found.usernames, Some(vec!["alice".into(), "bob".into()]));
        let mut packages = found.packages.unwrap_or_default();
        packages.sort();
        assert_eq!(packages, ["firefox", "httpd", "kernel", "nodejs"]);
    }

    #[test]
    fn no_name_headers_leave_both_to_the_rules() {
        assert_eq!(declared(None), Declared::default());
        let headers = json!({"fedora_messaging_schema": "base.message", "priority": 0});
        assert_eq!(declared(Some(&headers)), Declared::default());
        assert_eq!(declared(Some(&json!("not an object"))), Declared::default());
    }
}
