//! The process-wide wasmtime engine: compiler configuration, on-disk cache, epoch ticker.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wasmtime::{Cache, CacheConfig, Config, Engine};

/// Where compiled components are cached on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CacheDir {
    /// No on-disk cache: every load compiles.
    Disabled,
    /// wasmtime's default cache directory (under the user's cache dir, such as
    /// `~/.cache/wasmtime`).
    #[default]
    SystemDefault,
    /// This directory (created if missing; made absolute against the current directory).
    Path(PathBuf),
}

/// How a [`PluginEngine`] is set up.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Where compiled components are cached. Entries are keyed by wasmtime on a hash of the
    /// component's bytes, the compiler settings and the wasmtime version, so a stale entry is
    /// never used.
    pub cache: CacheDir,
    /// How often the background ticker advances the engine's epoch: the granularity of every
    /// call's time budget. Default 10 ms.
    pub epoch_tick: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            cache: CacheDir::SystemDefault,
            epoch_tick: Duration::from_millis(10),
        }
    }
}

/// Why a [`PluginEngine`] could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The compilation cache could not be set up (directory not creatable, ...).
    #[error("could not set up the compiled-component cache in {dir}: {message}")]
    Cache {
        /// The directory asked for (`<default>` for the system default).
        dir: String,
        /// wasmtime's message.
        message: String,
    },
    /// wasmtime rejected the configuration.
    #[error("could not create the wasmtime engine: {0}")]
    Config(String),
    /// The epoch ticker thread could not be started.
    #[error("could not start the epoch ticker thread: {0}")]
    Ticker(String),
}

/// Counters of the on-disk cache of compiled components.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheStats {
    /// Loads served from the cache.
    pub hits: usize,
    /// Loads that compiled and stored the result.
    pub misses: usize,
}

/// A compiled-component load, as seen by the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadReport {
    /// `Some(true)` when the compiled code came from the on-disk cache, `Some(false)` when it
    /// was compiled (and then stored in the cache), `None` when the cache is disabled.
    pub cache_hit: Option<bool>,
    /// Time spent compiling or loading from cache.
    pub compile_time: Duration,
}

/// The wasmtime engine shared by every plugin of a process. Cheap to clone.
///
/// Owns a background thread that advances the epoch every [`EngineOptions::epoch_tick`]; it
/// stops when the last clone is dropped.
#[derive(Clone)]
pub struct PluginEngine {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    cache: Option<Cache>,
    epoch_tick: Duration,
    /// Serializes compilations so that cache hit/miss counters can be attributed to one load.
    compile_lock: Mutex<()>,
    ticker: Option<thread::JoinHandle<()>>,
    stop: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let (flag, cvar) = &*self.stop;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cvar.notify_all();
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine")
            .field("cache_dir", &self.cache_dir())
            .field("epoch_tick", &self.inner.epoch_tick)
            .finish_non_exhaustive()
    }
}

impl PluginEngine {
    /// Creates an engine. Prefer one per process ([`PluginEngine::shared`]): every engine runs
    /// its own ticker thread.
    pub fn new(options: EngineOptions) -> Result<PluginEngine, EngineError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let cache = match &options.cache {
            CacheDir::Disabled => None,
            CacheDir::SystemDefault => Some(make_cache(None)?),
            CacheDir::Path(dir) => Some(make_cache(Some(dir))?),
        };
        config.cache(cache.clone());
        let engine = Engine::new(&config).map_err(|e| EngineError::Config(format!("{e:#}")))?;

        let epoch_tick = options.epoch_tick.max(Duration::from_millis(1));
        let stop = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let ticker = {
            let weak = engine.weak();
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("strata-wasm-epoch".into())
                .spawn(move || tick(weak, epoch_tick, stop))
                .map_err(|e| EngineError::Ticker(e.to_string()))?
        };
        Ok(PluginEngine {
            inner: Arc::new(Inner {
                engine,
                cache,
                epoch_tick,
                compile_lock: Mutex::new(()),
                ticker: Some(ticker),
                stop,
            }),
        })
    }

    /// The process-wide engine with default options (cache in wasmtime's default directory).
    /// Created on first use.
    pub fn shared() -> Result<PluginEngine, EngineError> {
        static SHARED: OnceLock<PluginEngine> = OnceLock::new();
        if let Some(engine) = SHARED.get() {
            return Ok(engine.clone());
        }
        let engine = PluginEngine::new(EngineOptions::default())?;
        Ok(SHARED.get_or_init(|| engine).clone())
    }

    /// The cache directory in use, if the cache is enabled.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.inner.cache.as_ref().map(|c| c.directory().as_path())
    }

    /// Cache hits and misses (compilations stored) since this engine was created, or `None`
    /// when the cache is disabled. For metrics.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.inner.cache.as_ref().map(|cache| CacheStats {
            hits: cache.cache_hits(),
            misses: cache.cache_misses(),
        })
    }

    /// The epoch tick: granularity of time budgets.
    pub fn epoch_tick(&self) -> Duration {
        self.inner.epoch_tick
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Number of epoch ticks that cover `budget`, plus one so a call never gets less than its
    /// budget.
    pub(crate) fn ticks_for(&self, budget: Duration) -> u64 {
        let tick = self.inner.epoch_tick.as_nanos().max(1);
        let ticks = budget.as_nanos().div_ceil(tick);
        u64::try_from(ticks)
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// Compiles (or loads from cache) a component.
    pub(crate) fn compile(
        &self,
        wasm: &[u8],
    ) -> Result<(wasmtime::component::Component, LoadReport), wasmtime::Error> {
        let _guard = self.inner.compile_lock.lock();
        let before = self.inner.cache.as_ref().map(|c| c.cache_hits());
        let started = Instant::now();
        let component = wasmtime::component::Component::new(&self.inner.engine, wasm)?;
        let compile_time = started.elapsed();
        let cache_hit = match (&self.inner.cache, before) {
            (Some(cache), Some(before)) => Some(cache.cache_hits() > before),
            _ => None,
        };
        Ok((
            component,
            LoadReport {
                cache_hit,
                compile_time,
            },
        ))
    }
}

fn make_cache(dir: Option<&PathBuf>) -> Result<Cache, EngineError> {
    let shown = dir
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| "<default>".to_string());
    let mut config = CacheConfig::new();
    if let Some(dir) = dir {
        let absolute = std::path::absolute(dir).map_err(|e| EngineError::Cache {
            dir: shown.clone(),
            message: e.to_string(),
        })?;
        config.with_directory(absolute);
    }
    Cache::new(config).map_err(|e| EngineError::Cache {
        dir: shown,
        message: format!("{e:#}"),
    })
}

fn tick(
    engine: wasmtime::EngineWeak,
    every: Duration,
    stop: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
) {
    let (flag, cvar) = &*stop;
    let mut stopped = flag.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let (guard, _) = cvar
            .wait_timeout(stopped, every)
            .unwrap_or_else(|e| e.into_inner());
        stopped = guard;
        if *stopped {
            return;
        }
        match engine.upgrade() {
            Some(engine) => engine.increment_epoch(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_round_up_to_whole_ticks_plus_one() {
        let engine = PluginEngine::new(EngineOptions {
            cache: CacheDir::Disabled,
            epoch_tick: Duration::from_millis(10),
        })
        .unwrap();
        assert_eq!(engine.ticks_for(Duration::from_millis(100)), 11);
        assert_eq!(engine.ticks_for(Duration::from_millis(101)), 12);
        assert_eq!(engine.ticks_for(Duration::ZERO), 1);
        assert_eq!(engine.epoch_tick(), Duration::from_millis(10));
    }

    #[test]
    fn the_ticker_does_not_keep_the_engine_alive() {
        let engine = PluginEngine::new(EngineOptions {
            cache: CacheDir::Disabled,
            epoch_tick: Duration::from_millis(1),
        })
        .unwrap();
        let weak = engine.engine().weak();
        let clone = engine.clone();
        drop(engine);
        assert!(weak.upgrade().is_some(), "a clone keeps the engine alive");
        drop(clone);
        assert!(
            weak.upgrade().is_none(),
            "the ticker does not keep the engine alive"
        );
    }

    #[test]
    fn the_cache_dir_is_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let engine = PluginEngine::new(EngineOptions {
            cache: CacheDir::Path(dir.path().join("cache")),
            ..EngineOptions::default()
        })
        .unwrap();
        assert!(engine.cache_dir().unwrap().is_absolute());
        assert!(engine.cache_dir().unwrap().ends_with("cache"));
    }
}
