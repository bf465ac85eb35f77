//! The native reference folds that projections are checked against, in one place.
//!
//! - As plain functions over events read back ([`user_stats`], [`event_counts`],
//!   [`top_spenders`]): what the demo, the benches and the tests compare the example plugins'
//!   answers with.
//! - As native [`Projection`]s ([`NativeUserStats`], [`NativeEventCounter`]) with the same logic,
//!   the same state layout and the same `ProjectionState` calls as the example plugins
//!   `user-stats` and `event-counter`: the baseline the benches measure WASM against, so that
//!   the ratio is the cost of running the logic as WebAssembly.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use strata::{
    Error, Event, Projection, ProjectionError, ProjectionInfo, ProjectionState, ReadError,
};

use crate::workload::{OrderCompleted, OrderCreated};

/// Per-user statistics over completed orders: the native reference for projections.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserStats {
    /// The user.
    pub user_id: String,
    /// Completed orders.
    pub total_orders: u64,
    /// Sum of the completed orders' `amount_cents`.
    pub total_spent: i64,
    /// Latest `recorded_at` (unix microseconds) of the `order_created` events of completed
    /// orders.
    pub last_order_date: i64,
    /// `total_spent / total_orders` in cents, as a float.
    pub average_order_value: f64,
}

/// Computes [`UserStats`] for every user with at least one completed order, from events read
/// back from a store (in position order, e.g. `store.iter_all(1)`). Only `order_created` and
/// `order_completed` are looked at; other events are skipped.
pub fn user_stats<I>(events: I) -> Result<BTreeMap<String, UserStats>, Error>
where
    I: IntoIterator<Item = Result<Event, ReadError>>,
{
    // Open orders: order id -> (amount, recorded_at of its creation).
    let mut orders: HashMap<String, (i64, i64)> = HashMap::new();
    let mut stats: BTreeMap<String, UserStats> = BTreeMap::new();
    for event in events {
        let event = event?;
        match &*event.event_type {
            "order_created" => {
                let created: OrderCreated = event.decode()?;
                orders.insert(created.order_id, (created.amount_cents, event.recorded_at));
            }
            "order_completed" => {
                let completed: OrderCompleted = event.decode()?;
                let Some((amount, created_at)) = orders.remove(&completed.order_id) else {
                    // Completed without a creation we saw: the log was read from the middle.
                    continue;
                };
                let entry = stats
                    .entry(completed.user_id.clone())
                    .or_insert_with(|| UserStats {
                        user_id: completed.user_id,
                        total_orders: 0,
                        total_spent: 0,
                        last_order_date: i64::MIN,
                        average_order_value: 0.0,
                    });
                entry.total_orders += 1;
                entry.total_spent += amount;
                entry.last_order_date = entry.last_order_date.max(created_at);
                entry.average_order_value = entry.total_spent as f64 / entry.total_orders as f64;
            }
            _ => {}
        }
    }
    Ok(stats)
}

/// Events per type, from events read back (any order): what `event-counter` answers.
pub fn event_counts<I>(events: I) -> Result<BTreeMap<String, u64>, ReadError>
where
    I: IntoIterator<Item = Result<Event, ReadError>>,
{
    let mut counts = BTreeMap::new();
    for event in events {
        *counts.entry(event?.event_type.to_string()).or_default() += 1;
    }
    Ok(counts)
}

/// The users ranked as `user-stats` answers `{"top": n}`: most spent first, ties by user id.
pub fn top_spenders(stats: &BTreeMap<String, UserStats>) -> Vec<&UserStats> {
    let mut ranked: Vec<&UserStats> = stats.values().collect();
    ranked.sort_by(|a, b| {
        b.total_spent
            .cmp(&a.total_spent)
            .then(a.user_id.cmp(&b.user_id))
    });
    ranked
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ProjectionError> {
    rmp_serde::to_vec_named(value).map_err(|e| ProjectionError::Failed(e.to_string()))
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ProjectionError> {
    rmp_serde::from_slice(bytes).map_err(|e| ProjectionError::Failed(e.to_string()))
}

/// Events per type, as `event-counter` keeps them (`count:<type>` → u64 as MessagePack).
#[derive(Debug, Default)]
pub struct NativeEventCounter;

impl Projection for NativeEventCounter {
    fn describe(&mut self) -> Result<ProjectionInfo, ProjectionError> {
        Ok(ProjectionInfo {
            name: "native-event-counter".into(),
            version: 1,
            event_types: Vec::new(),
        })
    }

    fn apply(
        &mut self,
        events: &[Event],
        state: &mut ProjectionState,
    ) -> Result<(), ProjectionError> {
        for event in events {
            let key = format!("count:{}", event.event_type);
            let count: u64 = match state.get(key.as_bytes())? {
                Some(bytes) => decode(&bytes)?,
                None => 0,
            };
            state.put(key.as_bytes(), &encode(&(count + 1))?)?;
        }
        Ok(())
    }

    fn query(
        &mut self,
        _request: &[u8],
        state: &mut ProjectionState,
    ) -> Result<Vec<u8>, ProjectionError> {
        let mut counts = std::collections::BTreeMap::new();
        for (key, value) in state.scan_prefix(b"count:", None, 1000)? {
            let count: u64 = decode(&value)?;
            counts.insert(String::from_utf8_lossy(&key[6..]).into_owned(), count);
        }
        encode(&counts)
    }
}

/// Only the order id of an `order_completed`: what the `user-stats` plugin decodes, so the
/// baseline does the same work.
#[derive(Deserialize)]
struct CompletedOrderId {
    order_id: String,
}

#[derive(Serialize, Deserialize)]
struct PendingOrder {
    user_id: String,
    amount_cents: i64,
    created_at: i64,
}

#[derive(Serialize, Deserialize, Default)]
struct Totals {
    total_orders: u64,
    total_spent: i64,
    last_order_date: i64,
}

fn rank_key(user_id: &str, total_spent: i64) -> Vec<u8> {
    let ascending = (total_spent as u64) ^ (1 << 63);
    let mut key = b"top:".to_vec();
    key.extend_from_slice(&(!ascending).to_be_bytes());
    key.extend_from_slice(user_id.as_bytes());
    key
}

/// Per-user totals over completed orders, as `user-stats` keeps them.
#[derive(Debug, Default)]
pub struct NativeUserStats;

impl Projection for NativeUserStats {
    fn describe(&mut self) -> Result<ProjectionInfo, ProjectionError> {
        Ok(ProjectionInfo {
            name: "native-user-stats".into(),
            version: 1,
            event_types: vec!["order_created".into(), "order_completed".into()],
        })
    }

    fn apply(
        &mut self,
        events: &[Event],
        state: &mut ProjectionState,
    ) -> Result<(), ProjectionError> {
        for event in events {
            match &*event.event_type {
                "order_created" => {
                    let order: OrderCreated = decode(&event.data)?;
                    let pending = PendingOrder {
                        user_id: order.user_id,
                        amount_cents: order.amount_cents,
                        created_at: event.recorded_at,
                    };
                    state.put(
                        format!("order:{}", order.order_id).as_bytes(),
                        &encode(&pending)?,
                    )?;
                }
                "order_completed" => {
                    let done: CompletedOrderId = decode(&event.data)?;
                    let key = format!("order:{}", done.order_id);
                    let Some(bytes) = state.get(key.as_bytes())? else {
                        continue;
                    };
                    let order: PendingOrder = decode(&bytes)?;
                    state.delete(key.as_bytes())?;
                    let user = format!("user:{}", order.user_id);
                    let mut totals: Totals = match state.get(user.as_bytes())? {
                        Some(bytes) => decode(&bytes)?,
                        None => Totals::default(),
                    };
                    if totals.total_orders > 0 {
                        state.delete(&rank_key(&order.user_id, totals.total_spent))?;
                    }
                    totals.total_orders += 1;
                    totals.total_spent += order.amount_cents;
                    totals.last_order_date = totals.last_order_date.max(order.created_at);
                    state.put(
                        &rank_key(&order.user_id, totals.total_spent),
                        &encode(&order.user_id)?,
                    )?;
                    state.put(user.as_bytes(), &encode(&totals)?)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn query(
        &mut self,
        request: &[u8],
        state: &mut ProjectionState,
    ) -> Result<Vec<u8>, ProjectionError> {
        #[derive(Deserialize)]
        struct UserRequest {
            user_id: String,
        }
        let request: UserRequest = decode(request)?;
        let totals: Option<Totals> =
            match state.get(format!("user:{}", request.user_id).as_bytes())? {
                Some(bytes) => Some(decode(&bytes)?),
                None => None,
            };
        encode(&totals.map(|t| (t.total_orders, t.total_spent, t.last_order_date)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata::Uuid;

    #[test]
    fn last_order_date_is_the_latest_creation_of_a_completed_order() {
        let event = |position: u64, kind: &str, recorded_at: i64, data: Vec<u8>| {
            Ok(Event {
                position,
                stream_id: "x".into(),
                version: 1,
                event_type: kind.into(),
                event_id: Uuid::nil(),
                recorded_at,
                data: data.into(),
                metadata: Default::default(),
                tags: Default::default(),
            })
        };
        let created = |order: &str, amount| {
            rmp_serde::to_vec_named(&OrderCreated {
                order_id: order.into(),
                user_id: "user-1".into(),
                amount_cents: amount,
            })
            .unwrap()
        };
        let completed = |order: &str| {
            rmp_serde::to_vec_named(&OrderCompleted {
                order_id: order.into(),
                user_id: "user-1".into(),
            })
            .unwrap()
        };
        let events = vec![
            event(1, "order_created", 100, created("order-1", 1_000)),
            event(2, "order_created", 200, created("order-2", 3_000)),
            event(3, "order_created", 300, created("order-3", 9_999)), // never completed
            event(4, "order_completed", 400, completed("order-2")),
            event(5, "order_completed", 500, completed("order-1")),
        ];
        let stats = user_stats(events).unwrap();
        let user = &stats["user-1"];
        assert_eq!(user.total_orders, 2);
        assert_eq!(user.total_spent, 4_000);
        assert_eq!(user.last_order_date, 200);
        assert_eq!(user.average_order_value, 2_000.0);
    }

    #[test]
    fn event_counts_count_every_event_by_type() {
        let event = |position: u64, kind: &str| {
            Ok(Event {
                position,
                stream_id: "s".into(),
                version: position,
                event_type: kind.into(),
                event_id: Uuid::nil(),
                recorded_at: 0,
                data: Default::default(),
                metadata: Default::default(),
                tags: Default::default(),
            })
        };
        let counts = event_counts(vec![event(1, "a"), event(2, "b"), event(3, "a")]).unwrap();
        assert_eq!(counts, BTreeMap::from([("a".into(), 2), ("b".into(), 1)]));
    }

    #[test]
    fn top_spenders_rank_by_amount_then_user_id() {
        let user = |id: &str, spent| UserStats {
            user_id: id.into(),
            total_orders: 1,
            total_spent: spent,
            last_order_date: 0,
            average_order_value: spent as f64,
        };
        let stats = BTreeMap::from([
            ("user-1".to_string(), user("user-1", 500)),
            ("user-2".to_string(), user("user-2", 900)),
            ("user-3".to_string(), user("user-3", 500)),
        ]);
        let ranked: Vec<&str> = top_spenders(&stats).iter().map(|s| &*s.user_id).collect();
        assert_eq!(ranked, ["user-2", "user-1", "user-3"]);
    }
}
