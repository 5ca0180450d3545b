//! End-to-end: the real `segment-sync` binary, run as a process, against the
//! real receiver over loopback HTTP.

mod common;

use std::time::Duration;

use common::*;
use segment_receiver::FaultPlan;
use serde_json::Value;
use tempfile::TempDir;

const CUSTOMERS: &str = "\
customer_id,email,first_name,last_name,created_at,city,postal_code,company_name,plan
cus_1,ada@example.com,Ada,Lovelace,2024-03-01T09:30:00Z,London,N1 9GU,Analytical Engines,pro
cus_2,grace@example.com,Grace,Hopper,2024-03-02,Arlington,22201,,enterprise
cus_3,alan@example.com,Alan,Turing,2024-03-03 10:00:00,Wilmslow,SK9,Bletchley Labs,free
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_mapping_sends_a_realistic_csv() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "customers.csv", CUSTOMERS);
    let output = run(&dir, Some(&receiver), &["sync", path_str(&file)]).await;

    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(receiver.store().stats().accepted, 3);
    let ada = &receiver.store().events_for_user("cus_1")[0];
    assert_eq!(ada["type"], "identify");
    assert_eq!(ada["traits"]["email"], "ada@example.com");
    assert_eq!(ada["traits"]["firstName"], "Ada");
    assert_eq!(ada["traits"]["address"]["city"], "London");
    assert_eq!(ada["traits"]["address"]["postalCode"], "N1 9GU");
    assert_eq!(ada["traits"]["company"]["name"], "Analytical Engines");
    assert_eq!(ada["traits"]["plan"], "pro");
    assert!(
        ada["traits"]["createdAt"]
            .as_str()
            .unwrap()
            .starts_with("2024-03-01T09:30:00")
    );
    let grace = &receiver.store().events_for_user("cus_2")[0];
    assert!(
        grace["traits"].get("company").is_none(),
        "an empty value is omitted: {grace}"
    );
    assert!(
        stderr(&output).contains("delivered 3"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_file_renames_types_and_nests() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let file = write(
        &dir,
        "export.csv",
        "Customer ID,E-mail,Seats,Active,Signed Up,Internal\nC-1,a@x.io,12,yes,1714557600,secret\n",
    );
    let mapping = write(
        &dir,
        "mapping.toml",
        r#"
[identity]
user_id = "Customer ID"

[columns."E-mail"]
trait = "email"

[columns.Seats]
trait = "company.employee_count"
type = "integer"

[columns.Active]
trait = "billing.active"
type = "boolean"

[columns."Signed Up"]
trait = "createdAt"
type = "timestamp"

[columns.Internal]
drop = true

[constants]
source = "crm-export"
"#,
    );
    let output = run(
        &dir,
        Some(&receiver),
        &["sync", path_str(&file), "--mapping", path_str(&mapping)],
    )
    .await;

    assert!(output.status.success(), "{}", stderr(&output));
    let event = &receiver.store().events_for_user("C-1")[0];
    let traits = &event["traits"];
    assert_eq!(traits["email"], "a@x.io");
    assert_eq!(traits["company"]["employee_count"], 12);
    assert_eq!(traits["billing"]["active"], true);
    assert_eq!(traits["createdAt"], "2024-05-01T10:00:00Z");
    assert_eq!(traits["source"], "crm-export");
    assert!(traits.get("Internal").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_rows_are_reported_with_their_lines_and_the_rest_is_sent() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let file = write(
        &dir,
        "customers.csv",
        "user_id,email,age\nu1,a@x.io,31\n,nobody@x.io,40\nu3,c@x.io,old\nu4,d@x.io\nu5,e@x.io,22\n",
    );
    let mapping = write(
        &dir,
        "m.toml",
        "[columns.age]\ntrait = \"age\"\ntype = \"integer\"\n",
    );
    let (output, report) =
        sync_reported(&dir, &receiver, &file, &["--mapping", path_str(&mapping)]).await;

    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(receiver.store().stats().accepted, 2);
    let lines = report_lines(&report);
    let invalid: Vec<_> = lines.iter().filter(|l| l["type"] == "invalid").collect();
    let found: Vec<_> = invalid
        .iter()
        .map(|l| {
            (
                l["line"].as_u64().unwrap(),
                l["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (3, "missing_identity".to_owned()),
            (4, "invalid_value".to_owned()),
            (5, "malformed".to_owned())
        ]
    );
    assert_eq!(invalid[1]["field"], "age");
    let summary = summary(&lines);
    assert_eq!(
        (summary["read"].as_u64(), summary["valid"].as_u64()),
        (Some(5), Some(2))
    );
    assert_eq!(
        (summary["invalid"].as_u64(), summary["delivered"].as_u64()),
        (Some(3), Some(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_rate_limits_are_retried_until_delivered() {
    let plan = FaultPlan::first_n(2, 500).with_rule(segment_receiver::Fault::FirstN {
        n: 1,
        status: 429,
        retry_after: Some("0".into()),
    });
    let receiver = receiver(plan).await;
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.csv", &numbered_customers(30));
    let output = run(
        &dir,
        Some(&receiver),
        &[
            "sync",
            path_str(&file),
            "--batch-size",
            "10",
            "--concurrency",
            "1",
            "--backoff-ms",
            "1",
        ],
    )
    .await;

    assert!(output.status.success(), "{}", stderr(&output));
    let stats = receiver.store().stats();
    assert_eq!(stats.accepted, 30);
    assert_eq!(stats.unique_message_ids, 30);
    assert_eq!(stats.responses_by_status.get(&500), Some(&2));
    assert_eq!(stats.responses_by_status.get(&429), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_fails_exactly_its_records() {
    let receiver = receiver(FaultPlan::user_id("u7", 400, None)).await;
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.csv", &numbered_customers(20));
    let (output, report) = sync_reported(
        &dir,
        &receiver,
        &file,
        &["--batch-size", "5", "--concurrency", "1"],
    )
    .await;

    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let lines = report_lines(&report);
    let failed: Vec<_> = lines.iter().filter(|l| l["type"] == "failed").collect();
    // u7 is on line 9, in the second batch of five (lines 7-11).
    let failed_lines: Vec<_> = failed.iter().map(|l| l["line"].as_u64().unwrap()).collect();
    assert_eq!(failed_lines, [7, 8, 9, 10, 11]);
    assert!(
        failed
            .iter()
            .all(|l| l["status"] == 400 && l["reason"] == "http_status")
    );
    let summary = summary(&lines);
    assert_eq!(summary["delivered"], 15);
    assert_eq!(summary["failed"], 5);
    assert_eq!(receiver.store().stats().accepted, 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_write_key_stops_before_reading_with_a_hint() {
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.csv", &numbered_customers(3));
    let output = run(&dir, None, &["sync", path_str(&file)]).await;
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains("error: SEGMENT_WRITE_KEY is not set"), "{err}");
    assert!(err.contains("hint: "), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_key_stops_the_run_at_once() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.csv", &numbered_customers(50));
    let output = command(
        &dir,
        Some(&receiver),
        &["sync", path_str(&file), "--batch-size", "5"],
    )
    .env("SEGMENT_WRITE_KEY", "wrong-key")
    .output()
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("401"), "{err}");
    assert!(err.contains("hint: check SEGMENT_WRITE_KEY"), "{err}");
    assert!(!err.contains("wrong-key"), "the key is never echoed: {err}");
    assert_eq!(receiver.store().stats().accepted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_host_stops_the_run_at_once() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.csv", &numbered_customers(3));
    let output = command(&dir, None, &["sync", path_str(&file)])
        .env("SEGMENT_WRITE_KEY", KEY)
        .env("SEGMENT_HOST", format!("http://127.0.0.1:{port}"))
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("cannot reach"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_sends_nothing_and_writes_the_request_bodies() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.csv", &numbered_customers(25));
    let out_dir = dir.path().join("bodies");
    let output = run(
        &dir,
        Some(&receiver),
        &[
            "sync",
            path_str(&file),
            "--dry-run",
            "--dry-run-dir",
            path_str(&out_dir),
            "--batch-size",
            "10",
            "--no-gzip",
        ],
    )
    .await;

    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        receiver.store().stats().requests,
        0,
        "a dry run never touches the network"
    );
    let mut bodies: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    bodies.sort();
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    let last: Value = serde_json::from_slice(&std::fs::read(&bodies[2]).unwrap()).unwrap();
    assert_eq!(last["batch"].as_array().unwrap().len(), 5);
    assert_eq!(last["batch"][4]["userId"], "u24");
    assert!(
        stderr(&output).contains("would send 25"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_mid_run_flushes_and_writes_a_report() {
    // Slow answers keep the run going long enough to interrupt it.
    let receiver = receiver(FaultPlan::none().with_latency(Duration::from_millis(300))).await;
    let dir = TempDir::new().unwrap();
    // More rows than the client's queue holds, so reading is still going on.
    let file = write(&dir, "c.csv", &numbered_customers(30_000));
    let report = dir.path().join("r.jsonl");
    let child = command(
        &dir,
        Some(&receiver),
        &[
            "sync",
            path_str(&file),
            "--batch-size",
            "10",
            "--concurrency",
            "1",
            "--report",
            path_str(&report),
        ],
    )
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    // Wait until something was delivered, then interrupt.
    while receiver.store().stats().accepted == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child.id().unwrap().to_string();
    let status = tokio::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().await.unwrap();

    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("stopping"), "{}", stderr(&output));
    let lines = report_lines(&report);
    let summary = summary(&lines);
    assert_eq!(summary["interrupted"], true);
    let n = |k: &str| summary[k].as_u64().unwrap();
    assert!(n("read") < 30_000, "reading stopped early: {summary}");
    assert_eq!(n("read"), n("valid") + n("invalid"));
    assert_eq!(n("valid"), n("delivered") + n("failed") + n("pending"));
    // A batch abandoned at the shutdown deadline may have reached the
    // receiver without its answer reaching the client: it is pending, not delivered.
    let received = receiver.store().stats().unique_message_ids;
    assert!(
        n("delivered") <= received && received <= n("delivered") + n("pending"),
        "{summary} received {received}"
    );
    assert!(
        n("pending") > 0,
        "the slow receiver cannot take everything in time: {summary}"
    );
    let pending = lines.iter().filter(|l| l["type"] == "pending").count() as u64;
    assert_eq!(pending, n("pending"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_and_mapping_show_what_would_be_sent() {
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "customers.csv", CUSTOMERS);
    let output = run(&dir, None, &["preview", path_str(&file), "-n", "2"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    let events: Vec<Value> = serde_json::Deserializer::from_str(&text)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["userId"], "cus_2");
    assert_eq!(events[0]["traits"]["address"]["postalCode"], "N1 9GU");

    let output = run(&dir, None, &["mapping", "--print", path_str(&file)]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("customer_id") && text.contains("userId"),
        "{text}"
    );
    assert!(text.contains("postalCode"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_on_stdin_is_synced() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let mut child = command(&dir, Some(&receiver), &["sync", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut stdin,
        b"{\"userId\":\"n1\",\"email\":\"n1@x.io\"}\nnot json\n{\"userId\":\"n2\",\"plan\":\"pro\"}\n",
    )
    .await
    .unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "one bad line: {}",
        stderr(&output)
    );
    assert_eq!(receiver.store().stats().accepted, 2);
    assert_eq!(
        receiver.store().events_for_user("n2")[0]["traits"]["plan"],
        "pro"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_on_stdin_is_read_as_csv_when_format_says_so() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let mut child = command(&dir, Some(&receiver), &["sync", "-", "--format", "csv"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"user_id,plan\nc1,pro\nc2,free\n")
        .await
        .unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(receiver.store().stats().accepted, 2);
    assert_eq!(
        receiver.store().events_for_user("c2")[0]["traits"]["plan"],
        "free"
    );
}

/// A named pipe can be read only once, like stdin: a second open for the
/// `last` pre-read would wait for a writer that never comes.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_pipe_is_read_once_as_a_stream() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let fifo = dir.path().join("customers.csv");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo failed");
    let child = command(&dir, Some(&receiver), &["sync", "customers.csv"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let writer = tokio::task::spawn_blocking(move || {
        // Blocks until the run opens the pipe for reading.
        std::fs::write(&fifo, "user_id,plan\nu1,free\nu2,pro\nu1,pro\n").unwrap();
    });
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the run finishes (it hung waiting to open the pipe a second time)")
        .unwrap();
    writer.await.unwrap();
    let stderr = stderr(&output);
    // u1's second row cannot be known to be its last without a second read:
    // as on stdin, the first row is sent and the repeat is refused, saying why.
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot be read twice"), "{stderr}");
    assert!(stderr.contains("customers.csv:4"), "{stderr}");
    assert_eq!(receiver.store().stats().accepted, 2);
    assert_eq!(
        receiver.store().events_for_user("u1")[0]["traits"]["plan"],
        "free"
    );
}

/// A minified JSON array has every element on line 1: a line names no
/// one row there, so an identity's last row is told by its column too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minified_array_sends_only_the_last_row_of_a_repeated_identity() {
    let dir = TempDir::new().unwrap();
    let json = r#"[{"id":"u1","plan":"a"},{"id":"u2","plan":"c"},{"id":"u1","plan":"b"}]"#;
    let file = write(&dir, "customers.json", json);
    let (report, bodies) = (dir.path().join("report.ndjson"), dir.path().join("bodies"));
    let output = run(
        &dir,
        None,
        &[
            "sync",
            path_str(&file),
            "--no-state",
            "--dry-run",
            "--no-gzip",
            "--dry-run-dir",
            path_str(&bodies),
            "--report",
            path_str(&report),
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let sent: Vec<(String, String)> = dry_run_bodies(&bodies)
        .iter()
        .flat_map(|body| body["batch"].as_array().unwrap().clone())
        .map(|event| {
            let user = event["userId"].as_str().unwrap().to_owned();
            (user, event["traits"]["plan"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(sent, [("u2".into(), "c".into()), ("u1".into(), "b".into())]);
    let lines = report_lines(&report);
    let superseded: Vec<&Value> = lines.iter().filter(|l| l["type"] == "duplicate").collect();
    assert_eq!(superseded.len(), 1, "{lines:?}");
    // Both rows are on line 1: the report names each by its column.
    assert_eq!(superseded[0]["line"], 1);
    assert_eq!(superseded[0]["column"], 2);
    assert_eq!(superseded[0]["other_line"], 1);
    assert_eq!(superseded[0]["other_column"], 48);
    let message = superseded[0]["message"].as_str().unwrap();
    assert!(message.contains("line 1, column 48"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_without_any_configuration() {
    let dir = TempDir::new().unwrap();
    let output = run(&dir, None, &["demo"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains("the receiver accepted 40 events"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_runs_a_receiver_other_commands_can_use() {
    let dir = TempDir::new().unwrap();
    let mut child = command(&dir, None, &["receive", "--write-key", KEY])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let url = lines
        .next_line()
        .await
        .unwrap()
        .expect("the receiver prints its URL");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.csv", &numbered_customers(7));
    let output = command(&dir, None, &["sync", path_str(&file)])
        .env("SEGMENT_WRITE_KEY", KEY)
        .env("SEGMENT_HOST", &url)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));

    let body = http_get(&url, "/_receiver/stats").await;
    let stats: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["accepted"], 7);
    child.kill().await.unwrap();
}

/// A minimal HTTP/1.1 GET, enough for the receiver's JSON control endpoints.
async fn http_get(base: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

// A dry run against a fresh state reads identities without source
// fingerprints (nothing uses them); once a run has recorded the customers,
// a dry run computes them again and skips the unchanged customers. The
// counts add up on both paths, with an invalid row and a superseded one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_with_a_state_add_up_before_and_after_the_first_run() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    write(&dir, "c.csv", "id,plan\nu1,a\n,b\nu2,c\nu1,d\n");
    let first_dry = partial_sync(&dir, &receiver, &["--dry-run"]).await;
    assert_eq!(
        (count(&first_dry, "invalid"), count(&first_dry, "skipped")),
        (1, 1),
        "the empty id, and u1's superseded row: {first_dry}"
    );
    assert_eq!(
        receiver.store().stats().requests,
        0,
        "a dry run sends nothing"
    );
    let sent = partial_sync(&dir, &receiver, &[]).await;
    assert_eq!(count(&sent, "delivered"), 2, "{sent}");
    let second_dry = partial_sync(&dir, &receiver, &["--dry-run"]).await;
    assert_eq!(
        count(&second_dry, "skipped"),
        3,
        "u1's superseded row, and both customers unchanged: {second_dry}"
    );
}

/// Syncs `c.csv` with its state in `dir`; the run is partial (a row has no
/// identity) and its report adds up. Returns the summary.
async fn partial_sync(
    dir: &TempDir,
    receiver: &segment_receiver::Receiver,
    extra: &[&str],
) -> Value {
    let report = dir.path().join("report.ndjson");
    let mut args = vec!["sync", "c.csv", "--report", path_str(&report)];
    args.extend(extra);
    let output = run(dir, Some(receiver), &args).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let lines = report_lines(&report);
    assert_adds_up(&lines);
    summary(&lines).clone()
}
