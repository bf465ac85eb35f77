//! The bucket catalog and the per-stream bookkeeping, as rows and as Rust values.

use rusqlite::{Connection, OptionalExtension, Row};

use crate::event::{Position, StreamVersion};

/// The life cycle of a bucket table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BucketState {
    /// The bucket appends go to (at most one).
    Active,
    /// Closed to appends: its time range has passed, or it was sealed by hand.
    Sealed,
    /// Moved to its own SQLite file (`archive_path`); no longer in the live store.
    Archived,
    /// Deleted by retention.
    Dropped,
}

impl BucketState {
    /// The name stored in the catalog.
    pub fn as_str(self) -> &'static str {
        match self {
            BucketState::Active => "active",
            BucketState::Sealed => "sealed",
            BucketState::Archived => "archived",
            BucketState::Dropped => "dropped",
        }
    }

    fn parse(name: &str) -> Option<BucketState> {
        match name {
            "active" => Some(BucketState::Active),
            "sealed" => Some(BucketState::Sealed),
            "archived" => Some(BucketState::Archived),
            "dropped" => Some(BucketState::Dropped),
            _ => None,
        }
    }

    /// Whether the bucket's events are in the live store.
    pub fn is_live(self) -> bool {
        matches!(self, BucketState::Active | BucketState::Sealed)
    }
}

/// One row of the bucket catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketInfo {
    /// Bucket id, increasing with time.
    pub id: i64,
    /// The table holding its events (`events_<id>`).
    pub table_name: String,
    /// Start of its time range, unix microseconds (inclusive).
    pub start_micros: i64,
    /// End of its time range, unix microseconds (exclusive).
    pub end_micros: i64,
    /// First position stored in it (`None` while empty).
    pub first_position: Option<Position>,
    /// Last position stored in it (`None` while empty).
    pub last_position: Option<Position>,
    /// Number of events in it.
    pub event_count: u64,
    /// Where it is in its life cycle.
    pub state: BucketState,
    /// For an archived bucket, the file that holds it.
    pub archive_path: Option<String>,
}

impl BucketInfo {
    /// Whether the bucket holds any position in `first..=last`.
    pub fn overlaps_positions(&self, first: Position, last: Position) -> bool {
        match (self.first_position, self.last_position) {
            (Some(lo), Some(hi)) => lo <= last && first <= hi,
            _ => false,
        }
    }
}

pub(crate) const BUCKET_COLUMNS: &str =
    "id, table_name, start_micros, end_micros, first_position, last_position, event_count, state, archive_path";

pub(crate) fn bucket_from_row(row: &Row<'_>) -> rusqlite::Result<BucketInfo> {
    bucket_from_row_at(row, 0)
}

/// Reads the `BUCKET_COLUMNS` that start at column `at`.
fn bucket_from_row_at(row: &Row<'_>, at: usize) -> rusqlite::Result<BucketInfo> {
    let state: String = row.get(at + 7)?;
    let state = BucketState::parse(&state).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            at + 7,
            rusqlite::types::Type::Text,
            format!("unknown bucket state {state:?}").into(),
        )
    })?;
    Ok(BucketInfo {
        id: row.get(at)?,
        table_name: row.get(at + 1)?,
        start_micros: row.get(at + 2)?,
        end_micros: row.get(at + 3)?,
        first_position: row.get::<_, Option<i64>>(at + 4)?.map(|p| p as u64),
        last_position: row.get::<_, Option<i64>>(at + 5)?.map(|p| p as u64),
        event_count: row.get::<_, i64>(at + 6)? as u64,
        state,
        archive_path: row.get(at + 8)?,
    })
}

/// Every bucket, oldest first.
pub(crate) fn list_buckets(conn: &Connection) -> rusqlite::Result<Vec<BucketInfo>> {
    let mut statement =
        conn.prepare_cached(&format!("SELECT {BUCKET_COLUMNS} FROM buckets ORDER BY id"))?;
    let rows = statement.query_map([], bucket_from_row)?;
    rows.collect()
}

/// A stream's id, current version and where its events start and end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// The stream's id.
    pub stream_id: String,
    /// Its current version: the version of its last event.
    pub version: StreamVersion,
    /// Position of its first event.
    pub first_position: Position,
    /// Position of its last event.
    pub last_position: Position,
}

/// The stream's key and info, if it exists. The version and last position come from the stream
/// index (the `streams` row is written once, when the stream is created).
pub(crate) fn find_stream(
    conn: &Connection,
    stream_id: &str,
) -> rusqlite::Result<Option<(i64, StreamInfo)>> {
    // The name is found through the unique index; the subquery reads it back from the table row
    // the index points at (by rowid, so not from the index). They differ only in a corrupt file,
    // where trusting the index would read, or append to, another stream.
    let found = conn
        .prepare_cached(
            "SELECT s.stream_key, s.first_position,
                    (SELECT t.stream_id FROM streams t WHERE t.stream_key = s.stream_key)
             FROM streams s WHERE s.stream_id = ?1",
        )?
        .query_row([stream_id], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)? as u64,
                row.get::<_, Option<String>>(2)?,
            ))
        })
        .optional()?;
    match found {
        None => Ok(None),
        Some((key, first_position, Some(name))) if name == stream_id => {
            // A stream is created with its first event: a stream without index entries is a
            // damaged index, not an empty stream.
            let (version, last_position) = crate::index::stream_head(conn, key)?
                .ok_or_else(|| corrupt(format!("stream {stream_id:?} has no stream index entries")))?;
            Ok(Some((
                key,
                StreamInfo {
                    stream_id: stream_id.to_owned(),
                    version,
                    first_position,
                    last_position,
                },
            )))
        }
        Some((key, _, name)) => Err(corrupt(format!(
            "streams: the index entry for {stream_id:?} points at stream key {key}, whose row names {name:?}"
        ))),
    }
}

/// An SQLITE_CORRUPT error for an inconsistency strata found itself (SQLite's own checks do not
/// compare an index with its table on every lookup).
pub(crate) fn corrupt(message: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
        Some(message),
    )
}
