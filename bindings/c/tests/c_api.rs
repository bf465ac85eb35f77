//! Compiles the C programs of this crate with the system C compiler (`cc`), links them against
//! the `libstrata.so` cargo built for this test run, and runs them:
//!
//! - `tests/c/test_strata.c core DIR`: every function but the projections, with its error paths,
//!   under `valgrind --leak-check=full --error-exitcode=1` (zero errors, zero leaks) when valgrind
//!   is installed, plainly (with a loud message) when it is not;
//! - `tests/c/regressions.c`: issue 16's C ABI defects, against the old header's functions only,
//!   under valgrind;
//! - `tests/c/test_strata.c projections WASM`: the projection functions with the `event-counter`
//!   example plugin, under valgrind as well (wasmtime under valgrind takes about 2 minutes);
//! - `examples/example.c`, the README's example, whose output is checked.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The directory holding `libstrata.so`: the profile directory above this test's `deps/`
/// (`<target>/<profile>/deps/c_api-<hash>`).
///
/// `cargo test` builds this crate's library only as an rlib for the tests, so the cdylib is
/// built here, once per process, with the same cargo, target directory and profile (cargo has
/// released its build lock by the time tests run; an up-to-date build takes a fraction of a
/// second).
fn library_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("current_exe");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("<target>/<profile>");
            let target_dir = profile_dir.parent().expect("<target>");
            let profile = profile_dir.file_name().unwrap().to_str().unwrap();
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut command = Command::new(cargo);
            command
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "strata-ffi",
                    "--lib",
                    "--target-dir",
                ])
                .arg(target_dir)
                .current_dir(crate_dir());
            match profile {
                "debug" => {}
                "release" => {
                    command.arg("--release");
                }
                other => {
                    command.args(["--profile", other]);
                }
            }
            let status = command.status().expect("run cargo to build libstrata.so");
            assert!(
                status.success(),
                "building libstrata.so failed: {command:?}"
            );
            assert!(
                profile_dir.join("libstrata.so").is_file(),
                "no libstrata.so in {}",
                profile_dir.display()
            );
            profile_dir.to_path_buf()
        })
        .clone()
}

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Compiles `source` into `out_dir` and returns the executable.
fn compile(source: &Path, out_dir: &Path) -> PathBuf {
    let lib = library_dir();
    let exe = out_dir.join(source.file_stem().unwrap());
    let output = Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()))
        .args(["-std=gnu11", "-g", "-O1", "-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg(source)
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-lstrata", "-lpthread", "-ldl", "-lm"])
        .output()
        .expect("run the C compiler `cc` (install gcc or clang)");
    assert!(
        output.status.success(),
        "compiling {} failed:\n{}",
        source.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    exe
}

fn has_valgrind() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(mut command: Command) -> String {
    let output = command.output().expect("run the C test program");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{command:?} failed with {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    stdout
}

/// `exe` under `valgrind --leak-check=full` (every leak kind an error, exit 1 on any error)
/// with our suppressions, or plainly with a loud message when valgrind is not installed.
fn under_valgrind(exe: &Path) -> Command {
    if has_valgrind() {
        let mut command = Command::new("valgrind");
        command.args([
            "--leak-check=full",
            "--show-leak-kinds=definite,indirect,possible",
            "--errors-for-leak-kinds=definite,indirect,possible",
            "--error-exitcode=1",
            "--quiet",
        ]);
        command.arg(format!(
            "--suppressions={}",
            crate_dir().join("tests/c/valgrind.supp").display()
        ));
        command.arg(exe);
        command
    } else {
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !! valgrind is not installed: the C test runs WITHOUT leak and memory checks.   !!\n\
             !! Install it (apt-get install valgrind) to run the full test.                  !!\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        Command::new(exe)
    }
}

#[test]
fn the_c_test_passes_under_valgrind_without_errors_or_leaks() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile(&crate_dir().join("tests/c/test_strata.c"), dir.path());
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut command = under_valgrind(&exe);
    command.arg("core").arg(&data);
    let stdout = run(command);
    assert!(stdout.contains("all checks passed (core)"), "{stdout}");
}

#[test]
fn the_issue_16_regression_program_passes_under_valgrind() {
    // Written against the functions of the header before the fixes, so that it also runs
    // against the old library, where it failed (RELIABILITY.md, "Found and fixed").
    let dir = tempfile::tempdir().unwrap();
    let exe = compile(&crate_dir().join("tests/c/regressions.c"), dir.path());
    let stdout = run(under_valgrind(&exe));
    assert!(stdout.ends_with("0 failed\n"), "{stdout}");
    assert_eq!(stdout.matches("pass: ").count(), 9, "{stdout}");
}

#[test]
fn the_c_projection_test_passes_under_valgrind_without_errors_or_leaks() {
    let wasm = strata_testkit::examples::build_and_locate("event-counter")
        .expect("build the example plugins (rustup target add wasm32-wasip2)");
    let dir = tempfile::tempdir().unwrap();
    let exe = compile(&crate_dir().join("tests/c/test_strata.c"), dir.path());
    // Under valgrind too (about 2 minutes: wasmtime compiles the component under it).
    let mut command = under_valgrind(&exe);
    command.arg("projections").arg(&wasm);
    let stdout = run(command);
    assert!(
        stdout.contains("all checks passed (projections)"),
        "{stdout}"
    );
}

#[test]
fn a_cpp_program_including_the_header_first_compiles_with_warnings_as_errors() {
    let lib = library_dir();
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("header_first");
    let output = Command::new(std::env::var_os("CXX").unwrap_or_else(|| "g++".into()))
        .args(["-std=c++17", "-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg(crate_dir().join("tests/c/header_first.cpp"))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-lstrata", "-lpthread", "-ldl", "-lm"])
        .output()
        .expect("run the C++ compiler `g++`");
    assert!(
        output.status.success(),
        "compiling tests/c/header_first.cpp failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(run(Command::new(&exe)), "c++ ok: position 1\n");
}

#[test]
fn the_readme_c_example_compiles_runs_and_is_in_the_readme() {
    let source = crate_dir().join("examples/example.c");
    let dir = tempfile::tempdir().unwrap();
    let exe = compile(&source, dir.path());
    let stdout = run(Command::new(&exe));
    assert_eq!(
        stdout,
        "appended positions 1..2, version 2\n\
         conflict: actual version 2\n\
         v1 order_created (21 bytes)\n\
         v2 order_paid (0 bytes)\n"
    );
    let readme = std::fs::read_to_string(crate_dir().join("../../README.md")).unwrap();
    let example = std::fs::read_to_string(&source).unwrap();
    assert!(
        readme.contains(&format!("```c\n{example}```")),
        "README.md's \"Using it from C\" section must hold bindings/c/examples/example.c verbatim"
    );
}
