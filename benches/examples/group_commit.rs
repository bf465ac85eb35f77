//! How well group commit shares fsyncs: `threads` threads each make `appends` single-event
//! Durable appends; prints events/s and appends per commit.
//!
//! ```sh
//! cargo run --release -p strata-benches --example group_commit -- 16 200
//! ```

use std::time::Instant;

use strata::{ExpectedVersion, NewEvent, Options, Store};

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(16);
    let appends: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s.db"), Options::default()).unwrap();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let store = &store;
            scope.spawn(move || {
                for i in 0..appends {
                    let event = NewEvent::new(
                        "order_created",
                        strata_benches::payload_200((t * appends + i) as u64),
                    );
                    store
                        .append(
                            &format!("s-{t}-{}", i % 10),
                            ExpectedVersion::Any,
                            vec![event],
                        )
                        .unwrap();
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let metrics = store.metrics().unwrap();
    let total = threads * appends;
    println!(
        "{threads} threads: {total} appends in {elapsed:?}: {:.0} events/s, {} commits, {:.1} appends per commit",
        total as f64 / elapsed.as_secs_f64(),
        metrics.commits,
        metrics.appends as f64 / metrics.commits.max(1) as f64
    );
}
