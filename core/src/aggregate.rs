//! Aggregates: state folded from one stream, saved with optimistic concurrency, with optional
//! snapshots kept in SQLite.
//!
//! An [`Aggregate`] is a fold: `apply(&mut self, &Event)`. [`AggregateStore::load`] replays the
//! aggregate's stream (from its latest usable snapshot, if any) into an [`AggregateRoot`], which
//! records new events with [`AggregateRoot::record`]; [`AggregateStore::save`] appends them with
//! `ExpectedVersion::Exact(loaded version)`, so a concurrent writer makes the save fail with a
//! conflict instead of being overwritten.
//!
//! **Snapshots** live in the table `snapshots(stream_id, aggregate_type, type_version, version,
//! state)`, one row (the latest) per stream and aggregate type, the state encoded with
//! MessagePack (rmp-serde). With [`SnapshotPolicy::every`] = `Some(n)`, a save that carries the
//! stream across a multiple of `n` versions writes a snapshot. A snapshot is used on load only
//! if its `type_version` equals [`Aggregate::TYPE_VERSION`] (and it decodes): bump the version
//! whenever the state's shape or the meaning of `apply` changes, and old snapshots are ignored
//! rather than misread. Snapshots are written through a side connection (not the writer's), after
//! the events are committed: a snapshot is only a shortcut, never the truth.

use parking_lot::Mutex;
use rusqlite::{params, OptionalExtension};
use serde::{de::DeserializeOwned, Serialize};

use crate::error::{AppendError, InvalidInput, ReadError};
use crate::event::{AppendResult, Event, ExpectedVersion, NewEvent, StreamVersion};
use crate::reader::Direction;
use crate::store::Store;

/// Events per page while replaying a stream.
const REPLAY_PAGE_SIZE: usize = 1_000;
/// Largest encoded snapshot accepted (64 MiB).
pub const MAX_SNAPSHOT_BYTES: usize = 64 * 1024 * 1024;

/// State folded from the events of one stream.
pub trait Aggregate: Default + Serialize + DeserializeOwned {
    /// The aggregate's name, stored with its snapshots.
    const TYPE_NAME: &'static str;
    /// The version of the state's shape and of `apply`. Change it when either changes: older
    /// snapshots are then ignored and the state is rebuilt by replaying the stream.
    const TYPE_VERSION: u32;

    /// Folds one event into the state.
    fn apply(&mut self, event: &Event);
}

/// When snapshots are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Write a snapshot each time a save carries the stream's version across a multiple of this
    /// many events. `None` (the default): never write one (existing ones are still used).
    pub every: Option<u64>,
}

impl SnapshotPolicy {
    /// No snapshots written.
    pub fn never() -> Self {
        SnapshotPolicy { every: None }
    }

    /// A snapshot every `n` events (`n` ≥ 1).
    pub fn every(n: u64) -> Self {
        SnapshotPolicy {
            every: Some(n.max(1)),
        }
    }
}

/// Why loading or saving an aggregate failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AggregateError {
    /// Reading the stream failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Appending failed; `AppendError::Conflict` means another writer saved first: reload and
    /// decide again.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// The state could not be encoded for a snapshot.
    #[error("could not encode the aggregate state: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The snapshot is larger than [`MAX_SNAPSHOT_BYTES`].
    #[error("snapshot of {len} bytes is over the limit of {limit}")]
    SnapshotTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// SQLite failed on the snapshots table.
    #[error("SQLite error on snapshots: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl AggregateError {
    /// Whether this is an optimistic-concurrency conflict.
    pub fn is_conflict(&self) -> bool {
        matches!(self, AggregateError::Append(AppendError::Conflict { .. }))
    }
}

/// A loaded aggregate: its state, the version it reflects, and events recorded but not saved.
#[derive(Debug)]
pub struct AggregateRoot<A> {
    stream_id: String,
    state: A,
    version: StreamVersion,
    uncommitted: Vec<NewEvent>,
    replayed: u64,
    snapshot_version: Option<StreamVersion>,
}

impl<A> AggregateRoot<A> {
    /// The aggregate's stream.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// The state, as of [`AggregateRoot::version`] (recorded events are not applied until saved).
    pub fn state(&self) -> &A {
        &self.state
    }

    /// The stream version the state reflects (0: no events).
    pub fn version(&self) -> StreamVersion {
        self.version
    }

    /// Records an event to append on the next save.
    pub fn record(&mut self, event: NewEvent) {
        self.uncommitted.push(event);
    }

    /// Events recorded and not yet saved.
    pub fn uncommitted(&self) -> &[NewEvent] {
        &self.uncommitted
    }

    /// How many events the last load replayed (after the snapshot, if one was used).
    pub fn replayed_events(&self) -> u64 {
        self.replayed
    }

    /// The version of the snapshot the last load started from (`None`: replayed from the start).
    pub fn snapshot_version(&self) -> Option<StreamVersion> {
        self.snapshot_version
    }
}

/// Loads and saves aggregates of a store, and keeps their snapshots.
pub struct AggregateStore {
    store: Store,
    policy: SnapshotPolicy,
    /// The side connection that writes snapshots.
    writer: Mutex<rusqlite::Connection>,
}

impl std::fmt::Debug for AggregateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregateStore")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// A snapshot row.
struct Snapshot {
    type_version: i64,
    version: StreamVersion,
    state: Vec<u8>,
}

impl AggregateStore {
    /// An aggregate store over `store` (snapshots go to the schema's `snapshots` table).
    pub fn new(store: &Store, policy: SnapshotPolicy) -> Result<Self, AggregateError> {
        let conn = store.open_side_connection()?;
        Ok(AggregateStore {
            store: store.clone(),
            policy,
            writer: Mutex::new(conn),
        })
    }

    /// Loads the aggregate of `stream_id`: the latest usable snapshot, then the events after it.
    /// A stream without events loads as `A::default()` at version 0.
    pub fn load<A: Aggregate>(&self, stream_id: &str) -> Result<AggregateRoot<A>, AggregateError> {
        let mut root = AggregateRoot {
            stream_id: stream_id.to_owned(),
            state: A::default(),
            version: 0,
            uncommitted: Vec::new(),
            replayed: 0,
            snapshot_version: None,
        };
        if let Some(snapshot) = self.read_snapshot(stream_id, A::TYPE_NAME)? {
            if snapshot.type_version == i64::from(A::TYPE_VERSION) {
                match rmp_serde::from_slice::<A>(&snapshot.state) {
                    Ok(state) => {
                        root.state = state;
                        root.version = snapshot.version;
                        root.snapshot_version = Some(snapshot.version);
                    }
                    Err(error) => tracing::warn!(
                        stream_id,
                        aggregate = A::TYPE_NAME,
                        %error,
                        "snapshot does not decode; replaying the stream instead"
                    ),
                }
            }
        }
        let (replayed, version) = self.replay(&mut root.state, stream_id, root.version, None)?;
        root.replayed = replayed;
        root.version = version;
        Ok(root)
    }

    /// Applies the events of `stream_id` after version `after` (up to `until`, if given);
    /// returns how many, and the version reached.
    fn replay<A: Aggregate>(
        &self,
        state: &mut A,
        stream_id: &str,
        after: StreamVersion,
        until: Option<StreamVersion>,
    ) -> Result<(u64, StreamVersion), ReadError> {
        let mut count = 0;
        let mut version = after;
        loop {
            let wanted = match until {
                Some(until) if until <= version => return Ok((count, version)),
                Some(until) => REPLAY_PAGE_SIZE.min((until - version) as usize),
                None => REPLAY_PAGE_SIZE,
            };
            let page =
                self.store
                    .read_stream(stream_id, version + 1, Direction::Forwards, wanted)?;
            for event in &page {
                state.apply(event);
                version = event.version;
                count += 1;
            }
            if page.len() < wanted {
                return Ok((count, version));
            }
        }
    }

    /// Appends the recorded events with `ExpectedVersion::Exact(root.version())`, applies them to
    /// the state, and writes a snapshot if the policy says so. With nothing recorded, does
    /// nothing and returns `None`. On a conflict nothing is written and the recorded events stay
    /// in the root: reload, and record again against the new state.
    pub fn save<A: Aggregate>(
        &self,
        root: &mut AggregateRoot<A>,
    ) -> Result<Option<AppendResult>, AggregateError> {
        if root.uncommitted.is_empty() {
            return Ok(None);
        }
        let events = root.uncommitted.clone();
        let result = self.store.append(
            &root.stream_id,
            ExpectedVersion::Exact(root.version),
            events,
        )?;
        root.uncommitted.clear();
        let before = root.version;
        if result.already_stored {
            // An earlier save of these very events succeeded: nothing new to apply here.
            return Ok(Some(result));
        }
        let (_, version) = self.replay(
            &mut root.state,
            &root.stream_id,
            before,
            Some(result.last_version),
        )?;
        root.version = version;
        if let Some(every) = self.policy.every {
            if root.version / every > before / every {
                self.snapshot(root)?;
            }
        }
        Ok(Some(result))
    }

    /// Writes a snapshot of `root`'s state at its version now (whatever the policy), replacing
    /// an older one.
    pub fn snapshot<A: Aggregate>(&self, root: &AggregateRoot<A>) -> Result<(), AggregateError> {
        let state = rmp_serde::to_vec_named(&root.state)?;
        if state.len() > MAX_SNAPSHOT_BYTES {
            return Err(AggregateError::SnapshotTooLarge {
                len: state.len(),
                limit: MAX_SNAPSHOT_BYTES,
            });
        }
        self.writer.lock().execute(
            "INSERT INTO snapshots (stream_id, aggregate_type, type_version, version, state)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (stream_id, aggregate_type) DO UPDATE SET
                 type_version = excluded.type_version, version = excluded.version,
                 state = excluded.state
             WHERE excluded.version >= snapshots.version
                OR excluded.type_version <> snapshots.type_version",
            params![
                root.stream_id,
                A::TYPE_NAME,
                i64::from(A::TYPE_VERSION),
                root.version as i64,
                state
            ],
        )?;
        Ok(())
    }

    /// The version of the stored snapshot of `stream_id` for aggregate `A`, and its type version.
    pub fn snapshot_info<A: Aggregate>(
        &self,
        stream_id: &str,
    ) -> Result<Option<(StreamVersion, u32)>, AggregateError> {
        Ok(self
            .read_snapshot(stream_id, A::TYPE_NAME)?
            .map(|s| (s.version, s.type_version as u32)))
    }

    fn read_snapshot(
        &self,
        stream_id: &str,
        aggregate_type: &str,
    ) -> Result<Option<Snapshot>, AggregateError> {
        if stream_id.is_empty() {
            return Err(ReadError::from(InvalidInput::StreamIdLength { len: 0 }).into());
        }
        let conn = self.store.readers().get()?;
        let snapshot = conn
            .prepare_cached(
                "SELECT type_version, version, state FROM snapshots
                 WHERE stream_id = ?1 AND aggregate_type = ?2",
            )?
            .query_row(params![stream_id, aggregate_type], |row| {
                Ok(Snapshot {
                    type_version: row.get(0)?,
                    version: row.get::<_, i64>(1)? as u64,
                    state: row.get(2)?,
                })
            })
            .optional()?;
        Ok(snapshot)
    }
}
