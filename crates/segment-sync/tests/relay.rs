//! `segment-sync relay ...` as a real process against a real PostgreSQL and
//! the real receiver: several relays with one killed by SIGKILL, SIGTERM
//! giving leases back, status and retry-dead, metrics.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{BIN, KEY, receiver};
use segment_receiver::{FaultPlan, Receiver};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_postgres::Client;

const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// A database for one test, with the outbox installed by `relay init`;
/// dropped with the value.
struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    async fn new() -> TestDb {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "relay_cli_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let admin = segment_outbox::connect(&format!("{SERVER}/postgres"))
            .await
            .expect("PostgreSQL on 127.0.0.1:5432 (user postgres, trust): run .ci/run or start it");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let db = TestDb {
            url: format!("{SERVER}/{name}"),
            name,
        };
        for _ in 0..2 {
            // Twice: init is idempotent.
            let out = relay(None, &["init", "--database", &db.url])
                .output()
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        db
    }

    async fn client(&self) -> Client {
        segment_outbox::connect(&self.url).await.unwrap()
    }

    async fn status(&self) -> segment_outbox::Status {
        segment_outbox::status(&self.client().await, &segment_outbox::Schema::default(), 50)
            .await
            .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside a runtime: drop the database from a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(admin) = segment_outbox::connect(&format!("{SERVER}/postgres")).await {
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// `segment-sync relay ARGS`, sending to `receiver` when given.
fn relay(receiver: Option<&Receiver>, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("relay")
        .args(args)
        .env_remove("SEGMENT_WRITE_KEY")
        .env_remove("SEGMENT_HOST")
        .env_remove("SEGMENT_REGION")
        .env_remove("SEGMENT_OUTBOX_DATABASE")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(receiver) = receiver {
        cmd.env("SEGMENT_WRITE_KEY", KEY)
            .env("SEGMENT_HOST", receiver.url());
    }
    cmd
}

/// Inserts `versions` events for each of `customers`, version-major, and
/// returns each event's messageId by (customer, version).
async fn insert(db: &TestDb, customers: i32, versions: i32) -> HashMap<(String, i64), String> {
    let client = db.client().await;
    let mut ids = HashMap::new();
    for version in 0..versions {
        let rows = client
            .query(
                "SELECT 'c' || n, segment.identify('c' || n, jsonb_build_object('version', $1::int))
                 FROM generate_series(1, $2::int) AS n",
                &[&version, &customers],
            )
            .await
            .unwrap();
        for row in rows {
            ids.insert((row.get(0), i64::from(version)), row.get(1));
        }
    }
    ids
}

/// Polls (the database or the receiver, never a fixed sleep) until `ready`.
async fn wait_until(what: &str, mut ready: impl AsyncFnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    while !ready().await {
        assert!(
            tokio::time::Instant::now() < give_up,
            "gave up waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn exit_of(child: Child) -> std::process::Output {
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the relay exits")
        .unwrap()
}

async fn relays_with_one_killed(processes: usize) {
    let db = TestDb::new().await;
    // Slow answers keep batches in flight, so the kill lands mid-delivery.
    let receiver = receiver(FaultPlan::none().with_latency(Duration::from_millis(15))).await;
    let (customers, versions) = (150, 4);
    let expected = insert(&db, customers, versions).await;
    let args = [
        "run",
        "--database",
        &db.url,
        "--until-empty",
        "--workers",
        "2",
        "--batch-size",
        "15",
        "--lease",
        "2",
        "--poll-ms",
        "50",
    ];
    let mut children: Vec<Child> = (0..processes)
        .map(|_| {
            relay(Some(&receiver), &args)
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let store = receiver.store().clone();
    wait_until("the relays are delivering", async || {
        store.stats().requests >= 6
    })
    .await;
    let mut victim = children.remove(0);
    victim.start_kill().unwrap(); // SIGKILL
    let _ = victim.wait().await;
    for child in children {
        let out = exit_of(child).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let status = db.status().await;
    assert_eq!((status.pending, status.leased, status.dead), (0, 0, 0));

    // Every event arrived, with the messageId fixed at insert; a repeat can
    // only be a resend of a batch the killed relay had in flight.
    let events = receiver.store().events();
    let mut seen: HashSet<&str> = HashSet::new();
    for event in &events {
        let key = (
            event["userId"].as_str().unwrap().to_owned(),
            event["traits"]["version"].as_i64().unwrap(),
        );
        assert_eq!(
            expected.get(&key).map(String::as_str),
            event["messageId"].as_str(),
            "{key:?}"
        );
        seen.insert(event["messageId"].as_str().unwrap());
    }
    assert_eq!(seen.len(), expected.len(), "every event delivered");
    assert!(
        receiver.store().stats().duplicates <= 2 * 15,
        "repeats are bounded by the killed relay's batches in flight: {:?}",
        receiver.store().stats()
    );
    // And each customer's versions arrived in order across the processes.
    for n in 1..=customers {
        let mut got: Vec<i64> = receiver
            .store()
            .events_for_user(&format!("c{n}"))
            .iter()
            .map(|e| e["traits"]["version"].as_i64().unwrap())
            .collect();
        got.dedup();
        assert_eq!(got, (0..i64::from(versions)).collect::<Vec<_>>(), "c{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_one_killed_deliver_everything_once_each_in_order() {
    relays_with_one_killed(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_one_killed_deliver_everything_once_each_in_order() {
    relays_with_one_killed(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_back_the_leases_of_unsent_rows() {
    let db = TestDb::new().await;
    let receiver = receiver(FaultPlan::hang(1000)).await;
    insert(&db, 40, 1).await;
    let child = relay(
        Some(&receiver),
        &[
            "run",
            "--database",
            &db.url,
            "--workers",
            "2",
            "--batch-size",
            "10",
            "--shutdown-timeout",
            "0.2",
        ],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_until("both workers hold leases", async || {
        db.status().await.leased == 20
    })
    .await;
    let pid = i32::try_from(child.id().unwrap()).unwrap();
    // SAFETY: sends SIGTERM to our own child process.
    #[expect(unsafe_code, reason = "sending a signal to the child under test")]
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let out = exit_of(child).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("0 delivered") && stderr.contains("20 leases given back"),
        "{stderr}"
    );
    let status = db.status().await;
    assert_eq!((status.pending, status.leased), (40, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_retry_dead_from_the_cli() {
    let db = TestDb::new().await;
    let receiver = receiver(FaultPlan::user_id("c2", 400, None)).await;
    insert(&db, 3, 1).await;
    let run = [
        "run",
        "--database",
        &db.url,
        "--until-empty",
        "--poll-ms",
        "20",
    ];
    let out = relay(Some(&receiver), &run).output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = relay(None, &["status", "--database", &db.url, "--json"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (status["pending"].as_u64(), status["dead"].as_u64()),
        (Some(0), Some(1))
    );
    let dead = &status["dead_letters"][0];
    assert_eq!(dead["user_id"], "c2");
    assert!(
        dead["last_error"].as_str().unwrap().contains("400"),
        "{dead}"
    );

    let out = relay(None, &["status", "--database", &db.url])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("dead       1") && text.contains("userId c2"),
        "{text}"
    );

    let id = dead["id"].as_i64().unwrap().to_string();
    let out = relay(None, &["retry-dead", "--database", &db.url, "--id", &id])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1 dead letters are pending again"
    );
    let again = relay(None, &["retry-dead", "--database", &db.url, "--id", &id])
        .output()
        .await
        .unwrap();
    assert_eq!(
        again.status.code(),
        Some(1),
        "an id that is no dead letter is reported"
    );

    receiver.set_faults(FaultPlan::none());
    let out = relay(Some(&receiver), &run).output().await.unwrap();
    assert!(out.status.success());
    let status = db.status().await;
    assert_eq!((status.pending, status.dead), (0, 0));
    assert_eq!(receiver.store().events_for_user("c2").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_are_served() {
    let db = TestDb::new().await;
    let receiver = receiver(FaultPlan::none()).await;
    insert(&db, 25, 1).await;
    let mut child = relay(
        Some(&receiver),
        &[
            "run",
            "--database",
            &db.url,
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines
        .next_line()
        .await
        .unwrap()
        .expect("the metrics address line");
    let url = line
        .split_whitespace()
        .map(|w| w.trim_end_matches(','))
        .find(|w| w.ends_with("/metrics"))
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    let store = receiver.store().clone();
    wait_until("everything is delivered", async || {
        store.stats().accepted == 25
    })
    .await;
    let http = reqwest::Client::new();
    let mut text = String::new();
    wait_until("the counter is published", async || {
        text = http.get(&url).send().await.unwrap().text().await.unwrap();
        text.contains("segment_outbox_delivered_total 25")
    })
    .await;
    assert!(
        text.contains("segment_outbox_batch_seconds_bucket"),
        "{text}"
    );
    let health = http
        .get(url.replace("/metrics", "/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_password_is_never_printed() {
    let out = relay(
        None,
        &[
            "status",
            "--database",
            "postgres://postgres:hunter2-secret@127.0.0.1:1/nowhere",
        ],
    )
    .output()
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot connect") && stderr.contains("hint:"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
