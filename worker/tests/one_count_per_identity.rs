//! A model of the stream, its shared consumer, two workers and ClickHouse, driven by proptest
//! through random interleavings, crashes and redeliveries, with the worker's own rules for
//! runs (`identity::runs`), the barrier (`identity::barrier::settled`) and the verdict on each
//! copy (`identity::copies::decide`): whatever happens, each identity is stored once, at the
//! event time of its first copy in the stream, and every copy is settled.
//!
//! The real servers run the same code in `tests/tests/copies.rs`; here the interleavings are
//! many and adversarial (a worker stopping between any two steps, partial writes), which no
//! test against real servers reaches in reasonable time.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use statscache_worker::identity::barrier::settled;
use statscache_worker::identity::copies::{decide, Candidate, StoredCopy, Verdict};
use statscache_worker::identity::runs::{oldest_run_length, Arrival, RunBounds};

/// JetStream's duplicate window, in the model's time unit.
const WINDOW: i128 = 10;

/// One message in the stream.
#[derive(Debug, Clone)]
struct Stored {
    arrival: Arrival,
    identity: String,
    /// The copy's event time (what a statistic would count it at).
    timestamp: f64,
    fingerprint: u64,
}

/// The stream after JetStream's de-duplication: a publish of an identity stored less than a
/// window earlier is dropped.
fn stream_of(publishes: &[(i128, usize, u32)]) -> Vec<Stored> {
    let mut sorted = publishes.to_vec();
    sorted.sort();
    let mut last_stored: HashMap<usize, i128> = HashMap::new();
    let mut stream = Vec::new();
    for (at, identity, copy) in sorted {
        if let Some(previous) = last_stored.get(&identity) {
            if at - previous < WINDOW {
                continue;
            }
        }
        last_stored.insert(identity, at);
        stream.push(Stored {
            arrival: Arrival {
                sequence: stream.len() as u64 + 1,
                at,
            },
            identity: format!("id-{identity}"),
            timestamp: f64::from(copy) * 1000.0 + identity as f64,
            fingerprint: u64::from(copy) + 1,
        });
    }
    stream
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Pending,
    Delivered,
    Acked,
}

/// What a worker is doing.
#[derive(Debug, Default)]
struct Worker {
    held: Vec<u64>,
    /// The run past its barrier, with its verdicts once looked up.
    run: Option<(Vec<u64>, Option<Vec<Verdict>>)>,
}

/// ClickHouse, as far as the protocol is concerned.
#[derive(Debug, Default)]
struct Store {
    identities: HashMap<String, Vec<StoredCopy>>,
    /// (identity, event time) of every fact row written.
    facts: Vec<(String, f64)>,
}

struct Model {
    stream: Vec<Stored>,
    states: Vec<State>,
    workers: Vec<Worker>,
    store: Store,
    batch: usize,
}

impl Model {
    fn message(&self, sequence: u64) -> &Stored {
        &self.stream[sequence as usize - 1]
    }

    fn ack_floor(&self) -> u64 {
        let mut floor = 0;
        for state in &self.states {
            if *state != State::Acked {
                break;
            }
            floor += 1;
        }
        floor
    }

    fn pull(&mut self, worker: usize, count: usize) {
        let mut taken = 0;
        for index in 0..self.states.len() {
            if taken == count {
                break;
            }
            if self.states[index] == State::Pending {
                self.states[index] = State::Delivered;
                self.workers[worker].held.push(index as u64 + 1);
                taken += 1;
            }
        }
    }

    /// The worker is too slow: what it holds is delivered again to whoever pulls (ack-wait
    /// expired), while it goes on with it.
    fn expire(&mut self, worker: usize) {
        let mut held = self.workers[worker].held.clone();
        if let Some((run, _)) = &self.workers[worker].run {
            held.extend(run);
        }
        for sequence in held {
            if self.states[sequence as usize - 1] == State::Delivered {
                self.states[sequence as usize - 1] = State::Pending;
            }
        }
    }

    /// The worker stops: what it held comes back (ack-wait expires).
    fn crash(&mut self, worker: usize) {
        let mut lost = std::mem::take(&mut self.workers[worker].held);
        if let Some((run, _)) = self.workers[worker].run.take() {
            lost.extend(run);
        }
        for sequence in lost {
            self.states[sequence as usize - 1] = State::Pending;
        }
    }

    /// The worker's next step; `choice` picks among the possible outcomes (partial writes).
    fn step(&mut self, worker: usize, choice: u8) {
        if let Some((run, verdicts)) = self.workers[worker].run.take() {
            let Some(verdicts) = verdicts else {
                let verdicts = self.look_up(&run);
                self.workers[worker].run = Some((run, Some(verdicts)));
                return;
            };
            // Writes land one table at a time: a partial write is followed by a crash.
            let partial = choice.is_multiple_of(5);
            self.write(&run, &verdicts, partial);
            if partial {
                self.workers[worker].run = Some((run, Some(verdicts)));
                self.crash(worker);
                return;
            }
            for sequence in run {
                self.states[sequence as usize - 1] = State::Acked;
            }
            return;
        }
        if self.workers[worker].held.is_empty() {
            self.pull(worker, self.batch);
            return;
        }
        // The oldest run of what it holds, and its barrier.
        let mut held = std::mem::take(&mut self.workers[worker].held);
        held.sort();
        let arrivals: Vec<Arrival> = held.iter().map(|s| self.message(*s).arrival).collect();
        let length = oldest_run_length(&arrivals, WINDOW, self.batch);
        let run: Vec<u64> = held[..length].to_vec();
        let bounds = RunBounds {
            first_sequence: run[0],
            newest_at: arrivals[..length].iter().map(|a| a.at).max().unwrap_or(0),
        };
        let floor = self.ack_floor();
        let oldest_pending = self
            .stream
            .get(floor as usize)
            .map(|message| message.arrival);
        if settled(bounds, floor, oldest_pending, WINDOW) {
            self.workers[worker].held = held[length..].to_vec();
            self.workers[worker].run = Some((run, None));
        } else {
            // Waiting: keep everything, pull a little (what it waits for may come here).
            self.workers[worker].held = held;
            self.pull(worker, 1);
        }
    }

    fn candidates(&self, run: &[u64]) -> Vec<Candidate> {
        run.iter()
            .map(|sequence| {
                let message = self.message(*sequence);
                Candidate {
                    identity: message.identity.clone(),
                    timestamp: message.timestamp,
                    topic: String::new(),
                    fingerprint: message.fingerprint,
                    content_fingerprint: message.fingerprint,
                }
            })
            .collect()
    }

    fn look_up(&self, run: &[u64]) -> Vec<Verdict> {
        let mut found = HashMap::new();
        for candidate in self.candidates(run) {
            if let Some(copies) = self.store.identities.get(&candidate.identity) {
                found.insert(candidate.identity.clone(), copies.clone());
            }
        }
        decide(&self.candidates(run), &found)
    }

    /// Writes the rows of the copies that count. The identity rows and the facts are separate
    /// inserts: a partial write stores either, both or neither of a message's rows.
    fn write(&mut self, run: &[u64], verdicts: &[Verdict], partial: bool) {
        let candidates = self.candidates(run);
        for (index, (candidate, verdict)) in candidates.iter().zip(verdicts).enumerate() {
            if *verdict != Verdict::Counts {
                continue;
            }
            let (identity_written, facts_written) = match (partial, index % 3) {
                (false, _) => (true, true),
                (true, 0) => (false, false),
                (true, 1) => (true, false),
                (true, _) => (false, true),
            };
            if identity_written {
                let copies = self
                    .store
                    .identities
                    .entry(candidate.identity.clone())
                    .or_default();
                if !copies
                    .iter()
                    .any(|c| c.fingerprint == candidate.fingerprint)
                {
                    copies.push(StoredCopy {
                        msg_id: candidate.identity.clone(),
                        timestamp: candidate.timestamp,
                        topic: String::new(),
                        fingerprint: candidate.fingerprint,
                        content_fingerprint: candidate.content_fingerprint,
                    });
                }
            }
            if facts_written {
                self.store
                    .facts
                    .push((candidate.identity.clone(), candidate.timestamp));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn each_identity_is_counted_once_at_its_first_copys_time(
        publishes in proptest::collection::vec((0i128..120, 0usize..12, 0u32..4), 1..60),
        schedule in proptest::collection::vec((0usize..2, any::<u8>()), 1..3000),
        batch in 1usize..6,
    ) {
        let stream = stream_of(&publishes);
        let mut model = Model {
            states: vec![State::Pending; stream.len()],
            stream,
            workers: vec![Worker::default(), Worker::default()],
            store: Store::default(),
            batch,
        };
        for (worker, choice) in schedule {
            match choice {
                255 => model.crash(worker),
                254 => model.expire(worker),
                _ => model.step(worker, choice),
            }
        }
        // Then no more crashes: the workers finish (bounded, in turn).
        let mut turns = 0;
        while model.states.iter().any(|state| *state != State::Acked) {
            model.step(turns % 2, 1);
            turns += 1;
            prop_assert!(turns < 100_000, "the workers never finish: {:?}", model.states);
        }

        let mut first_copy: BTreeMap<&str, f64> = BTreeMap::new();
        for message in &model.stream {
            first_copy.entry(message.identity.as_str()).or_insert(message.timestamp);
        }
        let mut counted: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for (identity, timestamp) in &model.store.facts {
            let times = counted.entry(identity.as_str()).or_default();
            if !times.contains(timestamp) {
                times.push(*timestamp);
            }
        }
        for (identity, timestamp) in &first_copy {
            prop_assert_eq!(
                counted.get(identity),
                Some(&vec![*timestamp]),
                "identity {} stored at other times than its first copy's", identity
            );
        }
        prop_assert_eq!(counted.len(), first_copy.len());
    }
}
