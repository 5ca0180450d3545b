//! Validated settings, built from the flags and the environment.

use std::time::Duration;

use anyhow::{Context, Result};
use segment_client::{HOST_VAR, HttpClientBuilder, REGION_VAR, WRITE_KEY_VAR, builder_from_lookup};

use crate::flags::{SegmentArgs, TuningArgs};
use crate::hint::with_hint;

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

/// A client builder for the flags: the write key, host or region (flags win
/// over the environment), and the tuning flags.
pub fn client_builder(
    segment: &SegmentArgs,
    tuning: &TuningArgs,
    dry_run: bool,
) -> Result<HttpClientBuilder> {
    let write_key = if dry_run {
        // A dry run sends nothing, so it needs no key; use one if given.
        resolve_write_key(segment.write_key.as_deref())?.or_else(|| Some("dry-run".into()))
    } else {
        resolve_write_key(segment.write_key.as_deref())?
    };
    let env = |name: &str| std::env::var(name).ok();
    let lookup = |name: &str| match name {
        WRITE_KEY_VAR => write_key.clone(),
        // A host or region flag replaces both variables, so the environment
        // cannot contradict what was typed.
        HOST_VAR if segment.host.is_some() || segment.region.is_some() => segment.host.clone(),
        REGION_VAR if segment.host.is_some() || segment.region.is_some() => segment.region.clone(),
        other => env(other),
    };
    let builder = builder_from_lookup(lookup).map_err(|e| {
        let hint = if e.code() == Some(segment_client::codes::MISSING_WRITE_KEY) {
            "set SEGMENT_WRITE_KEY, or pass --write-key env:NAME or file:PATH (or try --dry-run, or `segment-sync demo`)"
        } else {
            "check --host/--region or SEGMENT_HOST/SEGMENT_REGION: a host is an http(s) URL, a region is us or eu"
        };
        with_hint(e.to_string(), hint)
    })?;
    Ok(tuned(builder, tuning))
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
