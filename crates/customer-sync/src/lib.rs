//! Customer records to Segment identify calls.
//!
//! Data flows one way: a [`source`] streams [`Record`]s from CSV, NDJSON or a
//! JSON array; a [`mapping`] turns each into an identify payload or a
//! [`RecordError`] naming the line and field; the sync engine sends valid
//! payloads through a [`segment_client::HttpClient`] and accounts for every
//! record in a run report.

mod engine;
pub mod mapping;
mod plan;
mod reader;
mod record;
mod report;
pub mod source;
pub mod state;
mod tracker;

pub use engine::{StateOptions, StopSignal, SyncError, SyncOptions, SyncProgress, SyncRun};
pub use mapping::Mapping;
pub use plan::IncrementalOptions;
pub use record::{Field, FieldValue, Location, Record, RecordError, RecordErrorKind};
pub use report::{Counters, FIRST_INVALID, ReportWriter, RunReport, Undelivered};
pub use source::Source;
