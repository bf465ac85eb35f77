//! Replication through a real `nats-server` (JetStream on, 127.0.0.1, temporary storage).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{all_events, assert_replicated, open, wait_until, NatsServer};
use strata::{AppendCondition, ExpectedVersion, NewEvent, Query, QueryItem, Store, Uuid};
use strata_nats::checkpoint::Checkpoints;
use strata_nats::dead_letter::{DeadLetters, Side};
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
    // Some tests start the ingester before any publisher.
    config.create_stream = true;
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
    strata_nats::ensure_stream(&js, "SRC", "strata.src", Duration::from_secs(60), true)
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

fn dead_letters(
    store: &Store,
    side: Side,
    name: &str,
) -> Vec<strata_nats::dead_letter::DeadLetter> {
    DeadLetters::open_read_only(&store.path().unwrap())
        .unwrap()
        .list(Some(side), Some(name))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_the_servers_max_payload_is_dead_lettered_and_retried_after_the_limit_is_raised(
) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = NatsServer::start_with_config(dir.path(), "max_payload: 4096");
    let url = server.url();
    let source = open(&dir.path().join("source.strata"));
    let central = open(&dir.path().join("central.strata"));
    let small = |i: usize| NewEvent::new("small", format!("small-{i}").into_bytes());
    source
        .append("big-stream", ExpectedVersion::Any, vec![small(1)])
        .unwrap();
    source
        .append("other", ExpectedVersion::Any, vec![small(2)])
        .unwrap();
    // 5 KB: over the 4 KB max_payload the server announces in its INFO.
    source
        .append(
            "big-stream",
            ExpectedVersion::Any,
            vec![NewEvent::new("big", vec![7u8; 5_000])],
        )
        .unwrap();
    source
        .append("other", ExpectedVersion::Any, vec![small(3)])
        .unwrap();
    // Held behind the big one: its stream's order is kept.
    source
        .append("big-stream", ExpectedVersion::Any, vec![small(4)])
        .unwrap();
    source
        .append("other", ExpectedVersion::Any, vec![small(5)])
        .unwrap();

    let p = publisher(&source, &url, "SRC", "strata.src");
    let report = tokio::time::timeout(Duration::from_secs(30), p.run(PublishUntil::CaughtUp))
        .await
        .expect("the push stalled behind the big event")
        .unwrap();
    assert_eq!(
        (report.published, report.dead_lettered, report.checkpoint),
        (4, 2, 6)
    );
    assert_eq!(report.dead_letters, 2);
    let letters = dead_letters(&source, Side::Push, "nats:SRC");
    assert_eq!(letters.iter().map(|l| l.id).collect::<Vec<_>>(), vec![3, 5]);
    assert!(
        letters[0]
            .reason
            .contains("exceeds the server's max_payload of 4096"),
        "{}",
        letters[0].reason
    );
    assert!(
        letters[1]
            .reason
            .contains("held behind the dead letter at position 3"),
        "{}",
        letters[1].reason
    );
    assert_eq!(
        status::source_lag(&source, "nats:SRC")
            .unwrap()
            .dead_letters,
        2
    );
    let metrics = status::metrics_text(&source.path().unwrap()).unwrap();
    assert!(
        metrics.contains("strata_replication_dead_letters{side=\"push\",name=\"nats:SRC\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("strata_replication_checkpoint{name=\"nats:SRC\"} 6\n"),
        "{metrics}"
    );

    // Events after the poison one arrive, once.
    let i = ingester(&central, &url, "SRC", "strata.src", "central", "src/");
    let pulled = i
        .run(IngestUntil::Idle(Duration::from_millis(500)))
        .await
        .unwrap();
    assert_eq!((pulled.appended, pulled.rejected), (4, 0));
    let stored: Vec<(String, u64)> = all_events(&central)
        .iter()
        .map(|e| (e.stream_id.to_string(), e.version))
        .collect();
    assert_eq!(
        stored,
        [
            ("src/big-stream", 1),
            ("src/other", 1),
            ("src/other", 2),
            ("src/other", 3)
        ]
        .map(|(s, v)| (s.to_owned(), v))
    );

    // A retry against the same server fails again and keeps both.
    let again = p.retry_dead_letters().await.unwrap();
    assert_eq!((again.replicated, again.still_dead), (0, 2));
    // With the limit raised, the retry publishes both in order and removes them.
    server.stop();
    server.set_config(dir.path(), "max_payload: 1048576");
    server.restart();
    let retried = p.retry_dead_letters().await.unwrap();
    assert_eq!((retried.replicated, retried.still_dead), (2, 0));
    assert!(dead_letters(&source, Side::Push, "nats:SRC").is_empty());
    // Later events of the stream are no longer held.
    source
        .append("big-stream", ExpectedVersion::Any, vec![small(6)])
        .unwrap();
    let report = p.run(PublishUntil::CaughtUp).await.unwrap();
    assert_eq!((report.published, report.dead_lettered), (1, 0));
    i.run(IngestUntil::Idle(Duration::from_millis(500)))
        .await
        .unwrap();
    assert_replicated(&source, &central, "src/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_cannot_be_ingested_are_dead_lettered_and_the_rest_arrive_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let source = open(&dir.path().join("source.strata"));
    let central = open(&dir.path().join("central.strata"));
    // 250 bytes: fine in the source, 259 under the prefix "device-a/".
    let long_id = "L".repeat(250);
    for i in 0..3 {
        source
            .append(
                &long_id,
                ExpectedVersion::Any,
                vec![NewEvent::new("e", format!("long-{i}"))],
            )
            .unwrap();
        source
            .append(
                "short",
                ExpectedVersion::Any,
                vec![NewEvent::new("e", format!("short-{i}"))],
            )
            .unwrap();
    }
    publisher(&source, &url, "SRC", "strata.src")
        .run(PublishUntil::CaughtUp)
        .await
        .unwrap();
    // And a message on the stream's subjects that is not a strata event at all.
    let client = strata_nats::connect(&url, Duration::from_secs(2))
        .await
        .unwrap();
    async_nats::jetstream::new(client)
        .publish("strata.src.intruder", "hello".into())
        .await
        .unwrap()
        .await
        .unwrap();

    let i = ingester(&central, &url, "SRC", "strata.src", "central", "device-a/");
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        i.run(IngestUntil::Idle(Duration::from_millis(500))),
    )
    .await
    .expect("the pull stalled")
    .unwrap();
    assert_eq!(
        (report.appended, report.rejected, report.dead_letters),
        (3, 4, 4)
    );
    let stored: Vec<String> = all_events(&central)
        .iter()
        .map(|e| e.stream_id.to_string())
        .collect();
    assert_eq!(stored, vec!["device-a/short"; 3]);
    let letters = dead_letters(&central, Side::Pull, "central");
    assert_eq!(letters.len(), 4);
    assert!(
        letters[0]
            .reason
            .contains("259 bytes, over the limit of 255"),
        "{}",
        letters[0].reason
    );
    assert!(
        letters[3].reason.starts_with("not a strata event"),
        "{}",
        letters[3].reason
    );
    assert_eq!(letters[0].source_position, Some(1));
    // Nothing is left for JetStream to deliver: they were terminated, not left to redeliver.
    let lag = status::consumer_lag(&url, "SRC", "central", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(lag.pending + lag.ack_pending, 0);

    // Retried under a prefix that fits, from the copies kept in the store: no NATS needed.
    drop(server);
    let mut config = IngesterConfig::new(&url, "SRC", "strata.src", "central", "d/");
    config.connect_timeout = Duration::from_millis(200);
    let retry = Ingester::new(central.clone(), config).unwrap();
    let retried = retry.retry_dead_letters().await.unwrap();
    assert_eq!((retried.replicated, retried.still_dead), (3, 1));
    let long: Vec<u64> = central
        .read_stream(&format!("d/{long_id}"), 1, strata::Direction::Forwards, 10)
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(long, vec![1, 2, 3]);
    let left = dead_letters(&central, Side::Pull, "central");
    assert_eq!(left.len(), 1);
    assert!(left[0].reason.starts_with("not a strata event"));
}

/// Tags that break naive header encodings: separators, quotes, whitespace, line breaks,
/// percent signs, non-ASCII, and the longest tag allowed.
fn hostile_tags() -> Vec<String> {
    let mut tags: Vec<String> = [
        "course:c1",
        "a,b",
        "\"quoted\"",
        "with space",
        "line\r\nbreak",
        "%2C",
        "über",
        "日本語",
    ]
    .map(String::from)
    .to_vec();
    tags.push("x".repeat(strata::limits::MAX_TAG_BYTES));
    tags
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_replicate_intact_and_a_malformed_tags_header_is_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let source = open(&dir.path().join("source.strata"));
    let central = open(&dir.path().join("central.strata"));
    let hostile = hostile_tags();
    // Tagged events in the default stream (a conditional append), tagged events in named
    // streams, and untagged ones in between.
    source
        .append_with(
            vec![NewEvent::new("course_defined", "c1").with_tags(hostile.clone())],
            AppendCondition::new(Query::tags(["course:c1"]), 0),
        )
        .unwrap();
    for i in 0..6 {
        let stream = TRICKY_STREAMS[i % TRICKY_STREAMS.len()];
        let mut event = NewEvent::new("student_subscribed", format!("s{i}"));
        if i % 2 == 0 {
            event = event.with_tags(["course:c1".to_string(), format!("student:{i}, \"x\"")]);
        }
        store_one(&source, stream, event);
    }
    let report = publisher(&source, &url, "SRC", "strata.src")
        .run(PublishUntil::CaughtUp)
        .await
        .unwrap();
    assert_eq!(report.published, 7);

    // A message whose tags header is not a list of escaped tags, on a stream of its own.
    let bad = strata::Event {
        position: 100,
        stream_id: "bad-tags".into(),
        version: 1,
        event_type: "e".into(),
        event_id: Uuid::now_v7(),
        recorded_at: 1,
        data: "x".into(),
        metadata: Default::default(),
        tags: Default::default(),
    };
    let (subject, mut headers, payload) = strata_nats::wire::encode("strata.src", &bad);
    headers.insert(strata_nats::wire::TAGS, "ok,,b");
    let client = strata_nats::connect(&url, Duration::from_secs(2))
        .await
        .unwrap();
    async_nats::jetstream::new(client)
        .publish_with_headers(subject, headers, payload)
        .await
        .unwrap()
        .await
        .unwrap();

    let i = ingester(&central, &url, "SRC", "strata.src", "central", "");
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        i.run(IngestUntil::Idle(Duration::from_millis(500))),
    )
    .await
    .expect("the pull stalled on the malformed message")
    .unwrap();
    assert_eq!((report.appended, report.rejected), (7, 1), "{report:?}");
    assert_replicated(&source, &central, "");
    let letters = dead_letters(&central, Side::Pull, "central");
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].reason.contains("Strata-Tags") && letters[0].reason.contains("tag 1 is empty"),
        "{}",
        letters[0].reason
    );

    // The tags are there, and the tag index knows them: queries find the events.
    let first = &all_events(&central)[0];
    let mut sorted = hostile.clone();
    sorted.sort();
    assert_eq!(&first.tags[..], &sorted[..]);
    for tag in &hostile {
        let found = central
            .read_query(&Query::tags([tag.as_str()]), 0, 100)
            .unwrap();
        // "course:c1" is on the three tagged students too.
        let expected = if tag == "course:c1" { 4 } else { 1 };
        assert_eq!(found.len(), expected, "{tag:?}");
        assert_eq!(found[0].event_type.as_ref(), "course_defined");
    }
    let course = central
        .read_query(
            &Query::item(QueryItem::types(["student_subscribed"]).with_tags(["course:c1"])),
            0,
            100,
        )
        .unwrap();
    let data: Vec<&[u8]> = course.iter().map(|e| &e.data[..]).collect();
    assert_eq!(data, [&b"s0"[..], b"s2", b"s4"]);
    assert_eq!(
        central
            .read_query(&Query::tags(["student:2, \"x\""]), 0, 100)
            .unwrap()
            .len(),
        1
    );
    let untagged = all_events(&central)
        .iter()
        .filter(|e| e.tags.is_empty())
        .count();
    assert_eq!(untagged, 3);
    // The conditional append's stream arrived under its name.
    assert_eq!(&*first.stream_id, strata::DEFAULT_STREAM);
}

fn store_one(store: &Store, stream: &str, event: NewEvent) {
    store
        .append(stream, ExpectedVersion::Any, vec![event])
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_does_not_create_a_missing_stream_and_says_which_one_exists() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let source = open(&dir.path().join("source.strata"));
    let central = open(&dir.path().join("central.strata"));
    fill(&source, "a", 3, 1);
    publisher(&source, &url, "SRC", "strata.src")
        .run(PublishUntil::CaughtUp)
        .await
        .unwrap();
    let mut config = IngesterConfig::new(&url, "SCR", "strata.src", "central", "src/");
    config.fetch_wait = Duration::from_millis(100);
    let typo = Ingester::new(central.clone(), config.clone()).unwrap();
    let error = typo
        .run(IngestUntil::Idle(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert!(!error.is_retryable());
    let text = error.to_string();
    assert!(
        text.contains("JetStream stream SCR does not exist"),
        "{text}"
    );
    assert!(text.contains("stream SRC captures strata.src.>"), "{text}");
    let client = strata_nats::connect(&url, Duration::from_secs(2))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    assert!(
        js.get_stream("SCR").await.is_err(),
        "the misspelt stream was created"
    );
    // Asked to create it, it says the subjects are taken instead of a bare "overlap".
    config.create_stream = true;
    let error = Ingester::new(central.clone(), config)
        .unwrap()
        .run(IngestUntil::Idle(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("already captured by another stream"),
        "{error}"
    );
    // status on a missing stream or durable is an error, not a lag of everything.
    let error = status::consumer_lag(&url, "SCR", "central", Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("stream SCR does not exist"),
        "{error}"
    );
    let error = status::consumer_lag(&url, "SRC", "centrl", Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("durable consumer centrl does not exist"),
        "{error}"
    );
    let error = status::source_lag(&source, "nats:SCR").unwrap_err();
    assert!(error.to_string().contains("[\"nats:SRC\"]"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_ack_wait_is_applied_to_the_existing_durable() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let central = open(&dir.path().join("central.strata"));
    let run = |ack_wait: Duration, prefix: &str| {
        let mut config = IngesterConfig::new(&url, "SRC", prefix, "central", "src/");
        config.create_stream = true;
        config.fetch_wait = Duration::from_millis(50);
        config.ack_wait = ack_wait;
        let ingester = Ingester::new(central.clone(), config).unwrap();
        async move {
            ingester
                .run(IngestUntil::Idle(Duration::from_millis(50)))
                .await
        }
    };
    run(Duration::from_secs(2), "strata.src").await.unwrap();
    run(Duration::from_secs(7), "strata.src").await.unwrap();
    let client = strata_nats::connect(&url, Duration::from_secs(2))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let info = js
        .get_stream("SRC")
        .await
        .unwrap()
        .consumer_info("central")
        .await
        .unwrap();
    assert_eq!(info.config.ack_wait, Duration::from_secs(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_that_filters_other_subjects_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let central = open(&dir.path().join("central.strata"));
    // One JetStream stream carrying two sources, so that either subject prefix is accepted.
    let client = strata_nats::connect(&url, Duration::from_secs(2))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let mut config = strata_nats::stream_config("SRC", "strata.a", Duration::from_secs(60));
    config.subjects.push("strata.b.>".into());
    js.create_stream(config).await.unwrap();
    let run = |subject_prefix: &str| {
        let mut config = IngesterConfig::new(&url, "SRC", subject_prefix, "central", "src/");
        config.fetch_wait = Duration::from_millis(50);
        let ingester = Ingester::new(central.clone(), config).unwrap();
        async move {
            ingester
                .run(IngestUntil::Idle(Duration::from_millis(50)))
                .await
        }
    };
    run("strata.a").await.unwrap();
    let error = run("strata.b").await.unwrap_err();
    assert!(matches!(error, ReplicationError::Config(_)), "{error:?}");
    assert!(!error.is_retryable());
    let text = error.to_string();
    assert!(
        text.contains("durable consumer central on stream SRC exists with filter \"strata.a.>\"")
            && text.contains("this pull needs filter \"strata.b.>\"")
            && text.contains("use another --durable name"),
        "{text}"
    );
    let info = js
        .get_stream("SRC")
        .await
        .unwrap()
        .consumer_info("central")
        .await
        .unwrap();
    assert_eq!(info.config.filter_subject, "strata.a.>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_both_sides_with_their_reports_and_checkpoint_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let source = open(&dir.path().join("source.strata"));
    let central = open(&dir.path().join("central.strata"));
    fill(&source, "a", 20, 5);
    let p = publisher(&source, &url, "SRC", "strata.src");
    let i = ingester(&central, &url, "SRC", "strata.src", "central", "src/");
    let push = tokio::spawn({
        let p = p.clone();
        async move { p.run(PublishUntil::Forever).await }
    });
    // The puller does not create the JetStream stream: start it once the pusher has.
    wait_until(Duration::from_secs(30), "publishing", || {
        p.checkpoint().unwrap() == 100
    })
    .await;
    let pull = tokio::spawn({
        let i = i.clone();
        async move { i.run(IngestUntil::Forever).await }
    });
    wait_until(Duration::from_secs(30), "replication", || {
        central.last_position().unwrap() == 100
    })
    .await;
    p.stop_handle().stop();
    i.stop_handle().stop();
    let pushed = tokio::time::timeout(Duration::from_secs(10), push)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let pulled = tokio::time::timeout(Duration::from_secs(10), pull)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((pushed.published, pushed.checkpoint), (100, 100));
    assert_eq!(p.checkpoint().unwrap(), 100);
    assert_eq!(pulled.appended, 100);
    assert_replicated(&source, &central, "src/");
}
