//! The relay against a real PostgreSQL and the real receiver: order per
//! customer, retries, dead letters, leases, shutdown.

mod common;

use std::time::Duration;

use common::TestDb;
use segment_client::HttpClient;
use segment_outbox::{Relay, RelayReport, Schema};
use segment_receiver::{FaultPlan, Receiver, ReceiverConfig};
use serde_json::Value;

fn relay(db: &TestDb, receiver: &Receiver) -> Relay {
    let host = receiver.url();
    Relay::new(db.url.clone(), move || {
        HttpClient::builder("write-key").host(host.clone())
    })
    .poll_interval(Duration::from_millis(20))
    .backoff(Duration::from_millis(5), Duration::from_millis(40))
    .until_empty(true)
}

async fn drain(relay: Relay) -> RelayReport {
    // A hang guard only: a drained outbox ends the run.
    tokio::time::timeout(Duration::from_secs(60), relay.run(std::future::pending()))
        .await
        .expect("the relay drains the outbox")
        .expect("the relay runs")
}

/// Inserts `versions` events per customer, version-major (every customer's
/// v0, then every v1, ...), one transaction per version; returns nothing:
/// each event carries its version as a trait.
async fn insert_versions(db: &TestDb, customers: usize, versions: usize) {
    let client = db.client().await;
    for version in 0..versions {
        client
            .execute(
                "SELECT segment.identify('c' || n, jsonb_build_object('version', $1::int))
                 FROM generate_series(1, $2::int) AS n",
                &[&(version as i32), &(customers as i32)],
            )
            .await
            .unwrap();
    }
}

fn versions_of(receiver: &Receiver, user: &str) -> Vec<i64> {
    receiver
        .store()
        .events_for_user(user)
        .iter()
        .map(|e| e["traits"]["version"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_customers_versions_arrive_in_order_under_many_workers_and_retries() {
    let db = TestDb::new().await;
    // A third of the requests fail with 503: without the per-customer rule a
    // retried v1 would arrive after the v2 another worker sent meanwhile.
    let receiver =
        Receiver::start(ReceiverConfig::new().faults(FaultPlan::fraction(0.3, 503, Some(7))))
            .await
            .unwrap();
    let (customers, versions) = (40, 5);
    insert_versions(&db, customers, versions).await;
    let report = drain(relay(&db, &receiver).workers(8).batch_size(7)).await;
    assert_eq!(report.delivered, (customers * versions) as u64);
    assert!(report.retried > 0, "the faults caused retries: {report:?}");
    for n in 1..=customers {
        let seen = versions_of(&receiver, &format!("c{n}"));
        // A retry after a lost answer may repeat a version, never reorder.
        let mut unique = seen.clone();
        unique.dedup();
        assert_eq!(
            unique,
            (0..versions as i64).collect::<Vec<_>>(),
            "c{n}: {seen:?}"
        );
    }
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM segment.outbox")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_429_are_retried_with_the_same_message_id() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(
        ReceiverConfig::new().faults(
            FaultPlan::first_n(2, 503)
                .with_rule(segment_receiver::Fault::FirstN {
                    n: 1,
                    status: 429,
                    retry_after: None,
                })
                .with_rule(segment_receiver::Fault::FirstN {
                    n: 1,
                    status: 500,
                    retry_after: None,
                }),
        ),
    )
    .await
    .unwrap();
    let client = db.client().await;
    let message_id: String = client
        .query_one("SELECT segment.identify('u1', '{\"plan\": \"pro\"}')", &[])
        .await
        .unwrap()
        .get(0);
    let report = drain(
        relay(&db, &receiver)
            .workers(1)
            .retention(Duration::from_secs(3600)),
    )
    .await;
    assert_eq!((report.delivered, report.retried, report.dead), (1, 4, 0));
    let stats = receiver.store().stats();
    assert_eq!(stats.responses_by_status.get(&503), Some(&2));
    assert_eq!(stats.responses_by_status.get(&429), Some(&1));
    assert_eq!(stats.responses_by_status.get(&500), Some(&1));
    assert_eq!(stats.accepted, 1);
    // Every attempt carried the messageId fixed at insert.
    assert_eq!(
        receiver.store().events()[0]["messageId"],
        message_id.as_str()
    );
    let row = client
        .query_one(
            "SELECT state, attempts, last_error FROM segment.outbox",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "delivered");
    assert_eq!(row.get::<_, i32>(1), 5);
    let last_error: String = row.get(2);
    assert!(
        last_error.contains("500"),
        "the last error is kept: {last_error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_dead_letters_and_retry_dead_sends_it_again() {
    let db = TestDb::new().await;
    let receiver =
        Receiver::start(ReceiverConfig::new().faults(FaultPlan::user_id("bad", 400, Some(1))))
            .await
            .unwrap();
    let client = db.client().await;
    client
        .batch_execute(
            "SELECT segment.identify('bad', '{}');
             SELECT segment.identify('good', '{}');",
        )
        .await
        .unwrap();
    let report = drain(relay(&db, &receiver).workers(1).batch_size(1)).await;
    assert_eq!((report.delivered, report.dead), (1, 1));
    let status = segment_outbox::status(&client, &Schema::default(), 10)
        .await
        .unwrap();
    assert_eq!((status.pending, status.leased, status.dead), (0, 0, 1));
    let dead = &status.dead_letters[0];
    assert_eq!(dead.user_id.as_deref(), Some("bad"));
    let error = dead.last_error.as_deref().unwrap();
    assert!(
        error.starts_with("http_status") && error.contains("400"),
        "{error}"
    );
    assert!(receiver.store().events_for_user("bad").is_empty());

    let revived = segment_outbox::retry_dead(&client, &Schema::default(), &[dead.id])
        .await
        .unwrap();
    assert_eq!(revived, 1);
    let status = segment_outbox::status(&client, &Schema::default(), 10)
        .await
        .unwrap();
    assert_eq!((status.pending, status.dead), (1, 0));
    let report = drain(relay(&db, &receiver)).await;
    assert_eq!(report.delivered, 1);
    assert_eq!(receiver.store().events_for_user("bad").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_edited_into_something_invalid_dead_letters_with_the_reason() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(ReceiverConfig::new()).await.unwrap();
    let client = db.client().await;
    client
        .batch_execute(
            "SELECT segment.identify('u1', '{}');
             SELECT segment.identify('u2', '{}');
             SELECT segment.identify('u3', '{}');
             UPDATE segment.outbox SET traits = '[1]' WHERE user_id = 'u1';
             UPDATE segment.outbox SET user_id = NULL WHERE user_id = 'u2';",
        )
        .await
        .unwrap();
    let report = drain(relay(&db, &receiver)).await;
    assert_eq!((report.delivered, report.dead), (1, 2));
    let status = segment_outbox::status(&client, &Schema::default(), 10)
        .await
        .unwrap();
    let reasons: Vec<&str> = status
        .dead_letters
        .iter()
        .map(|d| d.last_error.as_deref().unwrap())
        .collect();
    assert!(reasons[0].contains("traits is an array"), "{reasons:?}");
    assert!(
        reasons[1].contains("no user_id and no anonymous_id"),
        "{reasons:?}"
    );
    let sent: Vec<Value> = receiver.store().events();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["userId"], "u3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_lease_holds_its_customer_back_until_it_ends() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(ReceiverConfig::new()).await.unwrap();
    let client = db.client().await;
    // v1 was claimed by a relay that then died: leased for 400 ms more, by
    // the database's clock. v2 and another customer are free.
    client
        .batch_execute(
            "SELECT segment.identify('c1', '{\"version\": 1}');
             SELECT segment.identify('c1', '{\"version\": 2}');
             SELECT segment.identify('c2', '{\"version\": 1}');
             UPDATE segment.outbox SET leased_until = now() + interval '400 milliseconds',
                 lease_owner = 'dead-relay', attempts = 1
             WHERE id = (SELECT min(id) FROM segment.outbox);",
        )
        .await
        .unwrap();
    let status = segment_outbox::status(&client, &Schema::default(), 0)
        .await
        .unwrap();
    assert_eq!((status.leased, status.pending), (1, 2));
    let report = drain(relay(&db, &receiver).workers(4)).await;
    assert_eq!(report.delivered, 3);
    assert_eq!(versions_of(&receiver, "c1"), [1, 2]);
    assert_eq!(versions_of(&receiver, "c2"), [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_back_the_leases_of_what_was_not_sent() {
    let db = TestDb::new().await;
    // Every request hangs: nothing in flight can finish.
    let receiver = Receiver::start(ReceiverConfig::new().faults(FaultPlan::hang(1000)))
        .await
        .unwrap();
    insert_versions(&db, 20, 1).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = relay(&db, &receiver)
        .until_empty(false)
        .workers(2)
        .batch_size(5)
        .shutdown_timeout(Duration::from_millis(50));
    let run = tokio::spawn(relay.run(async {
        let _ = stopped.await;
    }));
    let client = db.client().await;
    // Wait (polling the database, not the clock) until both workers hold leases.
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            std::time::Instant::now() < give_up,
            "the workers never held leases"
        );
        let status = segment_outbox::status(&client, &Schema::default(), 0)
            .await
            .unwrap();
        if status.leased == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the relay stops")
        .unwrap()
        .unwrap();
    assert_eq!((report.delivered, report.released), (0, 10));
    let status = segment_outbox::status(&client, &Schema::default(), 0)
        .await
        .unwrap();
    assert_eq!((status.pending, status.leased), (20, 0));
    // Given back, the attempt does not count.
    assert_eq!(
        db.scalar::<i64>("SELECT sum(attempts) FROM segment.outbox")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_rows_are_kept_for_the_retention_then_pruned() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(ReceiverConfig::new()).await.unwrap();
    insert_versions(&db, 30, 1).await;
    drain(relay(&db, &receiver).retention(Duration::from_secs(3600))).await;
    let client = db.client().await;
    let schema = Schema::default();
    assert_eq!(
        segment_outbox::status(&client, &schema, 0)
            .await
            .unwrap()
            .delivered,
        30
    );
    assert_eq!(
        segment_outbox::prune(&client, &schema, Duration::from_secs(3600), 7)
            .await
            .unwrap(),
        0
    );
    client
        .batch_execute(
            "UPDATE segment.outbox SET finished_at = now() - interval '2 hours' WHERE id % 2 = 0",
        )
        .await
        .unwrap();
    assert_eq!(
        segment_outbox::prune(&client, &schema, Duration::from_secs(3600), 7)
            .await
            .unwrap(),
        15
    );
    assert_eq!(
        segment_outbox::status(&client, &schema, 0)
            .await
            .unwrap()
            .delivered,
        15
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_before_init_says_so() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute("DROP SCHEMA segment CASCADE")
        .await
        .unwrap();
    let receiver = Receiver::start(ReceiverConfig::new()).await.unwrap();
    let error = relay(&db, &receiver)
        .run(std::future::pending())
        .await
        .unwrap_err();
    assert_eq!(error.code(), "schema_missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_for_a_batch_dead_letters_only_the_event_segment_refuses() {
    let db = TestDb::new().await;
    // Segment answers 400 for a whole request: every request with c3 in it.
    let receiver =
        Receiver::start(ReceiverConfig::new().faults(FaultPlan::user_id("c3", 400, None)))
            .await
            .unwrap();
    insert_versions(&db, 10, 1).await;
    let report = drain(relay(&db, &receiver).workers(1).batch_size(10)).await;
    assert_eq!((report.delivered, report.dead), (9, 1));
    let client = db.client().await;
    let status = segment_outbox::status(&client, &Schema::default(), 10)
        .await
        .unwrap();
    assert_eq!(status.dead_letters.len(), 1);
    assert_eq!(status.dead_letters[0].user_id.as_deref(), Some("c3"));
    assert_eq!(receiver.store().stats().accepted, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_key_makes_events_wait_not_die() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(ReceiverConfig::new().write_key("the-right-key"))
        .await
        .unwrap();
    insert_versions(&db, 3, 1).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(relay(&db, &receiver).until_empty(false).run(async {
        let _ = stopped.await;
    }));
    let client = db.client().await;
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            std::time::Instant::now() < give_up,
            "the relay never retried"
        );
        let row = client
            .query_one(
                "SELECT min(attempts)::bigint, count(*) FILTER (WHERE state = 'dead') FROM segment.outbox",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, i64>(1),
            0,
            "a refused key dead-lettered events"
        );
        if row.get::<_, i64>(0) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    let report = run.await.unwrap().unwrap();
    assert_eq!((report.delivered, report.dead), (0, 0));
    let status = segment_outbox::status(&client, &Schema::default(), 0)
        .await
        .unwrap();
    assert_eq!((status.pending, status.dead), (3, 0));
    let error: String = client
        .query_one("SELECT max(last_error) FROM segment.outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert!(error.contains("401"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_wakes_an_idle_relay_without_waiting_for_the_poll() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(ReceiverConfig::new()).await.unwrap();
    let client = db.client().await;
    client
        .batch_execute("SELECT segment.identify('first', '{}')")
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // The poll never comes in this test: only NOTIFY can wake the relay.
    let run = tokio::spawn(
        relay(&db, &receiver)
            .until_empty(false)
            .poll_interval(Duration::from_secs(3600))
            .run(async {
                let _ = stopped.await;
            }),
    );
    let store = receiver.store().clone();
    let wait_for = async |user: &str| {
        let give_up = std::time::Instant::now() + Duration::from_secs(30);
        while store.events_for_user(user).is_empty() {
            assert!(std::time::Instant::now() < give_up, "{user} never arrived");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    // Delivered by the relay's first claims; then every worker is idle.
    wait_for("first").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    client
        .batch_execute("SELECT segment.identify('second', '{}')")
        .await
        .unwrap();
    wait_for("second").await;
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_may_turn_notify_off() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let db = TestDb::new().await;
    // A LISTENing connection, polled by hand to count notifications.
    let config: tokio_postgres::Config = db.url.parse().unwrap();
    let (listen, mut connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    let notified = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&notified);
    let driver = tokio::spawn(async move {
        while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if matches!(message, tokio_postgres::AsyncMessage::Notification(_)) {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    listen.batch_execute("LISTEN segment_outbox").await.unwrap();

    let client = db.client().await;
    client
        .batch_execute("SELECT segment.identify('u1', '{}')")
        .await
        .unwrap();
    client
        .batch_execute("SET segment.notify = off; SELECT segment.identify('u2', '{}')")
        .await
        .unwrap();
    // A round trip on the listening connection brings what is queued for it.
    listen.batch_execute("SELECT 1").await.unwrap();
    assert_eq!(notified.load(Ordering::SeqCst), 1);
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM segment.outbox")
            .await,
        2
    );
    drop(listen);
    let _ = driver.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_max_attempts_a_failure_that_never_ends_becomes_a_dead_letter() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(ReceiverConfig::new().faults(FaultPlan::first_n(1000, 503)))
        .await
        .unwrap();
    insert_versions(&db, 1, 1).await;
    let report = drain(relay(&db, &receiver).max_attempts(3)).await;
    assert_eq!((report.delivered, report.retried, report.dead), (0, 2, 1));
    let client = db.client().await;
    let status = segment_outbox::status(&client, &Schema::default(), 10)
        .await
        .unwrap();
    let dead = &status.dead_letters[0];
    assert_eq!(dead.attempts, 3);
    assert!(
        dead.last_error.as_deref().unwrap().contains("503"),
        "{dead:?}"
    );
    assert_eq!(
        receiver.store().stats().responses_by_status.get(&503),
        Some(&3)
    );
}
