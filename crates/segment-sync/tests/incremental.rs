//! End-to-end: incremental, durable syncs with the state. The real binary,
//! the real receiver, and kill -9 at several points of a run.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::*;
use customer_sync::state::StateStore;
use segment_receiver::{FaultPlan, Receiver};
use serde_json::Value;
use tempfile::TempDir;

/// Customers `u0..u{n}` with a plan and a note that a mapping may drop.
fn customers(ids: impl IntoIterator<Item = usize>, email: impl Fn(usize) -> String) -> String {
    let mut csv = String::from("user_id,email,plan,notes\n");
    for i in ids {
        csv.push_str(&format!("u{i},{},pro,note {i}\n", email(i)));
    }
    csv
}

fn email(i: usize) -> String {
    format!("u{i}@example.com")
}

async fn sync(
    dir: &TempDir,
    receiver: &Receiver,
    file: &Path,
    extra: &[&str],
) -> (Output, Vec<Value>) {
    let report = dir.path().join("report.jsonl");
    let mut args = vec![
        "sync",
        path_str(file),
        "--name",
        "customers",
        "--report",
        path_str(&report),
    ];
    args.extend_from_slice(extra);
    let output = run(dir, Some(receiver), &args).await;
    let lines = report_lines(&report);
    (output, lines)
}

use std::process::Output;

fn count(summary: &Value, key: &str) -> u64 {
    summary[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {summary}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_sends_only_new_and_changed_records_and_reports_removed_ones() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "customers.csv", &customers(0..20, email));
    let (output, lines) = sync(&dir, &receiver, &file, &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(count(summary(&lines), "delivered"), 20);

    // u0..u2 change, u5 is gone, u20 and u21 are new.
    let changed = |i: usize| {
        if i < 3 {
            format!("new{i}@example.com")
        } else {
            email(i)
        }
    };
    let ids = (0..22).filter(|i| *i != 5);
    let file = write(&dir, "customers.csv", &customers(ids, changed));
    let (output, lines) = sync(&dir, &receiver, &file, &[]).await;

    assert!(output.status.success(), "{}", stderr(&output));
    let summary = summary(&lines);
    assert_eq!(count(summary, "read"), 21);
    assert_eq!(count(summary, "skipped"), 16);
    assert_eq!(count(summary, "valid"), 5);
    assert_eq!(count(summary, "delivered"), 5);
    assert_eq!(count(summary, "removed"), 1);
    let removed: Vec<_> = lines.iter().filter(|l| l["type"] == "removed").collect();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0]["userId"], "u5");
    assert_eq!(receiver.store().stats().accepted, 25);
    assert_eq!(
        receiver.store().events_for_user("u1")[1]["traits"]["email"],
        "new1@example.com"
    );
    assert_eq!(receiver.store().events_for_user("u20").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_columns_and_whitespace_in_dropped_columns_send_nothing() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let mapping = write(&dir, "m.toml", "[columns]\nnotes = { drop = true }\n");
    let mapping = path_str(&mapping).to_owned();
    let file = write(&dir, "customers.csv", &customers(0..10, email));
    let (output, _) = sync(&dir, &receiver, &file, &["--mapping", &mapping]).await;
    assert!(output.status.success(), "{}", stderr(&output));

    let mut csv = String::from("notes,plan,email,user_id\n");
    for i in 0..10 {
        csv.push_str(&format!("  note {i}  ,pro,{},u{i}\n", email(i)));
    }
    let file = write(&dir, "customers.csv", &csv);
    let (output, lines) = sync(&dir, &receiver, &file, &["--mapping", &mapping]).await;

    assert!(output.status.success(), "{}", stderr(&output));
    let summary = summary(&lines);
    assert_eq!(count(summary, "skipped"), 10);
    assert_eq!(count(summary, "delivered"), 0);
    assert_eq!(
        receiver.store().stats().requests,
        1,
        "the second run sent no request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_row_is_retried_in_the_next_run_although_unchanged() {
    let receiver = receiver(FaultPlan::user_id("u3", 400, Some(1))).await;
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "customers.csv", &customers(0..8, email));
    let (output, lines) = sync(&dir, &receiver, &file, &["--batch-size", "1"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(count(summary(&lines), "failed"), 1);

    let (output, lines) = sync(&dir, &receiver, &file, &["--batch-size", "1"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let summary = summary(&lines);
    assert_eq!(count(summary, "valid"), 1);
    assert_eq!(count(summary, "delivered"), 1);
    assert_eq!(count(summary, "skipped"), 7);
    assert_eq!(receiver.store().events_for_user("u3").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_failing_run_after_run_is_given_up_until_forced() {
    let receiver = receiver(FaultPlan::user_id("u3", 400, None)).await;
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "customers.csv", &customers(0..5, email));
    let args = ["--batch-size", "1", "--max-failed-runs", "2"];
    for _ in 0..2 {
        let (output, lines) = sync(&dir, &receiver, &file, &args).await;
        assert_eq!(output.status.code(), Some(1));
        assert_eq!(count(summary(&lines), "failed"), 1);
    }
    let (output, lines) = sync(&dir, &receiver, &file, &args).await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "a given-up record still needs attention"
    );
    assert_eq!(count(summary(&lines), "given_up"), 1);
    assert_eq!(count(summary(&lines), "valid"), 0);
    assert!(
        lines
            .iter()
            .any(|l| l["type"] == "given_up" && l["userId"] == "u3")
    );

    let mut forced = args.to_vec();
    forced.push("--retry-failed");
    let (_, lines) = sync(&dir, &receiver, &file, &forced).await;
    assert_eq!(
        count(summary(&lines), "failed"),
        1,
        "--retry-failed sends it again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_resync_sends_everything_with_new_message_ids() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "customers.csv", &customers(0..6, email));
    sync(&dir, &receiver, &file, &[]).await;
    let (output, lines) = sync(&dir, &receiver, &file, &["--full-resync"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(count(summary(&lines), "delivered"), 6);
    let stats = receiver.store().stats();
    assert_eq!((stats.accepted, stats.unique_message_ids), (12, 12));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trait_that_disappears_is_unset_under_the_null_policy() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let mapping = write(&dir, "m.toml", "[options]\nnull = \"null\"\n");
    let mapping = path_str(&mapping).to_owned();
    let file = write(
        &dir,
        "customers.csv",
        "user_id,email,plan\nu1,a@x.io,pro\nu2,b@x.io,free\n",
    );
    sync(&dir, &receiver, &file, &["--mapping", &mapping]).await;

    // The plan column is gone: u1 and u2 get plan = null, once.
    let file = write(
        &dir,
        "customers.csv",
        "user_id,email\nu1,a@x.io\nu2,b@x.io\n",
    );
    let (output, lines) = sync(&dir, &receiver, &file, &["--mapping", &mapping]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(count(summary(&lines), "traits_unset"), 2);
    let second = &receiver.store().events_for_user("u1")[1];
    assert!(
        second["traits"]["plan"].is_null() && second["traits"].get("plan").is_some(),
        "{second}"
    );

    let (_, lines) = sync(&dir, &receiver, &file, &["--mapping", &mapping]).await;
    assert_eq!(
        count(summary(&lines), "skipped"),
        2,
        "the unset is remembered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_reset_show_and_drop_the_state() {
    let receiver = receiver(FaultPlan::user_id("u1", 400, None)).await;
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "customers.csv", &customers(0..4, email));
    sync(&dir, &receiver, &file, &["--batch-size", "1"]).await;

    let output = run(&dir, None, &["status", "--name", "customers"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("4 records known"), "{text}");
    assert!(text.contains("3 accepted"), "{text}");
    assert!(text.contains("userId u1"), "{text}");
    assert!(!text.contains("u:u1"), "no internal keys: {text}");
    // With a single sync in the state directory, --name can be left out.
    let output = run(&dir, None, &["status"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        String::from_utf8(output.stdout)
            .unwrap()
            .contains("sync customers")
    );

    let output = run(&dir, None, &["reset", "--name", "customers"]).await;
    assert_eq!(
        output.status.code(),
        Some(2),
        "no confirmation without a terminal"
    );
    let output = run(&dir, None, &["reset", "--name", "customers", "--yes"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let output = run(&dir, None, &["status", "--name", "customers"]).await;
    assert_eq!(output.status.code(), Some(2));
}

/// Every userId the receiver got, with the messageIds it came under.
fn message_ids_by_user(receiver: &Receiver) -> BTreeMap<String, BTreeSet<String>> {
    let mut by_user: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for event in receiver.store().events() {
        by_user
            .entry(event["userId"].as_str().unwrap().to_owned())
            .or_default()
            .insert(event["messageId"].as_str().unwrap().to_owned());
    }
    by_user
}

/// Starts a sync, waits until `ready` holds for the receiver, then kill -9s it.
async fn kill_when(
    dir: &TempDir,
    receiver: &Receiver,
    file: &Path,
    ready: impl Fn(&Receiver) -> bool,
) {
    let mut child = command(
        dir,
        Some(receiver),
        &[
            "sync",
            path_str(file),
            "--name",
            "crash",
            "--batch-size",
            "50",
            "--concurrency",
            "2",
            "--quiet",
        ],
    )
    .spawn()
    .unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_any_point_a_rerun_delivers_everything_once_per_message_id() {
    const ROWS: usize = 2_000;
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "customers.csv", &customers(0..ROWS, email));
    // Slow answers keep requests in flight when the kill lands.
    let receiver = receiver(FaultPlan::none().with_latency(Duration::from_millis(150))).await;

    // 1. While the first requests are in flight, before any answer.
    kill_when(&dir, &receiver, &file, |r| r.store().stats().requests >= 1).await;
    // 2. After some batches were accepted, with more in flight.
    let accepted_before = receiver.store().stats().accepted;
    kill_when(&dir, &receiver, &file, |r| {
        r.store().stats().accepted >= accepted_before + 300
    })
    .await;
    // 3. Once more, later in the file.
    let accepted_before = receiver.store().stats().accepted;
    kill_when(&dir, &receiver, &file, |r| {
        r.store().stats().accepted >= accepted_before + 300
    })
    .await;

    receiver.set_faults(FaultPlan::none());
    let report = dir.path().join("final.jsonl");
    let output = run(
        &dir,
        Some(&receiver),
        &[
            "sync",
            path_str(&file),
            "--name",
            "crash",
            "--report",
            path_str(&report),
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));

    // Every record arrived, and each customer under a single messageId: the
    // resends after each kill reused the first attempt's id, so Segment drops them.
    let by_user = message_ids_by_user(&receiver);
    assert_eq!(by_user.len(), ROWS);
    let split: Vec<_> = by_user.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        split.is_empty(),
        "customers sent under several messageIds: {:?}",
        &split[..split.len().min(3)]
    );

    // The state agrees with the receiver, customer by customer.
    let mut store = StateStore::open_existing(&dir.path().join(".segment-sync"), "crash").unwrap();
    assert_eq!(store.counts().unwrap(), (ROWS as u64, ROWS as u64, 0, 0));
    for (user, ids) in &by_user {
        let accepted = store.accepted_message_id(&format!("u:{user}")).unwrap();
        assert_eq!(accepted.as_ref(), ids.iter().next(), "{user}");
    }
    let stats = receiver.store().stats();
    assert!(
        stats.duplicates > 0,
        "the kills left in-flight batches that were resent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_found_among_known_and_new_identities_alike() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "customers.csv", &customers(0..3, email));
    sync(&dir, &receiver, &file, &[]).await;

    // u1 is known to the state, u7 is new; both appear twice.
    let csv = "user_id,email,plan,notes\nu0,a@x.io,pro,n\nu1,b@x.io,pro,n\nu7,c@x.io,pro,n\nu1,d@x.io,pro,n\nu7,e@x.io,pro,n\n";
    let file = write(&dir, "customers.csv", csv);
    let (output, lines) = sync(&dir, &receiver, &file, &["--duplicates", "first"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let duplicates: Vec<_> = lines
        .iter()
        .filter(|l| l["reason"] == "duplicate_identity")
        .map(|l| {
            (
                l["line"].as_u64().unwrap(),
                l["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(duplicates.len(), 2, "{lines:?}");
    assert_eq!(duplicates[0].0, 5);
    assert!(duplicates[0].1.contains("line 3"), "{duplicates:?}");
    assert_eq!(duplicates[1].0, 6);
    assert!(duplicates[1].1.contains("line 4"), "{duplicates:?}");
    assert_eq!(count(summary(&lines), "duplicates"), 2);
}
