//! `strata bucket ...`: list, seal, archive, drop, retention.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use comfy_table::Table;
use strata::maintenance::RetentionAction;
use strata::{BucketInfo, Store};

use crate::cmd::{maintenance, open_existing};
use crate::error::{CliError, CliResult};
use crate::term;

#[derive(Debug, Subcommand)]
pub enum BucketCommand {
    /// List the buckets: id, state, time range, positions, events, archive file.
    ///
    /// Example: strata bucket list --db events.strata
    List,
    /// Seal a bucket: no more appends go to it (the next append opens a new bucket).
    ///
    /// Example: strata bucket seal --db events.strata 3
    Seal {
        /// The bucket id.
        id: i64,
    },
    /// Move a sealed bucket into its own SQLite file and out of the store, in one step.
    ///
    /// The archive holds the events with stream ids and type names (table `events`, view
    /// `events_readable`, table `archive_info`) and opens with the sqlite3 shell. Reads of its
    /// range then name the archive file. The store file is vacuumed afterwards unless
    /// --no-vacuum.
    ///
    /// Example: strata bucket archive --db events.strata 1 --to archives/
    Archive {
        /// The bucket id.
        id: i64,
        /// An existing directory (the file is named after the store and the bucket) or the path
        /// of a new file.
        #[arg(long)]
        to: PathBuf,
        #[command(flatten)]
        vacuum: VacuumArg,
    },
    /// Delete a sealed bucket and its events.
    ///
    /// Example: strata bucket drop --db events.strata 1 --yes
    Drop {
        /// The bucket id.
        id: i64,
        /// Confirm that the events are to be deleted.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        vacuum: VacuumArg,
    },
    /// Retention: archive or drop every sealed bucket whose time range ended more than the
    /// given age ago. The active bucket is never touched.
    ///
    /// Example: strata bucket retain --db events.strata --older-than 90d --archive-to archives/
    ///
    /// Example: strata bucket retain --db events.strata --older-than 1y --drop --yes
    Retain {
        /// Age, such as 90d, 12h, 1y 6months.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Duration,
        /// Archive the buckets into this directory.
        #[arg(long, required_unless_present = "drop", conflicts_with = "drop")]
        archive_to: Option<PathBuf>,
        /// Drop the buckets (needs --yes).
        #[arg(long)]
        drop: bool,
        /// Confirm that dropped events are to be deleted.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        vacuum: VacuumArg,
    },
}

#[derive(Debug, Args)]
pub struct VacuumArg {
    /// Do not VACUUM the store afterwards (the freed pages are reused by later appends).
    #[arg(long)]
    no_vacuum: bool,
}

/// Runs `strata bucket COMMAND` on the store `db`.
pub fn run(db: &Path, command: BucketCommand) -> CliResult {
    match command {
        BucketCommand::List => list(db),
        BucketCommand::Seal { id } => seal(db, id),
        BucketCommand::Archive { id, to, vacuum } => archive(db, id, &to, !vacuum.no_vacuum),
        BucketCommand::Drop { id, yes, vacuum } => {
            confirm(yes)?;
            drop_bucket(db, id, !vacuum.no_vacuum)
        }
        BucketCommand::Retain {
            older_than,
            archive_to,
            drop,
            yes,
            vacuum,
        } => {
            let action = match archive_to {
                Some(dir) => RetentionAction::ArchiveTo(dir),
                None => {
                    debug_assert!(drop);
                    confirm(yes)?;
                    RetentionAction::Drop
                }
            };
            retain(db, older_than, action, !vacuum.no_vacuum)
        }
    }
}

fn confirm(yes: bool) -> CliResult {
    if yes {
        Ok(())
    } else {
        Err(CliError::user(
            "dropping deletes events for good: add --yes to confirm",
        ))
    }
}

fn space(store: &Store, vacuum: bool) -> CliResult {
    if vacuum {
        let report = store.reclaim_space().map_err(maintenance)?;
        println!(
            "store size {} -> {}",
            term::bytes(report.bytes_before),
            term::bytes(report.bytes_after)
        );
    } else {
        println!(
            "store size {} (space is reused by later appends; run without --no-vacuum to shrink the file)",
            term::bytes(store.size_bytes().map_err(maintenance)?)
        );
    }
    Ok(())
}

/// `strata bucket list`.
fn list(db: &Path) -> CliResult {
    let store = open_existing(db)?;
    println!("{}", bucket_table(&store.buckets()?));
    Ok(())
}

/// `strata bucket seal`.
fn seal(db: &Path, id: i64) -> CliResult {
    let store = open_existing(db)?;
    let bucket = store.seal_bucket(id).map_err(maintenance)?;
    println!("bucket {} is {}", bucket.id, bucket.state.as_str());
    Ok(())
}

/// `strata bucket archive`.
fn archive(db: &Path, id: i64, to: &Path, vacuum: bool) -> CliResult {
    let store = open_existing(db)?;
    let report = store.archive_bucket(id, to).map_err(maintenance)?;
    println!(
        "archived bucket {} ({} events) to {} ({})",
        id,
        report.events,
        report.archive_path.display(),
        term::bytes(report.archive_bytes)
    );
    space(&store, vacuum)
}

/// `strata bucket drop`.
fn drop_bucket(db: &Path, id: i64, vacuum: bool) -> CliResult {
    let store = open_existing(db)?;
    let bucket = store.drop_bucket(id).map_err(maintenance)?;
    println!(
        "dropped bucket {} ({} events)",
        bucket.id, bucket.event_count
    );
    space(&store, vacuum)
}

/// `strata bucket retain`.
fn retain(db: &Path, older_than: Duration, action: RetentionAction, vacuum: bool) -> CliResult {
    let store = open_existing(db)?;
    let done = store.retain(older_than, &action).map_err(maintenance)?;
    if done.is_empty() {
        let age = if older_than.as_secs().is_multiple_of(86_400) && older_than.subsec_nanos() == 0 {
            format!("{} days", older_than.as_secs() / 86_400)
        } else {
            humantime::format_duration(older_than).to_string()
        };
        println!("no sealed bucket ended more than {age} ago");
        return Ok(());
    }
    for item in &done {
        match &item.archive {
            Some(report) => println!(
                "archived bucket {} ({} events) to {}",
                item.bucket.id,
                report.events,
                report.archive_path.display()
            ),
            None => println!(
                "dropped bucket {} ({} events)",
                item.bucket.id, item.bucket.event_count
            ),
        }
    }
    space(&store, vacuum)
}

/// The bucket catalog as a table.
pub fn bucket_table(buckets: &[BucketInfo]) -> Table {
    let mut table = term::table([
        "id",
        "state",
        "from",
        "to",
        "positions",
        "events",
        "archive",
    ]);
    for bucket in buckets {
        let positions = match (bucket.first_position, bucket.last_position) {
            (Some(first), Some(last)) => format!("{first}..={last}"),
            _ => "-".into(),
        };
        table.add_row(vec![
            bucket.id.to_string(),
            bucket.state.as_str().to_owned(),
            term::time(bucket.start_micros),
            term::time(bucket.end_micros),
            positions,
            term::thousands(bucket.event_count),
            bucket.archive_path.clone().unwrap_or_default(),
        ]);
    }
    table
}
