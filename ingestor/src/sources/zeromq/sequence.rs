//! Loss detection from fedmsg's `i`, per publishing process, reporting only what it is sure of.
//!
//! fedmsg numbers what each process publishes (`i` = 1, 2, 3, ...; `FedMsgContext._i` in
//! `fedmsg/core.py`), so a jump in one process's numbers is direct evidence of loss, seconds
//! after it happened, where reconciliation with datagrepper needs a closed window. But an
//! endpoint may carry many processes: a relay or gateway forwards every publisher of a site
//! (one-shot `fedmsg-logger` and cron runs at `i` = 1 among long-running services), and
//! processes of one service share everything an envelope says about its sender. So:
//!
//! - **Per identity** ([`super::publisher::publisher_key`]): the endpoint, the signer's
//!   certificate, the process's user and the topic's prefix and environment; never the topic's
//!   module name, since one process may publish under several and would then look like jumps.
//! - **Per process within an identity: chains.** Each process's numbers, seen in order, form a
//!   chain; a number continues the chain ending just below it. A number that continues none is
//!   held ([`HELD`] per identity) until a later number close above it (within
//!   [`CONFIRMATION_WINDOW`]) confirms that a process really goes on from there: one odd
//!   number (a forged `i`, `u64::MAX`) never counts. A confirmed number is then explained the
//!   way that loses the fewest messages: a jump from the nearest chain below it, or a new
//!   process whose first numbers were missed; numbers held between the two were received and
//!   are not counted. Numbers seen again with the same identity (`msg_id`) are duplicates.
//! - **Reported only when sure.** The fewest-loss explanation should never exceed the truth if
//!   every process of an identity is known from its first message on, or from the stream's tail
//!   (the argument is in `docs/ingest-edge.md`; the property tests below check it). What breaks
//!   that is a process the tracker never heard of, so:
//!   - a new process's missed first messages (a *head*) count only on an endpoint that carries
//!     one process at a time (a publisher's own endpoint) and whose publisher was seen to go
//!     away, or be absent, or is known from the stream: then the new one started while we
//!     listened. An endpoint proves it multiplexes by showing two identities, or two processes
//!     of one, within one connection; from then on heads are never counted there. A head is
//!     therefore held until the connection has carried [`HEAD_PROOF`] more messages of that
//!     process and nothing else (a relay started after us shows its many identities first);
//!   - on a multiplexing endpoint a jump counts only for an identity heard for at least
//!     [`YOUTH`] (or known from the stream): the processes of a service that were running
//!     before we started show up one by one, and until they have, a jump may be one of them.
//! - **Bounded**: identities, chains per identity, held numbers and remembered `msg_id`s are
//!   capped; what is evicted can only make reports smaller (an identity that lost a chain or an
//!   unconfirmed number counts nothing for [`YOUTH`]). `i` = 0 (fedmsg starts at 1) and numbers beyond
//!   [`MAX_COUNTER`] are not a process's and are ignored; jumps over [`MAX_GAP`] are logged,
//!   not counted. No input turns tracking off: each identity's state stands alone.
//! - **Across restarts**: every message relayed carries its identity and `i` in a header
//!   (`super::publisher`), and at start-up the tail of the stream is read back into the
//!   tracker ([`SequenceTracker::restore`]), so a restarted ingestor counts what it missed
//!   while down from the first message each process sends.
//!
//! `i` counts every topic a process sends, so gaps mean something only when subscribed to every
//! topic; the source does not track them otherwise.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::source::LostSpan;

/// Numbers held per identity, waiting for confirmation.
pub const HELD: usize = 32;
/// A held number `x` is confirmed by a later number in `(x, x + CONFIRMATION_WINDOW]`.
pub const CONFIRMATION_WINDOW: u64 = 1000;
/// Messages of the same process, and nothing else, a connection must carry after a head before
/// it counts.
pub const HEAD_PROOF: u32 = 16;
/// Chains remembered per identity.
pub const MAX_CHAINS: usize = 256;
/// Identities remembered per endpoint.
pub const MAX_IDENTITIES: usize = 4096;
/// `msg_id`s remembered per endpoint, to recognise duplicates.
pub const REMEMBERED_IDS: usize = 65_536;
/// Seconds an identity on a multiplexing endpoint is heard before its jumps count; also how
/// long after losing a chain to the bounds an identity's jumps do not count.
pub const YOUTH: f64 = 3600.0;
/// Larger numbers are not a process's counter (2^40: a process publishing a thousand
/// messages a second would need 35 years).
pub const MAX_COUNTER: u64 = 1 << 40;
/// A jump of more than this many messages is implausible and not counted (logged).
pub const MAX_GAP: u64 = 10_000_000;

/// One message as the tracker sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// The publishing identity ([`super::publisher::PublisherKey`]'s value).
    pub key: u64,
    pub i: u64,
    /// Event time (epoch seconds): where a lost span lies, for its backfill.
    pub event_time: f64,
    /// A digest of the message's identity (`msg_id`), to recognise duplicates.
    pub id: u64,
}

/// Messages the tracker is sure were lost.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub key: u64,
    pub kind: GapKind,
    /// The number before the gap (`None` for a head).
    pub last_i: Option<u64>,
    /// The first number after it.
    pub next_i: u64,
    pub span: LostSpan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapKind {
    /// A process's numbers jumped.
    Jump,
    /// A new process was first heard after its first messages.
    Head,
}

/// A jump of more than [`MAX_GAP`], confirmed but not counted; for the caller to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Implausible {
    pub key: u64,
    pub last_i: u64,
    pub next_i: u64,
}

/// Chains ending at one number: how many processes' chains, when the last was heard, when it
/// was last touched (for eviction).
#[derive(Debug, Clone, Copy)]
struct ChainEnd {
    processes: u32,
    event_time: f64,
    touched: u64,
}

/// A number waiting for confirmation.
#[derive(Debug, Clone, Copy)]
struct Held {
    i: u64,
    event_time: f64,
    /// The connection it came on.
    connection: u64,
    /// Whether a new process heard of then had started while we listened.
    heads_certain: bool,
}

#[derive(Debug)]
struct Identity {
    chains: BTreeMap<u64, ChainEnd>,
    /// Numbers waiting for confirmation, oldest first.
    held: VecDeque<Held>,
    /// Arrival from which jumps count on a multiplexing endpoint (`YOUTH` after first heard;
    /// at once when known from the stream).
    counts_from: f64,
    /// Arrival before which no jump counts anywhere (a chain was lost to the bounds).
    unsure_until: f64,
    touched: u64,
}

/// A head waiting for [`HEAD_PROOF`].
#[derive(Debug)]
struct PendingHead {
    finding: Finding,
    proof_left: u32,
}

/// One endpoint's tracker, kept across its connections.
#[derive(Debug)]
pub struct SequenceTracker {
    identities: HashMap<u64, Identity>,
    ids: HashSet<u64>,
    id_order: VecDeque<u64>,
    /// Proven to carry several processes at once (a relay): heads are never counted.
    multiplexing: bool,
    /// The publisher was seen absent or going away, or is known from the stream: a process
    /// heard of now started while we listened.
    heads_certain: bool,
    /// Identities whose chains moved in the current connection.
    in_connection: HashSet<u64>,
    /// Connections so far (restored messages are connection 0).
    connection: u64,
    pending_head: Option<PendingHead>,
    /// Event time of the last message, or when listening began: where a head's span starts.
    last_event_time: f64,
    /// A logical clock for eviction.
    ticks: u64,
    implausible: Vec<Implausible>,
}

/// What taking one number did.
enum Taken {
    /// Held, or ignored (a duplicate, not a counter).
    Nothing,
    /// Continued a chain.
    Continued,
    /// Confirmed a held number, explained as `Finding` if counted.
    Confirmed(Option<Finding>),
}

impl SequenceTracker {
    /// A tracker that began listening at `now` (epoch seconds).
    pub fn new(now: f64) -> SequenceTracker {
        SequenceTracker {
            identities: HashMap::new(),
            ids: HashSet::new(),
            id_order: VecDeque::new(),
            multiplexing: false,
            heads_certain: false,
            in_connection: HashSet::new(),
            connection: 0,
            pending_head: None,
            last_event_time: now,
            ticks: 0,
            implausible: Vec::new(),
        }
    }

    /// Whether the endpoint proved to carry several processes at once.
    pub fn is_multiplexing(&self) -> bool {
        self.multiplexing
    }

    /// A message this endpoint carried before (read back from the stream): learnt, never
    /// counted; its identity's jumps count at once.
    pub fn restore(&mut self, observation: Observation) {
        self.take(observation, 0.0, true);
        self.heads_certain = true;
    }

    /// Restored messages are not one connection: the next message starts the first.
    pub fn end_restore(&mut self) {
        self.in_connection.clear();
    }

    /// Nothing listened at the endpoint, or the connection ended: a process heard of next
    /// started after what was heard so far. A head not yet proven is dropped.
    pub fn publisher_absent(&mut self) {
        self.heads_certain = true;
        self.connected();
    }

    /// A new connection began.
    pub fn connected(&mut self) {
        self.in_connection.clear();
        self.pending_head = None;
        self.connection += 1;
    }

    /// Takes the next message, received at `arrival` (seconds on a monotonic clock, from 0);
    /// returns the losses it makes sure of.
    pub fn observe(&mut self, observation: Observation, arrival: f64) -> Vec<Finding> {
        let mut findings = Vec::new();
        let taken = self.take(observation, arrival, false);
        let moved = !matches!(taken, Taken::Nothing);
        if let Some(pending) = &mut self.pending_head {
            if self.multiplexing || self.in_connection.len() > 1 {
                self.pending_head = None;
            } else if moved && pending.finding.key == observation.key {
                pending.proof_left = pending.proof_left.saturating_sub(1);
                if pending.proof_left == 0 {
                    if let Some(proven) = self.pending_head.take() {
                        findings.push(proven.finding);
                    }
                }
            }
        }
        if let Taken::Confirmed(Some(finding)) = taken {
            match finding.kind {
                GapKind::Jump => findings.push(finding),
                GapKind::Head => {
                    self.pending_head = Some(PendingHead {
                        finding,
                        proof_left: HEAD_PROOF,
                    })
                }
            }
        }
        findings
    }

    /// Confirmed jumps too large to count, since the last call.
    pub fn take_implausible(&mut self) -> Vec<Implausible> {
        std::mem::take(&mut self.implausible)
    }

    fn take(&mut self, observation: Observation, arrival: f64, restoring: bool) -> Taken {
        let x = observation.i;
        if x == 0 || x > MAX_COUNTER || !observation.event_time.is_finite() {
            return Taken::Nothing;
        }
        if !self.remember_id(observation.id) {
            return Taken::Nothing;
        }
        self.ticks += 1;
        let previous_event_time = self.last_event_time;
        self.last_event_time = observation.event_time;
        self.make_room_for(observation.key);
        let ticks = self.ticks;
        let counts_from = if restoring { 0.0 } else { arrival + YOUTH };
        let identity = self
            .identities
            .entry(observation.key)
            .or_insert_with(|| Identity {
                chains: BTreeMap::new(),
                held: VecDeque::new(),
                counts_from,
                unsure_until: 0.0,
                touched: ticks,
            });
        identity.touched = ticks;
        if identity.extend(x, observation.event_time, ticks, arrival) {
            self.note_moved(observation.key);
            return Taken::Continued;
        }
        let held = Held {
            i: x,
            event_time: observation.event_time,
            connection: self.connection,
            heads_certain: self.heads_certain,
        };
        // The closest held number below, close enough: this number confirms it.
        let mut confirmed: Option<(usize, u64)> = None;
        for (index, earlier) in identity.held.iter().enumerate() {
            let confirms = earlier.i < x && x - earlier.i <= CONFIRMATION_WINDOW;
            if confirms && confirmed.is_none_or(|(_, best)| earlier.i > best) {
                confirmed = Some((index, earlier.i));
            }
        }
        let Some((index, _)) = confirmed else {
            identity.hold(held, arrival);
            return Taken::Nothing;
        };
        let Some(earlier) = identity.held.remove(index) else {
            return Taken::Nothing;
        };
        let finding = self.confirm(
            observation.key,
            earlier,
            previous_event_time,
            arrival,
            restoring,
        );
        // The confirming number continues the confirmed chain, or waits for its own turn.
        if let Some(identity) = self.identities.get_mut(&observation.key) {
            if identity.extend(x, observation.event_time, ticks, arrival) {
                self.note_moved(observation.key);
            } else {
                identity.hold(held, arrival);
            }
        }
        Taken::Confirmed(finding)
    }

    /// Explains the confirmed number `x` with the fewest losses; the finding if it counts.
    fn confirm(
        &mut self,
        key: u64,
        confirmed: Held,
        previous_event_time: f64,
        arrival: f64,
        restoring: bool,
    ) -> Option<Finding> {
        let x = confirmed.i;
        let event_time = confirmed.event_time;
        let this_connection = confirmed.connection == self.connection;
        let ticks = self.ticks;
        let multiplexing = self.multiplexing;
        let moved_in_connection = self.in_connection.contains(&key);
        let identity = self.identities.get_mut(&key)?;
        let below = identity
            .chains
            .range(..x)
            .next_back()
            .map(|(&end, chain)| (end, chain.event_time));
        // Held numbers between the chain and `x` were received: not missing.
        let floor = below.map_or(0, |(end, _)| end);
        let held_before = identity.held.len();
        identity.held.retain(|held| !(floor < held.i && held.i < x));
        let received_between = (held_before - identity.held.len()) as u64;
        let Some((end, end_time)) = below else {
            // A new process, first heard at `x`. Two processes of one identity in one
            // connection: a relay.
            let current = this_connection && !restoring;
            let multiplexing = multiplexing || (current && moved_in_connection);
            identity.add_end(x, event_time, ticks, arrival);
            let sure = arrival >= identity.unsure_until;
            self.multiplexing = multiplexing;
            self.note_moved(key);
            let missing = (x - 1).saturating_sub(received_between);
            let counts = current && confirmed.heads_certain && !self.multiplexing && sure;
            if missing == 0 || !counts {
                return None;
            }
            return Some(Finding {
                key,
                kind: GapKind::Head,
                last_i: None,
                next_i: x,
                span: LostSpan {
                    missing,
                    after: previous_event_time,
                    before: event_time,
                },
            });
        };
        identity.remove_end(end);
        identity.add_end(x, event_time, ticks, arrival);
        let sure = arrival >= identity.unsure_until;
        let counts = sure && (!multiplexing || arrival >= identity.counts_from);
        self.note_moved(key);
        let missing = (x - end - 1).saturating_sub(received_between);
        if restoring || missing == 0 || !counts {
            return None;
        }
        if missing > MAX_GAP {
            self.implausible.push(Implausible {
                key,
                last_i: end,
                next_i: x,
            });
            return None;
        }
        Some(Finding {
            key,
            kind: GapKind::Jump,
            last_i: Some(end),
            next_i: x,
            span: LostSpan {
                missing,
                after: end_time,
                before: event_time,
            },
        })
    }

    /// An identity's chain moved in this connection; two identities doing so prove the
    /// endpoint multiplexes.
    fn note_moved(&mut self, key: u64) {
        self.in_connection.insert(key);
        if self.in_connection.len() > 1 {
            self.multiplexing = true;
        }
    }

    /// `false` if `id` was seen recently (a duplicate).
    fn remember_id(&mut self, id: u64) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.id_order.push_back(id);
        if self.id_order.len() > REMEMBERED_IDS {
            if let Some(oldest) = self.id_order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        true
    }

    /// Evicts the identity touched longest ago if `key` is new and the map is full.
    fn make_room_for(&mut self, key: u64) {
        if self.identities.len() < MAX_IDENTITIES || self.identities.contains_key(&key) {
            return;
        }
        let oldest = self
            .identities
            .iter()
            .min_by_key(|(_, identity)| identity.touched)
            .map(|(&key, _)| key);
        if let Some(oldest) = oldest {
            self.identities.remove(&oldest);
            self.in_connection.remove(&oldest);
        }
    }
}

impl Identity {
    /// Moves a chain ending at `x - 1` to `x`; `false` if none ends there.
    fn extend(&mut self, x: u64, event_time: f64, ticks: u64, arrival: f64) -> bool {
        let from = x - 1;
        if !self.chains.contains_key(&from) {
            return false;
        }
        self.remove_end(from);
        self.add_end(x, event_time, ticks, arrival);
        true
    }

    fn hold(&mut self, held: Held, arrival: f64) {
        if self.held.len() == HELD {
            self.held.pop_front();
            // A number received but dropped unplaced could later be counted as missing.
            self.unsure_until = arrival + YOUTH;
        }
        self.held.push_back(held);
    }

    fn remove_end(&mut self, end: u64) {
        let Some(chain) = self.chains.get_mut(&end) else {
            return;
        };
        chain.processes -= 1;
        if chain.processes == 0 {
            self.chains.remove(&end);
        }
    }

    fn add_end(&mut self, end: u64, event_time: f64, ticks: u64, arrival: f64) {
        let chain = self.chains.entry(end).or_insert(ChainEnd {
            processes: 0,
            event_time,
            touched: ticks,
        });
        chain.processes = chain.processes.saturating_add(1);
        chain.event_time = event_time;
        chain.touched = ticks;
        if self.chains.len() <= MAX_CHAINS {
            return;
        }
        let oldest = self
            .chains
            .iter()
            .min_by_key(|(_, chain)| chain.touched)
            .map(|(&end, _)| end);
        if let Some(oldest) = oldest {
            self.chains.remove(&oldest);
            // The process we forgot may come back above another chain: its number would read
            // as that chain's jump. Not sure for a while.
            self.unsure_until = arrival + YOUTH;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: u64 = 0xa;
    const B: u64 = 0xb;

    /// Feeds `numbers` of identity `key`, each with a fresh `msg_id`, one second apart from
    /// `*clock`; returns the missing counts found.
    struct Feeder {
        tracker: SequenceTracker,
        clock: f64,
        next_id: u64,
    }

    impl Feeder {
        fn new() -> Feeder {
            Feeder {
                tracker: SequenceTracker::new(1000.0),
                clock: 0.0,
                next_id: 1,
            }
        }

        fn observation(&mut self, key: u64, i: u64) -> Observation {
            self.clock += 1.0;
            self.next_id += 1;
            Observation {
                key,
                i,
                event_time: 1_700_000_000.0 + self.clock,
                id: self.next_id,
            }
        }

        fn feed(&mut self, key: u64, numbers: impl IntoIterator<Item = u64>) -> Vec<u64> {
            let mut missing = Vec::new();
            for i in numbers {
                let observation = self.observation(key, i);
                for finding in self.tracker.observe(observation, self.clock) {
                    missing.push(finding.span.missing);
                }
            }
            missing
        }
    }

    #[test]
    fn a_jump_is_counted_once_a_later_number_confirms_it() {
        let mut feeder = Feeder::new();
        assert!(feeder.feed(A, 1..=7).is_empty());
        assert!(feeder.feed(A, [10]).is_empty(), "held until confirmed");
        assert_eq!(feeder.feed(A, [11, 12]), [2]);
        // Losses every other message: each number confirms the one before.
        assert_eq!(feeder.feed(A, [14, 16, 18]), [1, 1]);
    }

    #[test]
    fn odd_numbers_alone_never_count_nor_wrap() {
        let mut feeder = Feeder::new();
        assert!(feeder.feed(A, 1..=5).is_empty());
        let odd = [0, u64::MAX, u64::MAX - 1, MAX_COUNTER + 1, 5000, 0];
        assert!(feeder.feed(A, odd).is_empty());
        assert!(feeder.feed(A, 6..=50).is_empty());
        // An implausible but confirmed jump is logged, not counted.
        assert!(feeder.feed(A, [MAX_GAP + 100, MAX_GAP + 101]).is_empty());
        assert_eq!(feeder.tracker.take_implausible().len(), 1);
    }

    #[test]
    fn duplicates_are_not_numbers_again() {
        let mut feeder = Feeder::new();
        let first = feeder.observation(A, 1);
        let second = feeder.observation(A, 2);
        for observation in [first, second, second, first, second] {
            assert!(feeder.tracker.observe(observation, 1.0).is_empty());
        }
        assert!(feeder.feed(A, [3, 4]).is_empty());
    }

    #[test]
    fn one_shots_among_long_running_publishers_are_no_loss() {
        let mut feeder = Feeder::new();
        let mut missing = Vec::new();
        for i in 1..=200 {
            missing.extend(feeder.feed(A, [i]));
            // fedmsg-logger runs: a new process each, `i` = 1 (sometimes 1, 2).
            missing.extend(feeder.feed(B, [1]));
            if i % 7 == 0 {
                missing.extend(feeder.feed(A, [1, 2]));
            }
        }
        assert!(missing.is_empty(), "{missing:?}");
        assert!(feeder.tracker.is_multiplexing());
    }

    #[test]
    fn a_restarted_publisher_counts_its_missed_first_messages_once_proven() {
        let mut feeder = Feeder::new();
        assert!(feeder.feed(A, 1..=10).is_empty());
        feeder.tracker.publisher_absent();
        feeder.tracker.connected();
        // The new process is first heard at 8, below where the old one stopped.
        let proof = u64::from(HEAD_PROOF);
        assert!(feeder.feed(A, 8..=8 + proof).is_empty());
        assert_eq!(feeder.feed(A, [9 + proof]), [7]);
        // First heard just above where the old one stopped, it is taken for the old one: the
        // fewest losses (here none), never more than the truth.
        feeder.tracker.publisher_absent();
        feeder.tracker.connected();
        assert!(feeder.feed(A, 10 + proof..=40 + proof).is_empty());
    }

    #[test]
    fn the_first_publisher_after_start_counts_its_head_only_if_it_bound_after_us() {
        let proof = u64::from(HEAD_PROOF);
        let mut bound_after = Feeder::new();
        bound_after.tracker.publisher_absent();
        bound_after.tracker.connected();
        assert_eq!(bound_after.feed(A, 214..=215 + proof), [213]);
        // Already there when we came: its first messages may be from before.
        let mut already_there = Feeder::new();
        already_there.tracker.connected();
        assert!(already_there.feed(A, 214..=215 + proof).is_empty());
    }

    #[test]
    fn a_restarted_ingestor_counts_what_it_missed_from_the_stream_tail() {
        let mut before = Feeder::new();
        let mut tail = Vec::new();
        for i in 1..=8462 {
            tail.push(before.observation(A, i));
        }
        let mut after = Feeder::new();
        after.next_id = 1 << 40;
        for observation in tail {
            after.tracker.restore(observation);
        }
        after.tracker.end_restore();
        after.tracker.connected();
        assert_eq!(after.feed(A, 12_914..=12_920), [4451]);
    }

    #[test]
    fn on_a_relay_a_young_identity_and_heads_do_not_count() {
        let mut feeder = Feeder::new();
        feeder.tracker.publisher_absent();
        feeder.tracker.connected();
        assert!(feeder.feed(A, 1..=3).is_empty());
        assert!(feeder.feed(B, 1..=3).is_empty());
        assert!(feeder.tracker.is_multiplexing());
        // B jumps while young: a process of B's started before us may be speaking up.
        assert!(feeder.feed(B, [10, 11]).is_empty());
        // A new identity first heard at 50: no head on a relay.
        assert!(feeder.feed(0xc, 50..=80).is_empty());
        feeder.clock += YOUTH;
        assert_eq!(feeder.feed(B, [20, 21]), [8]);
    }

    // --- Property test: generated interleavings against the truth. ---

    /// One generated publishing process.
    #[derive(Debug, Clone)]
    struct Process {
        key: u64,
        /// Its first number (above 1: it published before we listened).
        first: u64,
        /// For each message it sends, whether we receive it.
        received: Vec<bool>,
    }

    impl Process {
        /// Messages lost while we listened.
        fn lost(&self) -> u64 {
            self.received.iter().filter(|received| !**received).count() as u64
        }
    }

    /// What the endpoint does, in order.
    #[derive(Debug, Clone)]
    enum Step {
        /// Message `index` of process `process` (received or lost per the process).
        Send { process: usize, index: usize },
        /// The same message again (a duplicate), if received.
        Again,
        /// A number that is no process's: 0, `u64::MAX`, or beyond [`MAX_COUNTER`].
        Odd { key: u64, i: u64 },
        /// The connection ended (the network, or the publisher went away unseen): reconnect.
        Reconnect,
        /// Nothing listened when we reconnected: the publisher had gone.
        Absent,
    }

    #[derive(Debug, Clone)]
    struct Case {
        relay: bool,
        /// Nothing listened when we started.
        absent_at_start: bool,
        processes: Vec<Process>,
        steps: Vec<Step>,
        /// Seconds between arrivals.
        pace: f64,
    }

    fn odd_number() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0u64), Just(u64::MAX), (MAX_COUNTER + 1)..=u64::MAX]
    }

    fn losses(count: usize, loss: f64) -> impl Strategy<Value = Vec<bool>> {
        prop::collection::vec(prop::bool::weighted(1.0 - loss), count)
    }

    /// A publisher's own endpoint: processes one after another (restarts, the counter starting
    /// again at 1, near or at what the previous one reached), each a connection of its own.
    fn direct_case() -> impl Strategy<Value = Case> {
        let process = (
            prop::sample::select(vec![A, B]),
            1usize..80,
            prop::sample::select(vec![0.0, 0.05, 0.3, 0.7]),
        )
            .prop_flat_map(|(key, count, loss)| {
                losses(count, loss).prop_map(move |received| Process {
                    key,
                    first: 1,
                    received,
                })
            });
        (
            prop::collection::vec((process, any::<bool>()), 1..4),
            any::<bool>(),
            1u64..300,
            prop::collection::vec(
                (0u8..20, odd_number(), prop::sample::select(vec![A, B])),
                0..30,
            ),
        )
            .prop_map(|(processes, absent_at_start, pre_existing, noise)| {
                let seen_absent: Vec<bool> = processes.iter().map(|(_, absent)| *absent).collect();
                let mut processes: Vec<Process> =
                    processes.into_iter().map(|(process, _)| process).collect();
                if !absent_at_start {
                    // Already there when we came: it published before we listened.
                    processes[0].first = pre_existing;
                }
                let mut steps = Vec::new();
                let mut noise = noise.into_iter();
                for (process, generated) in processes.iter().enumerate() {
                    if process > 0 {
                        // A restart: seen (nothing listened for a moment) or not.
                        if seen_absent[process] {
                            steps.push(Step::Absent);
                        }
                        steps.push(Step::Reconnect);
                    }
                    for index in 0..generated.received.len() {
                        steps.push(Step::Send { process, index });
                        if let Some((kind, i, key)) = noise.next() {
                            match kind {
                                0..=3 => steps.push(Step::Again),
                                4..=5 => steps.push(Step::Odd { key, i }),
                                6 => steps.push(Step::Reconnect),
                                _ => {}
                            }
                        }
                    }
                }
                Case {
                    relay: false,
                    absent_at_start,
                    processes,
                    steps,
                    pace: 1.0,
                }
            })
    }

    /// A relay: processes of few identities (so they share them), long-running ones and
    /// one-shots, starting at 1 at different moments, their messages interleaved.
    fn relay_case() -> impl Strategy<Value = Case> {
        let process = (
            prop::sample::select(vec![A, B, 0xc]),
            prop_oneof![1usize..4, 1usize..60],
            prop::sample::select(vec![0.0, 0.1, 0.4]),
        )
            .prop_flat_map(|(key, count, loss)| {
                losses(count, loss).prop_map(move |received| Process {
                    key,
                    first: 1,
                    received,
                })
            });
        (
            prop::collection::vec(process, 2..8),
            prop::collection::vec(any::<prop::sample::Index>(), 0..400),
            prop::collection::vec(
                (0u8..30, odd_number(), prop::sample::select(vec![A, B])),
                0..40,
            ),
            prop::sample::select(vec![1.0, 60.0, 400.0]),
            any::<bool>(),
        )
            .prop_map(|(processes, picks, noise, pace, absent_at_start)| {
                // Interleave: each pick sends the next message of one unfinished process.
                let mut next = vec![0usize; processes.len()];
                let mut steps = Vec::new();
                let mut noise = noise.into_iter();
                let mut picks = picks.into_iter();
                loop {
                    let open: Vec<usize> = (0..processes.len())
                        .filter(|&process| next[process] < processes[process].received.len())
                        .collect();
                    if open.is_empty() {
                        break;
                    }
                    let process = match picks.next() {
                        Some(pick) => open[pick.index(open.len())],
                        None => open[0],
                    };
                    steps.push(Step::Send {
                        process,
                        index: next[process],
                    });
                    next[process] += 1;
                    if let Some((kind, i, key)) = noise.next() {
                        match kind {
                            0..=3 => steps.push(Step::Again),
                            4..=6 => steps.push(Step::Odd { key, i }),
                            7 => steps.push(Step::Reconnect),
                            _ => {}
                        }
                    }
                }
                Case {
                    relay: true,
                    absent_at_start,
                    processes,
                    steps,
                    pace,
                }
            })
    }

    /// Runs `case` through a tracker; returns the missing counts it reported.
    fn run(case: &Case) -> Vec<u64> {
        let mut tracker = SequenceTracker::new(1_700_000_000.0);
        if case.absent_at_start {
            tracker.publisher_absent();
        }
        tracker.connected();
        let mut reported = Vec::new();
        let mut arrival = 0.0;
        let mut last: Option<Observation> = None;
        let mut ids = 0u64;
        for step in &case.steps {
            arrival += case.pace;
            let observation = match step {
                Step::Send { process, index } => {
                    let generated = &case.processes[*process];
                    let i = generated.first + *index as u64;
                    // Distinct ids per process and number.
                    let id = ((*process as u64) << 32) | i;
                    let observation = Observation {
                        key: generated.key,
                        i,
                        event_time: 1_700_000_000.0 + arrival,
                        id,
                    };
                    if !generated.received[*index] {
                        continue;
                    }
                    last = Some(observation);
                    observation
                }
                Step::Again => match last {
                    Some(observation) => observation,
                    None => continue,
                },
                Step::Odd { key, i } => {
                    ids += 1;
                    Observation {
                        key: *key,
                        i: *i,
                        event_time: 1_700_000_000.0 + arrival,
                        id: u64::MAX - ids,
                    }
                }
                Step::Reconnect => {
                    tracker.connected();
                    continue;
                }
                Step::Absent => {
                    tracker.publisher_absent();
                    continue;
                }
            };
            for finding in tracker.observe(observation, arrival) {
                reported.push(finding.span.missing);
            }
        }
        reported
    }

    /// The case as a line: `A3` message 3 of identity A received, `(A3)` lost, `=` a
    /// duplicate, `!` an odd number, `|` a reconnection; processes as `p0:` prefixes.
    fn describe(case: &Case) -> String {
        let mut line = format!(
            "relay={} absent={} pace={}: ",
            case.relay, case.absent_at_start, case.pace
        );
        for step in &case.steps {
            match step {
                Step::Send { process, index } => {
                    let generated = &case.processes[*process];
                    let i = generated.first + *index as u64;
                    if generated.received[*index] {
                        line.push_str(&format!("p{process}:{:x}{i} ", generated.key));
                    } else {
                        line.push_str(&format!("(p{process}:{:x}{i}) ", generated.key));
                    }
                }
                Step::Again => line.push_str("= "),
                Step::Odd { .. } => line.push_str("! "),
                Step::Reconnect => line.push_str("| "),
                Step::Absent => line.push_str("_ "),
            }
        }
        line
    }

    fn truth(case: &Case) -> u64 {
        case.processes.iter().map(Process::lost).sum()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// On a publisher's own endpoint, across restarts with colliding counters, duplicates,
        /// odd numbers and reconnections: never more than was lost.
        #[test]
        fn a_publishers_endpoint_never_reports_more_than_was_lost(case in direct_case()) {
            let reported: u64 = run(&case).iter().sum();
            prop_assert!(reported <= truth(&case), "reported {reported}, lost {}: {}", truth(&case), describe(&case));
        }

        /// On a relay, with identities shared by several processes, one-shots and restarts:
        /// never more than was lost.
        #[test]
        fn a_relay_never_reports_more_than_was_lost(case in relay_case()) {
            let reported: u64 = run(&case).iter().sum();
            prop_assert!(reported <= truth(&case), "reported {reported}, lost {}: {}", truth(&case), describe(&case));
        }

        /// One publisher, bound after we started, whose last messages arrive (so every gap is
        /// followed by proof): exactly what was lost, whatever odd numbers and duplicates came
        /// between.
        #[test]
        fn a_single_publishers_gaps_are_reported_exactly(
            received in prop::collection::vec(prop::bool::weighted(0.7), 1..200),
            noise in prop::collection::vec((0u8..10, odd_number()), 0..60),
        ) {
            let mut received = received;
            received.extend(std::iter::repeat_n(true, HEAD_PROOF as usize + 2));
            let process = Process { key: A, first: 1, received };
            let mut steps = Vec::new();
            let mut noise = noise.into_iter();
            for index in 0..process.received.len() {
                steps.push(Step::Send { process: 0, index });
                if let Some((kind, i)) = noise.next() {
                    match kind {
                        0..=2 => steps.push(Step::Again),
                        3..=5 => steps.push(Step::Odd { key: A, i }),
                        _ => {}
                    }
                }
            }
            let case = Case { relay: false, absent_at_start: true, processes: vec![process], steps, pace: 1.0 };
            let reported: u64 = run(&case).iter().sum();
            prop_assert_eq!(reported, truth(&case));
        }

        /// Nothing turns tracking off: after any relay or publisher input, a new identity's gap
        /// is still counted exactly once it is past its youth.
        #[test]
        fn no_input_turns_tracking_off(case in prop_oneof![direct_case(), relay_case()]) {
            let mut tracker = SequenceTracker::new(1_700_000_000.0);
            tracker.connected();
            let mut arrival = 0.0;
            for (index, step) in case.steps.iter().enumerate() {
                if let Step::Send { process, index: message } = step {
                    let generated = &case.processes[*process];
                    let i = generated.first + *message as u64;
                    arrival += case.pace;
                    let observation = Observation { key: generated.key, i, event_time: arrival, id: index as u64 };
                    tracker.observe(observation, arrival);
                }
            }
            let fresh = 0xf00d;
            let mut found = Vec::new();
            for (offset, i) in [1u64, 2, 3, 7, 8].into_iter().enumerate() {
                if i == 7 {
                    // Past its youth, should the endpoint have proved to be a relay.
                    arrival += YOUTH;
                }
                let observation = Observation { key: fresh, i, event_time: arrival, id: (1 << 60) + offset as u64 };
                found.extend(tracker.observe(observation, arrival));
            }
            let missing: Vec<u64> = found.iter().map(|finding| finding.span.missing).collect();
            prop_assert_eq!(missing, vec![3]);
        }
    }
}
