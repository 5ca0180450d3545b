//! End-to-end: what the binary says about a run once it is over (the
//! summary on stderr) and about past runs (`status`), in words and in JSON.

mod common;

use common::*;
use segment_receiver::FaultPlan;
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
