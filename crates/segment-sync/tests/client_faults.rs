//! The binary under the client's hard answers: a wrong host path, an outage,
//! error chains, and `-v` logging.

mod common;

use common::{KEY, numbered_customers, path_str, receiver, run, stderr, write};
use segment_receiver::FaultPlan;
use tempfile::TempDir;

// Defect 6: a host with a path that answers 404 is a config error, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_on_the_first_request_is_a_config_error_with_a_hint() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let csv = write(&dir, "customers.csv", &numbered_customers(20));
    let host = format!("{}/not-a-proxy", receiver.url());
    let output = run(
        &dir,
        None,
        &["sync", path_str(&csv), "--write-key", KEY, "--host", &host],
    )
    .await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("404"), "{err}");
    assert!(err.contains("hint:") && err.contains("--host"), "{err}");
}

// Defect 6: the full endpoint as host is named before anything is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_ending_in_v1_batch_is_refused_with_the_base_url() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let csv = write(&dir, "customers.csv", &numbered_customers(3));
    let host = format!("{}/v1/batch", receiver.url());
    let output = run(
        &dir,
        None,
        &["sync", path_str(&csv), "--write-key", KEY, "--host", &host],
    )
    .await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("`{}`", receiver.url())), "{err}");
    assert!(err.contains("hint:"), "{err}");
    assert_eq!(receiver.store().stats().requests, 0);
}

// Defect 8: a host that never answers stops the run with exit 1 and a hint;
// what was not delivered stays pending and goes out on the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_stops_the_run_and_the_next_run_delivers_everything() {
    let receiver = receiver(FaultPlan::hang(u32::MAX)).await;
    let dir = TempDir::new().unwrap();
    let csv = write(&dir, "customers.csv", &numbered_customers(5_000));
    let output = common::command(
        &dir,
        Some(&receiver),
        &["sync", path_str(&csv), "--batch-size", "100"],
    )
    .env("SEGMENT_OUTAGE_AFTER", "1")
    .env("SEGMENT_REQUEST_TIMEOUT", "1")
    .output()
    .await
    .unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("outage") || err.contains("could not be reached"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    assert_eq!(receiver.store().stats().accepted, 0);

    receiver.set_faults(FaultPlan::none());
    let output = run(&dir, Some(&receiver), &["sync", path_str(&csv)]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let stats = receiver.store().stats();
    assert_eq!(stats.unique_message_ids, 5_000, "{stats:?}");
}

/// The messages of the `error:` and `caused by:` lines, in order.
fn chain(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter_map(|l| {
            l.strip_prefix("error: ")
                .or_else(|| l.trim_start().strip_prefix("caused by: "))
        })
        .collect()
}

// Defect 9: no line of an error chain repeats the one before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_source_file_does_not_print_its_cause_twice() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("missing.csv");
    let output = run(&dir, None, &["sync", path_str(&missing), "--dry-run"]).await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    let messages = chain(&err);
    assert!(!messages.is_empty(), "{err}");
    for pair in messages.windows(2) {
        assert!(!pair[0].contains(pair[1]), "repeated cause: {err}");
    }
}

// Defect 9: the same for an error from the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_chains_do_not_print_a_cause_twice() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let csv = write(&dir, "customers.csv", &numbered_customers(3));
    let output = run(
        &dir,
        None,
        &[
            "sync",
            path_str(&csv),
            "--write-key",
            "wrong-key",
            "--host",
            &receiver.url(),
        ],
    )
    .await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    let messages: Vec<&str> = err
        .lines()
        .filter_map(|l| {
            l.strip_prefix("error: ")
                .or_else(|| l.trim_start().strip_prefix("caused by: "))
        })
        .collect();
    assert!(!messages.is_empty(), "{err}");
    for pair in messages.windows(2) {
        assert!(!pair[0].contains(pair[1]), "repeated cause: {err}");
    }
}

// Observability: -vv shows the client's retries on stderr, never the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_shows_retries_without_the_write_key() {
    let receiver = receiver(FaultPlan::first_n(1, 503)).await;
    let dir = TempDir::new().unwrap();
    let csv = write(&dir, "customers.csv", &numbered_customers(3));
    let output = run(
        &dir,
        Some(&receiver),
        &["-vv", "sync", path_str(&csv), "--backoff-ms", "1"],
    )
    .await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert!(err.contains("retrying"), "{err}");
    assert!(!err.contains(KEY), "{err}");

    let quiet = run(
        &dir,
        Some(&receiver),
        &["sync", path_str(&csv), "--full-resync"],
    )
    .await;
    assert!(!stderr(&quiet).contains("retrying"));
}

/// A loopback server that answers every request with a redirect, the way a
/// misconfigured proxy or an http -> https hop does.
async fn redirecting_server() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                // One answer per connection is enough: the client does not follow it.
                if socket.read(&mut buf).await.is_ok() {
                    let answer = "HTTP/1.1 301 Moved Permanently\r\nLocation: https://elsewhere.invalid/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                    let _ = socket.write_all(answer.as_bytes()).await;
                }
            });
        }
    });
    format!("http://{addr}")
}

// Defect 4: a redirecting host stops the run as a configuration error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirecting_host_is_a_config_error_with_a_hint() {
    let host = redirecting_server().await;
    let dir = TempDir::new().unwrap();
    let csv = write(&dir, "customers.csv", &numbered_customers(5));
    let output = run(
        &dir,
        None,
        &["sync", path_str(&csv), "--write-key", KEY, "--host", &host],
    )
    .await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("301"), "{err}");
    assert!(err.contains("hint:") && err.contains("--host"), "{err}");
}
