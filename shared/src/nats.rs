//! The JetStream side shared by the ingestor (publisher) and the worker (consumer).
//!
//! Both services declare the streams they rely on with [`ensure_streams`], which creates them or
//! brings their settings in line with the configuration, so either can start first and operators
//! change retention by changing config. Header names live here so that publisher and consumer
//! cannot disagree about them.
//!
//! Dead letters must never fail nor block on what they carry: every header value written from
//! input is made a safe single line ([`header_value`]) and the payload is cut so that payload and
//! headers fit the server's `max_payload` ([`publish_dead_letter`]). [`is_permanent`] tells a
//! publish that can never be stored from one worth sending again.

use std::error::Error as _;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use bytes::Bytes;

use crate::config::{NatsConfig, StorageKind};

/// JetStream's de-duplication header: the message identity.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
/// Where the ingestor got the message: `zeromq`, `datagrepper`, `publish` (operator tool).
pub const HEADER_SOURCE: &str = "Statscache-Source";
/// The fedmsg event time, epoch seconds, as sent.
pub const HEADER_EVENT_TIME: &str = "Statscache-Event-Time";
/// Why a dead letter was rejected (a stable reason code) and the human-readable detail.
pub const HEADER_REASON: &str = "Statscache-Reason";
pub const HEADER_DETAIL: &str = "Statscache-Detail";
/// On a dead letter whose payload had to be cut to fit NATS: the original size in bytes.
pub const HEADER_ORIGINAL_SIZE: &str = "Statscache-Original-Size";
/// On a dead letter from the worker: the stream sequence of the rejected message.
pub const HEADER_STREAM_SEQUENCE: &str = "Statscache-Stream-Sequence";
/// On a message from a fedmsg endpoint: `<publisher key> <i> <endpoint>`, fedmsg's counter of
/// the process that sent it, read back at the ingestor's start-up to count what it missed.
pub const HEADER_PUBLISHER: &str = "Statscache-Publisher";

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("cannot create or update stream {stream}: {source}")]
    Stream {
        stream: String,
        source: async_nats::jetstream::context::CreateStreamError,
    },
    #[error("cannot publish dead letter to {subject}: {source}")]
    DeadLetter {
        subject: String,
        source: PublishError,
    },
    #[error("cannot open the key-value bucket {bucket}: {detail}")]
    Bucket { bucket: String, detail: String },
}

impl NatsError {
    /// Whether trying again cannot help (see [`is_permanent`]).
    pub fn is_permanent(&self) -> bool {
        match self {
            NatsError::DeadLetter { source, .. } => is_permanent(source),
            NatsError::Connect { .. } | NatsError::Stream { .. } | NatsError::Bucket { .. } => {
                false
            }
        }
    }

    /// What JetStream said, if it refused to store a dead letter (see [`store_refusal`]).
    pub fn store_refusal(&self) -> Option<String> {
        match self {
            NatsError::DeadLetter { source, .. } => store_refusal(source),
            NatsError::Connect { .. } | NatsError::Stream { .. } | NatsError::Bucket { .. } => None,
        }
    }
}

/// A JetStream key-value bucket as statscache keeps them: one value per key, on the streams'
/// storage and replicas, entries kept `max_age`.
#[derive(Debug, Clone)]
pub struct Bucket<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub max_age: std::time::Duration,
}

/// Opens `bucket`, creating it on first use and bringing its settings in line.
///
/// The bucket's stream is declared here with the settings async-nats gives key-value buckets,
/// rather than with `create_key_value`: that one first reads the account information, which
/// async-nats 0.51 cannot parse from nats-server 2.9 (Debian's).
pub async fn open_bucket(
    jetstream: &jetstream::Context,
    config: &NatsConfig,
    bucket: Bucket<'_>,
) -> Result<jetstream::kv::Store, NatsError> {
    let failed = |detail: String| NatsError::Bucket {
        bucket: bucket.name.to_string(),
        detail,
    };
    let stream_config = stream::Config {
        name: format!("KV_{}", bucket.name),
        description: Some(bucket.description.to_string()),
        subjects: vec![format!("$KV.{}.>", bucket.name)],
        max_messages_per_subject: 1,
        max_age: bucket.max_age,
        storage: storage_type(config.storage),
        num_replicas: config.replicas,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        ..Default::default()
    };
    jetstream
        .create_or_update_stream(stream_config)
        .await
        .map_err(|error| failed(error.to_string()))?;
    jetstream
        .get_key_value(bucket.name)
        .await
        .map_err(|error| failed(error.to_string()))
}

/// Longest header value written from input, in bytes: headers count against `max_payload`.
pub const MAX_HEADER_VALUE_BYTES: usize = 1024;

/// Room kept for the `Statscache-Original-Size` header a cut dead letter gains.
const ORIGINAL_SIZE_ROOM: usize = HEADER_ORIGINAL_SIZE.len() + 4 + 20;

/// Connects to NATS, retrying in the background if the server is not up yet. With several seed
/// URLs (a cluster) the client picks one and moves to another when its server goes away.
pub async fn connect(
    config: &NatsConfig,
    client_name: &str,
) -> Result<async_nats::Client, NatsError> {
    async_nats::ConnectOptions::new()
        .name(client_name)
        .connection_timeout(config.connect_timeout)
        .retry_on_initial_connect()
        .connect(config.url.as_slice())
        .await
        .map_err(|source| NatsError::Connect {
            url: config.url.to_string(),
            source,
        })
}

/// The message stream's configuration as derived from `config`.
pub fn message_stream_config(config: &NatsConfig) -> stream::Config {
    stream::Config {
        name: config.stream.clone(),
        description: Some("fedmsg messages relayed by statscache-ingestor".to_string()),
        subjects: vec![format!("{}.>", config.subject_prefix)],
        retention: stream::RetentionPolicy::Limits,
        storage: storage_type(config.storage),
        max_age: config.max_age,
        max_bytes: config.max_bytes,
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        ..Default::default()
    }
}

/// The dead-letter stream: rejected input of every service, kept for inspection, bounded in
/// messages, bytes and age; past a bound the oldest letters go, so storing a new one never
/// fails for lack of room in the stream.
pub fn dead_letter_stream_config(config: &NatsConfig) -> stream::Config {
    stream::Config {
        name: config.dead_letter_stream.clone(),
        description: Some("input statscache rejected, with the reason in headers".to_string()),
        subjects: vec![format!("{}.>", config.dead_letter_prefix)],
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        storage: storage_type(config.storage),
        max_messages: config.dead_letter_max_messages,
        max_bytes: config.dead_letter_max_bytes,
        max_age: config.dead_letter_max_age,
        num_replicas: config.replicas,
        ..Default::default()
    }
}

fn storage_type(kind: StorageKind) -> stream::StorageType {
    match kind {
        StorageKind::File => stream::StorageType::File,
        StorageKind::Memory => stream::StorageType::Memory,
    }
}

/// Creates the message and dead-letter streams, or updates them to match the configuration —
/// except that an existing message stream's duplicate window is never raised, only lowered.
///
/// Why: the worker stores the first copy of each identity by relying on copies in the stream
/// being at least the window apart (`worker/src/identity`), and copies stored under a shorter
/// window, not yet stored by the workers, could be closer than a raised one. To raise it, stop
/// the ingestors, let the workers drain the stream, then edit the stream (README, operations).
pub async fn ensure_streams(
    jetstream: &jetstream::Context,
    config: &NatsConfig,
) -> Result<(), NatsError> {
    let mut message_stream = message_stream_config(config);
    if let Ok(mut existing) = jetstream.get_stream(&config.stream).await {
        if let Ok(info) = existing.info().await {
            let in_force = info.config.duplicate_window;
            if in_force < message_stream.duplicate_window {
                tracing::warn!(
                    stream = %config.stream,
                    ?in_force,
                    configured = ?message_stream.duplicate_window,
                    "nats.duplicate-window is longer than the stream's; the stream keeps its \
                     own (raising it safely: see the README's operations)"
                );
                message_stream.duplicate_window = in_force;
            }
        }
    }
    for stream_config in [message_stream, dead_letter_stream_config(config)] {
        let name = stream_config.name.clone();
        jetstream
            .create_or_update_stream(stream_config)
            .await
            .map_err(|source| NatsError::Stream {
                stream: name,
                source,
            })?;
    }
    Ok(())
}

/// A message that a service rejected: what it was and why.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// `ingestor` or `worker`: the last subject token.
    pub service: &'a str,
    pub reason: &'a str,
    pub detail: String,
    pub payload: &'a [u8],
    /// Extra headers (source, stream sequence...).
    pub headers: Vec<(&'static str, String)>,
}

/// Publishes `letter` on the dead-letter stream and waits for its ack.
///
/// Every header value is passed through [`header_value`], and a payload longer than
/// `dead-letter-max-body`, or that does not fit beside the headers under the server's
/// `max_payload`, is cut, its original size recorded: a dead letter cannot be refused for what it
/// carries, even a giant payload leaves a trace, and a flood of them is bounded by the stream's
/// limits, not by what each carries.
pub async fn publish_dead_letter(
    jetstream: &jetstream::Context,
    config: &NatsConfig,
    letter: DeadLetter<'_>,
) -> Result<(), NatsError> {
    let subject = format!("{}.{}", config.dead_letter_prefix, letter.service);
    let mut values = vec![
        (HEADER_REASON, header_value(letter.reason)),
        (HEADER_DETAIL, header_value(&letter.detail)),
    ];
    for (name, value) in &letter.headers {
        values.push((*name, header_value(value)));
    }
    let max_payload = jetstream.client().max_payload();
    let room = max_payload
        .saturating_sub(header_block_len(&values) + ORIGINAL_SIZE_ROOM)
        .min(config.dead_letter_max_body);
    let payload = if letter.payload.len() > room {
        values.push((HEADER_ORIGINAL_SIZE, letter.payload.len().to_string()));
        Bytes::copy_from_slice(&letter.payload[..room])
    } else {
        Bytes::copy_from_slice(letter.payload)
    };
    let failed = |source: PublishError| NatsError::DeadLetter {
        subject: subject.clone(),
        source,
    };
    let ack = jetstream
        .publish_with_headers(subject.clone(), header_map(&values), payload)
        .await
        .map_err(failed)?;
    ack.await.map_err(failed)?;
    Ok(())
}

/// `text` as a NATS header value: one line of at most [`MAX_HEADER_VALUE_BYTES`] bytes.
///
/// Control characters and `%` are percent-encoded, so the value says exactly what was received
/// (a topic frame with `\r\n` reads `...%0D%0AX-Injected: 1`); a longer value is cut, ending
/// with how long it was.
pub fn header_value(text: &str) -> String {
    let cut_note = format!("... ({} bytes)", text.len());
    let room = MAX_HEADER_VALUE_BYTES - cut_note.len();
    let mut value = String::new();
    let mut piece = String::new();
    for character in text.chars() {
        piece.clear();
        if character.is_control() || character == '%' {
            let mut utf8 = [0; 4];
            for byte in character.encode_utf8(&mut utf8).bytes() {
                piece.push_str(&format!("%{byte:02X}"));
            }
        } else {
            piece.push(character);
        }
        if value.len() + piece.len() > room {
            value.push_str(&cut_note);
            return value;
        }
        value.push_str(&piece);
    }
    value
}

/// The bytes a header block takes on the wire (`NATS/1.0\r\n`, `name: value\r\n` each, `\r\n`),
/// which count against `max_payload` with the payload.
pub fn header_block_len(values: &[(&str, String)]) -> usize {
    let mut length = "NATS/1.0\r\n".len() + "\r\n".len();
    for (name, value) in values {
        length += name.len() + ": ".len() + value.len() + "\r\n".len();
    }
    length
}

/// The header map of `values`, which must be single lines ([`header_value`] or validated).
pub fn header_map(values: &[(&str, String)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in values {
        headers.insert(*name, value.as_str());
    }
    headers
}

/// JetStream's errors saying it refused to store a message: its store is full (10023
/// "insufficient resources", 10047 "insufficient storage resources available"), or storing
/// failed, e.g. at a stream limit that discards new messages (10077).
const STORE_REFUSALS: [u64; 3] = [10023, 10047, 10077];

/// What JetStream said if it refused to store a publish for lack of room (see
/// [`STORE_REFUSALS`]); such a refusal may pass once room is made, so it is not permanent.
pub fn store_refusal(error: &PublishError) -> Option<String> {
    let refusal = error
        .source()
        .and_then(|source| source.downcast_ref::<jetstream::Error>())?;
    let code = refusal.error_code().0;
    STORE_REFUSALS.contains(&code).then(|| refusal.to_string())
}

/// Whether a publish was refused for good, so sending it again cannot succeed: too large for the
/// server, or refused by JetStream with a 4xx error. Timeouts, a broken connection and server
/// errors (5xx) may pass.
pub fn is_permanent(error: &PublishError) -> bool {
    match error.kind() {
        PublishErrorKind::MaxPayloadExceeded
        | PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence => true,
        PublishErrorKind::Other => {
            let jetstream_error = error
                .source()
                .and_then(|source| source.downcast_ref::<jetstream::Error>());
            match jetstream_error {
                Some(refusal) => (400..500).contains(&refusal.code()),
                None => false,
            }
        }
        PublishErrorKind::StreamNotFound
        | PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_subjects_follow_the_prefixes() {
        let config = crate::config::Config::defaults().nats;
        assert_eq!(message_stream_config(&config).subjects, vec!["fedmsg.>"]);
        assert_eq!(
            dead_letter_stream_config(&config).subjects,
            vec!["statscache.dead-letter.>"]
        );
    }

    #[test]
    fn dead_letters_are_bounded_and_drop_the_oldest() {
        let config = crate::config::Config::defaults().nats;
        let dead_letters = dead_letter_stream_config(&config);
        assert_eq!(dead_letters.discard, stream::DiscardPolicy::Old);
        assert!(dead_letters.max_messages > 0);
        assert!(dead_letters.max_bytes > 0);
        assert!(dead_letters.max_age < config.max_age);
    }

    #[test]
    fn header_values_are_single_bounded_lines() {
        let long = "a\nb".repeat(1000);
        let value = header_value(&long);
        assert!(!value.contains('\n'));
        assert!(value.len() <= MAX_HEADER_VALUE_BYTES, "{value}");
        assert!(value.ends_with("... (3000 bytes)"), "{value}");
        let huge = "x".repeat(2 * 1024 * 1024);
        assert!(header_value(&huge).len() <= MAX_HEADER_VALUE_BYTES);
    }

    #[test]
    fn header_values_keep_what_they_encode() {
        let frame = "org.fedoraproject.prod.a.b\r\nX-Injected: 1 100% \u{0} \u{e9}";
        assert_eq!(
            header_value(frame),
            "org.fedoraproject.prod.a.b%0D%0AX-Injected: 1 100%25 %00 \u{e9}"
        );
        assert_eq!(header_value("plain"), "plain");
    }

    #[test]
    fn refusals_are_permanent_and_outages_are_not() {
        let refusal = |json: &str| {
            let error: jetstream::Error = serde_json::from_str(json).expect("a JetStream error");
            PublishError::with_source(PublishErrorKind::Other, error)
        };
        let too_big = r#"{"code": 400, "err_code": 10054, "description": "message size exceeds maximum allowed"}"#;
        assert!(is_permanent(&refusal(too_big)));
        let unavailable = r#"{"code": 503, "err_code": 10008, "description": "JetStream system temporarily unavailable"}"#;
        assert!(!is_permanent(&refusal(unavailable)));
        assert!(is_permanent(&PublishError::new(
            PublishErrorKind::MaxPayloadExceeded
        )));
        let full = r#"{"code": 503, "err_code": 10023, "description": "insufficient resources"}"#;
        assert!(!is_permanent(&refusal(full)));
        assert_eq!(
            store_refusal(&refusal(full)).as_deref(),
            Some("insufficient resources (code 503, error code 10023)")
        );
        assert_eq!(store_refusal(&refusal(unavailable)), None);
        for passing in [PublishErrorKind::TimedOut, PublishErrorKind::StreamNotFound] {
            assert!(!is_permanent(&PublishError::new(passing)));
        }
    }

    #[test]
    fn header_block_length_is_the_wire_length() {
        let values = vec![
            (HEADER_MSG_ID, "2026-x".to_string()),
            (HEADER_SOURCE, "zeromq".to_string()),
        ];
        let wire = "NATS/1.0\r\nNats-Msg-Id: 2026-x\r\nStatscache-Source: zeromq\r\n\r\n";
        assert_eq!(header_block_len(&values), wire.len());
        assert_eq!(header_map(&values).len(), 2);
    }
}
