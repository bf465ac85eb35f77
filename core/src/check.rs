//! `Store::check`: SQLite's own integrity check plus strata's invariants.
//!
//! What is verified, on one read snapshot:
//!
//! - `PRAGMA integrity_check` (pages, indexes, constraints);
//! - the catalog: at most one active bucket; live buckets have their table, archived and
//!   dropped ones do not (and an archive's file exists); no stray `events_<n>` table; bucket
//!   position ranges follow each other without gap or overlap, up to the head of the log; each
//!   bucket's count, first and last position match its rows;
//! - every event row of the live buckets: its checksum, a 16-byte event id, a known event type
//!   and stream, `recorded_at` inside its bucket's time range and never decreasing with
//!   position;
//! - streams: versions contiguous across live buckets (starting at 1 when no bucket before
//!   them was archived or dropped), the stream index's last version and position equal to the
//!   last event's, and each live event's stream index entry pointing at it;
//! - event ids: each live event has its id index entry (same position, stream and version);
//! - both indexes (all their levels together) hold one entry per position of the log (those of
//!   archived and dropped events stay);
//! - the tag index: one entry (with the event's type) per tag of each live event, no other
//!   entry for a live position, none past the log.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};

use crate::catalog::{self, BucketInfo, BucketState};
use crate::checksum::event_checksum;
use crate::error::ReadError;
use crate::event::Position;
use crate::index;
use crate::reader::Direction;
use crate::store::Store;

/// Most problems a report lists; past this only the count goes on.
pub const MAX_REPORTED_PROBLEMS: usize = 1_000;

/// One thing found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Which family of invariant it breaks.
    pub kind: ProblemKind,
    /// What exactly, with positions, ids and values.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.kind.as_str(), self.message)
    }
}

/// Families of problems.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ProblemKind {
    /// Reported by SQLite's `integrity_check`.
    Sqlite,
    /// The bucket catalog disagrees with the tables or with itself.
    Catalog,
    /// Positions have a gap or an overlap.
    Positions,
    /// An event row is damaged (checksum, id, unknown key, time).
    Event,
    /// A stream's versions or bookkeeping are wrong.
    Stream,
    /// The `event_ids` table disagrees with the events.
    EventIds,
    /// The tag index disagrees with the events' tags.
    Tags,
}

impl ProblemKind {
    /// Short name, as shown in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Sqlite => "sqlite",
            ProblemKind::Catalog => "catalog",
            ProblemKind::Positions => "positions",
            ProblemKind::Event => "event",
            ProblemKind::Stream => "stream",
            ProblemKind::EventIds => "event-ids",
            ProblemKind::Tags => "tags",
        }
    }
}

/// The result of [`Store::check`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Problems found (at most [`MAX_REPORTED_PROBLEMS`]).
    pub problems: Vec<Problem>,
    /// Problems found in all, listed or not.
    pub problem_count: u64,
    /// Buckets in the catalog.
    pub buckets: u64,
    /// Event rows read and verified (in live buckets).
    pub events_checked: u64,
    /// Streams checked.
    pub streams: u64,
    /// Last position of the log.
    pub last_position: Position,
    /// Leftovers of interrupted maintenance (temporary `*.strata-partial` files and their
    /// journals) beside the store or its archives: not damage, but files a rerun of the
    /// command replaces, or that can be deleted.
    pub stray_files: Vec<PathBuf>,
}

impl CheckReport {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problem_count == 0
    }

    fn add(&mut self, kind: ProblemKind, message: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_REPORTED_PROBLEMS {
            self.problems.push(Problem { kind, message });
        }
    }
}

/// What is known of a stream while walking the events.
#[derive(Default)]
struct StreamWalk {
    last_version: u64,
    last_position: Position,
    /// The bucket of its last event seen.
    last_bucket: i64,
}

impl Store {
    /// Verifies the whole store (see the module documentation) on one read snapshot, and
    /// reports every problem found. Reads every event of the live buckets: the time it takes
    /// grows with the store.
    pub fn check(&self) -> Result<CheckReport, ReadError> {
        let mut conn = self.readers().get()?;
        let tx = conn.transaction()?;
        let mut report = check_snapshot(&tx)?;
        tx.finish()?;
        report.stray_files = self.stray_files()?;
        Ok(report)
    }

    /// Temporary files of interrupted maintenance ([`crate::maintenance::PARTIAL_SUFFIX`], and
    /// their `-journal`) in the store's directory and in the directories of its archives,
    /// sorted. Empty for an in-memory store.
    pub fn stray_files(&self) -> Result<Vec<PathBuf>, ReadError> {
        let Some(store) = self.path() else {
            return Ok(Vec::new());
        };
        let mut dirs = std::collections::BTreeSet::new();
        if let Some(dir) = store.parent() {
            dirs.insert(if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir.to_path_buf()
            });
        }
        let conn = self.readers().get()?;
        let mut archives =
            conn.prepare("SELECT archive_path FROM buckets WHERE archive_path IS NOT NULL")?;
        let paths = archives.query_map([], |r| r.get::<_, String>(0))?;
        for path in paths {
            if let Some(dir) = Path::new(&path?).parent() {
                dirs.insert(dir.to_path_buf());
            }
        }
        let suffix = crate::maintenance::PARTIAL_SUFFIX;
        let journal = format!("{suffix}-journal");
        let mut found = Vec::new();
        for dir in dirs {
            // A directory that cannot be listed (gone, no permission) has no strays we can see.
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.ends_with(suffix) || name.ends_with(&journal) {
                    found.push(entry.path());
                }
            }
        }
        found.sort();
        Ok(found)
    }
}

fn check_snapshot(conn: &Connection) -> Result<CheckReport, ReadError> {
    let mut report = CheckReport::default();

    // SQLite's own check first.
    {
        let mut statement = conn.prepare("PRAGMA integrity_check")?;
        let rows = statement.query_map([], |r| r.get::<_, String>(0))?;
        for row in rows {
            let row = row?;
            if row != "ok" {
                report.add(ProblemKind::Sqlite, row);
            }
        }
    }

    let (head_position, head_recorded_at): (i64, i64) = conn.query_row(
        "SELECT last_position, last_recorded_at FROM head WHERE id = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let head_position = head_position as u64;
    report.last_position = head_position;

    let buckets = catalog::list_buckets(conn)?;
    report.buckets = buckets.len() as u64;
    check_catalog(conn, &buckets, head_position, &mut report)?;

    // Every event of the live buckets, in position order.
    let type_names: HashMap<i64, String> = conn
        .prepare("SELECT type_key, name FROM event_types")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    // Each stream with its last version and position according to the stream index.
    let stream_names: Vec<(i64, String)> = conn
        .prepare("SELECT stream_key, stream_id FROM streams")?
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut stream_rows: HashMap<i64, (String, u64, u64)> = HashMap::new();
    for (key, name) in stream_names {
        let (version, last_position) = index::stream_head(conn, key)?.unwrap_or((0, 0));
        stream_rows.insert(key, (name, version, last_position));
    }
    report.streams = stream_rows.len() as u64;
    let mut walks: HashMap<i64, StreamWalk> = HashMap::new();
    let mut last_recorded_at = i64::MIN;
    let mut previous_position: Option<Position> = None;
    for bucket in &buckets {
        if !bucket.state.is_live() {
            continue;
        }
        if !table_exists(conn, &bucket.table_name)? {
            continue; // reported by check_catalog
        }
        let mut statement = conn.prepare(&format!(
            "SELECT position, stream_key, version, type_key, event_id, recorded_at, data, metadata, checksum, tags
             FROM {} ORDER BY position",
            bucket.table_name
        ))?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let position = row.get::<_, i64>(0)? as u64;
            let stream_key: i64 = row.get(1)?;
            let version = row.get::<_, i64>(2)? as u64;
            let type_key: i64 = row.get(3)?;
            let event_id = bytes_of(row.get_ref(4)?);
            let recorded_at: i64 = row.get(5)?;
            let data = bytes_of(row.get_ref(6)?);
            let metadata = bytes_of(row.get_ref(7)?);
            let stored: i64 = row.get(8)?;
            let tags = bytes_of(row.get_ref(9)?);
            report.events_checked += 1;

            if let Some(previous) = previous_position {
                if position != previous + 1 && !non_live_between(&buckets, previous, position) {
                    report.add(
                        ProblemKind::Positions,
                        format!("position {position} follows {previous}: positions have a gap"),
                    );
                }
            }
            previous_position = Some(position);

            let computed = event_checksum(
                position,
                stream_key,
                version,
                type_key,
                &event_id,
                recorded_at,
                &data,
                &metadata,
                &tags,
            );
            if i64::from(computed) != stored {
                report.add(
                    ProblemKind::Event,
                    format!(
                        "position {position}: checksum mismatch (stored {stored:#x}, computed {computed:#x})"
                    ),
                );
            }
            if event_id.len() != 16 {
                report.add(
                    ProblemKind::Event,
                    format!(
                        "position {position}: event id is {} bytes, not 16",
                        event_id.len()
                    ),
                );
            }
            if !type_names.contains_key(&type_key) {
                report.add(
                    ProblemKind::Event,
                    format!("position {position}: unknown event type key {type_key}"),
                );
            }
            if recorded_at < bucket.start_micros || recorded_at >= bucket.end_micros {
                report.add(
                    ProblemKind::Event,
                    format!(
                        "position {position}: recorded_at {recorded_at} outside its bucket {} [{}, {})",
                        bucket.id, bucket.start_micros, bucket.end_micros
                    ),
                );
            }
            if recorded_at < last_recorded_at {
                report.add(
                    ProblemKind::Event,
                    format!(
                        "position {position}: recorded_at {recorded_at} is before the previous event's {last_recorded_at}"
                    ),
                );
            }
            last_recorded_at = last_recorded_at.max(recorded_at);

            // Stream versions.
            let Some((stream_id, _, _)) = stream_rows.get(&stream_key) else {
                report.add(
                    ProblemKind::Stream,
                    format!("position {position}: unknown stream key {stream_key}"),
                );
                continue;
            };
            let walk = walks.entry(stream_key).or_default();
            // Earlier versions may be in an archived or dropped bucket: then the first version
            // seen after it is not checked here (stream_buckets says what it must be).
            let after_gap = if walk.last_version == 0 {
                buckets_not_live(&buckets, 0, bucket.id)
            } else {
                walk.last_bucket != bucket.id
                    && buckets_not_live(&buckets, walk.last_bucket, bucket.id)
            };
            let expected = if after_gap {
                version
            } else {
                walk.last_version + 1
            };
            if version != expected {
                report.add(
                    ProblemKind::Stream,
                    format!(
                        "stream {stream_id:?}: version {version} at position {position}, expected {expected}"
                    ),
                );
            }
            walk.last_bucket = bucket.id;
            walk.last_version = version;
            walk.last_position = position;

            // Its entries in the id index and the stream index.
            let id_entry = match <[u8; 16]>::try_from(event_id.as_slice()) {
                Ok(id) => index::find_event_id(conn, &id)?,
                Err(_) => None,
            };
            match id_entry {
                Some(entry)
                    if entry.position == position
                        && entry.stream_key == stream_key
                        && entry.version == version => {}
                Some(entry) => report.add(
                    ProblemKind::EventIds,
                    format!(
                        "position {position}: its event id is recorded at position {}, stream key {}, version {}",
                        entry.position, entry.stream_key, entry.version
                    ),
                ),
                None => report.add(
                    ProblemKind::EventIds,
                    format!("position {position}: its event id is missing from the id index"),
                ),
            }
            let indexed = index::stream_entries(conn, stream_key, version, Direction::Forwards, 1)?;
            if indexed.first() != Some(&(version, position)) {
                report.add(
                    ProblemKind::Stream,
                    format!(
                        "stream {stream_id:?}: version {version} at position {position}, but the stream index says {:?}",
                        indexed.first()
                    ),
                );
            }
        }
    }
    if head_recorded_at < last_recorded_at {
        report.add(
            ProblemKind::Catalog,
            format!(
                "head.last_recorded_at {head_recorded_at} is before the last event's {last_recorded_at}"
            ),
        );
    }

    check_streams(&buckets, &stream_rows, &walks, &mut report)?;

    for (levels, kind, what) in [
        (index::ID_LEVELS, ProblemKind::EventIds, "id index"),
        (index::STREAM_LEVELS, ProblemKind::Stream, "stream index"),
    ] {
        let mut entries = 0;
        for table in levels {
            entries += index::count(conn, table)?;
            let out_of_range: i64 = conn.query_row(
                &format!("SELECT count(*) FROM {table} WHERE position < 1 OR position > ?1"),
                [head_position as i64],
                |r| r.get(0),
            )?;
            if out_of_range > 0 {
                report.add(
                    kind,
                    format!("{out_of_range} {table} rows point past the log (1..={head_position})"),
                );
            }
        }
        if entries != head_position {
            report.add(
                kind,
                format!(
                    "the {what} has {entries} entries but the log has {head_position} positions"
                ),
            );
        }
    }

    crate::tags::check_index(conn, &buckets, &mut |message| {
        report.add(ProblemKind::Tags, message)
    })?;
    for table in crate::tags::TAG_LEVELS {
        let out_of_range: i64 = conn.query_row(
            &format!("SELECT count(*) FROM {table} WHERE position < 1 OR position > ?1"),
            [head_position as i64],
            |r| r.get(0),
        )?;
        if out_of_range > 0 {
            report.add(
                ProblemKind::Tags,
                format!("{out_of_range} {table} rows point past the log (1..={head_position})"),
            );
        }
    }
    Ok(report)
}

/// Whether a bucket that held events and is no longer live lies strictly between two bucket
/// ids.
fn buckets_not_live(buckets: &[BucketInfo], after: i64, before: i64) -> bool {
    buckets
        .iter()
        .any(|b| b.id > after && b.id < before && !b.state.is_live() && b.event_count > 0)
}

/// Whether `position` lies in a bucket that is archived or dropped.
fn position_not_live(buckets: &[BucketInfo], position: Position) -> bool {
    buckets
        .iter()
        .any(|b| !b.state.is_live() && b.overlaps_positions(position, position))
}

/// Whether a bucket that is not live lies between two positions (then the gap is expected).
fn non_live_between(buckets: &[BucketInfo], before: Position, after: Position) -> bool {
    buckets.iter().any(|b| {
        !b.state.is_live()
            && b.first_position.is_some_and(|first| first > before)
            && b.last_position.is_some_and(|last| last < after)
    })
}

/// The bytes of a BLOB (or TEXT, which a damaged row may hold instead); empty for others, which
/// the checksum then reports.
fn bytes_of(value: rusqlite::types::ValueRef<'_>) -> Vec<u8> {
    use rusqlite::types::ValueRef;
    match value {
        ValueRef::Blob(bytes) | ValueRef::Text(bytes) => bytes.to_vec(),
        _ => Vec::new(),
    }
}

fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1")?
        .query_row([name], |_| Ok(()))
        .optional()
        .map(|found| found.is_some())
}

fn check_catalog(
    conn: &Connection,
    buckets: &[BucketInfo],
    head_position: Position,
    report: &mut CheckReport,
) -> Result<(), ReadError> {
    let active = buckets
        .iter()
        .filter(|b| b.state == BucketState::Active)
        .count();
    if active > 1 {
        report.add(
            ProblemKind::Catalog,
            format!("{active} buckets are active; at most one may be"),
        );
    }
    let mut expected_first: Position = 1;
    for bucket in buckets {
        let id = bucket.id;
        let exists = table_exists(conn, &bucket.table_name)?;
        if bucket.table_name != crate::schema::bucket_table_name(id) {
            report.add(
                ProblemKind::Catalog,
                format!(
                    "bucket {id}: table name {:?} is not events_{id}",
                    bucket.table_name
                ),
            );
        }
        match bucket.state {
            BucketState::Active | BucketState::Sealed if !exists => report.add(
                ProblemKind::Catalog,
                format!(
                    "bucket {id} is {} but its table {} is missing",
                    bucket.state.as_str(),
                    bucket.table_name
                ),
            ),
            BucketState::Archived | BucketState::Dropped if exists => report.add(
                ProblemKind::Catalog,
                format!(
                    "bucket {id} is {} but its table {} still exists",
                    bucket.state.as_str(),
                    bucket.table_name
                ),
            ),
            _ => {}
        }
        if bucket.state == BucketState::Archived {
            match &bucket.archive_path {
                None => report.add(
                    ProblemKind::Catalog,
                    format!("bucket {id} is archived but has no archive path"),
                ),
                Some(path) if !std::path::Path::new(path).is_file() => report.add(
                    ProblemKind::Catalog,
                    format!("bucket {id} is archived to {path}, which does not exist"),
                ),
                Some(_) => {}
            }
        }
        if bucket.start_micros >= bucket.end_micros {
            report.add(
                ProblemKind::Catalog,
                format!(
                    "bucket {id}: empty time range [{}, {})",
                    bucket.start_micros, bucket.end_micros
                ),
            );
        }

        // Position ranges: contiguous from 1, count matching.
        match (bucket.first_position, bucket.last_position) {
            (Some(first), Some(last)) => {
                if first != expected_first {
                    report.add(
                        ProblemKind::Positions,
                        format!(
                            "bucket {id} starts at position {first}, expected {expected_first}"
                        ),
                    );
                }
                if last < first || last - first + 1 != bucket.event_count {
                    report.add(
                        ProblemKind::Catalog,
                        format!(
                            "bucket {id}: positions {first}..={last} but event_count {}",
                            bucket.event_count
                        ),
                    );
                }
                expected_first = last.max(first) + 1;
            }
            (None, None) if bucket.event_count == 0 => {}
            _ => report.add(
                ProblemKind::Catalog,
                format!(
                    "bucket {id}: inconsistent range {:?}..={:?} with event_count {}",
                    bucket.first_position, bucket.last_position, bucket.event_count
                ),
            ),
        }

        // The rows of a live bucket against its catalog entry.
        if bucket.state.is_live() && exists {
            let (count, min, max): (i64, Option<i64>, Option<i64>) = conn.query_row(
                &format!(
                    "SELECT count(*), min(position), max(position) FROM {}",
                    bucket.table_name
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let rows = (count as u64, min.map(|p| p as u64), max.map(|p| p as u64));
            let catalog_says = (
                bucket.event_count,
                bucket.first_position,
                bucket.last_position,
            );
            if rows != catalog_says {
                report.add(
                    ProblemKind::Catalog,
                    format!(
                        "bucket {id}: table holds {} events at {:?}..={:?}, catalog says {} at {:?}..={:?}",
                        rows.0, rows.1, rows.2, catalog_says.0, catalog_says.1, catalog_says.2
                    ),
                );
            }
        }
    }
    if expected_first != head_position + 1 {
        report.add(
            ProblemKind::Positions,
            format!(
                "buckets end at position {}, but the head of the log is {head_position}",
                expected_first - 1
            ),
        );
    }

    // Tables named like buckets but not in the catalog.
    let known: HashSet<&str> = buckets.iter().map(|b| b.table_name.as_str()).collect();
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name GLOB 'events_[0-9]*'",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for table in tables {
        if !known.contains(table.as_str()) {
            report.add(
                ProblemKind::Catalog,
                format!("table {table} is not in the bucket catalog"),
            );
        }
    }
    Ok(())
}

fn check_streams(
    buckets: &[BucketInfo],
    stream_rows: &HashMap<i64, (String, u64, u64)>,
    walks: &HashMap<i64, StreamWalk>,
    report: &mut CheckReport,
) -> Result<(), ReadError> {
    for (key, (stream_id, version, last_position)) in stream_rows {
        match walks.get(key) {
            Some(walk) if position_not_live(buckets, *last_position) => {
                // Its last event was archived or dropped: the live ones must come before it.
                if walk.last_position >= *last_position || walk.last_version >= *version {
                    report.add(
                        ProblemKind::Stream,
                        format!(
                            "stream {stream_id:?}: the stream index says version {version} at position {last_position} (not live), but version {} at position {} is live",
                            walk.last_version, walk.last_position
                        ),
                    );
                }
            }
            Some(walk) => {
                if walk.last_version != *version || walk.last_position != *last_position {
                    report.add(
                        ProblemKind::Stream,
                        format!(
                            "stream {stream_id:?}: the stream index says version {version} at position {last_position}, its last event is version {} at position {}",
                            walk.last_version, walk.last_position
                        ),
                    );
                }
            }
            None => {
                // No live event: all its events must be in archived or dropped buckets.
                if !position_not_live(buckets, *last_position) {
                    report.add(
                        ProblemKind::Stream,
                        format!(
                            "stream {stream_id:?}: the stream index says version {version} at position {last_position}, but no such event is stored"
                        ),
                    );
                }
            }
        }
    }

    Ok(())
}
