//! A good citizen under every answer: the real client against the real
//! receiver (or a tiny loopback server where the receiver cannot answer the
//! way a misconfigured proxy would), on paused time wherever time matters.

use std::error::Error as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use segment_client::{
    HttpClient, HttpClientBuilder, IdentifyParams, Identity, PreparedEvent, SegmentIdentifyPayload,
    send_customer_to_segment_with_client,
};
use segment_receiver::{FaultPlan, Receiver, ReceiverConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const KEY: &str = "test-write-key";

async fn receiver(faults: FaultPlan) -> Receiver {
    Receiver::start(ReceiverConfig::new().write_key(KEY).faults(faults))
        .await
        .expect("receiver starts")
}

fn client(receiver: &Receiver) -> HttpClientBuilder {
    HttpClient::builder(KEY).host(receiver.url())
}

fn customer(i: usize) -> IdentifyParams {
    IdentifyParams::new(Identity::user(format!("cus_{i}")))
}

/// A port nothing listens on.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

// Defect 1: `Retry-After: 0` must not make a tight, uncounted loop.
#[tokio::test(start_paused = true)]
async fn retry_after_zero_counts_as_an_attempt_and_waits_the_backoff() {
    let receiver = receiver(FaultPlan::retry_after(u32::MAX, "0")).await;
    let client = client(&receiver).max_attempts(4).build().unwrap();
    client.identify(customer(1)).await.unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(3600),
        client.close_and_flush_with_timeout(Duration::from_secs(600)),
    )
    .await
    .expect("the close ends")
    .unwrap();

    assert_eq!(report.failed_count(), 1, "{report:?}");
    assert_eq!(report.failed[0].error.code(), Some("rate_limited"));
    assert_eq!(report.failed[0].error.attempts(), 4);
    assert_eq!(receiver.store().requests().len(), 4);
}

// Defect 1: a positive `Retry-After` is a lower bound, never shorter than the backoff.
#[tokio::test(start_paused = true)]
async fn retry_after_in_the_past_waits_the_backoff() {
    let receiver = receiver(FaultPlan::retry_after(
        u32::MAX,
        "Sun, 06 Nov 1994 08:49:37 GMT",
    ))
    .await;
    let client = client(&receiver)
        .max_attempts(3)
        .backoff(Duration::from_secs(10), Duration::from_secs(10))
        .build()
        .unwrap();
    client.identify(customer(1)).await.unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(3600),
        client.close_and_flush_with_timeout(Duration::from_secs(600)),
    )
    .await
    .expect("the close ends")
    .unwrap();
    assert_eq!(report.failed_count(), 1, "{report:?}");
    assert_eq!(receiver.store().requests().len(), 3);
}

// Defect 2: a panicking hook must not take the worker and its events with it.
#[tokio::test(start_paused = true)]
async fn a_panicking_hook_does_not_stop_the_worker() {
    let receiver = receiver(FaultPlan::none()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let client = client(&receiver)
        .on_outcome(move |_| {
            if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("a bug in the caller's hook");
            }
        })
        .build()
        .unwrap();
    for i in 0..3 {
        client.identify(customer(i)).await.unwrap();
    }
    let first = client.flush().await.unwrap();
    client.identify(customer(3)).await.unwrap();
    let second = client.close_and_flush().await.unwrap();
    assert_eq!(first.delivered + second.delivered, 4);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(receiver.store().stats().accepted, 4);
}

// Defect 2: settings that cannot work are refused by `build()`, never a panic later.
#[tokio::test]
async fn unworkable_durations_and_rates_are_refused_at_build() {
    let builders: Vec<(&str, HttpClientBuilder)> = vec![
        (
            "flush interval",
            HttpClient::builder(KEY).flush_interval(Duration::MAX),
        ),
        (
            "request timeout",
            HttpClient::builder(KEY).request_timeout(Duration::MAX),
        ),
        (
            "flush timeout",
            HttpClient::builder(KEY).flush_timeout(Duration::MAX),
        ),
        (
            "requests per second",
            HttpClient::builder(KEY).requests_per_second(1e-300),
        ),
        (
            "retry budget",
            HttpClient::builder(KEY).retry_budget(Duration::MAX),
        ),
        (
            "backoff",
            HttpClient::builder(KEY).backoff(Duration::MAX, Duration::MAX),
        ),
        (
            "max failures in report",
            HttpClient::builder(KEY).max_failures_in_report(0),
        ),
    ];
    for (what, builder) in builders {
        let err = builder.build().expect_err(what);
        assert_eq!(err.code(), Some("invalid_config"), "{what}: {err}");
    }
}

// Defect 3: a close that could not be queued must not mark the client closed
// and then report an empty, complete close the second time.
#[tokio::test(start_paused = true)]
async fn closing_twice_reports_the_same_pending_events() {
    let receiver = receiver(FaultPlan::hang(u32::MAX)).await;
    let client = client(&receiver)
        .queue_capacity(1)
        .batch_size(1)
        .max_in_flight(1)
        .build()
        .unwrap();
    let mut queued = 0;
    for i in 0..10 {
        if client.try_identify(customer(i)).is_ok() {
            queued += 1;
        }
        tokio::task::yield_now().await;
    }
    assert!(queued >= 2, "queued {queued}");
    let first = client
        .close_and_flush_with_timeout(Duration::from_secs(1))
        .await;
    let second = client
        .close_and_flush_with_timeout(Duration::from_secs(1))
        .await
        .unwrap();
    assert!(!second.is_complete(), "{second:?}");
    assert_eq!(second.pending.len(), queued, "{second:?}");
    if let Ok(first) = first {
        assert_eq!(first.pending, second.pending);
    }
}

/// A loopback server that answers a POST with a redirect to a path that
/// answers 200 to anything: what a misconfigured proxy or an http->https
/// hop looks like.
async fn redirecting_server(status: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                let mut head = Vec::new();
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let request_line = text.lines().next().unwrap_or_default().to_owned();
                    let length: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if head.len() < end + 4 + length {
                        continue;
                    }
                    head.drain(..end + 4 + length);
                    log.lock().unwrap().push(request_line.clone());
                    let answer = if request_line.starts_with("POST") {
                        format!(
                            "HTTP/1.1 {status}\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n"
                        )
                    } else {
                        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_owned()
                    };
                    if socket.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), seen)
}

// Defect 4: a redirect is a configuration error naming the host setting, never a delivery.
#[tokio::test]
async fn redirects_are_not_followed_and_are_not_deliveries() {
    for status in [
        "301 Moved Permanently",
        "302 Found",
        "307 Temporary Redirect",
    ] {
        let (host, seen) = redirecting_server(status).await;
        let client = HttpClient::builder(KEY).host(host).build().unwrap();
        client.identify(customer(1)).await.unwrap();
        let report = client.close_and_flush().await.unwrap();
        assert_eq!(report.delivered, 0, "{status}: {report:?}");
        let error = &report.failed[0].error;
        assert!(error.is_config(), "{status}: {error:?}");
        assert_eq!(error.status(), Some(status[..3].parse().unwrap()));
        assert!(error.message().contains("host"), "{}", error.message());
        let seen = seen.lock().unwrap().clone();
        assert!(seen.iter().all(|l| l.starts_with("POST")), "{seen:?}");
    }
}

// Defect 5: a host with user info is refused without echoing it.
#[test]
fn a_host_with_user_info_is_refused_without_echoing_it() {
    for host in [
        "https://SEKRITKEY@api.segment.io",
        "https://SEKRITKEY:pw@api.segment.io/",
        "https://SEKRITKEY@bad host",
    ] {
        let err = HttpClient::builder(KEY).host(host).build().unwrap_err();
        assert!(err.is_config(), "{host}: {err}");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("SEKRIT"), "{shown}");
        let mut source = err.source();
        while let Some(cause) = source {
            assert!(!cause.to_string().contains("SEKRIT"), "{cause}");
            source = cause.source();
        }
    }
}

// Defect 6: a base URL with a path prefix works; a full endpoint is named.
#[tokio::test]
async fn a_host_ending_in_the_batch_path_is_a_config_error_that_says_so() {
    let err = HttpClient::builder(KEY)
        .host("http://127.0.0.1:8080/v1/batch")
        .build()
        .unwrap_err();
    assert!(err.is_config(), "{err}");
    assert!(err.message().contains("/v1/batch"), "{err}");
    assert!(err.message().contains("http://127.0.0.1:8080"), "{err}");
}

// Defect 6: a 404 on the first request is a configuration error, at once.
#[tokio::test(start_paused = true)]
async fn a_404_on_the_first_request_is_a_config_error() {
    let receiver = receiver(FaultPlan::none()).await;
    let client = HttpClient::builder(KEY)
        .host(format!("{}/not-a-proxy", receiver.url()))
        .build()
        .unwrap();
    for i in 0..3 {
        client.identify(customer(i)).await.unwrap();
    }
    let report = client.close_and_flush().await.unwrap();
    assert_eq!(report.failed_count(), 3, "{report:?}");
    let error = &report.failed[0].error;
    assert!(error.is_config(), "{error:?}");
    assert_eq!(error.status(), Some(404));
    assert!(error.message().contains("host"), "{error}");
}

// Defect 7: one contract call to an unreachable host gives the same code,
// carries the cause, and does not wait for the whole retry budget.
#[tokio::test(start_paused = true)]
async fn a_contract_call_to_a_closed_port_is_an_outage_with_its_cause() {
    let host = closed_port().await;
    for _ in 0..3 {
        let client = HttpClient::builder(KEY).host(&host).build().unwrap();
        let started = Instant::now();
        let payload = SegmentIdentifyPayload {
            user_id: "cus_1".into(),
            ..SegmentIdentifyPayload::default()
        };
        let err = send_customer_to_segment_with_client(&client, payload)
            .await
            .unwrap_err();
        let waited = started.elapsed();
        assert_eq!(err.code(), Some("outage"), "{err:?}");
        assert!(err.is_outage());
        assert!(err.source().is_some(), "the last attempt's cause: {err:?}");
        assert!(
            waited <= Duration::from_secs(60),
            "waited {waited:?}, longer than the documented bound"
        );
    }
}

// Defect 8: a host that accepts connections but never answers is an outage
// after a bounded time, not hours of timeouts.
#[tokio::test(start_paused = true)]
async fn a_host_that_never_answers_is_an_outage_after_a_bounded_time() {
    let receiver = receiver(FaultPlan::hang(u32::MAX)).await;
    let client = client(&receiver)
        .batch_size(10)
        .outage_after(Duration::from_secs(60))
        .build()
        .unwrap();
    let started = Instant::now();
    for i in 0..200 {
        client.identify(customer(i)).await.unwrap();
    }
    let report = client
        .close_and_flush_with_timeout(Duration::from_secs(24 * 3600))
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(report.failed_count(), 200, "{report:?}");
    assert!(report.failed.iter().all(|f| f.error.is_outage()));
    // The bound, one request timeout to notice it, and one per batch in a row.
    assert!(
        waited < Duration::from_secs(60 + 15 * 3),
        "waited {waited:?}"
    );
    assert!(receiver.store().requests().len() < 60);
}

// Defect 10: a stored event's messageId is validated like identify's.
#[test]
fn from_json_validates_the_message_id() {
    let good = PreparedEvent::new(customer(1).with_message_id("m1")).unwrap();
    let json = String::from_utf8(good.json().to_vec()).unwrap();
    for bad in [String::new(), "x".repeat(100)] {
        let stored = json.replace("\"m1\"", &serde_json::to_string(&bad).unwrap());
        let err = PreparedEvent::from_json(stored.into_bytes()).unwrap_err();
        assert_eq!(err.code(), Some("invalid_payload"), "{bad:?}");
    }
}

// Defect 9: short Display, real source(), never both.
#[tokio::test(start_paused = true)]
async fn error_messages_do_not_repeat_their_source() {
    let host = closed_port().await;
    let client = HttpClient::builder(KEY)
        .host(&host)
        .max_attempts(1)
        .build()
        .unwrap();
    client.identify(customer(1)).await.unwrap();
    let report = client.close_and_flush().await.unwrap();
    let mut errors = vec![report.failed[0].error.clone()];
    errors.push(PreparedEvent::from_json(b"{not json".to_vec()).unwrap_err());
    for err in errors {
        let mut source = err.source();
        assert!(source.is_some(), "{err:?}");
        while let Some(cause) = source {
            assert!(
                !err.to_string().contains(&cause.to_string()),
                "`{err}` repeats its cause `{cause}`"
            );
            source = cause.source();
        }
    }
}
