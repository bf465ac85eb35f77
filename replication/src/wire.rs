//! How one strata event travels as a JetStream message.
//!
//! - subject: `<prefix>.<escaped stream id>` ([`crate::subject`]);
//! - payload: the event's data, unchanged;
//! - headers: `Nats-Msg-Id` (the event id: JetStream stores a retried publish once within the
//!   stream's duplicate window), `Strata-Event-Id`, `Strata-Stream` (the escaped stream id),
//!   `Strata-Position`, `Strata-Version`, `Strata-Type` (escaped like a stream id),
//!   `Strata-Recorded-At` (unix microseconds), `Strata-Metadata` (hex, absent when empty) and
//!   `Strata-Tags` (the event's DCB tags, absent when it has none).
//!
//! `Strata-Tags` holds each tag escaped like a stream id ([`escape_token`]: every byte outside
//! `[A-Za-z0-9_-]` becomes `%XX`), joined by `,`. A comma in a tag is escaped (`%2C`), so the
//! separator is unambiguous and any tag of UTF-8 (quotes, spaces, commas, line breaks,
//! non-ASCII) round-trips, while the header value stays printable ASCII without CR or LF. A
//! message without the header is an untagged event (what publishers before tags sent). A
//! header that is not such a list (an empty item, a bad escape, a tag over
//! `limits::MAX_TAG_BYTES`, more than `limits::MAX_TAGS_PER_EVENT` tags) makes [`decode`] fail:
//! the ingester dead-letters the message like any other malformed one.

use async_nats::HeaderMap;
use bytes::Bytes;
use strata::{limits, Event, NewEvent, Uuid};

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
/// Header carrying the tags: each escaped like a stream id, joined by `,`.
pub const TAGS: &str = "Strata-Tags";

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
    /// The tags, in the order the header lists them (the source's: sorted, no repeats).
    pub tags: Vec<String>,
}

impl ReplicatedEvent {
    /// The event to append into the target store, under `stream_prefix`.
    pub fn to_new_event(&self) -> NewEvent {
        NewEvent::new(self.event_type.clone(), self.data.clone())
            .with_metadata(self.metadata.clone())
            .with_id(self.event_id)
            .with_tags(self.tags.iter().cloned())
    }
}

/// The value of the `Strata-Tags` header for `tags`; `None` when there are none (the header
/// is then left out).
pub fn encode_tags(tags: &[String]) -> Option<String> {
    if tags.is_empty() {
        return None;
    }
    let escaped: Vec<String> = tags.iter().map(|tag| escape_token(tag)).collect();
    Some(escaped.join(","))
}

/// Reverses [`encode_tags`]; the error says what is wrong with `value`.
pub fn decode_tags(value: &str) -> Result<Vec<String>, String> {
    let mut tags = Vec::new();
    for (index, item) in value.split(',').enumerate() {
        if item.is_empty() {
            return Err(format!("header {TAGS}: tag {index} is empty"));
        }
        let tag = unescape_token(item)
            .ok_or_else(|| format!("header {TAGS}: tag {index} is not escaped text"))?;
        if tag.len() > limits::MAX_TAG_BYTES {
            return Err(format!(
                "header {TAGS}: tag {index} is {} bytes, over the limit of {}",
                tag.len(),
                limits::MAX_TAG_BYTES
            ));
        }
        tags.push(tag);
    }
    if tags.len() > limits::MAX_TAGS_PER_EVENT {
        return Err(format!(
            "header {TAGS}: {} tags, over the limit of {}",
            tags.len(),
            limits::MAX_TAGS_PER_EVENT
        ));
    }
    Ok(tags)
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
    if let Some(tags) = encode_tags(&event.tags) {
        headers.insert(TAGS, tags.as_str());
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
    let tags = match headers.get(TAGS) {
        Some(value) => decode_tags(value.as_str())?,
        None => Vec::new(),
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
        tags,
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
        assert!(back.tags.is_empty());
        assert!(
            headers.get(TAGS).is_none(),
            "no header for an untagged event"
        );
    }

    /// Tags that break naive encodings: separators, quotes, escapes, whitespace, line breaks,
    /// non-ASCII, a tag that looks escaped already, and the longest tag allowed.
    fn hostile_tags() -> Vec<String> {
        let mut tags: Vec<String> = [
            "course:c1",
            "a,b",
            ",",
            "\"quoted\"",
            "'single'",
            "with space",
            " leading",
            "tab\there",
            "line\r\nbreak",
            "%2C",
            "%",
            "100%",
            "über",
            "日本語",
            "emoji 🎉",
            "semi;colon=eq",
            "[\"json\"]",
            "\u{0}nul",
            "\u{7f}del",
        ]
        .map(String::from)
        .to_vec();
        tags.push("é".repeat(127)); // 254 bytes
        tags.push("x".repeat(limits::MAX_TAG_BYTES));
        tags.sort();
        tags
    }

    #[test]
    fn any_tags_round_trip_through_the_header_and_keep_it_printable_ascii() {
        let tags = hostile_tags();
        let value = encode_tags(&tags).unwrap();
        assert!(
            value.bytes().all(|b| b.is_ascii_graphic()),
            "printable ASCII, no spaces, CR or LF: {value}"
        );
        assert_eq!(decode_tags(&value).unwrap(), tags);
        assert_eq!(encode_tags(&[]), None);
        for one in &tags {
            let single = std::slice::from_ref(one);
            assert_eq!(decode_tags(&encode_tags(single).unwrap()).unwrap(), single);
        }

        // Through a whole message, and through the dead-letter text form of the headers.
        let event = Event {
            position: 9,
            stream_id: "s".into(),
            version: 1,
            event_type: "t".into(),
            event_id: Uuid::now_v7(),
            recorded_at: 5,
            data: Bytes::new(),
            metadata: Bytes::new(),
            tags: tags.clone().into(),
        };
        let (_, headers, payload) = encode("p", &event);
        assert_eq!(headers.get(TAGS).unwrap().as_str(), value);
        let back = decode(Some(&headers), &payload).unwrap();
        assert_eq!(back.tags, tags);
        assert_eq!(back.to_new_event().tags, tags);
        let again = decode(
            Some(&headers_from_text(&headers_to_text(&headers))),
            &payload,
        )
        .unwrap();
        assert_eq!(again.tags, tags);
    }

    #[test]
    fn malformed_tag_headers_are_refused_with_a_reason() {
        let too_long = "x".repeat(limits::MAX_TAG_BYTES + 1);
        let too_many = vec!["t"; limits::MAX_TAGS_PER_EVENT + 1].join(",");
        for (value, reason) in [
            ("", "tag 0 is empty"),
            ("a,,b", "tag 1 is empty"),
            ("a,", "tag 1 is empty"),
            ("a b", "not escaped text"),
            ("a%2", "not escaped text"),
            ("a%2c", "not escaped text"),
            ("%FF", "not escaped text"),
            ("\"a\"", "not escaped text"),
            (too_long.as_str(), "over the limit of 255"),
            (too_many.as_str(), "65 tags, over the limit of 64"),
        ] {
            let error = decode_tags(value).unwrap_err();
            assert!(error.contains(reason), "{value:?}: {error}");
            assert!(error.contains(TAGS), "{error}");

            let event = Event {
                position: 1,
                stream_id: "s".into(),
                version: 1,
                event_type: "t".into(),
                event_id: Uuid::now_v7(),
                recorded_at: 5,
                data: Bytes::new(),
                metadata: Bytes::new(),
                tags: Default::default(),
            };
            let (_, mut headers, payload) = encode("p", &event);
            headers.insert(TAGS, value);
            assert!(decode(Some(&headers), &payload).is_err(), "{value:?}");
        }
        assert_eq!(
            decode_tags(&format!("{}t", "t,".repeat(limits::MAX_TAGS_PER_EVENT - 1)))
                .unwrap()
                .len(),
            limits::MAX_TAGS_PER_EVENT
        );
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
