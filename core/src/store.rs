//! [`Store`]: the public handle. Opening, appending, reading.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use crate::cache::{self as event_cache, CacheStats, EventCache};
use crate::catalog::{self, BucketInfo, StreamInfo};
use crate::connection::{self, Location, Role};
use crate::error::{AppendError, InvalidInput, OpenError, ReadError};
use crate::event::{
    AppendResult, Event, ExpectedVersion, NewEvent, Position, StreamAppend, StreamVersion,
};
use crate::metrics::Metrics;
use crate::notify::CommitNotifier;
use crate::options::{limits, BucketWidth, Options};
use crate::reader::{self, Direction, EventFilter, ReadPool};
use crate::schema;
use crate::writer::{AppendRequest, Writer};

/// Events per page fetched by the iterators.
const ITERATOR_PAGE_SIZE: usize = 1_000;

/// An open event store. Cheap to clone; all clones share one writer and one read pool, and the
/// store closes when the last clone is dropped (or [`Store::close`] is called).
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    location: Location,
    options: Options,
    bucket_width: BucketWidth,
    /// `None` once closed.
    requests: Mutex<Option<Sender<crate::writer::AppendRequest>>>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    readers: ReadPool,
    notifier: Arc<CommitNotifier>,
    metrics: Arc<Metrics>,
    /// The LRU cache in front of `read_stream` and `read_all`.
    cache: EventCache,
    /// For in-memory stores: a connection that keeps the database alive after the writer stops
    /// (a memdb database is freed with its last connection).
    _memory_keeper: Option<Mutex<rusqlite::Connection>>,
}

impl Drop for StoreInner {
    fn drop(&mut self) {
        self.requests.lock().take();
        if let Some(thread) = self.writer_thread.lock().take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.inner.location)
            .field("bucket_width", &self.inner.bucket_width)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store at `path`, creating it if the file does not exist (or is empty).
    ///
    /// Refuses, leaving the file untouched: a file that is not SQLite, an SQLite file that is not
    /// a strata store, and a store from a newer strata.
    pub fn open(path: impl AsRef<Path>, options: Options) -> Result<Store, OpenError> {
        Store::open_at(Location::File(path.as_ref().to_path_buf()), options)
    }

    /// Opens a new, private store held in memory; it disappears when the store is closed.
    /// Same engine and the same guarantees, except surviving the process.
    pub fn open_in_memory(options: Options) -> Result<Store, OpenError> {
        Store::open_at(Location::new_memory(), options)
    }

    fn open_at(location: Location, options: Options) -> Result<Store, OpenError> {
        options.validate()?;
        let mut conn = connection::open_raw(&location, &options)?;
        let bucket_width =
            schema::prepare(&mut conn, &location.display_path(), options.bucket_width)?;
        connection::configure(&conn, Role::Writer, &options)?;
        let last_position: i64 =
            conn.query_row("SELECT last_position FROM head WHERE id = 1", [], |r| {
                r.get(0)
            })?;
        let notifier = Arc::new(CommitNotifier::new(last_position as u64));
        let memory_keeper = match location {
            Location::Memory(_) => Some(Mutex::new(connection::open(
                &location,
                Role::Reader,
                &options,
            )?)),
            Location::File(_) => None,
        };

        let (sender, receiver) = crossbeam_channel::bounded(options.writer_queue_len);
        let metrics = Arc::new(Metrics::new());
        let writer = Writer::new(
            conn,
            receiver,
            options.clock.clone(),
            bucket_width,
            notifier.clone(),
            metrics.clone(),
            options.index_merge_entries,
        );
        let writer_thread = std::thread::Builder::new()
            .name("strata-writer".into())
            .spawn(move || writer.run())
            .map_err(OpenError::Thread)?;

        let cache = EventCache::new(options.cache_bytes);
        Ok(Store {
            inner: Arc::new(StoreInner {
                readers: ReadPool::new(location.clone(), options.clone()),
                location,
                options,
                bucket_width,
                requests: Mutex::new(Some(sender)),
                writer_thread: Mutex::new(Some(writer_thread)),
                notifier,
                metrics,
                cache,
                _memory_keeper: memory_keeper,
            }),
        })
    }

    /// The path of the store file (`None` for an in-memory store).
    pub fn path(&self) -> Option<PathBuf> {
        match &self.inner.location {
            Location::File(path) => Some(path.clone()),
            Location::Memory(_) => None,
        }
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// The bucket width fixed when the store was created.
    pub fn bucket_width(&self) -> BucketWidth {
        self.inner.bucket_width
    }

    /// Appends `events` to one stream if its version satisfies `expected`.
    ///
    /// Returns once the events are committed (and fsynced when Durable). All or nothing.
    pub fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, AppendError> {
        let mut results =
            self.append_multi(vec![StreamAppend::new(stream_id, expected, events)])?;
        debug_assert_eq!(results.len(), 1);
        Ok(results.remove(0))
    }

    /// Appends to several streams atomically, each with its own expected version: either every
    /// part is stored or none is. Results come in the order of `parts`.
    pub fn append_multi(&self, parts: Vec<StreamAppend>) -> Result<Vec<AppendResult>, AppendError> {
        self.send_append(parts, None)
    }

    /// Validates an append (and its condition), gives every event its id and its tags their
    /// stored order, and hands it to the writer.
    pub(crate) fn send_append(
        &self,
        mut parts: Vec<StreamAppend>,
        condition: Option<crate::query::AppendCondition>,
    ) -> Result<Vec<AppendResult>, AppendError> {
        for part in &mut parts {
            for event in &mut part.events {
                crate::tags::normalize(&mut event.tags);
            }
        }
        validate_append(&parts, &self.inner.options)?;
        if let Some(condition) = &condition {
            condition.fail_if_events_match.validate()?;
        }
        for part in &mut parts {
            for event in &mut part.events {
                event.event_id.get_or_insert_with(crate::event_id::generate);
            }
        }
        let (reply, result) = crossbeam_channel::bounded(1);
        let request = AppendRequest {
            parts,
            condition,
            reply,
            enqueued: std::time::Instant::now(),
        };
        {
            // Clone the sender so that a slow `send` (queue full) does not hold the lock.
            let sender = self
                .inner
                .requests
                .lock()
                .clone()
                .ok_or(AppendError::Closed)?;
            sender.send(request).map_err(|_| AppendError::Closed)?;
        }
        result.recv().map_err(|_| AppendError::Closed)?
    }

    /// Up to `max_count` events of `stream_id`, starting at version `from` (inclusive) and going
    /// in `direction`. Backwards from the end: `from = u64::MAX`. An unknown stream reads empty.
    pub fn read_stream(
        &self,
        stream_id: &str,
        from: StreamVersion,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<Event>, ReadError> {
        event_cache::read_stream(
            &self.inner.cache,
            &self.inner.readers,
            stream_id,
            from,
            direction,
            max_count,
        )
    }

    /// Every event of `stream_id` in `direction`, fetched page by page.
    pub fn iter_stream(&self, stream_id: &str, direction: Direction) -> EventIter {
        let from = match direction {
            Direction::Forwards => 1,
            Direction::Backwards => u64::MAX,
        };
        EventIter::new(
            self.clone(),
            Cursor::Stream {
                stream_id: stream_id.to_owned(),
                next_version: from,
                direction,
            },
        )
    }

    /// Up to `max_count` events from position `from` (inclusive), in position order.
    pub fn read_all(&self, from: Position, max_count: usize) -> Result<Vec<Event>, ReadError> {
        event_cache::read_all(&self.inner.cache, &self.inner.readers, from, max_count)
    }

    /// Every event from position `from`, fetched page by page.
    pub fn iter_all(&self, from: Position) -> EventIter {
        EventIter::new(self.clone(), Cursor::Filtered(EventFilter::all(from), None))
    }

    /// Up to `max_count` events whose type is one of `event_types`, recorded within `recorded`
    /// (unix microseconds, half-open), from position `from`, in position order.
    pub fn read_by_type(
        &self,
        event_types: &[&str],
        recorded: Range<i64>,
        from: Position,
        max_count: usize,
    ) -> Result<Vec<Event>, ReadError> {
        let names: Vec<String> = event_types.iter().map(|s| s.to_string()).collect();
        self.inner.readers.with_snapshot(|conn, pool| {
            let filter = EventFilter {
                from,
                type_keys: Some(pool.type_keys(conn, &names)?),
                time_range: Some((recorded.start, recorded.end)),
                stream_prefix: None,
                stream_key: None,
            };
            reader::read_filtered(conn, pool, &filter, max_count)
        })
    }

    /// Every event of the given types recorded within `recorded`, fetched page by page.
    pub fn iter_by_type(&self, event_types: &[&str], recorded: Range<i64>) -> EventIter {
        let names = event_types.iter().map(|s| s.to_string()).collect();
        let filter = EventFilter {
            from: 1,
            type_keys: None,
            time_range: Some((recorded.start, recorded.end)),
            stream_prefix: None,
            stream_key: None,
        };
        EventIter::new(self.clone(), Cursor::Filtered(filter, Some(names)))
    }

    /// A stream's current version and position range; `None` if it has no events.
    ///
    /// The `streams` row is not checksummed, so it is checked against the stream's last event,
    /// which is: a row that disagrees is reported as [`ReadError::Corrupt`].
    pub fn stream_info(&self, stream_id: &str) -> Result<Option<StreamInfo>, ReadError> {
        self.inner.readers.with_snapshot(|conn, pool| {
            let Some((_, info)) = catalog::find_stream(conn, stream_id)? else {
                return Ok(None);
            };
            let last = reader::read_all(conn, pool, info.last_position.max(1), 1)?;
            match last.first() {
                Some(event)
                    if event.position == info.last_position
                        && *event.stream_id == *stream_id
                        && event.version == info.version =>
                {
                    Ok(Some(info))
                }
                other => Err(ReadError::Corrupt {
                    position: info.last_position,
                    reason: format!(
                        "the streams row of {stream_id:?} (version {}, last position {}) does not match the event there: {:?}",
                        info.version,
                        info.last_position,
                        other.map(|e| (e.position, &e.stream_id, e.version))
                    ),
                }),
            }
        })
    }

    /// The bucket catalog, oldest first.
    pub fn buckets(&self) -> Result<Vec<BucketInfo>, ReadError> {
        let conn = self.inner.readers.get()?;
        Ok(catalog::list_buckets(&conn)?)
    }

    /// The position of the last committed event (0 for an empty store), as stored in the file:
    /// commits by other processes count too.
    pub fn last_position(&self) -> Result<Position, ReadError> {
        let conn = self.inner.readers.get()?;
        let last: i64 = conn
            .prepare_cached("SELECT last_position FROM head WHERE id = 1")?
            .query_row([], |r| r.get(0))?;
        Ok(last as u64)
    }

    /// Stops the writer after it has committed every queued append. Later appends fail with
    /// `Closed`; reads through other clones keep working. Idempotent.
    pub fn close(&self) {
        self.inner.requests.lock().take();
        if let Some(thread) = self.inner.writer_thread.lock().take() {
            let _ = thread.join();
        }
    }

    /// Waits until this process's writer commits a position after `after`, or `timeout` passes.
    /// Returns the last position committed by this process. No polling: the writer wakes waiters.
    pub fn wait_for_commit(&self, after: Position, timeout: std::time::Duration) -> Position {
        self.inner.notifier.wait_past(after, timeout)
    }

    pub(crate) fn metrics_handle(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn location(&self) -> &Location {
        &self.inner.location
    }

    /// Hits, misses, evictions and size of the event cache (see [`Options::cache_bytes`]).
    pub fn cache_stats(&self) -> CacheStats {
        self.inner.cache.stats()
    }

    pub(crate) fn readers(&self) -> &ReadPool {
        &self.inner.readers
    }

    /// Forgets every cached event: after archiving or dropping a bucket, reads of its range
    /// must say where the events went rather than answer from memory.
    pub(crate) fn clear_event_cache(&self) {
        self.inner.cache.clear();
    }

    pub(crate) fn notifier(&self) -> &Arc<CommitNotifier> {
        &self.inner.notifier
    }

    /// A new read-write connection to the store file, beside the writer's (WAL allows it; it
    /// waits `busy_timeout_ms` for the write lock). For writes outside the event log: projection
    /// state, checkpoints, snapshots, maintenance.
    pub(crate) fn open_side_connection(&self) -> rusqlite::Result<rusqlite::Connection> {
        connection::open(&self.inner.location, Role::Side, &self.inner.options)
    }
}

fn validate_append(parts: &[StreamAppend], options: &Options) -> Result<(), InvalidInput> {
    if parts.is_empty() {
        return Err(InvalidInput::NoEvents);
    }
    let count: usize = parts.iter().map(|part| part.events.len()).sum();
    if count > options.max_events_per_append {
        return Err(InvalidInput::TooManyEvents {
            count,
            limit: options.max_events_per_append,
        });
    }
    let mut streams = HashSet::with_capacity(parts.len());
    let mut ids = HashSet::with_capacity(count);
    for part in parts {
        let len = part.stream_id.len();
        if len == 0 || len > limits::MAX_STREAM_ID_BYTES {
            return Err(InvalidInput::StreamIdLength { len });
        }
        if !streams.insert(part.stream_id.as_str()) {
            return Err(InvalidInput::RepeatedStream(part.stream_id.clone()));
        }
        if part.events.is_empty() {
            return Err(InvalidInput::NoEvents);
        }
        for event in &part.events {
            let len = event.event_type.len();
            if len == 0 || len > limits::MAX_EVENT_TYPE_BYTES {
                return Err(InvalidInput::EventTypeLength { len });
            }
            let payload = event.data.len() + event.metadata.len();
            if payload > options.max_payload_bytes {
                return Err(InvalidInput::PayloadTooLarge {
                    len: payload,
                    limit: options.max_payload_bytes,
                });
            }
            if event.tags.len() > limits::MAX_TAGS_PER_EVENT {
                return Err(InvalidInput::TooManyTags {
                    count: event.tags.len(),
                    limit: limits::MAX_TAGS_PER_EVENT,
                });
            }
            for tag in &event.tags {
                crate::query::check_tag(tag)?;
            }
            if let Some(id) = event.event_id {
                if !ids.insert(id) {
                    return Err(InvalidInput::Other(format!(
                        "event id {id} appears twice in one append"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Where an [`EventIter`] continues.
enum Cursor {
    Stream {
        stream_id: String,
        next_version: StreamVersion,
        direction: Direction,
    },
    /// A position-ordered read; type names are resolved to keys on the first page.
    Filtered(EventFilter, Option<Vec<String>>),
    Done,
}

/// An iterator over events, fetched from SQLite a page at a time.
///
/// Each page is its own snapshot; events appended while iterating are included when they fall
/// after the cursor. An error ends the iteration after being returned once.
pub struct EventIter {
    store: Store,
    cursor: Cursor,
    page: std::vec::IntoIter<Event>,
}

impl EventIter {
    fn new(store: Store, cursor: Cursor) -> Self {
        EventIter {
            store,
            cursor,
            page: Vec::new().into_iter(),
        }
    }

    fn fetch(&mut self) -> Result<Vec<Event>, ReadError> {
        match &mut self.cursor {
            Cursor::Done => Ok(Vec::new()),
            Cursor::Stream {
                stream_id,
                next_version,
                direction,
            } => {
                if *next_version == 0 {
                    return Ok(Vec::new());
                }
                let page = self.store.read_stream(
                    stream_id,
                    *next_version,
                    *direction,
                    ITERATOR_PAGE_SIZE,
                )?;
                if let Some(last) = page.last() {
                    *next_version = match direction {
                        Direction::Forwards => last.version + 1,
                        Direction::Backwards => last.version - 1,
                    };
                }
                Ok(page)
            }
            Cursor::Filtered(filter, names) => {
                let page = self.store.inner.readers.with_snapshot(|conn, pool| {
                    if let Some(names) = names.take() {
                        filter.type_keys = Some(pool.type_keys(conn, &names)?);
                    }
                    reader::read_filtered(conn, pool, filter, ITERATOR_PAGE_SIZE)
                })?;
                if let Some(last) = page.last() {
                    filter.from = last.position + 1;
                }
                Ok(page)
            }
        }
    }
}

impl Iterator for EventIter {
    type Item = Result<Event, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(event) = self.page.next() {
            return Some(Ok(event));
        }
        match self.fetch() {
            Ok(page) if page.is_empty() => {
                self.cursor = Cursor::Done;
                None
            }
            Ok(page) => {
                self.page = page.into_iter();
                self.page.next().map(Ok)
            }
            Err(error) => {
                self.cursor = Cursor::Done;
                Some(Err(error))
            }
        }
    }
}
