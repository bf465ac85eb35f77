//! Dynamic Consistency Boundaries: tags on events, reads by query, conditional appends, and the
//! examples of the DCB specification (dcb.events) as a user would write them.

mod common;
#[path = "common/dcb.rs"]
mod dcb_common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use dcb_common::{create_invoice, define_course, register, rename, subscribe_student, Decided};
use strata::{
    limits, AppendCondition, AppendError, BucketWidth, Direction, Durability, ExpectedVersion,
    InvalidInput, ManualClock, NewEvent, Options, ProblemKind, Query, QueryItem, ReadError, Store,
    StreamAppend, SubscriptionFilter, DEFAULT_STREAM,
};

fn store() -> Store {
    Store::open_in_memory(common::fast()).unwrap()
}

fn tagged(kind: &str, tags: &[&str]) -> NewEvent {
    NewEvent::new(kind, kind.as_bytes().to_vec()).with_tags(tags.iter().copied())
}

fn positions(events: &[strata::Event]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

// ---------------------------------------------------------------------------------------------
// Tags on events.

#[test]
fn tags_are_stored_sorted_without_repeats_and_returned_by_every_read() {
    let (_dir, path, store) = common::temp_store(common::fast());
    store
        .append(
            "s",
            ExpectedVersion::NoStream,
            vec![
                tagged("a", &["z", "x", "z"]),
                NewEvent::new("b", b"plain".to_vec()),
            ],
        )
        .unwrap();
    let expected: &[String] = &["x".to_string(), "z".to_string()];
    let by_stream = store.read_stream("s", 1, Direction::Forwards, 10).unwrap();
    assert_eq!(&by_stream[0].tags[..], expected);
    assert!(
        by_stream[1].tags.is_empty(),
        "an untagged event has no tags"
    );
    assert_eq!(&store.read_all(1, 10).unwrap()[0].tags[..], expected);
    assert_eq!(
        &store
            .read_by_type(&["a"], i64::MIN..i64::MAX, 1, 10)
            .unwrap()[0]
            .tags[..],
        expected
    );
    let mut subscription = store.subscribe(1, SubscriptionFilter::all()).unwrap();
    let first = subscription
        .next_timeout(Duration::from_secs(5))
        .unwrap()
        .unwrap();
    assert_eq!(&first.tags[..], expected);
    store.close();
    drop(store);
    let reopened = Store::open(&path, common::fast()).unwrap();
    assert_eq!(&reopened.read_all(1, 1).unwrap()[0].tags[..], expected);
    assert!(reopened.check().unwrap().is_ok());
}

#[test]
fn a_retry_with_other_tags_is_not_the_same_append() {
    let store = store();
    let id = strata::Uuid::now_v7();
    let event = tagged("a", &["t1"]).with_id(id);
    store
        .append("s", ExpectedVersion::Any, vec![event.clone()])
        .unwrap();
    let retry = store
        .append("s", ExpectedVersion::Any, vec![event])
        .unwrap();
    assert!(retry.already_stored);
    let changed = tagged("a", &["t2"]).with_id(id);
    let error = store
        .append("s", ExpectedVersion::Any, vec![changed])
        .unwrap_err();
    assert!(
        matches!(error, AppendError::DuplicateEventId { position: 1, .. }),
        "{error}"
    );
}

// ---------------------------------------------------------------------------------------------
// Queries.

/// Positions 1..=6: types and tags chosen so that every rule of the query shows.
fn query_fixture() -> Store {
    let store = store();
    store
        .append(
            "s",
            ExpectedVersion::Any,
            vec![
                tagged("registered", &["user:1"]),              // 1
                tagged("registered", &["user:2"]),              // 2
                tagged("subscribed", &["user:1", "course:c1"]), // 3
                tagged("subscribed", &["user:2", "course:c1"]), // 4
                tagged("left", &["user:1", "course:c1"]),       // 5
                NewEvent::new("other", b"x".to_vec()),          // 6
            ],
        )
        .unwrap();
    store
}

#[test]
fn a_query_ors_its_items_ors_an_items_types_and_ands_its_tags() {
    let store = query_fixture();
    let read = |query: Query| positions(&store.read_query(&query, 0, 100).unwrap());
    assert_eq!(read(Query::tags(["user:1"])), [1, 3, 5]);
    assert_eq!(
        read(Query::tags(["user:1", "course:c1"])),
        [3, 5],
        "tags AND"
    );
    assert_eq!(
        read(Query::types(["registered", "left"])),
        [1, 2, 5],
        "types OR"
    );
    assert_eq!(
        read(Query::item(
            QueryItem::types(["subscribed", "left"]).with_tags(["user:1"])
        )),
        [3, 5]
    );
    assert_eq!(
        read(Query::tags(["user:2"]).or(QueryItem::types(["left"]))),
        [2, 4, 5],
        "items OR, each event once"
    );
    assert_eq!(read(Query::all()), [1, 2, 3, 4, 5, 6]);
    assert_eq!(read(Query::tags(["nobody"])), Vec::<u64>::new());
    assert_eq!(read(Query::types(["unknown_type"])), Vec::<u64>::new());
    assert_eq!(
        read(Query::item(
            QueryItem::types(["unknown_type", "left"]).with_tags(["course:c1"])
        )),
        [5]
    );
}

#[test]
fn read_query_starts_after_a_position_and_stops_at_the_limit() {
    let store = query_fixture();
    let query = Query::tags(["course:c1"]);
    assert_eq!(
        positions(&store.read_query(&query, 3, 100).unwrap()),
        [4, 5]
    );
    assert_eq!(positions(&store.read_query(&query, 0, 2).unwrap()), [3, 4]);
    assert_eq!(
        positions(&store.read_query(&Query::all(), 4, 1).unwrap()),
        [5]
    );
    let error = store.read_query(&query, 0, 0).unwrap_err();
    assert!(matches!(
        error,
        ReadError::Invalid(InvalidInput::PageSize { .. })
    ));
}

#[test]
fn queries_read_across_buckets_and_the_iterator_pages_through_them() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000));
    let store = Store::open_in_memory(Options {
        bucket_width: Some(BucketWidth::Hour),
        // Merges run often: the reads must see every level.
        index_merge_entries: 64,
        ..common::with_clock(&clock)
    })
    .unwrap();
    let mut expected = Vec::new();
    for hour in 0..3 {
        for i in 0..900u64 {
            let tag = if i % 3 == 0 { "every-third" } else { "rest" };
            let result = store
                .append("s", ExpectedVersion::Any, vec![tagged("e", &[tag])])
                .unwrap();
            if tag == "every-third" {
                expected.push(result.first_position);
            }
        }
        clock.advance(3_600_000_000);
        let _ = hour;
    }
    assert_eq!(store.buckets().unwrap().len(), 3);
    let query = Query::tags(["every-third"]);
    let all: Vec<u64> = store
        .iter_query(&query, 0)
        .map(|e| e.unwrap().position)
        .collect();
    assert_eq!(all, expected);
    assert_eq!(expected.len(), 900);
    let by_type: Vec<u64> = store
        .iter_query(&Query::types(["e"]), 2_000)
        .map(|e| e.unwrap().position)
        .collect();
    assert_eq!(by_type, (2_001..=2_700).collect::<Vec<_>>());
    assert!(store.check().unwrap().is_ok());
}

#[test]
fn a_query_that_reaches_an_archived_bucket_says_so() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000));
    let (dir, _path, store) = common::temp_store(Options {
        bucket_width: Some(BucketWidth::Hour),
        ..common::with_clock(&clock)
    });
    store
        .append("s", ExpectedVersion::Any, vec![tagged("e", &["t"])])
        .unwrap();
    clock.advance(3_600_000_000);
    store
        .append("s", ExpectedVersion::Any, vec![tagged("e", &["t"])])
        .unwrap();
    store
        .append(
            "s",
            ExpectedVersion::Any,
            vec![tagged("e", &["u", "t"]), tagged("f", &[])],
        )
        .unwrap();
    clock.advance(3_600_000_000);
    let first = store.buckets().unwrap()[0].id;
    let archive = store.archive_bucket(first, dir.path()).unwrap();
    // The archive lists the tags as text, one row per tag, beside the stored form.
    let conn = rusqlite::Connection::open(&archive.archive_path).unwrap();
    let listed: Vec<(i64, String)> = conn
        .prepare("SELECT position, tag FROM event_tags ORDER BY position, tag")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(listed, [(1, "t".to_string())]);
    let untagged: i64 = conn
        .query_row("SELECT count(*) FROM events WHERE tags IS NULL", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(untagged, 0);
    drop(conn);
    let error = store.read_query(&Query::tags(["t"]), 0, 10).unwrap_err();
    assert!(matches!(error, ReadError::Archived { .. }), "{error}");
    assert_eq!(
        positions(&store.read_query(&Query::tags(["t"]), 1, 10).unwrap()),
        [2, 3]
    );
    // A condition by tag still sees the archived event through the index.
    let error = store
        .append_with(
            vec![tagged("e", &["t"])],
            AppendCondition::new(Query::tags(["t"]), 0),
        )
        .unwrap_err();
    assert!(
        matches!(error, AppendError::ConditionFailed { position: 1, .. }),
        "{error}"
    );
}

// ---------------------------------------------------------------------------------------------
// Conditional appends.

#[test]
fn a_failed_condition_writes_nothing_and_names_the_first_conflicting_position() {
    let store = query_fixture();
    let condition = AppendCondition::new(Query::tags(["course:c1"]), 2);
    let error = store
        .append_with(vec![tagged("subscribed", &["course:c1"])], condition)
        .unwrap_err();
    match error {
        AppendError::ConditionFailed { position, after } => assert_eq!((position, after), (3, 2)),
        other => panic!("{other}"),
    }
    assert_eq!(store.last_position().unwrap(), 6, "nothing written");
    // After the last matching position the condition holds.
    let result = store
        .append_with(
            vec![tagged("subscribed", &["course:c1"])],
            AppendCondition::new(Query::tags(["course:c1"]), 5),
        )
        .unwrap();
    assert_eq!(
        (result.stream_id.as_str(), result.first_position),
        (DEFAULT_STREAM, 7)
    );
    // Events that match no item do not count (6 is untagged, of another type).
    store
        .append_with(
            vec![tagged("x", &[])],
            AppendCondition::new(Query::types(["registered"]), 2),
        )
        .unwrap();
    let error = store
        .append_with(
            vec![tagged("x", &[])],
            AppendCondition::new(Query::all(), 7),
        )
        .unwrap_err();
    assert!(matches!(
        error,
        AppendError::ConditionFailed {
            position: 8,
            after: 7
        }
    ));
}

#[test]
fn a_condition_combines_with_expected_versions_in_one_atomic_append() {
    let store = store();
    store
        .append(
            "order-1",
            ExpectedVersion::NoStream,
            vec![tagged("placed", &["sku:1"])],
        )
        .unwrap();
    let parts = |expected| {
        vec![
            StreamAppend::new("order-1", expected, vec![tagged("reserved", &["sku:1"])]),
            StreamAppend::new(
                "stock",
                ExpectedVersion::Any,
                vec![tagged("taken", &["sku:1"])],
            ),
        ]
    };
    let condition = |after| {
        AppendCondition::new(
            Query::types(["taken"]).or(QueryItem::tags(["sku:1"]).with_types(["reserved"])),
            after,
        )
    };
    // The version check fails: nothing of either part, whatever the condition.
    let error = store
        .append_multi_with(parts(ExpectedVersion::Exact(7)), condition(0))
        .unwrap_err();
    assert!(
        matches!(error, AppendError::Conflict { actual: 1, .. }),
        "{error}"
    );
    let results = store
        .append_multi_with(parts(ExpectedVersion::Exact(1)), condition(1))
        .unwrap();
    assert_eq!(results.len(), 2);
    // Now the condition fails though the versions hold.
    let error = store
        .append_multi_with(parts(ExpectedVersion::Exact(2)), condition(1))
        .unwrap_err();
    assert!(
        matches!(error, AppendError::ConditionFailed { position: 2, .. }),
        "{error}"
    );
    assert_eq!(store.last_position().unwrap(), 3);
    assert_eq!(store.stream_info("order-1").unwrap().unwrap().version, 2);
}

#[test]
fn a_stored_retry_succeeds_although_its_own_events_now_match_its_condition() {
    let store = store();
    let event = tagged("claimed", &["username:ann"]).with_id(strata::Uuid::now_v7());
    let condition = AppendCondition::new(Query::tags(["username:ann"]), 0);
    let first = store
        .append_with(vec![event.clone()], condition.clone())
        .unwrap();
    let retry = store.append_with(vec![event], condition.clone()).unwrap();
    assert!(retry.already_stored);
    assert_eq!(retry.first_position, first.first_position);
    let other = store
        .append_with(vec![tagged("claimed", &["username:ann"])], condition)
        .unwrap_err();
    assert!(matches!(
        other,
        AppendError::ConditionFailed { position: 1, .. }
    ));
    assert_eq!(store.last_position().unwrap(), 1);
    assert_eq!(
        store.metrics().unwrap().conflicts,
        1,
        "a failed condition counts as a conflict"
    );
}

#[test]
fn appends_in_one_group_commit_see_each_others_events_in_their_conditions() {
    // Durable: each commit waits for an fsync, so the requests queued meanwhile share the next
    // commit. Every round 16 appends with the same condition arrive together; exactly one
    // succeeds whether they share a commit or not.
    let (_dir, _path, store) = common::temp_store(Options::default());
    let threads = 16;
    for round in 0..20 {
        let barrier = Arc::new(Barrier::new(threads));
        let tag = format!("round:{round}");
        let after = store.last_position().unwrap();
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (store, barrier, tag) = (store.clone(), barrier.clone(), tag.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    store.append_with(
                        vec![tagged("claim", &[&tag])],
                        AppendCondition::new(Query::tags([tag.as_str()]), after),
                    )
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: {results:?}");
        assert!(results
            .iter()
            .all(|r| matches!(r, Ok(_) | Err(AppendError::ConditionFailed { .. }))));
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input: a clear error, nothing written.

#[test]
fn bad_tags_and_queries_are_refused_with_nothing_written() {
    let store = store();
    let append = |event: NewEvent| store.append("s", ExpectedVersion::Any, vec![event]);
    let error = append(tagged("e", &[""])).unwrap_err();
    assert!(matches!(
        error,
        AppendError::Invalid(InvalidInput::TagLength { len: 0, .. })
    ));
    let long = "t".repeat(limits::MAX_TAG_BYTES + 1);
    let error = append(tagged("e", &[&long])).unwrap_err();
    assert!(matches!(
        error,
        AppendError::Invalid(InvalidInput::TagLength { len: 256, .. })
    ));
    let longest = "é".repeat(limits::MAX_TAG_BYTES / 2) + "t";
    assert_eq!(longest.len(), limits::MAX_TAG_BYTES);
    let many: Vec<String> = (0..=limits::MAX_TAGS_PER_EVENT)
        .map(|i| format!("t{i}"))
        .collect();
    let error = append(NewEvent::new("e", Vec::new()).with_tags(many.clone())).unwrap_err();
    assert!(
        matches!(
            error,
            AppendError::Invalid(InvalidInput::TooManyTags {
                count: 65,
                limit: 64
            })
        ),
        "{error}"
    );
    assert_eq!(store.last_position().unwrap(), 0);

    let empty_item = Query::from_items([QueryItem::tags(["a"]), QueryItem::default()]);
    let error = store
        .append_with(
            vec![tagged("e", &["a"])],
            AppendCondition::new(empty_item.clone(), 0),
        )
        .unwrap_err();
    assert!(
        matches!(
            error,
            AppendError::Invalid(InvalidInput::EmptyQueryItem { index: 1 })
        ),
        "{error}"
    );
    let error = store.read_query(&empty_item, 0, 10).unwrap_err();
    assert!(matches!(
        error,
        ReadError::Invalid(InvalidInput::EmptyQueryItem { index: 1 })
    ));
    let error = store
        .read_query(&Query::from_items(Vec::new()), 0, 10)
        .unwrap_err();
    assert!(matches!(
        error,
        ReadError::Invalid(InvalidInput::EmptyQuery)
    ));
    let error = store.read_query(&Query::tags([""]), 0, 10).unwrap_err();
    assert!(matches!(
        error,
        ReadError::Invalid(InvalidInput::TagLength { .. })
    ));
    let error = store
        .subscribe(1, SubscriptionFilter::query(Query::from_items(Vec::new())))
        .unwrap_err();
    assert!(matches!(
        error,
        ReadError::Invalid(InvalidInput::EmptyQuery)
    ));
    assert_eq!(store.last_position().unwrap(), 0, "nothing written");

    // The limits themselves are accepted.
    let mut at_limit = many;
    at_limit.truncate(limits::MAX_TAGS_PER_EVENT - 1);
    at_limit.push(longest);
    let result = append(NewEvent::new("e", Vec::new()).with_tags(at_limit)).unwrap();
    assert_eq!(store.read_all(1, 1).unwrap()[0].tags.len(), 64);
    assert_eq!(result.first_position, 1);
}

// ---------------------------------------------------------------------------------------------
// The DCB specification's examples.

#[test]
fn concurrent_subscriptions_never_exceed_a_course_capacity_or_a_students_limit() {
    let (_dir, _path, store) = common::temp_store(common::fast());
    const CAPACITY: u32 = 10;
    const STUDENT_LIMIT: usize = 3;
    let courses = ["c1", "c2", "c3", "c4", "c5"];
    for course in courses {
        define_course(&store, course, CAPACITY);
    }
    // 20 students each try every course, from 8 threads at once: 100 attempts for 50 seats.
    let threads: Vec<_> = (0..8)
        .map(|thread| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                for student in (0..20).filter(|s| s % 8 == thread) {
                    for course in courses {
                        let student = format!("s{student}");
                        let (decided, _) =
                            subscribe_student(&store, course, &student, STUDENT_LIMIT);
                        outcomes.push((course, student, decided));
                    }
                }
                outcomes
            })
        })
        .collect();
    let outcomes: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let mut per_course: HashMap<&str, usize> = HashMap::new();
    let mut per_student: HashMap<String, usize> = HashMap::new();
    for (course, student, decided) in &outcomes {
        if let Decided::Appended(_) = decided {
            *per_course.entry(course).or_default() += 1;
            *per_student.entry(student.clone()).or_default() += 1;
        }
    }
    // 60 seats wanted (20 students, 3 each) for 50 offered: never more than either limit.
    assert!(
        per_course.values().all(|&n| n <= CAPACITY as usize),
        "{per_course:?}"
    );
    assert!(
        per_student.values().all(|&n| n <= STUDENT_LIMIT),
        "{per_student:?}"
    );
    // And no seat was refused wrongly: a course with a free seat was refused only to students
    // at their limit (or already in it).
    for course in courses {
        if per_course.get(course).copied().unwrap_or(0) < CAPACITY as usize {
            for student in (0..20).map(|s| format!("s{s}")) {
                let subscribed = outcomes.iter().any(|(c, s, d)| {
                    *c == course && *s == student && matches!(d, Decided::Appended(_))
                });
                assert!(subscribed || per_student.get(&student) == Some(&STUDENT_LIMIT));
            }
        }
    }
    // The log agrees with the outcomes.
    let stored = store
        .read_query(&Query::types(["student_subscribed"]), 0, 1_000)
        .unwrap();
    assert_eq!(stored.len(), per_course.values().sum::<usize>());
    let pairs: BTreeSet<Vec<String>> = stored.iter().map(|e| e.tags.to_vec()).collect();
    assert_eq!(
        pairs.len(),
        stored.len(),
        "no student subscribed twice to one course"
    );
    for (course, student, decided) in &outcomes {
        if let Decided::Refused(reason) = decided {
            match reason.as_str() {
                "course full" => assert_eq!(per_course[course], CAPACITY as usize),
                "student limit" => assert_eq!(per_student[student], STUDENT_LIMIT),
                other => panic!("unexpected refusal {other}"),
            }
        }
    }
}

#[test]
fn a_username_is_claimed_once_and_free_again_after_its_owner_changes_name() {
    let (_dir, _path, store) = common::temp_store(common::fast());
    assert!(matches!(register(&store, "alice"), Decided::Appended(_)));
    assert!(matches!(register(&store, "alice"), Decided::Refused(_)));
    // Eight at once for one name: exactly one gets it.
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || register(&store, "bob"))
        })
        .collect();
    let won = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|d| matches!(d, Decided::Appended(_)))
        .count();
    assert_eq!(won, 1);
    assert!(
        matches!(rename(&store, "alice", "bob"), Decided::Refused(_)),
        "bob is taken"
    );
    assert!(matches!(
        rename(&store, "alice", "carol"),
        Decided::Appended(_)
    ));
    assert!(matches!(register(&store, "carol"), Decided::Refused(_)));
    assert!(
        matches!(register(&store, "alice"), Decided::Appended(_)),
        "alice is free again"
    );
    assert!(matches!(
        rename(&store, "nobody", "dave"),
        Decided::Refused(_)
    ));
}

#[test]
fn invoice_numbers_have_no_gaps_and_no_repeats_under_concurrency() {
    let (_dir, _path, store) = common::temp_store(common::fast());
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..25)
                    .map(|_| create_invoice(&store).0)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut numbers: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=200).collect::<Vec<_>>());
    let stored: Vec<u64> = store
        .iter_query(&Query::types(["invoice_created"]), 0)
        .map(|e| u64::from_le_bytes(e.unwrap().data[..8].try_into().unwrap()))
        .collect();
    assert_eq!(
        stored,
        (1..=200).collect::<Vec<_>>(),
        "in position order too"
    );
}

// ---------------------------------------------------------------------------------------------
// The race: many deciders, one winner per round.

/// Rounds of the race: 1,000 (`STRATA_DCB_RACE_ROUNDS` overrides). Both modes together take
/// about 35 s in a debug build on a loaded 2-core machine.
fn race_rounds() -> usize {
    std::env::var("STRATA_DCB_RACE_ROUNDS")
        .map(|rounds| rounds.parse().expect("STRATA_DCB_RACE_ROUNDS is a number"))
        .unwrap_or(1_000)
}

/// 16 threads per round each read the round's query, decide that nobody has claimed it yet,
/// and append a claim with the condition "nothing matching after what I read". Exactly one
/// claim per round may be stored, and exactly one thread is told it succeeded.
fn race(durability: Durability) {
    let (_dir, _path, store) = common::temp_store(Options {
        durability,
        index_merge_entries: 256,
        ..Options::default()
    });
    const THREADS: usize = 16;
    let rounds = race_rounds();
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut won = Vec::new();
                for round in 0..rounds {
                    barrier.wait();
                    let query = Query::item(
                        QueryItem::types(["claimed"]).with_tags([format!("round:{round}")]),
                    );
                    let (events, head) = store.read_query_with_head(&query, 0).unwrap();
                    if !events.is_empty() {
                        continue; // decided: already claimed
                    }
                    let claim = NewEvent::new("claimed", vec![thread as u8])
                        .with_tags([format!("round:{round}"), format!("thread:{thread}")]);
                    match store.append_with(vec![claim], AppendCondition::new(query, head)) {
                        Ok(_) => won.push(round),
                        Err(AppendError::ConditionFailed { .. }) => {}
                        Err(other) => panic!("{other}"),
                    }
                }
                won
            })
        })
        .collect();
    let mut winners = vec![0usize; rounds];
    for handle in handles {
        for round in handle.join().unwrap() {
            winners[round] += 1;
        }
    }
    assert!(
        winners.iter().all(|&n| n == 1),
        "winners per round: {winners:?}"
    );
    assert_eq!(store.last_position().unwrap(), rounds as u64);
    for round in [0, rounds / 2, rounds - 1] {
        let claims = store
            .read_query(&Query::tags([format!("round:{round}")]), 0, 10)
            .unwrap();
        assert_eq!(claims.len(), 1);
    }
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[test]
fn race_of_16_deciders_has_one_winner_per_round_durable() {
    race(Durability::Durable);
}

#[test]
fn race_of_16_deciders_has_one_winner_per_round_fast() {
    race(Durability::Fast);
}

// ---------------------------------------------------------------------------------------------
// The decision model: several projections folded from one read, one condition, retries.

#[test]
fn decide_folds_several_projections_from_one_read_and_retries_a_failed_condition() {
    use strata::{DecideError, Decision};
    let store = store();
    define_course(&store, "c1", 2);
    let capacity = Query::item(QueryItem::types(["course_defined"]).with_tags(["course:c1"]));
    let course_subscriptions =
        Query::item(QueryItem::types(["student_subscribed"]).with_tags(["course:c1"]));
    let subscribe = |student: &str, interfere: bool| {
        let student_subscriptions = Query::item(
            QueryItem::types(["student_subscribed"]).with_tags([format!("student:{student}")]),
        );
        let mut attempts = 0;
        let result = store.decide(
            &[
                capacity.clone(),
                course_subscriptions.clone(),
                student_subscriptions.clone(),
            ],
            5,
            |model| {
                attempts += 1;
                if interfere && attempts == 1 {
                    // Another subscription lands between this read and this append.
                    store
                        .append_with(
                            vec![tagged(
                                "student_subscribed",
                                &["course:c1", "student:other"],
                            )],
                            AppendCondition::new(Query::tags(["nothing"]), 0),
                        )
                        .unwrap();
                }
                let seats = model.fold(&capacity, 0, |_, e| {
                    u32::from_le_bytes(e.data[..4].try_into().unwrap())
                });
                let taken = model.fold(&course_subscriptions, 0, |n, _| n + 1);
                let mine = model.fold(&student_subscriptions, 0, |n: u32, _| n + 1);
                if mine > 0 {
                    return Err("already subscribed");
                }
                if taken >= seats {
                    return Err("course full");
                }
                Ok(Decision::Append(vec![tagged(
                    "student_subscribed",
                    &["course:c1", &format!("student:{student}")],
                )]))
            },
        );
        (result, attempts)
    };
    let (result, attempts) = subscribe("s1", true);
    assert_eq!(result.unwrap().len(), 1);
    assert_eq!(
        attempts, 2,
        "the interfering append failed the first condition"
    );
    let (result, _) = subscribe("s1", false);
    assert!(matches!(
        result,
        Err(DecideError::Refused("already subscribed"))
    ));
    let (result, _) = subscribe("s2", false);
    assert!(
        matches!(result, Err(DecideError::Refused("course full"))),
        "s1 and other hold both seats"
    );
    let stored = store.read_query(&course_subscriptions, 0, 10).unwrap();
    assert_eq!(stored.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Subscriptions by query.

#[test]
fn a_query_subscription_delivers_history_then_live_events_without_gap_or_duplicate() {
    let store = store();
    let query = Query::tags(["course:c1"]).or(QueryItem::types(["closed"]));
    for i in 0..50u32 {
        let tag = if i % 2 == 0 { "course:c1" } else { "course:c2" };
        store
            .append(
                "s",
                ExpectedVersion::Any,
                vec![tagged("subscribed", &[tag])],
            )
            .unwrap();
    }
    let mut subscription = store
        .subscribe(0, SubscriptionFilter::query(query.clone()))
        .unwrap()
        .with_page_size(7)
        .unwrap();
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..50u32 {
                let event = match i % 3 {
                    0 => tagged("subscribed", &["course:c1"]),
                    1 => tagged("closed", &[]),
                    _ => tagged("subscribed", &["course:c2"]),
                };
                store
                    .append("s", ExpectedVersion::Any, vec![event])
                    .unwrap();
            }
        })
    };
    let expected: Vec<u64> = {
        writer.join().unwrap();
        positions(&store.read_query(&query, 0, 1_000).unwrap())
    };
    let mut delivered = Vec::new();
    while delivered.len() < expected.len() {
        let event = subscription
            .next_timeout(Duration::from_secs(10))
            .unwrap()
            .expect("an event within the timeout");
        assert!(query.matches(&event));
        delivered.push(event.position);
    }
    assert_eq!(delivered, expected);
    assert_eq!(expected.len(), 25 + 17 + 17);
    assert!(subscription.try_next().unwrap().is_none());
}

// ---------------------------------------------------------------------------------------------
// `check` verifies the tag index.

#[test]
fn check_verifies_the_tag_index_across_its_levels_and_finds_a_missing_or_stray_entry() {
    let (_dir, path, store) = common::temp_store(Options {
        index_merge_entries: 16,
        ..common::fast()
    });
    // 301 events, two tags each: a merge every 6 appends (1 + 2 entries each, 16 per merge)
    // leaves level 0 with the last append's, and level 1 moves on at 16 * 16 entries.
    for i in 0..301u32 {
        store
            .append(
                "s",
                ExpectedVersion::Any,
                vec![tagged("e", &[&format!("t{}", i % 7), "all"])],
            )
            .unwrap();
    }
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    store.close();
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    for level in ["tag_index_l0", "tag_index_l1", "tag_index"] {
        let entries: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {level}"), [], |r| r.get(0))
            .unwrap();
        assert!(entries > 0, "{level} is empty");
    }
    drop(conn);

    edit_by_hand(
        &path,
        "DELETE FROM tag_index_l0 WHERE position = 3 AND tag = 'all';
         DELETE FROM tag_index_l1 WHERE position = 3 AND tag = 'all';
         DELETE FROM tag_index WHERE position = 3 AND tag = 'all';",
    );
    let store = Store::open(&path, common::fast()).unwrap();
    let report = store.check().unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::Tags && p.message.contains("position 3")),
        "{:?}",
        report.problems
    );
    store.close();
    drop(store);
    edit_by_hand(
        &path,
        "INSERT INTO tag_index_l0 VALUES ('all', 3, 1), ('stray', 5, 1)",
    );
    let store = Store::open(&path, common::fast()).unwrap();
    let report = store.check().unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::Tags && p.message.contains("entries for live events")),
        "{:?}",
        report.problems
    );
    // A tag index entry for an event that does not carry the tag makes the read an error, not
    // a wrong answer.
    let error = store
        .read_query(&Query::tags(["stray"]), 0, 10)
        .unwrap_err();
    assert!(
        matches!(error, ReadError::Corrupt { position: 5, .. }),
        "{error}"
    );
}

/// Runs one statement on the store file with a plain SQLite connection: damage from outside.
fn edit_by_hand(path: &std::path::Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(sql).unwrap();
}
