//! One message, one count: of all the copies of a `msg_id`, the first to arrive in the stream is
//! the one stored and counted, whatever times and contents the others carry.
//!
//! Copies of one identity reach the stream from several places: the ZeroMQ original and the
//! zmq→amqp bridge's copy (stamped with the bridge's clock), a datagrepper backfill hours later
//! (timestamps cut to the second), a republisher. Within JetStream's duplicate window only the
//! first is stored; beyond it every copy is. A statistic over facts counts an identity once
//! *per period*, so two copies stamped in different hours would count twice. Hence one copy
//! per identity, chosen once and never moved:
//!
//! 1. [`runs`]: a worker cuts what it holds into runs that arrived within less than the
//!    duplicate window, oldest first; a run never holds two stored copies of one identity.
//! 2. [`barrier`]: a run waits until everything that arrived a window before its newest
//!    message is settled, so every earlier copy is stored (or parked) before it looks.
//! 3. [`copies`]: the run looks its identities up in `message_identities`; a message whose
//!    identity is stored under another copy is kept in `message_copies` and counted nowhere.
//!    [`fingerprint`] tells the stored copy itself (redelivered, replayed) from another copy.
//!
//! Why "first to arrive" and not "earliest timestamp" or "the fedmsg original": a choice that a
//! later copy could overturn would move a counted message from one period to another, and
//! rollups only ever grow (ARCHITECTURE.md, "Rollups"): the exactness argument needs a count
//! that never decreases. The first arrival is decided by the stream's order, is final once
//! stored, and in practice is the original (bridges, backfills and republishers copy what was
//! already published).

pub mod barrier;
pub mod copies;
pub mod fingerprint;
pub mod runs;
pub mod turns;
