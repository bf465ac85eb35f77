//! Corruption: bytes flipped in a cleanly closed, checkpointed store file. Opening or reading
//! must report it (an `OpenError`, `ReadError::Corrupt` for a checksum mismatch, or SQLite's own
//! error otherwise), never panic, and never return an event that differs from what was written.
//!
//! Deterministic: seeds 0..`STRATA_CORRUPTION_SEEDS` (default 300), each flipping 1..=8 bytes of
//! a copy of one pristine store at offsets drawn from a seeded RNG.

mod common;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use strata::clock::utc_micros;
use strata::{
    Direction, Event, ExpectedVersion, ManualClock, NewEvent, OpenError, ReadError, Store,
};

const STREAMS: usize = 8;

/// Builds the pristine store: three monthly buckets, a few hundred events of varied sizes (some
/// spilling onto overflow pages), several types. Returns the file's bytes and the events.
fn pristine(dir: &Path) -> (Vec<u8>, Vec<Event>) {
    let path = dir.join("pristine.db");
    let clock = Arc::new(ManualClock::new(utc_micros(2024, 1, 10, 0, 0, 0)));
    let store = Store::open(&path, common::with_clock(&clock)).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    for month in 0..3 {
        clock.set(utc_micros(2024, 1 + month, 10, 0, 0, 0));
        for i in 0..40 {
            clock.advance(1_000);
            let stream = format!("stream-{}", rng.random_range(0..STREAMS));
            let events = (0..rng.random_range(1..=3))
                .map(|k| {
                    let size = if rng.random_range(0..10) == 0 {
                        rng.random_range(2_000..9_000)
                    } else {
                        rng.random_range(1..200)
                    };
                    let data: Vec<u8> = (0..size).map(|_| rng.random()).collect();
                    NewEvent::new(format!("type-{}", (i + k) % 4), data)
                        .with_id(strata::Uuid::from_u128(rng.random()))
                        .with_metadata(format!("m{month}-{i}-{k}").into_bytes())
                })
                .collect();
            store.append(&stream, ExpectedVersion::Any, events).unwrap();
        }
    }
    let events: Vec<Event> = store.iter_all(1).collect::<Result<_, _>>().unwrap();
    assert_eq!(store.buckets().unwrap().len(), 3);
    drop(store);
    // Fold the WAL into the main file, so that the flips hit the file a reopen reads.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let (busy, _, _): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(busy, 0);
    drop(conn);
    let wal = dir.join("pristine.db-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0);
    (std::fs::read(&path).unwrap(), events)
}

/// What one corrupted copy did.
#[derive(Debug, Default)]
struct Outcomes {
    open_refused: usize,
    read_errors: usize,
    corrupt_reported: usize,
    clean: usize,
    silently_short: usize,
    /// Reads that came back short (or a stream's head wrong) with no error, because a page of
    /// the stream index lost entries: reads cannot see that (the index is the only record of a
    /// stream's later versions), `Store::check` must.
    short_found_by_check: usize,
    /// What came back short, for the failure message.
    short_reads: Vec<String>,
}

/// Opens and reads a corrupted copy every way there is, checking each returned event against
/// the original. Returns (some error reported, a read returned fewer events than it should with
/// no error).
fn exercise(path: &Path, original: &[Event], outcomes: &mut Outcomes) -> Result<(), String> {
    let store = match Store::open(path, common::fast()) {
        Ok(store) => store,
        Err(
            OpenError::Sqlite(_)
            | OpenError::NotADatabase { .. }
            | OpenError::NotAStrataStore { .. },
        ) => {
            outcomes.open_refused += 1;
            return Ok(());
        }
        Err(other) => return Err(format!("unexpected open error: {other}")),
    };
    let by_position: BTreeMap<u64, &Event> = original.iter().map(|e| (e.position, e)).collect();
    let errors = std::cell::Cell::new(0);
    let corrupt = std::cell::Cell::new(0);
    let mut short: Option<String> = None;
    let note = |error: &ReadError| {
        errors.set(errors.get() + 1);
        if matches!(error, ReadError::Corrupt { .. }) {
            corrupt.set(corrupt.get() + 1);
        }
    };
    let check = |event: &Event| -> Result<(), String> {
        match by_position.get(&event.position) {
            Some(written) if *written == event => Ok(()),
            Some(written) => Err(format!(
                "silent wrong answer at position {}: read {event:?}, written {written:?}",
                event.position
            )),
            None => Err(format!("an event that was never written: {event:?}")),
        }
    };

    // The whole log, page by page.
    let mut read = 0;
    for item in store.iter_all(1) {
        match item {
            Ok(event) => {
                check(&event)?;
                read += 1;
            }
            Err(error) => {
                note(&error);
                break;
            }
        }
    }
    if errors.get() == 0 && read != original.len() {
        short = Some(format!("read_all: {read} of {} events", original.len()));
    }
    // Each stream, both ways.
    for s in 0..STREAMS {
        let stream = format!("stream-{s}");
        let expected = original.iter().filter(|e| *e.stream_id == stream).count();
        for direction in [Direction::Forwards, Direction::Backwards] {
            let before = errors.get();
            let mut read = 0;
            for item in store.iter_stream(&stream, direction) {
                match item {
                    Ok(event) => {
                        if *event.stream_id != stream {
                            return Err(format!("read_stream({stream}) returned {event:?}"));
                        }
                        check(&event)?;
                        read += 1;
                    }
                    Err(error) => {
                        note(&error);
                        break;
                    }
                }
            }
            if errors.get() == before && read != expected {
                short = Some(format!(
                    "{stream} {direction:?}: {read} of {expected} events"
                ));
            }
        }
        match store.stream_info(&stream) {
            Ok(Some(info)) => {
                let last = original.iter().rfind(|e| *e.stream_id == stream).unwrap();
                if info.version != last.version || info.last_position != last.position {
                    short = Some(format!("stream_info({stream}) is wrong: {info:?}"));
                }
            }
            Ok(None) => short = Some(format!("stream_info({stream}): none")),
            Err(error) => note(&error),
        }
    }
    // By type, over all time.
    for t in 0..4 {
        let name = format!("type-{t}");
        match store.read_by_type(&[&name], i64::MIN..i64::MAX, 1, 100_000) {
            Ok(events) => {
                for event in &events {
                    if *event.event_type != name {
                        return Err(format!("read_by_type({name}) returned {event:?}"));
                    }
                    check(event)?;
                }
            }
            Err(error) => note(&error),
        }
    }
    // An append must not panic the writer: any answer but "closed" will do.
    let appended = store.append(
        "after-corruption",
        ExpectedVersion::Any,
        vec![NewEvent::new("x", &b"y"[..])],
    );
    if let Err(strata::AppendError::Closed) = appended {
        return Err("the writer thread died (panicked?) on a corrupted store".into());
    }
    let check_found_damage = short.is_some() && store.check().map_or(true, |r| !r.is_ok());
    store.close();

    match (errors.get(), short) {
        (0, None) => outcomes.clean += 1,
        (_, Some(_)) if check_found_damage => outcomes.short_found_by_check += 1,
        (_, Some(what)) if what.starts_with("stream_info") => {
            return Err(format!("{what}, and check found nothing"));
        }
        (0, Some(what)) => {
            outcomes.silently_short += 1;
            outcomes.short_reads.push(what);
        }
        _ => {
            outcomes.read_errors += 1;
            if corrupt.get() > 0 {
                outcomes.corrupt_reported += 1;
            }
        }
    }
    Ok(())
}

#[test]
fn flipped_bytes_are_reported_never_returned() {
    let seeds: u64 = std::env::var("STRATA_CORRUPTION_SEEDS")
        .ok()
        .map(|v| v.parse().expect("STRATA_CORRUPTION_SEEDS is a number"))
        .unwrap_or(300);
    let dir = tempfile::tempdir().unwrap();
    let (bytes, original) = pristine(dir.path());
    let mut outcomes = Outcomes::default();
    let mut failures = Vec::new();
    let path = dir.path().join("corrupt.db");
    for seed in 0..seeds {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut copy = bytes.clone();
        for _ in 0..rng.random_range(1..=8) {
            let offset = rng.random_range(0..copy.len());
            copy[offset] ^= rng.random_range(1..=255u8);
        }
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        std::fs::write(&path, &copy).unwrap();
        let shorts_before = outcomes.short_reads.len();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            exercise(&path, &original, &mut outcomes)
        }));
        match result {
            Ok(Ok(())) => {}
            Ok(Err(message)) => failures.push(format!("seed {seed}: {message}")),
            Err(_) => failures.push(format!("seed {seed}: strata panicked on a corrupted file")),
        }
        if outcomes.short_reads.len() > shorts_before {
            let what = outcomes.short_reads.pop().unwrap();
            outcomes.short_reads.push(format!("seed {seed}: {what}"));
        }
    }
    eprintln!("corruption: {seeds} seeds: {outcomes:?}");
    assert!(
        failures.is_empty(),
        "{} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(outcomes.open_refused + outcomes.read_errors > 0);
    assert_eq!(
        outcomes.silently_short, 0,
        "a read came back short with no error: {outcomes:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Regressions for what the random flips found: names and catalog rows are not covered by the
// event checksum, and a corrupt one used to be returned (or to cut a read short) silently.

/// A store with two streams whose names and type are easy to find in the file.
fn named_store(dir: &Path) -> (std::path::PathBuf, Vec<Event>) {
    let path = dir.join("named.db");
    let store = Store::open(&path, common::fast()).unwrap();
    for i in 0..10 {
        let stream = if i % 2 == 0 {
            "stream-name-marker-a"
        } else {
            "stream-name-marker-b"
        };
        store
            .append(
                stream,
                ExpectedVersion::Any,
                vec![NewEvent::new("event-type-marker", vec![i as u8; 40])],
            )
            .unwrap();
    }
    let events = store.iter_all(1).collect::<Result<_, _>>().unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    (path, events)
}

fn occurrences(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// Every read either errs or returns exactly what was written; returns how many erred.
///
/// One exception, the known limit of per-read checks: when the flip hits a stream's entry in the
/// unique index on names, a lookup by that name finds nothing, which is what an unknown stream
/// looks like. Then SQLite's `integrity_check` (what `strata check` runs) must report it.
fn assert_no_wrong_answer(path: &Path, written: &[Event], what: &str) -> usize {
    let store = Store::open(path, common::fast()).unwrap();
    let mut errors = 0;
    match store.iter_all(1).collect::<Result<Vec<_>, _>>() {
        Ok(events) => assert_eq!(events, written, "{what}: read_all"),
        Err(_) => errors += 1,
    }
    for stream in ["stream-name-marker-a", "stream-name-marker-b"] {
        let expected: Vec<&Event> = written.iter().filter(|e| *e.stream_id == *stream).collect();
        if store.stream_info(stream).is_ok_and(|info| info.is_none()) {
            let conn = rusqlite::Connection::open(path).unwrap();
            let report: String = conn
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap();
            assert_ne!(
                report, "ok",
                "{what}: {stream} vanished, integrity_check saw nothing"
            );
            errors += 1;
            continue;
        }
        match store.read_stream(stream, 1, Direction::Forwards, 100) {
            Ok(events) => assert_eq!(
                events.iter().collect::<Vec<_>>(),
                expected,
                "{what}: read_stream({stream})"
            ),
            Err(_) => errors += 1,
        }
        match store.stream_info(stream) {
            Ok(info) => {
                let info = info.unwrap_or_else(|| panic!("{what}: {stream} vanished silently"));
                assert_eq!(info.version, expected.len() as u64, "{what}: stream_info");
            }
            Err(_) => errors += 1,
        }
    }
    errors
}

#[test]
fn a_corrupt_stream_or_type_name_is_reported_not_returned() {
    let dir = tempfile::tempdir().unwrap();
    let (path, written) = named_store(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    for needle in [&b"stream-name-marker-a"[..], b"event-type-marker"] {
        let found = occurrences(&bytes, needle);
        // The table row and the unique index each hold the name.
        assert!(found.len() >= 2, "{found:?}");
        for offset in found {
            let mut copy = bytes.clone();
            copy[offset + 2] ^= 0x01; // "stream" -> "sdream": still a plausible name
            let target = dir.path().join("flipped.db");
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", target.display()));
            }
            std::fs::write(&target, &copy).unwrap();
            let what = format!("{} flipped at {offset}", String::from_utf8_lossy(needle));
            assert!(
                assert_no_wrong_answer(&target, &written, &what) > 0,
                "{what}: no read reported it"
            );
        }
    }
}

#[test]
fn inconsistent_catalog_rows_are_reported_not_read_short() {
    let tamper = [
        "UPDATE stream_index_l0 SET version = version + 3
         WHERE stream_key = (SELECT stream_key FROM streams WHERE stream_id = 'stream-name-marker-a')
           AND version = 5",
        "UPDATE stream_index_l0 SET position = position + 1
         WHERE stream_key = (SELECT stream_key FROM streams WHERE stream_id = 'stream-name-marker-a')
           AND version = 2",
        "UPDATE buckets SET last_position = last_position - 2",
        "UPDATE head SET last_position = last_position - 1",
        "UPDATE head SET last_position = last_position + 1",
        "UPDATE buckets SET first_position = first_position + 3",
    ];
    for sql in tamper {
        let dir = tempfile::tempdir().unwrap();
        let (path, written) = named_store(dir.path());
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute(sql, [])
            .unwrap();
        assert!(
            assert_no_wrong_answer(&path, &written, sql) > 0,
            "{sql}: no read reported it"
        );
    }
}
