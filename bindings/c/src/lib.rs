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
//!   a handle of another type, invalid UTF-8, lengths over `PTRDIFF_MAX`, NULL with a non-zero
//!   length, unknown enum values, closing twice.
//!
//! # Handles and their lifetime
//!
//! `strata_store` is thread-safe: any number of threads may call functions on one handle at a
//! time. Its life has two steps: `strata_close` closes the store (waits for queued appends,
//! stops the writer and the projection runner) but keeps the handle, so later calls on it
//! return `STRATA_CLOSED` and a second `strata_close` returns `STRATA_MISUSE`;
//! `strata_store_free` releases the handle (closing first if needed). After a `*_free` the
//! pointer is dangling, as after `free()`: that use cannot be detected.
//!
//! Cursors and subscriptions may be used from any thread; calls on one of them are serialized.
//! They keep the store's data alive on their own, so they may outlive `strata_close` (reads
//! still work; a subscription then ends with `STRATA_DONE`), but must be freed.
//!
//! The `strata_event` filled by `strata_cursor_next` / `strata_subscription_next` points into
//! memory owned by the cursor or subscription: valid until the next `next` call on that handle
//! or its `free`, whichever comes first. Copy what you keep.
#![allow(non_camel_case_types)]
#![warn(missing_docs)]

mod ptr;
mod status;

use std::ops::Range;
use std::os::raw::{c_char, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use strata_core::{
    BackgroundRunner, BucketWidth, Direction, Durability, Event, ExpectedVersion, NewEvent,
    Options, ProjectionPhase, ProjectionRunner, ProjectionStatus, RunnerOptions, Store,
    StreamAppend, SubscriptionFilter, Uuid,
};

use ptr::{
    clear_out, free_handle, handle_ref, id_arg, into_handle, malloc_copy, opt_str_arg, slice_arg,
    str_arg, write_out, Handle,
};
use status::{guard, Fail};
pub use status::{strata_errmsg, strata_last_actual_version, strata_status, strata_status_name};
use strata_status::*;

// ---------------------------------------------------------------------------------------------
// Constants

/// `strata_options.durability`: an append returns after the WAL is fsynced (the default).
pub const STRATA_DURABLE: u32 = 0;
/// `strata_options.durability`: no fsync per commit; a power cut may lose the last commits.
pub const STRATA_FAST: u32 = 1;

/// `strata_options.bucket_width`: the stored width, or month for a new store (the default).
pub const STRATA_BUCKET_DEFAULT: u32 = 0;
/// `strata_options.bucket_width`: one table per UTC hour.
pub const STRATA_BUCKET_HOUR: u32 = 1;
/// `strata_options.bucket_width`: one table per UTC day.
pub const STRATA_BUCKET_DAY: u32 = 2;
/// `strata_options.bucket_width`: one table per ISO week.
pub const STRATA_BUCKET_WEEK: u32 = 3;
/// `strata_options.bucket_width`: one table per calendar month.
pub const STRATA_BUCKET_MONTH: u32 = 4;

/// Expected version kind: no check.
pub const STRATA_EXPECT_ANY: u32 = 0;
/// Expected version kind: the stream must have no events.
pub const STRATA_EXPECT_NO_STREAM: u32 = 1;
/// Expected version kind: the stream must have at least one event.
pub const STRATA_EXPECT_STREAM_EXISTS: u32 = 2;
/// Expected version kind: the stream's version must equal `expected_version` (0: no events).
pub const STRATA_EXPECT_EXACT: u32 = 3;

/// Read direction: oldest first.
pub const STRATA_FORWARDS: u32 = 0;
/// Read direction: newest first.
pub const STRATA_BACKWARDS: u32 = 1;

/// Projection phase: behind the head of the log.
pub const STRATA_PHASE_CATCHING_UP: u32 = 0;
/// Projection phase: at the head of the log (as of its last batch).
pub const STRATA_PHASE_LIVE: u32 = 1;
/// Projection phase: stopped on an event it failed to apply (`fault_position`).
pub const STRATA_PHASE_FAULTED: u32 = 2;
/// Projection phase: a new version rebuilding beside the serving one.
pub const STRATA_PHASE_REBUILDING: u32 = 3;
/// Projection phase: an old version replaced by a rebuilt one.
pub const STRATA_PHASE_RETIRED: u32 = 4;

// ---------------------------------------------------------------------------------------------
// Plain structs

/// Options for `strata_open`. Fill with `strata_options_init`, then change fields.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct strata_options {
    /// `STRATA_DURABLE` or `STRATA_FAST`.
    pub durability: u32,
    /// `STRATA_BUCKET_*`; fixed when the store is created.
    pub bucket_width: u32,
    /// Bytes of the in-process event cache; 0 turns it off.
    pub cache_bytes: u64,
    /// Largest data + metadata of one event, in bytes.
    pub max_payload_bytes: u64,
    /// Most events in one append call (all streams together).
    pub max_events_per_append: u32,
    /// Read connections kept open.
    pub read_connections: u32,
    /// How long to wait for another process's write lock, in milliseconds.
    pub busy_timeout_ms: u32,
}

/// One event to append.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct strata_new_event {
    /// What happened: 1..=255 bytes of UTF-8, NUL-terminated. Required.
    pub event_type: *const c_char,
    /// The payload (`data_len` bytes; may be NULL when `data_len` is 0).
    pub data: *const u8,
    /// Length of `data`.
    pub data_len: usize,
    /// Metadata (`metadata_len` bytes; may be NULL when `metadata_len` is 0).
    pub metadata: *const u8,
    /// Length of `metadata`.
    pub metadata_len: usize,
    /// NULL, or 16 bytes: the event's id (idempotency key). NULL lets the store make one.
    pub event_id: *const u8,
}

/// One stream's part of `strata_append_multi`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct strata_stream_append {
    /// The stream: 1..=255 bytes of UTF-8, NUL-terminated.
    pub stream_id: *const c_char,
    /// `STRATA_EXPECT_*`.
    pub expected_kind: u32,
    /// The version for `STRATA_EXPECT_EXACT`; ignored otherwise.
    pub expected_version: u64,
    /// The events (`n_events` of them, at least one).
    pub events: *const strata_new_event,
    /// Number of events.
    pub n_events: usize,
}

/// What an append to one stream stored.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct strata_append_result {
    /// Position of the first event of this append.
    pub first_position: u64,
    /// Position of the last event of this append.
    pub last_position: u64,
    /// The stream's version after the append.
    pub last_version: u64,
    /// 1 when every event was already stored by an earlier append with the same ids (a retry):
    /// nothing was written and the original positions are returned.
    pub already_stored: u32,
}

/// A stored event, as a view: the pointers belong to the cursor or subscription that filled it
/// and stay valid until its next `next` call or its `free`. Strings are NOT NUL-terminated:
/// use the lengths.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct strata_event {
    /// Global position (1-based, gap-free).
    pub position: u64,
    /// Version within the stream (1-based).
    pub version: u64,
    /// When it was stored: unix microseconds, UTC.
    pub recorded_at: i64,
    /// The stream id (`stream_id_len` bytes of UTF-8, not NUL-terminated).
    pub stream_id: *const c_char,
    /// Length of `stream_id`.
    pub stream_id_len: usize,
    /// The event type (`event_type_len` bytes of UTF-8, not NUL-terminated).
    pub event_type: *const c_char,
    /// Length of `event_type`.
    pub event_type_len: usize,
    /// The payload.
    pub data: *const u8,
    /// Length of `data`.
    pub data_len: usize,
    /// The metadata.
    pub metadata: *const u8,
    /// Length of `metadata`.
    pub metadata_len: usize,
    /// The event id (UUID bytes, big-endian as in its text form).
    pub event_id: [u8; 16],
}

impl Default for strata_event {
    /// Zeroed, NULL pointers (what a failed `next` leaves).
    fn default() -> Self {
        strata_event::EMPTY
    }
}

impl strata_event {
    const EMPTY: strata_event = strata_event {
        position: 0,
        version: 0,
        recorded_at: 0,
        stream_id: std::ptr::null(),
        stream_id_len: 0,
        event_type: std::ptr::null(),
        event_type_len: 0,
        data: std::ptr::null(),
        data_len: 0,
        metadata: std::ptr::null(),
        metadata_len: 0,
        event_id: [0; 16],
    };

    fn view(event: &Event) -> strata_event {
        strata_event {
            position: event.position,
            version: event.version,
            recorded_at: event.recorded_at,
            stream_id: event.stream_id.as_ptr().cast(),
            stream_id_len: event.stream_id.len(),
            event_type: event.event_type.as_ptr().cast(),
            event_type_len: event.event_type.len(),
            data: event.data.as_ptr(),
            data_len: event.data.len(),
            metadata: event.metadata.as_ptr(),
            metadata_len: event.metadata.len(),
            event_id: *event.event_id.as_bytes(),
        }
    }
}

/// A stream's version and position range.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct strata_stream_info {
    /// Its current version: the version of its last event.
    pub version: u64,
    /// Position of its first event.
    pub first_position: u64,
    /// Position of its last event.
    pub last_position: u64,
}

/// A projection's status, as stored in the file.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct strata_projection_status {
    /// Its name, NUL-terminated (names are at most 64 bytes).
    pub name: [c_char; 72],
    /// Its version.
    pub version: u32,
    /// `STRATA_PHASE_*`.
    pub phase: u32,
    /// Last position folded into its state.
    pub checkpoint: u64,
    /// Events between the checkpoint and the head of the log.
    pub lag: u64,
    /// The position it failed on when `phase` is `STRATA_PHASE_FAULTED`, else 0.
    pub fault_position: u64,
}

impl strata_projection_status {
    const EMPTY: strata_projection_status = strata_projection_status {
        name: [0; 72],
        version: 0,
        phase: 0,
        checkpoint: 0,
        lag: 0,
        fault_position: 0,
    };

    fn from_status(status: &ProjectionStatus) -> strata_projection_status {
        let mut out = strata_projection_status::EMPTY;
        for (slot, byte) in out.name.iter_mut().zip(status.name.bytes().take(71)) {
            *slot = byte as c_char;
        }
        out.version = status.version;
        out.checkpoint = status.checkpoint;
        out.lag = status.lag;
        (out.phase, out.fault_position) = match &status.phase {
            ProjectionPhase::CatchingUp => (STRATA_PHASE_CATCHING_UP, 0),
            ProjectionPhase::Live => (STRATA_PHASE_LIVE, 0),
            ProjectionPhase::Faulted { position, .. } => (STRATA_PHASE_FAULTED, *position),
            ProjectionPhase::Rebuilding => (STRATA_PHASE_REBUILDING, 0),
            ProjectionPhase::Retired => (STRATA_PHASE_RETIRED, 0),
        };
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Handles

/// An open store (opaque). See the module documentation for its two-step life.
#[repr(C)]
pub struct strata_store {
    magic: u64,
    /// `None` once closed.
    store: RwLock<Option<Store>>,
    /// Set by `strata_close`; subscriptions read it to tell "closed" from "timed out".
    closed: Arc<AtomicBool>,
    projections: Mutex<Projections>,
}

#[derive(Default)]
struct Projections {
    runner: Option<ProjectionRunner>,
    background: Option<BackgroundRunner>,
}

impl Handle for strata_store {
    const MAGIC: u64 = 0x5354_5241_5354_4f52; // "STRASTOR"
    const NAME: &'static str = "strata_store";
}

impl strata_store {
    fn store(&self) -> Result<Store, Fail> {
        self.store
            .read()
            .clone()
            .ok_or_else(|| Fail::new(STRATA_CLOSED, "the store is closed"))
    }

    fn runner(&self) -> Result<ProjectionRunner, Fail> {
        let store = self.store()?;
        let mut projections = self.projections.lock();
        if let Some(runner) = &projections.runner {
            return Ok(runner.clone());
        }
        let runner = ProjectionRunner::new(&store, RunnerOptions::default())?;
        projections.runner = Some(runner.clone());
        Ok(runner)
    }

    fn close(&self) -> Result<(), Fail> {
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

/// Where a cursor continues.
enum Source {
    Stream {
        stream_id: String,
        next_version: u64,
        direction: Direction,
    },
    All {
        next_position: u64,
    },
    ByType {
        types: Vec<String>,
        recorded: Range<i64>,
        next_position: u64,
    },
}

struct CursorState {
    store: Store,
    source: Source,
    /// Events still to deliver (`u64::MAX`: no limit).
    remaining: u64,
    /// The source has no more events after `page`.
    exhausted: bool,
    /// The current page; the event the last `next` returned is `page[next - 1]`, the memory
    /// its view points into (kept until the page is replaced).
    page: Vec<Event>,
    /// Index in `page` of the event the next `next` returns.
    next: usize,
}

/// Events fetched per page by cursors.
const CURSOR_PAGE: u64 = 1_000;

impl CursorState {
    fn fetch(&mut self) -> Result<(), Fail> {
        if self.exhausted || self.remaining == 0 {
            self.exhausted = true;
            return Ok(());
        }
        let want = self.remaining.min(CURSOR_PAGE) as usize;
        let page = match &mut self.source {
            Source::Stream {
                stream_id,
                next_version,
                direction,
            } => {
                let page = if *next_version == 0 {
                    Vec::new()
                } else {
                    self.store
                        .read_stream(stream_id, *next_version, *direction, want)?
                };
                if let Some(last) = page.last() {
                    *next_version = match direction {
                        Direction::Forwards => last.version + 1,
                        Direction::Backwards => last.version - 1,
                    };
                }
                page
            }
            Source::All { next_position } => {
                let page = self.store.read_all(*next_position, want)?;
                if let Some(last) = page.last() {
                    *next_position = last.position + 1;
                }
                page
            }
            Source::ByType {
                types,
                recorded,
                next_position,
            } => {
                let names: Vec<&str> = types.iter().map(String::as_str).collect();
                let page =
                    self.store
                        .read_by_type(&names, recorded.clone(), *next_position, want)?;
                if let Some(last) = page.last() {
                    *next_position = last.position + 1;
                }
                page
            }
        };
        if page.len() < want {
            self.exhausted = true;
        }
        self.remaining -= page.len() as u64;
        self.page = page;
        self.next = 0;
        Ok(())
    }

    fn next(&mut self) -> Result<Option<&Event>, Fail> {
        if self.next == self.page.len() {
            self.page = Vec::new();
            self.next = 0;
            self.fetch()?;
        }
        let event = self.page.get(self.next);
        self.next += usize::from(event.is_some());
        Ok(event)
    }
}

/// A read cursor (opaque): `strata_cursor_next` until `STRATA_DONE`, then `strata_cursor_free`.
#[repr(C)]
pub struct strata_cursor {
    magic: u64,
    state: Mutex<CursorState>,
}

impl Handle for strata_cursor {
    const MAGIC: u64 = 0x5354_5241_4355_5253; // "STRACURS"
    const NAME: &'static str = "strata_cursor";
}

/// A subscription (opaque): `strata_subscription_next` waits for events.
#[repr(C)]
pub struct strata_subscription {
    magic: u64,
    closed: Arc<AtomicBool>,
    state: Mutex<(strata_core::Subscription, Option<Event>)>,
}

impl Handle for strata_subscription {
    const MAGIC: u64 = 0x5354_5241_5355_4253; // "STRASUBS"
    const NAME: &'static str = "strata_subscription";
}

// ---------------------------------------------------------------------------------------------
// Library

/// The library's version, such as `"0.1.0"`. Static storage.
#[no_mangle]
pub extern "C" fn strata_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Releases a buffer the library returned (`strata_metrics_text`, `strata_projection_query`).
/// NULL is accepted and does nothing.
#[no_mangle]
pub extern "C" fn strata_free(buffer: *mut c_void) {
    let _ = std::panic::catch_unwind(|| ptr::malloc_free(buffer));
}

// ---------------------------------------------------------------------------------------------
// Opening and closing

/// Fills `*options` with the defaults: Durable, the stored bucket width (month for a new store),
/// a 64 MiB cache, 16 MiB payloads, 10,000 events per append, 4 read connections, 5 s busy
/// timeout. Returns `STRATA_INVALID_ARGUMENT` if `options` is NULL.
#[no_mangle]
pub extern "C" fn strata_options_init(options: *mut strata_options) -> strata_status {
    guard(|| {
        let value = strata_options::default();
        write_out(options, value, "options")?;
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

fn to_options(options: *const strata_options) -> Result<Options, Fail> {
    let mut out = Options::default();
    if options.is_null() {
        return Ok(out);
    }
    let c = slice_arg(options, 1, "options")?[0];
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

fn open_with(
    out: *mut *mut strata_store,
    open: impl FnOnce() -> Result<Store, Fail>,
) -> strata_status {
    clear_out(out, std::ptr::null_mut());
    guard(|| {
        if out.is_null() {
            return Err(Fail::invalid("out_store is NULL"));
        }
        let store = open()?;
        let handle = into_handle(strata_store {
            magic: strata_store::MAGIC,
            store: RwLock::new(Some(store)),
            closed: Arc::new(AtomicBool::new(false)),
            projections: Mutex::new(Projections::default()),
        });
        write_out(out, handle, "out_store")?;
        Ok(STRATA_OK)
    })
}

/// Opens (creating if needed) the store at `path` with `options` (NULL: the defaults).
///
/// On success `*out_store` is a new handle owned by the caller: release it with
/// `strata_store_free`. On failure `*out_store` is NULL.
#[no_mangle]
pub extern "C" fn strata_open(
    path: *const c_char,
    options: *const strata_options,
    out_store: *mut *mut strata_store,
) -> strata_status {
    open_with(out_store, || {
        let path = str_arg(path, "path")?;
        Ok(Store::open(path, to_options(options)?)?)
    })
}

/// Opens a new private store held in memory (gone when closed). Ownership as `strata_open`.
#[no_mangle]
pub extern "C" fn strata_open_in_memory(
    options: *const strata_options,
    out_store: *mut *mut strata_store,
) -> strata_status {
    open_with(out_store, || {
        Ok(Store::open_in_memory(to_options(options)?)?)
    })
}

/// Closes the store: waits for queued appends, stops the writer and the projection runner.
/// The handle stays allocated: later calls on it return `STRATA_CLOSED`, a second
/// `strata_close` returns `STRATA_MISUSE`. Release it with `strata_store_free`.
#[no_mangle]
pub extern "C" fn strata_close(store: *mut strata_store) -> strata_status {
    guard(|| {
        handle_ref(store)?.close()?;
        Ok(STRATA_OK)
    })
}

/// Closes the store if it is open and releases the handle. NULL is accepted (`STRATA_OK`); a
/// pointer that is not a live store handle is `STRATA_MISUSE`. The pointer is dangling after.
#[no_mangle]
pub extern "C" fn strata_store_free(store: *mut strata_store) -> strata_status {
    guard(|| {
        if !store.is_null() {
            let handle = handle_ref(store)?;
            if handle.store.read().is_some() {
                handle.close()?;
            }
        }
        free_handle(store)?;
        Ok(STRATA_OK)
    })
}

// ---------------------------------------------------------------------------------------------
// Appending

fn expected(kind: u32, version: u64) -> Result<ExpectedVersion, Fail> {
    Ok(match kind {
        STRATA_EXPECT_ANY => ExpectedVersion::Any,
        STRATA_EXPECT_NO_STREAM => ExpectedVersion::NoStream,
        STRATA_EXPECT_STREAM_EXISTS => ExpectedVersion::StreamExists,
        STRATA_EXPECT_EXACT => ExpectedVersion::Exact(version),
        other => {
            return Err(Fail::invalid(format!(
                "unknown expected version kind {other}"
            )))
        }
    })
}

fn new_events(events: *const strata_new_event, n_events: usize) -> Result<Vec<NewEvent>, Fail> {
    slice_arg(events, n_events, "events")?
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let event_type = str_arg(e.event_type, &format!("events[{i}].event_type"))?;
            let data = slice_arg(e.data, e.data_len, &format!("events[{i}].data"))?;
            let metadata = slice_arg(e.metadata, e.metadata_len, &format!("events[{i}].metadata"))?;
            let mut event = NewEvent::new(event_type, strata_core::Bytes::copy_from_slice(data));
            if !metadata.is_empty() {
                event.metadata = strata_core::Bytes::copy_from_slice(metadata);
            }
            event.event_id = id_arg(e.event_id).map(Uuid::from_bytes);
            Ok(event)
        })
        .collect()
}

fn to_result(result: &strata_core::AppendResult) -> strata_append_result {
    strata_append_result {
        first_position: result.first_position,
        last_position: result.last_position,
        last_version: result.last_version,
        already_stored: u32::from(result.already_stored),
    }
}

/// Appends `n_events` events to `stream_id` if its version satisfies the expectation
/// (`expected_kind` is a `STRATA_EXPECT_*`; `expected_version` is used by `STRATA_EXPECT_EXACT`).
/// All or nothing. The event bytes are copied; the caller keeps ownership of everything passed.
///
/// On success fills `*out_result` (may be NULL if not wanted). On failure `*out_result` is
/// zeroed; on `STRATA_CONFLICT` the actual version is `strata_last_actual_version()`.
#[no_mangle]
pub extern "C" fn strata_append(
    store: *mut strata_store,
    stream_id: *const c_char,
    expected_kind: u32,
    expected_version: u64,
    events: *const strata_new_event,
    n_events: usize,
    out_result: *mut strata_append_result,
) -> strata_status {
    clear_out(out_result, strata_append_result::default());
    guard(|| {
        let handle = handle_ref(store)?;
        let stream_id = str_arg(stream_id, "stream_id")?;
        let expected = expected(expected_kind, expected_version)?;
        let events = new_events(events, n_events)?;
        let result = handle.store()?.append(stream_id, expected, events)?;
        if !out_result.is_null() {
            write_out(out_result, to_result(&result), "out_result")?;
        }
        Ok(STRATA_OK)
    })
}

/// Appends to several streams atomically, each part with its own expected version: every part
/// is stored or none is. `out_results` (may be NULL) receives `n_parts` results in the order of
/// `parts`; on failure they are zeroed.
#[no_mangle]
pub extern "C" fn strata_append_multi(
    store: *mut strata_store,
    parts: *const strata_stream_append,
    n_parts: usize,
    out_results: *mut strata_append_result,
) -> strata_status {
    guard(|| {
        let handle = handle_ref(store)?;
        let parts = slice_arg(parts, n_parts, "parts")?;
        for i in 0..parts.len() {
            clear_out(out_results.wrapping_add(i), strata_append_result::default());
        }
        let mut appends = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let stream_id = str_arg(part.stream_id, &format!("parts[{i}].stream_id"))?;
            appends.push(StreamAppend::new(
                stream_id,
                expected(part.expected_kind, part.expected_version)?,
                new_events(part.events, part.n_events)?,
            ));
        }
        let results = handle.store()?.append_multi(appends)?;
        if !out_results.is_null() {
            for (i, result) in results.iter().enumerate() {
                write_out(
                    out_results.wrapping_add(i),
                    to_result(result),
                    "out_results",
                )?;
            }
        }
        Ok(STRATA_OK)
    })
}

// ---------------------------------------------------------------------------------------------
// Reading

fn open_cursor(
    store: *mut strata_store,
    out: *mut *mut strata_cursor,
    max_count: u64,
    source: impl FnOnce() -> Result<Source, Fail>,
) -> strata_status {
    clear_out(out, std::ptr::null_mut());
    guard(|| {
        let handle = handle_ref(store)?;
        if out.is_null() {
            return Err(Fail::invalid("out_cursor is NULL"));
        }
        let mut state = CursorState {
            store: handle.store()?,
            source: source()?,
            remaining: if max_count == 0 { u64::MAX } else { max_count },
            exhausted: false,
            page: Vec::new(),
            next: 0,
        };
        // The first page now, so that bad arguments fail here rather than on the first `next`.
        state.fetch()?;
        let cursor = into_handle(strata_cursor {
            magic: strata_cursor::MAGIC,
            state: Mutex::new(state),
        });
        write_out(out, cursor, "out_cursor")?;
        Ok(STRATA_OK)
    })
}

/// Opens a cursor over the events of `stream_id` from version `from_version` (inclusive; 0 means
/// the first event in `direction`: 1 forwards, the last backwards), in `direction`
/// (`STRATA_FORWARDS`/`STRATA_BACKWARDS`), at most `max_count` events (0: no limit). An unknown
/// stream reads empty.
///
/// On success `*out_cursor` is a new cursor owned by the caller (`strata_cursor_free`); on
/// failure it is NULL.
#[no_mangle]
pub extern "C" fn strata_read_stream(
    store: *mut strata_store,
    stream_id: *const c_char,
    from_version: u64,
    direction: u32,
    max_count: u64,
    out_cursor: *mut *mut strata_cursor,
) -> strata_status {
    open_cursor(store, out_cursor, max_count, || {
        let stream_id = str_arg(stream_id, "stream_id")?.to_owned();
        let direction = match direction {
            STRATA_FORWARDS => Direction::Forwards,
            STRATA_BACKWARDS => Direction::Backwards,
            other => return Err(Fail::invalid(format!("unknown direction {other}"))),
        };
        let next_version = match (from_version, direction) {
            (0, Direction::Forwards) => 1,
            (0, Direction::Backwards) => u64::MAX,
            (v, _) => v,
        };
        Ok(Source::Stream {
            stream_id,
            next_version,
            direction,
        })
    })
}

/// Opens a cursor over every event from position `from_position` (inclusive), in position
/// order, at most `max_count` (0: no limit). Ownership as `strata_read_stream`.
#[no_mangle]
pub extern "C" fn strata_read_all(
    store: *mut strata_store,
    from_position: u64,
    max_count: u64,
    out_cursor: *mut *mut strata_cursor,
) -> strata_status {
    open_cursor(store, out_cursor, max_count, || {
        Ok(Source::All {
            next_position: from_position.max(1),
        })
    })
}

/// Opens a cursor over the events whose type is one of the `n_types` strings of `event_types`,
/// recorded in `[recorded_from, recorded_to)` (unix microseconds; `INT64_MIN`/`INT64_MAX` for
/// no bound), from position `from_position`, at most `max_count` (0: no limit). Ownership as
/// `strata_read_stream`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn strata_read_by_type(
    store: *mut strata_store,
    event_types: *const *const c_char,
    n_types: usize,
    recorded_from: i64,
    recorded_to: i64,
    from_position: u64,
    max_count: u64,
    out_cursor: *mut *mut strata_cursor,
) -> strata_status {
    open_cursor(store, out_cursor, max_count, || {
        let types = string_array(event_types, n_types, "event_types")?;
        if types.is_empty() {
            return Err(Fail::invalid("event_types is empty"));
        }
        Ok(Source::ByType {
            types,
            recorded: recorded_from..recorded_to,
            next_position: from_position.max(1),
        })
    })
}

fn string_array(ptr: *const *const c_char, n: usize, what: &str) -> Result<Vec<String>, Fail> {
    slice_arg(ptr, n, what)?
        .iter()
        .enumerate()
        .map(|(i, &s)| str_arg(s, &format!("{what}[{i}]")).map(str::to_owned))
        .collect()
}

/// Advances the cursor. `STRATA_OK`: `*out_event` is the next event, a view valid until the
/// next `strata_cursor_next` on this cursor or its `strata_cursor_free`. `STRATA_DONE`: no more
/// events (`*out_event` zeroed). On failure `*out_event` is zeroed and the cursor stays usable.
#[no_mangle]
pub extern "C" fn strata_cursor_next(
    cursor: *mut strata_cursor,
    out_event: *mut strata_event,
) -> strata_status {
    clear_out(out_event, strata_event::EMPTY);
    guard(|| {
        let cursor = handle_ref(cursor)?;
        if out_event.is_null() {
            return Err(Fail::invalid("out_event is NULL"));
        }
        let mut state = cursor.state.lock();
        match state.next()? {
            Some(event) => {
                write_out(out_event, strata_event::view(event), "out_event")?;
                Ok(STRATA_OK)
            }
            None => Ok(STRATA_DONE),
        }
    })
}

/// Fills up to `capacity` events at once into `out_events[0..]` and their number into
/// `*out_count`: the same events successive `strata_cursor_next` calls would return, with the
/// cost of one call. `STRATA_OK` with `*out_count >= 1` (possibly fewer than `capacity` even
/// when more follow), or `STRATA_DONE` with `*out_count == 0`. All the views stay valid until
/// the next `next`/`next_batch` call on this cursor or its free. On failure `*out_count` is 0.
#[no_mangle]
pub extern "C" fn strata_cursor_next_batch(
    cursor: *mut strata_cursor,
    out_events: *mut strata_event,
    capacity: usize,
    out_count: *mut usize,
) -> strata_status {
    clear_out(out_count, 0);
    guard(|| {
        let cursor = handle_ref(cursor)?;
        if out_count.is_null() {
            return Err(Fail::invalid("out_count is NULL"));
        }
        ptr::check_out_array(out_events, capacity, "out_events")?;
        let mut state = cursor.state.lock();
        if state.next == state.page.len() {
            state.page = Vec::new();
            state.next = 0;
            state.fetch()?;
        }
        let start = state.next;
        let count = capacity.min(state.page.len() - start);
        for (i, event) in state.page[start..start + count].iter().enumerate() {
            write_out(
                out_events.wrapping_add(i),
                strata_event::view(event),
                "out_events",
            )?;
        }
        state.next += count;
        write_out(out_count, count, "out_count")?;
        Ok(if count == 0 { STRATA_DONE } else { STRATA_OK })
    })
}

/// Releases a cursor (and the event its last `next` returned). NULL is accepted.
#[no_mangle]
pub extern "C" fn strata_cursor_free(cursor: *mut strata_cursor) -> strata_status {
    guard(|| {
        free_handle(cursor)?;
        Ok(STRATA_OK)
    })
}

/// Fills `*out_info` with the stream's version and position range. `STRATA_NOT_FOUND` when the
/// stream has no events (`*out_info` zeroed, as on every failure).
#[no_mangle]
pub extern "C" fn strata_get_stream_info(
    store: *mut strata_store,
    stream_id: *const c_char,
    out_info: *mut strata_stream_info,
) -> strata_status {
    clear_out(out_info, strata_stream_info::default());
    guard(|| {
        let handle = handle_ref(store)?;
        let stream_id = str_arg(stream_id, "stream_id")?;
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
        write_out(out_info, value, "out_info")?;
        Ok(STRATA_OK)
    })
}

/// Writes the position of the last committed event (0 for an empty store) to `*out_position`
/// (0 on failure).
#[no_mangle]
pub extern "C" fn strata_last_position(
    store: *mut strata_store,
    out_position: *mut u64,
) -> strata_status {
    clear_out(out_position, 0);
    guard(|| {
        let handle = handle_ref(store)?;
        if out_position.is_null() {
            return Err(Fail::invalid("out_position is NULL"));
        }
        let position = handle.store()?.last_position()?;
        write_out(out_position, position, "out_position")?;
        Ok(STRATA_OK)
    })
}

// ---------------------------------------------------------------------------------------------
// Subscriptions

/// Subscribes to the events from position `from_position` (inclusive; 0 or 1: the whole log),
/// history first, then live events, in position order. Filters (all optional, combined):
/// `stream_id` (exact stream, or NULL), `stream_prefix` (or NULL; not with `stream_id`), and
/// `n_types` event types (`event_types` may be NULL when `n_types` is 0: every type).
///
/// On success `*out_subscription` is a new handle owned by the caller
/// (`strata_subscription_free`); on failure it is NULL.
#[no_mangle]
pub extern "C" fn strata_subscribe(
    store: *mut strata_store,
    from_position: u64,
    stream_id: *const c_char,
    stream_prefix: *const c_char,
    event_types: *const *const c_char,
    n_types: usize,
    out_subscription: *mut *mut strata_subscription,
) -> strata_status {
    clear_out(out_subscription, std::ptr::null_mut());
    guard(|| {
        let handle = handle_ref(store)?;
        if out_subscription.is_null() {
            return Err(Fail::invalid("out_subscription is NULL"));
        }
        let stream_id = opt_str_arg(stream_id, "stream_id")?;
        let stream_prefix = opt_str_arg(stream_prefix, "stream_prefix")?;
        let types = string_array(event_types, n_types, "event_types")?;
        let mut filter = match (stream_id, stream_prefix) {
            (Some(_), Some(_)) => {
                return Err(Fail::invalid("give stream_id or stream_prefix, not both"))
            }
            (Some(stream), None) => SubscriptionFilter::stream(stream),
            (None, Some(prefix)) => SubscriptionFilter::stream_prefix(prefix),
            (None, None) => SubscriptionFilter::all(),
        };
        if !types.is_empty() {
            filter = filter.with_event_types(&types);
        }
        let subscription = handle.store()?.subscribe(from_position, filter)?;
        let sub = into_handle(strata_subscription {
            magic: strata_subscription::MAGIC,
            closed: handle.closed.clone(),
            state: Mutex::new((subscription, None)),
        });
        write_out(out_subscription, sub, "out_subscription")?;
        Ok(STRATA_OK)
    })
}

/// Waits up to `timeout_ms` milliseconds (0: do not wait) for the next event.
/// `STRATA_OK`: `*out_event` is a view valid until the next `strata_subscription_next` on this
/// subscription or its free. `STRATA_TIMEOUT`: none arrived in time. `STRATA_DONE`: the store
/// was closed and every committed event was delivered. `*out_event` is zeroed unless `STRATA_OK`.
#[no_mangle]
pub extern "C" fn strata_subscription_next(
    subscription: *mut strata_subscription,
    timeout_ms: u32,
    out_event: *mut strata_event,
) -> strata_status {
    clear_out(out_event, strata_event::EMPTY);
    guard(|| {
        let sub = handle_ref(subscription)?;
        if out_event.is_null() {
            return Err(Fail::invalid("out_event is NULL"));
        }
        let mut state = sub.state.lock();
        let (subscription, current) = &mut *state;
        *current = None;
        *current = subscription.next_timeout(Duration::from_millis(timeout_ms.into()))?;
        match current {
            Some(event) => {
                write_out(out_event, strata_event::view(event), "out_event")?;
                Ok(STRATA_OK)
            }
            None if sub.closed.load(Ordering::SeqCst) => Ok(STRATA_DONE),
            None => Ok(STRATA_TIMEOUT),
        }
    })
}

/// Releases a subscription. NULL is accepted.
#[no_mangle]
pub extern "C" fn strata_subscription_free(
    subscription: *mut strata_subscription,
) -> strata_status {
    guard(|| {
        free_handle(subscription)?;
        Ok(STRATA_OK)
    })
}

// ---------------------------------------------------------------------------------------------
// Projections (run by a runner the store handle owns, created on first use)

fn write_status(
    out: *mut strata_projection_status,
    status: &ProjectionStatus,
) -> Result<strata_status, Fail> {
    if !out.is_null() {
        write_out(
            out,
            strata_projection_status::from_status(status),
            "out_status",
        )?;
    }
    Ok(STRATA_OK)
}

/// Loads a projection compiled to a WebAssembly component (`wasm_len` bytes, copied) with the
/// default plugin limits and registers it with the store's runner. A known name resumes from its
/// checkpoint; a new version rebuilds beside the old one. Events are folded by
/// `strata_projection_catch_up` or by the background runner (`strata_projections_start`).
/// `*out_status` (may be NULL) receives its status, including its name; zeroed on failure.
/// Invalid bytes give `STRATA_INVALID_ARGUMENT`.
#[no_mangle]
pub extern "C" fn strata_projection_register_wasm(
    store: *mut strata_store,
    wasm: *const u8,
    wasm_len: usize,
    out_status: *mut strata_projection_status,
) -> strata_status {
    clear_out(out_status, strata_projection_status::EMPTY);
    guard(|| {
        let handle = handle_ref(store)?;
        let wasm = slice_arg(wasm, wasm_len, "wasm")?;
        let runner = handle.runner()?;
        let engine = strata_wasm::PluginEngine::shared()
            .map_err(|e| Fail::new(STRATA_INTERNAL, format!("plugin engine: {e}")))?;
        let projection =
            strata_wasm::WasmProjection::load(&engine, wasm, strata_wasm::PluginLimits::default())?;
        let status = runner.register(Box::new(projection))?;
        write_status(out_status, &status)
    })
}

fn projection_call(
    store: *mut strata_store,
    name: *const c_char,
    out_status: *mut strata_projection_status,
    call: impl FnOnce(&ProjectionRunner, &str) -> Result<ProjectionStatus, strata_core::RunnerError>,
) -> strata_status {
    clear_out(out_status, strata_projection_status::EMPTY);
    guard(|| {
        let handle = handle_ref(store)?;
        let name = str_arg(name, "name")?;
        let runner = handle.runner()?;
        let status = call(&runner, name)?;
        write_status(out_status, &status)
    })
}

/// The stored status of the projection `name` (registered in this process or not).
/// `STRATA_NOT_FOUND` if no such projection is stored. `*out_status` zeroed on failure.
#[no_mangle]
pub extern "C" fn strata_projection_status_get(
    store: *mut strata_store,
    name: *const c_char,
    out_status: *mut strata_projection_status,
) -> strata_status {
    projection_call(store, name, out_status, |runner, name| runner.status(name))
}

/// Runs batches of the registered projection `name` until it is caught up with the log (or
/// faulted: then `STRATA_OK` with `phase == STRATA_PHASE_FAULTED`). `STRATA_NOT_FOUND` if it
/// is not registered in this store handle.
#[no_mangle]
pub extern "C" fn strata_projection_catch_up(
    store: *mut strata_store,
    name: *const c_char,
    out_status: *mut strata_projection_status,
) -> strata_status {
    projection_call(store, name, out_status, |runner, name| {
        runner.catch_up(name)
    })
}

/// Deletes the state and checkpoint of every version of `name`: it rebuilds from position 1
/// on the next catch-up.
#[no_mangle]
pub extern "C" fn strata_projection_reset(
    store: *mut strata_store,
    name: *const c_char,
    out_status: *mut strata_projection_status,
) -> strata_status {
    projection_call(store, name, out_status, |runner, name| runner.reset(name))
}

/// Clears a fault: the next batch retries the event the projection failed on.
#[no_mangle]
pub extern "C" fn strata_projection_resume(
    store: *mut strata_store,
    name: *const c_char,
    out_status: *mut strata_projection_status,
) -> strata_status {
    projection_call(store, name, out_status, |runner, name| runner.resume(name))
}

/// Answers `request` (`request_len` bytes; the projection's own format, MessagePack by
/// convention) from the projection's committed state.
///
/// On success `*out_response` is a buffer of `*out_response_len` bytes owned by the caller:
/// release it with `strata_free`. On failure they are NULL and 0.
#[no_mangle]
pub extern "C" fn strata_projection_query(
    store: *mut strata_store,
    name: *const c_char,
    request: *const u8,
    request_len: usize,
    out_response: *mut *mut u8,
    out_response_len: *mut usize,
) -> strata_status {
    clear_out(out_response, std::ptr::null_mut());
    clear_out(out_response_len, 0);
    guard(|| {
        let handle = handle_ref(store)?;
        let name = str_arg(name, "name")?;
        let request = slice_arg(request, request_len, "request")?;
        if out_response.is_null() || out_response_len.is_null() {
            return Err(Fail::invalid("out_response or out_response_len is NULL"));
        }
        let response = handle.runner()?.query(name, request)?;
        let buffer = malloc_copy(&response, false)?;
        write_out(out_response, buffer, "out_response")?;
        write_out(out_response_len, response.len(), "out_response_len")?;
        Ok(STRATA_OK)
    })
}

/// Starts a background thread that keeps every projection registered in this handle caught up,
/// waking on each commit and at least every `idle_wake_ms`. Stopped by `strata_close` or
/// `strata_projections_stop`. Starting it twice is `STRATA_MISUSE`.
#[no_mangle]
pub extern "C" fn strata_projections_start(
    store: *mut strata_store,
    idle_wake_ms: u32,
) -> strata_status {
    guard(|| {
        let handle = handle_ref(store)?;
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
#[no_mangle]
pub extern "C" fn strata_projections_stop(store: *mut strata_store) -> strata_status {
    guard(|| {
        let handle = handle_ref(store)?;
        handle.store()?;
        let background = handle.projections.lock().background.take();
        drop(background);
        Ok(STRATA_OK)
    })
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// The store's metrics in the Prometheus text format.
///
/// On success `*out_text` is a NUL-terminated string owned by the caller: release it with
/// `strata_free`. On failure it is NULL.
#[no_mangle]
pub extern "C" fn strata_metrics_text(
    store: *mut strata_store,
    out_text: *mut *mut c_char,
) -> strata_status {
    clear_out(out_text, std::ptr::null_mut());
    guard(|| {
        let handle = handle_ref(store)?;
        if out_text.is_null() {
            return Err(Fail::invalid("out_text is NULL"));
        }
        let text = handle.store()?.metrics_text()?;
        let buffer = malloc_copy(text.as_bytes(), true)?;
        write_out(out_text, buffer.cast(), "out_text")?;
        Ok(STRATA_OK)
    })
}
