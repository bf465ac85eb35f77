//! The event cache and subscriptions.
//!
//! - `cache/warm_read_100/{cached,uncached}`: one `read_stream` of a 100-event stream, with the
//!   cache warm and with the cache off (same run). Goal: cached ≥ 10x faster.
//! - `catch_up/{subscription,read_all}`: reading `STRATA_BENCH_EVENTS` events (default 20,000;
//!   1,000,000 for the recorded figures) by subscription catch-up and by paging `read_all` (cache
//!   off, 1,000 per page). Goal: subscription ≥ 0.8x the speed of `read_all`.
//! - `latency/append_to_subscriber`: one Fast append until a waiting subscriber has it. Also
//!   printed: p50 / p99 over `STRATA_BENCH_LATENCY_SAMPLES` (default 2,000) appends.
//!
//! Besides criterion's figures, the bench prints a summary with the ratios, measured by
//! alternating the two sides in the same process. `cargo bench ... -- --test` runs every bench
//! once on small data.

use std::hint::black_box;
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strata::{
    Direction, Durability, ExpectedVersion, NewEvent, Options, Store, SubscriptionFilter,
};

const PAGE: usize = 1_000;

fn smoke() -> bool {
    std::env::args().any(|arg| arg == "--test")
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn options(cache_bytes: usize) -> Options {
    Options {
        durability: Durability::Fast,
        cache_bytes,
        ..Options::default()
    }
}

/// A 100-byte payload, like a small JSON or MessagePack document.
fn payload(i: usize) -> Vec<u8> {
    let mut data = format!("{{\"order\":{i},\"amount_cents\":1999,\"note\":\"").into_bytes();
    data.resize(100, b'x');
    data
}

fn fill(store: &Store, streams: usize, events: usize) {
    let mut written = 0;
    while written < events {
        let n = PAGE.min(events - written);
        let batch = (0..n)
            .map(|i| NewEvent::new("order_placed", payload(written + i)))
            .collect();
        store
            .append(
                &format!("order-{}", written / PAGE % streams.max(1)),
                ExpectedVersion::Any,
                batch,
            )
            .unwrap();
        written += n;
    }
}

fn catch_up_subscription(store: &Store, events: usize) -> usize {
    let mut subscription = store
        .subscribe(1, SubscriptionFilter::all())
        .unwrap()
        .with_page_size(PAGE)
        .unwrap()
        .with_external_check_interval(None);
    let mut count = 0;
    while count < events {
        match subscription.try_next().unwrap() {
            Some(event) => {
                black_box(&event);
                count += 1;
            }
            None => break,
        }
    }
    count
}

fn catch_up_read_all(store: &Store, events: usize) -> usize {
    let mut from = 1;
    let mut count = 0;
    while count < events {
        let page = store.read_all(from, PAGE).unwrap();
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        count += page.len();
        black_box(&page);
    }
    count
}

/// Median time of `f` over `rounds` rounds, in seconds per call.
fn per_call(rounds: usize, calls: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..calls {
                f();
            }
            started.elapsed().as_secs_f64() / calls as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn bench_cache(c: &mut Criterion, dir: &Path) {
    let cached = Store::open(dir.join("cache.db"), options(64 << 20)).unwrap();
    cached
        .append(
            "order-1",
            ExpectedVersion::NoStream,
            (0..100)
                .map(|i| NewEvent::new("item_added", payload(i)))
                .collect(),
        )
        .unwrap();
    // The same file through a second handle with the cache off.
    let uncached = Store::open(dir.join("cache.db"), options(0)).unwrap();
    let read = |store: &Store| {
        let events = store
            .read_stream("order-1", 1, Direction::Forwards, PAGE)
            .unwrap();
        assert_eq!(events.len(), 100);
        black_box(events);
    };
    read(&cached);
    let mut group = c.benchmark_group("cache/warm_read_100");
    group.throughput(Throughput::Elements(100));
    group.bench_function("cached", |b| b.iter(|| read(&cached)));
    group.bench_function("uncached", |b| b.iter(|| read(&uncached)));
    group.finish();

    let (rounds, calls) = if smoke() { (1, 10) } else { (15, 2_000) };
    let with = per_call(rounds, calls, || read(&cached));
    let without = per_call(rounds, calls, || read(&uncached));
    let stats = cached.cache_stats();
    println!(
        "SUMMARY warm read of a 100-event stream: cached {:.2} µs, cache off {:.2} µs, ratio {:.1}x (goal >= 10x) [hits {}, misses {}]",
        with * 1e6,
        without * 1e6,
        without / with,
        stats.hits,
        stats.misses
    );
}

fn bench_catch_up(c: &mut Criterion, dir: &Path) {
    let events = if smoke() {
        2_000
    } else {
        env_usize("STRATA_BENCH_EVENTS", 20_000)
    };
    let path = dir.join("catch_up.db");
    {
        let store = Store::open(&path, options(0)).unwrap();
        let started = Instant::now();
        fill(&store, 100, events);
        println!("filled {events} events in {:.1?}", started.elapsed());
    }
    // Cache off: both sides read SQLite, neither fills a cache.
    let store = Store::open(&path, options(0)).unwrap();
    let mut group = c.benchmark_group("catch_up");
    group.throughput(Throughput::Elements(events as u64));
    group.sample_size(10);
    group.bench_function("subscription", |b| {
        b.iter(|| assert_eq!(catch_up_subscription(&store, events), events))
    });
    group.bench_function("read_all", |b| {
        b.iter(|| assert_eq!(catch_up_read_all(&store, events), events))
    });
    group.finish();

    let rounds = if smoke() { 1 } else { 5 };
    let mut subscription = Vec::new();
    let mut read_all = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        catch_up_subscription(&store, events);
        subscription.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        catch_up_read_all(&store, events);
        read_all.push(started.elapsed().as_secs_f64());
    }
    subscription.sort_by(f64::total_cmp);
    read_all.sort_by(f64::total_cmp);
    let (s, r) = (subscription[rounds / 2], read_all[rounds / 2]);
    println!(
        "SUMMARY catch-up over {events} events: subscription {:.3} s ({:.0} events/s), paging read_all {:.3} s ({:.0} events/s), speed ratio {:.2}x (goal >= 0.8x)",
        s,
        events as f64 / s,
        r,
        events as f64 / r,
        r / s
    );
}

/// Appends one event and waits until the subscriber thread has it; returns that latency.
struct LatencyRig {
    store: Store,
    received: mpsc::Receiver<Instant>,
    _subscriber: thread::JoinHandle<()>,
}

impl LatencyRig {
    fn new(dir: &Path) -> Self {
        let store = Store::open(dir.join("latency.db"), options(64 << 20)).unwrap();
        let from = store.last_position().unwrap() + 1;
        let subscription = store
            .subscribe(from, SubscriptionFilter::all())
            .unwrap()
            .with_external_check_interval(None);
        let (sender, received) = mpsc::channel();
        // The blocking iterator: ends when the store is closed.
        let subscriber = thread::spawn(move || {
            for event in subscription {
                event.unwrap();
                if sender.send(Instant::now()).is_err() {
                    return;
                }
            }
        });
        LatencyRig {
            store,
            received,
            _subscriber: subscriber,
        }
    }

    fn once(&self) -> Duration {
        let started = Instant::now();
        self.store
            .append(
                "latency",
                ExpectedVersion::Any,
                vec![NewEvent::new("ping", payload(0))],
            )
            .unwrap();
        let at = self.received.recv_timeout(Duration::from_secs(5)).unwrap();
        at.duration_since(started)
    }
}

fn bench_latency(c: &mut Criterion, dir: &Path) {
    let rig = LatencyRig::new(dir);
    c.bench_function("latency/append_to_subscriber", |b| b.iter(|| rig.once()));
    let samples = if smoke() {
        50
    } else {
        env_usize("STRATA_BENCH_LATENCY_SAMPLES", 2_000)
    };
    let mut latencies: Vec<Duration> = (0..samples).map(|_| rig.once()).collect();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "SUMMARY append-to-subscriber latency (Fast, {samples} samples): p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        pct(0.50),
        pct(0.99),
        latencies[latencies.len() - 1]
    );
    rig.store.close();
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    bench_cache(c, dir.path());
    bench_catch_up(c, dir.path());
    bench_latency(c, dir.path());
}

criterion_group!(cache_and_subscriptions, benches);
criterion_main!(cache_and_subscriptions);
