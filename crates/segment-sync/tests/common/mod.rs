//! Helpers shared by the end-to-end tests: run the binary in a temp dir
//! against an in-process receiver, and read its report.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use segment_receiver::{FaultPlan, Receiver, ReceiverConfig};
use serde_json::Value;
use tempfile::TempDir;

pub const KEY: &str = "cli-test-key";
pub const BIN: &str = env!("CARGO_BIN_EXE_segment-sync");

pub async fn receiver(faults: FaultPlan) -> Receiver {
    Receiver::start(ReceiverConfig::new().write_key(KEY).faults(faults))
        .await
        .expect("receiver starts")
}

/// The binary, run in `dir` so its default state (`.segment-sync/`) stays in
/// the test's own directory.
pub fn command(
    dir: &TempDir,
    receiver: Option<&Receiver>,
    args: &[&str],
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .current_dir(dir.path())
        .env_remove("SEGMENT_WRITE_KEY")
        .env_remove("SEGMENT_HOST")
        .env_remove("SEGMENT_REGION")
        .kill_on_drop(true);
    if let Some(receiver) = receiver {
        cmd.env("SEGMENT_WRITE_KEY", KEY)
            .env("SEGMENT_HOST", receiver.url());
    }
    cmd
}

pub async fn run(dir: &TempDir, receiver: Option<&Receiver>, args: &[&str]) -> Output {
    command(dir, receiver, args)
        .output()
        .await
        .expect("the binary runs")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

pub fn report_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

pub fn summary(lines: &[Value]) -> &Value {
    let last = lines.last().expect("a report has a summary line");
    assert_eq!(last["type"], "summary");
    last
}

/// The request bodies a `--dry-run --dry-run-dir DIR --no-gzip` run wrote, in file-name order.
pub fn dry_run_bodies(dir: &Path) -> Vec<Value> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap())
        .collect()
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A CSV of `n` customers `u0`..: `user_id,email`.
pub fn numbered_customers(n: usize) -> String {
    let mut csv = String::from("user_id,email\n");
    for i in 0..n {
        csv.push_str(&format!("u{i},u{i}@example.com\n"));
    }
    csv
}

/// The test PostgreSQL server (127.0.0.1:5432, user postgres, trust auth).
pub const PG_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// Drops the test database `name`, ignoring failures (the server may be
/// gone). Its own thread and runtime: `Drop` cannot await, may run inside
/// a runtime, and the test's runtime may be gone.
pub fn drop_database(name: &str) {
    let name = name.to_owned();
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let admin =
                tokio_postgres::connect(&format!("{PG_SERVER}/postgres"), tokio_postgres::NoTls)
                    .await;
            if let Ok((admin, connection)) = admin {
                tokio::spawn(connection);
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            }
        });
    })
    .join();
}

/// `sync FILE ARGS... --report REPORT` in `dir` against `receiver`; the
/// report is `dir/report.jsonl`, returned with the output.
pub async fn sync_reported(
    dir: &TempDir,
    receiver: &Receiver,
    file: &Path,
    args: &[&str],
) -> (Output, PathBuf) {
    let report = dir.path().join("report.jsonl");
    let mut all = vec!["sync", path_str(file)];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--report", path_str(&report)]);
    let output = run(dir, Some(receiver), &all).await;
    (output, report)
}

/// Starts a sync of `file` as `name`, waits until `ready` holds, then kill -9s it.
pub async fn kill_when(
    dir: &TempDir,
    receiver: &Receiver,
    file: &Path,
    name: &str,
    ready: impl Fn(&Receiver) -> bool,
) {
    let args = [
        "sync",
        path_str(file),
        "--name",
        name,
        "--batch-size",
        "50",
        "--concurrency",
        "2",
        "--quiet",
    ];
    kill_sync_when(dir, receiver, &args, ready).await;
}

/// Starts the binary with `args`, waits until `ready` holds, then kill -9s it.
pub async fn kill_sync_when(
    dir: &TempDir,
    receiver: &Receiver,
    args: &[&str],
    ready: impl Fn(&Receiver) -> bool,
) {
    let mut child = command(dir, Some(receiver), args).spawn().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !ready(receiver) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run never reached the kill point"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended before the kill point: {status}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.start_kill().unwrap();
    let status = child.wait().await.unwrap();
    assert!(!status.success(), "killed by a signal");
}

/// Every userId the receiver accepted, with the messageIds it came under.
pub fn message_ids_by_user(receiver: &Receiver) -> BTreeMap<String, BTreeSet<String>> {
    let mut by_user: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for event in receiver.store().events() {
        by_user
            .entry(event["userId"].as_str().unwrap().to_owned())
            .or_default()
            .insert(event["messageId"].as_str().unwrap().to_owned());
    }
    by_user
}

/// A count from a run summary; panics naming it when it is missing.
pub fn count(summary: &Value, key: &str) -> u64 {
    summary[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {summary}"))
}

/// The report's two equations, and the per-record lines agreeing with the counts.
pub fn assert_adds_up(lines: &[Value]) {
    let s = summary(lines);
    let c = |key: &str| count(s, key);
    assert_eq!(
        c("read"),
        c("valid") + c("invalid") + c("skipped") + c("given_up"),
        "read = valid + invalid + skipped + given_up: {s}"
    );
    assert_eq!(
        c("valid") + c("recovered_not_in_source"),
        c("delivered") + c("failed") + c("pending"),
        "valid (+ outbox entries resent for records not in the source) = delivered + failed + pending: {s}"
    );
    let lines_of = |kind: &str| lines.iter().filter(|l| l["type"] == kind).count() as u64;
    assert_eq!(lines_of("pending"), c("pending"), "pending lines: {s}");
    assert_eq!(lines_of("failed"), c("failed"), "failed lines: {s}");
    assert_eq!(lines_of("invalid"), c("invalid"), "invalid lines: {s}");
    assert!(
        !s["source"].as_str().unwrap_or_default().is_empty(),
        "the summary names its source: {s}"
    );
}
