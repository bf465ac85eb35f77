//! Subscriptions: history from a position, then live events, in order, with no gap and no
//! duplicate at the hand-over.
//!
//! A subscription never receives events pushed by the writer. It always reads from SQLite, by
//! position, a page at a time: its cursor is the next position to scan, and every page advances
//! it past what the page's snapshot covered. The writer's only part is to wake waiters after each
//! commit ([`Store::wait_for_commit`]'s condition variable), saying "positions up to P are
//! committed". Hence:
//!
//! - **No gap, no duplicate, in order**: positions are gap-free and equal to commit order, a
//!   commit is visible to readers before the writer announces it, and the cursor only moves past
//!   positions that a read snapshot has covered. History and live events are the same code path;
//!   there is no hand-over to get wrong.
//! - **Bounded memory**: a subscription holds at most one page (`page_size` events). A lagging
//!   subscriber does not make anything grow; it simply reads older pages later.
//! - **A slow subscriber blocks nobody**: the writer only signals a condition variable.
//!
//! Filters (one stream, a stream prefix, event types, or a combination) are pushed down into the
//! SQL of each page read.
//!
//! **Commits by other processes.** The writer of this process wakes waiters at once. Commits by
//! another process sharing the file (the CLI, another app) are announced through the same
//! condition variable by the store's commit watcher (`notify.rs`: one thread per store, started
//! by the first waiting subscription, watching SQLite's `data_version` on a connection of its
//! own every millisecond). As a fallback for when that watcher cannot run, a waiting
//! subscription also bounds its wait by `external_check_interval` (default 100 ms) and then
//! reads the next page (a cheap indexed read that returns nothing when there is nothing new).
//! Set the interval to `None` when only this process writes: then neither the watcher nor the
//! periodic read happens.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendTimeoutError};

use crate::catalog;
use crate::error::{InvalidInput, ReadError};
use crate::event::{Event, Position};
use crate::options::limits;
use crate::query::Query;
use crate::reader::{self, EventFilter};
use crate::store::Store;

/// Events per page a subscription reads (and so holds at most), by default.
pub const DEFAULT_PAGE_SIZE: usize = 1_000;
/// How often a waiting subscription looks for commits by other processes, by default.
pub const DEFAULT_EXTERNAL_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Most events a [`SubscriptionReceiver`]'s channel may hold.
pub const MAX_CHANNEL_CAPACITY: usize = 100_000;
/// How long the receiver's thread blocks at most before it checks whether it should stop.
const PUMP_STOP_CHECK: Duration = Duration::from_millis(50);

/// Which events a subscription delivers. The parts combine: an event must match all that are
/// set. The default delivers everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionFilter {
    /// Only the events of this stream.
    pub stream: Option<String>,
    /// Only events of streams whose id starts with this.
    pub stream_prefix: Option<String>,
    /// Only events of these types.
    pub event_types: Option<Vec<String>>,
    /// Only events matching this DCB query, read through the tag index.
    pub query: Option<Query>,
}

impl SubscriptionFilter {
    /// Every event.
    pub fn all() -> Self {
        SubscriptionFilter::default()
    }

    /// The events of one stream.
    pub fn stream(stream_id: impl Into<String>) -> Self {
        SubscriptionFilter {
            stream: Some(stream_id.into()),
            ..Default::default()
        }
    }

    /// The events of every stream whose id starts with `prefix`.
    pub fn stream_prefix(prefix: impl Into<String>) -> Self {
        SubscriptionFilter {
            stream_prefix: Some(prefix.into()),
            ..Default::default()
        }
    }

    /// The events whose type is one of `event_types`.
    pub fn event_types<S: AsRef<str>>(event_types: &[S]) -> Self {
        SubscriptionFilter::all().with_event_types(event_types)
    }

    /// This filter, further restricted to the given event types (an empty list matches
    /// nothing).
    pub fn with_event_types<S: AsRef<str>>(mut self, event_types: &[S]) -> Self {
        let mut names: Vec<String> = event_types
            .iter()
            .map(|name| name.as_ref().to_owned())
            .collect();
        names.sort_unstable();
        names.dedup();
        self.event_types = Some(names);
        self
    }

    /// The events matching a DCB query (see [`Query`]).
    pub fn query(query: Query) -> Self {
        SubscriptionFilter {
            query: Some(query),
            ..Default::default()
        }
    }

    /// Whether `event` passes this filter (the same test the SQL makes).
    pub fn matches(&self, event: &Event) -> bool {
        self.stream
            .as_deref()
            .is_none_or(|stream| &*event.stream_id == stream)
            && self
                .stream_prefix
                .as_deref()
                .is_none_or(|prefix| event.stream_id.starts_with(prefix))
            && self
                .event_types
                .as_ref()
                .is_none_or(|types| types.iter().any(|t| *t == *event.event_type))
            && self.query.as_ref().is_none_or(|query| query.matches(event))
    }
}

impl Store {
    /// Subscribes to the events matching `filter` from position `from` (inclusive; 0 or 1 for
    /// the whole log, `last_position() + 1` for live events only): history first, then live
    /// events as they are committed, in position order, without gap or duplicate.
    pub fn subscribe(
        &self,
        from: Position,
        filter: SubscriptionFilter,
    ) -> Result<Subscription, ReadError> {
        Subscription::new(self.clone(), from, filter)
    }
}

/// A subscription: a cursor over the log that waits for new commits. See the module docs.
///
/// Use [`Subscription::next_timeout`] to wait a bounded time, the blocking [`Iterator`] (ends
/// once the store is closed and every committed event was delivered), or
/// [`Subscription::into_receiver`] for a crossbeam channel to `select!` on.
pub struct Subscription {
    store: Store,
    filter: SubscriptionFilter,
    /// The SQL filter; its `from` is the cursor: the next position to scan.
    sql: EventFilter,
    /// Event type names not yet resolved to keys (a type that does not exist yet has no events).
    types_pending: bool,
    /// The stream named by the filter has not been found yet.
    stream_pending: bool,
    /// The rest of the last page read (no copy: the page's own buffer).
    page: std::vec::IntoIter<Event>,
    page_size: usize,
    external_check: Option<Duration>,
    /// When SQLite was last read (`None`: never).
    last_read: Option<Instant>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("filter", &self.filter)
            .field("next_position", &self.sql.from)
            .field("buffered", &self.page.len())
            .finish_non_exhaustive()
    }
}

impl Subscription {
    fn new(store: Store, from: Position, filter: SubscriptionFilter) -> Result<Self, ReadError> {
        for name in filter.event_types.iter().flatten() {
            if name.is_empty() || name.len() > limits::MAX_EVENT_TYPE_BYTES {
                return Err(InvalidInput::EventTypeLength { len: name.len() }.into());
            }
        }
        if let Some(query) = &filter.query {
            query.validate()?;
        }
        if let Some(stream) = &filter.stream {
            if stream.is_empty() || stream.len() > limits::MAX_STREAM_ID_BYTES {
                return Err(InvalidInput::StreamIdLength { len: stream.len() }.into());
            }
        }
        let sql = EventFilter {
            from: from.max(1),
            type_keys: None,
            time_range: None,
            stream_prefix: filter.stream_prefix.clone(),
            stream_key: None,
        };
        Ok(Subscription {
            store,
            types_pending: filter.event_types.is_some(),
            stream_pending: filter.stream.is_some(),
            filter,
            sql,
            page: Vec::new().into_iter(),
            page_size: DEFAULT_PAGE_SIZE,
            external_check: Some(DEFAULT_EXTERNAL_CHECK_INTERVAL),
            last_read: None,
        })
    }

    /// Sets how many events one read fetches, and so the most this subscription holds
    /// (1..=`limits::MAX_PAGE_SIZE`). Takes effect from the next read.
    pub fn with_page_size(mut self, page_size: usize) -> Result<Self, ReadError> {
        reader::check_page_size(page_size)?;
        self.page_size = page_size;
        Ok(self)
    }

    /// Sets how often a waiting subscription reads SQLite without a notification, to notice
    /// commits by other processes; `None` relies on this process's writer only.
    pub fn with_external_check_interval(mut self, interval: Option<Duration>) -> Self {
        self.external_check = interval;
        self
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The filter.
    pub fn filter(&self) -> &SubscriptionFilter {
        &self.filter
    }

    /// The next position this subscription will scan: every matching event before it has been
    /// delivered or is buffered. After the buffer is drained, a consumer that has handled every
    /// delivered event may checkpoint `next_position() - 1`.
    pub fn next_position(&self) -> Position {
        self.page
            .as_slice()
            .first()
            .map_or(self.sql.from, |e| e.position)
    }

    /// Events read from SQLite but not yet delivered: never more than the page size.
    pub fn buffered(&self) -> usize {
        self.page.len()
    }

    /// Approximate bytes of the buffered events ([`Event::approximate_size`]).
    pub fn buffered_bytes(&self) -> usize {
        self.page
            .as_slice()
            .iter()
            .map(Event::approximate_size)
            .sum()
    }

    /// The page size: the bound on [`Subscription::buffered`].
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// The next event if one is committed, without waiting (it may read SQLite).
    pub fn try_next(&mut self) -> Result<Option<Event>, ReadError> {
        if self.page.len() == 0 {
            self.read_page()?;
        }
        Ok(self.page.next())
    }

    /// The next event, waiting up to `timeout` for one to be committed. `Ok(None)` when the
    /// timeout passed, or when the store is closed and every committed event was delivered.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Event>, ReadError> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(event) = self.page.next() {
                return Ok(Some(event));
            }
            let announced = self.store.notifier().last_position();
            let check_due = match (self.last_read, self.external_check) {
                (None, _) => true,
                (Some(at), Some(interval)) => at.elapsed() >= interval,
                (Some(_), None) => false,
            };
            if announced >= self.sql.from || check_due {
                self.read_page()?;
                if self.page.len() > 0 {
                    continue;
                }
            }
            let notifier = self.store.notifier();
            if notifier.is_closed() && notifier.last_position() < self.sql.from {
                return Ok(None);
            }
            let now = Instant::now();
            let mut wait = match deadline {
                Some(deadline) if deadline <= now => return Ok(None),
                Some(deadline) => deadline - now,
                None => Duration::from_secs(3_600),
            };
            if let (Some(at), Some(interval)) = (self.last_read, self.external_check) {
                // Other processes' commits are announced by the notifier's watcher; the bounded
                // wait stays as the fallback for when it could not start or has stopped.
                let store = &self.store;
                notifier.watch_other_processes(|| store.path());
                wait = wait.min(interval.saturating_sub(at.elapsed()));
            }
            notifier.wait_past(self.sql.from - 1, wait);
        }
    }

    /// Reads the next page from SQLite into the (empty) buffer and advances the cursor past
    /// everything the read's snapshot covered.
    fn read_page(&mut self) -> Result<(), ReadError> {
        debug_assert_eq!(self.page.len(), 0);
        let names = if self.types_pending {
            self.filter.event_types.clone()
        } else {
            None
        };
        let stream = if self.stream_pending {
            self.filter.stream.clone()
        } else {
            None
        };
        let page_size = self.page_size;
        let query = self.filter.query.as_ref();
        let sql = &mut self.sql;
        let (head, page, types_found, stream_found) =
            self.store.readers().with_snapshot(|conn, pool| {
                let head: i64 = conn
                    .prepare_cached("SELECT last_position FROM head WHERE id = 1")?
                    .query_row([], |r| r.get(0))?;
                let head = head as Position;
                let mut types_found = false;
                if let Some(names) = &names {
                    let keys = pool.type_keys(conn, names)?;
                    types_found = keys.len() == names.len();
                    sql.type_keys = Some(keys);
                }
                let mut stream_found = false;
                if let Some(stream) = &stream {
                    if let Some((key, _)) = catalog::find_stream(conn, stream)? {
                        sql.stream_key = Some(key);
                        stream_found = true;
                    }
                }
                let unknown_stream = stream.is_some() && !stream_found;
                let page = if sql.from > head || unknown_stream {
                    Vec::new()
                } else if let Some(query) = query {
                    // The query drives the read; the filter's other parts narrow its page.
                    crate::dcb::read_query_in(conn, pool, query, sql.from - 1, page_size)?
                } else {
                    reader::read_filtered(conn, pool, sql, page_size)?
                };
                Ok((head, page, types_found, stream_found))
            })?;
        if types_found {
            self.types_pending = false;
        }
        if stream_found {
            self.stream_pending = false;
        }
        self.last_read = Some(Instant::now());
        let scanned_through = if page.len() == page_size {
            page.last().map_or(head, |e| e.position)
        } else {
            head
        };
        self.sql.from = self.sql.from.max(scanned_through + 1);
        let mut page = page;
        if self.filter.query.is_some() {
            page.retain(|event| self.filter.matches(event));
        }
        self.page = page.into_iter();
        Ok(())
    }

    /// Moves the subscription to its own thread, which feeds a bounded crossbeam channel of
    /// `capacity` events (1..=[`MAX_CHANNEL_CAPACITY`]), for `select!`-style use. The thread
    /// blocks when the channel is full (holding at most one page besides), and stops when the
    /// receiver is dropped, the store is closed and drained, or after sending a read error.
    pub fn into_receiver(self, capacity: usize) -> Result<SubscriptionReceiver, ReadError> {
        if capacity == 0 || capacity > MAX_CHANNEL_CAPACITY {
            return Err(InvalidInput::Other(format!(
                "channel capacity must be 1..={MAX_CHANNEL_CAPACITY}, got {capacity}"
            ))
            .into());
        }
        let (sender, receiver) = crossbeam_channel::bounded(capacity);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let mut subscription = self;
        let thread = std::thread::Builder::new()
            .name("strata-subscription".into())
            .spawn(move || {
                while !thread_stop.load(Ordering::Relaxed) {
                    let mut item = match subscription.next_timeout(PUMP_STOP_CHECK) {
                        Ok(Some(event)) => Ok(event),
                        Ok(None) if subscription.store.notifier().is_closed() => return,
                        Ok(None) => continue,
                        Err(error) => Err(error),
                    };
                    let failed = item.is_err();
                    loop {
                        match sender.send_timeout(item, PUMP_STOP_CHECK) {
                            Ok(()) => break,
                            Err(SendTimeoutError::Disconnected(_)) => return,
                            Err(SendTimeoutError::Timeout(back)) => {
                                if thread_stop.load(Ordering::Relaxed) {
                                    return;
                                }
                                item = back;
                            }
                        }
                    }
                    if failed {
                        return;
                    }
                }
            })
            .map_err(|error| InvalidInput::Other(format!("could not start a thread: {error}")))?;
        Ok(SubscriptionReceiver {
            receiver,
            stop,
            thread: Some(thread),
        })
    }
}

impl Iterator for Subscription {
    type Item = Result<Event, ReadError>;

    /// Blocks until the next event; ends once the store is closed and drained. An error is
    /// returned once; the subscription can be resumed afterwards.
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_timeout(Duration::from_secs(3_600)) {
                Ok(Some(event)) => return Some(Ok(event)),
                Ok(None) if self.store.notifier().is_closed() => return None,
                Ok(None) => continue,
                Err(error) => return Some(Err(error)),
            }
        }
    }
}

/// A subscription running on its own thread, delivering into a bounded channel. Dropping it
/// stops the thread.
pub struct SubscriptionReceiver {
    receiver: Receiver<Result<Event, ReadError>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SubscriptionReceiver {
    /// The channel: events in position order; a read error, if any, is the last item.
    pub fn receiver(&self) -> &Receiver<Result<Event, ReadError>> {
        &self.receiver
    }

    /// Events waiting in the channel (at most its capacity).
    pub fn len(&self) -> usize {
        self.receiver.len()
    }

    /// Whether the channel is empty.
    pub fn is_empty(&self) -> bool {
        self.receiver.is_empty()
    }
}

impl Drop for SubscriptionReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
