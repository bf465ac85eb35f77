//! Dead letters: events one side could not replicate, kept in the store file with their reason,
//! so that replication goes on past them and a person can look and retry.
//!
//! Table `replication_dead_letters`, created by this crate (like the checkpoint table) through a
//! connection of its own:
//!
//! - `side` is `push` (in the source store; `name` is the checkpoint name, `id` the source
//!   position: the event itself stays in the log) or `pull` (in the target store; `name` is the
//!   durable consumer, `id` the JetStream stream sequence, and the message is kept whole, subject,
//!   headers and payload, so that a retry needs neither NATS nor the message still being in the
//!   stream).
//! - Per-stream order is kept: once an event of a stream is dead-lettered, the later events of
//!   that stream are dead-lettered behind it ("held"), not replicated around a hole. A retry
//!   takes a side's dead letters in order and stops, per stream, at the first that fails again.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::checkpoint::BUSY_TIMEOUT;

const CREATE: &str = "CREATE TABLE IF NOT EXISTS replication_dead_letters (
    side            TEXT NOT NULL,
    name            TEXT NOT NULL,
    id              INTEGER NOT NULL,
    source_position INTEGER,
    stream_id       TEXT,
    event_id        TEXT,
    reason          TEXT NOT NULL,
    recorded_at     INTEGER NOT NULL,
    subject         TEXT,
    headers         TEXT,
    payload         BLOB,
    PRIMARY KEY (side, name, id)
) WITHOUT ROWID";

/// Which side recorded a dead letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The publisher (source store).
    Push,
    /// The ingester (target store).
    Pull,
}

impl Side {
    /// `push` or `pull`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Push => "push",
            Side::Pull => "pull",
        }
    }

    fn parse(text: &str) -> Option<Side> {
        match text {
            "push" => Some(Side::Push),
            "pull" => Some(Side::Pull),
            _ => None,
        }
    }
}

/// One dead letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The side that could not replicate it.
    pub side: Side,
    /// The checkpoint name (push) or durable consumer (pull).
    pub name: String,
    /// The source position (push) or JetStream stream sequence (pull).
    pub id: u64,
    /// The position in the source store, when known.
    pub source_position: Option<u64>,
    /// The source stream id, when known (a message that is not a strata event has none).
    pub stream_id: Option<String>,
    /// The event id, when known.
    pub event_id: Option<String>,
    /// Why it was not replicated.
    pub reason: String,
    /// When it was recorded (unix microseconds).
    pub recorded_at: i64,
    /// Pull only: the message's subject.
    pub subject: Option<String>,
    /// Pull only: the message's headers, one `Name: value` a line.
    pub headers: Option<String>,
    /// Pull only: the message's payload.
    pub payload: Option<Vec<u8>>,
}

/// A connection to the dead-letter table of one store file.
#[derive(Debug)]
pub struct DeadLetters {
    conn: Connection,
}

impl DeadLetters {
    /// Opens the store file at `path` (which must exist) and creates the table if missing.
    pub fn open(path: &Path) -> rusqlite::Result<DeadLetters> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.execute_batch(CREATE)?;
        Ok(DeadLetters { conn })
    }

    /// Opens the store file read-only, creating nothing: reads answer as if the table were
    /// empty when it does not exist.
    pub fn open_read_only(path: &Path) -> rusqlite::Result<DeadLetters> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(DeadLetters { conn })
    }

    fn exists(&self) -> rusqlite::Result<bool> {
        self.conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' \
             AND name = 'replication_dead_letters'",
            [],
            |r| r.get(0),
        )
    }

    /// Records `letter`; recording the same (side, name, id) again keeps the newest reason.
    pub fn record(&self, letter: &DeadLetter) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO replication_dead_letters (side, name, id, source_position, \
                 stream_id, event_id, reason, recorded_at, subject, headers, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (side, name, id) DO UPDATE SET reason = excluded.reason,
                     recorded_at = excluded.recorded_at",
            )?
            .execute(params![
                letter.side.as_str(),
                letter.name,
                letter.id as i64,
                letter.source_position.map(|p| p as i64),
                letter.stream_id,
                letter.event_id,
                letter.reason,
                letter.recorded_at,
                letter.subject,
                letter.headers,
                letter.payload,
            ])?;
        Ok(())
    }

    /// The dead letters of `side` (and of `name`, if given), oldest first (by side, name, id).
    pub fn list(
        &self,
        side: Option<Side>,
        name: Option<&str>,
    ) -> rusqlite::Result<Vec<DeadLetter>> {
        if !self.exists()? {
            return Ok(Vec::new());
        }
        let mut statement = self.conn.prepare_cached(
            "SELECT side, name, id, source_position, stream_id, event_id, reason, recorded_at, \
                    subject, headers, payload
             FROM replication_dead_letters
             WHERE (?1 IS NULL OR side = ?1) AND (?2 IS NULL OR name = ?2)
             ORDER BY side, name, id",
        )?;
        let rows = statement.query_map(params![side.map(Side::as_str), name], |r| {
            let side: String = r.get(0)?;
            Ok(DeadLetter {
                side: Side::parse(&side).unwrap_or(Side::Push),
                name: r.get(1)?,
                id: r.get::<_, i64>(2)? as u64,
                source_position: r.get::<_, Option<i64>>(3)?.map(|p| p as u64),
                stream_id: r.get(4)?,
                event_id: r.get(5)?,
                reason: r.get(6)?,
                recorded_at: r.get(7)?,
                subject: r.get(8)?,
                headers: r.get(9)?,
                payload: r.get(10)?,
            })
        })?;
        rows.collect()
    }

    /// How many dead letters `side` has under `name`.
    pub fn count(&self, side: Side, name: &str) -> rusqlite::Result<u64> {
        if !self.exists()? {
            return Ok(0);
        }
        let n: i64 = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM replication_dead_letters WHERE side = ?1 AND name = ?2",
            )?
            .query_row(params![side.as_str(), name], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// The first dead letter of source stream `stream_id` under (`side`, `name`), if any: later
    /// events of that stream wait behind it.
    pub fn first_of_stream(
        &self,
        side: Side,
        name: &str,
        stream_id: &str,
    ) -> rusqlite::Result<Option<u64>> {
        let id: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT min(id) FROM replication_dead_letters \
                 WHERE side = ?1 AND name = ?2 AND stream_id = ?3",
            )?
            .query_row(params![side.as_str(), name, stream_id], |r| r.get(0))
            .optional()?
            .flatten();
        Ok(id.map(|id| id as u64))
    }

    /// The source streams that have dead letters under (`side`, `name`).
    pub fn blocked_streams(
        &self,
        side: Side,
        name: &str,
    ) -> rusqlite::Result<std::collections::HashSet<String>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT DISTINCT stream_id FROM replication_dead_letters \
             WHERE side = ?1 AND name = ?2 AND stream_id IS NOT NULL",
        )?;
        let rows = statement.query_map(params![side.as_str(), name], |r| r.get(0))?;
        rows.collect()
    }

    /// Removes a dead letter once it has been replicated.
    pub fn remove(&self, side: Side, name: &str, id: u64) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "DELETE FROM replication_dead_letters WHERE side = ?1 AND name = ?2 AND id = ?3",
            )?
            .execute(params![side.as_str(), name, id as i64])?;
        Ok(())
    }
}

/// Now, in unix microseconds.
pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Tracks the streams held behind a dead letter during a run: a stream is held while the table
/// has a dead letter of it (a retry in another process may clear it: checked again each time).
#[derive(Debug)]
pub(crate) struct Holds {
    table: DeadLetters,
    side: Side,
    name: String,
    streams: std::collections::HashSet<String>,
}

impl Holds {
    pub(crate) fn open(path: &Path, side: Side, name: &str) -> rusqlite::Result<Holds> {
        let table = DeadLetters::open(path)?;
        let streams = table.blocked_streams(side, name)?;
        Ok(Holds {
            table,
            side,
            name: name.to_owned(),
            streams,
        })
    }

    /// The dead letter that `stream_id`'s next events wait behind, if any.
    pub(crate) fn held_by(&mut self, stream_id: &str) -> rusqlite::Result<Option<u64>> {
        if !self.streams.contains(stream_id) {
            return Ok(None);
        }
        let first = self
            .table
            .first_of_stream(self.side, &self.name, stream_id)?;
        if first.is_none() {
            self.streams.remove(stream_id);
        }
        Ok(first)
    }

    /// Records `letter` and holds its stream.
    pub(crate) fn record(&mut self, letter: &DeadLetter) -> rusqlite::Result<()> {
        self.table.record(letter)?;
        if let Some(stream) = &letter.stream_id {
            self.streams.insert(stream.clone());
        }
        Ok(())
    }

    pub(crate) fn table(&self) -> &DeadLetters {
        &self.table
    }
}
