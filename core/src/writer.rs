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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use uuid::Uuid;

use crate::catalog;
use crate::checksum::event_checksum;
use crate::clock::{bucket_range, Clock};
use crate::error::AppendError;
use crate::event::{AppendResult, Position, StreamAppend};
use crate::metrics::Metrics;
use crate::notify::CommitNotifier;
use crate::options::{limits, BucketWidth};
use crate::schema;

/// One append call: one or more streams, all or nothing. Every event already has its id.
pub(crate) struct AppendRequest {
    pub parts: Vec<StreamAppend>,
    pub reply: Sender<Result<Vec<AppendResult>, AppendError>>,
    /// When the appender queued it (append latency is measured from here).
    pub enqueued: Instant,
}

impl AppendRequest {
    fn event_count(&self) -> usize {
        self.parts.iter().map(|part| part.events.len()).sum()
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
    /// Event type name -> key, for types whose insertion is committed (types are never deleted).
    type_keys: HashMap<String, i64>,
    /// Types created by the current transaction; merged into `type_keys` on commit.
    new_type_keys: HashMap<String, i64>,
}

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        requests: Receiver<AppendRequest>,
        clock: Arc<dyn Clock>,
        width: BucketWidth,
        notifier: Arc<CommitNotifier>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Writer {
            conn,
            requests,
            clock,
            width,
            notifier,
            metrics,
            type_keys: HashMap::new(),
            new_type_keys: HashMap::new(),
        }
    }

    /// Runs until every sender is dropped.
    pub(crate) fn run(mut self) {
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
                self.type_keys.extend(self.new_type_keys.drain());
                let events: usize = results
                    .iter()
                    .filter_map(|r| r.as_ref().ok())
                    .flat_map(|parts| parts.iter())
                    .filter(|part| !part.already_stored)
                    .map(|part| (part.last_position - part.first_position + 1) as usize)
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
            }
            Err(error) => {
                self.new_type_keys.clear();
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
        let mut results = Vec::with_capacity(batch.len());
        for request in batch {
            let before = head.clone();
            tx.execute_batch("SAVEPOINT request")?;
            let outcome = append_request(
                &tx,
                &mut head,
                request,
                self.clock.as_ref(),
                self.width,
                &self.type_keys,
                &mut self.new_type_keys,
            );
            match outcome {
                Ok(result) => {
                    tx.execute_batch("RELEASE request")?;
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
                    tx.execute_batch("ROLLBACK TO request; RELEASE request")?;
                    head = before;
                    // Types created inside the rolled-back savepoint no longer exist.
                    self.new_type_keys.clear();
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

fn type_key(
    conn: &Connection,
    name: &str,
    committed: &HashMap<String, i64>,
    created: &mut HashMap<String, i64>,
) -> rusqlite::Result<i64> {
    if let Some(key) = committed.get(name).or_else(|| created.get(name)) {
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
    created.insert(name.to_owned(), key);
    Ok(key)
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
    committed_types: &HashMap<String, i64>,
    created_types: &mut HashMap<String, i64>,
) -> Result<Vec<AppendResult>, RequestFailure> {
    // Phase 1: every expected version, before anything is written.
    let mut streams = Vec::with_capacity(request.parts.len());
    for part in &request.parts {
        let found = catalog::find_stream(conn, &part.stream_id)?;
        let current = found.as_ref().map_or(0, |(_, info)| info.version);
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

    // Phase 2: write. The clock never goes backwards: clamp to the last recorded time.
    let now = clock.now_micros().max(head.last_recorded_at);
    ensure_bucket(conn, head, width, now)?;
    head.last_recorded_at = now;
    let bucket = head
        .active
        .clone()
        .expect("ensure_bucket leaves an active bucket");
    let mut insert_event = conn.prepare_cached(&format!(
        "INSERT INTO {} (position, stream_key, version, type_key, event_id, recorded_at, data, metadata, checksum)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        bucket.table
    ))?;
    let mut insert_id = conn.prepare_cached(
        "INSERT INTO event_ids (event_id, position, stream_key, version) VALUES (?1, ?2, ?3, ?4)",
    )?;

    let mut results = Vec::with_capacity(request.parts.len());
    for (part, found) in request.parts.iter().zip(streams) {
        let first_position = head.last_position + 1;
        let (stream_key, mut version, in_bucket) = match found {
            Some((key, info)) => {
                let in_bucket = bucket
                    .first_position
                    .is_some_and(|first| info.last_position >= first);
                (key, info.version, in_bucket)
            }
            None => {
                conn.prepare_cached(
                    "INSERT INTO streams (stream_id, version, first_position, last_position) VALUES (?1, 0, ?2, ?2)",
                )?
                .execute(params![part.stream_id, first_position as i64])?;
                (conn.last_insert_rowid(), 0, false)
            }
        };
        if !in_bucket {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO stream_buckets (stream_key, bucket_id, first_version) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![stream_key, bucket.id, (version + 1) as i64])?;
        }
        let mut event_ids = Vec::with_capacity(part.events.len());
        for event in &part.events {
            let event_id = event
                .event_id
                .expect("ids are assigned before the request is queued");
            let position = head.last_position + 1;
            version += 1;
            let type_key = type_key(conn, &event.event_type, committed_types, created_types)?;
            let checksum = event_checksum(
                position,
                stream_key,
                version,
                type_key,
                event_id.as_bytes(),
                now,
                &event.data,
                &event.metadata,
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
            ])?;
            match insert_id.execute(params![
                &event_id.as_bytes()[..],
                position as i64,
                stream_key,
                version as i64
            ]) {
                Ok(_) => {}
                Err(error) if is_unique_violation(&error) => {
                    return Err(RequestFailure::EventIdExists)
                }
                Err(error) => return Err(error.into()),
            }
            head.last_position = position;
            event_ids.push(event_id);
        }
        conn.prepare_cached(
            "UPDATE streams SET version = ?1, last_position = ?2 WHERE stream_key = ?3",
        )?
        .execute(params![
            version as i64,
            head.last_position as i64,
            stream_key
        ])?;
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

/// Whether `parts` were stored before by an append with the same ids: every id stored, in the
/// same stream, at consecutive versions in the same order. `Ok(None)` when none of the ids is
/// stored; an error when only some are, or elsewhere.
fn find_already_stored(
    conn: &Connection,
    parts: &[StreamAppend],
) -> Result<Option<Vec<AppendResult>>, AppendError> {
    let mut lookup = conn.prepare_cached(
        "SELECT position, stream_key, version FROM event_ids WHERE event_id = ?1",
    )?;
    let mut found_any = false;
    let mut first_missing: Option<Uuid> = None;
    let mut results = Vec::with_capacity(parts.len());
    for part in parts {
        let stream_key = catalog::find_stream(conn, &part.stream_id)?.map(|(key, _)| key);
        let mut rows = Vec::with_capacity(part.events.len());
        for event in &part.events {
            let Some(event_id) = event.event_id else {
                first_missing.get_or_insert(Uuid::nil());
                continue;
            };
            let row: Option<(i64, i64, i64)> = lookup
                .query_row([&event_id.as_bytes()[..]], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            match row {
                Some((position, key, version)) => {
                    found_any = true;
                    let in_place = Some(key) == stream_key
                        && rows.last().is_none_or(
                            |&(_, _, previous_version): &(Uuid, i64, i64)| {
                                version == previous_version + 1
                            },
                        );
                    if !in_place {
                        return Err(AppendError::DuplicateEventId {
                            event_id,
                            position: position as u64,
                        });
                    }
                    rows.push((event_id, position, version));
                }
                None => {
                    first_missing.get_or_insert(event_id);
                }
            }
        }
        if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
            results.push(AppendResult {
                stream_id: part.stream_id.clone(),
                first_position: first.1 as u64,
                last_position: last.1 as u64,
                last_version: last.2 as u64,
                event_ids: rows.iter().map(|row| row.0).collect(),
                already_stored: true,
            });
        }
    }
    if !found_any {
        return Ok(None);
    }
    if first_missing.is_some() {
        // Some ids are stored and some are not: not a retry of one append.
        let stored = parts
            .iter()
            .flat_map(|part| part.events.iter())
            .filter_map(|event| event.event_id)
            .find_map(|id| {
                lookup
                    .query_row([&id.as_bytes()[..]], |r| r.get::<_, i64>(0))
                    .optional()
                    .ok()
                    .flatten()
                    .map(|position| (id, position))
            })
            .expect("found_any means one id is stored");
        return Err(AppendError::DuplicateEventId {
            event_id: stored.0,
            position: stored.1 as u64,
        });
    }
    Ok(Some(results))
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
