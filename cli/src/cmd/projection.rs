//! `strata projection ...`: WebAssembly projections stored in the store file.
//!
//! Projections are code, and every CLI command is a new process, so `projection add` stores the
//! component's bytes in the store file itself, in a table the CLI creates on first use:
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS projection_modules (
//!     name TEXT NOT NULL, version INTEGER NOT NULL,
//!     wasm BLOB NOT NULL, sha256 TEXT NOT NULL, added_at INTEGER NOT NULL,
//!     event_types TEXT,
//!     PRIMARY KEY (name, version));
//! ```
//!
//! `name`, `version` and `event_types` (newline-separated, empty for all types) are the
//! module's `describe` answer at registration, asked once and stored. Every later load asks
//! again and refuses a module whose answer differs, before it touches any projection's rows;
//! the projection is then marked faulted with the reason and the others carry on. A file made
//! before `event_types` existed gets the column on first use, filled from the `projections`
//! table (what the runner stored at registration), or from the next load when that is missing.
//!
//! The file stays self-contained (copy it and the projections come along). Later commands load
//! every stored, non-retired version of a projection (compiled code comes from wasmtime's
//! on-disk cache after the first load), register them with a `ProjectionRunner` and work on the
//! statuses the runner keeps in the `projections` table.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Subcommand;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use strata::{ProjectionPhase, ProjectionRunner, ProjectionStatus, RunnerOptions, Store};
use strata_wasm::{CacheDir, EngineOptions, PluginEngine, PluginLimits, WasmProjection};

use crate::cmd::open_existing;
use crate::error::{CliError, CliResult};
use crate::term;

#[derive(Debug, Subcommand)]
pub enum ProjectionCommand {
    /// Store a projection component in the file and register it (a new version of a known
    /// projection rebuilds beside the old one, which serves queries until the swap).
    ///
    /// Example: strata projection add --db events.strata user_stats.wasm --catch-up
    Add {
        /// The component (.wasm) of the strata:projection world.
        file: PathBuf,
        /// Fold the log up to its head right away.
        #[arg(long)]
        catch_up: bool,
    },
    /// List the projections stored in the file, with phase, checkpoint and lag.
    List,
    /// Show one projection's versions, phase, checkpoint, lag, fault and skipped events.
    Status {
        /// The projection's name.
        name: String,
    },
    /// Rebuild: finish a pending new version's rebuild, or reset and fold the log again.
    Rebuild {
        /// The projection's name.
        name: String,
    },
    /// Delete a projection's state and checkpoint; it folds the log again on its next run.
    Reset {
        /// The projection's name.
        name: String,
    },
    /// Ask a projection a question: the request is JSON (sent as MessagePack), the answer is
    /// printed as JSON. Catches up first unless --no-catch-up.
    ///
    /// Example: strata projection query --db events.strata user-stats '{"user_id": "user-7"}'
    Query {
        /// The projection's name.
        name: String,
        /// The request, as JSON.
        request: String,
        /// Answer from the state as it is, without folding new events first.
        #[arg(long)]
        no_catch_up: bool,
    },
    /// Fold new events into one stored projection, or all of them.
    CatchUp {
        /// The projection's name; all when absent.
        name: Option<String>,
    },
}

/// Runs `strata projection COMMAND` on the store `db`.
pub fn run(db: &Path, command: ProjectionCommand) -> CliResult {
    match command {
        ProjectionCommand::Add { file, catch_up } => add(db, &file, catch_up),
        ProjectionCommand::List => list(db),
        ProjectionCommand::Status { name } => status(db, &name),
        ProjectionCommand::Rebuild { name } => rebuild(db, &name),
        ProjectionCommand::Reset { name } => reset(db, &name),
        ProjectionCommand::Query {
            name,
            request,
            no_catch_up,
        } => query(db, &name, &request, !no_catch_up),
        ProjectionCommand::CatchUp { name } => catch_up_cmd(db, name.as_deref()),
    }
}

const CREATE_MODULES: &str = "CREATE TABLE IF NOT EXISTS projection_modules (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    wasm BLOB NOT NULL,
    sha256 TEXT NOT NULL,
    added_at INTEGER NOT NULL,
    event_types TEXT,
    PRIMARY KEY (name, version)
)";

/// Adds `event_types` to a `projection_modules` table made before it existed, filled from what
/// the runner stored at registration. In one immediate transaction, so that two processes
/// migrating the same file at once do not both add the column.
fn migrate_modules(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(CREATE_MODULES)?;
    let has_event_types = tx
        .prepare(
            "SELECT 1 FROM pragma_table_info('projection_modules') WHERE name = 'event_types'",
        )?
        .exists([])?;
    if !has_event_types {
        tx.execute_batch(
            "ALTER TABLE projection_modules ADD COLUMN event_types TEXT;
             UPDATE projection_modules SET event_types = (
                 SELECT p.event_types FROM projections p
                 WHERE p.name = projection_modules.name AND p.version = projection_modules.version);",
        )?;
    }
    tx.commit()
}

fn join_types(types: &[String]) -> String {
    types.join("\n")
}

fn split_types(types: &str) -> Vec<String> {
    types
        .split('\n')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

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
    let mut conn = Connection::open(&path).map_err(|e| CliError::Internal(e.to_string()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .and_then(|_| migrate_modules(&mut conn))
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
    /// The event types it described at registration (`None`: not recorded by the version of
    /// strata that added it).
    pub event_types: Option<Vec<String>>,
}

impl StoredModule {
    /// Loads the module, refusing it when `describe` no longer answers what was stored. A
    /// module without stored event types is checked on name and version, and its answer is
    /// stored now.
    fn load(&self, store: &Store, engine: &PluginEngine) -> CliResult<WasmProjection> {
        let limits = PluginLimits::default();
        let failed = |e: strata::ProjectionError| {
            projection_error(format!(
                "loading {} version {}: {e}",
                self.name, self.version
            ))
        };
        match &self.event_types {
            Some(event_types) => {
                let registered = strata::ProjectionInfo {
                    name: self.name.clone(),
                    version: self.version,
                    event_types: event_types.clone(),
                };
                WasmProjection::load_described(engine, &self.wasm, limits, &registered)
                    .map_err(failed)
            }
            None => {
                let projection =
                    WasmProjection::load(engine, &self.wasm, limits).map_err(failed)?;
                let info = projection.info();
                if info.name != self.name || info.version != self.version {
                    return Err(projection_error(format!(
                        "loading {} version {}: the module now describes itself as {:?} version {}; refusing to load it",
                        self.name, self.version, info.name, info.version
                    )));
                }
                modules_connection(store)?
                    .execute(
                        "UPDATE projection_modules SET event_types = ?3
                         WHERE name = ?1 AND version = ?2 AND event_types IS NULL",
                        params![self.name, self.version, join_types(&info.event_types)],
                    )
                    .map_err(sqlite_error)?;
                Ok(projection)
            }
        }
    }
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
            "INSERT OR REPLACE INTO projection_modules (name, version, wasm, sha256, added_at, event_types)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![info.name, info.version, wasm, sha256, now, join_types(&info.event_types)],
        )
        .map_err(sqlite_error)?;
    Ok(sha256)
}

/// The stored modules of `name` (every name when `None`), oldest version first.
pub fn stored_modules(store: &Store, name: Option<&str>) -> CliResult<Vec<StoredModule>> {
    let conn = modules_connection(store)?;
    let mut statement = conn
        .prepare(
            "SELECT name, version, wasm, event_types FROM projection_modules
             WHERE (?1 IS NULL OR name = ?1) ORDER BY name, version",
        )
        .map_err(sqlite_error)?;
    let rows = statement
        .query_map([name], |r| {
            Ok(StoredModule {
                name: r.get(0)?,
                version: r.get(1)?,
                wasm: r.get(2)?,
                event_types: r.get::<_, Option<String>>(3)?.as_deref().map(split_types),
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

/// Registers every stored, non-retired version of `name` with `runner`. A version that fails
/// to load is marked faulted with the reason (warned on stderr) and the others are still
/// registered; returns how many failed. Fails when the store has no module for `name`.
pub fn register_stored(
    store: &Store,
    runner: &ProjectionRunner,
    engine: &PluginEngine,
    name: &str,
) -> CliResult<usize> {
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
    let mut failed = 0;
    for module in modules {
        let projection = match module.load(store, engine) {
            Ok(projection) => projection,
            Err(error) => {
                failed += 1;
                let message = error.to_string();
                let marked = runner
                    .mark_load_failure(&module.name, module.version, &message)
                    .map_err(projection_error)?;
                eprintln!(
                    "strata: {message}{}",
                    if marked {
                        " (the projection is marked faulted)"
                    } else {
                        ""
                    }
                );
                continue;
            }
        };
        runner
            .register(Box::new(projection))
            .map_err(projection_error)?;
    }
    Ok(failed)
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
fn add(db: &Path, file: &Path, run: bool) -> CliResult {
    let wasm = std::fs::read(file).map_err(|e| CliError::io(file, e))?;
    let store = open_existing(db)?;
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
fn list(db: &Path) -> CliResult {
    let store = open_existing(db)?;
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
fn status(db: &Path, name: &str) -> CliResult {
    let store = open_existing(db)?;
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
fn rebuild(db: &Path, name: &str) -> CliResult {
    let store = open_existing(db)?;
    let runner = new_runner(&store)?;
    let engine = engine()?;
    if register_stored(&store, &runner, &engine, name)? > 0 {
        return Err(CliError::user(format!(
            "projection {name} could not be loaded; see `strata projection status {name}`"
        )));
    }
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
fn reset(db: &Path, name: &str) -> CliResult {
    let store = open_existing(db)?;
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

/// Converts a MessagePack response to JSON (as a value: for small answers, such as the demo's).
pub fn msgpack_to_json(bytes: &[u8]) -> CliResult<serde_json::Value> {
    rmp_serde::from_slice(bytes).map_err(|e| {
        CliError::user(format!(
            "the projection's answer is not MessagePack that JSON can show: {e} (hex {})",
            hex::encode(&bytes[..bytes.len().min(64)])
        ))
    })
}

/// `strata projection query NAME JSON`: loads the module, catches up, queries; prints JSON.
fn query(db: &Path, name: &str, request: &str, catch_up_first: bool) -> CliResult {
    let request = json_to_msgpack(request)?;
    let store = open_existing(db)?;
    let runner = new_runner(&store)?;
    register_stored(&store, &runner, &engine()?, name)?;
    if !runner.registered_names().iter().any(|n| n == name) {
        return Err(CliError::user(format!(
            "projection {name} could not be loaded; see `strata projection status {name}`"
        )));
    }
    if catch_up_first {
        catch_up(&runner, name)?;
    }
    // The answer is capped in bytes by the host (`PluginLimits::max_query_response_bytes`);
    // it is then converted to JSON as a stream, never as a tree of values, so its JSON costs
    // no memory however it expands. A first pass checks it, so a bad answer prints nothing.
    let response = runner.query(name, &request).map_err(projection_error)?;
    msgpack_json::write_json(&response, &mut std::io::sink())?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    msgpack_json::write_json(&response, &mut out)?;
    use std::io::Write as _;
    writeln!(out)
        .and_then(|_| out.flush())
        .map_err(|e| CliError::Internal(format!("writing the answer: {e}")))?;
    Ok(())
}

/// `strata projection catch-up [NAME]`: runs stored projections to the head of the log.
fn catch_up_cmd(db: &Path, name: Option<&str>) -> CliResult {
    let store = open_existing(db)?;
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
    // One projection that fails to load must not stop the others: each is caught up, and the
    // failures are counted for the exit status.
    let mut unloadable = 0;
    for name in &names {
        unloadable += register_stored(&store, &runner, &engine, name)?;
        let status = if runner.registered_names().iter().any(|n| n == name) {
            catch_up(&runner, name)?
        } else {
            runner.status(name).map_err(projection_error)?
        };
        println!(
            "{}: version {}, {}, checkpoint {}",
            status.name,
            status.version,
            phase_text(&status.phase),
            status.checkpoint
        );
    }
    if unloadable > 0 {
        return Err(CliError::user(format!(
            "{unloadable} projection module(s) could not be loaded; the other projections were caught up"
        )));
    }
    Ok(())
}

/// MessagePack to JSON as a stream: reads one value from a byte slice and writes its JSON
/// (indented by two spaces) to a writer, holding nothing but the nesting path, so the memory
/// used does not grow with the answer (a tree of `serde_json::Value`s costs some 30 times the
/// MessagePack of small items). Nesting deeper than [`MAX_DEPTH`] is refused.
mod msgpack_json {
    use std::io::Write;

    use crate::error::{CliError, CliResult};

    /// Deepest nesting of arrays and maps accepted.
    pub const MAX_DEPTH: usize = 256;

    /// Writes the JSON of the one MessagePack value in `bytes` to `out`.
    pub fn write_json(bytes: &[u8], out: &mut impl Write) -> CliResult {
        let mut reader = Reader { bytes, at: 0 };
        let result = reader
            .value(out, 0)
            .and_then(|()| match reader.at == bytes.len() {
                true => Ok(()),
                false => Err(Bad::Format(format!(
                    "{} bytes left after the value",
                    bytes.len() - reader.at
                ))),
            });
        result.map_err(|error| match error {
            Bad::Format(message) => CliError::user(format!(
                "the projection's answer is not MessagePack that JSON can show: {message} at byte {} (first bytes, hex {})",
                reader.at,
                hex::encode(&bytes[..bytes.len().min(64)])
            )),
            Bad::Io(error) => CliError::Internal(format!("writing the answer: {error}")),
        })
    }

    enum Bad {
        Format(String),
        Io(std::io::Error),
    }

    impl From<std::io::Error> for Bad {
        fn from(error: std::io::Error) -> Self {
            Bad::Io(error)
        }
    }

    fn bad<T>(message: impl Into<String>) -> Result<T, Bad> {
        Err(Bad::Format(message.into()))
    }

    struct Reader<'a> {
        bytes: &'a [u8],
        at: usize,
    }

    fn indent(out: &mut impl Write, depth: usize) -> Result<(), Bad> {
        out.write_all(b"\n")?;
        for _ in 0..depth {
            out.write_all(b"  ")?;
        }
        Ok(())
    }

    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], Bad> {
            match self.bytes.get(self.at..self.at.saturating_add(n)) {
                Some(taken) => {
                    self.at += n;
                    Ok(taken)
                }
                None => bad("the answer ends in the middle of a value"),
            }
        }

        fn uint(&mut self, n: usize) -> Result<u64, Bad> {
            Ok(self
                .take(n)?
                .iter()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
        }

        fn len(&mut self, n: usize) -> Result<usize, Bad> {
            usize::try_from(self.uint(n)?).or_else(|_| bad("a length too large"))
        }

        fn str(&mut self, len: usize) -> Result<&'a str, Bad> {
            std::str::from_utf8(self.take(len)?).or_else(|_| bad("a string that is not UTF-8"))
        }

        /// A map key: JSON keys are strings, so numbers, booleans and nil are spelled out.
        fn key(&mut self, out: &mut impl Write) -> Result<(), Bad> {
            let marker = self.take(1)?[0];
            let text = match marker {
                0xa0..=0xbf => self.str(usize::from(marker & 0x1f))?.to_owned(),
                0xd9 => {
                    let len = self.len(1)?;
                    self.str(len)?.to_owned()
                }
                0xda => {
                    let len = self.len(2)?;
                    self.str(len)?.to_owned()
                }
                0xdb => {
                    let len = self.len(4)?;
                    self.str(len)?.to_owned()
                }
                0x00..=0x7f => marker.to_string(),
                0xe0..=0xff => (marker as i8).to_string(),
                0xcc => self.uint(1)?.to_string(),
                0xcd => self.uint(2)?.to_string(),
                0xce => self.uint(4)?.to_string(),
                0xcf => self.uint(8)?.to_string(),
                0xd0 => (self.uint(1)? as u8 as i8).to_string(),
                0xd1 => (self.uint(2)? as u16 as i16).to_string(),
                0xd2 => (self.uint(4)? as u32 as i32).to_string(),
                0xd3 => (self.uint(8)? as i64).to_string(),
                0xc0 => "null".to_owned(),
                0xc2 => "false".to_owned(),
                0xc3 => "true".to_owned(),
                other => return bad(format!("a map key of type 0x{other:02x}")),
            };
            serde_json::to_writer(&mut *out, &text).map_err(|e| Bad::Io(e.into()))?;
            Ok(())
        }

        fn float(out: &mut impl Write, value: f64) -> Result<(), Bad> {
            if value.is_finite() {
                write!(out, "{value:?}")?;
            } else {
                out.write_all(b"null")?;
            }
            Ok(())
        }

        fn value(&mut self, out: &mut impl Write, depth: usize) -> Result<(), Bad> {
            let marker = self.take(1)?[0];
            match marker {
                0x00..=0x7f => write!(out, "{marker}")?,
                0xe0..=0xff => write!(out, "{}", marker as i8)?,
                0xc0 => out.write_all(b"null")?,
                0xc2 => out.write_all(b"false")?,
                0xc3 => out.write_all(b"true")?,
                0xcc => write!(out, "{}", self.uint(1)?)?,
                0xcd => write!(out, "{}", self.uint(2)?)?,
                0xce => write!(out, "{}", self.uint(4)?)?,
                0xcf => write!(out, "{}", self.uint(8)?)?,
                0xd0 => write!(out, "{}", self.uint(1)? as u8 as i8)?,
                0xd1 => write!(out, "{}", self.uint(2)? as u16 as i16)?,
                0xd2 => write!(out, "{}", self.uint(4)? as u32 as i32)?,
                0xd3 => write!(out, "{}", self.uint(8)? as i64)?,
                0xca => Self::float(out, f64::from(f32::from_bits(self.uint(4)? as u32)))?,
                0xcb => Self::float(out, f64::from_bits(self.uint(8)?))?,
                0xa0..=0xbf | 0xd9..=0xdb => {
                    let len = match marker {
                        0xd9 => self.len(1)?,
                        0xda => self.len(2)?,
                        0xdb => self.len(4)?,
                        _ => usize::from(marker & 0x1f),
                    };
                    let text = self.str(len)?;
                    serde_json::to_writer(&mut *out, text).map_err(|e| Bad::Io(e.into()))?;
                }
                // Binary: an array of byte values.
                0xc4..=0xc6 => {
                    let len = self.len(1 << (marker - 0xc4))?;
                    let data = self.take(len)?;
                    out.write_all(b"[")?;
                    for (i, byte) in data.iter().enumerate() {
                        if i > 0 {
                            out.write_all(b",")?;
                        }
                        write!(out, "{byte}")?;
                    }
                    out.write_all(b"]")?;
                }
                0x90..=0x9f | 0xdc | 0xdd | 0x80..=0x8f | 0xde | 0xdf => {
                    let (len, is_map) = match marker {
                        0x90..=0x9f => (usize::from(marker & 0x0f), false),
                        0xdc => (self.len(2)?, false),
                        0xdd => (self.len(4)?, false),
                        0x80..=0x8f => (usize::from(marker & 0x0f), true),
                        0xde => (self.len(2)?, true),
                        _ => (self.len(4)?, true),
                    };
                    if depth >= MAX_DEPTH {
                        return bad(format!("nesting deeper than {MAX_DEPTH}"));
                    }
                    let (open, close) = if is_map { (b"{", b"}") } else { (b"[", b"]") };
                    out.write_all(open)?;
                    for i in 0..len {
                        if i > 0 {
                            out.write_all(b",")?;
                        }
                        indent(out, depth + 1)?;
                        if is_map {
                            self.key(out)?;
                            out.write_all(b": ")?;
                        }
                        self.value(out, depth + 1)?;
                    }
                    if len > 0 {
                        indent(out, depth)?;
                    }
                    out.write_all(close)?;
                }
                other => {
                    return bad(format!(
                        "a value of type 0x{other:02x} (extension or reserved)"
                    ))
                }
            }
            Ok(())
        }
    }
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

    fn streamed(bytes: &[u8]) -> CliResult<serde_json::Value> {
        let mut out = Vec::new();
        msgpack_json::write_json(bytes, &mut out)?;
        Ok(serde_json::from_slice(&out).expect("the stream is JSON"))
    }

    #[test]
    fn the_streamed_json_is_the_json_of_the_value() {
        let json = r#"{"user_id":"user-1","top":3,"nested":[1,-2,2.5,true,null,"x\"y",[],{}],"big":18446744073709551615,"neg":-9223372036854775808}"#;
        let expected: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(streamed(&json_to_msgpack(json).unwrap()).unwrap(), expected);
        // Integer map keys become strings; binary becomes an array of bytes.
        let bytes = [0x81, 0x07, 0xc4, 0x03, 1, 2, 3];
        assert_eq!(
            streamed(&bytes).unwrap(),
            serde_json::json!({"7": [1, 2, 3]})
        );
    }

    #[test]
    fn bad_or_too_deep_answers_are_user_errors() {
        for bytes in [
            &[0xc1][..],                   // never used
            &[0xdd, 0, 0, 0, 9, 0xc0][..], // shorter than it says
            &[0xc0, 0xc0][..],             // two values
            &[0xd4, 0, 0][..],             // an extension
        ] {
            assert!(
                matches!(streamed(bytes), Err(CliError::User(_))),
                "{bytes:?}"
            );
        }
        let deep = vec![0x91u8; msgpack_json::MAX_DEPTH + 1];
        match streamed(&deep) {
            Err(CliError::User(message)) => {
                assert!(message.contains("nesting deeper"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_json_is_a_user_error() {
        assert!(matches!(json_to_msgpack("{nope"), Err(CliError::User(_))));
    }
}
