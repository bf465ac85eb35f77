//! The event bus: handlers subscribed to event types, each on its own thread, each resuming from
//! a named checkpoint stored in SQLite.
//!
//! A handler registered with [`EventBus::register`] runs on its own thread, driven by a
//! [`crate::Subscription`] filtered on its event types. Its checkpoint (the position up to which
//! every matching event has been handled) is kept in the table
//! `checkpoints(name TEXT PRIMARY KEY, position INTEGER NOT NULL)` under the name
//! `bus:<handler name>`, written through a side connection (not the writer's), every
//! `checkpoint_every` events and whenever the handler has caught up. A restarted application
//! resumes each handler after its checkpoint.
//!
//! **Delivery is at least once.** An event handled after the last stored checkpoint is handled
//! again after a crash or restart; handlers must be idempotent (the event id helps).
//!
//! **Failures are never skipped.** A handler error is retried with exponential backoff
//! (`initial_backoff`, doubling, capped at `max_backoff`) up to `max_attempts` times in all.
//! Then the handler stops, its status becomes [`HandlerStatus::Failed`] with the position and
//! the last error, and its checkpoint stays before the failing event, so the next registration
//! under the same name starts with that event again.

use std::collections::HashSet;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use parking_lot::{Condvar, Mutex};
use rusqlite::{params, OptionalExtension};

use crate::error::{InvalidInput, ReadError};
use crate::event::{Event, Position};
use crate::store::Store;
use crate::subscription::SubscriptionFilter;

/// Most attempts per event a handler may be configured with.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;
/// Longest backoff a handler may be configured with.
pub const MAX_BACKOFF_LIMIT: Duration = Duration::from_secs(600);
/// How long a handler thread blocks at most before it checks whether it should stop.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// Why the bus could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// A handler option is out of range, or the name is taken, empty or too long.
    #[error("invalid handler registration: {0}")]
    Invalid(#[from] InvalidInput),
    /// Reading the log failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// SQLite failed on the checkpoints table.
    #[error("SQLite error on checkpoints: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The handler thread could not be started.
    #[error("could not start the handler thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Retry and checkpoint settings of one handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerOptions {
    /// Attempts per event before the handler is stopped as failed (1..=100). Default 5.
    pub max_attempts: u32,
    /// Wait after the first failure; doubles after each further one. Default 10 ms.
    pub initial_backoff: Duration,
    /// Longest wait between attempts (at most 10 minutes). Default 1 s.
    pub max_backoff: Duration,
    /// Store the checkpoint at least every this many handled events (1..=100,000), besides
    /// whenever the handler has caught up. Default 100.
    pub checkpoint_every: usize,
    /// Page size of the handler's subscription. Default 1,000.
    pub page_size: usize,
}

impl Default for HandlerOptions {
    fn default() -> Self {
        HandlerOptions {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
            checkpoint_every: 100,
            page_size: crate::subscription::DEFAULT_PAGE_SIZE,
        }
    }
}

impl HandlerOptions {
    fn validate(&self) -> Result<(), InvalidInput> {
        let fail = |what: &str| Err(InvalidInput::Other(what.to_owned()));
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&self.max_attempts) {
            return fail("max_attempts must be 1..=100");
        }
        if self.max_backoff > MAX_BACKOFF_LIMIT || self.initial_backoff > self.max_backoff {
            return fail("backoffs must satisfy initial_backoff <= max_backoff <= 600 s");
        }
        if !(1..=100_000).contains(&self.checkpoint_every) {
            return fail("checkpoint_every must be 1..=100000");
        }
        Ok(())
    }
}

/// Where a handler is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandlerStatus {
    /// Handling events (or waiting for them).
    Running,
    /// Stopped on request, or because the store was closed.
    Stopped,
    /// Stopped because an event kept failing; the checkpoint is before `position`.
    Failed {
        /// The event that failed (0 when the failure was not about one event, such as a read
        /// error or a checkpoint that could not be stored).
        position: Position,
        /// The last error, as text.
        error: String,
        /// Attempts made.
        attempts: u32,
    },
}

/// What a handler's thread shares with its [`HandlerHandle`].
struct Shared {
    state: Mutex<SharedState>,
    changed: Condvar,
}

struct SharedState {
    status: HandlerStatus,
    /// The last checkpoint stored.
    checkpoint: Position,
}

impl Shared {
    fn update(&self, change: impl FnOnce(&mut SharedState)) {
        change(&mut self.state.lock());
        self.changed.notify_all();
    }
}

/// Publish/subscribe by event type over a store. Handlers run until stopped, their handle is
/// dropped, a handler fails, or the store is closed.
pub struct EventBus {
    store: Store,
    names: Arc<Mutex<HashSet<String>>>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("handlers", &self.names.lock().len())
            .finish_non_exhaustive()
    }
}

impl EventBus {
    /// A bus over `store`; handler checkpoints go to the schema's `checkpoints` table.
    pub fn new(store: &Store) -> Result<EventBus, BusError> {
        Ok(EventBus {
            store: store.clone(),
            names: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    /// The stored checkpoint of handler `name` (0: none yet).
    pub fn checkpoint(&self, name: &str) -> Result<Position, BusError> {
        let conn = self.store.open_side_connection()?;
        read_checkpoint(&conn, name)
    }

    /// Starts `handler` on its own thread for the events whose type is one of `event_types`,
    /// from after the checkpoint stored under `name`. One running handler per name in this bus.
    pub fn register<S, E, F>(
        &self,
        name: &str,
        event_types: &[S],
        options: HandlerOptions,
        handler: F,
    ) -> Result<HandlerHandle, BusError>
    where
        S: AsRef<str>,
        E: std::fmt::Display,
        F: FnMut(&Event) -> Result<(), E> + Send + 'static,
    {
        options.validate()?;
        if event_types.is_empty() {
            return Err(
                InvalidInput::Other("a handler needs at least one event type".into()).into(),
            );
        }
        if name.is_empty() || name.len() > 200 {
            return Err(InvalidInput::Other("handler name must be 1..=200 bytes".into()).into());
        }
        let conn = self.store.open_side_connection()?;
        let checkpoint = read_checkpoint(&conn, name)?;
        let subscription = self
            .store
            .subscribe(checkpoint + 1, SubscriptionFilter::event_types(event_types))?
            .with_page_size(options.page_size)?;
        if !self.names.lock().insert(name.to_owned()) {
            return Err(InvalidInput::Other(format!("handler {name:?} is already running")).into());
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(SharedState {
                status: HandlerStatus::Running,
                checkpoint,
            }),
            changed: Condvar::new(),
        });
        let (stop, stop_requested) = crossbeam_channel::bounded(1);
        let worker = Worker {
            name: name.to_owned(),
            conn,
            subscription,
            options,
            shared: shared.clone(),
            stop_requested,
            checkpoint,
            names: self.names.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("strata-bus-{name}"))
            .spawn(move || worker.run(handler))
            .map_err(|error| {
                self.names.lock().remove(name);
                BusError::Thread(error)
            })?;
        Ok(HandlerHandle {
            name: name.to_owned(),
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

fn checkpoint_key(name: &str) -> String {
    format!("bus:{name}")
}

fn read_checkpoint(conn: &rusqlite::Connection, name: &str) -> Result<Position, BusError> {
    let position: Option<i64> = conn
        .prepare_cached("SELECT position FROM checkpoints WHERE name = ?1")?
        .query_row([checkpoint_key(name)], |r| r.get(0))
        .optional()?;
    Ok(position.unwrap_or(0) as Position)
}

/// A running handler. Dropping it stops the handler (after the event in hand).
pub struct HandlerHandle {
    name: String,
    shared: Arc<Shared>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HandlerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerHandle")
            .field("name", &self.name)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl HandlerHandle {
    /// The handler's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its status now.
    pub fn status(&self) -> HandlerStatus {
        self.shared.state.lock().status.clone()
    }

    /// The last checkpoint it stored.
    pub fn checkpoint(&self) -> Position {
        self.shared.state.lock().checkpoint
    }

    /// Waits up to `timeout` until the stored checkpoint reaches `position` or the handler is no
    /// longer running; returns the checkpoint then.
    pub fn wait_for_checkpoint(&self, position: Position, timeout: Duration) -> Position {
        let deadline = std::time::Instant::now() + timeout;
        let mut state = self.shared.state.lock();
        while state.checkpoint < position && state.status == HandlerStatus::Running {
            if self
                .shared
                .changed
                .wait_until(&mut state, deadline)
                .timed_out()
            {
                break;
            }
        }
        state.checkpoint
    }

    /// Stops the handler, waits for its thread, and returns its final status.
    pub fn stop(mut self) -> HandlerStatus {
        self.shutdown();
        self.status()
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.try_send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HandlerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Worker {
    name: String,
    conn: rusqlite::Connection,
    subscription: crate::subscription::Subscription,
    options: HandlerOptions,
    shared: Arc<Shared>,
    stop_requested: Receiver<()>,
    /// The last checkpoint stored.
    checkpoint: Position,
    names: Arc<Mutex<HashSet<String>>>,
}

/// How a handler's thread ended.
enum Exit {
    Stopped,
    Failed {
        position: Position,
        error: String,
        attempts: u32,
    },
}

impl Worker {
    fn run<E: std::fmt::Display>(mut self, mut handler: impl FnMut(&Event) -> Result<(), E>) {
        let exit = self.work(&mut handler);
        let status = match exit {
            Exit::Stopped => HandlerStatus::Stopped,
            Exit::Failed {
                position,
                error,
                attempts,
            } => {
                tracing::error!(handler = %self.name, position, %error, attempts, "event bus handler failed and stopped");
                HandlerStatus::Failed {
                    position,
                    error,
                    attempts,
                }
            }
        };
        self.names.lock().remove(&self.name);
        self.shared.update(|state| state.status = status);
    }

    fn stop_requested(&self) -> bool {
        !matches!(self.stop_requested.try_recv(), Err(TryRecvError::Empty))
    }

    fn work<E: std::fmt::Display>(
        &mut self,
        handler: &mut impl FnMut(&Event) -> Result<(), E>,
    ) -> Exit {
        let mut since_checkpoint = 0usize;
        // The last event handled.
        let mut handled = self.checkpoint;
        loop {
            if self.stop_requested() {
                if let Err(failed) = self.save(handled) {
                    return failed;
                }
                return self.save_caught_up().unwrap_or(Exit::Stopped);
            }
            let event = match self.subscription.next_timeout(STOP_CHECK) {
                Ok(Some(event)) => event,
                Ok(None) => {
                    if let Some(exit) = self.save_caught_up() {
                        return exit;
                    }
                    if self.subscription_closed() {
                        return Exit::Stopped;
                    }
                    continue;
                }
                Err(error) => {
                    return Exit::Failed {
                        position: 0,
                        error: error.to_string(),
                        attempts: 1,
                    }
                }
            };
            if let Some(exit) = self.handle(handler, &event) {
                // Every matching event before this one was handled: keep that progress.
                return match self.save(event.position - 1) {
                    Ok(()) => exit,
                    Err(failed) => failed,
                };
            }
            handled = event.position;
            since_checkpoint += 1;
            let target = if self.subscription.buffered() == 0 {
                self.subscription.next_position() - 1
            } else {
                event.position
            };
            if since_checkpoint >= self.options.checkpoint_every
                || self.subscription.buffered() == 0
            {
                if let Err(exit) = self.save(target) {
                    return exit;
                }
                since_checkpoint = 0;
            }
        }
    }

    fn subscription_closed(&self) -> bool {
        self.subscription.store().notifier().is_closed()
    }

    /// Handles one event with retries; `Some` when the handler must stop.
    fn handle<E: std::fmt::Display>(
        &mut self,
        handler: &mut impl FnMut(&Event) -> Result<(), E>,
        event: &Event,
    ) -> Option<Exit> {
        let mut backoff = self.options.initial_backoff;
        for attempt in 1..=self.options.max_attempts {
            let error = match handler(event) {
                Ok(()) => return None,
                Err(error) => error.to_string(),
            };
            tracing::warn!(handler = %self.name, position = event.position, attempt, %error, "event bus handler failed");
            if attempt == self.options.max_attempts {
                return Some(Exit::Failed {
                    position: event.position,
                    error,
                    attempts: attempt,
                });
            }
            // The backoff wait ends early when a stop is requested: the event is then not
            // handled, and the checkpoint stays before it.
            match self.stop_requested.recv_timeout(backoff) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return Some(Exit::Stopped),
            }
            backoff = (backoff * 2).min(self.options.max_backoff);
        }
        None
    }

    /// Stores the checkpoint when the subscription has caught up past it.
    fn save_caught_up(&mut self) -> Option<Exit> {
        if self.subscription.buffered() == 0 {
            let scanned = self.subscription.next_position() - 1;
            if scanned > self.checkpoint {
                return self.save(scanned).err();
            }
        }
        None
    }

    fn save(&mut self, position: Position) -> Result<(), Exit> {
        if position <= self.checkpoint {
            return Ok(());
        }
        self.conn
            .prepare_cached(
                "INSERT INTO checkpoints (name, position) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            )
            .and_then(|mut statement| {
                statement.execute(params![checkpoint_key(&self.name), position as i64])
            })
            .map_err(|error| Exit::Failed {
                position: 0,
                error: format!("could not store the checkpoint: {error}"),
                attempts: 1,
            })?;
        self.checkpoint = position;
        self.shared.update(|state| state.checkpoint = position);
        Ok(())
    }
}
