//! `strata replicate` through the built binary and a real `nats-server`, including a
//! `kill -9` of a running `strata replicate push`.

#[path = "../../replication/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use common::{assert_replicated, open, NatsServer};
use serde_json::Value;
use strata::{ExpectedVersion, NewEvent};
use strata_nats::checkpoint::Checkpoints;

fn strata(db: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    command
        .env_remove("STRATA_DB")
        .env_remove("STRATA_NATS_URL")
        .arg("--db")
        .arg(db);
    command
}

fn json(output: std::process::Output) -> Value {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
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
    let mut push = StdCommand::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--db")
        .arg(&source_path)
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
    let mut again = strata(&source_path);
    again.args(["replicate", "push", "--once"]);
    nats(&mut again);
    let report = json(again.output().unwrap());
    assert_eq!(report["checkpoint"], total);

    let mut pull = strata(&central_path);
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
    let report = json(pull.output().unwrap());
    assert_eq!(report["appended"], total);
    assert_replicated(&source, &central, "src/");

    let mut status = strata(&source_path);
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
    let status = json(status.output().unwrap());
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
    let output = strata(&db)
        .args([
            "replicate",
            "push",
            "--once",
            "--server",
            &url,
            "--stream",
            "SRC",
        ])
        .args(["--max-failures", "3", "--max-backoff", "50ms"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot connect to the NATS server at {url}")),
        "{stderr}"
    );
    assert_eq!(stderr.matches("retrying in").count(), 2, "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));
}
