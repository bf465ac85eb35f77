//! Opening SQLite connections with the pragmas each role needs.
//!
//! Why these settings (see also ARCHITECTURE.md):
//! - WAL, so readers never block the writer and the writer never blocks readers.
//! - `synchronous` FULL (Durable) or NORMAL (Fast): the durability option.
//! - A large page cache for the writer: the tails of the bucket table and of its indexes are
//!   rewritten by every commit; keeping them cached avoids re-reading them.
//! - A prepared-statement cache: the writer runs the same dozen statements for every request.
//! - `wal_autocheckpoint` raised to 4,096 pages: fewer, larger checkpoints on the write path.
//! - Readers are `query_only`, with a smaller cache and memory-mapped reads.

use std::path::PathBuf;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use crate::options::{Durability, Options};

/// Where the database lives.
#[derive(Clone, Debug)]
pub(crate) enum Location {
    /// A file on disk.
    File(PathBuf),
    /// A private in-memory database shared by this store's connections (SQLite's `memdb` VFS).
    Memory(String),
}

impl Location {
    /// A fresh, uniquely named in-memory database.
    pub(crate) fn new_memory() -> Location {
        Location::Memory(format!(
            "file:/strata-memory-{}?vfs=memdb",
            uuid::Uuid::new_v4()
        ))
    }

    /// The path shown in errors and logs.
    pub(crate) fn display_path(&self) -> PathBuf {
        match self {
            Location::File(path) => path.clone(),
            Location::Memory(uri) => PathBuf::from(uri),
        }
    }
}

/// What a connection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The one connection that appends.
    Writer,
    /// A pooled read connection.
    Reader,
    /// A connection that writes outside the event log (projection state, maintenance).
    Side,
}

const STATEMENT_CACHE_CAPACITY: usize = 64;
const READER_MMAP_BYTES: i64 = 256 * 1024 * 1024;

/// Opens a connection without touching the file's contents (no pragma that writes).
pub(crate) fn open_raw(location: &Location, options: &Options) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match location {
        Location::File(path) => match &options.vfs {
            Some(vfs) => Connection::open_with_flags_and_vfs(path, flags, vfs.as_str())?,
            None => Connection::open_with_flags(path, flags)?,
        },
        Location::Memory(uri) => Connection::open_with_flags(uri, flags)?,
    };
    conn.busy_timeout(Duration::from_millis(u64::from(options.busy_timeout_ms)))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    Ok(conn)
}

/// Applies the pragmas of `role` to a connection on a prepared (schema-checked) store.
pub(crate) fn configure(conn: &Connection, role: Role, options: &Options) -> rusqlite::Result<()> {
    let synchronous = match options.durability {
        Durability::Durable => "FULL",
        Durability::Fast => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // The query planner stability guarantee: without it the bundled SQLite (built with STAT4)
    // re-prepares a cached statement every time a new value is bound to a range constraint
    // (`version >= ?`, `position >= ?`), which cost more than the reads themselves.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    if let Some(pages) = options.max_page_count {
        // Returns the limit in force (never below the file's current size): not an error.
        let _limit: i64 = conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
            r.get(0)
        })?;
    }
    match role {
        Role::Writer => {
            conn.pragma_update(None, "cache_size", -(options.page_cache_kib as i64))?;
            conn.pragma_update(None, "wal_autocheckpoint", 4096)?;
        }
        Role::Reader => {
            conn.pragma_update(None, "cache_size", -((options.page_cache_kib / 4) as i64))?;
            conn.pragma_update(None, "mmap_size", READER_MMAP_BYTES)?;
            conn.pragma_update(None, "query_only", true)?;
        }
        Role::Side => {
            conn.pragma_update(None, "cache_size", -((options.page_cache_kib / 4) as i64))?;
        }
    }
    Ok(())
}

/// Opens and configures a connection for `role` on a prepared store.
pub(crate) fn open(
    location: &Location,
    role: Role,
    options: &Options,
) -> rusqlite::Result<Connection> {
    let conn = open_raw(location, options)?;
    configure(&conn, role, options)?;
    Ok(conn)
}
