//! The sync engine: source -> mapping -> duplicate check -> plan against
//! the state -> outbox -> client, with every record accounted for in the
//! run report.
//!
//! The modules follow the flow, and none imports from a module above it:
//!
//! * [`run`](SyncRun::run) opens the state, starts the client and the
//!   reader, waits, closes, commits and reports, one phase per function;
//! * `reader` reads, maps and queues records on a blocking thread, in
//!   chunks whose outbox entries are written before they are queued;
//! * `duplicates` finds repeated identities (a first pass over a file for
//!   `--duplicates last`);
//! * `planner` decides per record against the state: send, skip, give up,
//!   or resend what an earlier run left in flight;
//! * `recovery` turns those in-flight outbox entries back into events;
//! * `tracker` settles each event as the client reports its outcome;
//! * `stop` is the stop signal, `error` the run's fatal error.

mod duplicates;
mod error;
mod events;
mod planner;
mod reader;
mod recovery;
mod run;
mod stop;
mod tracker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use segment_client::HttpClientBuilder;

pub use error::SyncError;
pub use planner::IncrementalOptions;
pub use stop::StopSignal;

use crate::mapping::{DuplicatePolicy, Mapping};
use crate::report::Counters;
use crate::source::{ReadProgress, Source};

/// What a progress display reads while a run goes on.
#[derive(Debug, Clone)]
pub struct SyncProgress {
    /// Live record counts.
    pub counters: Arc<Counters>,
    /// Bytes of the source read so far.
    pub read: ReadProgress,
    /// The source's size, when known.
    pub total_bytes: Option<u64>,
}

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// What to do with an identity seen earlier in the same input. Default: the mapping's.
    pub duplicates: Option<DuplicatePolicy>,
    /// How long the final flush may take. Default: 60 s.
    pub flush_timeout: Duration,
    /// How long to flush after a stop (Ctrl-C) or a fatal error. Default: 10 s.
    pub shutdown_timeout: Duration,
    /// Where to write the JSON report. Default: nowhere.
    pub report: Option<PathBuf>,
    /// Whether the client is a dry run (recorded in the report; the state
    /// is read to skip unchanged records but never written).
    pub dry_run: bool,
    /// The state to sync incrementally against. Default: none (send everything).
    pub state: Option<StateOptions>,
}

/// Where the state lives and how it is used.
#[derive(Debug, Clone)]
pub struct StateOptions {
    /// The state directory, e.g. `.segment-sync`.
    pub dir: PathBuf,
    /// The sync's name: its database is `DIR/NAME.sqlite`.
    pub name: String,
    /// Full resync, failed-record retries.
    pub incremental: IncrementalOptions,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            duplicates: None,
            flush_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(10),
            report: None,
            dry_run: false,
            state: None,
        }
    }
}

/// One sync run: a source, a mapping and a client.
///
/// # Example
/// ```no_run
/// use customer_sync::{Mapping, Source, SyncOptions, SyncRun};
/// use segment_client::HttpClient;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let source = Source::open("customers.csv")?;
/// let columns: Vec<&str> = source.columns().unwrap_or_default().iter().map(|c| &**c).collect();
/// let mapping = Mapping::new(None, &columns)?;
/// let sync = SyncRun::new(source, mapping, HttpClient::builder("WRITE_KEY"), SyncOptions::default());
/// let report = sync.run().await?;
/// println!("{} delivered, {} failed, {} invalid", report.delivered, report.failed, report.invalid);
/// # Ok(()) }
/// ```
pub struct SyncRun {
    source: Source,
    mapping: Mapping,
    client: HttpClientBuilder,
    options: SyncOptions,
    stop: StopSignal,
    counters: Arc<Counters>,
}

impl SyncRun {
    /// A run of `source` through `mapping` into a client built from `client`.
    pub fn new(
        source: Source,
        mapping: Mapping,
        client: HttpClientBuilder,
        options: SyncOptions,
    ) -> Self {
        Self {
            source,
            mapping,
            client,
            options,
            stop: StopSignal::default(),
            counters: Arc::default(),
        }
    }

    /// A handle that stops the run (for Ctrl-C).
    pub fn stop_signal(&self) -> StopSignal {
        self.stop.clone()
    }

    /// A handle for progress displays.
    pub fn progress(&self) -> SyncProgress {
        SyncProgress {
            counters: Arc::clone(&self.counters),
            read: self.source.progress(),
            total_bytes: self.source.total_bytes(),
        }
    }
}
