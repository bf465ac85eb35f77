//! The stream index and the event-id index, each kept in three levels.
//!
//! Why levels: SQLite's WAL writes every page a commit dirties, whole. An entry of either index
//! lands on a random page (streams interleave, ids are random), so inserting a batch's entries
//! straight into one large B-tree costs about one 4 KiB page per event. Instead each commit
//! inserts into level 0, a table small enough that a commit touches few of its pages; when
//! level 0 holds `Options::index_merge_entries` entries they are moved, in key order, into
//! level 1, and level 1 in turn into level 2 (the merged index) at `INDEX_LEVEL1_FACTOR` times
//! that. Each page of a larger level is
//! then written once per merge instead of once per commit, the way an LSM tree or FTS5's
//! segments merge runs.
//!
//! Every level is an ordinary SQLite table, so readers see all three in one snapshot, merges are
//! transactions (a crash mid-merge rolls back), and several processes share them: whoever holds
//! the write lock may merge. Lookups consult all three levels; an entry is in exactly one.

use rusqlite::{params, Connection, OptionalExtension};

use crate::event::{Position, StreamVersion};
use crate::reader::Direction;

/// The stream index's tables, newest level first: `(stream_key, version) -> position`.
pub(crate) const STREAM_LEVELS: [&str; 3] = ["stream_index_l0", "stream_index_l1", "stream_index"];
/// The id index's tables, newest level first: `event_id -> (position, stream_key, version)`.
pub(crate) const ID_LEVELS: [&str; 3] = ["event_ids_l0", "event_ids_l1", "event_ids"];

/// Where an event id is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IdEntry {
    pub position: Position,
    pub stream_key: i64,
    pub version: StreamVersion,
}

/// Records a new event id in level 0. A constraint violation when the id is already in level 0
/// (the caller checks the other levels with [`id_in_merged_levels`]).
pub(crate) fn insert_id(
    conn: &Connection,
    event_id: &[u8; 16],
    entry: IdEntry,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO event_ids_l0 (event_id, position, stream_key, version) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        &event_id[..],
        entry.position as i64,
        entry.stream_key,
        entry.version as i64
    ])?;
    Ok(())
}

/// Records a new stream entry in level 0. The writer has checked the stream's version, so a
/// clash here means a corrupt index.
pub(crate) fn insert_stream_entry(conn: &Connection, entry: IdEntry) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO stream_index_l0 (stream_key, version, position) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![
        entry.stream_key,
        entry.version as i64,
        entry.position as i64
    ])?;
    Ok(())
}

/// Where `event_id` is stored, if it is.
pub(crate) fn find_event_id(
    conn: &Connection,
    event_id: &[u8; 16],
) -> rusqlite::Result<Option<IdEntry>> {
    for table in ID_LEVELS {
        let found = conn
            .prepare_cached(&format!(
                "SELECT position, stream_key, version FROM {table} WHERE event_id = ?1"
            ))?
            .query_row([&event_id[..]], |r| {
                Ok(IdEntry {
                    position: r.get::<_, i64>(0)? as u64,
                    stream_key: r.get(1)?,
                    version: r.get::<_, i64>(2)? as u64,
                })
            })
            .optional()?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// Whether `event_id` is stored in a level other than 0 (level 0's primary key catches the
/// rest). One statement for both levels: this runs for every appended event.
pub(crate) fn id_in_merged_levels(
    conn: &Connection,
    event_id: &[u8; 16],
) -> rusqlite::Result<bool> {
    conn.prepare_cached(&format!(
        "SELECT EXISTS (SELECT 1 FROM {} WHERE event_id = ?1) OR EXISTS (SELECT 1 FROM {} WHERE event_id = ?1)",
        ID_LEVELS[1], ID_LEVELS[2]
    ))?
    .query_row([&event_id[..]], |r| r.get(0))
}

/// The last version of a stream and its position: `None` when the stream has no event.
pub(crate) fn stream_head(
    conn: &Connection,
    stream_key: i64,
) -> rusqlite::Result<Option<(StreamVersion, Position)>> {
    let mut head: Option<(StreamVersion, Position)> = None;
    for table in STREAM_LEVELS {
        let found = conn
            .prepare_cached(&format!(
                "SELECT version, position FROM {table} WHERE stream_key = ?1 ORDER BY version DESC LIMIT 1"
            ))?
            .query_row([stream_key], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })
            .optional()?;
        head = head.max(found);
        if found.is_some() {
            // Newer levels hold later versions: level 0's last is the stream's last.
            break;
        }
    }
    Ok(head)
}

/// Up to `limit` `(version, position)` entries of a stream from version `from` (inclusive) in
/// `direction`, merged across the levels.
pub(crate) fn stream_entries(
    conn: &Connection,
    stream_key: i64,
    from: StreamVersion,
    direction: Direction,
    limit: usize,
) -> rusqlite::Result<Vec<(StreamVersion, Position)>> {
    let (comparison, order) = match direction {
        Direction::Forwards => (">=", "ASC"),
        Direction::Backwards => ("<=", "DESC"),
    };
    let from = i64::try_from(from).unwrap_or(i64::MAX);
    let mut entries = Vec::new();
    for table in STREAM_LEVELS {
        let mut statement = conn.prepare_cached(&format!(
            "SELECT version, position FROM {table}
             WHERE stream_key = ?1 AND version {comparison} ?2 ORDER BY version {order} LIMIT ?3"
        ))?;
        let rows = statement.query_map(params![stream_key, from, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })?;
        for row in rows {
            entries.push(row?);
        }
    }
    match direction {
        Direction::Forwards => entries.sort_unstable(),
        Direction::Backwards => entries.sort_unstable_by(|a, b| b.cmp(a)),
    }
    entries.truncate(limit);
    Ok(entries)
}

/// Up to `limit` entries of a stream at or after position `from`, in position order.
pub(crate) fn stream_entries_from_position(
    conn: &Connection,
    stream_key: i64,
    from: Position,
    limit: usize,
) -> rusqlite::Result<Vec<(StreamVersion, Position)>> {
    let from = i64::try_from(from).unwrap_or(i64::MAX);
    let mut entries = Vec::new();
    for table in STREAM_LEVELS {
        // Positions grow with versions: the first version at or after `from` starts the range.
        let mut statement = conn.prepare_cached(&format!(
            "SELECT version, position FROM {table}
             WHERE stream_key = ?1 AND version >= coalesce(
                 (SELECT min(version) FROM {table} WHERE stream_key = ?1 AND position >= ?2), 9223372036854775807)
             ORDER BY version LIMIT ?3"
        ))?;
        let rows = statement.query_map(params![stream_key, from, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })?;
        for row in rows {
            entries.push(row?);
        }
    }
    entries.sort_unstable();
    entries.truncate(limit);
    Ok(entries)
}

/// Entries in a level table.
pub(crate) fn count(conn: &Connection, table: &str) -> rusqlite::Result<u64> {
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
        r.get::<_, i64>(0).map(|n| n as u64)
    })
}

/// Moves level 0 into level 1, and level 1 into level 2 once it holds `level1_entries`, inside
/// the caller's write transaction. Returns the number of entries moved out of level 0.
pub(crate) fn merge(conn: &Connection, level1_entries: u64) -> rusqlite::Result<u64> {
    let moved = count(conn, STREAM_LEVELS[0])?;
    move_level(conn, 0)?;
    if count(conn, STREAM_LEVELS[1])? >= level1_entries {
        move_level(conn, 1)?;
    }
    Ok(moved)
}

/// Moves every entry of level `from` into level `from + 1`, in key order.
fn move_level(conn: &Connection, from: usize) -> rusqlite::Result<()> {
    let (stream_from, stream_to) = (STREAM_LEVELS[from], STREAM_LEVELS[from + 1]);
    let (id_from, id_to) = (ID_LEVELS[from], ID_LEVELS[from + 1]);
    conn.execute_batch(&format!(
        "INSERT INTO {stream_to} (stream_key, version, position)
             SELECT stream_key, version, position FROM {stream_from} ORDER BY stream_key, version;
         DELETE FROM {stream_from};
         INSERT INTO {id_to} (event_id, position, stream_key, version)
             SELECT event_id, position, stream_key, version FROM {id_from} ORDER BY event_id;
         DELETE FROM {id_from};"
    ))
}
