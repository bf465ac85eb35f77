//! The C ABI of strata (`libstrata.so` / `libstrata.a`, header `include/strata.h`).
//!
//! Modelled on SQLite's C API: opaque handles, a status code from every call, the message of
//! the last failure per thread (`strata_errmsg`), results through out-parameters, and buffers
//! the library allocates released by the library (`strata_free`).
//!
//! # Conventions (every function)
//!
//! - Strings are NUL-terminated UTF-8 (`const char *`); byte buffers are pointer + length, and
//!   a length of 0 accepts any pointer, NULL included.
//! - On failure, out-parameters are cleared (handles set to NULL, structs zeroed) if they are
//!   not NULL; `strata_errmsg()` tells why.
//! - No panic crosses the boundary: a panic becomes `STRATA_INTERNAL`.
//! - Misuse is reported, not crashed on, where it can be detected: NULL handles and pointers,
//!   a freed handle or one of another type (checked against a registry of live handles, see
//!   `ptr.rs`, so freed memory is never read), invalid UTF-8, lengths over `PTRDIFF_MAX`, NULL
//!   with a non-zero length, unknown enum values, closing twice.
//!
//! # Handles and their lifetime
//!
//! `strata_store` is thread-safe: any number of threads may call functions on one handle at a
//! time. Its life has two steps: `strata_close` closes the store (waits for queued appends,
//! stops the writer and the projection runner) but keeps the handle, so later calls on it
//! return `STRATA_CLOSED` and a second `strata_close` returns `STRATA_MISUSE`;
//! `strata_store_free` releases the handle (closing first if needed).
//!
//! Cursors and subscriptions may be used from any thread; calls on one of them are serialized.
//! They are freed on their own, before or after their store. Once the store is closed, a
//! cursor answers `STRATA_CLOSED`; a subscription delivers what was committed and then
//! `STRATA_DONE`.
//!
//! The `strata_event` filled by `strata_cursor_next` / `strata_subscription_next` points into
//! memory owned by the cursor or subscription: valid until the next `next` call on that handle
//! or its `free`, whichever comes first. Copy what you keep.
//!
//! # Layout
//!
//! One module per handle or concern, as wasmtime's C API: `store`, `append` (plain and
//! conditional appends), `cursor`, `query` (DCB queries and conditions, `strata_read_query`),
//! `subscription`, `projection`, `metrics`, `types` (constants and plain structs), `status`
//! (status codes, per-thread errors), `ptr` (every conversion of a caller's pointer, each an
//! `unsafe fn` with its contract). Every entry point that takes a pointer is an
//! `unsafe extern "C" fn` whose `# Safety` section is the header's contract for it.
#![allow(non_camel_case_types)]
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod append;
mod cursor;
mod metrics;
mod projection;
mod ptr;
mod query;
mod status;
mod store;
mod subscription;
mod types;

pub use append::*;
pub use cursor::*;
pub use metrics::*;
pub use projection::*;
pub use query::*;
pub use status::{
    strata_errmsg, strata_last_actual_version, strata_last_condition_position,
    strata_last_conflict_part, strata_status, strata_status_name,
};
pub use store::*;
pub use subscription::*;
pub use types::*;
