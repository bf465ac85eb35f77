//! A map whose entries become visible in three steps, following the writer's transaction: an
//! entry set inside a request's savepoint is kept only if the savepoint is released, and only
//! becomes committed knowledge once the transaction commits. The writer uses it for what it
//! learns about the file while appending (type keys, stream versions), so that a rolled-back
//! request or transaction leaves nothing behind in memory that SQLite does not also hold.

use std::collections::HashMap;
use std::hash::Hash;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Staged<K, V> {
    committed: HashMap<K, V>,
    transaction: HashMap<K, V>,
    request: HashMap<K, V>,
    /// Most committed entries kept; past it the committed layer starts again empty.
    capacity: usize,
}

impl<K: Eq + Hash, V> Staged<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        assert!(capacity > 0);
        Staged {
            committed: HashMap::new(),
            transaction: HashMap::new(),
            request: HashMap::new(),
            capacity,
        }
    }

    /// The newest value: this request's, then this transaction's, then the committed one.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.request
            .get(key)
            .or_else(|| self.transaction.get(key))
            .or_else(|| self.committed.get(key))
    }

    /// Sets a value inside the current request.
    pub(crate) fn set(&mut self, key: K, value: V) {
        self.request.insert(key, value);
    }

    /// The request's savepoint was released: its values belong to the transaction.
    pub(crate) fn release_request(&mut self) {
        self.transaction.extend(self.request.drain());
    }

    /// The request's savepoint was rolled back: its values are gone.
    pub(crate) fn rollback_request(&mut self) {
        self.request.clear();
    }

    /// The transaction committed: its values are now what the file holds.
    pub(crate) fn commit(&mut self) {
        debug_assert!(self.request.is_empty(), "a request outlived its savepoint");
        if self.committed.len() + self.transaction.len() > self.capacity {
            self.committed.clear();
        }
        self.committed.extend(self.transaction.drain());
    }

    /// The transaction failed: only what was committed before stays.
    pub(crate) fn rollback_transaction(&mut self) {
        self.request.clear();
        self.transaction.clear();
    }

    /// Forgets everything, committed values included (the file changed behind our back).
    pub(crate) fn clear(&mut self) {
        self.committed.clear();
        self.rollback_transaction();
    }
}

#[cfg(test)]
mod tests {
    use super::Staged;

    #[test]
    fn values_survive_only_what_commits() {
        let mut map = Staged::new(10);
        map.set("a", 1);
        map.release_request();
        map.set("b", 2);
        map.rollback_request();
        assert_eq!((map.get("a"), map.get("b")), (Some(&1), None));
        map.commit();
        map.set("a", 3);
        map.release_request();
        map.rollback_transaction();
        assert_eq!(
            map.get("a"),
            Some(&1),
            "the failed transaction's value is gone"
        );
        map.clear();
        assert_eq!(map.get("a"), None);
    }

    #[test]
    fn the_committed_layer_is_bounded() {
        let mut map = Staged::new(2);
        for key in 0..5 {
            map.set(key, key);
            map.release_request();
            map.commit();
        }
        assert!(map.committed.len() <= 2);
        assert_eq!(map.get(&4), Some(&4));
    }
}
