//! A misbehaving plugin faults with the error that names its misbehaviour, within its budget
//! or limit, and the next call runs on a fresh instance. The sandbox grants nothing.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata::{MemoryState, Projection, ProjectionError, ProjectionState, StateError, StateLimits};
use strata_wasm::{PluginLimits, WasmProjection};

use common::{apply, engine, load, query, wasm, Log};

// Generous enough that a loaded 2-core machine never hits them by accident (debug builds,
// parallel tests), short enough that the timeout tests stay quick.
const APPLY_BUDGET: Duration = Duration::from_millis(1_000);
const QUERY_BUDGET: Duration = Duration::from_millis(500);
const MEMORY_LIMIT: usize = 16 * 1024 * 1024;

fn hostile() -> WasmProjection {
    hostile_with_memory(MEMORY_LIMIT)
}

fn hostile_with_memory(max_memory_bytes: usize) -> WasmProjection {
    load(
        "hostile",
        PluginLimits {
            apply_budget: APPLY_BUDGET,
            query_budget: QUERY_BUDGET,
            max_memory_bytes,
            ..PluginLimits::default()
        },
    )
}

/// Room for the plugins that build large arguments or answers on purpose.
const LARGE_MEMORY_LIMIT: usize = 64 * 1024 * 1024;

/// The hostile plugin with room for large values and the default time budgets: for the tests
/// of byte caps, where moving tens of MiB must not run into a time budget on a loaded machine.
fn hostile_for_caps() -> WasmProjection {
    load(
        "hostile",
        PluginLimits {
            max_memory_bytes: LARGE_MEMORY_LIMIT,
            ..PluginLimits::default()
        },
    )
}

fn count(projection: &mut WasmProjection, committed: &Arc<MemoryState>) -> u64 {
    let response = query(projection, committed, b"count").expect("count query");
    rmp_serde::from_slice(&response).expect("count")
}

/// Applies one event of `event_type`, then checks that the instance was thrown away and that
/// the next batch works on a fresh one.
fn fault_then_recover(event_type: &str) -> (ProjectionError, Duration) {
    let mut projection = hostile();
    let committed = Arc::new(MemoryState::new());
    let mut log = Log::default();
    log.raw("tick");
    apply(&mut projection, &committed, &log.events).expect("a normal event");
    assert_eq!(count(&mut projection, &committed), 1);

    log.raw(event_type);
    let started = Instant::now();
    let error = apply(&mut projection, &committed, &log.events[1..]).unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        !projection.is_instantiated(),
        "the faulted instance is discarded"
    );

    log.raw("tick");
    apply(&mut projection, &committed, &log.events[2..]).expect("the next call works");
    assert!(projection.is_instantiated());
    assert_eq!(
        count(&mut projection, &committed),
        2,
        "state kept, fault rolled back"
    );
    (error, elapsed)
}

#[test]
fn an_infinite_loop_times_out_at_its_budget() {
    let (error, elapsed) = fault_then_recover("loop");
    assert_eq!(error, ProjectionError::Timeout { budget_ms: 1_000 });
    assert!(elapsed >= APPLY_BUDGET, "stopped after {elapsed:?}");
    assert!(
        elapsed < 2 * APPLY_BUDGET,
        "stopped after {elapsed:?}, past twice the budget"
    );
}

#[test]
fn an_infinite_loop_in_a_query_times_out() {
    let mut projection = hostile();
    let committed = Arc::new(MemoryState::new());
    let started = Instant::now();
    let error = query(&mut projection, &committed, b"loop").unwrap_err();
    assert_eq!(error, ProjectionError::Timeout { budget_ms: 500 });
    assert!(started.elapsed() < QUERY_BUDGET + Duration::from_secs(2));
    assert_eq!(count(&mut projection, &committed), 0, "next query works");
}

#[test]
fn a_memory_hog_hits_the_memory_limit() {
    let (error, elapsed) = fault_then_recover("hog");
    assert_eq!(
        error,
        ProjectionError::MemoryLimit {
            limit_bytes: MEMORY_LIMIT as u64
        }
    );
    assert!(
        elapsed < APPLY_BUDGET,
        "stopped by memory, not time: {elapsed:?}"
    );
}

#[test]
fn a_trap_is_reported_as_a_trap() {
    let (error, _) = fault_then_recover("trap");
    match error {
        ProjectionError::Trap(message) => {
            assert!(message.contains("unreachable"), "{message}")
        }
        other => panic!("expected Trap, got {other:?}"),
    }
}

#[test]
fn a_stack_overflow_is_a_trap() {
    // Rust keeps its frames on a shadow stack in linear memory: overflowing it runs below
    // address 0, an out-of-bounds access, rather than exhausting wasmtime's native stack.
    let (error, _) = fault_then_recover("recurse");
    match error {
        ProjectionError::Trap(message) => assert!(message.contains("wasm trap"), "{message}"),
        other => panic!("expected Trap, got {other:?}"),
    }
}

#[test]
fn a_batch_arrives_in_one_call() {
    let mut projection = hostile();
    let committed = Arc::new(MemoryState::new());
    let mut log = Log::default();
    for _ in 0..25 {
        log.raw("tick");
    }
    apply(&mut projection, &committed, &log.events).unwrap();
    let batches: u64 =
        rmp_serde::from_slice(&query(&mut projection, &committed, b"batches").unwrap()).unwrap();
    assert_eq!(batches, 1);
    assert_eq!(count(&mut projection, &committed), 25);
}

#[test]
fn a_rust_panic_is_a_trap_quoting_the_panic_message() {
    let (error, _) = fault_then_recover("panic");
    match error {
        ProjectionError::Trap(message) => assert!(
            message.contains("hostile plugin panics on purpose at position 2"),
            "{message}"
        ),
        other => panic!("expected Trap, got {other:?}"),
    }
}

#[test]
fn a_panic_in_a_query_is_a_trap() {
    let mut projection = hostile();
    let committed = Arc::new(MemoryState::new());
    let error = query(&mut projection, &committed, b"panic").unwrap_err();
    assert!(
        matches!(&error, ProjectionError::Trap(m) if m.contains("panics in a query")),
        "{error:?}"
    );
    let error = query(&mut projection, &committed, b"trap").unwrap_err();
    assert!(matches!(error, ProjectionError::Trap(_)), "{error:?}");
    assert_eq!(count(&mut projection, &committed), 0);
}

#[test]
fn an_error_returned_by_the_plugin_is_a_failure_and_keeps_the_instance() {
    let mut projection = hostile();
    let committed = Arc::new(MemoryState::new());
    let mut log = Log::default();
    log.raw("fail");
    let error = apply(&mut projection, &committed, &log.events).unwrap_err();
    match error {
        ProjectionError::Failed(message) => {
            assert!(message.contains("refuses this event"), "{message}");
            assert!(message.contains("position 1"), "{message}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(
        projection.is_instantiated(),
        "no trap, the instance lives on"
    );
}

#[test]
fn the_state_is_handed_back_even_when_the_plugin_faults() {
    let mut projection = hostile();
    let committed = Arc::new(MemoryState::new());
    let mut log = Log::default();
    log.raw("tick");
    log.raw("trap");
    let mut state = ProjectionState::for_batch(committed.clone(), StateLimits::default());
    let error = projection.apply(&log.events, &mut state).unwrap_err();
    assert!(matches!(error, ProjectionError::Trap(_)), "{error:?}");
    // The runner's state comes back with the batch's writes (`batches` and `count`), for it
    // to discard.
    assert_eq!(state.buffered_writes(), 2);
    assert!(!state.is_read_only());
    assert!(committed.is_empty());
}

#[test]
fn a_swallowed_state_error_still_fails_the_batch() {
    let mut projection = hostile();
    let committed = Arc::new(MemoryState::new());
    let mut log = Log::default();
    log.raw("oversize");
    let error = apply(&mut projection, &committed, &log.events).unwrap_err();
    assert!(
        matches!(
            error,
            ProjectionError::State(StateError::ValueTooLarge { .. })
        ),
        "{error:?}"
    );
}

#[test]
fn a_write_during_a_query_is_a_state_error() {
    let mut projection = hostile();
    let committed = Arc::new(MemoryState::new());
    let error = query(&mut projection, &committed, b"write").unwrap_err();
    assert_eq!(error, ProjectionError::State(StateError::ReadOnly));
    assert!(committed.is_empty());
}

#[test]
fn the_sandbox_grants_no_files_no_environment_no_network() {
    let escape = std::path::Path::new("/tmp/strata-sandbox-escape");
    let _ = std::fs::remove_file(escape);
    let mut projection = hostile();
    let committed = Arc::new(MemoryState::new());
    let mut log = Log::default();
    log.raw("sandbox");
    apply(&mut projection, &committed, &log.events).expect("the probe runs");

    let state = ProjectionState::for_query(committed.clone(), StateLimits::default());
    let report: BTreeMap<String, String> =
        rmp_serde::from_slice(&state.get(b"sandbox").unwrap().expect("report")).unwrap();
    println!("{report:#?}");
    for attempt in [
        "read /etc/passwd",
        "read ./Cargo.toml",
        "create /tmp/strata-sandbox-escape",
        "list /",
        "environment",
        "arguments",
        "connect 127.0.0.1:22",
    ] {
        let outcome = report
            .get(attempt)
            .unwrap_or_else(|| panic!("no outcome for {attempt}: {report:?}"));
        assert!(outcome.starts_with("denied"), "{attempt}: {outcome}");
    }
    assert!(!escape.exists(), "the plugin created a file on the host");
}

#[test]
fn a_malformed_description_is_refused_at_load() {
    let error =
        WasmProjection::load(&engine(), &wasm("malformed"), PluginLimits::default()).unwrap_err();
    match error {
        ProjectionError::Malformed(message) => {
            assert!(message.contains("Not A Valid Name!"), "{message}")
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn bytes_that_are_not_a_projection_component_fail_to_load() {
    // Not wasm at all.
    let error = WasmProjection::load(&engine(), b"garbage", PluginLimits::default()).unwrap_err();
    assert!(matches!(error, ProjectionError::Load(_)), "{error:?}");
    // A valid core module, but not a component.
    let core_module = b"\0asm\x01\0\0\0";
    let error = WasmProjection::load(&engine(), core_module, PluginLimits::default()).unwrap_err();
    assert!(matches!(error, ProjectionError::Load(_)), "{error:?}");
    // A component that exports nothing.
    let empty_component = b"\0asm\x0d\0\x01\0";
    let error =
        WasmProjection::load(&engine(), empty_component, PluginLimits::default()).unwrap_err();
    match error {
        ProjectionError::Load(message) => {
            assert!(message.contains("does not export"), "{message}")
        }
        other => panic!("expected Load, got {other:?}"),
    }
}

// --- Budgets that hold during host calls -------------------------------------------------

#[test]
fn a_sleep_in_apply_returns_at_once_and_times_out_the_call() {
    // `std::thread::sleep(30 s)` advances the guest's virtual time by 30 s without blocking,
    // and the host stops the call there, well before 2x the budget.
    let (error, elapsed) = fault_then_recover("sleep");
    assert_eq!(error, ProjectionError::Timeout { budget_ms: 1_000 });
    // No sleep happened: the call ends long before the budget, let alone twice it.
    assert!(elapsed < APPLY_BUDGET, "stopped after {elapsed:?}");
}

#[test]
fn a_sleep_in_describe_fails_the_load_within_the_describe_budget() {
    let limits = PluginLimits {
        describe_budget: QUERY_BUDGET,
        ..PluginLimits::default()
    };
    // The first load compiles the component (seconds in a debug build) and fills the engine's
    // cache; the second is timed, so that what is measured is the `describe` call.
    let wasm = wasm("hostile-describe");
    let first = WasmProjection::load(&engine(), &wasm, limits).unwrap_err();
    assert_eq!(first, ProjectionError::Timeout { budget_ms: 500 });
    let started = Instant::now();
    let error = WasmProjection::load(&engine(), &wasm, limits).unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(error, ProjectionError::Timeout { budget_ms: 500 });
    assert!(elapsed < 2 * QUERY_BUDGET, "load failed after {elapsed:?}");
}

#[test]
fn time_spent_inside_a_host_call_counts_against_the_budget() {
    // Every read of this state takes 1 ms: the plugin's one `get-many` of 300,000 keys would
    // keep the host busy for 300 s if the import did not check the budget itself.
    let mut projection = hostile_with_memory(LARGE_MEMORY_LIMIT);
    let committed = Arc::new(common::SlowState {
        inner: MemoryState::new(),
        delay: Duration::from_millis(1),
    });
    let mut log = Log::default();
    log.raw("slow-host-call");
    let mut state = ProjectionState::for_batch(committed, StateLimits::default());
    let started = Instant::now();
    let error = projection.apply(&log.events, &mut state).unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(error, ProjectionError::Timeout { budget_ms: 1_000 });
    assert!(elapsed >= APPLY_BUDGET, "stopped after {elapsed:?}");
    assert!(elapsed < 2 * APPLY_BUDGET, "stopped after {elapsed:?}");
    assert!(
        !projection.is_instantiated(),
        "the trapped instance is gone"
    );
}

// --- Host memory bounded -----------------------------------------------------------------

fn fill(projection: &mut WasmProjection, committed: &Arc<MemoryState>, log: &mut Log, n: u32) {
    let start = log.events.len();
    log.push("bulk", "fill", &n, 0);
    apply(projection, committed, &log.events[start..]).expect("fill");
}

fn cap_failure(error: ProjectionError, import: &str) {
    let cap = PluginLimits::default().max_host_result_bytes;
    match error {
        ProjectionError::Failed(message) => assert!(
            message.contains(&format!(
                "the {import} answer is over the host's cap of {cap} bytes"
            )),
            "{message}"
        ),
        other => panic!("expected the plugin to fail on the cap, got {other:?}"),
    }
}

#[test]
fn get_many_answers_are_capped_in_bytes() {
    let mut projection = hostile_for_caps();
    let committed = Arc::new(MemoryState::new());
    let mut log = Log::default();
    fill(&mut projection, &committed, &mut log, 1);
    // 2,048 copies of a 1 MiB value would be 2 GiB built by the host.
    log.push("bomb", "get-many-bomb", &2048u32, 0);
    let error = apply(&mut projection, &committed, &log.events[1..]).unwrap_err();
    cap_failure(error, "get-many");
    // Under the cap it is answered in full.
    log.push("bomb", "get-many-bomb", &15u32, 0);
    let error = apply(&mut projection, &committed, &log.events[2..]).unwrap_err();
    assert!(
        matches!(&error, ProjectionError::Failed(m) if m.contains("get-many of 15 MiB was answered")),
        "{error:?}"
    );
}

#[test]
fn scan_prefix_answers_are_capped_in_bytes() {
    let mut projection = hostile_for_caps();
    let committed = Arc::new(MemoryState::new());
    let mut log = Log::default();
    fill(&mut projection, &committed, &mut log, 24);
    log.raw("scan-bomb");
    let error = apply(&mut projection, &committed, &log.events[1..]).unwrap_err();
    cap_failure(error, "scan-prefix");

    // Fifteen 1 MiB entries fit under the 16 MiB cap, in pages, in key order.
    let committed = Arc::new(MemoryState::new());
    let mut log = Log::default();
    fill(&mut projection, &committed, &mut log, 15);
    log.raw("scan-bomb");
    let error = apply(&mut projection, &committed, &log.events[1..]).unwrap_err();
    assert!(
        matches!(&error, ProjectionError::Failed(m) if m.contains("scan-prefix of 15 entries was answered")),
        "{error:?}"
    );
}

#[test]
fn output_is_capped_per_call() {
    // A debug build copying 48 MiB out of the guest on a loaded machine may need more than
    // the 1 s budget of the other tests.
    let mut projection = hostile_for_caps();
    let committed = Arc::new(MemoryState::new());
    let mut log = Log::default();
    log.raw("log-flood");
    let counter = common::PluginOutputCounter::default();
    let started = Instant::now();
    counter
        .count(|| apply(&mut projection, &committed, &log.events))
        .expect("flooding the log is not an error");
    let forwarded = counter.bytes.load(std::sync::atomic::Ordering::Relaxed);
    let cap = PluginLimits::default().max_output_bytes_per_call;
    // 48 MiB written; the cap plus the one notice (and line splitting) reaches the log.
    assert!(forwarded >= cap / 2, "only {forwarded} bytes forwarded");
    assert!(forwarded <= cap + 1024, "{forwarded} bytes forwarded");
    println!("48 MiB of output handled in {:?}", started.elapsed());

    // The next call has its own allowance.
    log.raw("chatty");
    let counter = common::PluginOutputCounter::default();
    counter
        .count(|| apply(&mut projection, &committed, &log.events[1..]))
        .unwrap();
    assert!(counter.records.load(std::sync::atomic::Ordering::Relaxed) >= 6);
}

#[test]
fn query_answers_are_capped_in_bytes() {
    // The budget is generous: the cap is the subject here, and copying 40 MB out of the guest
    // takes a debug build a while.
    let mut projection = load(
        "hostile",
        PluginLimits {
            query_budget: Duration::from_secs(20),
            max_memory_bytes: 128 * 1024 * 1024,
            ..PluginLimits::default()
        },
    );
    let committed = Arc::new(MemoryState::new());
    let cap = PluginLimits::default().max_query_response_bytes;
    let started = Instant::now();
    let error = query(&mut projection, &committed, b"nils:40000000").unwrap_err();
    println!("a 40 MB answer refused after {:?}", started.elapsed());
    assert_eq!(
        error,
        ProjectionError::Malformed(format!(
            "query answer of 40000005 bytes is over the cap of {cap} bytes"
        ))
    );
    let answer = query(&mut projection, &committed, b"nils:1000").unwrap();
    let nils: Vec<()> = rmp_serde::from_slice(&answer).unwrap();
    assert_eq!(nils.len(), 1000);
}

// --- Deterministic guests ----------------------------------------------------------------

#[test]
fn clocks_and_randomness_are_the_same_on_every_rebuild() {
    let fold = || {
        let mut projection = hostile();
        let committed = Arc::new(MemoryState::new());
        let mut log = Log::default();
        for _ in 0..3 {
            log.raw("entropy");
        }
        log.raw("tick");
        log.raw("entropy");
        apply(&mut projection, &committed, &log.events[..2]).unwrap();
        apply(&mut projection, &committed, &log.events[2..]).unwrap();
        let state = ProjectionState::for_query(committed.clone(), StateLimits::default());
        state.scan_prefix(b"entropy:", None, 100).unwrap()
    };
    let first = fold();
    let second = fold();
    assert_eq!(first.len(), 4);
    assert_eq!(first, second, "two rebuilds folded differently");

    let seen: BTreeMap<String, String> = rmp_serde::from_slice(&first[0].1).unwrap();
    println!("{seen:#?}");
    // The clocks are virtual: the wall clock starts at the unix epoch and only moves by the
    // guest's own sleeps (so exactly 2 ms per `entropy` event).
    assert_eq!(seen["wall clock ns"], "0");
    assert_eq!(seen["monotonic ns across a 2 ms sleep"], "2000000");
    let later: BTreeMap<String, String> = rmp_serde::from_slice(&first[1].1).unwrap();
    assert_eq!(later["wall clock ns"], "2000000");
    // Every call starts at the epoch again, on the same instance: the first event of the second
    // call reads 0, not the 6 ms the instance's earlier sleeps add up to.
    let next_call: BTreeMap<String, String> = rmp_serde::from_slice(&first[2].1).unwrap();
    assert_eq!(next_call["wall clock ns"], "0");
}
