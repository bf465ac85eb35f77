//! [`WasmProjection`]: a WebAssembly component behind the [`strata::Projection`] trait.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use strata::{Event, Projection, ProjectionError, ProjectionInfo, ProjectionState, StateError};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::strata::projection::{log, state, types};
use crate::bindings::{Projection as Bindings, ProjectionPre};
use crate::engine::{LoadReport, PluginEngine};
use crate::output::{Kind, PluginOutput};

/// Longest log message a plugin may write; longer ones are cut.
const MAX_LOG_MESSAGE: usize = 8192;

/// Per-plugin limits. Each call runs under a time budget; each instance under a memory limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PluginLimits {
    /// Time budget of one `apply` call (one batch). Default 5 s.
    pub apply_budget: Duration,
    /// Time budget of one `query` call. Default 1 s.
    pub query_budget: Duration,
    /// Time budget of `describe` (and of instantiation) at load. Default 1 s.
    pub describe_budget: Duration,
    /// Largest linear memory one instance may grow to, in bytes. Default 64 MiB. A batch's
    /// events are copied into this memory, so it also bounds the batch size.
    pub max_memory_bytes: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            apply_budget: Duration::from_secs(5),
            query_budget: Duration::from_secs(1),
            describe_budget: Duration::from_secs(1),
            max_memory_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A projection implemented by a WebAssembly component of the `strata:projection/projection`
/// world (`wit/strata.wit`).
///
/// - [`WasmProjection::load`] compiles the component (or loads it from the engine's on-disk
///   cache), links it against the host's `state` and `log` imports and an empty WASI context,
///   instantiates it, calls `describe` and validates the answer.
/// - Each call gets a fresh epoch deadline ([`PluginLimits`]); the instance is kept between
///   calls, but after a trap, a timeout or a memory fault it is discarded and the next call
///   starts a fresh instance. Plugins must therefore keep everything they need in the state.
/// - Errors map onto [`ProjectionError`]:
///   - `Failed`: the plugin returned `err(message)` from `apply` or `query`;
///   - `Trap`: the plugin trapped (including a Rust panic, whose message is quoted from the
///     plugin's stderr when available);
///   - `Timeout`: the call ran past its budget;
///   - `MemoryLimit`: the plugin tried to grow its memory past
///     [`PluginLimits::max_memory_bytes`];
///   - `State`: a state import failed (a key or value over its limit, a write during a query,
///     ...): the whole call fails even if the plugin swallowed the error, so no write is lost
///     silently;
///   - `Malformed`: `describe` returned an invalid name or event type;
///   - `Load`: the bytes are not a valid component of this world, or instantiation failed.
///
/// # Sandbox
///
/// The WASI context is empty: no preopened directories (so no file can be opened), no
/// environment variables, no arguments, no network (TCP, UDP and name lookup disabled),
/// stdin empty. Clocks and random numbers are WASI's defaults (plugins must not use them if
/// they want deterministic rebuilds; use the event's `recorded-at`). A plugin's stdout and
/// stderr are forwarded line by line to `tracing` (target `strata_wasm::plugin`, stdout at
/// INFO, stderr at WARN), and the end of stderr is quoted in trap messages.
pub struct WasmProjection {
    engine: PluginEngine,
    pre: ProjectionPre<HostData>,
    live: Option<Live>,
    limits: PluginLimits,
    info: ProjectionInfo,
    name: Arc<OnceLock<String>>,
    report: LoadReport,
}

impl std::fmt::Debug for WasmProjection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmProjection")
            .field("info", &self.info)
            .field("limits", &self.limits)
            .field("report", &self.report)
            .field("instantiated", &self.live.is_some())
            .finish_non_exhaustive()
    }
}

/// A running instance and its store.
struct Live {
    store: Store<HostData>,
    bindings: Bindings,
    stderr: PluginOutput,
}

/// What a store carries: the state of the current call, WASI, the memory limiter.
struct HostData {
    state: ProjectionState,
    /// The first state error of the current call.
    state_error: Option<StateError>,
    limiter: MemoryLimiter,
    wasi: WasiCtx,
    table: ResourceTable,
    name: Arc<OnceLock<String>>,
}

/// [`StoreLimits`] that also remembers whether it refused to grow a memory, so that the
/// resulting trap can be reported as `MemoryLimit`.
struct MemoryLimiter {
    inner: StoreLimits,
    limit: usize,
    refused: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.refused = true;
        }
        let allowed = self.inner.memory_growing(current, desired, maximum);
        if !matches!(allowed, Ok(true)) {
            self.refused = true;
        }
        allowed
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

impl WasiView for HostData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl HostData {
    fn record<T>(&mut self, result: Result<T, StateError>) -> Result<T, String> {
        result.map_err(|error| {
            let message = error.to_string();
            self.state_error.get_or_insert(error);
            message
        })
    }
}

impl state::Host for HostData {
    fn get(&mut self, key: Vec<u8>) -> Result<Option<Vec<u8>>, String> {
        let result = self.state.get(&key);
        self.record(result)
    }

    fn get_many(&mut self, keys: Vec<Vec<u8>>) -> Result<Vec<Option<Vec<u8>>>, String> {
        let result = self.state.get_many(&keys);
        self.record(result)
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), String> {
        let result = self.state.put(&key, &value);
        self.record(result)
    }

    fn delete(&mut self, key: Vec<u8>) -> Result<(), String> {
        let result = self.state.delete(&key);
        self.record(result)
    }

    fn scan_prefix(
        &mut self,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: u32,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, String> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let result = self.state.scan_prefix(&prefix, after.as_deref(), limit);
        self.record(result)
    }
}

impl log::Host for HostData {
    fn log(&mut self, level: log::Level, message: String) {
        let mut message = message;
        if message.len() > MAX_LOG_MESSAGE {
            let mut cut = MAX_LOG_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("...");
        }
        let plugin = self.name.get().map(String::as_str).unwrap_or("<loading>");
        match level {
            log::Level::Trace => {
                tracing::trace!(target: "strata_wasm::plugin", plugin, "{message}")
            }
            log::Level::Debug => {
                tracing::debug!(target: "strata_wasm::plugin", plugin, "{message}")
            }
            log::Level::Info => tracing::info!(target: "strata_wasm::plugin", plugin, "{message}"),
            log::Level::Warn => tracing::warn!(target: "strata_wasm::plugin", plugin, "{message}"),
            log::Level::Error => {
                tracing::error!(target: "strata_wasm::plugin", plugin, "{message}")
            }
        }
    }
}

impl types::Host for HostData {}

impl WasmProjection {
    /// Compiles (or loads from the engine's cache) `wasm`, a component of the
    /// `strata:projection/projection` world, instantiates it and validates its `describe`.
    ///
    /// Fails with `Load` when the bytes are not such a component, `Malformed` when `describe`
    /// is invalid, and `Trap`/`Timeout`/`MemoryLimit` when instantiation or `describe` faults.
    pub fn load(
        engine: &PluginEngine,
        wasm: &[u8],
        limits: PluginLimits,
    ) -> Result<WasmProjection, ProjectionError> {
        let (component, report) = engine
            .compile(wasm)
            .map_err(|e| ProjectionError::Load(format!("compiling the component: {e:#}")))?;
        let mut linker: Linker<HostData> = Linker::new(engine.engine());
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| ProjectionError::Load(format!("linking WASI: {e:#}")))?;
        Bindings::add_to_linker::<HostData, HasSelf<HostData>>(&mut linker, |data| data)
            .map_err(|e| ProjectionError::Load(format!("linking the host imports: {e:#}")))?;
        let instance_pre = linker.instantiate_pre(&component).map_err(|e| {
            ProjectionError::Load(format!(
                "the component does not fit the strata:projection world: {e:#}"
            ))
        })?;
        let pre = ProjectionPre::new(instance_pre).map_err(|e| {
            ProjectionError::Load(format!(
                "the component does not export the strata:projection world: {e:#}"
            ))
        })?;

        let mut projection = WasmProjection {
            engine: engine.clone(),
            pre,
            live: None,
            limits,
            info: ProjectionInfo {
                name: String::new(),
                version: 0,
                event_types: Vec::new(),
            },
            name: Arc::new(OnceLock::new()),
            report,
        };
        let mut scratch = ProjectionState::default();
        let budget = limits.describe_budget;
        let info = projection.call(&mut scratch, budget, |store, bindings| {
            bindings.call_describe(store)
        })?;
        let info = validate_info(info)?;
        let _ = projection.name.set(info.name.clone());
        projection.info = info;
        Ok(projection)
    }

    /// Whether the compiled code came from the on-disk cache, and how long loading it took.
    pub fn load_report(&self) -> LoadReport {
        self.report
    }

    /// The validated description read at load time.
    pub fn info(&self) -> &ProjectionInfo {
        &self.info
    }

    /// The limits in force.
    pub fn limits(&self) -> PluginLimits {
        self.limits
    }

    /// Whether an instance is currently alive (false after a fault, until the next call).
    pub fn is_instantiated(&self) -> bool {
        self.live.is_some()
    }

    fn instantiate(&mut self) -> Result<Live, ProjectionError> {
        let stdout = PluginOutput::new(Kind::Stdout, Arc::clone(&self.name));
        let stderr = PluginOutput::new(Kind::Stderr, Arc::clone(&self.name));
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout)
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let limiter = MemoryLimiter {
            inner: StoreLimitsBuilder::new()
                .memory_size(self.limits.max_memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            limit: self.limits.max_memory_bytes,
            refused: false,
        };
        let data = HostData {
            state: ProjectionState::default(),
            state_error: None,
            limiter,
            wasi,
            table: ResourceTable::new(),
            name: Arc::clone(&self.name),
        };
        let mut store = Store::new(self.engine.engine(), data);
        store.limiter(|data| &mut data.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.engine.ticks_for(self.limits.describe_budget));
        match self.pre.instantiate(&mut store) {
            Ok(bindings) => Ok(Live {
                store,
                bindings,
                stderr,
            }),
            Err(error) => Err(classify(
                error,
                &store,
                &stderr,
                self.limits.describe_budget,
                self.limits.max_memory_bytes,
                Phase::Instantiate,
            )),
        }
    }

    /// Runs `f` on a live instance (starting one if needed) with `state` moved into the store
    /// and a deadline of `budget`; moves `state` back whatever happens, and discards the
    /// instance after a fault.
    fn call<R>(
        &mut self,
        state: &mut ProjectionState,
        budget: Duration,
        f: impl FnOnce(&mut Store<HostData>, &Bindings) -> wasmtime::Result<R>,
    ) -> Result<R, ProjectionError> {
        let mut live = match self.live.take() {
            Some(live) => live,
            None => self.instantiate()?,
        };
        {
            let data = live.store.data_mut();
            data.state = std::mem::take(state);
            data.state_error = None;
            data.limiter.refused = false;
        }
        live.stderr.clear_tail();
        live.store.set_epoch_deadline(self.engine.ticks_for(budget));
        let result = f(&mut live.store, &live.bindings);
        let data = live.store.data_mut();
        *state = std::mem::take(&mut data.state);
        let state_error = data.state_error.take();
        match result {
            Ok(value) => {
                self.live = Some(live);
                match state_error {
                    Some(error) => Err(ProjectionError::State(error)),
                    None => Ok(value),
                }
            }
            Err(error) => {
                // The store may be poisoned (a trap leaves the instance unusable): drop it and
                // start afresh on the next call.
                Err(classify(
                    error,
                    &live.store,
                    &live.stderr,
                    budget,
                    self.limits.max_memory_bytes,
                    Phase::Call,
                ))
            }
        }
    }
}

/// What the host was doing when wasmtime failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Instantiate,
    Call,
}

/// Maps a wasmtime error from a call into the projection error that names its cause.
fn classify(
    error: wasmtime::Error,
    store: &Store<HostData>,
    stderr: &PluginOutput,
    budget: Duration,
    memory_limit: usize,
    phase: Phase,
) -> ProjectionError {
    if store.data().limiter.refused {
        return ProjectionError::MemoryLimit {
            limit_bytes: memory_limit as u64,
        };
    }
    let trap = error.downcast_ref::<Trap>().copied();
    if trap == Some(Trap::Interrupt) {
        return ProjectionError::Timeout {
            budget_ms: u64::try_from(budget.as_millis()).unwrap_or(u64::MAX),
        };
    }
    let doing = match phase {
        Phase::Instantiate => "instantiating the component",
        Phase::Call => "running the plugin",
    };
    let mut message = match trap {
        Some(trap) => format!("{doing}: {trap}"),
        None => format!("{doing}: {error:#}"),
    };
    let tail = stderr.take_tail();
    if !tail.is_empty() {
        message.push_str("; plugin stderr: ");
        message.push_str(&tail);
    }
    match (trap, phase) {
        // A failure to instantiate that is not a trap (a missing import, ...) is a load error.
        (None, Phase::Instantiate) => ProjectionError::Load(message),
        _ => ProjectionError::Trap(message),
    }
}

fn validate_info(info: types::Info) -> Result<ProjectionInfo, ProjectionError> {
    let name_ok = (1..=64).contains(&info.name.len())
        && info
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !name_ok {
        return Err(ProjectionError::Malformed(format!(
            "describe() returned the name {:?}; a name must be 1..=64 bytes of [a-z0-9_-]",
            truncate(&info.name, 80)
        )));
    }
    for event_type in &info.event_types {
        if !(1..=255).contains(&event_type.len()) {
            return Err(ProjectionError::Malformed(format!(
                "describe() of {} returned an event type of {} bytes ({:?}); event types must be 1..=255 bytes",
                info.name,
                event_type.len(),
                truncate(event_type, 80)
            )));
        }
    }
    Ok(ProjectionInfo {
        name: info.name,
        version: info.version,
        event_types: info.event_types,
    })
}

fn truncate(s: &str, max: usize) -> &str {
    let mut cut = s.len().min(max);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

fn to_wit(event: &Event) -> types::Event {
    types::Event {
        position: event.position,
        stream_id: event.stream_id.to_string(),
        version: event.version,
        event_type: event.event_type.to_string(),
        event_id: event.event_id.as_u64_pair(),
        recorded_at: event.recorded_at,
        data: event.data.to_vec(),
        metadata: event.metadata.to_vec(),
    }
}

impl Projection for WasmProjection {
    /// The description read and validated at load time (`describe` must be a pure function,
    /// so it is not called again).
    fn describe(&mut self) -> Result<ProjectionInfo, ProjectionError> {
        Ok(self.info.clone())
    }

    /// Passes the whole batch to the plugin's `apply` in one call, under
    /// [`PluginLimits::apply_budget`].
    fn apply(
        &mut self,
        events: &[Event],
        state: &mut ProjectionState,
    ) -> Result<(), ProjectionError> {
        let events: Vec<types::Event> = events.iter().map(to_wit).collect();
        let budget = self.limits.apply_budget;
        self.call(state, budget, |store, bindings| {
            bindings.call_apply(store, &events)
        })?
        .map_err(ProjectionError::Failed)
    }

    /// Calls the plugin's `query` under [`PluginLimits::query_budget`].
    fn query(
        &mut self,
        request: &[u8],
        state: &mut ProjectionState,
    ) -> Result<Vec<u8>, ProjectionError> {
        let budget = self.limits.query_budget;
        self.call(state, budget, |store, bindings| {
            bindings.call_query(store, request)
        })?
        .map_err(ProjectionError::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, event_types: &[&str]) -> types::Info {
        types::Info {
            name: name.to_string(),
            version: 3,
            event_types: event_types.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn valid_descriptions_pass_through() {
        let name = "a".repeat(64);
        let got = validate_info(info(&name, &["order_created", &"x".repeat(255)])).unwrap();
        assert_eq!(got.name, name);
        assert_eq!(got.version, 3);
        assert_eq!(got.event_types.len(), 2);
        assert!(validate_info(info("user-stats_2", &[])).is_ok());
    }

    #[test]
    fn invalid_names_are_malformed() {
        for name in [
            "",
            "UserStats",
            "user stats",
            "user.stats",
            "üser",
            &"a".repeat(65),
        ] {
            assert!(
                matches!(
                    validate_info(info(name, &[])),
                    Err(ProjectionError::Malformed(_))
                ),
                "{name:?} accepted"
            );
        }
    }

    #[test]
    fn invalid_event_types_are_malformed() {
        for event_type in [String::new(), "x".repeat(256)] {
            let error = validate_info(info("ok", &[&event_type])).unwrap_err();
            assert!(matches!(error, ProjectionError::Malformed(_)), "{error:?}");
        }
    }

    #[test]
    fn events_cross_with_their_uuid_in_big_endian_halves() {
        let event = Event {
            position: 7,
            stream_id: Arc::from("order-1"),
            version: 2,
            event_type: Arc::from("order_created"),
            event_id: "01234567-89ab-cdef-fedc-ba9876543210".parse().unwrap(),
            recorded_at: -5,
            data: strata::Bytes::from_static(b"d"),
            metadata: strata::Bytes::from_static(b"m"),
        };
        let wit = to_wit(&event);
        assert_eq!(wit.event_id, (0x0123456789abcdef, 0xfedcba9876543210));
        assert_eq!((wit.position, wit.version, wit.recorded_at), (7, 2, -5));
        assert_eq!(wit.stream_id, "order-1");
        assert_eq!(wit.event_type, "order_created");
        assert_eq!(
            (wit.data.as_slice(), wit.metadata.as_slice()),
            (&b"d"[..], &b"m"[..])
        );
    }
}
