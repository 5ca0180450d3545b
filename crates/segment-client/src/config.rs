//! Building a client from the environment.

use crate::client::{HttpClient, HttpClientBuilder, Region};
use crate::error::{Kind, SegmentError};

/// The variable holding the write key.
pub const WRITE_KEY_VAR: &str = "SEGMENT_WRITE_KEY";
/// The variable holding the API base URL.
pub const HOST_VAR: &str = "SEGMENT_HOST";
/// The variable holding the region, `us` or `eu`.
pub const REGION_VAR: &str = "SEGMENT_REGION";
/// The variable holding the flush timeout in seconds: how long `flush`,
/// `close_and_flush` and the contract functions wait (default 60).
pub const FLUSH_TIMEOUT_VAR: &str = "SEGMENT_FLUSH_TIMEOUT";
/// The variable holding the outage bound in seconds (default 30); see
/// [`HttpClientBuilder::outage_after`].
pub const OUTAGE_AFTER_VAR: &str = "SEGMENT_OUTAGE_AFTER";
/// The variable holding the time allowed for one request in seconds (default 15).
pub const REQUEST_TIMEOUT_VAR: &str = "SEGMENT_REQUEST_TIMEOUT";

/// A client configured from `SEGMENT_WRITE_KEY`, and `SEGMENT_HOST` or
/// `SEGMENT_REGION` (`us`, the default, or `eu`); optionally
/// `SEGMENT_FLUSH_TIMEOUT`, `SEGMENT_OUTAGE_AFTER` and
/// `SEGMENT_REQUEST_TIMEOUT` (seconds, fractions allowed).
///
/// # Errors
/// `missing_write_key` if `SEGMENT_WRITE_KEY` is unset or empty;
/// `invalid_config` for an unusable host or region, or both being set.
///
/// # Example
/// ```no_run
/// # async fn run() -> Result<(), segment_client::SegmentError> {
/// let client = segment_client::get_segment_client_from_environment()?;
/// # Ok(()) }
/// ```
pub fn get_segment_client_from_environment() -> Result<HttpClient, SegmentError> {
    builder_from_lookup(|name| std::env::var(name).ok())?.build()
}

/// A builder configured from variables found by `lookup`; the environment's
/// reader is `|name| std::env::var(name).ok()`. Further settings can be
/// chained before `build`.
///
/// # Errors
/// As for [`get_segment_client_from_environment`].
///
/// # Example
/// ```
/// use segment_client::builder_from_lookup;
///
/// let vars = |name: &str| match name {
///     "SEGMENT_WRITE_KEY" => Some("key".to_owned()),
///     "SEGMENT_REGION" => Some("eu".to_owned()),
///     _ => None,
/// };
/// assert!(builder_from_lookup(vars).is_ok());
/// let err = builder_from_lookup(|_| None).unwrap_err();
/// assert_eq!(err.code(), Some("missing_write_key"));
/// ```
pub fn builder_from_lookup(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<HttpClientBuilder, SegmentError> {
    let set = |name| lookup(name).filter(|v: &String| !v.trim().is_empty());
    let write_key = set(WRITE_KEY_VAR).ok_or_else(|| {
        SegmentError::new(
            Kind::MissingWriteKey,
            format!("{WRITE_KEY_VAR} is not set; set it to your source's write key"),
        )
    })?;
    let mut builder = HttpClient::builder(write_key.trim());
    if let Some(value) = set(FLUSH_TIMEOUT_VAR) {
        builder = builder.flush_timeout(seconds(FLUSH_TIMEOUT_VAR, &value)?);
    }
    if let Some(value) = set(OUTAGE_AFTER_VAR) {
        builder = builder.outage_after(seconds(OUTAGE_AFTER_VAR, &value)?);
    }
    if let Some(value) = set(REQUEST_TIMEOUT_VAR) {
        builder = builder.request_timeout(seconds(REQUEST_TIMEOUT_VAR, &value)?);
    }
    match (set(HOST_VAR), set(REGION_VAR)) {
        (Some(_), Some(_)) => Err(SegmentError::new(
            Kind::InvalidConfig,
            format!("set {HOST_VAR} or {REGION_VAR}, not both"),
        )),
        (Some(host), None) => {
            crate::transport::batch_endpoint(&host)?;
            Ok(builder.host(host))
        }
        (None, Some(region)) => Ok(builder.region(parse_region(&region)?)),
        (None, None) => Ok(builder),
    }
}

fn seconds(name: &str, value: &str) -> Result<std::time::Duration, SegmentError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(|secs| std::time::Duration::try_from_secs_f64(secs).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            SegmentError::new(
                Kind::InvalidConfig,
                format!(
                    "{name} must be a positive number of seconds, not `{}`",
                    value.trim()
                ),
            )
        })
}

fn parse_region(value: &str) -> Result<Region, SegmentError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "us" => Ok(Region::Us),
        "eu" => Ok(Region::Eu),
        other => Err(SegmentError::new(
            Kind::InvalidConfig,
            format!("{REGION_VAR} must be `us` or `eu`, not `{other}`"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn a_missing_or_blank_key_is_its_own_error() {
        for env in [vars(&[]), vars(&[(WRITE_KEY_VAR, "  ")])] {
            let err = builder_from_lookup(env).unwrap_err();
            assert_eq!(err.code(), Some("missing_write_key"));
            assert!(err.is_config());
        }
    }

    #[test]
    fn host_and_region_are_validated() {
        let err = builder_from_lookup(vars(&[(WRITE_KEY_VAR, "k"), (HOST_VAR, "not a url")]))
            .unwrap_err();
        assert_eq!(err.code(), Some("invalid_config"));
        let err =
            builder_from_lookup(vars(&[(WRITE_KEY_VAR, "k"), (REGION_VAR, "mars")])).unwrap_err();
        assert!(err.message().contains("`mars`"));
        let err = builder_from_lookup(vars(&[
            (WRITE_KEY_VAR, "k"),
            (REGION_VAR, "eu"),
            (HOST_VAR, "http://127.0.0.1:1"),
        ]))
        .unwrap_err();
        assert!(err.message().contains("not both"));
        assert!(builder_from_lookup(vars(&[(WRITE_KEY_VAR, "k"), (REGION_VAR, "EU")])).is_ok());
    }

    #[test]
    fn timeouts_can_be_set_from_the_environment() {
        assert!(
            builder_from_lookup(vars(&[(WRITE_KEY_VAR, "k"), (FLUSH_TIMEOUT_VAR, "2.5")])).is_ok()
        );
        for bad in ["0", "-1", "soon"] {
            let err = builder_from_lookup(|name: &str| match name {
                WRITE_KEY_VAR => Some("k".into()),
                OUTAGE_AFTER_VAR => Some(bad.into()),
                _ => None,
            })
            .unwrap_err();
            assert!(err.is_config(), "{bad}: {err}");
        }
    }

    #[test]
    fn the_write_key_never_shows_in_errors_or_debug() {
        let builder = builder_from_lookup(vars(&[(WRITE_KEY_VAR, "sekrit-key")])).unwrap();
        assert!(!format!("{builder:?}").contains("sekrit"));
        let err = HttpClient::builder("sekrit-key")
            .host("ftp://x")
            .build()
            .unwrap_err();
        assert!(!format!("{err} {err:?}").contains("sekrit"));
    }
}
