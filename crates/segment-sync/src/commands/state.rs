//! `status` and `reset`: look at or drop a sync's state.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Result;
use customer_sync::state::{LoggedRun, StateStore};
use serde::Serialize;
use serde_json::Value;

use crate::Outcome;
use crate::flags::{ResetArgs, StateArgs, StatusArgs};
use crate::hint::with_hint;

/// The sync's name: `--name`, or the only sync in the state directory.
fn name_of(args: &StateArgs) -> Result<String> {
    if let Some(name) = &args.name {
        return Ok(name.clone());
    }
    let names: Vec<String> = std::fs::read_dir(&args.state)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter_map(|f| f.strip_suffix(".sqlite").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    match names.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(with_hint(
            format!("there is no sync state in {}", args.state.display()),
            "run a sync first, or pass --state DIR",
        )),
        several => Err(with_hint(
            format!(
                "which sync? {} has {}",
                args.state.display(),
                several.join(", ")
            ),
            "pass --name NAME",
        )),
    }
}

/// Prints what the state knows: counts, the last runs, the records failing
/// now and those waiting in the outbox; as text, or one JSON object.
pub fn status(args: &StatusArgs) -> Result<Outcome> {
    let name = name_of(&args.state)?;
    let mut store = StateStore::open_existing(&args.state.state, &name).map_err(|e| {
        with_hint(
            e.to_string(),
            e.hint().unwrap_or("check --state and --name"),
        )
    })?;
    let (records, accepted, pending, failing) = store.counts()?;
    let runs: Vec<RunRow> = store.runs(args.runs)?.iter().map(RunRow::from).collect();
    let failed = store.failed(args.failed)?;
    let waiting = store.pending_records(args.failed)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let status = serde_json::json!({
            "sync": name,
            "state": store.path(),
            "records": records,
            "accepted": accepted,
            "failing": failing,
            "pending": pending,
            "runs": runs,
            "failing_records": failed.iter().map(|r| {
                let (kind, id) = r.identity();
                serde_json::json!({
                    kind: id,
                    "line": r.line,
                    "failed_runs": r.failed_runs,
                    "code": r.code,
                    "message": r.message,
                })
            }).collect::<Vec<_>>(),
            "pending_records": waiting.iter().map(|p| {
                let (kind, id) = p.identity();
                serde_json::json!({
                    kind: id,
                    "source": p.source,
                    "line": p.line,
                    "message_id": p.message_id,
                })
            }).collect::<Vec<_>>(),
        });
        writeln!(out, "{status}")?;
        return Ok(Outcome::Clean);
    }
    writeln!(out, "sync {name} ({})", store.path().display())?;
    writeln!(
        out,
        "  {records} records known: {accepted} accepted by Segment, {failing} failing, {pending} pending"
    )?;
    writeln!(out)?;
    if runs.is_empty() {
        writeln!(out, "no runs yet")?;
    } else {
        writeln!(out, "last runs, newest first:")?;
        write_run_table(&mut out, &runs)?;
    }
    if !failed.is_empty() {
        writeln!(out)?;
        writeln!(out, "records failing now (the next run sends them again):")?;
        for record in &failed {
            let (kind, id) = record.identity();
            let line = record
                .line
                .map(|l| format!("  line {l}"))
                .unwrap_or_default();
            let runs = if record.failed_runs == 1 {
                "run"
            } else {
                "runs"
            };
            writeln!(
                out,
                "  {kind} {id}{line}  failed in {} {runs}: {}",
                record.failed_runs,
                if record.message.is_empty() {
                    &record.code
                } else {
                    &record.message
                }
            )?;
        }
    }
    if !waiting.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "pending in the outbox (the next run sends them again under the same messageId):"
        )?;
        for entry in &waiting {
            let (kind, id) = entry.identity();
            writeln!(
                out,
                "  {kind} {id}  {}:{}  messageId {}",
                entry.source, entry.line, entry.message_id
            )?;
        }
    }
    Ok(Outcome::Clean)
}

/// One run of `status`, read from the state's run log (a dry run writes no
/// state, so it is never there). Its field names are the `--json` form's,
/// documented in the README.
#[derive(Debug, Serialize)]
struct RunRow {
    started_at: String,
    finished_at: Option<String>,
    duration_secs: Option<f64>,
    source: String,
    read: Option<u64>,
    sent: Option<u64>,
    unchanged: Option<u64>,
    invalid: Option<u64>,
    failed: Option<u64>,
    removed: Option<u64>,
    /// The run's exit code; `None` for a run that did not finish.
    exit: Option<u64>,
    error: Option<String>,
}

impl From<&LoggedRun> for RunRow {
    fn from(run: &LoggedRun) -> Self {
        let summary: Option<Value> = run
            .summary
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok());
        let field = |name: &str| summary.as_ref().and_then(|s| s[name].as_u64());
        let time = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms).map_or_else(
                || ms.to_string(),
                |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            )
        };
        Self {
            started_at: time(run.started_at_ms),
            finished_at: run.finished_at_ms.map(time),
            duration_secs: summary.as_ref().and_then(|s| s["duration_secs"].as_f64()),
            source: run.source.clone(),
            read: field("read"),
            sent: field("delivered"),
            unchanged: field("skipped"),
            invalid: field("invalid"),
            failed: field("failed"),
            removed: field("removed"),
            exit: field("exit"),
            error: summary
                .as_ref()
                .and_then(|s| s["error"].as_str().map(str::to_owned)),
        }
    }
}

/// The runs as an aligned table; a run that did not finish says so.
fn write_run_table(out: &mut impl Write, runs: &[RunRow]) -> std::io::Result<()> {
    let source_width = runs
        .iter()
        .map(|r| r.source.chars().count())
        .max()
        .unwrap_or(0)
        .max("source".len());
    writeln!(
        out,
        "  {:<20}  {:>8}  {:<source_width$}  {:>8}  {:>8}  {:>9}  {:>7}  {:>6}  {:>7}  exit",
        "started",
        "duration",
        "source",
        "read",
        "sent",
        "unchanged",
        "invalid",
        "failed",
        "removed"
    )?;
    for run in runs {
        let started = run.started_at.replace('T', " ");
        let Some(duration) = run.duration_secs else {
            writeln!(
                out,
                "  {started:<20}  {:>8}  {:<source_width$}  did not finish (killed, or stopped before it could record its end)",
                "-", run.source
            )?;
            continue;
        };
        let count = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
        let mut exit = run.exit.map_or_else(|| "-".to_owned(), |e| e.to_string());
        if let Some(error) = &run.error {
            exit.push_str(&format!("  {error}"));
        }
        writeln!(
            out,
            "  {started:<20}  {:>8}  {:<source_width$}  {:>8}  {:>8}  {:>9}  {:>7}  {:>6}  {:>7}  {exit}",
            format!("{duration:.2} s"),
            run.source,
            count(run.read),
            count(run.sent),
            count(run.unchanged),
            count(run.invalid),
            count(run.failed),
            count(run.removed),
        )?;
    }
    Ok(())
}

/// Deletes the state after a confirmation: every file it owns, through
/// the one place in the state code that knows them.
pub fn reset(args: &ResetArgs) -> Result<Outcome> {
    let name = name_of(&args.state)?;
    let dir = &args.state.state;
    let path = StateStore::path_for(dir, &name);
    if !StateStore::exists(dir, &name) {
        return Err(with_hint(
            format!("there is no state at {}", path.display()),
            "check --state and --name",
        ));
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(with_hint(
                "reset needs a confirmation and stdin is not a terminal",
                "pass --yes to reset without asking",
            ));
        }
        eprint!(
            "delete the state {name} in {}? the next run will send every record again [y/N] ",
            dir.display()
        );
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("nothing was deleted");
            return Ok(Outcome::Partial);
        }
    }
    let removed = StateStore::remove(dir, &name).map_err(|e| match e.hint() {
        Some(hint) => with_hint(e.to_string(), hint),
        None => anyhow::Error::new(e).context("cannot reset the state"),
    })?;
    for file in removed {
        eprintln!("deleted {}", file.display());
    }
    Ok(Outcome::Clean)
}
