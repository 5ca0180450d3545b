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

/// One worker's client and the outcomes its hook collects.
pub(crate) struct Deliverer {
    factory: ClientFactory,
    batch_size: usize,
    deadline: Duration,
    client: HttpClient,
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
        Ok(Self {
            factory,
            batch_size,
            deadline,
            client,
            outcomes,
        })
    }

    /// Sends `events` (row id, event) and returns a verdict for each row
    /// whose outcome is known. Rows missing from the answer were not
    /// finished by the deadline: their lease stays, so they come back when it
    /// ends, by which time this worker's client has given them up.
    ///
    /// `cancel` resolving abandons the batch at once (shutdown's timeout).
    pub async fn send(
        &mut self,
        events: Vec<(i64, PreparedEvent)>,
        cancel: impl Future<Output = ()>,
    ) -> Result<Vec<(i64, Verdict)>, OutboxError> {
        let mut rows: HashMap<String, Vec<i64>> = HashMap::with_capacity(events.len());
        let total = events.len();
        for (id, event) in events {
            rows.entry(event.message_id().to_owned())
                .or_default()
                .push(id);
            if let Err(error) = self.client.queue_prepared(event).await {
                return Err(OutboxError::with_source(
                    Kind::InvalidConfig,
                    "the Segment client stopped",
                    error,
                ));
            }
        }
        let finished = tokio::select! {
            report = self.client.flush_with_timeout(self.deadline) => report.is_ok(),
            () = cancel => false,
        };
        let outcomes =
            std::mem::take(&mut *self.outcomes.lock().unwrap_or_else(PoisonError::into_inner));
        let mut verdicts = Vec::with_capacity(total);
        for (message_id, result) in outcomes {
            let Some(ids) = rows.remove(&message_id) else {
                continue;
            };
            let verdict = match result {
                Ok(()) => Verdict::Delivered,
                Err(error) if error.is_retryable() => Verdict::Retry(describe(&error)),
                Err(error) if error.is_closed() => Verdict::Release,
                Err(error) => Verdict::Dead(describe(&error)),
            };
            verdicts.extend(ids.into_iter().map(|id| (id, verdict.clone())));
        }
        if !finished || !rows.is_empty() {
            // Some events are still inside the client: drop it (abandoning
            // them) and start clean, so nothing of this batch is sent later.
            let _ = self
                .client
                .close_and_flush_with_timeout(Duration::ZERO)
                .await;
            self.outcomes = Outcomes::default();
            self.client = build(
                &self.factory,
                self.batch_size,
                self.deadline,
                &self.outcomes,
            )?;
        }
        Ok(verdicts)
    }

    /// Stops the client, waiting at most `timeout`.
    pub async fn close(self, timeout: Duration) {
        let _ = self.client.close_and_flush_with_timeout(timeout).await;
    }
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
