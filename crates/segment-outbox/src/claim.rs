//! Claiming a batch of deliverable rows, and turning them into events.
//!
//! # How the claim keeps each customer's order
//!
//! A row is claimable only if no *earlier* row (lower `id`) of the same
//! identity key is still `pending`, whatever that row is doing: waiting for
//! its first attempt, leased by a live or dead worker, or backing off after
//! a failure. So each claim takes at most the oldest undelivered event of a
//! customer, and a customer's next event becomes claimable only in the
//! statement after the earlier one was written back as delivered or dead.
//!
//! This holds across any number of workers and processes because the test
//! runs in the claiming statement's own snapshot: if worker A has leased
//! `v1` (or is about to, row lock held), worker B's snapshot still shows `v1`
//! as pending (the lease changes no state), so B skips `v2`. An earlier row
//! that B's snapshot does not show is one whose transaction had not
//! committed yet; ids come from a sequence at insert time, so for two
//! transactions that write the same customer one after the other (the
//! usual case: both lock the customer's row), id order is commit order.
//!
//! Dead letters do not block a customer's later events: Segment would never
//! accept them as they are, and holding every later change back behind one
//! would stall that customer for good. `retry-dead` sends such an event
//! after the later ones; the operator decides that.

use std::time::Duration;

use chrono::{DateTime, Utc};
use segment_client::{IdentifyParams, Identity, PreparedEvent, UserTraits};
use serde_json::{Map, Value};
use tokio_postgres::{Client, Statement};

use crate::db::Schema;
use crate::error::OutboxError;

const CLAIM: &str = r#"
WITH picked AS (
    SELECT o.id FROM {s}.outbox o
    WHERE o.state = 'pending'
      AND o.available_at <= now()
      AND (o.leased_until IS NULL OR o.leased_until <= now())
      AND NOT EXISTS (
          SELECT 1 FROM {s}.outbox e
          WHERE e.state = 'pending' AND e.identity_key = o.identity_key AND e.id < o.id)
    ORDER BY o.id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE {s}.outbox t
SET leased_until = now() + $2::bigint * interval '1 millisecond',
    lease_owner = $3,
    attempts = t.attempts + 1
FROM picked
WHERE t.id = picked.id
RETURNING t.id, t.user_id, t.anonymous_id, t.message_id, t.event_time, t.traits, t.context, t.integrations
"#;

/// A claim statement prepared on one connection.
pub(crate) struct Claimer {
    statement: Statement,
}

impl Claimer {
    pub async fn prepare(client: &Client, schema: &Schema) -> Result<Self, OutboxError> {
        let statement = client
            .prepare(&schema.sql(CLAIM))
            .await
            .map_err(|e| OutboxError::database("cannot prepare the claim statement", e))?;
        Ok(Self { statement })
    }

    /// Leases up to `limit` rows to `owner` for `lease`, measured by the
    /// database's clock (so relays on machines with skewed clocks agree).
    pub async fn claim(
        &self,
        client: &Client,
        limit: usize,
        lease: Duration,
        owner: &str,
    ) -> Result<Vec<ClaimedRow>, OutboxError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let rows = client
            .query(&self.statement, &[&limit, &lease_ms, &owner])
            .await
            .map_err(|e| OutboxError::database("cannot claim outbox rows", e))?;
        Ok(rows
            .into_iter()
            .map(|row| ClaimedRow {
                id: row.get(0),
                user_id: row.get(1),
                anonymous_id: row.get(2),
                message_id: row.get(3),
                event_time: row.get(4),
                traits: row.get(5),
                context: row.get(6),
                integrations: row.get(7),
            })
            .collect())
    }
}

/// One leased outbox row, as stored.
#[derive(Debug, Clone)]
pub(crate) struct ClaimedRow {
    pub id: i64,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub message_id: String,
    pub event_time: DateTime<Utc>,
    pub traits: Value,
    pub context: Option<Value>,
    pub integrations: Option<Value>,
}

impl ClaimedRow {
    /// The event exactly as it will be sent, validated again: a row edited
    /// by hand into something Segment would refuse comes back as the reason,
    /// and becomes a dead letter instead of reaching Segment.
    pub fn into_event(self) -> Result<PreparedEvent, String> {
        let identity = match (self.user_id, self.anonymous_id) {
            (Some(user_id), Some(anonymous_id)) => Identity::Both {
                user_id,
                anonymous_id,
            },
            (Some(user_id), None) => Identity::UserId(user_id),
            (None, Some(anonymous_id)) => Identity::AnonymousId(anonymous_id),
            (None, None) => {
                return Err("invalid_payload: the row has no user_id and no anonymous_id".into());
            }
        };
        // Traits go through untouched (as custom traits), so what the
        // application wrote is what Segment gets, key for key.
        let traits = UserTraits {
            custom: object("traits", self.traits)?,
            ..UserTraits::default()
        };
        let mut params = IdentifyParams::new(identity)
            .with_traits(traits)
            .with_timestamp(self.event_time)
            .with_message_id(self.message_id);
        if let Some(context) = self.context {
            params = params.with_context(object("context", context)?);
        }
        if let Some(integrations) = self.integrations {
            params = params.with_integrations(object("integrations", integrations)?);
        }
        PreparedEvent::new(params).map_err(|e| describe(&e))
    }
}

fn object(field: &str, value: Value) -> Result<Map<String, Value>, String> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(format!(
            "invalid_payload: {field} is {}, not a JSON object",
            kind_of(&other)
        )),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A Segment error as kept in `last_error`: its code, then its message.
pub(crate) fn describe(error: &segment_client::SegmentError) -> String {
    match error.code() {
        Some(code) => format!("{code}: {error}"),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(user_id: Option<&str>, traits: Value) -> ClaimedRow {
        ClaimedRow {
            id: 1,
            user_id: user_id.map(Into::into),
            anonymous_id: None,
            message_id: "m-1".into(),
            event_time: "2024-05-01T12:00:00Z".parse().unwrap(),
            traits,
            context: None,
            integrations: None,
        }
    }

    #[test]
    fn a_row_becomes_the_event_with_its_message_id_and_traits_untouched() {
        let event = row(
            Some("cus_1"),
            json!({"email": "a@example.com", "age": "thirty"}),
        )
        .into_event()
        .unwrap();
        let sent: Value = serde_json::from_slice(event.json()).unwrap();
        assert_eq!(sent["messageId"], "m-1");
        assert_eq!(sent["userId"], "cus_1");
        assert_eq!(sent["timestamp"], "2024-05-01T12:00:00.000Z");
        assert_eq!(
            sent["traits"],
            json!({"email": "a@example.com", "age": "thirty"})
        );
    }

    #[test]
    fn rows_edited_into_something_invalid_say_why() {
        let none = row(None, json!({})).into_event().unwrap_err();
        assert!(none.contains("no user_id"), "{none}");
        let array = row(Some("u"), json!([1])).into_event().unwrap_err();
        assert!(array.contains("traits is an array"), "{array}");
        let empty = row(Some(" "), json!({})).into_event().unwrap_err();
        assert!(empty.starts_with("invalid_payload"), "{empty}");
        let big = row(Some("u"), json!({"blob": "x".repeat(40_000)}))
            .into_event()
            .unwrap_err();
        assert!(big.starts_with("payload_too_large"), "{big}");
    }
}
