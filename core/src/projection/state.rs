//! A projection's key-value state: committed state underneath, this batch's writes on top.
//!
//! Writes are buffered here, in the host, and flushed by the runner together with the
//! checkpoint. A plugin therefore pays no SQLite round trip per `put`, and a failed batch is
//! rolled back by dropping the buffer.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::RwLock;

/// Limits on what one projection may store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateLimits {
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Longest value, in bytes.
    pub max_value_bytes: usize,
    /// Most bytes of keys and values buffered by one batch.
    pub max_batch_write_bytes: usize,
    /// Most entries one `scan_prefix` returns.
    pub max_scan_entries: usize,
}

impl Default for StateLimits {
    fn default() -> Self {
        StateLimits {
            max_key_bytes: 1024,
            max_value_bytes: 1024 * 1024,
            max_batch_write_bytes: 64 * 1024 * 1024,
            max_scan_entries: 10_000,
        }
    }
}

/// Why a state operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A key is empty or longer than the limit.
    #[error("state key must be 1..={limit} bytes, got {len}")]
    KeyLength {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A value is longer than the limit.
    #[error("state value is {len} bytes, over the limit of {limit}")]
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// One batch buffered more writes than the limit.
    #[error("one batch wrote more than {limit} bytes of state")]
    BatchTooLarge {
        /// The limit.
        limit: usize,
    },
    /// A write was attempted during a query.
    #[error("state is read-only during a query")]
    ReadOnly,
    /// Reading committed state failed (SQLite's message kept).
    #[error("reading committed state failed: {0}")]
    Backend(String),
}

/// A key and its value.
pub type StateEntry = (Vec<u8>, Vec<u8>);

/// Read access to a projection's committed state.
pub trait CommittedState: Send + Sync + 'static {
    /// The value under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;

    /// Up to `limit` entries whose key starts with `prefix` and is greater than `after` (when
    /// given), in key order.
    fn scan_prefix(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<StateEntry>, StateError>;
}

/// Committed state held in memory: for tests, and for projections that need no persistence.
#[derive(Debug, Default)]
pub struct MemoryState {
    entries: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a batch's writes, as the runner does on commit.
    pub fn commit(&self, writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
        let mut entries = self.entries.write();
        for (key, value) in writes {
            match value {
                Some(value) => entries.insert(key, value),
                None => entries.remove(&key),
            };
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.read().is_empty()
    }
}

impl CommittedState for MemoryState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.entries.read().get(key).cloned())
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<StateEntry>, StateError> {
        let entries = self.entries.read();
        let lower = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        Ok(entries
            .range((lower, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }
}

/// A projection's view of its state during one call: committed state plus the writes buffered so
/// far in this batch. `Default` gives an empty, detached state (a placeholder for `mem::take`).
#[derive(Default)]
pub struct ProjectionState {
    committed: Option<Arc<dyn CommittedState>>,
    /// `None` marks a deletion.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    write_bytes: usize,
    read_only: bool,
    limits: StateLimits,
}

impl std::fmt::Debug for ProjectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionState")
            .field("buffered_writes", &self.writes.len())
            .field("write_bytes", &self.write_bytes)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

impl ProjectionState {
    /// A writable view over `committed`, for applying a batch.
    pub fn for_batch(committed: Arc<dyn CommittedState>, limits: StateLimits) -> Self {
        ProjectionState {
            committed: Some(committed),
            limits,
            ..Default::default()
        }
    }

    /// A read-only view over `committed`, for queries.
    pub fn for_query(committed: Arc<dyn CommittedState>, limits: StateLimits) -> Self {
        ProjectionState {
            committed: Some(committed),
            read_only: true,
            limits,
            ..Default::default()
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> StateLimits {
        self.limits
    }

    /// Whether writes are refused (queries).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The value under `key`: this batch's write if any, else the committed value.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.check_key(key)?;
        if let Some(buffered) = self.writes.get(key) {
            return Ok(buffered.clone());
        }
        match &self.committed {
            Some(committed) => committed.get(key),
            None => Ok(None),
        }
    }

    /// The values under several keys, in the order asked.
    pub fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        keys.iter().map(|key| self.get(key)).collect()
    }

    /// Stores `value` under `key`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        self.check_writable()?;
        self.check_key(key)?;
        if value.len() > self.limits.max_value_bytes {
            return Err(StateError::ValueTooLarge {
                len: value.len(),
                limit: self.limits.max_value_bytes,
            });
        }
        self.account(key.len() + value.len())?;
        self.writes.insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    /// Removes `key` (no error when absent).
    pub fn delete(&mut self, key: &[u8]) -> Result<(), StateError> {
        self.check_writable()?;
        self.check_key(key)?;
        self.account(key.len())?;
        self.writes.insert(key.to_vec(), None);
        Ok(())
    }

    /// Up to `limit` (capped by `StateLimits::max_scan_entries`) entries whose key starts with
    /// `prefix` and is greater than `after`, in key order, this batch's writes included.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<StateEntry>, StateError> {
        let limit = limit.min(self.limits.max_scan_entries);
        let lower = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        let buffered: Vec<(&Vec<u8>, &Option<Vec<u8>>)> = self
            .writes
            .range((lower, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .collect();
        // Buffered deletions may hide committed entries: ask for enough to still fill `limit`.
        let committed = match &self.committed {
            Some(committed) => committed.scan_prefix(prefix, after, limit + buffered.len())?,
            None => Vec::new(),
        };
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = committed
            .into_iter()
            .map(|(key, value)| (key, Some(value)))
            .collect();
        for (key, value) in buffered {
            merged.insert(key.clone(), value.clone());
        }
        Ok(merged
            .into_iter()
            .filter_map(|(key, value)| value.map(|value| (key, value)))
            .take(limit)
            .collect())
    }

    /// Number of buffered writes (deletions included).
    pub fn buffered_writes(&self) -> usize {
        self.writes.len()
    }

    /// Takes the buffered writes out, leaving the buffer empty. `None` values are deletions.
    pub fn take_writes(&mut self) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        self.write_bytes = 0;
        std::mem::take(&mut self.writes)
    }

    fn check_key(&self, key: &[u8]) -> Result<(), StateError> {
        if key.is_empty() || key.len() > self.limits.max_key_bytes {
            return Err(StateError::KeyLength {
                len: key.len(),
                limit: self.limits.max_key_bytes,
            });
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<(), StateError> {
        if self.read_only {
            Err(StateError::ReadOnly)
        } else {
            Ok(())
        }
    }

    fn account(&mut self, bytes: usize) -> Result<(), StateError> {
        let total = self.write_bytes.saturating_add(bytes);
        if total > self.limits.max_batch_write_bytes {
            return Err(StateError::BatchTooLarge {
                limit: self.limits.max_batch_write_bytes,
            });
        }
        self.write_bytes = total;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed_with(entries: &[(&str, &str)]) -> Arc<MemoryState> {
        let state = Arc::new(MemoryState::new());
        state.commit(
            entries
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec())))
                .collect(),
        );
        state
    }

    #[test]
    fn buffered_writes_shadow_committed_values() {
        let committed = committed_with(&[("a", "1"), ("b", "2")]);
        let mut state = ProjectionState::for_batch(committed, StateLimits::default());
        state.put(b"a", b"10").unwrap();
        state.delete(b"b").unwrap();
        assert_eq!(state.get(b"a").unwrap(), Some(b"10".to_vec()));
        assert_eq!(state.get(b"b").unwrap(), None);
    }

    #[test]
    fn scan_merges_buffered_writes_and_hides_deletions() {
        let committed = committed_with(&[("u:1", "a"), ("u:2", "b"), ("u:3", "c"), ("v:1", "x")]);
        let mut state = ProjectionState::for_batch(committed, StateLimits::default());
        state.delete(b"u:1").unwrap();
        state.put(b"u:4", b"d").unwrap();
        let keys: Vec<Vec<u8>> = state
            .scan_prefix(b"u:", None, 10)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            vec![b"u:2".to_vec(), b"u:3".to_vec(), b"u:4".to_vec()]
        );
        let after: Vec<Vec<u8>> = state
            .scan_prefix(b"u:", Some(b"u:2"), 1)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(after, vec![b"u:3".to_vec()]);
    }

    #[test]
    fn queries_cannot_write() {
        let mut state =
            ProjectionState::for_query(Arc::new(MemoryState::new()), StateLimits::default());
        assert_eq!(state.put(b"k", b"v"), Err(StateError::ReadOnly));
        assert_eq!(state.delete(b"k"), Err(StateError::ReadOnly));
    }

    #[test]
    fn limits_are_enforced() {
        let limits = StateLimits {
            max_key_bytes: 4,
            max_value_bytes: 4,
            max_batch_write_bytes: 10,
            max_scan_entries: 2,
        };
        let mut state = ProjectionState::for_batch(Arc::new(MemoryState::new()), limits);
        assert!(matches!(
            state.put(b"", b"v"),
            Err(StateError::KeyLength { .. })
        ));
        assert!(matches!(
            state.put(b"12345", b"v"),
            Err(StateError::KeyLength { .. })
        ));
        assert!(matches!(
            state.put(b"k", b"12345"),
            Err(StateError::ValueTooLarge { .. })
        ));
        state.put(b"k1", b"1234").unwrap();
        assert!(matches!(
            state.put(b"k2", b"1234"),
            Err(StateError::BatchTooLarge { .. })
        ));
    }
}
