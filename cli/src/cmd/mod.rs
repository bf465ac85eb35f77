//! One module per command group; `main.rs` parses the arguments and calls into them.
//!
//! Shared by the commands: opening an existing store, and the user-facing form of read and
//! maintenance errors.

pub mod append;
pub mod bucket;
pub mod check;
pub mod demo;
pub mod export;
pub mod import;
pub mod init;
pub mod projection;
pub mod read;
pub mod replicate;
pub mod stats;
pub mod tail;

use std::path::Path;

use strata::maintenance::MaintenanceError;
use strata::{Options, ReadError, Store};

use crate::error::{CliError, CliResult};

/// Opens an existing store; a missing file is a user error (stores are created by `init`).
pub fn open_existing(db: &Path) -> CliResult<Store> {
    if !db.exists() {
        return Err(CliError::user(format!(
            "no store at {} (create one with `strata init --db {}`)",
            db.display(),
            db.display()
        )));
    }
    Ok(Store::open(db, Options::default())?)
}

/// A read error as the user sees it: an archived or dropped range names the `--from` that
/// skips it.
pub fn archived_hint(error: ReadError) -> CliError {
    match &error {
        ReadError::Archived { last_position, .. } | ReadError::Dropped { last_position, .. } => {
            CliError::user(format!(
                "{error} (read from position {} with --from to skip it)",
                last_position + 1
            ))
        }
        _ => error.into(),
    }
}

/// A maintenance error as a user error when the user can act on it (a missing or protected
/// file, a bucket in the wrong state), else internal.
pub fn maintenance(error: MaintenanceError) -> CliError {
    match error {
        MaintenanceError::Sqlite(_) => CliError::Internal(error.to_string()),
        MaintenanceError::Io { ref source, .. }
            if !matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            CliError::Internal(error.to_string())
        }
        other => CliError::User(other.to_string()),
    }
}
