//! Several processes on one store file: two append (racing on the same streams with exact
//! expected versions, merging the index levels every few commits), a third reads streams, a
//! fourth runs a projection. Afterwards every invariant holds: positions gap-free, versions
//! contiguous, every acknowledged append stored as acknowledged and never twice, the projection
//! equal to the fold to its checkpoint, `check` clean.
//!
//! The children are this test binary, re-executed with `STRATA_MULTIPROCESS_ROLE` set, running
//! the ignored test `multiprocess_child`.

mod common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{amount, decode_sum, Sums};
use strata::{
    AppendError, Direction, ExpectedVersion, NewEvent, Options, ProjectionRunner, RunnerOptions,
    Store,
};

const ROLE_ENV: &str = "STRATA_MULTIPROCESS_ROLE";
const DIR_ENV: &str = "STRATA_MULTIPROCESS_DIR";
const STREAMS: u64 = 5;
const APPENDS_PER_APPENDER: u64 = 400;
/// Created by the parent once both appenders are done: the reader and projection then finish.
const DONE_FILE: &str = "appenders-done";

fn options() -> Options {
    Options {
        // Small index levels: both appenders merge often, each under the other's feet.
        index_merge_entries: 8,
        ..common::fast()
    }
}

#[test]
#[ignore = "a child process of two_appenders_a_reader_and_a_projection_share_one_file"]
fn multiprocess_child() {
    let (Ok(role), Ok(dir)) = (std::env::var(ROLE_ENV), std::env::var(DIR_ENV)) else {
        eprintln!("multiprocess_child runs only as a child of the multi-process test");
        return;
    };
    let dir = PathBuf::from(dir);
    let store = Store::open(dir.join("store.db"), options()).expect("child: open");
    match role.as_str() {
        "appender-a" | "appender-b" => append(&store, &dir, &role),
        "reader" => read_until_done(&store, &dir),
        "projection" => project_until_done(&store, &dir),
        other => panic!("unknown role {other}"),
    }
}

/// Appends with the version it last read, retrying on conflict; writes each acknowledged event
/// (stream, version, position, amount) to `acks-<role>.log`.
fn append(store: &Store, dir: &Path, role: &str) {
    let mut acks = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("acks-{role}.log")))
        .unwrap();
    let salt = if role == "appender-a" { 1 } else { 2 };
    for n in 0..APPENDS_PER_APPENDER {
        let stream = format!("s-{}", (n * salt) % STREAMS);
        let amount = (n * 10 + salt) as i64;
        loop {
            let version = store.stream_info(&stream).unwrap().map_or(0, |i| i.version);
            let event = NewEvent::new("amount", amount.to_le_bytes().to_vec());
            match store.append(&stream, ExpectedVersion::Exact(version), vec![event]) {
                Ok(result) => {
                    assert_eq!(result.last_version, version + 1);
                    writeln!(
                        acks,
                        "{stream}\t{}\t{}\t{amount}",
                        result.last_version, result.first_position
                    )
                    .unwrap();
                    break;
                }
                Err(AppendError::Conflict { actual, .. }) => assert!(actual > version),
                Err(other) => panic!("{role}: {other}"),
            }
        }
    }
}

/// Reads every stream over and over: each read is versions 1..=n of that stream, in order.
fn read_until_done(store: &Store, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !dir.join(DONE_FILE).exists() && Instant::now() < deadline {
        for s in 0..STREAMS {
            let stream = format!("s-{s}");
            let events = store
                .read_stream(&stream, 1, Direction::Forwards, 10_000)
                .unwrap();
            for (i, event) in events.iter().enumerate() {
                assert_eq!(event.version, i as u64 + 1, "{stream}: {events:?}");
                assert_eq!(&*event.stream_id, stream);
            }
            let info = store.stream_info(&stream).unwrap();
            let version = info.map_or(0, |i| i.version);
            assert!(version >= events.len() as u64, "stream_info went backwards");
        }
    }
}

/// Runs the projection until the appenders are done and it has caught up with the head.
fn project_until_done(store: &Store, dir: &Path) {
    let runner = ProjectionRunner::new(
        store,
        RunnerOptions {
            batch_size: 7,
            ..RunnerOptions::default()
        },
    )
    .unwrap();
    runner.register(Box::new(Sums)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = dir.join(DONE_FILE).exists();
        let status = runner.catch_up("sums").unwrap();
        if done && status.checkpoint == store.last_position().unwrap() {
            return;
        }
        assert!(Instant::now() < deadline, "projection did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn spawn(role: &str, dir: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "multiprocess_child", "--ignored", "--nocapture"])
        .env(ROLE_ENV, role)
        .env(DIR_ENV, dir)
        .spawn()
        .unwrap()
}

fn wait(mut child: std::process::Child, role: &str) {
    let status = child.wait().unwrap();
    assert!(status.success(), "{role} failed: {status}");
}

#[test]
fn two_appenders_a_reader_and_a_projection_share_one_file() {
    let dir = tempfile::tempdir().unwrap();
    // Create the store first, so that the children race on appends, not on creating the schema.
    drop(Store::open(dir.path().join("store.db"), options()).unwrap());
    let reader = spawn("reader", dir.path());
    let projection = spawn("projection", dir.path());
    let a = spawn("appender-a", dir.path());
    let b = spawn("appender-b", dir.path());
    wait(a, "appender-a");
    wait(b, "appender-b");
    std::fs::write(dir.path().join(DONE_FILE), b"").unwrap();
    wait(reader, "reader");
    wait(projection, "projection");

    let store = Store::open(dir.path().join("store.db"), options()).unwrap();
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    let events: Vec<strata::Event> = store.iter_all(1).collect::<Result<_, _>>().unwrap();
    assert_eq!(events.len() as u64, 2 * APPENDS_PER_APPENDER);
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.position, i as u64 + 1, "gap-free positions");
        let version = versions.entry(event.stream_id.to_string()).or_default();
        *version += 1;
        assert_eq!(event.version, *version, "contiguous versions");
    }
    // Every acknowledged append is where it was acknowledged, with its amount.
    let mut acked = 0;
    for role in ["appender-a", "appender-b"] {
        let acks = std::fs::read_to_string(dir.path().join(format!("acks-{role}.log"))).unwrap();
        for line in acks.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            let position: u64 = fields[2].parse().unwrap();
            let event = &events[position as usize - 1];
            assert_eq!(&*event.stream_id, fields[0]);
            assert_eq!(event.version.to_string(), fields[1]);
            assert_eq!(amount(&event.data).to_string(), fields[3]);
            acked += 1;
        }
    }
    assert_eq!(acked, events.len());
    // The projection (run by the child) equals the fold of the whole log.
    let runner = ProjectionRunner::new(&store, RunnerOptions::default()).unwrap();
    runner.register(Box::new(Sums)).unwrap();
    assert_eq!(
        runner.status("sums").unwrap().checkpoint,
        events.len() as u64
    );
    for s in 0..STREAMS {
        let stream = format!("s-{s}");
        let expected = events
            .iter()
            .filter(|e| *e.stream_id == stream)
            .fold((0, 0), |(sum, count), e| (sum + amount(&e.data), count + 1));
        let answer = runner.query("sums", stream.as_bytes()).unwrap();
        assert_eq!(decode_sum(Some(&answer)), expected, "{stream}");
    }
}
