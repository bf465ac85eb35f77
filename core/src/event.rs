//! Events as they go in ([`NewEvent`]) and as they come out ([`Event`]).

use std::sync::Arc;

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};
use uuid::Uuid;

use crate::error::{DecodeError, EncodeError};

/// Position of an event in the store-wide log. The first event is at position 1; positions are
/// gap-free and equal to commit order.
pub type Position = u64;

/// Version of an event within its stream. The first event of a stream has version 1.
pub type StreamVersion = u64;

/// An event the caller wants to append.
///
/// `data` and `metadata` are opaque bytes; MessagePack is the convention, and
/// [`NewEvent::from_value`] builds one from any `Serialize` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    /// What happened, such as `order_created`. 1..=255 bytes of UTF-8.
    pub event_type: String,
    /// The payload.
    pub data: Bytes,
    /// Data about the event (correlation ids, user agent, ...). May be empty.
    pub metadata: Bytes,
    /// The caller's idempotency key. `None` lets the store generate one (UUID v7).
    pub event_id: Option<Uuid>,
    /// Tags (Dynamic Consistency Boundaries), such as `course:c1`: each 1..=255 bytes of UTF-8,
    /// at most 64 per event. A set: the store keeps them sorted, without repeats.
    pub tags: Vec<String>,
}

impl NewEvent {
    /// An event with raw bytes as data and no metadata.
    pub fn new(event_type: impl Into<String>, data: impl Into<Bytes>) -> Self {
        NewEvent {
            event_type: event_type.into(),
            data: data.into(),
            metadata: Bytes::new(),
            event_id: None,
            tags: Vec::new(),
        }
    }

    /// An event whose data is `value` encoded as MessagePack (maps with field names, so that
    /// other languages can read it).
    pub fn from_value<T: Serialize + ?Sized>(
        event_type: impl Into<String>,
        value: &T,
    ) -> Result<Self, EncodeError> {
        let data = rmp_serde::to_vec_named(value).map_err(EncodeError)?;
        Ok(NewEvent::new(event_type, data))
    }

    /// Sets the idempotency key.
    pub fn with_id(mut self, event_id: Uuid) -> Self {
        self.event_id = Some(event_id);
        self
    }

    /// Sets the tags (replacing any set before). Repeats are removed; the limits are checked on
    /// append ([`crate::limits::MAX_TAG_BYTES`], [`crate::limits::MAX_TAGS_PER_EVENT`]).
    pub fn with_tags<S: Into<String>>(mut self, tags: impl IntoIterator<Item = S>) -> Self {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Sets raw metadata bytes.
    pub fn with_metadata(mut self, metadata: impl Into<Bytes>) -> Self {
        self.metadata = metadata.into();
        self
    }

    /// Sets metadata to `value` encoded as MessagePack.
    pub fn with_metadata_value<T: Serialize + ?Sized>(
        mut self,
        value: &T,
    ) -> Result<Self, EncodeError> {
        self.metadata = rmp_serde::to_vec_named(value).map_err(EncodeError)?.into();
        Ok(self)
    }
}

/// A stored event. Cheap to clone: strings and payloads are shared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Global position, gap-free, in commit order.
    pub position: Position,
    /// The stream the event belongs to.
    pub stream_id: Arc<str>,
    /// Version within the stream, starting at 1.
    pub version: StreamVersion,
    /// What happened.
    pub event_type: Arc<str>,
    /// The idempotency key given on append, or the one the store generated.
    pub event_id: Uuid,
    /// When the writer stored it: unix microseconds, UTC, never decreasing with position.
    pub recorded_at: i64,
    /// The payload.
    pub data: Bytes,
    /// The metadata (may be empty).
    pub metadata: Bytes,
    /// The tags, sorted, without repeats (empty for an event appended without tags).
    pub tags: Arc<[String]>,
}

impl Event {
    /// Decodes `data` from MessagePack into `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        rmp_serde::from_slice(&self.data).map_err(|source| DecodeError {
            position: self.position,
            source,
        })
    }

    /// Decodes `metadata` from MessagePack into `T`.
    pub fn decode_metadata<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        rmp_serde::from_slice(&self.metadata).map_err(|source| DecodeError {
            position: self.position,
            source,
        })
    }

    /// Bytes this event takes in memory, roughly: what the cache counts against its bound.
    pub fn approximate_size(&self) -> usize {
        std::mem::size_of::<Event>()
            + self.stream_id.len()
            + self.event_type.len()
            + self.data.len()
            + self.metadata.len()
            + self.tags.iter().map(|tag| tag.len() + 24).sum::<usize>()
    }

    /// Whether this event carries `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags
            .binary_search_by(|own| own.as_str().cmp(tag))
            .is_ok()
    }
}

/// What the appender expects the stream's current version to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream's last event must have exactly this version (0 means "no events").
    Exact(StreamVersion),
}

impl ExpectedVersion {
    /// Whether a stream whose current version is `current` (0 for "no events") satisfies this.
    pub fn accepts(self, current: StreamVersion) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::StreamExists => current > 0,
            ExpectedVersion::Exact(expected) => current == expected,
        }
    }
}

/// Events for one stream inside a (possibly multi-stream) append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamAppend {
    /// The stream to append to. 1..=255 bytes of UTF-8.
    pub stream_id: String,
    /// The optimistic concurrency check.
    pub expected: ExpectedVersion,
    /// The events, in order. At least one.
    pub events: Vec<NewEvent>,
}

impl StreamAppend {
    /// Builds one stream's part of an append.
    pub fn new(
        stream_id: impl Into<String>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Self {
        StreamAppend {
            stream_id: stream_id.into(),
            expected,
            events,
        }
    }
}

/// What an append to one stream stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendResult {
    /// The stream appended to.
    pub stream_id: String,
    /// Position of the first event of this append.
    pub first_position: Position,
    /// Position of the last event of this append.
    pub last_position: Position,
    /// The stream's version after the append: its last event's version.
    pub last_version: StreamVersion,
    /// The event ids in order (the generated ones included).
    pub event_ids: Vec<Uuid>,
    /// `true` when every event was already stored by an earlier append with the same ids: nothing
    /// was written and the original positions are returned.
    pub already_stored: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct OrderCreated {
        order_id: u64,
        amount_cents: i64,
    }

    #[test]
    fn typed_value_round_trips_through_messagepack() {
        let value = OrderCreated {
            order_id: 7,
            amount_cents: 1999,
        };
        let new = NewEvent::from_value("order_created", &value).unwrap();
        let event = Event {
            position: 1,
            stream_id: "order-7".into(),
            version: 1,
            event_type: "order_created".into(),
            event_id: Uuid::nil(),
            recorded_at: 0,
            data: new.data,
            metadata: Bytes::new(),
            tags: Default::default(),
        };
        assert_eq!(event.decode::<OrderCreated>().unwrap(), value);
    }

    #[test]
    fn decoding_into_the_wrong_type_is_an_error_naming_the_position() {
        let new = NewEvent::from_value("x", &"a string").unwrap();
        let event = Event {
            position: 42,
            stream_id: "s".into(),
            version: 1,
            event_type: "x".into(),
            event_id: Uuid::nil(),
            recorded_at: 0,
            data: new.data,
            metadata: Bytes::new(),
            tags: Default::default(),
        };
        let error = event.decode::<OrderCreated>().unwrap_err();
        assert_eq!(error.position, 42);
    }

    #[test]
    fn expected_version_rules() {
        assert!(ExpectedVersion::Any.accepts(0));
        assert!(ExpectedVersion::NoStream.accepts(0));
        assert!(!ExpectedVersion::NoStream.accepts(1));
        assert!(ExpectedVersion::StreamExists.accepts(3));
        assert!(!ExpectedVersion::StreamExists.accepts(0));
        assert!(ExpectedVersion::Exact(3).accepts(3));
        assert!(!ExpectedVersion::Exact(3).accepts(2));
    }
}
