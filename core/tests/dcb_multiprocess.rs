//! The DCB race across processes: two processes, four threads each, claim the same keys in the
//! same order on one store file, each by read → decide → append with a condition. Every key
//! must be claimed exactly once, and exactly one claimer told it won: the condition is checked
//! inside the write transaction, under SQLite's write lock, so another process's commit is seen.
//!
//! The children are this test binary, re-executed with `STRATA_DCB_RACE_ROLE` set, running the
//! ignored test `dcb_race_child`.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use strata::{AppendCondition, AppendError, NewEvent, Options, Query, QueryItem, Store};

const ROLE_ENV: &str = "STRATA_DCB_RACE_ROLE";
const DIR_ENV: &str = "STRATA_DCB_RACE_DIR";
const KEYS: u64 = 300;
const THREADS: u64 = 4;

fn options() -> Options {
    Options {
        // Merges every few commits, by either process.
        index_merge_entries: 16,
        ..common::fast()
    }
}

fn key_query(key: u64) -> Query {
    Query::item(QueryItem::types(["claimed"]).with_tags([format!("key:{key}")]))
}

#[test]
#[ignore = "a child process of two_processes_race_to_claim_each_key_and_one_wins"]
fn dcb_race_child() {
    let (Ok(role), Ok(dir)) = (std::env::var(ROLE_ENV), std::env::var(DIR_ENV)) else {
        eprintln!("dcb_race_child runs only as a child of the DCB multi-process race");
        return;
    };
    let dir = PathBuf::from(dir);
    let store = Store::open(dir.join("store.db"), options()).expect("child: open");
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (store, role) = (store.clone(), role.clone());
            std::thread::spawn(move || {
                let mut wins = Vec::new();
                for key in 0..KEYS {
                    let query = key_query(key);
                    let (events, head) = store.read_query_with_head(&query, 0).unwrap();
                    if !events.is_empty() {
                        continue;
                    }
                    let claim = NewEvent::new("claimed", format!("{role}/{thread}").into_bytes())
                        .with_tags([format!("key:{key}")]);
                    match store.append_with(vec![claim], AppendCondition::new(query, head)) {
                        Ok(result) => wins.push((key, result.first_position)),
                        Err(AppendError::ConditionFailed { .. }) => {}
                        Err(other) => panic!("child: {other}"),
                    }
                }
                wins
            })
        })
        .collect();
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("wins-{role}.log")))
        .unwrap();
    for thread in threads {
        for (key, position) in thread.join().unwrap() {
            writeln!(log, "{key}\t{position}").unwrap();
        }
    }
}

fn spawn(role: &str, dir: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "dcb_race_child", "--ignored", "--nocapture"])
        .env(ROLE_ENV, role)
        .env(DIR_ENV, dir)
        .spawn()
        .unwrap()
}

#[test]
fn two_processes_race_to_claim_each_key_and_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path().join("store.db"), options()).unwrap());
    let children = [spawn("a", dir.path()), spawn("b", dir.path())];
    for mut child in children {
        assert!(child.wait().unwrap().success(), "a child failed");
    }

    let store = Store::open(dir.path().join("store.db"), options()).unwrap();
    let mut wins: Vec<(u64, u64)> = Vec::new();
    let mut by_role = [0, 0];
    for (i, role) in ["a", "b"].iter().enumerate() {
        let log = std::fs::read_to_string(dir.path().join(format!("wins-{role}.log"))).unwrap();
        for line in log.lines() {
            let (key, position) = line.split_once('\t').unwrap();
            wins.push((key.parse().unwrap(), position.parse().unwrap()));
            by_role[i] += 1;
        }
    }
    wins.sort_unstable();
    let keys: Vec<u64> = wins.iter().map(|w| w.0).collect();
    assert_eq!(
        keys,
        (0..KEYS).collect::<Vec<_>>(),
        "each key won exactly once"
    );
    assert_eq!(
        store.last_position().unwrap(),
        KEYS,
        "one claim stored per key"
    );
    for (key, position) in wins {
        let claims = store.read_query(&key_query(key), 0, 10).unwrap();
        assert_eq!(claims.len(), 1, "key {key}");
        assert_eq!(claims[0].position, position);
    }
    eprintln!("wins per process: {by_role:?}");
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}
