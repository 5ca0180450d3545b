//! A transactional outbox for Segment identify calls in PostgreSQL, and the
//! relay that delivers it.
//!
//! An application writes each identify event into the outbox **inside its
//! own transaction** ([`Producer::identify`] from Rust, or the SQL function
//! `segment.identify(...)` from any language). A rollback leaves nothing to
//! send; a commit makes the event durable even if the application crashes
//! the next moment. A [`Relay`] delivers committed rows: any number of
//! relays, in any number of processes on any number of machines, share one
//! outbox through PostgreSQL alone.
//!
//! - **Claims** lease a batch in one statement (`FOR UPDATE SKIP LOCKED`)
//!   for a bounded time measured by the database's clock; Segment is called
//!   outside any transaction; outcomes are written back in one statement.
//!   Rows of a relay killed with -9 come back when their lease ends.
//! - **Order per customer**: a customer's later event is never claimed
//!   while an earlier one is still undelivered (see the [`claim`] module).
//! - **Outcomes**: delivered rows are deleted (or kept for a retention);
//!   retryable failures wait (`available_at`, exponential backoff) and keep
//!   the last error; non-retryable ones become dead letters. The `messageId`
//!   is fixed at insert, so a resend after a crash is dropped by Segment.
//! - **Operations**: [`status`], [`retry_dead`], [`prune`], Prometheus
//!   metrics ([`serve_metrics`]).
//!
//! # Example
//! ```no_run
//! use segment_client::{HttpClient, IdentifyParams, Identity};
//! use segment_outbox::{Producer, Relay, Schema};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let url = "postgres://postgres@127.0.0.1/app";
//! let mut db = segment_outbox::connect(url).await?;
//! segment_outbox::init(&mut db, &Schema::default()).await?; // once; idempotent
//!
//! // In the application: the event commits or rolls back with the change.
//! let tx = db.transaction().await?;
//! Producer::default().identify(&tx, IdentifyParams::new(Identity::user("cus_1"))).await?;
//! tx.commit().await?;
//!
//! // Anywhere, as many as you like:
//! Relay::new(url, || HttpClient::builder("WRITE_KEY"))
//!     .until_empty(true)
//!     .run(std::future::pending())
//!     .await?;
//! # Ok(()) }
//! ```

pub mod claim;
mod db;
mod deliver;
mod error;
mod listen;
pub mod metrics;
mod outcome;
mod produce;
mod relay;
mod schema;
mod status;

pub use db::{Schema, connect};
pub use deliver::ClientFactory;
pub use error::{OutboxError, codes};
pub use metrics::serve_metrics;
pub use produce::{Producer, validate};
pub use relay::{Relay, RelayReport};
pub use schema::{InitReport, SCHEMA_VERSION, init};
pub use status::{DeadLetter, Status, prune, retry_dead, status};
