//! `strata_store`: opening, closing, freeing, and the store-wide queries.

use std::os::raw::c_char;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use strata_core::{
    BackgroundRunner, BucketWidth, Durability, Options, ProjectionRunner, RunnerOptions, Store,
};

use crate::ptr::{
    clear_out, free_handle, handle_ref, into_handle, slice_arg, str_arg, write_out, Handle,
};
use crate::status::strata_status::{self, *};
use crate::status::{guard, Fail};
use crate::types::*;

// Handles

/// An open store (opaque). See the module documentation for its two-step life.
pub struct strata_store {
    /// `None` once closed.
    pub(crate) store: RwLock<Option<Store>>,
    /// Set by `strata_close`; subscriptions read it to tell "closed" from "timed out".
    pub(crate) closed: Arc<AtomicBool>,
    pub(crate) projections: Mutex<Projections>,
}

#[derive(Default)]
pub(crate) struct Projections {
    pub(crate) runner: Option<ProjectionRunner>,
    pub(crate) background: Option<BackgroundRunner>,
}

impl Handle for strata_store {
    const TAG: u64 = 0x5354_5241_5354_4f52; // "STRASTOR"
    const NAME: &'static str = "strata_store";
}

impl strata_store {
    pub(crate) fn store(&self) -> Result<Store, Fail> {
        self.store
            .read()
            .clone()
            .ok_or_else(|| Fail::new(STRATA_CLOSED, "the store is closed"))
    }

    pub(crate) fn runner(&self) -> Result<ProjectionRunner, Fail> {
        let store = self.store()?;
        let mut projections = self.projections.lock();
        if let Some(runner) = &projections.runner {
            return Ok(runner.clone());
        }
        let runner = ProjectionRunner::new(&store, RunnerOptions::default())?;
        projections.runner = Some(runner.clone());
        Ok(runner)
    }

    pub(crate) fn close(&self) -> Result<(), Fail> {
        let store = self
            .store
            .write()
            .take()
            .ok_or_else(|| Fail::misuse("the store is already closed"))?;
        self.closed.store(true, Ordering::SeqCst);
        // Stop the background runner first: it appends nothing but reads through the store.
        let projections = std::mem::take(&mut *self.projections.lock());
        drop(projections);
        store.close();
        Ok(())
    }
}

// Opening and closing

/// Fills `*options` with the defaults: Durable, the stored bucket width (month for a new store),
/// a 64 MiB cache, 16 MiB payloads, 10,000 events per append, 4 read connections, 5 s busy
/// timeout. Returns `STRATA_INVALID_ARGUMENT` if `options` is NULL.
///
/// # Safety
///
/// `options` is NULL or writable for one `strata_options`.
#[no_mangle]
pub unsafe extern "C" fn strata_options_init(options: *mut strata_options) -> strata_status {
    guard(|| {
        let value = strata_options::default();
        unsafe { write_out(options, value, "options") }?;
        Ok(STRATA_OK)
    })
}

impl Default for strata_options {
    /// The values `strata_options_init` writes.
    fn default() -> Self {
        let defaults = Options::default();
        strata_options {
            durability: STRATA_DURABLE,
            bucket_width: STRATA_BUCKET_DEFAULT,
            cache_bytes: defaults.cache_bytes as u64,
            max_payload_bytes: defaults.max_payload_bytes as u64,
            max_events_per_append: defaults.max_events_per_append as u32,
            read_connections: defaults.read_connections as u32,
            busy_timeout_ms: defaults.busy_timeout_ms,
        }
    }
}

unsafe fn to_options(options: *const strata_options) -> Result<Options, Fail> {
    let mut out = Options::default();
    if options.is_null() {
        return Ok(out);
    }
    let c = unsafe { slice_arg(options, 1, "options") }?[0];
    out.durability = match c.durability {
        STRATA_DURABLE => Durability::Durable,
        STRATA_FAST => Durability::Fast,
        other => return Err(Fail::invalid(format!("unknown durability {other}"))),
    };
    out.bucket_width = match c.bucket_width {
        STRATA_BUCKET_DEFAULT => None,
        STRATA_BUCKET_HOUR => Some(BucketWidth::Hour),
        STRATA_BUCKET_DAY => Some(BucketWidth::Day),
        STRATA_BUCKET_WEEK => Some(BucketWidth::Week),
        STRATA_BUCKET_MONTH => Some(BucketWidth::Month),
        other => return Err(Fail::invalid(format!("unknown bucket width {other}"))),
    };
    let size = |v: u64, what: &str| {
        usize::try_from(v).map_err(|_| Fail::invalid(format!("{what} {v} is too large")))
    };
    out.cache_bytes = size(c.cache_bytes, "cache_bytes")?;
    out.max_payload_bytes = size(c.max_payload_bytes, "max_payload_bytes")?;
    out.max_events_per_append = c.max_events_per_append as usize;
    out.read_connections = c.read_connections as usize;
    out.busy_timeout_ms = c.busy_timeout_ms;
    Ok(out)
}

unsafe fn open_with(
    out: *mut *mut strata_store,
    open: impl FnOnce() -> Result<Store, Fail>,
) -> strata_status {
    unsafe { clear_out(out, std::ptr::null_mut()) };
    guard(|| {
        if out.is_null() {
            return Err(Fail::invalid("out_store is NULL"));
        }
        let store = open()?;
        let handle = into_handle(strata_store {
            store: RwLock::new(Some(store)),
            closed: Arc::new(AtomicBool::new(false)),
            projections: Mutex::new(Projections::default()),
        });
        unsafe { write_out(out, handle, "out_store") }?;
        Ok(STRATA_OK)
    })
}

/// Opens (creating if needed) the store at `path` with `options` (NULL: the defaults).
///
/// On success `*out_store` is a new handle owned by the caller: release it with
/// `strata_store_free`. On failure `*out_store` is NULL.
///
/// # Safety
///
/// `path` is NULL or a NUL-terminated string; `options` is NULL or readable for one
/// `strata_options`; `out_store` is NULL or writable for one `strata_store *`.
#[no_mangle]
pub unsafe extern "C" fn strata_open(
    path: *const c_char,
    options: *const strata_options,
    out_store: *mut *mut strata_store,
) -> strata_status {
    unsafe {
        open_with(out_store, || {
            let path = str_arg(path, "path")?;
            Ok(Store::open(path, to_options(options)?)?)
        })
    }
}

/// Opens a new private store held in memory (gone when closed). Ownership as `strata_open`.
///
/// # Safety
///
/// `options` is NULL or readable for one `strata_options`; `out_store` is NULL or writable for
/// one `strata_store *`.
#[no_mangle]
pub unsafe extern "C" fn strata_open_in_memory(
    options: *const strata_options,
    out_store: *mut *mut strata_store,
) -> strata_status {
    unsafe {
        open_with(out_store, || {
            Ok(Store::open_in_memory(to_options(options)?)?)
        })
    }
}

/// Closes the store: waits for queued appends, stops the writer and the projection runner.
/// The handle stays allocated: later calls on it return `STRATA_CLOSED`, a second
/// `strata_close` returns `STRATA_MISUSE`. Release it with `strata_store_free`.
///
/// # Safety
///
/// `store` is NULL or any pointer, but a live handle must not be freed by another thread during
/// the call.
#[no_mangle]
pub unsafe extern "C" fn strata_close(store: *mut strata_store) -> strata_status {
    guard(|| {
        unsafe { handle_ref(store) }?.close()?;
        Ok(STRATA_OK)
    })
}

/// Closes the store if it is open and releases the handle. NULL is accepted (`STRATA_OK`); a
/// pointer that is not a live store handle is `STRATA_MISUSE`. The pointer is dangling after.
///
/// # Safety
///
/// `store` is NULL or any pointer, but a live handle must not be freed by another thread during
/// the call.
#[no_mangle]
pub unsafe extern "C" fn strata_store_free(store: *mut strata_store) -> strata_status {
    guard(|| {
        if !store.is_null() {
            let handle = unsafe { handle_ref(store) }?;
            if handle.store.read().is_some() {
                handle.close()?;
            }
        }
        unsafe { free_handle(store) }?;
        Ok(STRATA_OK)
    })
}

/// Fills `*out_info` with the stream's version and position range. `STRATA_NOT_FOUND` when the
/// stream has no events (`*out_info` zeroed, as on every failure).
///
/// # Safety
///
/// `store` is NULL or any pointer, but a live handle must not be freed by another thread during
/// the call; `stream_id` is NULL or a NUL-terminated string; `out_info` is NULL or writable for
/// one `strata_stream_info`.
#[no_mangle]
pub unsafe extern "C" fn strata_get_stream_info(
    store: *mut strata_store,
    stream_id: *const c_char,
    out_info: *mut strata_stream_info,
) -> strata_status {
    unsafe { clear_out(out_info, strata_stream_info::default()) };
    guard(|| {
        let handle = unsafe { handle_ref(store) }?;
        let stream_id = unsafe { str_arg(stream_id, "stream_id") }?;
        if out_info.is_null() {
            return Err(Fail::invalid("out_info is NULL"));
        }
        let info = handle
            .store()?
            .stream_info(stream_id)?
            .ok_or_else(|| Fail::new(STRATA_NOT_FOUND, format!("no stream {stream_id:?}")))?;
        let value = strata_stream_info {
            version: info.version,
            first_position: info.first_position,
            last_position: info.last_position,
        };
        unsafe { write_out(out_info, value, "out_info") }?;
        Ok(STRATA_OK)
    })
}

/// Writes the position of the last committed event (0 for an empty store) to `*out_position`
/// (0 on failure).
///
/// # Safety
///
/// `store` is NULL or any pointer, but a live handle must not be freed by another thread during
/// the call; `out_position` is NULL or writable for one `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn strata_last_position(
    store: *mut strata_store,
    out_position: *mut u64,
) -> strata_status {
    unsafe { clear_out(out_position, 0) };
    guard(|| {
        let handle = unsafe { handle_ref(store) }?;
        if out_position.is_null() {
            return Err(Fail::invalid("out_position is NULL"));
        }
        let position = handle.store()?.last_position()?;
        unsafe { write_out(out_position, position, "out_position") }?;
        Ok(STRATA_OK)
    })
}
