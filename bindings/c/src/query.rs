//! Dynamic Consistency Boundaries (DCB, dcb.events): `strata_query`, `strata_query_item`,
//! `strata_append_condition` and `strata_read_query`. The conditional appends are in
//! `append.rs`, the subscription by query in `subscription.rs`.

use std::os::raw::c_char;

use strata_core::{AppendCondition, Query, QueryItem};

use crate::cursor::{open_cursor, strata_cursor, string_array, Source};
use crate::ptr::slice_arg;
use crate::status::{strata_status, Fail};
use crate::store::strata_store;

/// One item of a `strata_query`: it matches an event whose type is one of `types` (any type
/// when `n_types` is 0) AND which carries every one of `tags` (any tags when `n_tags` is 0).
/// An item must name at least one type or tag (a zeroed item is `STRATA_INVALID_ARGUMENT`);
/// at most 64 types and 64 tags. Strings are NUL-terminated UTF-8 (types 1..=255 bytes, tags
/// 1..=255 bytes), read during the call only; the caller keeps ownership.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct strata_query_item {
    /// `n_types` event types, any of which matches (may be NULL when `n_types` is 0).
    pub types: *const *const c_char,
    /// Number of pointers in `types`.
    pub n_types: usize,
    /// `n_tags` tags, all of which an event must carry (may be NULL when `n_tags` is 0).
    pub tags: *const *const c_char,
    /// Number of pointers in `tags`.
    pub n_tags: usize,
}

/// A DCB query: `n_items` items combined with OR (1..=256 of them).
///
/// "Every event" is spelled as a NULL `const strata_query *` wherever a query is taken
/// (`strata_read_query`, `strata_subscribe_query`, `strata_append_condition.fail_if_events_match`).
/// A query with `n_items` 0 is `STRATA_INVALID_ARGUMENT`, so a zeroed struct never matches
/// every event by accident.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct strata_query {
    /// The items (may be NULL only when `n_items` is 0, which is an error).
    pub items: *const strata_query_item,
    /// Number of items.
    pub n_items: usize,
}

/// The condition of a conditional append: fail, writing nothing, if an event matching
/// `fail_if_events_match` has a position after `after`. Usually `after` is the last position
/// of the log when the decision read its events (e.g. the position of the last event a
/// `strata_read_query` cursor returned, or a head read before it); 0 counts every event.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct strata_append_condition {
    /// The query whose matching events make the append fail; NULL: every event.
    pub fail_if_events_match: *const strata_query,
    /// Only events after this position count.
    pub after: u64,
}

/// The query at `query` (NULL: every event), checked against the rules and limits.
///
/// # Safety
///
/// `query` is NULL or points to a readable `strata_query` whose pointers follow its contract.
pub(crate) unsafe fn query_arg(query: *const strata_query, what: &str) -> Result<Query, Fail> {
    if query.is_null() {
        return Ok(Query::all());
    }
    let query = &unsafe { slice_arg(query, 1, what) }?[0];
    let items = unsafe { slice_arg(query.items, query.n_items, &format!("{what}.items")) }?;
    let mut parsed = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let types = unsafe {
            string_array(
                item.types,
                item.n_types,
                &format!("{what}.items[{i}].types"),
            )
        }?;
        let tags =
            unsafe { string_array(item.tags, item.n_tags, &format!("{what}.items[{i}].tags")) }?;
        parsed.push(QueryItem::types(types).with_tags(tags));
    }
    let parsed = Query::from_items(parsed);
    parsed.validate().map_err(|error| {
        // Spelled as in C: "every event" is a NULL query.
        let message = error
            .to_string()
            .replace("use Query::all()", "pass a NULL strata_query *");
        Fail::invalid(format!("{what}: {message}"))
    })?;
    Ok(parsed)
}

/// The condition at `condition`, which is required.
///
/// # Safety
///
/// `condition` is NULL or points to a readable `strata_append_condition` whose query follows
/// its contract.
pub(crate) unsafe fn condition_arg(
    condition: *const strata_append_condition,
) -> Result<AppendCondition, Fail> {
    if condition.is_null() {
        return Err(Fail::invalid(
            "condition is NULL (use strata_append / strata_append_multi for appends without one)",
        ));
    }
    let condition = &unsafe { slice_arg(condition, 1, "condition") }?[0];
    let query = unsafe {
        query_arg(
            condition.fail_if_events_match,
            "condition.fail_if_events_match",
        )
    }?;
    Ok(AppendCondition::new(query, condition.after))
}

/// Opens a cursor over the events after position `after` (exclusive: 0 reads from the first
/// event) that match `query` (NULL: every event), in position order, at most `max_count`
/// (0: no limit). Read through the tag index a page at a time, like the other cursors:
/// `strata_cursor_next` / `strata_cursor_next_batch`, and each event's `tags` are filled.
/// The query is copied; the caller keeps ownership of it.
///
/// On success `*out_cursor` is a new cursor owned by the caller (`strata_cursor_free`); on
/// failure (an invalid query: `STRATA_INVALID_ARGUMENT`) it is NULL.
///
/// # Safety
///
/// `store` is NULL or any pointer, but a live handle must not be freed by another thread during
/// the call; `query` is NULL or points to a readable `strata_query` whose pointers follow its
/// contract; `out_cursor` is NULL or writable for one `strata_cursor *`.
#[no_mangle]
pub unsafe extern "C" fn strata_read_query(
    store: *mut strata_store,
    query: *const strata_query,
    after: u64,
    max_count: u64,
    out_cursor: *mut *mut strata_cursor,
) -> strata_status {
    unsafe {
        open_cursor(store, out_cursor, max_count, || {
            Ok(Source::Query {
                query: query_arg(query, "query")?,
                after,
            })
        })
    }
}
