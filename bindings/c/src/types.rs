//! The constants and plain `#[repr(C)]` structs of the C ABI, the library version and `strata_free`.

use std::os::raw::{c_char, c_void};

use strata_core::{Event, ProjectionPhase, ProjectionStatus};

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
    /// The event's tags (DCB): `n_tags` NUL-terminated UTF-8 strings, each 1..=255 bytes; at
    /// most 64 distinct ones per event (repeats are dropped, the order does not matter). NULL
    /// with `n_tags` 0 (a zeroed struct): no tags. NULL with `n_tags` > 0, a NULL element,
    /// invalid UTF-8, an empty or longer tag, or too many is `STRATA_INVALID_ARGUMENT` and the
    /// append writes nothing. The strings are copied; the caller keeps ownership.
    pub tags: *const *const c_char,
    /// Number of pointers in `tags`.
    pub n_tags: usize,
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

/// One tag of a stored event, as a view (not NUL-terminated: use `len`). Owned by the cursor or
/// subscription that returned the event, with the same lifetime as the event's other pointers.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct strata_tag {
    /// The tag's UTF-8 bytes (`len` of them, 1..=255; not NUL-terminated).
    pub tag: *const c_char,
    /// Length of `tag` in bytes.
    pub len: usize,
}

impl strata_tag {
    /// The views of `tags`, pointing into the strings themselves.
    pub(crate) fn views(tags: &[String]) -> impl Iterator<Item = strata_tag> + '_ {
        tags.iter().map(|tag| strata_tag {
            tag: tag.as_ptr().cast(),
            len: tag.len(),
        })
    }
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
    /// The event's tags (DCB), sorted by their bytes, without repeats: `n_tags` views owned by
    /// the cursor or subscription, valid exactly as long as the other pointers of this event
    /// (until the next `next`/`next_batch` call on that handle or its free). NULL when the
    /// event has no tags (`n_tags` 0).
    pub tags: *const strata_tag,
    /// Number of elements of `tags`.
    pub n_tags: usize,
}

impl Default for strata_event {
    /// Zeroed, NULL pointers (what a failed `next` leaves).
    fn default() -> Self {
        strata_event::EMPTY
    }
}

impl strata_event {
    pub(crate) const EMPTY: strata_event = strata_event {
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
        tags: std::ptr::null(),
        n_tags: 0,
    };

    /// The view of `event`; `tags` are the views of its tags (`strata_tag::views`), kept by the
    /// caller as long as the view is valid.
    pub(crate) fn view(event: &Event, tags: &[strata_tag]) -> strata_event {
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
            tags: if tags.is_empty() {
                std::ptr::null()
            } else {
                tags.as_ptr()
            },
            n_tags: tags.len(),
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
    pub(crate) const EMPTY: strata_projection_status = strata_projection_status {
        name: [0; 72],
        version: 0,
        phase: 0,
        checkpoint: 0,
        lag: 0,
        fault_position: 0,
    };

    pub(crate) fn from_status(status: &ProjectionStatus) -> strata_projection_status {
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

// Library

/// The library's version, such as `"0.1.0"`. Static storage.
#[no_mangle]
pub extern "C" fn strata_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Releases a buffer the library returned (`strata_metrics_text`, `strata_projection_query`).
/// NULL is accepted and does nothing.
///
/// # Safety
///
/// `buffer` is NULL or a buffer this library returned and that was not freed yet.
#[no_mangle]
pub unsafe extern "C" fn strata_free(buffer: *mut c_void) {
    let _ = std::panic::catch_unwind(|| unsafe { crate::ptr::malloc_free(buffer) });
}

/// The tag views (`strata_tag`) of a page of events: one flat array, with each event's range in
/// it. Built once when the page is fetched and not changed while views into it are out, so the
/// `tags` pointers of the page's `strata_event`s stay valid as long as the page.
#[derive(Debug, Default)]
pub(crate) struct PageTags {
    views: Vec<strata_tag>,
    /// `views[starts[i]..starts[i + 1]]` are event `i`'s; empty when no event has tags.
    starts: Vec<usize>,
}

impl PageTags {
    pub(crate) fn new(events: &[Event]) -> PageTags {
        if events.iter().all(|event| event.tags.is_empty()) {
            return PageTags::default();
        }
        let mut views = Vec::with_capacity(events.iter().map(|e| e.tags.len()).sum());
        let mut starts = Vec::with_capacity(events.len() + 1);
        for event in events {
            starts.push(views.len());
            views.extend(strata_tag::views(&event.tags));
        }
        starts.push(views.len());
        PageTags { views, starts }
    }

    /// The views of event `index` of the page.
    pub(crate) fn of(&self, index: usize) -> &[strata_tag] {
        match (self.starts.get(index), self.starts.get(index + 1)) {
            (Some(&start), Some(&end)) => &self.views[start..end],
            _ => &[],
        }
    }
}
