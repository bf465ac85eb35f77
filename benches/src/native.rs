//! The example projections' logic as native Rust projections: the baseline that the WASM
//! plugins are measured against. Same events, same state layout, same `ProjectionState` calls,
//! so that the ratio measures the cost of running the logic as WebAssembly.

use serde::{Deserialize, Serialize};
use strata::{Event, Projection, ProjectionError, ProjectionInfo, ProjectionState};

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

#[derive(Deserialize)]
struct OrderCreated {
    order_id: String,
    user_id: String,
    amount_cents: i64,
}

#[derive(Deserialize)]
struct OrderCompleted {
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
                    let done: OrderCompleted = decode(&event.data)?;
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
