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

/// A stream's row in the `streams` table.
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

/// The stream's key and info, if it exists.
pub(crate) fn find_stream(
    conn: &Connection,
    stream_id: &str,
) -> rusqlite::Result<Option<(i64, StreamInfo)>> {
    // The name is found through the unique index; the subquery reads it back from the table row
    // the index points at (by rowid, so not from the index). They differ only in a corrupt file,
    // where trusting the index would read, or append to, another stream.
    let found = conn
        .prepare_cached(
            "SELECT s.stream_key, s.version, s.first_position, s.last_position,
                    (SELECT t.stream_id FROM streams t WHERE t.stream_key = s.stream_key)
             FROM streams s WHERE s.stream_id = ?1",
        )?
        .query_row([stream_id], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                StreamInfo {
                    stream_id: stream_id.to_owned(),
                    version: row.get::<_, i64>(1)? as u64,
                    first_position: row.get::<_, i64>(2)? as u64,
                    last_position: row.get::<_, i64>(3)? as u64,
                },
                row.get::<_, Option<String>>(4)?,
            ))
        })
        .optional()?;
    match found {
        None => Ok(None),
        Some((key, info, Some(name))) if name == stream_id => Ok(Some((key, info))),
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

/// One bucket that holds events of a stream, with the versions it holds.
#[derive(Clone, Debug)]
pub(crate) struct StreamBucket {
    pub bucket: BucketInfo,
    pub first_version: StreamVersion,
    /// Last version in this bucket (the next bucket's first version - 1, or the stream's version).
    pub last_version: StreamVersion,
}

/// The buckets holding events of stream `stream_key`, oldest first.
pub(crate) fn stream_buckets(
    conn: &Connection,
    stream_key: i64,
    stream_version: StreamVersion,
) -> rusqlite::Result<Vec<StreamBucket>> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT sb.first_version, {} FROM stream_buckets sb JOIN buckets b ON b.id = sb.bucket_id
         WHERE sb.stream_key = ?1 ORDER BY sb.bucket_id",
        BUCKET_COLUMNS
            .split(", ")
            .map(|c| format!("b.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))?;
    let rows: Vec<(StreamVersion, BucketInfo)> = statement
        .query_map([stream_key], |row| {
            Ok((row.get::<_, i64>(0)? as u64, bucket_from_row_at(row, 1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut result = Vec::with_capacity(rows.len());
    for (index, (first_version, bucket)) in rows.iter().enumerate() {
        let last_version = match rows.get(index + 1) {
            Some((next_first, _)) => next_first - 1,
            None => stream_version,
        };
        result.push(StreamBucket {
            bucket: bucket.clone(),
            first_version: *first_version,
            last_version,
        });
    }
    Ok(result)
}
