//! `segment-sync sync`: a file (or stdin) into Segment.

use std::time::Duration;

use anyhow::Result;
use customer_sync::mapping::DuplicatePolicy;
use customer_sync::{
    IncrementalOptions, StateOptions, StopSignal, SyncError, SyncOptions, SyncRun,
};

use crate::Outcome;
use crate::commands::{display_source, open_input_after, sync_name};
use crate::config::{check_dry_run_dir, client_builder};
use crate::flags::{DuplicatesArg, SyncArgs};
use crate::hint::with_hint;
use crate::problems::print_first_invalid;
use crate::progress::Progress;
use crate::signals::Signals;
use crate::summary::print_summary;

/// How long the reachability check may take before the run is refused.
const REACHABLE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(args: SyncArgs) -> Result<Outcome> {
    // Configuration first: a bad key, host, source or mapping fails before
    // any record is read.
    let client = client_builder(&args.segment, &args.tuning, args.dry_run)?;
    check_dry_run_dir(args.dry_run_dir.as_deref())?;
    let name = sync_name(
        &args.state,
        &args.input.source,
        args.input.database.table.as_deref(),
    );
    if args.input.database.query.is_some() && args.state.name.is_none() && !args.no_state {
        return Err(with_hint(
            "a --query sync needs --name: its state is kept under that name",
            "add --name NAME (for example --name active_customers)",
        ));
    }
    let resume_after = match &args.input.database.cursor {
        Some(column) if !args.no_state && !args.full_resync => {
            cursor_mark(&args.state.state, &name, column)?
        }
        _ => None,
    };
    let (source, mapping) = open_input_after(&args.input, resume_after)?;
    let client = if args.dry_run {
        client.dry_run(args.dry_run_dir.clone())
    } else {
        let host = client.configured_host().to_owned();
        segment_client::check_reachable(&host, REACHABLE_TIMEOUT)
            .await
            .map_err(|e| {
                with_hint(
                    format!("cannot reach {host}: {e}"),
                    "check the network and --host/SEGMENT_HOST; --dry-run checks a file without sending",
                )
            })?;
        client
    };
    let options = SyncOptions {
        duplicates: args.duplicates.map(duplicate_policy),
        flush_timeout: Duration::from_secs(args.tuning.flush_timeout),
        shutdown_timeout: Duration::from_secs(args.tuning.shutdown_timeout),
        report: args.report.clone(),
        dry_run: args.dry_run,
        state: (!args.no_state).then(|| StateOptions {
            dir: args.state.state.clone(),
            name,
            incremental: IncrementalOptions {
                full_resync: args.full_resync,
                retry_failed: args.retry_failed,
                max_failed_runs: args.max_failed_runs,
                allow_mass_removal: args.allow_mass_removal,
            },
        }),
    };
    let source_name = display_source(&args.input);
    let sync = SyncRun::new(source, mapping, client, options);
    let counters = sync.progress().counters;
    let progress = (!args.quiet).then(|| Progress::start(sync.progress()));
    let signals = tokio::spawn(stop_on_signal(
        Signals::listen(),
        sync.stop_signal(),
        args.tuning.shutdown_timeout,
        match (args.dry_run, args.no_state) {
            (true, _) => "a dry run sends nothing",
            (false, true) => {
                "what was in flight may not have been delivered (--no-state keeps no outbox)"
            }
            (false, false) => "what was in flight stays in the outbox, and the next run sends it",
        },
    ));
    let result = sync.run().await;
    signals.abort();
    if let Some(progress) = progress {
        progress.finish();
    }
    match result {
        Ok(report) => {
            if !args.quiet {
                print_first_invalid(&counters, &report, args.report.as_deref());
                print_summary(&source_name, &report, args.report.as_deref());
            }
            Ok(if report.is_clean() {
                Outcome::Clean
            } else {
                Outcome::Partial
            })
        }
        Err(error) => {
            if let Some(report) = error.report() {
                print_first_invalid(&counters, report, args.report.as_deref());
                print_summary(&source_name, report, args.report.as_deref());
            }
            if is_outage(&error) || connection_lost(&error) {
                // Not fatal: what was read is accounted for (delivered, or
                // pending in the outbox) and the next run finishes it.
                eprintln!("error: {error}");
                if let Some(hint) = error.hint() {
                    eprintln!("hint: {hint}");
                }
                return Ok(Outcome::Partial);
            }
            Err(fatal(error))
        }
    }
}

fn is_outage(error: &SyncError) -> bool {
    std::error::Error::source(error)
        .and_then(|e| e.downcast_ref::<segment_client::SegmentError>())
        .is_some_and(segment_client::SegmentError::is_outage)
}

fn connection_lost(error: &SyncError) -> bool {
    std::error::Error::source(error)
        .and_then(|e| e.downcast_ref::<customer_sync::source::SourceError>())
        .is_some_and(customer_sync::source::SourceError::is_connection_lost)
}

/// The high-water mark a keyset sync stored, read without the lock (the
/// run takes it later; a run in between only moves the mark forward).
fn cursor_mark(dir: &std::path::Path, name: &str, column: &str) -> Result<Option<String>> {
    if !customer_sync::state::StateStore::exists(dir, name) {
        return Ok(None);
    }
    let store = customer_sync::state::StateStore::open_existing(dir, name)
        .map_err(|e| with_hint(e.to_string(), "check --state and --name"))?;
    store
        .cursor_mark(column)
        .map_err(|e| with_hint(e.to_string(), "check --state and --name"))
}

fn fatal(error: SyncError) -> anyhow::Error {
    match error.hint() {
        Some(hint) => with_hint(error.to_string(), hint),
        None => error.into(),
    }
}

/// Ctrl-C or SIGTERM: stop reading, flush what is queued, report the rest.
/// A second one ends the process at once, as a kill would: the state's
/// writes are atomic and its outbox keeps what was in flight for the next
/// run (once the signals are handled, nothing else would end a flush that
/// waits on a hung server before its timeout).
async fn stop_on_signal(
    mut signals: Signals,
    stop: StopSignal,
    shutdown_secs: u64,
    left: &'static str,
) {
    signals.next().await;
    eprintln!(
        "\nstopping: no more records are read; flushing what is queued (up to {shutdown_secs} s; Ctrl-C again to stop at once)"
    );
    stop.stop();
    let code = signals.next().await;
    eprintln!("stopped at once (the report file, if any, is incomplete): {left}");
    std::process::exit(code);
}

fn duplicate_policy(arg: DuplicatesArg) -> DuplicatePolicy {
    match arg {
        DuplicatesArg::Last => DuplicatePolicy::Last,
        DuplicatesArg::First => DuplicatePolicy::First,
        DuplicatesArg::Error => DuplicatePolicy::Error,
    }
}
