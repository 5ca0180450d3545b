//! End-to-end: what the binary says about a run once it is over (the
//! summary on stderr) and about past runs (`status`), in words and in JSON.

mod common;

use common::*;
use segment_receiver::FaultPlan;
use serde_json::Value;
use tempfile::TempDir;

/// The summary block on stderr: from the line that starts with the source.
fn summary_block(err: &str, source: &str) -> String {
    let start = err
        .find(&format!("{source}: read "))
        .unwrap_or_else(|| panic!("no summary in: {err}"));
    err[start..].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_where_nothing_changed_says_so() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    write(&dir, "c.csv", &numbered_customers(40));
    let first = run(&dir, Some(&receiver), &["sync", "c.csv"]).await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let second = run(&dir, Some(&receiver), &["sync", "c.csv"]).await;
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_eq!(receiver.store().stats().accepted, 40);
    let block = summary_block(&stderr(&second), "c.csv");
    let head = block.lines().next().unwrap();
    assert!(head.contains("read 40"), "{block}");
    assert!(head.contains("unchanged 40"), "{block}");
    assert!(head.contains("nothing to send"), "{block}");
    for wrong in [
        "valid 0",
        "delivered 0",
        "failed 0",
        "delivered/s",
        "given up 0",
    ] {
        assert!(!block.contains(wrong), "`{wrong}` in: {block}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_reports_no_delivery_rate() {
    let dir = TempDir::new().unwrap();
    write(&dir, "c.csv", &numbered_customers(40));
    let output = run(&dir, None, &["sync", "c.csv", "--dry-run"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let block = summary_block(&stderr(&output), "c.csv");
    assert!(
        block.lines().next().unwrap().contains("would send 40"),
        "{block}"
    );
    assert!(block.contains("records read/s"), "{block}");
    for wrong in ["delivered", "valid 40", "failed 0", "pending 0"] {
        assert!(!block.contains(wrong), "`{wrong}` in: {block}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_problems_names_only_what_happened() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    write(
        &dir,
        "c.csv",
        "user_id,email\nu1,a@x.io\n,b@x.io\nu3,c@x.io\n",
    );
    let output = run(&dir, Some(&receiver), &["sync", "c.csv"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let block = summary_block(&stderr(&output), "c.csv");
    let head = block.lines().next().unwrap();
    assert!(head.contains("read 3"), "{block}");
    assert!(head.contains("invalid 1"), "{block}");
    assert!(head.contains("delivered 2"), "{block}");
    assert!(block.contains("delivered/s"), "{block}");
    for wrong in ["unchanged 0", "failed 0", "pending 0", "valid 2"] {
        assert!(!block.contains(wrong), "`{wrong}` in: {block}");
    }
}

/// Two runs: the first fails `u2` (Segment answers 400 for it), the second
/// sends it again and still fails it; everyone else is unchanged.
async fn two_runs_with_a_failing_customer(dir: &TempDir) -> segment_receiver::Receiver {
    let receiver = receiver(FaultPlan::user_id("u2", 400, None)).await;
    write(dir, "c.csv", &numbered_customers(4));
    for _ in 0..2 {
        let output = run(
            dir,
            Some(&receiver),
            &["sync", "c.csv", "--batch-size", "1"],
        )
        .await;
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    }
    receiver
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_as_a_run_history() {
    let dir = TempDir::new().unwrap();
    let _receiver = two_runs_with_a_failing_customer(&dir).await;
    let output = run(&dir, None, &["status"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = String::from_utf8(output.stdout).unwrap();
    // The last report was a raw JSON line; Segment's own answer, quoted
    // in a failing record's error, may still hold JSON.
    assert!(
        !out.lines().any(|l| l.trim_start().starts_with('{')) && !out.contains("\"read\""),
        "no raw JSON report: {out}"
    );
    assert!(!out.contains("u:u2"), "no internal keys: {out}");
    let header = out
        .lines()
        .find(|l| l.contains("started"))
        .unwrap_or_else(|| panic!("a run table: {out}"));
    for column in [
        "started",
        "duration",
        "source",
        "read",
        "sent",
        "unchanged",
        "failed",
        "removed",
        "exit",
    ] {
        assert!(header.contains(column), "`{column}` in: {header}");
    }
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip_while(|l| !l.contains("started"))
        .skip(1)
        .take_while(|l| l.contains("c.csv"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "two runs, newest first: {out}");
    let cells = |row: &[&str]| -> Vec<String> {
        let at = row.iter().position(|c| *c == "c.csv").unwrap();
        row[at + 1..].iter().map(|c| c.to_string()).collect()
    };
    // read, sent, unchanged, invalid, failed, removed, exit
    assert_eq!(
        cells(&rows[0]),
        ["4", "0", "3", "0", "1", "0", "1"],
        "{out}"
    );
    assert_eq!(
        cells(&rows[1]),
        ["4", "3", "0", "0", "1", "0", "1"],
        "{out}"
    );
    let failing = out
        .lines()
        .find(|l| l.contains("userId u2"))
        .unwrap_or_else(|| panic!("the failing record: {out}"));
    assert!(failing.contains("400"), "its last error: {failing}");
    assert!(failing.contains("2 runs"), "{failing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_has_stable_fields() {
    let dir = TempDir::new().unwrap();
    let _receiver = two_runs_with_a_failing_customer(&dir).await;
    // A run Segment stops with a fatal error (a refused write key) is exit 2.
    let refusing = receiver(FaultPlan::first_n(1000, 401)).await;
    let output = run(&dir, Some(&refusing), &["sync", "c.csv", "--retry-failed"]).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));

    let output = run(&dir, None, &["status", "--json"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let status: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["records"], 4);
    assert_eq!(status["accepted"], 3);
    assert_eq!(status["failing"], 1);
    let runs = status["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "{status}");
    let fatal = &runs[0];
    assert_eq!(fatal["exit"], 2, "{fatal}");
    assert!(
        fatal["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{fatal}"
    );
    let second = &runs[1];
    assert_eq!(second["source"], "c.csv");
    assert_eq!(second["read"], 4);
    assert_eq!(second["sent"], 0);
    assert_eq!(second["unchanged"], 3);
    assert_eq!(second["failed"], 1);
    assert_eq!(second["removed"], 0);
    assert_eq!(second["exit"], 1);
    assert!(second["started_at"].as_str().unwrap().contains('T'));
    assert!(second["duration_secs"].as_f64().unwrap() >= 0.0);
    assert_eq!(runs[2]["sent"], 3);
    let failing = status["failing_records"].as_array().unwrap();
    assert_eq!(failing.len(), 1, "{status}");
    assert_eq!(failing[0]["userId"], "u2");
    assert_eq!(failing[0]["failed_runs"], 2);
    assert_eq!(failing[0]["line"], 4);
    assert!(
        failing[0]["message"].as_str().unwrap().contains("400"),
        "{status}"
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains("u:u2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_superseded_by_a_later_one_is_not_called_unchanged() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    write(
        &dir,
        "c.csv",
        "user_id,email\nu1,old@x.io\nu2,b@x.io\nu1,new@x.io\n",
    );
    let output = run(&dir, Some(&receiver), &["sync", "c.csv", "--no-state"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let block = summary_block(&stderr(&output), "c.csv");
    let head = block.lines().next().unwrap();
    assert!(!head.contains("unchanged"), "nothing was compared: {block}");
    assert!(head.contains("superseded by a later row 1"), "{block}");
    assert!(head.contains("delivered 2"), "{block}");
}
