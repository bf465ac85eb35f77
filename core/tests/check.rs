//! `Store::check`: a healthy store passes; each kind of damage is found and named.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::with_clock;
use strata::clock::utc_micros;
use strata::{BucketWidth, ManualClock, Options, ProblemKind, Store};
use strata_testkit::workload::{Workload, WorkloadConfig};

const HOUR: i64 = 3_600_000_000;

/// A store file with three hour buckets of workload events (positions 1..=900), closed.
fn healthy_store(dir: &Path) -> PathBuf {
    let clock = Arc::new(ManualClock::new(utc_micros(2024, 6, 1, 8, 0, 0)));
    let path = dir.join("store.db");
    let store = Store::open(
        &path,
        Options {
            bucket_width: Some(BucketWidth::Hour),
            ..with_clock(&clock)
        },
    )
    .unwrap();
    let mut workload = Workload::new(WorkloadConfig {
        events: 900,
        ..WorkloadConfig::default()
    });
    let mut n = 0;
    while let Some(batch) = workload.next_batch(100) {
        store.append_multi(batch).unwrap();
        n += 1;
        if n % 3 == 0 {
            clock.advance(HOUR);
        }
    }
    assert!(store.buckets().unwrap().len() >= 3);
    path
}

fn check(path: &Path) -> strata::CheckReport {
    let store = Store::open(path, Options::default()).unwrap();
    store.check().unwrap()
}

/// Damages the store with raw SQL, as a bad disk or a hand edit would.
fn damage(path: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(sql).unwrap();
}

fn kinds(report: &strata::CheckReport) -> Vec<ProblemKind> {
    let mut kinds: Vec<_> = report.problems.iter().map(|p| p.kind).collect();
    kinds.dedup();
    kinds
}

#[test]
fn a_healthy_store_passes() {
    let dir = tempfile::tempdir().unwrap();
    let path = healthy_store(dir.path());
    let report = check(&path);
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.events_checked, 900);
    assert_eq!(report.last_position, 900);
    assert!(report.streams > 10);
}

#[test]
fn an_empty_store_passes() {
    let store = Store::open_in_memory(Options::default()).unwrap();
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.events_checked, 0);
}

#[test]
fn a_flipped_payload_byte_is_a_checksum_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let path = healthy_store(dir.path());
    damage(
        &path,
        "UPDATE events_1 SET data = CAST('tampered' AS BLOB) WHERE position = 5",
    );
    let report = check(&path);
    assert!(!report.is_ok());
    assert_eq!(kinds(&report), vec![ProblemKind::Event]);
    assert!(report.problems[0]
        .message
        .contains("position 5: checksum mismatch"));
}

#[test]
fn a_deleted_row_is_a_gap_and_a_count_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let path = healthy_store(dir.path());
    damage(&path, "DELETE FROM events_1 WHERE position = 7");
    let report = check(&path);
    let messages: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        messages.iter().any(|m| m.contains("position 8 follows 6")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("[catalog] bucket 1: table holds")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.starts_with("[stream]")),
        "{messages:?}"
    );
}

#[test]
fn a_wrong_stream_version_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = healthy_store(dir.path());
    for table in ["stream_index_l0", "stream_index_l1", "stream_index"] {
        damage(
            &path,
            &format!(
                "UPDATE {table} SET version = version + 100
                 WHERE stream_key = (SELECT stream_key FROM streams WHERE stream_id = 'user-1')
                   AND version = 1"
            ),
        );
    }
    let report = check(&path);
    assert_eq!(kinds(&report), vec![ProblemKind::Stream]);
    assert!(report.problems[0].message.contains("user-1"));
}

#[test]
fn a_missing_event_id_row_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = healthy_store(dir.path());
    for table in ["event_ids_l0", "event_ids_l1", "event_ids"] {
        damage(&path, &format!("DELETE FROM {table} WHERE position = 3"));
    }
    let report = check(&path);
    assert_eq!(kinds(&report), vec![ProblemKind::EventIds]);
    assert_eq!(report.problem_count, 2); // the row, and the count of rows
}

#[test]
fn catalog_damage_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = healthy_store(dir.path());
    damage(
        &path,
        "UPDATE buckets SET state = 'active' WHERE id = 1;
         CREATE TABLE events_99 (x);",
    );
    let report = check(&path);
    let messages: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        messages.iter().any(|m| m.contains("buckets are active")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("events_99 is not in the bucket catalog")),
        "{messages:?}"
    );
}

#[test]
fn a_missing_stream_index_entry_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = healthy_store(dir.path());
    for table in ["stream_index_l0", "stream_index_l1", "stream_index"] {
        damage(&path, &format!("DELETE FROM {table} WHERE position = 3"));
    }
    let report = check(&path);
    assert_eq!(kinds(&report), vec![ProblemKind::Stream]);
    let messages: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("at position 3, but the stream index says")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("the stream index has 899 entries but the log has 900")),
        "{messages:?}"
    );
}

#[test]
fn merged_index_levels_pass_the_check_and_damage_in_them_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("merged.db");
    let store = Store::open(
        &path,
        Options {
            index_merge_entries: 16,
            ..Options::default()
        },
    )
    .unwrap();
    let mut workload = Workload::new(WorkloadConfig {
        events: 2_000,
        ..WorkloadConfig::default()
    });
    while let Some(batch) = workload.next_batch(10) {
        store.append_multi(batch).unwrap();
    }
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let merged: i64 = conn
        .query_row("SELECT count(*) FROM stream_index", [], |r| r.get(0))
        .unwrap();
    assert!(merged > 0, "nothing reached the merged level");
    drop(conn);
    damage(
        &path,
        "DELETE FROM event_ids WHERE event_id = (SELECT event_id FROM event_ids LIMIT 1)",
    );
    let report = check(&path);
    assert_eq!(kinds(&report), vec![ProblemKind::EventIds]);
}

#[test]
fn sqlite_level_damage_is_reported_by_integrity_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = healthy_store(dir.path());
    // Make an index disagree with its table: change the indexed columns in the schema only.
    damage(
        &path,
        "PRAGMA writable_schema = ON;
         UPDATE sqlite_schema SET sql = 'CREATE INDEX events_1_type ON events_1 (version, recorded_at)'
         WHERE name = 'events_1_type';",
    );
    let report = check(&path);
    assert!(
        kinds(&report).contains(&ProblemKind::Sqlite),
        "{:?}",
        report.problems
    );
}

#[test]
fn the_report_lists_many_problems_but_counts_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = healthy_store(dir.path());
    damage(&path, "UPDATE events_1 SET checksum = checksum + 1");
    let report = check(&path);
    let in_bucket_1: u64 = {
        let store = Store::open(&path, Options::default()).unwrap();
        store.buckets().unwrap()[0].event_count
    };
    assert_eq!(report.problem_count, in_bucket_1);
    assert!(report.problems.iter().all(|p| p.kind == ProblemKind::Event));
}
