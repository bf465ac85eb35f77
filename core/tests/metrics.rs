//! Metrics: the writer counts appends, events, bytes, conflicts and latency; gauges describe
//! the store; the Prometheus text is well formed.

mod common;

use common::{events, fast, temp_store};
use strata::{ExpectedVersion, NewEvent, Store};

#[test]
fn appends_conflicts_and_bytes_are_counted() {
    let (_dir, _path, store) = temp_store(fast());
    let before = store.metrics().unwrap();
    assert_eq!((before.appends, before.events, before.commits), (0, 0, 0));

    store
        .append("s", ExpectedVersion::NoStream, events("e", 3))
        .unwrap();
    let id = strata::Uuid::now_v7();
    store
        .append(
            "t",
            ExpectedVersion::Any,
            vec![NewEvent::new("x", vec![0u8; 100])
                .with_metadata(vec![1u8; 10])
                .with_id(id)],
        )
        .unwrap();
    assert!(store
        .append("s", ExpectedVersion::NoStream, events("e", 1))
        .is_err());
    // A retry of a stored append counts as an append, but writes no event.
    store
        .append(
            "t",
            ExpectedVersion::Any,
            vec![NewEvent::new("x", vec![0u8; 100])
                .with_metadata(vec![1u8; 10])
                .with_id(id)],
        )
        .unwrap();

    let m = store.metrics().unwrap();
    assert_eq!(m.appends, 3);
    assert_eq!(m.events, 4);
    let e_bytes: u64 = events("e", 3).iter().map(|e| e.data.len() as u64).sum();
    assert_eq!(m.bytes, e_bytes + 110);
    assert_eq!(m.conflicts, 1);
    assert_eq!(m.append_errors, 0);
    assert_eq!(m.commits, 4);
    assert_eq!(m.append_latency_count, 3);
    assert!(m.mean_append_latency().unwrap() > std::time::Duration::ZERO);
    assert_eq!(m.last_position, 4);
    assert_eq!(m.live_events, 4);
    assert_eq!(m.buckets_active, 1);
    assert!(m.store_bytes > 0);
    assert_eq!(
        m.cache,
        Some(strata::CacheMetrics::default()),
        "on, nothing read yet"
    );
    assert!(m.projections.is_empty());
}

#[test]
fn prometheus_text_names_every_metric() {
    let store = Store::open_in_memory(fast()).unwrap();
    store
        .append("s", ExpectedVersion::Any, events("e", 2))
        .unwrap();
    let text = store.metrics_text().unwrap();
    for line in [
        "strata_appends_total 1",
        "strata_append_events_total 2",
        "strata_append_conflicts_total 0",
        "strata_commits_total 1",
        "strata_append_latency_seconds_count 1",
        "strata_last_position 2",
        "strata_live_events 2",
        "strata_buckets{state=\"active\"} 1",
        "strata_buckets{state=\"archived\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line || l.starts_with(line)),
            "{line} missing in\n{text}"
        );
    }
    assert!(text.ends_with("# EOF\n"));
}

/// Fails on events of type "poison"; does nothing with the others.
struct Picky;

impl strata::Projection for Picky {
    fn describe(&mut self) -> Result<strata::ProjectionInfo, strata::ProjectionError> {
        Ok(strata::ProjectionInfo {
            name: "picky".into(),
            version: 1,
            event_types: Vec::new(),
        })
    }

    fn apply(
        &mut self,
        events: &[strata::Event],
        _state: &mut strata::ProjectionState,
    ) -> Result<(), strata::ProjectionError> {
        match events.iter().find(|e| &*e.event_type == "poison") {
            Some(e) => Err(strata::ProjectionError::Failed(format!(
                "poison at {}",
                e.position
            ))),
            None => Ok(()),
        }
    }

    fn query(
        &mut self,
        _request: &[u8],
        _state: &mut strata::ProjectionState,
    ) -> Result<Vec<u8>, strata::ProjectionError> {
        Ok(Vec::new())
    }
}

#[test]
fn projection_lag_and_faults_come_from_the_stored_statuses() {
    let (_dir, _path, store) = temp_store(fast());
    store
        .append("s", ExpectedVersion::Any, events("e", 5))
        .unwrap();
    let runner = strata::ProjectionRunner::new(&store, strata::RunnerOptions::default()).unwrap();
    runner.register(Box::new(Picky)).unwrap();
    let m = store.metrics().unwrap();
    assert_eq!(m.projections.len(), 1);
    assert_eq!((m.projections[0].lag, m.projections[0].faulted), (5, false));

    runner.catch_up("picky").unwrap();
    store
        .append("s", ExpectedVersion::Any, events("e", 2))
        .unwrap();
    assert_eq!(store.metrics().unwrap().projections[0].lag, 2);

    store
        .append("s", ExpectedVersion::Any, events("poison", 1))
        .unwrap();
    runner.catch_up("picky").unwrap();
    let m = store.metrics().unwrap();
    assert!(m.projections[0].faulted, "{:?}", m.projections);
    assert_eq!(m.projections[0].phase, "faulted");
    let text = store.metrics_text().unwrap();
    assert!(
        text.contains("strata_projection_faulted{projection=\"picky\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("strata_projection_lag_events{projection=\"picky\"}"),
        "{text}"
    );
}
