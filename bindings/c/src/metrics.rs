//! Metrics as Prometheus text.

use std::os::raw::c_char;

use crate::ptr::{clear_out, handle_ref, malloc_copy, write_out};
use crate::status::strata_status::{self, *};
use crate::status::{guard, Fail};
use crate::store::strata_store;

// Metrics

/// The store's metrics in the Prometheus text format.
///
/// On success `*out_text` is a NUL-terminated string owned by the caller: release it with
/// `strata_free`. On failure it is NULL.
///
/// # Safety
///
/// `store` is NULL or any pointer, but a live handle must not be freed by another thread during
/// the call; `out_text` is NULL or writable for one `char *`.
#[no_mangle]
pub unsafe extern "C" fn strata_metrics_text(
    store: *mut strata_store,
    out_text: *mut *mut c_char,
) -> strata_status {
    unsafe { clear_out(out_text, std::ptr::null_mut()) };
    guard(|| {
        let handle = unsafe { handle_ref(store) }?;
        if out_text.is_null() {
            return Err(Fail::invalid("out_text is NULL"));
        }
        let text = handle.store()?.metrics_text()?;
        let buffer = malloc_copy(text.as_bytes(), true)?;
        unsafe { write_out(out_text, buffer.cast(), "out_text") }?;
        Ok(STRATA_OK)
    })
}
