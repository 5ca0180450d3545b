//! End-to-end: an accounts table synced as `group` calls (`--call group`),
//! incrementally and across a kill -9, with the real binary and receiver.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::*;
use segment_receiver::{FaultPlan, Receiver};
use serde_json::Value;
use tempfile::TempDir;

/// The group id and the member each group call is for.
const MAPPING: &str = "[identity]\ngroup_id = \"account_id\"\nuser_id = \"owner_id\"\n";

/// Accounts `acc{i}`, owned by `u{owner(i)}`, on `plan(i)`.
fn accounts(
    ids: impl IntoIterator<Item = usize>,
    owner: impl Fn(usize) -> usize,
    plan: impl Fn(usize) -> &'static str,
) -> String {
    let mut csv = String::from("account_id,owner_id,name,plan\n");
    for i in ids {
        csv.push_str(&format!("acc{i},u{},Account {i},{}\n", owner(i), plan(i)));
    }
    csv
}

async fn sync(
    dir: &TempDir,
    receiver: &Receiver,
    file: &Path,
    extra: &[&str],
) -> (Output, Value, Vec<Value>) {
    let mapping = write(dir, "accounts.toml", MAPPING);
    let report = dir.path().join("report.jsonl");
    let _ = std::fs::remove_file(&report);
    let mut args = vec![
        "sync",
        path_str(file),
        "--call",
        "group",
        "--mapping",
        path_str(&mapping),
        "--name",
        "accounts",
        "--report",
        path_str(&report),
    ];
    args.extend_from_slice(extra);
    let output = run(dir, Some(receiver), &args).await;
    let lines = report_lines(&report);
    (output, summary(&lines).clone(), lines)
}

fn count(summary: &Value, key: &str) -> u64 {
    summary[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {summary}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_sync_as_group_calls_and_a_second_run_sends_only_changed_groups() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "accounts.csv", &accounts(0..20, |i| i, |_| "free"));
    let (output, summary, _) = sync(&dir, &receiver, &file, &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(count(&summary, "delivered"), 20, "{summary}");

    let events = receiver.store().events();
    assert_eq!(events.len(), 20);
    let first = events
        .iter()
        .find(|e| e["groupId"] == "acc3")
        .expect("acc3 was sent");
    assert_eq!(first["type"], "group");
    assert_eq!(first["userId"], "u3", "the member is the owner column");
    assert_eq!(
        first["traits"],
        serde_json::json!({"name": "Account 3", "plan": "free"}),
        "the identity columns are not traits"
    );
    let stats = receiver.store().stats();
    assert_eq!(stats.accepted_by_type.get("group"), Some(&20));
    assert_eq!(stats.rejected, 0);

    // acc0 and acc1 change plan, acc2 changes owner, acc7 is gone, acc20 is new.
    let plan = |i: usize| if i < 2 { "pro" } else { "free" };
    let owner = |i: usize| if i == 2 { 99 } else { i };
    let file = write(
        &dir,
        "accounts.csv",
        &accounts((0..21).filter(|i| *i != 7), owner, plan),
    );
    let (output, summary, lines) = sync(&dir, &receiver, &file, &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(count(&summary, "delivered"), 4, "{summary}");
    let removed: Vec<&Value> = lines.iter().filter(|l| l["type"] == "removed").collect();
    assert_eq!(removed.len(), 1, "{lines:?}");
    assert_eq!(
        removed[0]["groupId"], "acc7",
        "the report names groups by groupId"
    );
    assert!(removed[0].get("userId").is_none(), "{}", removed[0]);
    assert_eq!(count(&summary, "skipped"), 16, "{summary}");
    let sent: BTreeSet<String> = receiver.store().events()[20..]
        .iter()
        .map(|e| e["groupId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        sent,
        ["acc0", "acc1", "acc2", "acc20"].map(String::from).into()
    );
    let moved = receiver
        .store()
        .events()
        .into_iter()
        .rfind(|e| e["groupId"] == "acc2")
        .unwrap();
    assert_eq!(moved["userId"], "u99");

    // A third run of the same file sends nothing.
    let (output, summary, _) = sync(&dir, &receiver, &file, &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(count(&summary, "delivered"), 0, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_sync_killed_mid_run_delivers_every_group_once_on_the_rerun() {
    const ROWS: usize = 3_000;
    let dir = TempDir::new().unwrap();
    let file = write(
        &dir,
        "accounts.csv",
        &accounts(0..ROWS, |i| i % 50, |_| "pro"),
    );
    let mapping = write(&dir, "accounts.toml", MAPPING);
    let receiver = receiver(FaultPlan::none().with_latency(Duration::from_millis(100))).await;
    let mut child = command(
        &dir,
        Some(&receiver),
        &[
            "sync",
            path_str(&file),
            "--call",
            "group",
            "--mapping",
            path_str(&mapping),
            "--name",
            "accounts",
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
    while receiver.store().stats().accepted < 300 {
        assert!(tokio::time::Instant::now() < deadline, "never reached 300");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended before the kill point: {status}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.start_kill().unwrap();
    assert!(!child.wait().await.unwrap().success(), "killed by a signal");

    receiver.set_faults(FaultPlan::none());
    let (output, summary, _) = sync(&dir, &receiver, &file, &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(count(&summary, "recovered") > 0, "{summary}");

    let mut by_group: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for event in receiver.store().events() {
        assert_eq!(event["type"], "group");
        by_group
            .entry(event["groupId"].as_str().unwrap().to_owned())
            .or_default()
            .insert(event["messageId"].as_str().unwrap().to_owned());
    }
    assert_eq!(by_group.len(), ROWS, "every group arrived");
    assert!(
        by_group.values().all(|ids| ids.len() == 1),
        "a resent group keeps its first messageId"
    );
    assert_eq!(receiver.store().stats().unique_message_ids, ROWS as u64);
}

#[tokio::test]
async fn group_calls_need_a_group_id_and_a_member_and_say_so() {
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "accounts.csv", &accounts(0..2, |i| i, |_| "pro"));

    // --call group without a group id column: a config error with a hint.
    let output = run(&dir, None, &["preview", path_str(&file), "--call", "group"]).await;
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(
        text.contains("--call group needs a group id column"),
        "{text}"
    );
    assert!(
        text.contains("hint:") && text.contains("group_id"),
        "{text}"
    );

    // A group mapping without --call group.
    let mapping = write(&dir, "accounts.toml", MAPPING);
    let output = run(
        &dir,
        None,
        &["preview", path_str(&file), "--mapping", path_str(&mapping)],
    )
    .await;
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("pass --call group"), "{text}");

    // A group id without a member.
    let lonely = write(
        &dir,
        "lonely.toml",
        "[identity]\ngroup_id = \"account_id\"\n",
    );
    let output = run(
        &dir,
        None,
        &[
            "preview",
            path_str(&file),
            "--call",
            "group",
            "--mapping",
            path_str(&lonely),
        ],
    )
    .await;
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(
        text.contains("a group call needs a `user_id` or `anonymous_id`"),
        "{text}"
    );

    // preview shows the group calls as they would be sent.
    let output = run(
        &dir,
        None,
        &[
            "preview",
            path_str(&file),
            "--call",
            "group",
            "--mapping",
            path_str(&mapping),
            "-n",
            "1",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let event: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (&event["type"], &event["groupId"], &event["userId"]),
        (&"group".into(), &"acc0".into(), &"u0".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_dry_run_writes_group_calls_and_sends_nothing() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "accounts.csv", &accounts(0..3, |i| i, |_| "pro"));
    let out_dir = dir.path().join("bodies");
    let (output, summary, _) = sync(
        &dir,
        &receiver,
        &file,
        &[
            "--dry-run",
            "--dry-run-dir",
            path_str(&out_dir),
            "--no-gzip",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(receiver.store().stats().requests, 0);
    assert!(summary["dry_run"].as_bool().unwrap(), "{summary}");
    let bodies = dry_run_bodies(&out_dir);
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let calls: Vec<(&str, &str)> = bodies[0]["batch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["groupId"].as_str().unwrap()))
        .collect();
    assert_eq!(
        calls,
        [("group", "acc0"), ("group", "acc1"), ("group", "acc2")]
    );
}
