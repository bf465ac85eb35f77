//! Time buckets: rollover with an injected clock, stream reads across buckets, reopening.

mod common;

use std::sync::Arc;

use common::{events, with_clock};
use strata::clock::utc_micros;
use strata::{BucketState, BucketWidth, Direction, ExpectedVersion, ManualClock, Options, Store};

fn hourly(clock: &Arc<ManualClock>) -> Options {
    Options {
        bucket_width: Some(BucketWidth::Hour),
        ..with_clock(clock)
    }
}

#[test]
fn hour_buckets_roll_over_and_list_their_ranges() {
    let clock = Arc::new(ManualClock::new(utc_micros(2024, 3, 10, 9, 59, 0)));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s.db"), hourly(&clock)).unwrap();

    store
        .append("s", ExpectedVersion::Any, events("e", 3))
        .unwrap();
    clock.set(utc_micros(2024, 3, 10, 10, 0, 0)); // exactly on the boundary: next bucket
    store
        .append("s", ExpectedVersion::Any, events("e", 2))
        .unwrap();
    clock.set(utc_micros(2024, 3, 10, 12, 30, 0)); // an hour with no events is skipped
    store
        .append("s", ExpectedVersion::Any, events("e", 1))
        .unwrap();

    let buckets = store.buckets().unwrap();
    assert_eq!(buckets.len(), 3);
    let summary: Vec<_> = buckets
        .iter()
        .map(|b| {
            (
                b.start_micros,
                b.first_position,
                b.last_position,
                b.event_count,
                b.state,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                utc_micros(2024, 3, 10, 9, 0, 0),
                Some(1),
                Some(3),
                3,
                BucketState::Sealed
            ),
            (
                utc_micros(2024, 3, 10, 10, 0, 0),
                Some(4),
                Some(5),
                2,
                BucketState::Sealed
            ),
            (
                utc_micros(2024, 3, 10, 12, 0, 0),
                Some(6),
                Some(6),
                1,
                BucketState::Active
            ),
        ]
    );
    assert!(buckets
        .iter()
        .all(|b| b.end_micros - b.start_micros == 3_600_000_000));
}

#[test]
fn month_buckets_roll_over_at_the_calendar_month() {
    let clock = Arc::new(ManualClock::new(utc_micros(2024, 1, 31, 23, 59, 59)));
    let store = Store::open_in_memory(with_clock(&clock)).unwrap();
    store
        .append("s", ExpectedVersion::Any, events("e", 1))
        .unwrap();
    clock.set(utc_micros(2024, 2, 1, 0, 0, 0));
    store
        .append("s", ExpectedVersion::Any, events("e", 1))
        .unwrap();
    clock.set(utc_micros(2024, 2, 29, 23, 0, 0));
    store
        .append("s", ExpectedVersion::Any, events("e", 1))
        .unwrap();
    clock.set(utc_micros(2024, 3, 1, 0, 0, 0));
    store
        .append("s", ExpectedVersion::Any, events("e", 1))
        .unwrap();

    let ranges: Vec<_> = store
        .buckets()
        .unwrap()
        .iter()
        .map(|b| (b.start_micros, b.end_micros, b.event_count))
        .collect();
    assert_eq!(
        ranges,
        vec![
            (
                utc_micros(2024, 1, 1, 0, 0, 0),
                utc_micros(2024, 2, 1, 0, 0, 0),
                1
            ),
            (
                utc_micros(2024, 2, 1, 0, 0, 0),
                utc_micros(2024, 3, 1, 0, 0, 0),
                2
            ),
            (
                utc_micros(2024, 3, 1, 0, 0, 0),
                utc_micros(2024, 4, 1, 0, 0, 0),
                1
            ),
        ]
    );
}

#[test]
fn a_clock_going_backwards_never_makes_recorded_at_go_backwards() {
    let clock = Arc::new(ManualClock::new(utc_micros(2024, 5, 1, 12, 0, 0)));
    let store = Store::open_in_memory(hourly(&clock)).unwrap();
    store
        .append("s", ExpectedVersion::Any, events("e", 1))
        .unwrap();
    clock.set(utc_micros(2024, 5, 1, 11, 0, 0)); // an hour back
    store
        .append("s", ExpectedVersion::Any, events("e", 1))
        .unwrap();

    let all = store.read_all(1, 10).unwrap();
    assert_eq!(
        all[1].recorded_at, all[0].recorded_at,
        "clamped to the last recorded time"
    );
    assert_eq!(store.buckets().unwrap().len(), 1, "no bucket for the past");
}

#[test]
fn a_stream_spanning_three_buckets_reads_back_complete_forwards_and_backwards_after_reopening() {
    let clock = Arc::new(ManualClock::new(utc_micros(2024, 12, 31, 22, 10, 0)));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    {
        let store = Store::open(&path, hourly(&clock)).unwrap();
        for hour in 0..3 {
            store
                .append("order-1", ExpectedVersion::Any, events("step", 4))
                .unwrap();
            store
                .append(
                    &format!("noise-{hour}"),
                    ExpectedVersion::Any,
                    events("n", 2),
                )
                .unwrap();
            clock.advance(3_600_000_000);
        }
        assert_eq!(store.buckets().unwrap().len(), 3);
    }
    let store = Store::open(&path, hourly(&clock)).unwrap();
    let forwards = store
        .read_stream("order-1", 1, Direction::Forwards, 100)
        .unwrap();
    assert_eq!(
        forwards.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=12).collect::<Vec<_>>()
    );
    let backwards = store
        .read_stream("order-1", u64::MAX, Direction::Backwards, 100)
        .unwrap();
    assert_eq!(
        backwards.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=12).rev().collect::<Vec<_>>()
    );

    // Pages that start in the middle of a bucket and cross into the next.
    let middle = store
        .read_stream("order-1", 3, Direction::Forwards, 4)
        .unwrap();
    assert_eq!(
        middle.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![3, 4, 5, 6]
    );
    let middle_back = store
        .read_stream("order-1", 6, Direction::Backwards, 4)
        .unwrap();
    assert_eq!(
        middle_back.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![6, 5, 4, 3]
    );
    let iterated: Vec<u64> = store
        .iter_stream("order-1", Direction::Backwards)
        .map(|e| e.unwrap().version)
        .collect();
    assert_eq!(iterated, (1..=12).rev().collect::<Vec<_>>());

    let info = store.stream_info("order-1").unwrap().unwrap();
    assert_eq!(
        (info.version, info.first_position, info.last_position),
        (12, 1, 16)
    );
}

#[test]
fn reading_a_stream_touches_only_the_buckets_that_hold_its_events() {
    let clock = Arc::new(ManualClock::new(utc_micros(2024, 6, 1, 0, 30, 0)));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = Store::open(&path, hourly(&clock)).unwrap();
    store
        .append("mine", ExpectedVersion::Any, events("e", 2))
        .unwrap();
    clock.advance(3_600_000_000);
    store
        .append("theirs", ExpectedVersion::Any, events("e", 2))
        .unwrap();
    clock.advance(3_600_000_000);
    store
        .append("mine", ExpectedVersion::Any, events("e", 2))
        .unwrap();
    store.close();
    drop(store);

    // Remove the middle bucket's table behind strata's back: a read that touched it would fail.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("DROP TABLE events_2").unwrap();
    drop(conn);

    let store = Store::open(&path, hourly(&clock)).unwrap();
    let mine = store
        .read_stream("mine", 1, Direction::Forwards, 10)
        .unwrap();
    assert_eq!(
        mine.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![1, 2, 5, 6]
    );
    assert!(store
        .read_stream("theirs", 1, Direction::Forwards, 10)
        .is_err());
}
