//! End-to-end: the real HttpClient against the real receiver over loopback HTTP.
//!
//! Time-dependent behaviour (backoff, Retry-After, timeouts, flush deadlines)
//! runs with tokio's clock paused: the runtime jumps over waits instead of
//! sleeping, so these tests are fast and measure waits exactly.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{client, receiver};
use segment_client::{
    HttpClient, IdentifyParams, Identity, PreparedEvent, SegmentIdentifyPayload, UserTraits,
    send_customer_to_segment_with_client,
};
use segment_receiver::FaultPlan;
use serde_json::Value;
use tokio::time::Instant;

fn customer(i: usize) -> IdentifyParams {
    IdentifyParams::new(Identity::user(format!("cus_{i}"))).with_traits(UserTraits {
        email: Some(format!("customer{i}@example.com")),
        first_name: Some("Ada".into()),
        ..UserTraits::default()
    })
}

async fn identify_all(client: &HttpClient, n: usize) {
    for i in 0..n {
        client
            .identify(customer(i))
            .await
            .expect("valid event is queued");
    }
}

#[tokio::test]
async fn delivers_every_event_in_gzipped_batches_within_limits() {
    let receiver = receiver(FaultPlan::none()).await;
    let client = client(&receiver).batch_size(100).build().unwrap();
    identify_all(&client, 250).await;
    let report = client.close_and_flush().await.unwrap();

    assert_eq!(report.delivered, 250);
    assert!(report.is_complete());
    let stats = receiver.store().stats();
    assert_eq!(stats.accepted, 250);
    assert_eq!(stats.unique_message_ids, 250);
    assert_eq!(stats.rejected, 0);
    let requests = receiver.store().requests();
    assert_eq!(
        requests.iter().map(|r| r.events).collect::<Vec<_>>(),
        [100, 100, 50]
    );
    assert!(
        requests
            .iter()
            .all(|r| r.gzip && r.status == 200 && r.retry_count.is_none())
    );
    assert!(requests.iter().all(|r| r.sent_at.is_some()));
    let events = receiver.store().events();
    assert_eq!(events[0]["userId"], "cus_0");
    assert_eq!(events[249]["userId"], "cus_249");
    assert_eq!(events[7]["traits"]["email"], "customer7@example.com");
    assert_eq!(events[7]["type"], "identify");
}

#[tokio::test]
async fn gzip_can_be_turned_off_and_byte_limits_split_batches() {
    let receiver = receiver(FaultPlan::none()).await;
    let client = client(&receiver)
        .gzip(false)
        .batch_size(2_500)
        .max_batch_bytes(40_000)
        .build()
        .unwrap();
    let mut big = UserTraits::default();
    big.custom
        .insert("notes".into(), Value::String("n".repeat(15_000)));
    for i in 0..6 {
        client
            .identify(customer(i).with_traits(big.clone()))
            .await
            .unwrap();
    }
    let report = client.close_and_flush().await.unwrap();
    assert_eq!(report.delivered, 6);
    let requests = receiver.store().requests();
    assert!(
        requests.iter().all(|r| !r.gzip && r.body_bytes <= 40_000),
        "{requests:?}"
    );
    assert_eq!(
        requests.iter().map(|r| r.events).collect::<Vec<_>>(),
        [2, 2, 2]
    );
}

#[tokio::test(start_paused = true)]
async fn server_errors_are_retried_with_the_same_message_ids() {
    let receiver = receiver(FaultPlan::first_n(2, 500)).await;
    let client = client(&receiver).build().unwrap();
    identify_all(&client, 10).await;
    let report = client.close_and_flush().await.unwrap();

    assert_eq!(report.delivered, 10);
    let requests = receiver.store().requests();
    let statuses: Vec<_> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 500, 200]);
    let retry_counts: Vec<_> = requests.iter().map(|r| r.retry_count).collect();
    assert_eq!(retry_counts, [None, Some(1), Some(2)]);
    assert_eq!(requests[0].message_ids, requests[2].message_ids);
    assert_ne!(
        requests[0].sent_at, requests[2].sent_at,
        "sentAt is set per attempt"
    );
    assert_eq!(receiver.store().stats().accepted, 10);
}

#[tokio::test(start_paused = true)]
async fn retry_after_pauses_the_client_and_does_not_count_as_an_attempt() {
    let receiver = receiver(FaultPlan::retry_after(3, "30")).await;
    // One attempt allowed: only a pause that does not count can let this through.
    let client = client(&receiver).max_attempts(1).build().unwrap();
    let started = Instant::now();
    identify_all(&client, 5).await;
    let report = client
        .flush_with_timeout(Duration::from_secs(600))
        .await
        .unwrap();

    assert_eq!(report.delivered, 5, "{report:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(90),
        "waited {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(95),
        "waited {:?}",
        started.elapsed()
    );
    let statuses: Vec<_> = receiver
        .store()
        .requests()
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [429, 429, 429, 200]);
}

#[tokio::test(start_paused = true)]
async fn a_request_without_an_answer_times_out_and_is_retried() {
    let receiver = receiver(FaultPlan::hang(1)).await;
    let client = client(&receiver)
        .request_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let started = Instant::now();
    identify_all(&client, 3).await;
    let report = client.close_and_flush().await.unwrap();

    assert_eq!(report.delivered, 3);
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(receiver.store().stats().accepted, 3);
}

#[tokio::test(start_paused = true)]
async fn timeouts_until_attempts_run_out_are_reported_as_timeouts() {
    let receiver = receiver(FaultPlan::hang(100)).await;
    let client = client(&receiver)
        .request_timeout(Duration::from_secs(1))
        .max_attempts(3)
        .build()
        .unwrap();
    identify_all(&client, 2).await;
    let report = client
        .close_and_flush_with_timeout(Duration::from_secs(120))
        .await
        .unwrap();

    assert_eq!(report.delivered, 0);
    assert_eq!(report.failed.len(), 2);
    let error = &report.failed[0].error;
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(error.attempts(), 3);
}

#[tokio::test]
async fn a_bad_request_is_not_retried_and_is_reported_with_its_status() {
    let receiver = receiver(FaultPlan::first_n(1, 400)).await;
    let client = client(&receiver).build().unwrap();
    identify_all(&client, 4).await;
    let report = client.close_and_flush().await.unwrap();

    assert_eq!(report.delivered, 0);
    assert_eq!(report.failed_count(), 4);
    let error = &report.failed[0].error;
    assert_eq!(error.code(), Some("http_status"));
    assert_eq!(error.status(), Some(400));
    assert!(!error.is_retryable());
    assert_eq!(report.failed[3].event.identity, Identity::user("cus_3"));
    assert_eq!(
        receiver.store().requests().len(),
        1,
        "400 must not be retried"
    );
}

#[tokio::test]
async fn a_refused_write_key_is_reported_as_unauthorized() {
    let receiver = receiver(FaultPlan::none()).await;
    let client = HttpClient::builder("wrong-key")
        .host(receiver.url())
        .build()
        .unwrap();
    identify_all(&client, 1).await;
    let report = client.close_and_flush().await.unwrap();
    let error = &report.failed[0].error;
    assert!(error.is_unauthorized(), "{error:?}");
    assert!(!error.message().contains("wrong-key"));
    assert_eq!(receiver.store().requests().len(), 1);
}

#[tokio::test]
async fn oversized_and_invalid_events_are_refused_before_sending() {
    let receiver = receiver(FaultPlan::none()).await;
    let client = client(&receiver).build().unwrap();
    let mut huge = UserTraits::default();
    huge.custom
        .insert("blob".into(), Value::String("x".repeat(40_000)));
    let err = client
        .identify(customer(1).with_traits(huge))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("payload_too_large"));
    let err = client
        .identify(IdentifyParams::new(Identity::user("")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("invalid_payload"));
    let err = client
        .identify(customer(2).with_message_id("m".repeat(120)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("invalid_payload"));

    let report = client.close_and_flush().await.unwrap();
    assert_eq!(report.delivered, 0);
    assert!(
        receiver.store().requests().is_empty(),
        "nothing invalid reaches Segment"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_flushes_all_wait_for_what_was_queued_before_them() {
    let receiver = receiver(FaultPlan::none().with_latency(Duration::from_millis(200))).await;
    let client = client(&receiver)
        .batch_size(10)
        .max_in_flight(2)
        .build()
        .unwrap();
    let mut flushes = Vec::new();
    for round in 0..4 {
        for i in 0..25 {
            client.identify(customer(round * 100 + i)).await.unwrap();
        }
        let client = client.clone();
        flushes.push(tokio::spawn(async move { client.flush().await.unwrap() }));
    }
    let mut delivered = 0;
    for flush in flushes {
        let report = flush.await.unwrap();
        assert!(
            report.pending.is_empty() && report.failed.is_empty(),
            "{report:?}"
        );
        delivered += report.delivered;
    }
    assert_eq!(delivered, 100, "each outcome is reported exactly once");
    assert_eq!(receiver.store().stats().accepted, 100);
}

#[tokio::test(start_paused = true)]
async fn a_flush_deadline_returns_pending_events_and_keeps_them() {
    let receiver = receiver(FaultPlan::hang(1)).await;
    let client = client(&receiver)
        .request_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    identify_all(&client, 3).await;
    let report = client
        .flush_with_timeout(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(report.delivered, 0);
    assert_eq!(report.pending.len(), 3);
    assert_eq!(report.pending[0].identity, Identity::user("cus_0"));

    // The events were not dropped: the retry after the timeout delivers them.
    let report = client
        .close_and_flush_with_timeout(Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(report.delivered, 3);
    assert_eq!(receiver.store().stats().accepted, 3);
}

#[tokio::test(start_paused = true)]
async fn a_tiny_queue_applies_backpressure_and_loses_nothing() {
    let receiver = receiver(FaultPlan::none().with_latency(Duration::from_millis(100))).await;
    let client = client(&receiver)
        .queue_capacity(1)
        .max_in_flight(1)
        .batch_size(1)
        .build()
        .unwrap();
    let mut refused = 0;
    let mut queued = 0;
    for i in 0..20 {
        match client.try_identify(customer(i)) {
            Ok(()) => queued += 1,
            Err(e) => {
                assert!(e.is_queue_full(), "{e:?}");
                refused += 1;
                // The waiting variant blocks until there is room instead.
                client.identify(customer(i)).await.unwrap();
                queued += 1;
            }
        }
    }
    assert!(refused > 0, "a queue of one must fill up");
    let report = client.close_and_flush().await.unwrap();
    assert_eq!(report.delivered, queued);
    assert_eq!(receiver.store().stats().accepted, 20);
}

#[tokio::test(start_paused = true)]
async fn partial_batches_go_out_after_the_flush_interval() {
    let receiver = receiver(FaultPlan::none()).await;
    let client = client(&receiver)
        .flush_interval(Duration::from_secs(2))
        .build()
        .unwrap();
    identify_all(&client, 3).await;
    tokio::time::sleep(Duration::from_millis(1_900)).await;
    assert_eq!(
        receiver.store().stats().accepted,
        0,
        "not before the interval"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.store().stats().accepted, 3);
    client.close_and_flush().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_requests_per_second_cap_spaces_requests() {
    let receiver = receiver(FaultPlan::none()).await;
    let client = client(&receiver)
        .batch_size(1)
        .requests_per_second(2.0)
        .build()
        .unwrap();
    let started = Instant::now();
    identify_all(&client, 5).await;
    let report = client.close_and_flush().await.unwrap();
    assert_eq!(report.delivered, 5);
    // Five requests at two per second: the last starts two seconds after the first.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn identify_after_close_is_refused() {
    let receiver = receiver(FaultPlan::none()).await;
    let client = client(&receiver).build().unwrap();
    let other_handle = client.clone();
    client.close_and_flush().await.unwrap();
    let err = other_handle.identify(customer(1)).await.unwrap_err();
    assert!(err.is_closed());
    assert_eq!(err.code(), Some("client_closed"));
    assert!(other_handle.flush().await.unwrap_err().is_closed());
    assert!(client.close_and_flush().await.unwrap().is_complete());
}

#[tokio::test]
async fn on_outcome_sees_every_event_once() {
    let receiver = receiver(FaultPlan::user_id("cus_5", 400, None)).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let client = client(&receiver)
        .batch_size(5)
        .on_outcome(move |outcome| {
            sink.lock()
                .unwrap()
                .push((outcome.message_id.to_owned(), outcome.result.is_ok()));
        })
        .build()
        .unwrap();
    identify_all(&client, 15).await;
    client.close_and_flush().await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 15);
    assert_eq!(
        seen.iter().map(|(id, _)| id).collect::<HashSet<_>>().len(),
        15
    );
    // cus_5 is in the second batch of five, which is refused as a whole.
    assert_eq!(seen.iter().filter(|(_, ok)| !ok).count(), 5);
}

#[tokio::test]
async fn on_outcome_hands_back_the_tag_each_event_was_given() {
    let receiver = receiver(FaultPlan::user_id("cus_3", 400, None)).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let client = client(&receiver)
        .batch_size(2)
        .on_outcome(move |outcome| {
            let user = outcome.identity.user_id().unwrap_or_default().to_owned();
            sink.lock()
                .unwrap()
                .push((user, outcome.tag, outcome.result.is_ok()));
        })
        .build()
        .unwrap();
    for i in 0..6u64 {
        let mut event = PreparedEvent::new(customer(i as usize)).unwrap();
        // Event 5 is left without one: its outcome says 0.
        if i != 5 {
            event.set_tag(1_000 + i);
        }
        client.queue_prepared(event).await.unwrap();
    }
    client.close_and_flush().await.unwrap();
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    let expected: Vec<(String, u64, bool)> = (0..6u64)
        .map(|i| {
            let tag = if i == 5 { 0 } else { 1_000 + i };
            // cus_3 shares its batch of two with cus_2: both refused.
            (format!("cus_{i}"), tag, !(2..=3).contains(&i))
        })
        .collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn the_contract_function_reports_this_events_outcome() {
    let receiver = receiver(FaultPlan::user_id("bad", 400, None)).await;
    let client = client(&receiver).build().unwrap();
    let payload = |id: &str| SegmentIdentifyPayload {
        user_id: id.into(),
        traits: UserTraits::default(),
    };
    send_customer_to_segment_with_client(&client, payload("good"))
        .await
        .unwrap();
    let err = send_customer_to_segment_with_client(&client, payload("bad"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    let err = send_customer_to_segment_with_client(&client, payload(""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("invalid_payload"));
    // Through a trait object too.
    let dyn_client: &dyn segment_client::SegmentClient = &client;
    send_customer_to_segment_with_client(dyn_client, payload("good-2"))
        .await
        .unwrap();
    assert_eq!(receiver.store().events_for_user("good").len(), 1);
    assert_eq!(receiver.store().stats().accepted, 2);
}

#[tokio::test]
async fn a_dry_run_writes_the_exact_request_bodies_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // No write key and an unroutable host: a dry run needs neither.
    let client = HttpClient::builder("")
        .host("http://127.0.0.1:9")
        .dry_run(Some(dir.path().to_path_buf()))
        .gzip(false)
        .batch_size(100)
        .build()
        .unwrap();
    identify_all(&client, 250).await;
    let report = client.close_and_flush().await.unwrap();
    assert_eq!(report.delivered, 250);

    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let names: Vec<_> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "request-000001.json",
            "request-000002.json",
            "request-000003.json"
        ]
    );
    let body: Value = serde_json::from_slice(&std::fs::read(&files[2]).unwrap()).unwrap();
    assert_eq!(body["batch"].as_array().unwrap().len(), 50);
    assert_eq!(body["batch"][49]["userId"], "cus_249");
    assert_eq!(
        body["context"]["library"]["name"],
        segment_client::LIBRARY_NAME
    );
}

#[test]
fn identify_blocking_feeds_the_client_from_a_plain_thread() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (receiver, client) = runtime.block_on(async {
        let receiver = receiver(FaultPlan::none()).await;
        let client = client(&receiver).queue_capacity(4).build().unwrap();
        (receiver, client)
    });
    for i in 0..300 {
        client.identify_blocking(customer(i)).unwrap();
    }
    let report = runtime.block_on(client.close_and_flush()).unwrap();
    assert_eq!(report.delivered, 300);
    assert_eq!(receiver.store().stats().accepted, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_queued_in_bulk_are_all_delivered_in_order_through_a_tiny_queue() {
    let receiver = receiver(FaultPlan::none()).await;
    let client = client(&receiver)
        .queue_capacity(3)
        .max_in_flight(1)
        .batch_size(4)
        .build()
        .unwrap();
    let events: Vec<segment_client::PreparedEvent> = (0..50)
        .map(|i| segment_client::PreparedEvent::new(customer(i)).unwrap())
        .collect();
    let ids: Vec<String> = events.iter().map(|e| e.message_id().to_owned()).collect();
    let bulk = client.clone();
    // More events than the queue holds: queued in parts, waiting for room.
    tokio::task::spawn_blocking(move || bulk.queue_prepared_many_blocking(events))
        .await
        .unwrap()
        .map_err(|(error, _)| error)
        .unwrap();
    let report = client.close_and_flush().await.unwrap();
    assert_eq!(report.delivered, 50);
    let received: Vec<String> = receiver
        .store()
        .events()
        .iter()
        .map(|e| e["messageId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(received, ids, "every event, once, in queue order");

    // Once closed, nothing is queued and every event comes back.
    let late = vec![segment_client::PreparedEvent::new(customer(99)).unwrap()];
    let late_id = late[0].message_id().to_owned();
    let (error, back) =
        tokio::task::spawn_blocking(move || client.queue_prepared_many_blocking(late))
            .await
            .unwrap()
            .unwrap_err();
    assert!(error.is_closed(), "{error:?}");
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].message_id(), late_id);
}
