//! Appends with arbitrary stream ids, types, payload sizes and expected versions, checked against
//! a model of the log: the model says whether each append is invalid, a conflict or stored (and
//! where); retries of a stored append must answer with the original positions and write nothing.
#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use strata::{AppendError, Direction, Durability, ExpectedVersion, NewEvent, Options, Store};

const MAX_PAYLOAD: usize = 600;
const MAX_EVENTS: usize = 6;

#[derive(Arbitrary, Debug)]
enum Expected {
    Any,
    NoStream,
    StreamExists,
    Exact(u8),
}

#[derive(Arbitrary, Debug)]
struct Ev {
    event_type: String,
    data_len: u16,
    metadata_len: u8,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// One of four short stream ids, or an arbitrary one.
    Append {
        stream: Result<u8, String>,
        expected: Expected,
        events: Vec<Ev>,
    },
    /// The last stored append again, with the same event ids.
    Retry,
}

fuzz_target!(|ops: Vec<Op>| {
    let options = Options {
        durability: Durability::Fast,
        max_payload_bytes: MAX_PAYLOAD,
        max_events_per_append: MAX_EVENTS,
        ..Options::default()
    };
    let store = Store::open_in_memory(options).unwrap();
    // The model: each stream's version and the log as (stream, version, type, data, metadata).
    let mut versions: HashMap<String, u64> = HashMap::new();
    let mut log: Vec<(String, u64, String, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut last_stored: Option<(String, Vec<NewEvent>, strata::AppendResult)> = None;

    for op in ops.into_iter().take(64) {
        match op {
            Op::Retry => {
                let Some((stream, events, original)) = &last_stored else {
                    continue;
                };
                let again = store
                    .append(stream, ExpectedVersion::NoStream, events.clone())
                    .expect("a retry of a stored append succeeds");
                assert!(again.already_stored);
                assert_eq!(again.first_position, original.first_position);
                assert_eq!(again.event_ids, original.event_ids);
            }
            Op::Append {
                stream,
                expected,
                events,
            } => {
                let stream = match stream {
                    Ok(n) => format!("s{}", n % 4),
                    Err(raw) => raw,
                };
                let expected = match expected {
                    Expected::Any => ExpectedVersion::Any,
                    Expected::NoStream => ExpectedVersion::NoStream,
                    Expected::StreamExists => ExpectedVersion::StreamExists,
                    Expected::Exact(v) => ExpectedVersion::Exact(u64::from(v % 8)),
                };
                let new: Vec<NewEvent> = events
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        let data = vec![i as u8; usize::from(e.data_len) % 800];
                        let metadata = vec![0xee; usize::from(e.metadata_len)];
                        NewEvent::new(e.event_type.clone(), data)
                            .with_metadata(metadata)
                            .with_id(strata::Uuid::new_v4())
                    })
                    .collect();
                let current = versions.get(&stream).copied().unwrap_or(0);
                let invalid = new.is_empty()
                    || new.len() > MAX_EVENTS
                    || stream.is_empty()
                    || stream.len() > 255
                    || new.iter().any(|e| {
                        e.event_type.is_empty()
                            || e.event_type.len() > 255
                            || e.data.len() + e.metadata.len() > MAX_PAYLOAD
                    });
                let result = store.append(&stream, expected, new.clone());
                match result {
                    Err(AppendError::Invalid(_)) => assert!(invalid, "valid append refused"),
                    Err(AppendError::Conflict { actual, .. }) => {
                        assert!(!invalid && !expected.accepts(current));
                        assert_eq!(actual, current);
                    }
                    Err(other) => panic!("unexpected error {other:?}"),
                    Ok(result) => {
                        assert!(!invalid, "invalid append stored");
                        assert!(expected.accepts(current), "a conflicting append stored");
                        assert!(!result.already_stored);
                        assert_eq!(result.first_position, log.len() as u64 + 1);
                        for (k, e) in new.iter().enumerate() {
                            log.push((
                                stream.clone(),
                                current + 1 + k as u64,
                                e.event_type.clone(),
                                e.data.to_vec(),
                                e.metadata.to_vec(),
                            ));
                        }
                        versions.insert(stream.clone(), current + new.len() as u64);
                        assert_eq!(result.last_version, current + new.len() as u64);
                        last_stored = Some((stream, new, result));
                    }
                }
            }
        }
    }
    // The store's log is the model's.
    let events = store.read_all(1, 10_000).unwrap();
    assert_eq!(events.len(), log.len());
    for (event, (stream, version, event_type, data, metadata)) in events.iter().zip(&log) {
        assert_eq!(&*event.stream_id, stream);
        assert_eq!(event.version, *version);
        assert_eq!(&*event.event_type, event_type);
        assert_eq!(&event.data[..], &data[..]);
        assert_eq!(&event.metadata[..], &metadata[..]);
    }
    for (stream, version) in &versions {
        let read = store
            .read_stream(stream, 1, Direction::Forwards, 10_000)
            .unwrap();
        assert_eq!(read.len() as u64, *version);
    }
});
