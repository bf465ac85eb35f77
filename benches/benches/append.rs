//! Append benchmarks of the core issue, each with its baseline in the same run.
//!
//! - `batched_append`: 1,000 events of 200 bytes per append to one stream, cycling over 10k
//!   streams, Fast, against raw rusqlite on (a) an indexed events table with SQLite's default
//!   pragmas and (b) a table with only an integer primary key.
//! - `concurrent_durable_append`: single-event Durable appends from 16 threads against 1 thread.
//! - `interleaved_append`: 1,000 events per append over 1,000 streams with random caller ids,
//!   against raw rusqlite inserting the same rows into a table with only an integer key.
//! - `durable_single_append`: latency of one Durable single-event append against raw rusqlite's
//!   insert + commit of the same row (indexed table, WAL, `synchronous=FULL`).
//! - `append_with_large_log`: batched appends into a log already holding 10M events against an
//!   empty log (`STRATA_BENCH_PRELOAD` sets the size; the smoke run uses 20k).
//!
//! Full run: `cargo bench -p strata-benches --bench append`, then
//! `cargo run -p strata-benches --bin bench-report` prints the ratios.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strata::{Durability, ExpectedVersion, NewEvent, Options, Store};
use strata_benches::{
    baseline_insert_batch, batch, env_usize, is_smoke_run, BASELINE_INDEXED_SCHEMA,
    BASELINE_PLAIN_SCHEMA,
};

const BATCH: usize = 1_000;
const STREAMS: u64 = 10_000;

fn fast() -> Options {
    Options {
        durability: Durability::Fast,
        max_events_per_append: 100_000,
        ..Options::default()
    }
}

/// Cycles over the streams: (stream id, first version of the next batch).
struct StreamCycle {
    next: u64,
}

impl StreamCycle {
    fn next(&mut self) -> (String, u64) {
        let i = self.next;
        self.next += 1;
        (
            format!("stream-{}", i % STREAMS),
            (i / STREAMS) * BATCH as u64 + 1,
        )
    }
}

fn batched_append(c: &mut Criterion) {
    let events = batch(BATCH, 1);
    let mut group = c.benchmark_group("batched_append");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("strata.db"), fast()).unwrap();
    let mut cycle = StreamCycle { next: 0 };
    group.bench_function("strata", |b| {
        b.iter(|| {
            let (stream, _) = cycle.next();
            store
                .append(&stream, ExpectedVersion::Any, events.clone())
                .unwrap()
        })
    });

    // (a) SQLite's default pragmas, as the issue specifies; (b) the same WAL + synchronous=NORMAL
    // that strata's Fast mode uses, so that (b) is SQLite's insert limit at equal durability.
    let baselines = [
        ("rusqlite_indexed", BASELINE_INDEXED_SCHEMA, ""),
        (
            "rusqlite_plain",
            BASELINE_PLAIN_SCHEMA,
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
        ),
    ];
    for (name, schema, pragmas) in baselines {
        let mut conn = rusqlite::Connection::open(dir.path().join(format!("{name}.db"))).unwrap();
        conn.execute_batch(pragmas).unwrap();
        conn.execute_batch(schema).unwrap();
        let mut cycle = StreamCycle { next: 0 };
        let now = 1_700_000_000_000_000i64;
        group.bench_function(name, |b| {
            b.iter(|| {
                let (stream, version) = cycle.next();
                baseline_insert_batch(&mut conn, &stream, version, &events, now).unwrap()
            })
        });
    }
    group.finish();
}

/// Single-event Durable appends per measured round, split evenly over the threads.
const ROUND: u64 = 320;

/// One round: `threads` threads make `ROUND` single-event Durable appends between them.
fn durable_round(store: &Store, threads: u64, counter: &AtomicU64) {
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for _ in 0..ROUND / threads {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let event = NewEvent::new("order_created", strata_benches::payload_200(n));
                    store
                        .append(
                            &format!("order-{}", n % STREAMS),
                            ExpectedVersion::Any,
                            vec![event],
                        )
                        .unwrap();
                }
            });
        }
    });
}

fn concurrent_durable_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("concurrent_durable_append");
    // Both functions do the same 320 appends per iteration: their times compare directly.
    group.throughput(Throughput::Elements(ROUND));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(if is_smoke_run() { 1 } else { 20 }));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("durable.db"), Options::default()).unwrap();
    let counter = AtomicU64::new(0);
    for threads in [1u64, 16] {
        group.bench_function(format!("threads_{threads}"), |b| {
            b.iter(|| durable_round(&store, threads, &counter))
        });
    }
    group.finish();
}

/// A store holding `events` events, built once and kept under target/ between runs.
fn preloaded_store(events: usize) -> (PathBuf, Store) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("preloaded-{events}.db"));
    let store = Store::open(&path, fast()).unwrap();
    let have = store.last_position().unwrap() as usize;
    if have < events {
        eprintln!(
            "preloading {} events into {} (once)",
            events - have,
            path.display()
        );
        let chunk = batch(10_000, 7);
        let started = Instant::now();
        let mut appended = have;
        while appended < events {
            let n = (events - appended).min(chunk.len());
            let stream = format!("preload-{}", appended / 10_000 % STREAMS as usize);
            store
                .append(&stream, ExpectedVersion::Any, chunk[..n].to_vec())
                .unwrap();
            appended += n;
        }
        eprintln!("preloaded in {:?}", started.elapsed());
    }
    (path, store)
}

fn append_with_large_log(c: &mut Criterion) {
    let preload = if is_smoke_run() {
        20_000
    } else {
        env_usize("STRATA_BENCH_PRELOAD", 10_000_000)
    };
    let events = batch(BATCH, 3);
    let mut group = c.benchmark_group("append_with_large_log");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);

    let dir = tempfile::tempdir().unwrap();
    let empty = Store::open(dir.path().join("empty.db"), fast()).unwrap();
    let (_path, large) = preloaded_store(preload);
    let stores = Arc::new([("empty_log", empty), ("large_log", large)]);
    for (name, store) in stores.iter() {
        let mut cycle = StreamCycle { next: 0 };
        group.bench_function(*name, |b| {
            b.iter(|| {
                let (stream, _) = cycle.next();
                store
                    .append(
                        &format!("{name}-{stream}"),
                        ExpectedVersion::Any,
                        events.clone(),
                    )
                    .unwrap()
            })
        });
    }
    group.finish();
}

/// One append of `BATCH` events, each to its own stream (1,000 streams interleaved, drawn in turn
/// from `STREAMS`), with random (UUIDv4) caller ids: the case where every index entry would land
/// on a random page.
fn interleaved_append(c: &mut Criterion) {
    let events = batch(BATCH, 2);
    let mut group = c.benchmark_group("interleaved_append");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("strata.db"), fast()).unwrap();
    let mut round = 0u64;
    group.bench_function("strata", |b| {
        b.iter(|| {
            round += 1;
            let parts: Vec<strata::StreamAppend> = events
                .iter()
                .enumerate()
                .map(|(i, event)| {
                    let stream = (round * BATCH as u64 + i as u64) % STREAMS;
                    strata::StreamAppend::new(
                        format!("stream-{stream}"),
                        ExpectedVersion::Any,
                        vec![event.clone().with_id(uuid::Uuid::new_v4())],
                    )
                })
                .collect();
            store.append_multi(parts).unwrap()
        })
    });
    // SQLite's insert limit for the same rows: integer key only, WAL, synchronous=NORMAL.
    let mut conn = rusqlite::Connection::open(dir.path().join("plain.db")).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
        .unwrap();
    conn.execute_batch(BASELINE_PLAIN_SCHEMA).unwrap();
    let mut round = 0u64;
    group.bench_function("rusqlite_plain", |b| {
        b.iter(|| {
            round += 1;
            let tx = conn.transaction().unwrap();
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO events (stream_id, version, event_type, event_id, created_at, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .unwrap();
                for (i, event) in events.iter().enumerate() {
                    let stream = (round * BATCH as u64 + i as u64) % STREAMS;
                    insert
                        .execute(rusqlite::params![
                            format!("stream-{stream}"),
                            round as i64,
                            event.event_type,
                            &uuid::Uuid::new_v4().as_bytes()[..],
                            1_700_000_000_000_000i64,
                            &event.data[..]
                        ])
                        .unwrap();
                }
            }
            tx.commit().unwrap()
        })
    });
    group.finish();
}

/// One Durable append of one event (its latency is the iteration time) against raw SQLite
/// inserting the same row into a table with an event store's indexes and committing with
/// `synchronous=FULL` in WAL mode.
fn durable_single_append(c: &mut Criterion) {
    let events = batch(1, 3);
    let mut group = c.benchmark_group("durable_single_append");
    group.sample_size(50);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("strata.db"), Options::default()).unwrap();
    let mut n = 0u64;
    group.bench_function("strata", |b| {
        b.iter(|| {
            n += 1;
            let stream = format!("stream-{}", n % STREAMS);
            store
                .append(&stream, ExpectedVersion::Any, events.clone())
                .unwrap()
        })
    });
    let mut conn = rusqlite::Connection::open(dir.path().join("raw.db")).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
        .unwrap();
    conn.execute_batch(BASELINE_INDEXED_SCHEMA).unwrap();
    let mut n = 0u64;
    group.bench_function("rusqlite_full", |b| {
        b.iter(|| {
            n += 1;
            let stream = format!("stream-{}", n % STREAMS);
            baseline_insert_batch(&mut conn, &stream, n, &events, 1_700_000_000_000_000).unwrap()
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    batched_append,
    interleaved_append,
    durable_single_append,
    concurrent_durable_append,
    append_with_large_log
);
criterion_main!(benches);
