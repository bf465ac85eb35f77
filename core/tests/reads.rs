//! Reads: all events by position, by type and time range, iterators, stream info, corruption.

mod common;

use std::sync::Arc;

use common::{events, fast, with_clock};
use strata::clock::utc_micros;
use strata::{Direction, ExpectedVersion, InvalidInput, ManualClock, NewEvent, ReadError, Store};

#[test]
fn read_all_pages_through_the_log_in_position_order() {
    let store = Store::open_in_memory(fast()).unwrap();
    for i in 0..10 {
        store
            .append(
                &format!("s-{}", i % 3),
                ExpectedVersion::Any,
                events("e", 5),
            )
            .unwrap();
    }
    let page = store.read_all(11, 7).unwrap();
    assert_eq!(
        page.iter().map(|e| e.position).collect::<Vec<_>>(),
        (11..=17).collect::<Vec<_>>()
    );
    let iterated: Vec<u64> = store.iter_all(1).map(|e| e.unwrap().position).collect();
    assert_eq!(iterated, (1..=50).collect::<Vec<_>>());
    assert!(store.read_all(51, 10).unwrap().is_empty());
}

#[test]
fn iterators_fetch_in_pages_across_more_than_one_page() {
    let store = Store::open_in_memory(fast()).unwrap();
    for _ in 0..3 {
        store
            .append("big", ExpectedVersion::Any, events("e", 1_000))
            .unwrap();
    }
    assert_eq!(store.iter_all(1).count(), 3_000);
    let versions: Vec<u64> = store
        .iter_stream("big", Direction::Forwards)
        .map(|e| e.unwrap().version)
        .collect();
    assert_eq!(versions, (1..=3_000).collect::<Vec<_>>());
}

#[test]
fn page_sizes_out_of_range_are_refused() {
    let store = Store::open_in_memory(fast()).unwrap();
    assert!(matches!(
        store.read_all(1, 0),
        Err(ReadError::Invalid(InvalidInput::PageSize {
            requested: 0,
            ..
        }))
    ));
    assert!(matches!(
        store.read_stream(
            "s",
            1,
            Direction::Forwards,
            strata::limits::MAX_PAGE_SIZE + 1
        ),
        Err(ReadError::Invalid(InvalidInput::PageSize { .. }))
    ));
}

#[test]
fn events_of_given_types_in_a_time_range() {
    let clock = Arc::new(ManualClock::new(utc_micros(2024, 1, 15, 0, 0, 0)));
    let store = Store::open_in_memory(with_clock(&clock)).unwrap();
    for day in 0..40 {
        store
            .append(
                &format!("order-{day}"),
                ExpectedVersion::NoStream,
                vec![
                    NewEvent::new("order_created", vec![day as u8]),
                    NewEvent::new("payment_confirmed", vec![day as u8]),
                    NewEvent::new("order_completed", vec![day as u8]),
                ],
            )
            .unwrap();
        clock.advance(24 * 3_600_000_000);
    }
    // February only: days 17..=45 from Jan 15 -> orders 17..=39 (40 orders, last is day 39).
    let february = utc_micros(2024, 2, 1, 0, 0, 0)..utc_micros(2024, 3, 1, 0, 0, 0);
    let created = store
        .read_by_type(&["order_created"], february.clone(), 1, 1_000)
        .unwrap();
    assert_eq!(created.len(), 40 - 17);
    assert!(created.iter().all(|e| &*e.event_type == "order_created"));
    assert!(created.iter().all(|e| february.contains(&e.recorded_at)));
    assert!(created.windows(2).all(|w| w[0].position < w[1].position));

    let two_types = store
        .read_by_type(
            &["order_created", "order_completed", "never_seen"],
            february.clone(),
            1,
            1_000,
        )
        .unwrap();
    assert_eq!(two_types.len(), 2 * (40 - 17));
    let from_middle = store
        .read_by_type(
            &["order_completed"],
            february.clone(),
            two_types[10].position,
            1_000,
        )
        .unwrap();
    assert!(from_middle
        .iter()
        .all(|e| e.position >= two_types[10].position));

    let iterated = store
        .iter_by_type(&["payment_confirmed"], 0..i64::MAX)
        .count();
    assert_eq!(iterated, 40);
    assert!(store
        .read_by_type(&["never_seen"], 0..i64::MAX, 1, 10)
        .unwrap()
        .is_empty());
}

#[test]
fn stream_info_reports_version_and_position_range() {
    let store = Store::open_in_memory(fast()).unwrap();
    assert!(store.stream_info("missing").unwrap().is_none());
    store
        .append("a", ExpectedVersion::Any, events("e", 2))
        .unwrap();
    store
        .append("b", ExpectedVersion::Any, events("e", 1))
        .unwrap();
    store
        .append("a", ExpectedVersion::Any, events("e", 1))
        .unwrap();
    let info = store.stream_info("a").unwrap().unwrap();
    assert_eq!(
        (info.version, info.first_position, info.last_position),
        (3, 1, 4)
    );
}

#[test]
fn a_payload_corrupted_on_disk_is_reported_not_returned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = Store::open(&path, fast()).unwrap();
    store
        .append(
            "s",
            ExpectedVersion::Any,
            vec![NewEvent::new("e", b"precious payload".to_vec())],
        )
        .unwrap();
    store
        .append("s", ExpectedVersion::Any, events("e", 1))
        .unwrap();
    drop(store);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE events_1 SET data = ?1 WHERE position = 1",
            [b"precious paylaod".to_vec()],
        )
        .unwrap();
    }
    let store = Store::open(&path, fast()).unwrap();
    let error = store.read_all(1, 10).unwrap_err();
    assert!(
        matches!(error, ReadError::Corrupt { position: 1, .. }),
        "{error}"
    );
    assert_eq!(
        store.read_all(2, 10).unwrap().len(),
        1,
        "other events still read"
    );
}
