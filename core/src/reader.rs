//! Reads: a pool of read connections and the queries that turn bucket rows into events.
//!
//! Every read that spans several buckets runs in one read transaction, so it sees one snapshot
//! of the log even while the writer commits.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};
use rusqlite::{Connection, OptionalExtension, Row};
use uuid::Uuid;

use crate::catalog::{self, BucketInfo, BucketState};
use crate::checksum::event_checksum;
use crate::connection::{self, Location, Role};
use crate::error::{InvalidInput, ReadError};
use crate::event::{Event, Position, StreamVersion};
use crate::options::{limits, Options};

/// Which way a stream is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Direction {
    /// Oldest first.
    #[default]
    Forwards,
    /// Newest first.
    Backwards,
}

/// A pool of read connections, opened lazily up to `Options::read_connections`.
pub(crate) struct ReadPool {
    location: Location,
    options: Options,
    connections: Mutex<PoolConnections>,
    returned: Condvar,
    /// Event type key -> name. Types are never renamed or deleted, so entries never go stale.
    type_names: RwLock<HashMap<i64, Arc<str>>>,
    /// Stream key -> name, each checked against the `streams` index once (see `stream_name`).
    /// Cleared when it reaches `STREAM_NAME_CACHE_ENTRIES`, so that it stays bounded.
    stream_names: RwLock<HashMap<i64, Arc<str>>>,
}

/// Most stream names `ReadPool::stream_names` keeps.
const STREAM_NAME_CACHE_ENTRIES: usize = 16_384;

/// Idle connections, and how many are open in all (idle and borrowed).
#[derive(Default)]
struct PoolConnections {
    idle: Vec<Connection>,
    opened: usize,
}

/// A connection borrowed from the pool; returned on drop.
pub(crate) struct PooledConnection<'a> {
    pool: &'a ReadPool,
    conn: Option<Connection>,
}

impl Deref for PooledConnection<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("present until drop")
    }
}

impl DerefMut for PooledConnection<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("present until drop")
    }
}

impl Drop for PooledConnection<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut connections = self.pool.connections.lock();
            if conn.is_autocommit() {
                connections.idle.push(conn);
            } else {
                // A read transaction left open by a panic: do not reuse the connection.
                connections.opened -= 1;
            }
            drop(connections);
            self.pool.returned.notify_one();
        }
    }
}

impl ReadPool {
    pub(crate) fn new(location: Location, options: Options) -> Self {
        ReadPool {
            location,
            options,
            connections: Mutex::new(PoolConnections::default()),
            returned: Condvar::new(),
            type_names: RwLock::new(HashMap::new()),
            stream_names: RwLock::new(HashMap::new()),
        }
    }

    /// Borrows a connection, opening one if the pool is below its size, else waiting.
    pub(crate) fn get(&self) -> Result<PooledConnection<'_>, ReadError> {
        let mut connections = self.connections.lock();
        loop {
            if let Some(conn) = connections.idle.pop() {
                return Ok(PooledConnection {
                    pool: self,
                    conn: Some(conn),
                });
            }
            if connections.opened < self.options.read_connections {
                connections.opened += 1;
                drop(connections);
                return match connection::open(&self.location, Role::Reader, &self.options) {
                    Ok(conn) => Ok(PooledConnection {
                        pool: self,
                        conn: Some(conn),
                    }),
                    Err(error) => {
                        self.connections.lock().opened -= 1;
                        self.returned.notify_one();
                        Err(ReadError::Sqlite(error))
                    }
                };
            }
            self.returned.wait(&mut connections);
        }
    }

    /// Runs `read` inside one read transaction on a pooled connection.
    pub(crate) fn with_snapshot<T>(
        &self,
        read: impl FnOnce(&Connection, &ReadPool) -> Result<T, ReadError>,
    ) -> Result<T, ReadError> {
        let mut conn = self.get()?;
        let tx = conn.transaction()?;
        let result = read(&tx, self)?;
        tx.finish()?;
        Ok(result)
    }

    fn type_name(
        &self,
        conn: &Connection,
        type_key: i64,
        position: Position,
    ) -> Result<Arc<str>, ReadError> {
        if let Some(name) = self.type_names.read().get(&type_key) {
            return Ok(name.clone());
        }
        let name: Option<String> = conn
            .prepare_cached("SELECT name FROM event_types WHERE type_key = ?1")?
            .query_row([type_key], |r| r.get(0))
            .optional()?;
        let name: Arc<str> = name
            .ok_or_else(|| ReadError::Corrupt {
                position,
                reason: format!("unknown event type key {type_key}"),
            })?
            .into();
        // Names are not covered by the event checksum: check the row against the name's unique
        // index, so that a corrupt name is reported rather than returned.
        let indexed: Option<i64> = conn
            .prepare_cached("SELECT type_key FROM event_types WHERE name = ?1")?
            .query_row([&*name], |r| r.get(0))
            .optional()?;
        if indexed != Some(type_key) {
            return Err(ReadError::Corrupt {
                position,
                reason: format!(
                    "event type key {type_key} is named {name:?}, but that name's index entry says {indexed:?}"
                ),
            });
        }
        self.type_names.write().insert(type_key, name.clone());
        Ok(name)
    }

    /// The name of stream `stream_key` as read from its `streams` row, checked (once per key)
    /// against the unique index on names: the event checksum covers the key, not the name.
    fn stream_name(
        &self,
        conn: &Connection,
        stream_key: i64,
        name: &str,
        position: Position,
    ) -> Result<Arc<str>, ReadError> {
        if let Some(cached) = self.stream_names.read().get(&stream_key) {
            if **cached == *name {
                return Ok(cached.clone());
            }
        }
        let indexed: Option<i64> = conn
            .prepare_cached("SELECT stream_key FROM streams WHERE stream_id = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?;
        if indexed != Some(stream_key) {
            return Err(ReadError::Corrupt {
                position,
                reason: format!(
                    "stream key {stream_key} is named {name:?}, but that name's index entry says {indexed:?}"
                ),
            });
        }
        let name: Arc<str> = name.into();
        let mut names = self.stream_names.write();
        if names.len() >= STREAM_NAME_CACHE_ENTRIES {
            names.clear();
        }
        names.insert(stream_key, name.clone());
        Ok(name)
    }

    /// Type keys of the named types that exist (unknown names have no events).
    pub(crate) fn type_keys(
        &self,
        conn: &Connection,
        names: &[String],
    ) -> Result<Vec<i64>, ReadError> {
        let mut statement =
            conn.prepare_cached("SELECT type_key FROM event_types WHERE name = ?1")?;
        let mut keys = Vec::with_capacity(names.len());
        for name in names {
            if let Some(key) = statement
                .query_row([name], |r| r.get::<_, i64>(0))
                .optional()?
            {
                keys.push(key);
            }
        }
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }
}

pub(crate) fn check_page_size(max_count: usize) -> Result<(), ReadError> {
    if max_count == 0 || max_count > limits::MAX_PAGE_SIZE {
        return Err(ReadError::Invalid(InvalidInput::PageSize {
            requested: max_count,
            limit: limits::MAX_PAGE_SIZE,
        }));
    }
    Ok(())
}

fn to_sql_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Columns read from a bucket table, in the order `event_from_row` expects, after the stream id.
const EVENT_COLUMNS: &str = "e.position, e.stream_key, e.version, e.type_key, e.event_id, e.recorded_at, e.data, e.metadata, e.checksum";

/// Turns a row (`stream_id`, then `EVENT_COLUMNS`) into an event, verifying its checksum.
fn event_from_row(
    row: &Row<'_>,
    pool: &ReadPool,
    conn: &Connection,
    stream_id: Option<&Arc<str>>,
) -> Result<Event, ReadError> {
    let position = row.get::<_, i64>(1)? as u64;
    let stream_key: i64 = row.get(2)?;
    let version = row.get::<_, i64>(3)? as u64;
    let type_key: i64 = row.get(4)?;
    let id_bytes: Vec<u8> = row.get(5)?;
    let recorded_at: i64 = row.get(6)?;
    let data: Vec<u8> = row.get(7)?;
    let metadata: Vec<u8> = row.get(8)?;
    let stored_checksum: i64 = row.get(9)?;
    let computed = event_checksum(
        position,
        stream_key,
        version,
        type_key,
        &id_bytes,
        recorded_at,
        &data,
        &metadata,
    );
    if i64::from(computed) != stored_checksum {
        return Err(ReadError::Corrupt {
            position,
            reason: format!(
                "checksum mismatch (stored {stored_checksum:#x}, computed {computed:#x})"
            ),
        });
    }
    let event_id = Uuid::from_slice(&id_bytes).map_err(|_| ReadError::Corrupt {
        position,
        reason: format!("event id is {} bytes, not 16", id_bytes.len()),
    })?;
    let stream_id = match stream_id {
        Some(id) => id.clone(),
        None => {
            let name: String = row.get(0)?;
            pool.stream_name(conn, stream_key, &name, position)?
        }
    };
    Ok(Event {
        position,
        stream_id,
        version,
        event_type: pool.type_name(conn, type_key, position)?,
        event_id,
        recorded_at,
        data: Bytes::from(data),
        metadata: Bytes::from(metadata),
    })
}

/// Refuses to read a range that lies in a bucket no longer in the live store.
fn check_live(bucket: &BucketInfo) -> Result<(), ReadError> {
    let (first_position, last_position) = (
        bucket.first_position.unwrap_or_default(),
        bucket.last_position.unwrap_or_default(),
    );
    match bucket.state {
        BucketState::Active | BucketState::Sealed => Ok(()),
        BucketState::Archived => Err(ReadError::Archived {
            first_position,
            last_position,
            archive_path: bucket.archive_path.clone().unwrap_or_default(),
        }),
        BucketState::Dropped => Err(ReadError::Dropped {
            first_position,
            last_position,
        }),
    }
}

/// Up to `max_count` events of a stream starting at `from` (inclusive) in `direction`.
pub(crate) fn read_stream(
    conn: &Connection,
    pool: &ReadPool,
    stream_id: &str,
    from: StreamVersion,
    direction: Direction,
    max_count: usize,
) -> Result<Vec<Event>, ReadError> {
    check_page_size(max_count)?;
    let Some((stream_key, info)) = catalog::find_stream(conn, stream_id)? else {
        return Ok(Vec::new());
    };
    let shared_id: Arc<str> = stream_id.into();
    let mut buckets = catalog::stream_buckets(conn, stream_key, info.version)?;
    if direction == Direction::Backwards {
        buckets.reverse();
    }
    let mut events = Vec::new();
    for stream_bucket in buckets {
        let remaining = max_count - events.len();
        if remaining == 0 {
            break;
        }
        let wanted = match direction {
            Direction::Forwards => stream_bucket.last_version >= from,
            Direction::Backwards => stream_bucket.first_version <= from,
        };
        if !wanted {
            continue;
        }
        check_live(&stream_bucket.bucket)?;
        let sql = match direction {
            Direction::Forwards => format!(
                "SELECT NULL, {EVENT_COLUMNS} FROM {} e WHERE e.stream_key = ?1 AND e.version >= ?2 ORDER BY e.version ASC LIMIT ?3",
                stream_bucket.bucket.table_name
            ),
            Direction::Backwards => format!(
                "SELECT NULL, {EVENT_COLUMNS} FROM {} e WHERE e.stream_key = ?1 AND e.version <= ?2 ORDER BY e.version DESC LIMIT ?3",
                stream_bucket.bucket.table_name
            ),
        };
        let mut statement = conn.prepare_cached(&sql)?;
        let mut rows = statement.query(rusqlite::params![
            stream_key,
            to_sql_int(from),
            remaining as i64
        ])?;
        while let Some(row) = rows.next()? {
            events.push(event_from_row(row, pool, conn, Some(&shared_id))?);
        }
    }
    check_stream_versions(&events, from, direction, max_count, info.version)?;
    Ok(events)
}

/// A stream read must return consecutive versions from `from` (clamped to the stream), up to the
/// stream's version (forwards) or 1 (backwards) unless the page is full. The catalog rows that
/// route a stream read (`streams`, `stream_buckets`, `buckets`) are not checksummed; this is
/// what turns a corrupt one into an error instead of a short or gapped answer.
fn check_stream_versions(
    events: &[Event],
    from: StreamVersion,
    direction: Direction,
    max_count: usize,
    stream_version: StreamVersion,
) -> Result<(), ReadError> {
    let (mut expected, end) = match direction {
        Direction::Forwards if from > stream_version => return Ok(()),
        Direction::Forwards => (from.max(1), stream_version),
        Direction::Backwards if from == 0 => return Ok(()),
        Direction::Backwards => (from.min(stream_version), 1),
    };
    for event in events {
        if event.version != expected {
            return Err(ReadError::Corrupt {
                position: event.position,
                reason: format!(
                    "stream read expected version {expected}, found {}",
                    event.version
                ),
            });
        }
        expected = match direction {
            Direction::Forwards => expected + 1,
            Direction::Backwards => expected.saturating_sub(1),
        };
    }
    let reached_end = events.last().is_some_and(|last| last.version == end);
    if events.len() < max_count && !reached_end && stream_version > 0 {
        return Err(ReadError::Corrupt {
            position: events.last().map_or(0, |e| e.position),
            reason: format!(
                "stream read ended at version {:?} of {stream_version} without reaching its end",
                events.last().map(|e| e.version)
            ),
        });
    }
    Ok(())
}

/// Up to `max_count` events from position `from` (inclusive), in position order.
pub(crate) fn read_all(
    conn: &Connection,
    pool: &ReadPool,
    from: Position,
    max_count: usize,
) -> Result<Vec<Event>, ReadError> {
    read_filtered(conn, pool, &EventFilter::all(from), max_count)
}

/// A pushed-down filter for position-ordered reads.
#[derive(Clone, Debug, Default)]
pub(crate) struct EventFilter {
    /// First position wanted.
    pub from: Position,
    /// Only these type keys (`None`: all types).
    pub type_keys: Option<Vec<i64>>,
    /// Only events recorded in `[start, end)`.
    pub time_range: Option<(i64, i64)>,
    /// Only streams whose id starts with this.
    pub stream_prefix: Option<String>,
    /// Only the stream with this key.
    pub stream_key: Option<i64>,
}

impl EventFilter {
    /// Whether every event from `from` on matches: then a read must return consecutive positions.
    pub(crate) fn is_unfiltered(&self) -> bool {
        let EventFilter {
            from: _,
            type_keys,
            time_range,
            stream_prefix,
            stream_key,
        } = self;
        type_keys.is_none()
            && time_range.is_none()
            && stream_prefix.is_none()
            && stream_key.is_none()
    }

    pub(crate) fn all(from: Position) -> Self {
        EventFilter {
            from,
            ..Default::default()
        }
    }
}

/// Up to `max_count` events matching `filter`, in position order.
pub(crate) fn read_filtered(
    conn: &Connection,
    pool: &ReadPool,
    filter: &EventFilter,
    max_count: usize,
) -> Result<Vec<Event>, ReadError> {
    check_page_size(max_count)?;
    if filter
        .type_keys
        .as_ref()
        .is_some_and(|keys| keys.is_empty())
    {
        return Ok(Vec::new());
    }
    let events = read_filtered_unchecked(conn, pool, filter, max_count)?;
    if filter.is_unfiltered() {
        check_positions(conn, &events, filter.from.max(1), max_count)?;
    }
    Ok(events)
}

/// An unfiltered read must return consecutive positions from `from`, up to the head of the log
/// unless the page is full: the bucket catalog that routes it is not checksummed, and a corrupt
/// row must give an error, not a short or gapped answer.
fn check_positions(
    conn: &Connection,
    events: &[Event],
    from: Position,
    max_count: usize,
) -> Result<(), ReadError> {
    for (i, event) in events.iter().enumerate() {
        if event.position != from + i as u64 {
            return Err(ReadError::Corrupt {
                position: event.position,
                reason: format!(
                    "read expected position {}, found {}",
                    from + i as u64,
                    event.position
                ),
            });
        }
    }
    if events.len() < max_count {
        let head: i64 = conn
            .prepare_cached("SELECT last_position FROM head WHERE id = 1")?
            .query_row([], |r| r.get(0))?;
        let last = events.last().map_or(from - 1, |e| e.position);
        if last != (head as u64).max(from - 1) {
            return Err(ReadError::Corrupt {
                position: last + 1,
                reason: format!("read ended at position {last}, but the head of the log is {head}"),
            });
        }
    }
    Ok(())
}

/// The `recorded_at` of the first event at or after `from` in a bucket table: a lower bound for
/// the `(type_key, recorded_at)` index that skips what lies before `from` (recorded_at never
/// decreases with position, so every event at or after `from` is recorded at or after it).
fn recorded_at_floor(conn: &Connection, table: &str, from: Position) -> Result<i64, ReadError> {
    let floor: Option<i64> = conn
        .prepare_cached(&format!(
            "SELECT recorded_at FROM {table} WHERE position >= ?1 ORDER BY position LIMIT 1"
        ))?
        .query_row([to_sql_int(from)], |r| r.get(0))
        .optional()?;
    Ok(floor.unwrap_or(i64::MAX))
}

/// Up to `limit` events of one bucket table matching `filter` from position `from`, in position
/// order. With `by_type = Some((type_key, floor))` the read walks the `(type_key, recorded_at)`
/// index of that one type from `floor`; with a stream filter it walks `(stream_key, version)`
/// (version order is position order within a stream); otherwise it walks positions.
fn read_bucket(
    conn: &Connection,
    pool: &ReadPool,
    table: &str,
    filter: &EventFilter,
    from: Position,
    by_type: Option<(i64, i64)>,
    limit: usize,
) -> Result<Vec<Event>, ReadError> {
    let mut sql = format!(
        "SELECT s.stream_id, {EVENT_COLUMNS} FROM {table} e JOIN streams s ON s.stream_key = e.stream_key WHERE e.position >= ?1"
    );
    let mut values: Vec<rusqlite::types::Value> = vec![to_sql_int(from).into()];
    if let Some((type_key, floor)) = by_type {
        values.push(type_key.into());
        values.push(floor.into());
        sql.push_str(&format!(
            " AND e.type_key = ?{} AND e.recorded_at >= ?{}",
            values.len() - 1,
            values.len()
        ));
    }
    if let Some((start, end)) = filter.time_range {
        values.push(start.into());
        values.push(end.into());
        sql.push_str(&format!(
            " AND e.recorded_at >= ?{} AND e.recorded_at < ?{}",
            values.len() - 1,
            values.len()
        ));
    }
    if let Some(prefix) = &filter.stream_prefix {
        values.push(prefix.clone().into());
        sql.push_str(&format!(
            " AND substr(s.stream_id, 1, length(?{0})) = ?{0}",
            values.len()
        ));
    }
    if let Some(key) = filter.stream_key {
        values.push(key.into());
        sql.push_str(&format!(" AND e.stream_key = ?{}", values.len()));
    }
    let order = if by_type.is_some() {
        "e.type_key, e.recorded_at, e.position"
    } else if filter.stream_key.is_some() {
        "e.stream_key, e.version"
    } else {
        "e.position"
    };
    values.push((limit as i64).into());
    sql.push_str(&format!(" ORDER BY {order} LIMIT ?{}", values.len()));
    let mut statement = conn.prepare_cached(&sql)?;
    let mut rows = statement.query(rusqlite::params_from_iter(values))?;
    let mut events = Vec::new();
    while let Some(row) = rows.next()? {
        events.push(event_from_row(row, pool, conn, None)?);
    }
    Ok(events)
}

fn read_filtered_unchecked(
    conn: &Connection,
    pool: &ReadPool,
    filter: &EventFilter,
    max_count: usize,
) -> Result<Vec<Event>, ReadError> {
    let from = filter.from.max(1);
    let mut events = Vec::new();
    for bucket in catalog::list_buckets(conn)? {
        let remaining = max_count - events.len();
        if remaining == 0 {
            break;
        }
        let Some(last) = bucket.last_position else {
            continue;
        };
        if last < from {
            continue;
        }
        if let Some((start, end)) = filter.time_range {
            if bucket.end_micros <= start || bucket.start_micros >= end {
                continue;
            }
        }
        check_live(&bucket)?;
        match &filter.type_keys {
            // One ordered index range per type, merged here: a single `type_key IN (..)` query
            // ordered by position would read every matching row to the bucket's end and sort it,
            // for every page (quadratic over a catch-up).
            Some(keys) => {
                let floor = recorded_at_floor(conn, &bucket.table_name, from)?;
                let mut merged = Vec::new();
                for key in keys {
                    merged.extend(read_bucket(
                        conn,
                        pool,
                        &bucket.table_name,
                        filter,
                        from,
                        Some((*key, floor)),
                        remaining,
                    )?);
                }
                merged.sort_unstable_by_key(|event| event.position);
                merged.truncate(remaining);
                events.extend(merged);
            }
            None => events.extend(read_bucket(
                conn,
                pool,
                &bucket.table_name,
                filter,
                from,
                None,
                remaining,
            )?),
        }
    }
    Ok(events)
}
