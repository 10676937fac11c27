//! Pulling one batch from the durable consumer, closed by size, by `batch-timeout` on the
//! worker's own clock, or early once the previous batch is stored (see [`Fetcher::next_batch`]).
//!
//! Why not async-nats' `batch()`: it ends a batch only when the server answers the pull request's
//! expiry (a 408 status), and when that answer does not come it waits 5 s more. nats-server 2.9
//! (Debian's) now and then never sends it for a request that was partly filled while messages
//! kept arriving: the request is over on the server, but the client waited ~6 s, several times a
//! minute at 800 msg/s. Here the batch closes when `batch-timeout` has passed, whatever the
//! server says; the server's own expiry of the request is the same `batch-timeout`, so it stops
//! delivering for that request at about the same moment.
//!
//! One subscription lives as long as the worker. A message the server delivered for a request
//! after its batch closed here (just after the clock, or up to the request's expiry when the
//! batch closed early) is not dropped with a per-fetch subscription (it would wait out
//! `ack-wait` before anyone got it again): it opens the next batch. Each pull request gets its
//! own reply subject under the subscription's wildcard, so a late status of an old request
//! cannot end a newer one.

use std::time::Duration;

use async_nats::jetstream::consumer::pull::{self, BatchConfig};
use async_nats::jetstream::{self, consumer::Consumer};
use async_nats::StatusCode;
use futures::{FutureExt, StreamExt};

use crate::WorkerError;

/// The consumer, and the subscription receiving what its pull requests deliver.
pub struct Fetcher {
    consumer: Consumer<pull::Config>,
    context: jetstream::Context,
    subscription: async_nats::Subscriber,
    inbox: String,
    requests_sent: u64,
}

/// What one message on the subscription means for the batch being collected.
enum Delivery {
    Message(Box<jetstream::Message>),
    /// The current request is over (expired, or nothing to deliver): the batch is complete.
    RequestDone,
    /// A heartbeat, or a status of an earlier request, or a refusal worth waiting out (such as
    /// `409 Exceeded MaxAckPending`): the batch goes on until its deadline.
    Ignored,
}

impl Fetcher {
    pub async fn new(
        consumer: Consumer<pull::Config>,
        context: jetstream::Context,
    ) -> Result<Fetcher, WorkerError> {
        let client = context.client();
        let inbox = client.new_inbox();
        let subscription = client
            .subscribe(format!("{inbox}.*"))
            .await
            .map_err(|error| WorkerError::Fetch(format!("cannot subscribe: {error}")))?;
        Ok(Fetcher {
            consumer,
            context,
            subscription,
            inbox,
            requests_sent: 0,
        })
    }

    /// Up to `max_messages`, collected for at most `timeout`; possibly none.
    ///
    /// The batch also closes as soon as it holds messages, has been open `linger` and
    /// `previous_stored` has resolved. Why: only one batch is stored at a time, so holding a
    /// batch open after the previous one is stored only adds delay; and because ClickHouse's
    /// cost is mostly per query, a slow store makes the next batch bigger rather than making
    /// batches pile up. `linger` bounds how many batches a trickle of messages makes.
    pub async fn next_batch(
        &mut self,
        max_messages: usize,
        timeout: Duration,
        linger: Duration,
        previous_stored: impl std::future::Future<Output = ()>,
    ) -> Result<Vec<jetstream::Message>, WorkerError> {
        let mut messages = self.already_delivered(max_messages)?;
        if messages.len() >= max_messages {
            return Ok(messages);
        }
        self.requests_sent += 1;
        let reply = format!("{}.{}", self.inbox, self.requests_sent);
        let request = BatchConfig {
            batch: max_messages - messages.len(),
            expires: Some(timeout),
            ..Default::default()
        };
        self.consumer
            .request_batch(request, reply.clone().into())
            .await
            .map_err(|error| WorkerError::Fetch(format!("cannot send a pull request: {error}")))?;

        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let may_close = futures::future::join(tokio::time::sleep(linger), previous_stored);
        tokio::pin!(may_close);
        let mut may_close_early = false;
        while messages.len() < max_messages {
            if may_close_early && !messages.is_empty() {
                break;
            }
            let next = tokio::select! {
                _ = &mut deadline => break,
                _ = &mut may_close, if !may_close_early => {
                    may_close_early = true;
                    continue;
                }
                next = self.subscription.next() => next,
            };
            let Some(message) = next else {
                return Err(WorkerError::Fetch("the NATS connection is closed".into()));
            };
            match self.classify(message, Some(&reply))? {
                Delivery::Message(message) => messages.push(*message),
                Delivery::RequestDone => break,
                Delivery::Ignored => {}
            }
        }
        Ok(messages)
    }

    /// What arrived for earlier requests after their batch closed, without waiting.
    fn already_delivered(
        &mut self,
        max_messages: usize,
    ) -> Result<Vec<jetstream::Message>, WorkerError> {
        let mut messages = Vec::new();
        while messages.len() < max_messages {
            let Some(Some(message)) = self.subscription.next().now_or_never() else {
                break;
            };
            if let Delivery::Message(message) = self.classify(message, None)? {
                messages.push(*message);
            }
        }
        Ok(messages)
    }

    /// Gives back (nak) what was delivered but not taken, so that another replica gets it at
    /// once instead of after `ack-wait`. Called once, at shutdown.
    pub async fn give_back_undelivered(&mut self) {
        let leftovers = match self.already_delivered(usize::MAX) {
            Ok(leftovers) => leftovers,
            Err(error) => {
                tracing::debug!(%error, "nothing to give back");
                return;
            }
        };
        for message in leftovers {
            if let Err(error) = message.ack_with(jetstream::AckKind::Nak(None)).await {
                tracing::debug!(%error, "cannot give a message back; it comes back after ack-wait");
            }
        }
    }

    /// `current_reply` is the reply subject of the request being collected, if any.
    fn classify(
        &self,
        message: async_nats::Message,
        current_reply: Option<&str>,
    ) -> Result<Delivery, WorkerError> {
        let status = message.status.unwrap_or(StatusCode::OK);
        if status == StatusCode::OK {
            return Ok(Delivery::Message(Box::new(jetstream::Message {
                message,
                context: self.context.clone(),
            })));
        }
        let is_current = current_reply == Some(message.subject.as_str());
        let description = message.description.unwrap_or_default();
        if status == StatusCode::NO_RESPONDERS {
            return Err(WorkerError::Fetch("JetStream is not answering".into()));
        }
        if status == StatusCode::REQUEST_TERMINATED && description.contains("Consumer Deleted") {
            return Err(WorkerError::Fetch(format!(
                "the consumer was deleted: {description}"
            )));
        }
        if !is_current || status == StatusCode::IDLE_HEARTBEAT {
            return Ok(Delivery::Ignored);
        }
        if status == StatusCode::TIMEOUT || status == StatusCode::NOT_FOUND {
            return Ok(Delivery::RequestDone);
        }
        tracing::debug!(%status, %description, "pull request refused; waiting out the batch");
        Ok(Delivery::Ignored)
    }
}
