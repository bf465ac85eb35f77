//! WASM projections under core's `ProjectionRunner`, over a real store: they fold the log in
//! checkpointed batches, answer queries, and a faulting plugin stops at its event while the
//! others carry on.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata::{
    Durability, ExpectedVersion, NewEvent, Options, ProjectionPhase, ProjectionRunner,
    RunnerOptions, Store,
};
use strata_wasm::{PluginLimits, WasmProjection};

use common::{encode, engine, wasm};

#[derive(Serialize)]
struct OrderCreated<'a> {
    order_id: &'a str,
    user_id: &'a str,
    amount_cents: i64,
}

#[derive(Serialize)]
struct OrderCompleted<'a> {
    order_id: &'a str,
    user_id: &'a str,
}

#[derive(Debug, Deserialize, PartialEq)]
struct UserStats {
    user_id: String,
    total_orders: u64,
    total_spent: i64,
    last_order_date: i64,
    average_order_value: f64,
}

fn store() -> Store {
    Store::open_in_memory(Options {
        durability: Durability::Fast,
        ..Options::default()
    })
    .expect("store")
}

fn runner(store: &Store) -> ProjectionRunner {
    ProjectionRunner::new(
        store,
        RunnerOptions {
            batch_size: 5,
            ..RunnerOptions::default()
        },
    )
    .expect("runner")
}

fn register(runner: &ProjectionRunner, name: &str, limits: PluginLimits) {
    let projection = WasmProjection::load(&engine(), &wasm(name), limits).expect("load");
    runner.register(Box::new(projection)).expect("register");
}

#[test]
fn wasm_projections_fold_the_log_under_the_runner() {
    let store = store();
    // Three users; orders of 100, 200, ... cents; every order but the last of each user is
    // completed.
    let users = ["ann", "ben", "cat"];
    let mut expected: BTreeMap<&str, (u64, i64)> = BTreeMap::new();
    for n in 0..12 {
        let user = users[n % 3];
        let order_id = format!("o{n}");
        let amount = 100 * (n as i64 + 1);
        store
            .append(
                &format!("order-{n}"),
                ExpectedVersion::NoStream,
                vec![NewEvent::from_value(
                    "order_created",
                    &OrderCreated {
                        order_id: &order_id,
                        user_id: user,
                        amount_cents: amount,
                    },
                )
                .unwrap()],
            )
            .unwrap();
        store
            .append(
                &format!("user-{user}"),
                ExpectedVersion::Any,
                vec![NewEvent::new("user_updated", b"ignored".to_vec())],
            )
            .unwrap();
        if n < 9 {
            store
                .append(
                    &format!("order-{n}"),
                    ExpectedVersion::Exact(1),
                    vec![NewEvent::from_value(
                        "order_completed",
                        &OrderCompleted {
                            order_id: &order_id,
                            user_id: user,
                        },
                    )
                    .unwrap()],
                )
                .unwrap();
            let entry = expected.entry(user).or_default();
            entry.0 += 1;
            entry.1 += amount;
        }
    }

    let runner = runner(&store);
    register(&runner, "user-stats", PluginLimits::default());
    register(&runner, "event-counter", PluginLimits::default());
    for status in runner.catch_up_all().unwrap() {
        assert_eq!(status.phase, ProjectionPhase::Live, "{status:?}");
        assert_eq!(status.lag, 0, "{status:?}");
    }

    for (user, (orders, spent)) in &expected {
        let response = runner
            .query("user-stats", &encode(&BTreeMap::from([("user_id", *user)])))
            .unwrap();
        let stats: UserStats = rmp_serde::from_slice::<Option<UserStats>>(&response)
            .unwrap()
            .expect("a user with completed orders");
        assert_eq!(
            (stats.total_orders, stats.total_spent),
            (*orders, *spent),
            "{user}"
        );
        assert_eq!(stats.average_order_value, *spent as f64 / *orders as f64);
    }

    let counts: BTreeMap<String, u64> =
        rmp_serde::from_slice(&runner.query("event-counter", &encode(&())).unwrap()).unwrap();
    assert_eq!(
        counts,
        BTreeMap::from([
            ("order_completed".to_string(), 9),
            ("order_created".to_string(), 12),
            ("user_updated".to_string(), 12),
        ])
    );
}

#[test]
fn a_faulting_plugin_stops_at_its_event_and_the_others_carry_on() {
    let store = store();
    let batch: Vec<NewEvent> = ["tick", "tick", "tick", "loop", "tick", "tick"]
        .iter()
        .map(|t| NewEvent::new(*t, Vec::new()))
        .collect();
    store.append("s", ExpectedVersion::Any, batch).unwrap();

    let runner = runner(&store);
    register(
        &runner,
        "hostile",
        PluginLimits {
            apply_budget: Duration::from_millis(1_000),
            ..PluginLimits::default()
        },
    );
    register(&runner, "event-counter", PluginLimits::default());
    let statuses = runner.catch_up_all().unwrap();

    let hostile = statuses.iter().find(|s| s.name == "hostile").unwrap();
    match &hostile.phase {
        ProjectionPhase::Faulted { position, message } => {
            assert_eq!(*position, 4, "the looping event");
            assert!(message.contains("time budget of 1000 ms"), "{message}");
        }
        other => panic!("expected a fault, got {other:?}"),
    }
    assert_eq!(hostile.checkpoint, 3, "the events before it are committed");
    let count: u64 = rmp_serde::from_slice(&runner.query("hostile", b"count").unwrap()).unwrap();
    assert_eq!(count, 3);

    let counter = statuses.iter().find(|s| s.name == "event-counter").unwrap();
    assert_eq!(counter.phase, ProjectionPhase::Live);
    assert_eq!(counter.checkpoint, 6);
}
