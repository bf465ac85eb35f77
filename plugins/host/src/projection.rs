//! [`WasmProjection`]: a WebAssembly component behind the [`strata::Projection`] trait.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use strata::{Event, Projection, ProjectionError, ProjectionInfo, ProjectionState, StateError};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::current::strata::projection::{log, state, types};
use crate::bindings::v0_1::strata::projection as v0_1;
use crate::bindings::{self, Contract, ContractPre};
use crate::engine::{LoadReport, PluginEngine};
use crate::output::{warn_dropped, Kind, OutputBudget, PluginOutput};
use crate::sandbox::{self, CallBudget, SandboxData, SeededRandom, Stream, VirtualTime};

/// A key and its value, as `scan-prefix` answers them.
type StateEntry = (Vec<u8>, Vec<u8>);

/// Longest log message a plugin may write; longer ones are cut.
const MAX_LOG_MESSAGE: usize = 8192;
/// Longest error message of a plugin that is kept (it ends up in the projection's fault).
const MAX_ERROR_MESSAGE: usize = 4096;

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
    /// Most bytes the host builds for one `get-many` (values) or `scan-prefix` (keys and
    /// values) answer. Checked while the answer is built: past it the import returns an error
    /// to the plugin. Default 16 MiB.
    pub max_host_result_bytes: usize,
    /// Largest `query` answer, in bytes; a longer one fails the query as malformed before
    /// anything converts it. Default 4 MiB.
    pub max_query_response_bytes: usize,
    /// Most bytes of output (stdout, stderr and the `log` import together) forwarded to the
    /// host's log per call; the rest is dropped with one warning. Default 64 KiB.
    pub max_output_bytes_per_call: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            apply_budget: Duration::from_secs(5),
            query_budget: Duration::from_secs(1),
            describe_budget: Duration::from_secs(1),
            max_memory_bytes: 64 * 1024 * 1024,
            max_host_result_bytes: 16 * 1024 * 1024,
            max_query_response_bytes: 4 * 1024 * 1024,
            max_output_bytes_per_call: 64 * 1024,
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
/// stdin empty. A plugin's stdout and stderr are forwarded line by line to `tracing` (target
/// `strata_wasm::plugin`, stdout at INFO, stderr at WARN), capped per call
/// ([`PluginLimits::max_output_bytes_per_call`]), and the end of stderr is quoted in trap
/// messages.
///
/// Guests are deterministic: the WASI clocks read a virtual time that starts at the unix
/// epoch and moves only when the guest sleeps; sleeps return at once (and count against the
/// budget); randomness is seeded from the projection's name, version and the first position
/// of the call. See SECURITY.md and `wit/strata.wit`.
///
/// Time budgets are wall time and cover the host's own functions: each `state` and `log`
/// import checks the budget and traps when it is spent, and epoch interruption stops guest
/// code, so a call is stopped within its budget plus one epoch tick or one host operation.
/// Answers the host builds for a plugin are capped in bytes
/// ([`PluginLimits::max_host_result_bytes`], [`PluginLimits::max_query_response_bytes`]).
pub struct WasmProjection {
    engine: PluginEngine,
    pre: ContractPre<HostData>,
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
    bindings: Contract,
    stderr: PluginOutput,
    /// `wasi:random/random`, reseeded before each call.
    secure_random: SeededRandom,
    /// `wasi:random/insecure`, reseeded before each call.
    insecure_random: SeededRandom,
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
    limits: PluginLimits,
    /// The instance's virtual time (its WASI clocks).
    time: VirtualTime,
    /// The budget of the call in progress (instantiation counts as `describe`).
    budget: Option<CallBudget>,
    /// Output the current call may still write.
    output: OutputBudget,
}

impl SandboxData for HostData {
    fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    fn virtual_time(&self) -> &VirtualTime {
        &self.time
    }

    fn budget(&self) -> Option<CallBudget> {
        self.budget
    }
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

    /// Traps once the call's budget (wall time plus virtual sleep) is spent.
    fn check_budget(&self) -> wasmtime::Result<()> {
        match &self.budget {
            Some(budget) => budget.check(&self.time),
            None => Ok(()),
        }
    }

    fn over_result_cap(&self, what: &str) -> String {
        format!(
            "the {what} answer is over the host's cap of {} bytes; ask for fewer entries",
            self.limits.max_host_result_bytes
        )
    }

    /// `get-many`, value by value, stopping as soon as the answer passes the byte cap.
    fn get_many_capped(
        &mut self,
        keys: &[Vec<u8>],
    ) -> wasmtime::Result<Result<Vec<Option<Vec<u8>>>, String>> {
        let cap = self.limits.max_host_result_bytes;
        let mut values = Vec::new();
        let mut bytes = 0usize;
        for key in keys {
            self.check_budget()?;
            let value = match self.state.get(key) {
                Ok(value) => value,
                Err(error) => return Ok(self.record(Err(error))),
            };
            bytes = bytes.saturating_add(value.as_ref().map_or(0, Vec::len));
            if bytes > cap {
                return Ok(Err(self.over_result_cap("get-many")));
            }
            values.push(value);
        }
        Ok(Ok(values))
    }

    /// `scan-prefix` in pages small enough that the answer can never pass the byte cap by
    /// more than one entry: each page asks for at most as many entries as the bytes left
    /// could hold at the largest key and value the state allows.
    fn scan_prefix_capped(
        &mut self,
        prefix: &[u8],
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> wasmtime::Result<Result<Vec<StateEntry>, String>> {
        let cap = self.limits.max_host_result_bytes;
        let state_limits = self.state.limits();
        let largest_entry = (state_limits.max_key_bytes + state_limits.max_value_bytes).max(1);
        let limit = limit.min(state_limits.max_scan_entries);
        let mut entries: Vec<StateEntry> = Vec::new();
        let mut bytes = 0usize;
        let mut after = after;
        while entries.len() < limit {
            self.check_budget()?;
            let room = cap.saturating_sub(bytes) / largest_entry;
            let page = room.clamp(1, limit - entries.len());
            let found = match self.state.scan_prefix(prefix, after.as_deref(), page) {
                Ok(found) => found,
                Err(error) => return Ok(self.record(Err(error))),
            };
            let last_page = found.len() < page;
            for (key, value) in found {
                bytes = bytes.saturating_add(key.len() + value.len());
                if bytes > cap {
                    return Ok(Err(self.over_result_cap("scan-prefix")));
                }
                entries.push((key, value));
            }
            if last_page {
                break;
            }
            after = entries.last().map(|(key, _)| key.clone());
        }
        Ok(Ok(entries))
    }
}

impl state::Host for HostData {
    fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Result<Option<Vec<u8>>, String>> {
        self.check_budget()?;
        let result = self.state.get(&key);
        let result = self.record(result);
        self.check_budget()?;
        Ok(result)
    }

    fn get_many(
        &mut self,
        keys: Vec<Vec<u8>>,
    ) -> wasmtime::Result<Result<Vec<Option<Vec<u8>>>, String>> {
        let result = self.get_many_capped(&keys)?;
        self.check_budget()?;
        Ok(result)
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        self.check_budget()?;
        let result = self.state.put(&key, &value);
        Ok(self.record(result))
    }

    fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        self.check_budget()?;
        let result = self.state.delete(&key);
        Ok(self.record(result))
    }

    fn scan_prefix(
        &mut self,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: u32,
    ) -> wasmtime::Result<Result<Vec<StateEntry>, String>> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let result = self.scan_prefix_capped(&prefix, after, limit)?;
        self.check_budget()?;
        Ok(result)
    }
}

impl log::Host for HostData {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        self.check_budget()?;
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
        let (granted, first_refusal) = self.output.take(message.len());
        if let Some(per_call) = first_refusal {
            warn_dropped(plugin, per_call);
        }
        if granted < message.len() {
            return Ok(());
        }
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
        Ok(())
    }
}

impl types::Host for HostData {}

// Components built against 0.1.0 import the same functions under that version's names.
impl v0_1::state::Host for HostData {
    fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Result<Option<Vec<u8>>, String>> {
        state::Host::get(self, key)
    }

    fn get_many(
        &mut self,
        keys: Vec<Vec<u8>>,
    ) -> wasmtime::Result<Result<Vec<Option<Vec<u8>>>, String>> {
        state::Host::get_many(self, keys)
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        state::Host::put(self, key, value)
    }

    fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        state::Host::delete(self, key)
    }

    fn scan_prefix(
        &mut self,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: u32,
    ) -> wasmtime::Result<Result<Vec<StateEntry>, String>> {
        state::Host::scan_prefix(self, prefix, after, limit)
    }
}

impl v0_1::log::Host for HostData {
    fn log(&mut self, level: v0_1::log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            v0_1::log::Level::Trace => log::Level::Trace,
            v0_1::log::Level::Debug => log::Level::Debug,
            v0_1::log::Level::Info => log::Level::Info,
            v0_1::log::Level::Warn => log::Level::Warn,
            v0_1::log::Level::Error => log::Level::Error,
        };
        log::Host::log(self, level, message)
    }
}

impl v0_1::types::Host for HostData {}

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
        sandbox::shadow_sleeps(&mut linker)
            .map_err(|e| ProjectionError::Load(format!("linking the WASI clocks: {e:#}")))?;
        bindings::add_to_linker(&mut linker)
            .map_err(|e| ProjectionError::Load(format!("linking the host imports: {e:#}")))?;
        let instance_pre = linker.instantiate_pre(&component).map_err(|e| {
            ProjectionError::Load(format!(
                "the component does not fit the strata:projection world: {e:#}"
            ))
        })?;
        let pre = ContractPre::new(instance_pre).map_err(|e| {
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
        let info = projection.call(&mut scratch, budget, 0, |store, bindings| {
            bindings.describe(store)
        })?;
        let info = validate_info(info)?;
        let _ = projection.name.set(info.name.clone());
        projection.info = info;
        // `describe` ran before the name was known, with randomness seeded from no name: the
        // first call starts a fresh instance seeded from the projection itself, exactly as it
        // would after a fault, so that no call depends on whether `describe` ran before it.
        projection.live = None;
        Ok(projection)
    }

    /// Like [`WasmProjection::load`], for a module whose description was stored when it was
    /// registered: refuses it with `Malformed` when `describe` now answers anything else (a
    /// module must not change its name, version or event types behind the host's back).
    pub fn load_described(
        engine: &PluginEngine,
        wasm: &[u8],
        limits: PluginLimits,
        registered: &ProjectionInfo,
    ) -> Result<WasmProjection, ProjectionError> {
        let projection = WasmProjection::load(engine, wasm, limits)?;
        if projection.info != *registered {
            return Err(ProjectionError::Malformed(format!(
                "the module was registered as {} but now describes itself as {}; refusing to load it",
                show_info(registered),
                show_info(&projection.info)
            )));
        }
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

    /// The version of the `strata:projection` contract the component was built against
    /// (`"0.2.0"`, or `"0.1.0"` for components whose events carry no tags).
    pub fn contract_version(&self) -> &'static str {
        self.pre.version()
    }

    /// Whether an instance is currently alive (false after a fault, until the next call).
    pub fn is_instantiated(&self) -> bool {
        self.live.is_some()
    }

    fn instantiate(&mut self) -> Result<Live, ProjectionError> {
        let output = OutputBudget::new(self.limits.max_output_bytes_per_call);
        let stdout = PluginOutput::new(Kind::Stdout, Arc::clone(&self.name), output.clone());
        let stderr = PluginOutput::new(Kind::Stderr, Arc::clone(&self.name), output.clone());
        let time = VirtualTime::default();
        let (name, version) = (self.info.name.as_str(), self.info.version);
        let secure_random = SeededRandom::new(sandbox::seed(Stream::Secure, name, version, 0));
        let insecure_random = SeededRandom::new(sandbox::seed(Stream::Insecure, name, version, 0));
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout)
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(time.wall_clock())
            .monotonic_clock(time.monotonic_clock())
            .secure_random(secure_random.clone())
            .insecure_random(insecure_random.clone())
            .insecure_random_seed(sandbox::insecure_seed(name, version))
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
            limits: self.limits,
            budget: Some(CallBudget::start(self.limits.describe_budget, &time)),
            time,
            output,
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
                secure_random,
                insecure_random,
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
    /// instance after a fault. `position` (the first event's, 0 outside `apply`) seeds the
    /// call's randomness.
    fn call<R>(
        &mut self,
        state: &mut ProjectionState,
        budget: Duration,
        position: u64,
        f: impl FnOnce(&mut Store<HostData>, &Contract) -> wasmtime::Result<R>,
    ) -> Result<R, ProjectionError> {
        let mut live = match self.live.take() {
            Some(live) => live,
            None => self.instantiate()?,
        };
        let (name, version) = (self.info.name.as_str(), self.info.version);
        live.secure_random
            .reseed(sandbox::seed(Stream::Secure, name, version, position));
        live.insecure_random
            .reseed(sandbox::seed(Stream::Insecure, name, version, position));
        {
            let data = live.store.data_mut();
            data.state = std::mem::take(state);
            data.state_error = None;
            data.limiter.refused = false;
            data.time.reset();
            data.budget = Some(CallBudget::start(budget, &data.time));
            data.output.reset();
        }
        live.stderr.clear_tail();
        live.store.set_epoch_deadline(self.engine.ticks_for(budget));
        let result = f(&mut live.store, &live.bindings);
        let data = live.store.data_mut();
        *state = std::mem::take(&mut data.state);
        data.budget = None;
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
    if trap == Some(Trap::Interrupt) || error.downcast_ref::<sandbox::BudgetExceeded>().is_some() {
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

fn show_info(info: &ProjectionInfo) -> String {
    let types = if info.event_types.is_empty() {
        "all event types".to_owned()
    } else {
        format!("event types [{}]", info.event_types.join(", "))
    };
    format!("{:?} version {} ({types})", info.name, info.version)
}

/// A plugin's error message, cut to a length that can be stored as a fault.
fn plugin_message(mut message: String) -> String {
    if message.len() > MAX_ERROR_MESSAGE {
        let cut = truncate(&message, MAX_ERROR_MESSAGE).len();
        message.truncate(cut);
        message.push_str("...");
    }
    message
}

fn truncate(s: &str, max: usize) -> &str {
    let mut cut = s.len().min(max);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
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
        let position = events.first().map_or(0, |e| e.position);
        let budget = self.limits.apply_budget;
        self.call(state, budget, position, |store, bindings| {
            bindings.apply(store, events)
        })?
        .map_err(|message| ProjectionError::Failed(plugin_message(message)))
    }

    /// Calls the plugin's `query` under [`PluginLimits::query_budget`].
    fn query(
        &mut self,
        request: &[u8],
        state: &mut ProjectionState,
    ) -> Result<Vec<u8>, ProjectionError> {
        let budget = self.limits.query_budget;
        let cap = self.limits.max_query_response_bytes;
        // The copy out of the guest is bounded by the guest's memory limit; the cap bounds
        // what callers go on to convert (the CLI's JSON, the query cache).
        let response = self
            .call(state, budget, 0, |store, bindings| {
                bindings.query(store, request)
            })?
            .map_err(|message| ProjectionError::Failed(plugin_message(message)))?;
        if response.len() > cap {
            return Err(ProjectionError::Malformed(format!(
                "query answer of {} bytes is over the cap of {cap} bytes",
                response.len()
            )));
        }
        Ok(response)
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
            tags: Arc::from(vec!["course:c1".to_owned(), "student:s1".to_owned()]),
        };
        let wit = bindings::to_current(&event);
        assert_eq!(wit.event_id, (0x0123456789abcdef, 0xfedcba9876543210));
        assert_eq!((wit.position, wit.version, wit.recorded_at), (7, 2, -5));
        assert_eq!(wit.stream_id, "order-1");
        assert_eq!(wit.event_type, "order_created");
        assert_eq!(
            (wit.data.as_slice(), wit.metadata.as_slice()),
            (&b"d"[..], &b"m"[..])
        );
        assert_eq!(wit.tags, ["course:c1", "student:s1"]);
    }
}
