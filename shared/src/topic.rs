//! fedmsg topics and their NATS subjects.
//!
//! A fedmsg topic is `<prefix...>.<environment>.<category>.<object>[.<sub>].<event>`, usually
//! `org.fedoraproject.prod.buildsys.build.state.change`. NATS subjects are dot-separated tokens
//! too, but a token may not be empty nor contain whitespace, `*` or `>`. [`topic_to_subject`]
//! therefore percent-encodes every byte outside `[A-Za-z0-9_-]` and writes an empty token as a
//! lone `%`; [`subject_to_topic`] reverses it exactly, so operators can filter the stream by topic
//! (`fedmsg.org.fedoraproject.prod.buildsys.>`) and every subject maps back to its topic.

/// Longest topic accepted, in bytes: beyond this something is wrong with the publisher.
pub const MAX_TOPIC_BYTES: usize = 1024;

/// A parsed fedmsg topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic<'a> {
    raw: &'a str,
    tokens: Vec<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic is empty")]
    Empty,
    #[error("topic is {0} bytes long, more than the {MAX_TOPIC_BYTES} allowed")]
    TooLong(usize),
    #[error("topic contains a control character")]
    ControlCharacter,
    #[error("subject {0:?} does not start with the prefix {1:?}")]
    WrongPrefix(String, String),
    #[error("subject token {0:?} is not a valid escape")]
    BadEscape(String),
}

impl<'a> Topic<'a> {
    /// Parses a topic. Odd shapes (fewer tokens, spaces, wildcards) are accepted: they are real
    /// topics that some publisher sent, and the subject mapping escapes them.
    pub fn parse(raw: &'a str) -> Result<Topic<'a>, TopicError> {
        if raw.is_empty() {
            return Err(TopicError::Empty);
        }
        if raw.len() > MAX_TOPIC_BYTES {
            return Err(TopicError::TooLong(raw.len()));
        }
        if raw.chars().any(char::is_control) {
            return Err(TopicError::ControlCharacter);
        }
        Ok(Topic {
            raw,
            tokens: raw.split('.').collect(),
        })
    }

    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// The environment token (`prod`, `stg`, `dev`), the 3rd token.
    pub fn environment(&self) -> &'a str {
        self.tokens.get(2).copied().unwrap_or("")
    }

    /// The category (fedmsg's modname, e.g. `buildsys`), the 4th token, as statscache keyed it.
    pub fn category(&self) -> &'a str {
        self.tokens.get(3).copied().unwrap_or("")
    }
}

/// Maps a topic to the NATS subject `<subject_prefix>.<escaped tokens>`.
///
/// ```
/// use statscache_shared::topic::{subject_to_topic, topic_to_subject};
/// let subject = topic_to_subject("fedmsg", "org.fedoraproject.prod.git.receive.my pkg.*");
/// assert_eq!(subject, "fedmsg.org.fedoraproject.prod.git.receive.my%20pkg.%2A");
/// assert_eq!(subject_to_topic("fedmsg", &subject).unwrap(), "org.fedoraproject.prod.git.receive.my pkg.*");
/// ```
pub fn topic_to_subject(subject_prefix: &str, topic: &str) -> String {
    let mut subject = String::with_capacity(subject_prefix.len() + topic.len() + 8);
    subject.push_str(subject_prefix);
    for token in topic.split('.') {
        subject.push('.');
        if token.is_empty() {
            subject.push('%');
            continue;
        }
        for byte in token.bytes() {
            if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
                subject.push(byte as char);
            } else {
                subject.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    subject
}

/// Maps a topic *pattern* (NATS style: `*` one token, `>` the rest) to a subject filter:
/// wildcard tokens are kept, every other token is escaped as [`topic_to_subject`] does.
///
/// ```
/// use statscache_shared::topic::pattern_to_subject;
/// assert_eq!(pattern_to_subject("fedmsg", "org.fedoraproject.*.buildsys.>"), "fedmsg.org.fedoraproject.*.buildsys.>");
/// ```
pub fn pattern_to_subject(subject_prefix: &str, pattern: &str) -> String {
    let mut subject = String::from(subject_prefix);
    for token in pattern.split('.') {
        if token == "*" || token == ">" {
            subject.push('.');
            subject.push_str(token);
            continue;
        }
        // An escaped single token: the prefix-less mapping of a one-token topic.
        subject.push_str(&topic_to_subject("", token));
    }
    subject
}

/// Reverses [`topic_to_subject`].
pub fn subject_to_topic(subject_prefix: &str, subject: &str) -> Result<String, TopicError> {
    let wrong_prefix = || TopicError::WrongPrefix(subject.to_string(), subject_prefix.to_string());
    let rest = subject
        .strip_prefix(subject_prefix)
        .ok_or_else(wrong_prefix)?;
    let rest = rest.strip_prefix('.').ok_or_else(wrong_prefix)?;
    let mut bytes = Vec::with_capacity(rest.len());
    for (index, token) in rest.split('.').enumerate() {
        if index > 0 {
            bytes.push(b'.');
        }
        if token == "%" {
            continue;
        }
        let mut chars = token.bytes();
        while let Some(byte) = chars.next() {
            if byte != b'%' {
                bytes.push(byte);
                continue;
            }
            let high = chars.next().and_then(hex_value);
            let low = chars.next().and_then(hex_value);
            match (high, low) {
                (Some(high), Some(low)) => bytes.push(high * 16 + low),
                _ => return Err(TopicError::BadEscape(token.to_string())),
            }
        }
    }
    String::from_utf8(bytes).map_err(|_| TopicError::BadEscape(rest.to_string()))
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_shape() {
        let topic = Topic::parse("org.fedoraproject.prod.buildsys.build.state.change").unwrap();
        assert_eq!(topic.environment(), "prod");
        assert_eq!(topic.category(), "buildsys");
    }

    #[test]
    fn odd_topics_are_kept() {
        let topic = Topic::parse("org.centos").unwrap();
        assert_eq!(topic.category(), "");
        assert_eq!(Topic::parse(""), Err(TopicError::Empty));
        assert_eq!(Topic::parse("a\nb"), Err(TopicError::ControlCharacter));
    }

    #[test]
    fn subject_mapping_round_trips_hostile_topics() {
        let topics = [
            "org.fedoraproject.prod.buildsys.build.state.change",
            "io.pagure.prod.pagure.pull-request.comment.added",
            "a..b",
            ".leading",
            "trailing.",
            "with space.and\ttab",
            "wild.*.>",
            "percent.%41",
            "unicode.éß.日本",
            "org.release-monitoring.prod.anitya.project.map.new",
        ];
        for topic in topics {
            let subject = topic_to_subject("fedmsg", topic);
            for token in subject.split('.') {
                assert!(!token.is_empty(), "{subject}");
                assert!(!token.contains(['*', '>', ' ', '\t']), "{subject}");
            }
            assert_eq!(subject_to_topic("fedmsg", &subject).unwrap(), topic);
        }
    }

    #[test]
    fn real_corpus_topics_map_to_readable_subjects() {
        let subject = topic_to_subject(
            "fedmsg",
            "org.fedoraproject.prod.git.receive.valgrind.master",
        );
        assert_eq!(
            subject,
            "fedmsg.org.fedoraproject.prod.git.receive.valgrind.master"
        );
    }

    #[test]
    fn bad_subjects_are_errors() {
        assert!(subject_to_topic("fedmsg", "other.a").is_err());
        assert!(subject_to_topic("fedmsg", "fedmsg.%G1").is_err());
        assert!(subject_to_topic("fedmsg", "fedmsg.%4").is_err());
    }
}
