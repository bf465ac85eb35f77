//! `strata`: the command line of the strata embedded event store.

mod buckets;
mod demo;
mod error;
mod term;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use error::CliResult;

/// strata: an embedded event store in one SQLite file.
///
/// Exit codes: 0 success, 1 user error (message on stderr), 2 internal error.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate the users-and-orders workload, append it, read it back and report.
    ///
    /// Appends N events of a deterministic users-and-orders workload (user_created,
    /// user_updated, account_verified, order_created, payment_confirmed, inventory_reserved,
    /// order_completed) to a store, reads them back, and prints counts per event type, the
    /// bucket list, append and read throughput, and per-user order statistics.
    ///
    /// Example: strata demo --events 200000
    ///
    /// Example: strata demo --events 50000 --db /tmp/demo.strata
    Demo {
        /// Number of events to generate.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Store file to use (created if missing); by default a store in a temporary directory,
        /// removed at the end. Running the demo twice on one file stores the events once: the
        /// workload's event ids are derived from the seed.
        #[arg(long)]
        db: Option<PathBuf>,
        /// Events per append call (each call is one atomic multi-stream append).
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
        /// Seed of the workload generator.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Use Fast durability (no fsync per commit) instead of Durable.
        #[arg(long)]
        fast: bool,
    },
}

fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Demo {
            events,
            db,
            batch,
            seed,
            fast,
        } => demo::run(demo::DemoArgs {
            events,
            db,
            batch,
            seed,
            fast,
        }),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("strata: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
