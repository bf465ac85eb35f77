//! The publisher's checkpoint, kept in the source store's own file.
//!
//! Table `replication_checkpoints(name TEXT PRIMARY KEY, position INTEGER NOT NULL)`, written
//! through a connection of our own (not the store's writer), with a busy timeout so that the
//! store's writer holding the lock makes us wait, not fail. A checkpoint never moves backwards.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

/// How long a checkpoint write waits for the store's write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const CREATE: &str = "CREATE TABLE IF NOT EXISTS replication_checkpoints (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL
) WITHOUT ROWID";

/// A connection to the checkpoint table of one store file.
#[derive(Debug)]
pub struct Checkpoints {
    conn: Connection,
}

impl Checkpoints {
    /// Opens the store file at `path` (which must exist) and creates the table if missing.
    pub fn open(path: &Path) -> rusqlite::Result<Checkpoints> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.execute_batch(CREATE)?;
        Ok(Checkpoints { conn })
    }

    /// Opens the store file at `path` read-only, without creating anything (for status).
    pub fn open_read_only(path: &Path) -> rusqlite::Result<Checkpoints> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(Checkpoints { conn })
    }

    /// The checkpoint stored under `name`: every event up to it was acknowledged by JetStream.
    /// 0 when none is stored (or the table does not exist yet).
    pub fn get(&self, name: &str) -> rusqlite::Result<u64> {
        let exists: bool = self.conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' \
             AND name = 'replication_checkpoints'",
            [],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(0);
        }
        let position: Option<i64> = self
            .conn
            .prepare_cached("SELECT position FROM replication_checkpoints WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?;
        Ok(position.unwrap_or(0).max(0) as u64)
    }

    /// Stores `position` under `name` unless a larger one is stored already.
    pub fn set(&self, name: &str, position: u64) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO replication_checkpoints (name, position) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position
                 WHERE excluded.position > replication_checkpoints.position",
            )?
            .execute(params![name, position as i64])?;
        Ok(())
    }

    /// Stores checkpoint `name` at 0 unless it exists: a publisher that ran is known by name
    /// (status tells a misspelt name from one that published nothing yet).
    pub fn register(&self, name: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO replication_checkpoints (name, position) VALUES (?1, 0)
             ON CONFLICT (name) DO NOTHING",
            [name],
        )?;
        Ok(())
    }

    /// The checkpoint stored under `name`, `None` when there is none.
    pub fn find(&self, name: &str) -> rusqlite::Result<Option<u64>> {
        if self.names()?.iter().all(|n| n != name) {
            return Ok(None);
        }
        self.get(name).map(Some)
    }

    /// Every checkpoint name in the store, sorted.
    pub fn names(&self) -> rusqlite::Result<Vec<String>> {
        let exists: bool = self.conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' \
             AND name = 'replication_checkpoints'",
            [],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(Vec::new());
        }
        let mut statement = self
            .conn
            .prepare("SELECT name FROM replication_checkpoints ORDER BY name")?;
        let names = statement.query_map([], |r| r.get(0))?;
        names.collect()
    }

    /// Removes the checkpoint `name`: the next publisher under that name starts from the
    /// beginning of the log (JetStream and the ingester de-duplicate by event id).
    pub fn reset(&self, name: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "DELETE FROM replication_checkpoints WHERE name = ?1",
            [name],
        )?;
        Ok(())
    }
}
