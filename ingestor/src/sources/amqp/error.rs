/// Why the AMQP source had to reconnect, or could not start.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("cannot read {what} {path}: {detail}")]
    TlsFile {
        what: &'static str,
        path: String,
        detail: String,
    },
    #[error("tls-cert-file and tls-key-file go together; only {given} is set")]
    HalfIdentity { given: &'static str },
    #[error("cannot connect to the AMQP broker: {0}")]
    Connect(lapin::Error),
    #[error("cannot set up queue {queue:?} ({step}): {detail}")]
    Setup {
        queue: String,
        step: &'static str,
        detail: lapin::Error,
    },
    #[error("consuming from queue {queue:?} failed: {detail}")]
    Consume { queue: String, detail: lapin::Error },
    #[error("the broker ended the consumer of queue {queue:?}")]
    ConsumerEnded { queue: String },
}
