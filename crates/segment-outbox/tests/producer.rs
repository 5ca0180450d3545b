//! The producer side against a real PostgreSQL: the Rust API and the SQL
//! function `segment.identify`, each refusing what Segment would refuse.

mod common;

use std::time::Duration;

use common::TestDb;
use segment_client::{HttpClient, IdentifyParams, Identity, UserTraits};
use segment_outbox::{Producer, Relay};
use segment_receiver::{Receiver, ReceiverConfig};
use serde_json::{Value, json};

fn relay(db: &TestDb, receiver: &Receiver) -> Relay {
    let host = receiver.url();
    Relay::new(db.url.clone(), move || {
        HttpClient::builder("write-key").host(host.clone())
    })
    .poll_interval(Duration::from_millis(20))
    .until_empty(true)
}

async fn drain(relay: Relay) -> segment_outbox::RelayReport {
    // A hang guard only: a drained outbox ends the run.
    tokio::time::timeout(Duration::from_secs(60), relay.run(std::future::pending()))
        .await
        .expect("the relay drains the outbox")
        .expect("the relay runs")
}

fn traits(email: &str) -> UserTraits {
    UserTraits {
        email: Some(email.into()),
        ..UserTraits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_sends_nothing_and_commit_sends_once() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(ReceiverConfig::new()).await.unwrap();
    let mut app = db.client().await;
    let producer = Producer::default();

    let tx = app.transaction().await.unwrap();
    producer
        .identify(
            &tx,
            IdentifyParams::new(Identity::user("rolled_back")).with_traits(traits("r@example.com")),
        )
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let tx = app.transaction().await.unwrap();
    let message_id = producer
        .identify(
            &tx,
            IdentifyParams::new(Identity::user("committed")).with_traits(traits("c@example.com")),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let report = drain(relay(&db, &receiver)).await;
    assert_eq!(report.delivered, 1);
    let events = receiver.store().events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["userId"], "committed");
    assert_eq!(events[0]["messageId"], message_id.as_str());
    assert_eq!(events[0]["traits"]["email"], "c@example.com");
    assert_eq!(receiver.store().stats().duplicates, 0);
    // Delivered rows are deleted by default.
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM segment.outbox")
            .await,
        0
    );

    // A second relay run finds nothing more to send.
    let again = drain(relay(&db, &receiver)).await;
    assert_eq!(again.delivered, 0);
    assert_eq!(receiver.store().stats().accepted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_producer_refuses_what_segment_client_refuses_and_writes_nothing() {
    let db = TestDb::new().await;
    let app = db.client().await;
    let producer = Producer::default();
    let empty = producer
        .identify(&app, IdentifyParams::new(Identity::user("  ")))
        .await
        .unwrap_err();
    assert!(empty.is_invalid_event(), "{empty:?}");
    assert_eq!(
        empty.segment_error().and_then(|e| e.code()),
        Some("invalid_payload")
    );

    let mut big = UserTraits::default();
    big.custom
        .insert("blob".into(), Value::String("x".repeat(33_000)));
    let too_large = producer
        .identify(
            &app,
            IdentifyParams::new(Identity::user("u1")).with_traits(big),
        )
        .await
        .unwrap_err();
    assert_eq!(
        too_large.segment_error().and_then(|e| e.code()),
        Some("payload_too_large")
    );

    let long_id = producer
        .identify(
            &app,
            IdentifyParams::new(Identity::user("u1")).with_message_id("m".repeat(100)),
        )
        .await
        .unwrap_err();
    assert!(long_id.is_invalid_event());
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM segment.outbox")
            .await,
        0
    );
}

/// Calls `segment.identify` with the given arguments (SQL text), returning
/// the messageId or the database's error message.
async fn call(db: &TestDb, args: &str) -> Result<String, String> {
    let client = db.client().await;
    client
        .query_one(&format!("SELECT segment.identify({args})"), &[])
        .await
        .map(|row| row.get(0))
        .map_err(|e| {
            e.as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or_else(|| e.to_string())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_function_refuses_what_segment_would_refuse() {
    let db = TestDb::new().await;
    let refusals = [
        ("NULL, '{}'", "no identity"),
        ("NULL, '{}', NULL", "no identity"),
        ("'', '{}'", "user_id is empty"),
        ("'u1', '{}', ' '", "anonymous_id is empty"),
        ("'u1', '[1, 2]'", "traits must be a JSON object"),
        ("'u1', '\"plain\"'", "traits must be a JSON object"),
        (
            "'u1', '{}', context => '[]'",
            "context must be a JSON object",
        ),
        ("'u1', '{}', message_id => ''", "message_id is empty"),
        (
            "'u1', '{}', message_id => repeat('m', 100)",
            "Segment requires fewer than 100",
        ),
        (
            "'u1', jsonb_build_object('blob', repeat('x', 32000))",
            "Segment drops events over 32000 bytes",
        ),
    ];
    for (args, expected) in refusals {
        let error = call(&db, args).await.expect_err(args);
        assert!(error.contains(expected), "{args}: {error}");
        assert!(error.starts_with("segment.identify:"), "{error}");
    }
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM segment.outbox")
            .await,
        0
    );

    // Accepted: an anonymous visitor, a caller's messageId, defaults filled in.
    let anonymous = call(
        &db,
        "NULL, '{\"plan\": \"free\"}', anonymous_id => 'anon-1'",
    )
    .await
    .unwrap();
    assert_eq!(anonymous.len(), 36, "a fresh UUID");
    let chosen = call(&db, "'u1', '{}', message_id => 'import-1'")
        .await
        .unwrap();
    assert_eq!(chosen, "import-1");
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM segment.outbox")
            .await,
        2
    );
}

/// Traits of 2,000 small keys, padded so that the
/// event's compact JSON is exactly `target` bytes when sent for `u1` with
/// messageId `m1` at a fixed time.
fn traits_of_size(target: usize) -> serde_json::Map<String, Value> {
    let mut traits = serde_json::Map::new();
    for i in 0..2000 {
        traits.insert(format!("k{i:04}"), json!(1));
    }
    // The event as sent, in the client's field order; checked against the
    // client's own serialisation below.
    let size = |t: &serde_json::Map<String, Value>| {
        let event = json!({"type": "identify", "messageId": "m1",
            "timestamp": "2024-05-01T00:00:00.000Z", "userId": "u1", "traits": t});
        serde_json::to_vec(&event).unwrap().len()
    };
    traits.insert("pad".into(), json!(""));
    let base = size(&traits);
    assert!(base < target, "{base}");
    traits.insert("pad".into(), json!("p".repeat(target - base)));
    assert_eq!(size(&traits), target);
    let mut params = IdentifyParams::new(Identity::user("u1")).with_message_id("m1");
    params.traits.custom = traits.clone();
    params.timestamp = Some("2024-05-01T00:00:00Z".parse().unwrap());
    match segment_outbox::validate(&params) {
        Ok(event) => assert_eq!(event.json().len(), target),
        Err(error) => assert!(target > 32_000, "{error}"),
    }
    traits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_size_limit_agrees_with_segment_client_at_the_boundary() {
    // jsonb prints ": " and ", " where the sent JSON has ":" and ",": with
    // 2,000 keys that is about 4,000 bytes the function must not count.
    let db = TestDb::new().await;
    let client = db.client().await;
    let sql = "SELECT segment.identify('u1', $1::jsonb, message_id => 'm1', event_time => '2024-05-01T00:00:00Z')";
    let at_limit = Value::Object(traits_of_size(32_000));
    client
        .query_one(sql, &[&at_limit])
        .await
        .expect("32,000 bytes is allowed");
    let over = Value::Object(traits_of_size(32_001));
    let error = client.query_one(sql, &[&over]).await.unwrap_err();
    let message = error.as_db_error().unwrap().message();
    assert!(message.contains("the event is 32001 bytes"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_sql_function_stores_is_sent_exactly() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(ReceiverConfig::new()).await.unwrap();
    let message_id = call(
        &db,
        "'u1', '{\"email\": \"a@example.com\", \"age\": \"thirty\", \"nested\": {\"x\": [1, 2]}}', \
         anonymous_id => 'a1', event_time => '2024-05-01T12:00:00.250Z', \
         context => '{\"ip\": \"10.0.0.1\"}', integrations => '{\"All\": false}'",
    )
    .await
    .unwrap();
    drain(relay(&db, &receiver)).await;
    let events = receiver.store().events();
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event["type"], "identify");
    assert_eq!(event["messageId"], message_id.as_str());
    assert_eq!(event["userId"], "u1");
    assert_eq!(event["anonymousId"], "a1");
    assert_eq!(event["timestamp"], "2024-05-01T12:00:00.250Z");
    assert_eq!(
        event["traits"],
        json!({"email": "a@example.com", "age": "thirty", "nested": {"x": [1, 2]}})
    );
    assert_eq!(event["context"]["ip"], "10.0.0.1");
    assert_eq!(event["context"]["library"]["name"], "segment-sync");
    assert_eq!(event["integrations"], json!({"All": false}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_is_idempotent_and_versioned() {
    let db = TestDb::new().await;
    let mut client = db.client().await;
    let again = segment_outbox::init(&mut client, &segment_outbox::Schema::default())
        .await
        .unwrap();
    assert_eq!(again.from_version, segment_outbox::SCHEMA_VERSION);
    assert_eq!(again.to_version, segment_outbox::SCHEMA_VERSION);
    client
        .batch_execute("INSERT INTO segment.schema_version (version) VALUES (999)")
        .await
        .unwrap();
    let newer = segment_outbox::init(&mut client, &segment_outbox::Schema::default())
        .await
        .unwrap_err();
    assert_eq!(newer.code(), "schema_newer");
    assert!(newer.is_schema());
}
