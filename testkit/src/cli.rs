//! Running the `strata` binary in tests and reading what it printed.
//!
//! Cargo tells only the CLI's own integration tests where the binary is
//! (`env!("CARGO_BIN_EXE_strata")`), so each test file names it once:
//!
//! ```text
//! const STRATA: StrataBinary = StrataBinary::new(env!("CARGO_BIN_EXE_strata"));
//! let stdout = succeeded(STRATA.at(&db).arg("check").output().unwrap());
//! ```

use std::path::Path;
use std::process::{Command, Output};

/// The environment variables the CLI reads as defaults of its flags (`--db`, `--url`): removed
/// from every command, so that a developer's own settings never reach a test.
pub const FLAG_ENV: [&str; 2] = ["STRATA_DB", "STRATA_NATS_URL"];

/// The `strata` binary under test.
#[derive(Clone, Copy, Debug)]
pub struct StrataBinary(&'static str);

impl StrataBinary {
    /// The binary at `path` (`env!("CARGO_BIN_EXE_strata")`).
    pub const fn new(path: &'static str) -> Self {
        StrataBinary(path)
    }

    /// Its path.
    pub fn path(&self) -> &'static Path {
        Path::new(self.0)
    }

    /// `strata` with no arguments yet, and none of [`FLAG_ENV`] in its environment.
    pub fn command(&self) -> Command {
        let mut command = Command::new(self.0);
        for name in FLAG_ENV {
            command.env_remove(name);
        }
        command
    }

    /// `strata --db DB`, as [`StrataBinary::command`].
    pub fn at(&self, db: &Path) -> Command {
        let mut command = self.command();
        command.arg("--db").arg(db);
        command
    }
}

/// The stdout of a run that must have exited 0; otherwise panics showing the exit code and
/// both streams.
#[track_caller]
pub fn succeeded(output: Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("stdout is UTF-8")
}

/// The stderr of a run that must have exited with `code`; otherwise panics showing both streams.
#[track_caller]
pub fn failed_with(output: Output, code: i32) -> String {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stderr).expect("stderr is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str) -> Output {
        Command::new("sh").args(["-c", script]).output().unwrap()
    }

    #[test]
    fn succeeded_returns_stdout_and_failed_with_returns_stderr() {
        assert_eq!(succeeded(shell("echo out; echo err >&2")), "out\n");
        assert_eq!(failed_with(shell("echo err >&2; exit 3"), 3), "err\n");
    }

    #[test]
    #[should_panic(expected = "exit Some(1)")]
    fn succeeded_panics_on_a_failed_run() {
        succeeded(shell("exit 1"));
    }

    #[test]
    #[should_panic]
    fn failed_with_panics_on_another_exit_code() {
        failed_with(shell("exit 2"), 1);
    }

    #[test]
    fn commands_carry_no_flag_defaults_from_the_environment() {
        let binary = StrataBinary::new("/bin/sh");
        let command = binary.at(Path::new("x.db"));
        let removed: Vec<_> = command
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        assert_eq!(removed, FLAG_ENV);
        let args: Vec<_> = command.get_args().collect();
        assert_eq!(args, ["--db", "x.db"]);
    }
}
