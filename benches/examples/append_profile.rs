//! Appends `BATCHES` batches of 1,000 events one way, for instruction counting under
//! `valgrind --tool=callgrind` (repeatable on a noisy machine, unlike wall time):
//!
//! ```sh
//! cargo build --release -p strata-benches --example append_profile
//! valgrind --tool=callgrind target/release/examples/append_profile strata 20
//! ```
//!
//! Modes: `strata` (Fast), `indexed` and `plain` (the raw rusqlite baselines of the
//! `batched_append` bench).

use strata::{Durability, ExpectedVersion, Options, Store};
use strata_benches::{
    baseline_insert_batch, batch, BASELINE_INDEXED_SCHEMA, BASELINE_PLAIN_SCHEMA,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "strata".into());
    let batches: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let events = batch(1_000, 1);
    match mode.as_str() {
        "strata" => {
            let options = Options {
                durability: Durability::Fast,
                ..Options::default()
            };
            let store = Store::open(dir.path().join("s.db"), options).unwrap();
            for i in 0..batches {
                store
                    .append(&format!("stream-{i}"), ExpectedVersion::Any, events.clone())
                    .unwrap();
            }
        }
        "indexed" | "plain" => {
            let mut conn = rusqlite::Connection::open(dir.path().join("b.db")).unwrap();
            if mode == "plain" {
                conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
                    .unwrap();
                conn.execute_batch(BASELINE_PLAIN_SCHEMA).unwrap();
            } else {
                conn.execute_batch(BASELINE_INDEXED_SCHEMA).unwrap();
            }
            for i in 0..batches {
                baseline_insert_batch(&mut conn, &format!("stream-{i}"), 1, &events, 0).unwrap();
            }
        }
        other => panic!("unknown mode {other}"),
    }
}
