//! Crash harness: a child process appends durably from several threads while a projection runs
//! in the background; the parent kills it with SIGKILL at a random moment, reopens the store and
//! checks every invariant a crash could break:
//!
//! - every acknowledged append is stored, at the position, version and with the data and event
//!   ids it was acknowledged with (the child writes each ack to a side file only after `append`
//!   returned);
//! - positions are gap-free (1..=last) and `last_position` agrees; stream versions are
//!   contiguous; reading every event verifies every checksum;
//! - no partial append: every event carries its append's id and event count in its metadata, and
//!   each append is either entirely present, at consecutive positions, or absent;
//! - the projection's state equals the fold of the events up to its checkpoint;
//! - every event keeps its DCB tags, and a counter advanced by conditional appends (read the
//!   last value, append the next with the condition "no counter event after what I read") is
//!   gap-free and never repeats a value, whatever the kills interrupted;
//! - the store accepts appends again (the parent appends one itself, and the next child too).
//!
//! `STRATA_CRASH_RUNS` sets the number of kills (default 50), `STRATA_CRASH_SEED` the seed of the
//! kill delays (default: random, printed). The child is this same test binary, re-executed with
//! `STRATA_CRASH_CHILD_DIR` set, running the ignored test `crash_child`.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
mod common;

use common::{amount, decode_sum, Sums};
use strata::{
    AppendCondition, AppendError, Event, ExpectedVersion, NewEvent, Options, ProjectionRunner,
    Query, QueryItem, RunnerOptions, Store, StreamAppend,
};

const CHILD_DIR_ENV: &str = "STRATA_CRASH_CHILD_DIR";
const CHILD_RUN_ENV: &str = "STRATA_CRASH_CHILD_RUN";
const APPENDER_THREADS: u64 = 4;
const STREAMS: u64 = 6;
/// A fresh store every this many runs, so that a soak run's verification stays linear.
const RUNS_PER_STORE: u64 = 100;

/// FNV-1a: a stable hash of event data for the ack file.
fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// An event tagged with its append: metadata "<append id>/<index>/<events in the append>".
fn tagged_event(rng: &mut StdRng, append_id: &str, index: usize, count: usize) -> NewEvent {
    let mut data = rng.random_range(-1_000i64..1_000).to_le_bytes().to_vec();
    let padding = rng.random_range(0..300);
    data.extend((0..padding).map(|_| rng.random::<u8>()));
    NewEvent::new(format!("type-{}", rng.random_range(0..3)), data)
        .with_metadata(format!("{append_id}/{index}/{count}").into_bytes())
        .with_tags([append_tag(append_id), "all".to_string()])
}

/// The DCB tag every event of an append carries.
fn append_tag(append_id: &str) -> String {
    format!("append:{append_id}")
}

/// The query of the gap-free counter that appenders advance with conditional appends.
fn counter_query() -> Query {
    Query::item(QueryItem::types(["counter"]).with_tags(["counter"]))
}

/// Appends the counter's next value (read → decide → append with a condition, retried on a
/// failed condition) to `stream`: a one-event append whose data is the value.
fn advance_counter(
    store: &Store,
    stream: &str,
    append_id: &str,
) -> (StreamAppend, strata::AppendResult) {
    loop {
        let (events, head) = store
            .read_query_with_head(&counter_query(), 0)
            .expect("child: read the counter");
        let last = events.last().map_or(0, |e| amount(&e.data));
        let event = NewEvent::new("counter", (last + 1).to_le_bytes().to_vec())
            .with_metadata(format!("{append_id}/0/1").into_bytes())
            .with_tags([append_tag(append_id), "counter".to_string()])
            .with_id(strata::Uuid::new_v4());
        let part = StreamAppend::new(stream, ExpectedVersion::Any, vec![event]);
        match store.append_multi_with(
            vec![part.clone()],
            AppendCondition::new(counter_query(), head),
        ) {
            Ok(mut results) => return (part, results.remove(0)),
            Err(AppendError::ConditionFailed { .. }) => continue,
            Err(other) => panic!("child: counter append failed: {other}"),
        }
    }
}

/// One line per acknowledged event: append id, stream, version, position, event id, data hash.
fn ack_lines(parts: &[StreamAppend], results: &[strata::AppendResult], append_id: &str) -> String {
    let mut lines = String::new();
    for (part, result) in parts.iter().zip(results) {
        for (i, event) in part.events.iter().enumerate() {
            lines.push_str(&format!(
                "{append_id}\t{}\t{}\t{}\t{}\t{}\n",
                part.stream_id,
                result.last_version - (part.events.len() - 1 - i) as u64,
                result.first_position + i as u64,
                result.event_ids[i],
                hash(&event.data)
            ));
        }
    }
    lines
}

// ---------------------------------------------------------------------------------------------
// The child.

/// Entry point of the child process; does nothing unless run by `acknowledged_appends_survive_sigkill`.
#[test]
#[ignore = "the child process of the crash harness, run by acknowledged_appends_survive_sigkill"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        eprintln!("crash_child runs only as the crash harness's child process");
        return;
    };
    let run: u64 = std::env::var(CHILD_RUN_ENV).unwrap().parse().unwrap();
    let dir = PathBuf::from(dir);
    // Small index levels: merges run every few commits, so kills land inside them too.
    let store = Store::open(
        dir.join("store.db"),
        Options {
            index_merge_entries: 32,
            ..Options::default()
        },
    )
    .expect("child: open");
    let runner = ProjectionRunner::new(
        &store,
        RunnerOptions {
            batch_size: 16,
            ..RunnerOptions::default()
        },
    )
    .expect("child: runner");
    runner.register(Box::new(Sums)).expect("child: register");
    let _background = runner.start(Duration::from_millis(10));

    let threads: Vec<_> = (0..APPENDER_THREADS)
        .map(|thread| {
            let store = store.clone();
            let dir = dir.clone();
            std::thread::spawn(move || appender(&store, &dir, run, thread))
        })
        .collect();
    for thread in threads {
        thread.join().expect("child: appender panicked");
    }
    // The parent kills us long before this: exiting on our own is a failure it reports.
    eprintln!("child: appenders stopped without being killed");
    std::process::exit(3);
}

fn appender(store: &Store, dir: &Path, run: u64, thread: u64) {
    let mut rng = StdRng::seed_from_u64(run * 1_000 + thread);
    let mut acks = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("acks-{run}-{thread}.log")))
        .expect("child: ack file");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seq = 0u64;
    while Instant::now() < deadline {
        seq += 1;
        let append_id = format!("c{run}-{thread}-{seq}");
        if rng.random_range(0..8) == 0 {
            // A conditional append: the counter's next value, never twice, never skipped.
            let stream = format!("s-{}", rng.random_range(0..STREAMS));
            let (part, result) = advance_counter(store, &stream, &append_id);
            acks.write_all(ack_lines(&[part], &[result], &append_id).as_bytes())
                .expect("child: write ack");
            continue;
        }
        let part_count = if rng.random_range(0..5) == 0 { 2 } else { 1 };
        let first_stream = rng.random_range(0..STREAMS);
        let sizes: Vec<usize> = (0..part_count).map(|_| rng.random_range(1..=4)).collect();
        let total: usize = sizes.iter().sum();
        let mut index = 0;
        let parts: Vec<StreamAppend> = sizes
            .iter()
            .enumerate()
            .map(|(p, size)| {
                let stream = format!("s-{}", (first_stream + p as u64) % STREAMS);
                let events = (0..*size)
                    .map(|_| {
                        index += 1;
                        tagged_event(&mut rng, &append_id, index - 1, total)
                            .with_id(strata::Uuid::new_v4())
                    })
                    .collect();
                StreamAppend::new(stream, ExpectedVersion::Any, events)
            })
            .collect();
        let results = store
            .append_multi(parts.clone())
            .expect("child: append failed");
        // Only now is the append acknowledged: record it. One write(2) per append; a SIGKILL
        // cannot lose what the kernel already has, so no fsync is needed for a process crash.
        acks.write_all(ack_lines(&parts, &results, &append_id).as_bytes())
            .expect("child: write ack");
        // Now and then, retry the same append: idempotency must answer with the same positions.
        if rng.random_range(0..10) == 0 {
            let again = store.append_multi(parts).expect("child: retry failed");
            for (first, second) in results.iter().zip(&again) {
                assert!(second.already_stored, "child: a retry wrote twice");
                assert_eq!(first.first_position, second.first_position);
                assert_eq!(first.event_ids, second.event_ids);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The parent.

#[derive(Default)]
struct Totals {
    kills: u64,
    runs_with_acks: u64,
    acked_events: u64,
    events_in_store: u64,
    projection_checked_at: Vec<u64>,
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let runs: u64 = std::env::var("STRATA_CRASH_RUNS")
        .ok()
        .map(|v| v.parse().expect("STRATA_CRASH_RUNS is a number"))
        .unwrap_or(50);
    let seed: u64 = std::env::var("STRATA_CRASH_SEED")
        .ok()
        .map(|v| v.parse().expect("STRATA_CRASH_SEED is a number"))
        .unwrap_or_else(rand::random);
    eprintln!("crash harness: {runs} runs, STRATA_CRASH_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let root = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut totals = Totals::default();
    let started = Instant::now();
    let mut dir = PathBuf::new();
    let mut acks_before_run = 0u64;

    for run in 0..runs {
        if run % RUNS_PER_STORE == 0 {
            dir = root.path().join(format!("store-{}", run / RUNS_PER_STORE));
            std::fs::create_dir_all(&dir).unwrap();
        }
        let stderr_path = dir.join(format!("child-{run}.stderr"));
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, &dir)
            .env(CHILD_RUN_ENV, run.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr_path).unwrap())
            .spawn()
            .expect("spawn the child");
        let delay = Duration::from_millis(rng.random_range(20..=300));
        std::thread::sleep(delay);
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "run {run}: the child exited by itself ({status}) before the kill:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        child.kill().expect("SIGKILL the child");
        child.wait().unwrap();
        totals.kills += 1;

        let report = verify(&dir, run);
        totals.acked_events = report.acked_events;
        totals.events_in_store = report.events_in_store;
        totals.projection_checked_at.push(report.checkpoint);
        if report.acked_events > acks_before_run {
            totals.runs_with_acks += 1;
        }
        acks_before_run = report.acked_events;
        if run % RUNS_PER_STORE == RUNS_PER_STORE - 1 {
            acks_before_run = 0;
        }
    }
    eprintln!(
        "crash harness: {} kills in {:.1?}; {} runs had acknowledged appends; last store: {} events, {} acknowledged",
        totals.kills,
        started.elapsed(),
        totals.runs_with_acks,
        totals.events_in_store,
        totals.acked_events,
    );
    // The harness must actually exercise something: most children get to append before the kill.
    assert!(
        totals.runs_with_acks * 2 >= totals.kills,
        "only {} of {} children acknowledged an append before being killed",
        totals.runs_with_acks,
        totals.kills
    );
    // And the projection must have had something to fold at some kill.
    assert!(totals.projection_checked_at.iter().any(|&c| c > 0));
}

struct Report {
    acked_events: u64,
    events_in_store: u64,
    checkpoint: u64,
}

/// One acknowledged event, as the ack file recorded it.
struct Ack {
    append_id: String,
    stream: String,
    version: u64,
    position: u64,
    event_id: strata::Uuid,
    data_hash: u64,
}

fn read_acks(dir: &Path) -> Vec<Ack> {
    let mut acks = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("acks-") && name.ends_with(".log")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // A line without its newline was being written when the kill came: not an ack.
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            let f: Vec<&str> = line.trim_end().split('\t').collect();
            assert_eq!(f.len(), 6, "malformed ack line {line:?} in {name}");
            acks.push(Ack {
                append_id: f[0].into(),
                stream: f[1].into(),
                version: f[2].parse().unwrap(),
                position: f[3].parse().unwrap(),
                event_id: f[4].parse().unwrap(),
                data_hash: f[5].parse().unwrap(),
            });
        }
    }
    acks
}

/// The append tag of an event: (append id, index, events in the append).
fn tag(event: &Event) -> (String, usize, usize) {
    let text = std::str::from_utf8(&event.metadata).expect("metadata is a tag");
    let mut fields = text.rsplitn(3, '/');
    let count = fields.next().unwrap().parse().unwrap();
    let index = fields.next().unwrap().parse().unwrap();
    (fields.next().unwrap().to_owned(), index, count)
}

fn verify(dir: &Path, run: u64) -> Report {
    let path = dir.join("store.db");
    let store = Store::open(&path, Options::default())
        .unwrap_or_else(|e| panic!("run {run}: reopening after the kill failed: {e}"));
    let last = store.last_position().unwrap();
    // The whole store checks clean, index levels included (a kill may have hit a merge).
    let report = store.check().unwrap();
    assert!(
        report.is_ok(),
        "run {run}: check after the kill: {:?}",
        report.problems
    );

    // Everything reads back (every checksum verified), gap-free, with contiguous versions.
    let events: Vec<Event> = store
        .iter_all(1)
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("run {run}: reading the log failed: {e}"));
    assert_eq!(
        events.len() as u64,
        last,
        "run {run}: last_position vs events"
    );
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut appends: HashMap<String, (usize, Vec<(usize, u64)>)> = HashMap::new();
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.position, i as u64 + 1, "run {run}: gap in positions");
        let version = versions.entry(event.stream_id.to_string()).or_default();
        *version += 1;
        assert_eq!(
            event.version, *version,
            "run {run}: stream {} versions not contiguous at position {}",
            event.stream_id, event.position
        );
        let (append_id, index, count) = tag(event);
        let entry = appends
            .entry(append_id)
            .or_insert_with(|| (count, Vec::new()));
        assert_eq!(entry.0, count, "run {run}: one append, two counts");
        entry.1.push((index, event.position));
    }
    // No partial append: each is complete, in order, at consecutive positions.
    for (append_id, (count, members)) in &appends {
        assert_eq!(
            members.len(),
            *count,
            "run {run}: append {append_id} is partly stored: {members:?}"
        );
        for (k, (index, position)) in members.iter().enumerate() {
            assert_eq!(*index, k, "run {run}: append {append_id} out of order");
            assert_eq!(*position, members[0].1 + k as u64);
        }
    }
    for (stream, version) in &versions {
        let info = store.stream_info(stream).unwrap().expect("a stored stream");
        assert_eq!(info.version, *version, "run {run}: stream_info of {stream}");
        let by_stream: Vec<Event> = store
            .iter_stream(stream, strata::Direction::Forwards)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(by_stream.len() as u64, *version);
        assert!(by_stream
            .iter()
            .all(|e| events[e.position as usize - 1] == *e));
    }

    // Every event carries its append's DCB tag; the counter advanced by conditional appends
    // is gap-free and never repeats, and the tag index finds exactly its events.
    let mut counters = Vec::new();
    for event in &events {
        assert!(
            event.has_tag(&append_tag(&tag(event).0)),
            "run {run}: the event at {} lost its tags: {:?}",
            event.position,
            event.tags
        );
        if &*event.event_type == "counter" {
            counters.push((event.position, amount(&event.data)));
        }
    }
    let values: Vec<i64> = counters.iter().map(|c| c.1).collect();
    assert_eq!(
        values,
        (1..=counters.len() as i64).collect::<Vec<_>>(),
        "run {run}: counter values"
    );
    let by_query: Vec<u64> = store
        .iter_query(&counter_query(), 0)
        .map(|e| e.unwrap().position)
        .collect();
    assert_eq!(by_query, counters.iter().map(|c| c.0).collect::<Vec<_>>());

    // Every acknowledged event, exactly as acknowledged.
    let acks = read_acks(dir);
    for ack in &acks {
        let event = events.get(ack.position as usize - 1).unwrap_or_else(|| {
            panic!(
                "run {run}: acknowledged append {} at position {} is lost (last is {last})",
                ack.append_id, ack.position
            )
        });
        assert_eq!(
            &*event.stream_id, ack.stream,
            "run {run}: {}",
            ack.append_id
        );
        assert_eq!(event.version, ack.version, "run {run}: {}", ack.append_id);
        assert_eq!(event.event_id, ack.event_id, "run {run}: {}", ack.append_id);
        assert_eq!(hash(&event.data), ack.data_hash, "run {run}: data changed");
        assert_eq!(tag(event).0, ack.append_id);
    }

    // The projection's state is exactly the fold of the events up to its checkpoint.
    let runner = ProjectionRunner::new(&store, RunnerOptions::default()).unwrap();
    runner.register(Box::new(Sums)).unwrap();
    let checkpoint = runner.status("sums").unwrap().checkpoint;
    assert!(checkpoint <= last, "run {run}: checkpoint past the log");
    check_projection(
        &runner,
        &events[..checkpoint as usize],
        run,
        "at its checkpoint",
    );

    // The store works again: the parent appends (tagged like the child's appends) ...
    let append_id = format!("p{run}");
    let mut rng = StdRng::seed_from_u64(run);
    let parts = vec![StreamAppend::new(
        "s-0",
        ExpectedVersion::Exact(versions.get("s-0").copied().unwrap_or(0)),
        vec![tagged_event(&mut rng, &append_id, 0, 1)],
    )];
    let results = store
        .append_multi(parts.clone())
        .unwrap_or_else(|e| panic!("run {run}: appending after the kill failed: {e}"));
    assert_eq!(results[0].first_position, last + 1);
    let mut parent_acks = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("acks-parent.log"))
        .unwrap();
    parent_acks
        .write_all(ack_lines(&parts, &results, &append_id).as_bytes())
        .unwrap();
    // ... and the projection catches up to the new head with the same fold.
    let events: Vec<Event> = store.iter_all(1).collect::<Result<_, _>>().unwrap();
    assert_eq!(runner.catch_up("sums").unwrap().checkpoint, last + 1);
    check_projection(&runner, &events, run, "after catching up");
    store.close();

    Report {
        acked_events: acks.len() as u64,
        events_in_store: last,
        checkpoint,
    }
}

fn check_projection(runner: &ProjectionRunner, folded: &[Event], run: u64, when: &str) {
    let mut expected: BTreeMap<String, (i64, u64)> = BTreeMap::new();
    for event in folded {
        let entry = expected.entry(event.stream_id.to_string()).or_default();
        entry.0 += amount(&event.data);
        entry.1 += 1;
    }
    for stream in (0..STREAMS).map(|s| format!("s-{s}")) {
        let answer = runner.query("sums", stream.as_bytes()).unwrap();
        assert_eq!(
            decode_sum(Some(&answer)),
            expected.get(&stream).copied().unwrap_or_default(),
            "run {run}: projection state of {stream} {when} is not the fold of the log"
        );
    }
}
