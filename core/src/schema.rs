//! The SQLite schema: recognising a strata file, creating it, and migrating older versions.
//!
//! A strata file is marked by `PRAGMA application_id = APPLICATION_ID`; its schema version is
//! `PRAGMA user_version`. Both live in the database header, so they can be read without touching
//! anything else, and a file that is not ours is refused before any write.

use std::path::Path;

use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction};

use crate::error::OpenError;
use crate::options::BucketWidth;

/// `PRAGMA application_id` of a strata store: "STRA" in ASCII.
pub const APPLICATION_ID: i32 = 0x5354_5241;

/// The schema version this build writes.
pub const CURRENT_VERSION: u32 = 3;

/// Migrations, in order: `MIGRATIONS[n]` takes a file from version `n` to `n + 1`.
/// Version 0 is an empty file.
const MIGRATIONS: &[fn(&Transaction<'_>, BucketWidth) -> rusqlite::Result<()>] =
    &[create_v1, migrate_to_v2, migrate_to_v3];

/// Name of the table of bucket `id`. Generated from the id only, never from user input.
pub fn bucket_table_name(bucket_id: i64) -> String {
    assert!(bucket_id > 0, "bucket ids start at 1");
    format!("events_{bucket_id}")
}

fn create_v1(tx: &Transaction<'_>, width: BucketWidth) -> rusqlite::Result<()> {
    tx.execute_batch(
        "
        -- Store-wide settings, fixed at creation (bucket_width).
        CREATE TABLE meta (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) WITHOUT ROWID;

        -- The head of the log: one row. Read and written inside each write transaction, so that
        -- several processes appending to one file keep positions gap-free.
        CREATE TABLE head (
            id               INTEGER PRIMARY KEY CHECK (id = 1),
            last_position    INTEGER NOT NULL,
            last_recorded_at INTEGER NOT NULL
        );
        INSERT INTO head (id, last_position, last_recorded_at) VALUES (1, 0, 0);

        -- The bucket catalog: one row per time-bucketed events table.
        CREATE TABLE buckets (
            id             INTEGER PRIMARY KEY,
            table_name     TEXT NOT NULL UNIQUE,
            start_micros   INTEGER NOT NULL,
            end_micros     INTEGER NOT NULL,
            first_position INTEGER,
            last_position  INTEGER,
            event_count    INTEGER NOT NULL DEFAULT 0,
            state          TEXT NOT NULL CHECK (state IN ('active', 'sealed', 'archived', 'dropped')),
            archive_path   TEXT
        );

        -- Streams: the current version is the unique-version guarantee across buckets.
        CREATE TABLE streams (
            stream_key     INTEGER PRIMARY KEY,
            stream_id      TEXT NOT NULL UNIQUE,
            version        INTEGER NOT NULL,
            first_position INTEGER NOT NULL,
            last_position  INTEGER NOT NULL,
            state          TEXT NOT NULL DEFAULT 'active'
        );

        -- Which buckets hold events of which stream, and the stream's first version in each, so
        -- that a stream read opens only the buckets that hold the versions it wants.
        CREATE TABLE stream_buckets (
            stream_key    INTEGER NOT NULL,
            bucket_id     INTEGER NOT NULL,
            first_version INTEGER NOT NULL,
            PRIMARY KEY (stream_key, bucket_id)
        ) WITHOUT ROWID;

        -- Event type names, interned: bucket tables and their indexes hold the small key.
        CREATE TABLE event_types (
            type_key INTEGER PRIMARY KEY,
            name     TEXT NOT NULL UNIQUE
        );

        -- Projections: one row per (name, version); each has its own state namespace. The
        -- checkpoint and the state of a batch commit in one transaction.
        CREATE TABLE projections (
            namespace      INTEGER PRIMARY KEY,
            name           TEXT NOT NULL,
            version        INTEGER NOT NULL,
            event_types    TEXT NOT NULL,
            checkpoint     INTEGER NOT NULL DEFAULT 0,
            status         TEXT NOT NULL CHECK (status IN ('catching_up', 'live', 'faulted', 'rebuilding', 'retired')),
            fault_position INTEGER,
            fault_message  TEXT,
            updated_at     INTEGER NOT NULL,
            UNIQUE (name, version)
        );
        CREATE TABLE projection_state (
            namespace INTEGER NOT NULL,
            key       BLOB NOT NULL,
            value     BLOB NOT NULL,
            PRIMARY KEY (namespace, key)
        ) WITHOUT ROWID;
        -- Events a projection was told to skip after faulting on them, kept for the record.
        CREATE TABLE projection_skips (
            namespace  INTEGER NOT NULL,
            position   INTEGER NOT NULL,
            message    TEXT NOT NULL,
            skipped_at INTEGER NOT NULL,
            PRIMARY KEY (namespace, position)
        ) WITHOUT ROWID;

        -- Named checkpoints of event-bus handlers (and other followers of the log).
        CREATE TABLE checkpoints (
            name     TEXT PRIMARY KEY,
            position INTEGER NOT NULL
        ) WITHOUT ROWID;

        -- Aggregate snapshots: the state of one aggregate type of one stream at a version.
        CREATE TABLE snapshots (
            stream_id      TEXT NOT NULL,
            aggregate_type TEXT NOT NULL,
            type_version   INTEGER NOT NULL,
            version        INTEGER NOT NULL,
            state          BLOB NOT NULL,
            PRIMARY KEY (stream_id, aggregate_type)
        ) WITHOUT ROWID;

        -- Every event id ever stored, with where it went: store-wide idempotency.
        CREATE TABLE event_ids (
            event_id   BLOB PRIMARY KEY,
            position   INTEGER NOT NULL,
            stream_key INTEGER NOT NULL,
            version    INTEGER NOT NULL
        ) WITHOUT ROWID;
        ",
    )?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('bucket_width', ?1)",
        [width.as_str()],
    )?;
    Ok(())
}

/// Version 2: the stream and event-id indexes move out of the commit path's random pages into
/// levels (see `index.rs`). The per-bucket `(stream_key, version)` index, `stream_buckets` and
/// the per-append `streams.version` / `last_position` columns are replaced by the stream index
/// levels; `event_ids` becomes the merged level of the id index.
fn migrate_to_v2(tx: &Transaction<'_>, _width: BucketWidth) -> rusqlite::Result<()> {
    tx.execute_batch(
        "
        -- The stream index: (stream, version) -> position. Level 2 is the merged one; levels 0
        -- and 1 are small and hold what was appended since the last merges.
        CREATE TABLE stream_index (
            stream_key INTEGER NOT NULL,
            version    INTEGER NOT NULL,
            position   INTEGER NOT NULL,
            PRIMARY KEY (stream_key, version)
        ) WITHOUT ROWID;
        CREATE TABLE stream_index_l1 (
            stream_key INTEGER NOT NULL,
            version    INTEGER NOT NULL,
            position   INTEGER NOT NULL,
            PRIMARY KEY (stream_key, version)
        ) WITHOUT ROWID;
        CREATE TABLE stream_index_l0 (
            stream_key INTEGER NOT NULL,
            version    INTEGER NOT NULL,
            position   INTEGER NOT NULL,
            PRIMARY KEY (stream_key, version)
        ) WITHOUT ROWID;
        -- The id index: `event_ids` (version 1's table) is its merged level.
        CREATE TABLE event_ids_l1 (
            event_id   BLOB PRIMARY KEY,
            position   INTEGER NOT NULL,
            stream_key INTEGER NOT NULL,
            version    INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE event_ids_l0 (
            event_id   BLOB PRIMARY KEY,
            position   INTEGER NOT NULL,
            stream_key INTEGER NOT NULL,
            version    INTEGER NOT NULL
        ) WITHOUT ROWID;
        -- event_ids lists every event ever stored, archived and dropped ones included.
        INSERT INTO stream_index (stream_key, version, position)
            SELECT stream_key, version, position FROM event_ids ORDER BY stream_key, version;
        DROP TABLE stream_buckets;
        ALTER TABLE streams DROP COLUMN version;
        ALTER TABLE streams DROP COLUMN last_position;
        ",
    )?;
    let stream_indexes: Vec<String> = tx
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'index' AND name GLOB 'events_[0-9]*_stream'",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for index in stream_indexes {
        // Names come from sqlite_schema and match the bucket pattern: never user input.
        tx.execute_batch(&format!("DROP INDEX \"{index}\""))?;
    }
    Ok(())
}

/// Version 3: tags (Dynamic Consistency Boundaries). Every bucket table gains a `tags` column
/// (NULL for the events stored before, which carry none: adding a NULL column rewrites no row),
/// and the tag index appears in three levels (see `tags.rs`).
fn migrate_to_v3(tx: &Transaction<'_>, _width: BucketWidth) -> rusqlite::Result<()> {
    let mut sql = String::new();
    for level in crate::tags::TAG_LEVELS {
        sql.push_str(&format!(
            "CREATE TABLE {level} (
                tag      TEXT NOT NULL,
                position INTEGER NOT NULL,
                type_key INTEGER NOT NULL,
                PRIMARY KEY (tag, position)
            ) WITHOUT ROWID;"
        ));
    }
    tx.execute_batch(&sql)?;
    let bucket_tables: Vec<String> = tx
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name GLOB 'events_[0-9]*'",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for table in bucket_tables {
        // Names come from sqlite_schema and match the bucket pattern: never user input.
        tx.execute_batch(&format!("ALTER TABLE \"{table}\" ADD COLUMN tags BLOB"))?;
    }
    Ok(())
}

/// SQL creating the table and index of bucket `id`. The only index is by type: its entries
/// land at the end of each type's range (recorded_at never decreases), so a commit touches one
/// page per type. Streams and ids are indexed in `index.rs`'s levels.
pub fn create_bucket_sql(bucket_id: i64) -> String {
    let table = bucket_table_name(bucket_id);
    format!(
        "CREATE TABLE {table} (
            position    INTEGER PRIMARY KEY,
            stream_key  INTEGER NOT NULL,
            version     INTEGER NOT NULL,
            type_key    INTEGER NOT NULL,
            event_id    BLOB NOT NULL,
            recorded_at INTEGER NOT NULL,
            data        BLOB NOT NULL,
            metadata    BLOB NOT NULL,
            checksum    INTEGER NOT NULL,
            tags        BLOB
        );
        CREATE INDEX {table}_type ON {table} (type_key, recorded_at);"
    )
}

fn is_not_a_database(error: &rusqlite::Error) -> bool {
    matches!(error.sqlite_error_code(), Some(ErrorCode::NotADatabase))
}

/// Checks that `conn` holds a strata store (or an empty file), creates or migrates its schema,
/// and returns its bucket width. Nothing is written unless every check passes.
pub fn prepare(
    conn: &mut Connection,
    path: &Path,
    requested_width: Option<BucketWidth>,
) -> Result<BucketWidth, OpenError> {
    let header = |conn: &Connection| -> rusqlite::Result<(i32, u32, i64)> {
        let application_id: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        let user_version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let objects: i64 =
            conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
        Ok((application_id, user_version, objects))
    };
    let (application_id, user_version, objects) = header(conn).map_err(|error| {
        if is_not_a_database(&error) {
            OpenError::NotADatabase {
                path: path.to_path_buf(),
            }
        } else {
            OpenError::Sqlite(error)
        }
    })?;

    let is_empty = application_id == 0 && user_version == 0 && objects == 0;
    if !is_empty && application_id != APPLICATION_ID {
        return Err(OpenError::NotAStrataStore {
            path: path.to_path_buf(),
            application_id,
        });
    }
    if user_version > CURRENT_VERSION {
        return Err(OpenError::SchemaTooNew {
            found: user_version,
            supported: CURRENT_VERSION,
        });
    }

    // WAL before the first write, so that even creation happens in WAL mode. Memory databases
    // answer "memory": fine, they have no file to share.
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;

    if user_version < CURRENT_VERSION {
        let width = requested_width.unwrap_or_default();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Another process may have created the schema while we waited for the lock.
        let version_now: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        for (from, migrate) in MIGRATIONS.iter().enumerate().skip(version_now as usize) {
            tracing::info!(from, to = from + 1, "migrating strata schema");
            migrate(&tx, width)?;
        }
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", CURRENT_VERSION)?;
        tx.commit()?;
    }

    let stored: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'bucket_width'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let stored_width = stored
        .as_deref()
        .and_then(BucketWidth::parse)
        .ok_or_else(|| OpenError::NotAStrataStore {
            path: path.to_path_buf(),
            application_id,
        })?;
    if let Some(requested) = requested_width {
        if requested != stored_width {
            return Err(OpenError::BucketWidthMismatch {
                stored: stored_width.to_string(),
                requested: requested.to_string(),
            });
        }
    }
    Ok(stored_width)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::checksum::event_checksum;
    use crate::{Direction, Options, Store};

    /// Writes a version-1 file by hand: one month bucket with its per-bucket stream index, the
    /// `streams` row with its version, `stream_buckets` and `event_ids` as version 1 kept them.
    fn write_version_1_store(path: &Path) {
        let mut conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        let tx = conn.transaction().unwrap();
        create_v1(&tx, BucketWidth::Month).unwrap();
        let recorded_at = 1_700_000_000_000_000_i64;
        let (start, end) = crate::clock::bucket_range(BucketWidth::Month, recorded_at);
        tx.execute_batch(&format!(
            "INSERT INTO buckets (id, table_name, start_micros, end_micros, first_position, last_position, event_count, state)
             VALUES (1, 'events_1', {start}, {end}, 1, 3, 3, 'active');
             CREATE TABLE events_1 (
                 position INTEGER PRIMARY KEY, stream_key INTEGER NOT NULL, version INTEGER NOT NULL,
                 type_key INTEGER NOT NULL, event_id BLOB NOT NULL, recorded_at INTEGER NOT NULL,
                 data BLOB NOT NULL, metadata BLOB NOT NULL, checksum INTEGER NOT NULL);
             CREATE UNIQUE INDEX events_1_stream ON events_1 (stream_key, version);
             CREATE INDEX events_1_type ON events_1 (type_key, recorded_at);
             INSERT INTO event_types (type_key, name) VALUES (1, 'placed');
             INSERT INTO streams (stream_key, stream_id, version, first_position, last_position)
                 VALUES (1, 'order-1', 2, 1, 3), (2, 'order-2', 1, 2, 2);
             INSERT INTO stream_buckets VALUES (1, 1, 1), (2, 1, 1);
             UPDATE head SET last_position = 3, last_recorded_at = {recorded_at};"
        ))
        .unwrap();
        for (position, stream_key, version) in [(1u64, 1i64, 1u64), (2, 2, 1), (3, 1, 2)] {
            let id = [position as u8; 16];
            let data = vec![position as u8; 8];
            let checksum = event_checksum(
                position,
                stream_key,
                version,
                1,
                &id,
                recorded_at,
                &data,
                b"",
                b"",
            );
            tx.execute(
                "INSERT INTO events_1 VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, x'', ?7)",
                rusqlite::params![
                    position as i64,
                    stream_key,
                    version as i64,
                    &id[..],
                    recorded_at,
                    data,
                    i64::from(checksum)
                ],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO event_ids VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![&id[..], position as i64, stream_key, version as i64],
            )
            .unwrap();
        }
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        tx.pragma_update(None, "user_version", 1).unwrap();
        tx.commit().unwrap();
    }

    #[test]
    fn a_version_1_file_is_migrated_and_reads_and_appends_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        write_version_1_store(&path);

        let store = Store::open(&path, Options::default()).unwrap();
        let versions: Vec<u64> = store
            .read_stream("order-1", 1, Direction::Forwards, 10)
            .unwrap()
            .iter()
            .map(|e| e.version)
            .collect();
        assert_eq!(versions, [1, 2]);
        let info = store.stream_info("order-1").unwrap().unwrap();
        assert_eq!((info.version, info.last_position), (2, 3));
        store
            .append(
                "order-1",
                crate::ExpectedVersion::Exact(2),
                vec![crate::NewEvent::new("placed", b"x".to_vec())],
            )
            .unwrap();
        let report = store.check().unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        drop(store);

        let conn = Connection::open(&path).unwrap();
        let version: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, CURRENT_VERSION);
        let per_bucket_indexes: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'events_1_stream' OR name = 'stream_buckets'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(per_bucket_indexes, 0);
    }

    /// A version-2 file: version 1's, migrated as version 2 of strata migrated it.
    fn write_version_2_store(path: &Path) {
        write_version_1_store(path);
        let mut conn = Connection::open(path).unwrap();
        let tx = conn.transaction().unwrap();
        migrate_to_v2(&tx, BucketWidth::Month).unwrap();
        tx.pragma_update(None, "user_version", 2).unwrap();
        tx.commit().unwrap();
    }

    #[test]
    fn a_version_2_file_gains_tags_its_old_events_read_untagged_and_tagged_appends_work() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        write_version_2_store(&path);
        // The old bucket's month: new events go into the migrated table itself.
        let clock = Arc::new(crate::ManualClock::new(1_700_000_000_000_000 + 1));
        let options = Options {
            clock: clock.clone(),
            ..Options::default()
        };

        let store = Store::open(&path, options.clone()).unwrap();
        let old = store.read_all(1, 10).unwrap();
        assert_eq!(old.len(), 3);
        assert!(
            old.iter().all(|e| e.tags.is_empty()),
            "old events carry no tags"
        );
        store
            .append_with(
                vec![crate::NewEvent::new("placed", b"t".to_vec()).with_tags(["course:c1"])],
                crate::AppendCondition::new(crate::Query::tags(["course:c1"]), 0),
            )
            .unwrap();
        let tagged = store
            .read_query(&crate::Query::tags(["course:c1"]), 0, 10)
            .unwrap();
        assert_eq!(tagged.len(), 1);
        assert_eq!(
            (tagged[0].position, &tagged[0].tags[..]),
            (4, &["course:c1".to_string()][..])
        );
        assert_eq!(
            store.buckets().unwrap().len(),
            1,
            "appended into the migrated table"
        );
        let report = store.check().unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        drop(store);

        let conn = Connection::open(&path).unwrap();
        let version: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 3);
        drop(conn);
        let reopened = Store::open(&path, options).unwrap();
        assert_eq!(reopened.read_all(1, 10).unwrap()[3].tags.len(), 1);
    }
}
