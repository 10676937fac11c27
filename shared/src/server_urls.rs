//! One or several server URLs under one configuration key.
//!
//! A clustered server (a 3-node JetStream cluster, replicated ClickHouse) is reached through any
//! of its nodes, so a client is given all of them and fails over when one dies. The key that
//! used to name one server keeps working: it takes a single URL, a TOML list, or one string with
//! commas between URLs (the NATS convention, and what fits one environment variable:
//! `STATSCACHE_NATS__URL=nats://a:4222,nats://b:4222`).

use serde::{Deserialize, Serialize};

/// The URLs of a key, in the order given; never empty once deserialized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ServerUrls(Vec<String>);

impl ServerUrls {
    /// Splits `text` on commas, dropping blanks.
    pub fn parse(text: &str) -> ServerUrls {
        let urls = text
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(str::to_string)
            .collect();
        ServerUrls(urls)
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// The first URL: where a client that cannot fail over goes.
    pub fn first(&self) -> &str {
        self.0.first().map(String::as_str).unwrap_or_default()
    }
}

impl std::fmt::Display for ServerUrls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0.join(","))
    }
}

/// What the key may hold in a file or the environment.
#[derive(Deserialize)]
#[serde(untagged)]
enum Written {
    One(String),
    Several(Vec<String>),
}

impl<'de> Deserialize<'de> for ServerUrls {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let urls = match Written::deserialize(deserializer)? {
            Written::One(text) => ServerUrls::parse(&text),
            Written::Several(list) => ServerUrls::parse(&list.join(",")),
        };
        if urls.0.is_empty() {
            return Err(serde::de::Error::custom(
                "at least one server URL is needed",
            ));
        }
        Ok(urls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_json(json: &str) -> Result<ServerUrls, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn one_url_a_list_or_commas() {
        let one = from_json(r#""nats://a:4222""#).expect("one");
        assert_eq!(one.as_slice(), ["nats://a:4222"]);
        let listed = from_json(r#"["nats://a:4222", "nats://b:4222"]"#).expect("list");
        let commas = from_json(r#""nats://a:4222, nats://b:4222,""#).expect("commas");
        assert_eq!(listed, commas);
        assert_eq!(listed.to_string(), "nats://a:4222,nats://b:4222");
        assert_eq!(listed.first(), "nats://a:4222");
    }

    #[test]
    fn no_url_is_an_error() {
        assert!(from_json(r#""""#).is_err());
        assert!(from_json("[]").is_err());
    }
}
