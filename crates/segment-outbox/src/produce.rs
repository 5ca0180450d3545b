//! The producer side: writing an identify event into the outbox inside the
//! caller's own transaction.

use chrono::Utc;
use segment_client::{IdentifyParams, PreparedEvent};
use serde_json::Value;
use tokio_postgres::GenericClient;

use crate::db::Schema;
use crate::error::{Kind, OutboxError};

/// Checks `params` exactly as `segment-client` does before queueing
/// (identity, `messageId`, trait clashes, the 32,000-byte limit), without
/// writing anything.
///
/// # Errors
/// `invalid_event`, with the client's own error as
/// [`segment_error`](OutboxError::segment_error).
pub fn validate(params: &IdentifyParams) -> Result<PreparedEvent, OutboxError> {
    PreparedEvent::new(params.clone())
        .map_err(|e| OutboxError::with_source(Kind::InvalidEvent, format!("invalid event: {e}"), e))
}

/// Writes identify events into the outbox of one schema.
///
/// # Example
/// ```no_run
/// use segment_client::{IdentifyParams, Identity, UserTraits};
/// use segment_outbox::Producer;
///
/// # async fn run(db: &mut tokio_postgres::Client) -> Result<(), Box<dyn std::error::Error>> {
/// let producer = Producer::default();
/// let tx = db.transaction().await?;
/// tx.execute("UPDATE customers SET plan = 'pro' WHERE id = 'cus_1'", &[]).await?;
/// let traits = UserTraits { email: Some("ada@example.com".into()), ..Default::default() };
/// let message_id = producer
///     .identify(&tx, IdentifyParams::new(Identity::user("cus_1")).with_traits(traits))
///     .await?;
/// tx.commit().await?; // now, and only now, a relay will deliver it
/// # let _ = message_id; Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Producer {
    schema: Schema,
}

impl Producer {
    /// A producer for the outbox in `schema` (default: `segment`).
    pub fn new(schema: Schema) -> Self {
        Self { schema }
    }

    /// Validates `params` as `segment-client` does and writes the event
    /// through `client` (usually the caller's open transaction, so the event
    /// commits or rolls back with it). Returns the event's `messageId`, fixed
    /// now and reused on every delivery attempt.
    ///
    /// # Errors
    /// `invalid_event` (nothing written), `refused_by_database` if
    /// `segment.identify` refused it, `schema_missing` before
    /// `relay init`, `database` for any other PostgreSQL failure.
    pub async fn identify<C: GenericClient + Sync>(
        &self,
        client: &C,
        params: IdentifyParams,
    ) -> Result<String, OutboxError> {
        let prepared = validate(&params)?;
        let message_id = prepared.message_id().to_owned();
        let traits = serde_json::to_value(&params.traits).map_err(|e| {
            OutboxError::with_source(Kind::InvalidEvent, "traits cannot be serialised", e)
        })?;
        let context = params.context.map(Value::Object);
        let integrations = params.integrations.map(Value::Object);
        let event_time = params.timestamp.unwrap_or_else(Utc::now);
        let sql = self.schema.sql(
            "SELECT {s}.identify($1::text, $2::jsonb, $3::text, $4::text, $5::timestamptz, $6::jsonb, $7::jsonb)",
        );
        client
            .query_one(
                &sql,
                &[
                    &params.identity.user_id(),
                    &traits,
                    &params.identity.anonymous_id(),
                    &message_id,
                    &event_time,
                    &context,
                    &integrations,
                ],
            )
            .await
            .map_err(|e| OutboxError::database("cannot write the event into the outbox", e))?;
        Ok(message_id)
    }
}
