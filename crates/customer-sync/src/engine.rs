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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use segment_client::{HttpClient, HttpClientBuilder, PreparedEvent, SegmentError};

use crate::mapping::{DuplicatePolicy, Mapping};
use crate::plan::{IncrementalOptions, Planner};
use crate::reader::Reader;
use crate::record::{Location, RecordError, RecordErrorKind};
use crate::report::{Counters, ReportWriter, RunReport};
use crate::source::{ReadProgress, Source, SourceError};
use crate::state::{Pending, StateError, StateStore};
use crate::tracker::{InFlightRecord, StateRef, Tracker, lock};

/// Tells a running sync to stop reading; cheap to clone, safe to call from a signal handler task.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    /// Asks the run to stop reading and flush what it queued.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

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
    fn new(message: impl Into<String>, hint: Option<&str>) -> Self {
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
        let mut err = SyncError::new(
            error.to_string(),
            Some("check --state and --name; `segment-sync reset` starts over"),
        );
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
        } else if error.is_outage() {
            Some(
                "Segment could not be reached; what was not sent stays pending in the state and goes first on the next run: check the network and --host, then run again",
            )
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
        let report_writer = match &self.options.report {
            Some(path) => ReportWriter::create(path).map_err(|e| {
                let mut err = SyncError::new(
                    format!("cannot create the report {}: {e}", path.display()),
                    None,
                );
                err.source = Some(Box::new(e));
                err
            })?,
            None => ReportWriter::none(),
        };
        // The state is opened before the client, so a state problem stops the
        // run before anything is sent.
        let writes_state = !self.options.dry_run;
        let mut state = match &self.options.state {
            Some(options) => {
                let mut store = StateStore::open(&options.dir, &options.name)?;
                let index = store.index()?;
                let outbox = if writes_state {
                    store.pending(&index)?
                } else {
                    Vec::new()
                };
                let run_id = if writes_state {
                    Some(store.begin_run(self.source.name())?)
                } else {
                    None
                };
                Some(RunState {
                    store: Arc::new(Mutex::new(store)),
                    index: Some(index),
                    outbox,
                    run_id,
                    options: options.incremental.clone(),
                })
            }
            None => None,
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
        let hook = Arc::clone(&tracker);
        let client = self
            .client
            .on_outcome(move |outcome| hook.settle(outcome))
            .build()?;

        let recovery = match &mut state {
            Some(state) => {
                recover_outbox(std::mem::take(&mut state.outbox), &client, &tracker).await
            }
            None => Recovery::default(),
        };
        let recovery_complete = !recovery.interrupted;
        let planner = state.as_mut().map(|state| {
            let index = state.index.take().unwrap_or_default();
            Planner::new(
                index,
                recovery.hashes,
                state.options.clone(),
                self.mapping.null_policy(),
            )
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
                let mut reader = Reader {
                    client: &client,
                    tracker: &tracker,
                    mapping: &mapping,
                    store: store.as_deref(),
                    planner,
                    duplicates,
                    chunk: Vec::new(),
                };
                let result = reader.read_all(source);
                (result, reader.planner)
            })
        };
        let waited = wait_for_reader(reader, &self.stop).await;

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
        // Everything written to the outbox settled: nothing to recover later.
        let all_settled =
            !tracker.has_in_flight() && recovery_complete && !stopped && read_result.is_ok();
        tracker.settle_pending(close_error.as_ref());

        let mut removed = 0;
        let mut state_error = None;
        if let Some(store) = &store {
            let mut store = lock(store);
            // Commit the outcomes that arrived since the reader's last chunk.
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
        let mut report = tracker.summary(RunReport {
            source: String::new(),
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
        if let Ok(name) = &read_result {
            report.source.clone_from(name);
        }
        debug_assert!(report.adds_up(), "{report:?}");
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
            return Err(with_report(SyncError::new(
                format!("cannot write the report: {e}"),
                None,
            )));
        }
        Ok(report)
    }
}

/// The state of a run that has one.
struct RunState {
    store: Arc<Mutex<StateStore>>,
    index: Option<crate::state::StateIndex>,
    outbox: Vec<Pending>,
    run_id: Option<i64>,
    options: IncrementalOptions,
}

/// Queues again what an earlier run left in the outbox: the stored events,
/// unchanged, so Segment drops any copy it already has. Returns the
/// recovered payload hash per identity key.
async fn recover_outbox(outbox: Vec<Pending>, client: &HttpClient, tracker: &Tracker) -> Recovery {
    let mut recovery = Recovery::default();
    for Pending { entry, row } in outbox {
        let at = Location::new(entry.source.as_str(), entry.line);
        let event = match PreparedEvent::from_json(entry.event) {
            Ok(event) => event,
            Err(error) => {
                let message = format!("the stored outbox entry is unreadable: {error}");
                tracker.invalid(&RecordError::new(at, RecordErrorKind::Malformed, message));
                continue;
            }
        };
        let message_id = event.message_id().to_owned();
        let state = StateRef {
            row,
            hash: entry.hash,
            source_hash: entry.source_hash,
            traits: entry.traits,
        };
        tracker.track(
            &message_id,
            InFlightRecord {
                at,
                identity: event.identity().clone(),
                state: Some(state),
            },
        );
        if client.queue_prepared(event).await.is_err() {
            // Closed already (a stop): it stays in the outbox for the next run.
            tracker.untrack(&message_id);
            recovery.interrupted = true;
            break;
        }
        Counters::add(&tracker.counters.recovered);
        recovery.hashes.insert(entry.key, entry.hash);
    }
    recovery
}

/// What the recovery of an earlier run's outbox queued.
#[derive(Default)]
struct Recovery {
    /// Payload hash per identity key.
    hashes: HashMap<String, u64>,
    /// Whether it stopped before queueing every entry.
    interrupted: bool,
}

type ReaderResult = (Result<String, SyncError>, Option<Planner>);

/// Waits for the reader, but not past a stop: a reader blocked on a full
/// queue is handed back, to be joined once the client's close unblocks it.
async fn wait_for_reader(
    mut reader: tokio::task::JoinHandle<ReaderResult>,
    stop: &StopSignal,
) -> Result<ReaderResult, tokio::task::JoinHandle<ReaderResult>> {
    loop {
        tokio::select! {
            joined = &mut reader => return Ok(joined_result(joined)),
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if stop.is_stopped() {
                    return Err(reader);
                }
            }
        }
    }
}

/// Resolves `timeout` after a stop is asked for (or at once past it).
async fn shutdown_deadline(stop: &StopSignal, timeout: Duration) {
    while !stop.is_stopped() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(timeout).await;
}

fn joined_result(joined: Result<ReaderResult, tokio::task::JoinError>) -> ReaderResult {
    joined.unwrap_or_else(|e| {
        (
            Err(SyncError::new(format!("the reader stopped: {e}"), None)),
            None,
        )
    })
}
