//! Turns between the workers' runs and a bootstrap's batches, which store identities outside
//! the stream: never does one look identities up and store them while the other does.
//!
//! Why: runs agree among themselves through the stream's order ([`super::barrier`]), but a
//! bootstrap reads datanommer's history, not the stream; a copy of one of its messages may be a
//! run's at the same moment. So each takes a turn, in the order of a JetStream key-value
//! bucket's revisions (one total order, linearizable, replicated like the streams):
//!
//! - a run, once its barrier passed, puts its *marker* (`run.<worker>`) and reads the *leases*
//!   (`bootstrap.<process>`). A lease older than its marker means a bootstrap batch goes first:
//!   the run takes its marker back and waits. Otherwise the run looks up, writes and acks, then
//!   removes its marker.
//! - a bootstrap batch puts its lease, then waits until no marker older than the lease is
//!   left (those runs looked up before it and may be writing), looks its identities up, writes
//!   its identity rows and removes the lease.
//!
//! Of a run and a batch, the one whose key came first in the bucket goes first, and the other
//! looks up after its identity rows are stored. Markers and the lease are refreshed while held
//! and expire after [`TURN_EXPIRY`] when their holder died.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use statscache_shared::config::NatsConfig;
use statscache_shared::nats::{open_bucket, Bucket, NatsError};
use tokio::task::JoinHandle;

/// The bucket's name.
pub const BUCKET: &str = "statscache_writers";

/// A marker or lease not refreshed for this long is taken to belong to a dead process.
pub const TURN_EXPIRY: Duration = Duration::from_secs(60);

/// How often a held marker or lease is refreshed.
const REFRESH: Duration = Duration::from_secs(15);

/// How long a waiting turn sleeps between two looks.
const POLL: Duration = Duration::from_millis(100);

const LEASE_PREFIX: &str = "bootstrap.";
const MARKER_PREFIX: &str = "run.";
const WAITING_PREFIX: &str = "wait.";

#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error("cannot write {key} in {BUCKET}: {detail}")]
    Put { key: String, detail: String },
    #[error("cannot read {key} in {BUCKET}: {detail}")]
    Read { key: String, detail: String },
}

/// The bucket, and this process's keys in it: its marker (as a worker) and its lease (as a
/// bootstrap).
#[derive(Clone)]
pub struct Turns {
    store: kv::Store,
    marker: String,
    lease: String,
    waiting: String,
    /// Whether this process's `waiting` key is up.
    announced_waiting: Arc<AtomicBool>,
}

/// A held marker or lease: refreshed until given back.
pub struct Held {
    store: kv::Store,
    key: String,
    refresher: JoinHandle<()>,
}

impl Turns {
    /// Opens the bucket (created on first use) for a process named `process` (unique: a
    /// worker's or a bootstrap's random name).
    pub async fn open(
        jetstream: &jetstream::Context,
        nats: &NatsConfig,
        process: &str,
    ) -> Result<Turns, NatsError> {
        let bucket = Bucket {
            name: BUCKET,
            description: "statscache: turns of workers' runs and bootstrap batches",
            max_age: TURN_EXPIRY,
        };
        let store = open_bucket(jetstream, nats, bucket).await?;
        Ok(Turns {
            store,
            marker: format!("{MARKER_PREFIX}{process}"),
            lease: format!("{LEASE_PREFIX}{process}"),
            waiting: format!("{WAITING_PREFIX}{process}"),
            announced_waiting: Arc::new(AtomicBool::new(false)),
        })
    }

    /// A run's turn: `Some` once no bootstrap batch goes first (the marker is held until the
    /// returned guard is given back), `None` while one does (nothing held: wait and ask again).
    ///
    /// A run that waits says so (`wait.<worker>`, put again at every try), and a bootstrap
    /// lets waiting runs go before its next batch: runs are not starved by a bootstrap that
    /// takes turn after turn.
    pub async fn run_turn(&self) -> Result<Option<Held>, TurnError> {
        let taken = self.take(&self.marker).await?;
        let first_lease = self.oldest_turn(LEASE_PREFIX, u64::MAX).await?;
        if first_lease.is_some() && first_lease < Some(taken) {
            self.remove(&self.marker).await;
            self.take(&self.waiting).await?;
            self.announced_waiting.store(true, Ordering::SeqCst);
            return Ok(None);
        }
        if self.announced_waiting.swap(false, Ordering::SeqCst) {
            self.remove(&self.waiting).await;
        }
        Ok(Some(self.hold(self.marker.clone(), taken)))
    }

    /// A bootstrap batch's turn: returns once no run waits, the lease is held and every run
    /// that took its turn before has given it back.
    pub async fn bootstrap_turn(&self) -> Result<Held, TurnError> {
        while self.oldest_turn(WAITING_PREFIX, u64::MAX).await?.is_some() {
            tokio::time::sleep(POLL).await;
        }
        let lease = self.lease.clone();
        let taken = self.take(&lease).await?;
        let held = self.hold(lease, taken);
        while self.oldest_turn(MARKER_PREFIX, taken).await?.is_some() {
            tokio::time::sleep(POLL).await;
        }
        Ok(held)
    }

    /// The revision at which the oldest turn of keys starting with `prefix`, taken before
    /// `before`, was taken, if any is held.
    async fn oldest_turn(&self, prefix: &str, before: u64) -> Result<Option<u64>, TurnError> {
        let listing = |error: &dyn std::fmt::Display| TurnError::Read {
            key: format!("{prefix}*"),
            detail: error.to_string(),
        };
        let keys = self.store.keys().await.map_err(|error| listing(&error))?;
        let keys: Vec<String> = futures::TryStreamExt::try_collect(keys)
            .await
            .map_err(|error| listing(&error))?;
        let mut oldest = None;
        for key in keys {
            if !key.starts_with(prefix) {
                continue;
            }
            let Some(taken) = self.taken_at(&key).await? else {
                continue;
            };
            if taken < before && oldest.is_none_or(|oldest| taken < oldest) {
                oldest = Some(taken);
            }
        }
        Ok(oldest)
    }

    /// Puts `key` afresh: the turn is taken at the returned revision.
    async fn take(&self, key: &str) -> Result<u64, TurnError> {
        self.store
            .put(key, Bytes::new())
            .await
            .map_err(|error| TurnError::Put {
                key: key.to_string(),
                detail: error.to_string(),
            })
    }

    /// The revision at which the turn `key` holds was taken: that of its first put, which a
    /// refresh carries as its value; `None` if it is not held.
    async fn taken_at(&self, key: &str) -> Result<Option<u64>, TurnError> {
        let entry = self
            .store
            .entry(key)
            .await
            .map_err(|error| TurnError::Read {
                key: key.to_string(),
                detail: error.to_string(),
            })?;
        let Some(entry) = entry else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let refreshed = std::str::from_utf8(&entry.value)
            .ok()
            .and_then(|value| value.parse::<u64>().ok());
        Ok(Some(refreshed.unwrap_or(entry.revision)))
    }

    async fn remove(&self, key: &str) {
        if let Err(error) = self.store.delete(key).await {
            tracing::warn!(%error, key, "cannot give a turn back; it expires by itself");
        }
    }

    /// Keeps `key`, taken at revision `taken`, held: put again every [`REFRESH`] with `taken`
    /// as its value, so that it neither expires nor seems taken later than it was.
    fn hold(&self, key: String, taken: u64) -> Held {
        let store = self.store.clone();
        let refreshed = key.clone();
        let refresher = tokio::spawn(async move {
            let value = Bytes::from(taken.to_string());
            loop {
                tokio::time::sleep(REFRESH).await;
                if let Err(error) = store.put(&refreshed, value.clone()).await {
                    tracing::warn!(%error, key = %refreshed, "cannot refresh a turn");
                }
            }
        });
        Held {
            store: self.store.clone(),
            key,
            refresher,
        }
    }
}

impl Held {
    /// Gives the turn back.
    pub async fn give_back(self) {
        self.refresher.abort();
        if let Err(error) = self.store.delete(&self.key).await {
            tracing::warn!(%error, key = %self.key, "cannot give a turn back; it expires by itself");
        }
    }
}

impl Drop for Held {
    /// A turn dropped without being given back (an error cut its holder short) is no longer
    /// refreshed, and expires after [`TURN_EXPIRY`].
    fn drop(&mut self) {
        self.refresher.abort();
    }
}
