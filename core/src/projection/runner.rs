//! The projection runner: feeds each registered projection the log from its checkpoint, in
//! batches, and commits each batch's state writes together with the new checkpoint.
//!
//! Exactly-once state: a batch's writes and its checkpoint commit in one SQLite transaction
//! (guarded by the previous checkpoint, so two runners on one file cannot both commit a batch).
//! After any crash the state is exactly the fold of the events up to the checkpoint.
//!
//! Faults: when a batch fails, it is rolled back and replayed one event at a time, committing
//! each event that succeeds, so that the fault names the exact event. The projection is then
//! `Faulted` (position and message stored) until `resume` (retry) or `skip` (record the event as
//! skipped and go past it). Other projections and the store carry on.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use lru::LruCache;
use parking_lot::{Mutex, RwLock};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::state::{CommittedState, StateEntry, StateError, StateLimits};
use super::state_cache::StateCache;
use super::{Projection, ProjectionError, ProjectionInfo, ProjectionState};
use crate::error::ReadError;
use crate::event::{Event, Position};
use crate::reader::{self, EventFilter};
use crate::store::Store;

/// Where a projection is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProjectionPhase {
    /// Behind the head of the log.
    CatchingUp,
    /// At the head of the log (as of the last batch).
    Live,
    /// Stopped on an event it failed to apply.
    Faulted {
        /// The event's position.
        position: Position,
        /// Why it failed.
        message: String,
    },
    /// A new version building its state from position 1 while the old one serves queries.
    Rebuilding,
    /// An old version replaced by a rebuilt one.
    Retired,
}

impl ProjectionPhase {
    /// The name stored in the file.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProjectionPhase::CatchingUp => "catching_up",
            ProjectionPhase::Live => "live",
            ProjectionPhase::Faulted { .. } => "faulted",
            ProjectionPhase::Rebuilding => "rebuilding",
            ProjectionPhase::Retired => "retired",
        }
    }
}

/// A projection's status as stored in the file (so other processes see it too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectionStatus {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: u32,
    /// Event types it reads (empty: all).
    pub event_types: Vec<String>,
    /// Last position folded into its state.
    pub checkpoint: Position,
    /// Events between the checkpoint and the head of the log.
    pub lag: u64,
    /// Its phase.
    pub phase: ProjectionPhase,
}

/// Why a runner operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// No projection of that name is registered in this runner (or stored, for status calls).
    #[error("no projection named {0:?}")]
    Unknown(String),
    /// The projection's name does not follow the rule (1..=64 bytes of `[a-z0-9_-]`).
    #[error("invalid projection name {0:?}: use 1..=64 characters of a-z, 0-9, '-' and '_'")]
    InvalidName(String),
    /// A newer version of this projection is already stored; refusing to go back.
    #[error("projection {name:?} version {offered} is older than the stored version {stored}")]
    OlderVersion {
        /// Name.
        name: String,
        /// Version offered.
        offered: u32,
        /// Version stored.
        stored: u32,
    },
    /// The projection is faulted; `resume` or `skip` it first.
    #[error("projection {name:?} is faulted at position {position}: {message}")]
    Faulted {
        /// Name.
        name: String,
        /// Position of the event it failed on.
        position: Position,
        /// Why.
        message: String,
    },
    /// Queries need the instance of the version that serves them, and it is not registered here.
    #[error(
        "projection {name:?} version {version} serves queries but is not registered in this runner"
    )]
    NotServing {
        /// Name.
        name: String,
        /// The serving version.
        version: u32,
    },
    /// The projection itself failed (describe or query).
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// Reading events failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// SQLite failed.
    #[error("SQLite error in the projection runner: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// Runner settings.
#[derive(Clone, Debug)]
pub struct RunnerOptions {
    /// Events per batch (1..=10,000). Default 1,000.
    pub batch_size: usize,
    /// Limits on each projection's state.
    pub state_limits: StateLimits,
    /// Query results kept in the cache (0 turns it off). Default 1,024.
    pub query_cache_entries: usize,
    /// Query results larger than this are not cached. Default 64 KiB.
    pub query_cache_max_response_bytes: usize,
    /// Bytes of committed state kept in memory per projection across batches (0 turns it
    /// off). Default 32 MiB.
    pub state_cache_bytes: usize,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            batch_size: 1_000,
            state_limits: StateLimits::default(),
            query_cache_entries: 1_024,
            query_cache_max_response_bytes: 64 * 1024,
            state_cache_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Most events in one batch.
pub const MAX_BATCH_SIZE: usize = 10_000;

/// A projection's committed state in SQLite, read through the store's read pool and the
/// projection's state cache, as of the checkpoint the batch starts from.
struct SqliteState {
    store: Store,
    namespace: i64,
    /// The projection's state cache; `None` for queries.
    cache: Option<Arc<StateCache>>,
    checkpoint: Position,
}

impl CommittedState for SqliteState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(cached) = self
            .cache
            .as_ref()
            .and_then(|c| c.get(self.checkpoint, key))
        {
            return Ok(cached);
        }
        let conn = self
            .store
            .readers()
            .get()
            .map_err(|e| StateError::Backend(e.to_string()))?;
        let value = conn
            .prepare_cached("SELECT value FROM projection_state WHERE namespace = ?1 AND key = ?2")
            .and_then(|mut s| {
                s.query_row(params![self.namespace, key], |r| r.get(0))
                    .optional()
            })
            .map_err(|e| StateError::Backend(e.to_string()))?;
        if let Some(cache) = &self.cache {
            cache.remember(self.checkpoint, key, &value);
        }
        Ok(value)
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<StateEntry>, StateError> {
        let conn = self
            .store
            .readers()
            .get()
            .map_err(|e| StateError::Backend(e.to_string()))?;
        let (lower, inclusive) = match after {
            Some(after) if after >= prefix => (after, false),
            _ => (prefix, true),
        };
        let sql = if inclusive {
            "SELECT key, value FROM projection_state WHERE namespace = ?1 AND key >= ?2 ORDER BY key LIMIT ?3"
        } else {
            "SELECT key, value FROM projection_state WHERE namespace = ?1 AND key > ?2 ORDER BY key LIMIT ?3"
        };
        let rows: Vec<StateEntry> = conn
            .prepare_cached(sql)
            .and_then(|mut s| {
                s.query_map(params![self.namespace, lower, limit as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect()
            })
            .map_err(|e| StateError::Backend(e.to_string()))?;
        // Keys with the prefix are contiguous in key order: stop at the first that lacks it.
        Ok(rows
            .into_iter()
            .take_while(|(key, _)| key.starts_with(prefix))
            .collect())
    }
}

/// One registered projection instance.
struct Registered {
    info: ProjectionInfo,
    namespace: i64,
    projection: Mutex<Box<dyn Projection>>,
    /// Its committed state as this runner last saw it.
    state_cache: Arc<StateCache>,
}

/// A cached query: (state namespace, request bytes, checkpoint the answer was computed at).
type QueryKey = (i64, Vec<u8>, Position);

struct RunnerInner {
    store: Store,
    options: RunnerOptions,
    /// The runner's write connection for state and checkpoints.
    conn: Mutex<Connection>,
    /// name -> registered versions (ascending).
    registered: RwLock<HashMap<String, Vec<Arc<Registered>>>>,
    /// (namespace, request, checkpoint) -> response.
    query_cache: Mutex<LruCache<QueryKey, Vec<u8>>>,
}

/// Runs projections against a store. Cheap to clone; clones share registrations.
#[derive(Clone)]
pub struct ProjectionRunner {
    inner: Arc<RunnerInner>,
}

/// A background thread that keeps every registered projection caught up. Stops on drop.
pub struct BackgroundRunner {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for BackgroundRunner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn validate_name(name: &str) -> Result<(), RunnerError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(RunnerError::InvalidName(name.to_owned()))
    }
}

fn now_micros() -> i64 {
    crate::clock::Clock::now_micros(&crate::clock::SystemClock)
}

/// One row of the `projections` table.
#[derive(Clone, Debug)]
struct Row {
    namespace: i64,
    name: String,
    version: u32,
    event_types: Vec<String>,
    checkpoint: Position,
    status: String,
    fault_position: Option<Position>,
    fault_message: Option<String>,
}

const ROW_COLUMNS: &str =
    "namespace, name, version, event_types, checkpoint, status, fault_position, fault_message";

fn row_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let types: String = r.get(3)?;
    Ok(Row {
        namespace: r.get(0)?,
        name: r.get(1)?,
        version: r.get(2)?,
        event_types: types
            .split('\n')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        checkpoint: r.get::<_, i64>(4)? as u64,
        status: r.get(5)?,
        fault_position: r.get::<_, Option<i64>>(6)?.map(|p| p as u64),
        fault_message: r.get(7)?,
    })
}

impl Row {
    fn phase(&self) -> ProjectionPhase {
        match self.status.as_str() {
            "live" => ProjectionPhase::Live,
            "faulted" => ProjectionPhase::Faulted {
                position: self.fault_position.unwrap_or_default(),
                message: self.fault_message.clone().unwrap_or_default(),
            },
            "rebuilding" => ProjectionPhase::Rebuilding,
            "retired" => ProjectionPhase::Retired,
            _ => ProjectionPhase::CatchingUp,
        }
    }

    fn status(&self, head: Position) -> ProjectionStatus {
        ProjectionStatus {
            name: self.name.clone(),
            version: self.version,
            event_types: self.event_types.clone(),
            checkpoint: self.checkpoint,
            lag: head.saturating_sub(self.checkpoint),
            phase: self.phase(),
        }
    }
}

fn load_rows(conn: &Connection, name: Option<&str>) -> rusqlite::Result<Vec<Row>> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {ROW_COLUMNS} FROM projections WHERE (?1 IS NULL OR name = ?1) ORDER BY name, version"
    ))?;
    let rows = statement.query_map([name], row_from)?;
    rows.collect()
}

fn load_row(conn: &Connection, namespace: i64) -> rusqlite::Result<Row> {
    conn.prepare_cached(&format!(
        "SELECT {ROW_COLUMNS} FROM projections WHERE namespace = ?1"
    ))?
    .query_row([namespace], row_from)
}

/// The outcome of one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Events were applied (count) and the checkpoint moved.
    Applied(usize),
    /// Nothing new to apply.
    CaughtUp,
    /// The projection faulted in this batch (or already was).
    Faulted,
}

impl ProjectionRunner {
    /// A runner for `store`. Projections are added with [`ProjectionRunner::register`].
    pub fn new(store: &Store, options: RunnerOptions) -> Result<Self, RunnerError> {
        assert!(
            (1..=MAX_BATCH_SIZE).contains(&options.batch_size),
            "batch_size must be 1..={MAX_BATCH_SIZE}"
        );
        let conn = store.open_side_connection()?;
        let cache_entries =
            std::num::NonZeroUsize::new(options.query_cache_entries.max(1)).expect("at least 1");
        Ok(ProjectionRunner {
            inner: Arc::new(RunnerInner {
                store: store.clone(),
                options,
                conn: Mutex::new(conn),
                registered: RwLock::new(HashMap::new()),
                query_cache: Mutex::new(LruCache::new(cache_entries)),
            }),
        })
    }

    /// Statuses of every projection stored in the file (registered here or not).
    pub fn list(store: &Store) -> Result<Vec<ProjectionStatus>, RunnerError> {
        let conn = store.readers().get()?;
        let head = head_position(&conn)?;
        Ok(load_rows(&conn, None)?
            .iter()
            .map(|row| row.status(head))
            .collect())
    }

    /// Registers a projection. A name seen before resumes from its checkpoint; a new version of
    /// a known name rebuilds from position 1 beside the old one, which keeps serving queries
    /// until the new one has caught up.
    pub fn register(
        &self,
        mut projection: Box<dyn Projection>,
    ) -> Result<ProjectionStatus, RunnerError> {
        let info = projection.describe()?;
        validate_name(&info.name)?;
        let conn = self.inner.conn.lock();
        let rows = load_rows(&conn, Some(&info.name))?;
        let newest = rows
            .iter()
            .filter(|r| r.status != "retired")
            .max_by_key(|r| r.version);
        if let Some(newest) = newest {
            if info.version < newest.version
                && !rows
                    .iter()
                    .any(|r| r.version == info.version && r.status != "retired")
            {
                return Err(RunnerError::OlderVersion {
                    name: info.name,
                    offered: info.version,
                    stored: newest.version,
                });
            }
        }
        let namespace = match rows.iter().find(|r| r.version == info.version) {
            Some(row) if row.status == "retired" => {
                return Err(RunnerError::OlderVersion {
                    name: info.name,
                    offered: info.version,
                    stored: newest.map_or(info.version, |r| r.version),
                })
            }
            Some(row) => row.namespace,
            None => {
                // A new version beside a serving one rebuilds; otherwise it simply catches up.
                let serving = rows.iter().any(|r| r.status != "retired");
                let status = if serving { "rebuilding" } else { "catching_up" };
                conn.execute(
                    "INSERT INTO projections (name, version, event_types, checkpoint, status, updated_at)
                     VALUES (?1, ?2, ?3, 0, ?4, ?5)",
                    params![info.name, info.version, info.event_types.join("\n"), status, now_micros()],
                )?;
                conn.last_insert_rowid()
            }
        };
        let head = head_position(&conn)?;
        let row = load_row(&conn, namespace)?;
        drop(conn);
        let mut registered = self.inner.registered.write();
        let versions = registered.entry(info.name.clone()).or_default();
        versions.retain(|r| r.info.version != info.version);
        versions.push(Arc::new(Registered {
            info,
            namespace,
            projection: Mutex::new(projection),
            state_cache: Arc::new(StateCache::new(self.inner.options.state_cache_bytes)),
        }));
        versions.sort_by_key(|r| r.info.version);
        Ok(row.status(head))
    }

    /// The status of the newest non-retired version of `name`, as stored.
    pub fn status(&self, name: &str) -> Result<ProjectionStatus, RunnerError> {
        let conn = self.inner.store.readers().get()?;
        let head = head_position(&conn)?;
        load_rows(&conn, Some(name))?
            .into_iter()
            .filter(|r| r.status != "retired")
            .max_by_key(|r| r.version)
            .map(|row| row.status(head))
            .ok_or_else(|| RunnerError::Unknown(name.to_owned()))
    }

    /// Names of the projections registered in this runner.
    pub fn registered_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.registered.read().keys().cloned().collect();
        names.sort();
        names
    }

    /// Runs batches for every registered version of `name` until each is caught up or faulted.
    pub fn catch_up(&self, name: &str) -> Result<ProjectionStatus, RunnerError> {
        let versions = self.versions(name)?;
        for registered in versions {
            while let BatchOutcome::Applied(_) = self.run_batch(&registered)? {}
        }
        self.status(name)
    }

    /// Catches up every registered projection; returns their statuses.
    pub fn catch_up_all(&self) -> Result<Vec<ProjectionStatus>, RunnerError> {
        self.registered_names()
            .iter()
            .map(|name| self.catch_up(name))
            .collect()
    }

    /// Runs one batch for each registered version of `name`.
    pub fn run_once(&self, name: &str) -> Result<BatchOutcome, RunnerError> {
        let mut outcome = BatchOutcome::CaughtUp;
        for registered in self.versions(name)? {
            match self.run_batch(&registered)? {
                BatchOutcome::CaughtUp => {}
                other => outcome = other,
            }
        }
        Ok(outcome)
    }

    /// Records that version `version` of `name` could not be loaded (its module is invalid,
    /// or no longer describes itself as it did when registered): the stored projection is
    /// marked faulted at its checkpoint with `message`, so that an operator sees why, while
    /// other projections carry on. Only that projection's row is touched. Returns whether
    /// such a (non-retired) projection is stored.
    pub fn mark_load_failure(
        &self,
        name: &str,
        version: u32,
        message: &str,
    ) -> Result<bool, RunnerError> {
        let updated = self.inner.conn.lock().execute(
            "UPDATE projections SET status = 'faulted', fault_position = checkpoint, fault_message = ?3, updated_at = ?4
             WHERE name = ?1 AND version = ?2 AND status != 'retired'",
            params![name, version, message, now_micros()],
        )?;
        Ok(updated > 0)
    }

    /// Clears a fault: the next batch retries the faulting event with a fresh start.
    pub fn resume(&self, name: &str) -> Result<ProjectionStatus, RunnerError> {
        let conn = self.inner.conn.lock();
        conn.execute(
            "UPDATE projections SET status = 'catching_up', fault_position = NULL, fault_message = NULL, updated_at = ?2
             WHERE name = ?1 AND status = 'faulted'",
            params![name, now_micros()],
        )?;
        drop(conn);
        self.status(name)
    }

    /// Skips the event a faulted projection failed on: records it in `projection_skips` and
    /// moves the checkpoint past it.
    pub fn skip(&self, name: &str) -> Result<ProjectionStatus, RunnerError> {
        let mut conn = self.inner.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for row in load_rows(&tx, Some(name))? {
            if let (ProjectionPhase::Faulted { position, message }, true) =
                (row.phase(), row.status == "faulted")
            {
                tx.execute(
                    "INSERT OR REPLACE INTO projection_skips (namespace, position, message, skipped_at) VALUES (?1, ?2, ?3, ?4)",
                    params![row.namespace, position as i64, message, now_micros()],
                )?;
                tx.execute(
                    "UPDATE projections SET status = 'catching_up', checkpoint = max(checkpoint, ?2),
                     fault_position = NULL, fault_message = NULL, updated_at = ?3 WHERE namespace = ?1",
                    params![row.namespace, position as i64, now_micros()],
                )?;
            }
        }
        tx.commit()?;
        drop(conn);
        self.status(name)
    }

    /// Positions a projection skipped, with the messages of their faults.
    pub fn skipped(&self, name: &str) -> Result<Vec<(Position, String)>, RunnerError> {
        let conn = self.inner.store.readers().get()?;
        let mut statement = conn.prepare_cached(
            "SELECT s.position, s.message FROM projection_skips s JOIN projections p ON p.namespace = s.namespace
             WHERE p.name = ?1 ORDER BY s.position",
        )?;
        let rows = statement.query_map([name], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes every version's state and checkpoint: the projection rebuilds from position 1.
    pub fn reset(&self, name: &str) -> Result<ProjectionStatus, RunnerError> {
        let mut conn = self.inner.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rows = load_rows(&tx, Some(name))?;
        if rows.is_empty() {
            return Err(RunnerError::Unknown(name.to_owned()));
        }
        for row in rows.iter().filter(|r| r.status != "retired") {
            tx.execute(
                "DELETE FROM projection_state WHERE namespace = ?1",
                [row.namespace],
            )?;
            tx.execute(
                "UPDATE projections SET checkpoint = 0, status = 'catching_up', fault_position = NULL,
                 fault_message = NULL, updated_at = ?2 WHERE namespace = ?1",
                params![row.namespace, now_micros()],
            )?;
        }
        tx.commit()?;
        drop(conn);
        for registered in self.versions(name).unwrap_or_default() {
            registered.state_cache.clear();
        }
        self.status(name)
    }

    /// Answers `request` with the serving version's `query` export against its committed state.
    /// Results are cached by (projection, request, checkpoint): a cached answer is never stale.
    pub fn query(&self, name: &str, request: &[u8]) -> Result<Vec<u8>, RunnerError> {
        let conn = self.inner.store.readers().get()?;
        let rows = load_rows(&conn, Some(name))?;
        drop(conn);
        // The serving version: the newest that is not rebuilding or retired.
        let serving = rows
            .iter()
            .filter(|r| r.status != "rebuilding" && r.status != "retired")
            .max_by_key(|r| r.version)
            .ok_or_else(|| RunnerError::Unknown(name.to_owned()))?;
        let registered = self
            .versions(name)?
            .into_iter()
            .find(|r| r.namespace == serving.namespace)
            .ok_or_else(|| RunnerError::NotServing {
                name: name.to_owned(),
                version: serving.version,
            })?;
        let cache_key = (serving.namespace, request.to_vec(), serving.checkpoint);
        if self.inner.options.query_cache_entries > 0 {
            if let Some(hit) = self.inner.query_cache.lock().get(&cache_key) {
                return Ok(hit.clone());
            }
        }
        // No state cache here: a batch may commit while the query reads, and what the query
        // reads then must not be remembered as the state of the checkpoint it started from.
        let committed: Arc<dyn CommittedState> = Arc::new(SqliteState {
            store: self.inner.store.clone(),
            namespace: serving.namespace,
            cache: None,
            checkpoint: serving.checkpoint,
        });
        let mut state = ProjectionState::for_query(committed, self.inner.options.state_limits);
        let response = registered.projection.lock().query(request, &mut state)?;
        if self.inner.options.query_cache_entries > 0
            && response.len() <= self.inner.options.query_cache_max_response_bytes
        {
            self.inner
                .query_cache
                .lock()
                .put(cache_key, response.clone());
        }
        Ok(response)
    }

    /// Starts a thread that keeps every registered projection caught up, waking on each commit
    /// of this process (and at least every `idle_wake` for other processes' commits).
    pub fn start(&self, idle_wake: Duration) -> BackgroundRunner {
        let stop = Arc::new(AtomicBool::new(false));
        let runner = self.clone();
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("strata-projections".into())
            .spawn(move || {
                let mut seen = 0;
                while !stop_flag.load(Ordering::SeqCst) {
                    if let Err(error) = runner.catch_up_all() {
                        tracing::warn!(%error, "projection runner pass failed");
                    }
                    seen = runner.inner.store.wait_for_commit(seen, idle_wake);
                }
            })
            .expect("spawn the projection runner thread");
        BackgroundRunner {
            stop,
            thread: Some(thread),
        }
    }

    fn versions(&self, name: &str) -> Result<Vec<Arc<Registered>>, RunnerError> {
        self.inner
            .registered
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| RunnerError::Unknown(name.to_owned()))
    }

    /// Reads the next batch for `registered` and applies it.
    fn run_batch(&self, registered: &Registered) -> Result<BatchOutcome, RunnerError> {
        let row = load_row(&self.inner.conn.lock(), registered.namespace)?;
        match row.status.as_str() {
            "faulted" | "retired" => return Ok(BatchOutcome::Faulted),
            _ => {}
        }
        let batch_size = self.inner.options.batch_size;
        let wanted = registered.info.event_types.clone();
        let (events, head) = self.inner.store.readers().with_snapshot(|conn, pool| {
            let head = head_position(conn).map_err(ReadError::from)?;
            let filter = EventFilter {
                from: row.checkpoint + 1,
                type_keys: if wanted.is_empty() {
                    None
                } else {
                    Some(pool.type_keys(conn, &wanted)?)
                },
                ..EventFilter::default()
            };
            Ok((
                reader::read_filtered(conn, pool, &filter, batch_size)?,
                head,
            ))
        })?;
        // Fewer events than asked means none matching up to `head`: the checkpoint can jump there.
        let new_checkpoint = if events.len() == batch_size {
            events.last().expect("a full batch").position
        } else {
            head
        };
        if new_checkpoint <= row.checkpoint {
            self.mark_caught_up(registered, &row)?;
            return Ok(BatchOutcome::CaughtUp);
        }
        if row.checkpoint == 0 && !registered.state_cache.is_complete_at(0) {
            // A rebuild: when its state is empty, the cache knows every key (none), and the
            // batch's reads of keys not yet written need no SQLite lookup.
            let conn = self.inner.conn.lock();
            let stored: Option<i64> = conn
                .prepare_cached("SELECT 1 FROM projection_state WHERE namespace = ?1 LIMIT 1")?
                .query_row([registered.namespace], |r| r.get(0))
                .optional()?;
            if stored.is_none() {
                registered.state_cache.start_empty(0);
            }
        }
        match self.apply(registered, row.checkpoint, &events) {
            Ok(writes) => {
                let caught_up = events.len() < batch_size;
                self.commit(registered, &row, writes, new_checkpoint, caught_up)?;
                Ok(BatchOutcome::Applied(events.len()))
            }
            Err(error) => {
                tracing::warn!(projection = %registered.info.name, %error, "batch failed; isolating the event");
                self.isolate_fault(registered, &row, &events)?;
                Ok(BatchOutcome::Faulted)
            }
        }
    }

    /// Applies `events` to the state as committed at `checkpoint`; returns the batch's writes.
    fn apply(
        &self,
        registered: &Registered,
        checkpoint: Position,
        events: &[Event],
    ) -> Result<BTreeMap<Vec<u8>, Option<Vec<u8>>>, ProjectionError> {
        let committed: Arc<dyn CommittedState> = Arc::new(SqliteState {
            store: self.inner.store.clone(),
            namespace: registered.namespace,
            cache: Some(registered.state_cache.clone()),
            checkpoint,
        });
        let mut state = ProjectionState::for_batch(committed, self.inner.options.state_limits);
        if !events.is_empty() {
            registered.projection.lock().apply(events, &mut state)?;
        }
        Ok(state.take_writes())
    }

    /// Replays a failed batch one event at a time, committing each success, and records the
    /// fault at the first event that fails.
    fn isolate_fault(
        &self,
        registered: &Registered,
        row: &Row,
        events: &[Event],
    ) -> Result<(), RunnerError> {
        let mut row = row.clone();
        for event in events {
            match self.apply(registered, row.checkpoint, std::slice::from_ref(event)) {
                Ok(writes) => {
                    self.commit(registered, &row, writes, event.position, false)?;
                    row.checkpoint = event.position;
                }
                Err(error) => {
                    let conn = self.inner.conn.lock();
                    conn.execute(
                        "UPDATE projections SET status = 'faulted', fault_position = ?2, fault_message = ?3, updated_at = ?4
                         WHERE namespace = ?1",
                        params![registered.namespace, event.position as i64, error.to_string(), now_micros()],
                    )?;
                    tracing::error!(projection = %registered.info.name, position = event.position, %error, "projection faulted");
                    return Ok(());
                }
            }
        }
        // Every event passed alone: the failure depended on the batch (a budget, say). Fault at
        // the first event so that an operator looks.
        if let Some(first) = events.first() {
            let conn = self.inner.conn.lock();
            conn.execute(
                "UPDATE projections SET status = 'faulted', fault_position = ?2, fault_message = ?3, updated_at = ?4
                 WHERE namespace = ?1",
                params![
                    registered.namespace,
                    first.position as i64,
                    "the batch failed but each event alone succeeded",
                    now_micros()
                ],
            )?;
        }
        Ok(())
    }

    /// Commits a batch's writes and checkpoint in one transaction, guarded by the previous
    /// checkpoint. When a rebuilding version catches up, swaps it in for the old one.
    fn commit(
        &self,
        registered: &Registered,
        row: &Row,
        writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
        checkpoint: Position,
        caught_up: bool,
    ) -> Result<(), RunnerError> {
        let mut conn = self.inner.conn.lock();
        self.commit_in(&mut conn, registered, row, writes, checkpoint, caught_up)
    }

    fn commit_in(
        &self,
        conn: &mut Connection,
        registered: &Registered,
        row: &Row,
        writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
        checkpoint: Position,
        caught_up: bool,
    ) -> Result<(), RunnerError> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut put = tx.prepare_cached(
                "INSERT INTO projection_state (namespace, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
            )?;
            let mut delete = tx
                .prepare_cached("DELETE FROM projection_state WHERE namespace = ?1 AND key = ?2")?;
            for (key, value) in &writes {
                match value {
                    Some(value) => put.execute(params![registered.namespace, key, value])?,
                    None => delete.execute(params![registered.namespace, key])?,
                };
            }
        }
        let status = match (row.status.as_str(), caught_up) {
            ("rebuilding", true) => "live",
            ("rebuilding", false) => "rebuilding",
            (_, true) => "live",
            (_, false) => "catching_up",
        };
        let updated = tx.execute(
            "UPDATE projections SET checkpoint = ?2, status = ?3, updated_at = ?5 WHERE namespace = ?1 AND checkpoint = ?4",
            params![registered.namespace, checkpoint as i64, status, row.checkpoint as i64, now_micros()],
        )?;
        if updated != 1 {
            // Another runner committed this batch first: drop ours.
            tracing::warn!(projection = %registered.info.name, "checkpoint moved under us; batch discarded");
            registered.state_cache.clear();
            return Ok(());
        }
        if row.status == "rebuilding" && caught_up {
            // The swap: older versions retire and their state goes, in the same transaction.
            let older: Vec<i64> = load_rows(&tx, Some(&registered.info.name))?
                .into_iter()
                .filter(|r| r.version < registered.info.version && r.status != "retired")
                .map(|r| r.namespace)
                .collect();
            for namespace in older {
                tx.execute(
                    "DELETE FROM projection_state WHERE namespace = ?1",
                    [namespace],
                )?;
                tx.execute(
                    "UPDATE projections SET status = 'retired', updated_at = ?2 WHERE namespace = ?1",
                    params![namespace, now_micros()],
                )?;
            }
            tracing::info!(projection = %registered.info.name, version = registered.info.version, "rebuilt version swapped in");
        }
        if let Err(error) = tx.commit() {
            registered.state_cache.clear();
            return Err(error.into());
        }
        registered
            .state_cache
            .committed(row.checkpoint, checkpoint, writes);
        Ok(())
    }

    fn mark_caught_up(&self, registered: &Registered, row: &Row) -> Result<(), RunnerError> {
        if row.status == "catching_up" || row.status == "rebuilding" {
            self.commit(registered, row, BTreeMap::new(), row.checkpoint, true)?;
        }
        Ok(())
    }
}

fn head_position(conn: &Connection) -> rusqlite::Result<Position> {
    conn.prepare_cached("SELECT last_position FROM head WHERE id = 1")?
        .query_row([], |r| r.get::<_, i64>(0))
        .map(|p| p as u64)
}
