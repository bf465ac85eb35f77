//! `strata demo` end to end, through the built binary.

use assert_cmd::Command;

fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

#[test]
fn demo_appends_reads_back_and_reports_every_event_type() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.strata");
    let output = strata()
        .args([
            "demo", "--events", "3000", "--batch", "250", "--fast", "--db",
        ])
        .arg(&db)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("append: 3,000 events"), "{stdout}");
    assert!(stdout.contains("read:   3,000 events"), "{stdout}");
    // The per-type counts add up to the total.
    let mut total = 0u64;
    for kind in strata::workload::EVENT_TYPES {
        let line = stdout
            .lines()
            .find(|line| line.starts_with(&format!("| {kind} ")))
            .unwrap_or_else(|| panic!("no row for {kind} in\n{stdout}"));
        let count: u64 = line
            .split('|')
            .nth(2)
            .unwrap()
            .trim()
            .replace(',', "")
            .parse()
            .unwrap();
        total += count;
    }
    assert_eq!(total, 3000);
    // The WASM projections ran and agreed with the native computation.
    assert!(
        stdout.contains("check: the plugins' answers equal the native computation"),
        "{stdout}"
    );
    assert!(stdout.contains("Top spenders, answered by the user-stats plugin"));
    assert!(stdout.contains("| event-counter "), "{stdout}");
    // Not a terminal: no progress bar escape codes anywhere.
    assert!(!stdout.contains('\u{1b}'));
    assert!(!String::from_utf8_lossy(&output.stderr).contains('\u{1b}'));

    // Running it again on the same file stores nothing twice.
    let output = strata()
        .args([
            "demo", "--events", "3000", "--batch", "250", "--fast", "--db",
        ])
        .arg(&db)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains("3,000 of them were already in the store"),
        "{stdout}"
    );
    assert!(stdout.contains("read:   3,000 events"), "{stdout}");
}

#[test]
fn demo_rejects_out_of_range_arguments_with_exit_code_1() {
    let output = strata().args(["demo", "--events", "0"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("--events must be"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1);
}

#[test]
fn demo_help_has_an_example() {
    let output = strata().args(["demo", "--help"]).output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8(output.stdout)
        .unwrap()
        .contains("Example: strata demo"));
}
