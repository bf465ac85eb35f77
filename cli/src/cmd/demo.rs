//! `strata demo`: the users-and-orders workload, appended, read back and summarised.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use strata::{Durability, Options, ProjectionPhase, ProjectionRunner, RunnerOptions, Store};
use strata_testkit::examples::{self, BuildError};
use strata_testkit::reference::{self, UserStats};
use strata_testkit::workload::{Workload, WorkloadConfig};

use crate::error::{CliError, CliResult};
use crate::term;

/// Most events the demo generates.
pub const MAX_DEMO_EVENTS: u64 = 100_000_000;

/// What `strata demo` was asked to do.
#[derive(Debug, Clone)]
pub struct DemoArgs {
    /// Events to generate.
    pub events: u64,
    /// Store file; a temporary one when `None`.
    pub db: Option<PathBuf>,
    /// Events per append call.
    pub batch: usize,
    /// Seed of the workload.
    pub seed: u64,
    /// Use `Durability::Fast`.
    pub fast: bool,
}

/// Runs the demo, printing its report on stdout.
pub fn run(args: DemoArgs) -> CliResult {
    if args.events == 0 || args.events > MAX_DEMO_EVENTS {
        return Err(CliError::user(format!(
            "--events must be 1..={MAX_DEMO_EVENTS}"
        )));
    }
    let max_batch = Options::default().max_events_per_append;
    if args.batch == 0 || args.batch > max_batch {
        return Err(CliError::user(format!("--batch must be 1..={max_batch}")));
    }

    // The WASM half needs the repository's sources: say so before doing anything.
    examples::checkout().map_err(build_error)?;

    // The temporary directory lives until the end of the demo, then is removed.
    let (_temp, path) = match &args.db {
        Some(path) => (None, path.clone()),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("strata-demo-")
                .tempdir()
                .map_err(|e| CliError::io(&std::env::temp_dir(), e))?;
            let path = dir.path().join("demo.strata");
            (Some(dir), path)
        }
    };
    let options = Options {
        durability: if args.fast {
            Durability::Fast
        } else {
            Durability::Durable
        },
        ..Options::default()
    };
    let store = Store::open(&path, options.clone())?;
    let last_before = store.last_position()?;
    println!(
        "strata demo: {} events of the users-and-orders workload (seed {}) into {}",
        term::thousands(args.events),
        args.seed,
        path.display()
    );
    println!(
        "  bucket width {}, durability {:?}, appends of up to {} events",
        store.bucket_width(),
        options.durability,
        term::thousands(args.batch as u64)
    );

    // Append.
    let mut workload = Workload::new(WorkloadConfig {
        seed: args.seed,
        events: args.events,
        ..WorkloadConfig::default()
    });
    let bar = term::progress(args.events, "append");
    let started = Instant::now();
    let (mut appends, mut payload_bytes, mut already_stored) = (0u64, 0u64, 0u64);
    while let Some(batch) = workload.next_batch(args.batch) {
        let events: u64 = batch.iter().map(|part| part.events.len() as u64).sum();
        payload_bytes += batch
            .iter()
            .flat_map(|part| part.events.iter())
            .map(|event| (event.data.len() + event.metadata.len()) as u64)
            .sum::<u64>();
        let results = store.append_multi(batch)?;
        already_stored += results
            .iter()
            .filter(|r| r.already_stored)
            .map(|r| r.last_position - r.first_position + 1)
            .sum::<u64>();
        appends += 1;
        bar.inc(events);
    }
    let append_elapsed = started.elapsed();
    bar.finish_and_clear();
    let appended = args.events;
    println!(
        "append: {} events in {} appends, {:.2} s: {} events/s, {}/s of payload",
        term::thousands(appended),
        term::thousands(appends),
        append_elapsed.as_secs_f64(),
        term::thousands(rate(appended, append_elapsed.as_secs_f64())),
        term::bytes(rate(payload_bytes, append_elapsed.as_secs_f64())),
    );
    if already_stored > 0 {
        println!(
            "  {} of them were already in the store (same seed, same event ids): stored once",
            term::thousands(already_stored)
        );
    }

    // Read everything back, in position order.
    let total = store.last_position()?;
    let bar = term::progress(total, "read");
    let started = Instant::now();
    let mut read = 0u64;
    let counts = reference::event_counts(store.iter_all(1).inspect(|_| {
        read += 1;
        if read.is_multiple_of(4096) {
            bar.set_position(read);
        }
    }))?;
    let read_elapsed = started.elapsed();
    bar.finish_and_clear();
    println!(
        "read:   {} events in {:.2} s: {} events/s",
        term::thousands(read),
        read_elapsed.as_secs_f64(),
        term::thousands(rate(read, read_elapsed.as_secs_f64())),
    );
    if last_before > 0 {
        println!(
            "  (the store held {} events before this run)",
            term::thousands(last_before)
        );
    }

    println!("\nEvents per type:");
    let mut table = term::table(["event type", "events"]);
    for (kind, count) in &counts {
        table.add_row(vec![kind.clone(), term::thousands(*count)]);
    }
    println!("{table}");

    println!("\nBuckets:");
    println!("{}", crate::cmd::bucket::bucket_table(&store.buckets()?));

    // The native reference for the user-stats projection: per-user totals over completed orders.
    let started = Instant::now();
    let stats = reference::user_stats(store.iter_all(1))?;
    let stats_elapsed = started.elapsed();
    let orders: u64 = stats.values().map(|s| s.total_orders).sum();
    let spent: i64 = stats.values().map(|s| s.total_spent).sum();
    println!(
        "\nUser stats (native fold over the log, {:.2} s): {} users with {} completed orders, {}.{:02} spent",
        stats_elapsed.as_secs_f64(),
        term::thousands(stats.len() as u64),
        term::thousands(orders),
        spent / 100,
        spent % 100
    );
    let top = reference::top_spenders(&stats);
    println!("Top spenders:\n{}", spenders_table(top.into_iter().take(5)));

    projections(&store, &stats, &counts, total)?;

    store.close();
    if args.db.is_none() {
        println!("\n(the temporary store is removed; pass --db PATH to keep it)");
    }
    Ok(())
}

/// Registers the example WASM projections (user-stats, event-counter), folds the log through
/// them, prints their answers and checks them against the native computation: a mismatch is an
/// error.
fn projections(
    store: &Store,
    native: &BTreeMap<String, UserStats>,
    counts: &BTreeMap<String, u64>,
    head: u64,
) -> CliResult {
    println!("\nWASM projections (plugins/examples, built for wasm32-wasip2 on first use):");
    let started = Instant::now();
    let mut paths = Vec::new();
    for name in ["user-stats", "event-counter"] {
        paths.push((name, examples::build_and_locate(name).map_err(build_error)?));
    }
    let built = started.elapsed();
    let engine = crate::cmd::projection::engine()?;
    let runner = ProjectionRunner::new(store, RunnerOptions::default())
        .map_err(|e| CliError::Internal(e.to_string()))?;
    let mut table = term::table([
        "projection",
        "version",
        "load",
        "log positions folded",
        "catch-up",
        "positions/s",
    ]);
    for (name, path) in &paths {
        let wasm = std::fs::read(path).map_err(|e| CliError::io(path, e))?;
        let load_started = Instant::now();
        let (status, _) = crate::cmd::projection::add_module(store, &runner, &engine, &wasm)?;
        let load = load_started.elapsed();
        let from = status.checkpoint;
        let fold_started = Instant::now();
        let status = runner
            .catch_up(name)
            .map_err(|e| CliError::Internal(e.to_string()))?;
        let fold = fold_started.elapsed();
        if let ProjectionPhase::Faulted { position, message } = &status.phase {
            return Err(CliError::Internal(format!(
                "projection {name} faulted at position {position}: {message}"
            )));
        }
        let folded = status.checkpoint - from;
        table.add_row(vec![
            name.to_string(),
            status.version.to_string(),
            format!("{} ms", load.as_millis()),
            format!(
                "{} (positions {}..={})",
                term::thousands(folded),
                from + 1,
                status.checkpoint
            ),
            format!("{:.2} s", fold.as_secs_f64()),
            term::thousands(rate(folded, fold.as_secs_f64())),
        ]);
        if status.checkpoint != head {
            return Err(CliError::Internal(format!(
                "projection {name} stopped at {} of {head}",
                status.checkpoint
            )));
        }
    }
    println!(
        "  (plugins ready in {:.2} s; user-stats reads only order_created and order_completed, \
         so its rate counts the log positions it got past)",
        built.as_secs_f64()
    );
    println!("{table}");

    // user-stats: every user's answer must equal the native fold, bit for bit.
    let query = |request: serde_json::Value| -> CliResult<serde_json::Value> {
        let bytes =
            rmp_serde::to_vec_named(&request).map_err(|e| CliError::Internal(e.to_string()))?;
        let answer = runner
            .query("user-stats", &bytes)
            .map_err(|e| CliError::Internal(e.to_string()))?;
        crate::cmd::projection::msgpack_to_json(&answer)
    };
    let mut mismatches = Vec::new();
    for (user, expected) in native {
        let request = rmp_serde::to_vec_named(&serde_json::json!({ "user_id": user }))
            .map_err(|e| CliError::Internal(e.to_string()))?;
        let answer = runner
            .query("user-stats", &request)
            .map_err(|e| CliError::Internal(e.to_string()))?;
        let got: Option<UserStats> = rmp_serde::from_slice(&answer)
            .map_err(|e| CliError::Internal(format!("user-stats answered {user}: {e}")))?;
        if got.as_ref() != Some(expected) {
            mismatches.push(format!("{user}: wasm {got:?}, native {expected:?}"));
        }
    }
    let top = query(serde_json::json!({ "top": 5 }))?;
    let top: Vec<UserStats> = serde_json::from_value(top)
        .map_err(|e| CliError::Internal(format!("user-stats top: {e}")))?;
    let native_top = reference::top_spenders(native);
    if top.iter().collect::<Vec<_>>() != native_top.into_iter().take(5).collect::<Vec<_>>() {
        mismatches.push(format!("top 5: wasm {top:?}"));
    }
    println!(
        "Top spenders, answered by the user-stats plugin:\n{}",
        spenders_table(&top)
    );

    // event-counter: the counts per type must equal the ones read back.
    let answer = runner
        .query(
            "event-counter",
            &rmp_serde::to_vec_named(&serde_json::json!({})).expect("{}"),
        )
        .map_err(|e| CliError::Internal(e.to_string()))?;
    let wasm_counts: BTreeMap<String, u64> = rmp_serde::from_slice(&answer)
        .map_err(|e| CliError::Internal(format!("event-counter: {e}")))?;
    let mut table = term::table(["event type", "events (plugin)", "events (read back)"]);
    for (kind, count) in &wasm_counts {
        table.add_row(vec![
            kind.clone(),
            term::thousands(*count),
            term::thousands(counts.get(kind).copied().unwrap_or(0)),
        ]);
    }
    println!("Events per type, answered by the event-counter plugin:\n{table}");
    if &wasm_counts != counts {
        mismatches.push(format!(
            "event counts: wasm {wasm_counts:?}, native {counts:?}"
        ));
    }

    if !mismatches.is_empty() {
        for mismatch in mismatches.iter().take(10) {
            eprintln!("MISMATCH {mismatch}");
        }
        return Err(CliError::Internal(format!(
            "the WASM projections disagree with the native computation ({} mismatches)",
            mismatches.len()
        )));
    }
    println!(
        "check: the plugins' answers equal the native computation for all {} users and {} event types",
        term::thousands(native.len() as u64),
        counts.len()
    );
    Ok(())
}

/// A failure to build the example plugins: missing prerequisites are the user's to supply.
fn build_error(error: BuildError) -> CliError {
    match error {
        BuildError::NoCheckout { .. } | BuildError::NoCargo { .. } => {
            CliError::user(format!("demo: {error}"))
        }
        other => CliError::Internal(other.to_string()),
    }
}

/// Users' order statistics as a table, in the order given.
fn spenders_table<'a>(users: impl IntoIterator<Item = &'a UserStats>) -> comfy_table::Table {
    let mut table = term::table(["user", "orders", "spent", "average", "last order"]);
    for user in users {
        table.add_row(vec![
            user.user_id.clone(),
            user.total_orders.to_string(),
            format!("{}.{:02}", user.total_spent / 100, user.total_spent % 100),
            format!("{:.2}", user.average_order_value / 100.0),
            term::time(user.last_order_date),
        ]);
    }
    table
}

fn rate(count: u64, seconds: f64) -> u64 {
    if seconds <= 0.0 {
        count
    } else {
        (count as f64 / seconds) as u64
    }
}
