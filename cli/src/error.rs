//! CLI errors and their exit codes: 1 for a user error, 2 for an internal one.

use std::path::Path;

use rusqlite::ErrorCode;
use strata::{AppendError, Error, OpenError, ReadError};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The user asked for something that cannot be done (bad input, conflict, missing file,
    /// a store locked by another process...). Exit code 1.
    #[error("{0}")]
    User(String),
    /// A bug or an environment failure (I/O error, corruption...). Exit code 2.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::User(_) => 1,
            CliError::Internal(_) => 2,
        }
    }

    /// A user error with `message`.
    pub fn user(message: impl Into<String>) -> Self {
        CliError::User(message.into())
    }

    /// An I/O error on `path`, classified: missing files and permissions are the user's.
    pub fn io(path: &Path, error: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        let message = format!("{}: {error}", path.display());
        match error.kind() {
            NotFound | PermissionDenied | AlreadyExists | InvalidInput | InvalidData
            | IsADirectory | NotADirectory | BrokenPipe => CliError::User(message),
            _ => CliError::Internal(message),
        }
    }
}

/// SQLite errors the user can act on (a lock held elsewhere, a read-only file, a full disk) are
/// user errors; the rest are internal.
fn sqlite(error: &rusqlite::Error, message: String) -> CliError {
    match error.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::ReadOnly
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied,
        ) => CliError::User(message),
        _ => CliError::Internal(message),
    }
}

impl From<OpenError> for CliError {
    fn from(error: OpenError) -> Self {
        match &error {
            OpenError::Sqlite(e) => sqlite(e, error.to_string()),
            OpenError::Thread(_) => CliError::Internal(error.to_string()),
            _ => CliError::User(error.to_string()),
        }
    }
}

impl From<AppendError> for CliError {
    fn from(error: AppendError) -> Self {
        match &error {
            AppendError::Sqlite(e) => sqlite(e, error.to_string()),
            AppendError::Closed => CliError::Internal(error.to_string()),
            _ => CliError::User(error.to_string()),
        }
    }
}

impl From<ReadError> for CliError {
    fn from(error: ReadError) -> Self {
        match &error {
            ReadError::Sqlite(e) => sqlite(e, error.to_string()),
            ReadError::Closed | ReadError::Corrupt { .. } => CliError::Internal(error.to_string()),
            _ => CliError::User(error.to_string()),
        }
    }
}

impl From<Error> for CliError {
    fn from(error: Error) -> Self {
        match error {
            Error::Open(e) => e.into(),
            Error::Append(e) => e.into(),
            Error::Read(e) => e.into(),
            Error::Sqlite(ref e) => sqlite(e, error.to_string()),
            Error::Io(e) => CliError::io(Path::new("strata"), e),
            other => CliError::User(other.to_string()),
        }
    }
}

/// `Result` with [`CliError`].
pub type CliResult<T = ()> = Result<T, CliError>;
