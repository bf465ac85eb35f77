//! The event cache's hits, misses and evictions show in the metrics snapshot and the
//! Prometheus text.

use strata::{Direction, ExpectedVersion, NewEvent, Options, Store};

fn with_cache(bytes: usize) -> Options {
    Options {
        cache_bytes: bytes,
        ..Options::default()
    }
}

#[test]
fn cache_counters_reach_the_metrics() {
    let store = Store::open_in_memory(with_cache(1 << 20)).unwrap();
    let events: Vec<NewEvent> = (0..10).map(|_| NewEvent::new("e", vec![7; 100])).collect();
    store.append("s", ExpectedVersion::Any, events).unwrap();
    store.read_stream("s", 1, Direction::Forwards, 100).unwrap();
    store.read_stream("s", 1, Direction::Forwards, 100).unwrap();
    let stats = store.cache_stats();
    let cache = store.metrics().unwrap().cache.expect("the cache is on");
    assert_eq!(
        (cache.hits, cache.misses, cache.evictions, cache.bytes),
        (stats.hits, stats.misses, stats.evictions, stats.bytes)
    );
    assert!(cache.hits >= 1 && cache.misses >= 1, "{cache:?}");
    let text = store.metrics_text().unwrap();
    assert!(
        text.contains(&format!("strata_cache_hits_total {}", stats.hits)),
        "{text}"
    );
    assert!(text.contains(&format!("strata_cache_misses_total {}", stats.misses)));
    assert!(text.contains("strata_cache_evictions_total 0"));
    assert!(text.contains(&format!("strata_cache_bytes {}", stats.bytes)));

    // Counters advance with later reads.
    store.read_stream("s", 1, Direction::Forwards, 100).unwrap();
    let later = store.metrics().unwrap().cache.unwrap();
    assert_eq!(later.hits, cache.hits + 1);
}

#[test]
fn evictions_are_counted() {
    // A budget smaller than two streams' pages: reading many streams evicts.
    let store = Store::open_in_memory(with_cache(8 * 1024)).unwrap();
    for n in 0..20 {
        let events: Vec<NewEvent> = (0..5).map(|_| NewEvent::new("e", vec![1; 400])).collect();
        store
            .append(&format!("s-{n}"), ExpectedVersion::Any, events)
            .unwrap();
    }
    for n in 0..20 {
        store
            .read_stream(&format!("s-{n}"), 1, Direction::Forwards, 100)
            .unwrap();
    }
    let cache = store.metrics().unwrap().cache.unwrap();
    assert!(cache.evictions > 0, "{cache:?}");
    assert_eq!(cache.evictions, store.cache_stats().evictions);
    assert!(store
        .metrics_text()
        .unwrap()
        .contains(&format!("strata_cache_evictions_total {}", cache.evictions)));
}

#[test]
fn no_cache_no_cache_metrics() {
    let store = Store::open_in_memory(with_cache(0)).unwrap();
    store
        .append("s", ExpectedVersion::Any, vec![NewEvent::new("e", vec![1])])
        .unwrap();
    store.read_stream("s", 1, Direction::Forwards, 100).unwrap();
    assert_eq!(store.metrics().unwrap().cache, None);
}
