//! Dynamic Consistency Boundaries benchmarks, each with its baseline in the same run.
//!
//! The store is preloaded with `STRATA_BENCH_DCB_PRELOAD` events (default 1,000,000; the smoke
//! run uses 20,000), appended 1,000 at a time, event `i` to stream `s-{i % 10000}` with tag
//! `t-{i % 10000}`: 10k distinct tags, and stream `s-k` holds exactly the events tagged `t-k`
//! (≈ 100 each at 1M), spread over the whole log.
//!
//! - `conditional_append`: one event tagged `t-k` appended with the condition "no `subscribed`
//!   event tagged `t-k` after the last position" (types + one tag), against the same append
//!   without condition. Fast durability: with an fsync per append both would measure the disk.
//! - `read_query`: `read_query` of one tag's events against `read_stream` of the stream holding
//!   the same events (the same rows), event cache off on both.
//! - `batched_append_tags`: 1,000 events per append, one tag each, against the same events
//!   without tags: what the tag index costs the write path.
//!
//! Run: `cargo bench -p strata-benches --bench dcb`, then
//! `cargo run -p strata-benches --bin bench-report` prints the ratios.

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strata::{
    AppendCondition, Direction, Durability, ExpectedVersion, NewEvent, Options, Query, QueryItem,
    Store, StreamAppend,
};
use strata_benches::{env_usize, is_smoke_run, payload_200};

const TAGS: u64 = 10_000;
const PRELOAD_BATCH: u64 = 1_000;

fn options() -> Options {
    Options {
        durability: Durability::Fast,
        max_events_per_append: 100_000,
        cache_bytes: 0,
        ..Options::default()
    }
}

fn preload_size() -> u64 {
    let default = if is_smoke_run() { 20_000 } else { 1_000_000 };
    env_usize("STRATA_BENCH_DCB_PRELOAD", default) as u64
}

/// A store holding `events` events as the module documentation describes.
fn preloaded_store(dir: &tempfile::TempDir, events: u64) -> Store {
    let store = Store::open(dir.path().join("dcb.db"), options()).unwrap();
    let mut i = 0;
    while i < events {
        let parts: Vec<StreamAppend> = (i..(i + PRELOAD_BATCH).min(events))
            .map(|n| {
                let k = n % TAGS;
                StreamAppend::new(
                    format!("s-{k}"),
                    ExpectedVersion::Any,
                    vec![NewEvent::new("subscribed", payload_200(n)).with_tags([format!("t-{k}")])],
                )
            })
            .collect();
        i += parts.len() as u64;
        store.append_multi(parts).unwrap();
    }
    store
}

fn dcb(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let preload = preload_size();
    let store = preloaded_store(&dir, preload);
    eprintln!("dcb benches: {preload} events preloaded");

    let mut group = c.benchmark_group("conditional_append");
    group.throughput(Throughput::Elements(1));
    group.sample_size(30);
    let head = AtomicU64::new(store.last_position().unwrap());
    let next_tag = AtomicU64::new(0);
    group.bench_function("with_condition", |b| {
        b.iter(|| {
            let k = next_tag.fetch_add(7, Ordering::Relaxed) % TAGS;
            let tag = format!("t-{k}");
            let condition = AppendCondition::new(
                Query::item(QueryItem::types(["subscribed"]).with_tags([tag.clone()])),
                head.load(Ordering::Relaxed),
            );
            let event = NewEvent::new("subscribed", payload_200(k)).with_tags([tag]);
            let result = store.append_with(vec![event], condition).unwrap();
            head.store(result.last_position, Ordering::Relaxed);
        })
    });
    group.bench_function("without_condition", |b| {
        b.iter(|| {
            let k = next_tag.fetch_add(7, Ordering::Relaxed) % TAGS;
            let event = NewEvent::new("subscribed", payload_200(k)).with_tags([format!("t-{k}")]);
            let result = store
                .append(strata::DEFAULT_STREAM, ExpectedVersion::Any, vec![event])
                .unwrap();
            head.store(result.last_position, Ordering::Relaxed);
        })
    });
    group.finish();

    let mut group = c.benchmark_group("read_query");
    group.sample_size(30);
    let per_tag = store
        .read_stream("s-4242", 1, Direction::Forwards, 100_000)
        .unwrap()
        .len();
    group.throughput(Throughput::Elements(per_tag as u64));
    let next = AtomicU64::new(0);
    group.bench_function("read_query", |b| {
        b.iter(|| {
            let k = next.fetch_add(1, Ordering::Relaxed) % TAGS;
            let events = store
                .read_query(&Query::tags([format!("t-{k}")]), 0, 100_000)
                .unwrap();
            assert!(!events.is_empty());
            events
        })
    });
    group.bench_function("read_stream", |b| {
        b.iter(|| {
            let k = next.fetch_add(1, Ordering::Relaxed) % TAGS;
            let events = store
                .read_stream(&format!("s-{k}"), 1, Direction::Forwards, 100_000)
                .unwrap();
            assert!(!events.is_empty());
            events
        })
    });
    group.finish();
    eprintln!("dcb benches: {per_tag} events per tag and per stream");

    let mut group = c.benchmark_group("batched_append_tags");
    group.throughput(Throughput::Elements(PRELOAD_BATCH));
    group.sample_size(20);
    let batch = |tagged: bool, seed: u64| -> Vec<NewEvent> {
        (0..PRELOAD_BATCH)
            .map(|n| {
                let event = NewEvent::new("batched", payload_200(seed + n));
                if tagged {
                    event.with_tags([format!("t-{}", (seed + n) % TAGS)])
                } else {
                    event
                }
            })
            .collect()
    };
    let tagged = batch(true, 1);
    let untagged = batch(false, 1);
    let stream = AtomicU64::new(0);
    group.bench_function("one_tag_per_event", |b| {
        b.iter(|| {
            let s = stream.fetch_add(1, Ordering::Relaxed) % TAGS;
            store
                .append(&format!("b-{s}"), ExpectedVersion::Any, tagged.clone())
                .unwrap()
        })
    });
    group.bench_function("no_tags", |b| {
        b.iter(|| {
            let s = stream.fetch_add(1, Ordering::Relaxed) % TAGS;
            store
                .append(&format!("b-{s}"), ExpectedVersion::Any, untagged.clone())
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, dcb);
criterion_main!(benches);
