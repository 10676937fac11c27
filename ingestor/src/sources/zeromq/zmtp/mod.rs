//! A ZMTP 3 SUB client: just what subscribing to a fedmsg publisher takes, with bounds.
//!
//! Why our own and not the `zeromq` crate (0.7), which earlier versions used: its decoder
//! reserves whatever size a frame header declares before the body arrives (a 9-byte header
//! declaring 64 GiB aborted the ingestor on the failed allocation), it has no message size
//! limit, and it does not know ZMTP 3.1's PING: a libzmq publisher with `ZMQ_HEARTBEAT_IVL` set
//! made it drop the connection at every heartbeat, losing what was in flight. Its reconnection
//! also needed supervising from outside (see the git history of `subscriber.rs`). Patching it
//! would have meant vendoring and maintaining a fork of ~8 000 lines, of which a subscriber uses
//! a few hundred: the greeting, the NULL handshake, subscriptions, frames, and the heartbeat
//! commands, which are this module.
//!
//! - [`codec`]: greeting, commands and a frame decoder that checks every declared size against
//!   the message limit from the header alone, so at most one message under the limit is ever
//!   buffered; nothing is allocated for what a peer merely declares.
//! - [`Connection`]: one TCP or IPC connection: connect (refused at once when nothing
//!   listens: no hidden retries, the caller's schedule decides), handshake with a deadline,
//!   subscriptions, then messages; PINGs are answered with PONGs as they come, and
//!   [`Connection::ping`] asks a ZMTP 3.1 peer whether it is still there.
//!
//! Supported: ZMTP 3.0 and 3.1 peers (libzmq 4.x: pyzmq, fedmsg) with the NULL mechanism,
//! PUB or XPUB sockets. ZMTP 1.0/2.0 peers (libzmq 2 and 3) and CURVE/PLAIN are refused with
//! a reason.

pub mod codec;
mod connection;

pub use codec::FrameError;
pub use connection::{Connection, Event, ZmtpError};

/// Where a publisher listens: `tcp://host:port` or `ipc://path`, as fedmsg's `endpoints` say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp { host: String, port: u16 },
    Ipc { path: std::path::PathBuf },
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Endpoint, String> {
        if let Some(path) = text.strip_prefix("ipc://") {
            if path.is_empty() {
                return Err(format!("{text:?}: an ipc endpoint needs a path"));
            }
            return Ok(Endpoint::Ipc { path: path.into() });
        }
        let Some(address) = text.strip_prefix("tcp://") else {
            return Err(format!("{text:?}: expected tcp://host:port or ipc://path"));
        };
        let Some((host, port)) = address.rsplit_once(':') else {
            return Err(format!("{text:?}: no port"));
        };
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{text:?}: the port is not a number from 0 to 65535"))?;
        // An IPv6 address is written in brackets, as in a URL.
        let host = host
            .strip_prefix('[')
            .and_then(|inner| inner.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() || host == "*" {
            return Err(format!("{text:?}: a host to connect to is needed"));
        }
        Ok(Endpoint::Tcp {
            host: host.to_string(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_parsed_as_fedmsg_writes_them() {
        assert_eq!(
            "tcp://hub.fedoraproject.org:9940".parse(),
            Ok(Endpoint::Tcp {
                host: "hub.fedoraproject.org".into(),
                port: 9940
            })
        );
        assert_eq!(
            "tcp://[::1]:3000".parse(),
            Ok(Endpoint::Tcp {
                host: "::1".into(),
                port: 3000
            })
        );
        assert_eq!(
            "ipc:///var/run/fedmsg/monitoring-bodhi.socket".parse(),
            Ok(Endpoint::Ipc {
                path: "/var/run/fedmsg/monitoring-bodhi.socket".into()
            })
        );
        for bad in [
            "tcp://*:9940",
            "tcp://host",
            "tcp://host:99999",
            "udp://x:1",
            "ipc://",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }
}
