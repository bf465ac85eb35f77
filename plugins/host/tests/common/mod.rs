//! Helpers shared by the integration tests: an engine, the example plugins, events, and
//! applying batches through `MemoryState` the way the runner does.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use serde::Serialize;
use strata::{
    Bytes, Event, MemoryState, Projection, ProjectionError, ProjectionState, StateLimits, Uuid,
};
use strata_testkit::examples;
use strata_wasm::{CacheDir, EngineOptions, PluginEngine, PluginLimits, WasmProjection};

/// One engine for the whole test binary, caching compiled components next to the examples.
pub fn engine() -> PluginEngine {
    static ENGINE: OnceLock<PluginEngine> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            PluginEngine::new(EngineOptions {
                cache: CacheDir::Path(examples::target_dir().join("wasmtime-cache")),
                ..EngineOptions::default()
            })
            .expect("engine")
        })
        .clone()
}

/// The bytes of an example plugin, built on first use.
pub fn wasm(name: &str) -> Vec<u8> {
    examples::build_and_read(name).unwrap_or_else(|e| panic!("{e}"))
}

pub fn load(name: &str, limits: PluginLimits) -> WasmProjection {
    WasmProjection::load(&engine(), &wasm(name), limits)
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// A log of events with positions, stream versions and ids filled in.
#[derive(Default)]
pub struct Log {
    pub events: Vec<Event>,
    versions: std::collections::HashMap<String, u64>,
}

impl Log {
    pub fn push<T: Serialize>(
        &mut self,
        stream: &str,
        event_type: &str,
        data: &T,
        recorded_at: i64,
    ) -> &Event {
        let version = self.versions.entry(stream.to_string()).or_insert(0);
        *version += 1;
        let position = self.events.len() as u64 + 1;
        self.events.push(Event {
            position,
            stream_id: Arc::from(stream),
            version: *version,
            event_type: Arc::from(event_type),
            event_id: Uuid::from_u64_pair(position, 0xfeed),
            recorded_at,
            data: Bytes::from(rmp_serde::to_vec_named(data).expect("encode")),
            metadata: Bytes::new(),
            tags: Default::default(),
        });
        self.events.last().expect("pushed")
    }

    pub fn raw(&mut self, event_type: &str) -> &Event {
        self.push("raw-1", event_type, &(), 0)
    }
}

/// Applies one batch as the runner does: writes are committed only if the call succeeds.
pub fn apply(
    projection: &mut WasmProjection,
    committed: &Arc<MemoryState>,
    events: &[Event],
) -> Result<(), ProjectionError> {
    let mut state = ProjectionState::for_batch(committed.clone(), StateLimits::default());
    projection.apply(events, &mut state)?;
    committed.commit(state.take_writes());
    Ok(())
}

/// Applies `events` in batches of `batch` events.
pub fn apply_in_batches(
    projection: &mut WasmProjection,
    committed: &Arc<MemoryState>,
    events: &[Event],
    batch: usize,
) {
    for chunk in events.chunks(batch) {
        apply(projection, committed, chunk).expect("apply");
    }
}

/// Runs a query against committed state.
pub fn query(
    projection: &mut WasmProjection,
    committed: &Arc<MemoryState>,
    request: &[u8],
) -> Result<Vec<u8>, ProjectionError> {
    let mut state = ProjectionState::for_query(committed.clone(), StateLimits::default());
    projection.query(request, &mut state)
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("encode")
}

/// Committed state that takes `delay` for every read: a store on a slow disk, to show that the
/// time a host function spends counts against the plugin's budget.
pub struct SlowState {
    pub inner: MemoryState,
    pub delay: std::time::Duration,
}

impl strata::CommittedState for SlowState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, strata::StateError> {
        std::thread::sleep(self.delay);
        self.inner.get(key)
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, strata::StateError> {
        std::thread::sleep(self.delay);
        self.inner.scan_prefix(prefix, after, limit)
    }
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
pub fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Bytes of plugin output that reached `tracing` (target `strata_wasm::plugin`), counted by a
/// subscriber installed for the current thread.
#[derive(Clone, Default)]
pub struct PluginOutputCounter {
    pub bytes: Arc<std::sync::atomic::AtomicUsize>,
    pub records: Arc<std::sync::atomic::AtomicUsize>,
}

impl PluginOutputCounter {
    /// Runs `f` with this counter as the thread's subscriber.
    pub fn count<R>(&self, f: impl FnOnce() -> R) -> R {
        tracing::subscriber::with_default(self.clone(), f)
    }
}

struct MessageLen(usize);

impl tracing::field::Visit for MessageLen {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 += format!("{value:?}").len();
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0 += value.len();
        }
    }
}

impl tracing::Subscriber for PluginOutputCounter {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target() == "strata_wasm::plugin"
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut len = MessageLen(0);
        event.record(&mut len);
        self.bytes
            .fetch_add(len.0, std::sync::atomic::Ordering::Relaxed);
        self.records
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}
