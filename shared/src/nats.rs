//! The JetStream side shared by the ingestor (publisher) and the worker (consumer).
//!
//! Both services declare the streams they rely on with [`ensure_streams`], which creates them or
//! brings their settings in line with the configuration, so either can start first and operators
//! change retention by changing config. Header names live here so that publisher and consumer
//! cannot disagree about them.

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
    #[error("cannot publish dead letter to {subject}: {detail}")]
    DeadLetter { subject: String, detail: String },
}

/// Connects to NATS, retrying in the background if the server is not up yet.
pub async fn connect(
    config: &NatsConfig,
    client_name: &str,
) -> Result<async_nats::Client, NatsError> {
    async_nats::ConnectOptions::new()
        .name(client_name)
        .connection_timeout(config.connect_timeout)
        .retry_on_initial_connect()
        .connect(config.url.as_str())
        .await
        .map_err(|source| NatsError::Connect {
            url: config.url.clone(),
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

/// The dead-letter stream: rejected input of every service, kept for inspection.
pub fn dead_letter_stream_config(config: &NatsConfig) -> stream::Config {
    stream::Config {
        name: config.dead_letter_stream.clone(),
        description: Some("input statscache rejected, with the reason in headers".to_string()),
        subjects: vec![format!("{}.>", config.dead_letter_prefix)],
        retention: stream::RetentionPolicy::Limits,
        storage: storage_type(config.storage),
        max_age: config.max_age,
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

/// Creates the message and dead-letter streams, or updates them to match the configuration.
pub async fn ensure_streams(
    jetstream: &jetstream::Context,
    config: &NatsConfig,
) -> Result<(), NatsError> {
    for stream_config in [
        message_stream_config(config),
        dead_letter_stream_config(config),
    ] {
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
/// A payload that does not fit under the server's limit is cut and the original size recorded,
/// so even a giant payload leaves an inspectable trace.
pub async fn publish_dead_letter(
    jetstream: &jetstream::Context,
    config: &NatsConfig,
    letter: DeadLetter<'_>,
) -> Result<(), NatsError> {
    let subject = format!("{}.{}", config.dead_letter_prefix, letter.service);
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_REASON, letter.reason);
    headers.insert(HEADER_DETAIL, truncate_header(&letter.detail).as_str());
    for (name, value) in &letter.headers {
        headers.insert(*name, value.as_str());
    }
    let max_payload = jetstream.client().server_info().max_payload;
    let room = max_payload.saturating_sub(4096);
    let payload = if letter.payload.len() > room {
        headers.insert(
            HEADER_ORIGINAL_SIZE,
            letter.payload.len().to_string().as_str(),
        );
        Bytes::copy_from_slice(&letter.payload[..room])
    } else {
        Bytes::copy_from_slice(letter.payload)
    };
    let failed = |detail: String| NatsError::DeadLetter {
        subject: subject.clone(),
        detail,
    };
    let ack = jetstream
        .publish_with_headers(subject.clone(), headers, payload)
        .await
        .map_err(|e| failed(e.to_string()))?;
    ack.await.map_err(|e| failed(e.to_string()))?;
    Ok(())
}

/// NATS header values are single lines of bounded length.
fn truncate_header(text: &str) -> String {
    let single_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    single_line.chars().take(1024).collect()
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
    fn header_values_are_single_bounded_lines() {
        let long = "a\nb".repeat(1000);
        let value = truncate_header(&long);
        assert!(!value.contains('\n'));
        assert_eq!(value.chars().count(), 1024);
    }
}
