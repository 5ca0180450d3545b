//! Customer records to Segment identify calls (or group calls), with
//! optional `track` events when a customer is added, changed or removed.
//!
//! Data flows one way: a [`source`] streams [`Record`]s from CSV, NDJSON, a
//! JSON array or PostgreSQL; a [`mapping`] turns each into an identify
//! payload or a [`RecordError`] naming the line and field; the sync engine
//! compares it with the [`state`] (what Segment accepted before), sends what
//! changed through a [`segment_client::HttpClient`] (with the mapping's
//! `[events]` tracks beside it, see [`mapping::ChangeEvents`]) and accounts
//! for every record in a run report.

pub mod mapping;
mod record;
mod report;
pub mod source;
pub mod state;
mod sync;

pub use mapping::Mapping;
pub use record::{Field, FieldValue, Location, Record, RecordError, RecordErrorKind};
pub use report::{Counters, FIRST_INVALID, ReportWriter, RunReport, Undelivered};
pub use source::Source;
pub use sync::{
    IncrementalOptions, StateOptions, StopSignal, SyncError, SyncOptions, SyncProgress, SyncRun,
};
