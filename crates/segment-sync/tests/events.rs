//! End-to-end: the mapping's `[events]` section (`track` events when a
//! customer is added, changed or removed), incrementally and across a
//! kill -9, with the real binary and receiver.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::*;
use segment_receiver::{FaultPlan, Receiver};
use serde_json::{Value, json};
use tempfile::TempDir;

const EVENTS: &str = "[events]\nadded = \"Customer Created\"\nchanged = \"Customer Updated\"\nremoved = \"Customer Deleted\"\n";

/// Customers `u{i}` for `ids`, on `plan(i)`.
fn customers(ids: impl IntoIterator<Item = usize>, plan: impl Fn(usize) -> &'static str) -> String {
    let mut csv = String::from("user_id,email,plan\n");
    for i in ids {
        csv.push_str(&format!("u{i},u{i}@example.com,{}\n", plan(i)));
    }
    csv
}

async fn sync(
    dir: &TempDir,
    receiver: &Receiver,
    file: &Path,
    mapping: &str,
    extra: &[&str],
) -> (Output, Value, Vec<Value>) {
    let mapping = write(dir, "mapping.toml", mapping);
    let mut args = vec!["--mapping", path_str(&mapping), "--name", "customers"];
    args.extend_from_slice(extra);
    let (output, report) = sync_reported(dir, receiver, file, &args).await;
    let lines = report_lines(&report);
    (output, summary(&lines).clone(), lines)
}

/// `sync FILE --mapping MAPPING` as the kill tests run it: small batches,
/// two requests in flight.
fn killable_sync<'a>(file: &'a Path, mapping: &'a Path) -> [&'a str; 11] {
    [
        "sync",
        path_str(file),
        "--mapping",
        path_str(mapping),
        "--name",
        "customers",
        "--batch-size",
        "50",
        "--concurrency",
        "2",
        "--quiet",
    ]
}

fn count(summary: &Value, key: &str) -> u64 {
    summary[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {summary}"))
}

/// The events the receiver accepted after the first `skip`, as (type or
/// track name, userId), sorted.
fn calls(receiver: &Receiver, skip: usize) -> Vec<(String, String)> {
    let mut calls: Vec<(String, String)> = receiver.store().events()[skip..]
        .iter()
        .map(|e| {
            let call = match e["type"].as_str().unwrap() {
                "track" => e["event"].as_str().unwrap().to_owned(),
                other => other.to_owned(),
            };
            (call, e["userId"].as_str().unwrap().to_owned())
        })
        .collect();
    calls.sort();
    calls
}

fn track<'a>(events: &'a [Value], name: &str, user: &str) -> &'a Value {
    events
        .iter()
        .rfind(|e| e["event"] == name && e["userId"] == user)
        .unwrap_or_else(|| panic!("no {name} for {user}"))
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = list
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    pairs.sort();
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_changed_and_removed_customers_send_their_track_events_once() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "customers.csv", &customers(0..5, |_| "free"));

    // First run: every customer is new.
    let (output, summary, _) = sync(&dir, &receiver, &file, EVENTS, &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(count(&summary, "delivered"), 5, "{summary}");
    assert_eq!(count(&summary, "tracked_added"), 5, "{summary}");
    let events = receiver.store().events();
    assert_eq!(events.len(), 10, "an identify and a track per customer");
    assert_eq!(
        track(&events, "Customer Created", "u3")["properties"],
        json!({"email": "u3@example.com", "plan": "free"}),
        "an added customer's properties are its traits"
    );
    let stats = receiver.store().stats();
    assert_eq!(
        (
            stats.accepted_by_type.get("identify"),
            stats.accepted_by_type.get("track")
        ),
        (Some(&5), Some(&5))
    );

    // u1 upgrades, u4 is gone, u5 is new.
    let plan = |i: usize| if i == 1 { "pro" } else { "free" };
    let file = write(&dir, "customers.csv", &customers([0, 1, 2, 3, 5], plan));
    let (output, summary, lines) = sync(&dir, &receiver, &file, EVENTS, &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        calls(&receiver, 10),
        pairs(&[
            ("identify", "u1"),
            ("Customer Updated", "u1"),
            ("identify", "u5"),
            ("Customer Created", "u5"),
            ("Customer Deleted", "u4"),
        ])
    );
    let events = receiver.store().events();
    assert_eq!(
        track(&events, "Customer Updated", "u1")["properties"],
        json!({"plan": "pro"}),
        "a changed customer's properties are the traits that changed"
    );
    assert_eq!(
        track(&events, "Customer Deleted", "u4")["properties"],
        json!({"email": "u4@example.com", "plan": "free"}),
        "a removed customer's properties are the traits Segment had"
    );
    assert_eq!(count(&summary, "removed"), 1, "{summary}");
    assert_eq!(count(&summary, "removed_sent"), 1, "{summary}");
    assert_eq!(
        count(&summary, "delivered"),
        3,
        "two records and a removal: {summary}"
    );
    assert_eq!(
        (
            count(&summary, "tracked_added"),
            count(&summary, "tracked_changed"),
            count(&summary, "tracked_removed")
        ),
        (1, 1, 1)
    );
    let removed: Vec<&Value> = lines.iter().filter(|l| l["type"] == "removed").collect();
    assert_eq!(removed.len(), 1, "{lines:?}");
    assert_eq!(removed[0]["userId"], "u4");
    assert!(
        stderr(&output).contains("track events ([events]) accepted: added 1, changed 1, removed 1"),
        "{}",
        stderr(&output)
    );

    // The same file again: nothing is sent, and u4 is not removed twice.
    let before = receiver.store().events().len();
    let (output, summary, _) = sync(&dir, &receiver, &file, EVENTS, &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(receiver.store().events().len(), before, "{summary}");
    assert_eq!(count(&summary, "removed"), 0, "{summary}");

    // u4 comes back: it is added again.
    let file = write(&dir, "customers.csv", &customers(0..6, plan));
    let (output, _, _) = sync(&dir, &receiver, &file, EVENTS, &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        calls(&receiver, before),
        pairs(&[("identify", "u4"), ("Customer Created", "u4")])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_false_sends_only_the_track_events() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let mapping =
        "[events]\nadded = \"Signed Up\"\nchanged = \"Profile Changed\"\nidentify = false\n";
    let file = write(&dir, "customers.csv", &customers(0..3, |_| "free"));
    let (output, summary, _) = sync(&dir, &receiver, &file, mapping, &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(count(&summary, "delivered"), 3, "{summary}");
    assert_eq!(
        calls(&receiver, 0),
        pairs(&[
            ("Signed Up", "u0"),
            ("Signed Up", "u1"),
            ("Signed Up", "u2")
        ])
    );

    let file = write(
        &dir,
        "customers.csv",
        &customers(0..3, |i| if i == 2 { "pro" } else { "free" }),
    );
    let (output, summary, _) = sync(&dir, &receiver, &file, mapping, &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(count(&summary, "skipped"), 2, "{summary}");
    assert_eq!(calls(&receiver, 3), pairs(&[("Profile Changed", "u2")]));
    assert_eq!(
        track(&receiver.store().events(), "Profile Changed", "u2")["properties"],
        json!({"plan": "pro"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_events_sync_delivers_every_event_once_on_the_rerun() {
    const ROWS: usize = 2_000;
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "customers.csv", &customers(0..ROWS, |_| "free"));
    let mapping = write(&dir, "mapping.toml", EVENTS);
    let receiver = receiver(FaultPlan::none().with_latency(Duration::from_millis(100))).await;
    let kill_args = killable_sync(&file, &mapping);
    kill_sync_when(&dir, &receiver, &kill_args, |r| {
        r.store().stats().accepted >= 300
    })
    .await;

    receiver.set_faults(FaultPlan::none());
    let (output, summary, _) = sync(&dir, &receiver, &file, EVENTS, &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(count(&summary, "recovered") > 0, "{summary}");
    assert_each_event_once(&receiver, ROWS, "Customer Created");

    // Half the customers leave; the run is killed while their removed
    // events are in flight, then finished.
    let file = write(&dir, "customers.csv", &customers(0..ROWS / 2, |_| "free"));
    let before = receiver.store().stats().accepted;
    receiver.set_faults(FaultPlan::none().with_latency(Duration::from_millis(100)));
    kill_sync_when(&dir, &receiver, &kill_args, |r| {
        r.store().stats().accepted >= before + 200
    })
    .await;
    receiver.set_faults(FaultPlan::none());
    let (output, summary, _) = sync(&dir, &receiver, &file, EVENTS, &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let removed: BTreeMap<String, BTreeSet<String>> = receiver
        .store()
        .events()
        .into_iter()
        .filter(|e| e["event"] == "Customer Deleted")
        .fold(BTreeMap::new(), |mut by_user, e| {
            by_user
                .entry(e["userId"].as_str().unwrap().to_owned())
                .or_default()
                .insert(e["messageId"].as_str().unwrap().to_owned());
            by_user
        });
    assert_eq!(
        removed.len(),
        ROWS / 2,
        "every gone customer was removed: {summary}"
    );
    assert!(
        removed.values().all(|ids| ids.len() == 1),
        "a resent removal keeps its first messageId"
    );
    assert!(
        removed
            .keys()
            .all(|u| u[1..].parse::<usize>().unwrap() >= ROWS / 2),
        "only gone customers are removed"
    );
    // Resent events keep their messageId (Segment drops the copies it has).
    assert_eq!(
        receiver.store().stats().unique_message_ids,
        (2 * ROWS + ROWS / 2) as u64
    );

    // Nothing is left to do.
    let before = receiver.store().events().len();
    let (output, summary, _) = sync(&dir, &receiver, &file, EVENTS, &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(receiver.store().events().len(), before, "{summary}");
}

/// Every customer `u0..u{rows}` has exactly one identify and one `name`
/// track, each under one messageId.
fn assert_each_event_once(receiver: &Receiver, rows: usize, name: &str) {
    let mut by_call: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for event in receiver.store().events() {
        let call = match event["type"].as_str().unwrap() {
            "track" => event["event"].as_str().unwrap().to_owned(),
            other => other.to_owned(),
        };
        by_call
            .entry((call, event["userId"].as_str().unwrap().to_owned()))
            .or_default()
            .insert(event["messageId"].as_str().unwrap().to_owned());
    }
    for i in 0..rows {
        for call in ["identify", name] {
            let ids = by_call.get(&(call.to_owned(), format!("u{i}")));
            assert_eq!(ids.map(BTreeSet::len), Some(1), "{call} of u{i}: {ids:?}");
        }
    }
    assert_eq!(by_call.len(), 2 * rows, "nothing else was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_events_dry_run_shows_the_tracks_and_sends_and_keeps_nothing() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "customers.csv", &customers(0..2, |_| "free"));
    let out_dir = dir.path().join("bodies");
    let (output, summary, _) = sync(
        &dir,
        &receiver,
        &file,
        EVENTS,
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
    assert_eq!(count(&summary, "tracked_added"), 2, "{summary}");
    let mut calls = Vec::new();
    for body in dry_run_bodies(&out_dir) {
        for e in body["batch"].as_array().unwrap() {
            calls.push((
                e["type"].as_str().unwrap().to_owned(),
                e["event"].as_str().unwrap_or_default().to_owned(),
                e["userId"].as_str().unwrap().to_owned(),
            ));
        }
    }
    calls.sort();
    assert_eq!(
        calls,
        [
            ("identify", "", "u0"),
            ("identify", "", "u1"),
            ("track", "Customer Created", "u0"),
            ("track", "Customer Created", "u1"),
        ]
        .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    );

    // The dry run kept nothing: a real run sends them all.
    let (output, summary, _) = sync(&dir, &receiver, &file, EVENTS, &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(count(&summary, "tracked_added"), 2, "{summary}");
}

#[tokio::test]
async fn events_need_a_state_and_a_customer_mapping_and_preview_shows_them() {
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "customers.csv", &customers(0..2, |_| "free"));
    let mapping = write(&dir, "mapping.toml", EVENTS);

    let output = run(
        &dir,
        None,
        &[
            "sync",
            path_str(&file),
            "--mapping",
            path_str(&mapping),
            "--no-state",
            "--dry-run",
        ],
    )
    .await;
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("[events] need a state"), "{text}");
    assert!(text.contains("hint:"), "{text}");

    for (toml, expected) in [
        ("[events]\nadded = \"\"\n", "`events.added` is empty"),
        ("[events]\nidentify = false\n", "names no event"),
        (
            "[events]\nchanged = \"Changed\"\nidentify = false\n",
            "but no `added`",
        ),
        (
            "[events]\nadded = \"A\"\ncreated = \"B\"\n",
            "unknown field `created`",
        ),
        (
            "[identity]\ngroup_id = \"user_id\"\nuser_id = \"email\"\n[events]\nadded = \"A\"\n",
            "not to group calls",
        ),
    ] {
        let bad = write(&dir, "bad.toml", toml);
        let output = run(
            &dir,
            None,
            &["preview", path_str(&file), "--mapping", path_str(&bad)],
        )
        .await;
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{toml}: {text}");
        assert!(text.contains(expected), "{toml}: {text}");
        assert!(text.contains("bad.toml"), "names the file: {text}");
    }

    // preview shows what a first sync sends: the identify and the track.
    let output = run(
        &dir,
        None,
        &[
            "preview",
            path_str(&file),
            "--mapping",
            path_str(&mapping),
            "-n",
            "1",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let shown: Vec<Value> = serde_json::Deserializer::from_slice(&output.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert_eq!(
        (&shown[0]["type"], &shown[0]["userId"]),
        (&json!("identify"), &json!("u0"))
    );
    assert_eq!(
        (
            &shown[1]["type"],
            &shown[1]["event"],
            &shown[1]["properties"]["plan"]
        ),
        (&json!("track"), &json!("Customer Created"), &json!("free"))
    );

    // `mapping --toml` writes the section back, and the file it writes works.
    let output = run(
        &dir,
        None,
        &[
            "mapping",
            path_str(&file),
            "--mapping",
            path_str(&mapping),
            "--toml",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("[events]") && text.contains("removed  = \"Customer Deleted\""),
        "{text}"
    );
    let again = write(&dir, "again.toml", &text);
    let output = run(
        &dir,
        None,
        &["mapping", path_str(&file), "--mapping", path_str(&again)],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("track events: added -> \"Customer Created\""),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_events_are_held_back_after_a_bad_row_an_empty_export_or_a_mass_removal() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "customers.csv", &customers(0..20, |_| "free"));
    let (output, _, _) = sync(&dir, &receiver, &file, EVENTS, &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let deleted = |receiver: &Receiver| -> Vec<String> {
        let mut users: Vec<String> = receiver
            .store()
            .events()
            .iter()
            .filter(|e| e["event"] == "Customer Deleted")
            .map(|e| e["userId"].as_str().unwrap().to_owned())
            .collect();
        users.sort();
        users
    };

    // u3's row is malformed (it would look gone) and u19 is gone: nothing
    // is removed until the read is clean.
    let mut csv = customers((0..19).filter(|i| *i != 3), |_| "free");
    csv.push_str("u3,u3@example.com,free,one field too many\n");
    let file = write(&dir, "customers.csv", &csv);
    let (output, summary, _) = sync(&dir, &receiver, &file, EVENTS, &[]).await;
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(deleted(&receiver).is_empty(), "{:?}", deleted(&receiver));
    assert_eq!(count(&summary, "removed_sent"), 0, "{summary}");
    assert!(
        summary["removals_held_back"]
            .as_str()
            .is_some_and(|why| why.contains("invalid")),
        "{summary}"
    );
    assert!(
        text.contains("held back") && text.contains("hint: fix the invalid records"),
        "{text}"
    );

    // Clean again: only u19 goes.
    let file = write(&dir, "customers.csv", &customers(0..19, |_| "free"));
    let (output, summary, _) = sync(&dir, &receiver, &file, EVENTS, &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(deleted(&receiver), ["u19"], "{summary}");

    // An empty export removes nobody.
    let empty = write(&dir, "customers.csv", "user_id,email,plan\n");
    let (output, summary, _) = sync(&dir, &receiver, &empty, EVENTS, &[]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(deleted(&receiver), ["u19"], "{summary}");
    assert!(stderr(&output).contains("the source had no records"));

    // Most customers gone at once: held back, unless allowed.
    let file = write(&dir, "customers.csv", &customers(0..5, |_| "free"));
    let (output, summary, _) = sync(&dir, &receiver, &file, EVENTS, &[]).await;
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert_eq!(deleted(&receiver), ["u19"], "{summary}");
    assert!(
        text.contains("would remove 14 of the 19 customers")
            && text.contains("--allow-mass-removal"),
        "{text}"
    );
    let (output, summary, _) =
        sync(&dir, &receiver, &file, EVENTS, &["--allow-mass-removal"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(count(&summary, "removed_sent"), 14, "{summary}");
    assert_eq!(deleted(&receiver).len(), 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_event_left_in_flight_goes_once_even_if_the_customer_changed_before_the_rerun() {
    const ROWS: usize = 1_000;
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "customers.csv", &customers(0..ROWS, |_| "free"));
    let mapping = write(&dir, "mapping.toml", EVENTS);
    let receiver = receiver(FaultPlan::none().with_latency(Duration::from_millis(100))).await;
    let args = killable_sync(&file, &mapping);
    kill_sync_when(&dir, &receiver, &args, |r| {
        r.store().stats().accepted >= 200
    })
    .await;

    // Every customer upgrades before the rerun.
    receiver.set_faults(FaultPlan::none());
    let file = write(&dir, "customers.csv", &customers(0..ROWS, |_| "pro"));
    let (output, summary, _) = sync(&dir, &receiver, &file, EVENTS, &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(count(&summary, "superseded") > 0, "{summary}");

    let mut created: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut last_plan: BTreeMap<String, Value> = BTreeMap::new();
    // The tracks Segment keeps (first arrival of each messageId), applied
    // in order, tell every customer's final traits.
    // (In `timestamp` order, as Segment orders events: the resent `added`
    // event may land after the `changed` one when two requests are in flight.)
    let mut told: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut tracks: Vec<Value> = receiver
        .store()
        .events()
        .into_iter()
        .filter(|e| {
            e["type"] == "track" && seen.insert(e["messageId"].as_str().unwrap().to_owned())
        })
        .collect();
    tracks.sort_by(|a, b| a["timestamp"].as_str().cmp(&b["timestamp"].as_str()));
    for e in &tracks {
        let traits = told
            .entry(e["userId"].as_str().unwrap().to_owned())
            .or_default();
        for (name, value) in e["properties"].as_object().unwrap() {
            traits.insert(name.clone(), value.clone());
        }
    }
    for e in receiver.store().events() {
        let user = e["userId"].as_str().unwrap().to_owned();
        if e["event"] == "Customer Created" {
            created
                .entry(user)
                .or_default()
                .insert(e["messageId"].as_str().unwrap().to_owned());
        } else if e["type"] == "identify" {
            last_plan.insert(user, e["traits"]["plan"].clone());
        }
    }
    assert_eq!(created.len(), ROWS, "every customer was added");
    let twice: Vec<_> = created.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(twice.is_empty(), "added under two messageIds: {twice:?}");
    assert!(
        last_plan.values().all(|plan| plan == "pro"),
        "{last_plan:?}"
    );
    assert_eq!(told.len(), ROWS);
    for (user, traits) in &told {
        assert_eq!(
            Value::Object(traits.clone()),
            json!({"email": format!("{user}@example.com"), "plan": "pro"}),
            "{user}"
        );
    }
}
