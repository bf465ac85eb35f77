//! Bucket maintenance: seal, archive to a file of its own, drop, retention, reclaiming space.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{events, with_clock};
use strata::clock::utc_micros;
use strata::maintenance::ARCHIVE_APPLICATION_ID;
use strata::{
    BucketState, BucketWidth, Direction, ExpectedVersion, MaintenanceError, ManualClock, NewEvent,
    Options, ReadError, RetentionAction, Store, Uuid,
};

const HOUR: i64 = 3_600_000_000;

/// position, stream_id, version, event_type, event_id, data
type ArchivedRow = (i64, String, i64, String, Vec<u8>, Vec<u8>);

fn hourly(clock: &Arc<ManualClock>) -> Options {
    Options {
        bucket_width: Some(BucketWidth::Hour),
        ..with_clock(clock)
    }
}

/// A store with three hour buckets: positions 1..=10 (sealed), 11..=20 (sealed), 21..=25
/// (active). Streams "a" and "b" span all three.
fn three_buckets(dir: &Path) -> (Arc<ManualClock>, Store) {
    let clock = Arc::new(ManualClock::new(utc_micros(2024, 1, 1, 10, 0, 0)));
    let store = Store::open(dir.join("store.db"), hourly(&clock)).unwrap();
    for hour in 0..3 {
        clock.set(utc_micros(2024, 1, 1, 10 + hour, 30, 0));
        for stream in ["a", "b"] {
            let n = match (hour, stream) {
                (2, "a") => 3,
                (2, _) => 2,
                _ => 5,
            };
            store
                .append(stream, ExpectedVersion::Any, events("e", n))
                .unwrap();
        }
    }
    (clock, store)
}

#[test]
fn archiving_moves_a_sealed_bucket_to_its_own_file_and_reads_say_where() {
    let dir = tempfile::tempdir().unwrap();
    let (_clock, store) = three_buckets(dir.path());
    let before: Vec<_> = store.read_all(1, 10).unwrap();
    let archives = dir.path().join("archives");
    std::fs::create_dir(&archives).unwrap();

    let report = store.archive_bucket(1, &archives).unwrap();
    assert_eq!(report.events, 10);
    assert_eq!(report.bucket.state, BucketState::Archived);
    assert!(report
        .archive_path
        .starts_with(archives.canonicalize().unwrap()));
    assert!(report.archive_bytes > 0);
    let catalog = store.buckets().unwrap();
    assert_eq!(catalog[0].state, BucketState::Archived);
    assert_eq!(
        catalog[0].archive_path.as_deref(),
        Some(report.archive_path.to_str().unwrap())
    );
    assert_eq!(
        (catalog[0].first_position, catalog[0].last_position),
        (Some(1), Some(10))
    );

    // Reads that reach the archived range name the archive.
    match store.read_all(1, 100) {
        Err(ReadError::Archived {
            first_position: 1,
            last_position: 10,
            archive_path,
        }) => assert_eq!(archive_path, report.archive_path.to_str().unwrap()),
        other => panic!("expected Archived, got {other:?}"),
    }
    assert!(matches!(
        store.read_stream("a", 1, Direction::Forwards, 100),
        Err(ReadError::Archived { .. })
    ));
    // Reads past it work.
    let rest = store.read_all(11, 100).unwrap();
    assert_eq!(rest.len(), 15);
    assert_eq!(rest[0].position, 11);
    let a_late = store.read_stream("a", 6, Direction::Forwards, 100).unwrap();
    assert_eq!(a_late.first().map(|e| e.version), Some(6));

    // The archive is a self-describing SQLite file holding the events.
    let archive = rusqlite::Connection::open(&report.archive_path).unwrap();
    let app_id: i32 = archive
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .unwrap();
    assert_eq!(app_id, ARCHIVE_APPLICATION_ID);
    let rows: Vec<ArchivedRow> = archive
        .prepare("SELECT position, stream_id, version, event_type, event_id, data FROM events ORDER BY position")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 10);
    for (row, event) in rows.iter().zip(&before) {
        assert_eq!(row.0 as u64, event.position);
        assert_eq!(row.1, &*event.stream_id);
        assert_eq!(row.2 as u64, event.version);
        assert_eq!(row.3, &*event.event_type);
        assert_eq!(row.4, event.event_id.as_bytes());
        assert_eq!(row.5, &event.data[..]);
    }
    let info_count: String = archive
        .query_row(
            "SELECT value FROM archive_info WHERE key = 'event_count'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(info_count, "10");
    // And it is not a store.
    assert!(Store::open(&report.archive_path, Options::default()).is_err());

    // The live table is gone, everything else still checks out, and appends carry on.
    let check = store.check().unwrap();
    assert!(check.is_ok(), "{:?}", check.problems);
    store
        .append("a", ExpectedVersion::Exact(13), events("e", 1))
        .unwrap();
    assert!(store.check().unwrap().is_ok());
}

#[test]
fn archiving_survives_reopening_and_event_ids_stay_known() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(utc_micros(2024, 1, 1, 10, 0, 0)));
    let store = Store::open(dir.path().join("s.db"), hourly(&clock)).unwrap();
    let id = Uuid::now_v7();
    store
        .append(
            "s",
            ExpectedVersion::NoStream,
            vec![NewEvent::new("e", &b"x"[..]).with_id(id)],
        )
        .unwrap();
    clock.advance(HOUR);
    store
        .append("s", ExpectedVersion::Any, events("e", 1))
        .unwrap();
    let archive = dir.path().join("one.sqlite");
    store.archive_bucket(1, &archive).unwrap();
    drop(store);

    let store = Store::open(dir.path().join("s.db"), hourly(&clock)).unwrap();
    assert!(matches!(
        store.read_all(1, 10),
        Err(ReadError::Archived { .. })
    ));
    // Re-appending the archived event is recognised as already stored.
    let again = store
        .append(
            "s",
            ExpectedVersion::NoStream,
            vec![NewEvent::new("e", &b"x"[..]).with_id(id)],
        )
        .unwrap();
    assert!(again.already_stored);
    assert_eq!(again.first_position, 1);
}

#[test]
fn only_sealed_buckets_are_archived_or_dropped_and_archives_are_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let (_clock, store) = three_buckets(dir.path());
    assert!(matches!(
        store.archive_bucket(3, dir.path()),
        Err(MaintenanceError::NotSealed {
            id: 3,
            state: BucketState::Active
        })
    ));
    assert!(matches!(
        store.drop_bucket(3),
        Err(MaintenanceError::NotSealed { id: 3, .. })
    ));
    assert!(matches!(
        store.archive_bucket(99, dir.path()),
        Err(MaintenanceError::UnknownBucket(99))
    ));
    let taken = dir.path().join("taken.sqlite");
    std::fs::write(&taken, b"precious").unwrap();
    assert!(matches!(
        store.archive_bucket(1, &taken),
        Err(MaintenanceError::ArchiveExists(_))
    ));
    assert_eq!(std::fs::read(&taken).unwrap(), b"precious");
    assert_eq!(store.buckets().unwrap()[0].state, BucketState::Sealed);
    // Nothing was left behind by the refusals: the bucket still reads.
    assert_eq!(store.read_all(1, 100).unwrap().len(), 25);

    store.archive_bucket(1, dir.path()).unwrap();
    assert!(matches!(
        store.archive_bucket(1, dir.path().join("other.sqlite")),
        Err(MaintenanceError::NotSealed {
            state: BucketState::Archived,
            ..
        })
    ));
    assert!(matches!(
        store.seal_bucket(1),
        Err(MaintenanceError::NotLive { .. })
    ));
}

#[test]
fn sealing_the_active_bucket_sends_the_next_append_to_a_new_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let (_clock, store) = three_buckets(dir.path());
    let sealed = store.seal_bucket(3).unwrap();
    assert_eq!(sealed.state, BucketState::Sealed);
    assert_eq!(store.seal_bucket(3).unwrap(), sealed); // idempotent
    store
        .append("c", ExpectedVersion::Any, events("e", 2))
        .unwrap();
    let buckets = store.buckets().unwrap();
    assert_eq!(buckets.len(), 4);
    assert_eq!(buckets[3].state, BucketState::Active);
    assert_eq!(buckets[3].first_position, Some(26));
    // Same hour, so the same time range as the sealed one.
    assert_eq!(buckets[3].start_micros, buckets[2].start_micros);
    // The sealed bucket can now be archived; stream reads across it still work.
    store.archive_bucket(3, dir.path()).unwrap();
    let check = store.check().unwrap();
    assert!(check.is_ok(), "{:?}", check.problems);
    assert_eq!(store.read_all(26, 10).unwrap().len(), 2);
}

#[test]
fn dropping_a_bucket_deletes_its_events_and_reads_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let (_clock, store) = three_buckets(dir.path());
    let dropped = store.drop_bucket(2).unwrap();
    assert_eq!(dropped.state, BucketState::Dropped);
    assert!(matches!(
        store.read_all(11, 10),
        Err(ReadError::Dropped {
            first_position: 11,
            last_position: 20
        })
    ));
    assert_eq!(store.read_all(1, 10).unwrap().len(), 10);
    assert_eq!(store.read_all(21, 10).unwrap().len(), 5);
    let check = store.check().unwrap();
    assert!(check.is_ok(), "{:?}", check.problems);
    assert_eq!(check.events_checked, 15);
}

#[test]
fn retention_handles_only_sealed_buckets_older_than_the_age() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, store) = three_buckets(dir.path());
    // Buckets end at 11:00, 12:00 and 13:00 (active). At 13:30, "older than 1h" is bucket 1
    // (ended 2.5h ago) and bucket 2 (ended 1.5h ago)... at 12:45 only bucket 1.
    clock.set(utc_micros(2024, 1, 1, 12, 45, 0));
    let archives = dir.path().join("archive");
    std::fs::create_dir(&archives).unwrap();
    let done = store
        .retain(
            Duration::from_secs(3600),
            &RetentionAction::ArchiveTo(archives.clone()),
        )
        .unwrap();
    assert_eq!(
        done.iter().map(|r| r.bucket.id).collect::<Vec<_>>(),
        vec![1]
    );
    assert!(done[0].archive.as_ref().unwrap().archive_path.is_file());

    // Much later, with drop: bucket 2 goes, the active bucket 3 stays whatever its age.
    clock.set(utc_micros(2025, 1, 1, 0, 0, 0));
    let done = store
        .retain(Duration::from_secs(90 * 86_400), &RetentionAction::Drop)
        .unwrap();
    assert_eq!(
        done.iter().map(|r| r.bucket.id).collect::<Vec<_>>(),
        vec![2]
    );
    let states: Vec<_> = store.buckets().unwrap().iter().map(|b| b.state).collect();
    assert_eq!(
        states,
        vec![
            BucketState::Archived,
            BucketState::Dropped,
            BucketState::Active
        ]
    );
    // Nothing more to do.
    assert!(store
        .retain(Duration::ZERO, &RetentionAction::Drop)
        .unwrap()
        .is_empty());
    assert!(store.check().unwrap().is_ok());
}

#[test]
fn reclaiming_space_after_a_drop_shrinks_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(utc_micros(2024, 1, 1, 10, 0, 0)));
    let store = Store::open(dir.path().join("big.db"), hourly(&clock)).unwrap();
    let payload = vec![7u8; 4096];
    for _ in 0..20 {
        let batch = (0..100)
            .map(|_| NewEvent::new("blob", payload.clone()))
            .collect();
        store.append("big", ExpectedVersion::Any, batch).unwrap();
    }
    clock.advance(HOUR);
    store
        .append("small", ExpectedVersion::Any, events("e", 1))
        .unwrap();
    store.drop_bucket(1).unwrap();
    let space = store.reclaim_space().unwrap();
    assert!(
        space.bytes_after + 4 * 1024 * 1024 < space.bytes_before,
        "{space:?}"
    );
    assert_eq!(store.size_bytes().unwrap(), space.bytes_after);
    assert_eq!(store.read_all(2001, 10).unwrap().len(), 1);
    assert!(store.check().unwrap().is_ok());
}

#[test]
fn maintenance_works_on_an_in_memory_store_too() {
    let clock = Arc::new(ManualClock::new(utc_micros(2024, 1, 1, 10, 0, 0)));
    let store = Store::open_in_memory(hourly(&clock)).unwrap();
    store
        .append("s", ExpectedVersion::Any, events("e", 3))
        .unwrap();
    clock.advance(HOUR);
    store
        .append("s", ExpectedVersion::Any, events("e", 3))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report = store.archive_bucket(1, dir.path()).unwrap();
    assert_eq!(report.events, 3);
    assert!(report
        .archive_path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("strata-bucket-1"));
    assert!(store.check().unwrap().is_ok());
}
