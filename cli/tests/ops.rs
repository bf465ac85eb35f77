//! The store commands end to end, through the built binary: init, append, import, read,
//! export, check, stats, bucket.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use strata_testkit::cli::{failed_with, succeeded, StrataBinary};

const STRATA: StrataBinary = StrataBinary::new(env!("CARGO_BIN_EXE_strata"));

/// The one-line message of a run that exited with `code`.
fn fails(output: Output, code: i32) -> String {
    let stderr = failed_with(output, code);
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr}");
    stderr
}

fn new_store(dir: &Path) -> PathBuf {
    let db = dir.join("events.strata");
    succeeded(STRATA.at(&db).arg("init").output().unwrap());
    db
}

/// Lines with ids, several streams interleaved, JSON data of every kind, metadata, and one
/// payload that is raw bytes.
fn sample_lines() -> Vec<String> {
    let mut lines = Vec::new();
    for i in 0..40u32 {
        let stream = format!("order-{}", i % 7);
        let id = format!("00000000-0000-4000-8000-{:012x}", i + 1);
        let line = if i == 13 {
            serde_json::json!({"stream": stream, "type": "blob", "event_id": id, "data_hex": "ff00fe"})
        } else {
            serde_json::json!({
                "stream": stream,
                "type": if i % 3 == 0 { "order_created" } else { "order_completed" },
                "event_id": id,
                "data": {"order_id": stream, "amount_cents": i as i64 * 100 - 7, "ok": i % 2 == 0,
                         "ratio": 0.5, "tags": ["a", "b"], "note": null},
                "metadata": {"source": "test", "n": i},
            })
        };
        lines.push(line.to_string());
    }
    lines
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn without(mut value: Value, keys: &[&str]) -> Value {
    for key in keys {
        value.as_object_mut().unwrap().remove(*key);
    }
    value
}

#[test]
fn import_read_export_round_trip_gives_identical_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let db = new_store(dir.path());
    let input = dir.path().join("in.jsonl");
    let lines = sample_lines();
    write_lines(&input, &lines);
    let out = succeeded(
        STRATA
            .at(&db)
            .args(["import", "--batch", "16"])
            .arg(&input)
            .output()
            .unwrap(),
    );
    assert!(out.contains("imported 40 events"), "{out}");

    // read --all and export print the same lines; they carry what the input had, in order.
    let read = succeeded(STRATA.at(&db).args(["read", "--all"]).output().unwrap());
    let exported = dir.path().join("out.jsonl");
    succeeded(
        STRATA
            .at(&db)
            .args(["export", "--output"])
            .arg(&exported)
            .output()
            .unwrap(),
    );
    let export_text = std::fs::read_to_string(&exported).unwrap();
    assert_eq!(read, export_text);
    let exported_values = parse_lines(&export_text);
    assert_eq!(exported_values.len(), 40);
    for (i, (line, input)) in exported_values.iter().zip(&lines).enumerate() {
        assert_eq!(line["position"], (i + 1) as u64);
        assert!(line["recorded_at"].as_str().unwrap().ends_with('Z'));
        let input: Value = serde_json::from_str(input).unwrap();
        assert_eq!(
            without(line.clone(), &["position", "version", "recorded_at"]),
            input
        );
    }
    // A stream read shows that stream only, versions 1.. in order.
    let stream = parse_lines(&succeeded(
        STRATA.at(&db).args(["read", "order-3"]).output().unwrap(),
    ));
    assert_eq!(
        stream
            .iter()
            .map(|e| e["version"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        (1..=stream.len() as u64).collect::<Vec<_>>()
    );
    assert!(stream.iter().all(|e| e["stream"] == "order-3"));
    let tail = parse_lines(&succeeded(
        STRATA.at(&db).args(["tail", "-n", "3"]).output().unwrap(),
    ));
    assert_eq!(
        tail.iter()
            .map(|e| e["position"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![38, 39, 40]
    );
    let typed = parse_lines(&succeeded(
        STRATA
            .at(&db)
            .args(["read", "--type", "order_created"])
            .output()
            .unwrap(),
    ));
    assert_eq!(typed.len(), 14);

    // The export imports into another store unchanged: identical lines but for recorded_at.
    let db2 = dir.path().join("copy.strata");
    succeeded(STRATA.at(&db2).arg("init").output().unwrap());
    succeeded(
        STRATA
            .at(&db2)
            .arg("import")
            .arg(&exported)
            .output()
            .unwrap(),
    );
    let second = parse_lines(&succeeded(STRATA.at(&db2).arg("export").output().unwrap()));
    assert_eq!(second.len(), 40);
    for (a, b) in exported_values.iter().zip(&second) {
        assert_eq!(
            without(a.clone(), &["recorded_at"]),
            without(b.clone(), &["recorded_at"])
        );
    }
    // And importing the export into the original store changes nothing, byte for byte.
    let out = succeeded(
        STRATA
            .at(&db)
            .arg("import")
            .arg(&exported)
            .output()
            .unwrap(),
    );
    assert!(out.contains("(0 new, 40 already stored)"), "{out}");
    assert_eq!(
        succeeded(STRATA.at(&db).arg("export").output().unwrap()),
        export_text
    );
}

#[test]
fn a_bad_line_commits_nothing_of_its_batch_and_a_rerun_adds_no_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let db = new_store(dir.path());
    let input = dir.path().join("in.jsonl");
    // No event ids: they are derived, so a re-run must recognise the first batch.
    let mut lines: Vec<String> = (0..25)
        .map(|i| {
            serde_json::json!({"stream": format!("s-{}", i % 4), "type": "t", "data": {"i": i}})
                .to_string()
        })
        .collect();
    lines[16] = r#"{"stream": "s-0", "type": "t", "data": {"i": 16}"#.to_owned(); // truncated
    write_lines(&input, &lines);
    let stderr = fails(
        STRATA
            .at(&db)
            .args(["import", "--batch", "10"])
            .arg(&input)
            .output()
            .unwrap(),
        1,
    );
    let name = input.display().to_string();
    assert!(stderr.contains(&format!("{name}:17:")), "{stderr}");
    assert!(
        stderr.contains("nothing of its batch (from line 11)"),
        "{stderr}"
    );
    // The first batch (lines 1..=10) is stored, nothing of lines 11..=17.
    let all = parse_lines(&succeeded(
        STRATA.at(&db).args(["read", "--all"]).output().unwrap(),
    ));
    assert_eq!(all.len(), 10);
    assert_eq!(all[9]["data"]["i"], 9);

    // Fix the line and run again: 25 events, each once.
    lines[16] = serde_json::json!({"stream": "s-0", "type": "t", "data": {"i": 16}}).to_string();
    write_lines(&input, &lines);
    let out = succeeded(
        STRATA
            .at(&db)
            .args(["import", "--batch", "10"])
            .arg(&input)
            .output()
            .unwrap(),
    );
    assert!(out.contains("(15 new, 10 already stored)"), "{out}");
    let all = parse_lines(&succeeded(
        STRATA.at(&db).args(["read", "--all"]).output().unwrap(),
    ));
    assert_eq!(all.len(), 25);
    let values: Vec<i64> = all
        .iter()
        .map(|e| e["data"]["i"].as_i64().unwrap())
        .collect();
    assert_eq!(values, (0..25).collect::<Vec<_>>());
    let ids: std::collections::HashSet<&str> = all
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 25);
    succeeded(STRATA.at(&db).arg("check").output().unwrap());
}

#[test]
fn import_limits_and_field_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = new_store(dir.path());
    let input = dir.path().join("in.jsonl");
    write_lines(
        &input,
        &[
            r#"{"stream":"s","type":"t","data":1}"#.to_owned(),
            String::new(),
            r#"{"stream":"s","type":"t","payload":1}"#.to_owned(),
        ],
    );
    let stderr = fails(
        STRATA.at(&db).arg("import").arg(&input).output().unwrap(),
        1,
    );
    assert!(stderr.contains(":3: unknown field `payload`"), "{stderr}");
    write_lines(
        &input,
        &[format!(
            r#"{{"stream":"s","type":"t","data":"{}"}}"#,
            "x".repeat(200)
        )],
    );
    let stderr = fails(
        STRATA
            .at(&db)
            .args(["import", "--max-line-bytes", "100"])
            .arg(&input)
            .output()
            .unwrap(),
        1,
    );
    assert!(
        stderr.contains(":1: line longer than 100 bytes"),
        "{stderr}"
    );
    fails(
        STRATA
            .at(&db)
            .args(["import", "--batch", "0"])
            .arg(&input)
            .output()
            .unwrap(),
        1,
    );
    assert_eq!(
        succeeded(STRATA.at(&db).args(["read", "--all"]).output().unwrap()),
        ""
    );
}

#[test]
fn append_checks_the_expected_version_and_exit_codes_follow_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let db = new_store(dir.path());
    let out = succeeded(
        STRATA
            .at(&db)
            .args([
                "append",
                "user-1",
                "user_created",
                r#"{"user_id":"user-1"}"#,
            ])
            .args([
                "--expected-version",
                "no-stream",
                "--metadata",
                r#"{"by":"cli"}"#,
            ])
            .output()
            .unwrap(),
    );
    let result: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (result["position"].as_u64(), result["version"].as_u64()),
        (Some(1), Some(1))
    );
    let stderr = fails(
        STRATA
            .at(&db)
            .args([
                "append",
                "user-1",
                "user_updated",
                "{}",
                "--expected-version",
                "0",
            ])
            .output()
            .unwrap(),
        1,
    );
    assert!(
        stderr.contains("conflict") && stderr.contains("actual version 1"),
        "{stderr}"
    );
    fails(
        STRATA
            .at(&db)
            .args(["append", "s", "t", "{not json"])
            .output()
            .unwrap(),
        1,
    );
    fails(STRATA.at(&db).args(["read"]).output().unwrap(), 1); // usage error
    fails(STRATA.at(&db).args(["frobnicate"]).output().unwrap(), 1);
    let missing = dir.path().join("missing.strata");
    let stderr = fails(
        STRATA
            .at(&missing)
            .args(["read", "--all"])
            .output()
            .unwrap(),
        1,
    );
    assert!(stderr.contains("strata init"), "{stderr}");
    assert!(!missing.exists());
    let table = succeeded(
        STRATA
            .at(&db)
            .args(["read", "user-1", "--format", "table"])
            .output()
            .unwrap(),
    );
    assert!(
        table.contains("user_created") && table.contains(r#"{"user_id":"user-1"}"#),
        "{table}"
    );
}

#[test]
fn archive_then_read_names_the_archive_which_sqlite3_opens() {
    let dir = tempfile::tempdir().unwrap();
    let db = new_store(dir.path());
    let input = dir.path().join("in.jsonl");
    write_lines(&input, &sample_lines());
    succeeded(STRATA.at(&db).arg("import").arg(&input).output().unwrap());
    // The active bucket is never archived.
    let stderr = fails(
        STRATA
            .at(&db)
            .args(["bucket", "archive", "1", "--to"])
            .arg(dir.path())
            .output()
            .unwrap(),
        1,
    );
    assert!(stderr.contains("seal it first"), "{stderr}");
    succeeded(
        STRATA
            .at(&db)
            .args(["bucket", "seal", "1"])
            .output()
            .unwrap(),
    );
    succeeded(
        STRATA
            .at(&db)
            .args(["append", "later", "t", "{}"])
            .output()
            .unwrap(),
    );
    let archives = dir.path().join("archives");
    std::fs::create_dir(&archives).unwrap();
    let out = succeeded(
        STRATA
            .at(&db)
            .args(["bucket", "archive", "1", "--to"])
            .arg(&archives)
            .output()
            .unwrap(),
    );
    assert!(out.contains("archived bucket 1 (40 events)"), "{out}");
    assert!(out.contains("store size"), "{out}");
    let archive = archives
        .canonicalize()
        .unwrap()
        .join("events-bucket-1.sqlite");
    assert!(archive.is_file());

    let stderr = fails(STRATA.at(&db).args(["read", "--all"]).output().unwrap(), 1);
    assert!(stderr.contains(archive.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("--from"), "{stderr}");
    let rest = parse_lines(&succeeded(
        STRATA
            .at(&db)
            .args(["read", "--all", "--from", "41"])
            .output()
            .unwrap(),
    ));
    assert_eq!(rest.len(), 1);
    let list = succeeded(STRATA.at(&db).args(["bucket", "list"]).output().unwrap());
    assert!(
        list.contains("archived") && list.contains("events-bucket-1.sqlite"),
        "{list}"
    );

    // The sqlite3 shell opens the archive and finds the events, with stream ids and types.
    let shell = std::process::Command::new("sqlite3")
        .arg(&archive)
        .arg("SELECT count(*), count(DISTINCT stream_id), min(position), max(position) FROM events; SELECT stream_id, event_type FROM events_readable WHERE position = 1; SELECT value FROM archive_info WHERE key = 'event_count';")
        .output()
        .expect("the sqlite3 shell is installed (apt-get install sqlite3)");
    assert!(shell.status.success(), "{shell:?}");
    assert_eq!(
        String::from_utf8(shell.stdout).unwrap(),
        "40|7|1|40\norder-0|order_created\n40\n"
    );
    succeeded(STRATA.at(&db).arg("check").output().unwrap());
}

#[test]
fn retention_and_drop_need_confirmation_and_report_space() {
    let dir = tempfile::tempdir().unwrap();
    let db = new_store(dir.path());
    succeeded(
        STRATA
            .at(&db)
            .args(["append", "a", "t", "{}"])
            .output()
            .unwrap(),
    );
    succeeded(
        STRATA
            .at(&db)
            .args(["bucket", "seal", "1"])
            .output()
            .unwrap(),
    );
    succeeded(
        STRATA
            .at(&db)
            .args(["append", "a", "t", "{}"])
            .output()
            .unwrap(),
    );
    fails(
        STRATA
            .at(&db)
            .args(["bucket", "drop", "1"])
            .output()
            .unwrap(),
        1,
    );
    // The sealed bucket's month has not ended: nothing is older than 90 days.
    let out = succeeded(
        STRATA
            .at(&db)
            .args(["bucket", "retain", "--older-than", "90d", "--drop", "--yes"])
            .output()
            .unwrap(),
    );
    assert!(
        out.contains("no sealed bucket ended more than 90 days ago"),
        "{out}"
    );
    fails(
        STRATA
            .at(&db)
            .args([
                "bucket",
                "retain",
                "--older-than",
                "soon",
                "--drop",
                "--yes",
            ])
            .output()
            .unwrap(),
        1,
    );
    let out = succeeded(
        STRATA
            .at(&db)
            .args(["bucket", "drop", "1", "--yes"])
            .output()
            .unwrap(),
    );
    assert!(
        out.contains("dropped bucket 1 (1 events)") && out.contains(" -> "),
        "{out}"
    );
    let stderr = fails(STRATA.at(&db).args(["read", "a"]).output().unwrap(), 1);
    assert!(stderr.contains("dropped by retention"), "{stderr}");
    succeeded(STRATA.at(&db).arg("check").output().unwrap());
}

#[test]
fn check_reports_a_corrupted_store_with_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let db = new_store(dir.path());
    let input = dir.path().join("in.jsonl");
    write_lines(&input, &sample_lines());
    succeeded(STRATA.at(&db).arg("import").arg(&input).output().unwrap());
    let out = succeeded(STRATA.at(&db).arg("check").output().unwrap());
    assert!(
        out.contains("40 events") && out.trim_end().ends_with(": ok"),
        "{out}"
    );

    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE events_1 SET data = CAST('tampered' AS BLOB) WHERE position = 7",
        [],
    )
    .unwrap();
    drop(conn);
    let output = STRATA.at(&db).arg("check").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = fails(output, 1);
    assert!(
        stdout.contains("[event] position 7: checksum mismatch"),
        "{stdout}"
    );
    assert!(stderr.contains("1 problems found"), "{stderr}");
}

#[test]
fn stats_prints_prometheus_text() {
    let dir = tempfile::tempdir().unwrap();
    let db = new_store(dir.path());
    succeeded(
        STRATA
            .at(&db)
            .args(["append", "a", "t", "{}"])
            .output()
            .unwrap(),
    );
    let text = succeeded(STRATA.at(&db).arg("stats").output().unwrap());
    assert!(text.contains("# TYPE strata_appends counter"), "{text}");
    assert!(text.contains("\nstrata_last_position 1\n"), "{text}");
    assert!(
        text.contains("strata_buckets{state=\"active\"} 1"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"));
}

/// `strata append DB ARGS...`'s JSON result.
fn append(db: &Path, args: &[&str]) -> Value {
    let out = succeeded(STRATA.at(db).arg("append").args(args).output().unwrap());
    serde_json::from_str(out.trim()).unwrap()
}

/// The positions of the JSON lines `strata read ARGS...` prints.
fn read_positions(db: &Path, args: &[&str]) -> Vec<u64> {
    parse_lines(&succeeded(
        STRATA.at(db).arg("read").args(args).output().unwrap(),
    ))
    .iter()
    .map(|e| e["position"].as_u64().unwrap())
    .collect()
}

#[test]
fn tagged_appends_are_read_back_by_query_and_by_tag() {
    let dir = tempfile::tempdir().unwrap();
    let db = new_store(dir.path());
    let hostile = r#"a,b "q" ü"#;
    append(
        &db,
        &[
            "$dcb",
            "course_defined",
            r#"{"capacity":2}"#,
            "--tag",
            "course:c1",
        ],
    );
    append(&db, &["$dcb", "course_defined", "{}", "--tag", "course:c2"]);
    append(
        &db,
        &[
            "s-1",
            "student_subscribed",
            "{}",
            "--tag",
            "course:c1",
            "--tag",
            "student:s1",
            "--tag",
            hostile,
            "--tag",
            "course:c1",
        ],
    );
    append(
        &db,
        &["s-2", "student_subscribed", "{}", "--tag", "course:c2"],
    );
    append(&db, &["s-3", "untagged", "{}"]);

    // JSON Lines carry the tags, sorted and without repeats; untagged events carry none.
    let all = parse_lines(&succeeded(
        STRATA.at(&db).args(["read", "--all"]).output().unwrap(),
    ));
    assert_eq!(
        all[2]["tags"],
        serde_json::json!([hostile, "course:c1", "student:s1"])
    );
    assert!(all[4].get("tags").is_none(), "{}", all[4]);
    let tail = parse_lines(&succeeded(
        STRATA.at(&db).args(["tail", "-n", "3"]).output().unwrap(),
    ));
    assert_eq!(tail[0]["tags"], all[2]["tags"]);

    // --tag: every tag (AND); with --type: one of the types (OR) too.
    assert_eq!(read_positions(&db, &["--tag", "course:c1"]), [1, 3]);
    assert_eq!(
        read_positions(&db, &["--tag", "course:c1", "--tag", hostile]),
        [3]
    );
    assert_eq!(
        read_positions(
            &db,
            &[
                "--tag",
                "course:c1",
                "--type",
                "course_defined",
                "--type",
                "nothing"
            ]
        ),
        [1]
    );
    assert!(read_positions(&db, &["--tag", "course:c3"]).is_empty());
    // --query: items OR'ed; --from is the first position, --limit the most events.
    let query = r#"[{"types":["course_defined"],"tags":["course:c2"]},{"types":["student_subscribed"],"tags":["course:c1"]},{"types":["untagged"]}]"#;
    assert_eq!(read_positions(&db, &["--query", query]), [2, 3, 5]);
    assert_eq!(
        read_positions(&db, &["--query", query, "--from", "3"]),
        [3, 5]
    );
    assert_eq!(read_positions(&db, &["--query", query, "--from", "4"]), [5]);
    assert_eq!(
        read_positions(&db, &["--query", query, "--limit", "2"]),
        [2, 3]
    );
    assert_eq!(
        read_positions(&db, &["--query", "all", "--from", "4"]),
        [4, 5]
    );
    assert_eq!(
        read_positions(&db, &["--query", r#""all""#]),
        [1, 2, 3, 4, 5]
    );
    // The existing modes are unchanged.
    assert_eq!(read_positions(&db, &["--type", "course_defined"]), [1, 2]);
    assert_eq!(read_positions(&db, &["s-1"]), [3]);
    let table = succeeded(
        STRATA
            .at(&db)
            .args(["read", "--tag", "student:s1", "--format", "table"])
            .output()
            .unwrap(),
    );
    assert!(
        table.contains("tags") && table.contains(r#"["a,b \"q\" ü","course:c1","student:s1"]"#),
        "{table}"
    );
    succeeded(STRATA.at(&db).arg("check").output().unwrap());
}

#[test]
fn a_conditional_append_succeeds_then_fails_naming_the_position_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = new_store(dir.path());
    let query = r#"[{"types":["student_subscribed"],"tags":["course:c1"]}]"#;
    append(&db, &["$dcb", "course_defined", "{}", "--tag", "course:c1"]);
    // Nothing matches after position 1: the append goes through, to the named stream.
    let first = append(
        &db,
        &[
            "student-1",
            "student_subscribed",
            r#"{"n":1}"#,
            "--tag",
            "course:c1",
            "--fail-if-match",
            query,
            "--after",
            "1",
            "--expected-version",
            "no-stream",
        ],
    );
    assert_eq!(
        (first["position"].as_u64(), first["stream"].as_str()),
        (Some(2), Some("student-1"))
    );
    // An event that does not match the query does not conflict.
    append(
        &db,
        &["other", "student_subscribed", "{}", "--tag", "course:c2"],
    );
    // A decision that read up to position 1 now conflicts with position 2.
    let stderr = fails(
        STRATA
            .at(&db)
            .args(["append", "student-2", "student_subscribed", r#"{"n":2}"#])
            .args([
                "--tag",
                "course:c1",
                "--fail-if-match",
                query,
                "--after",
                "1",
            ])
            .output()
            .unwrap(),
        1,
    );
    assert!(
        stderr.contains("conflict")
            && stderr.contains("the event at position 2 matches --fail-if-match")
            && stderr.contains("after position 1")
            && stderr.contains("nothing was written"),
        "{stderr}"
    );
    // `all` conflicts with any later event; the expected version is checked as well.
    let stderr = fails(
        STRATA
            .at(&db)
            .args([
                "append",
                "x",
                "t",
                "{}",
                "--fail-if-match",
                "all",
                "--after",
                "2",
            ])
            .output()
            .unwrap(),
        1,
    );
    assert!(stderr.contains("the event at position 3"), "{stderr}");
    let stderr = fails(
        STRATA
            .at(&db)
            .args(["append", "student-1", "t", "{}", "--expected-version", "0"])
            .args(["--fail-if-match", query, "--after", "3"])
            .output()
            .unwrap(),
        1,
    );
    assert!(stderr.contains("actual version 1"), "{stderr}");
    assert_eq!(read_positions(&db, &["--all"]), [1, 2, 3]);
    // Re-read from the conflict and retry: it goes through.
    let retried = append(
        &db,
        &[
            "student-2",
            "student_subscribed",
            r#"{"n":2}"#,
            "--tag",
            "course:c1",
            "--fail-if-match",
            query,
            "--after",
            "3",
        ],
    );
    assert_eq!(retried["position"].as_u64(), Some(4));
}

#[test]
fn export_then_import_keeps_tags_and_malformed_tags_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = new_store(dir.path());
    let hostile = "line\nbreak, \"quote\" 日本";
    append(&db, &["a", "t", "1", "--tag", "x:1", "--tag", hostile]);
    append(&db, &["a", "t", "2"]);
    append(&db, &["$dcb", "u", "3", "--tag", "x:1"]);
    let exported = dir.path().join("out.jsonl");
    succeeded(
        STRATA
            .at(&db)
            .args(["export", "--output"])
            .arg(&exported)
            .output()
            .unwrap(),
    );
    let text = std::fs::read_to_string(&exported).unwrap();
    let copy = dir.path().join("copy.strata");
    succeeded(STRATA.at(&copy).arg("init").output().unwrap());
    succeeded(
        STRATA
            .at(&copy)
            .arg("import")
            .arg(&exported)
            .output()
            .unwrap(),
    );
    let again = succeeded(STRATA.at(&copy).arg("export").output().unwrap());
    let strip = |text: &str| -> Vec<Value> {
        parse_lines(text)
            .into_iter()
            .map(|line| without(line, &["recorded_at"]))
            .collect()
    };
    assert_eq!(strip(&again), strip(&text));
    assert_eq!(strip(&text)[0]["tags"], serde_json::json!([hostile, "x:1"]));
    // The tag index of the copy answers queries.
    assert_eq!(read_positions(&copy, &["--tag", "x:1"]), [1, 3]);
    assert_eq!(read_positions(&copy, &["--tag", hostile]), [1]);

    // Lines without ids derive them from the tags too: the same line with other tags is
    // another event, the same file again stores nothing new.
    let input = dir.path().join("in.jsonl");
    write_lines(
        &input,
        &[
            r#"{"stream":"d","type":"t","data":1,"tags":["b","a","a"]}"#.to_owned(),
            r#"{"stream":"e","type":"t","data":1,"tags":[]}"#.to_owned(),
        ],
    );
    succeeded(STRATA.at(&copy).arg("import").arg(&input).output().unwrap());
    let out = succeeded(STRATA.at(&copy).arg("import").arg(&input).output().unwrap());
    assert!(out.contains("(0 new, 2 already stored)"), "{out}");
    let d = parse_lines(&succeeded(
        STRATA.at(&copy).args(["read", "d"]).output().unwrap(),
    ));
    assert_eq!(d[0]["tags"], serde_json::json!(["a", "b"]));

    // Malformed tags: FILE:LINE and the reason; nothing of the batch is stored.
    let before = succeeded(STRATA.at(&copy).arg("export").output().unwrap());
    let long = "x".repeat(256);
    let many: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
    for (tags, reason) in [
        (
            r#""a""#.to_owned(),
            "invalid type: string \"a\", expected a sequence",
        ),
        (
            "[1]".to_owned(),
            "invalid type: integer `1`, expected a string",
        ),
        ("null".to_owned(), "expected a sequence"),
        (
            r#"["ok",""]"#.to_owned(),
            "tags[1]: a tag must be 1..=255 bytes of UTF-8, got an empty tag",
        ),
        (
            format!(r#"["{long}"]"#),
            "tags[0]: a tag must be 1..=255 bytes of UTF-8, got 256 bytes",
        ),
        (
            serde_json::to_string(&many).unwrap(),
            "65 distinct tags, over the limit of 64",
        ),
    ] {
        write_lines(
            &input,
            &[
                r#"{"stream":"f","type":"t","data":1}"#.to_owned(),
                format!(r#"{{"stream":"f","type":"t","data":2,"tags":{tags}}}"#),
            ],
        );
        let stderr = fails(
            STRATA.at(&copy).arg("import").arg(&input).output().unwrap(),
            1,
        );
        let name = input.display().to_string();
        assert!(stderr.contains(&format!("{name}:2: ")), "{stderr}");
        assert!(stderr.contains(reason), "{tags}: {stderr}");
    }
    assert_eq!(
        succeeded(STRATA.at(&copy).arg("export").output().unwrap()),
        before
    );
}

#[test]
fn bad_tag_and_query_flags_are_clear_errors_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = new_store(dir.path());
    append(&db, &["s", "t", "{}", "--tag", "keep"]);
    let long = "é".repeat(128);
    let many: Vec<String> = (0..65)
        .flat_map(|i| ["--tag".to_owned(), format!("t{i}")])
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let base = ["append", "s", "t", "{}"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--tag", ""],
            "'--tag <TAG>': a tag must be 1..=255 bytes of UTF-8, got an empty tag",
        ),
        (vec!["--tag", &long], "got 256 bytes"),
        (
            many,
            "an event carries 65 distinct tags, over the limit of 64",
        ),
        (vec!["--fail-if-match", "all"], "--after <POSITION>"),
        (vec!["--after", "3"], "--fail-if-match <QUERY>"),
        (
            vec!["--fail-if-match", "[{", "--after", "0"],
            "the query is not valid JSON",
        ),
        (
            vec!["--fail-if-match", "[]", "--after", "0"],
            "the query has no items",
        ),
        (vec!["--fail-if-match", "{}", "--after", "0"], "an array of"),
        (
            vec![
                "--fail-if-match",
                r#"[{"types":["t"],"colour":1}]"#,
                "--after",
                "0",
            ],
            "unknown field `colour`",
        ),
        (
            vec!["--fail-if-match", "[{}]", "--after", "0"],
            "query item 0 has neither types nor tags",
        ),
        (
            vec!["--fail-if-match", r#"[{"tags":[""]}]"#, "--after", "0"],
            "query item 0: a tag must be",
        ),
        (
            vec!["--fail-if-match", "all", "--after", "soon"],
            "invalid value 'soon' for '--after <POSITION>'",
        ),
    ];
    for (flags, reason) in cases {
        let stderr = fails(STRATA.at(&db).args(base).args(&flags).output().unwrap(), 1);
        assert!(stderr.contains(reason), "{flags:?}: {stderr}");
    }
    for (flags, reason) in [
        (vec!["--tag", ""], "got an empty tag"),
        (vec!["--query", "nope"], "the query is not valid JSON"),
        (vec!["--query", r#"[{"tags":"a"}]"#], "expected a sequence"),
        (
            vec!["--query", r#"[{"types":[]}]"#],
            "query item 0 has neither types nor tags",
        ),
        (vec!["--query", "all", "--type", "t"], "cannot be used with"),
        (vec!["--query", "all", "--tag", "a"], "cannot be used with"),
        (vec!["--tag", "a", "--all"], "cannot be used with"),
        (vec!["s", "--tag", "a"], "cannot be used with"),
    ] {
        let stderr = fails(STRATA.at(&db).arg("read").args(&flags).output().unwrap(), 1);
        assert!(stderr.contains(reason), "{flags:?}: {stderr}");
    }
    assert_eq!(read_positions(&db, &["--all"]), [1]);
}
