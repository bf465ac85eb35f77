//! The single writer: one thread, one connection, group commit.
//!
//! Appenders send [`AppendRequest`]s over a bounded channel. The writer takes the first request,
//! drains whatever else is queued (up to the limits), and commits all of them in one
//! transaction. Each request runs in its own savepoint, so a conflict fails only that request,
//! and each appender gets its own result once the transaction is committed (and, when Durable,
//! fsynced). Concurrent appenders therefore share one fsync.
//!
//! The head of the log (last position, last recorded time, active bucket) is read at the start
//! of every transaction, inside the write lock, so that other processes appending to the same
//! file keep positions gap-free.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use uuid::Uuid;

use crate::catalog;
use crate::checksum::event_checksum;
use crate::clock::{bucket_range, Clock};
use crate::error::AppendError;
use crate::event::{AppendResult, Position, StreamAppend, StreamVersion};
use crate::index::{self, IdEntry};
use crate::metrics::Metrics;
use crate::notify::CommitNotifier;
use crate::options::{limits, BucketWidth};
use crate::query::AppendCondition;
use crate::schema;
use crate::staged::Staged;
use crate::tags::{self, ScanError};

/// One append call: one or more streams, all or nothing. Every event already has its id.
pub(crate) struct AppendRequest {
    pub parts: Vec<StreamAppend>,
    /// Checked inside the request's savepoint, before anything is written (DCB).
    pub condition: Option<AppendCondition>,
    pub reply: Sender<Result<Vec<AppendResult>, AppendError>>,
    /// When the appender queued it (append latency is measured from here).
    pub enqueued: Instant,
}

impl AppendRequest {
    fn event_count(&self) -> usize {
        self.parts.iter().map(|part| part.events.len()).sum()
    }

    /// Tag index entries this request adds when it is stored.
    fn tag_count(&self) -> usize {
        self.parts
            .iter()
            .flat_map(|part| &part.events)
            .map(|event| event.tags.len())
            .sum()
    }
}

/// The bucket appends go to, with its counters as of this transaction.
#[derive(Clone, Debug)]
struct ActiveBucket {
    id: i64,
    table: String,
    end_micros: i64,
    first_position: Option<Position>,
    last_position: Option<Position>,
    event_count: u64,
}

/// The head of the log during one transaction. Snapshotted before each request so that a
/// request rolled back to its savepoint leaves no trace here either.
#[derive(Clone, Debug)]
struct Head {
    last_position: Position,
    last_recorded_at: i64,
    active: Option<ActiveBucket>,
}

/// Why one request failed inside its savepoint.
enum RequestFailure {
    /// A reportable error.
    Append(AppendError),
    /// Inserting an event id hit one already stored: decide between "retry" and "clash" after
    /// rolling back.
    EventIdExists,
}

impl From<rusqlite::Error> for RequestFailure {
    fn from(error: rusqlite::Error) -> Self {
        RequestFailure::Append(AppendError::Sqlite(error))
    }
}

/// Commit statistics handed to the notifier (and later to metrics).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CommitSummary {
    pub last_position: Position,
}

pub(crate) struct Writer {
    conn: Connection,
    requests: Receiver<AppendRequest>,
    clock: Arc<dyn Clock>,
    width: BucketWidth,
    notifier: Arc<CommitNotifier>,
    metrics: Arc<Metrics>,
    /// What the writer knows of the file without reading it again.
    known: Known,
    /// Level 0 of the indexes is merged at this many entries (`Options::index_merge_entries`).
    merge_entries: u64,
    /// Entries in level 0 of the indexes, as far as this writer knows (other processes add
    /// theirs unseen; whoever merges moves all of them).
    unmerged: u64,
}

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        requests: Receiver<AppendRequest>,
        clock: Arc<dyn Clock>,
        width: BucketWidth,
        notifier: Arc<CommitNotifier>,
        metrics: Arc<Metrics>,
        merge_entries: u64,
    ) -> Self {
        Writer {
            conn,
            requests,
            clock,
            width,
            notifier,
            metrics,
            known: Known::default(),
            merge_entries,
            unmerged: 0,
        }
    }

    /// Runs until every sender is dropped.
    pub(crate) fn run(mut self) {
        self.unmerged = index::count(&self.conn, index::STREAM_LEVELS[0]).unwrap_or(0);
        while let Ok(first) = self.requests.recv() {
            let mut events = first.event_count();
            let mut batch = vec![first];
            while batch.len() < limits::MAX_REQUESTS_PER_COMMIT
                && events < limits::MAX_EVENTS_PER_COMMIT
            {
                match self.requests.try_recv() {
                    Ok(request) => {
                        events += request.event_count();
                        batch.push(request);
                    }
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
        self.notifier.close();
        tracing::debug!("writer stopped: all senders dropped");
    }

    fn commit_batch(&mut self, batch: Vec<AppendRequest>) {
        let started = Instant::now();
        match self.try_commit(&batch) {
            Ok((results, head)) => {
                self.known.commit(head.last_position);
                let events: usize = results
                    .iter()
                    .filter_map(|r| r.as_ref().ok())
                    .flat_map(|parts| parts.iter())
                    .filter(|part| !part.already_stored)
                    .map(|part| (part.last_position - part.first_position + 1) as usize)
                    .sum();
                let tag_entries: usize = batch
                    .iter()
                    .zip(&results)
                    .filter(|(_, result)| {
                        result
                            .as_ref()
                            .is_ok_and(|parts| parts.iter().all(|part| !part.already_stored))
                    })
                    .map(|(request, _)| request.tag_count())
                    .sum();
                self.notifier.committed(CommitSummary {
                    last_position: head.last_position,
                });
                tracing::trace!(requests = batch.len(), events, elapsed = ?started.elapsed(), "committed");
                self.metrics.record_commit(&batch, &results);
                for (request, result) in batch.into_iter().zip(results) {
                    // An appender that gave up waiting is not an error.
                    let _ = request.reply.send(result);
                }
                // Tag entries fill level 0 of the tag index as events fill the others.
                self.unmerged += (events + tag_entries) as u64;
                if self.unmerged >= self.merge_entries {
                    self.merge_index_levels();
                }
            }
            Err(error) => {
                self.known.rollback_transaction();
                tracing::warn!(%error, requests = batch.len(), "write transaction failed; nothing of it is stored");
                self.metrics.record_failed_commit(batch.len());
                for request in batch {
                    let _ = request
                        .reply
                        .send(Err(AppendError::Sqlite(copy_sqlite_error(&error))));
                }
            }
        }
    }

    /// Moves the indexes' level 0 down (see `index.rs`), in its own transaction after the
    /// appenders of the last commit have their answers. A failure leaves the levels as they
    /// were, which is still a correct index: it is logged and retried after more appends.
    fn merge_index_levels(&mut self) {
        let started = Instant::now();
        let merged = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .and_then(|tx| {
                let level1_entries = self.merge_entries * limits::INDEX_LEVEL1_FACTOR;
                let moved = index::merge(&tx, level1_entries)?;
                tags::merge(&tx, level1_entries)?;
                tx.commit()?;
                Ok(moved)
            });
        self.unmerged = 0;
        match merged {
            Ok(moved) => {
                tracing::debug!(moved, elapsed = ?started.elapsed(), "merged index level 0")
            }
            Err(error) => {
                tracing::warn!(%error, "index merge failed; the levels stay as they were")
            }
        }
    }

    /// Runs every request of `batch` in one transaction. `Err` means the transaction as a whole
    /// failed and nothing of the batch is stored.
    #[allow(clippy::type_complexity)]
    fn try_commit(
        &mut self,
        batch: &[AppendRequest],
    ) -> rusqlite::Result<(Vec<Result<Vec<AppendResult>, AppendError>>, Head)> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut head = load_head(&tx)?;
        self.known.begin(head.last_position);
        let mut results = Vec::with_capacity(batch.len());
        for request in batch {
            let before = head.clone();
            tx.prepare_cached("SAVEPOINT request")?.execute([])?;
            let outcome = append_request(
                &tx,
                &mut head,
                request,
                self.clock.as_ref(),
                self.width,
                &mut self.known,
            );
            match outcome {
                Ok(result) => {
                    tx.prepare_cached("RELEASE request")?.execute([])?;
                    self.known.release_request();
                    results.push(Ok(result));
                }
                Err(failure) => {
                    if tx.is_autocommit() {
                        // SQLite rolled the whole transaction back by itself (disk full, I/O
                        // error): the requests before this one are gone too.
                        return Err(match failure {
                            RequestFailure::Append(AppendError::Sqlite(error)) => error,
                            _ => rusqlite::Error::SqliteFailure(
                                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                                Some("transaction rolled back".into()),
                            ),
                        });
                    }
                    tx.prepare_cached("ROLLBACK TO request")?.execute([])?;
                    tx.prepare_cached("RELEASE request")?.execute([])?;
                    head = before;
                    self.known.rollback_request();
                    let error = match failure {
                        RequestFailure::Append(error) => Err(error),
                        RequestFailure::EventIdExists => find_already_stored(&tx, &request.parts)
                            .and_then(|stored| {
                                stored.ok_or_else(|| unreachable_clash(&request.parts))
                            }),
                    };
                    results.push(error);
                }
            }
        }
        store_head(&tx, &head)?;
        tx.commit()?;
        Ok((results, head))
    }
}

/// The insert of an id failed but no stored id matches: only a race with another process could
/// do that, so report it as a clash of the first id.
fn unreachable_clash(parts: &[StreamAppend]) -> AppendError {
    AppendError::DuplicateEventId {
        event_id: parts
            .first()
            .and_then(|part| part.events.first())
            .and_then(|event| event.event_id)
            .unwrap_or_default(),
        position: 0,
    }
}

fn load_head(conn: &Connection) -> rusqlite::Result<Head> {
    let (last_position, last_recorded_at) = conn
        .prepare_cached("SELECT last_position, last_recorded_at FROM head WHERE id = 1")?
        .query_row([], |row| {
            Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)?))
        })?;
    let active = conn
        .prepare_cached(
            "SELECT id, table_name, end_micros, first_position, last_position, event_count
             FROM buckets WHERE state = 'active' ORDER BY id DESC LIMIT 1",
        )?
        .query_row([], |row| {
            Ok(ActiveBucket {
                id: row.get(0)?,
                table: row.get(1)?,
                end_micros: row.get(2)?,
                first_position: row.get::<_, Option<i64>>(3)?.map(|p| p as u64),
                last_position: row.get::<_, Option<i64>>(4)?.map(|p| p as u64),
                event_count: row.get::<_, i64>(5)? as u64,
            })
        })
        .optional()?;
    Ok(Head {
        last_position,
        last_recorded_at,
        active,
    })
}

fn store_head(conn: &Connection, head: &Head) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE head SET last_position = ?1, last_recorded_at = ?2 WHERE id = 1")?
        .execute(params![head.last_position as i64, head.last_recorded_at])?;
    if let Some(bucket) = &head.active {
        store_bucket_counters(conn, bucket)?;
    }
    Ok(())
}

fn store_bucket_counters(conn: &Connection, bucket: &ActiveBucket) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE buckets SET first_position = ?1, last_position = ?2, event_count = ?3 WHERE id = ?4")?
        .execute(params![
            bucket.first_position.map(|p| p as i64),
            bucket.last_position.map(|p| p as i64),
            bucket.event_count as i64,
            bucket.id
        ])?;
    Ok(())
}

/// Makes sure the active bucket's time range holds `now`: seals the old one and creates the next.
fn ensure_bucket(
    conn: &Connection,
    head: &mut Head,
    width: BucketWidth,
    now: i64,
) -> rusqlite::Result<()> {
    if let Some(active) = &head.active {
        if now < active.end_micros {
            return Ok(());
        }
        store_bucket_counters(conn, active)?;
        conn.prepare_cached("UPDATE buckets SET state = 'sealed' WHERE id = ?1")?
            .execute([active.id])?;
    }
    let (start, end) = bucket_range(width, now);
    let id: i64 = conn.query_row("SELECT coalesce(max(id), 0) + 1 FROM buckets", [], |r| {
        r.get(0)
    })?;
    let table = schema::bucket_table_name(id);
    conn.prepare_cached(
        "INSERT INTO buckets (id, table_name, start_micros, end_micros, event_count, state)
         VALUES (?1, ?2, ?3, ?4, 0, 'active')",
    )?
    .execute(params![id, table, start, end])?;
    conn.execute_batch(&schema::create_bucket_sql(id))?;
    tracing::debug!(bucket = id, start, end, "created bucket");
    head.active = Some(ActiveBucket {
        id,
        table,
        end_micros: end,
        first_position: None,
        last_position: None,
        event_count: 0,
    });
    Ok(())
}

/// A stream as the writer last saw it.
#[derive(Clone, Copy, Debug)]
struct KnownStream {
    key: i64,
    version: StreamVersion,
}

/// Most streams whose version the writer keeps in memory.
const KNOWN_STREAMS: usize = 65_536;
/// Most event type names whose key the writer keeps in memory.
const KNOWN_TYPES: usize = 4_096;

/// What the writer learnt of the file: type keys (types are never deleted) and stream versions.
/// Stream versions stay valid only while no other process appends: `begin` forgets them when
/// the head of the log is not where this writer's last commit left it.
struct Known {
    type_keys: Staged<String, i64>,
    streams: Staged<String, KnownStream>,
    /// The head of the log after this writer's last commit.
    head_after_last_commit: Option<Position>,
}

impl Default for Known {
    fn default() -> Self {
        Known {
            type_keys: Staged::new(KNOWN_TYPES),
            streams: Staged::new(KNOWN_STREAMS),
            head_after_last_commit: None,
        }
    }
}

impl Known {
    /// Called with the head read inside `BEGIN IMMEDIATE`.
    fn begin(&mut self, head: Position) {
        if self.head_after_last_commit != Some(head) {
            self.streams.clear();
        }
    }

    fn commit(&mut self, head: Position) {
        self.type_keys.commit();
        self.streams.commit();
        self.head_after_last_commit = Some(head);
    }

    fn rollback_transaction(&mut self) {
        self.type_keys.rollback_transaction();
        self.streams.rollback_transaction();
        self.head_after_last_commit = None;
    }

    fn release_request(&mut self) {
        self.type_keys.release_request();
        self.streams.release_request();
    }

    fn rollback_request(&mut self) {
        self.type_keys.rollback_request();
        self.streams.rollback_request();
    }

    /// The stream's key and version, from memory or from the file.
    fn stream(
        &mut self,
        conn: &Connection,
        stream_id: &str,
    ) -> rusqlite::Result<Option<KnownStream>> {
        if let Some(known) = self.streams.get(stream_id) {
            return Ok(Some(*known));
        }
        let found = catalog::find_stream(conn, stream_id)?.map(|(key, info)| KnownStream {
            key,
            version: info.version,
        });
        if let Some(known) = found {
            self.streams.set(stream_id.to_owned(), known);
        }
        Ok(found)
    }

    fn set_stream(&mut self, stream_id: &str, key: i64, version: StreamVersion) {
        self.streams
            .set(stream_id.to_owned(), KnownStream { key, version });
    }

    /// The key of an event type, created when new.
    fn type_key(&mut self, conn: &Connection, name: &str) -> rusqlite::Result<i64> {
        if let Some(key) = self.type_keys.get(name) {
            return Ok(*key);
        }
        let existing: Option<i64> = conn
            .prepare_cached("SELECT type_key FROM event_types WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?;
        let key = match existing {
            Some(key) => key,
            None => {
                conn.prepare_cached("INSERT INTO event_types (name) VALUES (?1)")?
                    .execute([name])?;
                conn.last_insert_rowid()
            }
        };
        self.type_keys.set(name.to_owned(), key);
        Ok(key)
    }
}

fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::ConstraintViolation)
    )
}

/// Appends one request inside the current savepoint.
fn append_request(
    conn: &Connection,
    head: &mut Head,
    request: &AppendRequest,
    clock: &dyn Clock,
    width: BucketWidth,
    known: &mut Known,
) -> Result<Vec<AppendResult>, RequestFailure> {
    // Phase 1: every expected version, before anything is written.
    let mut streams = Vec::with_capacity(request.parts.len());
    for part in &request.parts {
        let found = known.stream(conn, &part.stream_id)?;
        let current = found.map_or(0, |stream| stream.version);
        if !part.expected.accepts(current) {
            // A retry of an append that was stored fails its check now: answer it as a retry.
            if let Some(stored) =
                find_already_stored(conn, &request.parts).map_err(RequestFailure::Append)?
            {
                return Ok(stored);
            }
            return Err(RequestFailure::Append(AppendError::Conflict {
                stream_id: part.stream_id.clone(),
                expected: part.expected,
                actual: current,
            }));
        }
        streams.push(found);
    }
    if let Some(condition) = &request.condition {
        if let Some(position) = condition_conflict(conn, condition, head.last_position)? {
            // A retry of an append that was stored matches its own condition: answer it as a
            // retry, as with expected versions.
            if let Some(stored) =
                find_already_stored(conn, &request.parts).map_err(RequestFailure::Append)?
            {
                return Ok(stored);
            }
            return Err(RequestFailure::Append(AppendError::ConditionFailed {
                position,
                after: condition.after,
            }));
        }
    }

    // Phase 2: write. The clock never goes backwards: clamp to the last recorded time.
    let now = clock.now_micros().max(head.last_recorded_at);
    ensure_bucket(conn, head, width, now)?;
    head.last_recorded_at = now;
    let table = &head
        .active
        .as_ref()
        .expect("ensure_bucket leaves an active bucket")
        .table;
    let mut insert_event = conn.prepare_cached(&format!(
        "INSERT INTO {table} (position, stream_key, version, type_key, event_id, recorded_at, data, metadata, checksum, tags)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    ))?;
    let mut results = Vec::with_capacity(request.parts.len());
    for (part, found) in request.parts.iter().zip(streams) {
        let first_position = head.last_position + 1;
        let (stream_key, mut version) = match found {
            Some(stream) => (stream.key, stream.version),
            None => {
                conn.prepare_cached(
                    "INSERT INTO streams (stream_id, first_position) VALUES (?1, ?2)",
                )?
                .execute(params![part.stream_id, first_position as i64])?;
                (conn.last_insert_rowid(), 0)
            }
        };
        let mut event_ids = Vec::with_capacity(part.events.len());
        for event in &part.events {
            let event_id = event
                .event_id
                .expect("ids are assigned before the request is queued");
            let position = head.last_position + 1;
            version += 1;
            let type_key = known.type_key(conn, &event.event_type)?;
            let tag_bytes = tags::encode(&event.tags);
            let checksum = event_checksum(
                position,
                stream_key,
                version,
                type_key,
                event_id.as_bytes(),
                now,
                &event.data,
                &event.metadata,
                tag_bytes.as_deref().unwrap_or_default(),
            );
            insert_event.execute(params![
                position as i64,
                stream_key,
                version as i64,
                type_key,
                &event_id.as_bytes()[..],
                now,
                &event.data[..],
                &event.metadata[..],
                i64::from(checksum),
                tag_bytes,
            ])?;
            let entry = IdEntry {
                position,
                stream_key,
                version,
            };
            if index::id_in_merged_levels(conn, event_id.as_bytes())? {
                return Err(RequestFailure::EventIdExists);
            }
            match index::insert_id(conn, event_id.as_bytes(), entry) {
                Ok(()) => {}
                Err(error) if is_unique_violation(&error) => {
                    return Err(RequestFailure::EventIdExists)
                }
                Err(error) => return Err(error.into()),
            }
            index::insert_stream_entry(conn, entry)?;
            tags::insert_entries(conn, &event.tags, position, type_key)?;
            head.last_position = position;
            event_ids.push(event_id);
        }
        known.set_stream(&part.stream_id, stream_key, version);
        let active = head.active.as_mut().expect("active bucket");
        active.first_position.get_or_insert(first_position);
        active.last_position = Some(head.last_position);
        active.event_count += part.events.len() as u64;
        results.push(AppendResult {
            stream_id: part.stream_id.clone(),
            first_position,
            last_position: head.last_position,
            last_version: version,
            event_ids,
            already_stored: false,
        });
    }
    debug_assert_eq!(
        head.active.as_ref().map(|b| b.last_position),
        Some(Some(head.last_position))
    );
    Ok(results)
}

/// The first position after the condition's `after` whose event matches its query, as this
/// transaction sees the file (the requests before this one in the same commit included).
fn condition_conflict(
    conn: &Connection,
    condition: &AppendCondition,
    head: Position,
) -> Result<Option<Position>, RequestFailure> {
    tags::first_match_after(conn, &condition.fail_if_events_match, condition.after, head).map_err(
        |error| match error {
            ScanError::Sqlite(error) => RequestFailure::Append(AppendError::Sqlite(error)),
            ScanError::Unavailable(bucket) => RequestFailure::Append(AppendError::Invalid(
                crate::error::InvalidInput::Other(format!(
                    "the append condition names event types without tags, and positions {}..={} after its `after` ({}) are {} (bucket {}): their types cannot be checked; add a tag to the query item or a later `after`",
                    bucket.first_position.unwrap_or_default(),
                    bucket.last_position.unwrap_or_default(),
                    condition.after,
                    bucket.state.as_str(),
                    bucket.id
                )),
            )),
        },
    )
}

/// Whether `parts` were stored before by the same append: every id stored, in the same stream,
/// at consecutive versions in the same order, with the same type, data and metadata.
/// `Ok(None)` when none of the ids is stored; an error naming an id when only some are, when
/// one is stored elsewhere, or when its stored content differs (a client that reused an id for
/// another event must hear so, not "already stored").
fn find_already_stored(
    conn: &Connection,
    parts: &[StreamAppend],
) -> Result<Option<Vec<AppendResult>>, AppendError> {
    let mut found_any: Option<(Uuid, Position)> = None;
    let mut any_missing = false;
    let mut results = Vec::with_capacity(parts.len());
    for part in parts {
        let stream_key = catalog::find_stream(conn, &part.stream_id)?.map(|(key, _)| key);
        let mut rows: Vec<(Uuid, IdEntry)> = Vec::with_capacity(part.events.len());
        for event in &part.events {
            let Some(event_id) = event.event_id else {
                any_missing = true;
                continue;
            };
            let Some(entry) = index::find_event_id(conn, event_id.as_bytes())? else {
                any_missing = true;
                continue;
            };
            found_any.get_or_insert((event_id, entry.position));
            let in_place = Some(entry.stream_key) == stream_key
                && rows
                    .last()
                    .is_none_or(|(_, previous)| entry.version == previous.version + 1);
            if !in_place || !same_content(conn, entry.position, event)? {
                return Err(AppendError::DuplicateEventId {
                    event_id,
                    position: entry.position,
                });
            }
            rows.push((event_id, entry));
        }
        if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
            results.push(AppendResult {
                stream_id: part.stream_id.clone(),
                first_position: first.1.position,
                last_position: last.1.position,
                last_version: last.1.version,
                event_ids: rows.iter().map(|row| row.0).collect(),
                already_stored: true,
            });
        }
    }
    match found_any {
        None => Ok(None),
        // Some ids are stored and some are not: not a retry of one append.
        Some((event_id, position)) if any_missing => {
            Err(AppendError::DuplicateEventId { event_id, position })
        }
        Some(_) => Ok(Some(results)),
    }
}

/// An event's type name, data, metadata and stored tags.
type StoredContent = (String, Vec<u8>, Vec<u8>, Option<Vec<u8>>);

/// Whether the live event at `position` has `event`'s type, data, metadata and tags. An event no
/// longer in the live store (archived or dropped) cannot be compared and counts as the same.
fn same_content(
    conn: &Connection,
    position: Position,
    event: &crate::event::NewEvent,
) -> Result<bool, AppendError> {
    for bucket in catalog::list_buckets(conn)?.iter().rev() {
        if !bucket.state.is_live() || bucket.first_position.is_some_and(|first| first > position) {
            continue;
        }
        let stored: Option<StoredContent> = conn
            .prepare_cached(&format!(
                "SELECT t.name, e.data, e.metadata, e.tags FROM {} e JOIN event_types t ON t.type_key = e.type_key
                 WHERE e.position = ?1",
                bucket.table_name
            ))?
            .query_row([position as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        if let Some((event_type, data, metadata, stored_tags)) = stored {
            return Ok(event_type == event.event_type
                && data[..] == event.data[..]
                && metadata[..] == event.metadata[..]
                && stored_tags == tags::encode(&event.tags));
        }
    }
    Ok(true)
}

/// A copy of an SQLite error for each request of a failed batch (rusqlite's error is not Clone).
fn copy_sqlite_error(error: &rusqlite::Error) -> rusqlite::Error {
    match error {
        rusqlite::Error::SqliteFailure(code, message) => {
            rusqlite::Error::SqliteFailure(*code, message.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}
