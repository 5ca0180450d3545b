//! The relay end to end: PostgreSQL, relay processes, the local receiver.
//!
//! 1. **Drain**: commits N events (default 1,000,000; `RELAY_BENCH_EVENTS`)
//!    through `segment.identify`, then starts 2 relay processes
//!    (`RELAY_BENCH_PROCESSES`) with `until_empty` and times them until the
//!    outbox is empty. Reports events/s and each process's peak RSS.
//!    Targets: >= 50,000 events/s, < 64 MB per process.
//! 2. **Latency**: with one relay process running, commits 1,000 events/s
//!    (one transaction each, 32 connections) for `RELAY_BENCH_LATENCY_SECS`
//!    (default 10) and reports commit-to-send latency: from `COMMIT`
//!    returning to the relay's request leaving (its `sentAt`, millisecond
//!    resolution; the loopback hop to the receiver is well under 1 ms).
//!    Twice: with `NOTIFY` waking the relay (the default, relay poll 1 s),
//!    and with the producer's `SET segment.notify = off` (relay poll 20 ms),
//!    since notifying commits serialise on one lock through their WAL flush.
//!    Targets: p50 < 50 ms, p99 < 250 ms.
//!
//! The relays are this binary re-executed (`RELAY_BENCH_CHILD`), running the
//! library's `Relay` as `segment-sync relay run` does. Figures are printed,
//! never asserted (DESIGN.md, "Performance: how it is judged"); delivery is
//! checked, since a fast run that loses events means nothing.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use segment_client::HttpClient;
use segment_outbox::{Relay, Schema, connect, init};
use segment_receiver::{Receiver, ReceiverConfig, Record};

const SERVER: &str = "postgres://postgres@127.0.0.1:5432";
const CHILD: &str = "RELAY_BENCH_CHILD";
const WORKERS: usize = 2;
const BATCH: usize = 2500;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    // `cargo bench` passes --bench; `cargo test --benches` does not, and a
    // test run must not start a million-event benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        println!("relay benchmark: run it with `cargo bench -p segment-outbox --bench relay`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(parent());
}

/// A relay process: `RELAY_BENCH_CHILD=<database url> <receiver url> <until_empty|run> <poll ms>`.
fn child(spec: &str) {
    let mut parts = spec.split(' ');
    let (url, host, until_empty, poll_ms) = (
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
        parts.next() == Some("until_empty"),
        parts.next().unwrap().parse().unwrap(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(async {
        let stop = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            term.recv().await;
        };
        Relay::new(url, move || {
            HttpClient::builder("bench-write-key").host(host.clone())
        })
        .workers(env_or("RELAY_BENCH_WORKERS", WORKERS))
        .batch_size(env_or("RELAY_BENCH_BATCH", BATCH))
        .poll_interval(Duration::from_millis(poll_ms))
        .until_empty(until_empty)
        .run(stop)
        .await
        .unwrap()
    });
    println!("{} {} {}", report.delivered, peak_rss_kb(), cpu_ms());
}

/// This process's user + system CPU time in milliseconds.
fn cpu_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ")".
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 after ")".
    (ticks(11) + ticks(12)) * 10
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn spawn_relay(url: &str, host: &str, until_empty: bool, poll_ms: u64) -> Child {
    let mode = if until_empty { "until_empty" } else { "run" };
    Command::new(std::env::current_exe().unwrap())
        .env(CHILD, format!("{url} {host} {mode} {poll_ms}"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `(delivered, peak RSS in kB, CPU ms)` printed by a relay child.
fn finish(child: Child) -> (u64, u64, u64) {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "a relay process failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace().map(|w| w.parse::<u64>().unwrap());
    (
        words.next().unwrap(),
        words.next().unwrap(),
        words.next().unwrap(),
    )
}

async fn parent() {
    let events: i64 = env_or("RELAY_BENCH_EVENTS", 1_000_000);
    let processes: usize = env_or("RELAY_BENCH_PROCESSES", 2);
    let latency_secs: u64 = env_or("RELAY_BENCH_LATENCY_SECS", 10);
    let name = format!("outbox_bench_{}", std::process::id());
    let admin = connect(&format!("{SERVER}/postgres")).await.unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let url = format!("{SERVER}/{name}");
    let mut db = connect(&url).await.unwrap();
    init(&mut db, &Schema::default()).await.unwrap();
    let receiver = Receiver::start(ReceiverConfig::new().record(Record::CountsOnly))
        .await
        .unwrap();
    let host = receiver.url();
    println!(
        "load average at start: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "relay benchmark: {events} events, {processes} relay processes x {} workers, batch {}; shared 2-core machine",
        env_or("RELAY_BENCH_WORKERS", WORKERS),
        env_or("RELAY_BENCH_BATCH", BATCH)
    );

    // Commit the events: 50,000 per transaction, from two connections.
    let started = Instant::now();
    let chunk = 50_000_i64;
    let mut inserts = Vec::new();
    for lane in 0..2_i64 {
        let url = url.clone();
        inserts.push(tokio::spawn(async move {
            let db = connect(&url).await.unwrap();
            let mut from = 1 + lane * chunk;
            while from <= events {
                let to = (from + chunk - 1).min(events);
                db.execute(
                    "SELECT count(segment.identify('user-' || n,
                        jsonb_build_object('email', 'user' || n || '@example.com',
                                           'firstName', 'Ada', 'plan', 'pro', 'seats', n % 50)))
                     FROM generate_series($1::bigint, $2::bigint) AS n",
                    &[&from, &to],
                )
                .await
                .unwrap();
                from += 2 * chunk;
            }
        }));
    }
    for insert in inserts {
        insert.await.unwrap();
    }
    let insert_secs = started.elapsed().as_secs_f64();
    println!(
        "insert: {events} events committed in {insert_secs:.1} s ({:.0} events/s, via segment.identify)",
        events as f64 / insert_secs
    );

    // Drain.
    let started = Instant::now();
    let children: Vec<Child> = (0..processes)
        .map(|_| spawn_relay(&url, &host, true, 200))
        .collect();
    let results: Vec<(u64, u64, u64)> =
        tokio::task::spawn_blocking(move || children.into_iter().map(finish).collect())
            .await
            .unwrap();
    let drain_secs = started.elapsed().as_secs_f64();
    let delivered: u64 = results.iter().map(|r| r.0).sum();
    let stats = receiver.store().stats();
    println!(
        "drain: {delivered} delivered in {drain_secs:.1} s = {:.0} events/s (target >= 50,000); receiver: {} accepted, {} unique, {} requests",
        delivered as f64 / drain_secs,
        stats.accepted,
        stats.unique_message_ids,
        stats.requests
    );
    for (i, (n, kb, cpu)) in results.iter().enumerate() {
        println!(
            "  relay process {i}: {n} delivered, {:.1} s CPU, peak RSS {:.1} MB (target < 64)",
            *cpu as f64 / 1000.0,
            *kb as f64 / 1024.0
        );
    }
    assert_eq!(
        stats.unique_message_ids, events as u64,
        "every event delivered"
    );
    let left: i64 = db
        .query_one("SELECT count(*) FROM segment.outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);

    // With NOTIFY (the default) the relay sleeps until woken; without it
    // (SET segment.notify = off in the producer) it polls every 20 ms.
    latency(&url, latency_secs, true).await;
    latency(&url, latency_secs, false).await;

    println!(
        "load average at end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    drop(db);
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
}

async fn latency(url: &str, secs: u64, notify: bool) {
    // A receiver that keeps each request's messageIds and sentAt.
    let receiver_full = Receiver::start(ReceiverConfig::new()).await.unwrap();
    let poll_ms = if notify { 1000 } else { 20 };
    let relay = spawn_relay(url, &receiver_full.url(), false, poll_ms);
    // Let the relay connect and LISTEN before the clock starts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rate = 1000_u64;
    let total = rate * secs;
    // One transaction per event; many connections, so commits are not
    // serialised behind each other's WAL flush.
    let lanes = 32_u64;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for lane in 0..lanes {
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let db = connect(&url).await.unwrap();
            if !notify {
                db.batch_execute("SET segment.notify = off").await.unwrap();
            }
            let statement = db
                .prepare("SELECT segment.identify($1, '{\"plan\": \"pro\"}'::jsonb)")
                .await
                .unwrap();
            let mut committed = Vec::new();
            let mut i = lane;
            while i < total {
                tokio::time::sleep_until(start + Duration::from_micros(i * 1_000_000 / rate)).await;
                let row = db
                    .query_one(&statement, &[&format!("steady-{notify}-{i}")])
                    .await
                    .unwrap();
                committed.push((row.get::<_, String>(0), SystemTime::now()));
                i += lanes;
            }
            committed
        }));
    }
    let mut committed: HashMap<String, SystemTime> = HashMap::new();
    for task in tasks {
        committed.extend(task.await.unwrap());
    }
    let produced_secs = start.elapsed().as_secs_f64();
    let offered = total as f64 / produced_secs;
    let store = receiver_full.store().clone();
    let give_up = Instant::now() + Duration::from_secs(120);
    while store.stats().unique_message_ids < total && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SIGTERM: the relay stops cleanly.
    let pid = relay.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = tokio::task::spawn_blocking(move || finish(relay)).await;
    let mut latencies: Vec<f64> = Vec::with_capacity(committed.len());
    for request in store.requests() {
        let Some(sent_at) = request
            .sent_at
            .as_deref()
            .and_then(|s| s.parse::<DateTime<Utc>>().ok())
        else {
            continue;
        };
        let sent_at = SystemTime::from(sent_at);
        for id in &request.message_ids {
            if let Some(at) = committed.get(id) {
                let ms = match sent_at.duration_since(*at) {
                    Ok(d) => d.as_secs_f64() * 1000.0,
                    Err(_) => 0.0, // sent within the millisecond COMMIT returned
                };
                latencies.push(ms);
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "latency ({}): {} events committed at {offered:.0}/s over {produced_secs:.1} s (aimed at 1,000/s for {secs} s); commit-to-send p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (targets p50 < 50, p99 < 250)",
        if notify {
            "NOTIFY, poll 1 s"
        } else {
            "notify off, poll 20 ms"
        },
        latencies.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    assert_eq!(
        latencies.len() as u64,
        total,
        "every steady event delivered"
    );
    receiver_full.shutdown().await;
}
