//! `status` and `reset`: look at or drop a sync's state.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Result;
use customer_sync::state::StateStore;

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

/// Prints what the state knows.
pub fn status(args: &StatusArgs) -> Result<Outcome> {
    let name = name_of(&args.state)?;
    let mut store = StateStore::open_existing(&args.state.state, &name).map_err(|e| {
        with_hint(
            e.to_string(),
            e.hint().unwrap_or("check --state and --name"),
        )
    })?;
    let (records, accepted, pending, failed) = store.counts()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "sync {name} ({})", store.path().display())?;
    writeln!(out, "  records known  {records}")?;
    writeln!(out, "  accepted       {accepted}")?;
    writeln!(
        out,
        "  pending        {pending}  (in the outbox; the next run sends them again)"
    )?;
    writeln!(out, "  failed         {failed}")?;
    match store.last_run()? {
        Some((started_ms, summary)) => {
            let started = chrono::DateTime::from_timestamp_millis(started_ms)
                .map_or_else(|| started_ms.to_string(), |t| t.to_rfc3339());
            writeln!(out, "  last run       {started}")?;
            if let Some(summary) = summary {
                writeln!(out, "  last report    {summary}")?;
            } else {
                writeln!(out, "  last report    none: the run did not finish")?;
            }
        }
        None => writeln!(out, "  last run       none")?,
    }
    for record in store.failed(args.failed)? {
        writeln!(
            out,
            "  failed {}  ({} runs): {}: {}",
            record.key, record.failed_runs, record.code, record.message
        )?;
    }
    for entry in store.pending_records(args.failed)? {
        writeln!(
            out,
            "  pending {}  {}:{}  messageId {}",
            entry.key, entry.source, entry.line, entry.message_id
        )?;
    }
    Ok(Outcome::Clean)
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
