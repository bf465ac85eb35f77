//! Commit notifications: the writer announces each commit; waiters wake on it (no polling).
//!
//! Commits by other processes sharing the file are announced by a watcher thread, started on
//! the first wait of a subscription ([`CommitNotifier::watch_other_processes`]): it keeps a
//! read-only connection of its own and checks SQLite's `PRAGMA data_version` every
//! [`EXTERNAL_POLL_INTERVAL`]. That counter belongs to the connection and changes whenever
//! another connection committed, which is why it needs a connection no one else uses (pooled
//! readers are shared between subscribers). A check is a read of the WAL index in shared memory
//! (no I/O), so polling at 1 ms costs a few microseconds per millisecond, and another process's
//! commit wakes waiters within about a millisecond instead of their 100 ms fallback wait.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rusqlite::{Connection, OpenFlags};

use crate::event::Position;
use crate::writer::CommitSummary;

/// How often the watcher checks `data_version` for commits by other processes.
pub(crate) const EXTERNAL_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// The last committed position, with a condition variable that wakes waiters on each commit.
#[derive(Debug, Default)]
pub(crate) struct CommitNotifier {
    last_position: Mutex<Position>,
    changed: Condvar,
    /// Set when the writer has stopped: no more commits from this process.
    closed: AtomicBool,
    /// Whether the watcher of other processes' commits runs (set once it started).
    watching: OnceLock<bool>,
}

impl CommitNotifier {
    pub(crate) fn new(last_position: Position) -> Self {
        CommitNotifier {
            last_position: Mutex::new(last_position),
            changed: Condvar::new(),
            closed: AtomicBool::new(false),
            watching: OnceLock::new(),
        }
    }

    /// Called by the writer after each commit.
    pub(crate) fn committed(&self, summary: CommitSummary) {
        self.advance(summary.last_position);
    }

    /// Records that positions up to `position` are committed (by any process) and wakes
    /// waiters if that is news.
    fn advance(&self, position: Position) {
        let mut last = self.last_position.lock();
        if position <= *last {
            return;
        }
        *last = position;
        drop(last);
        self.changed.notify_all();
    }

    /// Starts, once per store, the thread that announces commits by other processes (see the
    /// module docs). `path` is asked for only the first time; `None` (an in-memory store, which
    /// no other process can open) starts nothing. Returns whether the watcher runs: when it
    /// could not start, waiters must keep their bounded wait as the only way to notice.
    pub(crate) fn watch_other_processes(
        self: &Arc<Self>,
        path: impl FnOnce() -> Option<PathBuf>,
    ) -> bool {
        *self.watching.get_or_init(|| {
            let Some(path) = path() else {
                return false;
            };
            let (conn, version, head) = match open_watch_connection(&path) {
                Ok(opened) => opened,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch for other processes' commits; falling back to a periodic check");
                    return false;
                }
            };
            // The baseline is taken here, not in the thread: a commit made after this call
            // returns but before a slow thread first ran would otherwise be in the baseline and
            // never announced (the waiter would sleep to its fallback check).
            self.advance(head);
            let notifier = Arc::downgrade(self);
            std::thread::Builder::new()
                .name("strata-commit-watch".into())
                .spawn(move || watch(conn, version, notifier))
                .is_ok()
        })
    }

    /// Waits until a position after `seen` is committed or `timeout` passes; returns the last
    /// committed position.
    pub(crate) fn wait_past(&self, seen: Position, timeout: Duration) -> Position {
        let deadline = Instant::now() + timeout;
        let mut last = self.last_position.lock();
        while *last <= seen && !self.closed.load(Ordering::SeqCst) {
            if self.changed.wait_until(&mut last, deadline).timed_out() {
                break;
            }
        }
        *last
    }

    /// The last position committed by this process's writer (or found at open, or announced
    /// by the watcher of other processes).
    pub(crate) fn last_position(&self) -> Position {
        *self.last_position.lock()
    }

    /// Called by the writer when it stops; wakes every waiter.
    pub(crate) fn close(&self) {
        let guard = self.last_position.lock();
        self.closed.store(true, Ordering::SeqCst);
        drop(guard);
        self.changed.notify_all();
    }

    /// Whether the writer has stopped.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// Opens the watcher's own connection and reads, in this order, its `data_version` baseline
/// and the head: a commit after the baseline changes the version, so the thread announces it.
fn open_watch_connection(path: &std::path::Path) -> rusqlite::Result<(Connection, i64, Position)> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(1))?;
    let version = data_version(&conn)?;
    // Also fails now, not in the thread, if the file is not a store.
    let head = read_head(&conn)?;
    Ok((conn, version, head))
}

fn read_head(conn: &Connection) -> rusqlite::Result<Position> {
    let head: i64 = conn
        .prepare_cached("SELECT last_position FROM head WHERE id = 1")?
        .query_row([], |r| r.get(0))?;
    Ok(head.max(0) as Position)
}

fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("PRAGMA data_version")?
        .query_row([], |r| r.get(0))
}

/// How many reads in a row may fail (busy past the timeout, say) before the watcher gives up;
/// waiters then fall back to their bounded wait.
const WATCH_ERRORS_IN_A_ROW_MAX: u32 = 100;

/// The watcher thread: ends when the store is closed or dropped, or after
/// [`WATCH_ERRORS_IN_A_ROW_MAX`] failed reads in a row.
fn watch(conn: Connection, mut version: i64, notifier: Weak<CommitNotifier>) {
    let mut errors_in_a_row = 0;
    loop {
        std::thread::sleep(EXTERNAL_POLL_INTERVAL);
        let Some(notifier) = notifier.upgrade() else {
            return;
        };
        if notifier.is_closed() {
            return;
        }
        let seen = match data_version(&conn) {
            Ok(seen) => seen,
            Err(error) => {
                errors_in_a_row += 1;
                if errors_in_a_row >= WATCH_ERRORS_IN_A_ROW_MAX {
                    tracing::warn!(%error, "commit watcher stopped");
                    return;
                }
                continue;
            }
        };
        if seen == version {
            errors_in_a_row = 0;
            continue;
        }
        match read_head(&conn) {
            Ok(head) => {
                // Only now: a failed head read is retried at the next check.
                version = seen;
                errors_in_a_row = 0;
                notifier.advance(head);
            }
            Err(error) => {
                errors_in_a_row += 1;
                tracing::debug!(%error, "commit watcher could not read head");
                if errors_in_a_row >= WATCH_ERRORS_IN_A_ROW_MAX {
                    tracing::warn!(%error, "commit watcher stopped");
                    return;
                }
            }
        }
    }
}
