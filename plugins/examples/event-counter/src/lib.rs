//! `event-counter`: how many events of each type the store holds.
//!
//! Receives every event type. State: `count:<event_type>` → count (u64).
//!
//! Query: any request (an empty MessagePack map `{}` by convention; the bytes are ignored) →
//! a MessagePack map from event type to count, in event-type order.

use std::collections::BTreeMap;

use strata_plugin::{encode, export_plugin, state, Error, Event, Plugin};

const PREFIX: &str = "count:";

struct EventCounter;

impl Plugin for EventCounter {
    const NAME: &'static str = "event-counter";
    const VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &[];

    fn apply(event: &Event) -> Result<(), Error> {
        let key = format!("{PREFIX}{}", event.event_type);
        let count: u64 = state::get(&key)?.unwrap_or(0);
        state::put(&key, &(count + 1))
    }

    fn query(_request: &[u8]) -> Result<Vec<u8>, Error> {
        let counts: BTreeMap<String, u64> = state::scan_all::<u64>(PREFIX, 1000)?
            .into_iter()
            .map(|(key, count)| {
                let event_type = String::from_utf8_lossy(&key[PREFIX.len()..]).into_owned();
                (event_type, count)
            })
            .collect();
        encode(&counts)
    }
}

export_plugin!(EventCounter);
