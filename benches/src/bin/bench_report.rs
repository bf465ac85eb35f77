//! Prints the ratios of the goals that the benches measure, from criterion's saved estimates.
//!
//! Usage: `cargo run -p strata-benches --bin bench-report` after `cargo bench -p strata-benches`.
//! Each line: the goal, the two medians (time per iteration), and the throughput ratio.

use std::path::{Path, PathBuf};

/// (group, measured function, baseline function, goal as "ratio >= x", what the ratio means)
const GOALS: &[(&str, &str, &str, f64, &str)] = &[
    (
        "batched_append",
        "strata",
        "rusqlite_indexed",
        1.0,
        "strata / raw rusqlite, indexed table",
    ),
    (
        "batched_append",
        "strata",
        "rusqlite_plain",
        0.5,
        "strata / raw rusqlite, integer key only",
    ),
    (
        "interleaved_append",
        "strata",
        "rusqlite_plain",
        0.5,
        "strata / raw rusqlite integer key only, 1,000 interleaved streams",
    ),
    (
        "durable_single_append",
        "strata",
        "rusqlite_full",
        // p50 latency ≤ 1.2x raw: as a throughput ratio, ≥ 1 / 1.2.
        0.833,
        "one durable append: raw insert+commit latency / strata latency (goal: strata ≤ 1.2x)",
    ),
    (
        "concurrent_durable_append",
        "threads_16",
        "threads_1",
        8.0,
        "16 threads / 1 thread, events/s",
    ),
    (
        "append_with_large_log",
        "large_log",
        "empty_log",
        0.8,
        "10M-event log / empty log",
    ),
    (
        "conditional_append",
        "with_condition",
        "without_condition",
        0.7,
        "DCB: append with a condition (type + tag, 10k tags, 1M events) / without",
    ),
    (
        "read_query",
        "read_query",
        "read_stream",
        0.5,
        "DCB: read_query of one tag (~100 of 1M events) / read_stream of the same 100 events",
    ),
    (
        "batched_append_tags",
        "one_tag_per_event",
        "no_tags",
        0.0,
        "DCB: batched append, one tag per event / no tags (reported, no goal)",
    ),
    (
        "cache",
        "warm_cache",
        "cache_off",
        10.0,
        "warm cached stream read / cache off",
    ),
    (
        "catch_up",
        "subscription",
        "read_all_pages",
        0.8,
        "subscription catch-up / paging read_all",
    ),
    (
        "projection_throughput",
        "wasm_event_counter",
        "native_event_counter",
        0.5,
        "WASM / native, event-counter",
    ),
    (
        "projection_throughput",
        "wasm_user_stats",
        "native_user_stats",
        0.5,
        "WASM / native, user-stats",
    ),
    (
        "plugin_load",
        "warm",
        "cold",
        5.0,
        "plugin load from the compiled cache / compiling",
    ),
    (
        "c_abi",
        "c_append_batch",
        "rust_append_batch",
        0.9,
        "C ABI / Rust, batched append",
    ),
    (
        "c_abi",
        "c_read_stream",
        "rust_read_stream",
        0.9,
        "C ABI / Rust, stream read",
    ),
];

fn median_ns(root: &Path, group: &str, function: &str) -> Option<f64> {
    let path = root
        .join(group)
        .join(function)
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn human(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn main() {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/criterion"));
    println!("| goal | measured (median) | baseline (median) | ratio | goal | met |");
    println!("|---|---|---|---|---|---|");
    for (group, measured, baseline, goal, what) in GOALS {
        let (Some(m), Some(b)) = (
            median_ns(&root, group, measured),
            median_ns(&root, group, baseline),
        ) else {
            continue;
        };
        // Same work per iteration on both sides: the throughput ratio is baseline time / measured time.
        let ratio = b / m;
        let met = if ratio >= *goal { "yes" } else { "no" };
        println!(
            "| {what} | {} | {} | {ratio:.2}x | ≥ {goal}x | {met} |",
            human(m),
            human(b)
        );
    }
}
