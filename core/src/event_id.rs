//! The ids the store gives events appended without one: UUID v7 (unix milliseconds, then 74
//! random bits), so ids sort by the millisecond they were made in.
//!
//! The random bits come from the operating system (`getrandom`) a block at a time, one system
//! call per [`IDS_PER_FILL`] ids. One call per id (uuid's default) measured about 2 µs, a large
//! share of appending a small event; uuid's cheap generator (its `fast-rng` feature) would bring
//! `rand` into every application's build. The block remembers the process it was filled in and
//! is refilled when that changes: a child made by `fork` (Python's `multiprocessing` does so on
//! Linux) would otherwise hand out its parent's ids, and a duplicate id with the same content is
//! taken for a retry and dropped.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

/// Ids drawn from one block of operating-system randomness.
const IDS_PER_FILL: usize = 256;
/// Random bytes in a v7 id (the 74 random bits, with the 6 version and variant bits the
/// builder overwrites).
const RANDOM_BYTES: usize = 10;

struct RandomBlock {
    bytes: [u8; RANDOM_BYTES * IDS_PER_FILL],
    next: usize,
    /// The process the block was filled in (0: never filled).
    filled_in: u32,
}

impl RandomBlock {
    /// The next id's random bytes, refilling the block when it is used up or was filled in
    /// another process than `process` (the caller's).
    fn draw(&mut self, process: u32) -> [u8; RANDOM_BYTES] {
        if self.next == self.bytes.len() || self.filled_in != process {
            getrandom::fill(&mut self.bytes).expect("the operating system's random numbers");
            self.next = 0;
            self.filled_in = process;
        }
        let at = self.next;
        self.next += RANDOM_BYTES;
        let mut random = [0u8; RANDOM_BYTES];
        random.copy_from_slice(&self.bytes[at..at + RANDOM_BYTES]);
        random
    }
}

thread_local! {
    static BLOCK: RefCell<RandomBlock> = const {
        RefCell::new(RandomBlock {
            bytes: [0; RANDOM_BYTES * IDS_PER_FILL],
            next: RANDOM_BYTES * IDS_PER_FILL,
            filled_in: 0,
        })
    };
}

/// A new UUID v7 for an event.
///
/// # Panics
/// If the operating system has no randomness to give (`getrandom` fails), as `Uuid::now_v7`
/// does.
pub(crate) fn generate() -> Uuid {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    let random = BLOCK.with(|block| block.borrow_mut().draw(std::process::id()));
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_version_7_unique_and_carry_the_current_millisecond() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        // Several blocks' worth, so that refills are covered.
        let ids: Vec<Uuid> = (0..IDS_PER_FILL * 3 + 7).map(|_| generate()).collect();
        let after = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
        for id in &ids {
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            let (seconds, nanos) = id.get_timestamp().unwrap().to_unix();
            let millis = seconds * 1_000 + u64::from(nanos) / 1_000_000;
            assert!(
                (before..=after).contains(&millis),
                "{millis} not in {before}..={after}"
            );
        }
    }

    #[test]
    fn a_forked_child_does_not_reuse_its_parents_random_bytes() {
        let mut block = RandomBlock {
            bytes: [0; RANDOM_BYTES * IDS_PER_FILL],
            next: RANDOM_BYTES * IDS_PER_FILL,
            filled_in: 0,
        };
        block.draw(100);
        // After a fork the child holds a copy of the block: the parent's next draw and the
        // child's first must differ.
        let mut child = RandomBlock { ..block };
        let parent_next = block.draw(100);
        let child_first = child.draw(101);
        assert_ne!(parent_next, child_first);
        assert_eq!(child.filled_in, 101);
    }

    #[test]
    fn threads_draw_different_ids() {
        let other: Vec<Uuid> = std::thread::spawn(|| (0..100).map(|_| generate()).collect())
            .join()
            .unwrap();
        let here: HashSet<Uuid> = (0..100).map(|_| generate()).collect();
        assert!(other.iter().all(|id| !here.contains(id)));
    }
}
