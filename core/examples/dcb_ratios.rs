//! A quick run of the DCB bench's three comparisons (`benches/benches/dcb.rs` is the criterion
//! bench; this one builds with `core` alone, without wasmtime, for a fast release run):
//! the same preloaded store, each measurement against its baseline in the same run, in
//! alternating blocks so that machine noise hits both sides alike; medians of the blocks.
//!
//! `cargo run --release -p strata --example dcb_ratios` (`STRATA_BENCH_DCB_PRELOAD` events,
//! default 1,000,000; `STRATA_BENCH_DCB_BLOCKS` blocks per side, default 30).

use std::time::Instant;

use strata::{
    AppendCondition, Direction, Durability, ExpectedVersion, NewEvent, Options, Query, QueryItem,
    Store, StreamAppend, DEFAULT_STREAM,
};

const TAGS: u64 = 10_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn payload(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..200)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    samples[samples.len() / 2]
}

/// Nanoseconds per operation of `measured` and `baseline`, alternating blocks of `ops` each.
fn compare(
    blocks: u64,
    ops: u64,
    mut measured: impl FnMut(u64),
    mut baseline: impl FnMut(u64),
) -> (f64, f64) {
    let (mut m, mut b) = (Vec::new(), Vec::new());
    let mut n = 0;
    for _ in 0..blocks {
        let started = Instant::now();
        for _ in 0..ops {
            measured(n);
            n += 1;
        }
        m.push(started.elapsed().as_nanos() as f64 / ops as f64);
        let started = Instant::now();
        for _ in 0..ops {
            baseline(n);
            n += 1;
        }
        b.push(started.elapsed().as_nanos() as f64 / ops as f64);
    }
    (median(m), median(b))
}

fn report(what: &str, (measured, baseline): (f64, f64), goal: Option<f64>) {
    let ratio = baseline / measured;
    let verdict = match goal {
        Some(goal) if ratio >= goal => format!("goal ≥ {goal}x: met"),
        Some(goal) => format!("goal ≥ {goal}x: NOT met"),
        None => "no goal".into(),
    };
    println!(
        "{what}: {:.1} µs vs baseline {:.1} µs per op; ratio {ratio:.2}x ({verdict})",
        measured / 1e3,
        baseline / 1e3
    );
}

fn main() {
    let preload = env("STRATA_BENCH_DCB_PRELOAD", 1_000_000);
    let blocks = env("STRATA_BENCH_DCB_BLOCKS", 30);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path().join("dcb.db"),
        Options {
            durability: Durability::Fast,
            max_events_per_append: 100_000,
            cache_bytes: 0,
            ..Options::default()
        },
    )
    .unwrap();
    let started = Instant::now();
    let mut i = 0;
    while i < preload {
        let parts: Vec<StreamAppend> = (i..(i + 1_000).min(preload))
            .map(|n| {
                let k = n % TAGS;
                StreamAppend::new(
                    format!("s-{k}"),
                    ExpectedVersion::Any,
                    vec![NewEvent::new("subscribed", payload(n)).with_tags([format!("t-{k}")])],
                )
            })
            .collect();
        i += parts.len() as u64;
        store.append_multi(parts).unwrap();
    }
    println!(
        "preloaded {preload} events over {TAGS} tags and streams in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut head = store.last_position().unwrap();
    let head_cell = std::cell::Cell::new(head);
    let with_condition = |n: u64| {
        let tag = format!("t-{}", (n * 7) % TAGS);
        let condition = AppendCondition::new(
            Query::item(QueryItem::types(["subscribed"]).with_tags([tag.clone()])),
            head_cell.get(),
        );
        let event = NewEvent::new("subscribed", payload(n)).with_tags([tag]);
        let result = store.append_with(vec![event], condition).unwrap();
        head_cell.set(result.last_position);
    };
    let without_condition = |n: u64| {
        let event =
            NewEvent::new("subscribed", payload(n)).with_tags([format!("t-{}", (n * 7) % TAGS)]);
        let result = store
            .append(DEFAULT_STREAM, ExpectedVersion::Any, vec![event])
            .unwrap();
        head_cell.set(result.last_position);
    };
    report(
        "conditional append (type + tag) vs plain append",
        compare(blocks, 200, with_condition, without_condition),
        Some(0.7),
    );
    head = head_cell.get();
    let _ = head;

    let per_tag = store
        .read_stream("s-4242", 1, Direction::Forwards, 100_000)
        .unwrap()
        .len();
    println!("{per_tag} events per tag and per stream");
    report(
        "read_query of one tag vs read_stream of the stream with the same events",
        compare(
            blocks,
            100,
            |n| {
                let events = store
                    .read_query(&Query::tags([format!("t-{}", n % TAGS)]), 0, 100_000)
                    .unwrap();
                assert!(!events.is_empty());
            },
            |n| {
                let events = store
                    .read_stream(&format!("s-{}", n % TAGS), 1, Direction::Forwards, 100_000)
                    .unwrap();
                assert!(!events.is_empty());
            },
        ),
        Some(0.5),
    );

    let batch = |tagged: bool| -> Vec<NewEvent> {
        (0..1_000u64)
            .map(|n| {
                let event = NewEvent::new("batched", payload(n));
                if tagged {
                    event.with_tags([format!("t-{}", n % TAGS)])
                } else {
                    event
                }
            })
            .collect()
    };
    let (tagged, untagged) = (batch(true), batch(false));
    report(
        "batched append of 1,000 events, one tag each vs no tags",
        compare(
            blocks.min(20),
            2,
            |n| {
                store
                    .append(
                        &format!("b-{}", n % TAGS),
                        ExpectedVersion::Any,
                        tagged.clone(),
                    )
                    .unwrap();
            },
            |n| {
                store
                    .append(
                        &format!("b-{}", n % TAGS),
                        ExpectedVersion::Any,
                        untagged.clone(),
                    )
                    .unwrap();
            },
        ),
        None,
    );
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}
