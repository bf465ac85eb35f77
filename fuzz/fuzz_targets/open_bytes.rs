//! Opening arbitrary bytes as a store file, then reading it every way, must never panic; every
//! answer is either an error or self-consistent (gap-free positions, contiguous versions).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::{Direction, Durability, Options, Store};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzzed.db");
    // Half the inputs start with a real SQLite header, so that the fuzzer gets past it quickly.
    let mut bytes = Vec::with_capacity(data.len() + 16);
    if data.first().is_some_and(|b| b & 1 == 1) {
        bytes.extend_from_slice(b"SQLite format 3\0");
        bytes.extend_from_slice(&data[1..]);
    } else {
        bytes.extend_from_slice(data);
    }
    std::fs::write(&path, &bytes).unwrap();
    let options = Options {
        durability: Durability::Fast,
        read_connections: 1,
        ..Options::default()
    };
    let Ok(store) = Store::open(&path, options) else {
        return;
    };
    if let Ok(events) = store.read_all(1, 1_000) {
        for (i, event) in events.iter().enumerate() {
            assert_eq!(event.position, 1 + i as u64, "read_all returned a gap");
        }
        for event in events.iter().take(20) {
            if let Ok(stream) = store.read_stream(&event.stream_id, 1, Direction::Forwards, 1_000) {
                for (i, e) in stream.iter().enumerate() {
                    assert_eq!(e.version, 1 + i as u64, "read_stream returned a gap");
                }
            }
            let _ = store.stream_info(&event.stream_id);
        }
    }
    let _ = store.buckets();
    let _ = store.read_by_type(&["a", "b"], i64::MIN..i64::MAX, 1, 100);
    let appended = store.append(
        "fuzz",
        strata::ExpectedVersion::Any,
        vec![strata::NewEvent::new("t", &b"x"[..])],
    );
    assert!(
        !matches!(appended, Err(strata::AppendError::Closed)),
        "the writer thread died"
    );
    store.close();
});
