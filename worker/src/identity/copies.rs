//! Which copy of a message identity counts: the stored one, else the first of the batch.
//!
//! A batch looks its identities up in `message_identities` (after its barrier, see
//! [`super::barrier`]). A message whose identity is not stored is the copy that counts, unless
//! an earlier message of the same batch has that identity. A message whose identity is stored
//! either *is* the stored copy — same bytes: a redelivery, a replay, a batch written before a
//! crash — and is written again like any (idempotent) write, or is another copy: it is kept in
//! `message_copies` with what it differs in, and contributes to no statistic.

use std::collections::{BTreeSet, HashMap};

use clickhouse::Row;
use serde::Deserialize;
use statscache_shared::sql::placeholders;

/// Identities per lookup query: keeps the statement well under ClickHouse's
/// `max_query_size` (256 KiB), at up to 256 bytes an identity (fedmsg's are 41).
const IDENTITIES_PER_QUERY: usize = 800;

/// A stored copy of an identity: a row of `message_identities`.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct StoredCopy {
    pub msg_id: String,
    pub timestamp: f64,
    pub topic: String,
    pub fingerprint: u64,
    /// 0 when unknown (rows the schema migration filled).
    pub content_fingerprint: u64,
}

/// What the batch knows of one of its messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub identity: String,
    pub timestamp: f64,
    pub topic: String,
    pub fingerprint: u64,
    pub content_fingerprint: u64,
}

impl Candidate {
    fn as_stored(&self) -> StoredCopy {
        StoredCopy {
            msg_id: self.identity.clone(),
            timestamp: self.timestamp,
            topic: self.topic.clone(),
            fingerprint: self.fingerprint,
            content_fingerprint: self.content_fingerprint,
        }
    }
}

/// What becomes of one message of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The copy that counts (new, or the stored copy itself): written in full.
    Counts,
    /// Another copy of a stored (or earlier in the batch) identity: kept aside, not counted.
    Copy {
        canonical: StoredCopy,
        differs: Vec<&'static str>,
    },
}

/// The stored copies of `identities`, by identity.
pub async fn stored(
    client: &clickhouse::Client,
    identities: &BTreeSet<String>,
) -> Result<HashMap<String, Vec<StoredCopy>>, clickhouse::error::Error> {
    let all: Vec<&String> = identities.iter().collect();
    let mut lookups = Vec::new();
    for chunk in all.chunks(IDENTITIES_PER_QUERY) {
        let sql = format!(
            "SELECT msg_id, timestamp, topic, fingerprint, content_fingerprint \
             FROM message_identities WHERE msg_id IN ({})",
            placeholders(chunk.len())
        );
        let mut query = client.query(&sql);
        for identity in chunk {
            query = query.bind(identity.as_str());
        }
        lookups.push(query.fetch_all::<StoredCopy>());
    }
    // A few queries at once: a large batch (a bootstrap's) is looked up in one round trip.
    let mut found: HashMap<String, Vec<StoredCopy>> = HashMap::new();
    for answer in futures::future::try_join_all(lookups).await? {
        for copy in answer {
            found.entry(copy.msg_id.clone()).or_default().push(copy);
        }
    }
    Ok(found)
}

/// The verdict on each of `candidates` (in stream order) given the `stored` copies.
pub fn decide(candidates: &[Candidate], stored: &HashMap<String, Vec<StoredCopy>>) -> Vec<Verdict> {
    let mut counted_in_batch: HashMap<&str, StoredCopy> = HashMap::new();
    let mut verdicts = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        let known: Vec<&StoredCopy> = match stored.get(&candidate.identity) {
            Some(copies) => copies.iter().collect(),
            None => counted_in_batch
                .get(candidate.identity.as_str())
                .into_iter()
                .collect(),
        };
        let Some(canonical) = known.first() else {
            counted_in_batch.insert(&candidate.identity, candidate.as_stored());
            verdicts.push(Verdict::Counts);
            continue;
        };
        let is_that_copy = known
            .iter()
            .any(|copy| copy.fingerprint == candidate.fingerprint);
        if is_that_copy {
            verdicts.push(Verdict::Counts);
            continue;
        }
        verdicts.push(Verdict::Copy {
            canonical: (*canonical).clone(),
            differs: differences(candidate, canonical),
        });
    }
    verdicts
}

/// The fields in which `copy` differs from the copy that counts: `timestamp`, `topic`, `body`
/// (the latter only when both bodies' fingerprints are known).
pub fn differences(copy: &Candidate, canonical: &StoredCopy) -> Vec<&'static str> {
    let mut differs = Vec::new();
    if copy.timestamp != canonical.timestamp {
        differs.push("timestamp");
    }
    if copy.topic != canonical.topic {
        differs.push("topic");
    }
    let both_known = copy.content_fingerprint != 0 && canonical.content_fingerprint != 0;
    if both_known && copy.content_fingerprint != canonical.content_fingerprint {
        differs.push("body");
    }
    differs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(identity: &str, timestamp: f64, fingerprint: u64) -> Candidate {
        Candidate {
            identity: identity.to_string(),
            timestamp,
            topic: "org.fedoraproject.prod.a.b".to_string(),
            fingerprint,
            content_fingerprint: 7,
        }
    }

    #[test]
    fn the_first_copy_of_a_batch_counts_and_later_ones_do_not() {
        let batch = [
            candidate("a", 10.0, 1),
            candidate("b", 10.0, 2),
            candidate("a", 70.0, 3),
            candidate("a", 10.0, 1),
        ];
        let verdicts = decide(&batch, &HashMap::new());
        assert_eq!(verdicts[0], Verdict::Counts);
        assert_eq!(verdicts[1], Verdict::Counts);
        assert!(
            matches!(&verdicts[2], Verdict::Copy { differs, canonical } if differs == &vec!["timestamp"] && canonical.timestamp == 10.0)
        );
        // The same bytes again (a redelivery within the batch) are that copy.
        assert_eq!(verdicts[3], Verdict::Counts);
    }

    #[test]
    fn a_stored_identity_counts_only_for_its_own_copy() {
        let stored_copy = StoredCopy {
            msg_id: "a".into(),
            timestamp: 10.0,
            topic: "org.fedoraproject.prod.a.b".into(),
            fingerprint: 1,
            content_fingerprint: 0,
        };
        let stored = HashMap::from([("a".to_string(), vec![stored_copy])]);
        let mut other_topic = candidate("a", 10.0, 9);
        other_topic.topic = "org.fedoraproject.prod.c.d".into();
        let verdicts = decide(&[candidate("a", 10.0, 1), other_topic], &stored);
        assert_eq!(verdicts[0], Verdict::Counts);
        // The stored body's fingerprint is unknown (0): no body difference is claimed.
        assert!(matches!(&verdicts[1], Verdict::Copy { differs, .. } if differs == &vec!["topic"]));
    }
}
