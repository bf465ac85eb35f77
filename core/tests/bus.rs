//! The event bus: handlers per event type, checkpoints in SQLite, retries, failures reported.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{fast, temp_store};
use strata::{EventBus, ExpectedVersion, HandlerOptions, HandlerStatus, NewEvent, Store};

const PATIENCE: Duration = Duration::from_secs(30);

fn ev(kind: &str, data: &str) -> NewEvent {
    NewEvent::new(kind, data.as_bytes().to_vec())
}

type Seen = Arc<Mutex<Vec<(u64, String)>>>;

fn recorder(seen: &Seen) -> impl FnMut(&strata::Event) -> Result<(), String> + Send + 'static {
    let seen = seen.clone();
    move |event| {
        seen.lock().unwrap().push((
            event.position,
            String::from_utf8(event.data.to_vec()).unwrap(),
        ));
        Ok(())
    }
}

fn fast_retries() -> HandlerOptions {
    HandlerOptions {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
        ..HandlerOptions::default()
    }
}

#[test]
fn a_restarted_handler_resumes_from_its_checkpoint() {
    let (_dir, path, store) = temp_store(fast());
    store
        .append(
            "o-1",
            ExpectedVersion::Any,
            vec![ev("created", "c1"), ev("paid", "p1")],
        )
        .unwrap();
    let seen: Seen = Arc::default();
    {
        let bus = EventBus::new(&store).unwrap();
        let handle = bus
            .register(
                "mailer",
                &["paid", "refunded"],
                HandlerOptions::default(),
                recorder(&seen),
            )
            .unwrap();
        store
            .append(
                "o-2",
                ExpectedVersion::Any,
                vec![ev("paid", "p2"), ev("created", "c2")],
            )
            .unwrap();
        let last = store.last_position().unwrap();
        assert_eq!(handle.wait_for_checkpoint(last, PATIENCE), last);
        assert_eq!(handle.stop(), HandlerStatus::Stopped);
        assert_eq!(bus.checkpoint("mailer").unwrap(), last);
    }
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(2, "p1".to_string()), (3, "p2".to_string())]
    );

    // Appends while the handler is down, then the application restarts.
    store
        .append(
            "o-3",
            ExpectedVersion::Any,
            vec![ev("refunded", "r3"), ev("paid", "p3")],
        )
        .unwrap();
    store.close();
    drop(store);
    let store = Store::open(&path, fast()).unwrap();
    let bus = EventBus::new(&store).unwrap();
    let resumed: Seen = Arc::default();
    let handle = bus
        .register(
            "mailer",
            &["paid", "refunded"],
            HandlerOptions::default(),
            recorder(&resumed),
        )
        .unwrap();
    let last = store.last_position().unwrap();
    assert_eq!(handle.wait_for_checkpoint(last, PATIENCE), last);
    assert_eq!(
        *resumed.lock().unwrap(),
        vec![(5, "r3".to_string()), (6, "p3".to_string())]
    );
    assert_eq!(handle.status(), HandlerStatus::Running);
}

#[test]
fn a_failing_event_is_retried_and_then_reported_never_skipped() {
    let store = Store::open_in_memory(fast()).unwrap();
    let bus = EventBus::new(&store).unwrap();
    store
        .append(
            "s",
            ExpectedVersion::Any,
            vec![
                ev("job", "ok-1"),
                ev("job", "flaky"),
                ev("job", "poison"),
                ev("job", "ok-2"),
            ],
        )
        .unwrap();
    let attempts: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = attempts.clone();
    let mut flaky_failures = 0;
    let handle = bus
        .register("worker", &["job"], fast_retries(), move |event| {
            let data = String::from_utf8(event.data.to_vec()).unwrap();
            log.lock().unwrap().push(data.clone());
            match data.as_str() {
                "flaky" if flaky_failures < 2 => {
                    flaky_failures += 1;
                    Err(format!("transient failure {flaky_failures}"))
                }
                "poison" => Err("cannot handle poison".to_string()),
                _ => Ok(()),
            }
        })
        .unwrap();
    // Waits until the handler stops running (it must fail on "poison").
    handle.wait_for_checkpoint(u64::MAX, PATIENCE);
    assert_eq!(
        handle.status(),
        HandlerStatus::Failed {
            position: 3,
            error: "cannot handle poison".into(),
            attempts: 3,
        }
    );
    assert_eq!(
        *attempts.lock().unwrap(),
        ["ok-1", "flaky", "flaky", "flaky", "poison", "poison", "poison"]
    );
    assert_eq!(
        bus.checkpoint("worker").unwrap(),
        2,
        "stays before the failing event"
    );
    drop(handle);

    // Registered again under the same name (fixed), it starts with the failed event.
    let seen: Seen = Arc::default();
    let handle = bus
        .register("worker", &["job"], fast_retries(), recorder(&seen))
        .unwrap();
    assert_eq!(handle.wait_for_checkpoint(4, PATIENCE), 4);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(3, "poison".to_string()), (4, "ok-2".to_string())]
    );
}

#[test]
fn handlers_get_only_their_types_and_names_are_unique() {
    let store = Store::open_in_memory(fast()).unwrap();
    let bus = EventBus::new(&store).unwrap();
    let paid: Seen = Arc::default();
    let shipped: Seen = Arc::default();
    let a = bus
        .register(
            "paid",
            &["paid"],
            HandlerOptions::default(),
            recorder(&paid),
        )
        .unwrap();
    let b = bus
        .register(
            "shipped",
            &["shipped"],
            HandlerOptions::default(),
            recorder(&shipped),
        )
        .unwrap();
    assert!(bus
        .register(
            "paid",
            &["paid"],
            HandlerOptions::default(),
            recorder(&paid)
        )
        .is_err());
    assert!(bus
        .register(
            "bad",
            &["paid"],
            HandlerOptions {
                max_attempts: 0,
                ..HandlerOptions::default()
            },
            recorder(&paid)
        )
        .is_err());
    for i in 0..6 {
        let kind = ["paid", "shipped", "created"][i % 3];
        store
            .append(
                "s",
                ExpectedVersion::Any,
                vec![ev(kind, &format!("{kind}{i}"))],
            )
            .unwrap();
    }
    let last = store.last_position().unwrap();
    a.wait_for_checkpoint(last, PATIENCE);
    b.wait_for_checkpoint(last, PATIENCE);
    assert_eq!(
        *paid.lock().unwrap(),
        vec![(1, "paid0".to_string()), (4, "paid3".to_string())]
    );
    assert_eq!(
        *shipped.lock().unwrap(),
        vec![(2, "shipped1".to_string()), (5, "shipped4".to_string())]
    );
    // Closing the store stops the handlers.
    store.close();
    assert_eq!(a.stop(), HandlerStatus::Stopped);
    assert_eq!(b.stop(), HandlerStatus::Stopped);
}
