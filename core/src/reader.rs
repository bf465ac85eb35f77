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
use crate::index;
use crate::options::{limits, Options};
use crate::tags;

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

    /// The name of stream `stream_key`: the cached (checked) name, else read from `streams`
    /// and checked as [`ReadPool::stream_name`] does. Position reads take names from here
    /// instead of joining `streams` for every row.
    fn stream_name_of_key(
        &self,
        conn: &Connection,
        stream_key: i64,
        position: Position,
    ) -> Result<Arc<str>, ReadError> {
        if let Some(cached) = self.stream_names.read().get(&stream_key) {
            return Ok(cached.clone());
        }
        let name: Option<String> = conn
            .prepare_cached("SELECT stream_id FROM streams WHERE stream_key = ?1")?
            .query_row([stream_key], |r| r.get(0))
            .optional()?;
        let name = name.ok_or_else(|| ReadError::Corrupt {
            position,
            reason: format!("unknown stream key {stream_key}"),
        })?;
        self.stream_name(conn, stream_key, &name, position)
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
pub(crate) const EVENT_COLUMNS: &str = "e.position, e.stream_key, e.version, e.type_key, e.event_id, e.recorded_at, e.data, e.metadata, e.checksum, e.tags";

/// Turns a row (`stream_id` or NULL, then `EVENT_COLUMNS`) into an event, verifying its
/// checksum. The stream's name is `stream_id` when given, else the row's first column when it
/// is not NULL, else the pool's cached (checked) name of the row's stream key.
pub(crate) fn event_from_row(
    row: &Row<'_>,
    pool: &ReadPool,
    conn: &Connection,
    stream_id: Option<&Arc<str>>,
) -> Result<Event, ReadError> {
    let position = row.get::<_, i64>(1)? as u64;
    let stream_key: i64 = row.get(2)?;
    let version = row.get::<_, i64>(3)? as u64;
    let type_key: i64 = row.get(4)?;
    let id_bytes = blob(row, 5)?;
    let recorded_at: i64 = row.get(6)?;
    let data = blob(row, 7)?;
    let metadata = blob(row, 8)?;
    let stored_checksum: i64 = row.get(9)?;
    let tag_bytes: Option<Vec<u8>> = row.get(10)?;
    let computed = event_checksum(
        position,
        stream_key,
        version,
        type_key,
        id_bytes,
        recorded_at,
        data,
        metadata,
        tag_bytes.as_deref().unwrap_or_default(),
    );
    if i64::from(computed) != stored_checksum {
        return Err(ReadError::Corrupt {
            position,
            reason: format!(
                "checksum mismatch (stored {stored_checksum:#x}, computed {computed:#x})"
            ),
        });
    }
    let event_id = Uuid::from_slice(id_bytes).map_err(|_| ReadError::Corrupt {
        position,
        reason: format!("event id is {} bytes, not 16", id_bytes.len()),
    })?;
    let (data, metadata) = (
        Bytes::copy_from_slice(data),
        Bytes::copy_from_slice(metadata),
    );
    let stream_id = match stream_id {
        Some(id) => id.clone(),
        None => match row.get::<_, Option<String>>(0)? {
            Some(name) => pool.stream_name(conn, stream_key, &name, position)?,
            None => pool.stream_name_of_key(conn, stream_key, position)?,
        },
    };
    Ok(Event {
        position,
        stream_id,
        version,
        event_type: pool.type_name(conn, type_key, position)?,
        event_id,
        recorded_at,
        data,
        metadata,
        tags: tags::decode(tag_bytes.as_deref())
            .map_err(|reason| ReadError::Corrupt { position, reason })?,
    })
}

/// Column `index` of `row` as a borrowed blob (no copy until the event is built).
fn blob<'r>(row: &'r Row<'_>, index: usize) -> rusqlite::Result<&'r [u8]> {
    let value = row.get_ref(index)?;
    value.as_blob().map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(index, value.data_type(), Box::new(error))
    })
}

/// Refuses to read a range that lies in a bucket no longer in the live store.
pub(crate) fn check_live(bucket: &BucketInfo) -> Result<(), ReadError> {
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
    let entries = index::stream_entries(conn, stream_key, from, direction, max_count)?;
    let events = events_at(conn, pool, stream_key, &entries, &shared_id)?;
    check_stream_versions(&events, from, direction, max_count, info.version)?;
    Ok(events)
}

/// The events at the positions of `entries` (a stream's `(version, position)` index entries),
/// fetched from the buckets that hold them by primary key, up to [`POSITIONS_PER_QUERY`] per
/// query (`position IN (...)`: one statement step per row instead of one statement per
/// position), and each checked to be the stream's event at that version: the index is not
/// checksummed, the event row is.
fn events_at(
    conn: &Connection,
    pool: &ReadPool,
    stream_key: i64,
    entries: &[(StreamVersion, Position)],
    stream_id: &Arc<str>,
) -> Result<Vec<Event>, ReadError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let buckets = catalog::list_buckets(conn)?;
    let mut events = Vec::with_capacity(entries.len());
    let mut rest = entries;
    while let Some(&(_, position)) = rest.first() {
        let bucket = bucket_holding(&buckets, position).ok_or_else(|| ReadError::Corrupt {
            position,
            reason: format!(
                "the stream index points at position {position}, which no bucket holds"
            ),
        })?;
        check_live(bucket)?;
        let in_bucket = rest
            .iter()
            .take(POSITIONS_PER_QUERY)
            .take_while(|(_, p)| bucket.overlaps_positions(*p, *p))
            .count();
        let (chunk, tail) = rest.split_at(in_bucket);
        events_in_bucket(
            conn,
            pool,
            &bucket.table_name,
            stream_key,
            chunk,
            stream_id,
            &mut events,
        )?;
        rest = tail;
    }
    Ok(events)
}

/// Most positions one stream-read query fetches.
const POSITIONS_PER_QUERY: usize = 64;

/// The events at `chunk`'s positions, all in `table`, appended to `events` in `chunk`'s order.
fn events_in_bucket(
    conn: &Connection,
    pool: &ReadPool,
    table: &str,
    stream_key: i64,
    chunk: &[(StreamVersion, Position)],
    stream_id: &Arc<str>,
    events: &mut Vec<Event>,
) -> Result<(), ReadError> {
    // Two statement shapes only (short and full chunks), padded by repeating the last position
    // (`IN` ignores duplicates), so that the statement cache holds them both.
    let slots = if chunk.len() <= 8 {
        8
    } else {
        POSITIONS_PER_QUERY
    };
    let placeholders: Vec<String> = (1..=slots).map(|i| format!("?{i}")).collect();
    let mut statement = conn.prepare_cached(&format!(
        "SELECT NULL, {EVENT_COLUMNS} FROM {table} e WHERE e.position IN ({}) ORDER BY e.position",
        placeholders.join(", ")
    ))?;
    let mut wanted: Vec<(StreamVersion, Position)> = chunk.to_vec();
    wanted.sort_unstable_by_key(|&(_, position)| position);
    let last = wanted.last().expect("a chunk is never empty").1;
    let values = (0..slots).map(|i| to_sql_int(wanted.get(i).map_or(last, |e| e.1)));
    let mut rows = statement.query(rusqlite::params_from_iter(values))?;
    let start = events.len();
    for &(version, position) in &wanted {
        let row = rows.next()?;
        let row = match row {
            Some(row) if row.get::<_, i64>(1)? as u64 == position => row,
            _ => {
                return Err(ReadError::Corrupt {
                    position,
                    reason: format!(
                        "the stream index points at position {position}, which is not stored"
                    ),
                })
            }
        };
        let found_key: i64 = row.get(2)?;
        let event = event_from_row(row, pool, conn, Some(stream_id))?;
        if found_key != stream_key || event.version != version {
            return Err(ReadError::Corrupt {
                position,
                reason: format!(
                    "the stream index says version {version} of stream key {stream_key} is at position {position}, which holds version {} of stream key {found_key}",
                    event.version
                ),
            });
        }
        events.push(event);
    }
    if chunk.first().map(|e| e.1) != wanted.first().map(|e| e.1) {
        // `chunk` runs backwards: so must its events.
        events[start..].reverse();
    }
    Ok(())
}

/// The bucket whose position range holds `position`.
pub(crate) fn bucket_holding(buckets: &[BucketInfo], position: Position) -> Option<&BucketInfo> {
    buckets
        .iter()
        .rev()
        .find(|bucket| bucket.overlaps_positions(position, position))
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

/// Up to `max_count` events of stream `stream_key` matching `filter`, in position order, found
/// through the stream index rather than by walking buckets.
fn read_one_stream_filtered(
    conn: &Connection,
    pool: &ReadPool,
    filter: &EventFilter,
    stream_key: i64,
    max_count: usize,
) -> Result<Vec<Event>, ReadError> {
    let name: Option<String> = conn
        .prepare_cached("SELECT stream_id FROM streams WHERE stream_key = ?1")?
        .query_row([stream_key], |r| r.get(0))
        .optional()?;
    let Some(name) = name else {
        return Ok(Vec::new());
    };
    let stream_id = pool.stream_name(conn, stream_key, &name, filter.from)?;
    let wanted_types = match &filter.type_keys {
        Some(keys) => Some(
            keys.iter()
                .map(|key| pool.type_name(conn, *key, filter.from))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    let matches = |event: &Event| {
        wanted_types
            .as_ref()
            .is_none_or(|types| types.contains(&event.event_type))
            && filter
                .time_range
                .is_none_or(|(start, end)| start <= event.recorded_at && event.recorded_at < end)
            && filter
                .stream_prefix
                .as_ref()
                .is_none_or(|prefix| event.stream_id.starts_with(prefix.as_str()))
    };
    let mut from = filter.from.max(1);
    let mut events = Vec::new();
    loop {
        let entries = index::stream_entries_from_position(conn, stream_key, from, max_count)?;
        let Some(&(_, last)) = entries.last() else {
            return Ok(events);
        };
        for event in events_at(conn, pool, stream_key, &entries, &stream_id)? {
            if matches(&event) {
                events.push(event);
                if events.len() == max_count {
                    return Ok(events);
                }
            }
        }
        from = last + 1;
    }
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
/// index of that one type from `floor`; otherwise it walks positions.
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
    debug_assert!(
        filter.stream_key.is_none(),
        "stream reads go through the index"
    );
    let order = if by_type.is_some() {
        "e.type_key, e.recorded_at, e.position"
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
    if let Some(stream_key) = filter.stream_key {
        return read_one_stream_filtered(conn, pool, filter, stream_key, max_count);
    }
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
        let table = &bucket.table_name;
        match (&filter.type_keys, &filter.stream_prefix) {
            // A prefix needs each row's stream name in SQL: the joined reads.
            (Some(keys), Some(_)) => {
                let floor = recorded_at_floor(conn, table, from)?;
                let mut merged = Vec::new();
                for key in keys {
                    merged.extend(read_bucket(
                        conn,
                        pool,
                        table,
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
            (None, Some(_)) => {
                events.extend(read_bucket(
                    conn, pool, table, filter, from, None, remaining,
                )?);
            }
            (Some(keys), None) => {
                let positions = type_positions(conn, table, filter, from, keys, remaining)?;
                events.extend(rows_at_positions(
                    conn, pool, table, filter, keys, &positions,
                )?);
            }
            (None, None) => {
                events.extend(read_bucket_positions(
                    conn, pool, table, filter, from, remaining,
                )?);
            }
        }
    }
    Ok(events)
}

/// The time constraints of `filter` as SQL on `e.recorded_at`, numbered from `?{first}`.
fn time_sql(
    filter: &EventFilter,
    first: usize,
    values: &mut Vec<rusqlite::types::Value>,
) -> String {
    match filter.time_range {
        Some((start, end)) => {
            values.push(start.into());
            values.push(end.into());
            format!(
                " AND e.recorded_at >= ?{first} AND e.recorded_at < ?{}",
                first + 1
            )
        }
        None => String::new(),
    }
}

/// Up to `limit` events of one bucket table from position `from`, every type, in position
/// order. Stream names come from the pool's cache of checked names, not from a join.
fn read_bucket_positions(
    conn: &Connection,
    pool: &ReadPool,
    table: &str,
    filter: &EventFilter,
    from: Position,
    limit: usize,
) -> Result<Vec<Event>, ReadError> {
    let mut values: Vec<rusqlite::types::Value> = vec![to_sql_int(from).into()];
    let time = time_sql(filter, 2, &mut values);
    values.push((limit as i64).into());
    let sql = format!(
        "SELECT NULL, {EVENT_COLUMNS} FROM {table} e WHERE e.position >= ?1{time} ORDER BY e.position LIMIT ?{}",
        values.len()
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let mut rows = statement.query(rusqlite::params_from_iter(values))?;
    let mut events = Vec::with_capacity(limit.min(limits::MAX_PAGE_SIZE));
    while let Some(row) = rows.next()? {
        events.push(event_from_row(row, pool, conn, None)?);
    }
    Ok(events)
}

/// The first `limit` positions from `from` of events whose type is one of `type_keys` (and in
/// the filter's time range), in position order, read from the `(type_key, recorded_at)` index
/// alone: one ordered range per type, merged. Only the positions kept are then read as rows,
/// so a batch over several types reads no row it throws away.
fn type_positions(
    conn: &Connection,
    table: &str,
    filter: &EventFilter,
    from: Position,
    type_keys: &[i64],
    limit: usize,
) -> Result<Vec<Position>, ReadError> {
    let floor = recorded_at_floor(conn, table, from)?;
    let mut values: Vec<rusqlite::types::Value> =
        vec![0i64.into(), floor.into(), to_sql_int(from).into()];
    let time = time_sql(filter, 4, &mut values);
    values.push((limit as i64).into());
    let sql = format!(
        "SELECT e.position FROM {table} e WHERE e.type_key = ?1 AND e.recorded_at >= ?2 AND e.position >= ?3{time}
         ORDER BY e.type_key, e.recorded_at, e.position LIMIT ?{}",
        values.len()
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let mut positions = Vec::new();
    for &type_key in type_keys {
        values[0] = type_key.into();
        let mut rows = statement.query(rusqlite::params_from_iter(values.iter()))?;
        while let Some(row) = rows.next()? {
            positions.push(row.get::<_, i64>(0)? as Position);
        }
    }
    positions.sort_unstable();
    positions.truncate(limit);
    Ok(positions)
}

/// The events at `positions` (ascending, from [`type_positions`]). When they are dense in
/// their range, one scan of the range filtered by type (sequential pages); when sparse, one
/// primary-key lookup each. Either way the rows must be exactly those positions, of those
/// types: the type index is not checksummed, the rows are.
fn rows_at_positions(
    conn: &Connection,
    pool: &ReadPool,
    table: &str,
    filter: &EventFilter,
    type_keys: &[i64],
    positions: &[Position],
) -> Result<Vec<Event>, ReadError> {
    let (Some(&first), Some(&last)) = (positions.first(), positions.last()) else {
        return Ok(Vec::new());
    };
    let mut events = Vec::with_capacity(positions.len());
    let dense = positions.len() as u64 * DENSE_RANGE_FACTOR > last - first;
    if dense {
        // Type keys are integers from `event_types`, never user input.
        let keys: Vec<String> = type_keys.iter().map(i64::to_string).collect();
        let mut values: Vec<rusqlite::types::Value> =
            vec![to_sql_int(first).into(), to_sql_int(last).into()];
        let time = time_sql(filter, 3, &mut values);
        let sql = format!(
            "SELECT NULL, {EVENT_COLUMNS} FROM {table} e WHERE e.position >= ?1 AND e.position <= ?2
             AND e.type_key IN ({}){time} ORDER BY e.position",
            keys.join(", ")
        );
        let mut statement = conn.prepare_cached(&sql)?;
        let mut rows = statement.query(rusqlite::params_from_iter(values))?;
        while let Some(row) = rows.next()? {
            let event = event_from_row(row, pool, conn, None)?;
            if positions.get(events.len()) != Some(&event.position) {
                return Err(index_disagrees(event.position));
            }
            events.push(event);
        }
        if events.len() != positions.len() {
            return Err(index_disagrees(positions[events.len()]));
        }
    } else {
        let mut statement = conn.prepare_cached(&format!(
            "SELECT NULL, {EVENT_COLUMNS} FROM {table} e WHERE e.position = ?1"
        ))?;
        for &position in positions {
            let mut rows = statement.query([to_sql_int(position)])?;
            let row = rows.next()?.ok_or_else(|| index_disagrees(position))?;
            let type_key: i64 = row.get(4)?;
            if !type_keys.contains(&type_key) {
                return Err(index_disagrees(position));
            }
            events.push(event_from_row(row, pool, conn, None)?);
        }
    }
    Ok(events)
}

/// Positions read from a type index are read as rows by one range scan when they make up at
/// least 1 / this of their range.
const DENSE_RANGE_FACTOR: u64 = 8;

fn index_disagrees(position: Position) -> ReadError {
    ReadError::Corrupt {
        position,
        reason: "the bucket's type index and its rows disagree about this position".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::clock::ManualClock;
    use crate::event::{ExpectedVersion, NewEvent};
    use crate::options::{Durability, Options};
    use crate::store::Store;

    /// 600 events over 30 streams, one minute apart, crossing a month (two buckets): `rare`
    /// every 50th, `often` every 3rd, `other` the rest.
    fn mixed_store() -> Store {
        let clock = Arc::new(ManualClock::new(1_706_731_200_000_000)); // 2024-01-31 20:00 UTC
        let store = Store::open_in_memory(Options {
            durability: Durability::Fast,
            clock: clock.clone(),
            ..Options::default()
        })
        .unwrap();
        for n in 0..600u32 {
            let event_type = match n {
                n if n % 50 == 0 => "rare",
                n if n % 3 == 0 => "often",
                _ => "other",
            };
            store
                .append(
                    &format!("s-{}", n % 30),
                    ExpectedVersion::Any,
                    vec![NewEvent::new(event_type, n.to_le_bytes().to_vec())],
                )
                .unwrap();
            clock.advance(60_000_000);
        }
        assert!(store.buckets().unwrap().len() >= 2);
        store
    }

    #[test]
    fn type_reads_equal_position_reads_filtered_whatever_the_density_and_page() {
        let store = mixed_store();
        let all = store.read_all(1, 1_000).unwrap();
        assert_eq!(all.len(), 600);
        let cases: [&[&str]; 4] = [
            &["rare"],
            &["often"],
            &["rare", "often"],
            &["other", "rare"],
        ];
        let windows = [0..i64::MAX, all[100].recorded_at..all[450].recorded_at];
        for types in cases {
            for window in &windows {
                let expected: Vec<u64> = all
                    .iter()
                    .filter(|e| types.contains(&&*e.event_type) && window.contains(&e.recorded_at))
                    .map(|e| e.position)
                    .collect();
                for page in [1, 7, 1_000] {
                    let mut got = Vec::new();
                    let mut from = 1;
                    loop {
                        let events = store
                            .read_by_type(types, window.clone(), from, page)
                            .unwrap();
                        for event in &events {
                            let original = &all[event.position as usize - 1];
                            assert_eq!(event, original, "same event as read by position");
                        }
                        got.extend(events.iter().map(|e| e.position));
                        match events.last() {
                            Some(last) if events.len() == page => from = last.position + 1,
                            _ => break,
                        }
                    }
                    assert_eq!(got, expected, "{types:?} {window:?} pages of {page}");
                }
            }
        }
    }

    #[test]
    fn position_reads_name_every_stream_without_a_join() {
        let store = mixed_store();
        for event in store.read_all(1, 1_000).unwrap() {
            let n = u32::from_le_bytes(event.data[..4].try_into().unwrap());
            assert_eq!(&*event.stream_id, format!("s-{}", n % 30));
        }
    }
}
