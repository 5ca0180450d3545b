//! Throughput of `HttpClient` against a local receiver, next to the floor.
//!
//! Pushes N synthetic identify events (default 1,000,000; `-- --events N`)
//! through the client into a `segment_receiver` running in a child process, so
//! that the receiver's CPU and memory are not counted as the client's. For the
//! client phase it reports wall time, events/s, process CPU seconds and peak
//! RSS. The floor is the CPU cost of the work no client can avoid: generating
//! the same events, serialising them to the same wire JSON, framing batches of
//! the same size and gzipping them at the client's default level, on one
//! thread, without a network. Targets: client CPU within 1.3x of the floor,
//! peak RSS under 32 MB, every event delivered.
//!
//! Two more cases (`-- --case contract|faulty|volume`, default all):
//! - **contract**: the seed's call pattern, one `send_customer_to_segment`
//!   per customer from 100 concurrent callers on one shared client, 5,000
//!   calls against a receiver answering in 50 ms: wall, p50/p99 latency,
//!   requests made (group commit: targets < 5 s, p50 < 150 ms, p99 < 400 ms,
//!   < 1,000 requests), and one lone caller's latency (one round trip).
//! - **faulty**: 100,000 events with the library's defaults against a
//!   receiver answering 20% of requests 500 and 5% 429, with 50 ms latency
//!   (target: every event delivered, under 15 s).
//!
//! It prints figures instead of asserting on them because timings belong to
//! the machine (DESIGN.md, "Performance: how it is judged"); only delivery is
//! checked, since a fast run that loses events means nothing.

// The allocator the `segment-sync` binary uses; the floor runs under it too.
// Events are allocated by the caller's thread and freed on the client's
// worker, a pattern glibc's malloc handles poorly.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use segment_client::{
    Company, DeliveryReport, HttpClient, IdentifyParams, Identity, LIBRARY_NAME, UserTraits,
};
use segment_receiver::{Receiver, ReceiverConfig, Record, Stats};
use serde::Serialize;

const DEFAULT_EVENTS: u64 = 1_000_000;
/// Makes the re-executed bench binary serve the receiver instead.
const SERVE_RECEIVER: &str = "--serve-receiver";
const WRITE_KEY: &str = "bench-write-key";
/// The client's default gzip level, so the floor compresses the same way.
const GZIP_LEVEL: u32 = 1;
/// The client's default batch size.
const DEFAULT_BATCH_SIZE: usize = 1_000;
/// Long enough that a slow machine still flushes everything.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(600);
/// `USER_HZ`, the unit of the CPU times in `/proc/self/stat` on Linux.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;
const TARGET_RATIO: f64 = 1.3;
const TARGET_PEAK_MB: f64 = 32.0;

/// A client configuration to measure.
struct Setting {
    name: &'static str,
    batch_size: usize,
}

const SETTINGS: [Setting; 2] = [
    Setting {
        name: "default",
        batch_size: DEFAULT_BATCH_SIZE,
    },
    Setting {
        name: "bulk",
        batch_size: 2_500,
    },
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == SERVE_RECEIVER) {
        serve_receiver();
        return;
    }
    let (events, case, tuning) = parse_args(&args);
    let runtime = tokio::runtime::Runtime::new().expect("could not start a tokio runtime");
    let receiver = ReceiverProcess::spawn();
    let http = reqwest::Client::new();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!("machine           {cores} cores, shared with the receiver process");
    if matches!(case.as_str(), "all" | "contract") {
        runtime.block_on(contract_case(&http, &receiver.url));
    }
    if matches!(case.as_str(), "all" | "faulty") {
        runtime.block_on(faulty_case(&http, &receiver.url, tuning));
    }
    if !matches!(case.as_str(), "all" | "volume") {
        return;
    }
    println!("events            {events}");
    // `--batch-size`/`--in-flight` measure one candidate instead of the two settings.
    let tuned = [Setting {
        name: "tuned",
        batch_size: tuning.batch_size.unwrap_or(DEFAULT_BATCH_SIZE),
    }];
    let settings: &[Setting] = if tuning.batch_size.is_some() || tuning.in_flight.is_some() {
        &tuned
    } else {
        &SETTINGS
    };
    for setting in settings {
        runtime.block_on(reset_receiver(&http, &receiver.url));
        let client = measure_client(
            &runtime,
            &receiver.url,
            events,
            setting.batch_size,
            tuning.in_flight,
        );
        let stats = runtime.block_on(receiver_stats(&http, &receiver.url));
        let floor = measure_floor(events, setting.batch_size);
        print_setting(setting, events, &client, &floor, &stats);
        check_delivery(events, &client.report, &stats);
    }
}

// ---- the contract under concurrency, and the faulty profile ----

const CONTRACT_CALLS: usize = 5_000;
const CONTRACT_CALLERS: usize = 100;
const FAULTY_EVENTS: u64 = 100_000;

async fn set_faults(http: &reqwest::Client, url: &str, plan: serde_json::Value) {
    http.post(format!("{url}/_receiver/faults"))
        .body(plan.to_string())
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("could not set the receiver's faults");
}

async fn contract_case(http: &reqwest::Client, url: &str) {
    reset_receiver(http, url).await;
    set_faults(http, url, serde_json::json!({"latency_ms": 50})).await;
    let client = std::sync::Arc::new(
        HttpClient::builder(WRITE_KEY)
            .host(url)
            .build()
            .expect("the bench's client settings are valid"),
    );
    let one = Instant::now();
    send_one(&client, u64::MAX).await;
    let lone = one.elapsed();
    let started = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..CONTRACT_CALLERS {
        let (client, next) = (std::sync::Arc::clone(&client), std::sync::Arc::clone(&next));
        callers.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= CONTRACT_CALLS as u64 {
                    return latencies;
                }
                let call = Instant::now();
                send_one(&client, i).await;
                latencies.push(call.elapsed());
            }
        });
    }
    let mut latencies: Vec<Duration> = callers.join_all().await.concat();
    let wall = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let stats = receiver_stats(http, url).await;
    println!(
        "--- contract ({CONTRACT_CALLERS} concurrent callers, {CONTRACT_CALLS} calls, 50 ms answers)"
    );
    println!(
        "wall              {:.2} s   (target < 5 s)",
        wall.as_secs_f64()
    );
    println!(
        "latency           p50 {} ms   p99 {} ms   (targets < 150, < 400)",
        at(0.5).as_millis(),
        at(0.99).as_millis()
    );
    println!(
        "requests          {}   (target < 1,000; one lone call took {} ms)",
        stats.requests,
        lone.as_millis()
    );
    assert_eq!(
        stats.accepted,
        CONTRACT_CALLS as u64 + 1,
        "every call delivered"
    );
}

async fn send_one(client: &HttpClient, i: u64) {
    let params = synthetic_event(i);
    segment_client::SegmentClient::identify_and_confirm(client, params)
        .await
        .expect("a contract call failed");
}

/// `--batch-size N` / `--in-flight N` for the faulty case: how defaults are compared.
#[derive(Debug, Clone, Copy, Default)]
struct Tuning {
    batch_size: Option<usize>,
    in_flight: Option<usize>,
}

async fn faulty_case(http: &reqwest::Client, url: &str, tuning: Tuning) {
    reset_receiver(http, url).await;
    set_faults(
        http,
        url,
        serde_json::json!({
            "latency_ms": 50,
            "rules": [
                {"kind": "fraction", "fraction": 0.2, "status": 500, "seed": 1},
                {"kind": "fraction", "fraction": 0.0625, "status": 429, "seed": 2},
            ],
        }),
    )
    .await;
    let started = Instant::now();
    let mut builder = HttpClient::builder(WRITE_KEY).host(url);
    if let Some(n) = tuning.batch_size {
        builder = builder.batch_size(n);
    }
    if let Some(n) = tuning.in_flight {
        builder = builder.max_in_flight(n);
    }
    let client = builder
        .build()
        .expect("the bench's client settings are valid");
    for i in 0..FAULTY_EVENTS {
        client
            .identify(synthetic_event(i))
            .await
            .expect("a synthetic event was refused");
    }
    let report = client
        .close_and_flush_with_timeout(FLUSH_TIMEOUT)
        .await
        .expect("the client did not flush");
    let wall = started.elapsed();
    let stats = receiver_stats(http, url).await;
    println!("--- faulty ({tuning:?}, None = library default; 20% 500, 5% 429, 50 ms answers)");
    println!(
        "wall              {:.2} s   (target < 15 s)",
        wall.as_secs_f64()
    );
    println!(
        "requests          {}   by status {:?}",
        stats.requests, stats.responses_by_status
    );
    println!(
        "delivered         {}/{FAULTY_EVENTS} (receiver accepted {} unique, {} duplicates)",
        report.delivered, stats.unique_message_ids, stats.duplicates
    );
    assert!(
        report.is_complete() && report.delivered == FAULTY_EVENTS,
        "the client did not deliver every event: {} delivered, {} failed",
        report.delivered,
        report.failed_count()
    );
}

// ---- the receiver, in a child process ----

/// The receiver child; killed when dropped so no run leaves it behind.
struct ReceiverProcess {
    child: Child,
    url: String,
}

impl ReceiverProcess {
    fn spawn() -> Self {
        let exe = std::env::current_exe().expect("the bench binary could not find its own path");
        let mut child = Command::new(exe)
            .arg(SERVE_RECEIVER)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("could not start the receiver process");
        let stdout = child.stdout.take().expect("the child's stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("could not read the receiver's URL");
        let url = line.trim().to_owned();
        let receiver = Self { child, url };
        assert!(
            receiver.url.starts_with("http://"),
            "the receiver process printed {line:?} instead of its URL"
        );
        receiver
    }
}

impl Drop for ReceiverProcess {
    fn drop(&mut self) {
        // It may already be gone; either way there is nothing left to do.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child's side: serve until the parent closes stdin, exits or kills us.
fn serve_receiver() {
    let runtime = tokio::runtime::Runtime::new().expect("could not start the receiver's runtime");
    let config = ReceiverConfig::new().record(Record::CountsOnly);
    let receiver = runtime
        .block_on(Receiver::start(config))
        .expect("could not start the receiver");
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", receiver.url())
        .and_then(|()| stdout.flush())
        .expect("could not tell the parent the receiver's URL");
    // The server runs on the runtime's worker threads while this one waits.
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    runtime.block_on(receiver.shutdown());
}

async fn reset_receiver(http: &reqwest::Client, url: &str) {
    http.post(format!("{url}/_receiver/reset"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("could not reset the receiver");
}

async fn receiver_stats(http: &reqwest::Client, url: &str) -> Stats {
    let body = http
        .get(format!("{url}/_receiver/stats"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("could not fetch the receiver's stats")
        .text()
        .await
        .expect("could not read the receiver's stats");
    serde_json::from_str(&body).expect("the receiver's stats are not the expected JSON")
}

// ---- the client phase ----

struct ClientRun {
    wall: Duration,
    cpu_seconds: f64,
    peak_rss_kb: u64,
    report: DeliveryReport,
}

fn measure_client(
    runtime: &tokio::runtime::Runtime,
    url: &str,
    events: u64,
    batch_size: usize,
    in_flight: Option<usize>,
) -> ClientRun {
    reset_peak_rss();
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let report = runtime.block_on(push_events(url, events, batch_size, in_flight));
    ClientRun {
        wall: started.elapsed(),
        cpu_seconds: cpu_seconds() - cpu_before,
        peak_rss_kb: status_kb("VmHWM:"),
        report,
    }
}

async fn push_events(
    url: &str,
    events: u64,
    batch_size: usize,
    in_flight: Option<usize>,
) -> DeliveryReport {
    let mut builder = HttpClient::builder(WRITE_KEY)
        .host(url)
        .batch_size(batch_size);
    if let Some(n) = in_flight {
        builder = builder.max_in_flight(n);
    }
    let client = builder
        .build()
        .expect("the bench's client settings are valid");
    for i in 0..events {
        client
            .identify(synthetic_event(i))
            .await
            .expect("a synthetic event was refused");
    }
    client
        .close_and_flush_with_timeout(FLUSH_TIMEOUT)
        .await
        .expect("the client did not flush")
}

// ---- the floor: serialise + frame + gzip, nothing else ----

struct FloorRun {
    cpu_seconds: f64,
    avg_event_bytes: f64,
}

/// The client's wire shape of one identify event.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireIdentify<'a> {
    r#type: &'static str,
    message_id: &'a str,
    timestamp: &'a str,
    user_id: Option<&'a str>,
    traits: &'a UserTraits,
}

fn measure_floor(events: u64, batch_size: usize) -> FloorRun {
    let cpu_before = cpu_seconds();
    let mut batches = FloorBatches::new(batch_size);
    let mut json = Vec::with_capacity(512);
    let mut json_bytes = 0;
    for i in 0..events {
        let params = synthetic_event(i);
        let wire = WireIdentify {
            r#type: "identify",
            message_id: &new_message_id(),
            timestamp: &Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            user_id: params.identity.user_id(),
            traits: &params.traits,
        };
        json.clear();
        serde_json::to_writer(&mut json, &wire).expect("an event serialises");
        json_bytes += json.len();
        batches.push(&json);
    }
    batches.finish();
    FloorRun {
        cpu_seconds: cpu_seconds() - cpu_before,
        avg_event_bytes: json_bytes as f64 / events as f64,
    }
}

/// A random v4 UUID, made the way the client makes its `messageId`s.
fn new_message_id() -> String {
    uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes())
        .into_uuid()
        .to_string()
}

/// Streams events into gzipped `{"batch":[...],"sentAt":..,"context":..}` bodies,
/// reusing one body buffer and one deflate state, as cheaply as it can be done.
struct FloorBatches {
    batch_size: usize,
    in_batch: usize,
    body: Vec<u8>,
    deflate: Compress,
    context: String,
}

impl FloorBatches {
    fn new(batch_size: usize) -> Self {
        let library = serde_json::json!({ "library": {
            "name": LIBRARY_NAME,
            "version": env!("CARGO_PKG_VERSION"),
        }});
        Self {
            batch_size,
            in_batch: 0,
            body: Vec::with_capacity(512 * 1024),
            deflate: Compress::new(Compression::new(GZIP_LEVEL), false),
            context: library.to_string(),
        }
    }

    fn push(&mut self, event: &[u8]) {
        self.body.extend_from_slice(if self.in_batch == 0 {
            br#"{"batch":["#
        } else {
            b","
        });
        self.body.extend_from_slice(event);
        self.in_batch += 1;
        if self.in_batch == self.batch_size {
            self.finish();
        }
    }

    fn finish(&mut self) {
        if self.in_batch == 0 {
            return;
        }
        let sent_at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        write!(
            self.body,
            r#"],"sentAt":"{sent_at}","context":{}}}"#,
            self.context
        )
        .expect("writing to memory");
        std::hint::black_box(self.gzip());
        self.body.clear();
        self.in_batch = 0;
    }

    /// RFC 1952 gzip of the body: header, raw deflate, CRC-32, size.
    fn gzip(&mut self) -> Vec<u8> {
        self.deflate.reset();
        let mut out = Vec::with_capacity(self.body.len() / 3 + 64);
        out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
        while self
            .deflate
            .compress_vec(
                &self.body[self.deflate.total_in() as usize..],
                &mut out,
                FlushCompress::Finish,
            )
            .expect("deflate into memory")
            != Status::StreamEnd
        {
            out.reserve(out.capacity());
        }
        let mut crc = Crc::new();
        crc.update(&self.body);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        out.extend_from_slice(&(self.body.len() as u32).to_le_bytes());
        out
    }
}

// ---- synthetic input ----

const FIRST_NAMES: [&str; 8] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken",
];
const LAST_NAMES: [&str; 8] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
];
const INDUSTRIES: [&str; 4] = ["Software", "Retail", "Logistics", "Healthcare"];
const PLANS: [&str; 3] = ["free", "pro", "enterprise"];
/// 2020-01-01T00:00:00Z.
const FIRST_SIGNUP: i64 = 1_577_836_800;

/// Customer `i`: deterministic, about 400 bytes of JSON once on the wire.
fn synthetic_event(i: u64) -> IdentifyParams {
    let first = FIRST_NAMES[(i % 8) as usize];
    let last = LAST_NAMES[(i / 8 % 8) as usize];
    let company = i % 5_000;
    let mut traits = UserTraits {
        email: Some(format!(
            "{}.{}.{i}@example.com",
            first.to_lowercase(),
            last.to_lowercase()
        )),
        first_name: Some(first.to_owned()),
        last_name: Some(last.to_owned()),
        created_at: DateTime::from_timestamp(FIRST_SIGNUP + i as i64 * 60, 0),
        company: Some(Company {
            name: Some(format!("Company {company}")),
            id: Some(format!("co_{company:05}")),
            industry: Some(INDUSTRIES[(company % 4) as usize].to_owned()),
            employee_count: Some(10 + company * 7 % 990),
            plan: Some(PLANS[(company % 3) as usize].to_owned()),
        }),
        ..UserTraits::default()
    };
    traits
        .custom
        .insert("plan".into(), PLANS[(i % 3) as usize].into());
    traits.custom.insert("loginCount".into(), (i % 250).into());
    traits
        .custom
        .insert("marketingOptIn".into(), (i % 5 < 3).into());
    IdentifyParams::new(Identity::user(format!("cus_{i:07}"))).with_traits(traits)
}

// ---- process accounting, from /proc ----

/// User + system CPU seconds of this process so far, all threads.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("CPU times need Linux /proc");
    // The command name may hold spaces; the fields after its `)` are plain.
    let after_name = stat
        .rsplit_once(')')
        .expect("/proc/self/stat has a command name")
        .1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of proc(5); `fields` starts at 3.
    let ticks: u64 = fields[11..=12]
        .iter()
        .map(|field| field.parse::<u64>().expect("CPU times are whole ticks"))
        .sum();
    ticks as f64 / CLOCK_TICKS_PER_SECOND
}

/// A `kB` figure from `/proc/self/status`, such as `VmHWM:` (peak RSS).
fn status_kb(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("memory figures need /proc");
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .unwrap_or_else(|| panic!("/proc/self/status has no {key} figure"))
}

/// Resets `VmHWM` to the current RSS so each client phase reports its own peak.
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5")
        .expect("could not reset the peak RSS (needs Linux 4.0+)");
}

// ---- output ----

fn print_setting(
    setting: &Setting,
    events: u64,
    client: &ClientRun,
    floor: &FloorRun,
    stats: &Stats,
) {
    let wall = client.wall.as_secs_f64();
    let peak_mb = client.peak_rss_kb as f64 / 1024.0;
    let ratio = client.cpu_seconds / floor.cpu_seconds;
    println!("--- {} (batch_size {})", setting.name, setting.batch_size);
    println!(
        "client  wall      {wall:.2} s   {} events/s",
        grouped((events as f64 / wall) as u64)
    );
    println!("client  cpu       {:.2} s", client.cpu_seconds);
    println!("client  peak RSS  {peak_mb:.1} MB   (target < {TARGET_PEAK_MB} MB)");
    println!(
        "floor   cpu       {:.2} s   (generate + serialise + gzip, {:.0} B/event)",
        floor.cpu_seconds, floor.avg_event_bytes
    );
    println!("ratio             {ratio:.2}x    (target <= {TARGET_RATIO}x)");
    println!(
        "delivered         {}/{events} (receiver accepted {}, duplicates {}, rejected {})",
        client.report.delivered, stats.accepted, stats.duplicates, stats.rejected
    );
}

fn check_delivery(events: u64, report: &DeliveryReport, stats: &Stats) {
    assert!(
        report.is_complete() && report.delivered == events,
        "the client did not deliver every event: {report:?}"
    );
    assert_eq!(
        (stats.accepted, stats.duplicates, stats.rejected),
        (events, 0, 0),
        "the receiver did not accept every event exactly once"
    );
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let head = match digits.len() % 3 {
        0 => 3,
        short => short,
    };
    let (head, rest) = digits.split_at(head);
    let mut out = head.to_owned();
    for group in rest.as_bytes().chunks(3) {
        out.push(',');
        out.push_str(std::str::from_utf8(group).expect("digits are ASCII"));
    }
    out
}

// ---- arguments ----

fn parse_args(args: &[String]) -> (u64, String, Tuning) {
    let mut events = DEFAULT_EVENTS;
    let mut case = "all".to_owned();
    let mut tuning = Tuning::default();
    let number = |value: Option<&String>, what: &str| -> usize {
        value
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| usage(&format!("{what} needs a positive whole number")))
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            // cargo passes `--bench` to `harness = false` targets.
            "--bench" => {}
            "--events" => {
                events = args
                    .next()
                    .and_then(|n| n.replace('_', "").parse().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| usage("--events needs a positive whole number"));
            }
            "--case" => {
                case = args
                    .next()
                    .filter(|c| matches!(c.as_str(), "all" | "contract" | "faulty" | "volume"))
                    .cloned()
                    .unwrap_or_else(|| usage("--case is all, contract, faulty or volume"));
            }
            "--batch-size" => tuning.batch_size = Some(number(args.next(), "--batch-size")),
            "--in-flight" => tuning.in_flight = Some(number(args.next(), "--in-flight")),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    (events, case, tuning)
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\nusage: cargo bench -p segment-client --bench throughput [-- --events N] [--case all|contract|faulty|volume] [--batch-size N] [--in-flight N]"
    );
    std::process::exit(2)
}
