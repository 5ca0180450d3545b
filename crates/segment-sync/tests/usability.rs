//! End-to-end: what a data engineer meets in the first hour with the real
//! binary: messages that name what was typed, file errors, inline problems,
//! inferred types, and pipes that close early.

mod common;

use common::*;
use segment_receiver::FaultPlan;
use tempfile::TempDir;

/// The `hint:` line of a run's stderr.
fn hint(err: &str) -> &str {
    err.lines()
        .find_map(|line| line.strip_prefix("hint: "))
        .unwrap_or_else(|| panic!("no hint line in: {err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tuning_flag_names_itself_and_its_range() {
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.csv", &numbered_customers(3));
    let cases: &[(&str, &str, &str)] = &[
        ("--batch-size", "5000", "1 to 2500"),
        ("--batch-size", "0", "1 to 2500"),
        ("--concurrency", "0", "1 to 64"),
        ("--concurrency", "500", "1 to 64"),
        ("--max-attempts", "0", "at least 1"),
        ("--rate", "0", "greater than 0"),
        ("--rate", "NaN", "greater than 0"),
        ("--backoff-ms", "0", "1 to 60000"),
        ("--flush-timeout", "0", "at least 1"),
    ];
    for (flag, value, range) in cases {
        let output = run(
            &dir,
            None,
            &[
                "sync",
                path_str(&file),
                "--dry-run",
                "--no-state",
                flag,
                value,
            ],
        )
        .await;
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}: {err}");
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: ") && first.contains(flag) && first.contains(range),
            "{flag} {value}: {err}"
        );
        assert!(first.contains(value), "the value seen: {err}");
        let hint = hint(&err);
        assert!(!hint.contains("SEGMENT_HOST"), "{flag} {value}: {err}");
        assert!(hint.contains(flag), "{flag} {value}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_region_flag_blames_the_flag() {
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.csv", &numbered_customers(3));
    let output = command(&dir, None, &["sync", path_str(&file), "--region", "moon"])
        .env("SEGMENT_WRITE_KEY", KEY)
        .output()
        .await
        .unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("error: --region must be `us` or `eu`, not `moon`"),
        "{err}"
    );
    assert!(!err.contains("SEGMENT_REGION"), "{err}");
    assert!(hint(&err).contains("--region"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_region_in_the_environment_do_not_stop_a_dry_run() {
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.csv", &numbered_customers(3));
    let output = command(&dir, None, &["sync", path_str(&file), "--dry-run"])
        .env("SEGMENT_HOST", "http://127.0.0.1:9")
        .env("SEGMENT_REGION", "eu")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_flag_beats_host_and_region_in_the_environment() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.csv", &numbered_customers(3));
    let output = command(
        &dir,
        None,
        &["sync", path_str(&file), "--host", &receiver.url()],
    )
    .env("SEGMENT_WRITE_KEY", KEY)
    .env("SEGMENT_HOST", "http://127.0.0.1:9")
    .env("SEGMENT_REGION", "eu")
    .output()
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(receiver.store().stats().accepted, 3);

    // Without a flag, the environment contradicts itself: stop, and say how to decide.
    let output = command(&dir, None, &["sync", path_str(&file)])
        .env("SEGMENT_WRITE_KEY", KEY)
        .env("SEGMENT_HOST", receiver.url())
        .env("SEGMENT_REGION", "eu")
        .output()
        .await
        .unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("SEGMENT_HOST") && err.contains("SEGMENT_REGION"),
        "{err}"
    );
    assert!(hint(&err).contains("--host"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_host_flag_blames_the_flag() {
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.csv", &numbered_customers(3));
    let output = command(&dir, None, &["sync", path_str(&file), "--host", "ftp://x"])
        .env("SEGMENT_WRITE_KEY", KEY)
        .output()
        .await
        .unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.starts_with("error: --host "), "{err}");
    assert!(!err.contains("SEGMENT_HOST"), "{err}");
}

/// A pipe whose reading end is already closed, as after `| head` exits.
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stderr_does_not_change_the_exit_code() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.csv", &numbered_customers(20));
    let status = command(&dir, Some(&receiver), &["sync", path_str(&file)])
        .stderr(closed_pipe())
        .status()
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(receiver.store().stats().accepted, 20);

    // A run with an invalid row exits 1, closed stderr or not.
    let file = write(&dir, "bad.csv", "user_id,age\nu1,31\nu2,old\n");
    let status = command(&dir, Some(&receiver), &["sync", path_str(&file)])
        .stderr(closed_pipe())
        .status()
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_into_a_closed_pipe_is_not_an_error() {
    // `segment-sync demo 2>&1 | head`: both streams go to a reader that left.
    let dir = TempDir::new().unwrap();
    let pipe = closed_pipe();
    let status = command(&dir, None, &["demo"])
        .stdout(pipe.try_clone().unwrap())
        .stderr(pipe)
        .status()
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let file = write(&dir, "c.csv", &numbered_customers(20));
    let pipe = closed_pipe();
    let status = command(&dir, None, &["preview", path_str(&file), "-n", "20"])
        .stdout(pipe.try_clone().unwrap())
        .stderr(pipe)
        .status()
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Whether any line of `err` after the first repeats text an earlier line already said.
fn repeats_a_cause(err: &str) -> bool {
    let lines: Vec<&str> = err.lines().collect();
    lines.iter().enumerate().skip(1).any(|(i, line)| {
        let said = line.trim().trim_start_matches("caused by: ");
        !said.is_empty() && lines[..i].iter().any(|earlier| earlier.contains(said))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_file_says_so_once() {
    let dir = TempDir::new().unwrap();
    let output = run(&dir, None, &["sync", "nosuch.csv", "--dry-run"]).await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("nosuch.csv"), "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    assert!(!repeats_a_cause(&err), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_says_it_is_a_directory() {
    let dir = TempDir::new().unwrap();
    std::fs::create_dir(dir.path().join("dir.csv")).unwrap();
    let output = run(&dir, None, &["sync", "dir.csv", "--dry-run"]).await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.starts_with("error: dir.csv is a directory"), "{err}");
    assert!(!err.contains("line 1"), "{err}");
    assert!(!repeats_a_cause(&err), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelt_file_name_is_no_such_file_with_a_suggestion() {
    let dir = TempDir::new().unwrap();
    write(&dir, "customers.csv", &numbered_customers(3));
    let output = run(&dir, None, &["sync", "customers.cvs", "--dry-run"]).await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("No such file"), "{err}");
    assert!(!err.contains("extension"), "{err}");
    assert!(hint(&err).contains("customers.csv"), "{err}");

    // An existing file with an unknown extension is still about the extension.
    write(&dir, "customers.txt", &numbered_customers(3));
    let output = run(&dir, None, &["sync", "customers.txt", "--dry-run"]).await;
    let err = stderr(&output);
    assert!(err.contains("unknown extension `.txt`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_an_identity_make_the_record_invalid() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let file = write(
        &dir,
        "c.csv",
        "user_id,anonymous_id,email\nu1,,a@x.io\nu\u{0}2,,b@x.io\n,anon\u{7}3,c@x.io\nu4,,d@x.io\n",
    );
    let report = dir.path().join("report.jsonl");
    let output = run(
        &dir,
        Some(&receiver),
        &["sync", path_str(&file), "--report", path_str(&report)],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(receiver.store().stats().accepted, 2);
    let lines = report_lines(&report);
    let invalid: Vec<_> = lines.iter().filter(|l| l["type"] == "invalid").collect();
    assert_eq!(invalid.len(), 2, "{lines:?}");
    assert_eq!(invalid[0]["line"], 3);
    assert_eq!(invalid[0]["field"], "user_id");
    assert_eq!(invalid[0]["reason"], "invalid_value");
    assert!(
        invalid[0]["message"].as_str().unwrap().contains("U+0000"),
        "{invalid:?}"
    );
    assert_eq!(invalid[1]["line"], 4);
    assert_eq!(invalid[1]["field"], "anonymous_id");

    // The same in a stateless run and from NDJSON.
    let file = write(
        &dir,
        "c.ndjson",
        "{\"userId\":\"n\\u00001\"}\n{\"userId\":\"n2\"}\n",
    );
    let output = run(
        &dir,
        Some(&receiver),
        &["sync", path_str(&file), "--no-state"],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(receiver.store().events_for_user("n2").len(), 1);
    assert_eq!(receiver.store().stats().accepted, 3);
}
