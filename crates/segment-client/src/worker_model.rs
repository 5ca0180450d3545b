//! Model-based tests of the worker: random sequences of identify, flush,
//! close, server answers and deadlines on paused time, checking after each
//! sequence that every event was reported exactly once, that no request broke
//! Segment's limits, and that no retry came sooner than the policy allows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;

use crate::batcher::{MAX_BATCH_EVENTS, MAX_REQUEST_BYTES};
use crate::client::HttpClient;
use crate::message::{IdentifyParams, Identity};
use crate::scripted::{Answer, Server};

#[derive(Debug, Clone)]
enum Op {
    Identify(usize),
    Flush(u64),
    Sleep(u64),
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        4 => Just(Answer::Ok),
        1 => prop::sample::select(vec![400u16, 404, 413, 500, 502, 503, 501]).prop_map(Answer::Status),
        1 => (prop::sample::select(vec![429u16, 503]), 0u64..5).prop_map(|(s, r)| Answer::RetryAfter(s, r)),
        1 => Just(Answer::Status(429)),
        1 => Just(Answer::Timeout),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..8).prop_map(Op::Identify),
        1 => (0u64..20).prop_map(Op::Flush),
        1 => (0u64..3000).prop_map(Op::Sleep),
    ]
}

#[derive(Debug, Clone)]
struct Setup {
    batch_size: usize,
    max_in_flight: usize,
    max_attempts: u32,
    close_timeout: u64,
    answers: Vec<Answer>,
    ops: Vec<Op>,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        1usize..6,
        1usize..4,
        1u32..5,
        prop::sample::select(vec![0u64, 1, 30, 3600]),
        prop::collection::vec(answer(), 1..8),
        prop::collection::vec(op(), 0..25),
    )
        .prop_map(
            |(batch_size, max_in_flight, max_attempts, close_timeout, answers, ops)| Setup {
                batch_size,
                max_in_flight,
                max_attempts,
                close_timeout,
                answers,
                ops,
            },
        )
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

fn check(setup: &Setup) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(run(setup))
}

async fn run(setup: &Setup) -> Result<(), TestCaseError> {
    let server = Arc::new(Server::new(
        setup.answers.clone(),
        Duration::from_millis(20),
        REQUEST_TIMEOUT,
    ));
    let outcomes: Arc<Mutex<HashMap<String, Vec<bool>>>> = Arc::default();
    let seen = Arc::clone(&outcomes);
    let client = HttpClient::builder("model-key")
        .scripted(Arc::clone(&server))
        .gzip(false)
        .batch_size(setup.batch_size)
        .max_in_flight(setup.max_in_flight)
        .max_attempts(setup.max_attempts)
        .request_timeout(REQUEST_TIMEOUT)
        .retry_budget(Duration::from_secs(120))
        .flush_interval(Duration::from_millis(500))
        .on_outcome(move |o| {
            seen.lock()
                .unwrap()
                .entry(o.message_id.to_owned())
                .or_default()
                .push(o.result.is_ok());
        })
        .build()
        .unwrap();
    let mut identified = Vec::new();
    let mut reported = (0u64, 0u64);
    for op in &setup.ops {
        match op {
            Op::Identify(n) => {
                for _ in 0..*n {
                    let id = crate::message::new_message_id();
                    let params =
                        IdentifyParams::new(Identity::user(format!("u{}", identified.len())))
                            .with_message_id(&id);
                    client.identify(params).await.unwrap();
                    identified.push(id);
                }
            }
            Op::Flush(secs) => {
                let report = match client.flush_with_timeout(Duration::from_secs(*secs)).await {
                    Ok(report) => report,
                    // Documented: the worker, busy with sealed batches, did
                    // not take the flush before its deadline.
                    Err(error) => {
                        prop_assert_eq!(error.code(), Some("deadline_exceeded"));
                        continue;
                    }
                };
                reported.0 += report.delivered;
                reported.1 += report.failed_count();
                // Pending events were queued before the flush, and are not finished.
                for pending in &report.pending {
                    prop_assert!(identified.contains(&pending.message_id));
                }
            }
            Op::Sleep(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
        }
    }
    let close = client
        .close_and_flush_with_timeout(Duration::from_secs(setup.close_timeout))
        .await
        .unwrap();
    reported.0 += close.delivered;
    reported.1 += close.failed_count();
    let again = client
        .close_and_flush_with_timeout(Duration::from_secs(1))
        .await
        .unwrap();
    prop_assert_eq!(
        &again.pending,
        &close.pending,
        "a second close reports the same pending events"
    );

    // Every event: exactly one outcome, or pending at the close; never both.
    let outcomes = outcomes.lock().unwrap().clone();
    let pending: HashSet<&str> = close
        .pending
        .iter()
        .map(|p| p.message_id.as_str())
        .collect();
    prop_assert_eq!(pending.len(), close.pending.len(), "pending listed once");
    for id in &identified {
        let n = outcomes.get(id).map_or(0, Vec::len);
        let is_pending = pending.contains(id.as_str());
        prop_assert!(
            (n == 1) != is_pending,
            "{} has {} outcomes and pending={}",
            id,
            n,
            is_pending
        );
    }
    prop_assert_eq!(outcomes.len(), identified.len() - pending.len());
    let delivered = outcomes.values().filter(|v| v[0]).count() as u64;
    prop_assert_eq!(reported.0, delivered, "reports add up to the outcomes");
    prop_assert_eq!(reported.1, outcomes.len() as u64 - delivered);

    let requests = server.requests();
    // Segment's limits, and the client's own.
    for r in &requests {
        prop_assert!(!r.message_ids.is_empty());
        prop_assert!(r.message_ids.len() <= setup.batch_size.min(MAX_BATCH_EVENTS));
        prop_assert!(r.body_bytes <= MAX_REQUEST_BYTES);
    }
    // A delivered event's last request was answered 2xx.
    let mut by_batch: BTreeMap<&str, Vec<&crate::scripted::Request>> = BTreeMap::new();
    for r in &requests {
        by_batch
            .entry(r.message_ids[0].as_str())
            .or_default()
            .push(r);
    }
    for (first, attempts) in &by_batch {
        if let Some(ok) = outcomes.get(*first)
            && ok[0]
        {
            prop_assert_eq!(attempts.last().unwrap().answer, Answer::Ok);
        }
        let mut counted = 0;
        for pair in attempts.windows(2) {
            let (before, after) = (pair[0], pair[1]);
            prop_assert_eq!(
                &before.message_ids,
                &after.message_ids,
                "a retry resends the same events"
            );
            prop_assert_eq!(after.retry_count, before.retry_count + 1);
            // Retry-After is a lower bound on the wait before the next attempt.
            if let Answer::RetryAfter(_, secs) = before.answer {
                prop_assert!(
                    after.sent_at >= before.answered_at + Duration::from_secs(secs),
                    "retried {:?} after a Retry-After of {} s",
                    after.sent_at - before.answered_at,
                    secs
                );
            }
            prop_assert!(after.sent_at >= before.answered_at);
        }
        for r in attempts {
            if !matches!(r.answer, Answer::RetryAfter(_, s) if s > 0) {
                counted += 1;
            }
        }
        prop_assert!(
            counted <= setup.max_attempts,
            "{} counted attempts, max {}",
            counted,
            setup.max_attempts
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn every_event_is_reported_once_within_limits_and_retry_rules(setup in setup()) {
        check(&setup)?;
    }
}
