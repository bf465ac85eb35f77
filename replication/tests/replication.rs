//! Replication through a real `nats-server` (JetStream on, 127.0.0.1, temporary storage).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{all_events, assert_replicated, open, wait_until, NatsServer};
use strata::{ExpectedVersion, NewEvent, Store, Uuid};
use strata_nats::checkpoint::Checkpoints;
use strata_nats::{
    run_with_retry, status, IngestUntil, Ingester, IngesterConfig, PublishUntil, Publisher,
    PublisherConfig, ReplicationError, RetryPolicy,
};

const TRICKY_STREAMS: [&str; 5] = ["order-1", "order.2 *>", "über/straße", "a%41", "user_7"];

fn publisher(store: &Store, url: &str, stream: &str, prefix: &str) -> Publisher {
    let mut config = PublisherConfig::new(url, stream, prefix);
    config.ack_timeout = Duration::from_secs(2);
    config.max_in_flight = 64;
    Publisher::new(store.clone(), config).unwrap()
}

fn ingester(
    store: &Store,
    url: &str,
    stream: &str,
    prefix: &str,
    durable: &str,
    target: &str,
) -> Ingester {
    let mut config = IngesterConfig::new(url, stream, prefix, durable, target);
    config.fetch_wait = Duration::from_millis(200);
    config.gap_retry_delay = Duration::from_millis(50);
    // An ingester killed mid-batch leaves its messages unacknowledged until this passes.
    config.ack_wait = Duration::from_secs(2);
    Ingester::new(store.clone(), config).unwrap()
}

/// Appends `appends` multi-event appends round-robin over the tricky streams, with metadata on
/// some, and distinct payloads.
fn fill(store: &Store, tag: &str, appends: usize, per_append: usize) {
    for i in 0..appends {
        let stream = TRICKY_STREAMS[i % TRICKY_STREAMS.len()];
        let events = (0..per_append)
            .map(|j| {
                let event = NewEvent::new(
                    format!("type {}", j % 3),
                    format!("{tag}-{i}-{j}").into_bytes(),
                );
                if j % 2 == 0 {
                    event.with_metadata(format!("meta-{i}-{j}").into_bytes())
                } else {
                    event
                }
            })
            .collect();
        store.append(stream, ExpectedVersion::Any, events).unwrap();
    }
}

async fn stream_messages(url: &str, stream: &str) -> u64 {
    let client = strata_nats::connect(url, Duration::from_secs(2))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    js.get_stream(stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

fn retry_policy() -> RetryPolicy {
    RetryPolicy {
        initial_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(500),
        max_failures: 1_000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sources_replicate_into_one_central_store_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let a = open(&dir.path().join("a.strata"));
    let b = open(&dir.path().join("b.strata"));
    let central = open(&dir.path().join("central.strata"));
    fill(&a, "a", 60, 7);
    fill(&b, "b", 45, 3);

    let pa = publisher(&a, &url, "DEVICE_A", "strata.device-a");
    let pb = publisher(&b, &url, "DEVICE_B", "strata.device-b");
    let ra = pa.run(PublishUntil::CaughtUp).await.unwrap();
    let rb = pb.run(PublishUntil::CaughtUp).await.unwrap();
    assert_eq!((ra.published, ra.duplicates, ra.checkpoint), (420, 0, 420));
    assert_eq!((rb.published, rb.checkpoint), (135, 135));
    assert_eq!(stream_messages(&url, "DEVICE_A").await, 420);
    assert_eq!(stream_messages(&url, "DEVICE_B").await, 135);

    let ia = ingester(
        &central,
        &url,
        "DEVICE_A",
        "strata.device-a",
        "central",
        "device-a/",
    );
    let ib = ingester(
        &central,
        &url,
        "DEVICE_B",
        "strata.device-b",
        "central",
        "device-b/",
    );
    let (ra, rb) = tokio::join!(
        ia.run(IngestUntil::Idle(Duration::from_secs(1))),
        ib.run(IngestUntil::Idle(Duration::from_secs(1)))
    );
    assert_eq!(ra.unwrap().appended, 420);
    assert_eq!(rb.unwrap().appended, 135);
    assert_replicated(&a, &central, "device-a/");
    assert_replicated(&b, &central, "device-b/");
    assert_eq!(central.last_position().unwrap(), 555);

    // Lag on both sides is zero.
    let lag = status::source_lag(&a, &pa.config().checkpoint_name).unwrap();
    assert_eq!(
        (lag.last_position, lag.checkpoint, lag.lag()),
        (420, 420, 0)
    );
    let lag = status::consumer_lag(&url, "DEVICE_A", "central", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(
        (lag.pending, lag.ack_pending, lag.stream_messages),
        (0, 0, 420)
    );

    // Publishing everything again (checkpoint lost) stores nothing new in JetStream...
    Checkpoints::open(&a.path().unwrap())
        .unwrap()
        .reset(&pa.config().checkpoint_name)
        .unwrap();
    let again = pa.run(PublishUntil::CaughtUp).await.unwrap();
    assert_eq!((again.published, again.duplicates), (420, 420));
    assert_eq!(stream_messages(&url, "DEVICE_A").await, 420);
    // ...and a second consumer reading the whole stream again stores nothing new either.
    let replay = ingester(
        &central,
        &url,
        "DEVICE_A",
        "strata.device-a",
        "replay",
        "device-a/",
    );
    let report = replay
        .run(IngestUntil::Idle(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!((report.appended, report.already_stored), (0, 420));
    assert_eq!(central.last_position().unwrap(), 555);
    assert_replicated(&a, &central, "device-a/");
}

/// Writes `total` events in appends of 5 from a thread, pacing them so that faults land in the
/// middle of the run. Returns the flag set when done.
fn background_writer(store: Store, appends: usize) -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        for i in 0..appends {
            fill_one(&store, i);
            std::thread::sleep(Duration::from_millis(4));
        }
        flag.store(true, Ordering::SeqCst);
    });
    done
}

fn fill_one(store: &Store, i: usize) {
    let stream = TRICKY_STREAMS[i % TRICKY_STREAMS.len()];
    let events = (0..5)
        .map(|j| NewEvent::new("tick", format!("{i}-{j}").into_bytes()))
        .collect();
    store.append(stream, ExpectedVersion::Any, events).unwrap();
}

fn spawn_publisher(
    p: &Publisher,
) -> tokio::task::JoinHandle<Result<strata_nats::PublishReport, ReplicationError>> {
    let p = p.clone();
    tokio::spawn(async move {
        run_with_retry(
            &retry_policy(),
            &p.progress().clone(),
            |e, n, _| eprintln!("publisher failure {n}: {e}"),
            || p.run(PublishUntil::Forever),
        )
        .await
    })
}

fn spawn_ingester(
    i: &Ingester,
) -> tokio::task::JoinHandle<Result<strata_nats::IngestReport, ReplicationError>> {
    let i = i.clone();
    tokio::spawn(async move {
        run_with_retry(
            &retry_policy(),
            &i.progress().clone(),
            |e, n, _| eprintln!("ingester failure {n}: {e}"),
            || i.run(IngestUntil::Forever),
        )
        .await
    })
}

async fn wait_replicated(source: &Store, central: &Store, prefix: &str, writer_done: &AtomicBool) {
    let count = |store: &Store| {
        all_events(store)
            .iter()
            .filter(|e| e.stream_id.starts_with(prefix))
            .count()
    };
    wait_until(
        Duration::from_secs(90),
        "the central store to catch up",
        || {
            writer_done.load(Ordering::SeqCst)
                && count(central) >= source.last_position().unwrap() as usize
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_stopped_and_restarted_mid_run_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = NatsServer::start(dir.path());
    let url = server.url();
    let source = open(&dir.path().join("source.strata"));
    let central = open(&dir.path().join("central.strata"));
    let p = publisher(&source, &url, "SRC", "strata.src");
    let i = ingester(&central, &url, "SRC", "strata.src", "central", "src/");
    // The stream must exist before the server goes away: start both sides first.
    let publishing = spawn_publisher(&p);
    let ingesting = spawn_ingester(&i);
    let done = background_writer(source.clone(), 400);

    wait_until(Duration::from_secs(30), "some events replicated", || {
        central.last_position().unwrap() >= 200
    })
    .await;
    server.stop();
    // The outage: the writer goes on appending meanwhile.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let during = source.last_position().unwrap();
    server.restart();
    wait_replicated(&source, &central, "src/", &done).await;
    assert!(during > 200, "the outage happened mid-run");
    publishing.abort();
    ingesting.abort();

    assert_eq!(source.last_position().unwrap(), 2_000);
    assert_replicated(&source, &central, "src/");
    assert_eq!(
        central.last_position().unwrap(),
        2_000,
        "nothing stored twice"
    );
    wait_until(
        Duration::from_secs(10),
        "the checkpoint to reach the end",
        || p.checkpoint().unwrap() == 2_000,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_and_ingester_killed_and_restarted_resume_by_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let source = open(&dir.path().join("source.strata"));
    let central = open(&dir.path().join("central.strata"));
    let p = publisher(&source, &url, "SRC", "strata.src");
    let i = ingester(&central, &url, "SRC", "strata.src", "central", "src/");
    let done = background_writer(source.clone(), 400);
    let mut publishing = spawn_publisher(&p);
    let mut ingesting = spawn_ingester(&i);
    let mut kills = 0;
    let started = Instant::now();
    // Kill one side or the other every 150 ms while the writer runs (bounded: 60 rounds).
    for round in 0..60 {
        if done.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        if round % 2 == 0 {
            publishing.abort();
            let _ = publishing.await;
            publishing = spawn_publisher(&p);
        } else {
            ingesting.abort();
            let _ = ingesting.await;
            ingesting = spawn_ingester(&i);
        }
        kills += 1;
    }
    assert!(kills >= 4, "only {kills} kills in {:?}", started.elapsed());
    wait_replicated(&source, &central, "src/", &done).await;
    publishing.abort();
    ingesting.abort();
    assert_eq!(source.last_position().unwrap(), 2_000);
    assert_replicated(&source, &central, "src/");
    assert_eq!(central.last_position().unwrap(), 2_000);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stored_out_of_order_in_jetstream_are_ingested_in_stream_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let source = open(&dir.path().join("source.strata"));
    let central = open(&dir.path().join("central.strata"));
    let events: Vec<NewEvent> = (0..4).map(|v| NewEvent::new("e", vec![v])).collect();
    source
        .append("s.1", ExpectedVersion::NoStream, events)
        .unwrap();
    source
        .append(
            "other",
            ExpectedVersion::NoStream,
            vec![NewEvent::new("e", "x")],
        )
        .unwrap();
    let stored = all_events(&source);

    // Publish by hand as a retried pipeline could leave them: 3, 4, other, 1, 2.
    let client = strata_nats::connect(&url, Duration::from_secs(2))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    strata_nats::ensure_stream(&js, "SRC", "strata.src", Duration::from_secs(60))
        .await
        .unwrap();
    for index in [2, 3, 4, 0, 1] {
        let (subject, headers, payload) = strata_nats::wire::encode("strata.src", &stored[index]);
        js.publish_with_headers(subject, headers, payload)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let i = ingester(&central, &url, "SRC", "strata.src", "central", "");
    let report = i
        .run(IngestUntil::Idle(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(report.appended, 5);
    assert!(report.deferred >= 2, "{report:?}");
    assert_replicated(&source, &central, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_event_at_a_replicated_version_stops_the_ingester() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let source = open(&dir.path().join("source.strata"));
    let central = open(&dir.path().join("central.strata"));
    source
        .append(
            "s",
            ExpectedVersion::NoStream,
            vec![NewEvent::new("e", "source")],
        )
        .unwrap();
    central
        .append(
            "dev/s",
            ExpectedVersion::NoStream,
            vec![NewEvent::new("e", "local")],
        )
        .unwrap();
    publisher(&source, &url, "SRC", "strata.src")
        .run(PublishUntil::CaughtUp)
        .await
        .unwrap();
    let i = ingester(&central, &url, "SRC", "strata.src", "central", "dev/");
    let error = i
        .run(IngestUntil::Idle(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ReplicationError::Diverged { stream_id, version: 1, .. } if stream_id == "dev/s"),
        "{error}"
    );
    assert!(!error.is_retryable());
    // Nothing acknowledged: the message is still there for when a person has decided.
    let lag = status::consumer_lag(&url, "SRC", "central", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(lag.pending + lag.ack_pending, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_clear_error_retried_with_bounded_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let source = open(&dir.path().join("source.strata"));
    source
        .append(
            "s",
            ExpectedVersion::Any,
            vec![NewEvent::new("e", "x").with_id(Uuid::now_v7())],
        )
        .unwrap();
    let url = format!("nats://127.0.0.1:{}", common::free_port());
    let p = publisher(&source, &url, "SRC", "strata.src");
    let error = p.run(PublishUntil::CaughtUp).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("cannot connect to the NATS server at {url}")),
        "{text}"
    );
    assert!(error.is_retryable());

    let policy = RetryPolicy {
        initial_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(40),
        max_failures: 4,
    };
    let mut delays = Vec::new();
    let started = Instant::now();
    let result = run_with_retry(
        &policy,
        p.progress(),
        |_, _, delay| delays.push(delay),
        || p.run(PublishUntil::CaughtUp),
    )
    .await;
    assert!(matches!(result, Err(ReplicationError::Connect { .. })));
    let ms = |n| Duration::from_millis(n);
    assert_eq!(delays, vec![ms(20), ms(40), ms(40)]);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(p.checkpoint().unwrap(), 0);
}
