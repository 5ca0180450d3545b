//! Every call of Segment's spec (identify, track, group, alias, page,
//! screen) through the real client and the real receiver: the same queue,
//! batches, retries and delivery reports as identify.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use segment_client::{
    AliasParams, BoxFuture, DeliveryReport, GroupParams, HttpClient, IdentifyParams, Identity,
    InMemoryClient, Message, SegmentClient, SegmentError, TrackParams, ViewParams,
};
use segment_receiver::{FaultPlan, Receiver, ReceiverConfig};

const KEY: &str = "test-write-key";

async fn receiver(faults: FaultPlan) -> Receiver {
    Receiver::start(ReceiverConfig::new().write_key(KEY).faults(faults))
        .await
        .expect("receiver starts")
}

/// One call of each type, for user `u{i}`, with messageId `{kind}-{i}`.
fn one_of_each(i: usize) -> Vec<Message> {
    let user = Identity::user(format!("u{i}"));
    vec![
        IdentifyParams::new(user.clone())
            .with_message_id(format!("identify-{i}"))
            .into(),
        TrackParams::new(user.clone(), "Order Completed")
            .with_property("revenue", 12.5)
            .with_message_id(format!("track-{i}"))
            .into(),
        GroupParams::new(user.clone(), format!("acc_{i}"))
            .with_trait("name", "Initech")
            .with_message_id(format!("group-{i}"))
            .into(),
        AliasParams::new(format!("anon_{i}"), format!("u{i}"))
            .with_message_id(format!("alias-{i}"))
            .into(),
        Message::Page(
            ViewParams::new(user.clone())
                .with_name("Pricing")
                .with_category("Docs")
                .with_message_id(format!("page-{i}")),
        ),
        Message::Screen(
            ViewParams::new(user)
                .with_name("Home")
                .with_message_id(format!("screen-{i}")),
        ),
    ]
}

#[tokio::test]
async fn every_type_reaches_the_receiver_in_one_mixed_batch() {
    let receiver = receiver(FaultPlan::none()).await;
    let client = HttpClient::builder(KEY)
        .host(receiver.url())
        .build()
        .unwrap();
    for message in one_of_each(1) {
        client.send(message).await.unwrap();
    }
    let report = client.close_and_flush().await.unwrap();
    assert_eq!((report.delivered, report.failed_count()), (6, 0));

    let requests = receiver.store().requests();
    assert_eq!(requests.len(), 1, "all six types share one request");
    assert_eq!(requests[0].events, 6);
    let events = receiver.store().events();
    let by_id = |id: &str| {
        events
            .iter()
            .find(|e| e["messageId"] == id)
            .unwrap_or_else(|| panic!("{id} reached the receiver"))
            .clone()
    };
    let track = by_id("track-1");
    assert_eq!(
        (
            &track["type"],
            &track["event"],
            &track["properties"]["revenue"]
        ),
        (&"track".into(), &"Order Completed".into(), &12.5.into())
    );
    let group = by_id("group-1");
    assert_eq!(
        (&group["groupId"], &group["traits"]["name"]),
        (&"acc_1".into(), &"Initech".into())
    );
    let alias = by_id("alias-1");
    assert_eq!(
        (&alias["previousId"], &alias["userId"]),
        (&"anon_1".into(), &"u1".into())
    );
    let page = by_id("page-1");
    assert_eq!(
        (&page["name"], &page["category"]),
        (&"Pricing".into(), &"Docs".into())
    );
    assert_eq!(by_id("screen-1")["type"], "screen");
    assert_eq!(by_id("identify-1")["type"], "identify");
    let stats = receiver.store().stats();
    assert_eq!(stats.rejected, 0, "{stats:?}");
}

#[tokio::test]
async fn refused_calls_are_never_queued() {
    let receiver = receiver(FaultPlan::none()).await;
    let client = HttpClient::builder(KEY)
        .host(receiver.url())
        .build()
        .unwrap();
    let err = client
        .track(TrackParams::new(Identity::user("u"), ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("invalid_payload"));
    let err = client
        .group(GroupParams::new(Identity::user("u"), ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("invalid_payload"));
    let err = client.alias(AliasParams::new("", "u")).await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_payload"));
    let big = "x".repeat(40_000);
    let err = client
        .page(ViewParams::new(Identity::user("u")).with_property("b", big))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("payload_too_large"));
    let report = client.close_and_flush().await.unwrap();
    assert_eq!((report.delivered, report.failed_count()), (0, 0));
    assert!(receiver.store().requests().is_empty());
}

#[tokio::test(start_paused = true)]
async fn retries_resend_every_type_with_the_same_message_ids() {
    let receiver = receiver(FaultPlan::first_n(2, 503)).await;
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&outcomes);
    let client = HttpClient::builder(KEY)
        .host(receiver.url())
        .on_outcome(move |outcome| {
            seen.lock()
                .unwrap()
                .push((outcome.message_id.to_owned(), outcome.result.is_ok()));
        })
        .build()
        .unwrap();
    for message in one_of_each(2) {
        client.send(message).await.unwrap();
    }
    let report = client
        .close_and_flush_with_timeout(Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(report.delivered, 6, "{report:?}");

    let requests = receiver.store().requests();
    assert_eq!(requests.len(), 3, "two refusals, then the delivery");
    for request in &requests {
        assert_eq!(
            request.message_ids, requests[0].message_ids,
            "same ids on every attempt"
        );
    }
    assert_eq!(requests[2].retry_count, Some(2));
    let mut outcomes = outcomes.lock().unwrap().clone();
    outcomes.sort();
    let mut expected: Vec<(String, bool)> =
        ["alias", "group", "identify", "page", "screen", "track"]
            .iter()
            .map(|kind| (format!("{kind}-2"), true))
            .collect();
    expected.sort();
    assert_eq!(outcomes, expected, "each event reported exactly once");
}

#[tokio::test]
async fn a_refused_request_fails_every_type_in_the_report() {
    let receiver = receiver(FaultPlan::first_n(1, 400)).await;
    let client = HttpClient::builder(KEY)
        .host(receiver.url())
        .build()
        .unwrap();
    for message in one_of_each(3) {
        client.send(message).await.unwrap();
    }
    let report = client.close_and_flush().await.unwrap();
    assert_eq!((report.delivered, report.failed_count()), (0, 6));
    for kind in ["identify", "track", "group", "alias", "page", "screen"] {
        let error = report.failure_of(&format!("{kind}-3")).expect("listed");
        assert_eq!(error.status(), Some(400));
    }
}

#[tokio::test]
async fn send_and_wait_confirms_one_event_of_any_type() {
    let receiver = receiver(FaultPlan::none()).await;
    let client = HttpClient::builder(KEY)
        .host(receiver.url())
        .build()
        .unwrap();
    client
        .send_and_wait(TrackParams::new(Identity::user("u"), "Signed Up"))
        .await
        .unwrap();
    let receipt = client
        .send_with_receipt(GroupParams::new(Identity::user("u"), "acc"))
        .await
        .unwrap();
    client.flush().await.unwrap();
    receipt.await.unwrap();
    assert_eq!(receiver.store().events().len(), 2);
    client.close_and_flush().await.unwrap();
}

#[tokio::test]
async fn the_in_memory_client_records_every_type() {
    let client = InMemoryClient::new();
    let dyn_client: &dyn SegmentClient = &client;
    for message in one_of_each(4) {
        dyn_client.send(message).await.unwrap();
    }
    dyn_client
        .track(TrackParams::new(Identity::user("u"), "E"))
        .await
        .unwrap();
    assert!(dyn_client.alias(AliasParams::new("p", "")).await.is_err());
    let kinds: Vec<_> = client.messages().iter().map(Message::kind).collect();
    assert_eq!(
        kinds,
        [
            "identify", "track", "group", "alias", "page", "screen", "track"
        ]
    );
    assert_eq!(client.calls().len(), 1, "calls() lists identify calls only");
    let events = client.events();
    assert_eq!(events[2]["groupId"], "acc_4");
    assert_eq!(events[3]["previousId"], "anon_4");
    let report = dyn_client.flush().await.unwrap();
    assert_eq!(report.delivered, 7);
    dyn_client
        .send_and_confirm(Message::Screen(ViewParams::new(Identity::user("u"))))
        .await
        .unwrap();
}

/// A client written against the identify-only trait still compiles, and
/// refuses the other types instead of dropping them.
struct IdentifyOnly;

impl SegmentClient for IdentifyOnly {
    fn identify(&self, _: IdentifyParams) -> BoxFuture<'_, Result<(), SegmentError>> {
        Box::pin(async { Ok(()) })
    }
    fn flush(&self) -> BoxFuture<'_, Result<DeliveryReport, SegmentError>> {
        Box::pin(async { Ok(DeliveryReport::default()) })
    }
    fn close_and_flush(&self) -> BoxFuture<'_, Result<DeliveryReport, SegmentError>> {
        Box::pin(async { Ok(DeliveryReport::default()) })
    }
}

#[tokio::test]
async fn an_identify_only_client_refuses_other_types() {
    let client = IdentifyOnly;
    client
        .send(IdentifyParams::new(Identity::user("u")).into())
        .await
        .unwrap();
    let err = client
        .track(TrackParams::new(Identity::user("u"), "E"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("invalid_config"));
    assert!(err.message().contains("`track`"), "{}", err.message());
}
