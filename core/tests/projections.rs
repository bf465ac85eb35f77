//! The projection runner with native Rust projections: checkpoints, faults, rebuilds, queries.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{events, fast};
use strata::{
    ExpectedVersion, NewEvent, Projection, ProjectionError, ProjectionInfo, ProjectionPhase,
    ProjectionRunner, ProjectionState, RunnerError, RunnerOptions, Store,
};

/// Counts events per type; records every position it was given.
struct Counter {
    name: &'static str,
    version: u32,
    types: Vec<String>,
    seen: Arc<parking_lot::Mutex<Vec<u64>>>,
    queries: Arc<AtomicUsize>,
    /// Fails on events whose data equals this.
    poison: Option<Vec<u8>>,
}

impl Counter {
    fn new(name: &'static str) -> Self {
        Counter {
            name,
            version: 1,
            types: Vec::new(),
            seen: Arc::default(),
            queries: Arc::default(),
            poison: None,
        }
    }
}

impl Projection for Counter {
    fn describe(&mut self) -> Result<ProjectionInfo, ProjectionError> {
        Ok(ProjectionInfo {
            name: self.name.into(),
            version: self.version,
            event_types: self.types.clone(),
        })
    }

    fn apply(
        &mut self,
        events: &[strata::Event],
        state: &mut ProjectionState,
    ) -> Result<(), ProjectionError> {
        for event in events {
            if self.poison.as_deref() == Some(&event.data[..]) {
                return Err(ProjectionError::Failed(format!(
                    "poisoned event at {}",
                    event.position
                )));
            }
            self.seen.lock().push(event.position);
            let key = format!("count/{}", event.event_type);
            let count = state
                .get(key.as_bytes())?
                .map(|v| u64::from_le_bytes(v.try_into().unwrap()))
                .unwrap_or(0);
            state.put(
                key.as_bytes(),
                &(count + u64::from(self.version)).to_le_bytes(),
            )?;
        }
        Ok(())
    }

    fn query(
        &mut self,
        request: &[u8],
        state: &mut ProjectionState,
    ) -> Result<Vec<u8>, ProjectionError> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        let key = format!("count/{}", String::from_utf8_lossy(request));
        Ok(state
            .get(key.as_bytes())?
            .unwrap_or_else(|| 0u64.to_le_bytes().to_vec()))
    }
}

fn count(runner: &ProjectionRunner, name: &str, event_type: &str) -> u64 {
    u64::from_le_bytes(
        runner
            .query(name, event_type.as_bytes())
            .unwrap()
            .try_into()
            .unwrap(),
    )
}

fn small_batches() -> RunnerOptions {
    RunnerOptions {
        batch_size: 7,
        ..RunnerOptions::default()
    }
}

#[test]
fn a_projection_folds_the_log_and_resumes_from_its_checkpoint_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    {
        let store = Store::open(&path, fast()).unwrap();
        store
            .append("a", ExpectedVersion::Any, events("x", 20))
            .unwrap();
        store
            .append("b", ExpectedVersion::Any, events("y", 5))
            .unwrap();
        let runner = ProjectionRunner::new(&store, small_batches()).unwrap();
        runner.register(Box::new(Counter::new("counter"))).unwrap();
        let status = runner.catch_up("counter").unwrap();
        assert_eq!(
            (status.checkpoint, status.lag, status.phase),
            (25, 0, ProjectionPhase::Live)
        );
        assert_eq!(count(&runner, "counter", "x"), 20);
    }
    let store = Store::open(&path, fast()).unwrap();
    store
        .append("a", ExpectedVersion::Any, events("x", 3))
        .unwrap();
    let runner = ProjectionRunner::new(&store, small_batches()).unwrap();
    let counter = Counter::new("counter");
    let seen = counter.seen.clone();
    let status = runner.register(Box::new(counter)).unwrap();
    assert_eq!((status.checkpoint, status.lag), (25, 3));
    runner.catch_up("counter").unwrap();
    assert_eq!(
        *seen.lock(),
        vec![26, 27, 28],
        "only events after the checkpoint"
    );
    assert_eq!(count(&runner, "counter", "x"), 23);
}

#[test]
fn a_projection_receives_only_the_event_types_it_declares() {
    let store = Store::open_in_memory(fast()).unwrap();
    for i in 0..10 {
        store
            .append(
                &format!("s{i}"),
                ExpectedVersion::Any,
                vec![
                    NewEvent::new("wanted", b"w".to_vec()),
                    NewEvent::new("other", b"o".to_vec()),
                ],
            )
            .unwrap();
    }
    let runner = ProjectionRunner::new(&store, small_batches()).unwrap();
    let mut counter = Counter::new("picky");
    counter.types = vec!["wanted".into()];
    let seen = counter.seen.clone();
    runner.register(Box::new(counter)).unwrap();
    let status = runner.catch_up("picky").unwrap();
    assert_eq!(*seen.lock(), (1..=19).step_by(2).collect::<Vec<u64>>());
    assert_eq!(
        (status.checkpoint, status.lag),
        (20, 0),
        "the checkpoint reaches the head"
    );
    assert_eq!(count(&runner, "picky", "other"), 0);
}

#[test]
fn a_faulting_projection_stops_at_the_exact_event_and_others_carry_on() {
    let store = Store::open_in_memory(fast()).unwrap();
    store
        .append("s", ExpectedVersion::Any, events("e", 10))
        .unwrap(); // data e-0 .. e-9
    let runner = ProjectionRunner::new(&store, small_batches()).unwrap();
    let mut fragile = Counter::new("fragile");
    fragile.poison = Some(b"e-4".to_vec());
    runner.register(Box::new(fragile)).unwrap();
    runner.register(Box::new(Counter::new("sturdy"))).unwrap();

    let statuses = runner.catch_up_all().unwrap();
    let fragile = statuses.iter().find(|s| s.name == "fragile").unwrap();
    match &fragile.phase {
        ProjectionPhase::Faulted { position, message } => {
            assert_eq!(*position, 5);
            assert!(message.contains("poisoned event at 5"), "{message}");
        }
        other => panic!("expected a fault, got {other:?}"),
    }
    assert_eq!(
        fragile.checkpoint, 4,
        "events before the fault are committed"
    );
    assert_eq!(count(&runner, "fragile", "e"), 4);
    let sturdy = statuses.iter().find(|s| s.name == "sturdy").unwrap();
    assert_eq!(sturdy.phase, ProjectionPhase::Live);

    // Appends keep working; resuming retries the same event and faults again.
    store
        .append("s", ExpectedVersion::Any, events("f", 1))
        .unwrap();
    runner.resume("fragile").unwrap();
    assert!(matches!(
        runner.catch_up("fragile").unwrap().phase,
        ProjectionPhase::Faulted { position: 5, .. }
    ));

    // Skipping records the event and goes past it.
    runner.skip("fragile").unwrap();
    let status = runner.catch_up("fragile").unwrap();
    assert_eq!(
        (status.checkpoint, status.phase),
        (11, ProjectionPhase::Live)
    );
    assert_eq!(count(&runner, "fragile", "e"), 9);
    let skipped = runner.skipped("fragile").unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].0, 5);
}

#[test]
fn a_new_version_rebuilds_while_the_old_one_answers_queries_then_swaps() {
    let store = Store::open_in_memory(fast()).unwrap();
    store
        .append("s", ExpectedVersion::Any, events("e", 30))
        .unwrap();
    let runner = ProjectionRunner::new(&store, small_batches()).unwrap();
    runner.register(Box::new(Counter::new("counter"))).unwrap();
    runner.catch_up("counter").unwrap();
    assert_eq!(count(&runner, "counter", "e"), 30);

    // Version 2 counts each event twice, so the answers tell which state served them.
    let mut v2 = Counter::new("counter");
    v2.version = 2;
    let status = runner.register(Box::new(v2)).unwrap();
    assert_eq!(
        (status.version, status.phase.clone()),
        (2, ProjectionPhase::Rebuilding)
    );
    assert_eq!(
        runner.run_once("counter").unwrap(),
        strata::BatchOutcome::Applied(7)
    );
    assert_eq!(
        count(&runner, "counter", "e"),
        30,
        "old state serves queries mid-rebuild"
    );

    let status = runner.catch_up("counter").unwrap();
    assert_eq!((status.version, status.phase), (2, ProjectionPhase::Live));
    assert_eq!(
        count(&runner, "counter", "e"),
        60,
        "new state after the swap"
    );
    let listed = ProjectionRunner::list(&store).unwrap();
    assert!(listed
        .iter()
        .any(|s| s.version == 1 && s.phase == ProjectionPhase::Retired));

    // Going back to version 1 is refused.
    let error = runner
        .register(Box::new(Counter::new("counter")))
        .unwrap_err();
    assert!(matches!(error, RunnerError::OlderVersion { .. }), "{error}");
}

#[test]
fn query_results_are_cached_per_checkpoint_and_never_stale() {
    let store = Store::open_in_memory(fast()).unwrap();
    store
        .append("s", ExpectedVersion::Any, events("e", 3))
        .unwrap();
    let runner = ProjectionRunner::new(&store, RunnerOptions::default()).unwrap();
    let counter = Counter::new("counter");
    let queries = counter.queries.clone();
    runner.register(Box::new(counter)).unwrap();
    runner.catch_up("counter").unwrap();

    assert_eq!(count(&runner, "counter", "e"), 3);
    assert_eq!(count(&runner, "counter", "e"), 3);
    assert_eq!(
        queries.load(Ordering::SeqCst),
        1,
        "second answer from the cache"
    );

    store
        .append("s", ExpectedVersion::Any, events("e", 2))
        .unwrap();
    runner.catch_up("counter").unwrap();
    assert_eq!(
        count(&runner, "counter", "e"),
        5,
        "a new checkpoint misses the cache"
    );
    assert_eq!(queries.load(Ordering::SeqCst), 2);
}

#[test]
fn reset_rebuilds_from_position_one() {
    let store = Store::open_in_memory(fast()).unwrap();
    store
        .append("s", ExpectedVersion::Any, events("e", 12))
        .unwrap();
    let runner = ProjectionRunner::new(&store, small_batches()).unwrap();
    let counter = Counter::new("counter");
    let seen = counter.seen.clone();
    runner.register(Box::new(counter)).unwrap();
    runner.catch_up("counter").unwrap();
    let status = runner.reset("counter").unwrap();
    assert_eq!(
        (status.checkpoint, status.phase),
        (0, ProjectionPhase::CatchingUp)
    );
    runner.catch_up("counter").unwrap();
    assert_eq!(
        count(&runner, "counter", "e"),
        12,
        "state was cleared, not doubled"
    );
    assert_eq!(seen.lock().len(), 24);
}

#[test]
fn invalid_names_and_unknown_projections_are_clear_errors() {
    let store = Store::open_in_memory(fast()).unwrap();
    let runner = ProjectionRunner::new(&store, RunnerOptions::default()).unwrap();
    let error = runner
        .register(Box::new(Counter::new("Not Valid!")))
        .unwrap_err();
    assert!(matches!(error, RunnerError::InvalidName(_)), "{error}");
    assert!(matches!(
        runner.status("missing"),
        Err(RunnerError::Unknown(_))
    ));
    assert!(matches!(
        runner.query("missing", b""),
        Err(RunnerError::Unknown(_))
    ));
}

#[test]
fn the_background_runner_keeps_projections_live_as_events_arrive() {
    let store = Store::open_in_memory(fast()).unwrap();
    let runner = ProjectionRunner::new(&store, RunnerOptions::default()).unwrap();
    runner.register(Box::new(Counter::new("counter"))).unwrap();
    let background = runner.start(Duration::from_secs(1));
    for _ in 0..5 {
        store
            .append("s", ExpectedVersion::Any, events("e", 10))
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while runner.status("counter").unwrap().checkpoint < 50 {
        assert!(Instant::now() < deadline, "the runner did not catch up");
        store.wait_for_commit(50, Duration::from_millis(20));
    }
    drop(background);
    assert_eq!(count(&runner, "counter", "e"), 50);
}

#[test]
fn two_runners_taking_turns_on_one_projection_keep_the_fold_exact() {
    // Each runner caches committed state across its batches; when the other one committed in
    // between, that cache must not be trusted.
    let (_dir, _path, store) = common::temp_store(common::fast());
    let options = || RunnerOptions {
        batch_size: 3,
        ..RunnerOptions::default()
    };
    let runners = [
        ProjectionRunner::new(&store, options()).unwrap(),
        ProjectionRunner::new(&store, options()).unwrap(),
    ];
    for runner in &runners {
        runner.register(Box::new(common::Sums)).unwrap();
    }
    let mut expected = (0i64, 0u64);
    for round in 0..20i64 {
        let amount = round * 7 - 30;
        store
            .append(
                "acct",
                strata::ExpectedVersion::Any,
                vec![strata::NewEvent::new("amount", amount.to_le_bytes().to_vec()); 2],
            )
            .unwrap();
        expected = (expected.0 + 2 * amount, expected.1 + 2);
        runners[(round % 2) as usize].catch_up("sums").unwrap();
    }
    for runner in &runners {
        runner.catch_up("sums").unwrap();
        let answer = runner.query("sums", b"acct").unwrap();
        assert_eq!(common::decode_sum(Some(&answer)), expected);
    }
}
