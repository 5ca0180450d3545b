//! One module per subcommand, and what they share: opening the input.

mod demo;
mod inspect;
mod receive;
pub mod relay;
mod state;
mod sync;

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use customer_sync::mapping::{Mapping, MappingSpec, SAMPLE_BYTES, SAMPLE_RECORDS};
use customer_sync::source::postgres::{
    PostgresOptions, PostgresSource, PostgresTarget, redact_url,
};
use customer_sync::source::{Source, SourceError, SourceFormat};

use crate::Outcome;
use crate::flags::{CallArg, Command, FormatArg, SourceArgs, StateArgs};
use crate::hint::{hinted, hinted_anyhow, several, with_hint};

/// Runs one subcommand.
pub async fn run(command: Command) -> Result<Outcome> {
    match command {
        Command::Sync(args) => sync::run(*args).await,
        Command::Preview(args) => inspect::preview(&args).await,
        Command::Mapping(args) => inspect::mapping(&args),
        Command::Receive(args) => receive::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Status(args) => state::status(&args),
        Command::Reset(args) => state::reset(&args),
        Command::Relay(args) => relay::run(args).await,
    }
}

/// The sync's name: `--name`, or the table, or the source file's stem (`stdin` for `-`),
/// kept to characters that are safe in a file name.
pub fn sync_name(state: &StateArgs, source: &str, table: Option<&str>) -> String {
    if let Some(name) = &state.name {
        return name.clone();
    }
    let stem = if let Some(table) = table {
        table
    } else if source == "-" {
        "stdin"
    } else {
        Path::new(source)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("sync")
    };
    stem.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Whether SOURCE is a PostgreSQL URL.
pub fn is_postgres(source: &str) -> bool {
    source.starts_with("postgres://") || source.starts_with("postgresql://")
}

/// SOURCE as it may be printed: a URL without its password.
pub fn display_source(args: &SourceArgs) -> String {
    if !is_postgres(&args.source) {
        return args.source.clone();
    }
    let url = redact_url(&args.source);
    match &args.database.table {
        Some(table) => format!("{table} ({url})"),
        None => format!("query ({url})"),
    }
}

/// Opens the source and resolves its mapping: every configuration problem
/// surfaces here, before a record is sent.
pub fn open_input(args: &SourceArgs) -> Result<(Source, Mapping)> {
    open_input_after(args, None)
}

/// As [`open_input`]; a keyset (`--cursor`) read resumes after `resume_after`.
pub fn open_input_after(
    args: &SourceArgs,
    resume_after: Option<String>,
) -> Result<(Source, Mapping)> {
    let spec = match &args.mapping {
        Some(path) => Some(MappingSpec::load(path).map_err(mapping_error)?),
        None => None,
    };
    if is_postgres(&args.source) {
        return open_postgres(args, spec, resume_after);
    }
    if args.database.table.is_some() || args.database.query.is_some() {
        return Err(with_hint(
            "--table and --query read a database",
            "give a postgres:// URL as SOURCE",
        ));
    }
    let mut source = match (args.format.map(source_format), args.source.as_str()) {
        (Some(format), "-") => Source::from_reader("stdin", format, std::io::stdin()),
        (Some(format), path) => Source::open_as(Path::new(path), format),
        (None, arg) => Source::open(arg),
    }
    .map_err(source_error)?;
    let mapping = resolve_mapping(&mut source, spec.as_ref())
        .with_context(|| format!("cannot map the columns of {}", source.name()))?;
    match (args.call, mapping.is_group()) {
        (CallArg::Group, false) => {
            return Err(hinted_anyhow(
                anyhow::anyhow!("--call group needs a group id column"),
                "name it in a mapping file passed with --mapping, with the member the group calls are for: [identity] group_id = \"<column>\" and user_id = \"<column>\"",
            ));
        }
        (CallArg::Identify, true) => {
            return Err(hinted_anyhow(
                anyhow::anyhow!("the mapping names `[identity] group_id`, which makes group calls"),
                "pass --call group to send each record as a group call",
            ));
        }
        _ => {}
    }
    Ok((source, mapping))
}

/// The mapping for a source's columns; for CSV, with column types inferred
/// from a sample of its first records (read ahead; the run still reads
/// them). JSON values have their types already, so a JSON source (stdin
/// included) is not read ahead.
pub fn resolve_mapping(source: &mut Source, spec: Option<&MappingSpec>) -> Result<Mapping> {
    let columns = columns_of(source);
    let names: Vec<&str> = columns.iter().map(|c| &**c).collect();
    let sample = match source.format() {
        SourceFormat::Csv => source.sample(SAMPLE_RECORDS, SAMPLE_BYTES),
        _ => Vec::new(),
    };
    Mapping::with_sample(spec, &names, sample).map_err(mapping_error)
}

/// A table or query: connect and describe, resolve the mapping (a table's
/// primary key is the identity when no column is detected as one), then
/// start the read, which takes the snapshot and fetches the first rows.
fn open_postgres(
    args: &SourceArgs,
    spec: Option<MappingSpec>,
    resume_after: Option<String>,
) -> Result<(Source, Mapping)> {
    let target = match (&args.database.table, &args.database.query) {
        (Some(table), None) => PostgresTarget::Table(table.clone()),
        (None, Some(query)) => PostgresTarget::Query(query.clone()),
        _ => {
            return Err(with_hint(
                "a postgres:// source needs --table or --query",
                "--table customers, or --query 'SELECT ...'",
            ));
        }
    };
    let pg = PostgresSource::connect(PostgresOptions {
        url: args.source.clone(),
        target,
        cursor: args.database.cursor.clone(),
        resume_after,
    })
    .map_err(source_error)?;
    let columns: Vec<&str> = pg.columns().iter().map(|c| &*c.name).collect();
    let mut spec = spec.unwrap_or_default();
    if !spec.names_identity()
        && !Mapping::detects_identity(&columns)
        && let [key] = pg.primary_key()
    {
        spec.set_user_id_column(key);
    }
    let mapping = Mapping::new(Some(&spec), &columns)
        .map_err(mapping_error)
        .with_context(|| format!("cannot map the columns of {}", pg.name()))?;
    let as_text = spec.typed_columns();
    // Only a mapping keyed on the primary key alone gains from knowing
    // that the key is distinct; finding out may cost the server a scan.
    let keyed_on_key = mapping
        .identity_column()
        .is_some_and(|c| pg.primary_key() == [c]);
    let source = pg
        .check_distinct_key(keyed_on_key)
        .start(&as_text)
        .map_err(source_error)?;
    Ok((source, mapping))
}

fn source_error(error: SourceError) -> anyhow::Error {
    match error.hint().map(str::to_owned) {
        Some(hint) => hinted(error, hint),
        None => anyhow::Error::new(error),
    }
}

/// The columns the mapping is resolved against: the CSV header, or the keys
/// of the first JSON record (later records may have other keys).
pub fn columns_of(source: &mut Source) -> Vec<Arc<str>> {
    if let Some(columns) = source.columns() {
        return columns.to_vec();
    }
    match source.peek() {
        Some(Ok(record)) => record.fields.iter().map(|f| Arc::clone(&f.name)).collect(),
        _ => Vec::new(),
    }
}

fn mapping_error(error: customer_sync::mapping::MappingError) -> anyhow::Error {
    if let [_, _, ..] = error.problems() {
        let problems = error
            .problems()
            .iter()
            .map(|p| (p.to_string(), p.hint().map(str::to_owned)))
            .collect::<Vec<_>>();
        let place = error
            .path()
            .map_or_else(|| "the mapping".to_owned(), |p| p.display().to_string());
        return several(format!("{} problems in {place}", problems.len()), problems);
    }
    match error.hint().map(str::to_owned) {
        Some(hint) => hinted(error, hint),
        None => anyhow::Error::new(error),
    }
}

fn source_format(format: FormatArg) -> SourceFormat {
    match format {
        FormatArg::Csv => SourceFormat::Csv,
        FormatArg::Ndjson => SourceFormat::Ndjson,
        FormatArg::Json => SourceFormat::JsonArray,
    }
}
