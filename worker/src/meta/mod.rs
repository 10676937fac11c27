//! PLACEHOLDER until the fedmsg.meta port lands: names no users or packages.
use statscache_shared::message::Envelope;

/// Usernames and packages named by a message, sorted and de-duplicated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub usernames: Vec<String>,
    pub packages: Vec<String>,
}

pub fn extract(_envelope: &Envelope) -> Meta {
    Meta::default()
}
