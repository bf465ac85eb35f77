//! `strata_cursor`: paged reads by stream, by position, by event type, by DCB query.

use std::ops::Range;
use std::os::raw::c_char;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use strata_core::{Direction, Event, Query, Store};

use crate::ptr::{
    clear_out, free_handle, handle_ref, into_handle, slice_arg, str_arg, write_out, Handle,
};
use crate::status::strata_status::{self, *};
use crate::status::{guard, Fail};
use crate::store::strata_store;
use crate::types::*;

/// Where a cursor continues.
pub(crate) enum Source {
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
    /// A DCB query (`strata_read_query`): the events after `after` that match it.
    Query {
        query: Query,
        after: u64,
    },
}

struct CursorState {
    store: Store,
    /// The store handle's closed flag: a cursor reads through the store, so once the store is
    /// closed (or freed) its cursors answer `STRATA_CLOSED` like every call on the store.
    closed: Arc<AtomicBool>,
    source: Source,
    /// Events still to deliver (`u64::MAX`: no limit).
    remaining: u64,
    /// The source has no more events after `page`.
    exhausted: bool,
    /// The current page; the event the last `next` returned is `page[next - 1]`, the memory
    /// its view points into (kept until the page is replaced).
    page: Vec<Event>,
    /// The tag views of `page` (the memory the views' `tags` point into), rebuilt with it.
    tags: PageTags,
    /// Index in `page` of the event the next `next` returns.
    next: usize,
}

/// Events fetched per page by cursors.
const CURSOR_PAGE: u64 = 1_000;

impl CursorState {
    /// `STRATA_CLOSED` once the store is closed; the page (the memory of earlier views) and the
    /// read connections' store are released then.
    fn check_open(&mut self) -> Result<(), Fail> {
        if self.closed.load(Ordering::SeqCst) {
            self.tags = PageTags::default();
            self.page = Vec::new();
            self.next = 0;
            self.exhausted = true;
            return Err(Fail::new(
                STRATA_CLOSED,
                "the store of this cursor is closed",
            ));
        }
        Ok(())
    }

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
            Source::Query { query, after } => {
                let page = self.store.read_query(query, *after, want)?;
                if let Some(last) = page.last() {
                    *after = last.position;
                }
                page
            }
        };
        if page.len() < want {
            self.exhausted = true;
        }
        self.remaining -= page.len() as u64;
        self.tags = PageTags::new(&page);
        self.page = page;
        self.next = 0;
        Ok(())
    }

    /// Drops the page when every event of it was delivered and fetches the next one.
    fn refill(&mut self) -> Result<(), Fail> {
        if self.next == self.page.len() {
            self.tags = PageTags::default();
            self.page = Vec::new();
            self.next = 0;
            self.fetch()?;
        }
        Ok(())
    }

    /// The view of the next event, or `None` at the end.
    fn next(&mut self) -> Result<Option<strata_event>, Fail> {
        self.refill()?;
        let view = self
            .page
            .get(self.next)
            .map(|event| strata_event::view(event, self.tags.of(self.next)));
        self.next += usize::from(view.is_some());
        Ok(view)
    }
}

/// A read cursor (opaque): `strata_cursor_next` until `STRATA_DONE`, then `strata_cursor_free`.
pub struct strata_cursor {
    state: Mutex<CursorState>,
}

impl Handle for strata_cursor {
    const TAG: u64 = 0x5354_5241_4355_5253; // "STRACURS"
    const NAME: &'static str = "strata_cursor";
}

// Reading

pub(crate) unsafe fn open_cursor(
    store: *mut strata_store,
    out: *mut *mut strata_cursor,
    max_count: u64,
    source: impl FnOnce() -> Result<Source, Fail>,
) -> strata_status {
    unsafe { clear_out(out, std::ptr::null_mut()) };
    guard(|| {
        let handle = unsafe { handle_ref(store) }?;
        if out.is_null() {
            return Err(Fail::invalid("out_cursor is NULL"));
        }
        let mut state = CursorState {
            store: handle.store()?,
            closed: handle.closed.clone(),
            source: source()?,
            remaining: if max_count == 0 { u64::MAX } else { max_count },
            exhausted: false,
            page: Vec::new(),
            tags: PageTags::default(),
            next: 0,
        };
        // The first page now, so that bad arguments fail here rather than on the first `next`.
        state.fetch()?;
        let cursor = into_handle(strata_cursor {
            state: Mutex::new(state),
        });
        unsafe { write_out(out, cursor, "out_cursor") }?;
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
///
/// # Safety
///
/// `store` is NULL or any pointer, but a live handle must not be freed by another thread during
/// the call; `stream_id` is NULL or a NUL-terminated string; `out_cursor` is NULL or writable
/// for one `strata_cursor`.
#[no_mangle]
pub unsafe extern "C" fn strata_read_stream(
    store: *mut strata_store,
    stream_id: *const c_char,
    from_version: u64,
    direction: u32,
    max_count: u64,
    out_cursor: *mut *mut strata_cursor,
) -> strata_status {
    unsafe {
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
}

/// Opens a cursor over every event from position `from_position` (inclusive), in position
/// order, at most `max_count` (0: no limit). Ownership as `strata_read_stream`.
///
/// # Safety
///
/// `store` is NULL or any pointer, but a live handle must not be freed by another thread during
/// the call; `out_cursor` is NULL or writable for one `strata_cursor *`.
#[no_mangle]
pub unsafe extern "C" fn strata_read_all(
    store: *mut strata_store,
    from_position: u64,
    max_count: u64,
    out_cursor: *mut *mut strata_cursor,
) -> strata_status {
    unsafe {
        open_cursor(store, out_cursor, max_count, || {
            Ok(Source::All {
                next_position: from_position.max(1),
            })
        })
    }
}

/// Opens a cursor over the events whose type is one of the `n_types` strings of `event_types`,
/// recorded in `[recorded_from, recorded_to)` (unix microseconds; `INT64_MIN`/`INT64_MAX` for
/// no bound), from position `from_position`, at most `max_count` (0: no limit). Ownership as
/// `strata_read_stream`.
///
/// # Safety
///
/// `store` is NULL or any pointer, but a live handle must not be freed by another thread during
/// the call; `event_types` is NULL or holds `n_types` readable pointers, each NULL or a
/// NUL-terminated string; `out_cursor` is NULL or writable for one `strata_cursor *`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn strata_read_by_type(
    store: *mut strata_store,
    event_types: *const *const c_char,
    n_types: usize,
    recorded_from: i64,
    recorded_to: i64,
    from_position: u64,
    max_count: u64,
    out_cursor: *mut *mut strata_cursor,
) -> strata_status {
    unsafe {
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
}

pub(crate) unsafe fn string_array(
    ptr: *const *const c_char,
    n: usize,
    what: &str,
) -> Result<Vec<String>, Fail> {
    unsafe { slice_arg(ptr, n, what) }?
        .iter()
        .enumerate()
        .map(|(i, &s)| unsafe { str_arg(s, &format!("{what}[{i}]")) }.map(str::to_owned))
        .collect()
}

/// Advances the cursor. `STRATA_OK`: `*out_event` is the next event, a view valid until the
/// next `strata_cursor_next` on this cursor or its `strata_cursor_free`. `STRATA_DONE`: no more
/// events (`*out_event` zeroed). On failure `*out_event` is zeroed and the cursor stays usable.
///
/// # Safety
///
/// `cursor` is NULL or any pointer, but a live handle must not be freed by another thread
/// during the call; `out_event` is NULL or writable for one `strata_event`.
#[no_mangle]
pub unsafe extern "C" fn strata_cursor_next(
    cursor: *mut strata_cursor,
    out_event: *mut strata_event,
) -> strata_status {
    unsafe { clear_out(out_event, strata_event::EMPTY) };
    guard(|| {
        let cursor = unsafe { handle_ref(cursor) }?;
        if out_event.is_null() {
            return Err(Fail::invalid("out_event is NULL"));
        }
        let mut state = cursor.state.lock();
        state.check_open()?;
        match state.next()? {
            Some(view) => {
                unsafe { write_out(out_event, view, "out_event") }?;
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
///
/// # Safety
///
/// `cursor` is NULL or any pointer, but a live handle must not be freed by another thread
/// during the call; `out_events` is writable for `capacity` elements; `out_count` is NULL or
/// writable for one `size_t`.
#[no_mangle]
pub unsafe extern "C" fn strata_cursor_next_batch(
    cursor: *mut strata_cursor,
    out_events: *mut strata_event,
    capacity: usize,
    out_count: *mut usize,
) -> strata_status {
    unsafe { clear_out(out_count, 0) };
    guard(|| {
        let cursor = unsafe { handle_ref(cursor) }?;
        if out_count.is_null() {
            return Err(Fail::invalid("out_count is NULL"));
        }
        crate::ptr::check_out_array(out_events, capacity, "out_events")?;
        let mut state = cursor.state.lock();
        state.check_open()?;
        state.refill()?;
        let start = state.next;
        let count = capacity.min(state.page.len() - start);
        for (i, event) in state.page[start..start + count].iter().enumerate() {
            unsafe {
                write_out(
                    out_events.wrapping_add(i),
                    strata_event::view(event, state.tags.of(start + i)),
                    "out_events",
                )
            }?;
        }
        state.next += count;
        unsafe { write_out(out_count, count, "out_count") }?;
        Ok(if count == 0 { STRATA_DONE } else { STRATA_OK })
    })
}

/// Releases a cursor (and the event its last `next` returned). NULL is accepted.
///
/// # Safety
///
/// `cursor` is NULL or any pointer, but a live handle must not be freed by another thread
/// during the call.
#[no_mangle]
pub unsafe extern "C" fn strata_cursor_free(cursor: *mut strata_cursor) -> strata_status {
    guard(|| {
        unsafe { free_handle(cursor) }?;
        Ok(STRATA_OK)
    })
}
