//! `strata projection ...`: WebAssembly projections stored in the store file.
//!
//! Projections are code, and every CLI command is a new process, so `projection add` stores the
//! component's bytes in the store file itself, in a table the CLI creates on first use:
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS projection_modules (
//!     name TEXT NOT NULL, version INTEGER NOT NULL,
//!     wasm BLOB NOT NULL, sha256 TEXT NOT NULL, added_at INTEGER NOT NULL,
//!     PRIMARY KEY (name, version));
//! ```
//!
//! The file stays self-contained (copy it and the projections come along). Later commands load
//! every stored, non-retired version of a projection (compiled code comes from wasmtime's
//! on-disk cache after the first load), register them with a `ProjectionRunner` and work on the
//! statuses the runner keeps in the `projections` table.

use std::path::Path;
use std::time::Instant;

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use strata::{ProjectionPhase, ProjectionRunner, ProjectionStatus, RunnerOptions, Store};
use strata_wasm::{CacheDir, EngineOptions, PluginEngine, PluginLimits, WasmProjection};

use crate::error::{CliError, CliResult};
use crate::term;

const CREATE_MODULES: &str = "CREATE TABLE IF NOT EXISTS projection_modules (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    wasm BLOB NOT NULL,
    sha256 TEXT NOT NULL,
    added_at INTEGER NOT NULL,
    PRIMARY KEY (name, version)
)";

/// The process's plugin engine: wasmtime's default on-disk cache, or no cache if that cannot be
/// set up (a read-only home directory, say).
pub fn engine() -> CliResult<PluginEngine> {
    match PluginEngine::shared() {
        Ok(engine) => Ok(engine),
        Err(error) => {
            eprintln!("strata: compiled-plugin cache unavailable ({error}); compiling every time");
            PluginEngine::new(EngineOptions {
                cache: CacheDir::Disabled,
                ..EngineOptions::default()
            })
            .map_err(|e| CliError::Internal(e.to_string()))
        }
    }
}

/// A projection error as a one-line user error (wasmtime's messages can span lines).
fn projection_error(error: impl std::fmt::Display) -> CliError {
    let text = error.to_string();
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > 400 {
        let mut cut = 400;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str(" ...");
    }
    CliError::user(line)
}

fn modules_connection(store: &Store) -> CliResult<Connection> {
    let path = store
        .path()
        .ok_or_else(|| CliError::Internal("projection modules need a store file".into()))?;
    let conn = Connection::open(&path).map_err(|e| CliError::Internal(e.to_string()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .and_then(|_| conn.execute_batch(CREATE_MODULES))
        .map_err(|e| CliError::Internal(format!("projection_modules: {e}")))?;
    Ok(conn)
}

/// A stored module.
pub struct StoredModule {
    /// The projection's name.
    pub name: String,
    /// Its version.
    pub version: u32,
    /// The component.
    pub wasm: Vec<u8>,
}

fn sqlite_error(error: rusqlite::Error) -> CliError {
    CliError::Internal(format!("projection_modules: {error}"))
}

/// Stores `wasm` as the module of `projection` (replacing the same name and version).
fn store_module(store: &Store, projection: &WasmProjection, wasm: &[u8]) -> CliResult<String> {
    let sha256 = hex::encode(Sha256::digest(wasm));
    let info = projection.info();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    modules_connection(store)?
        .execute(
            "INSERT OR REPLACE INTO projection_modules (name, version, wasm, sha256, added_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![info.name, info.version, wasm, sha256, now],
        )
        .map_err(sqlite_error)?;
    Ok(sha256)
}

/// The stored modules of `name` (every name when `None`), oldest version first.
pub fn stored_modules(store: &Store, name: Option<&str>) -> CliResult<Vec<StoredModule>> {
    let conn = modules_connection(store)?;
    let mut statement = conn
        .prepare(
            "SELECT name, version, wasm FROM projection_modules
             WHERE (?1 IS NULL OR name = ?1) ORDER BY name, version",
        )
        .map_err(sqlite_error)?;
    let rows = statement
        .query_map([name], |r| {
            Ok(StoredModule {
                name: r.get(0)?,
                version: r.get(1)?,
                wasm: r.get(2)?,
            })
        })
        .map_err(sqlite_error)?;
    rows.collect::<Result<_, _>>().map_err(sqlite_error)
}

fn module_sha(store: &Store, name: &str, version: u32) -> CliResult<Option<String>> {
    modules_connection(store)?
        .query_row(
            "SELECT sha256 FROM projection_modules WHERE name = ?1 AND version = ?2",
            params![name, version],
            |r| r.get(0),
        )
        .optional()
        .map_err(sqlite_error)
}

/// Loads `wasm`, stores it in the file and registers it with `runner`. Returns its status.
pub fn add_module(
    store: &Store,
    runner: &ProjectionRunner,
    engine: &PluginEngine,
    wasm: &[u8],
) -> CliResult<(ProjectionStatus, String)> {
    let projection =
        WasmProjection::load(engine, wasm, PluginLimits::default()).map_err(projection_error)?;
    let sha256 = store_module(store, &projection, wasm)?;
    let status = runner
        .register(Box::new(projection))
        .map_err(projection_error)?;
    Ok((status, sha256))
}

/// Registers every stored, non-retired version of `name` with `runner`. Fails when the store
/// has no module for it.
pub fn register_stored(
    store: &Store,
    runner: &ProjectionRunner,
    engine: &PluginEngine,
    name: &str,
) -> CliResult {
    let retired: Vec<u32> = ProjectionRunner::list(store)
        .map_err(projection_error)?
        .into_iter()
        .filter(|s| s.name == name && s.phase == ProjectionPhase::Retired)
        .map(|s| s.version)
        .collect();
    let modules: Vec<StoredModule> = stored_modules(store, Some(name))?
        .into_iter()
        .filter(|m| !retired.contains(&m.version))
        .collect();
    if modules.is_empty() {
        return Err(CliError::user(format!(
            "no module stored for projection {name:?}: add it with `strata projection add FILE.wasm`"
        )));
    }
    for module in modules {
        let projection = WasmProjection::load(engine, &module.wasm, PluginLimits::default())
            .map_err(|e| {
                projection_error(format!(
                    "loading {} version {}: {e}",
                    module.name, module.version
                ))
            })?;
        runner
            .register(Box::new(projection))
            .map_err(projection_error)?;
    }
    Ok(())
}

fn new_runner(store: &Store) -> CliResult<ProjectionRunner> {
    ProjectionRunner::new(store, RunnerOptions::default()).map_err(projection_error)
}

fn phase_text(phase: &ProjectionPhase) -> String {
    match phase {
        ProjectionPhase::Faulted { position, message } => {
            format!("faulted at position {position}: {message}")
        }
        other => other.as_str().to_owned(),
    }
}

/// Catches up `name`, printing how far it went; warns when it is faulted.
fn catch_up(runner: &ProjectionRunner, name: &str) -> CliResult<ProjectionStatus> {
    let started = Instant::now();
    let before = runner.status(name).map_err(projection_error)?;
    let status = runner.catch_up(name).map_err(projection_error)?;
    if let ProjectionPhase::Faulted { .. } = status.phase {
        eprintln!(
            "strata: projection {name} is {}; answers come from its state at position {}",
            phase_text(&status.phase),
            status.checkpoint
        );
    } else if status.checkpoint > before.checkpoint || before.version != status.version {
        eprintln!(
            "caught up {name} v{} to position {} in {:.2} s",
            status.version,
            status.checkpoint,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(status)
}

/// `strata projection add FILE`.
pub fn add(db: &Path, file: &Path, run: bool) -> CliResult {
    let wasm = std::fs::read(file).map_err(|e| CliError::io(file, e))?;
    let store = crate::commands::open_existing(db)?;
    let runner = new_runner(&store)?;
    let engine = engine()?;
    // Older stored versions serve queries while a new one rebuilds: register them first.
    let projection =
        WasmProjection::load(&engine, &wasm, PluginLimits::default()).map_err(projection_error)?;
    let name = projection.info().name.clone();
    drop(projection);
    if !stored_modules(&store, Some(&name))?.is_empty() {
        register_stored(&store, &runner, &engine, &name)?;
    }
    let (status, sha256) = add_module(&store, &runner, &engine, &wasm)?;
    println!(
        "added projection {} version {} (sha256 {}), {}",
        status.name,
        status.version,
        &sha256[..16],
        phase_text(&status.phase)
    );
    if run {
        let status = catch_up(&runner, &name)?;
        print_status(&status);
    }
    store.close();
    Ok(())
}

/// `strata projection list`.
pub fn list(db: &Path) -> CliResult {
    let store = crate::commands::open_existing(db)?;
    let statuses = ProjectionRunner::list(&store).map_err(projection_error)?;
    let mut table = term::table([
        "name",
        "version",
        "phase",
        "checkpoint",
        "lag",
        "event types",
        "module",
    ]);
    for status in &statuses {
        let module = module_sha(&store, &status.name, status.version)?
            .map_or_else(|| "(not stored)".to_owned(), |sha| sha[..16].to_owned());
        table.add_row(vec![
            status.name.clone(),
            status.version.to_string(),
            phase_text(&status.phase),
            term::thousands(status.checkpoint),
            term::thousands(status.lag),
            if status.event_types.is_empty() {
                "(all)".to_owned()
            } else {
                status.event_types.join(", ")
            },
            module,
        ]);
    }
    if statuses.is_empty() {
        println!("no projections (add one with `strata projection add FILE.wasm`)");
    } else {
        println!("{table}");
    }
    Ok(())
}

fn print_status(status: &ProjectionStatus) {
    println!("name:        {}", status.name);
    println!("version:     {}", status.version);
    println!("phase:       {}", phase_text(&status.phase));
    println!("checkpoint:  {}", status.checkpoint);
    println!("lag:         {}", status.lag);
    println!(
        "event types: {}",
        if status.event_types.is_empty() {
            "(all)".to_owned()
        } else {
            status.event_types.join(", ")
        }
    );
}

/// `strata projection status NAME`: every stored version of `name`.
pub fn status(db: &Path, name: &str) -> CliResult {
    let store = crate::commands::open_existing(db)?;
    let statuses: Vec<ProjectionStatus> = ProjectionRunner::list(&store)
        .map_err(projection_error)?
        .into_iter()
        .filter(|s| s.name == name)
        .collect();
    if statuses.is_empty() {
        return Err(CliError::user(format!("no projection named {name:?}")));
    }
    for (i, status) in statuses.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print_status(status);
        let module = module_sha(&store, &status.name, status.version)?;
        println!(
            "module:      {}",
            module.as_deref().unwrap_or("(not stored in this file)")
        );
    }
    let runner = new_runner(&store)?;
    let skipped = runner.skipped(name).map_err(projection_error)?;
    for (position, message) in skipped {
        println!("skipped:     position {position}: {message}");
    }
    Ok(())
}

/// `strata projection rebuild NAME`: when a newer stored version is rebuilding, runs it to the
/// head (queries keep using the old version until the swap); otherwise resets the projection
/// and folds the whole log again.
pub fn rebuild(db: &Path, name: &str) -> CliResult {
    let store = crate::commands::open_existing(db)?;
    let runner = new_runner(&store)?;
    let engine = engine()?;
    register_stored(&store, &runner, &engine, name)?;
    let rebuilding = ProjectionRunner::list(&store)
        .map_err(projection_error)?
        .iter()
        .any(|s| s.name == name && s.phase == ProjectionPhase::Rebuilding);
    if !rebuilding {
        runner.reset(name).map_err(projection_error)?;
    }
    let started = Instant::now();
    let status = runner.catch_up(name).map_err(projection_error)?;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "rebuilt {name} version {} to position {} in {elapsed:.2} s",
        status.version, status.checkpoint
    );
    print_status(&status);
    if let ProjectionPhase::Faulted { .. } = status.phase {
        return Err(CliError::user(format!(
            "projection {name} is {}",
            phase_text(&status.phase)
        )));
    }
    Ok(())
}

/// `strata projection reset NAME`: forgets its state and checkpoint (the module stays).
pub fn reset(db: &Path, name: &str) -> CliResult {
    let store = crate::commands::open_existing(db)?;
    let runner = new_runner(&store)?;
    let status = runner.reset(name).map_err(projection_error)?;
    println!("reset {name}: state cleared, it folds the log again from position 1");
    print_status(&status);
    Ok(())
}

/// Converts a JSON request to MessagePack.
pub fn json_to_msgpack(json: &str) -> CliResult<Vec<u8>> {
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| CliError::user(format!("the request is not valid JSON: {e}")))?;
    rmp_serde::to_vec_named(&value).map_err(|e| CliError::Internal(e.to_string()))
}

/// Converts a MessagePack response to JSON.
pub fn msgpack_to_json(bytes: &[u8]) -> CliResult<serde_json::Value> {
    rmp_serde::from_slice(bytes).map_err(|e| {
        CliError::user(format!(
            "the projection's answer is not MessagePack that JSON can show: {e} (hex {})",
            hex::encode(&bytes[..bytes.len().min(64)])
        ))
    })
}

/// `strata projection query NAME JSON`: loads the module, catches up, queries; prints JSON.
pub fn query(db: &Path, name: &str, request: &str, catch_up_first: bool) -> CliResult {
    let request = json_to_msgpack(request)?;
    let store = crate::commands::open_existing(db)?;
    let runner = new_runner(&store)?;
    register_stored(&store, &runner, &engine()?, name)?;
    if catch_up_first {
        catch_up(&runner, name)?;
    }
    let response = runner.query(name, &request).map_err(projection_error)?;
    let json = msgpack_to_json(&response)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&json).map_err(|e| CliError::Internal(e.to_string()))?
    );
    Ok(())
}

/// `strata projection catch-up [NAME]`: runs stored projections to the head of the log.
pub fn catch_up_cmd(db: &Path, name: Option<&str>) -> CliResult {
    let store = crate::commands::open_existing(db)?;
    let runner = new_runner(&store)?;
    let engine = engine()?;
    let mut names: Vec<String> = match name {
        Some(name) => vec![name.to_owned()],
        None => stored_modules(&store, None)?
            .into_iter()
            .map(|m| m.name)
            .collect(),
    };
    names.dedup();
    for name in &names {
        register_stored(&store, &runner, &engine, name)?;
        let status = catch_up(&runner, name)?;
        println!(
            "{}: version {}, {}, checkpoint {}",
            status.name,
            status.version,
            phase_text(&status.phase),
            status.checkpoint
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_through_messagepack() {
        let json = r#"{"user_id":"user-1","top":3,"nested":[1,-2,2.5,true,null,"x"]}"#;
        let bytes = json_to_msgpack(json).unwrap();
        let back = msgpack_to_json(&bytes).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(json).unwrap()
        );
    }

    #[test]
    fn invalid_json_is_a_user_error() {
        assert!(matches!(json_to_msgpack("{nope"), Err(CliError::User(_))));
    }
}
