//! Maintenance that writes files is restartable after a SIGKILL at any point: `strata bucket
//! archive` (with its VACUUM) and `strata export --output` are killed at random moments of a
//! run, then `strata check` must pass, a rerun must finish the job (replacing the killed run's
//! leftovers), and nothing may be left behind: no stray file, the archive or export whole.
//!
//! Kills per command: `STRATA_MAINTENANCE_KILLS` (default 8); seed: `STRATA_MAINTENANCE_SEED`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata::{BucketState, Durability, ExpectedVersion, NewEvent, Options, Store};
use strata_testkit::cli::{succeeded, StrataBinary};

const STRATA: StrataBinary = StrataBinary::new(env!("CARGO_BIN_EXE_strata"));

const EVENTS: u64 = 30_000;

/// A small xorshift: the test needs reproducible kill times, not quality randomness.
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("STRATA_MAINTENANCE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("STRATA_MAINTENANCE_SEED={seed}");
        Rng(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn kills() -> usize {
    std::env::var("STRATA_MAINTENANCE_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
}

/// A closed store at `dir/events.strata` of `EVENTS` events in bucket 1 (sealed) and one in
/// bucket 2, checkpointed into the main file so that copying that file copies the store.
fn pristine(dir: &Path) -> PathBuf {
    let db = dir.join("pristine.strata");
    let store = Store::open(
        &db,
        Options {
            durability: Durability::Fast,
            ..Options::default()
        },
    )
    .unwrap();
    let payload = vec![7u8; 200];
    for batch in 0..EVENTS / 1_000 {
        let events: Vec<NewEvent> = (0..1_000)
            .map(|_| NewEvent::new("filled", payload.clone()))
            .collect();
        store
            .append(&format!("s-{}", batch % 7), ExpectedVersion::Any, events)
            .unwrap();
    }
    store.seal_bucket(1).unwrap();
    store
        .append(
            "later",
            ExpectedVersion::Any,
            vec![NewEvent::new("t", vec![])],
        )
        .unwrap();
    store.close();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;")
        .unwrap();
    drop(conn);
    db
}

/// A fresh copy of the pristine store in its own directory `dir/run-N/`.
fn fresh(pristine: &Path, dir: &Path, run: usize) -> PathBuf {
    let run_dir = dir.join(format!("run-{run}"));
    std::fs::create_dir_all(&run_dir).unwrap();
    let db = run_dir.join("events.strata");
    std::fs::copy(pristine, &db).unwrap();
    db
}

/// Runs `command`, SIGKILLs it after `after` unless it ended first; true if it was killed.
fn run_and_kill(mut command: Command, after: Duration) -> bool {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + after;
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if Instant::now() >= deadline {
            child.kill().unwrap(); // SIGKILL on Unix
            child.wait().unwrap();
            return true;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// How long a whole run of `command` takes (the kill times are drawn up to a bit past it).
fn duration_of(mut command: Command) -> Duration {
    let start = Instant::now();
    succeeded(command.output().unwrap());
    start.elapsed()
}

/// `strata check` passes and lists no stray file.
fn assert_checked_clean(db: &Path) {
    let out = succeeded(STRATA.at(db).arg("check").output().unwrap());
    assert!(!out.contains("stray file"), "{out}");
}

fn strays(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".strata-partial"))
        .collect()
}

fn archive_rows(path: &Path) -> u64 {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))
        .unwrap() as u64
}

fn bucket_1(db: &Path) -> strata::BucketInfo {
    let store = Store::open(db, Options::default()).unwrap();
    let bucket = store
        .buckets()
        .unwrap()
        .into_iter()
        .find(|b| b.id == 1)
        .unwrap();
    store.close();
    bucket
}

#[test]
fn a_killed_archive_is_finished_by_a_rerun_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = pristine(dir.path());
    let archive_cmd = |db: &Path| {
        let mut command = STRATA.at(db);
        command
            .args(["bucket", "archive", "1", "--to"])
            .arg(db.parent().unwrap());
        command
    };
    let full = duration_of(archive_cmd(&fresh(&pristine, dir.path(), 0)));
    let mut rng = Rng::from_env();
    let (mut killed, mut committed_before_kill) = (0, 0);
    for run in 1..=kills() {
        let db = fresh(&pristine, dir.path(), run);
        let run_dir = db.parent().unwrap().to_path_buf();
        let after = Duration::from_micros(rng.below(full.as_micros() as u64 * 5 / 4));
        if !run_and_kill(archive_cmd(&db), after) {
            continue;
        }
        killed += 1;
        // The store is sound whatever the moment of the kill; a leftover is reported, not an
        // error.
        succeeded(STRATA.at(&db).arg("check").output().unwrap());
        match bucket_1(&db).state {
            BucketState::Sealed => {
                let out = succeeded(archive_cmd(&db).output().unwrap());
                assert!(
                    out.contains(&format!("archived bucket 1 ({EVENTS} events)")),
                    "{out}"
                );
            }
            BucketState::Archived => committed_before_kill += 1,
            other => panic!("bucket 1 is {other:?} after a killed archive"),
        }
        let bucket = bucket_1(&db);
        assert_eq!(bucket.state, BucketState::Archived);
        let archive = PathBuf::from(bucket.archive_path.unwrap());
        assert_eq!(archive_rows(&archive), EVENTS, "run {run}");
        assert_eq!(strays(&run_dir), Vec::<String>::new(), "run {run}");
        assert_checked_clean(&db);
        std::fs::remove_dir_all(&run_dir).unwrap();
    }
    eprintln!(
        "archive: {killed} kills ({committed_before_kill} after the commit), full run {full:?}"
    );
    assert!(killed > 0, "no run was killed");
}

#[test]
fn a_leftover_of_a_killed_archive_is_reported_by_check_and_replaced_by_a_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = pristine(dir.path());
    let db = fresh(&pristine, dir.path(), 0);
    let run_dir = db.parent().unwrap();
    // What a kill in the first milliseconds leaves: the partial file and its journal.
    let partial = run_dir.join("events-bucket-1.sqlite.strata-partial");
    std::fs::write(&partial, b"half an archive").unwrap();
    std::fs::write(
        run_dir.join("events-bucket-1.sqlite.strata-partial-journal"),
        b"j",
    )
    .unwrap();
    let out = succeeded(STRATA.at(&db).arg("check").output().unwrap());
    assert!(
        out.contains("stray file") && out.contains("events-bucket-1.sqlite.strata-partial"),
        "{out}"
    );
    let out = succeeded(
        STRATA
            .at(&db)
            .args(["bucket", "archive", "1", "--no-vacuum", "--to"])
            .arg(run_dir)
            .output()
            .unwrap(),
    );
    assert!(out.contains("archived bucket 1"), "{out}");
    assert_eq!(strays(run_dir), Vec::<String>::new());
    assert_checked_clean(&db);

    // Someone else's file at the archive's name is never overwritten.
    let db = fresh(&pristine, dir.path(), 1);
    let run_dir = db.parent().unwrap();
    let foreign = run_dir.join("events-bucket-1.sqlite");
    std::fs::write(&foreign, b"not ours").unwrap();
    let output = STRATA
        .at(&db)
        .args(["bucket", "archive", "1", "--to"])
        .arg(run_dir)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("already exists"));
    assert_eq!(std::fs::read(&foreign).unwrap(), b"not ours");
}

#[test]
fn a_killed_export_is_finished_by_a_rerun_and_never_leaves_a_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = pristine(dir.path());
    let db = fresh(&pristine, dir.path(), 0);
    let export_cmd = |out: &Path| {
        let mut command = STRATA.at(&db);
        command.arg("export").arg("--output").arg(out);
        command
    };
    let first = dir.path().join("first.jsonl");
    let full = duration_of(export_cmd(&first));
    let expected = std::fs::read(&first).unwrap();
    assert_eq!(
        expected.iter().filter(|&&b| b == b'\n').count() as u64,
        EVENTS + 1
    );
    let mut rng = Rng::from_env();
    let mut killed = 0;
    for run in 1..=kills() {
        let out = dir.path().join(format!("export-{run}.jsonl"));
        let after = Duration::from_micros(rng.below(full.as_micros() as u64 * 5 / 4));
        if run_and_kill(export_cmd(&out), after) {
            killed += 1;
            // The output's own name holds a whole export or nothing.
            if out.exists() {
                assert_eq!(std::fs::read(&out).unwrap(), expected, "run {run}");
                continue;
            }
            succeeded(export_cmd(&out).output().unwrap());
        }
        assert_eq!(std::fs::read(&out).unwrap(), expected, "run {run}");
        assert!(!strata::maintenance::partial_path(&out).exists());
    }
    eprintln!("export: {killed} kills, full run {full:?}");
    assert!(killed > 0, "no run was killed");
    assert_checked_clean(&db);
}
