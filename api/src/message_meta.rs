//! The `meta` object `/raw` and `/id` add to each message when asked (`meta=usernames&meta=…`),
//! in datagrepper 0.9.7's shape: only the asked fields, each as fedmsg.meta returns it.
//!
//! `usernames` and `packages` were stored by the worker (so that `/raw?user=` can filter on
//! them); the text fields are computed here, at read time, by the shared fedmsg.meta port
//! ([`statscache_shared::meta::text`]), and never stored. For a message whose service that port
//! does not cover, the asked text fields are `null` (fedmsg.meta would use that service's own
//! rules, which we do not guess). `date` (arrow's "7 years ago") is not offered.
//!
//! Where the answers differ from datagrepper's, by design:
//! - where fedmsg.meta raises something other than `KeyError` (an event its processor has no
//!   sentence for, a field of the wrong type, taskotron's network lookup), datagrepper answers
//!   500; we answer fedmsg.meta's fallback for that field (`""`, `[]`);
//! - nothing is asked of FAS: an email address that is not `@fedoraproject.org` stays an address
//!   (as in fedmsg.meta without a FAS cache, which is how datagrepper runs in the test);
//! - where fedmsg.meta picks one element of a set (anitya's package icon for a message without
//!   a user), we pick the first in sorted order, so the answer is stable.

use poem_openapi::types::MaybeUndefined;
use poem_openapi::Object;
use serde_json::Value;
use statscache_shared::message::Envelope;
use statscache_shared::meta::text::{self, Text};

use crate::error::ApiError;

/// The `meta` names datagrepper knows.
const META_NAMES: &[&str] = &[
    "title",
    "subtitle",
    "icon",
    "secondary_icon",
    "link",
    "usernames",
    "packages",
    "objects",
    "date",
];

/// The ones we do not answer.
const UNSUPPORTED_META: &[&str] = &["date"];

/// The fields computed from the envelope rather than stored.
const TEXT_META: &[&str] = &[
    "title",
    "subtitle",
    "icon",
    "secondary_icon",
    "link",
    "objects",
];

/// Refuses names datagrepper does not know, and the ones it knows that we do not answer.
pub fn check_meta(meta: &[String]) -> Result<(), ApiError> {
    for name in meta {
        if !META_NAMES.contains(&name.as_str()) {
            return Err(ApiError::bad_parameter(
                "meta",
                format!("{name:?} is not one of {}", META_NAMES.join(", ")),
            ));
        }
        if UNSUPPORTED_META.contains(&name.as_str()) {
            let supported: Vec<&str> = META_NAMES
                .iter()
                .copied()
                .filter(|known| !UNSUPPORTED_META.contains(known))
                .collect();
            return Err(ApiError::bad_parameter(
                "meta",
                format!(
                    "meta={name} is not supported; supported: {}",
                    supported.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// fedmsg.meta facts about a message, when `meta` asks for them. An asked text field is `null`
/// when the message's service is not among the ported ones.
#[derive(Debug, Clone, Object)]
pub struct MessageMeta {
    /// People the message concerns, as fedmsg.meta names them.
    #[oai(skip_serializing_if_is_none)]
    pub usernames: Option<Vec<String>>,
    /// Packages the message concerns, as fedmsg.meta names them.
    #[oai(skip_serializing_if_is_none)]
    pub packages: Option<Vec<String>>,
    /// fedmsg.meta's title: by default the topic without its first three parts.
    #[oai(nullable)]
    pub title: MaybeUndefined<String>,
    /// A sentence saying what happened (`""` or `null` when fedmsg.meta has none).
    #[oai(nullable)]
    pub subtitle: MaybeUndefined<String>,
    /// A page about the event; `null` when there is none.
    #[oai(nullable)]
    pub link: MaybeUndefined<String>,
    /// The service's icon URL.
    #[oai(nullable)]
    pub icon: MaybeUndefined<String>,
    /// Usually the acting person's avatar URL.
    #[oai(nullable)]
    pub secondary_icon: MaybeUndefined<String>,
    /// Path-like names of the things the message is about (a set, sorted here).
    #[oai(nullable)]
    pub objects: MaybeUndefined<Vec<String>>,
}

impl MessageMeta {
    /// The asked fields for one message; `None` when nothing was asked. `envelope` is the stored
    /// envelope JSON, `usernames` and `packages` what the worker stored for it.
    pub fn asked(
        wanted: &[String],
        envelope: &Value,
        usernames: &[String],
        packages: &[String],
    ) -> Option<MessageMeta> {
        if wanted.is_empty() {
            return None;
        }
        let wants = |name: &str| wanted.iter().any(|asked| asked == name);
        let text = if TEXT_META.iter().any(|name| wants(name)) {
            Envelope::from_value(envelope.clone())
                .ok()
                .and_then(|envelope| text::describe(&envelope))
        } else {
            None
        };
        let field = |name: &str, value: fn(&Text) -> Option<String>| -> MaybeUndefined<String> {
            if !wants(name) {
                return MaybeUndefined::Undefined;
            }
            MaybeUndefined::from_opt_null(text.as_ref().and_then(value))
        };
        Some(MessageMeta {
            usernames: wants("usernames").then(|| usernames.to_vec()),
            packages: wants("packages").then(|| packages.to_vec()),
            title: field("title", |text| Some(text.title.clone())),
            subtitle: field("subtitle", |text| text.subtitle.clone()),
            link: field("link", |text| text.link.clone()),
            icon: field("icon", |text| text.icon.clone()),
            secondary_icon: field("secondary_icon", |text| text.secondary_icon.clone()),
            objects: match (wants("objects"), &text) {
                (false, _) => MaybeUndefined::Undefined,
                (true, Some(text)) => MaybeUndefined::Value(text.objects.clone()),
                (true, None) => MaybeUndefined::Null,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(names: &[&str], envelope: Value) -> Value {
        let wanted: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let meta = MessageMeta::asked(&wanted, &envelope, &["ralph".to_string()], &[])
            .expect("something was asked");
        poem_openapi::types::ToJSON::to_json(&meta).expect("an object")
    }

    #[test]
    fn only_the_asked_fields_are_present() {
        let compose = serde_json::json!({
            "topic": "org.fedoraproject.prod.compose.rawhide.start",
            "msg": {"location": null},
            "timestamp": 1.0,
        });
        assert_eq!(
            asked(&["usernames", "link", "objects"], compose.clone()),
            serde_json::json!({"usernames": ["ralph"], "link": null, "objects": ["rawhide/primary"]})
        );
        assert_eq!(
            asked(&["title", "icon"], compose),
            serde_json::json!({"title": "compose.rawhide.start", "icon": null})
        );
        assert!(MessageMeta::asked(&[], &Value::Null, &[], &[]).is_none());
    }

    #[test]
    fn unported_services_answer_null_text_fields() {
        let unported = serde_json::json!({
            "topic": "org.fedoraproject.prod.zanata.document.upload",
            "msg": {},
            "timestamp": 1.0,
        });
        assert_eq!(
            asked(&["title", "objects", "usernames"], unported),
            serde_json::json!({"title": null, "objects": null, "usernames": ["ralph"]})
        );
    }
}
