//! `strata export`: the log as JSON Lines that `strata import` takes back.

use std::io::{BufWriter, Write};
use std::path::Path;

use crate::cmd::{archived_hint, maintenance, open_existing};
use crate::error::{CliError, CliResult};
use crate::jsonl::EventLine;
use crate::out::Out;
use crate::term;

/// `strata export`.
pub fn run(db: &Path, output: Option<&Path>, from: u64) -> CliResult {
    let store = open_existing(db)?;
    let total = store
        .last_position()?
        .saturating_sub(from.saturating_sub(1));
    let mut count = 0u64;
    match output {
        None => {
            let mut out = Out::new();
            for event in store.iter_all(from) {
                let event = event.map_err(archived_hint)?;
                if !out.line(&EventLine::from_event(&event).to_json())? {
                    break;
                }
            }
            out.finish()
        }
        Some(path) => {
            // Written under a temporary name and renamed into place when complete and synced:
            // the output's name never holds a partial export. A leftover temporary file of a
            // killed run is ours and replaced; an existing output is never overwritten.
            if path.exists() {
                return Err(CliError::io(
                    path,
                    std::io::Error::new(std::io::ErrorKind::AlreadyExists, "file exists"),
                ));
            }
            let partial = strata::maintenance::partial_path(path);
            match std::fs::remove_file(&partial) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(CliError::io(&partial, e))
                }
                _ => {}
            }
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&partial)
                .map_err(|e| CliError::io(&partial, e))?;
            let mut writer = BufWriter::new(file);
            let bar = term::progress(total, "export");
            for event in store.iter_all(from) {
                let event = event.map_err(archived_hint)?;
                writeln!(writer, "{}", EventLine::from_event(&event).to_json())
                    .map_err(|e| CliError::io(path, e))?;
                count += 1;
                if count.is_multiple_of(1024) {
                    bar.set_position(count);
                }
            }
            writer
                .into_inner()
                .map_err(|e| CliError::io(path, e.into_error()))?
                .sync_all()
                .map_err(|e| CliError::io(path, e))?;
            strata::maintenance::rename_synced(&partial, path).map_err(maintenance)?;
            bar.finish_and_clear();
            eprintln!("exported {count} events to {}", path.display());
            Ok(())
        }
    }
}
