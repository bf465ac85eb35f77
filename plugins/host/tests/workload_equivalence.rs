//! The WASM user-stats plugin, run by the `ProjectionRunner` over a real store holding a
//! generated workload, answers exactly what the native computation
//! (`strata_testkit::reference::user_stats`) gives over the events read back.

mod common;

use std::collections::BTreeMap;

use strata::{Durability, Options, ProjectionPhase, ProjectionRunner, RunnerOptions, Store};
use strata_testkit::reference::{self, UserStats};
use strata_testkit::workload::{Workload, WorkloadConfig};
use strata_wasm::{PluginLimits, WasmProjection};

use common::{encode, engine, wasm};

/// Events of the workload; `STRATA_EQUIVALENCE_EVENTS` raises it.
fn events() -> u64 {
    std::env::var("STRATA_EQUIVALENCE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
        .max(100_000)
}

#[test]
fn wasm_user_stats_equals_the_native_fold_over_a_100k_event_workload() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path().join("equivalence.strata"),
        Options {
            durability: Durability::Fast,
            ..Options::default()
        },
    )
    .unwrap();
    let total = events();
    let mut generator = Workload::new(WorkloadConfig {
        seed: 7,
        events: total,
        ..WorkloadConfig::default()
    });
    while let Some(batch) = generator.next_batch(1_000) {
        store.append_multi(batch).unwrap();
    }
    assert_eq!(store.last_position().unwrap(), total);

    let runner = ProjectionRunner::new(&store, RunnerOptions::default()).unwrap();
    for name in ["user-stats", "event-counter"] {
        let projection =
            WasmProjection::load(&engine(), &wasm(name), PluginLimits::default()).unwrap();
        runner.register(Box::new(projection)).unwrap();
    }
    for status in runner.catch_up_all().unwrap() {
        assert_eq!(status.phase, ProjectionPhase::Live, "{status:?}");
        assert_eq!(status.checkpoint, total, "{status:?}");
    }

    let native = reference::user_stats(store.iter_all(1)).unwrap();
    assert!(native.len() > 100, "a workload with many users");
    for (user, expected) in &native {
        let answer = runner
            .query("user-stats", &encode(&BTreeMap::from([("user_id", user)])))
            .unwrap();
        let got: Option<UserStats> = rmp_serde::from_slice(&answer).unwrap();
        // Both sides compute the average as total_spent as f64 / total_orders as f64 from the
        // same integers, so exact float equality is the right comparison.
        assert_eq!(got.as_ref(), Some(expected), "user {user}");
    }
    // A user with no completed order has no stats.
    let answer = runner
        .query(
            "user-stats",
            &encode(&BTreeMap::from([("user_id", "user-does-not-exist")])),
        )
        .unwrap();
    assert_eq!(
        rmp_serde::from_slice::<Option<UserStats>>(&answer).unwrap(),
        None
    );

    // The ranking: every user, in total_spent order (ties by user id).
    let ranked = reference::top_spenders(&native);
    let limit = ranked.len().min(10_000);
    let answer = runner
        .query("user-stats", &encode(&BTreeMap::from([("top", limit)])))
        .unwrap();
    let top: Vec<UserStats> = rmp_serde::from_slice(&answer).unwrap();
    assert_eq!(top.iter().collect::<Vec<_>>(), ranked[..limit].to_vec());

    // event-counter: the counts per type of the events read back.
    let counts = reference::event_counts(store.iter_all(1)).unwrap();
    let answer = runner.query("event-counter", &encode(&())).unwrap();
    let got: BTreeMap<String, u64> = rmp_serde::from_slice(&answer).unwrap();
    assert_eq!(got, counts);
    assert_eq!(got.values().sum::<u64>(), total);
}
