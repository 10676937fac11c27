//! `statscache-ingestor tail`: print what reaches the stream, as `fedmsg-tail` printed the bus.
//!
//! An ordered consumer reads the stream without disturbing the workers' durable consumer; it is
//! ephemeral and disappears when the command ends.

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use futures::StreamExt;
use statscache_shared::config::Config;
use statscache_shared::topic::{pattern_to_subject, subject_to_topic};
use tokio_util::sync::CancellationToken;

use crate::{connect_jetstream, IngestorError};

/// What to tail.
#[derive(Debug, Clone, Default)]
pub struct TailRequest {
    /// A topic pattern (`*` one token, `>` the rest); all topics when `None`.
    pub topic_pattern: Option<String>,
    /// Start this many messages back from the end of the stream (0: only new ones).
    pub last: u64,
}

/// Prints `<stream sequence> <topic> <envelope>` per message until `shutdown`.
pub async fn tail(
    config: Config,
    request: TailRequest,
    shutdown: CancellationToken,
) -> Result<(), IngestorError> {
    let jetstream = connect_jetstream(&config).await?;
    let tail_error = |detail: String| IngestorError::Tail(detail);
    let mut stream = jetstream
        .get_stream(&config.nats.stream)
        .await
        .map_err(|e| tail_error(e.to_string()))?;
    let last_sequence = stream
        .info()
        .await
        .map_err(|e| tail_error(e.to_string()))?
        .state
        .last_sequence;
    let deliver_policy = if request.last == 0 {
        DeliverPolicy::New
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: last_sequence.saturating_sub(request.last - 1).max(1),
        }
    };
    let filter_subject = match &request.topic_pattern {
        Some(pattern) => pattern_to_subject(&config.nats.subject_prefix, pattern),
        None => format!("{}.>", config.nats.subject_prefix),
    };
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject,
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| tail_error(e.to_string()))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| tail_error(e.to_string()))?;
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            next = messages.next() => next,
        };
        let Some(delivery) = next else {
            return Ok(());
        };
        let message = delivery.map_err(|e| tail_error(e.to_string()))?;
        let sequence = message
            .info()
            .map(|info| info.stream_sequence)
            .unwrap_or_default();
        let topic = subject_to_topic(&config.nats.subject_prefix, message.subject.as_str())
            .unwrap_or_else(|_| message.subject.to_string());
        println!(
            "{sequence} {topic} {}",
            String::from_utf8_lossy(&message.payload)
        );
    }
}
