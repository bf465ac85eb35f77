//! Random call sequences over the C ABI's handles: opens, appends (single and multi-stream,
//! with NULL out-parameters where the header allows them), cursors, subscriptions, closes and
//! frees, in any order, including calls on closed and already-freed handles. The library must
//! never crash, and must answer with the documented statuses: `STRATA_MISUSE` for a freed
//! handle, `STRATA_CLOSED` after close, and a gap-free log.
#![no_main]

use std::ffi::CString;
use std::ptr;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use strata_ffi::strata_status::*;
use strata_ffi::*;

#[derive(Arbitrary, Debug)]
enum Call {
    Open,
    Append {
        store: u8,
        stream: u8,
        events: u8,
        expect: u8,
        version: u8,
        out_null: bool,
    },
    AppendMulti {
        store: u8,
        streams: Vec<(u8, u8)>,
        out_null: bool,
    },
    ReadAll {
        store: u8,
    },
    CursorNext {
        cursor: u8,
    },
    CursorFree {
        cursor: u8,
    },
    Subscribe {
        store: u8,
    },
    SubscriptionNext {
        subscription: u8,
    },
    SubscriptionFree {
        subscription: u8,
    },
    Close {
        store: u8,
    },
    StoreFree {
        store: u8,
    },
    LastPosition {
        store: u8,
    },
}

/// A handle the sequence made, live or not: freed ones stay in the list so that later calls
/// use them again (the registry must answer MISUSE without reading them).
struct Slot<T> {
    handle: *mut T,
    freed: bool,
}

fn pick<T>(slots: &[Slot<T>], i: u8) -> Option<&Slot<T>> {
    if slots.is_empty() {
        None
    } else {
        Some(&slots[i as usize % slots.len()])
    }
}

fuzz_target!(|calls: Vec<Call>| {
    let mut stores: Vec<Slot<strata_store>> = Vec::new();
    let mut closed: Vec<bool> = Vec::new();
    let mut cursors: Vec<Slot<strata_cursor>> = Vec::new();
    let mut subscriptions: Vec<Slot<strata_subscription>> = Vec::new();
    let streams: Vec<CString> = (0..4)
        .map(|i| CString::new(format!("s{i}")).unwrap())
        .collect();
    let event_type = CString::new("t").unwrap();
    let new_event = strata_new_event {
        event_type: event_type.as_ptr(),
        data: b"payload".as_ptr(),
        data_len: 7,
        metadata: ptr::null(),
        metadata_len: 0,
        event_id: ptr::null(),
        tags: ptr::null(),
        n_tags: 0,
    };
    let events = [new_event; 4];
    // SAFETY (every call below): the pointers passed are NULL, live locals, or handles this
    // library returned (freed ones included: the header says they are detected).
    for call in calls.into_iter().take(64) {
        match call {
            Call::Open => {
                // Not after a free: the allocator may hand a freed store's address to the new
                // one, which the header says cannot be told from the old (same for cursors and
                // subscriptions below).
                if stores.len() < 3 && !stores.iter().any(|s| s.freed) {
                    let mut store = ptr::null_mut();
                    let status = unsafe { strata_open_in_memory(ptr::null(), &mut store) };
                    assert_eq!(status, STRATA_OK);
                    stores.push(Slot {
                        handle: store,
                        freed: false,
                    });
                    closed.push(false);
                }
            }
            Call::Append {
                store,
                stream,
                events: n,
                expect,
                version,
                out_null,
            } => {
                let Some(slot) = pick(&stores, store) else {
                    continue;
                };
                let i = store as usize % stores.len();
                let mut result = strata_append_result::default();
                let out = if out_null {
                    ptr::null_mut()
                } else {
                    &mut result as *mut _
                };
                let status = unsafe {
                    strata_append(
                        slot.handle,
                        streams[stream as usize % 4].as_ptr(),
                        u32::from(expect % 5),
                        u64::from(version),
                        events.as_ptr(),
                        usize::from(n % 5),
                        out,
                    )
                };
                expect_state(status, slot.freed, closed[i]);
            }
            Call::AppendMulti {
                store,
                streams: parts,
                out_null,
            } => {
                let Some(slot) = pick(&stores, store) else {
                    continue;
                };
                let i = store as usize % stores.len();
                let parts: Vec<strata_stream_append> = parts
                    .iter()
                    .take(4)
                    .map(|&(s, n)| strata_stream_append {
                        stream_id: streams[s as usize % 4].as_ptr(),
                        expected_kind: STRATA_EXPECT_ANY,
                        expected_version: 0,
                        events: events.as_ptr(),
                        n_events: usize::from(n % 4),
                    })
                    .collect();
                let mut results = [strata_append_result::default(); 4];
                let out = if out_null {
                    ptr::null_mut()
                } else {
                    results.as_mut_ptr()
                };
                let status =
                    unsafe { strata_append_multi(slot.handle, parts.as_ptr(), parts.len(), out) };
                expect_state(status, slot.freed, closed[i]);
            }
            Call::ReadAll { store } => {
                let Some(slot) = pick(&stores, store) else {
                    continue;
                };
                let i = store as usize % stores.len();
                let mut cursor = ptr::null_mut();
                let status = unsafe { strata_read_all(slot.handle, 1, 0, &mut cursor) };
                expect_state(status, slot.freed, closed[i]);
                if status == STRATA_OK && cursors.len() < 8 && !cursors.iter().any(|c| c.freed) {
                    cursors.push(Slot {
                        handle: cursor,
                        freed: false,
                    });
                } else if status == STRATA_OK {
                    assert_eq!(unsafe { strata_cursor_free(cursor) }, STRATA_OK);
                }
            }
            Call::CursorNext { cursor } => {
                let Some(slot) = pick(&cursors, cursor) else {
                    continue;
                };
                let mut event = strata_event::default();
                let mut expected_position = 1;
                loop {
                    let status = unsafe { strata_cursor_next(slot.handle, &mut event) };
                    if slot.freed {
                        assert_eq!(status, STRATA_MISUSE);
                        break;
                    }
                    match status {
                        STRATA_OK => {
                            assert_eq!(event.position, expected_position, "a gap in read_all");
                            expected_position += 1;
                        }
                        STRATA_DONE | STRATA_CLOSED => break,
                        other => panic!("cursor next: {other:?}"),
                    }
                    if expected_position > 200 {
                        break;
                    }
                }
            }
            Call::CursorFree { cursor } => {
                let Some(i) = (!cursors.is_empty()).then(|| cursor as usize % cursors.len()) else {
                    continue;
                };
                let status = unsafe { strata_cursor_free(cursors[i].handle) };
                assert_eq!(
                    status,
                    if cursors[i].freed {
                        STRATA_MISUSE
                    } else {
                        STRATA_OK
                    }
                );
                cursors[i].freed = true;
            }
            Call::Subscribe { store } => {
                let Some(slot) = pick(&stores, store) else {
                    continue;
                };
                let i = store as usize % stores.len();
                let mut sub = ptr::null_mut();
                let status = unsafe {
                    strata_subscribe(
                        slot.handle,
                        0,
                        ptr::null(),
                        ptr::null(),
                        ptr::null(),
                        0,
                        &mut sub,
                    )
                };
                expect_state(status, slot.freed, closed[i]);
                if status == STRATA_OK
                    && subscriptions.len() < 4
                    && !subscriptions.iter().any(|s| s.freed)
                {
                    subscriptions.push(Slot {
                        handle: sub,
                        freed: false,
                    });
                } else if status == STRATA_OK {
                    assert_eq!(unsafe { strata_subscription_free(sub) }, STRATA_OK);
                }
            }
            Call::SubscriptionNext { subscription } => {
                let Some(slot) = pick(&subscriptions, subscription) else {
                    continue;
                };
                let mut event = strata_event::default();
                let status = unsafe { strata_subscription_next(slot.handle, 0, &mut event) };
                if slot.freed {
                    assert_eq!(status, STRATA_MISUSE);
                } else {
                    assert!(
                        matches!(status, STRATA_OK | STRATA_TIMEOUT | STRATA_DONE),
                        "subscription next: {status:?}"
                    );
                }
            }
            Call::SubscriptionFree { subscription } => {
                if subscriptions.is_empty() {
                    continue;
                }
                let i = subscription as usize % subscriptions.len();
                let status = unsafe { strata_subscription_free(subscriptions[i].handle) };
                assert_eq!(
                    status,
                    if subscriptions[i].freed {
                        STRATA_MISUSE
                    } else {
                        STRATA_OK
                    }
                );
                subscriptions[i].freed = true;
            }
            Call::Close { store } => {
                if stores.is_empty() {
                    continue;
                }
                let i = store as usize % stores.len();
                let status = unsafe { strata_close(stores[i].handle) };
                let expected = if stores[i].freed || closed[i] {
                    STRATA_MISUSE
                } else {
                    STRATA_OK
                };
                assert_eq!(status, expected);
                closed[i] = true;
            }
            Call::StoreFree { store } => {
                if stores.is_empty() {
                    continue;
                }
                let i = store as usize % stores.len();
                let status = unsafe { strata_store_free(stores[i].handle) };
                assert_eq!(
                    status,
                    if stores[i].freed {
                        STRATA_MISUSE
                    } else {
                        STRATA_OK
                    }
                );
                stores[i].freed = true;
                closed[i] = true;
            }
            Call::LastPosition { store } => {
                let Some(slot) = pick(&stores, store) else {
                    continue;
                };
                let i = store as usize % stores.len();
                let status = unsafe { strata_last_position(slot.handle, ptr::null_mut()) };
                if slot.freed {
                    assert_eq!(status, STRATA_MISUSE);
                } else if closed[i] {
                    assert!(matches!(status, STRATA_CLOSED | STRATA_INVALID_ARGUMENT));
                } else {
                    assert_eq!(status, STRATA_INVALID_ARGUMENT, "out_position NULL");
                }
            }
        }
    }
    for slot in cursors.iter().filter(|s| !s.freed) {
        assert_eq!(unsafe { strata_cursor_free(slot.handle) }, STRATA_OK);
    }
    for slot in subscriptions.iter().filter(|s| !s.freed) {
        assert_eq!(unsafe { strata_subscription_free(slot.handle) }, STRATA_OK);
    }
    for slot in stores.iter().filter(|s| !s.freed) {
        assert_eq!(unsafe { strata_store_free(slot.handle) }, STRATA_OK);
    }
});

/// A call on a store: MISUSE once freed, CLOSED once closed; otherwise anything but a crash,
/// MISUSE or INTERNAL.
fn expect_state(status: strata_status, freed: bool, closed: bool) {
    if freed {
        assert_eq!(status, STRATA_MISUSE);
    } else if closed {
        assert!(
            matches!(status, STRATA_CLOSED | STRATA_INVALID_ARGUMENT),
            "on a closed store: {status:?}"
        );
    } else {
        assert!(
            !matches!(status, STRATA_MISUSE | STRATA_INTERNAL),
            "on an open store: {status:?} ({})",
            unsafe { std::ffi::CStr::from_ptr(strata_errmsg()) }.to_string_lossy()
        );
    }
}
