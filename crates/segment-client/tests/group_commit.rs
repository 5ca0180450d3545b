//! Concurrent contract calls share requests, and each call still gets the
//! outcome of its own event.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use segment_client::{
    HttpClient, SegmentIdentifyPayload, new_message_id, send_customer_to_segment_with_client,
};
use segment_client::{IdentifyParams, Identity, SegmentClient};
use segment_receiver::{FaultPlan, Receiver, ReceiverConfig};
use tokio::time::Instant;

const KEY: &str = "test-write-key";
const RTT: Duration = Duration::from_millis(50);

async fn receiver(faults: FaultPlan) -> Receiver {
    Receiver::start(
        ReceiverConfig::new()
            .write_key(KEY)
            .faults(faults.with_latency(RTT)),
    )
    .await
    .expect("receiver starts")
}

#[tokio::test(start_paused = true)]
async fn one_caller_needs_one_round_trip() {
    let receiver = receiver(FaultPlan::none()).await;
    let client = HttpClient::builder(KEY)
        .host(receiver.url())
        .build()
        .unwrap();
    let started = Instant::now();
    let payload = SegmentIdentifyPayload {
        user_id: "cus_1".into(),
        ..SegmentIdentifyPayload::default()
    };
    send_customer_to_segment_with_client(&client, payload)
        .await
        .unwrap();
    assert!(started.elapsed() < RTT * 2, "took {:?}", started.elapsed());
    assert_eq!(receiver.store().requests().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn concurrent_calls_share_requests_and_each_gets_its_own_outcome() {
    // Every request holding `bad` fails: the calls that shared it fail with
    // it, and only those.
    let receiver = receiver(FaultPlan::user_id("bad", 400, None)).await;
    let client = Arc::new(
        HttpClient::builder(KEY)
            .host(receiver.url())
            .build()
            .unwrap(),
    );
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..500 {
        let client = Arc::clone(&client);
        calls.spawn(async move {
            let user = if i == 13 || i == 250 {
                "bad".to_owned()
            } else {
                format!("cus_{i}")
            };
            let message_id = new_message_id();
            let params = IdentifyParams::new(Identity::user(user)).with_message_id(&message_id);
            let result = client.identify_and_confirm(params).await;
            (message_id, result)
        });
    }
    let results = calls.join_all().await;
    let requests = receiver.store().requests();
    assert!(
        requests.len() < 100,
        "500 calls made {} requests",
        requests.len()
    );
    let accepted: HashSet<String> = receiver
        .store()
        .events()
        .iter()
        .map(|e| e["messageId"].as_str().unwrap().to_owned())
        .collect();
    let mut failed = 0;
    for (message_id, result) in &results {
        match result {
            Ok(()) => assert!(accepted.contains(message_id), "{message_id} confirmed"),
            Err(error) => {
                failed += 1;
                assert_eq!(error.status(), Some(400), "{error:?}");
                assert!(!accepted.contains(message_id), "{message_id} failed");
            }
        }
    }
    assert!(failed > 0 && failed < 500, "{failed} failed");
    assert_eq!(accepted.len() + failed, 500);
}
