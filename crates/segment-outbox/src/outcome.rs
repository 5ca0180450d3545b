//! Writing a batch's outcomes back: one statement per batch.
//!
//! Only rows still leased to this worker are written: if its lease ran out
//! and another worker took a row over, that worker's outcome counts.

use std::time::Duration;

use tokio_postgres::{Client, Statement};

use crate::db::Schema;
use crate::error::OutboxError;

/// What happened to one claimed row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Segment answered 2xx.
    Delivered,
    /// A retryable failure: back off, keep the error.
    Retry(String),
    /// Segment (or validation) refused it for good.
    Dead(String),
    /// Not sent (shutdown): give the lease back, the attempt does not count.
    Release,
}

impl Verdict {
    fn parts(&self) -> (&'static str, Option<&str>) {
        match self {
            Verdict::Delivered => ("delivered", None),
            Verdict::Retry(error) => ("retry", Some(error)),
            Verdict::Dead(error) => ("dead", Some(error)),
            Verdict::Release => ("release", None),
        }
    }
}

/// How many rows of a write-back ended in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Written {
    pub delivered: u64,
    pub retried: u64,
    pub dead: u64,
    pub released: u64,
}

const WRITE_BACK: &str = r#"
WITH outcome AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[]) AS o(id, verdict, error)
), removed AS (
    DELETE FROM {s}.outbox t USING outcome o
    WHERE $5::boolean AND o.verdict = 'delivered'
      AND t.id = o.id AND t.lease_owner = $4 AND t.state = 'pending'
    RETURNING t.id
), changed AS (
    UPDATE {s}.outbox t SET
        state = CASE
            WHEN o.verdict = 'delivered' THEN 'delivered'
            WHEN o.verdict = 'dead' THEN 'dead'
            WHEN o.verdict = 'retry' AND $8::int > 0 AND t.attempts >= $8::int THEN 'dead'
            ELSE 'pending' END,
        attempts = CASE WHEN o.verdict = 'release' THEN greatest(t.attempts - 1, 0) ELSE t.attempts END,
        available_at = CASE WHEN o.verdict = 'retry'
            THEN now() + least($7::float8, $6::float8 * power(2, least(t.attempts - 1, 30)))
                 * (0.5 + random() / 2) * interval '1 millisecond'
            ELSE t.available_at END,
        last_error = coalesce(o.error, t.last_error),
        leased_until = NULL,
        lease_owner = NULL,
        finished_at = CASE
            WHEN o.verdict IN ('delivered', 'dead') THEN now()
            WHEN o.verdict = 'retry' AND $8::int > 0 AND t.attempts >= $8::int THEN now()
            END
    FROM outcome o
    WHERE NOT ($5::boolean AND o.verdict = 'delivered')
      AND t.id = o.id AND t.lease_owner = $4 AND t.state = 'pending'
    RETURNING o.verdict, t.state
)
SELECT
    (SELECT count(*) FROM removed) + (SELECT count(*) FROM changed WHERE state = 'delivered'),
    (SELECT count(*) FROM changed WHERE verdict = 'retry' AND state = 'pending'),
    (SELECT count(*) FROM changed WHERE state = 'dead'),
    (SELECT count(*) FROM changed WHERE verdict = 'release')
"#;

/// How failed rows wait, and when delivered rows go.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteBackPolicy {
    /// Delivered rows are deleted at once when zero, else kept this long.
    pub retention: Duration,
    /// The first backoff; it doubles per attempt, with jitter in [50%, 100%].
    pub initial_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
    /// Attempts before a retryable failure becomes a dead letter; 0: never.
    pub max_attempts: u32,
}

/// The write-back statement prepared on one connection.
pub(crate) struct Writer {
    statement: Statement,
}

impl Writer {
    pub async fn prepare(client: &Client, schema: &Schema) -> Result<Self, OutboxError> {
        let statement = client
            .prepare(&schema.sql(WRITE_BACK))
            .await
            .map_err(|e| OutboxError::database("cannot prepare the write-back statement", e))?;
        Ok(Self { statement })
    }

    pub async fn write(
        &self,
        client: &Client,
        owner: &str,
        outcomes: &[(i64, Verdict)],
        policy: &WriteBackPolicy,
    ) -> Result<Written, OutboxError> {
        if outcomes.is_empty() {
            return Ok(Written::default());
        }
        let ids: Vec<i64> = outcomes.iter().map(|(id, _)| *id).collect();
        let (verdicts, errors): (Vec<&str>, Vec<Option<&str>>) =
            outcomes.iter().map(|(_, v)| v.parts()).unzip();
        let delete = policy.retention.is_zero();
        let initial_ms = policy.initial_backoff.as_secs_f64() * 1000.0;
        let max_ms = policy.max_backoff.as_secs_f64() * 1000.0;
        let max_attempts = i32::try_from(policy.max_attempts).unwrap_or(i32::MAX);
        let row = client
            .query_one(
                &self.statement,
                &[
                    &ids,
                    &verdicts,
                    &errors,
                    &owner,
                    &delete,
                    &initial_ms,
                    &max_ms,
                    &max_attempts,
                ],
            )
            .await
            .map_err(|e| OutboxError::database("cannot write delivery outcomes back", e))?;
        let count = |i: usize| row.get::<_, i64>(i).unsigned_abs();
        Ok(Written {
            delivered: count(0),
            retried: count(1),
            dead: count(2),
            released: count(3),
        })
    }
}
