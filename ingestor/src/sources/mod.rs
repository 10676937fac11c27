//! Input sources, one folder each with the same shape: the source (`mod.rs`), its errors
//! (`error.rs`) and its tests.
//!
//! - [`zeromq`]: live fedmsg messages from ZeroMQ endpoints.
//! - [`amqp`]: live fedora-messaging messages from a RabbitMQ queue, acked once stored.
//! - [`datagrepper`]: history from datagrepper, to fill the gaps live delivery leaves.

pub mod amqp;
pub mod datagrepper;
pub mod zeromq;
