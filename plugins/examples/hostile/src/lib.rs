//! Test-only plugin that misbehaves on request, to check the host's sandbox and limits.
//!
//! `apply` looks at each event's type:
//!
//! - `loop`: spins forever (the host must stop it at the time budget);
//! - `hog`: allocates and touches memory until it runs out (the host must stop it at the
//!   memory limit);
//! - `trap`: executes `unreachable`;
//! - `recurse`: recurses without end (a stack overflow);
//! - `panic`: panics (a trap, with the message on stderr);
//! - `fail`: returns an error;
//! - `oversize`: writes a value over the host's value limit and ignores the error (the host
//!   must still fail the batch);
//! - `chatty`: writes a line to stdout, one to stderr, and logs at each level;
//! - `sandbox`: tries to read, create and list files, read the environment and arguments, and
//!   stores what happened under the key `sandbox` (a map from attempt to `"denied: ..."` or
//!   `"ALLOWED: ..."`);
//! - anything else: increments the counter under the key `count`.
//!
//! Every `apply` call also increments `batches`, to check that a batch arrives in one call.
//!
//! `query` takes a UTF-8 request: `loop`, `trap`, `panic`, `write` (a write during a query),
//! `batches` to get the number of `apply` calls, or anything else to get the counter
//! (MessagePack u64).

use std::collections::BTreeMap;

use strata_plugin::{encode, export_plugin, state, Error, Event, Plugin};

fn spin() -> ! {
    let mut i: u64 = 0;
    loop {
        i = std::hint::black_box(i.wrapping_add(1));
    }
}

fn hog() -> usize {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        // 1 MiB at a time, written to so that it is really used.
        chunks.push(vec![0xA5; 1 << 20]);
        std::hint::black_box(&chunks);
        if chunks.len() > 1 << 20 {
            return chunks.len();
        }
    }
}

fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    let mut frame = [0u8; 512];
    frame[(depth % 512) as usize] = depth as u8;
    std::hint::black_box(&mut frame);
    recurse(depth + 1) + u64::from(frame[0])
}

fn outcome<T: std::fmt::Debug, E: std::fmt::Display>(result: Result<T, E>) -> String {
    match result {
        Ok(value) => format!("ALLOWED: {value:?}"),
        Err(error) => format!("denied: {error}"),
    }
}

fn probe_sandbox() -> Result<(), Error> {
    let mut report = BTreeMap::new();
    report.insert(
        "read /etc/passwd",
        outcome(std::fs::read_to_string("/etc/passwd").map(|s| s.len())),
    );
    report.insert(
        "read ./Cargo.toml",
        outcome(std::fs::read_to_string("Cargo.toml").map(|s| s.len())),
    );
    report.insert(
        "create /tmp/strata-sandbox-escape",
        outcome(std::fs::write("/tmp/strata-sandbox-escape", b"escaped")),
    );
    report.insert("list /", outcome(std::fs::read_dir("/").map(|d| d.count())));
    let vars: Vec<(String, String)> = std::env::vars().collect();
    report.insert(
        "environment",
        if vars.is_empty() {
            "denied: empty".to_string()
        } else {
            format!("ALLOWED: {} variables", vars.len())
        },
    );
    let args: Vec<String> = std::env::args().collect();
    report.insert(
        "arguments",
        if args.is_empty() {
            "denied: empty".to_string()
        } else {
            format!("ALLOWED: {args:?}")
        },
    );
    report.insert(
        "connect 127.0.0.1:22",
        outcome(std::net::TcpStream::connect("127.0.0.1:22").map(|_| ())),
    );
    state::put("sandbox", &report)
}

struct Hostile;

impl Plugin for Hostile {
    const NAME: &'static str = "hostile";
    const VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &[];

    fn apply_batch(events: &[Event]) -> Result<(), Error> {
        let batches: u64 = state::get("batches")?.unwrap_or(0);
        state::put("batches", &(batches + 1))?;
        for event in events {
            Self::apply(event).map_err(|e| {
                e.context(format!(
                    "{} at position {}",
                    event.event_type, event.position
                ))
            })?;
        }
        Ok(())
    }

    fn apply(event: &Event) -> Result<(), Error> {
        match event.event_type.as_str() {
            "loop" => spin(),
            "hog" => Err(Error::new(format!("hog survived with {} MiB", hog()))),
            "trap" => std::arch::wasm32::unreachable(),
            "recurse" => Err(Error::new(format!("recursion ended at {}", recurse(0)))),
            "panic" => panic!(
                "hostile plugin panics on purpose at position {}",
                event.position
            ),
            "fail" => Err(Error::new("hostile plugin refuses this event")),
            "oversize" => {
                let huge = vec![0u8; 8 << 20];
                // Swallow the error on purpose: the host must fail the call anyway.
                let _ = state::raw::put(b"huge", &huge);
                Ok(())
            }
            "sandbox" => probe_sandbox(),
            "chatty" => {
                println!("hostile says hello on stdout");
                eprintln!("hostile says hello on stderr");
                strata_plugin::log::debug("hostile logs at debug");
                strata_plugin::log::info("hostile logs at info");
                strata_plugin::log::warn("hostile logs at warn");
                strata_plugin::log::error("hostile logs at error");
                Ok(())
            }
            _ => {
                eprintln!("hostile plugin counts event {}", event.position);
                let count: u64 = state::get("count")?.unwrap_or(0);
                state::put("count", &(count + 1))
            }
        }
    }

    fn query(request: &[u8]) -> Result<Vec<u8>, Error> {
        match request {
            b"loop" => spin(),
            b"trap" => std::arch::wasm32::unreachable(),
            b"panic" => panic!("hostile plugin panics in a query"),
            b"write" => {
                state::put("count", &0u64)?;
                encode(&"wrote during a query")
            }
            b"batches" => encode(&state::get::<u64>("batches")?.unwrap_or(0)),
            _ => encode(&state::get::<u64>("count")?.unwrap_or(0)),
        }
    }
}

export_plugin!(Hostile);
