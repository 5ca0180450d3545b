//! The durable outbox: events a client could not deliver before it stopped
//! are sent by the next client on the same outbox, with the same messageIds.
#![cfg(feature = "outbox")]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use segment_client::{HttpClient, IdentifyParams, Identity};
use segment_receiver::{FaultPlan, Receiver, ReceiverConfig};

/// A receiver that holds every request open: nothing is delivered.
async fn hanging_receiver() -> Receiver {
    Receiver::start(ReceiverConfig::new().faults(FaultPlan::hang(u32::MAX)))
        .await
        .unwrap()
}

/// A client on the durable outbox at `outbox`, optionally with a request timeout.
fn outbox_client(receiver: &Receiver, outbox: &Path, timeout: Option<Duration>) -> HttpClient {
    let builder = HttpClient::builder("key")
        .host(receiver.url())
        .outbox(outbox);
    match timeout {
        Some(timeout) => builder.request_timeout(timeout),
        None => builder,
    }
    .build()
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn undelivered_events_are_sent_after_a_restart_with_their_message_ids() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox.sqlite");
    // Nothing answers: the first client cannot deliver anything.
    let receiver = hanging_receiver().await;
    let client = outbox_client(&receiver, &outbox, Some(Duration::from_secs(60)));
    for i in 0..5 {
        client
            .identify(IdentifyParams::new(Identity::user(format!("u{i}"))))
            .await
            .unwrap();
    }
    let report = client
        .close_and_flush_with_timeout(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(report.pending.len(), 5, "{report:?}");
    let first_ids: BTreeSet<String> = report
        .pending
        .iter()
        .map(|p| p.message_id.clone())
        .collect();
    receiver.set_faults(FaultPlan::none());

    // A new client on the same outbox sends them first, unchanged.
    let client = outbox_client(&receiver, &outbox, None);
    client
        .identify(IdentifyParams::new(Identity::user("new")))
        .await
        .unwrap();
    let report = client.close_and_flush().await.unwrap();
    assert_eq!(report.delivered, 6);
    let delivered: BTreeSet<String> = receiver
        .store()
        .events()
        .iter()
        .filter(|e| e["userId"] != "new")
        .map(|e| e["messageId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(delivered, first_ids);

    // Delivered events leave the outbox: a third client has nothing to send.
    let client = outbox_client(&receiver, &outbox, None);
    let report = client.close_and_flush().await.unwrap();
    assert_eq!(report.delivered, 0);
}

#[tokio::test(start_paused = true)]
async fn every_type_survives_a_restart_in_the_outbox() {
    use segment_client::{AliasParams, GroupParams, Message, TrackParams, ViewParams};
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox.sqlite");
    let receiver = hanging_receiver().await;
    let client = outbox_client(&receiver, &outbox, Some(Duration::from_secs(60)));
    let user = Identity::user("u1");
    let messages: Vec<Message> = vec![
        TrackParams::new(user.clone(), "E").into(),
        GroupParams::new(user.clone(), "g").into(),
        AliasParams::new("p", "u1").into(),
        Message::Page(ViewParams::new(user.clone())),
        Message::Screen(ViewParams::new(user)),
    ];
    for message in messages {
        client.send(message).await.unwrap();
    }
    let report = client
        .close_and_flush_with_timeout(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(report.pending.len(), 5, "{report:?}");
    receiver.set_faults(FaultPlan::none());

    let client = outbox_client(&receiver, &outbox, None);
    let report = client.close_and_flush().await.unwrap();
    assert_eq!(report.delivered, 5, "{report:?}");
    let stats = receiver.store().stats();
    let types: Vec<&str> = stats.accepted_by_type.keys().map(String::as_str).collect();
    assert_eq!(types, ["alias", "group", "page", "screen", "track"]);
    assert_eq!(stats.rejected, 0);
}
