//! `segment-sync relay init|run|status|retry-dead`: the transactional outbox
//! in PostgreSQL and the relay that delivers it (the `segment-outbox` crate).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use segment_client::HttpClient;
use segment_outbox::{OutboxError, Relay, Schema};

use crate::Outcome;
use crate::config::{client_builder, resolve_write_key};
use crate::flags::{SegmentArgs, TuningArgs};
use crate::hint::with_hint;

#[derive(Debug, Args)]
pub struct RelayArgs {
    #[command(subcommand)]
    pub command: RelayCommand,
}

#[derive(Debug, Subcommand)]
pub enum RelayCommand {
    /// Create or upgrade the outbox table and the SQL function segment.identify(...).
    Init(DatabaseArgs),
    /// Deliver committed outbox rows until SIGTERM (or, with --until-empty, until none is left).
    Run(Box<RunArgs>),
    /// Rows by state, the oldest pending event's age, and the dead letters.
    Status(StatusArgs),
    /// Make dead letters pending again (all of them, or those named by --id).
    RetryDead(RetryDeadArgs),
}

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL (postgres://user@host:port/db) or key=value
    /// string. Its password is never printed.
    #[arg(
        long,
        env = "SEGMENT_OUTBOX_DATABASE",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database: String,
    /// The schema holding the outbox table and functions.
    #[arg(long, default_value = "segment", value_name = "NAME")]
    pub schema: String,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub segment: SegmentArgs,
    /// Workers in this process, each with its own connection and batch in flight.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub workers: usize,
    /// Rows per claim and per request (1-2500).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub batch_size: usize,
    /// Stop once no undelivered row is left (rows leased by a dead relay
    /// count until their lease ends and they are delivered).
    #[arg(long)]
    pub until_empty: bool,
    /// Serve Prometheus metrics (GET /metrics) and GET /health on this address.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Seconds a claim holds its rows; a killed relay's rows come back after this.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    pub lease: f64,
    /// Milliseconds between looks for rows when no notification arrives.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub poll_ms: u64,
    /// Seconds to keep delivered rows (pruned in batches); 0 deletes them at once.
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    pub retention: u64,
    /// First retry backoff in milliseconds; it doubles per attempt up to --max-backoff.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub backoff_ms: u64,
    /// Longest retry backoff in seconds.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub max_backoff: u64,
    /// Attempts before a retryable failure becomes a dead letter; 0 retries for ever.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_attempts: u32,
    /// Seconds in-flight batches may take after SIGTERM before their leases are given back.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub shutdown_timeout: f64,
    /// Most requests per second from this process (shared by its workers).
    #[arg(long, value_name = "N")]
    pub rate: Option<f64>,
    /// Send request bodies uncompressed.
    #[arg(long)]
    pub no_gzip: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// How many dead letters to list.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub dead: usize,
}

#[derive(Debug, Args)]
pub struct RetryDeadArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// A dead letter's id (repeatable); without --id, every dead letter.
    #[arg(long = "id", value_name = "ID")]
    pub ids: Vec<i64>,
}

/// Runs one `relay` subcommand.
pub async fn run(args: RelayArgs) -> Result<Outcome> {
    match args.command {
        RelayCommand::Init(db) => init(&db).await,
        RelayCommand::Run(args) => relay(*args).await,
        RelayCommand::Status(args) => status(&args).await,
        RelayCommand::RetryDead(args) => retry_dead(&args).await,
    }
}

/// An outbox error with the advice that fixes it.
fn explain(error: OutboxError) -> anyhow::Error {
    let hint = match error.code() {
        segment_outbox::codes::SCHEMA_MISSING => {
            Some("run `segment-sync relay init --database URL` first (with the same --schema)")
        }
        segment_outbox::codes::SCHEMA_NEWER => {
            Some("a newer segment-sync installed this outbox; run that version")
        }
        segment_outbox::codes::DATABASE if error.message().starts_with("cannot connect") => Some(
            "check --database (or SEGMENT_OUTBOX_DATABASE): host, port, user and database name",
        ),
        segment_outbox::codes::INVALID_CONFIG => Some("see `segment-sync relay run --help`"),
        _ => None,
    };
    let Some(hint) = hint else {
        return anyhow::Error::new(error);
    };
    // The hint travels in its own error type, so the cause goes into the line.
    let mut root: &dyn std::error::Error = &error;
    while let Some(source) = root.source() {
        root = source;
    }
    let message = if std::ptr::addr_eq(root, &error) {
        error.to_string()
    } else {
        format!("{error}: {root}")
    };
    with_hint(message, hint)
}

fn schema(db: &DatabaseArgs) -> Result<Schema> {
    Schema::new(&db.schema).map_err(explain)
}

async fn init(db: &DatabaseArgs) -> Result<Outcome> {
    let schema = schema(db)?;
    let mut client = segment_outbox::connect(&db.database)
        .await
        .map_err(explain)?;
    let report = segment_outbox::init(&mut client, &schema)
        .await
        .map_err(explain)?;
    if report.from_version == report.to_version {
        eprintln!(
            "the outbox in schema `{}` is up to date (version {}); functions refreshed",
            schema.name(),
            report.to_version
        );
    } else {
        eprintln!(
            "the outbox in schema `{}` is at version {} (was {}); call {}.identify(user_id, traits, ...) inside your transactions",
            schema.name(),
            report.to_version,
            report.from_version,
            schema.name()
        );
    }
    Ok(Outcome::Clean)
}

async fn relay(args: RunArgs) -> Result<Outcome> {
    let schema = schema(&args.db)?;
    let tuning = TuningArgs {
        batch_size: args.batch_size,
        concurrency: 4,
        rate: args.rate,
        no_gzip: args.no_gzip,
        max_attempts: 1,
        backoff_ms: args.backoff_ms,
        retry_budget: 600,
        flush_timeout: 120,
        shutdown_timeout: 10,
    };
    // Resolved once, with the same hints as `sync` (missing key, bad host).
    let host = client_builder(&args.segment, &tuning, false)?
        .configured_host()
        .to_owned();
    let write_key = resolve_write_key(args.segment.write_key.as_deref())?.unwrap_or_default();
    let lease = seconds("--lease", args.lease)?;
    let shutdown_timeout = seconds("--shutdown-timeout", args.shutdown_timeout)?;
    // The rate is per process: each worker's client gets its share.
    let rate = args.rate.map(|r| r / args.workers.max(1) as f64);
    let gzip = !args.no_gzip;
    let factory = move || {
        let builder = HttpClient::builder(write_key.clone())
            .host(host.clone())
            .gzip(gzip);
        match rate {
            Some(rate) => builder.requests_per_second(rate),
            None => builder,
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut signals = crate::signals::Signals::listen();
    let signalled = async move {
        signals.next().await;
        let _ = stop_tx.send(true);
    };
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let signal_task = tokio::spawn(signalled);
    let metrics = match args.metrics_addr {
        Some(addr) => {
            let (bound, task) = segment_outbox::serve_metrics(addr, stopped())
                .await
                .map_err(explain)?;
            eprintln!("metrics at http://{bound}/metrics, health at http://{bound}/health");
            Some(task)
        }
        None => None,
    };
    let relay = Relay::new(args.db.database.clone(), factory)
        .schema(schema)
        .workers(args.workers)
        .batch_size(args.batch_size)
        .until_empty(args.until_empty)
        .lease(lease)
        .poll_interval(Duration::from_millis(args.poll_ms.max(1)))
        .retention(Duration::from_secs(args.retention))
        .backoff(
            Duration::from_millis(args.backoff_ms),
            Duration::from_secs(args.max_backoff),
        )
        .max_attempts(args.max_attempts)
        .shutdown_timeout(shutdown_timeout)
        .observe_queue(args.metrics_addr.map(|_| Duration::from_secs(5)));
    let started = std::time::Instant::now();
    let result = relay.run(stopped()).await;
    signal_task.abort();
    if let Some(task) = metrics {
        task.abort();
    }
    let report = result.map_err(explain)?;
    eprintln!(
        "relay stopped after {:.1} s: {} delivered, {} retried later, {} dead letters, {} leases given back",
        started.elapsed().as_secs_f64(),
        report.delivered,
        report.retried,
        report.dead,
        report.released
    );
    Ok(Outcome::Clean)
}

fn seconds(flag: &str, value: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        with_hint(
            format!("{flag} {value}: not a number of seconds"),
            format!("give {flag} as seconds, e.g. {flag} 30 or {flag} 1.5"),
        )
    })
}

async fn status(args: &StatusArgs) -> Result<Outcome> {
    let schema = schema(&args.db)?;
    let client = segment_outbox::connect(&args.db.database)
        .await
        .map_err(explain)?;
    let status = segment_outbox::status(&client, &schema, args.dead)
        .await
        .map_err(explain)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(Outcome::Clean);
    }
    println!(
        "pending    {} ({} waiting to retry)",
        status.pending, status.retrying
    );
    println!("leased     {}", status.leased);
    println!("delivered  {} (kept for retention)", status.delivered);
    println!("dead       {}", status.dead);
    match status.oldest_pending_age_seconds {
        Some(age) => println!("oldest undelivered event: {age:.1} s old"),
        None => println!("nothing undelivered"),
    }
    if !status.dead_letters.is_empty() {
        println!("dead letters (retry with `segment-sync relay retry-dead --id ID`):");
        for dead in &status.dead_letters {
            let who = dead
                .user_id
                .as_deref()
                .map(|u| format!("userId {u}"))
                .or_else(|| {
                    dead.anonymous_id
                        .as_deref()
                        .map(|a| format!("anonymousId {a}"))
                })
                .unwrap_or_else(|| "no identity".into());
            println!(
                "  id {}  messageId {}  {who}  attempts {}  {}",
                dead.id,
                dead.message_id,
                dead.attempts,
                dead.last_error.as_deref().unwrap_or("")
            );
        }
    }
    Ok(Outcome::Clean)
}

async fn retry_dead(args: &RetryDeadArgs) -> Result<Outcome> {
    let schema = schema(&args.db)?;
    let client = segment_outbox::connect(&args.db.database)
        .await
        .map_err(explain)?;
    let revived = segment_outbox::retry_dead(&client, &schema, &args.ids)
        .await
        .map_err(explain)?;
    println!("{revived} dead letters are pending again");
    if !args.ids.is_empty() && revived < args.ids.len() as u64 {
        eprintln!(
            "{} of the ids given are not dead letters (already pending, delivered or unknown)",
            args.ids.len() as u64 - revived
        );
        return Ok(Outcome::Partial);
    }
    Ok(Outcome::Clean)
}
