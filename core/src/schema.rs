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
pub const CURRENT_VERSION: u32 = 1;

/// Migrations, in order: `MIGRATIONS[n]` takes a file from version `n` to `n + 1`.
/// Version 0 is an empty file.
const MIGRATIONS: &[fn(&Transaction<'_>, BucketWidth) -> rusqlite::Result<()>] = &[create_v1];

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

/// SQL creating the table and indexes of bucket `id`.
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
            checksum    INTEGER NOT NULL
        );
        CREATE UNIQUE INDEX {table}_stream ON {table} (stream_key, version);
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
