//! `strata_append`, `strata_append_multi`, and their conditional (DCB) forms
//! `strata_append_with`, `strata_append_multi_with`.

use std::os::raw::c_char;

use strata_core::{
    AppendCondition, AppendError, ExpectedVersion, NewEvent, StreamAppend, Uuid, DEFAULT_STREAM,
};

use crate::cursor::string_array;
use crate::ptr::{clear_out, handle_ref, id_arg, opt_str_arg, slice_arg, str_arg, write_out};
use crate::query::{condition_arg, strata_append_condition};
use crate::status::strata_status::{self, *};
use crate::status::{guard, Fail};
use crate::store::strata_store;
use crate::types::*;

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

unsafe fn new_events(
    events: *const strata_new_event,
    n_events: usize,
) -> Result<Vec<NewEvent>, Fail> {
    unsafe { slice_arg(events, n_events, "events") }?
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let event_type = unsafe { str_arg(e.event_type, &format!("events[{i}].event_type")) }?;
            let data = unsafe { slice_arg(e.data, e.data_len, &format!("events[{i}].data")) }?;
            let metadata =
                unsafe { slice_arg(e.metadata, e.metadata_len, &format!("events[{i}].metadata")) }?;
            let mut event = NewEvent::new(event_type, strata_core::Bytes::copy_from_slice(data));
            if !metadata.is_empty() {
                event.metadata = strata_core::Bytes::copy_from_slice(metadata);
            }
            event.event_id = unsafe { id_arg(e.event_id) }.map(Uuid::from_bytes);
            // Checked by the store before anything is written (length, count after repeats).
            event.tags = unsafe { string_array(e.tags, e.n_tags, &format!("events[{i}].tags")) }?;
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
///
/// # Safety
///
/// `store` is NULL or any pointer, but a live handle must not be freed by another thread during
/// the call; `stream_id` is NULL or a NUL-terminated string; `events` is readable for
/// `n_events` elements (may be NULL when it is 0), with pointers inside following the header's
/// conventions; `out_result` is NULL or writable for one `strata_append_result`.
#[no_mangle]
pub unsafe extern "C" fn strata_append(
    store: *mut strata_store,
    stream_id: *const c_char,
    expected_kind: u32,
    expected_version: u64,
    events: *const strata_new_event,
    n_events: usize,
    out_result: *mut strata_append_result,
) -> strata_status {
    unsafe { clear_out(out_result, strata_append_result::default()) };
    guard(|| {
        let handle = unsafe { handle_ref(store) }?;
        let stream_id = unsafe { str_arg(stream_id, "stream_id") }?;
        let expected = expected(expected_kind, expected_version)?;
        let events = unsafe { new_events(events, n_events) }?;
        let result = handle.store()?.append(stream_id, expected, events)?;
        if !out_result.is_null() {
            unsafe { write_out(out_result, to_result(&result), "out_result") }?;
        }
        Ok(STRATA_OK)
    })
}

/// Appends to several streams atomically, each part with its own expected version: every part
/// is stored or none is. `out_results` may be NULL (results not wanted); otherwise it has room
/// for `n_parts` results, filled in the order of `parts` on success and zeroed on failure.
/// On `STRATA_CONFLICT` nothing is stored; `strata_last_conflict_part()` is the index of the
/// part whose expected version did not hold and `strata_last_actual_version()` its stream's
/// actual version (the message names the stream).
///
/// # Safety
///
/// `store` is NULL or a pointer this library returned; `parts` holds `n_parts` readable
/// elements whose pointers follow the header's conventions; `out_results` is NULL or writable
/// for `n_parts` elements.
#[no_mangle]
pub unsafe extern "C" fn strata_append_multi(
    store: *mut strata_store,
    parts: *const strata_stream_append,
    n_parts: usize,
    out_results: *mut strata_append_result,
) -> strata_status {
    unsafe { append_multi(store, parts, n_parts, None, out_results) }
}

/// `strata_append_multi` and `strata_append_multi_with` (`condition`: `Some` for the latter,
/// NULL or not).
///
/// # Safety
///
/// As `strata_append_multi_with`.
unsafe fn append_multi(
    store: *mut strata_store,
    parts: *const strata_stream_append,
    n_parts: usize,
    condition: Option<*const strata_append_condition>,
    out_results: *mut strata_append_result,
) -> strata_status {
    guard(|| {
        // Cleared first, so that every failure below leaves them zeroed. Only a non-NULL array
        // is touched: advancing a NULL pointer and writing through it was a crash.
        if !out_results.is_null() && n_parts > 0 {
            crate::ptr::check_out_array(out_results, n_parts, "out_results")?;
            for i in 0..n_parts {
                // SAFETY: checked above: non-NULL, aligned, n_parts elements by the contract.
                unsafe { clear_out(out_results.add(i), strata_append_result::default()) };
            }
        }
        let handle = unsafe { handle_ref(store) }?;
        let parts = unsafe { slice_arg(parts, n_parts, "parts") }?;
        let mut appends = Vec::with_capacity(parts.len());
        let mut stream_ids = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let stream_id = unsafe { str_arg(part.stream_id, &format!("parts[{i}].stream_id")) }?;
            stream_ids.push(stream_id);
            appends.push(StreamAppend::new(
                stream_id,
                expected(part.expected_kind, part.expected_version)?,
                unsafe { new_events(part.events, part.n_events) }?,
            ));
        }
        let condition = match condition {
            Some(condition) => Some(unsafe { condition_arg(condition) }?),
            None => None,
        };
        let store = handle.store()?;
        let results = match condition {
            Some(condition) => store.append_multi_with(appends, condition),
            None => store.append_multi(appends),
        };
        let results = results.map_err(|error| {
            let part = match &error {
                AppendError::Conflict { stream_id, .. } => {
                    stream_ids.iter().position(|s| s == stream_id)
                }
                _ => None,
            };
            let mut fail = Fail::from(error);
            fail.conflict_part = part;
            fail
        })?;
        if !out_results.is_null() {
            for (i, result) in results.iter().enumerate().take(n_parts) {
                // SAFETY: as above (i < n_parts).
                unsafe { write_out(out_results.add(i), to_result(result), "out_results") }?;
            }
        }
        Ok(STRATA_OK)
    })
}

/// A conditional append (DCB): appends `n_events` events to `stream_id` (NULL: the default
/// stream `"$dcb"`) if the stream's version satisfies the expectation (`expected_kind` is a
/// `STRATA_EXPECT_*`, `expected_version` used by `STRATA_EXPECT_EXACT`; pass
/// `STRATA_EXPECT_ANY` for no version check) AND no event matching
/// `condition->fail_if_events_match` was appended after `condition->after`. Both are checked by
/// the writer inside the write transaction, so two appends whose conditions overlap never both
/// succeed, in this process or another. All or nothing.
///
/// `STRATA_CONDITION_FAILED`: nothing was written; `strata_last_condition_position()` is the
/// first position after `after` whose event matches the query. `STRATA_CONFLICT`: the stream's
/// version did not hold (`strata_last_actual_version()`). `STRATA_INVALID_ARGUMENT`: a NULL
/// `condition`, an invalid query (an item with neither types nor tags, a query of 0 items, a
/// NULL string, invalid UTF-8, a limit broken) or invalid events or tags; nothing written. A
/// retry of an append already stored (same event ids) succeeds with the original positions and
/// `already_stored` 1, whatever the condition.
///
/// Everything passed is copied or only read during the call; the caller keeps ownership.
/// `out_result` may be NULL; otherwise it is filled on success and zeroed on failure.
///
/// # Safety
///
/// `store` is NULL or a pointer this library returned; `stream_id` is NULL or a NUL-terminated
/// string; `events` holds `n_events` readable elements whose pointers follow the header's
/// conventions; `condition` is NULL or points to a readable `strata_append_condition` whose
/// query follows `strata_query`'s contract; `out_result` is NULL or writable for one
/// `strata_append_result`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn strata_append_with(
    store: *mut strata_store,
    stream_id: *const c_char,
    expected_kind: u32,
    expected_version: u64,
    events: *const strata_new_event,
    n_events: usize,
    condition: *const strata_append_condition,
    out_result: *mut strata_append_result,
) -> strata_status {
    unsafe { clear_out(out_result, strata_append_result::default()) };
    guard(|| {
        let handle = unsafe { handle_ref(store) }?;
        let stream_id = unsafe { opt_str_arg(stream_id, "stream_id") }?.unwrap_or(DEFAULT_STREAM);
        let expected = expected(expected_kind, expected_version)?;
        let events = unsafe { new_events(events, n_events) }?;
        let condition: AppendCondition = unsafe { condition_arg(condition) }?;
        let result = handle
            .store()?
            .append_to_with(stream_id, expected, events, condition)?;
        if !out_result.is_null() {
            unsafe { write_out(out_result, to_result(&result), "out_result") }?;
        }
        Ok(STRATA_OK)
    })
}

/// `strata_append_multi` with a condition (DCB): every part's expected version and the
/// condition must hold, or nothing is written. Failures as `strata_append_multi` (on
/// `STRATA_CONFLICT`, `strata_last_conflict_part()`) and `strata_append_with` (on
/// `STRATA_CONDITION_FAILED`, `strata_last_condition_position()`; a NULL `condition` is
/// `STRATA_INVALID_ARGUMENT`). Ownership as `strata_append_multi`: everything passed is only
/// read during the call; `out_results` is NULL or room for `n_parts` results.
///
/// # Safety
///
/// As `strata_append_multi`; `condition` is NULL or points to a readable
/// `strata_append_condition` whose query follows `strata_query`'s contract.
#[no_mangle]
pub unsafe extern "C" fn strata_append_multi_with(
    store: *mut strata_store,
    parts: *const strata_stream_append,
    n_parts: usize,
    condition: *const strata_append_condition,
    out_results: *mut strata_append_result,
) -> strata_status {
    unsafe { append_multi(store, parts, n_parts, Some(condition), out_results) }
}
