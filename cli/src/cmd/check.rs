//! `strata check`: SQLite's integrity check and strata's invariants.

use std::path::Path;

use crate::cmd::open_existing;
use crate::error::{CliError, CliResult};
use crate::out::Out;

/// `strata check`: Ok when the store is sound, a user-visible failure otherwise.
pub fn run(db: &Path) -> CliResult {
    let store = open_existing(db)?;
    let report = store.check()?;
    let mut out = Out::new();
    for problem in &report.problems {
        out.line(&problem.to_string())?;
    }
    if report.problem_count > report.problems.len() as u64 {
        out.line(&format!(
            "... and {} more",
            report.problem_count - report.problems.len() as u64
        ))?;
    }
    for stray in &report.stray_files {
        out.line(&format!(
            "stray file {} (left by an interrupted archive or export: rerun it, or delete the file)",
            stray.display()
        ))?;
    }
    out.line(&format!(
        "checked {} buckets, {} streams, {} events (log ends at position {}): {}",
        report.buckets,
        report.streams,
        report.events_checked,
        report.last_position,
        if report.is_ok() {
            "ok".to_owned()
        } else {
            format!("{} problems", report.problem_count)
        }
    ))?;
    out.finish()?;
    if report.is_ok() {
        Ok(())
    } else {
        Err(CliError::user(format!(
            "{} is damaged: {} problems found",
            db.display(),
            report.problem_count
        )))
    }
}
