//! `counter-v0-1`: events per type, built against `strata:projection@0.1.0`.
//!
//! Receives every event type. State: `count:<event_type>` → count (u64, little-endian).
//! Query: an event type's name (UTF-8 bytes) → its count (u64, little-endian).

wit_bindgen::generate!({
    world: "projection",
    path: "../../../wit/0.1.0",
});

use strata::projection::state;

struct CounterV01;

fn key(event_type: &[u8]) -> Vec<u8> {
    [b"count:".as_slice(), event_type].concat()
}

fn count(key: &[u8]) -> Result<u64, String> {
    match state::get(key)? {
        Some(bytes) => {
            let bytes: [u8; 8] = bytes.try_into().map_err(|_| "a count is 8 bytes")?;
            Ok(u64::from_le_bytes(bytes))
        }
        None => Ok(0),
    }
}

impl Guest for CounterV01 {
    fn describe() -> Info {
        Info {
            name: "counter-v0-1".into(),
            version: 1,
            event_types: Vec::new(),
        }
    }

    fn apply(events: Vec<Event>) -> Result<(), String> {
        for event in events {
            let key = key(event.event_type.as_bytes());
            let next = count(&key)? + 1;
            state::put(&key, &next.to_le_bytes())?;
        }
        Ok(())
    }

    fn query(request: Vec<u8>) -> Result<Vec<u8>, String> {
        Ok(count(&key(&request))?.to_le_bytes().to_vec())
    }
}

export!(CounterV01);
