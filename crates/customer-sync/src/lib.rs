//! Customer records to Segment identify calls.
//!
//! Data flows one way: a [`source`] streams [`Record`]s from CSV, NDJSON or a
//! JSON array; a [`mapping`] turns each into an identify payload or a
//! [`RecordError`] naming the line and field; the sync engine sends valid
//! payloads through a [`segment_client::HttpClient`] and accounts for every
//! record in a run report.

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
