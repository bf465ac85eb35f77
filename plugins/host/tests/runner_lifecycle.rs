//! WASM projections under the runner through their whole life: every hostile behaviour faults
//! only its own projection (within its budget or limit, naming the position and the cause)
//! while the store and another projection carry on; a new version rebuilds while the old one
//! answers queries until the swap; reopening loads the compiled component from the cache.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use strata::{
    Durability, Event, ExpectedVersion, NewEvent, Options, Projection, ProjectionError,
    ProjectionInfo, ProjectionPhase, ProjectionRunner, ProjectionState, RunnerOptions, Store,
};
use strata_testkit::reference::{self, UserStats};
use strata_testkit::workload::{Workload, WorkloadConfig};
use strata_wasm::{CacheDir, EngineOptions, PluginEngine, PluginLimits, WasmProjection};

use common::{encode, engine, wasm};

fn fast() -> Options {
    Options {
        durability: Durability::Fast,
        ..Options::default()
    }
}

const APPLY_BUDGET: Duration = Duration::from_millis(200);
const MEMORY_LIMIT: usize = 16 * 1024 * 1024;
/// The hostile kinds that run into the time budget (given the short one).
const TIMED: &[&str] = &["loop", "sleep", "slow-host-call"];

/// (event type, text the fault message must contain)
const HOSTILE: &[(&str, &str)] = &[
    ("loop", "time budget of 200 ms"),
    ("sleep", "time budget of 200 ms"),
    ("slow-host-call", "time budget of 200 ms"),
    ("hog", "memory limit of 16777216 bytes"),
    ("trap", "unreachable"),
    ("recurse", "wasm trap"),
    ("panic", "hostile plugin panics on purpose at position 3"),
    ("fail", "hostile plugin refuses this event"),
    ("oversize", "state error"),
];

#[test]
fn every_hostile_plugin_faults_only_itself_under_the_runner() {
    for (kind, cause) in HOSTILE {
        let store = Store::open_in_memory(fast()).unwrap();
        let events: Vec<NewEvent> = ["tick", "tick", kind, "tick", "tick"]
            .iter()
            .map(|t| NewEvent::new(*t, Vec::new()))
            .collect();
        store.append("s", ExpectedVersion::Any, events).unwrap();

        let runner = ProjectionRunner::new(
            &store,
            RunnerOptions {
                batch_size: 10,
                ..RunnerOptions::default()
            },
        )
        .unwrap();
        let hostile = WasmProjection::load(
            &engine(),
            &wasm("hostile"),
            PluginLimits {
                // A short budget for the loop; the default one for the others, so that a
                // loaded machine does not turn their fault into a timeout.
                apply_budget: if TIMED.contains(kind) {
                    APPLY_BUDGET
                } else {
                    PluginLimits::default().apply_budget
                },
                max_memory_bytes: MEMORY_LIMIT,
                ..PluginLimits::default()
            },
        )
        .unwrap();
        runner.register(Box::new(hostile)).unwrap();
        let counter =
            WasmProjection::load(&engine(), &wasm("event-counter"), PluginLimits::default())
                .unwrap();
        runner.register(Box::new(counter)).unwrap();

        let started = Instant::now();
        let status = runner.catch_up("hostile").unwrap();
        let elapsed = started.elapsed();
        // The batch fails once, then the replay one event at a time fails again on the culprit.
        if *kind == "loop" {
            assert!(
                elapsed >= 2 * APPLY_BUDGET,
                "{kind}: faulted after {elapsed:?}"
            );
        }
        // Two calls, each interrupted within twice its budget, plus the runner's own work
        // (reads, the rolled-back transactions, a fresh instance), which the second term bounds.
        assert!(
            elapsed < 2 * (2 * APPLY_BUDGET) + Duration::from_secs(1),
            "{kind}: faulted after {elapsed:?}"
        );
        match &status.phase {
            ProjectionPhase::Faulted { position, message } => {
                assert_eq!(*position, 3, "{kind}: the culprit event");
                assert!(message.contains(cause), "{kind}: {message}");
            }
            other => panic!("{kind}: expected a fault, got {other:?}"),
        }
        assert_eq!(
            status.checkpoint, 2,
            "{kind}: the events before it committed"
        );
        let count: u64 =
            rmp_serde::from_slice(&runner.query("hostile", b"count").unwrap()).unwrap();
        assert_eq!(count, 2, "{kind}: the failed batch left no write");

        // The other projection and the store carry on.
        let counter = runner.catch_up("event-counter").unwrap();
        assert_eq!(counter.phase, ProjectionPhase::Live, "{kind}");
        assert_eq!(counter.checkpoint, 5, "{kind}");
        store
            .append(
                "s",
                ExpectedVersion::Exact(5),
                vec![NewEvent::new("tick", Vec::new())],
            )
            .unwrap();
        assert_eq!(runner.catch_up("event-counter").unwrap().checkpoint, 6);
        let counts: BTreeMap<String, u64> =
            rmp_serde::from_slice(&runner.query("event-counter", &encode(&())).unwrap()).unwrap();
        assert_eq!(counts["tick"], 5, "{kind}");

        // The fault stays until an operator acts; the status is stored for other processes.
        assert!(matches!(
            runner.catch_up("hostile").unwrap().phase,
            ProjectionPhase::Faulted { position: 3, .. }
        ));
        let stored = ProjectionRunner::list(&store).unwrap();
        assert!(stored
            .iter()
            .any(|s| s.name == "hostile" && matches!(s.phase, ProjectionPhase::Faulted { .. })));

        // Skipping the culprit lets it go on past it, on a fresh instance.
        runner.skip("hostile").unwrap();
        let status = runner.catch_up("hostile").unwrap();
        assert_eq!(status.phase, ProjectionPhase::Live, "{kind}");
        assert_eq!(status.checkpoint, 6, "{kind}");
        let count: u64 =
            rmp_serde::from_slice(&runner.query("hostile", b"count").unwrap()).unwrap();
        assert_eq!(count, 5, "{kind}");
        let skipped = runner.skipped("hostile").unwrap();
        assert_eq!(skipped.len(), 1, "{kind}");
        assert_eq!(skipped[0].0, 3, "{kind}");
        assert!(skipped[0].1.contains(cause), "{kind}: {}", skipped[0].1);
    }
}

/// The same WASM code reporting another version: exercises a rebuild with plugin code on both
/// sides of the swap.
struct Versioned {
    inner: WasmProjection,
    version: u32,
}

impl Projection for Versioned {
    fn describe(&mut self) -> Result<ProjectionInfo, ProjectionError> {
        let mut info = self.inner.describe()?;
        info.version = self.version;
        Ok(info)
    }

    fn apply(
        &mut self,
        events: &[Event],
        state: &mut ProjectionState,
    ) -> Result<(), ProjectionError> {
        self.inner.apply(events, state)
    }

    fn query(
        &mut self,
        request: &[u8],
        state: &mut ProjectionState,
    ) -> Result<Vec<u8>, ProjectionError> {
        self.inner.query(request, state)
    }
}

fn top(runner: &ProjectionRunner, n: usize) -> Vec<UserStats> {
    let answer = runner
        .query("user-stats", &encode(&BTreeMap::from([("top", n)])))
        .unwrap();
    rmp_serde::from_slice(&answer).unwrap()
}

fn native_top(store: &Store, n: usize) -> Vec<UserStats> {
    let mut all: Vec<UserStats> = reference::user_stats(store.iter_all(1))
        .unwrap()
        .into_values()
        .collect();
    all.sort_by(|a, b| {
        b.total_spent
            .cmp(&a.total_spent)
            .then(a.user_id.cmp(&b.user_id))
    });
    all.truncate(n);
    all
}

#[test]
fn a_new_version_rebuilds_while_the_old_one_answers_until_the_swap() {
    let store = Store::open_in_memory(fast()).unwrap();
    let mut generator = Workload::new(WorkloadConfig {
        seed: 11,
        events: 5_000,
        ..WorkloadConfig::default()
    });
    while let Some(batch) = generator.next_batch(500) {
        store.append_multi(batch).unwrap();
    }
    let runner = ProjectionRunner::new(
        &store,
        RunnerOptions {
            batch_size: 100,
            ..RunnerOptions::default()
        },
    )
    .unwrap();
    let load = || WasmProjection::load(&engine(), &wasm("user-stats"), PluginLimits::default());
    runner.register(Box::new(load().unwrap())).unwrap();
    runner.catch_up("user-stats").unwrap();
    let expected = native_top(&store, 20);
    assert_eq!(top(&runner, 20), expected);

    let status = runner
        .register(Box::new(Versioned {
            inner: load().unwrap(),
            version: 2,
        }))
        .unwrap();
    assert_eq!(status.version, 2);
    assert_eq!(status.phase, ProjectionPhase::Rebuilding);

    // Batch by batch: until the swap, answers come from version 1's complete state, never
    // from version 2's partial one.
    let mut batches = 0;
    loop {
        let rows = ProjectionRunner::list(&store).unwrap();
        let v2 = rows.iter().find(|s| s.version == 2).unwrap().clone();
        if v2.phase != ProjectionPhase::Rebuilding {
            break;
        }
        let v1 = rows.iter().find(|s| s.version == 1).unwrap();
        assert_eq!(v1.phase, ProjectionPhase::Live);
        assert_eq!(
            top(&runner, 20),
            expected,
            "during the rebuild, at {}",
            v2.checkpoint
        );
        runner.run_once("user-stats").unwrap();
        batches += 1;
        assert!(batches < 1_000, "the rebuild ends");
    }
    assert!(batches > 3, "the rebuild took several batches: {batches}");
    let rows = ProjectionRunner::list(&store).unwrap();
    let phase = |v: u32| rows.iter().find(|s| s.version == v).unwrap().phase.clone();
    assert_eq!(phase(1), ProjectionPhase::Retired);
    assert_eq!(phase(2), ProjectionPhase::Live);
    let status = runner.status("user-stats").unwrap();
    assert_eq!((status.version, status.lag), (2, 0));
    assert_eq!(top(&runner, 20), expected, "version 2 answers the same");
}

#[test]
fn reopening_the_store_loads_the_component_from_the_cache_through_the_runner() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("reopen.strata");
    let cache = dir.path().join("wasmtime-cache");
    let engine_for = || {
        PluginEngine::new(EngineOptions {
            cache: CacheDir::Path(cache.clone()),
            ..EngineOptions::default()
        })
        .unwrap()
    };
    let bytes = wasm("event-counter");
    let head;
    {
        let store = Store::open(&db, fast()).unwrap();
        let events: Vec<NewEvent> = (0..50).map(|_| NewEvent::new("tick", Vec::new())).collect();
        store.append("s", ExpectedVersion::Any, events).unwrap();
        head = store.last_position().unwrap();
        let projection =
            WasmProjection::load(&engine_for(), &bytes, PluginLimits::default()).unwrap();
        assert_eq!(
            projection.load_report().cache_hit,
            Some(false),
            "first load compiles"
        );
        let runner = ProjectionRunner::new(&store, RunnerOptions::default()).unwrap();
        runner.register(Box::new(projection)).unwrap();
        assert_eq!(runner.catch_up("event-counter").unwrap().checkpoint, head);
        store.close();
    }
    // A restart: a new engine (as in a new process) and the store reopened.
    let store = Store::open(&db, fast()).unwrap();
    let engine = engine_for();
    let projection = WasmProjection::load(&engine, &bytes, PluginLimits::default()).unwrap();
    assert_eq!(
        projection.load_report().cache_hit,
        Some(true),
        "no recompilation"
    );
    assert_eq!(
        engine.cache_stats().map(|s| (s.hits, s.misses)),
        Some((1, 0))
    );
    let runner = ProjectionRunner::new(&store, RunnerOptions::default()).unwrap();
    let status = runner.register(Box::new(projection)).unwrap();
    assert_eq!(status.checkpoint, head, "resumes from its checkpoint");
    let counts: BTreeMap<String, u64> =
        rmp_serde::from_slice(&runner.query("event-counter", &encode(&())).unwrap()).unwrap();
    assert_eq!(counts["tick"], 50);
}
