//! The crash-torture test: many cycles of a changed source, a sync against a
//! faulty receiver, and a SIGKILL (sometimes a SIGINT) at a random moment;
//! then one clean run. Afterwards the receiver's record of accepted events
//! must show exact recovery:
//!
//! 1. every customer's last accepted traits equal the final source;
//! 2. no customer was accepted under two messageIds for the same payload;
//! 3. no superseded payload was accepted after a newer one;
//! 4. the state matches the receiver customer by customer, and every run
//!    that wrote a report has counts that add up.
//!
//! With the mapping's `[events]` (`..._with_events`), also: every current
//! customer's accepted tracks, in `timestamp` order, start with its one
//! `added` event and, applied as patches in that order, give its final
//! traits; every gone customer Segment heard of ends with exactly one
//! `removed` event.
//!
//! CI runs a short form (`TORTURE_CYCLES`, default 30). The soak:
//! `TORTURE_CYCLES=300 TORTURE_SEED=7 cargo test -p segment-sync --release --test torture -- --nocapture`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::*;
use customer_sync::state::StateStore;
use segment_receiver::{Fault, FaultPlan, Receiver};
use serde_json::Value;
use tempfile::TempDir;

/// The source as the test knows it: id -> (email, version). Every edit
/// takes a fresh version, so a payload is never sent for two source states.
struct Model {
    customers: BTreeMap<u32, (String, u64)>,
    next_id: u32,
    next_version: u64,
    /// Identities written twice in this cycle's file (an earlier, stale row first).
    repeated: Vec<u32>,
}

impl Model {
    fn new(n: u32) -> Self {
        let mut model = Model {
            customers: BTreeMap::new(),
            next_id: 0,
            next_version: 1,
            repeated: Vec::new(),
        };
        for _ in 0..n {
            model.add();
        }
        model
    }

    fn add(&mut self) {
        let id = self.next_id;
        self.next_id += 1;
        let version = self.bump();
        self.customers
            .insert(id, (format!("c{id}@example.com"), version));
    }

    fn bump(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }

    fn pick(&self, rng: &mut fastrand::Rng) -> Option<u32> {
        let ids: Vec<u32> = self.customers.keys().copied().collect();
        (!ids.is_empty()).then(|| ids[rng.usize(..ids.len())])
    }

    /// Edits, adds, removes and repeats a few customers.
    fn mutate(&mut self, rng: &mut fastrand::Rng) {
        for _ in 0..rng.usize(0..40) {
            if let Some(id) = self.pick(rng) {
                let version = self.bump();
                self.customers.get_mut(&id).unwrap().1 = version;
            }
        }
        for _ in 0..rng.usize(0..10) {
            self.add();
        }
        for _ in 0..rng.usize(0..6) {
            if let Some(id) = self.pick(rng) {
                self.customers.remove(&id);
            }
        }
        self.repeated = (0..rng.usize(0..4))
            .filter_map(|_| self.pick(rng))
            .collect();
        self.repeated.sort_unstable();
        self.repeated.dedup();
    }

    /// The CSV: a stale row for each repeated identity first (the last row wins).
    fn csv(&self) -> String {
        // Multi-byte names, so a torn outbox line can end inside a character.
        let mut csv = String::from("user_id,email,plan,first_name\n");
        for id in &self.repeated {
            csv.push_str(&format!("c{id},stale@example.com,v0,Zoë\n"));
        }
        for (id, (email, version)) in &self.customers {
            csv.push_str(&format!("c{id},{email},v{version},Zoë {id}\n"));
        }
        csv
    }
}

fn faults(rng: &mut fastrand::Rng) -> FaultPlan {
    let mut plan = FaultPlan::fraction(0.15, 503, Some(rng.u64(..)))
        .with_latency(Duration::from_millis(rng.u64(0..25)));
    if rng.u8(0..4) == 0 {
        plan = plan.with_rule(Fault::FirstN {
            n: 1,
            status: 429,
            retry_after: Some("1".into()),
        });
    }
    plan
}

fn check_adds_up(lines: &[Value], what: &str) {
    let s = summary(lines);
    let c = |key: &str| s[key].as_u64().unwrap_or_else(|| panic!("{key} in {s}"));
    assert_eq!(
        c("read"),
        c("valid") + c("invalid") + c("skipped") + c("given_up"),
        "{what}: {s}"
    );
    assert_eq!(
        c("valid") + c("recovered_not_in_source") + c("removed_sent"),
        c("delivered") + c("failed") + c("pending"),
        "{what}: {s}"
    );
    let pending_lines = lines.iter().filter(|l| l["type"] == "pending").count() as u64;
    assert_eq!(pending_lines, c("pending"), "{what}: {s}");
}

const SYNC_ARGS: &[&str] = &[
    "--name",
    "t",
    "--batch-size",
    "20",
    "--concurrency",
    "2",
    "--max-attempts",
    "3",
    "--backoff-ms",
    "5",
    "--shutdown-timeout",
    "2",
    "--quiet",
];

const EVENTS: &str = "[events]\nadded = \"Customer Created\"\nchanged = \"Customer Updated\"\nremoved = \"Customer Deleted\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_interrupted_at_random_a_final_run_leaves_segment_exact() {
    torture(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_interrupted_at_random_a_final_run_leaves_segment_exact_with_events() {
    torture(true).await;
}

async fn torture(events: bool) {
    let cycles: usize = std::env::var("TORTURE_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("TORTURE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("torture: {cycles} cycles, TORTURE_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("customers.csv");
    let report = dir.path().join("report.jsonl");
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(&mapping, EVENTS).unwrap();
    let mut sync_args: Vec<&str> = SYNC_ARGS.to_vec();
    if events {
        sync_args.extend_from_slice(&["--mapping", path_str(&mapping)]);
    }
    let mut model = Model::new(300);

    for cycle in 0..cycles {
        model.mutate(&mut rng);
        std::fs::write(&file, model.csv()).unwrap();
        receiver.set_faults(faults(&mut rng));
        let _ = std::fs::remove_file(&report);
        let mut args = vec!["sync", path_str(&file), "--report", path_str(&report)];
        args.extend_from_slice(&sync_args);
        let mut child = command(&dir, Some(&receiver), &args).spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(rng.u64(5..400))).await;
        let interrupt = rng.u8(0..5) == 0;
        if interrupt {
            let pid = i32::try_from(child.id().unwrap_or(0)).unwrap();
            if pid > 0 {
                // SAFETY: sends a signal to our own child process.
                #[expect(unsafe_code, reason = "libc::kill on our own child")]
                unsafe {
                    libc::kill(pid, libc::SIGINT)
                };
            }
        } else {
            let _ = child.start_kill();
        }
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("the run ends after the signal")
            .unwrap();
        // Now and then, a kill inside an outbox write: the log ends with a
        // line cut short (its records were never queued).
        if !interrupt && rng.u8(0..4) == 0 {
            tear_the_outbox(&dir.path().join(".segment-sync/t.outbox"), &mut rng);
        }
        // A run that wrote its summary (it finished, or was interrupted) adds
        // up. A kill can cut the report's last line short: such a run wrote
        // no summary.
        if let Ok(text) = std::fs::read_to_string(&report) {
            let lines: Vec<Value> = text
                .lines()
                .map_while(|line| serde_json::from_str(line).ok())
                .collect();
            if lines.last().is_some_and(|l| l["type"] == "summary") {
                check_adds_up(&lines, &format!("cycle {cycle} ({status})"));
            }
        }
    }

    receiver.set_faults(FaultPlan::none());
    let _ = std::fs::remove_file(&report);
    let mut args = vec!["sync", path_str(&file), "--report", path_str(&report)];
    args.extend_from_slice(&sync_args);
    let output = run(&dir, Some(&receiver), &args).await;
    assert!(output.status.success(), "final run: {}", stderr(&output));
    check_adds_up(&report_lines(&report), "the final run");

    check_against_receiver(&receiver, &model, dir.path());
    if events {
        check_events(&receiver, &model);
    }
}

/// What Segment keeps: each messageId's first arrival, in arrival order.
fn first_arrivals(receiver: &Receiver) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    receiver
        .store()
        .events()
        .into_iter()
        .filter(|e| seen.insert(e["messageId"].as_str().unwrap().to_owned()))
        .collect()
}

fn check_events(receiver: &Receiver, model: &Model) {
    let mut tracks: HashMap<String, Vec<Value>> = HashMap::new();
    let mut heard_of = std::collections::HashSet::new();
    for event in first_arrivals(receiver) {
        let user = event["userId"].as_str().unwrap().to_owned();
        heard_of.insert(user.clone());
        if event["type"] == "track" {
            tracks.entry(user).or_default().push(event);
        }
    }
    // A customer's tracks are told in `timestamp` order, as Segment orders
    // events: an `added` event resent beside the record that superseded it
    // can land in a later request than that record's `changed` event when
    // two requests are in flight (identifies are checked in arrival order
    // above).
    for list in tracks.values_mut() {
        list.sort_by(|a, b| a["timestamp"].as_str().cmp(&b["timestamp"].as_str()));
    }
    let names = |list: &[Value]| -> Vec<String> {
        list.iter()
            .map(|e| e["event"].as_str().unwrap().to_owned())
            .collect()
    };
    for id in 0..model.next_id {
        let user = format!("c{id}");
        let list = tracks.get(&user).map(Vec::as_slice).unwrap_or_default();
        match model.customers.get(&id) {
            Some((email, version)) => {
                assert_eq!(
                    list.first().map(|e| &e["event"]),
                    Some(&Value::from("Customer Created")),
                    "{user}: {:?}",
                    names(list)
                );
                assert!(
                    list.iter().all(|e| e["event"] != "Customer Deleted"),
                    "{user} is not gone: {:?}",
                    names(list)
                );
                let added = list
                    .iter()
                    .filter(|e| e["event"] == "Customer Created")
                    .count();
                assert_eq!(added, 1, "{user} added once: {:?}", names(list));
                // The tracks, applied in order, tell Segment the final traits.
                let mut traits = serde_json::Map::new();
                for event in list {
                    for (name, value) in event["properties"].as_object().unwrap() {
                        match value {
                            Value::Null => traits.remove(name),
                            value => traits.insert(name.clone(), value.clone()),
                        };
                    }
                }
                assert_eq!(
                    Value::Object(traits),
                    serde_json::json!({
                        "email": email,
                        "plan": format!("v{version}"),
                        "firstName": format!("Zoë {id}"),
                    }),
                    "{user}: {list:?}"
                );
            }
            None if heard_of.contains(&user) => {
                let deleted = list
                    .iter()
                    .filter(|e| e["event"] == "Customer Deleted")
                    .count();
                assert_eq!(deleted, 1, "{user} is gone: {:?}", names(list));
                assert_eq!(
                    list.last().map(|e| &e["event"]),
                    Some(&Value::from("Customer Deleted")),
                    "{user}: {:?}",
                    names(list)
                );
            }
            None => {}
        }
    }
}

/// Appends the start of a copy of the log's last line, cut at a random byte
/// (possibly inside a multi-byte character), as a kill mid-`write` leaves it.
fn tear_the_outbox(path: &std::path::Path, rng: &mut fastrand::Rng) {
    use std::io::Write;
    let Ok(log) = std::fs::read(path) else {
        return;
    };
    let Some(last) = log
        .strip_suffix(b"\n")
        .and_then(|l| l.rsplit(|&b| b == b'\n').next())
        .filter(|l| l.len() > 2)
    else {
        return;
    };
    let cut = rng.usize(1..last.len());
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(&last[..cut]).unwrap();
}

fn check_against_receiver(receiver: &Receiver, model: &Model, dir: &std::path::Path) {
    let mut by_user: HashMap<String, Vec<(String, String, u64)>> = HashMap::new();
    for event in first_arrivals(receiver) {
        if event["type"] != "identify" {
            continue;
        }
        let message_id = event["messageId"].as_str().unwrap().to_owned();
        let user = event["userId"].as_str().unwrap().to_owned();
        let email = event["traits"]["email"].as_str().unwrap().to_owned();
        let version: u64 = event["traits"]["plan"].as_str().unwrap()[1..]
            .parse()
            .unwrap();
        by_user
            .entry(user)
            .or_default()
            .push((message_id, email, version));
    }
    let mut store = StateStore::open_existing(&dir.join(".segment-sync"), "t").unwrap();
    let (_, _, pending, failed) = store.counts().unwrap();
    assert_eq!(
        (pending, failed),
        (0, 0),
        "the final run left nothing behind"
    );
    for (id, (email, version)) in &model.customers {
        let user = format!("c{id}");
        let events = by_user
            .get(&user)
            .unwrap_or_else(|| panic!("{user} never arrived"));
        // 1. The last accepted traits are the final source's.
        let (last_id, last_email, last_version) = events.last().unwrap();
        assert_eq!(
            (last_email, last_version),
            (email, version),
            "{user}: {events:?}"
        );
        // 2. One messageId per payload (every version is sent for one source state).
        let mut versions: Vec<u64> = events.iter().map(|e| e.2).collect();
        let count = versions.len();
        versions.dedup();
        assert_eq!(
            versions.len(),
            count,
            "{user} accepted under two messageIds for one payload: {events:?}"
        );
        // 3. Versions only go forward: nothing superseded after something newer.
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "{user}: an older payload after a newer one: {events:?}"
        );
        // 4. The state agrees with the receiver.
        let accepted = store.accepted_message_id(&format!("u:{user}")).unwrap();
        assert_eq!(accepted.as_ref(), Some(last_id), "{user}: {events:?}");
    }
}
