//! `strata init`: a new, empty store file.

use std::path::Path;

use strata::{BucketWidth, Options, Store};

use crate::error::{CliError, CliResult};

/// `strata init`.
pub fn run(db: &Path, width: BucketWidth) -> CliResult {
    if db.exists() && std::fs::metadata(db).is_ok_and(|m| m.len() > 0) {
        return Err(CliError::user(format!("{} already exists", db.display())));
    }
    let store = Store::open(
        db,
        Options {
            bucket_width: Some(width),
            ..Options::default()
        },
    )?;
    println!(
        "created store {} (bucket width {})",
        db.display(),
        store.bucket_width()
    );
    Ok(())
}
