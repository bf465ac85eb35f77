//! The committed state of one projection, cached in memory across batches.
//!
//! A rebuild reads and rewrites the same keys batch after batch (a user's totals, a counter per
//! type): reading each of them back from SQLite per batch is what made rebuilds slow. The
//! cache holds what this runner read or committed, tagged with the checkpoint it reflects;
//! when the projection's checkpoint is anything else at the start of a batch (another runner,
//! in this process or another, committed; a reset), the cache is dropped. It is bounded in
//! bytes and starts again empty when full.
//!
//! A rebuild starts from an empty state, and then the cache is *complete*: it holds every key
//! the state has, so a key it lacks is known to be absent without asking SQLite. It stays
//! complete while it follows its own batches' commits and nothing is evicted.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;

use crate::event::Position;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct StateCache {
    inner: Mutex<Entries>,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct Entries {
    /// The checkpoint the entries reflect; `None` while empty.
    checkpoint: Option<Position>,
    /// Key -> committed value (`None`: no such key).
    values: HashMap<Vec<u8>, Option<Vec<u8>>>,
    bytes: usize,
    /// Whether `values` holds every key of the state at `checkpoint` (absent: no such key).
    complete: bool,
}

/// Bytes an entry is counted for: its key and value plus a fixed overhead for the map.
fn entry_bytes(key: &[u8], value: &Option<Vec<u8>>) -> usize {
    key.len() + value.as_ref().map_or(0, Vec::len) + 64
}

impl Entries {
    fn insert(&mut self, key: Vec<u8>, value: Option<Vec<u8>>, max_bytes: usize) {
        let added = entry_bytes(&key, &value);
        if let Some(old) = self.values.get(&key) {
            self.bytes -= entry_bytes(&key, old);
        }
        if self.bytes + added > max_bytes {
            self.values.clear();
            self.bytes = 0;
            self.complete = false;
            if added > max_bytes {
                return;
            }
        }
        self.bytes += added;
        self.values.insert(key, value);
    }
}

impl StateCache {
    /// A cache of at most `max_bytes` (0: nothing is cached).
    pub(crate) fn new(max_bytes: usize) -> Self {
        StateCache {
            inner: Mutex::new(Entries::default()),
            max_bytes,
        }
    }

    /// The committed value of `key` as of `checkpoint`, if cached: `Some(None)` means "no such
    /// key".
    pub(crate) fn get(&self, checkpoint: Position, key: &[u8]) -> Option<Option<Vec<u8>>> {
        let entries = self.inner.lock();
        if entries.checkpoint != Some(checkpoint) {
            return None;
        }
        match entries.values.get(key) {
            Some(value) => Some(value.clone()),
            None if entries.complete => Some(None),
            None => None,
        }
    }

    /// Whether the cache holds every key of the state at `checkpoint`.
    pub(crate) fn is_complete_at(&self, checkpoint: Position) -> bool {
        let entries = self.inner.lock();
        entries.complete && entries.checkpoint == Some(checkpoint)
    }

    /// The state at `checkpoint` is known to be empty (a rebuild's start): every key is absent
    /// until a batch writes it.
    pub(crate) fn start_empty(&self, checkpoint: Position) {
        *self.inner.lock() = Entries {
            checkpoint: Some(checkpoint),
            complete: true,
            ..Entries::default()
        };
    }

    /// Remembers a value read from SQLite while the projection was at `checkpoint`.
    pub(crate) fn remember(&self, checkpoint: Position, key: &[u8], value: &Option<Vec<u8>>) {
        let mut entries = self.inner.lock();
        if entries.checkpoint != Some(checkpoint) {
            *entries = Entries {
                checkpoint: Some(checkpoint),
                ..Entries::default()
            };
        }
        entries.insert(key.to_vec(), value.clone(), self.max_bytes);
    }

    /// A batch moved the projection from `from` to `to` with `writes`.
    pub(crate) fn committed(
        &self,
        from: Position,
        to: Position,
        writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ) {
        let mut entries = self.inner.lock();
        if entries.checkpoint != Some(from) {
            *entries = Entries::default();
        }
        entries.checkpoint = Some(to);
        for (key, value) in writes {
            entries.insert(key, value, self.max_bytes);
        }
    }

    /// Forgets everything (the state changed in a way the cache did not see).
    pub(crate) fn clear(&self) {
        *self.inner.lock() = Entries::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_hold_only_for_the_checkpoint_they_reflect() {
        let cache = StateCache::new(1 << 20);
        cache.remember(10, b"a", &Some(b"1".to_vec()));
        cache.remember(10, b"missing", &None);
        assert_eq!(cache.get(10, b"a"), Some(Some(b"1".to_vec())));
        assert_eq!(cache.get(10, b"missing"), Some(None));
        assert_eq!(cache.get(11, b"a"), None, "another checkpoint: not trusted");

        let writes = BTreeMap::from([(b"a".to_vec(), Some(b"2".to_vec()))]);
        cache.committed(10, 20, writes.clone());
        assert_eq!(cache.get(20, b"a"), Some(Some(b"2".to_vec())));
        assert_eq!(cache.get(20, b"missing"), Some(None));

        // A commit from a checkpoint the cache did not reflect keeps only that commit's writes.
        cache.committed(25, 30, writes);
        assert_eq!(cache.get(30, b"missing"), None);
        assert_eq!(cache.get(30, b"a"), Some(Some(b"2".to_vec())));
    }

    #[test]
    fn a_complete_cache_answers_absent_keys_until_it_evicts() {
        let cache = StateCache::new(1_000);
        cache.start_empty(0);
        assert_eq!(cache.get(0, b"never-written"), Some(None));
        assert!(cache.is_complete_at(0));
        cache.committed(0, 5, BTreeMap::from([(b"a".to_vec(), Some(b"1".to_vec()))]));
        assert!(cache.is_complete_at(5), "it follows its own commits");
        assert_eq!(cache.get(5, b"a"), Some(Some(b"1".to_vec())));
        assert_eq!(cache.get(5, b"b"), Some(None));
        assert_eq!(cache.get(6, b"b"), None, "another checkpoint: not trusted");
        // Filling past the bound evicts: absent keys are then unknown.
        for i in 0..20u32 {
            cache.committed(
                5 + i as u64,
                6 + i as u64,
                BTreeMap::from([(i.to_le_bytes().to_vec(), Some(vec![0; 100]))]),
            );
        }
        assert!(!cache.is_complete_at(25));
        assert_eq!(cache.get(25, b"b"), None);
    }

    #[test]
    fn the_cache_stays_within_its_bytes() {
        let cache = StateCache::new(1_000);
        for i in 0..100u32 {
            cache.remember(1, &i.to_le_bytes(), &Some(vec![0; 100]));
        }
        assert!(cache.inner.lock().bytes <= 1_000);
        let off = StateCache::new(0);
        off.remember(1, b"k", &None);
        assert_eq!(off.get(1, b"k"), None);
    }
}
