//! Status codes, the per-thread error state, and the mapping from strata's errors.

use std::cell::{Cell, RefCell};
use std::ffi::CString;
use std::os::raw::c_char;

use strata_core::{AppendError, OpenError, ProjectionError, ReadError, RunnerError, StreamVersion};

/// The result of every call. `STRATA_OK` (0) is success; `STRATA_DONE` and `STRATA_TIMEOUT` are
/// normal outcomes of `next` calls; every other code is a failure whose message
/// `strata_errmsg()` returns on the same thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum strata_status {
    /// Success.
    STRATA_OK = 0,
    /// A cursor or subscription has no more events (the subscription's store was closed).
    STRATA_DONE = 1,
    /// A subscription's `next` waited for the whole timeout without an event.
    STRATA_TIMEOUT = 2,
    /// Optimistic concurrency: a stream's version is not the expected one. The stream's actual
    /// version is returned by `strata_last_actual_version()`.
    STRATA_CONFLICT = 3,
    /// An event id is already stored, not as part of this same append.
    STRATA_DUPLICATE_ID = 4,
    /// An argument breaks a rule or limit: a NULL pointer where one is required, invalid UTF-8,
    /// a length over `PTRDIFF_MAX`, a NULL pointer with a non-zero length, an unknown enum value.
    STRATA_INVALID_ARGUMENT = 5,
    /// No such stream, projection, or the events were archived/dropped by retention.
    STRATA_NOT_FOUND = 6,
    /// The store handle was closed with `strata_close` (or the store stopped).
    STRATA_CLOSED = 7,
    /// A stored row or the file is corrupt (or the file is not an SQLite database).
    STRATA_CORRUPT = 8,
    /// The file is another application's database, from a newer strata, or has another
    /// bucket width.
    STRATA_INCOMPATIBLE = 9,
    /// Another process holds the write lock past the busy timeout.
    STRATA_BUSY = 10,
    /// The disk (or a quota) is full.
    STRATA_FULL = 11,
    /// An I/O error, or the file cannot be opened.
    STRATA_IO = 12,
    /// A projection failed (trap, timeout, memory limit, its own error, invalid plugin), or is
    /// faulted.
    STRATA_PROJECTION_FAULT = 13,
    /// The API was used wrongly: a NULL handle, a pointer this library did not return or already
    /// freed, a handle of another type, closing a store twice.
    STRATA_MISUSE = 14,
    /// A bug in strata (a caught panic) or an allocation failure.
    STRATA_INTERNAL = 15,
    /// A conditional append (`strata_append_with`, `strata_append_multi_with`) found an event
    /// matching its condition's query after the condition's `after` position: nothing was
    /// written. `strata_last_condition_position()` is the first such position. Read the query
    /// again, decide again, and retry with the new position.
    STRATA_CONDITION_FAILED = 16,
}

use strata_status::*;

/// A failed call: its status and message.
#[derive(Debug)]
pub(crate) struct Fail {
    pub status: strata_status,
    pub message: String,
    pub actual_version: Option<StreamVersion>,
    /// For a conflict of `strata_append_multi`: the index of the part whose check failed.
    pub conflict_part: Option<usize>,
    /// For `STRATA_CONDITION_FAILED`: the first position matching the condition's query.
    pub condition_position: Option<u64>,
}

impl Fail {
    pub(crate) fn new(status: strata_status, message: impl Into<String>) -> Fail {
        Fail {
            status,
            message: message.into(),
            actual_version: None,
            conflict_part: None,
            condition_position: None,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Fail {
        Fail::new(STRATA_INVALID_ARGUMENT, message)
    }

    pub(crate) fn misuse(message: impl Into<String>) -> Fail {
        Fail::new(STRATA_MISUSE, message)
    }
}

fn sqlite_status(error: &rusqlite::Error) -> strata_status {
    use rusqlite::ErrorCode::*;
    match error.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked) => STRATA_BUSY,
        Some(DiskFull) => STRATA_FULL,
        Some(DatabaseCorrupt | NotADatabase) => STRATA_CORRUPT,
        Some(SystemIoFailure | CannotOpen | ReadOnly | PermissionDenied) => STRATA_IO,
        _ => STRATA_INTERNAL,
    }
}

impl From<OpenError> for Fail {
    fn from(error: OpenError) -> Fail {
        let status = match &error {
            OpenError::NotADatabase { .. } => STRATA_CORRUPT,
            OpenError::NotAStrataStore { .. }
            | OpenError::SchemaTooNew { .. }
            | OpenError::BucketWidthMismatch { .. } => STRATA_INCOMPATIBLE,
            OpenError::InvalidOption(_) => STRATA_INVALID_ARGUMENT,
            OpenError::Sqlite(e) => sqlite_status(e),
            _ => STRATA_INTERNAL,
        };
        Fail::new(status, error.to_string())
    }
}

impl From<AppendError> for Fail {
    fn from(error: AppendError) -> Fail {
        let mut actual_version = None;
        let mut condition_position = None;
        let status = match &error {
            AppendError::ConditionFailed { position, .. } => {
                condition_position = Some(*position);
                STRATA_CONDITION_FAILED
            }
            AppendError::Conflict { actual, .. } => {
                actual_version = Some(*actual);
                STRATA_CONFLICT
            }
            AppendError::DuplicateEventId { .. } => STRATA_DUPLICATE_ID,
            AppendError::Invalid(_) => STRATA_INVALID_ARGUMENT,
            AppendError::Closed => STRATA_CLOSED,
            AppendError::Sqlite(e) => sqlite_status(e),
            _ => STRATA_INTERNAL,
        };
        Fail {
            status,
            message: error.to_string(),
            actual_version,
            conflict_part: None,
            condition_position,
        }
    }
}

impl From<ReadError> for Fail {
    fn from(error: ReadError) -> Fail {
        let status = match &error {
            ReadError::Invalid(_) => STRATA_INVALID_ARGUMENT,
            ReadError::Archived { .. } | ReadError::Dropped { .. } => STRATA_NOT_FOUND,
            ReadError::Corrupt { .. } => STRATA_CORRUPT,
            ReadError::Closed => STRATA_CLOSED,
            ReadError::Sqlite(e) => sqlite_status(e),
            _ => STRATA_INTERNAL,
        };
        Fail::new(status, error.to_string())
    }
}

impl From<ProjectionError> for Fail {
    fn from(error: ProjectionError) -> Fail {
        let status = match &error {
            ProjectionError::Load(_) | ProjectionError::Malformed(_) => STRATA_INVALID_ARGUMENT,
            _ => STRATA_PROJECTION_FAULT,
        };
        Fail::new(status, error.to_string())
    }
}

impl From<RunnerError> for Fail {
    fn from(error: RunnerError) -> Fail {
        match error {
            RunnerError::Projection(e) => e.into(),
            RunnerError::Read(e) => e.into(),
            other => {
                let status = match &other {
                    RunnerError::Unknown(_) | RunnerError::NotServing { .. } => STRATA_NOT_FOUND,
                    RunnerError::InvalidName(_) | RunnerError::OlderVersion { .. } => {
                        STRATA_INVALID_ARGUMENT
                    }
                    RunnerError::Faulted { .. } => STRATA_PROJECTION_FAULT,
                    RunnerError::Sqlite(e) => sqlite_status(e),
                    _ => STRATA_INTERNAL,
                };
                Fail::new(status, other.to_string())
            }
        }
    }
}

thread_local! {
    static LAST_MESSAGE: RefCell<CString> = RefCell::new(CString::new("not an error").expect("no NUL"));
    static LAST_ACTUAL_VERSION: Cell<StreamVersion> = const { Cell::new(0) };
    static LAST_CONFLICT_PART: Cell<i64> = const { Cell::new(-1) };
    static LAST_CONDITION_POSITION: Cell<u64> = const { Cell::new(0) };
}

/// Records `fail` as this thread's last error and returns its status.
pub(crate) fn record(fail: Fail) -> strata_status {
    let message = CString::new(fail.message.replace('\0', "\\0")).expect("NULs were replaced");
    LAST_MESSAGE.with(|m| *m.borrow_mut() = message);
    LAST_ACTUAL_VERSION.with(|v| v.set(fail.actual_version.unwrap_or(0)));
    let part = fail.conflict_part.and_then(|i| i64::try_from(i).ok());
    LAST_CONFLICT_PART.with(|p| p.set(part.unwrap_or(-1)));
    LAST_CONDITION_POSITION.with(|p| p.set(fail.condition_position.unwrap_or(0)));
    fail.status
}

/// Runs an API function's body: turns its error into a status (recorded for this thread) and a
/// panic into `STRATA_INTERNAL`, so that no unwinding crosses the C boundary.
pub(crate) fn guard(body: impl FnOnce() -> Result<strata_status, Fail>) -> strata_status {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(Ok(status)) => status,
        Ok(Err(fail)) => record(fail),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            record(Fail::new(
                STRATA_INTERNAL,
                format!("internal error (a bug in strata): {what}"),
            ))
        }
    }
}

/// The message of the last failed call on the calling thread ("not an error" if none failed).
///
/// Ownership: the string belongs to the library; it stays valid until the next failing call on
/// this thread. Never NULL.
#[no_mangle]
pub extern "C" fn strata_errmsg() -> *const c_char {
    std::panic::catch_unwind(|| LAST_MESSAGE.with(|m| m.borrow().as_ptr()))
        .unwrap_or(c"internal error".as_ptr())
}

/// The stream's actual version reported by the last `STRATA_CONFLICT` on the calling thread
/// (0 when the stream has no events, or when the last failure was not a conflict).
#[no_mangle]
pub extern "C" fn strata_last_actual_version() -> u64 {
    LAST_ACTUAL_VERSION.try_with(|v| v.get()).unwrap_or(0)
}

/// Which part of a multi-stream append conflicted: when the last failed call on the calling
/// thread was a `strata_append_multi` that returned `STRATA_CONFLICT`, the index in its `parts`
/// of the part whose expected version did not hold (its stream's actual version is
/// `strata_last_actual_version()`); -1 after any other failure.
#[no_mangle]
pub extern "C" fn strata_last_conflict_part() -> i64 {
    LAST_CONFLICT_PART.try_with(|p| p.get()).unwrap_or(-1)
}

/// The first conflicting position reported by the last `STRATA_CONDITION_FAILED` on the calling
/// thread: the position of the first event after the condition's `after` that matches its
/// query. 0 when the last failed call on this thread was not a failed condition (positions
/// start at 1).
#[no_mangle]
pub extern "C" fn strata_last_condition_position() -> u64 {
    LAST_CONDITION_POSITION.try_with(|p| p.get()).unwrap_or(0)
}

/// The name of a status code, such as `"STRATA_CONFLICT"`; `"STRATA_UNKNOWN"` for a value that
/// is not a status. Static storage: never freed, never NULL.
#[no_mangle]
pub extern "C" fn strata_status_name(code: i32) -> *const c_char {
    let name: &'static std::ffi::CStr = match code {
        0 => c"STRATA_OK",
        1 => c"STRATA_DONE",
        2 => c"STRATA_TIMEOUT",
        3 => c"STRATA_CONFLICT",
        4 => c"STRATA_DUPLICATE_ID",
        5 => c"STRATA_INVALID_ARGUMENT",
        6 => c"STRATA_NOT_FOUND",
        7 => c"STRATA_CLOSED",
        8 => c"STRATA_CORRUPT",
        9 => c"STRATA_INCOMPATIBLE",
        10 => c"STRATA_BUSY",
        11 => c"STRATA_FULL",
        12 => c"STRATA_IO",
        13 => c"STRATA_PROJECTION_FAULT",
        14 => c"STRATA_MISUSE",
        15 => c"STRATA_INTERNAL",
        16 => c"STRATA_CONDITION_FAILED",
        _ => c"STRATA_UNKNOWN",
    };
    name.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_internal_with_its_message() {
        let status = guard(|| panic!("boom {}", 42));
        assert_eq!(status, STRATA_INTERNAL);
        let message = LAST_MESSAGE.with(|m| m.borrow().to_str().unwrap().to_owned());
        assert!(message.contains("boom 42"), "{message}");
    }

    #[test]
    fn every_status_has_its_name() {
        for code in 0..=16 {
            // SAFETY: strata_status_name returns a pointer to a static NUL-terminated string.
            let name = unsafe { std::ffi::CStr::from_ptr(strata_status_name(code)) };
            assert!(name.to_str().unwrap().starts_with("STRATA_"));
            assert_ne!(name.to_str().unwrap(), "STRATA_UNKNOWN", "code {code}");
        }
        // SAFETY: as above.
        let unknown = unsafe { std::ffi::CStr::from_ptr(strata_status_name(99)) };
        assert_eq!(unknown.to_str().unwrap(), "STRATA_UNKNOWN");
    }
}
