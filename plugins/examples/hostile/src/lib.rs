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
//! - `sleep`: `std::thread::sleep` for 30 s (the host must time it out within its budget);
//! - `slow-host-call`: one `get-many` of 300,000 distinct keys (the host must stop the
//!   import itself at the budget, not after it returns);
//! - `fill`: stores `count` (event data, MessagePack u32) values of 1 MiB under `bulk:<n>`;
//! - `get-many-bomb`: `get-many` of the key `bulk:0` `times` times (event data, u32), which the
//!   host must refuse past its result cap; the error fails the batch;
//! - `scan-bomb`: `scan-prefix` of `bulk:` with the largest limit, refused past the cap;
//! - `log-flood`: writes 16 MiB to stdout, 16 MiB to stderr and 16 MiB through `log`;
//! - `entropy`: stores, under `entropy:<position>`, what it can learn of time and chance: the
//!   wall clock, the monotonic clock around a 2 ms sleep, and hashes with fresh std
//!   `RandomState`s (hash seeds) -- all of which the host makes deterministic;
//! - anything else: increments the counter under the key `count`.
//!
//! Every `apply` call also increments `batches`, to check that a batch arrives in one call.
//!
//! `query` takes a UTF-8 request: `loop`, `trap`, `panic`, `write` (a write during a query),
//! `batches` to get the number of `apply` calls, `nils:<n>` for a MessagePack array of `n`
//! nils (an answer that grows 30-fold when converted to JSON), or anything else to get the
//! counter (MessagePack u64).

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// Everything a guest can observe of time and chance through std.
fn entropy() -> BTreeMap<&'static str, String> {
    let mut seen = BTreeMap::new();
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos().to_string())
        .unwrap_or_else(|e| format!("before the epoch by {:?}", e.duration()));
    seen.insert("wall clock ns", wall);
    let before = Instant::now();
    std::thread::sleep(Duration::from_millis(2));
    seen.insert(
        "monotonic ns across a 2 ms sleep",
        before.elapsed().as_nanos().to_string(),
    );
    let hashes: Vec<u64> = (0..3)
        .map(|_| {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write(b"strata");
            hasher.finish()
        })
        .collect();
    seen.insert("hash of \"strata\" with fresh RandomStates", format!("{hashes:?}"));
    let set: std::collections::HashSet<u32> = (0..16).collect();
    seen.insert(
        "HashSet iteration order",
        format!("{:?}", set.iter().collect::<Vec<_>>()),
    );
    seen
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
            "sleep" => {
                std::thread::sleep(Duration::from_secs(30));
                Err(Error::new("slept 30 s and was not stopped"))
            }
            "slow-host-call" => {
                let keys: Vec<Vec<u8>> = (0..300_000u32).map(|i| i.to_le_bytes().to_vec()).collect();
                let found = state::raw::get_many(&keys)?;
                Err(Error::new(format!(
                    "get-many of {} keys returned without being stopped",
                    found.len()
                )))
            }
            "fill" => {
                let count: u32 = event.decode()?;
                for n in 0..count {
                    state::raw::put(format!("bulk:{n:04}").as_bytes(), &vec![n as u8; 1 << 20])?;
                }
                Ok(())
            }
            "get-many-bomb" => {
                let times: u32 = event.decode()?;
                let keys = vec![b"bulk:0000".to_vec(); times as usize];
                let values = state::raw::get_many(&keys)?;
                Err(Error::new(format!(
                    "get-many of {} MiB was answered",
                    values.iter().flatten().map(Vec::len).sum::<usize>() >> 20
                )))
            }
            "scan-bomb" => {
                let entries = state::raw::scan_prefix(b"bulk:", None, u32::MAX)?;
                Err(Error::new(format!(
                    "scan-prefix of {} entries was answered",
                    entries.len()
                )))
            }
            "log-flood" => {
                let line = "x".repeat(1 << 20);
                for _ in 0..16 {
                    println!("{line}");
                    eprintln!("{line}");
                    strata_plugin::log::info(&line);
                }
                Ok(())
            }
            "entropy" => state::put(&format!("entropy:{}", event.position), &entropy()),
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
            other if other.starts_with(b"nils:") => {
                let count: u32 = std::str::from_utf8(&other[5..])
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| Error::new("nils:<count>"))?;
                let mut answer = Vec::with_capacity(count as usize + 5);
                answer.push(0xdd); // array 32
                answer.extend_from_slice(&count.to_be_bytes());
                answer.resize(count as usize + 5, 0xc0);
                Ok(answer)
            }
            _ => encode(&state::get::<u64>("count")?.unwrap_or(0)),
        }
    }
}

export_plugin!(Hostile);
