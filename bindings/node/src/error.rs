//! strata's errors as napi errors whose message is a small JSON document
//! (`{"code":"CONFLICT","message":"...","actualVersion":3}`): `index.js` turns it into the
//! matching `Error` subclass. The codes are the C ABI's status names without `STRATA_`.

use strata::{AppendError, OpenError, ProjectionError, ReadError, RunnerError};

/// What a failed call rejects its promise with, before it becomes a napi error.
pub struct Fail {
    code: &'static str,
    message: String,
    actual_version: Option<u64>,
}

impl Fail {
    pub fn new(code: &'static str, message: impl Into<String>) -> Fail {
        Fail {
            code,
            message: message.into(),
            actual_version: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Fail {
        Fail::new("INVALID_ARGUMENT", message)
    }

    pub fn closed() -> Fail {
        Fail::new("CLOSED", "the store is closed")
    }

    pub fn internal(message: impl Into<String>) -> Fail {
        Fail::new("INTERNAL", message)
    }
}

/// Escapes `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl From<Fail> for napi::Error {
    fn from(fail: Fail) -> napi::Error {
        let mut json = format!(
            "{{\"code\":{},\"message\":{}",
            json_string(fail.code),
            json_string(&fail.message)
        );
        if let Some(actual) = fail.actual_version {
            json.push_str(&format!(",\"actualVersion\":{actual}"));
        }
        json.push('}');
        napi::Error::new(napi::Status::GenericFailure, json)
    }
}

fn sqlite_code(error: &rusqlite::Error) -> &'static str {
    use rusqlite::ErrorCode::*;
    match error.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked) => "BUSY",
        Some(DiskFull) => "FULL",
        Some(DatabaseCorrupt | NotADatabase) => "CORRUPT",
        Some(SystemIoFailure | CannotOpen | ReadOnly | PermissionDenied) => "IO",
        _ => "INTERNAL",
    }
}

impl From<OpenError> for Fail {
    fn from(error: OpenError) -> Fail {
        let code = match &error {
            OpenError::NotADatabase { .. } => "CORRUPT",
            OpenError::NotAStrataStore { .. }
            | OpenError::SchemaTooNew { .. }
            | OpenError::BucketWidthMismatch { .. } => "INCOMPATIBLE",
            OpenError::InvalidOption(_) => "INVALID_ARGUMENT",
            OpenError::Sqlite(e) => sqlite_code(e),
            _ => "INTERNAL",
        };
        Fail::new(code, error.to_string())
    }
}

impl From<AppendError> for Fail {
    fn from(error: AppendError) -> Fail {
        let mut actual_version = None;
        let code = match &error {
            AppendError::Conflict { actual, .. } => {
                actual_version = Some(*actual);
                "CONFLICT"
            }
            AppendError::DuplicateEventId { .. } => "DUPLICATE_ID",
            AppendError::Invalid(_) => "INVALID_ARGUMENT",
            AppendError::Closed => "CLOSED",
            AppendError::Sqlite(e) => sqlite_code(e),
            _ => "INTERNAL",
        };
        Fail {
            code,
            message: error.to_string(),
            actual_version,
        }
    }
}

impl From<ReadError> for Fail {
    fn from(error: ReadError) -> Fail {
        let code = match &error {
            ReadError::Invalid(_) => "INVALID_ARGUMENT",
            ReadError::Archived { .. } | ReadError::Dropped { .. } => "NOT_FOUND",
            ReadError::Corrupt { .. } => "CORRUPT",
            ReadError::Closed => "CLOSED",
            ReadError::Sqlite(e) => sqlite_code(e),
            _ => "INTERNAL",
        };
        Fail::new(code, error.to_string())
    }
}

impl From<ProjectionError> for Fail {
    fn from(error: ProjectionError) -> Fail {
        let code = match &error {
            ProjectionError::Load(_) | ProjectionError::Malformed(_) => "INVALID_ARGUMENT",
            _ => "PROJECTION_FAULT",
        };
        Fail::new(code, error.to_string())
    }
}

impl From<RunnerError> for Fail {
    fn from(error: RunnerError) -> Fail {
        match error {
            RunnerError::Projection(e) => e.into(),
            RunnerError::Read(e) => e.into(),
            other => {
                let code = match &other {
                    RunnerError::Unknown(_) | RunnerError::NotServing { .. } => "NOT_FOUND",
                    RunnerError::InvalidName(_) | RunnerError::OlderVersion { .. } => {
                        "INVALID_ARGUMENT"
                    }
                    RunnerError::Faulted { .. } => "PROJECTION_FAULT",
                    RunnerError::Sqlite(e) => sqlite_code(e),
                    _ => "INTERNAL",
                };
                Fail::new(code, other.to_string())
            }
        }
    }
}

impl From<strata_wasm::EngineError> for Fail {
    fn from(error: strata_wasm::EngineError) -> Fail {
        Fail::internal(format!("plugin engine: {error}"))
    }
}

/// The result of a blocking call, or its panic turned into an error.
pub fn joined<T>(result: Result<Result<T, Fail>, tokio::task::JoinError>) -> napi::Result<T> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(fail)) => Err(fail.into()),
        Err(e) => Err(Fail::internal(format!("the native call failed: {e}")).into()),
    }
}
