//! Test setup shared by the integration tests of every crate: stores in temporary directories,
//! options for tests, simple events, and a small deterministic fold.

use std::path::PathBuf;
use std::sync::Arc;

use strata::{
    Durability, Event, ManualClock, NewEvent, Options, Projection, ProjectionError, ProjectionInfo,
    ProjectionState, Store,
};

/// A store file in a fresh temporary directory (kept alive by the returned guard).
pub fn temp_store(options: Options) -> (tempfile::TempDir, PathBuf, Store) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = Store::open(&path, options).unwrap();
    (dir, path, store)
}

/// Fast durability: tests check logic, not fsync.
pub fn fast() -> Options {
    Options {
        durability: Durability::Fast,
        ..Options::default()
    }
}

/// Fast options driven by a manual clock.
pub fn with_clock(clock: &Arc<ManualClock>) -> Options {
    Options {
        clock: clock.clone(),
        ..fast()
    }
}

/// `n` events of type `kind` whose data is "<kind>-<i>".
pub fn events(kind: &str, n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent::new(kind, format!("{kind}-{i}").into_bytes()))
        .collect()
}

/// The amount an event carries: the first 8 bytes of its data (little-endian i64).
pub fn amount(data: &[u8]) -> i64 {
    i64::from_le_bytes(data[..8].try_into().expect("8 bytes of amount"))
}

/// A deterministic fold: sum and count of [`amount`]s per stream, keyed `sum/<stream>`; a query
/// names the stream and gets [`encode_sum`] bytes.
pub struct Sums;

impl Projection for Sums {
    fn describe(&mut self) -> Result<ProjectionInfo, ProjectionError> {
        Ok(ProjectionInfo {
            name: "sums".into(),
            version: 1,
            event_types: Vec::new(),
        })
    }

    fn apply(
        &mut self,
        events: &[Event],
        state: &mut ProjectionState,
    ) -> Result<(), ProjectionError> {
        for event in events {
            let key = format!("sum/{}", event.stream_id);
            let (sum, count) = decode_sum(state.get(key.as_bytes())?.as_deref());
            state.put(
                key.as_bytes(),
                &encode_sum(sum + amount(&event.data), count + 1),
            )?;
        }
        Ok(())
    }

    fn query(
        &mut self,
        request: &[u8],
        state: &mut ProjectionState,
    ) -> Result<Vec<u8>, ProjectionError> {
        let key = [b"sum/", request].concat();
        Ok(state.get(&key)?.unwrap_or_else(|| encode_sum(0, 0)))
    }
}

/// The state [`Sums`] keeps for a stream: sum then count, little-endian.
pub fn encode_sum(sum: i64, count: u64) -> Vec<u8> {
    [sum.to_le_bytes(), count.to_le_bytes()].concat()
}

/// Reads what [`encode_sum`] wrote; `(0, 0)` for no state.
pub fn decode_sum(bytes: Option<&[u8]>) -> (i64, u64) {
    match bytes {
        Some(b) => (
            i64::from_le_bytes(b[..8].try_into().unwrap()),
            u64::from_le_bytes(b[8..16].try_into().unwrap()),
        ),
        None => (0, 0),
    }
}
