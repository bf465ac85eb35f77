//! `user-stats`: per-user statistics over completed orders.
//!
//! # Events
//!
//! Reads two event types (MessagePack maps with these field names):
//!
//! - `order_created {order_id: string, user_id: string, amount_cents: i64}` (stream
//!   `order-<n>`): remembers the order, its user and amount, and its date (the event's
//!   `recorded_at`).
//! - `order_completed {order_id: string, user_id: string}`: counts the order for the user who
//!   created it. A completion of an unknown order, or a second completion, is ignored.
//!
//! For each user with at least one completed order it keeps:
//!
//! - `total_orders`: completed orders;
//! - `total_spent`: sum of their `amount_cents`;
//! - `last_order_date`: the latest creation date (`recorded_at` of `order_created`, unix
//!   microseconds) among them;
//! - `average_order_value`: `total_spent / total_orders`, as a float (computed when queried).
//!
//! # Queries
//!
//! Requests and responses are MessagePack.
//!
//! - `{"user_id": "<id>"}` → that user's stats, or nil if the user has no completed order.
//! - `{"top": N}` → an array of the N users with the highest `total_spent` (ties broken by
//!   `user_id`, ascending); fewer if there are fewer users.
//!
//! A user's stats are a map `{user_id: string, total_orders: u64, total_spent: i64,
//! last_order_date: i64, average_order_value: f64}`.
//!
//! # State layout
//!
//! - `order:<order_id>` → `{user_id, amount_cents, created_at}` until the order completes;
//! - `user:<user_id>` → `{total_orders, total_spent, last_order_date}`;
//! - `top:<8-byte rank><user_id>` → `user_id`, where the rank sorts by `total_spent`
//!   descending, so that `{"top": N}` reads N entries instead of every user.

use strata_plugin::serde::{Deserialize, Serialize};
use strata_plugin::{export_plugin, handle_query, state, Error, Event, Plugin};

#[derive(Deserialize)]
#[serde(crate = "strata_plugin::serde")]
struct OrderCreated {
    order_id: String,
    user_id: String,
    amount_cents: i64,
}

#[derive(Deserialize)]
#[serde(crate = "strata_plugin::serde")]
struct OrderCompleted {
    order_id: String,
}

#[derive(Serialize, Deserialize)]
#[serde(crate = "strata_plugin::serde")]
struct PendingOrder {
    user_id: String,
    amount_cents: i64,
    created_at: i64,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(crate = "strata_plugin::serde")]
struct Totals {
    total_orders: u64,
    total_spent: i64,
    last_order_date: i64,
}

/// A user's stats, as queries return them.
#[derive(Serialize)]
#[serde(crate = "strata_plugin::serde")]
struct UserStats {
    user_id: String,
    total_orders: u64,
    total_spent: i64,
    last_order_date: i64,
    average_order_value: f64,
}

#[derive(Deserialize)]
#[serde(crate = "strata_plugin::serde", untagged)]
enum Request {
    User { user_id: String },
    Top { top: u32 },
}

#[derive(Serialize)]
#[serde(crate = "strata_plugin::serde", untagged)]
enum Response {
    User(Option<UserStats>),
    Top(Vec<UserStats>),
}

fn order_key(order_id: &str) -> String {
    format!("order:{order_id}")
}

fn user_key(user_id: &str) -> String {
    format!("user:{user_id}")
}

/// `top:` + 8 bytes that sort by `total_spent` descending + the user id (ascending on ties).
fn rank_key(user_id: &str, total_spent: i64) -> Vec<u8> {
    let ascending = (total_spent as u64) ^ (1 << 63);
    let mut key = b"top:".to_vec();
    key.extend_from_slice(&(!ascending).to_be_bytes());
    key.extend_from_slice(user_id.as_bytes());
    key
}

fn stats(user_id: String, totals: Totals) -> UserStats {
    let average_order_value = if totals.total_orders == 0 {
        0.0
    } else {
        totals.total_spent as f64 / totals.total_orders as f64
    };
    UserStats {
        user_id,
        total_orders: totals.total_orders,
        total_spent: totals.total_spent,
        last_order_date: totals.last_order_date,
        average_order_value,
    }
}

struct UserStatsPlugin;

impl Plugin for UserStatsPlugin {
    const NAME: &'static str = "user-stats";
    const VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &["order_created", "order_completed"];

    fn apply(event: &Event) -> Result<(), Error> {
        match event.event_type.as_str() {
            "order_created" => {
                let order: OrderCreated = event.decode()?;
                let pending = PendingOrder {
                    user_id: order.user_id,
                    amount_cents: order.amount_cents,
                    created_at: event.recorded_at,
                };
                state::put(order_key(&order.order_id), &pending)
            }
            "order_completed" => {
                let done: OrderCompleted = event.decode()?;
                let key = order_key(&done.order_id);
                let Some(order) = state::get::<PendingOrder>(&key)? else {
                    return Ok(());
                };
                state::delete(&key)?;
                let user = user_key(&order.user_id);
                let mut totals: Totals = state::get(&user)?.unwrap_or_default();
                if totals.total_orders > 0 {
                    state::delete(rank_key(&order.user_id, totals.total_spent))?;
                }
                totals.total_orders += 1;
                totals.total_spent += order.amount_cents;
                totals.last_order_date = totals.last_order_date.max(order.created_at);
                state::put(rank_key(&order.user_id, totals.total_spent), &order.user_id)?;
                state::put(&user, &totals)
            }
            _ => Ok(()),
        }
    }

    fn query(request: &[u8]) -> Result<Vec<u8>, Error> {
        handle_query(request, |request: Request| match request {
            Request::User { user_id } => {
                let totals: Option<Totals> = state::get(user_key(&user_id))?;
                Ok(Response::User(totals.map(|t| stats(user_id, t))))
            }
            Request::Top { top } => {
                let ranked: Vec<(Vec<u8>, String)> = state::scan_prefix("top:", None, top)?;
                let user_ids: Vec<String> = ranked.into_iter().map(|(_, id)| id).collect();
                let keys: Vec<String> = user_ids.iter().map(|id| user_key(id)).collect();
                let totals: Vec<Option<Totals>> = state::get_many(&keys)?;
                user_ids
                    .into_iter()
                    .zip(totals)
                    .map(|(id, totals)| {
                        totals
                            .map(|t| stats(id.clone(), t))
                            .ok_or_else(|| Error::new(format!("rank entry for {id} has no totals")))
                    })
                    .collect::<Result<Vec<_>, Error>>()
                    .map(Response::Top)
            }
        })
    }
}

export_plugin!(UserStatsPlugin);
