//! `strata projection ...` and `strata tail --follow`, end to end through the built binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};
use strata::{ExpectedVersion, NewEvent, Options, Store};
use strata_testkit::cli::{failed_with, succeeded, StrataBinary};

const STRATA: StrataBinary = StrataBinary::new(env!("CARGO_BIN_EXE_strata"));

fn plugin(name: &str) -> PathBuf {
    strata_testkit::examples::build_and_locate(name).unwrap_or_else(|e| panic!("{e}"))
}

fn append(db: &Path, stream: &str, event_type: &str, data: Value) {
    succeeded(
        STRATA
            .at(db)
            .args(["append", stream, event_type, &data.to_string()])
            .output()
            .unwrap(),
    );
}

fn query(db: &Path, name: &str, request: Value, extra: &[&str]) -> Value {
    let stdout = succeeded(
        STRATA
            .at(db)
            .args(["projection", "query", name, &request.to_string()])
            .args(extra)
            .output()
            .unwrap(),
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn order(db: &Path, n: u32, user: &str, amount: i64) {
    let id = format!("o{n}");
    append(
        db,
        &format!("order-{n}"),
        "order_created",
        json!({"order_id": id, "user_id": user, "amount_cents": amount}),
    );
}

fn complete(db: &Path, n: u32, user: &str) {
    let id = format!("o{n}");
    append(
        db,
        &format!("order-{n}"),
        "order_completed",
        json!({"order_id": id, "user_id": user}),
    );
}

#[test]
fn projections_are_added_stored_queried_reset_and_rebuilt_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.strata");
    succeeded(STRATA.at(&db).arg("init").output().unwrap());
    order(&db, 1, "ann", 1000);
    complete(&db, 1, "ann");
    order(&db, 2, "ann", 500);
    complete(&db, 2, "ann");
    order(&db, 3, "ben", 300);
    append(&db, "misc", "tick", json!(null));

    assert!(succeeded(
        STRATA
            .at(&db)
            .args(["projection", "list"])
            .output()
            .unwrap()
    )
    .contains("no projections"));
    let added = succeeded(
        STRATA
            .at(&db)
            .args(["projection", "add"])
            .arg(plugin("user-stats"))
            .output()
            .unwrap(),
    );
    assert!(
        added.contains("added projection user-stats version 1"),
        "{added}"
    );
    let added = succeeded(
        STRATA
            .at(&db)
            .args(["projection", "add", "--catch-up"])
            .arg(plugin("event-counter"))
            .output()
            .unwrap(),
    );
    assert!(added.contains("phase:       live"), "{added}");
    assert!(added.contains("checkpoint:  6"), "{added}");

    // Stored statuses, read by other processes.
    let list = succeeded(
        STRATA
            .at(&db)
            .args(["projection", "list"])
            .output()
            .unwrap(),
    );
    assert!(
        list.contains("user-stats") && list.contains("event-counter"),
        "{list}"
    );
    let status = succeeded(
        STRATA
            .at(&db)
            .args(["projection", "status", "user-stats"])
            .output()
            .unwrap(),
    );
    assert!(status.contains("phase:       catching_up"), "{status}");
    assert!(status.contains("lag:         6"), "{status}");
    assert!(
        status.contains("event types: order_created, order_completed"),
        "{status}"
    );
    assert!(status.contains("module:      "), "{status}");

    // A query in a new process loads the stored module, catches up and answers in JSON.
    let ann = query(&db, "user-stats", json!({"user_id": "ann"}), &[]);
    assert_eq!(ann["total_orders"], json!(2));
    assert_eq!(ann["total_spent"], json!(1500));
    assert_eq!(ann["average_order_value"], json!(750.0));
    assert_eq!(
        query(&db, "user-stats", json!({"user_id": "ben"}), &[]),
        Value::Null
    );
    let status = succeeded(
        STRATA
            .at(&db)
            .args(["projection", "status", "user-stats"])
            .output()
            .unwrap(),
    );
    assert!(status.contains("phase:       live"), "{status}");
    assert!(status.contains("checkpoint:  6"), "{status}");
    let counts = query(&db, "event-counter", json!({}), &[]);
    assert_eq!(
        counts,
        json!({"order_completed": 2, "order_created": 3, "tick": 1})
    );

    // New events: --no-catch-up answers from the state as it is.
    complete(&db, 3, "ben");
    assert_eq!(
        query(
            &db,
            "user-stats",
            json!({"user_id": "ben"}),
            &["--no-catch-up"]
        ),
        Value::Null
    );
    let ben = query(&db, "user-stats", json!({"user_id": "ben"}), &[]);
    assert_eq!(ben["total_orders"], json!(1));
    let top = query(&db, "user-stats", json!({"top": 1}), &[]);
    assert_eq!(top[0]["user_id"], json!("ann"));

    // Reset forgets the state; rebuild folds the log again.
    let reset = succeeded(
        STRATA
            .at(&db)
            .args(["projection", "reset", "user-stats"])
            .output()
            .unwrap(),
    );
    assert!(reset.contains("checkpoint:  0"), "{reset}");
    assert_eq!(
        query(
            &db,
            "user-stats",
            json!({"user_id": "ann"}),
            &["--no-catch-up"]
        ),
        Value::Null
    );
    let rebuilt = succeeded(
        STRATA
            .at(&db)
            .args(["projection", "rebuild", "user-stats"])
            .output()
            .unwrap(),
    );
    assert!(
        rebuilt.contains("rebuilt user-stats version 1 to position 7"),
        "{rebuilt}"
    );
    let ann = query(
        &db,
        "user-stats",
        json!({"user_id": "ann"}),
        &["--no-catch-up"],
    );
    assert_eq!(ann["total_spent"], json!(1500));

    // catch-up runs every stored projection.
    append(&db, "misc", "tick", json!(null));
    let caught = succeeded(
        STRATA
            .at(&db)
            .args(["projection", "catch-up"])
            .output()
            .unwrap(),
    );
    assert!(
        caught.contains("event-counter: version 1, live, checkpoint 8"),
        "{caught}"
    );
    assert!(
        caught.contains("user-stats: version 1, live, checkpoint 8"),
        "{caught}"
    );

    // Errors are one-line user errors.
    let error = failed_with(
        STRATA
            .at(&db)
            .args(["projection", "query", "nope", "{}"])
            .output()
            .unwrap(),
        1,
    );
    assert!(
        error.contains("no module stored for projection \"nope\""),
        "{error}"
    );
    let error = failed_with(
        STRATA
            .at(&db)
            .args(["projection", "query", "user-stats", "{not json"])
            .output()
            .unwrap(),
        1,
    );
    assert!(error.contains("not valid JSON"), "{error}");
    let not_wasm = dir.path().join("not.wasm");
    std::fs::write(&not_wasm, b"not a component").unwrap();
    let error = failed_with(
        STRATA
            .at(&db)
            .args(["projection", "add"])
            .arg(&not_wasm)
            .output()
            .unwrap(),
        1,
    );
    assert!(error.contains("could not be loaded"), "{error}");
    assert_eq!(error.lines().count(), 1, "{error}");
}

#[test]
fn a_faulting_projection_is_reported_with_its_position_and_cause() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.strata");
    succeeded(STRATA.at(&db).arg("init").output().unwrap());
    append(&db, "s", "tick", json!(null));
    append(&db, "s", "fail", json!(null));
    append(&db, "s", "tick", json!(null));
    succeeded(
        STRATA
            .at(&db)
            .args(["projection", "add"])
            .arg(plugin("hostile"))
            .output()
            .unwrap(),
    );
    // The query answers from the state before the fault and warns on stderr.
    let output = STRATA
        .at(&db)
        .args(["projection", "query", "hostile", "\"count\""])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(stderr.contains("faulted at position 2"), "{stderr}");
    assert!(stderr.contains("refuses this event"), "{stderr}");
    let status = succeeded(
        STRATA
            .at(&db)
            .args(["projection", "status", "hostile"])
            .output()
            .unwrap(),
    );
    assert!(
        status.contains("phase:       faulted at position 2: projection reported an error"),
        "{status}"
    );
    assert!(status.contains("checkpoint:  1"), "{status}");
    let error = failed_with(
        STRATA
            .at(&db)
            .args(["projection", "rebuild", "hostile"])
            .output()
            .unwrap(),
        1,
    );
    assert!(error.contains("faulted at position 2"), "{error}");
}

#[test]
fn tail_follow_prints_events_appended_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.strata");
    succeeded(STRATA.at(&db).arg("init").output().unwrap());
    append(&db, "before", "old", json!({"n": 0}));

    let mut child = STRATA
        .at(&db)
        .args(["tail", "--follow", "-n", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| -> Value {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no line for {what} within 30 s"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    let first = next("the last stored event");
    assert_eq!(
        (first["position"].clone(), first["stream"].clone()),
        (json!(1), json!("before"))
    );

    // This process appends; the child, another process, prints each event.
    let store = Store::open(&db, Options::default()).unwrap();
    for n in 1..=3 {
        store
            .append(
                &format!("live-{n}"),
                ExpectedVersion::NoStream,
                vec![NewEvent::from_value("new", &json!({"n": n})).unwrap()],
            )
            .unwrap();
        let line = next(&format!("live event {n}"));
        assert_eq!(line["position"], json!(n + 1));
        assert_eq!(line["stream"], json!(format!("live-{n}")));
        assert_eq!(line["type"], json!("new"));
        assert_eq!(line["data"], json!({"n": n}));
    }
    // A batch of several events arrives whole and in order.
    let batch: Vec<NewEvent> = (0..5)
        .map(|i| NewEvent::from_value("bulk", &json!(i)).unwrap())
        .collect();
    store.append("bulk", ExpectedVersion::Any, batch).unwrap();
    for i in 0..5 {
        let line = next("the batch");
        assert_eq!(line["position"], json!(5 + i));
        assert_eq!(line["data"], json!(i));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    assert!(rx.try_recv().is_err(), "nothing but the appended events");
}

/// The module stored for `name`, replaced behind strata's back by the bytes of `other`.
fn swap_stored_module(db: &Path, name: &str, other: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let changed = conn
        .execute(
            "UPDATE projection_modules SET wasm = ?2 WHERE name = ?1",
            rusqlite::params![name, std::fs::read(other).unwrap()],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

#[test]
fn a_module_whose_describe_answer_changed_is_refused_and_the_others_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.strata");
    succeeded(STRATA.at(&db).arg("init").output().unwrap());
    order(&db, 1, "ann", 1000);
    complete(&db, 1, "ann");
    for name in ["event-counter", "user-stats"] {
        succeeded(
            STRATA
                .at(&db)
                .args(["projection", "add"])
                .arg(plugin(name))
                .output()
                .unwrap(),
        );
    }
    // event-counter's stored module now describes itself as user-stats (a name already taken).
    swap_stored_module(&db, "event-counter", &plugin("user-stats"));
    order(&db, 2, "ben", 300);

    let output = STRATA
        .at(&db)
        .args(["projection", "catch-up"])
        .output()
        .unwrap();
    let stderr = failed_with(output, 1);
    assert!(stderr.contains("event-counter"), "{stderr}");
    // The other projection caught up regardless, and its rows were not touched.
    let status = succeeded(
        STRATA
            .at(&db)
            .args(["projection", "status", "user-stats"])
            .output()
            .unwrap(),
    );
    assert!(status.contains("phase:       live"), "{status}");
    assert!(status.contains("checkpoint:  3"), "{status}");
    let status = succeeded(
        STRATA
            .at(&db)
            .args(["projection", "status", "event-counter"])
            .output()
            .unwrap(),
    );
    assert!(status.contains("faulted"), "{status}");
    assert!(
        status.contains("registered as") && status.contains("describes itself as"),
        "{status}"
    );
    let list = succeeded(
        STRATA
            .at(&db)
            .args(["projection", "list"])
            .output()
            .unwrap(),
    );
    assert!(!list.contains("rebuilding"), "{list}");
    // `check` exits non-zero on any damage.
    succeeded(STRATA.at(&db).arg("check").output().unwrap());
}

/// Every row of `projection_state` of the projection's serving namespace, in key order.
fn state_rows(db: &Path, name: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut statement = conn
        .prepare(
            "SELECT s.key, s.value FROM projection_state s JOIN projections p ON p.namespace = s.namespace
             WHERE p.name = ?1 AND p.status != 'retired' ORDER BY s.key",
        )
        .unwrap();
    let rows = statement
        .query_map([name], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    rows.collect::<Result<_, _>>().unwrap()
}

#[test]
fn rebuilding_an_example_projection_gives_byte_identical_state() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.strata");
    succeeded(STRATA.at(&db).arg("init").output().unwrap());
    for n in 1..=12 {
        let user = ["ann", "ben", "cid"][n as usize % 3];
        order(&db, n, user, i64::from(n) * 125);
        if n % 2 == 0 {
            complete(&db, n, user);
        }
    }
    for name in ["user-stats", "event-counter"] {
        succeeded(
            STRATA
                .at(&db)
                .args(["projection", "add", "--catch-up"])
                .arg(plugin(name))
                .output()
                .unwrap(),
        );
        let first = state_rows(&db, name);
        assert!(!first.is_empty(), "{name} wrote no state");
        succeeded(
            STRATA
                .at(&db)
                .args(["projection", "reset", name])
                .output()
                .unwrap(),
        );
        succeeded(
            STRATA
                .at(&db)
                .args(["projection", "catch-up", name])
                .output()
                .unwrap(),
        );
        assert_eq!(
            state_rows(&db, name),
            first,
            "{name}: a rebuild folded differently"
        );
    }
}
