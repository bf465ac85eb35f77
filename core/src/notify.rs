//! Commit notifications: the writer announces each commit; waiters wake on it (no polling).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::event::Position;
use crate::writer::CommitSummary;

/// The last committed position, with a condition variable that wakes waiters on each commit.
#[derive(Debug, Default)]
pub(crate) struct CommitNotifier {
    last_position: Mutex<Position>,
    changed: Condvar,
    /// Set when the writer has stopped: no more commits from this process.
    closed: AtomicBool,
}

impl CommitNotifier {
    pub(crate) fn new(last_position: Position) -> Self {
        CommitNotifier {
            last_position: Mutex::new(last_position),
            changed: Condvar::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Called by the writer after each commit.
    pub(crate) fn committed(&self, summary: CommitSummary) {
        let mut last = self.last_position.lock();
        if summary.last_position > *last {
            *last = summary.last_position;
        }
        drop(last);
        self.changed.notify_all();
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

    /// The last position committed by this process's writer (or found at open).
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
