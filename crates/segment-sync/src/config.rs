//! Validated settings, built from the flags and the environment.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use segment_client::{
    HOST_VAR, HttpClient, HttpClientBuilder, MAX_BATCH_EVENTS, Region, WRITE_KEY_VAR,
    builder_from_lookup,
};

use crate::flags::{SegmentArgs, TuningArgs};
use crate::hint::{hinted_anyhow, with_hint};

/// Resolves `--write-key`: `env:NAME`, `file:PATH`, or the key itself.
pub fn resolve_write_key(spec: Option<&str>) -> Result<Option<String>> {
    let Some(spec) = spec else {
        return Ok(std::env::var(WRITE_KEY_VAR).ok());
    };
    if let Some(name) = spec.strip_prefix("env:") {
        return match std::env::var(name) {
            Ok(key) => Ok(Some(key)),
            Err(_) => Err(with_hint(
                format!("--write-key env:{name}: the variable {name} is not set"),
                format!("export {name}, or pass --write-key file:PATH"),
            )),
        };
    }
    if let Some(path) = spec.strip_prefix("file:") {
        let key = std::fs::read_to_string(path)
            .with_context(|| format!("--write-key file:{path}: cannot read the key file"))?;
        return Ok(Some(key.trim().to_owned()));
    }
    Ok(Some(spec.to_owned()))
}

/// The most requests in flight `--concurrency` allows: each holds a request
/// body of up to 500 KB, so this bounds that memory to 32 MB, and 64 requests
/// at once is already far past Segment's rate guidance for one sender.
pub const MAX_CONCURRENCY: usize = 64;

/// The largest `--backoff-ms`: the backoff doubles up to 60 s anyway.
const MAX_BACKOFF_MS: u64 = 60_000;

/// Checks every tuning flag against its range, naming the flag as typed.
///
/// # Errors
/// The first flag out of range, with its valid range and a `hint:`.
pub fn check_tuning(tuning: &TuningArgs) -> Result<()> {
    let out_of_range = |flag: &str, value: String, range: &str, hint: &str| {
        Err(with_hint(
            format!("{flag} must be {range}, not {value}"),
            format!("{flag} {hint}"),
        ))
    };
    if !(1..=MAX_BATCH_EVENTS).contains(&tuning.batch_size) {
        return out_of_range(
            "--batch-size",
            tuning.batch_size.to_string(),
            &format!("1 to {MAX_BATCH_EVENTS}"),
            "is the most events per request (Segment takes at most 2500; requests also stay under 500 KB); the default is 2500",
        );
    }
    if !(1..=MAX_CONCURRENCY).contains(&tuning.concurrency) {
        return out_of_range(
            "--concurrency",
            tuning.concurrency.to_string(),
            &format!("1 to {MAX_CONCURRENCY}"),
            "is the number of requests in flight at once; the default is 4, and --rate caps requests per second",
        );
    }
    if let Some(rate) = tuning.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        return out_of_range(
            "--rate",
            rate.to_string(),
            "a number greater than 0",
            "is the most requests started per second, e.g. --rate 100 (leave it out for no cap)",
        );
    }
    if tuning.max_attempts == 0 {
        return out_of_range(
            "--max-attempts",
            "0".into(),
            "at least 1",
            "counts the first attempt: 1 means no retries; the default is 10",
        );
    }
    if !(1..=MAX_BACKOFF_MS).contains(&tuning.backoff_ms) {
        return out_of_range(
            "--backoff-ms",
            tuning.backoff_ms.to_string(),
            &format!("1 to {MAX_BACKOFF_MS}"),
            "is the first retry's backoff in milliseconds, doubled per attempt up to 60 s; the default is 500",
        );
    }
    if tuning.flush_timeout == 0 {
        return out_of_range(
            "--flush-timeout",
            "0".into(),
            "at least 1 (seconds)",
            "is how long the final flush may take; the default is 120",
        );
    }
    Ok(())
}

/// Creates the `--dry-run-dir` directory now, so that a path that cannot be
/// used stops the run before any record is read, naming the flag.
///
/// # Errors
/// The directory cannot be created.
pub fn check_dry_run_dir(dir: Option<&Path>) -> Result<()> {
    let Some(dir) = dir else {
        return Ok(());
    };
    std::fs::create_dir_all(dir).map_err(|e| {
        let error = anyhow::Error::new(e).context(format!(
            "--dry-run-dir {}: cannot create the directory",
            dir.display()
        ));
        hinted_anyhow(
            error,
            "--dry-run-dir takes a directory to create (or reuse) for the request bodies",
        )
    })
}

/// A client builder for the flags: the write key, host or region (a flag
/// wins over the environment), and the tuning flags.
///
/// A dry run sends nothing, so it needs no key and ignores `SEGMENT_HOST` and
/// `SEGMENT_REGION`; a `--host` or `--region` typed on the command line is
/// still checked.
///
/// # Errors
/// A tuning flag out of range, a missing write key, or an unusable host or
/// region, blaming the flag or variable it came from.
pub fn client_builder(
    segment: &SegmentArgs,
    tuning: &TuningArgs,
    dry_run: bool,
) -> Result<HttpClientBuilder> {
    check_tuning(tuning)?;
    let write_key = resolve_write_key(segment.write_key.as_deref())?;
    let write_key = match write_key.filter(|key| !key.trim().is_empty()) {
        Some(key) => key,
        // A dry run sends nothing, so it needs no key.
        None if dry_run => "dry-run".into(),
        None if segment.write_key.is_some() => {
            return Err(with_hint(
                "--write-key gave an empty key",
                "--write-key env:NAME reads a variable, file:PATH a file; either must hold the key",
            ));
        }
        None => {
            return Err(with_hint(
                format!("{WRITE_KEY_VAR} is not set; set it to your source's write key"),
                "set SEGMENT_WRITE_KEY, or pass --write-key env:NAME or file:PATH (or try --dry-run, or `segment-sync demo`)",
            ));
        }
    };
    let builder = match (&segment.host, &segment.region) {
        (Some(host), _) => host_flag(&write_key, host)?,
        (None, Some(region)) => HttpClient::builder(write_key.trim()).region(region_flag(region)?),
        (None, None) if dry_run => HttpClient::builder(write_key.trim()),
        (None, None) => from_environment(&write_key)?,
    };
    Ok(tuned(builder, tuning))
}

fn host_flag(write_key: &str, host: &str) -> Result<HttpClientBuilder> {
    // The library's own lookup checks the URL; only the flag is given to it.
    let lookup = |name: &str| match name {
        WRITE_KEY_VAR => Some(write_key.to_owned()),
        HOST_VAR => Some(host.to_owned()),
        _ => None,
    };
    builder_from_lookup(lookup).map_err(|e| {
        with_hint(
            format!("--host {host}: {}", e.message()),
            "--host takes an http(s) URL such as https://api.segment.io (or use --region us|eu)",
        )
    })
}

fn region_flag(region: &str) -> Result<Region> {
    match region.trim().to_ascii_lowercase().as_str() {
        "us" => Ok(Region::Us),
        "eu" => Ok(Region::Eu),
        _ => Err(with_hint(
            format!("--region must be `us` or `eu`, not `{region}`"),
            "--region us (the default) or --region eu; --host URL sends anywhere else",
        )),
    }
}

fn from_environment(write_key: &str) -> Result<HttpClientBuilder> {
    let lookup = |name: &str| match name {
        WRITE_KEY_VAR => Some(write_key.to_owned()),
        other => std::env::var(other).ok(),
    };
    builder_from_lookup(lookup).map_err(|e| {
        with_hint(
            e.message().to_owned(),
            "set one of SEGMENT_HOST (an http(s) URL) or SEGMENT_REGION (us or eu); --host or --region overrides both",
        )
    })
}

/// Applies the tuning flags; bulk defaults favour throughput.
fn tuned(builder: HttpClientBuilder, tuning: &TuningArgs) -> HttpClientBuilder {
    let mut builder = builder
        .batch_size(tuning.batch_size)
        .max_in_flight(tuning.concurrency)
        .gzip(!tuning.no_gzip)
        .max_attempts(tuning.max_attempts)
        .retry_budget(Duration::from_secs(tuning.retry_budget))
        .backoff(
            Duration::from_millis(tuning.backoff_ms),
            Duration::from_secs(60),
        )
        .flush_interval(Duration::from_secs(1))
        .flush_timeout(Duration::from_secs(tuning.flush_timeout));
    if let Some(rate) = tuning.rate {
        builder = builder.requests_per_second(rate);
    }
    builder
}
