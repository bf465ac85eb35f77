//! Host memory stays bounded by the guest's memory limit, whatever a hostile plugin asks the
//! host to build: measured as the peak resident set (`VmHWM` in `/proc/self/status`) of a
//! child process that does nothing else, so that other tests do not blur the figure.

mod common;

use std::process::Command;
use std::sync::Arc;

use strata::{MemoryState, ProjectionError};
use strata_wasm::PluginLimits;

use common::{apply, load, proc_status_kib, query, Log};

const CHILD_ENV: &str = "STRATA_WASM_HOST_MEMORY_CHILD";
const GUEST_LIMIT: usize = 64 * 1024 * 1024;
/// What a process with wasmtime, the compiled plugin and a first call may use besides what
/// the plugin makes it build.
const FIXED_OVERHEAD_KIB: u64 = 256 * 1024;

/// The hostile plugin's three host-memory attacks, one after the other, each refused.
fn attack() {
    let limits = PluginLimits {
        max_memory_bytes: GUEST_LIMIT,
        ..PluginLimits::default()
    };
    let mut projection = load("hostile", limits);
    let committed = Arc::new(MemoryState::new());
    let mut log = Log::default();
    log.raw("tick");
    apply(&mut projection, &committed, &log.events).expect("a normal batch");
    let baseline = proc_status_kib("VmHWM");

    // One 1 MiB value asked for 2,048 times: 2 GiB if the host built the whole answer.
    log.push("bulk", "fill", &1u32, 0);
    apply(&mut projection, &committed, &log.events[1..]).expect("fill");
    log.push("bomb", "get-many-bomb", &2048u32, 0);
    let error = apply(&mut projection, &committed, &log.events[2..]).unwrap_err();
    assert!(
        matches!(&error, ProjectionError::Failed(m) if m.contains("cap")),
        "{error:?}"
    );
    let after_get_many = proc_status_kib("VmHWM");

    // 20 MiB under one prefix (over the 16 MiB cap), scanned at once. The test's
    // `MemoryState` holds these 20 MiB as committed state; a store keeps them in SQLite.
    log.push("bulk", "fill", &20u32, 0);
    apply(&mut projection, &committed, &log.events[3..]).expect("fill");
    log.raw("scan-bomb");
    let error = apply(&mut projection, &committed, &log.events[4..]).unwrap_err();
    assert!(
        matches!(&error, ProjectionError::Failed(m) if m.contains("cap")),
        "{error:?}"
    );
    let after_scan = proc_status_kib("VmHWM");

    // A 40 MB query answer (its JSON would be 30 times larger).
    let error = query(&mut projection, &committed, b"nils:40000000").unwrap_err();
    assert!(matches!(&error, ProjectionError::Malformed(_)), "{error:?}");
    let peak = proc_status_kib("VmHWM");
    println!(
        "HOST-MEMORY baseline_kib={baseline} after_get_many_kib={after_get_many} after_scan_kib={after_scan} peak_kib={peak} rss_kib={}",
        proc_status_kib("VmRSS")
    );
}

#[test]
fn host_memory_child() {
    if std::env::var_os(CHILD_ENV).is_some() {
        attack();
    }
}

#[test]
fn host_memory_stays_under_twice_the_guest_limit() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "host_memory_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find("HOST-MEMORY").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no figures from the child:\n{stdout}"));
    println!("{line}");
    let figure = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    let (baseline, peak) = (figure("baseline_kib"), figure("peak_kib"));
    let guest_limit_kib = (GUEST_LIMIT / 1024) as u64;
    assert!(
        baseline < FIXED_OVERHEAD_KIB,
        "{baseline} KiB before any attack"
    );
    assert!(
        peak < baseline + 2 * guest_limit_kib,
        "peak {peak} KiB, baseline {baseline} KiB, guest limit {guest_limit_kib} KiB"
    );
}
