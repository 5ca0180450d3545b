//! The sync engine: source -> mapping -> duplicate check -> client, with every
//! record accounted for in the run report.
//!
//! Reading and mapping run on a blocking thread that feeds the client's
//! bounded queue (so a slow Segment slows the reader instead of growing
//! memory); the client's outcome hook settles each record as delivered or
//! failed. A record is tracked from just before it is queued until its
//! outcome, so whatever is still tracked when the run ends is pending.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use segment_client::{EventOutcome, HttpClient, HttpClientBuilder, Identity, SegmentError};

use crate::mapping::{DuplicatePolicy, Mapping};
use crate::record::{Location, RecordError, RecordErrorKind};
use crate::report::{Counters, ReportWriter, RunReport, Undelivered};
use crate::source::{ReadProgress, Source, SourceError};

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
    /// Whether the client is a dry run (recorded in the report).
    pub dry_run: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            duplicates: None,
            flush_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(10),
            report: None,
            dry_run: false,
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
    /// host), the report file cannot be written, the source fails mid-read,
    /// or Segment refuses the write key. Where records were already handled,
    /// the error carries the partial [`report`](SyncError::report).
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
        let tracker = Arc::new(Tracker {
            counters: Arc::clone(&self.counters),
            in_flight: Mutex::default(),
            report: Mutex::new(report_writer),
            report_error: Mutex::default(),
            fatal: Mutex::default(),
            failed_by_reason: Mutex::default(),
            invalid_by_reason: Mutex::default(),
            stop: self.stop.clone(),
        });
        let hook = Arc::clone(&tracker);
        let client = self
            .client
            .on_outcome(move |outcome| hook.settle(outcome))
            .build()?;

        let duplicates = self
            .options
            .duplicates
            .unwrap_or_else(|| self.mapping.duplicates());
        let reader = {
            let (client, tracker) = (client.clone(), Arc::clone(&tracker));
            let (source, mapping) = (self.source, self.mapping);
            tokio::task::spawn_blocking(move || {
                read_all(source, &mapping, &client, &tracker, duplicates)
            })
        };
        let read_result = wait_for_reader(reader, &self.stop).await;

        let stopped = self.stop.is_stopped();
        let flush_timeout = if stopped {
            self.options.shutdown_timeout
        } else {
            self.options.flush_timeout
        };
        // Outcomes arrive through the hook; the report of the close adds nothing new.
        let close_error = client
            .close_and_flush_with_timeout(flush_timeout)
            .await
            .err();
        tracker.settle_pending(close_error.as_ref());

        let report = tracker.summary(RunReport {
            source: String::new(),
            dry_run: self.options.dry_run,
            started_at,
            duration_secs: started.elapsed().as_secs_f64(),
            read: 0,
            valid: 0,
            invalid: 0,
            duplicates: 0,
            delivered: 0,
            failed: 0,
            pending: 0,
            interrupted: stopped,
            events_per_sec: 0.0,
            invalid_by_reason: BTreeMap::new(),
            failed_by_reason: BTreeMap::new(),
        });
        debug_assert!(report.adds_up(), "{report:?}");
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
        if let Some(e) = report_io {
            return Err(with_report(SyncError::new(
                format!("cannot write the report: {e}"),
                None,
            )));
        }
        Ok(report)
    }
}

/// Waits for the reader, but not past a stop: a reader blocked on a full
/// queue is left behind (the client's close unblocks it).
async fn wait_for_reader(
    reader: tokio::task::JoinHandle<Result<String, SyncError>>,
    stop: &StopSignal,
) -> Result<(), SyncError> {
    let mut reader = reader;
    loop {
        tokio::select! {
            joined = &mut reader => {
                return match joined {
                    Ok(result) => result.map(drop),
                    Err(e) => Err(SyncError::new(format!("the reader stopped: {e}"), None)),
                };
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if stop.is_stopped() {
                    return Ok(());
                }
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the reader thread and the outcome hook share.
struct Tracker {
    counters: Arc<Counters>,
    /// Records queued and not yet settled, by `messageId`.
    in_flight: Mutex<HashMap<String, (Location, Identity)>>,
    report: Mutex<ReportWriter>,
    report_error: Mutex<Option<io::Error>>,
    fatal: Mutex<Option<SegmentError>>,
    failed_by_reason: Mutex<BTreeMap<String, u64>>,
    invalid_by_reason: Mutex<BTreeMap<String, u64>>,
    stop: StopSignal,
}

impl Tracker {
    fn write(&self, write: impl FnOnce(&mut ReportWriter) -> io::Result<()>) {
        if let Err(e) = write(&mut lock(&self.report)) {
            lock(&self.report_error).get_or_insert(e);
        }
    }

    fn invalid(&self, error: &RecordError) {
        Counters::add(&self.counters.invalid);
        *lock(&self.invalid_by_reason)
            .entry(error.kind.code().to_owned())
            .or_default() += 1;
        self.write(|w| w.invalid(error));
    }

    /// Called by the client for every event, as soon as its fate is known.
    fn settle(&self, outcome: &EventOutcome<'_>) {
        let tracked = lock(&self.in_flight).remove(outcome.message_id);
        match outcome.result {
            Ok(()) => Counters::add(&self.counters.delivered),
            Err(error) => {
                Counters::add(&self.counters.failed);
                let code = error.code().unwrap_or("unknown").to_owned();
                *lock(&self.failed_by_reason).entry(code).or_default() += 1;
                if let Some((at, identity)) = &tracked {
                    self.write(|w| w.undelivered(Undelivered::Failed, at, identity, Some(error)));
                }
                if error.is_unauthorized() {
                    // A refused key will refuse every batch: stop at once.
                    lock(&self.fatal).get_or_insert_with(|| error.clone());
                    self.stop.stop();
                }
            }
        }
    }

    /// Whatever is still tracked at the end did not finish: report it as pending.
    fn settle_pending(&self, close_error: Option<&SegmentError>) {
        let left = std::mem::take(&mut *lock(&self.in_flight));
        if left.is_empty() {
            return;
        }
        let mut left: Vec<_> = left.into_values().collect();
        left.sort_by_key(|(at, _)| at.line);
        for (at, identity) in &left {
            self.write(|w| w.undelivered(Undelivered::Pending, at, identity, close_error));
        }
    }

    fn summary(&self, mut report: RunReport) -> RunReport {
        let c = &self.counters;
        report.read = Counters::get(&c.read);
        report.valid = Counters::get(&c.valid);
        report.invalid = Counters::get(&c.invalid);
        report.duplicates = Counters::get(&c.duplicates);
        report.delivered = Counters::get(&c.delivered);
        report.failed = Counters::get(&c.failed);
        report.pending = report
            .valid
            .saturating_sub(report.delivered + report.failed);
        report.events_per_sec = report.delivered as f64 / report.duration_secs.max(1e-9);
        report.invalid_by_reason = lock(&self.invalid_by_reason).clone();
        report.failed_by_reason = lock(&self.failed_by_reason).clone();
        report
    }
}

/// Reads, maps and queues every record. Returns the source name.
fn read_all(
    mut source: Source,
    mapping: &Mapping,
    client: &HttpClient,
    tracker: &Tracker,
    duplicates: DuplicatePolicy,
) -> Result<String, SyncError> {
    let mut seen = SeenIdentities::default();
    for item in source.by_ref() {
        if tracker.stop.is_stopped() {
            break;
        }
        Counters::add(&tracker.counters.read);
        let record = match item {
            Ok(record) => record,
            Err(error) => {
                tracker.invalid(&error);
                continue;
            }
        };
        let mapped = match mapping.apply(&record) {
            Ok(mapped) => mapped,
            Err(error) => {
                tracker.invalid(&error);
                continue;
            }
        };
        let at = record.location;
        if let Some(first_line) = seen.check(&mapped.identity, at.line) {
            Counters::add(&tracker.counters.duplicates);
            let refuse = |why: &str| {
                RecordError::new(
                    at.clone(),
                    RecordErrorKind::DuplicateIdentity,
                    format!("the same identity is on line {first_line}; {why}"),
                )
            };
            match duplicates {
                DuplicatePolicy::Last => {
                    tracker.write(|w| w.duplicate(&at, &mapped.identity, first_line))
                }
                DuplicatePolicy::First => {
                    tracker.invalid(&refuse("the first one wins, so this one was not sent"));
                    continue;
                }
                DuplicatePolicy::Error => {
                    tracker.invalid(&refuse("duplicates are errors in this mapping"));
                    continue;
                }
            }
        }
        let message_id = segment_client::new_message_id();
        let identity = mapped.identity.clone();
        let params = mapped.into_params().with_message_id(message_id.clone());
        lock(&tracker.in_flight).insert(message_id.clone(), (at.clone(), identity));
        match client.identify_blocking(params) {
            Ok(()) => Counters::add(&tracker.counters.valid),
            Err(error) => {
                lock(&tracker.in_flight).remove(&message_id);
                if error.is_invalid_payload() {
                    let kind = if error.code() == Some(segment_client::codes::PAYLOAD_TOO_LARGE) {
                        RecordErrorKind::PayloadTooLarge
                    } else {
                        RecordErrorKind::InvalidPayload
                    };
                    tracker.invalid(&RecordError::new(at, kind, error.message()));
                } else {
                    // Closed under us (a stop or a fatal error): this record was
                    // read but not queued, so it counts as not read.
                    tracker.counters.read.fetch_sub(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    if let Some(error) = source.take_fatal() {
        return Err(error.into());
    }
    Ok(source.name().to_owned())
}

/// Identities already seen in this input, as 64-bit hashes with their first
/// line: 16 bytes per identity instead of the identity itself.
#[derive(Default)]
struct SeenIdentities {
    first_line: HashMap<u64, u64>,
}

impl SeenIdentities {
    /// Remembers `identity` at `line`; returns the earlier line if it was seen.
    fn check(&mut self, identity: &Identity, line: u64) -> Option<u64> {
        let mut hasher = DefaultHasher::new();
        identity.user_id().hash(&mut hasher);
        identity.anonymous_id().hash(&mut hasher);
        match self.first_line.entry(hasher.finish()) {
            std::collections::hash_map::Entry::Occupied(first) => Some(*first.get()),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(line);
                None
            }
        }
    }
}
