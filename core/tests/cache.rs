//! The event cache: hits and misses, byte bound, and never hiding an append.

mod common;

use common::{events, fast, temp_store};
use proptest::prelude::*;
use strata::{CacheStats, Direction, ExpectedVersion, NewEvent, Options, Store};

fn cached(bytes: usize) -> Options {
    Options {
        cache_bytes: bytes,
        ..fast()
    }
}

fn data(events: &[strata::Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| String::from_utf8(e.data.to_vec()).unwrap())
        .collect()
}

#[test]
fn a_warm_stream_read_is_a_hit() {
    let store = Store::open_in_memory(cached(1 << 20)).unwrap();
    store
        .append("s", ExpectedVersion::Any, events("e", 100))
        .unwrap();
    let cold = store.read_stream("s", 1, Direction::Forwards, 100).unwrap();
    let after_cold = store.cache_stats();
    let warm = store.read_stream("s", 1, Direction::Forwards, 100).unwrap();
    let after_warm = store.cache_stats();
    assert_eq!(cold, warm);
    assert_eq!((after_cold.hits, after_cold.misses), (0, 1));
    assert_eq!((after_warm.hits, after_warm.misses), (1, 1));
    assert_eq!(after_warm.entries, 1);
    assert!(after_warm.bytes > 0 && after_warm.bytes <= after_warm.capacity_bytes);
}

#[test]
fn a_cached_tail_page_never_hides_a_later_append() {
    let store = Store::open_in_memory(cached(1 << 20)).unwrap();
    store
        .append("s", ExpectedVersion::Any, events("a", 3))
        .unwrap();
    // Tail pages: forwards past the end, backwards from the end.
    assert_eq!(
        store
            .read_stream("s", 1, Direction::Forwards, 10)
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        store
            .read_stream("s", 1, Direction::Forwards, 10)
            .unwrap()
            .len(),
        3
    );
    let back = store
        .read_stream("s", u64::MAX, Direction::Backwards, 2)
        .unwrap();
    assert_eq!(data(&back), ["a-2", "a-1"]);
    assert_eq!(store.cache_stats().hits, 1);

    store
        .append("s", ExpectedVersion::Any, events("b", 1))
        .unwrap();
    assert_eq!(
        data(&store.read_stream("s", 1, Direction::Forwards, 10).unwrap()),
        ["a-0", "a-1", "a-2", "b-0"]
    );
    assert_eq!(
        data(
            &store
                .read_stream("s", u64::MAX, Direction::Backwards, 2)
                .unwrap()
        ),
        ["b-0", "a-2"]
    );
    // An unknown stream is not cached as empty: its first append shows at once.
    assert!(store
        .read_stream("t", 1, Direction::Forwards, 10)
        .unwrap()
        .is_empty());
    store
        .append("t", ExpectedVersion::Any, events("c", 1))
        .unwrap();
    assert_eq!(
        store
            .read_stream("t", 1, Direction::Forwards, 10)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn bounded_pages_stay_valid_after_appends() {
    let store = Store::open_in_memory(cached(1 << 20)).unwrap();
    store
        .append("s", ExpectedVersion::Any, events("a", 10))
        .unwrap();
    let full = store.read_stream("s", 3, Direction::Forwards, 4).unwrap();
    let middle_back = store.read_stream("s", 6, Direction::Backwards, 3).unwrap();
    store
        .append("s", ExpectedVersion::Any, events("b", 10))
        .unwrap();
    let before = store.cache_stats();
    assert_eq!(
        store.read_stream("s", 3, Direction::Forwards, 4).unwrap(),
        full
    );
    assert_eq!(
        store.read_stream("s", 6, Direction::Backwards, 3).unwrap(),
        middle_back
    );
    assert_eq!(store.cache_stats().hits, before.hits + 2);
    assert_eq!(data(&full), ["a-2", "a-3", "a-4", "a-5"]);
}

#[test]
fn a_tail_page_is_revalidated_against_appends_by_another_handle() {
    let (_dir, path, store) = temp_store(cached(1 << 20));
    let other = Store::open(&path, cached(1 << 20)).unwrap();
    store
        .append("s", ExpectedVersion::Any, events("a", 2))
        .unwrap();
    assert_eq!(
        store
            .read_stream("s", 1, Direction::Forwards, 50)
            .unwrap()
            .len(),
        2
    );
    other
        .append("s", ExpectedVersion::Any, events("b", 1))
        .unwrap();
    assert_eq!(
        store
            .read_stream("s", 1, Direction::Forwards, 50)
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn read_all_serves_the_cached_prefix_and_reads_the_rest() {
    let store = Store::open_in_memory(cached(1 << 20)).unwrap();
    store
        .append("s", ExpectedVersion::Any, events("a", 5))
        .unwrap();
    assert_eq!(store.read_all(1, 10).unwrap().len(), 5);
    store
        .append("t", ExpectedVersion::Any, events("b", 5))
        .unwrap();
    let all = store.read_all(1, 10).unwrap();
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    let before = store.cache_stats();
    assert_eq!(store.read_all(3, 5).unwrap(), all[2..7].to_vec());
    assert_eq!(store.cache_stats().hits, before.hits + 1);
    assert_eq!(store.read_all(0, 2).unwrap(), all[0..2].to_vec());
}

#[test]
fn cache_bytes_zero_turns_the_cache_off() {
    let store = Store::open_in_memory(cached(0)).unwrap();
    store
        .append("s", ExpectedVersion::Any, events("a", 5))
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            store
                .read_stream("s", 1, Direction::Forwards, 5)
                .unwrap()
                .len(),
            5
        );
        assert_eq!(store.read_all(1, 5).unwrap().len(), 5);
    }
    assert_eq!(store.cache_stats(), CacheStats::default());
    assert!(store.read_stream("s", 1, Direction::Forwards, 0).is_err());
}

#[test]
fn eviction_is_counted_and_the_bound_holds() {
    let store = Store::open_in_memory(cached(8 * 1024)).unwrap();
    let big = |i: usize| NewEvent::new("big", vec![i as u8; 1_000]);
    for i in 0..40 {
        store
            .append(&format!("s{i}"), ExpectedVersion::Any, vec![big(i)])
            .unwrap();
        store
            .read_stream(&format!("s{i}"), 1, Direction::Forwards, 1)
            .unwrap();
        store.read_all(i as u64 + 1, 1).unwrap();
        let stats = store.cache_stats();
        assert!(stats.bytes <= 8 * 1024, "{stats:?}");
    }
    assert!(store.cache_stats().evictions > 0);
}

#[derive(Clone, Debug)]
enum Op {
    Append {
        stream: u8,
        count: u8,
        size: u16,
    },
    ReadStream {
        stream: u8,
        from: u8,
        backwards: bool,
        max: u8,
    },
    ReadAll {
        from: u8,
        max: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..3, 1u8..4, 0u16..600).prop_map(|(stream, count, size)| Op::Append {
            stream,
            count,
            size
        }),
        (0u8..3, 0u8..6, any::<bool>(), 1u8..5).prop_map(|(stream, from, backwards, max)| {
            Op::ReadStream {
                stream,
                from,
                backwards,
                max,
            }
        }),
        (0u8..20, 1u8..12).prop_map(|(from, max)| Op::ReadAll { from, max }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random appends and reads against a small cache: every read equals the model (so a read
    /// after an append always sees it), and the cache never holds more than its bound.
    #[test]
    fn the_cache_stays_bounded_and_reads_match_the_model(
        capacity in 1_000usize..6_000,
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let store = Store::open_in_memory(cached(capacity)).unwrap();
        // (stream, data) per position, positions from 1.
        let mut log: Vec<(String, Vec<u8>)> = Vec::new();
        for op in ops {
            match op {
                Op::Append { stream, count, size } => {
                    let stream = format!("s{stream}");
                    let new: Vec<NewEvent> = (0..count)
                        .map(|i| NewEvent::new("t", vec![log.len() as u8 ^ i; size as usize]))
                        .collect();
                    for event in &new {
                        log.push((stream.clone(), event.data.to_vec()));
                    }
                    store.append(&stream, ExpectedVersion::Any, new).unwrap();
                }
                Op::ReadStream { stream, from, backwards, max } => {
                    let stream = format!("s{stream}");
                    let mine: Vec<&Vec<u8>> =
                        log.iter().filter(|(s, _)| *s == stream).map(|(_, d)| d).collect();
                    let from = if backwards && from == 5 { u64::MAX } else { from as u64 };
                    let want: Vec<Vec<u8>> = if backwards {
                        let top = from.min(mine.len() as u64);
                        (1..=top).rev().take(max as usize).map(|v| mine[v as usize - 1].clone()).collect()
                    } else {
                        (from.max(1)..=mine.len() as u64).take(max as usize).map(|v| mine[v as usize - 1].clone()).collect()
                    };
                    let direction = if backwards { Direction::Backwards } else { Direction::Forwards };
                    let got: Vec<Vec<u8>> = store
                        .read_stream(&stream, from, direction, max as usize)
                        .unwrap()
                        .iter()
                        .map(|e| e.data.to_vec())
                        .collect();
                    prop_assert_eq!(got, want);
                }
                Op::ReadAll { from, max } => {
                    let got: Vec<Vec<u8>> = store
                        .read_all(from as u64, max as usize)
                        .unwrap()
                        .iter()
                        .map(|e| e.data.to_vec())
                        .collect();
                    let want: Vec<Vec<u8>> = log
                        .iter()
                        .skip((from as usize).max(1) - 1)
                        .take(max as usize)
                        .map(|(_, d)| d.clone())
                        .collect();
                    prop_assert_eq!(got, want);
                }
            }
            let stats = store.cache_stats();
            prop_assert!(stats.bytes <= capacity as u64, "{:?}", stats);
        }
    }
}
