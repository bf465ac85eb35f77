//! Helpers shared by the integration tests: an engine, the example plugins, events, and
//! applying batches through `MemoryState` the way the runner does.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use serde::Serialize;
use strata::{
    Bytes, Event, MemoryState, Projection, ProjectionError, ProjectionState, StateLimits, Uuid,
};
use strata_wasm::{examples, CacheDir, EngineOptions, PluginEngine, PluginLimits, WasmProjection};

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
