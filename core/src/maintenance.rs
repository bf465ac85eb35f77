//! Bucket maintenance: sealing, archiving to a file of its own, dropping, retention by age, and
//! reclaiming the space.
//!
//! Maintenance writes through its own connection, not the writer thread's: SQLite's write lock
//! serialises it with appends (and with other processes), and `busy_timeout` makes it wait for
//! the lock instead of failing. Every change to the live store is one transaction.
//!
//! # Archive files
//!
//! [`Store::archive_bucket`] writes a sealed bucket to a self-describing SQLite file (its
//! `application_id` is [`ARCHIVE_APPLICATION_ID`], "STRX"), readable with the `sqlite3` shell:
//!
//! - `events`: one row per event, in position order, with the stream id and event type names
//!   next to the keys and checksum of the live table (`position, stream_id, version, event_type,
//!   event_id, recorded_at, data, metadata, stream_key, type_key, checksum, tags`; `tags` in
//!   the live table's stored form, NULL for an untagged event; format version 2);
//! - `event_tags`: one row per tag of each event (`position, tag`), the tags as text (format
//!   version 2);
//! - `events_readable`: a view with the event id in hex and `recorded_at` as ISO-8601 text;
//! - `archive_info`: key/value rows describing the bucket (id, time range, positions, count,
//!   when and from which store it was archived).
//!
//! The archive is written and synced completely under a temporary name (`<name>.strata-partial`,
//! [`PARTIAL_SUFFIX`]), renamed into place; then one transaction on the live store drops the
//! bucket's table and marks it `archived` with the archive's path. If that transaction fails,
//! the archive file is removed and the bucket stays as it was.
//!
//! Restartable: a run killed at any point leaves the bucket sealed (or archived, if the
//! transaction committed) and at most a partial file or a whole archive not yet recorded; the
//! next run recognises both as its own and replaces them. `Store::check` lists such leftovers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::catalog::{self, BucketInfo, BucketState, BUCKET_COLUMNS};
use crate::clock::{Clock, SystemClock};
use crate::connection::Location;
use crate::error::InvalidInput;
use crate::store::Store;

/// Lists each tag of the bucket's events in the archive's `event_tags`, as text.
fn copy_tags_as_text(conn: &Connection, table: &str) -> Result<(), MaintenanceError> {
    let mut rows = conn.prepare(&format!(
        "SELECT position, tags FROM main.{table} WHERE tags IS NOT NULL ORDER BY position"
    ))?;
    let mut insert =
        conn.prepare("INSERT INTO archive.event_tags (position, tag) VALUES (?1, ?2)")?;
    let mut rows = rows.query([])?;
    while let Some(row) = rows.next()? {
        let position: i64 = row.get(0)?;
        let blob: Vec<u8> = row.get(1)?;
        let tags = crate::tags::decode(Some(&blob)).map_err(|reason| {
            MaintenanceError::Invalid(InvalidInput::Other(format!(
                "the event at position {position} has malformed tags ({reason}); run check"
            )))
        })?;
        for tag in tags.iter() {
            insert.execute(params![position, tag])?;
        }
    }
    Ok(())
}

/// `PRAGMA application_id` of an archive file: "STRX" in ASCII. Not a store: `Store::open`
/// refuses it.
pub const ARCHIVE_APPLICATION_ID: i32 = 0x5354_5258;

/// Version of the archive file layout (`PRAGMA user_version` of an archive).
pub const ARCHIVE_FORMAT_VERSION: u32 = 2;

/// Why a maintenance operation did nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MaintenanceError {
    /// No bucket has this id.
    #[error("no bucket with id {0}")]
    UnknownBucket(i64),
    /// The operation needs a sealed bucket and this one is in another state.
    #[error("bucket {id} is {state}, not sealed{hint}", state = state.as_str(), hint = match state {
        BucketState::Active => " (seal it first: the active bucket is never archived or dropped)",
        _ => "",
    })]
    NotSealed {
        /// The bucket.
        id: i64,
        /// Its state.
        state: BucketState,
    },
    /// Sealing a bucket that was already archived or dropped.
    #[error("bucket {id} is {state} and cannot be sealed", state = state.as_str())]
    NotLive {
        /// The bucket.
        id: i64,
        /// Its state.
        state: BucketState,
    },
    /// The archive file already exists; archives are never overwritten.
    #[error("archive file {0} already exists; choose another path or move it away")]
    ArchiveExists(PathBuf),
    /// The bucket's rows do not match its catalog entry: the store is damaged (run `check`).
    #[error("bucket {id} holds {found} events but the catalog says {expected}; run check")]
    CountMismatch {
        /// The bucket.
        id: i64,
        /// Rows found.
        found: u64,
        /// Catalog count.
        expected: u64,
    },
    /// An argument is out of range.
    #[error("invalid argument: {0}")]
    Invalid(#[from] InvalidInput),
    /// A file operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// SQLite failed (including `SQLITE_BUSY` after `busy_timeout`).
    #[error("SQLite error during maintenance: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// What archiving a bucket did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveReport {
    /// The bucket, as the catalog now shows it (state `Archived`).
    pub bucket: BucketInfo,
    /// The archive file.
    pub archive_path: PathBuf,
    /// Events written to it.
    pub events: u64,
    /// Size of the archive file in bytes.
    pub archive_bytes: u64,
}

/// What retention does with a bucket past its age.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetentionAction {
    /// Archive it into this directory (one file per bucket).
    ArchiveTo(PathBuf),
    /// Drop it: its events are gone.
    Drop,
}

/// One bucket handled by [`Store::retain`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetainedBucket {
    /// The bucket after the operation.
    pub bucket: BucketInfo,
    /// Its archive, when archived.
    pub archive: Option<ArchiveReport>,
}

/// Size of the store before and after reclaiming space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaceReport {
    /// Bytes before (database file plus WAL; pages in use for an in-memory store).
    pub bytes_before: u64,
    /// Bytes after.
    pub bytes_after: u64,
}

/// Bytes taken by the store: the file and its WAL, or the pages of an in-memory database.
fn store_bytes(location: &Location, conn: &Connection) -> rusqlite::Result<u64> {
    match location {
        Location::File(path) => {
            let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            let mut wal = path.clone().into_os_string();
            wal.push("-wal");
            Ok(size(path) + size(Path::new(&wal)))
        }
        Location::Memory(_) => {
            let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            Ok((pages * size) as u64)
        }
    }
}

fn find_bucket(conn: &Connection, id: i64) -> Result<BucketInfo, MaintenanceError> {
    conn.prepare_cached(&format!(
        "SELECT {BUCKET_COLUMNS} FROM buckets WHERE id = ?1"
    ))?
    .query_row([id], catalog::bucket_from_row)
    .optional()?
    .ok_or(MaintenanceError::UnknownBucket(id))
}

fn require_sealed(bucket: &BucketInfo) -> Result<(), MaintenanceError> {
    if bucket.state == BucketState::Sealed {
        Ok(())
    } else {
        Err(MaintenanceError::NotSealed {
            id: bucket.id,
            state: bucket.state,
        })
    }
}

fn now_rfc3339() -> String {
    crate::clock::format_micros(SystemClock.now_micros())
}

impl Store {
    /// A connection for maintenance writes, with the store's busy timeout.
    fn maintenance_connection(&self) -> Result<Connection, MaintenanceError> {
        Ok(self.open_side_connection()?)
    }

    /// Seals bucket `id`: no more appends go to it; the next append opens a new bucket (whose
    /// time range may be the same, if the sealed one's has not passed yet). Sealing a sealed
    /// bucket does nothing. Returns the bucket as the catalog now shows it.
    pub fn seal_bucket(&self, id: i64) -> Result<BucketInfo, MaintenanceError> {
        let mut conn = self.maintenance_connection()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let bucket = find_bucket(&tx, id)?;
        match bucket.state {
            BucketState::Active => {
                tx.execute("UPDATE buckets SET state = 'sealed' WHERE id = ?1", [id])?;
            }
            BucketState::Sealed => {}
            state => return Err(MaintenanceError::NotLive { id, state }),
        }
        let sealed = find_bucket(&tx, id)?;
        tx.commit()?;
        tracing::info!(bucket = id, "sealed bucket");
        Ok(sealed)
    }

    /// Moves sealed bucket `id` out of the live store into an SQLite file of its own (see the
    /// module documentation for its layout), then drops its table and marks it archived, in one
    /// transaction. `destination` is either an existing directory (the file is named
    /// `<store file stem>-bucket-<id>.sqlite` inside it) or the path of a file that must not
    /// exist yet.
    ///
    /// The stream ids and event ids of its events stay in the store: appending one of its
    /// event ids again is still recognised, and reads that reach its positions fail with
    /// `ReadError::Archived` naming the file. The space is reused by later appends; call
    /// [`Store::reclaim_space`] to shrink the file.
    pub fn archive_bucket(
        &self,
        id: i64,
        destination: impl AsRef<Path>,
    ) -> Result<ArchiveReport, MaintenanceError> {
        let mut conn = self.maintenance_connection()?;
        let bucket = find_bucket(&conn, id)?;
        require_sealed(&bucket)?;
        let path = self.archive_path_for(&bucket, destination.as_ref());
        // A rerun after a kill: a partial file is ours to replace; a complete archive of this
        // very bucket of this store whose swap never committed (the bucket is still sealed) is
        // ours too. Anything else at the path is someone's file and is never overwritten.
        let partial = partial_path(&path);
        remove_partial(&partial)?;
        if path.exists() {
            if self.is_own_unswapped_archive(&path, &bucket) {
                tracing::info!(path = %path.display(), "replacing the archive an interrupted run left");
                std::fs::remove_file(&path).map_err(|source| MaintenanceError::Io {
                    path: path.clone(),
                    source,
                })?;
            } else {
                return Err(MaintenanceError::ArchiveExists(path));
            }
        }
        let io = |source| MaintenanceError::Io {
            path: path.clone(),
            source,
        };
        // Written under a temporary name and renamed into place once complete and synced, so
        // the archive's own name only ever holds a whole archive. Created exclusively, so two
        // archivers never write the same file.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)
            .map_err(|error| match error.kind() {
                std::io::ErrorKind::AlreadyExists => {
                    MaintenanceError::ArchiveExists(partial.clone())
                }
                _ => io(error),
            })?;
        let partial = partial.canonicalize().map_err(io)?;
        let path = partial_target(&partial);

        let written = self.write_archive(&mut conn, &bucket, &partial);
        let events = match written.and_then(|events| {
            rename_synced(&partial, &path)?;
            Ok(events)
        }) {
            Ok(events) => events,
            Err(error) => {
                let _ = conn.execute_batch("DETACH DATABASE archive");
                let _ = remove_partial(&partial);
                return Err(error);
            }
        };
        let archive_bytes = std::fs::metadata(&path).map_err(io)?.len();

        // One transaction on the live store: re-check, drop the table, record the archive.
        let swap = (|| -> Result<BucketInfo, MaintenanceError> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = find_bucket(&tx, id)?;
            require_sealed(&now)?;
            if now.event_count != events {
                return Err(MaintenanceError::CountMismatch {
                    id,
                    found: events,
                    expected: now.event_count,
                });
            }
            tx.execute_batch(&format!("DROP TABLE {}", now.table_name))?;
            tx.execute(
                "UPDATE buckets SET state = 'archived', archive_path = ?1 WHERE id = ?2",
                params![path.to_string_lossy(), id],
            )?;
            let archived = find_bucket(&tx, id)?;
            tx.commit()?;
            self.clear_event_cache();
            Ok(archived)
        })();
        match swap {
            Ok(bucket) => {
                tracing::info!(bucket = id, path = %path.display(), events, "archived bucket");
                Ok(ArchiveReport {
                    bucket,
                    archive_path: path,
                    events,
                    archive_bytes,
                })
            }
            Err(error) => {
                let _ = std::fs::remove_file(&path);
                Err(error)
            }
        }
    }

    /// Whether `path` is a complete archive of `bucket` written from this store: the file an
    /// archive run leaves when it is killed after the rename and before the live store's
    /// transaction committed. Any doubt (unreadable, another application, another bucket or
    /// store) is "no".
    fn is_own_unswapped_archive(&self, path: &Path, bucket: &BucketInfo) -> bool {
        let Ok(conn) =
            Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        else {
            return false;
        };
        let info = |key: &str| -> Option<String> {
            conn.query_row(
                "SELECT value FROM archive_info WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .ok()
        };
        let application_id: Option<i32> = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .ok();
        let source = self.path().map(|p| p.to_string_lossy().into_owned());
        application_id == Some(ARCHIVE_APPLICATION_ID)
            && bucket.state == BucketState::Sealed
            && info("bucket_id") == Some(bucket.id.to_string())
            && info("event_count") == Some(bucket.event_count.to_string())
            && source.is_some()
            && info("source_store") == source
    }

    fn archive_path_for(&self, bucket: &BucketInfo, destination: &Path) -> PathBuf {
        if destination.is_dir() {
            let stem = self
                .path()
                .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "strata".to_owned());
            destination.join(format!("{stem}-bucket-{}.sqlite", bucket.id))
        } else {
            destination.to_path_buf()
        }
    }

    /// Writes the archive file (already created, empty) and returns the number of events in it.
    fn write_archive(
        &self,
        conn: &mut Connection,
        bucket: &BucketInfo,
        path: &Path,
    ) -> Result<u64, MaintenanceError> {
        conn.execute(
            "ATTACH DATABASE ?1 AS archive",
            [path.to_string_lossy().as_ref()],
        )?;
        let result = (|| -> Result<u64, MaintenanceError> {
            conn.execute_batch(
                "PRAGMA archive.journal_mode = DELETE;
                 PRAGMA archive.synchronous = FULL;",
            )?;
            conn.pragma_update(Some("archive"), "application_id", ARCHIVE_APPLICATION_ID)?;
            conn.pragma_update(Some("archive"), "user_version", ARCHIVE_FORMAT_VERSION)?;
            // A deferred transaction: reads of the sealed bucket do not need the write lock of
            // the live store, and its rows never change.
            let tx = conn.transaction()?;
            tx.execute_batch(
                "CREATE TABLE archive.archive_info (
                    key   TEXT PRIMARY KEY,
                    value TEXT NOT NULL
                 ) WITHOUT ROWID;
                 CREATE TABLE archive.events (
                    position    INTEGER PRIMARY KEY,
                    stream_id   TEXT NOT NULL,
                    version     INTEGER NOT NULL,
                    event_type  TEXT NOT NULL,
                    event_id    BLOB NOT NULL UNIQUE,
                    recorded_at INTEGER NOT NULL,
                    data        BLOB NOT NULL,
                    metadata    BLOB NOT NULL,
                    stream_key  INTEGER NOT NULL,
                    type_key    INTEGER NOT NULL,
                    checksum    INTEGER NOT NULL,
                    tags        BLOB
                 );
                 CREATE TABLE archive.event_tags (
                    position INTEGER NOT NULL,
                    tag      TEXT NOT NULL,
                    PRIMARY KEY (position, tag)
                 ) WITHOUT ROWID;
                 CREATE INDEX archive.event_tags_tag ON event_tags (tag, position);
                 CREATE INDEX archive.events_stream ON events (stream_id, version);
                 CREATE INDEX archive.events_type ON events (event_type, recorded_at);
                 CREATE VIEW archive.events_readable AS
                    SELECT position, stream_id, version, event_type,
                           lower(hex(event_id)) AS event_id,
                           strftime('%Y-%m-%dT%H:%M:%fZ', recorded_at / 1000000.0, 'unixepoch')
                               AS recorded_at,
                           length(data) AS data_bytes, length(metadata) AS metadata_bytes
                    FROM events;",
            )?;
            let copied = tx.execute(
                &format!(
                    "INSERT INTO archive.events
                        (position, stream_id, version, event_type, event_id, recorded_at, data,
                         metadata, stream_key, type_key, checksum, tags)
                     SELECT e.position, s.stream_id, e.version, t.name, e.event_id, e.recorded_at,
                            e.data, e.metadata, e.stream_key, e.type_key, e.checksum, e.tags
                     FROM main.{table} e
                     JOIN main.streams s ON s.stream_key = e.stream_key
                     JOIN main.event_types t ON t.type_key = e.type_key
                     ORDER BY e.position",
                    table = bucket.table_name
                ),
                [],
            )? as u64;
            copy_tags_as_text(&tx, &bucket.table_name)?;
            let in_table: i64 = tx.query_row(
                &format!("SELECT count(*) FROM main.{}", bucket.table_name),
                [],
                |r| r.get(0),
            )?;
            if copied != in_table as u64 || copied != bucket.event_count {
                return Err(MaintenanceError::CountMismatch {
                    id: bucket.id,
                    found: in_table as u64,
                    expected: bucket.event_count,
                });
            }
            let info: Vec<(&str, String)> =
                vec![
                ("format_version", ARCHIVE_FORMAT_VERSION.to_string()),
                (
                    "source_store",
                    self.path()
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_else(|| ":memory:".into()),
                ),
                ("source_schema_version", crate::schema::CURRENT_VERSION.to_string()),
                ("bucket_id", bucket.id.to_string()),
                ("bucket_width", self.bucket_width().to_string()),
                ("start_micros", bucket.start_micros.to_string()),
                ("end_micros", bucket.end_micros.to_string()),
                ("start", crate::clock::format_micros(bucket.start_micros)),
                ("end", crate::clock::format_micros(bucket.end_micros)),
                (
                    "first_position",
                    bucket.first_position.unwrap_or_default().to_string(),
                ),
                (
                    "last_position",
                    bucket.last_position.unwrap_or_default().to_string(),
                ),
                ("event_count", copied.to_string()),
                ("archived_at", now_rfc3339()),
                (
                    "checksum",
                    "crc32 over position, stream_key, version, type_key, event_id, recorded_at, \
                     len(data), data, metadata (integers little-endian)"
                        .into(),
                ),
            ];
            {
                let mut insert =
                    tx.prepare("INSERT INTO archive.archive_info (key, value) VALUES (?1, ?2)")?;
                for (key, value) in &info {
                    insert.execute(params![key, value])?;
                }
            }
            tx.commit()?;
            Ok(copied)
        })();
        let detached = conn.execute_batch("DETACH DATABASE archive");
        let events = result?;
        detached?;
        Ok(events)
    }

    /// Drops sealed bucket `id`: its table is deleted and the catalog marks it `dropped`, in
    /// one transaction. Its events are gone; reads that reach its positions fail with
    /// `ReadError::Dropped`. Event ids stay known (re-appending one is still recognised).
    pub fn drop_bucket(&self, id: i64) -> Result<BucketInfo, MaintenanceError> {
        let mut conn = self.maintenance_connection()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let bucket = find_bucket(&tx, id)?;
        require_sealed(&bucket)?;
        tx.execute_batch(&format!("DROP TABLE {}", bucket.table_name))?;
        tx.execute("UPDATE buckets SET state = 'dropped' WHERE id = ?1", [id])?;
        let dropped = find_bucket(&tx, id)?;
        tx.commit()?;
        self.clear_event_cache();
        tracing::info!(bucket = id, "dropped bucket");
        Ok(dropped)
    }

    /// Retention by age: archives or drops every sealed bucket whose time range ended more than
    /// `older_than` ago (by the store's clock). The active bucket is never touched, whatever its
    /// age. Returns the buckets handled, oldest first; stops at the first failure.
    pub fn retain(
        &self,
        older_than: Duration,
        action: &RetentionAction,
    ) -> Result<Vec<RetainedBucket>, MaintenanceError> {
        let age = i64::try_from(older_than.as_micros()).map_err(|_| {
            InvalidInput::Other(format!("retention age {older_than:?} is too large"))
        })?;
        let cutoff = self.options().clock.now_micros().saturating_sub(age);
        if let RetentionAction::ArchiveTo(dir) = action {
            if !dir.is_dir() {
                return Err(MaintenanceError::Io {
                    path: dir.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "the archive directory does not exist",
                    ),
                });
            }
        }
        let buckets = {
            let conn = self.maintenance_connection()?;
            catalog::list_buckets(&conn)?
        };
        let mut handled = Vec::new();
        for bucket in buckets {
            if bucket.state != BucketState::Sealed || bucket.end_micros > cutoff {
                continue;
            }
            handled.push(match action {
                RetentionAction::ArchiveTo(dir) => {
                    let report = self.archive_bucket(bucket.id, dir)?;
                    RetainedBucket {
                        bucket: report.bucket.clone(),
                        archive: Some(report),
                    }
                }
                RetentionAction::Drop => RetainedBucket {
                    bucket: self.drop_bucket(bucket.id)?,
                    archive: None,
                },
            });
        }
        Ok(handled)
    }

    /// Reclaims free space: a full `VACUUM`, then a WAL checkpoint that truncates the WAL.
    /// Waits for other writers (busy timeout); readers keep reading. Returns the size before
    /// and after.
    pub fn reclaim_space(&self) -> Result<SpaceReport, MaintenanceError> {
        let conn = self.maintenance_connection()?;
        let bytes_before = store_bytes(self.location(), &conn)?;
        conn.execute_batch("VACUUM")?;
        // A checkpoint that cannot finish (a reader is still on an old snapshot) is not an
        // error: the WAL is truncated by a later checkpoint.
        let _: (i64, i64, i64) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        let bytes_after = store_bytes(self.location(), &conn)?;
        Ok(SpaceReport {
            bytes_before,
            bytes_after,
        })
    }

    /// Bytes the store takes now: the database file plus its WAL (pages in use for an
    /// in-memory store).
    pub fn size_bytes(&self) -> Result<u64, MaintenanceError> {
        let conn = self.maintenance_connection()?;
        Ok(store_bytes(self.location(), &conn)?)
    }
}

/// Suffix of the temporary name maintenance writes a file under before renaming it into place
/// (archives here, `strata export --output` in the CLI). A file with this suffix (or its SQLite
/// `-journal`) is the leftover of a run that was killed: the next run replaces it and
/// `Store::check` lists it in `stray_files`.
pub const PARTIAL_SUFFIX: &str = ".strata-partial";

/// The temporary name of `path`: `path` + [`PARTIAL_SUFFIX`].
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(PARTIAL_SUFFIX);
    PathBuf::from(name)
}

/// The final name of a temporary `partial` path (the inverse of [`partial_path`]).
fn partial_target(partial: &Path) -> PathBuf {
    let text = partial.as_os_str().to_string_lossy();
    PathBuf::from(
        text.strip_suffix(PARTIAL_SUFFIX)
            .unwrap_or(&text)
            .to_owned(),
    )
}

/// Removes a leftover temporary file and its SQLite rollback journal, if present.
fn remove_partial(partial: &Path) -> Result<(), MaintenanceError> {
    let mut journal = partial.as_os_str().to_owned();
    journal.push("-journal");
    for file in [partial.to_path_buf(), PathBuf::from(journal)] {
        match std::fs::remove_file(&file) {
            Ok(()) => {
                tracing::info!(path = %file.display(), "removed the leftover of an interrupted run")
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(MaintenanceError::Io { path: file, source }),
        }
    }
    Ok(())
}

/// Renames a complete, synced file into place and syncs its directory, so that after a power
/// cut the file is under one name or the other, whole.
pub fn rename_synced(from: &Path, to: &Path) -> Result<(), MaintenanceError> {
    let io = |source| MaintenanceError::Io {
        path: to.to_path_buf(),
        source,
    };
    std::fs::File::open(from)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(from, to).map_err(io)?;
    if let Some(dir) = to.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}
