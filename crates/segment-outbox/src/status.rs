//! Operations: what the outbox holds, making dead letters pending again,
//! and pruning delivered rows kept for retention.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Client;

use crate::db::Schema;
use crate::error::OutboxError;

/// The outbox at one moment.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Status {
    /// Rows waiting for delivery and not leased (including rows backing off).
    pub pending: u64,
    /// Of `pending`, rows waiting for a retry after a failure.
    pub retrying: u64,
    /// Rows leased by a relay right now.
    pub leased: u64,
    /// Delivered rows still kept for the retention period.
    pub delivered: u64,
    /// Dead letters: refused for good, kept until `retry-dead` or deleted by hand.
    pub dead: u64,
    /// How long the oldest undelivered row (pending or leased) has waited, in seconds.
    pub oldest_pending_age_seconds: Option<f64>,
    /// The dead letters, oldest first (at most the number asked for).
    pub dead_letters: Vec<DeadLetter>,
}

/// One dead letter.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The row's id (for `retry-dead --id`).
    pub id: i64,
    /// The event's `messageId`.
    pub message_id: String,
    /// The event's `userId`.
    pub user_id: Option<String>,
    /// The event's `anonymousId`.
    pub anonymous_id: Option<String>,
    /// Delivery attempts made.
    pub attempts: i32,
    /// Why it was refused.
    pub last_error: Option<String>,
    /// When it became a dead letter.
    pub died_at: Option<DateTime<Utc>>,
}

/// Counts rows by state and lists up to `list_dead` dead letters.
///
/// # Errors
/// `schema_missing` before `relay init`, `database` otherwise.
pub async fn status(
    client: &Client,
    schema: &Schema,
    list_dead: usize,
) -> Result<Status, OutboxError> {
    let db = |e| OutboxError::database("cannot read the outbox status", e);
    let row = client
        .query_one(
            &schema.sql(
                "SELECT
                    count(*) FILTER (WHERE state = 'pending' AND (leased_until IS NULL OR leased_until <= now())),
                    count(*) FILTER (WHERE state = 'pending' AND (leased_until IS NULL OR leased_until <= now())
                                     AND available_at > now()),
                    count(*) FILTER (WHERE state = 'pending' AND leased_until > now()),
                    count(*) FILTER (WHERE state = 'delivered'),
                    count(*) FILTER (WHERE state = 'dead'),
                    extract(epoch FROM now() - min(created_at) FILTER (WHERE state = 'pending'))::float8
                 FROM {s}.outbox",
            ),
            &[],
        )
        .await
        .map_err(db)?;
    let count = |i: usize| row.get::<_, i64>(i).unsigned_abs();
    let limit = i64::try_from(list_dead).unwrap_or(i64::MAX);
    let dead_letters = client
        .query(
            &schema.sql(
                "SELECT id, message_id, user_id, anonymous_id, attempts, last_error, finished_at
                 FROM {s}.outbox WHERE state = 'dead' ORDER BY id LIMIT $1",
            ),
            &[&limit],
        )
        .await
        .map_err(db)?
        .into_iter()
        .map(|r| DeadLetter {
            id: r.get(0),
            message_id: r.get(1),
            user_id: r.get(2),
            anonymous_id: r.get(3),
            attempts: r.get(4),
            last_error: r.get(5),
            died_at: r.get(6),
        })
        .collect();
    Ok(Status {
        pending: count(0),
        retrying: count(1),
        leased: count(2),
        delivered: count(3),
        dead: count(4),
        oldest_pending_age_seconds: row.get(5),
        dead_letters,
    })
}

/// Makes dead letters pending again (all of them when `ids` is empty), with
/// their attempts reset and their last error kept; wakes the relays. Returns
/// how many rows changed.
///
/// A retried dead letter is sent after any later events of its customer
/// that were delivered meanwhile.
///
/// # Errors
/// `schema_missing` before `relay init`, `database` otherwise.
pub async fn retry_dead(client: &Client, schema: &Schema, ids: &[i64]) -> Result<u64, OutboxError> {
    let db = |e| OutboxError::database("cannot make dead letters pending again", e);
    let changed = client
        .execute(
            &schema.sql(
                "UPDATE {s}.outbox SET state = 'pending', attempts = 0, available_at = now(),
                     finished_at = NULL, leased_until = NULL, lease_owner = NULL
                 WHERE state = 'dead' AND (cardinality($1::bigint[]) = 0 OR id = ANY($1))",
            ),
            &[&ids],
        )
        .await
        .map_err(db)?;
    if changed > 0 {
        client
            .execute("SELECT pg_notify($1, '')", &[&schema.channel()])
            .await
            .map_err(db)?;
    }
    Ok(changed)
}

/// Deletes delivered rows older than `retention`, `batch` rows per
/// statement so no statement holds many locks; returns how many went.
///
/// # Errors
/// `database`.
pub async fn prune(
    client: &Client,
    schema: &Schema,
    retention: Duration,
    batch: usize,
) -> Result<u64, OutboxError> {
    let sql = schema.sql(
        "DELETE FROM {s}.outbox WHERE id IN (
            SELECT id FROM {s}.outbox
            WHERE state = 'delivered' AND finished_at < now() - $1::bigint * interval '1 millisecond'
            LIMIT $2)",
    );
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let limit = i64::try_from(batch).unwrap_or(i64::MAX);
    let mut total = 0;
    loop {
        let deleted = client
            .execute(&sql, &[&retention_ms, &limit])
            .await
            .map_err(|e| OutboxError::database("cannot prune delivered rows", e))?;
        total += deleted;
        if deleted < batch as u64 {
            return Ok(total);
        }
    }
}

/// Whether no row remains to deliver: none pending, none leased.
pub(crate) async fn is_drained(client: &Client, schema: &Schema) -> Result<bool, OutboxError> {
    client
        .query_one(
            &schema.sql("SELECT NOT EXISTS (SELECT 1 FROM {s}.outbox WHERE state = 'pending')"),
            &[],
        )
        .await
        .map(|row| row.get(0))
        .map_err(|e| OutboxError::database("cannot check for undelivered rows", e))
}
