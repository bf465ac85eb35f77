//! How one strata event travels as a JetStream message.
//!
//! - subject: `<prefix>.<escaped stream id>` ([`crate::subject`]);
//! - payload: the event's data, unchanged;
//! - headers: `Nats-Msg-Id` (the event id: JetStream stores a retried publish once within the
//!   stream's duplicate window), `Strata-Event-Id`, `Strata-Stream` (the escaped stream id),
//!   `Strata-Position`, `Strata-Version`, `Strata-Type` (escaped like a stream id),
//!   `Strata-Recorded-At` (unix microseconds) and `Strata-Metadata` (hex, absent when empty).

use async_nats::HeaderMap;
use bytes::Bytes;
use strata::{Event, NewEvent, Uuid};

use crate::subject::{escape_token, event_subject, unescape_token};

/// Header carrying the event id (also sent as `Nats-Msg-Id`).
pub const EVENT_ID: &str = "Strata-Event-Id";
/// Header carrying the escaped stream id.
pub const STREAM: &str = "Strata-Stream";
/// Header carrying the source position.
pub const POSITION: &str = "Strata-Position";
/// Header carrying the version within the stream.
pub const VERSION: &str = "Strata-Version";
/// Header carrying the escaped event type.
pub const EVENT_TYPE: &str = "Strata-Type";
/// Header carrying the source's recorded time (unix microseconds).
pub const RECORDED_AT: &str = "Strata-Recorded-At";
/// Header carrying the metadata as hex.
pub const METADATA: &str = "Strata-Metadata";

/// An event as read back from a JetStream message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicatedEvent {
    /// The stream id in the source store.
    pub stream_id: String,
    /// The version within that stream.
    pub version: u64,
    /// The position in the source store.
    pub position: u64,
    /// The event type.
    pub event_type: String,
    /// The event id.
    pub event_id: Uuid,
    /// When the source stored it (unix microseconds).
    pub recorded_at: i64,
    /// The payload.
    pub data: Bytes,
    /// The metadata.
    pub metadata: Bytes,
}

impl ReplicatedEvent {
    /// The event to append into the target store, under `stream_prefix`.
    pub fn to_new_event(&self) -> NewEvent {
        NewEvent::new(self.event_type.clone(), self.data.clone())
            .with_metadata(self.metadata.clone())
            .with_id(self.event_id)
    }
}

/// Subject, headers and payload for `event`.
pub fn encode(prefix: &str, event: &Event) -> (String, HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    let id = event.event_id.to_string();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
    headers.insert(EVENT_ID, id.as_str());
    headers.insert(STREAM, escape_token(&event.stream_id).as_str());
    headers.insert(POSITION, event.position.to_string().as_str());
    headers.insert(VERSION, event.version.to_string().as_str());
    headers.insert(EVENT_TYPE, escape_token(&event.event_type).as_str());
    headers.insert(RECORDED_AT, event.recorded_at.to_string().as_str());
    if !event.metadata.is_empty() {
        headers.insert(METADATA, hex::encode(&event.metadata).as_str());
    }
    (
        event_subject(prefix, &event.stream_id),
        headers,
        event.data.clone(),
    )
}

/// Reads an event back from a message's headers and payload; the error names what is wrong.
pub fn decode(headers: Option<&HeaderMap>, payload: &Bytes) -> Result<ReplicatedEvent, String> {
    let headers = headers.ok_or("no headers: not a strata event")?;
    let get = |name: &str| -> Result<&str, String> {
        headers
            .get(name)
            .map(|value| value.as_str())
            .ok_or_else(|| format!("header {name} missing"))
    };
    let number = |name: &str| -> Result<i64, String> {
        get(name)?
            .parse::<i64>()
            .map_err(|e| format!("header {name}: {e}"))
    };
    let unescape = |name: &str| -> Result<String, String> {
        unescape_token(get(name)?).ok_or_else(|| format!("header {name} is not escaped text"))
    };
    let event_id =
        Uuid::parse_str(get(EVENT_ID)?).map_err(|e| format!("header {EVENT_ID}: {e}"))?;
    let positive = |name: &str| -> Result<u64, String> {
        let value = number(name)?;
        if value < 1 {
            return Err(format!("header {name} must be at least 1, got {value}"));
        }
        Ok(value as u64)
    };
    let metadata = match headers.get(METADATA) {
        Some(value) => hex::decode(value.as_str())
            .map_err(|e| format!("header {METADATA}: {e}"))?
            .into(),
        None => Bytes::new(),
    };
    Ok(ReplicatedEvent {
        stream_id: unescape(STREAM)?,
        version: positive(VERSION)?,
        position: positive(POSITION)?,
        event_type: unescape(EVENT_TYPE)?,
        event_id,
        recorded_at: number(RECORDED_AT)?,
        data: payload.clone(),
        metadata,
    })
}

/// Bytes the server counts against its `max_payload` for a message: the header block as sent
/// (`NATS/1.0` line, one `Name: value` line each, blank line) plus the payload.
pub fn message_size(headers: &HeaderMap, payload: &[u8]) -> usize {
    let mut size = "NATS/1.0\r\n".len() + "\r\n".len();
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        for value in values {
            let value: &str = value.as_ref();
            size += name.len() + ": ".len() + value.len() + "\r\n".len();
        }
    }
    size + payload.len()
}

/// Headers as text, one `Name: value` a line (for keeping a message in a dead letter).
pub fn headers_to_text(headers: &HeaderMap) -> String {
    let mut lines: Vec<String> = Vec::new();
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        for value in values {
            let value: &str = value.as_ref();
            lines.push(format!("{name}: {value}"));
        }
    }
    lines.sort();
    lines.join("\n")
}

/// Reverses [`headers_to_text`]; lines that are not `Name: value` are skipped.
pub fn headers_from_text(text: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in text.lines() {
        if let Some((name, value)) = line.split_once(": ") {
            if let Ok(name) = name.parse::<async_nats::HeaderName>() {
                headers.append(name, value);
            }
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_round_trips_through_headers_and_payload() {
        let event = Event {
            position: 42,
            stream_id: "order.7 *>".into(),
            version: 3,
            event_type: "order placed".into(),
            event_id: Uuid::now_v7(),
            recorded_at: 1_700_000_000_123_456,
            data: Bytes::from_static(b"\x00\x01data"),
            metadata: Bytes::from_static(b"\xffmeta"),
            tags: Default::default(),
        };
        let (subject, headers, payload) = encode("strata.device-a", &event);
        assert_eq!(subject, "strata.device-a.order%2E7%20%2A%3E");
        assert_eq!(
            headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .unwrap()
                .as_str(),
            event.event_id.to_string()
        );
        let back = decode(Some(&headers), &payload).unwrap();
        assert_eq!(back.stream_id, "order.7 *>");
        assert_eq!(back.version, 3);
        assert_eq!(back.position, 42);
        assert_eq!(back.event_type, "order placed");
        assert_eq!(back.event_id, event.event_id);
        assert_eq!(back.recorded_at, event.recorded_at);
        assert_eq!(back.data, event.data);
        assert_eq!(back.metadata, event.metadata);
    }

    #[test]
    fn headers_survive_text_and_are_counted_like_the_server_does() {
        let event = Event {
            position: 1,
            stream_id: "s".into(),
            version: 1,
            event_type: "t".into(),
            event_id: Uuid::now_v7(),
            recorded_at: 5,
            data: Bytes::from_static(b"12345"),
            metadata: Bytes::from_static(b"m"),
            tags: Default::default(),
        };
        let (_, headers, payload) = encode("p", &event);
        let back = decode(
            Some(&headers_from_text(&headers_to_text(&headers))),
            &payload,
        )
        .unwrap();
        assert_eq!(back.event_id, event.event_id);
        assert_eq!(back.metadata, event.metadata);
        let text_size: usize = headers_to_text(&headers)
            .lines()
            .map(|line| line.len() + 2)
            .sum();
        assert_eq!(message_size(&headers, &payload), 10 + text_size + 2 + 5);
    }

    #[test]
    fn messages_that_are_not_strata_events_are_refused_with_a_reason() {
        assert!(decode(None, &Bytes::new())
            .unwrap_err()
            .contains("no headers"));
        let mut headers = HeaderMap::new();
        headers.insert(EVENT_ID, Uuid::nil().to_string().as_str());
        let error = decode(Some(&headers), &Bytes::new()).unwrap_err();
        assert!(error.contains("missing"), "{error}");
    }
}
