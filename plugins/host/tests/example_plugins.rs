//! The example plugins compute what they promise, through the real host and `MemoryState`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use strata::{MemoryState, Projection, ProjectionInfo};
use strata_wasm::{PluginLimits, WasmProjection};

use common::{apply, apply_in_batches, encode, load, query, Log};

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

#[derive(Serialize)]
struct UserCreated<'a> {
    user_id: &'a str,
    email: &'a str,
}

#[derive(Debug, Deserialize, PartialEq)]
struct UserStats {
    user_id: String,
    total_orders: u64,
    total_spent: i64,
    last_order_date: i64,
    average_order_value: f64,
}

/// A small deterministic workload in the shape of core's demo workload: users, orders (some
/// completed, some twice, some never), completions of unknown orders, and unrelated events.
fn workload() -> Log {
    let mut log = Log::default();
    let mut seed: u64 = 0x5eed;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut clock: i64 = 1_700_000_000_000_000;
    let mut tick = |step: u64| {
        clock += step as i64 + 1;
        clock
    };
    let users: Vec<String> = (0..12).map(|i| format!("user-{i}")).collect();
    for user in &users {
        let at = tick(10);
        log.push(
            &format!("user-{user}"),
            "user_created",
            &UserCreated {
                user_id: user,
                email: "someone@example.com",
            },
            at,
        );
    }
    let mut open: Vec<(String, String)> = Vec::new();
    for n in 0..150 {
        let order_id = format!("o{n}");
        let user = &users[next(users.len() as u64) as usize];
        let amount = 100 + next(20_000) as i64;
        let at = tick(next(1_000_000));
        log.push(
            &format!("order-{n}"),
            "order_created",
            &OrderCreated {
                order_id: &order_id,
                user_id: user,
                amount_cents: amount,
            },
            at,
        );
        open.push((order_id, user.clone()));
        // Complete a random open order now and then, out of creation order.
        if next(10) < 7 && !open.is_empty() {
            let (order_id, user) = open.remove(next(open.len() as u64) as usize);
            let at = tick(next(1000));
            log.push(
                &format!("order-{}", &order_id[1..]),
                "order_completed",
                &OrderCompleted {
                    order_id: &order_id,
                    user_id: &user,
                },
                at,
            );
            if next(10) == 0 {
                // A duplicate completion must not count twice.
                let at = tick(1);
                log.push(
                    "order-dup",
                    "order_completed",
                    &OrderCompleted {
                        order_id: &order_id,
                        user_id: &user,
                    },
                    at,
                );
            }
        }
        if next(20) == 0 {
            let at = tick(1);
            log.push("other", "payment_confirmed", &n, at);
            log.push(
                "order-ghost",
                "order_completed",
                &OrderCompleted {
                    order_id: "never-created",
                    user_id: user,
                },
                at,
            );
        }
    }
    log
}

#[derive(Deserialize)]
struct Created {
    order_id: String,
    user_id: String,
    amount_cents: i64,
}

#[derive(Deserialize)]
struct Completed {
    order_id: String,
}

/// The same statistics, computed natively from the events.
fn native_user_stats(log: &Log) -> BTreeMap<String, UserStats> {
    let mut orders: HashMap<String, (String, i64, i64)> = HashMap::new();
    let mut stats: BTreeMap<String, UserStats> = BTreeMap::new();
    for event in &log.events {
        match &*event.event_type {
            "order_created" => {
                let c: Created = event.decode().unwrap();
                orders.insert(c.order_id, (c.user_id, c.amount_cents, event.recorded_at));
            }
            "order_completed" => {
                let c: Completed = event.decode().unwrap();
                if let Some((user, amount, date)) = orders.remove(&c.order_id) {
                    let s = stats.entry(user.clone()).or_insert(UserStats {
                        user_id: user,
                        total_orders: 0,
                        total_spent: 0,
                        last_order_date: i64::MIN,
                        average_order_value: 0.0,
                    });
                    s.total_orders += 1;
                    s.total_spent += amount;
                    s.last_order_date = s.last_order_date.max(date);
                    s.average_order_value = s.total_spent as f64 / s.total_orders as f64;
                }
            }
            _ => {}
        }
    }
    stats
}

#[test]
fn user_stats_describes_itself() {
    let mut projection = load("user-stats", PluginLimits::default());
    assert_eq!(
        projection.describe().unwrap(),
        ProjectionInfo {
            name: "user-stats".into(),
            version: 1,
            event_types: vec!["order_created".into(), "order_completed".into()],
        }
    );
}

#[test]
fn user_stats_matches_a_native_computation() {
    let log = workload();
    let expected = native_user_stats(&log);
    assert!(
        expected.len() >= 5,
        "the workload completes orders of several users"
    );

    let mut projection = load("user-stats", PluginLimits::default());
    let committed = Arc::new(MemoryState::new());
    // Batches of odd sizes, so orders and their completions straddle batches.
    apply_in_batches(&mut projection, &committed, &log.events, 17);

    for (user, stats) in &expected {
        let response = query(
            &mut projection,
            &committed,
            &encode(&BTreeMap::from([("user_id", user.as_str())])),
        )
        .unwrap();
        let got: Option<UserStats> = rmp_serde::from_slice(&response).unwrap();
        assert_eq!(got.as_ref(), Some(stats), "stats of {user}");
    }

    let nobody = query(
        &mut projection,
        &committed,
        &encode(&BTreeMap::from([("user_id", "nobody")])),
    )
    .unwrap();
    assert_eq!(
        rmp_serde::from_slice::<Option<UserStats>>(&nobody).unwrap(),
        None
    );

    let mut ranking: Vec<&UserStats> = expected.values().collect();
    ranking.sort_by(|a, b| {
        b.total_spent
            .cmp(&a.total_spent)
            .then_with(|| a.user_id.cmp(&b.user_id))
    });
    for n in [1usize, 3, 1000] {
        let response = query(
            &mut projection,
            &committed,
            &encode(&BTreeMap::from([("top", n)])),
        )
        .unwrap();
        let got: Vec<UserStats> = rmp_serde::from_slice(&response).unwrap();
        let want: Vec<&UserStats> = ranking.iter().take(n).copied().collect();
        assert_eq!(got.iter().collect::<Vec<_>>(), want, "top {n}");
    }
}

#[test]
fn user_stats_gives_the_same_result_whatever_the_batching() {
    let log = workload();
    let top_all = encode(&BTreeMap::from([("top", 1000)]));
    let mut answers = Vec::new();
    for batch in [1, 64, log.events.len()] {
        let mut projection = load("user-stats", PluginLimits::default());
        let committed = Arc::new(MemoryState::new());
        apply_in_batches(&mut projection, &committed, &log.events, batch);
        answers.push(query(&mut projection, &committed, &top_all).unwrap());
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[1], answers[2]);
}

#[test]
fn user_stats_ties_are_broken_by_user_id() {
    let mut log = Log::default();
    for (n, user) in ["bob", "alice", "carol"].iter().enumerate() {
        let order_id = format!("t{n}");
        let amount = if *user == "carol" { 10 } else { 500 };
        log.push(
            "order-t",
            "order_created",
            &OrderCreated {
                order_id: &order_id,
                user_id: user,
                amount_cents: amount,
            },
            1_000 + n as i64,
        );
        log.push(
            "order-t",
            "order_completed",
            &OrderCompleted {
                order_id: &order_id,
                user_id: user,
            },
            2_000 + n as i64,
        );
    }
    let mut projection = load("user-stats", PluginLimits::default());
    let committed = Arc::new(MemoryState::new());
    apply(&mut projection, &committed, &log.events).unwrap();
    let response = query(
        &mut projection,
        &committed,
        &encode(&BTreeMap::from([("top", 10)])),
    )
    .unwrap();
    let got: Vec<UserStats> = rmp_serde::from_slice(&response).unwrap();
    let order: Vec<&str> = got.iter().map(|s| s.user_id.as_str()).collect();
    assert_eq!(order, ["alice", "bob", "carol"]);
    assert_eq!(
        got[0].last_order_date, 1_001,
        "the date is order_created's recorded_at"
    );
}

#[test]
fn user_stats_reports_undecodable_events_as_failures() {
    let mut log = Log::default();
    log.push("order-1", "order_created", &"not a map", 1);
    let mut projection = load("user-stats", PluginLimits::default());
    let committed = Arc::new(MemoryState::new());
    let error = apply(&mut projection, &committed, &log.events).unwrap_err();
    match error {
        strata::ProjectionError::Failed(message) => {
            assert!(message.contains("position 1"), "{message}")
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(committed.is_empty());
}

#[test]
fn event_counter_counts_events_per_type() {
    let mut log = Log::default();
    let types = [
        ("user_created", 3),
        ("order_created", 5),
        ("order_completed", 2),
        ("inventory_reserved", 1),
    ];
    for (event_type, n) in types {
        for _ in 0..n {
            log.raw(event_type);
        }
    }
    let mut projection = load("event-counter", PluginLimits::default());
    let info = projection.describe().unwrap();
    assert_eq!(info.name, "event-counter");
    assert!(info.event_types.is_empty(), "wants every event type");

    let committed = Arc::new(MemoryState::new());
    apply_in_batches(&mut projection, &committed, &log.events, 4);
    let response = query(
        &mut projection,
        &committed,
        &encode(&BTreeMap::<u8, u8>::new()),
    )
    .unwrap();
    let counts: BTreeMap<String, u64> = rmp_serde::from_slice(&response).unwrap();
    let expected: BTreeMap<String, u64> = types
        .iter()
        .map(|(t, n)| (t.to_string(), *n as u64))
        .collect();
    assert_eq!(counts, expected);
}

#[test]
fn state_survives_a_new_instance() {
    // All memory is in the state: a second load of the plugin continues where the first
    // stopped.
    let mut log = Log::default();
    for _ in 0..3 {
        log.raw("order_created");
    }
    let committed = Arc::new(MemoryState::new());
    let mut first = load("event-counter", PluginLimits::default());
    apply(&mut first, &committed, &log.events[..2]).unwrap();
    drop(first);
    let mut second = load("event-counter", PluginLimits::default());
    apply(&mut second, &committed, &log.events[2..]).unwrap();
    let response = query(&mut second, &committed, &[]).unwrap();
    let counts: BTreeMap<String, u64> = rmp_serde::from_slice(&response).unwrap();
    assert_eq!(counts, BTreeMap::from([("order_created".to_string(), 3)]));
}

/// A log whose events carry tags: `course:c<i % 2>` on every event, `vip` on every third.
fn tagged_log() -> Log {
    let mut log = Log::default();
    for i in 0..9u64 {
        log.raw(if i % 2 == 0 { "enrolled" } else { "left" });
        let mut tags = vec![format!("course:c{}", i % 2)];
        if i % 3 == 0 {
            tags.push("vip".to_owned());
        }
        log.events.last_mut().unwrap().tags = Arc::from(tags);
    }
    log
}

#[test]
fn plugins_of_the_current_contract_see_each_events_tags() {
    let mut projection = load("event-counter", PluginLimits::default());
    assert_eq!(projection.contract_version(), "0.2.0");
    let committed = Arc::new(MemoryState::new());
    apply_in_batches(&mut projection, &committed, &tagged_log().events, 4);
    let response = query(&mut projection, &committed, &encode(&"tags")).unwrap();
    let counts: BTreeMap<String, u64> = rmp_serde::from_slice(&response).unwrap();
    let expected = BTreeMap::from([
        ("course:c0".to_owned(), 5),
        ("course:c1".to_owned(), 4),
        ("vip".to_owned(), 3),
    ]);
    assert_eq!(counts, expected);
}

#[test]
fn plugins_built_against_contract_0_1_0_keep_loading_and_folding() {
    // `counter-v0-1` is built with wit-bindgen against `wit/0.1.0/strata.wit`: its `event`
    // record has no tags, and it imports `state` and `log` under 0.1.0's names.
    let mut projection = load("counter-v0-1", PluginLimits::default());
    assert_eq!(projection.contract_version(), "0.1.0");
    assert_eq!(projection.describe().unwrap().name, "counter-v0-1");
    let committed = Arc::new(MemoryState::new());
    apply_in_batches(&mut projection, &committed, &tagged_log().events, 4);
    let count = |projection: &mut WasmProjection, event_type: &str| {
        let answer = query(projection, &committed, event_type.as_bytes()).unwrap();
        u64::from_le_bytes(answer.try_into().unwrap())
    };
    assert_eq!(count(&mut projection, "enrolled"), 5);
    assert_eq!(count(&mut projection, "left"), 4);
    assert_eq!(count(&mut projection, "other"), 0);
}
