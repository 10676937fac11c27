//! From `[ingestor.amqp]` to what lapin connects with: the TLS files read once, at start-up, so a
//! wrong path is an error when the service starts rather than a reconnect loop.

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use statscache_shared::config::AmqpConfig;

use super::error::AmqpError;

/// The TLS settings of a connection: custom CA certificates and a client identity, each
/// optional. An `amqp://` URL ignores them; `amqps://` uses them.
pub(super) fn tls_config(config: &AmqpConfig) -> Result<OwnedTLSConfig, AmqpError> {
    let cert_chain = if config.tls_ca_file.is_empty() {
        None
    } else {
        Some(read_text("tls-ca-file", &config.tls_ca_file)?)
    };
    let identity = match (
        config.tls_cert_file.is_empty(),
        config.tls_key_file.is_empty(),
    ) {
        (true, true) => None,
        (false, true) => {
            return Err(AmqpError::HalfIdentity {
                given: "tls-cert-file",
            })
        }
        (true, false) => {
            return Err(AmqpError::HalfIdentity {
                given: "tls-key-file",
            })
        }
        (false, false) => Some(OwnedIdentity::PKCS8 {
            pem: read_text("tls-cert-file", &config.tls_cert_file)?.into_bytes(),
            key: read_text("tls-key-file", &config.tls_key_file)?.into_bytes(),
        }),
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

fn read_text(what: &'static str, path: &str) -> Result<String, AmqpError> {
    std::fs::read_to_string(path).map_err(|error| AmqpError::TlsFile {
        what,
        path: path.to_string(),
        detail: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use statscache_shared::config::Config;

    fn amqp_config() -> AmqpConfig {
        Config::load(None).expect("defaults load").ingestor.amqp
    }

    #[test]
    fn no_tls_files_means_system_defaults() {
        let tls = tls_config(&amqp_config()).expect("defaults are valid");
        assert!(tls.identity.is_none());
        assert!(tls.cert_chain.is_none());
    }

    #[test]
    fn tls_files_are_read_and_checked() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let ca = directory.path().join("ca.pem");
        std::fs::write(&ca, "CA").expect("write");
        let mut config = amqp_config();
        config.tls_ca_file = ca.display().to_string();
        let tls = tls_config(&config).expect("readable CA");
        assert_eq!(tls.cert_chain.as_deref(), Some("CA"));

        config.tls_cert_file = ca.display().to_string();
        let half = tls_config(&config).expect_err("a certificate without its key");
        assert!(matches!(half, AmqpError::HalfIdentity { .. }), "{half}");

        config.tls_key_file = directory.path().join("missing.pem").display().to_string();
        let missing = tls_config(&config).expect_err("a missing key file");
        assert!(missing.to_string().contains("tls-key-file"), "{missing}");
    }
}
