//! Builds and finds the example plugins of this repository (`plugins/examples/`), for tests,
//! the CLI and benches.
//!
//! The guests live in their own cargo workspace (excluded from the root one) and are built for
//! `wasm32-wasip2` in release mode, once per process, with
//!
//! ```text
//! cargo build --release --target wasm32-wasip2 \
//!     --manifest-path plugins/examples/Cargo.toml --target-dir <dir>
//! ```
//!
//! where `<dir>` is `$STRATA_WASM_EXAMPLES_TARGET_DIR` if set, else `$CARGO_TARGET_DIR/wasm-examples`
//! if `CARGO_TARGET_DIR` is set, else `target/wasm-examples` at the repository root. Using a
//! target directory of its own keeps this inner cargo from waiting on the build lock of an
//! outer `cargo test`; concurrent processes are serialized by cargo's own lock on that
//! directory, concurrent threads by a `OnceLock`. When the `wasm32-wasip2` target is missing and
//! rustup is present, it is installed first (`rustup target add wasm32-wasip2`).
//!
//! The guests are built from a checkout of the strata repository: the one this crate was
//! compiled in (its sources' path is built into the binary), or the one `$STRATA_SOURCE_DIR`
//! names. A binary installed and run without the checkout gets [`BuildError::NoCheckout`], which
//! says what is needed, before any cargo runs. Building also needs cargo (`$CARGO` or `cargo` on
//! `PATH`) and the `wasm32-wasip2` target.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The example plugins meant for use (the hostile test plugins are built too but not listed).
pub const EXAMPLES: &[&str] = &["user-stats", "event-counter"];

/// The environment variable naming a strata checkout to build the examples from.
pub const SOURCE_DIR_ENV: &str = "STRATA_SOURCE_DIR";

/// Why the examples could not be built or found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// There is no strata checkout to build them from.
    #[error(
        "the example WASM plugins are built from a checkout of the strata repository, and there \
         is none at {root} (no plugins/examples/Cargo.toml): run this from a checkout \
         (`cargo run --release -p strata-cli -- demo`), or set {SOURCE_DIR_ENV} to the root of one"
    )]
    NoCheckout {
        /// Where the checkout was looked for.
        root: String,
    },
    /// cargo could not be started.
    #[error(
        "building the example WASM plugins needs cargo (a Rust toolchain), and {cargo:?} could not \
         be run: {reason}"
    )]
    NoCargo {
        /// The program that was tried.
        cargo: String,
        /// Why it did not start.
        reason: String,
    },
    /// Running cargo failed; the message includes the end of cargo's output.
    #[error("building the example plugins failed: {0}")]
    Build(String),
    /// The build succeeded but produced no such plugin.
    #[error("no example plugin {name:?} at {path}")]
    NotFound {
        /// The crate name asked for.
        name: String,
        /// Where it was expected.
        path: String,
    },
}

/// The root of the strata checkout: `$STRATA_SOURCE_DIR` if set, else the one this crate was
/// compiled in (one level above it). It may not exist: see [`checkout`].
pub fn repository_root() -> PathBuf {
    if let Some(dir) = std::env::var_os(SOURCE_DIR_ENV) {
        return PathBuf::from(dir);
    }
    let compiled_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    compiled_in.canonicalize().unwrap_or(compiled_in)
}

/// The checkout's root ([`repository_root`]) if it holds the example plugins' workspace, else
/// why not. Cheap: callers check it before doing work that would end in a build.
pub fn checkout() -> Result<PathBuf, BuildError> {
    checkout_at(repository_root())
}

fn checkout_at(root: PathBuf) -> Result<PathBuf, BuildError> {
    if root.join("plugins/examples/Cargo.toml").is_file() {
        Ok(root)
    } else {
        Err(BuildError::NoCheckout {
            root: root.display().to_string(),
        })
    }
}

/// The cargo workspace of the guest plugins.
pub fn examples_manifest() -> PathBuf {
    repository_root().join("plugins/examples/Cargo.toml")
}

/// The target directory the examples are built into (see the module documentation).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STRATA_WASM_EXAMPLES_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("wasm-examples");
    }
    repository_root().join("target/wasm-examples")
}

/// Builds every guest crate of `plugins/examples` (once per process) and returns the directory
/// holding the `.wasm` files.
pub fn build_all() -> Result<PathBuf, BuildError> {
    static BUILT: OnceLock<Result<PathBuf, BuildError>> = OnceLock::new();
    BUILT.get_or_init(run_cargo).clone()
}

/// Builds the examples if needed and returns the path of the plugin `name` (a crate name such
/// as `user-stats`, `event-counter`, or one of the test plugins `hostile`, `malformed`).
pub fn build_and_locate(name: &str) -> Result<PathBuf, BuildError> {
    let dir = build_all()?;
    let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
    if path.is_file() {
        Ok(path)
    } else {
        Err(BuildError::NotFound {
            name: name.to_string(),
            path: path.display().to_string(),
        })
    }
}

/// Builds the examples if needed and returns the bytes of the plugin `name`.
pub fn build_and_read(name: &str) -> Result<Vec<u8>, BuildError> {
    let path = build_and_locate(name)?;
    std::fs::read(&path).map_err(|e| BuildError::Build(format!("reading {}: {e}", path.display())))
}

/// The target the guests are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// Makes sure the `wasm32-wasip2` standard library is installed: when `rustup` manages the
/// toolchain and the target is missing, runs `rustup target add wasm32-wasip2` (once). Without
/// rustup nothing is done; the build then fails with a message naming the fix.
fn ensure_target() -> Result<(), BuildError> {
    let Ok(installed) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        return Ok(()); // no rustup: a toolchain installed otherwise must bring the target.
    };
    if !installed.status.success()
        || String::from_utf8_lossy(&installed.stdout)
            .lines()
            .any(|line| line.trim() == TARGET)
    {
        return Ok(());
    }
    eprintln!("strata-testkit: installing the {TARGET} target (rustup target add {TARGET}) ...");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .map_err(|e| BuildError::Build(format!("could not run rustup: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::Build(format!(
            "`rustup target add {TARGET}` exited with {status}; run it by hand and retry"
        )))
    }
}

fn run_cargo() -> Result<PathBuf, BuildError> {
    checkout()?;
    ensure_target()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = target_dir();
    let output = Command::new(&cargo)
        .arg("build")
        .arg("--release")
        .arg("--target")
        .arg("wasm32-wasip2")
        .arg("--manifest-path")
        .arg(examples_manifest())
        .arg("--target-dir")
        .arg(&target_dir)
        // Settings of an outer cargo that must not leak into the guest build.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .map_err(|e| BuildError::NoCargo {
            cargo: cargo.to_string_lossy().into_owned(),
            reason: e.to_string(),
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let mut start = stderr.len().saturating_sub(4000);
        while !stderr.is_char_boundary(start) {
            start += 1;
        }
        return Err(BuildError::Build(format!(
            "cargo exited with {} (is the target installed? `rustup target add wasm32-wasip2`):\n{}",
            output.status,
            &stderr[start..]
        )));
    }
    Ok(target_dir.join("wasm32-wasip2/release"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkout_this_crate_was_compiled_in_holds_the_examples() {
        let root = checkout_at(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap();
        assert!(root.join("plugins/examples/user-stats").is_dir());
    }

    #[test]
    fn a_missing_checkout_is_an_error_that_says_what_is_needed() {
        let dir = tempfile::tempdir().unwrap();
        let error = checkout_at(dir.path().to_path_buf()).unwrap_err();
        assert!(matches!(error, BuildError::NoCheckout { .. }));
        let message = error.to_string();
        for needed in [
            "checkout of the strata repository",
            &dir.path().display().to_string(),
            "cargo run --release -p strata-cli -- demo",
            SOURCE_DIR_ENV,
        ] {
            assert!(message.contains(needed), "{needed:?} not in {message}");
        }
    }
}
