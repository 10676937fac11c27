//! A row of datanommer's `messages` table, and the fedmsg envelope it stands for.
//!
//! datanommer (`fedora-infra/datanommer`, `datanommer.models`) stores one row per message it
//! consumed: `id` (serial), `msg_id`, `i`, `topic`, `timestamp` (UTC, no zone), `certificate`,
//! `signature`, `category`, `agent_name` (`username` before datanommer 1.1), `crypto`,
//! `source_name`, `source_version`, `msg` (JSON text), `headers` (JSONB). Its unique key is
//! `(msg_id, timestamp)`, so it may hold two copies of one `msg_id` stamped differently: they
//! reach the writer as copies like any other (the first read counts). Users and packages are
//! not read from its association tables: the worker names them with the same rules as for a
//! live message, so that a statistic does not depend on which path stored a message.

use serde_json::Value;
use statscache_shared::message::{Envelope, InvalidMessage};

/// Where a row stands in datanommer's time order: its timestamp (as PostgreSQL prints it,
/// `YYYY-MM-DD HH:MM:SS.ffffff`, which sorts as text in time order) and its `id`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub timestamp: String,
    pub id: i64,
}

impl Position {
    /// Before every row.
    pub fn start() -> Position {
        Position {
            timestamp: String::new(),
            id: i64::MIN,
        }
    }

    /// `"<timestamp>|<id>"`, as the progress store keeps it.
    pub fn encode(&self) -> String {
        format!("{}|{}", self.timestamp, self.id)
    }

    pub fn decode(text: &str) -> Option<Position> {
        let (timestamp, id) = text.rsplit_once('|')?;
        Some(Position {
            timestamp: timestamp.to_string(),
            id: id.parse().ok()?,
        })
    }
}

/// The columns of one row that the envelope needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub position: Position,
    /// `timestamp` as epoch seconds.
    pub epoch: f64,
    pub msg_id: Option<String>,
    pub i: Option<i64>,
    pub topic: String,
    pub certificate: Option<String>,
    pub signature: Option<String>,
    pub agent_name: Option<String>,
    pub crypto: Option<String>,
    pub source_name: Option<String>,
    pub source_version: Option<String>,
    /// JSON text.
    pub msg: String,
    /// JSON text, if any.
    pub headers: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error("datanommer row {id}: its msg is not JSON: {detail}")]
    Msg { id: i64, detail: String },
    #[error("datanommer row {id}: its headers are not JSON: {detail}")]
    Headers { id: i64, detail: String },
    #[error("datanommer row {id}: {source}")]
    Envelope { id: i64, source: InvalidMessage },
}

impl Row {
    /// The envelope datagrepper would serve for this row (`Message.as_dict`, without the users
    /// and packages lists), validated as any message is.
    pub fn envelope(&self) -> Result<Envelope, RowError> {
        let id = self.position.id;
        let msg: Value = serde_json::from_str(&self.msg).map_err(|error| RowError::Msg {
            id,
            detail: error.to_string(),
        })?;
        let headers =
            match &self.headers {
                Some(text) => Some(serde_json::from_str::<Value>(text).map_err(|error| {
                    RowError::Headers {
                        id,
                        detail: error.to_string(),
                    }
                })?),
                None => None,
            };
        let mut envelope = serde_json::json!({
            "topic": self.topic,
            "msg": msg,
            "timestamp": self.epoch,
        });
        let optional_text = [
            ("msg_id", &self.msg_id),
            ("certificate", &self.certificate),
            ("signature", &self.signature),
            ("username", &self.agent_name),
            ("crypto", &self.crypto),
            ("source_name", &self.source_name),
            ("source_version", &self.source_version),
        ];
        for (field, value) in optional_text {
            if let Some(value) = value {
                envelope[field] = Value::from(value.as_str());
            }
        }
        if let Some(i) = self.i.and_then(|i| u64::try_from(i).ok()) {
            envelope["i"] = Value::from(i);
        }
        if let Some(headers) = headers.filter(|headers| !headers.is_null()) {
            envelope["headers"] = headers;
        }
        Envelope::from_value(envelope).map_err(|source| RowError::Envelope { id, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        Row {
            position: Position {
                timestamp: "2013-01-30 12:00:00.250000".into(),
                id: 7,
            },
            epoch: 1_359_547_200.25,
            msg_id: Some("2013-a".into()),
            i: Some(3),
            topic: "org.fedoraproject.prod.git.receive".into(),
            certificate: None,
            signature: None,
            agent_name: Some("apache".into()),
            crypto: None,
            source_name: Some("datanommer".into()),
            source_version: Some("1.4.0".into()),
            msg: r#"{"commit": {"username": "ralph"}}"#.into(),
            headers: Some(r#"{"sent-at": "2013-01-30T12:00:00+00:00"}"#.into()),
        }
    }

    #[test]
    fn a_row_is_the_envelope_datagrepper_serves() {
        let envelope = row().envelope().unwrap();
        assert_eq!(envelope.identity(), "2013-a");
        assert_eq!(envelope.event_time(), 1_359_547_200.25);
        assert_eq!(envelope.username.as_deref(), Some("apache"));
        assert_eq!(envelope.i, Some(3));
        assert_eq!(envelope.msg["commit"]["username"], "ralph");
        assert_eq!(
            envelope.headers.unwrap()["sent-at"],
            "2013-01-30T12:00:00+00:00"
        );
    }

    #[test]
    fn bad_rows_say_which_and_why() {
        let mut bad = row();
        bad.msg = "{not json".into();
        assert!(matches!(bad.envelope(), Err(RowError::Msg { id: 7, .. })));
        let mut bad = row();
        bad.topic = String::new();
        assert!(matches!(
            bad.envelope(),
            Err(RowError::Envelope { id: 7, .. })
        ));
    }

    #[test]
    fn positions_round_trip_and_sort_in_time_order() {
        let position = row().position;
        assert_eq!(Position::decode(&position.encode()), Some(position.clone()));
        assert!(Position::start() < position);
        let later = Position {
            timestamp: "2013-01-30 12:00:01.000000".into(),
            id: 1,
        };
        assert!(position < later);
    }
}
