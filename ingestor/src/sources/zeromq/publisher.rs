//! Who published a message, as far as a fedmsg envelope says, and its `i` kept in the stream.
//!
//! What an envelope carries about its sender (`fedmsg/core.py`, `FedMsgContext.publish`):
//! `i` (the process's counter), `username` (`getpass.getuser()`: the Unix account, e.g.
//! `apache`), the topic (`<topic_prefix>.<environment>.<modname>.<topic>`), and when signed
//! (`fedmsg/crypto/x509.py`) `certificate`, whose subject names the service and host
//! (`CN = koji-koji01.phx2.fedoraproject.org` in the corpus). The identity key is the
//! endpoint, the certificate, the user, and the topic's prefix and environment. It does not
//! single out a process — a service's worker processes on one host share all of it (the
//! corpus's koji messages have `i` = 1 to 4 from several processes under one certificate) —
//! which [`super::sequence`] handles with chains. It leaves out the modname: one process may
//! publish under several (fedmsg guesses it from the calling module, and a hub runs many
//! consumers), and splitting one counter over two identities would read as jumps in both. The
//! `msg_id` (`<year>-<uuid4>`) carries no host.
//!
//! Every message the ZeroMQ source relays carries `Statscache-Publisher: <key> <i> <endpoint>`,
//! so that at start-up [`restore`] reads the stream's tail back (headers only) and a restarted
//! ingestor knows each process's last number: what it missed while down is counted from the
//! first message each process sends afterwards. Hashes are FNV-1a, stable across releases, as
//! the keys outlive the process.

use std::borrow::Cow;
use std::collections::HashMap;

use async_nats::jetstream::{self, consumer::pull, consumer::DeliverPolicy};
use futures::StreamExt;
use serde::Deserialize;
use statscache_shared::config::NatsConfig;
use statscache_shared::nats::{header_value, HEADER_EVENT_TIME, HEADER_MSG_ID, HEADER_PUBLISHER};

use super::sequence::Observation;

/// Messages read back from the end of the stream at start-up (about a day and a half of
/// Fedora's bus; a few seconds to read).
pub const RESTORED_MESSAGES: u64 = 100_000;

/// How long the read-back may take before the ingestor starts without it.
const RESTORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The envelope fields that say who sent it; serde skips the rest without keeping it.
#[derive(Deserialize)]
struct Sender<'a> {
    i: Option<u64>,
    timestamp: Option<f64>,
    #[serde(borrow)]
    msg_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    topic: Option<Cow<'a, str>>,
    #[serde(borrow)]
    username: Option<Cow<'a, str>>,
    #[serde(borrow)]
    certificate: Option<Cow<'a, str>>,
}

/// A message's place in its publisher's sequence: what the tracker takes, and the header that
/// keeps it in the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequenced {
    pub observation: Observation,
    pub header: String,
}

/// Reads the sequences of the messages received on one endpoint.
#[derive(Debug, Clone)]
pub struct Sequencer {
    endpoint: String,
    /// The endpoint as the header writes it, made once.
    written_endpoint: String,
}

impl Sequencer {
    pub fn new(endpoint: &str) -> Sequencer {
        Sequencer {
            endpoint: endpoint.to_string(),
            written_endpoint: header_value(endpoint),
        }
    }

    /// The sequence of a message, if the envelope has a counter, an event time and a topic
    /// equal to the transport's (anything else is not tracked: it is rejected by the relay, or
    /// is no fedmsg publisher's).
    pub fn sequenced(&self, transport_topic: &[u8], body: &[u8]) -> Option<Sequenced> {
        let sender: Sender = serde_json::from_slice(body).ok()?;
        let i = sender.i?;
        let event_time = sender.timestamp.filter(|time| time.is_finite())?;
        let topic = sender.topic?;
        if topic.as_bytes() != transport_topic {
            return None;
        }
        let key = publisher_key(
            &self.endpoint,
            sender.certificate.as_deref().unwrap_or_default(),
            sender.username.as_deref().unwrap_or_default(),
            &topic,
        );
        // The message identity when it has a `msg_id` (as `Nats-Msg-Id` holds it); otherwise
        // what makes a copy the same message to the tracker.
        let id = match sender.msg_id.as_deref().map(str::trim) {
            Some(msg_id) if !msg_id.is_empty() => fnv1a(&[msg_id.as_bytes()]),
            _ => fnv1a(&[
                &key.to_be_bytes(),
                &i.to_be_bytes(),
                &event_time.to_bits().to_be_bytes(),
            ]),
        };
        let observation = Observation {
            key,
            i,
            event_time,
            id,
        };
        Some(Sequenced {
            observation,
            header: format!("{key:016x} {i} {}", self.written_endpoint),
        })
    }
}

/// The identity key: endpoint, signer certificate, user, topic prefix and environment.
pub fn publisher_key(endpoint: &str, certificate: &str, username: &str, topic: &str) -> u64 {
    let mut root_end = topic.len();
    let mut dots = 0;
    for (index, character) in topic.char_indices() {
        if character == '.' {
            dots += 1;
            if dots == 3 {
                root_end = index;
                break;
            }
        }
    }
    let root = &topic[..root_end];
    fnv1a(&[
        endpoint.as_bytes(),
        certificate.as_bytes(),
        username.as_bytes(),
        root.as_bytes(),
    ])
}

/// Parses a `Statscache-Publisher` value: key, `i`, endpoint (as written).
fn parse_header(value: &str) -> Option<(u64, u64, &str)> {
    let mut parts = value.splitn(3, ' ');
    let key = u64::from_str_radix(parts.next()?, 16).ok()?;
    let i = parts.next()?.parse().ok()?;
    Some((key, i, parts.next()?))
}

/// FNV-1a (64 bits) of the pieces, each followed by a 0 byte so that pieces cannot run into
/// each other.
fn fnv1a(pieces: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for piece in pieces {
        for &byte in piece.iter().chain(std::iter::once(&0)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    hash
}

/// Why the stream's tail could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("cannot read stream {stream}: {detail}")]
    Stream { stream: String, detail: String },
    #[error("reading back stream {stream} took over {RESTORE_TIMEOUT:?}")]
    TimedOut { stream: String },
}

/// What the stream's tail says each endpoint carried: its messages' sequences, in stream order,
/// by endpoint (as the header writes it).
#[derive(Debug, Default)]
pub struct Restored {
    by_endpoint: HashMap<String, Vec<Observation>>,
}

impl Restored {
    /// The observations of `endpoint`, oldest first.
    pub fn take(&mut self, endpoint: &str) -> Vec<Observation> {
        self.by_endpoint
            .remove(&header_value(endpoint))
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.by_endpoint.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads the headers of the last [`RESTORED_MESSAGES`] messages of the stream.
pub async fn restore(
    jetstream: &jetstream::Context,
    config: &NatsConfig,
) -> Result<Restored, RestoreError> {
    tokio::time::timeout(RESTORE_TIMEOUT, read_tail(jetstream, config))
        .await
        .map_err(|_elapsed| RestoreError::TimedOut {
            stream: config.stream.clone(),
        })?
}

async fn read_tail(
    jetstream: &jetstream::Context,
    config: &NatsConfig,
) -> Result<Restored, RestoreError> {
    let failed = |detail: String| RestoreError::Stream {
        stream: config.stream.clone(),
        detail,
    };
    let mut stream = jetstream
        .get_stream(&config.stream)
        .await
        .map_err(|error| failed(error.to_string()))?;
    let state = stream
        .info()
        .await
        .map_err(|error| failed(error.to_string()))?
        .state
        .clone();
    let mut restored = Restored::default();
    if state.messages == 0 {
        return Ok(restored);
    }
    let last = state.last_sequence;
    let start = state
        .first_sequence
        .max(last.saturating_sub(RESTORED_MESSAGES - 1));
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            headers_only: true,
            ..Default::default()
        })
        .await
        .map_err(|error| failed(error.to_string()))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|error| failed(error.to_string()))?;
    while let Some(delivery) = messages.next().await {
        let message = delivery.map_err(|error| failed(error.to_string()))?;
        let sequence = message
            .info()
            .map(|info| info.stream_sequence)
            .unwrap_or(last);
        if let Some(headers) = &message.headers {
            let publisher = headers.get(HEADER_PUBLISHER).map(|value| value.as_str());
            let event_time = headers
                .get(HEADER_EVENT_TIME)
                .and_then(|value| value.as_str().parse::<f64>().ok());
            let msg_id = headers.get(HEADER_MSG_ID).map(|value| value.as_str());
            if let (Some(publisher), Some(event_time), Some(msg_id)) =
                (publisher, event_time, msg_id)
            {
                if let Some((key, i, endpoint)) = parse_header(publisher) {
                    let observation = Observation {
                        key,
                        i,
                        event_time,
                        id: fnv1a(&[msg_id.as_bytes()]),
                    };
                    restored
                        .by_endpoint
                        .entry(endpoint.to_string())
                        .or_default()
                        .push(observation);
                }
            }
        }
        if sequence >= last {
            break;
        }
    }
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: &str = "org.fedoraproject.prod.buildsys.build.state.change";

    #[test]
    fn the_identity_leaves_out_the_module_name_and_keeps_the_signer() {
        let bodhi = publisher_key("e", "", "apache", "org.fedoraproject.prod.bodhi.update");
        let logger = publisher_key("e", "", "apache", "org.fedoraproject.prod.logger.log");
        assert_eq!(bodhi, logger);
        assert_ne!(
            bodhi,
            publisher_key("e", "", "apache", "org.fedoraproject.stg.bodhi.update")
        );
        assert_ne!(
            bodhi,
            publisher_key("e", "", "fedmsg", "org.fedoraproject.prod.bodhi.update")
        );
        assert_ne!(
            bodhi,
            publisher_key("e", "cert", "apache", "org.fedoraproject.prod.bodhi.update")
        );
        assert_ne!(
            bodhi,
            publisher_key("f", "", "apache", "org.fedoraproject.prod.bodhi.update")
        );
    }

    #[test]
    fn a_sequence_is_read_from_envelopes_that_have_one_and_kept_in_a_header() {
        let body = format!(
            r#"{{"i": 7, "timestamp": 1600000000, "topic": "{TOPIC}", "msg_id": " 2026-x ", "msg": {{"i": "x"}}}}"#
        );
        let sequencer = Sequencer::new("tcp://h:1");
        let tracked = sequencer
            .sequenced(TOPIC.as_bytes(), body.as_bytes())
            .expect("tracked");
        assert_eq!(tracked.observation.i, 7);
        assert_eq!(tracked.observation.event_time, 1600000000.0);
        assert_eq!(tracked.observation.id, fnv1a(&[b"2026-x"]));
        let (key, i, endpoint) = parse_header(&tracked.header).expect("parsed back");
        assert_eq!(
            (key, i, endpoint),
            (tracked.observation.key, 7, "tcp://h:1")
        );

        // A topic frame that is not the envelope's, no counter, no time, not JSON: untracked.
        assert_eq!(sequencer.sequenced(b"other", body.as_bytes()), None);
        let untracked = [
            format!(r#"{{"timestamp": 1, "topic": "{TOPIC}"}}"#),
            format!(r#"{{"i": -1, "timestamp": 1, "topic": "{TOPIC}"}}"#),
            format!(r#"{{"i": 2, "topic": "{TOPIC}"}}"#),
            "not json".to_string(),
        ];
        for body in untracked {
            assert_eq!(
                sequencer.sequenced(TOPIC.as_bytes(), body.as_bytes()),
                None,
                "{body}"
            );
        }
    }
}
