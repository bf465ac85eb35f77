//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use strata::{Durability, ManualClock, NewEvent, Options, Store};

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
