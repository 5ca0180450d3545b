//! [`SyncRun::run`], phase by phase: open the state, build the client,
//! read, close, commit, report.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;

use super::duplicates::LastRows;
use super::planner::Planner;
use super::reader::Reader;
use super::recovery;
use super::tracker::{Tracker, lock};
use super::{StateOptions, StopSignal, SyncError, SyncRun};
use crate::mapping::DuplicatePolicy;
use crate::report::{ReportWriter, RunReport};
use crate::state::{OutboxScan, PendingRef, StateIndex, StateStore};

/// How often outcomes are committed to the state while the reader waits
/// on a full queue, so a kill loses at most this much of Segment's answers.
const COMMIT_EVERY: Duration = Duration::from_millis(250);

impl SyncRun {
    /// Runs the sync to the end of the source (or a stop) and reports.
    ///
    /// # Errors
    /// Fatal problems only: the state is locked by another run or cannot be
    /// used, the client cannot be built (no write key, bad host), the state
    /// or report cannot be written, the source fails mid-read (an unclosed
    /// CSV quote, a JSON array cut short), or Segment refuses the write key.
    /// Where records were already handled, the error carries the partial
    /// [`report`](SyncError::report), whose counts add up.
    pub async fn run(self) -> Result<RunReport, SyncError> {
        let started = (Utc::now(), Instant::now());
        let mut run = self.prepare()?;
        let read = run.read().await;
        let finished = run.finish_state(&read);
        run.conclude(started, read, finished)
    }

    /// Phase 1: the report file, the state (locked, before the client, so
    /// a state problem stops the run before anything is sent), the tracker,
    /// the client and the planner.
    fn prepare(self) -> Result<Prepared, SyncError> {
        if self.mapping.events().is_some() && self.options.state.is_none() {
            // Added, changed and removed are relative to what Segment has:
            // without a state every record would be "added" on every run.
            return Err(SyncError::new(
                "the mapping's [events] need a state: added, changed and removed are told from what earlier runs sent",
                Some("drop --no-state, or remove [events] from the mapping"),
            ));
        }
        let source_name = self.source.name().to_owned();
        let cursor = self.source.cursor().cloned();
        let report_writer = match &self.options.report {
            Some(path) => ReportWriter::create(path).map_err(|e| {
                let mut err =
                    SyncError::new(format!("cannot create the report {}", path.display()), None);
                err.source = Some(Box::new(e));
                err
            })?,
            None => ReportWriter::none(),
        };
        let report_writer = if self.mapping.is_group() {
            report_writer.for_groups()
        } else {
            report_writer
        };
        let writes_state = !self.options.dry_run;
        let (state, scan) = match &self.options.state {
            Some(options) => {
                let (state, scan) = open_state(options, writes_state, &source_name)?;
                (Some(state), scan)
            }
            None => (None, OutboxScan::default()),
        };
        let tracker = Arc::new(Tracker {
            counters: Arc::clone(&self.counters),
            in_flight: Mutex::default(),
            report: Mutex::new(report_writer),
            report_error: Mutex::default(),
            fatal: Mutex::default(),
            failed_by_reason: Mutex::default(),
            invalid_by_reason: Mutex::default(),
            removals_held_back: Mutex::default(),
            changes: (state.is_some() && writes_state).then(Mutex::default),
            stop: self.stop.clone(),
        });
        recovery::report_scan(&tracker, &scan);
        let hook = Arc::clone(&tracker);
        let client = self
            .client
            .on_outcome(move |outcome| hook.settle(outcome))
            .build()?;
        let (planner, store, run_id) = match state {
            Some(state) => {
                let mut planner = Planner::new(
                    state.index,
                    recovery::in_flight_by_key(state.pending),
                    state.options,
                    self.mapping.null_policy(),
                    self.mapping.events().cloned(),
                );
                planner.superseded = scan.superseded;
                planner.writes_state = writes_state;
                (Some(planner), Some(state.store), state.run_id)
            }
            None => (None, None, None),
        };
        let duplicates = self
            .options
            .duplicates
            .unwrap_or_else(|| self.mapping.duplicates());
        Ok(Prepared {
            source: Some((self.source, self.mapping)),
            source_name,
            options: self.options,
            stop: self.stop,
            tracker,
            client,
            planner,
            store,
            run_id,
            duplicates,
            outbox_torn: scan.torn,
            cursor,
        })
    }
}

/// A run between its phases.
struct Prepared {
    /// Taken by the reader.
    source: Option<(crate::Source, crate::Mapping)>,
    source_name: String,
    options: super::SyncOptions,
    stop: StopSignal,
    tracker: Arc<Tracker>,
    client: segment_client::HttpClient,
    /// Taken by the reader, handed back when it ends.
    planner: Option<Planner>,
    store: Option<Arc<Mutex<StateStore>>>,
    run_id: Option<i64>,
    duplicates: DuplicatePolicy,
    outbox_torn: u64,
    /// Keyset mode: rows not read are unchanged, not gone.
    cursor: Option<crate::source::postgres::CursorProgress>,
}

/// What the read phase ended with.
struct Read {
    result: Result<(), SyncError>,
    stopped: bool,
}

/// What the state phase ended with.
struct Finished {
    error: Option<crate::state::StateError>,
}

impl Prepared {
    /// Phase 2: read on a blocking thread (after a first pass for
    /// `--duplicates last`) while committing outcomes, then close the
    /// client and settle what is left.
    async fn read(&mut self) -> Read {
        let reader = {
            let (client, tracker, store) = (
                self.client.clone(),
                Arc::clone(&self.tracker),
                self.store.clone(),
            );
            let (source, mapping) = self.source.take().expect("read once");
            let (mut planner, duplicates, stop) =
                (self.planner.take(), self.duplicates, self.stop.clone());
            // A keyset read has only the rows past its mark: rows not read
            // are unchanged, not gone.
            let reads_everything = self.cursor.is_none();
            tokio::task::spawn_blocking(move || {
                // `last` needs to know, at each row, whether a later row has
                // the same identity: a file is read once before the run to
                // find out. Memory stays bounded (only repeated identities
                // are kept); stdin and named pipes cannot be read twice.
                let last_rows = match (duplicates, source.reopen()) {
                    (DuplicatePolicy::Last, Some(Ok(again))) => {
                        Some(LastRows::scan(again, &mapping, &stop, planner.as_mut())?)
                    }
                    (DuplicatePolicy::Last, Some(Err(error))) => return Err(error.into()),
                    _ => None,
                };
                let mut reader = Reader::new(
                    &client,
                    &tracker,
                    &mapping,
                    store.as_deref(),
                    planner,
                    duplicates,
                    last_rows,
                );
                reader.reads_everything = reads_everything;
                let result = reader.read_all(source);
                Ok((result, reader.planner))
            })
        };
        let waited =
            wait_for_reader(reader, &self.stop, self.store.as_deref(), &self.tracker).await;

        // Outcomes arrive through the hook; the close's own report adds
        // nothing new. A stop during the close cuts it to the shutdown timeout.
        let close_error = tokio::select! {
            result = self.client.close_and_flush_with_timeout(self.options.flush_timeout) => result.err(),
            () = shutdown_deadline(&self.stop, self.options.shutdown_timeout) => None,
        };
        let stopped = self.stop.is_stopped();
        // A reader left behind at a stop is unblocked by the close; join it so
        // its last counts are in before the summary.
        let (result, planner) = match waited {
            Ok(done) => done,
            Err(reader) => match tokio::time::timeout(Duration::from_secs(5), reader).await {
                Ok(joined) => joined_result(joined),
                Err(_) => (
                    Err(SyncError::new("the reader did not stop in time", None)),
                    None,
                ),
            },
        };
        self.planner = planner;
        self.tracker.settle_pending(close_error.as_ref());
        Read { result, stopped }
    }

    /// Phase 3: commit the last outcomes; empty the outbox when everything
    /// settled and the source was read to its end. (The reader reported who
    /// is gone, only after a complete read: a source not read to the end
    /// tells nothing about absence.)
    fn finish_state(&self, read: &Read) -> Finished {
        let mut finished = Finished { error: None };
        let Some(store) = &self.store else {
            return finished;
        };
        let complete = read.result.is_ok() && !read.stopped;
        // Entries put back unsent (the client closed while they were resent
        // after a complete read) are only in the outbox.
        let waiting = self
            .planner
            .as_ref()
            .is_some_and(|p| p.unmatched_count() > 0);
        let all_settled = self.tracker.all_settled() && complete && !waiting;
        let mut store = lock(store);
        let committed = store.apply(&self.tracker.take_changes());
        let cleared = committed.and_then(|()| match all_settled && !self.options.dry_run {
            true => store.clear_outbox(),
            false => Ok(()),
        });
        if let Err(e) = cleared {
            finished.error = Some(e);
        }
        // The mark moves only when every row up to it settled: a failed or
        // pending row is read again next run from the old mark.
        let failed = crate::report::Counters::get(&self.tracker.counters.failed);
        if let Some(cursor) = &self.cursor
            && all_settled
            && failed == 0
            && !self.options.dry_run
            && finished.error.is_none()
            && let Some(mark) = cursor.mark()
            && let Err(e) = store.set_cursor_mark(cursor.column(), &mark)
        {
            finished.error = Some(e);
        }
        finished
    }

    /// Phase 4: the report (its counts checked), the run's row in the
    /// state, and the outcome: the first fatal problem, or the report.
    fn conclude(
        self,
        (started_at, started): (chrono::DateTime<Utc>, Instant),
        read: Read,
        finished: Finished,
    ) -> Result<RunReport, SyncError> {
        let traits = self.planner.as_ref().map(|p| p.traits).unwrap_or_default();
        let report = self.tracker.summary(RunReport {
            source: self.source_name.clone(),
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
            outbox_torn: self.outbox_torn,
            outbox_waiting: self
                .planner
                .as_ref()
                .map_or(0, |p| p.unmatched_count() as u64),
            removed: 0,
            removed_sent: 0,
            tracked_added: 0,
            tracked_changed: 0,
            tracked_removed: 0,
            delivered: 0,
            failed: 0,
            pending: 0,
            traits_unset: traits.unset,
            traits_left_out: traits.left_out,
            interrupted: read.stopped,
            events_per_sec: 0.0,
            invalid_by_reason: BTreeMap::new(),
            failed_by_reason: BTreeMap::new(),
            removals_held_back: None,
        });
        let writer = std::mem::replace(&mut *lock(&self.tracker.report), ReportWriter::none());
        let report_io = writer
            .finish(&report)
            .err()
            .or_else(|| lock(&self.tracker.report_error).take());
        let mut state_error = finished.error;
        if let (Some(store), Some(run_id), None) = (&self.store, self.run_id, &state_error) {
            let logged = RunLogRow::new(&report, &lock(&self.tracker.fatal), &read, &report_io);
            if let Err(e) = lock(store).finish_run(run_id, &logged) {
                state_error = Some(e);
            }
        }

        let with_report = |mut err: SyncError| {
            err.report = Some(Box::new(report.clone()));
            err
        };
        if let Some(fatal) = lock(&self.tracker.fatal).take() {
            return Err(with_report(fatal.into()));
        }
        read.result.map_err(with_report)?;
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
) -> Result<(RunState, OutboxScan), SyncError> {
    let mut store = StateStore::open(&options.dir, &options.name)?;
    let index = store.index()?;
    let mut scan = if writes_state {
        store.pending(&index)?
    } else {
        OutboxScan::default()
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
            index,
            pending,
            run_id,
            options: options.incremental.clone(),
        },
        scan,
    ))
}

/// The state of a run that has one, as opened.
struct RunState {
    store: Arc<Mutex<StateStore>>,
    index: StateIndex,
    /// What earlier runs left in flight, handed to the planner.
    pending: Vec<PendingRef>,
    run_id: Option<i64>,
    options: super::IncrementalOptions,
}

type ReaderResult = (Result<(), SyncError>, Option<Planner>);

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

/// A run's row in the state's run log (`segment-sync status`): the report,
/// and how the run ended, as the binary's exit code (0 all delivered, 1
/// some records not, 2 a fatal error) and the error's message.
#[derive(serde::Serialize)]
struct RunLogRow<'a> {
    #[serde(flatten)]
    report: &'a RunReport,
    exit: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl<'a> RunLogRow<'a> {
    fn new(
        report: &'a RunReport,
        fatal: &Option<segment_client::SegmentError>,
        read: &Read,
        report_io: &Option<std::io::Error>,
    ) -> Self {
        let (exit, error) = if let Some(fatal) = fatal {
            // An outage leaves what was not sent pending: not fatal to the sync.
            (
                if fatal.is_outage() { 1 } else { 2 },
                Some(fatal.to_string()),
            )
        } else if let Err(e) = &read.result {
            (2, Some(e.to_string()))
        } else if let Some(e) = report_io {
            (2, Some(format!("cannot write the report: {e}")))
        } else if !report.adds_up() {
            (
                2,
                Some("internal error: the run's counts do not add up".to_owned()),
            )
        } else {
            (u8::from(!report.is_clean()), None)
        };
        Self {
            report,
            exit,
            error,
        }
    }
}
