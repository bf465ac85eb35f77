//! Aggregates: load by replay, save with optimistic concurrency, snapshots.

mod common;

use common::{fast, temp_store};
use serde::{Deserialize, Serialize};
use strata::{
    Aggregate, AggregateStore, Direction, Event, ExpectedVersion, NewEvent, SnapshotPolicy, Store,
};

/// An order: items added with their amount.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    items: u64,
    total_cents: i64,
    last_item: String,
}

#[derive(Serialize, Deserialize)]
struct ItemAdded {
    name: String,
    cents: i64,
}

impl Aggregate for Order {
    const TYPE_NAME: &'static str = "order";
    const TYPE_VERSION: u32 = 1;

    fn apply(&mut self, event: &Event) {
        if &*event.event_type == "item_added" {
            let item: ItemAdded = event.decode().unwrap();
            self.items += 1;
            self.total_cents += item.cents;
            self.last_item = item.name;
        }
    }
}

/// The same aggregate type after a change of meaning: items now count twice. Its snapshots are
/// not compatible with version 1's.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct OrderV2 {
    items: u64,
    total_cents: i64,
    last_item: String,
}

impl Aggregate for OrderV2 {
    const TYPE_NAME: &'static str = "order";
    const TYPE_VERSION: u32 = 2;

    fn apply(&mut self, event: &Event) {
        if &*event.event_type == "item_added" {
            let item: ItemAdded = event.decode().unwrap();
            self.items += 2;
            self.total_cents += item.cents;
            self.last_item = item.name;
        }
    }
}

fn item(i: i64) -> NewEvent {
    NewEvent::from_value(
        "item_added",
        &ItemAdded {
            name: format!("item-{i}"),
            cents: 100 + i,
        },
    )
    .unwrap()
}

/// The state by folding every event of the stream, without the aggregate store.
fn full_replay<A: Aggregate>(store: &Store, stream: &str) -> A {
    let mut state = A::default();
    for event in store.iter_stream(stream, Direction::Forwards) {
        state.apply(&event.unwrap());
    }
    state
}

#[test]
fn load_record_save_and_reload() {
    let store = Store::open_in_memory(fast()).unwrap();
    let aggregates = AggregateStore::new(&store, SnapshotPolicy::never()).unwrap();
    let mut order = aggregates.load::<Order>("order-1").unwrap();
    assert_eq!((order.version(), order.state()), (0, &Order::default()));
    for i in 0..3 {
        order.record(item(i));
    }
    assert_eq!(order.uncommitted().len(), 3);
    let result = aggregates.save(&mut order).unwrap().unwrap();
    assert_eq!(result.last_version, 3);
    assert_eq!(order.version(), 3);
    assert!(order.uncommitted().is_empty());
    assert_eq!(order.state().items, 3);
    assert_eq!(order.state().total_cents, 303);
    // Nothing recorded: nothing written.
    assert!(aggregates.save(&mut order).unwrap().is_none());

    let reloaded = aggregates.load::<Order>("order-1").unwrap();
    assert_eq!(reloaded.state(), order.state());
    assert_eq!((reloaded.version(), reloaded.replayed_events()), (3, 3));
    assert_eq!(reloaded.snapshot_version(), None);
}

#[test]
fn a_concurrent_save_is_a_conflict_and_writes_nothing() {
    let store = Store::open_in_memory(fast()).unwrap();
    let aggregates = AggregateStore::new(&store, SnapshotPolicy::never()).unwrap();
    let mut first = aggregates.load::<Order>("order-1").unwrap();
    let mut second = aggregates.load::<Order>("order-1").unwrap();
    first.record(item(1));
    second.record(item(2));
    aggregates.save(&mut first).unwrap();
    let error = aggregates.save(&mut second).unwrap_err();
    assert!(error.is_conflict(), "{error}");
    assert_eq!(second.version(), 0);
    assert_eq!(second.uncommitted().len(), 1, "kept for the caller to redo");
    assert_eq!(store.stream_info("order-1").unwrap().unwrap().version, 1);

    // Another writer appending directly also conflicts with a stale root.
    let mut stale = aggregates.load::<Order>("order-1").unwrap();
    store
        .append("order-1", ExpectedVersion::Any, vec![item(9)])
        .unwrap();
    stale.record(item(3));
    assert!(aggregates.save(&mut stale).unwrap_err().is_conflict());

    let mut fresh = aggregates.load::<Order>("order-1").unwrap();
    fresh.record(item(2));
    aggregates.save(&mut fresh).unwrap();
    assert_eq!(fresh.version(), 3);
    assert_eq!(fresh.state().last_item, "item-2");
}

#[test]
fn a_snapshot_shortens_the_load_and_gives_the_same_state_as_a_full_replay() {
    let (_dir, _path, store) = temp_store(fast());
    let aggregates = AggregateStore::new(&store, SnapshotPolicy::every(10)).unwrap();
    for batch in 0..5 {
        let mut order = aggregates.load::<Order>("order-1").unwrap();
        for i in 0..5 {
            order.record(item(batch * 5 + i));
        }
        aggregates.save(&mut order).unwrap();
    }
    // 25 events; saves crossed 10 and 20.
    assert_eq!(
        aggregates.snapshot_info::<Order>("order-1").unwrap(),
        Some((20, 1))
    );
    let loaded = aggregates.load::<Order>("order-1").unwrap();
    assert_eq!(loaded.snapshot_version(), Some(20));
    assert_eq!(loaded.replayed_events(), 5);
    assert_eq!(loaded.version(), 25);
    let replayed: Order = full_replay(&store, "order-1");
    assert_eq!(loaded.state(), &replayed);
    assert_eq!(replayed.items, 25);

    // Another aggregate store on the same file (a restarted app) uses the stored snapshot.
    let reopened = AggregateStore::new(&store, SnapshotPolicy::never()).unwrap();
    assert_eq!(
        reopened.load::<Order>("order-1").unwrap().replayed_events(),
        5
    );
}

#[test]
fn a_snapshot_of_another_type_version_is_ignored_not_misread() {
    let store = Store::open_in_memory(fast()).unwrap();
    let aggregates = AggregateStore::new(&store, SnapshotPolicy::every(10)).unwrap();
    let mut order = aggregates.load::<Order>("order-1").unwrap();
    for i in 0..12 {
        order.record(item(i));
    }
    aggregates.save(&mut order).unwrap();
    assert_eq!(
        aggregates.snapshot_info::<Order>("order-1").unwrap(),
        Some((12, 1))
    );

    let v2 = aggregates.load::<OrderV2>("order-1").unwrap();
    assert_eq!(v2.snapshot_version(), None);
    assert_eq!(v2.replayed_events(), 12);
    assert_eq!(
        v2.state().items,
        24,
        "version 2 semantics, from a full replay"
    );
    assert_eq!(v2.state(), &full_replay::<OrderV2>(&store, "order-1"));

    // Version 2 writes its own snapshot over version 1's; version 1 then ignores it in turn.
    aggregates.snapshot(&v2).unwrap();
    assert_eq!(
        aggregates.snapshot_info::<Order>("order-1").unwrap(),
        Some((12, 2))
    );
    let v1 = aggregates.load::<Order>("order-1").unwrap();
    assert_eq!(v1.snapshot_version(), None);
    assert_eq!(v1.state().items, 12);
}
