//! A Segment-compatible HTTP receiver for tests, benchmarks and local development.
//!
//! [`Receiver::start`] binds `127.0.0.1:0` and serves Segment's HTTP Tracking API
//! (`POST /v1/batch` and the single-event `POST /v1/identify|track|page|screen|group|alias`)
//! with Segment's own rules:
//!
//! - auth by `Authorization: Basic base64("<writeKey>:")` or a `writeKey` in the body,
//!   checked only when [`ReceiverConfig::write_key`] was set (`401` otherwise);
//! - `Content-Encoding: gzip` bodies are inflated, at most 500,000 bytes (`400` beyond);
//! - `400` for malformed JSON or a `batch` that is not an array;
//! - otherwise `200 {"success":true}`, while events Segment would silently drop (over
//!   32,000 bytes, no `userId`/`anonymousId`, no `type`, or in a batch of more than 2,500)
//!   are recorded as [`Rejection`]s instead of being accepted.
//!
//! The [`Store`] keeps the last [`ReceiverConfig::keep`] accepted events exactly as
//! received, counts `messageId` duplicates, merges each customer's traits into a profile
//! and keeps a log of requests, all in bounded memory ([`Store::retained`] says how
//! much); [`ReceiverConfig::save_to`] also appends every accepted event to an NDJSON
//! file. A body that does not arrive within [`ReceiverConfig::body_timeout`] gets `408`.
//! A [`FaultPlan`] injects error statuses, `Retry-After` headers, latency and hung
//! requests so that client retry logic can be tested.
//!
//! A receiver in another process is driven over HTTP with unauthenticated JSON control
//! endpoints: `GET /_receiver/stats`, `GET /_receiver/events[?userId=U]`,
//! `GET /_receiver/duplicates`, `GET /_receiver/rejections`, `GET /_receiver/requests`,
//! `POST /_receiver/faults` (a [`FaultPlan`] as JSON) and `POST /_receiver/reset`.
//!
//! `GET /` serves a debugger page (static files embedded in the crate): live events,
//! customers and their merged profiles, problems (refused requests, silently dropped
//! events, duplicates) and raw requests with `Authorization` hidden. It reads
//! `GET /_receiver/live` (server-sent events), `GET /_receiver/customers?q=TEXT`,
//! `GET /_receiver/customer?id=ID` and `GET /_receiver/request?id=N`. Nothing here is
//! authenticated: bind it to loopback, as [`Receiver::start`] does.
//!
//! # Example
//!
//! ```
//! use segment_receiver::{FaultPlan, Receiver, ReceiverConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The first request gets a 503, as if Segment had a bad moment.
//! let config = ReceiverConfig::new().faults(FaultPlan::first_n(1, 503));
//! let receiver = Receiver::start(config).await?;
//!
//! let batch = r#"{"batch":[{"type":"identify","userId":"u1","messageId":"m1","traits":{}}]}"#;
//! let client = reqwest::Client::new();
//! for expected in [503, 200] {
//!     let response = client
//!         .post(format!("{}/v1/batch", receiver.url()))
//!         .header("content-type", "application/json")
//!         .body(batch)
//!         .send()
//!         .await?;
//!     assert_eq!(response.status().as_u16(), expected);
//! }
//!
//! let stats = receiver.store().stats();
//! assert_eq!((stats.requests, stats.accepted, stats.duplicates), (2, 1, 0));
//! assert_eq!(receiver.store().events_for_user("u1")[0]["messageId"], "m1");
//! receiver.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod config;
mod control;
mod dedup;
mod error;
mod faults;
mod ingest;
mod page;
mod profiles;
mod server;
mod store;

pub use config::{ReceiverConfig, Record};
pub use error::ReceiverError;
pub use faults::{Fault, FaultPlan};
pub use server::{Receiver, serve};
pub use store::{RejectReason, Rejection, RequestRecord, Retained, Stats, Store};
