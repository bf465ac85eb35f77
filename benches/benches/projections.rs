//! Projection throughput and plugin load time.
//!
//! - `projection_throughput`: the WASM example plugins (`event-counter`, `user-stats`) against
//!   native Rust projections with the same logic (`strata_testkit::reference`), each folding the
//!   whole log from position 0 through the `ProjectionRunner` on the same prepared store
//!   (`STRATA_BENCH_EVENTS` events of the users-and-orders workload, default 1,000,000; 20,000
//!   in `--test` smoke runs). Each iteration resets the projection (untimed) and times a full
//!   catch-up. Throughput is in log events per second. Goal: WASM >= 0.5x native.
//! - `plugin_load`: loading `user-stats` cold (compiling; cache disabled) against warm (the
//!   compiled component from wasmtime's on-disk cache).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strata::{
    Durability, Options, Projection, ProjectionPhase, ProjectionRunner, RunnerOptions, Store,
};
use strata_benches::{env_usize, is_smoke_run};
use strata_testkit::examples;
use strata_testkit::reference::{NativeEventCounter, NativeUserStats};
use strata_testkit::workload::{Workload, WorkloadConfig};
use strata_wasm::{CacheDir, EngineOptions, PluginEngine, PluginLimits, WasmProjection};

fn prepared_store(dir: &std::path::Path, events: u64) -> Store {
    let store = Store::open(
        dir.join("projections.strata"),
        Options {
            durability: Durability::Fast,
            ..Options::default()
        },
    )
    .expect("store");
    let started = Instant::now();
    let mut workload = Workload::new(WorkloadConfig {
        seed: 42,
        events,
        ..WorkloadConfig::default()
    });
    while let Some(batch) = workload.next_batch(1_000) {
        store.append_multi(batch).expect("append");
    }
    eprintln!(
        "projections bench: {events} workload events appended in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    store
}

fn engine(cache: CacheDir) -> PluginEngine {
    PluginEngine::new(EngineOptions {
        cache,
        ..EngineOptions::default()
    })
    .expect("engine")
}

fn projection_throughput(c: &mut Criterion) {
    let default_events = if is_smoke_run() { 20_000 } else { 1_000_000 };
    let events = env_usize("STRATA_BENCH_EVENTS", default_events) as u64;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = prepared_store(dir.path(), events);
    let runner = ProjectionRunner::new(&store, RunnerOptions::default()).expect("runner");
    let engine = engine(CacheDir::Path(dir.path().join("wasmtime-cache")));
    let load = |name: &str| -> Box<dyn Projection> {
        let wasm = examples::build_and_read(name).expect("example plugins");
        Box::new(WasmProjection::load(&engine, &wasm, PluginLimits::default()).expect("load"))
    };
    let cases: Vec<(&str, &str, Box<dyn Projection>)> = vec![
        ("wasm_event_counter", "event-counter", load("event-counter")),
        (
            "native_event_counter",
            "native-event-counter",
            Box::new(NativeEventCounter),
        ),
        ("wasm_user_stats", "user-stats", load("user-stats")),
        (
            "native_user_stats",
            "native-user-stats",
            Box::new(NativeUserStats),
        ),
    ];

    let mut group = c.benchmark_group("projection_throughput");
    group.throughput(Throughput::Elements(events));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(if is_smoke_run() { 1 } else { 20 }));
    for (function, name, projection) in cases {
        runner.register(projection).expect("register");
        let mut rates = Vec::new();
        group.bench_function(function, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    runner.reset(name).expect("reset");
                    let started = Instant::now();
                    let status = runner.catch_up(name).expect("catch up");
                    let elapsed = started.elapsed();
                    assert_eq!(status.phase, ProjectionPhase::Live, "{status:?}");
                    assert_eq!(status.checkpoint, events, "{status:?}");
                    rates.push(events as f64 / elapsed.as_secs_f64());
                    total += elapsed;
                }
                total
            })
        });
        rates.sort_by(f64::total_cmp);
        if let Some(median) = rates.get(rates.len() / 2) {
            eprintln!("projections bench: {function}: median {median:.0} events/s");
        }
    }
    group.finish();
}

fn plugin_load(c: &mut Criterion) {
    let wasm = examples::build_and_read("user-stats").expect("example plugins");
    let dir = tempfile::tempdir().expect("tempdir");
    let cold = engine(CacheDir::Disabled);
    let warm = engine(CacheDir::Path(dir.path().join("wasmtime-cache")));
    // Fill the cache once.
    let first = WasmProjection::load(&warm, &wasm, PluginLimits::default()).expect("load");
    assert_eq!(first.load_report().cache_hit, Some(false));

    let mut group = c.benchmark_group("plugin_load");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.bench_function("cold", |b| {
        b.iter(|| {
            let loaded = WasmProjection::load(&cold, &wasm, PluginLimits::default()).expect("load");
            assert_eq!(loaded.load_report().cache_hit, None);
            loaded
        })
    });
    group.bench_function("warm", |b| {
        b.iter(|| {
            let loaded = WasmProjection::load(&warm, &wasm, PluginLimits::default()).expect("load");
            assert_eq!(loaded.load_report().cache_hit, Some(true));
            loaded
        })
    });
    group.finish();
}

criterion_group!(benches, projection_throughput, plugin_load);
criterion_main!(benches);
