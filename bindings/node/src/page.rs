//! A page of events in columns, built on the blocking pool and handed to JavaScript in one
//! piece: typed arrays for the numbers, one buffer for every payload, one string for the ids,
//! and each distinct stream id and event type once.

use std::collections::HashMap;

use napi::bindgen_prelude::{Buffer, Float64Array, Uint32Array};
use napi_derive::napi;
use strata::{Event, Uuid};

/// Event `i` of the page: `positions[i]`, `versions[i]`, `recordedAt[i]` (unix microseconds),
/// stream id `strings[streamIndex[i]]`, type `strings[typeIndex[i]]`, id
/// `eventIds.substr(36 * i, 36)`, data `payload[offsets[2i]..offsets[2i+1]]` and metadata
/// `payload[offsets[2i+1]..offsets[2i+2]]`.
#[napi(object)]
pub struct EventPage {
    pub count: u32,
    pub positions: Float64Array,
    pub versions: Float64Array,
    pub recorded_at: Float64Array,
    pub strings: Vec<String>,
    pub stream_index: Uint32Array,
    pub type_index: Uint32Array,
    pub event_ids: String,
    pub payload: Buffer,
    pub offsets: Float64Array,
}

/// Gives each distinct string one slot of a table.
#[derive(Default)]
struct StringTable {
    strings: Vec<String>,
    slots: HashMap<std::sync::Arc<str>, u32>,
}

impl StringTable {
    fn slot(&mut self, text: &std::sync::Arc<str>) -> u32 {
        if let Some(slot) = self.slots.get(text) {
            return *slot;
        }
        let slot = self.strings.len() as u32;
        self.strings.push(text.to_string());
        self.slots.insert(text.clone(), slot);
        slot
    }
}

impl EventPage {
    pub fn new(events: &[Event]) -> EventPage {
        let count = events.len();
        let mut positions = Vec::with_capacity(count);
        let mut versions = Vec::with_capacity(count);
        let mut recorded_at = Vec::with_capacity(count);
        let mut stream_index = Vec::with_capacity(count);
        let mut type_index = Vec::with_capacity(count);
        let mut event_ids = String::with_capacity(36 * count);
        let payload_len: usize = events.iter().map(|e| e.data.len() + e.metadata.len()).sum();
        let mut payload = Vec::with_capacity(payload_len);
        let mut offsets = Vec::with_capacity(2 * count + 1);
        offsets.push(0.0);
        let mut table = StringTable::default();
        let mut id_buffer = Uuid::encode_buffer();
        for event in events {
            positions.push(event.position as f64);
            versions.push(event.version as f64);
            recorded_at.push(event.recorded_at as f64);
            stream_index.push(table.slot(&event.stream_id));
            type_index.push(table.slot(&event.event_type));
            event_ids.push_str(event.event_id.hyphenated().encode_lower(&mut id_buffer));
            payload.extend_from_slice(&event.data);
            offsets.push(payload.len() as f64);
            payload.extend_from_slice(&event.metadata);
            offsets.push(payload.len() as f64);
        }
        EventPage {
            count: count as u32,
            positions: Float64Array::new(positions),
            versions: Float64Array::new(versions),
            recorded_at: Float64Array::new(recorded_at),
            strings: table.strings,
            stream_index: Uint32Array::new(stream_index),
            type_index: Uint32Array::new(type_index),
            event_ids,
            payload: payload.into(),
            offsets: Float64Array::new(offsets),
        }
    }
}
