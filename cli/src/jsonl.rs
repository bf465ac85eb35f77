//! The JSON Lines form of events, shared by `read`, `export` and `import`.
//!
//! One event per line, fields in this order:
//!
//! ```text
//! {"position":1,"stream":"user-1","version":1,"type":"user_created","tags":["user:1"],
//!  "event_id":"0192…","recorded_at":"2024-05-01T10:00:00.000000Z","data":{…},"metadata":{…}}
//! ```
//!
//! `tags` (DCB tags, an array of strings, sorted as the store keeps them) is left out when the
//! event has none; on import an absent `tags` or `[]` means none, and each tag must be 1..=255
//! bytes with at most 64 distinct per event.
//!
//! `data` and `metadata` are MessagePack in the store. They are written as JSON when the bytes
//! are one MessagePack value that converts to JSON and back to the very same bytes; otherwise
//! (raw bytes, binary values, non-string map keys, 32-bit floats) they are written as
//! `data_hex` / `metadata_hex`, lowercase hex of the exact bytes. Empty bytes are left out.
//! `import` reads this format back: `position`, `version` and `recorded_at` are informational
//! and ignored (the store assigns them), everything else is stored as it was.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use strata::{Event, NewEvent, Uuid};

/// One event as a JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventLine {
    /// Position in the log (ignored on import).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// The stream.
    pub stream: String,
    /// Version in the stream (ignored on import).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The tags (left out when there are none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The event id (idempotency key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// When it was recorded, RFC 3339 UTC (ignored on import).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_at: Option<String>,
    /// The data as JSON.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub data: Option<Value>,
    /// The data as hex, when it is not representable as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_hex: Option<String>,
    /// The metadata as JSON.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub metadata: Option<Value>,
    /// The metadata as hex, when it is not representable as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_hex: Option<String>,
}

/// `Some(value)` for a present field, `null` included (an absent field is `None` by default).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// Bytes as (JSON, hex): exactly one is set, none for empty bytes.
fn encode_payload(bytes: &[u8]) -> (Option<Value>, Option<String>) {
    if bytes.is_empty() {
        return (None, None);
    }
    if let Ok(value) = rmp_serde::from_slice::<Value>(bytes) {
        if rmp_serde::to_vec_named(&value).is_ok_and(|again| again == bytes) {
            return (Some(value), None);
        }
    }
    (None, Some(hex::encode(bytes)))
}

/// Why a line's payload cannot be stored.
fn decode_payload(
    what: &str,
    json: &Option<Value>,
    hex_text: &Option<String>,
) -> Result<Vec<u8>, String> {
    match (json, hex_text) {
        (Some(_), Some(_)) => Err(format!("both {what} and {what}_hex are given")),
        (Some(value), None) => rmp_serde::to_vec_named(value)
            .map_err(|e| format!("{what} cannot be encoded as MessagePack: {e}")),
        (None, Some(text)) => {
            hex::decode(text).map_err(|e| format!("{what}_hex is not valid hex: {e}"))
        }
        (None, None) => Ok(Vec::new()),
    }
}

impl EventLine {
    /// The line for a stored event.
    pub fn from_event(event: &Event) -> Self {
        let (data, data_hex) = encode_payload(&event.data);
        let (metadata, metadata_hex) = encode_payload(&event.metadata);
        EventLine {
            position: Some(event.position),
            stream: event.stream_id.to_string(),
            version: Some(event.version),
            event_type: event.event_type.to_string(),
            tags: event.tags.to_vec(),
            event_id: Some(event.event_id),
            recorded_at: Some(strata::clock::format_micros(event.recorded_at)),
            data,
            data_hex,
            metadata,
            metadata_hex,
        }
    }

    /// The event to append. `derive_id` gives the id when the line has none, from the data,
    /// the metadata and the tags (sorted, without repeats).
    pub fn to_new_event(
        &self,
        derive_id: impl FnOnce(&[u8], &[u8], &[String]) -> Uuid,
    ) -> Result<NewEvent, String> {
        if self.stream.is_empty() {
            return Err("stream is empty".into());
        }
        if self.event_type.is_empty() {
            return Err("type is empty".into());
        }
        let data = decode_payload("data", &self.data, &self.data_hex)?;
        let metadata = decode_payload("metadata", &self.metadata, &self.metadata_hex)?;
        crate::dcb::check_event_tags(&self.tags)?;
        let mut tags = self.tags.clone();
        tags.sort_unstable();
        tags.dedup();
        let id = match self.event_id {
            Some(id) => id,
            None => derive_id(&data, &metadata, &tags),
        };
        Ok(NewEvent::new(self.event_type.clone(), data)
            .with_metadata(metadata)
            .with_id(id)
            .with_tags(tags))
    }

    /// The line as compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an EventLine always serialises")
    }
}

/// Namespace of the UUIDv5 ids `import` derives for lines without `event_id`.
pub const IMPORT_NAMESPACE: Uuid = Uuid::from_u128(0x8f0c_5a7e_3b1d_4c29_9e61_5d2a_7b4f_c013);

/// The id derived for a line without `event_id`: UUIDv5 over the stream, the line's rank
/// among that stream's lines in the file (1 for its first line), the type, the exact data
/// and metadata bytes, and the tags (sorted, without repeats; an untagged line derives the
/// same id as before tags existed). Re-importing the same file derives the same ids.
pub fn derived_id(
    stream: &str,
    rank: u64,
    event_type: &str,
    data: &[u8],
    metadata: &[u8],
    tags: &[String],
) -> Uuid {
    let mut name =
        Vec::with_capacity(stream.len() + event_type.len() + data.len() + metadata.len() + 40);
    for part in [stream.as_bytes(), event_type.as_bytes(), data, metadata] {
        name.extend_from_slice(&(part.len() as u64).to_le_bytes());
        name.extend_from_slice(part);
    }
    name.extend_from_slice(&rank.to_le_bytes());
    for tag in tags {
        name.extend_from_slice(&(tag.len() as u64).to_le_bytes());
        name.extend_from_slice(tag.as_bytes());
    }
    Uuid::new_v5(&IMPORT_NAMESPACE, &name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes_of_event as event;

    fn bytes_of_event(data: Vec<u8>, metadata: Vec<u8>) -> Event {
        Event {
            position: 3,
            stream_id: "s".into(),
            version: 2,
            event_type: "t".into(),
            event_id: Uuid::nil(),
            recorded_at: 0,
            data: data.into(),
            metadata: metadata.into(),
            tags: Default::default(),
        }
    }

    fn round_trip(data: Vec<u8>, metadata: Vec<u8>) -> EventLine {
        let line = EventLine::from_event(&event(data.clone(), metadata.clone()));
        let parsed: EventLine = serde_json::from_str(&line.to_json()).unwrap();
        assert_eq!(parsed, line);
        let new = parsed.to_new_event(|_, _, _| unreachable!()).unwrap();
        assert_eq!(&new.data[..], &data[..]);
        assert_eq!(&new.metadata[..], &metadata[..]);
        line
    }

    #[derive(Serialize)]
    struct Order {
        order_id: String,
        amount_cents: i64,
        ratio: f64,
        tags: Vec<String>,
    }

    #[test]
    fn messagepack_maps_become_json_and_come_back_byte_for_byte() {
        let data = rmp_serde::to_vec_named(&Order {
            order_id: "o-1".into(),
            amount_cents: -1999,
            ratio: 0.25,
            tags: vec!["a".into()],
        })
        .unwrap();
        let line = round_trip(data, rmp_serde::to_vec_named(&()).unwrap());
        assert_eq!(
            line.data,
            Some(
                serde_json::json!({"order_id": "o-1", "amount_cents": -1999, "ratio": 0.25, "tags": ["a"]})
            )
        );
        // Field order is kept (a reordered map would not give the same bytes).
        assert!(line
            .to_json()
            .contains(r#"{"order_id":"o-1","amount_cents""#));
        assert_eq!(line.metadata, Some(Value::Null));
    }

    #[test]
    fn bytes_that_are_not_json_go_as_hex_and_empty_bytes_are_left_out() {
        let line = round_trip(b"\xffraw".to_vec(), Vec::new());
        assert_eq!(line.data_hex.as_deref(), Some("ff726177"));
        assert!(line.data.is_none() && line.metadata.is_none() && line.metadata_hex.is_none());
        let f32_value = rmp_serde::to_vec(&1.5f32).unwrap();
        let line = round_trip(f32_value, Vec::new());
        assert!(line.data_hex.is_some());
        round_trip(Vec::new(), Vec::new());
    }

    #[test]
    fn malformed_lines_are_refused_with_a_reason() {
        let unknown = serde_json::from_str::<EventLine>(r#"{"stream":"s","type":"t","dta":1}"#);
        assert!(unknown
            .unwrap_err()
            .to_string()
            .contains("unknown field `dta`"));
        let both: EventLine =
            serde_json::from_str(r#"{"stream":"s","type":"t","data":1,"data_hex":"00"}"#).unwrap();
        assert!(both
            .to_new_event(|_, _, _| Uuid::nil())
            .unwrap_err()
            .contains("both data and data_hex"));
        let empty: EventLine = serde_json::from_str(r#"{"stream":"","type":"t"}"#).unwrap();
        assert!(empty.to_new_event(|_, _, _| Uuid::nil()).is_err());
        for (tags, reason) in [
            (r#""tags":"a""#, "expected a sequence"),
            (r#""tags":[1]"#, "invalid type: integer"),
            (r#""tags":null"#, "expected a sequence"),
        ] {
            let error = serde_json::from_str::<EventLine>(&format!(
                r#"{{"stream":"s","type":"t",{tags}}}"#
            ))
            .unwrap_err()
            .to_string();
            assert!(error.contains(reason), "{tags}: {error}");
        }
        let long = "x".repeat(256);
        for (tags, reason) in [
            (
                r#"["a",""]"#.to_string(),
                "tags[1]: a tag must be 1..=255 bytes",
            ),
            (format!(r#"["{long}"]"#), "got 256 bytes"),
        ] {
            let line: EventLine =
                serde_json::from_str(&format!(r#"{{"stream":"s","type":"t","tags":{tags}}}"#))
                    .unwrap();
            let error = line.to_new_event(|_, _, _| Uuid::nil()).unwrap_err();
            assert!(error.contains(reason), "{tags}: {error}");
        }
    }

    #[test]
    fn tags_are_written_when_present_and_read_back() {
        let mut tagged = bytes_of_event(Vec::new(), Vec::new());
        tagged.tags = vec!["a,b".to_string(), "course:c1".into(), "ü \"q\"".into()].into();
        let line = EventLine::from_event(&tagged);
        let text = line.to_json();
        assert!(
            text.contains(r#""type":"t","tags":["a,b","course:c1","ü \"q\""]"#),
            "{text}"
        );
        let parsed: EventLine = serde_json::from_str(&text).unwrap();
        let new = parsed.to_new_event(|_, _, _| unreachable!()).unwrap();
        assert_eq!(new.tags, &tagged.tags[..]);
        let untagged = EventLine::from_event(&bytes_of_event(Vec::new(), Vec::new())).to_json();
        assert!(!untagged.contains("tags"), "{untagged}");
    }

    #[test]
    fn derived_ids_depend_on_every_part() {
        let base = derived_id("s", 1, "t", b"d", b"m", &[]);
        assert_eq!(base, derived_id("s", 1, "t", b"d", b"m", &[]));
        assert_ne!(base, derived_id("s", 2, "t", b"d", b"m", &[]));
        assert_ne!(base, derived_id("s2", 1, "t", b"d", b"m", &[]));
        assert_ne!(base, derived_id("s", 1, "t", b"dm", b"", &[]));
        assert_ne!(base, derived_id("s", 1, "t", b"d", b"m", &["a".into()]));
    }
}
