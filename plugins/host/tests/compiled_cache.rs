//! Compiled components are cached on disk: reopening (a new engine, as after a restart) loads
//! the compiled code from the cache instead of recompiling.

mod common;

use strata::ProjectionError;
use strata_wasm::{
    CacheDir, CacheStats, EngineOptions, PluginEngine, PluginLimits, WasmProjection,
};

use common::wasm;

fn engine_with_cache(dir: &std::path::Path) -> PluginEngine {
    PluginEngine::new(EngineOptions {
        cache: CacheDir::Path(dir.to_path_buf()),
        ..EngineOptions::default()
    })
    .expect("engine")
}

fn files_in(dir: &std::path::Path) -> usize {
    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| {
                        let path = e.path();
                        if path.is_dir() {
                            walk(&path)
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(dir)
}

#[test]
fn reopening_loads_from_the_cache_without_recompiling() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = wasm("event-counter");

    let first = engine_with_cache(dir.path());
    assert!(first
        .cache_dir()
        .unwrap()
        .starts_with(dir.path().canonicalize().unwrap()));
    let loaded = WasmProjection::load(&first, &plugin, PluginLimits::default()).unwrap();
    assert_eq!(
        loaded.load_report().cache_hit,
        Some(false),
        "first load compiles"
    );
    let compile_time = loaded.load_report().compile_time;
    assert!(
        files_in(dir.path()) > 0,
        "the compiled component is on disk"
    );
    drop(loaded);
    drop(first);

    // A new engine, as a new process would have: nothing in memory.
    let second = engine_with_cache(dir.path());
    let reloaded = WasmProjection::load(&second, &plugin, PluginLimits::default()).unwrap();
    assert_eq!(
        reloaded.load_report().cache_hit,
        Some(true),
        "reload hits the cache"
    );
    assert_eq!(reloaded.info().name, "event-counter");
    assert!(
        reloaded.load_report().compile_time < compile_time,
        "loading from cache is faster than compiling: {:?} vs {compile_time:?}",
        reloaded.load_report().compile_time
    );

    assert_eq!(
        second.cache_stats(),
        Some(CacheStats { hits: 1, misses: 0 })
    );

    // Other bytes are another entry (this plugin then fails validation, after compiling).
    let error =
        WasmProjection::load(&second, &wasm("malformed"), PluginLimits::default()).unwrap_err();
    assert!(matches!(error, ProjectionError::Malformed(_)), "{error:?}");
    assert_eq!(
        second.cache_stats(),
        Some(CacheStats { hits: 1, misses: 1 })
    );
}

#[test]
fn without_a_cache_every_load_compiles() {
    let engine = PluginEngine::new(EngineOptions {
        cache: CacheDir::Disabled,
        ..EngineOptions::default()
    })
    .unwrap();
    assert_eq!(engine.cache_dir(), None);
    assert_eq!(engine.cache_stats(), None);
    let loaded =
        WasmProjection::load(&engine, &wasm("event-counter"), PluginLimits::default()).unwrap();
    assert_eq!(loaded.load_report().cache_hit, None);
}
