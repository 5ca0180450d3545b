//! A production-grade client for Segment's Identify API, with errors as values.
//!
//! - **The integration contract**: [`send_customer_to_segment`] and
//!   [`send_customer_to_segment_with_client`] return a
//!   [`SegmentIntegrationResult`]; every failure is a [`SegmentError`] with a
//!   stable [`code`](SegmentError::code), never a panic.
//! - **[`HttpClient`]**: validates each event before queueing it, batches by
//!   exact serialised bytes (every request within Segment's 500,000-byte and
//!   2,500-event limits), gzips, keeps several requests in flight, retries by
//!   Segment's rules (backoff with jitter, `Retry-After` pausing the whole
//!   client), keeps memory bounded with a backpressured queue, and reports
//!   every event as delivered, failed with a reason, or pending.
//! - **[`InMemoryClient`]**: a test double that records what it was given.
//!
//! # Example
//! ```
//! use segment_client::{HttpClient, IdentifyParams, Identity, UserTraits};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! # let receiver = segment_receiver::Receiver::start(Default::default()).await.unwrap();
//! # let host = receiver.url();
//! let client = HttpClient::builder("WRITE_KEY").host(host).build()?;
//! let traits = UserTraits { email: Some("ada@example.com".into()), ..Default::default() };
//! client
//!     .identify(IdentifyParams::new(Identity::user("cus_1")).with_traits(traits))
//!     .await?;
//! let report = client.close_and_flush().await?;
//! assert_eq!(report.delivered, 1);
//! # Ok::<(), segment_client::SegmentError>(())
//! # }).unwrap();
//! ```

mod batcher;
mod calls;
mod client;
mod config;
mod contract;
mod encode;
mod error;
mod health;
mod memory;
mod message;
#[cfg(feature = "outbox")]
mod outbox;
mod payload;
mod raw;
mod report;
mod retry;
mod room;
#[cfg(test)]
mod scripted;
mod throttle;
mod transport;
mod worker;
#[cfg(test)]
mod worker_model;

pub use batcher::{MAX_BATCH_EVENTS, MAX_REQUEST_BYTES};
pub use calls::{
    AliasParams, GroupParams, Message, PageParams, ScreenParams, TrackParams, ViewParams,
};
pub use client::{
    BoxFuture, DeliveryReceipt, HttpClient, HttpClientBuilder, PreparedEvent, Region, SegmentClient,
};
pub use config::{
    FLUSH_TIMEOUT_VAR, HOST_VAR, OUTAGE_AFTER_VAR, REGION_VAR, REQUEST_TIMEOUT_VAR, WRITE_KEY_VAR,
    builder_from_lookup, get_segment_client_from_environment,
};
pub use contract::{
    ContractResult, SegmentIntegrationResult, send_customer_to_segment,
    send_customer_to_segment_with_client,
};
pub use error::{SegmentError, codes};
pub use memory::InMemoryClient;
pub use message::{
    IdentifyParams, Identity, LIBRARY_NAME, MAX_EVENT_BYTES, MAX_MESSAGE_ID_CHARS, new_message_id,
};
pub use payload::{Address, Company, RESERVED_TRAITS, SegmentIdentifyPayload, UserTraits};
pub use raw::{JsonKey, ObjectKey, ObjectWriter, RawObject};
pub use report::{DeliveryReport, EventOutcome, EventRef, FailedEvent};
pub use retry::{MAX_RETRY_AFTER, is_retryable_status};
pub use transport::check_reachable;
