//! Sending one claimed batch through `segment-client`, outside any transaction.
//!
//! Each relay worker has its own [`HttpClient`], so a flush covers exactly
//! that worker's batch; the client's `on_outcome` hook says what happened to
//! each event. The client makes one attempt per claim: retries are the
//! relay's job (`available_at`), so a lease is never held through a long
//! backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use segment_client::{HttpClient, HttpClientBuilder, PreparedEvent, SegmentError};

use crate::claim::describe;
use crate::error::{Kind, OutboxError};
use crate::outcome::Verdict;

/// Makes the client builders the relay's workers start from.
pub type ClientFactory = Arc<dyn Fn() -> HttpClientBuilder + Send + Sync>;

type Outcomes = Arc<Mutex<Vec<(String, Result<(), SegmentError>)>>>;

/// One worker's clients and the outcomes their hooks collect.
pub(crate) struct Deliverer {
    factory: ClientFactory,
    batch_size: usize,
    deadline: Duration,
    /// Sends a claimed batch as few requests.
    client: HttpClient,
    /// Sends events one per request, to find which events of a refused
    /// batch Segment refuses: a 400 answers for the whole request.
    single: HttpClient,
    outcomes: Outcomes,
}

impl Deliverer {
    /// `deadline` bounds one batch's delivery, retries and `Retry-After`
    /// pauses included; it is kept well inside the lease so no request of
    /// this worker can still land after its lease has ended.
    pub fn new(
        factory: ClientFactory,
        batch_size: usize,
        deadline: Duration,
    ) -> Result<Self, OutboxError> {
        let outcomes = Outcomes::default();
        let client = build(&factory, batch_size, deadline, &outcomes)?;
        let single = build(&factory, 1, deadline, &outcomes)?;
        Ok(Self {
            factory,
            batch_size,
            deadline,
            client,
            single,
            outcomes,
        })
    }

    /// Sends `events` (row id, event) and returns a verdict for each row
    /// whose outcome is known. Rows missing from the answer were not
    /// finished by the deadline: their lease stays, so they come back when it
    /// ends, by which time this worker's client has given them up.
    ///
    /// When Segment refuses a request of several events for good (a 400),
    /// each of them is sent again alone, so only the culprits become dead
    /// letters.
    ///
    /// `cancel` resolving abandons the batch at once (shutdown's timeout).
    pub async fn send(
        &mut self,
        events: Vec<(i64, PreparedEvent)>,
        cancel: impl Future<Output = ()>,
    ) -> Result<Vec<(i64, Verdict)>, OutboxError> {
        let until = tokio::time::Instant::now() + self.deadline;
        let total = events.len();
        let mut rows: HashMap<String, (Vec<i64>, PreparedEvent)> = HashMap::with_capacity(total);
        for (id, event) in events {
            rows.entry(event.message_id().to_owned())
                .or_insert_with(|| (Vec::new(), event.clone()))
                .0
                .push(id);
            self.client.queue_prepared(event).await.map_err(stopped)?;
        }
        tokio::pin!(cancel);
        let mut finished = tokio::select! {
            report = self.client.flush_with_timeout(until - tokio::time::Instant::now()) => report.is_ok(),
            () = &mut cancel => false,
        };
        let mut verdicts = Vec::with_capacity(total);
        let mut suspects = Vec::new();
        for (message_id, result) in self.take_outcomes() {
            let Some((ids, event)) = rows.remove(&message_id) else {
                continue;
            };
            match verdict(result) {
                Verdict::Dead(_) if total > 1 => suspects.push((ids, event)),
                verdict => verdicts.extend(ids.into_iter().map(|id| (id, verdict.clone()))),
            }
        }
        if finished && !suspects.is_empty() {
            for (ids, event) in &suspects {
                rows.insert(event.message_id().to_owned(), (ids.clone(), event.clone()));
                self.single
                    .queue_prepared(event.clone())
                    .await
                    .map_err(stopped)?;
            }
            finished = tokio::select! {
                report = self.single.flush_with_timeout(until.saturating_duration_since(tokio::time::Instant::now())) => report.is_ok(),
                () = &mut cancel => false,
            };
            for (message_id, result) in self.take_outcomes() {
                if let Some((ids, _)) = rows.remove(&message_id) {
                    let verdict = verdict(result);
                    verdicts.extend(ids.into_iter().map(|id| (id, verdict.clone())));
                }
            }
        }
        if !finished || !rows.is_empty() {
            // Some events are still inside a client: drop the clients
            // (abandoning them) and start clean, so nothing of this batch
            // is sent later.
            let _ = self
                .client
                .close_and_flush_with_timeout(Duration::ZERO)
                .await;
            let _ = self
                .single
                .close_and_flush_with_timeout(Duration::ZERO)
                .await;
            self.outcomes = Outcomes::default();
            self.client = build(
                &self.factory,
                self.batch_size,
                self.deadline,
                &self.outcomes,
            )?;
            self.single = build(&self.factory, 1, self.deadline, &self.outcomes)?;
        }
        Ok(verdicts)
    }

    fn take_outcomes(&self) -> Vec<(String, Result<(), SegmentError>)> {
        std::mem::take(&mut *self.outcomes.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Stops the clients, waiting at most `timeout`.
    pub async fn close(self, timeout: Duration) {
        let _ = self.client.close_and_flush_with_timeout(timeout).await;
        let _ = self.single.close_and_flush_with_timeout(timeout).await;
    }
}

/// What an event's outcome means for its row.
fn verdict(result: Result<(), SegmentError>) -> Verdict {
    match result {
        Ok(()) => Verdict::Delivered,
        // A refused write key is the operator's to fix; the events must wait, not die.
        Err(error) if error.is_unauthorized() => {
            tracing::error!(%error, "Segment refused the write key; events wait until it is fixed");
            Verdict::Retry(describe(&error))
        }
        Err(error) if error.is_retryable() => Verdict::Retry(describe(&error)),
        Err(error) if error.is_closed() => Verdict::Release,
        Err(error) => Verdict::Dead(describe(&error)),
    }
}

fn stopped(error: SegmentError) -> OutboxError {
    OutboxError::with_source(Kind::InvalidConfig, "the Segment client stopped", error)
}
fn build(
    factory: &ClientFactory,
    batch_size: usize,
    deadline: Duration,
    outcomes: &Outcomes,
) -> Result<HttpClient, OutboxError> {
    let sink = Arc::clone(outcomes);
    factory()
        .batch_size(batch_size)
        .queue_capacity(batch_size.max(1))
        // Sent when the worker flushes, not on a timer.
        .flush_interval(Duration::from_secs(3600))
        .max_attempts(1)
        .retry_budget(deadline)
        .request_timeout(deadline)
        .flush_timeout(deadline)
        .on_outcome(move |outcome| {
            sink.lock().unwrap_or_else(PoisonError::into_inner).push((
                outcome.message_id.to_owned(),
                outcome.result.map_err(Clone::clone),
            ));
        })
        .build()
        .map_err(|e| {
            OutboxError::with_source(Kind::InvalidConfig, "cannot build the Segment client", e)
        })
}
