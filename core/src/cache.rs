//! The event cache: an LRU in front of [`crate::Store::read_stream`] and
//! [`crate::Store::read_all`], bounded in bytes.
//!
//! Two kinds of entries share one LRU order and one byte budget:
//!
//! - **Events by position.** Filled by `read_all`. Events never change, so such an entry is never
//!   stale. A `read_all` is answered from the cached run of consecutive positions starting at
//!   `from`; whatever the run lacks is read from SQLite (positions are gap-free, so the cached
//!   prefix followed by a read from its end is exactly what one SQLite read would return).
//! - **Stream pages**, keyed by `(stream, from, direction, max_count)`. A page is cached with the
//!   stream's version as of the same read snapshot. Whether it can go stale depends on its shape:
//!   - a *bounded* page names only versions that were already committed — a forward page that
//!     came back full, or a backward page that starts exactly at `from` — and is valid forever;
//!   - a *tail* page (a forward page that reached the stream's end, or a backward page from
//!     beyond the end such as `u64::MAX`) is only valid while the stream's version is unchanged.
//!     A hit on a tail page first reads the stream's current version (one indexed point query)
//!     and drops the page if the stream has grown since. So a cached page never hides an append,
//!     whichever process made it.
//!
//! Size is [`Event::approximate_size`] per event plus [`ENTRY_OVERHEAD_BYTES`] per entry; entries
//! larger than the whole budget are not cached. Eviction is least-recently-used.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;

use crate::catalog;
use crate::error::ReadError;
use crate::event::{Event, Position, StreamVersion};
use crate::reader::{self, check_page_size, Direction, ReadPool};

/// Bytes counted for each cache entry on top of its events (key, LRU links, bookkeeping).
pub const ENTRY_OVERHEAD_BYTES: usize = 96;

/// A snapshot of the cache counters. Counters only grow; `bytes` and `entries` are current.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads answered entirely from the cache (a stream page, or a whole `read_all` page).
    pub hits: u64,
    /// Reads that went to SQLite, wholly or in part (a `read_all` whose cached prefix was short
    /// counts as one miss), including tail pages found stale.
    pub misses: u64,
    /// Entries evicted to stay within the byte budget.
    pub evictions: u64,
    /// Entries inserted.
    pub insertions: u64,
    /// Bytes currently held (as counted against the budget).
    pub bytes: u64,
    /// Entries currently held.
    pub entries: u64,
    /// The byte budget (`Options::cache_bytes`; 0 means the cache is off).
    pub capacity_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Position(Position),
    StreamPage {
        stream_id: Box<str>,
        from: StreamVersion,
        backwards: bool,
        max_count: usize,
    },
}

enum Entry {
    Event(Event),
    Page {
        events: Arc<[Event]>,
        /// `Some(v)`: a tail page, valid only while the stream's version is `v`.
        valid_while_version: Option<StreamVersion>,
    },
}

struct Lru {
    entries: LruCache<Key, (Entry, usize)>,
    bytes: usize,
}

/// The byte-bounded LRU cache of events. Thread-safe; one per store.
pub(crate) struct EventCache {
    capacity: usize,
    lru: Mutex<Lru>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    insertions: AtomicU64,
}

fn key_size(key: &Key) -> usize {
    match key {
        Key::Position(_) => 0,
        Key::StreamPage { stream_id, .. } => stream_id.len(),
    }
}

impl EventCache {
    /// A cache holding at most `capacity` bytes; 0 disables it.
    pub(crate) fn new(capacity: usize) -> Self {
        EventCache {
            capacity,
            lru: Mutex::new(Lru {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            insertions: AtomicU64::new(0),
        }
    }

    fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The counters now.
    pub(crate) fn stats(&self) -> CacheStats {
        let lru = self.lru.lock();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            insertions: self.insertions.load(Ordering::Relaxed),
            bytes: lru.bytes as u64,
            entries: lru.entries.len() as u64,
            capacity_bytes: self.capacity as u64,
        }
    }

    /// Drops every entry (for maintenance that removes events from the live store, such as
    /// archiving or dropping a bucket: cached events would otherwise still be served).
    pub(crate) fn clear(&self) {
        let mut lru = self.lru.lock();
        lru.entries.clear();
        lru.bytes = 0;
    }

    fn insert(&self, lru: &mut Lru, key: Key, entry: Entry) {
        let size = ENTRY_OVERHEAD_BYTES
            + key_size(&key)
            + match &entry {
                Entry::Event(event) => event.approximate_size(),
                Entry::Page { events, .. } => {
                    events.iter().map(Event::approximate_size).sum::<usize>()
                }
            };
        if size > self.capacity {
            return;
        }
        if let Some((_, old_size)) = lru.entries.put(key, (entry, size)) {
            lru.bytes -= old_size;
        }
        lru.bytes += size;
        self.insertions.fetch_add(1, Ordering::Relaxed);
        while lru.bytes > self.capacity {
            match lru.entries.pop_lru() {
                Some((_, (_, evicted))) => {
                    lru.bytes -= evicted;
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                }
                None => break,
            }
        }
    }
}

/// `Store::read_stream` through the cache.
pub(crate) fn read_stream(
    cache: &EventCache,
    pool: &ReadPool,
    stream_id: &str,
    from: StreamVersion,
    direction: Direction,
    max_count: usize,
) -> Result<Vec<Event>, ReadError> {
    if !cache.enabled() {
        return pool.with_snapshot(|conn, pool| {
            reader::read_stream(conn, pool, stream_id, from, direction, max_count)
        });
    }
    check_page_size(max_count)?;
    let key = Key::StreamPage {
        stream_id: stream_id.into(),
        from,
        backwards: direction == Direction::Backwards,
        max_count,
    };
    let cached = {
        let mut lru = cache.lru.lock();
        match lru.entries.get(&key) {
            Some((
                Entry::Page {
                    events,
                    valid_while_version,
                },
                _,
            )) => Some((events.clone(), *valid_while_version)),
            _ => None,
        }
    };
    if let Some((events, valid_while_version)) = cached {
        let valid = match valid_while_version {
            None => true,
            Some(version) => {
                let conn = pool.get()?;
                let current = catalog::find_stream(&conn, stream_id)?
                    .map(|(_, info)| info.version)
                    .unwrap_or(0);
                current == version
            }
        };
        if valid {
            cache.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(events.to_vec());
        }
    }
    cache.misses.fetch_add(1, Ordering::Relaxed);
    let (events, stream_version) = pool.with_snapshot(|conn, pool| {
        let version = catalog::find_stream(conn, stream_id)?
            .map(|(_, info)| info.version)
            .unwrap_or(0);
        let events = reader::read_stream(conn, pool, stream_id, from, direction, max_count)?;
        Ok((events, version))
    })?;
    if stream_version == 0 || events.is_empty() {
        // Nothing to keep: the answer is cheap and changes with the next append.
        return Ok(events);
    }
    let bounded = match direction {
        Direction::Forwards => events.len() == max_count,
        Direction::Backwards => events[0].version == from,
    };
    let entry = Entry::Page {
        events: events.clone().into(),
        valid_while_version: if bounded { None } else { Some(stream_version) },
    };
    cache.insert(&mut cache.lru.lock(), key, entry);
    Ok(events)
}

/// `Store::read_all` through the cache.
pub(crate) fn read_all(
    cache: &EventCache,
    pool: &ReadPool,
    from: Position,
    max_count: usize,
) -> Result<Vec<Event>, ReadError> {
    if !cache.enabled() {
        return pool.with_snapshot(|conn, pool| reader::read_all(conn, pool, from, max_count));
    }
    check_page_size(max_count)?;
    let from = from.max(1);
    let mut events = Vec::with_capacity(max_count);
    {
        let mut lru = cache.lru.lock();
        while events.len() < max_count {
            match lru.entries.get(&Key::Position(from + events.len() as u64)) {
                Some((Entry::Event(event), _)) => events.push(event.clone()),
                _ => break,
            }
        }
    }
    if events.len() == max_count {
        cache.hits.fetch_add(1, Ordering::Relaxed);
        return Ok(events);
    }
    cache.misses.fetch_add(1, Ordering::Relaxed);
    let rest_from = from + events.len() as u64;
    let rest_count = max_count - events.len();
    let rest =
        pool.with_snapshot(|conn, pool| reader::read_all(conn, pool, rest_from, rest_count))?;
    {
        let mut lru = cache.lru.lock();
        for event in &rest {
            cache.insert(
                &mut lru,
                Key::Position(event.position),
                Entry::Event(event.clone()),
            );
        }
    }
    events.extend(rest);
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use uuid::Uuid;

    fn event(position: Position, data_len: usize) -> Event {
        Event {
            position,
            stream_id: "s".into(),
            version: position,
            event_type: "t".into(),
            event_id: Uuid::nil(),
            recorded_at: 0,
            data: Bytes::from(vec![0u8; data_len]),
            metadata: Bytes::new(),
            tags: Default::default(),
        }
    }

    #[test]
    fn eviction_keeps_bytes_within_the_budget_and_counts() {
        let one = ENTRY_OVERHEAD_BYTES + event(1, 100).approximate_size();
        let cache = EventCache::new(one * 3);
        for position in 1..=10 {
            let mut lru = cache.lru.lock();
            cache.insert(
                &mut lru,
                Key::Position(position),
                Entry::Event(event(position, 100)),
            );
        }
        let stats = cache.stats();
        assert_eq!(stats.entries, 3);
        assert_eq!(stats.bytes, (one * 3) as u64);
        assert_eq!(stats.evictions, 7);
        let lru = cache.lru.lock();
        assert!(lru.entries.contains(&Key::Position(10)));
        assert!(!lru.entries.contains(&Key::Position(7)));
    }

    #[test]
    fn an_entry_larger_than_the_budget_is_not_cached() {
        let cache = EventCache::new(200);
        cache.insert(
            &mut cache.lru.lock(),
            Key::Position(1),
            Entry::Event(event(1, 1_000)),
        );
        assert_eq!(cache.stats().entries, 0);
        assert_eq!(cache.stats().bytes, 0);
    }
}
