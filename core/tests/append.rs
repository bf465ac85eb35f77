//! Appending: expected versions, concurrency, idempotency, multi-stream atomicity, limits.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::thread;

use common::{events, fast, temp_store};
use strata::{
    AppendError, Direction, ExpectedVersion, InvalidInput, NewEvent, Options, Store, StreamAppend,
    Uuid,
};

fn memory() -> Store {
    Store::open_in_memory(fast()).unwrap()
}

#[test]
fn expected_version_rules_are_enforced() {
    let store = memory();
    assert!(matches!(
        store.append("s", ExpectedVersion::StreamExists, events("e", 1)),
        Err(AppendError::Conflict { actual: 0, .. })
    ));
    assert!(matches!(
        store.append("s", ExpectedVersion::Exact(1), events("e", 1)),
        Err(AppendError::Conflict { actual: 0, .. })
    ));
    let first = store
        .append("s", ExpectedVersion::NoStream, events("e", 2))
        .unwrap();
    assert_eq!(
        (
            first.first_position,
            first.last_position,
            first.last_version
        ),
        (1, 2, 2)
    );
    assert!(matches!(
        store.append("s", ExpectedVersion::NoStream, events("e", 1)),
        Err(AppendError::Conflict { actual: 2, .. })
    ));
    store
        .append("s", ExpectedVersion::StreamExists, events("e", 1))
        .unwrap();
    store
        .append("s", ExpectedVersion::Exact(3), events("e", 1))
        .unwrap();
    let last = store
        .append("s", ExpectedVersion::Any, events("e", 1))
        .unwrap();
    assert_eq!(last.last_version, 5);
}

#[test]
fn a_conflict_writes_nothing_and_reports_the_actual_version() {
    let store = memory();
    store
        .append("s", ExpectedVersion::NoStream, events("e", 3))
        .unwrap();
    let error = store
        .append("s", ExpectedVersion::Exact(1), events("x", 5))
        .unwrap_err();
    match error {
        AppendError::Conflict {
            stream_id,
            expected,
            actual,
        } => {
            assert_eq!(stream_id, "s");
            assert_eq!(expected, ExpectedVersion::Exact(1));
            assert_eq!(actual, 3);
        }
        other => panic!("expected a conflict, got {other}"),
    }
    assert_eq!(store.last_position().unwrap(), 3);
    assert_eq!(store.read_all(1, 100).unwrap().len(), 3);
}

#[test]
fn eight_threads_racing_on_one_stream_each_version_is_won_once() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 40;
    let (_dir, _path, store) = temp_store(fast());
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|thread_index| {
            let store = store.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let mut won = Vec::new();
                let mut conflicts = 0;
                let mut expected = 0;
                for round in 0..ROUNDS {
                    let event =
                        NewEvent::new("claimed", format!("{thread_index}:{round}").into_bytes());
                    match store.append("contested", ExpectedVersion::Exact(expected), vec![event]) {
                        Ok(result) => {
                            assert_eq!(result.last_version, expected + 1);
                            won.push(result.last_version);
                            expected = result.last_version;
                        }
                        Err(AppendError::Conflict { actual, .. }) => {
                            // The loser learns the actual version and tries from there.
                            assert!(
                                actual > expected,
                                "actual {actual} must be past expected {expected}"
                            );
                            conflicts += 1;
                            expected = actual;
                        }
                        Err(other) => panic!("unexpected error {other}"),
                    }
                }
                (won, conflicts)
            })
        })
        .collect();
    let mut all_won = Vec::new();
    let mut total_conflicts = 0;
    for handle in handles {
        let (won, conflicts) = handle.join().unwrap();
        all_won.extend(won);
        total_conflicts += conflicts;
    }
    all_won.sort_unstable();
    let n = all_won.len() as u64;
    assert_eq!(
        all_won,
        (1..=n).collect::<Vec<_>>(),
        "each version won exactly once"
    );
    assert_eq!(all_won.len() + total_conflicts, THREADS * ROUNDS);

    let stored = store
        .read_stream("contested", 1, Direction::Forwards, 10_000)
        .unwrap();
    let versions: Vec<u64> = stored.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=n).collect::<Vec<_>>());
}

#[test]
fn concurrent_appends_to_many_streams_leave_positions_gap_free_in_commit_order() {
    const THREADS: usize = 6;
    const APPENDS: usize = 50;
    let (_dir, _path, store) = temp_store(fast());
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            thread::spawn(move || {
                let mut results = Vec::new();
                for i in 0..APPENDS {
                    let stream = format!("stream-{t}-{}", i % 5);
                    results.push(
                        store
                            .append(&stream, ExpectedVersion::Any, events("e", 1 + i % 3))
                            .unwrap(),
                    );
                }
                results
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();

    let all: Vec<_> = store.iter_all(1).collect::<Result<_, _>>().unwrap();
    let positions: Vec<u64> = all.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "gap-free"
    );
    let total: u64 = results
        .iter()
        .map(|r| r.last_position - r.first_position + 1)
        .sum();
    assert_eq!(total, all.len() as u64);
    // Every append's events are contiguous and in its own stream at consecutive versions.
    for result in &results {
        let slice = &all[(result.first_position - 1) as usize..result.last_position as usize];
        assert!(slice.iter().all(|e| *e.stream_id == *result.stream_id));
        assert!(slice.windows(2).all(|w| w[1].version == w[0].version + 1));
    }
    // recorded_at never goes backwards along positions.
    assert!(all.windows(2).all(|w| w[0].recorded_at <= w[1].recorded_at));
}

#[test]
fn multi_stream_append_is_all_or_nothing() {
    let store = memory();
    store
        .append("a", ExpectedVersion::NoStream, events("e", 1))
        .unwrap();
    store
        .append("b", ExpectedVersion::NoStream, events("e", 2))
        .unwrap();

    let error = store
        .append_multi(vec![
            StreamAppend::new("a", ExpectedVersion::Exact(1), events("x", 2)),
            StreamAppend::new("c", ExpectedVersion::NoStream, events("x", 2)),
            StreamAppend::new("b", ExpectedVersion::Exact(1), events("x", 1)), // actual is 2
        ])
        .unwrap_err();
    assert!(
        matches!(error, AppendError::Conflict { ref stream_id, actual: 2, .. } if stream_id == "b"),
        "{error}"
    );
    assert_eq!(store.last_position().unwrap(), 3);
    assert!(store.stream_info("c").unwrap().is_none());
    assert_eq!(store.stream_info("a").unwrap().unwrap().version, 1);

    let results = store
        .append_multi(vec![
            StreamAppend::new("a", ExpectedVersion::Exact(1), events("x", 2)),
            StreamAppend::new("c", ExpectedVersion::NoStream, events("x", 2)),
        ])
        .unwrap();
    assert_eq!(
        (results[0].first_position, results[0].last_position),
        (4, 5)
    );
    assert_eq!(
        (results[1].first_position, results[1].last_position),
        (6, 7)
    );
    assert_eq!(results[1].last_version, 2);
}

#[test]
fn one_conflict_in_a_group_commit_fails_only_its_own_request() {
    let (_dir, _path, store) = temp_store(Options::default()); // Durable: slow commits group requests
    let barrier = Arc::new(Barrier::new(16));
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                // Half the appenders use an impossible expected version.
                let expected = if i % 2 == 0 {
                    ExpectedVersion::Any
                } else {
                    ExpectedVersion::Exact(1_000)
                };
                store.append(&format!("s-{i}"), expected, events("e", 3))
            })
        })
        .collect();
    let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (i, outcome) in outcomes.iter().enumerate() {
        if i % 2 == 0 {
            assert!(outcome.is_ok(), "{outcome:?}");
        } else {
            assert!(
                matches!(outcome, Err(AppendError::Conflict { actual: 0, .. })),
                "{outcome:?}"
            );
        }
    }
    assert_eq!(store.last_position().unwrap(), 8 * 3);
}

#[test]
fn an_idempotent_retry_returns_the_original_positions_and_writes_nothing() {
    let store = memory();
    store
        .append("other", ExpectedVersion::Any, events("e", 2))
        .unwrap();
    let ids = [Uuid::new_v4(), Uuid::new_v4()];
    let batch: Vec<NewEvent> = ids
        .iter()
        .map(|id| NewEvent::new("paid", b"x".to_vec()).with_id(*id))
        .collect();

    let first = store
        .append("order-1", ExpectedVersion::NoStream, batch.clone())
        .unwrap();
    assert!(!first.already_stored);
    store
        .append("other", ExpectedVersion::Any, events("e", 1))
        .unwrap();

    // The retry's expected version (NoStream) no longer holds: still a success.
    let retry = store
        .append("order-1", ExpectedVersion::NoStream, batch.clone())
        .unwrap();
    assert!(retry.already_stored);
    assert_eq!(
        (retry.first_position, retry.last_position),
        (first.first_position, first.last_position)
    );
    assert_eq!(retry.last_version, 2);
    assert_eq!(retry.event_ids, ids.to_vec());
    assert_eq!(store.last_position().unwrap(), 5);

    let retry_any = store
        .append("order-1", ExpectedVersion::Any, batch)
        .unwrap();
    assert!(retry_any.already_stored);
    assert_eq!(store.read_all(1, 100).unwrap().len(), 5);
}

#[test]
fn a_reused_event_id_elsewhere_is_an_error() {
    let store = memory();
    let id = Uuid::new_v4();
    let stored = store
        .append(
            "a",
            ExpectedVersion::Any,
            vec![NewEvent::new("e", b"1".to_vec()).with_id(id)],
        )
        .unwrap();

    // Same id, another stream.
    let error = store
        .append(
            "b",
            ExpectedVersion::Any,
            vec![NewEvent::new("e", b"1".to_vec()).with_id(id)],
        )
        .unwrap_err();
    assert!(
        matches!(error, AppendError::DuplicateEventId { event_id, position } if event_id == id && position == stored.first_position),
        "{error}"
    );
    // Same id mixed with a new one: not a retry of one append.
    let error = store
        .append(
            "a",
            ExpectedVersion::Any,
            vec![
                NewEvent::new("e", b"1".to_vec()).with_id(id),
                NewEvent::new("e", b"2".to_vec()).with_id(Uuid::new_v4()),
            ],
        )
        .unwrap_err();
    assert!(
        matches!(error, AppendError::DuplicateEventId { .. }),
        "{error}"
    );
    // The same id twice in one append.
    let twice = Uuid::new_v4();
    let error = store
        .append(
            "c",
            ExpectedVersion::Any,
            vec![
                NewEvent::new("e", b"1".to_vec()).with_id(twice),
                NewEvent::new("e", b"2".to_vec()).with_id(twice),
            ],
        )
        .unwrap_err();
    assert!(matches!(error, AppendError::Invalid(_)), "{error}");
    assert_eq!(store.last_position().unwrap(), 1);
    assert!(store.stream_info("b").unwrap().is_none());
}

#[test]
fn retries_in_the_same_group_commit_are_stored_once() {
    let (_dir, _path, store) = temp_store(Options::default());
    let id = Uuid::new_v4();
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                store
                    .append(
                        "once",
                        ExpectedVersion::Any,
                        vec![NewEvent::new("e", b"x".to_vec()).with_id(id)],
                    )
                    .unwrap()
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let positions: HashSet<u64> = results.iter().map(|r| r.first_position).collect();
    assert_eq!(
        positions.len(),
        1,
        "every retry sees the one stored position"
    );
    assert_eq!(results.iter().filter(|r| !r.already_stored).count(), 1);
    assert_eq!(store.last_position().unwrap(), 1);
}

#[test]
fn every_limit_gives_its_error_and_leaves_the_store_unchanged() {
    let store = Store::open_in_memory(Options {
        max_payload_bytes: 1024,
        max_events_per_append: 10,
        ..fast()
    })
    .unwrap();
    store
        .append("s", ExpectedVersion::NoStream, events("e", 1))
        .unwrap();
    let long = "x".repeat(256);

    fn invalid<T: std::fmt::Debug>(result: Result<T, AppendError>) -> InvalidInput {
        match result {
            Err(AppendError::Invalid(reason)) => reason,
            other => panic!("expected an invalid-input error, got {other:?}"),
        }
    }
    assert_eq!(
        invalid(store.append("", ExpectedVersion::Any, events("e", 1))),
        InvalidInput::StreamIdLength { len: 0 }
    );
    assert_eq!(
        invalid(store.append(&long, ExpectedVersion::Any, events("e", 1))),
        InvalidInput::StreamIdLength { len: 256 }
    );
    assert_eq!(
        invalid(store.append("s", ExpectedVersion::Any, events("", 1))),
        InvalidInput::EventTypeLength { len: 0 }
    );
    assert_eq!(
        invalid(store.append("s", ExpectedVersion::Any, events(&long, 1))),
        InvalidInput::EventTypeLength { len: 256 }
    );
    assert_eq!(
        invalid(store.append(
            "s",
            ExpectedVersion::Any,
            vec![NewEvent::new("e", vec![0u8; 1000]).with_metadata(vec![0u8; 25])]
        )),
        InvalidInput::PayloadTooLarge {
            len: 1025,
            limit: 1024
        }
    );
    assert_eq!(
        invalid(store.append("s", ExpectedVersion::Any, events("e", 11))),
        InvalidInput::TooManyEvents {
            count: 11,
            limit: 10
        }
    );
    assert_eq!(
        invalid(store.append("s", ExpectedVersion::Any, vec![])),
        InvalidInput::NoEvents
    );
    assert_eq!(invalid(store.append_multi(vec![])), InvalidInput::NoEvents);
    assert_eq!(
        invalid(store.append_multi(vec![
            StreamAppend::new("a", ExpectedVersion::Any, events("e", 1)),
            StreamAppend::new("a", ExpectedVersion::Any, events("e", 1)),
        ])),
        InvalidInput::RepeatedStream("a".into())
    );
    // The longest valid names and the largest valid payload are accepted.
    let max = "y".repeat(255);
    store
        .append(
            &max,
            ExpectedVersion::Any,
            vec![NewEvent::new(max.clone(), vec![1u8; 1024])],
        )
        .unwrap();

    let all = store.read_all(1, 100).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(&*all[1].stream_id, max.as_str());
    assert_eq!(all[1].data.len(), 1024);
}

#[test]
fn appends_after_close_fail_cleanly_and_reads_still_work() {
    let store = memory();
    store
        .append("s", ExpectedVersion::Any, events("e", 1))
        .unwrap();
    store.close();
    assert!(matches!(
        store.append("s", ExpectedVersion::Any, events("e", 1)),
        Err(AppendError::Closed)
    ));
    assert_eq!(store.read_all(1, 10).unwrap().len(), 1);
}

#[test]
fn generated_ids_are_unique_and_returned() {
    let store = memory();
    let result = store
        .append("s", ExpectedVersion::Any, events("e", 3))
        .unwrap();
    let unique: HashSet<Uuid> = result.event_ids.iter().copied().collect();
    assert_eq!(unique.len(), 3);
    let stored: Vec<Uuid> = store
        .read_stream("s", 1, Direction::Forwards, 10)
        .unwrap()
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(stored, result.event_ids);
}

#[test]
fn a_retry_with_the_same_ids_but_other_content_is_an_error_naming_the_id() {
    for index_merge_entries in [1, 4_096] {
        // 1: the first append's ids are merged before the retry; 4,096: still in level 0.
        let store = Store::open_in_memory(strata::Options {
            index_merge_entries,
            ..strata::Options::default()
        })
        .unwrap();
        let id = Uuid::new_v4();
        let original = || {
            NewEvent::new("order_placed", b"amount=10".to_vec())
                .with_metadata(b"m".to_vec())
                .with_id(id)
        };
        let stored = store
            .append("order-1", ExpectedVersion::NoStream, vec![original()])
            .unwrap();
        // The same append again is a retry.
        let retry = store
            .append("order-1", ExpectedVersion::NoStream, vec![original()])
            .unwrap();
        assert!(retry.already_stored);
        let changed = [
            NewEvent::new("order_placed", b"amount=99".to_vec())
                .with_metadata(b"m".to_vec())
                .with_id(id),
            NewEvent::new("order_placed", b"amount=10".to_vec())
                .with_metadata(b"other".to_vec())
                .with_id(id),
            NewEvent::new("order_cancelled", b"amount=10".to_vec())
                .with_metadata(b"m".to_vec())
                .with_id(id),
        ];
        for event in changed {
            let error = store
                .append("order-1", ExpectedVersion::Any, vec![event])
                .unwrap_err();
            assert!(
                matches!(error, AppendError::DuplicateEventId { event_id, position }
                    if event_id == id && position == stored.first_position),
                "{error}"
            );
            assert!(error.to_string().contains(&id.to_string()), "{error}");
        }
        assert_eq!(
            store.last_position().unwrap(),
            1,
            "nothing more was written"
        );
    }
}
