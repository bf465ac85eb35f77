//! Shared helpers for the benches: payloads, baseline schemas, and whether this is a smoke run.
//! The workload and the native projections the benches compare with come from
//! `strata-testkit` (`workload`, `reference`).

use strata::NewEvent;
use strata_testkit::workload::EVENT_TYPES;

/// Whether criterion runs in `--test` mode (CI's smoke run): benches shrink their data sets.
pub fn is_smoke_run() -> bool {
    std::env::args().any(|arg| arg == "--test")
}

/// A number from the environment, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A 200-byte payload that differs per event (so that nothing compresses it away).
pub fn payload_200(seed: u64) -> Vec<u8> {
    let mut data = Vec::with_capacity(200);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while data.len() < 200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(200);
    data
}

/// `count` events of 200 bytes with the demo's event types.
pub fn batch(count: usize, seed: u64) -> Vec<NewEvent> {
    (0..count)
        .map(|i| {
            NewEvent::new(
                EVENT_TYPES[i % EVENT_TYPES.len()],
                payload_200(seed + i as u64),
            )
        })
        .collect()
}

/// Baseline (a): one events table with the indexes an event store needs, SQLite's default pragmas.
pub const BASELINE_INDEXED_SCHEMA: &str = "
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        stream_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        event_id BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        data BLOB NOT NULL
    );
    CREATE UNIQUE INDEX events_stream_version ON events (stream_id, version);
    CREATE INDEX events_type_created ON events (event_type, created_at);";

/// Baseline (b): only an integer primary key: SQLite's own insert limit for this payload.
pub const BASELINE_PLAIN_SCHEMA: &str = "
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        stream_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        event_id BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        data BLOB NOT NULL
    );";

/// Inserts one batch of rows for `stream_id` (versions `first_version..`) in one transaction.
pub fn baseline_insert_batch(
    conn: &mut rusqlite::Connection,
    stream_id: &str,
    first_version: u64,
    events: &[NewEvent],
    now: i64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO events (stream_id, version, event_type, event_id, created_at, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (i, event) in events.iter().enumerate() {
            let id = uuid::Uuid::now_v7();
            insert.execute(rusqlite::params![
                stream_id,
                (first_version + i as u64) as i64,
                event.event_type,
                &id.as_bytes()[..],
                now,
                &event.data[..]
            ])?;
        }
    }
    tx.commit()
}
