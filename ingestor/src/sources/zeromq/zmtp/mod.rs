//! ZMTP 3, as far as the guard in front of the `zeromq` crate needs it: framing without I/O
//! and the connection to a publisher.
//!
//! - [`codec`]: greeting, commands and a frame decoder that checks every declared size against
//!   the message limit from the header alone, so at most one message under the limit is ever
//!   buffered and nothing is allocated for what a peer merely declares; a message over the
//!   limit is dropped as it comes (up to a bound) without costing the ones after it.
//! - [`transport`]: one TCP or IPC connect to a publisher, refused at once when nothing
//!   listens (no hidden retries: the subscriber's schedule decides).
//!
//! Written from RFC 23 (ZMTP 3.0) and RFC 37 (ZMTP 3.1). Supported publishers: ZMTP 3.0 and
//! 3.1 peers (libzmq 4.x: pyzmq, fedmsg) with the NULL mechanism, PUB or XPUB sockets. ZMTP
//! 1.0/2.0 peers (libzmq 2 and 3) and CURVE/PLAIN are refused with a reason. Why the crate
//! needs a guard at all: [`super::guard`].

pub mod codec;
pub mod transport;

pub use transport::{connect, ConnectError, Transport};

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
