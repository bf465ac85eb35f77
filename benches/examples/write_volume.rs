//! Bytes written and throughput of durable interleaved appends, against raw SQLite inserting the
//! same rows into a table with only an integer key, in the same run:
//!
//! ```sh
//! cargo run --release -p strata-benches --example write_volume -- 1000000
//! ```
//!
//! Each append carries 1,000 events of 200 bytes, each to a random one of 10,000 streams, with
//! random (UUIDv4) caller ids, `Durable`. Bytes written are the process's `wchar` from
//! `/proc/self/io` (every `write`, WAL and checkpoints included), which does not depend on how
//! busy the machine is; events per second does.

use std::collections::BTreeMap;
use std::time::Instant;

use strata::{ExpectedVersion, NewEvent, Options, Store, StreamAppend};
use strata_benches::{batch, BASELINE_PLAIN_SCHEMA};

const BATCH: usize = 1_000;
const STREAMS: u64 = 10_000;

fn bytes_written() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    io.lines()
        .find_map(|line| line.strip_prefix("wchar: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("wchar in /proc/self/io")
}

/// xorshift64: the same stream sequence for both sides.
fn next_stream(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed % STREAMS
}

fn report(what: &str, events: u64, started: Instant, written: u64) -> f64 {
    let per_second = events as f64 / started.elapsed().as_secs_f64();
    println!(
        "{what}: {events} events, {per_second:.0} events/s, {} bytes written per event",
        written / events
    );
    per_second
}

fn main() {
    let events: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let payloads = batch(BATCH, 7);
    let dir = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();

    let store = Store::open(dir.path().join("strata.db"), Options::default()).unwrap();
    let (mut seed, before, started) = (0x1234_5678u64, bytes_written(), Instant::now());
    for _ in 0..events / BATCH as u64 {
        let mut by_stream: BTreeMap<u64, Vec<NewEvent>> = BTreeMap::new();
        for event in &payloads {
            by_stream
                .entry(next_stream(&mut seed))
                .or_default()
                .push(event.clone().with_id(uuid::Uuid::new_v4()));
        }
        let parts = by_stream
            .into_iter()
            .map(|(s, events)| {
                StreamAppend::new(format!("order-{s}"), ExpectedVersion::Any, events)
            })
            .collect();
        store.append_multi(parts).unwrap();
    }
    let strata = report("strata", events, started, bytes_written() - before);
    drop(store);

    let mut conn = rusqlite::Connection::open(dir.path().join("raw.db")).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
        .unwrap();
    conn.execute_batch(BASELINE_PLAIN_SCHEMA).unwrap();
    let (mut seed, before, started) = (0x1234_5678u64, bytes_written(), Instant::now());
    for round in 0..events / BATCH as u64 {
        let tx = conn.transaction().unwrap();
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events (stream_id, version, event_type, event_id, created_at, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .unwrap();
            for event in &payloads {
                insert
                    .execute(rusqlite::params![
                        format!("order-{}", next_stream(&mut seed)),
                        round as i64,
                        event.event_type,
                        &uuid::Uuid::new_v4().as_bytes()[..],
                        1_700_000_000_000_000i64,
                        &event.data[..]
                    ])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let raw = report(
        "raw SQLite, integer key only",
        events,
        started,
        bytes_written() - before,
    );
    println!("ratio strata / raw: {:.2}x", strata / raw);
}
