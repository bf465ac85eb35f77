//! Opening stores: creation, reopening, and refusing files that are not ours.

mod common;

use std::fs;

use common::{events, fast, temp_store};
use strata::{BucketWidth, Direction, ExpectedVersion, OpenError, Options, Store};

#[test]
fn a_new_store_is_created_and_reopened_with_its_events() {
    let (_dir, path, store) = temp_store(fast());
    store
        .append("s", ExpectedVersion::NoStream, events("e", 3))
        .unwrap();
    store.close();
    drop(store);

    let reopened = Store::open(&path, fast()).unwrap();
    let read = reopened
        .read_stream("s", 1, Direction::Forwards, 10)
        .unwrap();
    assert_eq!(read.len(), 3);
    assert_eq!(reopened.last_position().unwrap(), 3);
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    let content =
        b"these are my notes, definitely not a database, but long enough to have a header...."
            .repeat(20);
    fs::write(&path, &content).unwrap();

    let error = Store::open(&path, fast()).unwrap_err();
    assert!(matches!(error, OpenError::NotADatabase { .. }), "{error}");
    assert_eq!(fs::read(&path).unwrap(), content);
}

#[test]
fn an_sqlite_file_of_another_application_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers (name) VALUES ('ada');")
            .unwrap();
    }
    let before = fs::read(&path).unwrap();

    let error = Store::open(&path, fast()).unwrap_err();
    assert!(
        matches!(error, OpenError::NotAStrataStore { .. }),
        "{error}"
    );
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn a_store_from_a_newer_schema_is_refused_and_left_untouched() {
    let (_dir, path, store) = temp_store(fast());
    store
        .append("s", ExpectedVersion::Any, events("e", 1))
        .unwrap();
    drop(store);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", strata::SCHEMA_VERSION + 1)
            .unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
    }
    let before = fs::read(&path).unwrap();

    let error = Store::open(&path, fast()).unwrap_err();
    assert!(
        matches!(error, OpenError::SchemaTooNew { found, supported } if found == supported + 1),
        "{error}"
    );
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn an_empty_sqlite_file_is_migrated_to_the_current_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.db");
    fs::write(&path, b"").unwrap();

    let store = Store::open(&path, fast()).unwrap();
    store
        .append("s", ExpectedVersion::NoStream, events("e", 1))
        .unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    let application_id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, strata::SCHEMA_VERSION);
    assert_eq!(application_id, strata::APPLICATION_ID);
}

#[test]
fn the_bucket_width_is_fixed_at_creation() {
    let options = Options {
        bucket_width: Some(BucketWidth::Hour),
        ..fast()
    };
    let (_dir, path, store) = temp_store(options);
    drop(store);

    let reopened = Store::open(&path, fast()).unwrap();
    assert_eq!(reopened.bucket_width(), BucketWidth::Hour);
    drop(reopened);

    let error = Store::open(
        &path,
        Options {
            bucket_width: Some(BucketWidth::Day),
            ..fast()
        },
    )
    .unwrap_err();
    assert!(
        matches!(error, OpenError::BucketWidthMismatch { .. }),
        "{error}"
    );
}

#[test]
fn options_out_of_range_are_refused() {
    let error = Store::open_in_memory(Options {
        max_events_per_append: 0,
        ..fast()
    })
    .unwrap_err();
    assert!(matches!(error, OpenError::InvalidOption(_)), "{error}");
}

#[test]
fn in_memory_stores_are_private_and_complete() {
    let a = Store::open_in_memory(fast()).unwrap();
    let b = Store::open_in_memory(fast()).unwrap();
    a.append("s", ExpectedVersion::NoStream, events("e", 2))
        .unwrap();
    assert_eq!(a.read_all(1, 10).unwrap().len(), 2);
    assert!(b.read_all(1, 10).unwrap().is_empty());
}

#[test]
fn two_handles_on_one_file_share_the_log_without_gaps() {
    let (_dir, path, first) = temp_store(fast());
    let second = Store::open(&path, fast()).unwrap();
    for round in 0..5 {
        first
            .append("a", ExpectedVersion::Any, events("e", 2))
            .unwrap();
        second
            .append("b", ExpectedVersion::Any, events("e", 3))
            .unwrap();
        assert_eq!(first.last_position().unwrap(), (round + 1) * 5);
    }
    let all = second.read_all(1, 100).unwrap();
    let positions: Vec<u64> = all.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=25).collect::<Vec<_>>());
}
