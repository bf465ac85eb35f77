//! `strata_subscription`: history then live events, filtered by stream and type
//! (`strata_subscribe`) or by a DCB query (`strata_subscribe_query`).

use std::os::raw::c_char;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use strata_core::{Event, SubscriptionFilter};

use crate::cursor::string_array;
use crate::ptr::{clear_out, free_handle, handle_ref, into_handle, opt_str_arg, write_out, Handle};
use crate::query::{query_arg, strata_query};
use crate::status::strata_status::{self, *};
use crate::status::{guard, Fail};
use crate::store::strata_store;
use crate::types::*;

/// A subscription (opaque): `strata_subscription_next` waits for events.
pub struct strata_subscription {
    closed: Arc<AtomicBool>,
    state: Mutex<SubscriptionState>,
}

struct SubscriptionState {
    subscription: strata_core::Subscription,
    /// The event the last `next` returned (the memory its view points into), and the views of
    /// its tags (what the view's `tags` points to).
    current: Option<(Event, Vec<strata_tag>)>,
}

impl Handle for strata_subscription {
    const TAG: u64 = 0x5354_5241_5355_4253; // "STRASUBS"
    const NAME: &'static str = "strata_subscription";
}

// Subscriptions

/// Subscribes to the events from position `from_position` (inclusive; 0 or 1: the whole log),
/// history first, then live events, in position order. Filters (all optional, combined):
/// `stream_id` (exact stream, or NULL), `stream_prefix` (or NULL; not with `stream_id`), and
/// `n_types` event types (`event_types` may be NULL when `n_types` is 0: every type).
///
/// On success `*out_subscription` is a new handle owned by the caller
/// (`strata_subscription_free`); on failure it is NULL.
///
/// # Safety
///
/// `store` is NULL or any pointer, but a live handle must not be freed by another thread during
/// the call; `stream_id` is NULL or a NUL-terminated string; `stream_prefix` is NULL or a
/// NUL-terminated string; `event_types` is NULL or holds `n_types` readable pointers, each NULL
/// or a NUL-terminated string; `out_subscription` is NULL or writable for one
/// `strata_subscription *`.
#[no_mangle]
pub unsafe extern "C" fn strata_subscribe(
    store: *mut strata_store,
    from_position: u64,
    stream_id: *const c_char,
    stream_prefix: *const c_char,
    event_types: *const *const c_char,
    n_types: usize,
    out_subscription: *mut *mut strata_subscription,
) -> strata_status {
    unsafe { clear_out(out_subscription, std::ptr::null_mut()) };
    guard(|| {
        let handle = unsafe { handle_ref(store) }?;
        if out_subscription.is_null() {
            return Err(Fail::invalid("out_subscription is NULL"));
        }
        let stream_id = unsafe { opt_str_arg(stream_id, "stream_id") }?;
        let stream_prefix = unsafe { opt_str_arg(stream_prefix, "stream_prefix") }?;
        let types = unsafe { string_array(event_types, n_types, "event_types") }?;
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
        unsafe { make(handle, from_position, filter, out_subscription) }
    })
}

/// Subscribes and hands the new handle to `out`.
///
/// # Safety
///
/// `out` is non-NULL and writable for one `strata_subscription *`.
unsafe fn make(
    handle: &strata_store,
    from_position: u64,
    filter: SubscriptionFilter,
    out: *mut *mut strata_subscription,
) -> Result<strata_status, Fail> {
    let subscription = handle.store()?.subscribe(from_position, filter)?;
    let sub = into_handle(strata_subscription {
        closed: handle.closed.clone(),
        state: Mutex::new(SubscriptionState {
            subscription,
            current: None,
        }),
    });
    unsafe { write_out(out, sub, "out_subscription") }?;
    Ok(STRATA_OK)
}

/// Subscribes to the events matching a DCB query (`query`; NULL: every event) from position
/// `from_position` (inclusive; 0 or 1: the whole log): history first, then live events as they
/// are committed, in position order, without gap or duplicate, each with its `tags`. The same
/// `strata_subscription_next` and `strata_subscription_free` as `strata_subscribe`. The query
/// is copied; the caller keeps ownership of it. An invalid query is `STRATA_INVALID_ARGUMENT`.
///
/// On success `*out_subscription` is a new handle owned by the caller
/// (`strata_subscription_free`); on failure it is NULL.
///
/// # Safety
///
/// `store` is NULL or any pointer, but a live handle must not be freed by another thread during
/// the call; `query` is NULL or points to a readable `strata_query` whose pointers follow its
/// contract; `out_subscription` is NULL or writable for one `strata_subscription *`.
#[no_mangle]
pub unsafe extern "C" fn strata_subscribe_query(
    store: *mut strata_store,
    from_position: u64,
    query: *const strata_query,
    out_subscription: *mut *mut strata_subscription,
) -> strata_status {
    unsafe { clear_out(out_subscription, std::ptr::null_mut()) };
    guard(|| {
        let handle = unsafe { handle_ref(store) }?;
        if out_subscription.is_null() {
            return Err(Fail::invalid("out_subscription is NULL"));
        }
        let query = unsafe { query_arg(query, "query") }?;
        unsafe {
            make(
                handle,
                from_position,
                SubscriptionFilter::query(query),
                out_subscription,
            )
        }
    })
}

/// Waits up to `timeout_ms` milliseconds (0: do not wait) for the next event.
/// `STRATA_OK`: `*out_event` is a view valid until the next `strata_subscription_next` on this
/// subscription or its free. `STRATA_TIMEOUT`: none arrived in time. `STRATA_DONE`: the store
/// was closed and every committed event was delivered. `*out_event` is zeroed unless `STRATA_OK`.
///
/// # Safety
///
/// `subscription` is NULL or any pointer, but a live handle must not be freed by another thread
/// during the call; `out_event` is NULL or writable for one `strata_event`.
#[no_mangle]
pub unsafe extern "C" fn strata_subscription_next(
    subscription: *mut strata_subscription,
    timeout_ms: u32,
    out_event: *mut strata_event,
) -> strata_status {
    unsafe { clear_out(out_event, strata_event::EMPTY) };
    guard(|| {
        let sub = unsafe { handle_ref(subscription) }?;
        if out_event.is_null() {
            return Err(Fail::invalid("out_event is NULL"));
        }
        let mut state = sub.state.lock();
        let state = &mut *state;
        state.current = None;
        state.current = state
            .subscription
            .next_timeout(Duration::from_millis(timeout_ms.into()))?
            .map(|event| {
                let tags = strata_tag::views(&event.tags).collect();
                (event, tags)
            });
        match &state.current {
            Some((event, tags)) => {
                unsafe { write_out(out_event, strata_event::view(event, tags), "out_event") }?;
                Ok(STRATA_OK)
            }
            None if sub.closed.load(Ordering::SeqCst) => Ok(STRATA_DONE),
            None => Ok(STRATA_TIMEOUT),
        }
    })
}

/// Releases a subscription. NULL is accepted.
///
/// # Safety
///
/// `subscription` is NULL or any pointer, but a live handle must not be freed by another thread
/// during the call.
#[no_mangle]
pub unsafe extern "C" fn strata_subscription_free(
    subscription: *mut strata_subscription,
) -> strata_status {
    guard(|| {
        unsafe { free_handle(subscription) }?;
        Ok(STRATA_OK)
    })
}
