//! Power loss: the store runs through `strata-testvfs`'s power-cut VFS, which at a random
//! point (a random number of file writes and syncs after the workload starts) fails every
//! further write and, once the store is closed, throws away what was not synced (all of it, or
//! a random subset). Then the store is reopened with SQLite's own VFS and checked:
//!
//! - `Durable`: every append acknowledged before the cut is present, at its position, with its
//!   stream, version and event id;
//! - `Fast`: the log is a prefix of the acknowledged appends (what is there is what was
//!   acknowledged, gap-free; the tail may be lost) and never corrupt;
//! - both: `Store::check` is clean, the projection's state equals the fold of the log up to its
//!   checkpoint (it ran in the background beside the appenders, through the same VFS), and the
//!   store appends again.
//!
//! Cuts per mode: `STRATA_POWER_CUTS` (default 100, four modes: 400 per run); seed
//! `STRATA_POWER_SEED`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

mod common;

use common::{amount, decode_sum, Sums};
use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;
use strata::{
    Durability, ExpectedVersion, NewEvent, Options, ProjectionRunner, RunnerOptions, Store, Uuid,
};
use strata_testvfs::{LossMode, PowerCutVfs};

const APPENDERS: usize = 2;

/// What an acknowledged event is: (stream, version, event id).
type Acked = BTreeMap<u64, (String, u64, Uuid)>;

fn cuts() -> usize {
    std::env::var("STRATA_POWER_CUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
}

fn seed() -> u64 {
    std::env::var("STRATA_POWER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// Appends from `APPENDERS` threads (own stream each, `Exact` versions, 1–3 events) until the
/// first error (the cut); returns every acknowledged event by position.
fn workload(store: &Store, seed: u64) -> Acked {
    let acked = Arc::new(Mutex::new(Acked::new()));
    std::thread::scope(|scope| {
        for thread in 0..APPENDERS {
            let acked = acked.clone();
            scope.spawn(move || {
                let mut rng = XorShiftRng::seed_from_u64(seed ^ thread as u64);
                let stream = format!("stream-{thread}");
                let mut version = 0u64;
                // Bounded: a cut armed past the end of the workload is forced by the caller.
                for _ in 0..2_000 {
                    let n = rng.random_range(1..=3);
                    let events: Vec<NewEvent> = (0..n)
                        .map(|i| {
                            // An amount for the projection's sums, then padding to 100 bytes.
                            let mut data = (i as i64 + 1).to_le_bytes().to_vec();
                            data.resize(100, i as u8);
                            let mut e = NewEvent::new("tick", data);
                            e.event_id = Some(Uuid::new_v4());
                            e
                        })
                        .collect();
                    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id.unwrap()).collect();
                    match store.append(&stream, ExpectedVersion::Exact(version), events) {
                        Ok(result) => {
                            let mut acked = acked.lock().unwrap();
                            for (k, id) in ids.into_iter().enumerate() {
                                let position = result.first_position + k as u64;
                                acked
                                    .insert(position, (stream.clone(), version + 1 + k as u64, id));
                            }
                            version = result.last_version;
                        }
                        Err(_) => return,
                    }
                }
            });
        }
    });
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

struct Totals {
    cuts: usize,
    acknowledged: usize,
    lost_acknowledged: usize,
    lost_unsynced_changes: u64,
    /// Events the projection had folded at the cuts (its checkpoints after reopening, summed).
    projected: u64,
    /// Events the projection had folded just before the cuts (its checkpoints, summed): shows
    /// that it ran beside the appenders even where the cut legally took all of it back (Fast).
    folded_before_cuts: u64,
}

fn run_cuts(vfs_name: &str, durability: Durability, random_subset: bool) -> Totals {
    let vfs = PowerCutVfs::register(vfs_name);
    let seed = seed();
    eprintln!("{vfs_name}: STRATA_POWER_SEED={seed}");
    let mut rng = XorShiftRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut totals = Totals {
        cuts: 0,
        acknowledged: 0,
        lost_acknowledged: 0,
        lost_unsynced_changes: 0,
        projected: 0,
        folded_before_cuts: 0,
    };
    for cut in 0..cuts() {
        let db = dir.path().join(format!("cut-{cut}.strata"));
        let options = Options {
            durability,
            vfs: Some(vfs.name().to_owned()),
            cache_bytes: 0,
            ..Options::default()
        };
        let store = Store::open(&db, options).unwrap();
        // Log-uniform, 2..=4096 operations: most cuts early, some after WAL checkpoints (4,096
        // pages), which is where Fast syncs.
        let scale = rng.random_range(1..13u32);
        let operations = rng.random_range(1..=1u64 << scale);
        // A projection runs beside the appenders, reading through the store's read pool and
        // committing its state on a connection of its own.
        let runner = ProjectionRunner::new(
            &store,
            RunnerOptions {
                batch_size: 5,
                ..RunnerOptions::default()
            },
        )
        .unwrap();
        runner.register(Box::new(Sums)).unwrap();
        vfs.arm(operations);
        let background = runner.start(std::time::Duration::from_millis(1));
        let acked = workload(&store, rng.random());
        // A read may fail once the armed cut has happened: then nothing is counted for this cut.
        if let Ok(status) = runner.status("sums") {
            totals.folded_before_cuts += status.checkpoint;
        }
        vfs.cut_now();
        drop(background);
        drop(runner);
        store.close();
        // Every connection must be gone before the cut is applied: SQLite shares one in-memory
        // WAL index per database among a process's connections, and a survivor would hand the
        // reopened store an index of writes the cut threw away (`apply_cut` refuses then).
        drop(store);
        let mode = if random_subset {
            LossMode::RandomUnsynced { seed: rng.random() }
        } else {
            LossMode::AllUnsynced
        };
        totals.lost_unsynced_changes += vfs.apply_cut(mode, &[&db]).unwrap();

        let store = Store::open(
            &db,
            Options {
                durability,
                ..Options::default()
            },
        )
        .unwrap_or_else(|e| panic!("cut {cut}: reopening failed: {e}"));
        let stored: Vec<_> = store.iter_all(1).collect::<Result<_, _>>().unwrap();
        for (i, event) in stored.iter().enumerate() {
            assert_eq!(event.position, i as u64 + 1, "cut {cut}: a gap in the log");
        }
        let last = stored.len() as u64;
        let max_acked = acked.keys().next_back().copied().unwrap_or(0);
        for event in &stored {
            // What is stored is what was acknowledged (a commit whose acknowledgement the cut
            // swallowed can only be the tail).
            match acked.get(&event.position) {
                Some((stream, version, id)) => {
                    assert_eq!(
                        (&*event.stream_id, event.version, event.event_id),
                        (stream.as_str(), *version, *id),
                        "cut {cut}: position {} is not the acknowledged event",
                        event.position
                    );
                }
                None => assert!(
                    event.position > max_acked,
                    "cut {cut}: position {} was never acknowledged",
                    event.position
                ),
            }
        }
        let lost = acked.keys().filter(|&&p| p > last).count();
        if durability == Durability::Durable {
            assert_eq!(lost, 0, "cut {cut}: {lost} acknowledged Durable events lost (log ends at {last}, acknowledged up to {max_acked})");
        }
        totals.lost_acknowledged += lost;
        let report = store.check().unwrap();
        assert!(report.is_ok(), "cut {cut}: check: {:?}", report.problems);
        totals.projected += check_projection(&store, &stored, cut);
        store
            .append(
                "after",
                ExpectedVersion::Any,
                vec![NewEvent::new("t", vec![])],
            )
            .unwrap();
        store.close();
        totals.cuts += 1;
        totals.acknowledged += acked.len();
        let _ = std::fs::remove_file(&db);
        for suffix in ["-wal", "-shm"] {
            let mut path = db.as_os_str().to_owned();
            path.push(suffix);
            let _ = std::fs::remove_file(Path::new(&path));
        }
    }
    eprintln!(
        "{vfs_name}: {} cuts, {} acknowledged events, {} of them lost, {} unsynced writes dropped, {} events projected before the cuts, {} after",
        totals.cuts, totals.acknowledged, totals.lost_acknowledged, totals.lost_unsynced_changes, totals.folded_before_cuts, totals.projected
    );
    // The projection ran beside the appenders: it had folded something before some cut. (What
    // survives a cut may be nothing in Fast, where a cut can take back every commit.)
    assert!(
        totals.folded_before_cuts > 0,
        "{vfs_name}: the projection never ran before a cut"
    );
    totals
}

/// The projection's state is the fold of the stored events up to its checkpoint, returned.
fn check_projection(store: &Store, stored: &[strata::Event], cut: usize) -> u64 {
    let runner = ProjectionRunner::new(store, RunnerOptions::default()).unwrap();
    runner.register(Box::new(Sums)).unwrap();
    let checkpoint = runner.status("sums").unwrap().checkpoint;
    assert!(
        checkpoint <= stored.len() as u64,
        "cut {cut}: the projection's checkpoint {checkpoint} is past the log"
    );
    for thread in 0..APPENDERS {
        let stream = format!("stream-{thread}");
        let expected = stored[..checkpoint as usize]
            .iter()
            .filter(|e| *e.stream_id == stream)
            .fold((0, 0), |(sum, count), e| (sum + amount(&e.data), count + 1));
        let answer = runner.query("sums", stream.as_bytes()).unwrap();
        assert_eq!(
            decode_sum(Some(&answer)),
            expected,
            "cut {cut}: projection state of {stream} is not the fold to its checkpoint"
        );
    }
    checkpoint
}

#[test]
fn durable_keeps_every_acknowledged_append_when_unsynced_writes_are_lost() {
    let totals = run_cuts("powercut-durable-all", Durability::Durable, false);
    assert_eq!(totals.lost_acknowledged, 0);
    assert!(totals.acknowledged > 0);
}

#[test]
fn durable_keeps_every_acknowledged_append_when_a_random_subset_is_lost() {
    let totals = run_cuts("powercut-durable-subset", Durability::Durable, true);
    assert_eq!(totals.lost_acknowledged, 0);
    assert!(totals.acknowledged > 0);
}

#[test]
fn fast_keeps_a_prefix_of_the_acknowledged_appends_when_unsynced_writes_are_lost() {
    let totals = run_cuts("powercut-fast-all", Durability::Fast, false);
    assert!(totals.acknowledged > 0);
    // Fast syncs the WAL only at checkpoints, so a cut loses the commits since the last one:
    // the simulation must see that (or it would not be cutting anything).
    assert!(
        totals.lost_acknowledged > 0,
        "no Fast commit was lost: the cut simulates nothing"
    );
}

#[test]
fn fast_keeps_a_prefix_of_the_acknowledged_appends_when_a_random_subset_is_lost() {
    let totals = run_cuts("powercut-fast-subset", Durability::Fast, true);
    assert!(totals.acknowledged > 0);
}
