//! fedora-messaging over AMQP 0-9-1: a durable RabbitMQ queue bound to `amq.topic`.
//!
//! Unlike ZeroMQ, the broker keeps what was not acknowledged, so this source loses nothing when
//! the ingestor crashes: a delivery is acked only once the relay reports it stored in JetStream
//! (or dead-lettered), through the [`Handoff`] it travels in. Until then it counts against the
//! channel's prefetch, which is the relay's in-flight limit, so the broker never hands over more
//! than the relay can hold. What a crash or a lost connection leaves unacked is delivered again
//! and de-duplicated by its identity (`Nats-Msg-Id`, then the worker's storage).
//!
//! - [`message`]: a delivery as an envelope (topic, identity, time, headers).
//! - [`config`]: TLS files and client certificate.
//! - A connection that fails, or a broker that goes away, is retried with backoff; the queue,
//!   its bindings and the consumer are declared again on every connection.

mod config;
mod error;
mod message;

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::FieldTable;
use lapin::{Acker, Channel, Connection, ConnectionProperties};
use statscache_shared::admin::Health;
use statscache_shared::config::AmqpConfig;
use statscache_shared::retry::backoff;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use error::AmqpError;

use crate::metrics::Metrics;
use crate::source::{Handoff, Incoming, Outcome};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One delivery on its way through the relay, with what settles it on the broker.
pub struct AmqpDelivery {
    incoming: Incoming,
    acker: Acker,
}

#[async_trait]
impl Handoff for AmqpDelivery {
    fn incoming(&self) -> &Incoming {
        &self.incoming
    }

    /// Stored and dead-lettered deliveries are acked (a poison message must not come back
    /// forever); one the relay gave up on is given back to the queue.
    async fn settle(self, outcome: Outcome) {
        let settled = match outcome {
            Outcome::Stored | Outcome::Duplicate | Outcome::DeadLettered => {
                self.acker.ack(BasicAckOptions::default()).await
            }
            Outcome::GivenUp => {
                let requeue = BasicNackOptions {
                    multiple: false,
                    requeue: true,
                };
                self.acker.nack(requeue).await
            }
        };
        if let Err(error) = settled {
            // Its channel is gone: the broker delivers it again, and the copy is de-duplicated.
            tracing::debug!(%error, ?outcome, "cannot settle an AMQP delivery");
        }
    }
}

/// The readiness condition this source sets while it is not consuming.
const CONDITION: &str = "amqp";

pub struct AmqpSource {
    config: AmqpConfig,
    tls: OwnedTLSConfig,
    prefetch: u16,
    metrics: Arc<Metrics>,
    /// Not ready while the broker is not consuming-to: messages wait in its queue meanwhile,
    /// so nothing is lost, but an operator must see the outage in the probe.
    health: Health,
}

impl AmqpSource {
    /// Reads the TLS files now, so a wrong path stops the start-up. `max_in_flight` (the relay's
    /// limit) bounds the unacked deliveries.
    pub fn new(
        config: AmqpConfig,
        max_in_flight: usize,
        metrics: Arc<Metrics>,
        health: Health,
    ) -> Result<AmqpSource, AmqpError> {
        let tls = config::tls_config(&config)?;
        let prefetch = u16::try_from(max_in_flight.max(1)).unwrap_or(u16::MAX);
        health.set_condition(CONDITION, Some("connecting".to_string()));
        Ok(AmqpSource {
            config,
            tls,
            prefetch,
            metrics,
            health,
        })
    }

    pub fn name(&self) -> &'static str {
        message::SOURCE
    }

    /// Consumes until `shutdown`, reconnecting with backoff. Deliveries go to `relay`, which
    /// settles each one when its outcome is known.
    pub async fn run(self, relay: mpsc::Sender<AmqpDelivery>, shutdown: CancellationToken) {
        let mut attempt = 0;
        while !shutdown.is_cancelled() {
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = self.consume(&relay, &mut attempt) => outcome,
            };
            match outcome {
                Ok(()) => return, // the relay is gone: the ingestor is stopping
                Err(error) => {
                    self.metrics
                        .source_errors
                        .with_label_values(&[message::SOURCE])
                        .inc();
                    self.health
                        .set_condition(CONDITION, Some(format!("down: {error}")));
                    tracing::warn!(%error, "AMQP consumer failed; reconnecting");
                }
            }
            let wait = backoff(
                attempt,
                self.config.reconnect_min,
                self.config.reconnect_max,
            );
            attempt += 1;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Connects, declares, consumes and forwards until an error. `Ok` means the relay closed.
    async fn consume(
        &self,
        relay: &mpsc::Sender<AmqpDelivery>,
        attempt: &mut u32,
    ) -> Result<(), AmqpError> {
        let properties =
            ConnectionProperties::default().with_connection_name("statscache-ingestor".into());
        let runtime = lapin::runtime::default_runtime().map_err(AmqpError::Connect)?;
        let connecting = Connection::connect_with_config(
            &self.config.url,
            properties,
            self.tls.clone(),
            runtime,
        );
        let connection = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(connected) => connected.map_err(AmqpError::Connect)?,
            Err(_elapsed) => {
                return Err(AmqpError::Connect(lapin::Error::from(
                    lapin::ErrorKind::IOError(Arc::new(std::io::Error::from(
                        std::io::ErrorKind::TimedOut,
                    ))),
                )))
            }
        };
        let channel = connection
            .create_channel()
            .await
            .map_err(AmqpError::Connect)?;
        self.declare(&channel).await?;
        let queue = self.config.queue.as_str();
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "statscache-ingestor".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|detail| self.setup_error("basic.consume", detail))?;
        tracing::info!(queue, routing_keys = ?self.config.routing_keys, prefetch = self.prefetch, "consuming from AMQP");
        self.health.set_condition(CONDITION, None);
        *attempt = 0;
        while let Some(delivered) = consumer.next().await {
            let delivery = delivered.map_err(|detail| AmqpError::Consume {
                queue: queue.to_string(),
                detail,
            })?;
            self.metrics
                .received
                .with_label_values(&[message::SOURCE])
                .inc();
            let incoming = message::to_incoming(
                delivery.routing_key.as_str(),
                &delivery.properties,
                &delivery.data,
            );
            let handoff = AmqpDelivery {
                incoming,
                acker: delivery.acker,
            };
            if relay.send(handoff).await.is_err() {
                return Ok(());
            }
        }
        Err(AmqpError::ConsumerEnded {
            queue: queue.to_string(),
        })
    }

    /// The durable queue, its bindings, and the prefetch: idempotent, so run on every connect.
    async fn declare(&self, channel: &Channel) -> Result<(), AmqpError> {
        let queue = self.config.queue.as_str();
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(|detail| self.setup_error("basic.qos", detail))?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(queue.into(), durable, FieldTable::default())
            .await
            .map_err(|detail| self.setup_error("queue.declare", detail))?;
        for routing_key in &self.config.routing_keys {
            channel
                .queue_bind(
                    queue.into(),
                    self.config.exchange.as_str().into(),
                    routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|detail| self.setup_error("queue.bind", detail))?;
        }
        Ok(())
    }

    fn setup_error(&self, step: &'static str, detail: lapin::Error) -> AmqpError {
        AmqpError::Setup {
            queue: self.config.queue.clone(),
            step,
            detail,
        }
    }
}
