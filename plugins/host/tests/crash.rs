//! Crash consistency: a child process runs the WASM user-stats and event-counter projections
//! (background runner) while appending workload events, and is killed with SIGKILL at random
//! moments. After each kill the store is reopened and every projection's state must equal the
//! native fold of the log up to its checkpoint; after a final catch-up the totals must be right.
//!
//! The child is this test binary itself, re-executed with `STRATA_CRASH_CHILD` set, running the
//! ignored test `crash_child` only. `STRATA_CRASH_ITERATIONS` (default 8) sets the number of
//! kills, `STRATA_CRASH_SEED` the random kill points (printed for reproduction).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use strata::{Durability, Event, Options, ProjectionPhase, ProjectionRunner, RunnerOptions, Store};
use strata_testkit::reference::{self, UserStats};
use strata_testkit::workload::{Workload, WorkloadConfig};
use strata_wasm::{PluginLimits, WasmProjection};

use common::{encode, engine, wasm};

const CHILD_ENV: &str = "STRATA_CRASH_CHILD";
/// Events per append in the child: the same every run, so the stored prefix is whole batches.
const APPEND_BATCH: usize = 100;
const SEED: u64 = 2024;

fn options() -> Options {
    Options {
        durability: Durability::Fast,
        ..Options::default()
    }
}

fn register_all(runner: &ProjectionRunner) {
    for name in ["user-stats", "event-counter"] {
        let projection =
            WasmProjection::load(&engine(), &wasm(name), PluginLimits::default()).unwrap();
        runner.register(Box::new(projection)).unwrap();
    }
}

fn generator() -> Workload {
    Workload::new(WorkloadConfig {
        seed: SEED,
        events: 10_000_000,
        ..WorkloadConfig::default()
    })
}

/// The child's role: run the projections in the background and append until killed.
#[test]
#[ignore = "the child role of the crash test, run by it"]
fn crash_child() {
    let path = std::env::var(CHILD_ENV).expect("run by crash_consistency_under_sigkill");
    let store = Store::open(&path, options()).unwrap();
    let runner = ProjectionRunner::new(
        &store,
        RunnerOptions {
            batch_size: 97,
            ..RunnerOptions::default()
        },
    )
    .unwrap();
    register_all(&runner);
    let _background = runner.start(Duration::from_millis(20));
    // Skip what earlier runs stored: appends are atomic and batches deterministic.
    let stored = store.last_position().unwrap();
    let mut generator = generator();
    let mut skipped = 0u64;
    while skipped < stored {
        let batch = generator.next_batch(APPEND_BATCH).unwrap();
        skipped += batch.iter().map(|a| a.events.len() as u64).sum::<u64>();
    }
    assert_eq!(skipped, stored, "the log holds whole batches");
    println!("\nSTRATA-CHILD-READY");
    let mut catch_up_every = 0u32;
    loop {
        let batch = generator.next_batch(APPEND_BATCH).unwrap();
        store.append_multi(batch).unwrap();
        // Also drive batches from this thread now and then, racing the background runner.
        catch_up_every += 1;
        if catch_up_every.is_multiple_of(7) {
            let _ = runner.run_once("user-stats");
        }
    }
}

fn user_stats_from(events: &[Event]) -> BTreeMap<String, UserStats> {
    reference::user_stats(events.iter().cloned().map(Ok)).unwrap()
}

fn counts_from(events: &[Event]) -> BTreeMap<String, u64> {
    reference::event_counts(events.iter().cloned().map(Ok)).unwrap()
}

/// Every user's stats and the counts, as the projections answer them.
fn check_against_native(
    store: &Store,
    runner: &ProjectionRunner,
    log: &[Event],
    context: &str,
) -> (u64, u64) {
    let statuses: BTreeMap<String, u64> = ProjectionRunner::list(store)
        .unwrap()
        .into_iter()
        .map(|s| {
            assert!(
                !matches!(s.phase, ProjectionPhase::Faulted { .. }),
                "{context}: {s:?}"
            );
            (s.name, s.checkpoint)
        })
        .collect();
    let user_cp = statuses["user-stats"];
    let counter_cp = statuses["event-counter"];
    let upto = |cp: u64| &log[..cp as usize];

    let expected = user_stats_from(upto(user_cp));
    // Users known anywhere in the log must have exactly the stats of the prefix (or none).
    let all_users: Vec<String> = user_stats_from(log).into_keys().collect();
    for user in &all_users {
        let answer = runner
            .query("user-stats", &encode(&BTreeMap::from([("user_id", user)])))
            .unwrap();
        let got: Option<UserStats> = rmp_serde::from_slice(&answer).unwrap();
        assert_eq!(
            got.as_ref(),
            expected.get(user),
            "{context}: user {user} at checkpoint {user_cp}"
        );
    }
    let answer = runner.query("event-counter", &encode(&())).unwrap();
    let counts: BTreeMap<String, u64> = rmp_serde::from_slice(&answer).unwrap();
    assert_eq!(
        counts,
        counts_from(upto(counter_cp)),
        "{context}: counts at checkpoint {counter_cp}"
    );
    (user_cp, counter_cp)
}

fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Runs the child until it says it is ready, lets it work for a random time, kills it.
fn run_and_kill(db: &Path, work: Duration) -> u64 {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, db)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may print "test crash_child ... " on the same line.
            if line.contains("STRATA-CHILD-READY") {
                let _ = tx.send(());
            }
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(120));
    if ready.is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the child did not get ready within 120 s");
    }
    // The kill point: the child appends and projects meanwhile.
    std::thread::sleep(work);
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed, not finished");
    reader.join().unwrap();
    work.as_millis() as u64
}

#[test]
fn crash_consistency_under_sigkill() {
    let iterations: usize = std::env::var("STRATA_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let seed: u64 = std::env::var("STRATA_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test: {iterations} kills, STRATA_CRASH_SEED={seed}");
    let mut random = seed;
    // Build the plugins and fill the compiled cache before the child needs them.
    let _ = wasm("user-stats");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.strata");
    drop(Store::open(&db, options()).unwrap());

    let mut progress = Vec::new();
    let started = Instant::now();
    for iteration in 0..iterations {
        let work = Duration::from_millis(50 + next_random(&mut random) % 1_200);
        run_and_kill(&db, work);

        let store = Store::open(&db, options()).unwrap();
        let log: Vec<Event> = store.iter_all(1).map(Result::unwrap).collect();
        let runner = ProjectionRunner::new(&store, RunnerOptions::default()).unwrap();
        register_all(&runner);
        let checkpoints =
            check_against_native(&store, &runner, &log, &format!("after kill {iteration}"));
        eprintln!(
            "kill {iteration} after {} ms: log {} events, checkpoints user-stats {} event-counter {}",
            work.as_millis(),
            log.len(),
            checkpoints.0,
            checkpoints.1
        );
        progress.push((log.len() as u64, checkpoints));
        drop(runner);
        store.close();
    }
    let (appended, _) = progress.last().copied().unwrap_or_default();
    assert!(appended > 0, "the children appended something");
    assert!(
        progress.iter().any(|(_, (u, c))| *u > 0 && *c > 0),
        "the children committed projection batches: {progress:?}"
    );

    // A final catch-up brings both to the head with the right totals.
    let store = Store::open(&db, options()).unwrap();
    let log: Vec<Event> = store.iter_all(1).map(Result::unwrap).collect();
    let runner = ProjectionRunner::new(&store, RunnerOptions::default()).unwrap();
    register_all(&runner);
    for status in runner.catch_up_all().unwrap() {
        assert_eq!(status.phase, ProjectionPhase::Live, "{status:?}");
        assert_eq!(status.checkpoint, log.len() as u64, "{status:?}");
    }
    let (u, c) = check_against_native(&store, &runner, &log, "final");
    assert_eq!((u, c), (log.len() as u64, log.len() as u64));
    eprintln!(
        "crash test: {iterations} kills in {:.1} s, final log {} events",
        started.elapsed().as_secs_f64(),
        log.len()
    );
}
