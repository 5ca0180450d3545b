//! The sync engine: source -> mapping -> duplicate check -> client, with every
//! record accounted for in the run report.
//!
//! Reading and mapping run on a blocking thread that feeds the client's
//! bounded queue (so a slow Segment slows the reader instead of growing
//! memory); the client's outcome hook settles each record as delivered or
//! failed. A record is tracked from just before it is queued until its
//! outcome, so whatever is still tracked when the run ends is pending.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use segment_client::{HttpClientBuilder, SegmentError};

use crate::mapping::{DuplicatePolicy, Mapping};
use crate::plan::{IncrementalOptions, Planner};
use crate::reader::{LastRows, Reader};
use crate::report::{Counters, ReportWriter, RunReport};
use crate::source::{ReadProgress, Source, SourceError};
use crate::state::{Pending, StateError, StateStore};
pub use crate::stop::StopSignal;
use crate::tracker::{Tracker, lock};

/// How often outcomes are committed to the state while the reader waits
/// on a full queue, so a kill loses at most this much of Segment's answers.
const COMMIT_EVERY: Duration = Duration::from_millis(250);

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

/// A fatal problem that stopped a run (per-record problems are never fatal).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SyncError {
    message: String,
    hint: Option<String>,
    report: Option<Box<RunReport>>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SyncError {
    pub(crate) fn new(message: impl Into<String>, hint: Option<&str>) -> Self {
        Self {
            message: message.into(),
            hint: hint.map(str::to_owned),
            report: None,
            source: None,
        }
    }

    /// A line of advice for the user, if there is one.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// The report of the records handled before the run stopped, if it got that far.
    pub fn report(&self) -> Option<&RunReport> {
        self.report.as_deref()
    }
}

impl From<SourceError> for SyncError {
    fn from(error: SourceError) -> Self {
        let mut err = SyncError::new(error.to_string(), error.hint());
        err.source = Some(Box::new(error));
        err
    }
}

impl From<StateError> for SyncError {
    fn from(error: StateError) -> Self {
        let hint = error
            .hint()
            .unwrap_or("check --state and --name; `segment-sync reset` starts over")
            .to_owned();
        let mut err = SyncError::new(error.to_string(), Some(&hint));
        err.source = Some(Box::new(error));
        err
    }
}

impl From<SegmentError> for SyncError {
    fn from(error: SegmentError) -> Self {
        let hint = if error.is_unauthorized() {
            Some("check SEGMENT_WRITE_KEY (or --write-key): Segment refused it")
        } else if error.code() == Some(segment_client::codes::MISSING_WRITE_KEY) {
            Some("set SEGMENT_WRITE_KEY, or pass --write-key; --dry-run needs none")
        } else if error.is_config() {
            Some("check SEGMENT_HOST / SEGMENT_REGION (or --host / --region)")
        } else {
            None
        };
        let mut err = SyncError::new(error.to_string(), hint);
        err.source = Some(Box::new(error));
        err
    }
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

    /// Runs the sync to the end of the source (or a stop) and reports.
    ///
    /// # Errors
    /// Fatal problems only: the client cannot be built (no write key, bad
    /// host), the state or report cannot be written, the source fails
    /// mid-read, or Segment refuses the write key. Where records were already
    /// handled, the error carries the partial [`report`](SyncError::report).
    pub async fn run(self) -> Result<RunReport, SyncError> {
        let started_at = Utc::now();
        let started = Instant::now();
        let source_name = self.source.name().to_owned();
        let report_writer = match &self.options.report {
            Some(path) => ReportWriter::create(path).map_err(|e| {
                let mut err =
                    SyncError::new(format!("cannot create the report {}", path.display()), None);
                err.source = Some(Box::new(e));
                err
            })?,
            None => ReportWriter::none(),
        };
        // The state is opened (and locked) before the client, so a state
        // problem stops the run before anything is sent.
        let writes_state = !self.options.dry_run;
        let (state, scan) = match &self.options.state {
            Some(options) => {
                let (state, scan) = open_state(options, writes_state, &source_name)?;
                (Some(state), scan)
            }
            None => (None, Default::default()),
        };
        let tracker = Arc::new(Tracker {
            counters: Arc::clone(&self.counters),
            in_flight: Mutex::default(),
            report: Mutex::new(report_writer),
            report_error: Mutex::default(),
            fatal: Mutex::default(),
            failed_by_reason: Mutex::default(),
            invalid_by_reason: Mutex::default(),
            changes: (state.is_some() && writes_state).then(Mutex::default),
            stop: self.stop.clone(),
        });
        if scan.torn > 0 {
            tracker.write(|w| w.outbox_torn(scan.torn));
        }
        self.counters
            .superseded
            .store(scan.superseded, std::sync::atomic::Ordering::Relaxed);
        let hook = Arc::clone(&tracker);
        let client = self
            .client
            .on_outcome(move |outcome| hook.settle(outcome))
            .build()?;

        let mut state = state;
        let planner = state.as_mut().map(|state| {
            let index = state.index.take().unwrap_or_default();
            let pending: HashMap<String, Pending> = std::mem::take(&mut state.pending)
                .into_iter()
                .map(|p| (p.entry.key.clone(), p))
                .collect();
            let superseded_before = scan.superseded;
            let mut planner = Planner::new(
                index,
                pending,
                state.options.clone(),
                self.mapping.null_policy(),
            );
            planner.superseded = superseded_before;
            planner
        });
        let store = state.as_ref().map(|state| Arc::clone(&state.store));
        let duplicates = self
            .options
            .duplicates
            .unwrap_or_else(|| self.mapping.duplicates());
        let reader = {
            let (client, tracker, store) = (client.clone(), Arc::clone(&tracker), store.clone());
            let (source, mapping) = (self.source, self.mapping);
            tokio::task::spawn_blocking(move || {
                // `last` needs to know, at each row, whether a later row has
                // the same identity: a file is read once before the run to
                // find out. Memory stays bounded (only repeated identities
                // are kept); stdin cannot be read twice.
                let last_rows = match (duplicates, source.reopen()) {
                    (DuplicatePolicy::Last, Some(Ok(again))) => {
                        Some(LastRows::scan(again, &mapping)?)
                    }
                    (DuplicatePolicy::Last, Some(Err(error))) => return Err(error.into()),
                    _ => None,
                };
                let mut reader = Reader {
                    client: &client,
                    tracker: &tracker,
                    mapping: &mapping,
                    store: store.as_deref(),
                    planner,
                    duplicates,
                    last_rows,
                    chunk: Vec::new(),
                };
                let result = reader.read_all(source);
                Ok((result, reader.planner))
            })
        };
        let waited = wait_for_reader(reader, &self.stop, store.as_deref(), &tracker).await;

        // Outcomes arrive through the hook; the close's own report adds
        // nothing new. A stop during the close cuts it to the shutdown timeout.
        let close_error = tokio::select! {
            result = client.close_and_flush_with_timeout(self.options.flush_timeout) => result.err(),
            () = shutdown_deadline(&self.stop, self.options.shutdown_timeout) => None,
        };
        let stopped = self.stop.is_stopped();
        // A reader left behind at a stop is unblocked by the close; join it so
        // its last counts are in before the summary.
        let (read_result, planner) = match waited {
            Ok(done) => done,
            Err(reader) => match tokio::time::timeout(Duration::from_secs(5), reader).await {
                Ok(joined) => joined_result(joined),
                Err(_) => (
                    Err(SyncError::new("the reader did not stop in time", None)),
                    None,
                ),
            },
        };
        tracker.settle_pending(close_error.as_ref());
        // Everything written to the outbox settled, and the source was read
        // to its end (so no entry waits for its record): nothing to recover later.
        let all_settled = tracker.all_settled() && !stopped && read_result.is_ok();

        let mut removed = 0;
        let mut state_error = None;
        if let Some(store) = &store {
            let mut store = lock(store);
            // Commit the outcomes that arrived since the last commit.
            let committed = store.apply(&tracker.take_changes());
            let cleared = committed.and_then(|()| match all_settled && writes_state {
                true => store.clear_outbox(),
                false => Ok(()),
            });
            if let Err(e) = cleared {
                state_error = Some(e);
            }
            // Only a source read to its end tells who is gone.
            if let Some(planner) = planner.as_ref().filter(|_| read_result.is_ok() && !stopped) {
                match store.identities(&planner.unseen()) {
                    Ok(keys) => {
                        removed = keys.len() as u64;
                        tracker.write(|w| keys.iter().try_for_each(|key| w.removed(key)));
                    }
                    Err(e) => state_error = Some(e),
                }
            }
        }
        let traits = planner.as_ref().map(|p| p.traits).unwrap_or_default();
        let report = tracker.summary(RunReport {
            source: source_name,
            dry_run: self.options.dry_run,
            started_at,
            duration_secs: started.elapsed().as_secs_f64(),
            read: 0,
            valid: 0,
            invalid: 0,
            duplicates: 0,
            skipped: 0,
            given_up: 0,
            recovered: 0,
            recovered_not_in_source: 0,
            superseded: 0,
            outbox_torn: scan.torn,
            removed,
            delivered: 0,
            failed: 0,
            pending: 0,
            traits_unset: traits.unset,
            traits_left_out: traits.left_out,
            interrupted: stopped,
            events_per_sec: 0.0,
            invalid_by_reason: BTreeMap::new(),
            failed_by_reason: BTreeMap::new(),
        });
        if let (Some(state), None) = (&state, &state_error)
            && let Some(run_id) = state.run_id
            && let Err(e) = lock(&state.store).finish_run(run_id, &report)
        {
            state_error = Some(e);
        }
        let writer = std::mem::replace(&mut *lock(&tracker.report), ReportWriter::none());
        let report_io = writer
            .finish(&report)
            .err()
            .or_else(|| lock(&tracker.report_error).take());

        let with_report = |mut err: SyncError| {
            err.report = Some(Box::new(report.clone()));
            err
        };
        if let Some(fatal) = lock(&tracker.fatal).take() {
            return Err(with_report(fatal.into()));
        }
        read_result.map_err(with_report)?;
        if let Some(e) = state_error {
            return Err(with_report(e.into()));
        }
        if let Some(e) = report_io {
            let mut err = SyncError::new("cannot write the report", None);
            err.source = Some(Box::new(e));
            return Err(with_report(err));
        }
        if !report.adds_up() {
            // A bug, but never a silent one: the run does not report success.
            return Err(with_report(SyncError::new(
                format!("internal error: the run's counts do not add up ({report:?})"),
                Some("please report this bug; run again to finish the sync"),
            )));
        }
        Ok(report)
    }
}

/// Opens the state for a run: the lock, the index, and (unless it is a dry
/// run) what earlier runs left in the outbox.
fn open_state(
    options: &StateOptions,
    writes_state: bool,
    source_name: &str,
) -> Result<(RunState, crate::state::OutboxScan), SyncError> {
    let mut store = StateStore::open(&options.dir, &options.name)?;
    let index = store.index()?;
    let mut scan = if writes_state {
        store.pending(&index)?
    } else {
        Default::default()
    };
    let run_id = if writes_state {
        Some(store.begin_run(source_name)?)
    } else {
        None
    };
    let pending = std::mem::take(&mut scan.pending);
    Ok((
        RunState {
            store: Arc::new(Mutex::new(store)),
            index: Some(index),
            pending,
            run_id,
            options: options.incremental.clone(),
        },
        scan,
    ))
}

/// The state of a run that has one.
struct RunState {
    store: Arc<Mutex<StateStore>>,
    index: Option<crate::state::StateIndex>,
    /// What earlier runs left in flight, handed to the planner.
    pending: Vec<Pending>,
    run_id: Option<i64>,
    options: IncrementalOptions,
}

type ReaderResult = (Result<String, SyncError>, Option<Planner>);

/// Waits for the reader, committing the outcomes that arrive meanwhile, but
/// not past a stop: a reader blocked on a full queue is handed back, to be
/// joined once the client's close unblocks it.
async fn wait_for_reader(
    mut reader: tokio::task::JoinHandle<Result<ReaderResult, SyncError>>,
    stop: &StopSignal,
    store: Option<&Mutex<StateStore>>,
    tracker: &Tracker,
) -> Result<ReaderResult, tokio::task::JoinHandle<Result<ReaderResult, SyncError>>> {
    let mut commit = tokio::time::interval(COMMIT_EVERY);
    loop {
        tokio::select! {
            joined = &mut reader => return Ok(joined_result(joined)),
            () = stop.stopped() => return Err(reader),
            _ = commit.tick() => {
                if let Some(store) = store {
                    let changes = tracker.take_changes();
                    if let Err(error) = lock(store).apply(&changes) {
                        // Kept for the end of the run, which reports it.
                        if let Some(pending) = &tracker.changes {
                            lock(pending).splice(0..0, changes);
                        }
                        drop(error);
                    }
                }
            }
        }
    }
}

/// Resolves `timeout` after a stop is asked for.
async fn shutdown_deadline(stop: &StopSignal, timeout: Duration) {
    stop.stopped().await;
    tokio::time::sleep(timeout).await;
}

fn joined_result(
    joined: Result<Result<ReaderResult, SyncError>, tokio::task::JoinError>,
) -> ReaderResult {
    match joined {
        Ok(Ok(done)) => done,
        Ok(Err(error)) => (Err(error), None),
        Err(e) => (
            Err(SyncError::new(format!("the reader stopped: {e}"), None)),
            None,
        ),
    }
}
