//! `event-counter`: how many events of each type the store holds.
//!
//! Receives every event type. State: `count:<event_type>` → count (u64), and `tag:<tag>` →
//! how many events carry that tag (u64).
//!
//! Query: the MessagePack string `"tags"` → a MessagePack map from tag to count, in tag order;
//! any other request (an empty map `{}` by convention) → a map from event type to count, in
//! event-type order.

use std::collections::BTreeMap;

use strata_plugin::{encode, export_plugin, state, Error, Event, Plugin};

const PREFIX: &str = "count:";
const TAG_PREFIX: &str = "tag:";

struct EventCounter;

impl Plugin for EventCounter {
    const NAME: &'static str = "event-counter";
    const VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &[];

    fn apply(event: &Event) -> Result<(), Error> {
        increment(&format!("{PREFIX}{}", event.event_type))?;
        for tag in &event.tags {
            increment(&format!("{TAG_PREFIX}{tag}"))?;
        }
        Ok(())
    }

    fn query(request: &[u8]) -> Result<Vec<u8>, Error> {
        let prefix = match strata_plugin::decode::<String>(request) {
            Ok(asked) if asked == "tags" => TAG_PREFIX,
            _ => PREFIX,
        };
        let counts: BTreeMap<String, u64> = state::scan_all::<u64>(prefix, 1000)?
            .into_iter()
            .map(|(key, count)| {
                let name = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                (name, count)
            })
            .collect();
        encode(&counts)
    }
}

fn increment(key: &str) -> Result<(), Error> {
    let count: u64 = state::get(key)?.unwrap_or(0);
    state::put(key, &(count + 1))
}

export_plugin!(EventCounter);
