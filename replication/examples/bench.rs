//! Replication benchmark over loopback, against a real `nats-server`:
//! 1. throughput: N events already in the source, pushed and pulled concurrently until the
//!    central store holds them all (events/s);
//! 2. end-to-end lag: events appended one at a time at a steady rate while both sides run;
//!    lag = visible in the central store (a subscription there) minus append start, p50/p99.
//!
//! 3. cross-process `strata tail --follow`: this process appends one event at a time; a
//!    `strata tail --follow` child (the binary named by `$STRATA_BIN`; skipped without it)
//!    prints them; latency = line read back minus append start, p50/p99;
//! 4. cross-process end-to-end: a child process (this example re-run) appends to the source
//!    while this one pushes, pulls and watches the central store; latency = visible in the
//!    central store minus append start (unix clock, same machine), p50/p99.
//!
//! Run: cargo run --release -p strata-nats --example bench [-- EVENTS]
//! (with STRATA_BIN=target/release/strata for part 3)

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

fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn percentiles(what: &str, mut micros: Vec<u64>) {
    micros.sort_unstable();
    let pct = |q: f64| {
        micros[((micros.len() as f64 * q) as usize).min(micros.len() - 1)] as f64 / 1_000.0
    };
    println!(
        "{what}, {} events: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        micros.len(),
        pct(0.50),
        pct(0.99),
        *micros.last().unwrap() as f64 / 1_000.0
    );
}

/// Child mode of part 4: `bench append-child PATH COUNT`: appends COUNT events, one every
/// 5 ms, each carrying its append start time (unix microseconds).
fn append_child(path: &str, count: usize) {
    let source = store(std::path::Path::new(path));
    for n in 0..count {
        source
            .append(
                &format!("s-{}", n % 10),
                ExpectedVersion::Any,
                vec![NewEvent::new("tick", unix_micros().to_string())],
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Part 3: latency of `strata tail --follow` in another process.
fn tail_follow(strata: &str, dir: &std::path::Path, samples: usize) {
    use std::io::BufRead;
    let path = dir.join("tail.strata");
    let source = store(&path);
    source
        .append(
            "warm-up",
            ExpectedVersion::Any,
            vec![NewEvent::new("tick", "0")],
        )
        .unwrap();
    let mut child = std::process::Command::new(strata)
        .args([
            "tail", "--follow", "--lines", "0", "--format", "jsonl", "--db",
        ])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // Let the child open the store and start waiting.
    std::thread::sleep(Duration::from_millis(500));
    let mut lags = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let position = source
            .append("s", ExpectedVersion::Any, vec![NewEvent::new("tick", "x")])
            .unwrap()
            .first_position;
        let line = lines.next().unwrap().unwrap();
        let shown: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(shown["position"], position);
        lags.push(started.elapsed().as_micros() as u64);
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    percentiles(
        "cross-process `strata tail --follow` (append -> line printed)",
        lags,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("append-child") {
        append_child(&args[2], args[3].parse().unwrap());
        return;
    }
    if args.get(1).map(String::as_str) == Some("tail-only") {
        let dir = tempfile::tempdir().unwrap();
        tail_follow(&std::env::var("STRATA_BIN").unwrap(), dir.path(), 20);
        return;
    }
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
    let mut config = IngesterConfig::new(&url, "BENCH", "bench", "central", "src/");
    config.create_stream = true;
    let ingester = Ingester::new(central.clone(), config).unwrap();
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
    config.create_stream = true;
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

    // 3. Cross-process tail --follow.
    match std::env::var("STRATA_BIN") {
        Ok(strata) => tail_follow(&strata, dir.path(), 500),
        Err(_) => println!("cross-process tail --follow: skipped (set STRATA_BIN)"),
    }

    // 4. Cross-process end to end: the appends come from another process.
    let source_path = dir.path().join("xp-source.strata");
    let source = store(&source_path);
    let central = store(&dir.path().join("xp-central.strata"));
    let publisher = Publisher::new(source.clone(), PublisherConfig::new(&url, "XP", "xp")).unwrap();
    let mut config = IngesterConfig::new(&url, "XP", "xp", "central", "src/");
    config.fetch_wait = Duration::from_millis(100);
    config.create_stream = true;
    let ingester = Ingester::new(central.clone(), config).unwrap();
    let p = tokio::spawn(async move { publisher.run(PublishUntil::Forever).await });
    let i = tokio::spawn(async move { ingester.run(IngestUntil::Forever).await });
    let samples = 1_000usize;
    let watcher = {
        let central = central.clone();
        std::thread::spawn(move || {
            let mut sub = central.subscribe(1, SubscriptionFilter::all()).unwrap();
            let mut lags = Vec::with_capacity(samples);
            let deadline = Instant::now() + Duration::from_secs(120);
            while lags.len() < samples && Instant::now() < deadline {
                if let Some(event) = sub.next_timeout(Duration::from_millis(100)).unwrap() {
                    let sent: u64 = std::str::from_utf8(&event.data).unwrap().parse().unwrap();
                    lags.push(unix_micros() - sent);
                }
            }
            lags
        })
    };
    let status = tokio::process::Command::new(std::env::current_exe().unwrap())
        .arg("append-child")
        .arg(&source_path)
        .arg(samples.to_string())
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let lags = tokio::task::spawn_blocking(move || watcher.join().unwrap())
        .await
        .unwrap();
    p.abort();
    i.abort();
    assert_eq!(lags.len(), samples, "not every event arrived within 120 s");
    percentiles(
        "cross-process end to end (append in another process -> visible in central), ~1 per 5 ms",
        lags,
    );
}
