//! `strata replicate` through the built binary and a real `nats-server`, including a
//! `kill -9` of a running `strata replicate push`.

#[path = "../../replication/tests/common/mod.rs"]
mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_replicated, open, NatsServer};
use serde_json::Value;
use strata::{ExpectedVersion, NewEvent};
use strata_nats::checkpoint::Checkpoints;
use strata_testkit::cli::{succeeded, StrataBinary};

const STRATA: StrataBinary = StrataBinary::new(env!("CARGO_BIN_EXE_strata"));

/// Longest any `strata` run in these tests may take: a run that hangs is killed and fails its
/// test, naming the command, instead of hanging CI.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `command` to its end, as `Command::output`, within [`RUN_DEADLINE`].
fn run(command: &mut Command) -> Output {
    let what = format!("{command:?}");
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finish_within(child, RUN_DEADLINE, &what)
}

/// Waits for `child` (spawned with piped stdout and stderr) and collects its output; kills it
/// and panics naming `what` when it has not exited within `deadline`.
fn finish_within(mut child: Child, deadline: Duration, what: &str) -> Output {
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().unwrap();
            panic!(
                "{what} did not exit within {deadline:?} and was killed; stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn json(output: Output) -> Value {
    serde_json::from_str(&succeeded(output)).unwrap()
}

fn append_some(store: &strata::Store, from: usize, appends: usize) {
    for i in from..from + appends {
        let stream = ["order-1", "order.2 *>", "user/7"][i % 3];
        let events = (0..5)
            .map(|j| NewEvent::new("tick", format!("{i}-{j}").into_bytes()))
            .collect();
        store.append(stream, ExpectedVersion::Any, events).unwrap();
    }
}

#[test]
fn push_killed_mid_run_and_restarted_then_pull_replicates_everything_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let source_path = dir.path().join("source.strata");
    let central_path = dir.path().join("central.strata");
    let source = open(&source_path);
    let central = open(&central_path);
    append_some(&source, 0, 100);

    let nats = |command: &mut Command| {
        command.args([
            "--server",
            &url,
            "--stream",
            "SRC",
            "--subject-prefix",
            "strata.src",
        ]);
    };
    let mut push = STRATA
        .at(&source_path)
        .args(["replicate", "push", "--server", &url, "--stream", "SRC"])
        .args(["--subject-prefix", "strata.src", "--max-in-flight", "8"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Keep appending while it runs; kill it once it has made some progress, mid-run.
    let checkpoint = || {
        Checkpoints::open_read_only(&source_path)
            .and_then(|c| c.get("nats:SRC"))
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut appended = 100;
    while checkpoint() == 0 {
        assert!(Instant::now() < deadline, "push made no progress in 30 s");
        append_some(&source, appended, 1);
        appended += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    push.kill().unwrap();
    push.wait().unwrap();
    let at_kill = checkpoint();
    append_some(&source, appended, 100);
    let total = source.last_position().unwrap();
    assert!(at_kill < total, "the kill happened mid-run");

    // Restarted, it resumes from its checkpoint and finishes.
    let mut again = STRATA.at(&source_path);
    again.args(["replicate", "push", "--once"]);
    nats(&mut again);
    let report = json(run(&mut again));
    assert_eq!(report["checkpoint"], total);

    let mut pull = STRATA.at(&central_path);
    pull.args([
        "replicate",
        "pull",
        "--durable",
        "central",
        "--prefix",
        "src/",
        "--idle-exit",
        "1s",
    ]);
    nats(&mut pull);
    let report = json(run(&mut pull));
    assert_eq!(report["appended"], total);
    assert_replicated(&source, &central, "src/");

    let mut status = STRATA.at(&source_path);
    status.args([
        "replicate",
        "status",
        "--server",
        &url,
        "--stream",
        "SRC",
        "--durable",
        "central",
    ]);
    let status = json(run(&mut status));
    assert_eq!(status["source"]["lag"], 0);
    assert_eq!(status["source"]["last_position"], total);
    assert_eq!(status["jetstream"]["lag"], 0);
    // JetStream stored every event once, though the killed push's last publishes were re-sent.
    assert_eq!(status["jetstream"]["messages"], total);
}

#[test]
fn push_to_an_unreachable_server_fails_clearly_after_bounded_retries() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("source.strata");
    open(&db)
        .append("s", ExpectedVersion::Any, vec![NewEvent::new("e", "x")])
        .unwrap();
    let url = format!("nats://127.0.0.1:{}", common::free_port());
    let started = Instant::now();
    let output = run(STRATA
        .at(&db)
        .args([
            "replicate",
            "push",
            "--once",
            "--server",
            &url,
            "--stream",
            "SRC",
        ])
        .args(["--max-failures", "3", "--max-backoff", "50ms"]));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot connect to the NATS server at {url}")),
        "{stderr}"
    );
    assert_eq!(stderr.matches("retrying in").count(), 2, "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// Runs `strata replicate ARGS` on `db`; returns (exit code, stdout, stderr, time taken).
fn replicate(db: &Path, args: &[&str]) -> (Option<i32>, String, String, Duration) {
    let started = Instant::now();
    let output = run(STRATA.at(db).arg("replicate").args(args));
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        started.elapsed(),
    )
}

fn one_event_store(dir: &Path) -> std::path::PathBuf {
    let db = dir.join("store.strata");
    open(&db)
        .append("s", ExpectedVersion::Any, vec![NewEvent::new("e", "x")])
        .unwrap();
    db
}

/// The three one-shot commands that connect to `url`: push --once, pull --idle-exit, status.
fn one_shot_commands<'a>(url: &'a str, extra: &[&'a str]) -> Vec<Vec<&'a str>> {
    let nats = [&["--server", url, "--stream", "SRC"][..], extra].concat();
    vec![
        [&["push", "--once"][..], &nats].concat(),
        [&["pull", "--durable", "d", "--idle-exit", "1s"][..], &nats].concat(),
        // With --durable, status goes to the server though the store has no checkpoint.
        [&["status", "--durable", "d"][..], &nats].concat(),
    ]
}

#[test]
fn a_server_that_does_not_speak_nats_is_a_clear_error_within_the_connect_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let db = one_event_store(dir.path());
    // Silent, or answering in HTTP: not a NATS server, reported at once, whatever the retry
    // settings.
    for (url, says) in [
        (
            common::silent_listener(),
            "sent no NATS greeting (INFO) within 300ms",
        ),
        (
            common::http_server(),
            "it sent \"HTTP/1.1 400 Bad Request\"",
        ),
    ] {
        let extra = ["--connect-timeout", "300ms"];
        for mut command in one_shot_commands(&url, &extra) {
            if command[0] != "status" {
                command.extend(["--max-failures", "50", "--max-backoff", "50ms"]);
            }
            let (code, _, stderr, took) = replicate(&db, &command);
            assert_eq!(code, Some(1), "{command:?}: {stderr}");
            assert!(
                stderr.contains(&format!("the server at {url} does not speak NATS")),
                "{command:?}: {stderr}"
            );
            assert!(stderr.contains(says), "{command:?}: {stderr}");
            assert!(!stderr.contains("retrying"), "{command:?}: {stderr}");
            assert!(took < Duration::from_secs(10), "{command:?} took {took:?}");
        }
    }
}

/// `nats-server -m PORT`'s HTTP monitoring port on 127.0.0.1 (the server's client port is
/// elsewhere), as a URL, once it accepts connections; the server runs while the guard lives.
fn monitoring_port(dir: &Path) -> (NatsServer, String) {
    let port = common::free_port();
    let server = NatsServer::start_with_config(dir, &format!("http: \"127.0.0.1:{port}\""));
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "no monitoring port within 15 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    (server, format!("nats://127.0.0.1:{port}"))
}

#[test]
fn with_the_defaults_a_listener_that_never_greets_in_nats_fails_at_once_without_retrying() {
    let dir = tempfile::tempdir().unwrap();
    let db = one_event_store(dir.path());
    let (_server, monitoring) = monitoring_port(dir.path());
    // Both accept the connection and wait: the client never gets the server's INFO.
    for url in [common::silent_listener(), monitoring] {
        for command in one_shot_commands(&url, &[]) {
            let (code, _, stderr, took) = replicate(&db, &command);
            assert_eq!(code, Some(1), "{command:?}: {stderr}");
            assert!(
                stderr.contains(&format!("the server at {url} does not speak NATS")),
                "{command:?}: {stderr}"
            );
            assert!(
                stderr.contains("sent no NATS greeting (INFO) within 3s"),
                "{command:?}: {stderr}"
            );
            assert!(!stderr.contains("retrying"), "{command:?}: {stderr}");
            // One default connect timeout (3 s), not 100 retries (about 20 minutes).
            assert!(took < Duration::from_secs(15), "{command:?} took {took:?}");
        }
    }
}

#[test]
fn with_the_defaults_one_shot_runs_give_up_on_a_refused_connection_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let db = one_event_store(dir.path());
    let url = format!("nats://127.0.0.1:{}", common::free_port());
    for command in &one_shot_commands(&url, &[])[..2] {
        let (code, _, stderr, took) = replicate(&db, command);
        assert_eq!(code, Some(1), "{command:?}: {stderr}");
        assert!(
            stderr.contains(&format!("cannot connect to the NATS server at {url}")),
            "{command:?}: {stderr}"
        );
        // 6 attempts (strata_nats::retry::ONE_SHOT_MAX_FAILURES), 3.1 s of waits between them.
        assert_eq!(stderr.matches("retrying in").count(), 5, "{stderr}");
        assert!(took < Duration::from_secs(20), "{command:?} took {took:?}");
    }
}

#[test]
fn push_following_the_log_keeps_retrying_a_refused_connection_past_the_one_shot_limit() {
    let dir = tempfile::tempdir().unwrap();
    let db = one_event_store(dir.path());
    let url = format!("nats://127.0.0.1:{}", common::free_port());
    let mut push = STRATA
        .at(&db)
        .args(["replicate", "push", "--server", &url, "--stream", "SRC"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufRead::lines(std::io::BufReader::new(push.stderr.take().unwrap()));
    let (sender, failures) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    // A one-shot run gives up at its 6th failure; this one says it retries after the 7th.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut retries = 0;
    while retries < 7 {
        let left = deadline.saturating_duration_since(Instant::now());
        match failures.recv_timeout(left) {
            Ok(line) if line.contains("retrying in") => retries += 1,
            Ok(_) => {}
            Err(error) => panic!("after {retries} retries: {error}"),
        }
    }
    let still_running = push.try_wait().unwrap().is_none();
    push.kill().unwrap();
    push.wait().unwrap();
    assert!(still_running, "push exited after {retries} retries");
}

#[test]
fn unparsable_urls_and_refused_credentials_fail_at_once_without_retrying() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start_with_config(
        dir.path(),
        "authorization { user: strata, password: right }",
    );
    let db = one_event_store(dir.path());
    let wrong = format!("nats://strata:wrong@127.0.0.1:{}", server.port);
    for (url, says) in [
        ("http://127.0.0.1:8222", "invalid NATS server URL"),
        ("nats://127.0.0.1:99999", "invalid NATS server URL"),
        (wrong.as_str(), "refused the connection"),
    ] {
        let (code, _, stderr, took) =
            replicate(&db, &["push", "--once", "--server", url, "--stream", "SRC"]);
        assert_eq!(code, Some(1), "{url}: {stderr}");
        assert!(stderr.contains(says), "{url}: {stderr}");
        assert!(!stderr.contains("retrying"), "{url}: {stderr}");
        assert!(!stderr.contains("wrong"), "the password is shown: {stderr}");
        // The defaults (100 failures, up to 10 s apart) would take many minutes.
        assert!(took < Duration::from_secs(10), "{url} took {took:?}");
    }
    let right = format!("nats://strata:right@127.0.0.1:{}", server.port);
    let (code, stdout, stderr, _) = replicate(
        &db,
        &["push", "--once", "--server", &right, "--stream", "SRC"],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("\"published\":1"), "{stdout}");
}

#[test]
fn typos_in_stream_and_durable_names_are_errors_not_empty_successes() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let db = one_event_store(dir.path());
    let central = dir.path().join("central.strata");
    open(&central);
    let (code, _, stderr, _) = replicate(
        &db,
        &["push", "--once", "--server", &url, "--stream", "SRC"],
    );
    assert_eq!(code, Some(0), "{stderr}");

    let (code, stdout, stderr, _) = replicate(
        &central,
        &[
            "pull",
            "--server",
            &url,
            "--stream",
            "SCR",
            "--durable",
            "c",
            "--idle-exit",
            "1s",
        ],
    );
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("JetStream stream SCR does not exist; stream SRC captures strata.>"),
        "{stderr}"
    );
    assert!(!stderr.contains("retrying"), "{stderr}");
    for (args, says) in [
        (
            vec!["--stream", "SCR"],
            "no checkpoint \"nats:SCR\" in this store; it has [\"nats:SRC\"]",
        ),
        (
            vec!["--stream", "SRC", "--durable", "nope"],
            "durable consumer nope does not exist",
        ),
    ] {
        let (code, _, stderr, _) =
            replicate(&db, &[&["status", "--server", &url][..], &args].concat());
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn dead_letters_make_push_exit_3_and_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start_with_config(dir.path(), "max_payload: 2048");
    let url = server.url();
    let db = dir.path().join("source.strata");
    let source = open(&db);
    source
        .append(
            "s",
            ExpectedVersion::Any,
            vec![NewEvent::new("e", vec![1u8; 4_000])],
        )
        .unwrap();
    source
        .append("t", ExpectedVersion::Any, vec![NewEvent::new("e", "fine")])
        .unwrap();
    drop(source);
    let (code, stdout, stderr, _) = replicate(
        &db,
        &["push", "--once", "--server", &url, "--stream", "SRC"],
    );
    assert_eq!(code, Some(3), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["published"], 1);
    assert_eq!(report["dead_lettered"], 1);
    assert_eq!(report["checkpoint"], 2);
    let (code, stdout, _, _) = replicate(&db, &["dead-letters"]);
    assert_eq!(code, Some(0));
    let letter: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(letter["side"], "push");
    assert_eq!(letter["id"], 1);
    assert!(
        letter["reason"]
            .as_str()
            .unwrap()
            .contains("max_payload of 2048"),
        "{letter}"
    );
    let (_, stdout, _, _) = replicate(&db, &["status", "--stream", "SRC"]);
    assert!(stdout.contains("\"dead_letters\":1"), "{stdout}");
    let (_, stdout, _, _) = replicate(&db, &["metrics"]);
    assert!(
        stdout.contains("strata_replication_dead_letters{side=\"push\",name=\"nats:SRC\"} 1"),
        "{stdout}"
    );
    let (code, stdout, _, _) = replicate(&db, &["retry", "--server", &url, "--stream", "SRC"]);
    assert_eq!(code, Some(3), "{stdout}");
    assert!(stdout.contains("\"still_dead\":1"), "{stdout}");
    // Nothing new: a second push has nothing to reject and exits 0.
    let (code, _, stderr, _) = replicate(
        &db,
        &["push", "--once", "--server", &url, "--stream", "SRC"],
    );
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn sigint_makes_push_and_pull_finish_their_batch_and_print_their_summary() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let source_path = dir.path().join("source.strata");
    let central_path = dir.path().join("central.strata");
    let source = open(&source_path);
    let central = open(&central_path);
    append_some(&source, 0, 40);
    let total = source.last_position().unwrap();
    let spawn = |db: &Path, args: &[&str]| {
        STRATA
            .at(db)
            .args(["replicate"])
            .args(args)
            .args(["--server", &url, "--stream", "SRC"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let push = spawn(&source_path, &["push"]);
    let pull = spawn(
        &central_path,
        &[
            "pull",
            "--durable",
            "central",
            "--prefix",
            "src/",
            "--create-stream",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while central.last_position().unwrap() < total {
        assert!(Instant::now() < deadline, "not replicated within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    for child in [&push, &pull] {
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let push = finish_within(push, RUN_DEADLINE, "push after SIGINT");
    let pull = finish_within(pull, RUN_DEADLINE, "pull after SIGINT");
    let push_report = json(push);
    assert_eq!(push_report["checkpoint"], total);
    assert_eq!(push_report["published"], total);
    assert_eq!(push_report["stopped"], true);
    let pull_report = json(pull);
    assert_eq!(pull_report["appended"], total);
    assert_eq!(pull_report["stopped"], true);
    assert_eq!(
        Checkpoints::open_read_only(&source_path)
            .unwrap()
            .get("nats:SRC")
            .unwrap(),
        total
    );
    assert_replicated(&source, &central, "src/");
}

#[test]
fn pull_exits_3_when_it_dead_lettered_and_status_on_the_pull_side_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let source_path = dir.path().join("source.strata");
    let central = dir.path().join("central.strata");
    let source = open(&source_path);
    // 252 bytes: fine in the source, 256 under the prefix "src/".
    source
        .append(
            &"L".repeat(252),
            ExpectedVersion::Any,
            vec![NewEvent::new("e", "long")],
        )
        .unwrap();
    source
        .append(
            "short",
            ExpectedVersion::Any,
            vec![NewEvent::new("e", "1"), NewEvent::new("e", "2")],
        )
        .unwrap();
    drop(source);
    open(&central);
    let nats = ["--server", url.as_str(), "--stream", "SRC"];
    let (code, _, stderr, _) = replicate(&source_path, &[&["push", "--once"][..], &nats].concat());
    assert_eq!(code, Some(0), "{stderr}");

    let pull = [
        "pull",
        "--durable",
        "central",
        "--prefix",
        "src/",
        "--idle-exit",
        "1s",
    ];
    let (code, stdout, stderr, _) = replicate(&central, &[&pull[..], &nats].concat());
    assert_eq!(code, Some(3), "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (report["appended"].as_u64(), report["rejected"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(report["dead_letters"], 1);

    // The central store pushes nothing: status shows the pull side only.
    let status = [&["status", "--durable", "central"][..], &nats].concat();
    let (code, stdout, stderr, _) = replicate(&central, &status);
    assert_eq!(code, Some(0), "{stderr}");
    let status: Value = serde_json::from_str(&stdout).unwrap();
    assert!(status.get("source").is_none(), "{status}");
    assert_eq!(status["jetstream"]["messages"], 3);
    assert_eq!(status["jetstream"]["lag"], 0);
    assert_eq!(status["target"]["durable"], "central");
    assert_eq!(status["target"]["last_position"], 2);
    assert_eq!(status["target"]["dead_letters"], 1);
    let (code, _, stderr, _) = replicate(&central, &["status", "--stream", "SRC"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("nothing was ever pushed from it; on a store that pulls, pass --durable"),
        "{stderr}"
    );
    // A second pull has nothing new to reject: exit 0, the dead letter kept.
    let (code, stdout, stderr, _) = replicate(&central, &[&pull[..], &nats].concat());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("\"rejected\":0,"), "{stdout}");
    assert!(stdout.contains("\"dead_letters\":1,"), "{stdout}");
}

/// Sends `signal` (such as `-TERM`) to `child`.
fn signal(child: &Child, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Polls `done` every 2 ms until it holds; panics after 30 s.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "no {what} within 30 s");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Appends `events` events to `store`, 100 an append, over 10 streams.
fn append_many(store: &strata::Store, events: usize) {
    for batch in 0..events / 100 {
        let events = (0..100)
            .map(|i| NewEvent::new("tick", format!("{batch}-{i}").into_bytes()))
            .collect();
        store
            .append(&format!("s-{}", batch % 10), ExpectedVersion::Any, events)
            .unwrap();
    }
}

#[test]
fn sigterm_with_a_batch_in_flight_finishes_it_stores_the_checkpoint_and_prints_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let source_path = dir.path().join("source.strata");
    let central_path = dir.path().join("central.strata");
    let source = open(&source_path);
    let central = open(&central_path);
    append_many(&source, 20_000);
    let total = source.last_position().unwrap();
    let nats = ["--server", url.as_str(), "--stream", "SRC"];
    let spawn = |db: &Path, args: &[&str]| {
        STRATA
            .at(db)
            .arg("replicate")
            .args(args)
            .args(nats)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let checkpoint = || {
        Checkpoints::open_read_only(&source_path)
            .and_then(|c| c.get("nats:SRC"))
            .unwrap_or(0)
    };

    // Push, one publish awaiting its ack at a time, stopped a quarter of the way.
    let push = spawn(&source_path, &["push", "--max-in-flight", "1"]);
    wait_for("push progress", || checkpoint() >= total / 4);
    signal(&push, "-TERM");
    let push = finish_within(push, RUN_DEADLINE, "push after SIGTERM");
    let pushed = json(push);
    assert_eq!(pushed["stopped"], true);
    let stopped_at = pushed["checkpoint"].as_u64().unwrap();
    assert!(
        stopped_at < total,
        "the push had finished before the signal"
    );
    // Every publish it sent was acknowledged and is in the stored checkpoint.
    assert_eq!(pushed["published"], stopped_at);
    assert_eq!(checkpoint(), stopped_at);

    // Pull, 20 messages a batch, stopped likewise.
    let pull_args = [
        "pull",
        "--durable",
        "central",
        "--prefix",
        "src/",
        "--batch",
        "20",
    ];
    let pull = spawn(&central_path, &pull_args);
    wait_for("pull progress", || central.last_position().unwrap() > 0);
    signal(&pull, "-TERM");
    let pulled = json(finish_within(pull, RUN_DEADLINE, "pull after SIGTERM"));
    assert_eq!(pulled["stopped"], true);
    let first_pull = pulled["appended"].as_u64().unwrap();
    assert!(
        first_pull < stopped_at,
        "the pull had finished before the signal"
    );
    assert_eq!(central.last_position().unwrap(), first_pull);

    // JetStream holds exactly what the push's checkpoint says, and the pull acknowledged all
    // it appended: the next pull gets the rest at once (nothing awaits the 30 s ack wait)
    // and nothing twice.
    let mut push_rest = STRATA.at(&source_path);
    push_rest.args(["replicate", "push", "--once"]).args(nats);
    let rest = json(run(&mut push_rest));
    assert_eq!(rest["published"].as_u64(), Some(total - stopped_at));
    assert_eq!(rest["duplicates"], 0);
    let mut pull_rest = STRATA.at(&central_path);
    pull_rest
        .arg("replicate")
        .args(pull_args)
        .args(["--idle-exit", "1s"])
        .args(nats);
    let rest = json(run(&mut pull_rest));
    assert_eq!(rest["appended"].as_u64(), Some(total - first_pull));
    assert_eq!(rest["already_stored"], 0);
    assert_replicated(&source, &central, "src/");
}
