//! `Event::decode` / `decode_metadata` into a few types must never panic on arbitrary bytes, and
//! whatever decodes must re-encode to a value that decodes to the same thing.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use strata::{Bytes, Event, NewEvent, Uuid};

#[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
struct Order {
    id: u64,
    amount: i64,
    customer: String,
    tags: Vec<String>,
    note: Option<String>,
}

#[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
enum Change {
    Created { name: String },
    Renamed(String, String),
    Deleted,
}

fn event(data: &[u8]) -> Event {
    Event {
        position: 1,
        stream_id: "s".into(),
        version: 1,
        event_type: "t".into(),
        event_id: Uuid::nil(),
        recorded_at: 0,
        data: Bytes::copy_from_slice(data),
        metadata: Bytes::copy_from_slice(data),
        tags: Default::default(),
    }
}

/// Decodes into `T`; what decodes must survive a round trip through `NewEvent::from_value`.
fn round_trip<T>(data: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let e = event(data);
    let _ = e.decode_metadata::<T>();
    if let Ok(value) = e.decode::<T>() {
        let encoded = NewEvent::from_value("t", &value).expect("a decoded value encodes");
        let again: T = event(&encoded.data).decode().expect("re-decodes");
        assert_eq!(again, value);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Order>(data);
    round_trip::<Change>(data);
    round_trip::<Vec<u64>>(data);
    round_trip::<BTreeMap<String, i64>>(data);
    round_trip::<(bool, Option<u32>, String)>(data);
    // Floats compare badly (NaN); decoding must still not panic.
    let _ = event(data).decode::<Vec<f64>>();
    let _ = event(data).decode::<Value>();
});

/// A self-describing value: exercises `deserialize_any` on arbitrary MessagePack.
#[derive(serde::Deserialize, Debug)]
#[serde(untagged)]
#[allow(dead_code)]
enum Value {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
}
