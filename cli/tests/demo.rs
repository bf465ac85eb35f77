//! `strata demo` end to end, through the built binary.

use strata_testkit::cli::StrataBinary;

const STRATA: StrataBinary = StrataBinary::new(env!("CARGO_BIN_EXE_strata"));

#[test]
fn demo_appends_reads_back_and_reports_every_event_type() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.strata");
    let output = STRATA
        .command()
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
    for kind in strata_testkit::workload::EVENT_TYPES {
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
    let output = STRATA
        .command()
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
    let output = STRATA
        .command()
        .args(["demo", "--events", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("--events must be"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1);
}

#[test]
fn demo_help_has_an_example() {
    let output = STRATA.command().args(["demo", "--help"]).output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8(output.stdout)
        .unwrap()
        .contains("Example: strata demo"));
}

#[test]
fn demo_without_a_checkout_says_what_it_needs_before_doing_anything() {
    // An installed binary whose checkout is gone: STRATA_SOURCE_DIR points at an empty directory.
    let elsewhere = tempfile::tempdir().unwrap();
    let db = elsewhere.path().join("demo.strata");
    let output = STRATA
        .command()
        .env("STRATA_SOURCE_DIR", elsewhere.path())
        .args(["demo", "--events", "1000", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for needed in [
        "checkout of the strata repository",
        &elsewhere.path().display().to_string(),
        "STRATA_SOURCE_DIR",
        "cargo run --release -p strata-cli -- demo",
    ] {
        assert!(stderr.contains(needed), "{needed:?} not in {stderr}");
    }
    assert!(!stderr.contains("cargo exited"), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing was run");
    assert!(!db.exists(), "no store was created");
}

#[test]
fn demo_of_a_copied_binary_finds_the_checkout_it_was_built_in() {
    // The binary alone, moved out of the target directory, still knows its checkout; STRATA_SOURCE_DIR
    // set to that checkout is the same.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("strata");
    std::fs::copy(STRATA.path(), &copy).unwrap();
    let checkout = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for source_dir in [None, Some(checkout.as_path())] {
        let mut command = std::process::Command::new(&copy);
        command
            .env_remove("STRATA_DB")
            .env_remove("STRATA_SOURCE_DIR");
        if let Some(source_dir) = source_dir {
            command.env("STRATA_SOURCE_DIR", source_dir);
        }
        let output = command
            .current_dir(dir.path())
            .args(["demo", "--events", "500", "--fast"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert!(
            stdout.contains("check: the plugins' answers equal the native computation"),
            "{stdout}"
        );
    }
}
