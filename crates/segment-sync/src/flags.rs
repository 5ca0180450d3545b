//! Command-line flags as typed by the user, before validation.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Sync customer records into Segment as identify calls.
#[derive(Debug, Parser)]
#[command(name = "segment-sync", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log the client's retries, pauses and outages on stderr (-v), with
    /// each request (-vv). RUST_LOG (e.g. `segment_client=debug`) overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send the customers in a file (or NDJSON on stdin) to Segment.
    Sync(Box<SyncArgs>),
    /// Print the first payloads as they would be sent, without sending.
    Preview(PreviewArgs),
    /// Show the mapping that would be applied to a file's columns.
    Mapping(MappingArgs),
    /// Run a local Segment-compatible receiver; point SEGMENT_HOST at it.
    Receive(ReceiveArgs),
    /// Sync the bundled sample customers to an in-process receiver: no account, no network.
    Demo(DemoArgs),
    /// Show a sync's state: records known, last run, failed and pending records.
    Status(StatusArgs),
    /// Delete a sync's state, so the next run sends everything again.
    Reset(ResetArgs),
    /// The transactional outbox in PostgreSQL and the relay that delivers it.
    Relay(crate::commands::relay::RelayArgs),
}

#[derive(Debug, Args)]
pub struct StateArgs {
    /// Directory holding the sync state.
    #[arg(long, value_name = "DIR", default_value = ".segment-sync")]
    pub state: PathBuf,
    /// The sync's name; its state is DIR/NAME.sqlite. Default: for `sync`, the
    /// source file's name; for `status` and `reset`, the only sync in DIR.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// How many failed records to list.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub failed: usize,
    /// How many of the last runs to list.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub runs: usize,
    /// Print one JSON object for machines (fields in the README) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// Do not ask for confirmation.
    #[arg(long, short)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct SourceArgs {
    /// A .csv, .ndjson/.jsonl or .json (array) file, - for stdin (NDJSON, or --format),
    /// or a postgres:// URL with --table or --query (PG* variables and
    /// ~/.pgpass fill in what the URL leaves out; `postgres://` alone uses them all).
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// Read SOURCE as this format instead of guessing from its extension
    /// (stdin: instead of NDJSON).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// A mapping file (TOML); without one, columns are mapped by name.
    #[arg(long, value_name = "FILE")]
    pub mapping: Option<PathBuf>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The Segment call each record becomes: identify (customers), or group
    /// (accounts; the mapping names `[identity] group_id` and the member's
    /// `user_id` or `anonymous_id`).
    #[arg(long, value_enum, default_value_t = CallArg::Identify, value_name = "CALL")]
    pub call: CallArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CallArg {
    Identify,
    Group,
}

/// What to read from a postgres:// SOURCE.
#[derive(Debug, Default, Args)]
pub struct DatabaseArgs {
    /// The table (or view) to read: `name` or `schema.name`.
    #[arg(long, value_name = "TABLE", conflicts_with = "query")]
    pub table: Option<String>,
    /// A query whose rows to read instead of a table (`sync` needs --name with it).
    #[arg(long, value_name = "SQL")]
    pub query: Option<String>,
    /// Keyset mode: read only rows whose (COLUMN, primary key) is past the
    /// last run's high-water mark. Deleted rows are not seen in this mode.
    #[arg(long, value_name = "COLUMN", requires = "table")]
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Csv,
    Ndjson,
    Json,
}

#[derive(Debug, Args)]
pub struct SegmentArgs {
    /// Where to read the write key: env:NAME or file:PATH (a bare value works
    /// but is visible to other users). Default: env:SEGMENT_WRITE_KEY.
    #[arg(long, value_name = "SOURCE")]
    pub write_key: Option<String>,
    /// API base URL. Default: SEGMENT_HOST, or the region's host.
    #[arg(long, value_name = "URL", conflicts_with = "region")]
    pub host: Option<String>,
    /// Segment region: us or eu. Default: SEGMENT_REGION, or us.
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
}

#[derive(Debug, Args)]
pub struct TuningArgs {
    /// Most events per request (1-2500); requests are also kept under 500 KB.
    #[arg(long, default_value_t = 2500, value_name = "N")]
    pub batch_size: usize,
    /// Requests in flight at once (1-64).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub concurrency: usize,
    /// Most requests started per second, above 0 (Segment suggests staying under 1000 per workspace).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub rate: Option<f64>,
    /// Send request bodies uncompressed.
    #[arg(long)]
    pub no_gzip: bool,
    /// Attempts per batch before it is reported as failed (at least 1).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub max_attempts: u32,
    /// First retry backoff in milliseconds (1-60000); it doubles per attempt up to 60 s, with equal jitter.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub backoff_ms: u64,
    /// Seconds one batch may spend on retries.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub retry_budget: u64,
    /// Seconds the final flush may take before undelivered records are reported pending (at least 1).
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub flush_timeout: u64,
    /// Seconds to flush after Ctrl-C or SIGTERM.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub shutdown_timeout: u64,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub input: SourceArgs,
    #[command(flatten)]
    pub segment: SegmentArgs,
    #[command(flatten)]
    pub tuning: TuningArgs,
    /// A repeated identity: keep the last (send both, in order), keep the
    /// first, or treat it as an error. Default: the mapping's, or last.
    #[arg(long, value_enum, value_name = "POLICY")]
    pub duplicates: Option<DuplicatesArg>,
    /// Write a JSON report: one line per invalid, failed or pending record, then a summary line.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Send nothing: validate and batch as usual, and count the requests.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run, write each request body that would be sent into DIR.
    #[arg(long, value_name = "DIR", requires = "dry_run")]
    pub dry_run_dir: Option<PathBuf>,
    #[command(flatten)]
    pub state: StateArgs,
    /// Send every record, without a state: no skipping, no outbox.
    #[arg(long, conflicts_with_all = ["full_resync", "retry_failed"])]
    pub no_state: bool,
    /// Ignore what Segment accepted before and send everything again, with new messageIds.
    #[arg(long)]
    pub full_resync: bool,
    /// Retry failed records even after --max-failed-runs.
    #[arg(long)]
    pub retry_failed: bool,
    /// Runs an unchanged failing record is retried in before it is given up.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub max_failed_runs: u32,
    /// Send the mapping's [events] removed events even when they would
    /// remove most of the customers Segment has (held back otherwise, as the
    /// sign of a bad export).
    #[arg(long)]
    pub allow_mass_removal: bool,
    /// No progress and no summary on stderr (errors are still printed).
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DuplicatesArg {
    Last,
    First,
    Error,
}

#[derive(Debug, Args)]
pub struct PreviewArgs {
    #[command(flatten)]
    pub input: SourceArgs,
    /// How many payloads to print.
    #[arg(short = 'n', long, default_value_t = 5)]
    pub count: usize,
}

#[derive(Debug, Args)]
pub struct MappingArgs {
    #[command(flatten)]
    pub input: SourceArgs,
    /// Print the mapping (the only action today; kept for clarity in scripts).
    #[arg(long)]
    pub print: bool,
    /// Print it as a mapping file to start editing from.
    #[arg(long)]
    pub toml: bool,
}

#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Address to listen on. The receiver and its page have no authentication
    /// of their own: anything other than loopback exposes every event received.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Keep the last N events, requests, dropped events and customer profiles
    /// in memory (each), so memory stays bounded however long it runs.
    #[arg(long, value_name = "N", default_value_t = segment_receiver::ReceiverConfig::DEFAULT_KEEP)]
    pub keep: usize,
    /// Accept only this write key (repeatable). Default: accept any.
    #[arg(long = "write-key", value_name = "KEY")]
    pub write_keys: Vec<String>,
    /// Append every accepted event to FILE as NDJSON.
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// Keep only counts and messageIds in memory, not the events (for big
    /// or long runs; --save still writes them).
    #[arg(long)]
    pub counts_only: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Sync this file instead of the bundled sample.
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<String>,
    /// How many accepted events to show.
    #[arg(long, default_value_t = 3)]
    pub show: usize,
}
