//! fedmsg.meta's text fields of a message (`title`, `subtitle`, `link`, `icon`,
//! `secondary_icon`, `objects`): a port of the text methods of the processors in
//! `fedmsg_meta_fedora_infrastructure` 0.31.0, which datagrepper's `meta=` answers with.
//!
//! Why a port: datagrepper clients ask `/raw?meta=subtitle` to show messages to people; the api
//! computes these at read time from the stored envelope (they are never stored, so a better
//! port needs no backfill). Only the services in [`processor_for`] are ported (the most frequent
//! in the corpus); for any other message [`describe`] says nothing rather than guessing, since
//! fedmsg.meta would use that service's own processor.
//!
//! Faithful to fedmsg.meta, including its fallbacks: a field a processor cannot find (Python's
//! `KeyError`, caught by fedmsg.meta's `graceful`) gives an empty `subtitle`, an empty `link` or
//! no `objects`. Differences, all deliberate: a value of the wrong type falls back the same way
//! (datagrepper answers those with a 500), and nothing is looked up over the network (the
//! avatars are built from the username, as fedmsg.meta does without its DNS option).

mod anitya;
mod askbot;
mod avatar;
mod bodhi;
mod bugzilla;
mod buildsys;
mod ci;
mod compose;
mod fedimg;
mod git;
mod github;
mod meetbot;
mod pagure;
mod pkgdb;

use serde_json::Value;

use crate::message::Envelope;

/// The text fields of one message, as fedmsg.meta's `msg2*` functions return them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text {
    pub title: String,
    /// `None` where fedmsg.meta returns `None` (JSON null).
    pub subtitle: Option<String>,
    /// `None` where fedmsg.meta returns `None` (JSON null).
    pub link: Option<String>,
    pub icon: Option<String>,
    pub secondary_icon: Option<String>,
    /// Sorted and unique (fedmsg.meta returns a set).
    pub objects: Vec<String>,
}

/// A processor's text methods for one message. Each returns `None` where the Python method
/// raises `KeyError`, so that [`describe`] applies fedmsg.meta's fallbacks in one place.
struct Fields {
    subtitle: Option<Option<String>>,
    link: Option<Option<String>>,
    icon: Option<Option<String>>,
    secondary_icon: Option<Option<String>>,
    objects: Option<Vec<String>>,
}

/// A ported processor: the topic prefixes it answers for, its name, and its text methods.
struct Processor {
    prefixes: &'static [&'static str],
    name: &'static str,
    fields: fn(&Envelope) -> Fields,
}

const FEDORA: &[&str] = &[
    "org.fedoraproject.dev",
    "org.fedoraproject.stg",
    "org.fedoraproject.prod",
];
const RELEASE_MONITORING: &[&str] = &[
    "org.release-monitoring.dev",
    "org.release-monitoring.stg",
    "org.release-monitoring.prod",
];
const PAGURE: &[&str] = &["io.pagure.dev", "io.pagure.stg", "io.pagure.prod"];
const CENTOS: &[&str] = &["org.centos.dev", "org.centos.stage", "org.centos.prod"];

/// The ported processors, matched like fedmsg.meta: `<prefix>.<name>` then the end or a dot.
const PROCESSORS: &[Processor] = &[
    Processor {
        prefixes: FEDORA,
        name: "askbot",
        fields: askbot::fields,
    },
    Processor {
        prefixes: FEDORA,
        name: "bodhi",
        fields: bodhi::fields,
    },
    Processor {
        prefixes: FEDORA,
        name: "bugzilla",
        fields: bugzilla::fields,
    },
    Processor {
        prefixes: FEDORA,
        name: "buildsys",
        fields: buildsys::fields,
    },
    Processor {
        prefixes: FEDORA,
        name: "compose",
        fields: compose::fields,
    },
    Processor {
        prefixes: FEDORA,
        name: "fedimg",
        fields: fedimg::fields,
    },
    Processor {
        prefixes: RELEASE_MONITORING,
        name: "anitya",
        fields: anitya::fields,
    },
    Processor {
        prefixes: FEDORA,
        name: "git",
        fields: git::fields,
    },
    Processor {
        prefixes: FEDORA,
        name: "github",
        fields: github::fields,
    },
    Processor {
        prefixes: FEDORA,
        name: "meetbot",
        fields: meetbot::fields,
    },
    Processor {
        prefixes: FEDORA,
        name: "pkgdb",
        fields: pkgdb::fields,
    },
    Processor {
        prefixes: PAGURE,
        name: "pagure",
        fields: pagure::forge,
    },
    Processor {
        prefixes: FEDORA,
        name: "pagure",
        fields: pagure::dist_git,
    },
    Processor {
        prefixes: CENTOS,
        name: "ci.pipeline",
        fields: ci::atomic,
    },
    Processor {
        prefixes: CENTOS,
        name: "allpackages.pipeline",
        fields: ci::old_allpackages,
    },
    Processor {
        prefixes: CENTOS,
        name: "container.pipeline",
        fields: ci::old_container,
    },
];

/// The ported processor for a topic, if any.
fn processor_for(topic: &str) -> Option<&'static Processor> {
    PROCESSORS.iter().find(|processor| {
        processor.prefixes.iter().any(|prefix| {
            let Some(rest) = topic
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('.'))
            else {
                return false;
            };
            match rest.strip_prefix(processor.name) {
                Some(after) => after.is_empty() || after.starts_with('.'),
                None => false,
            }
        })
    })
}

/// The text fields of a message, or `None` when its service's processor is not ported.
pub fn describe(envelope: &Envelope) -> Option<Text> {
    let processor = processor_for(&envelope.topic)?;
    let fields = (processor.fields)(envelope);
    let mut objects = fields.objects.unwrap_or_default();
    objects.sort();
    objects.dedup();
    Some(Text {
        title: title(&envelope.topic),
        subtitle: fields.subtitle.unwrap_or(Some(String::new())),
        link: fields.link.unwrap_or(Some(String::new())),
        icon: fields.icon.unwrap_or(Some(String::new())),
        secondary_icon: fields.secondary_icon.unwrap_or(Some(String::new())),
        objects,
    })
}

/// fedmsg.meta's default title: the topic without its first three parts.
fn title(topic: &str) -> String {
    if topic.starts_with("/topic/") {
        return topic.to_string();
    }
    topic.split('.').skip(3).collect::<Vec<_>>().join(".")
}

/// The string at a JSON pointer, or `None` (a `KeyError`) when missing or not a string.
fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer)?.as_str()
}

/// Python's truth value of a JSON value: `None`, `False`, `0`, `""`, `[]` and `{}` are false.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(flag) => *flag,
        Value::Number(number) => number.as_f64() != Some(0.0),
        Value::String(text) => !text.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(fields) => !fields.is_empty(),
    }
}

/// The truth value of `dict.get(key)`: a missing value is `None`, false.
fn present(value: Option<&Value>) -> bool {
    value.is_some_and(truthy)
}

/// `str()` of the value at a JSON pointer; `None` where the original raises `KeyError`.
fn at(value: &Value, pointer: &str) -> Option<String> {
    value.pointer(pointer).map(py_str)
}

/// `str()` of a value that may be Python's `None`.
fn shown(value: Option<&Value>) -> String {
    value.map(py_str).unwrap_or_else(|| "None".to_string())
}

/// A JSON value as Python's `str()` shows it in a format string: strings bare, `None`,
/// `True`/`False`; lists and objects as compact JSON (Python would show its `repr`).
fn py_str(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "None".to_string(),
        Value::Bool(true) => "True".to_string(),
        Value::Bool(false) => "False".to_string(),
        other => other.to_string(),
    }
}

/// Python's `str.format` with named fields only: each `{name}` of `values` is replaced once,
/// so that a value containing braces is never substituted again.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut filled = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        filled.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let known = after.find('}').and_then(|close| {
            let name = &after[..close];
            let (_, value) = values.iter().find(|(known, _)| *known == name)?;
            Some((close, *value))
        });
        match known {
            Some((close, value)) => {
                filled.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                filled.push('{');
                rest = after;
            }
        }
    }
    filled.push_str(rest);
    filled
}

/// fedmsg.meta's `list_to_series`: sorted unique items, at most three named, the rest counted
/// (`a, b, and 2 others`).
fn list_to_series(items: &[String]) -> String {
    let mut items: Vec<String> = items.to_vec();
    items.sort();
    items.dedup();
    if items.is_empty() {
        return "(nothing)".to_string();
    }
    if items.len() == 1 {
        return items.remove(0);
    }
    if items.len() > 3 {
        let others = items.len() - 2;
        items.truncate(2);
        items.push(format!("{others} others"));
    }
    let conjunction = if items.len() > 2 { ", and " } else { " and " };
    let last = items.pop().unwrap_or_default();
    format!("{}{conjunction}{last}", items.join(", "))
}

/// Python's `str.capitalize()`: the first character upper case, the rest lower case.
fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests;
