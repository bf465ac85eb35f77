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
    load(
        "hostile",
        PluginLimits {
            apply_budget: APPLY_BUDGET,
            query_budget: QUERY_BUDGET,
            max_memory_bytes: MEMORY_LIMIT,
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
        elapsed < APPLY_BUDGET + Duration::from_secs(2),
        "stopped after {elapsed:?}"
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
