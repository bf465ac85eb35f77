//! strata's errors as the Python exception classes of `strata._errors`, one class per failure
//! (the same split as the C ABI's status codes).

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyModule;
use strata::{AppendError, OpenError, ProjectionError, ReadError, RunnerError};

/// The failures, named as their classes in `strata/_errors.py`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Conflict,
    DuplicateId,
    InvalidArgument,
    NotFound,
    Closed,
    Corrupt,
    Incompatible,
    Busy,
    Full,
    Io,
    ProjectionFault,
    Misuse,
    Internal,
    ConditionFailed,
}

impl Kind {
    fn class_name(self) -> &'static str {
        match self {
            Kind::Conflict => "ConflictError",
            Kind::DuplicateId => "DuplicateIdError",
            Kind::InvalidArgument => "InvalidArgumentError",
            Kind::NotFound => "NotFoundError",
            Kind::Closed => "ClosedError",
            Kind::Corrupt => "CorruptError",
            Kind::Incompatible => "IncompatibleError",
            Kind::Busy => "BusyError",
            Kind::Full => "FullError",
            Kind::Io => "StrataIOError",
            Kind::ProjectionFault => "ProjectionFaultError",
            Kind::Misuse => "MisuseError",
            Kind::Internal => "InternalError",
            Kind::ConditionFailed => "ConditionFailedError",
        }
    }
}

/// A failed call on the Rust side, turned into its Python exception by [`Fail::into_py_err`]
/// (which needs the GIL; a `Fail` can be built without it).
#[derive(Debug)]
pub struct Fail {
    pub kind: Kind,
    pub message: String,
    /// For a conflict: the stream's actual version.
    pub actual_version: Option<u64>,
    /// For `ConditionFailed`: the first matching position and the condition's `after`.
    pub condition: Option<(u64, u64)>,
}

impl Fail {
    pub fn new(kind: Kind, message: impl Into<String>) -> Fail {
        Fail {
            kind,
            message: message.into(),
            actual_version: None,
            condition: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Fail {
        Fail::new(Kind::InvalidArgument, message)
    }

    pub fn closed(what: &str) -> Fail {
        Fail::new(Kind::Closed, format!("{what} is closed"))
    }
}

static ERRORS_MODULE: GILOnceCell<Py<PyModule>> = GILOnceCell::new();

impl From<Fail> for PyErr {
    fn from(fail: Fail) -> PyErr {
        Python::with_gil(|py| fail.into_py_err(py))
    }
}

impl Fail {
    pub fn into_py_err(self, py: Python<'_>) -> PyErr {
        let made = (|| -> PyResult<PyErr> {
            let module = ERRORS_MODULE
                .get_or_try_init(py, || Ok::<_, PyErr>(py.import("strata._errors")?.unbind()))?;
            let class = module.bind(py).getattr(self.kind.class_name())?;
            let value = match (self.actual_version, self.condition) {
                (Some(actual), _) => class.call1((self.message.as_str(), actual))?,
                (None, Some((position, after))) => {
                    class.call1((self.message.as_str(), position, after))?
                }
                (None, None) => class.call1((self.message.as_str(),))?,
            };
            Ok(PyErr::from_value(value))
        })();
        made.unwrap_or_else(|error| {
            PyRuntimeError::new_err(format!("{} (and raising it failed: {error})", self.message))
        })
    }
}

fn sqlite_kind(error: &rusqlite::Error) -> Kind {
    use rusqlite::ErrorCode::*;
    match error.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked) => Kind::Busy,
        Some(DiskFull) => Kind::Full,
        Some(DatabaseCorrupt | NotADatabase) => Kind::Corrupt,
        Some(SystemIoFailure | CannotOpen | ReadOnly | PermissionDenied) => Kind::Io,
        _ => Kind::Internal,
    }
}

impl From<OpenError> for Fail {
    fn from(error: OpenError) -> Fail {
        let kind = match &error {
            OpenError::NotADatabase { .. } => Kind::Corrupt,
            OpenError::NotAStrataStore { .. }
            | OpenError::SchemaTooNew { .. }
            | OpenError::BucketWidthMismatch { .. } => Kind::Incompatible,
            OpenError::InvalidOption(_) => Kind::InvalidArgument,
            OpenError::Sqlite(e) => sqlite_kind(e),
            _ => Kind::Internal,
        };
        Fail::new(kind, error.to_string())
    }
}

impl From<AppendError> for Fail {
    fn from(error: AppendError) -> Fail {
        let mut actual_version = None;
        let mut condition = None;
        let kind = match &error {
            AppendError::ConditionFailed { position, after } => {
                condition = Some((*position, *after));
                Kind::ConditionFailed
            }
            AppendError::Conflict { actual, .. } => {
                actual_version = Some(*actual);
                Kind::Conflict
            }
            AppendError::DuplicateEventId { .. } => Kind::DuplicateId,
            AppendError::Invalid(_) => Kind::InvalidArgument,
            AppendError::Closed => Kind::Closed,
            AppendError::Sqlite(e) => sqlite_kind(e),
            _ => Kind::Internal,
        };
        Fail {
            kind,
            message: error.to_string(),
            actual_version,
            condition,
        }
    }
}

impl From<ReadError> for Fail {
    fn from(error: ReadError) -> Fail {
        let kind = match &error {
            ReadError::Invalid(_) => Kind::InvalidArgument,
            ReadError::Archived { .. } | ReadError::Dropped { .. } => Kind::NotFound,
            ReadError::Corrupt { .. } => Kind::Corrupt,
            ReadError::Closed => Kind::Closed,
            ReadError::Sqlite(e) => sqlite_kind(e),
            _ => Kind::Internal,
        };
        Fail::new(kind, error.to_string())
    }
}

impl From<ProjectionError> for Fail {
    fn from(error: ProjectionError) -> Fail {
        let kind = match &error {
            ProjectionError::Load(_) | ProjectionError::Malformed(_) => Kind::InvalidArgument,
            _ => Kind::ProjectionFault,
        };
        Fail::new(kind, error.to_string())
    }
}

impl From<RunnerError> for Fail {
    fn from(error: RunnerError) -> Fail {
        match error {
            RunnerError::Projection(e) => e.into(),
            RunnerError::Read(e) => e.into(),
            other => {
                let kind = match &other {
                    RunnerError::Unknown(_) | RunnerError::NotServing { .. } => Kind::NotFound,
                    RunnerError::InvalidName(_) | RunnerError::OlderVersion { .. } => {
                        Kind::InvalidArgument
                    }
                    RunnerError::Faulted { .. } => Kind::ProjectionFault,
                    RunnerError::Sqlite(e) => sqlite_kind(e),
                    _ => Kind::Internal,
                };
                Fail::new(kind, other.to_string())
            }
        }
    }
}

impl From<strata_wasm::EngineError> for Fail {
    fn from(error: strata_wasm::EngineError) -> Fail {
        Fail::new(Kind::Internal, format!("plugin engine: {error}"))
    }
}
