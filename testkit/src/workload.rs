//! The users-and-orders demo workload: a deterministic (seeded) generator of realistic appends,
//! the seed of every demo, bench and test that needs realistic events. The native folds that
//! projections are checked against live in [`crate::reference`].
//!
//! Streams are `user-<n>` and `order-<n>`. Event data is MessagePack with named fields
//! (`rmp_serde::to_vec_named`, through [`strata::NewEvent::from_value`]); the field names below are a
//! contract shared with the example WASM plugins:
//!
//! | type | stream | data |
//! |---|---|---|
//! | `user_created` | `user-<n>` | [`UserCreated`] `{user_id, name, email}` |
//! | `user_updated` | `user-<n>` | [`UserUpdated`] `{user_id, email}` |
//! | `account_verified` | `user-<n>` | [`AccountVerified`] `{user_id}` |
//! | `order_created` | `order-<n>` | [`OrderCreated`] `{order_id, user_id, amount_cents}` |
//! | `payment_confirmed` | `order-<n>` | [`PaymentConfirmed`] `{order_id, amount_cents}` |
//! | `inventory_reserved` | `order-<n>` | [`InventoryReserved`] `{order_id, sku, quantity}` |
//! | `order_completed` | `order-<n>` | [`OrderCompleted`] `{order_id, user_id}` |
//!
//! With [`Workload::with_streams`] the workload is spread over a fixed number of streams instead:
//! a tenth of them are users (`user-1` ..), the rest are order streams `order-<k>` that each
//! carry many orders one after another (order `order-<n>` goes to stream
//! `order-<(n - 1) % order_streams + 1>`; the `order_id` in the data stays unique).
//!
//! An order goes created → payment confirmed → one or more inventory reservations → completed.
//! Most orders complete; some are abandoned after creation, some after payment.
//!
//! The generator holds only a small state (each user's version, a bounded set of open orders),
//! never the events it has produced, so benches and the demo can stream any number of events.
//! Event ids are derived from the seed, so generating the same workload twice gives the same ids,
//! and appending it twice stores it once (store-wide idempotency).
//!
//! ```
//! use strata::{Options, Store};
//! use strata_testkit::workload::{Workload, WorkloadConfig};
//!
//! let store = Store::open_in_memory(Options::default())?;
//! let mut workload = Workload::new(WorkloadConfig { events: 2_000, ..WorkloadConfig::default() });
//! while let Some(batch) = workload.next_batch(500) {
//!     store.append_multi(batch)?;
//! }
//! assert_eq!(store.last_position()?, 2_000);
//! let stats = strata_testkit::reference::user_stats(store.iter_all(1))?;
//! assert!(stats.values().all(|s| s.total_orders > 0));
//! # Ok::<(), strata::Error>(())
//! ```

use std::collections::HashMap;

use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;
use serde::{Deserialize, Serialize};
use strata::{DecodeError, Event, ExpectedVersion, NewEvent, StreamAppend, StreamVersion, Uuid};

/// Event type names of the workload, in the order a user's and an order's life goes.
pub const EVENT_TYPES: [&str; 7] = [
    "user_created",
    "user_updated",
    "account_verified",
    "order_created",
    "payment_confirmed",
    "inventory_reserved",
    "order_completed",
];

/// `user_created`: a user signed up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCreated {
    /// `user-<n>`, the same as the stream id.
    pub user_id: String,
    /// Display name.
    pub name: String,
    /// E-mail address.
    pub email: String,
}

/// `user_updated`: a user changed their e-mail address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserUpdated {
    /// The user.
    pub user_id: String,
    /// The new address.
    pub email: String,
}

/// `account_verified`: a user confirmed their address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountVerified {
    /// The user.
    pub user_id: String,
}

/// `order_created`: a user placed an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreated {
    /// `order-<n>`, the same as the stream id.
    pub order_id: String,
    /// Who placed it.
    pub user_id: String,
    /// Its total, in cents.
    pub amount_cents: i64,
}

/// `payment_confirmed`: the order was paid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentConfirmed {
    /// The order.
    pub order_id: String,
    /// Amount paid, in cents (equal to the order's amount).
    pub amount_cents: i64,
}

/// `inventory_reserved`: stock was reserved for one line of the order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryReserved {
    /// The order.
    pub order_id: String,
    /// The article.
    pub sku: String,
    /// How many.
    pub quantity: u32,
}

/// `order_completed`: the order was shipped and is done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCompleted {
    /// The order.
    pub order_id: String,
    /// Who placed it.
    pub user_id: String,
}

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadConfig {
    /// Seed of the generator: the same seed and config give the same events, ids included.
    pub seed: u64,
    /// Total number of events to generate.
    pub events: u64,
    /// Most orders in progress at once (bounds the generator's memory). At least 1.
    pub max_open_orders: usize,
    /// Share of orders abandoned before completion, in `0.0..=1.0`. Default 0.15.
    pub abandon_rate: f64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            seed: 42,
            events: 200_000,
            max_open_orders: 1_000,
            abandon_rate: 0.15,
        }
    }
}

/// Where an open order is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OrderStage {
    Created,
    Paid,
    Reserved,
}

#[derive(Clone, Debug)]
struct OpenOrder {
    number: u64,
    user: u64,
    amount_cents: i64,
    version: StreamVersion,
    stage: OrderStage,
}

/// The generator. An [`Iterator`] of single appends (each with the exact expected version of
/// its stream); [`Workload::next_batch`] groups them for `Store::append_multi`.
#[derive(Debug)]
pub struct Workload {
    config: WorkloadConfig,
    rng: XorShiftRng,
    /// Events handed out so far.
    produced: u64,
    /// Version of user `n` (index n - 1).
    user_versions: Vec<StreamVersion>,
    open_orders: Vec<OpenOrder>,
    orders_created: u64,
    /// An append generated but not yet handed out (it did not fit in a batch).
    pending: Option<StreamAppend>,
    /// Set by [`Workload::with_streams`]: (most users, number of order streams).
    stream_limit: Option<(u64, u64)>,
    /// Version of order stream `k` (index k - 1), when streams are limited.
    order_stream_versions: Vec<StreamVersion>,
}

const FIRST_NAMES: [&str; 12] = [
    "Ada", "Alan", "Barbara", "Dennis", "Edsger", "Frances", "Grace", "John", "Ken", "Leslie",
    "Margaret", "Niklaus",
];
const LAST_NAMES: [&str; 10] = [
    "Lovelace", "Turing", "Liskov", "Ritchie", "Dijkstra", "Allen", "Hopper", "Backus", "Thompson",
    "Lamport",
];

impl Workload {
    /// A generator for `config`. Out-of-range settings are clamped (`max_open_orders` to at
    /// least 1, `abandon_rate` to `0.0..=1.0`).
    pub fn new(mut config: WorkloadConfig) -> Self {
        config.max_open_orders = config.max_open_orders.max(1);
        config.abandon_rate = if config.abandon_rate.is_nan() {
            0.0
        } else {
            config.abandon_rate.clamp(0.0, 1.0)
        };
        Workload {
            rng: XorShiftRng::seed_from_u64(config.seed),
            config,
            produced: 0,
            user_versions: Vec::new(),
            open_orders: Vec::new(),
            orders_created: 0,
            pending: None,
            stream_limit: None,
            order_stream_versions: Vec::new(),
        }
    }

    /// Spreads the workload over at most `streams` streams (at least 2): `streams / 10` users
    /// (at least 1) and the rest order streams, each carrying many orders in turn. Once every
    /// user exists, a roll that would create one touches an existing user instead. With enough
    /// events (a few times `streams`) every stream is used. Call before generating anything.
    ///
    /// ```
    /// use std::collections::HashSet;
    /// use strata_testkit::workload::{Workload, WorkloadConfig};
    ///
    /// let config = WorkloadConfig { events: 20_000, ..WorkloadConfig::default() };
    /// let streams: HashSet<String> =
    ///     Workload::new(config).with_streams(500).map(|append| append.stream_id).collect();
    /// assert_eq!(streams.len(), 500);
    /// ```
    pub fn with_streams(mut self, streams: u64) -> Self {
        let streams = streams.max(2);
        let users = (streams / 10).max(1);
        self.stream_limit = Some((users, streams - users));
        self
    }

    /// The configuration (after clamping).
    pub fn config(&self) -> &WorkloadConfig {
        &self.config
    }

    /// Events not yet generated.
    pub fn remaining(&self) -> u64 {
        self.config.events - self.produced
    }

    /// The next group of appends, at most `max_events` events in all (at least one append even
    /// when a single append is larger), with each stream at most once: appends to the same
    /// stream are merged, keeping the first one's expected version. Ready for
    /// `Store::append_multi`. `None` when the workload is exhausted.
    pub fn next_batch(&mut self, max_events: usize) -> Option<Vec<StreamAppend>> {
        let mut batch: Vec<StreamAppend> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut count = 0usize;
        loop {
            let next = match self.pending.take() {
                Some(append) => append,
                None => match self.next_append() {
                    Some(append) => append,
                    None => break,
                },
            };
            if !batch.is_empty() && count + next.events.len() > max_events {
                self.pending = Some(next);
                break;
            }
            count += next.events.len();
            match index.get(&next.stream_id) {
                Some(&at) => batch[at].events.extend(next.events),
                None => {
                    index.insert(next.stream_id.clone(), batch.len());
                    batch.push(next);
                }
            }
            if count >= max_events {
                break;
            }
        }
        (!batch.is_empty()).then_some(batch)
    }

    fn event_id(&mut self) -> Uuid {
        uuid::Builder::from_random_bytes(self.rng.random()).into_uuid()
    }

    fn event(&mut self, event_type: &str, value: &impl Serialize) -> NewEvent {
        let id = self.event_id();
        NewEvent::from_value(event_type, value)
            .expect("workload structs always encode")
            .with_id(id)
    }

    fn new_user(&mut self) -> StreamAppend {
        let number = self.user_versions.len() as u64 + 1;
        let user_id = format!("user-{number}");
        let first = FIRST_NAMES[self.rng.random_range(0..FIRST_NAMES.len())];
        let last = LAST_NAMES[self.rng.random_range(0..LAST_NAMES.len())];
        let created = UserCreated {
            user_id: user_id.clone(),
            name: format!("{first} {last}"),
            email: format!("{}.{number}@example.com", first.to_lowercase()),
        };
        let event = self.event("user_created", &created);
        self.user_versions.push(1);
        StreamAppend::new(user_id, ExpectedVersion::NoStream, vec![event])
    }

    fn touch_user(&mut self) -> StreamAppend {
        let index = self.rng.random_range(0..self.user_versions.len());
        let user_id = format!("user-{}", index + 1);
        let version = self.user_versions[index];
        let event = if self.rng.random_bool(0.5) {
            let updated = UserUpdated {
                user_id: user_id.clone(),
                email: format!("u{}.v{}@example.org", index + 1, version + 1),
            };
            self.event("user_updated", &updated)
        } else {
            let verified = AccountVerified {
                user_id: user_id.clone(),
            };
            self.event("account_verified", &verified)
        };
        self.user_versions[index] = version + 1;
        StreamAppend::new(user_id, ExpectedVersion::Exact(version), vec![event])
    }

    /// The stream of order `number` and the expected version of an append to it.
    fn order_stream(&self, number: u64, version: StreamVersion) -> (String, ExpectedVersion) {
        match self.stream_limit {
            None => (
                format!("order-{number}"),
                if version == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(version)
                },
            ),
            Some((_, order_streams)) => {
                let k = (number - 1) % order_streams;
                let version = self
                    .order_stream_versions
                    .get(k as usize)
                    .copied()
                    .unwrap_or(0);
                let expected = if version == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(version)
                };
                (format!("order-{}", k + 1), expected)
            }
        }
    }

    /// Records `count` events appended to the stream of order `number` (limited streams).
    fn bump_order_stream(&mut self, number: u64, count: u64) {
        if let Some((_, order_streams)) = self.stream_limit {
            let k = ((number - 1) % order_streams) as usize;
            if self.order_stream_versions.len() <= k {
                self.order_stream_versions.resize(k + 1, 0);
            }
            self.order_stream_versions[k] += count;
        }
    }

    fn new_order(&mut self) -> StreamAppend {
        self.orders_created += 1;
        let number = self.orders_created;
        let user = self.rng.random_range(1..=self.user_versions.len() as u64);
        // Mostly small baskets, a few large ones.
        let amount_cents = if self.rng.random_bool(0.9) {
            self.rng.random_range(500..=15_000)
        } else {
            self.rng.random_range(15_000..=250_000)
        };
        let created = OrderCreated {
            order_id: format!("order-{number}"),
            user_id: format!("user-{user}"),
            amount_cents,
        };
        let event = self.event("order_created", &created);
        self.open_orders.push(OpenOrder {
            number,
            user,
            amount_cents,
            version: 1,
            stage: OrderStage::Created,
        });
        let (stream, expected) = self.order_stream(number, 0);
        self.bump_order_stream(number, 1);
        StreamAppend::new(stream, expected, vec![event])
    }

    /// Moves a random open order one step on, at most `budget` events (>= 1).
    fn advance_order(&mut self, budget: u64) -> StreamAppend {
        let index = self.rng.random_range(0..self.open_orders.len());
        let mut order = self.open_orders.swap_remove(index);
        let order_id = format!("order-{}", order.number);
        let (stream, expected) = self.order_stream(order.number, order.version);
        let mut events = Vec::new();
        let done = match order.stage {
            OrderStage::Created => {
                let paid = PaymentConfirmed {
                    order_id: order_id.clone(),
                    amount_cents: order.amount_cents,
                };
                events.push(self.event("payment_confirmed", &paid));
                order.stage = OrderStage::Paid;
                false
            }
            OrderStage::Paid => {
                // One to three lines, reserved together (bounded by the remaining budget).
                let lines = self.rng.random_range(1..=3u64).min(budget);
                for _ in 0..lines {
                    let reserved = InventoryReserved {
                        order_id: order_id.clone(),
                        sku: format!("SKU-{:05}", self.rng.random_range(1..=5_000u32)),
                        quantity: self.rng.random_range(1..=4),
                    };
                    events.push(self.event("inventory_reserved", &reserved));
                }
                order.stage = OrderStage::Reserved;
                false
            }
            OrderStage::Reserved => {
                let completed = OrderCompleted {
                    order_id: order_id.clone(),
                    user_id: format!("user-{}", order.user),
                };
                events.push(self.event("order_completed", &completed));
                true
            }
        };
        order.version += events.len() as u64;
        self.bump_order_stream(order.number, events.len() as u64);
        if !done {
            self.open_orders.push(order);
        }
        StreamAppend::new(stream, expected, events)
    }

    fn next_append(&mut self) -> Option<StreamAppend> {
        let budget = self.remaining();
        if budget == 0 {
            return None;
        }
        let append = if self.user_versions.is_empty() {
            self.new_user()
        } else {
            // Abandon an order now and then: it simply never progresses again.
            if !self.open_orders.is_empty() && self.rng.random_bool(self.config.abandon_rate / 4.0)
            {
                let index = self.rng.random_range(0..self.open_orders.len());
                if self.open_orders[index].stage != OrderStage::Reserved {
                    self.open_orders.swap_remove(index);
                }
            }
            let roll: f64 = self.rng.random();
            let full = self.open_orders.len() >= self.config.max_open_orders;
            let all_users = self
                .stream_limit
                .is_some_and(|(users, _)| self.user_versions.len() as u64 >= users);
            if roll < 0.08 && !all_users {
                self.new_user()
            } else if roll < 0.14 {
                self.touch_user()
            } else if !full && (roll < 0.38 || self.open_orders.is_empty()) {
                self.new_order()
            } else {
                self.advance_order(budget)
            }
        };
        self.produced += append.events.len() as u64;
        debug_assert!(self.produced <= self.config.events);
        Some(append)
    }
}

impl Iterator for Workload {
    type Item = StreamAppend;

    /// The next single append, with its stream's exact expected version.
    fn next(&mut self) -> Option<StreamAppend> {
        match self.pending.take() {
            Some(append) => Some(append),
            None => self.next_append(),
        }
    }
}

/// Decodes the data of any workload event into JSON-friendly form, checking it has the schema
/// of its type. `Ok(None)` for a type that is not part of the workload.
pub fn decode_known(event: &Event) -> Result<Option<WorkloadEvent>, DecodeError> {
    Ok(Some(match &*event.event_type {
        "user_created" => WorkloadEvent::UserCreated(event.decode()?),
        "user_updated" => WorkloadEvent::UserUpdated(event.decode()?),
        "account_verified" => WorkloadEvent::AccountVerified(event.decode()?),
        "order_created" => WorkloadEvent::OrderCreated(event.decode()?),
        "payment_confirmed" => WorkloadEvent::PaymentConfirmed(event.decode()?),
        "inventory_reserved" => WorkloadEvent::InventoryReserved(event.decode()?),
        "order_completed" => WorkloadEvent::OrderCompleted(event.decode()?),
        _ => return Ok(None),
    }))
}

/// Any workload event, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkloadEvent {
    /// `user_created`.
    UserCreated(UserCreated),
    /// `user_updated`.
    UserUpdated(UserUpdated),
    /// `account_verified`.
    AccountVerified(AccountVerified),
    /// `order_created`.
    OrderCreated(OrderCreated),
    /// `payment_confirmed`.
    PaymentConfirmed(PaymentConfirmed),
    /// `inventory_reserved`.
    InventoryReserved(InventoryReserved),
    /// `order_completed`.
    OrderCompleted(OrderCompleted),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::user_stats;
    use std::collections::{BTreeMap, HashSet};
    use strata::{Durability, Options, Store};

    fn config(events: u64) -> WorkloadConfig {
        WorkloadConfig {
            events,
            ..WorkloadConfig::default()
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_events_and_another_seed_does_not() {
        let a: Vec<StreamAppend> = Workload::new(config(500)).collect();
        let b: Vec<StreamAppend> = Workload::new(config(500)).collect();
        assert_eq!(a, b);
        let c: Vec<StreamAppend> = Workload::new(WorkloadConfig {
            seed: 7,
            ..config(500)
        })
        .collect();
        assert_ne!(a, c);
    }

    #[test]
    fn exactly_the_requested_number_of_events_in_batches_with_unique_streams() {
        for total in [1u64, 2, 3, 10, 999, 5_000] {
            let mut workload = Workload::new(config(total));
            let mut count = 0u64;
            while let Some(batch) = workload.next_batch(64) {
                let events: usize = batch.iter().map(|part| part.events.len()).sum();
                assert!(events <= 64, "batch of {events} events");
                let streams: HashSet<&str> =
                    batch.iter().map(|part| part.stream_id.as_str()).collect();
                assert_eq!(streams.len(), batch.len(), "a stream appears twice");
                count += events as u64;
            }
            assert_eq!(count, total);
            assert_eq!(workload.remaining(), 0);
        }
    }

    #[test]
    fn every_event_type_appears_and_data_matches_its_schema() {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for append in Workload::new(config(20_000)) {
            for event in append.events {
                let stored = Event {
                    position: 1,
                    stream_id: append.stream_id.as_str().into(),
                    version: 1,
                    event_type: event.event_type.as_str().into(),
                    event_id: event.event_id.unwrap(),
                    recorded_at: 0,
                    data: event.data,
                    metadata: event.metadata,
                    tags: Default::default(),
                };
                assert!(decode_known(&stored).unwrap().is_some());
                let prefix = if stored.event_type.starts_with("user")
                    || &*stored.event_type == "account_verified"
                {
                    "user-"
                } else {
                    "order-"
                };
                assert!(append.stream_id.starts_with(prefix));
                *seen.entry(event.event_type).or_default() += 1;
            }
        }
        for kind in EVENT_TYPES {
            assert!(seen.get(kind).copied().unwrap_or(0) > 0, "{kind} missing");
        }
        // A realistic mix: most orders complete, some do not.
        let created = seen["order_created"] as f64;
        let completed = seen["order_completed"] as f64;
        assert!(completed / created > 0.5, "{completed} of {created}");
        assert!(completed / created < 0.97, "{completed} of {created}");
    }

    #[test]
    fn the_workload_appends_cleanly_and_user_stats_match_a_direct_count() {
        let store = Store::open_in_memory(Options {
            durability: Durability::Fast,
            ..Options::default()
        })
        .unwrap();
        let total = 10_000u64;
        let mut workload = Workload::new(config(total));
        // Expected stats straight from the generated appends (no store involved).
        let mut amounts: HashMap<String, (String, i64)> = HashMap::new();
        let mut expected: BTreeMap<String, (u64, i64)> = BTreeMap::new();
        while let Some(batch) = workload.next_batch(300) {
            for part in &batch {
                for event in &part.events {
                    let decoded = rmp_serde::from_slice::<OrderCreated>(&event.data);
                    if event.event_type == "order_created" {
                        let created = decoded.unwrap();
                        amounts.insert(created.order_id, (created.user_id, created.amount_cents));
                    } else if event.event_type == "order_completed" {
                        let completed: OrderCompleted = rmp_serde::from_slice(&event.data).unwrap();
                        let (user, amount) = amounts[&completed.order_id].clone();
                        assert_eq!(user, completed.user_id);
                        let entry = expected.entry(user).or_default();
                        entry.0 += 1;
                        entry.1 += amount;
                    }
                }
            }
            store.append_multi(batch).unwrap();
        }
        assert_eq!(store.last_position().unwrap(), total);

        let stats = user_stats(store.iter_all(1)).unwrap();
        let got: BTreeMap<String, (u64, i64)> = stats
            .iter()
            .map(|(user, s)| (user.clone(), (s.total_orders, s.total_spent)))
            .collect();
        assert_eq!(got, expected);
        assert!(!stats.is_empty());
        for s in stats.values() {
            assert!(s.last_order_date > 0);
            assert!(
                (s.average_order_value - s.total_spent as f64 / s.total_orders as f64).abs() < 1e-9
            );
        }

        // Appending the same workload again stores nothing new: the ids are deterministic.
        let mut again = Workload::new(config(total));
        while let Some(batch) = again.next_batch(300) {
            let results = store.append_multi(batch).unwrap();
            assert!(results.iter().all(|r| r.already_stored));
        }
        assert_eq!(store.last_position().unwrap(), total);
    }

    #[test]
    fn limited_streams_append_cleanly_and_keep_order_ids_unique() {
        let store = Store::open_in_memory(Options {
            durability: Durability::Fast,
            ..Options::default()
        })
        .unwrap();
        let mut workload = Workload::new(config(20_000)).with_streams(500);
        let mut streams = HashSet::new();
        let mut created = HashSet::new();
        while let Some(batch) = workload.next_batch(1_000) {
            for part in &batch {
                streams.insert(part.stream_id.clone());
                for event in &part.events {
                    if event.event_type == "order_created" {
                        let order: OrderCreated = rmp_serde::from_slice(&event.data).unwrap();
                        assert!(created.insert(order.order_id), "order id reused");
                    }
                }
            }
            store.append_multi(batch).unwrap();
        }
        assert_eq!(streams.len(), 500);
        assert_eq!(
            streams.iter().filter(|s| s.starts_with("user-")).count(),
            50
        );
        assert_eq!(store.last_position().unwrap(), 20_000);
        let stats = user_stats(store.iter_all(1)).unwrap();
        assert!(!stats.is_empty() && stats.len() <= 50);
    }
}
