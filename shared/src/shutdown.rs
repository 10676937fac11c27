//! Graceful shutdown: one token that every task watches, and a bound on how long it may take.
//!
//! The first SIGTERM or SIGINT cancels the token; tasks finish what they hold (the ingestor waits
//! for in-flight publish acks, the worker writes and acks its batch) and return. Finishing can
//! hang on a frozen dependency, and an orchestrator's SIGKILL would then come at a moment nobody
//! chose, so the process exits by itself once `[service] shutdown-timeout` has passed, logging
//! what it abandons ([`Abandoned`]): the worker's batch is redelivered, AMQP deliveries come
//! again, a datagrepper window is fetched again, but ZeroMQ messages not yet stored are lost
//! unless a datagrepper backfill fetches them. A second signal exits at once, for an operator
//! who does not want to wait.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The exit status of a process that did not finish its work within the shutdown timeout.
pub const EXIT_SHUTDOWN_TIMED_OUT: i32 = 124;

type Describe = Box<dyn Fn() -> String + Send>;

/// What a role says it abandons when the shutdown bound cuts it short: set by the role once it
/// knows what it holds, read at that moment only. Cloning shares it.
#[derive(Clone, Default)]
pub struct Abandoned(Arc<Mutex<Option<Describe>>>);

impl Abandoned {
    /// `describe` says, when called, what the process holds that exiting now abandons.
    pub fn describe_with(&self, describe: impl Fn() -> String + Send + 'static) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(Box::new(describe));
        }
    }

    fn describe(&self) -> String {
        let Ok(slot) = self.0.lock() else {
            return "work in flight".to_string();
        };
        match slot.as_ref() {
            Some(describe) => describe(),
            None => "work in flight".to_string(),
        }
    }
}

/// Returns a token cancelled on the first SIGTERM/SIGINT; the process exits `timeout` later if
/// it is still running, or at once on a second signal.
pub fn on_signals(timeout: Duration) -> CancellationToken {
    on_signals_reporting(timeout, Abandoned::default())
}

/// [`on_signals`], logging what `abandoned` describes if the bound cuts the shutdown short.
pub fn on_signals_reporting(timeout: Duration, abandoned: Abandoned) -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!(
            ?timeout,
            "shutdown requested; finishing work in flight (signal again to force)"
        );
        cancel.cancel();
        tokio::select! {
            _ = wait_for_signal() => {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
            _ = tokio::time::sleep(timeout) => {
                tracing::error!(
                    ?timeout,
                    abandoned = %abandoned.describe(),
                    "work in flight not finished within the shutdown timeout; exiting and abandoning it"
                );
                std::process::exit(EXIT_SHUTDOWN_TIMED_OUT);
            }
        }
    });
    token
}

async fn wait_for_signal() {
    let mut terminate = match tokio::signal::unix::signal(
        tokio::signal::unix::SignalKind::terminate(),
    ) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM; only Ctrl-C will stop the service");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
