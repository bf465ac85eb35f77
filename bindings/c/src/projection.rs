//! WASM projections run by the store handle's runner.

use std::os::raw::c_char;
use std::time::Duration;

use strata_core::{ProjectionRunner, ProjectionStatus};

use crate::ptr::{clear_out, handle_ref, malloc_copy, slice_arg, str_arg, write_out};
use crate::status::strata_status::{self, *};
use crate::status::{guard, Fail};
use crate::store::strata_store;
use crate::types::*;

/// The WebAssembly engine: compiled in with the `wasm` feature (on by default). Without it (the
/// C ABI fuzz target, which would otherwise build wasmtime under instrumentation) registering a
/// component fails with `STRATA_INTERNAL` and says why; every other call is the same.
#[cfg(feature = "wasm")]
mod engine {
    use super::*;

    /// The library's WebAssembly engine, created by the first `strata_projection_register_wasm`
    /// and released by `strata_shutdown` (its own rather than `PluginEngine::shared()`, whose
    /// process-wide static can never be released: valgrind counted its blocks as possibly lost).
    static ENGINE: parking_lot::Mutex<Option<strata_wasm::PluginEngine>> =
        parking_lot::const_mutex(None);

    fn plugin_engine() -> Result<strata_wasm::PluginEngine, Fail> {
        let mut engine = ENGINE.lock();
        if let Some(engine) = &*engine {
            return Ok(engine.clone());
        }
        let created = strata_wasm::PluginEngine::new(strata_wasm::EngineOptions::default())
            .map_err(|e| Fail::new(STRATA_INTERNAL, format!("plugin engine: {e}")))?;
        *engine = Some(created.clone());
        Ok(created)
    }

    pub(super) fn load(wasm: &[u8]) -> Result<Box<dyn strata_core::Projection>, Fail> {
        let engine = plugin_engine()?;
        let projection =
            strata_wasm::WasmProjection::load(&engine, wasm, strata_wasm::PluginLimits::default())?;
        Ok(Box::new(projection))
    }

    pub(super) fn release() {
        let engine = ENGINE.lock().take();
        drop(engine);
    }
}

#[cfg(not(feature = "wasm"))]
mod engine {
    use super::*;

    pub(super) fn load(_wasm: &[u8]) -> Result<Box<dyn strata_core::Projection>, Fail> {
        Err(Fail::new(
            STRATA_INTERNAL,
            "this build of the library has no WebAssembly engine (built without the `wasm` feature)",
        ))
    }

    pub(super) fn release() {}
}

/// Releases the library's global caches (the WebAssembly engine). Optional: call it at the end
/// of a program that wants a clean leak report (valgrind) or to free the engine's memory once
/// no store with projections is open. Projections already registered keep their own reference
/// and keep working; a later `strata_projection_register_wasm` creates a new engine.
/// Thread-safe; always `STRATA_OK`.
#[no_mangle]
pub extern "C" fn strata_shutdown() -> strata_status {
    guard(|| {
        engine::release();
        Ok(STRATA_OK)
    })
}

// Projections (run by a runner the store handle owns, created on first use)

unsafe fn write_status(
    out: *mut strata_projection_status,
    status: &ProjectionStatus,
) -> Result<strata_status, Fail> {
    if !out.is_null() {
        unsafe {
            write_out(
                out,
                strata_projection_status::from_status(status),
                "out_status",
            )
        }?;
    }
    Ok(STRATA_OK)
}

/// Loads a projection compiled to a WebAssembly component (`wasm_len` bytes, copied) with the
/// default plugin limits and registers it with the store's runner. A known name resumes from its
/// checkpoint; a new version rebuilds beside the old one. Events are folded by
/// `strata_projection_catch_up` or by the background runner (`strata_projections_start`).
/// `*out_status` (may be NULL) receives its status, including its name; zeroed on failure.
/// Invalid bytes give `STRATA_INVALID_ARGUMENT`.
///
/// # Safety
///
/// `store` is NULL or any pointer, but a live handle must not be freed by another thread during
/// the call; `wasm` is readable for `wasm_len` elements (may be NULL when it is 0), with
/// pointers inside following the header's conventions; `out_status` is NULL or writable for one
/// `strata_projection_status`.
#[no_mangle]
pub unsafe extern "C" fn strata_projection_register_wasm(
    store: *mut strata_store,
    wasm: *const u8,
    wasm_len: usize,
    out_status: *mut strata_projection_status,
) -> strata_status {
    unsafe { clear_out(out_status, strata_projection_status::EMPTY) };
    guard(|| {
        let handle = unsafe { handle_ref(store) }?;
        let wasm = unsafe { slice_arg(wasm, wasm_len, "wasm") }?;
        let runner = handle.runner()?;
        let projection = engine::load(wasm)?;
        let status = runner.register(projection)?;
        unsafe { write_status(out_status, &status) }
    })
}

unsafe fn projection_call(
    store: *mut strata_store,
    name: *const c_char,
    out_status: *mut strata_projection_status,
    call: impl FnOnce(&ProjectionRunner, &str) -> Result<ProjectionStatus, strata_core::RunnerError>,
) -> strata_status {
    unsafe { clear_out(out_status, strata_projection_status::EMPTY) };
    guard(|| {
        let handle = unsafe { handle_ref(store) }?;
        let name = unsafe { str_arg(name, "name") }?;
        let runner = handle.runner()?;
        let status = call(&runner, name)?;
        unsafe { write_status(out_status, &status) }
    })
}

/// The stored status of the projection `name` (registered in this process or not).
/// `STRATA_NOT_FOUND` if no such projection is stored. `*out_status` zeroed on failure.
///
/// # Safety
///
/// `store` is NULL or any pointer, but a live handle must not be freed by another thread during
/// the call; `name` is NULL or a NUL-terminated string; `out_status` is NULL or writable for
/// one `strata_projection_status`.
#[no_mangle]
pub unsafe extern "C" fn strata_projection_status_get(
    store: *mut strata_store,
    name: *const c_char,
    out_status: *mut strata_projection_status,
) -> strata_status {
    unsafe { projection_call(store, name, out_status, |runner, name| runner.status(name)) }
}

/// Runs batches of the registered projection `name` until it is caught up with the log (or
/// faulted: then `STRATA_OK` with `phase == STRATA_PHASE_FAULTED`). `STRATA_NOT_FOUND` if it
/// is not registered in this store handle.
///
/// # Safety
///
/// `store` is NULL or any pointer, but a live handle must not be freed by another thread during
/// the call; `name` is NULL or a NUL-terminated string; `out_status` is NULL or writable for
/// one `strata_projection_status`.
#[no_mangle]
pub unsafe extern "C" fn strata_projection_catch_up(
    store: *mut strata_store,
    name: *const c_char,
    out_status: *mut strata_projection_status,
) -> strata_status {
    unsafe {
        projection_call(store, name, out_status, |runner, name| {
            runner.catch_up(name)
        })
    }
}

/// Deletes the state and checkpoint of every version of `name`: it rebuilds from position 1
/// on the next catch-up.
///
/// # Safety
///
/// `store` is NULL or any pointer, but a live handle must not be freed by another thread during
/// the call; `name` is NULL or a NUL-terminated string; `out_status` is NULL or writable for
/// one `strata_projection_status`.
#[no_mangle]
pub unsafe extern "C" fn strata_projection_reset(
    store: *mut strata_store,
    name: *const c_char,
    out_status: *mut strata_projection_status,
) -> strata_status {
    unsafe { projection_call(store, name, out_status, |runner, name| runner.reset(name)) }
}

/// Clears a fault: the next batch retries the event the projection failed on.
///
/// # Safety
///
/// `store` is NULL or any pointer, but a live handle must not be freed by another thread during
/// the call; `name` is NULL or a NUL-terminated string; `out_status` is NULL or writable for
/// one `strata_projection_status`.
#[no_mangle]
pub unsafe extern "C" fn strata_projection_resume(
    store: *mut strata_store,
    name: *const c_char,
    out_status: *mut strata_projection_status,
) -> strata_status {
    unsafe { projection_call(store, name, out_status, |runner, name| runner.resume(name)) }
}

/// Answers `request` (`request_len` bytes; the projection's own format, MessagePack by
/// convention) from the projection's committed state.
///
/// On success `*out_response` is a buffer of `*out_response_len` bytes owned by the caller:
/// release it with `strata_free`. On failure they are NULL and 0.
///
/// # Safety
///
/// `store` is NULL or any pointer, but a live handle must not be freed by another thread during
/// the call; `name` is NULL or a NUL-terminated string; `request` is readable for `request_len`
/// elements (may be NULL when it is 0), with pointers inside following the header's
/// conventions; `out_response` is NULL or writable for one `uint8_t *`; `out_response_len` is NULL or
/// writable for one `size_t`.
#[no_mangle]
pub unsafe extern "C" fn strata_projection_query(
    store: *mut strata_store,
    name: *const c_char,
    request: *const u8,
    request_len: usize,
    out_response: *mut *mut u8,
    out_response_len: *mut usize,
) -> strata_status {
    unsafe { clear_out(out_response, std::ptr::null_mut()) };
    unsafe { clear_out(out_response_len, 0) };
    guard(|| {
        let handle = unsafe { handle_ref(store) }?;
        let name = unsafe { str_arg(name, "name") }?;
        let request = unsafe { slice_arg(request, request_len, "request") }?;
        if out_response.is_null() || out_response_len.is_null() {
            return Err(Fail::invalid("out_response or out_response_len is NULL"));
        }
        let response = handle.runner()?.query(name, request)?;
        let buffer = malloc_copy(&response, false)?;
        unsafe { write_out(out_response, buffer, "out_response") }?;
        unsafe { write_out(out_response_len, response.len(), "out_response_len") }?;
        Ok(STRATA_OK)
    })
}

/// Starts a background thread that keeps every projection registered in this handle caught up,
/// waking on each commit and at least every `idle_wake_ms`. Stopped by `strata_close` or
/// `strata_projections_stop`. Starting it twice is `STRATA_MISUSE`.
///
/// # Safety
///
/// `store` is NULL or any pointer, but a live handle must not be freed by another thread during
/// the call.
#[no_mangle]
pub unsafe extern "C" fn strata_projections_start(
    store: *mut strata_store,
    idle_wake_ms: u32,
) -> strata_status {
    guard(|| {
        let handle = unsafe { handle_ref(store) }?;
        let runner = handle.runner()?;
        let mut projections = handle.projections.lock();
        if projections.background.is_some() {
            return Err(Fail::misuse(
                "the background projection runner is already running",
            ));
        }
        projections.background = Some(runner.start(Duration::from_millis(idle_wake_ms.into())));
        Ok(STRATA_OK)
    })
}

/// Stops the background projection runner (waits for its current batch). Does nothing if it is
/// not running.
///
/// # Safety
///
/// `store` is NULL or any pointer, but a live handle must not be freed by another thread during
/// the call.
#[no_mangle]
pub unsafe extern "C" fn strata_projections_stop(store: *mut strata_store) -> strata_status {
    guard(|| {
        let handle = unsafe { handle_ref(store) }?;
        handle.store()?;
        let background = handle.projections.lock().background.take();
        drop(background);
        Ok(STRATA_OK)
    })
}
