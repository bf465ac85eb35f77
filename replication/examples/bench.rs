//! Replication benchmark over loopback, against a real `nats-server`:
//! 1. throughput: N events already in the source, pushed and pulled concurrently until the
//!    central store holds them all (events/s);
//! 2. end-to-end lag: events appended one at a time at a steady rate while both sides run;
//!    lag = visible in the central store (a subscription there) minus append start, p50/p99.
//!
//! Run: cargo run --release -p strata-nats --example bench [-- EVENTS]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use strata::{Durability, ExpectedVersion, NewEvent, Options, Store, SubscriptionFilter};
use strata_nats::{
    IngestUntil, Ingester, IngesterConfig, PublishUntil, Publisher, PublisherConfig,
};

fn store(path: &std::path::Path) -> Store {
    let options = Options {
        durability: Durability::Fast,
        ..Options::default()
    };
    Store::open(path, options).unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events: u64 = std::env::args()
        .nth(1)
        .map_or(50_000, |n| n.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let server = common::NatsServer::start(dir.path());
    let url = server.url();

    // 1. Throughput.
    let source = store(&dir.path().join("source.strata"));
    let central = store(&dir.path().join("central.strata"));
    for i in 0..events / 100 {
        let batch = (0..100)
            .map(|j| {
                NewEvent::new(
                    "tick",
                    format!("{{\"i\":{i},\"j\":{j},\"pad\":\"0123456789abcdef0123456789abcdef\"}}")
                        .into_bytes(),
                )
            })
            .collect();
        source
            .append(&format!("stream-{}", i % 100), ExpectedVersion::Any, batch)
            .unwrap();
    }
    let total = source.last_position().unwrap();
    let publisher =
        Publisher::new(source.clone(), PublisherConfig::new(&url, "BENCH", "bench")).unwrap();
    let ingester = Ingester::new(
        central.clone(),
        IngesterConfig::new(&url, "BENCH", "bench", "central", "src/"),
    )
    .unwrap();
    let started = Instant::now();
    let done = {
        let central = central.clone();
        std::thread::spawn(move || {
            // The central store's writer wakes this waiter on each commit (no polling).
            let mut position = 0;
            let deadline = Instant::now() + Duration::from_secs(600);
            while position < total && Instant::now() < deadline {
                position = central.wait_for_commit(position, Duration::from_secs(1));
            }
            started.elapsed()
        })
    };
    let (published, ingested) = tokio::join!(
        async {
            let report = publisher.run(PublishUntil::CaughtUp).await.unwrap();
            (report, started.elapsed())
        },
        ingester.run(IngestUntil::Idle(Duration::from_millis(500)))
    );
    ingested.unwrap();
    assert_eq!(central.last_position().unwrap(), total);
    let end_to_end = done.join().unwrap();
    println!(
        "throughput: {total} events; publish {:.0} events/s ({:.2} s); publish+ingest {:.0} events/s ({:.2} s)",
        total as f64 / published.1.as_secs_f64(),
        published.1.as_secs_f64(),
        total as f64 / end_to_end.as_secs_f64(),
        end_to_end.as_secs_f64()
    );

    // 2. Lag, with both sides following live.
    let source = store(&dir.path().join("live-source.strata"));
    let central = store(&dir.path().join("live-central.strata"));
    let publisher =
        Publisher::new(source.clone(), PublisherConfig::new(&url, "LIVE", "live")).unwrap();
    let mut config = IngesterConfig::new(&url, "LIVE", "live", "central", "src/");
    config.fetch_wait = Duration::from_millis(100);
    let ingester = Ingester::new(central.clone(), config).unwrap();
    let p = tokio::spawn(async move { publisher.run(PublishUntil::Forever).await });
    let i = tokio::spawn(async move { ingester.run(IngestUntil::Forever).await });
    let samples = 2_000usize;
    let clock = Instant::now();
    let watcher = {
        let central = central.clone();
        std::thread::spawn(move || {
            let mut sub = central.subscribe(1, SubscriptionFilter::all()).unwrap();
            let mut lags = Vec::with_capacity(samples);
            let deadline = Instant::now() + Duration::from_secs(120);
            while lags.len() < samples && Instant::now() < deadline {
                if let Some(event) = sub.next_timeout(Duration::from_millis(100)).unwrap() {
                    let sent: u64 = std::str::from_utf8(&event.data).unwrap().parse().unwrap();
                    lags.push(clock.elapsed().as_micros() as u64 - sent);
                }
            }
            lags
        })
    };
    let writer = {
        let source = source.clone();
        std::thread::spawn(move || {
            for n in 0..samples {
                let sent = clock.elapsed().as_micros() as u64;
                source
                    .append(
                        &format!("s-{}", n % 10),
                        ExpectedVersion::Any,
                        vec![NewEvent::new("tick", sent.to_string())],
                    )
                    .unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    writer.join().unwrap();
    let mut lags = tokio::task::spawn_blocking(move || watcher.join().unwrap())
        .await
        .unwrap();
    p.abort();
    i.abort();
    assert_eq!(lags.len(), samples, "not every event arrived within 120 s");
    lags.sort_unstable();
    let pct =
        |q: f64| lags[((lags.len() as f64 * q) as usize).min(lags.len() - 1)] as f64 / 1_000.0;
    println!(
        "lag (append on source -> visible in central), {samples} events at ~1 per 2 ms: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.50),
        pct(0.99),
        *lags.last().unwrap() as f64 / 1_000.0
    );
}
