//! The one error type of this crate.
//!
//! Every failure the client can meet is a [`SegmentError`] value with a stable
//! [`code`](SegmentError::code). The codes are the contract with callers and
//! with the CLI's machine-readable output; they are listed once, in
//! [`codes`], and never change meaning.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// The stable, snake_case error codes returned by [`SegmentError::code`].
///
/// | code | meaning | retried by the client? |
/// |---|---|---|
/// | `missing_write_key` | no write key was configured (`SEGMENT_WRITE_KEY` unset or empty) | no |
/// | `invalid_config` | a setting is unusable, e.g. a host that is not an `http(s)` URL; also a redirect, or a 404 before anything was delivered (see [`SegmentError::status`]): the host is wrong | no |
/// | `invalid_payload` | the event breaks a Segment rule: no identity, a bad `messageId`, a clashing trait | no |
/// | `payload_too_large` | the serialised event is over 32,000 bytes | no |
/// | `network` | the request could not be sent or its answer not read | yes |
/// | `timeout` | the request got no answer within the request timeout | yes |
/// | `http_status` | Segment answered with an error status; see [`SegmentError::status`] | 5xx and 408/410/460 yes, other 4xx no |
/// | `rate_limited` | Segment answered 429 until the retry budget ran out | yes |
/// | `client_closed` | the client was closed before the event could be queued or sent | no |
/// | `queue_full` | the queue had no room and the caller asked not to wait | no |
/// | `deadline_exceeded` | a flush deadline passed while the event was still pending | no |
/// | `outage` | every request failed by timeout or network error, with nothing delivered, for the client's outage bound; the message and `source()` carry the last attempt's cause | no: try again later |
/// | `internal` | a bug in this crate (for example a worker that stopped); please report it | no |
pub mod codes {
    /// No write key was configured.
    pub const MISSING_WRITE_KEY: &str = "missing_write_key";
    /// A configuration value is unusable.
    pub const INVALID_CONFIG: &str = "invalid_config";
    /// The event breaks one of Segment's rules.
    pub const INVALID_PAYLOAD: &str = "invalid_payload";
    /// The serialised event is over 32,000 bytes.
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    /// The request could not be sent or its answer could not be read.
    pub const NETWORK: &str = "network";
    /// The request got no answer in time.
    pub const TIMEOUT: &str = "timeout";
    /// Segment answered with an error status.
    pub const HTTP_STATUS: &str = "http_status";
    /// Segment kept answering 429.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// The client is closed.
    pub const CLIENT_CLOSED: &str = "client_closed";
    /// The queue is full and the caller asked not to wait.
    pub const QUEUE_FULL: &str = "queue_full";
    /// A flush deadline passed while the event was pending.
    pub const DEADLINE_EXCEEDED: &str = "deadline_exceeded";
    /// Segment could not be reached for the client's outage bound.
    pub const OUTAGE: &str = "outage";
    /// A bug in this crate.
    pub const INTERNAL: &str = "internal";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    MissingWriteKey,
    InvalidConfig,
    InvalidPayload,
    PayloadTooLarge,
    Network,
    Timeout,
    HttpStatus,
    RateLimited,
    ClientClosed,
    QueueFull,
    DeadlineExceeded,
    Outage,
    Internal,
}

impl Kind {
    fn code(self) -> &'static str {
        match self {
            Kind::MissingWriteKey => codes::MISSING_WRITE_KEY,
            Kind::InvalidConfig => codes::INVALID_CONFIG,
            Kind::InvalidPayload => codes::INVALID_PAYLOAD,
            Kind::PayloadTooLarge => codes::PAYLOAD_TOO_LARGE,
            Kind::Network => codes::NETWORK,
            Kind::Timeout => codes::TIMEOUT,
            Kind::HttpStatus => codes::HTTP_STATUS,
            Kind::RateLimited => codes::RATE_LIMITED,
            Kind::ClientClosed => codes::CLIENT_CLOSED,
            Kind::QueueFull => codes::QUEUE_FULL,
            Kind::DeadlineExceeded => codes::DEADLINE_EXCEEDED,
            Kind::Outage => codes::OUTAGE,
            Kind::Internal => codes::INTERNAL,
        }
    }
}

/// An error from the Segment client, always returned as a value.
///
/// The error is opaque: inspect it with [`code`](Self::code) (stable,
/// documented in [`codes`]), [`message`](Self::message) (for humans) and the
/// predicates. It is cheap to clone, because one failed batch reports the same
/// error for each of its events. Neither `Display` nor `Debug` ever contains
/// the write key.
///
/// # Example
/// ```
/// use segment_client::{IdentifyParams, Identity, InMemoryClient, SegmentClient};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let client = InMemoryClient::new();
/// let err = client
///     .identify(IdentifyParams::new(Identity::user("")))
///     .await
///     .unwrap_err();
/// assert_eq!(err.code(), Some("invalid_payload"));
/// assert!(!err.is_retryable());
/// # });
/// ```
#[derive(Clone)]
pub struct SegmentError {
    inner: Arc<Inner>,
}

struct Inner {
    kind: Kind,
    message: String,
    status: Option<u16>,
    attempts: u32,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

impl SegmentError {
    pub(crate) fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                kind,
                message: message.into(),
                status: None,
                attempts: 0,
                source: None,
            }),
        }
    }

    pub(crate) fn with_status(kind: Kind, status: u16, message: impl Into<String>) -> Self {
        let mut err = Self::new(kind, message);
        Arc::get_mut(&mut err.inner)
            .expect("fresh error is unshared")
            .status = Some(status);
        err
    }

    pub(crate) fn with_source(
        kind: Kind,
        message: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        let mut err = Self::new(kind, message);
        Arc::get_mut(&mut err.inner)
            .expect("fresh error is unshared")
            .source = Some(Arc::new(source));
        err
    }

    /// An error with `cause`'s kind and status, a message of its own, and
    /// `cause` as its source.
    pub(crate) fn caused_by(message: impl Into<String>, cause: SegmentError) -> Self {
        let (kind, status, attempts) = (cause.inner.kind, cause.inner.status, cause.inner.attempts);
        let mut err = Self::with_source(kind, message, cause);
        let inner = Arc::get_mut(&mut err.inner).expect("fresh error is unshared");
        inner.status = status;
        inner.attempts = attempts;
        err
    }

    /// Records how many attempts were made before giving up, and says so in the message.
    pub(crate) fn after_attempts(self, attempts: u32) -> Self {
        let inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            Err(shared) => Inner {
                kind: shared.kind,
                message: shared.message.clone(),
                status: shared.status,
                attempts: shared.attempts,
                source: shared.source.clone(),
            },
        };
        let message = if attempts > 1 {
            format!("{} (gave up after {attempts} attempts)", inner.message)
        } else {
            inner.message
        };
        Self {
            inner: Arc::new(Inner {
                message,
                attempts,
                ..inner
            }),
        }
    }

    /// A human-readable description. Never contains the write key.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The stable snake_case code of this error; see [`codes`] for the list.
    ///
    /// It is an `Option` to match the integration contract's JSON shape, where
    /// `code` may be absent; every error this crate creates has one.
    pub fn code(&self) -> Option<&str> {
        Some(self.inner.kind.code())
    }

    /// The HTTP status Segment answered with, if the error came from an answer.
    pub fn status(&self) -> Option<u16> {
        self.inner.status
    }

    /// How many HTTP attempts were made for the failed event (0 if none was sent).
    pub fn attempts(&self) -> u32 {
        self.inner.attempts
    }

    /// Whether sending again later could succeed (network errors, timeouts,
    /// rate limiting and Segment's transient statuses).
    pub fn is_retryable(&self) -> bool {
        match self.inner.kind {
            Kind::Network | Kind::Timeout | Kind::RateLimited | Kind::DeadlineExceeded => true,
            Kind::HttpStatus => self
                .inner
                .status
                .is_some_and(crate::retry::is_retryable_status),
            _ => false,
        }
    }

    /// Whether a request got no answer in time.
    pub fn is_timeout(&self) -> bool {
        self.inner.kind == Kind::Timeout
    }

    /// Whether the error is a configuration problem (missing write key, bad host).
    pub fn is_config(&self) -> bool {
        matches!(self.inner.kind, Kind::MissingWriteKey | Kind::InvalidConfig)
    }

    /// Whether the event itself was refused before sending (invalid or too large).
    pub fn is_invalid_payload(&self) -> bool {
        matches!(
            self.inner.kind,
            Kind::InvalidPayload | Kind::PayloadTooLarge
        )
    }

    /// Whether Segment refused the write key (401 or 403).
    pub fn is_unauthorized(&self) -> bool {
        matches!(self.inner.status, Some(401 | 403))
    }

    /// Whether the client was closed.
    pub fn is_closed(&self) -> bool {
        self.inner.kind == Kind::ClientClosed
    }

    /// Whether Segment could not be reached at all (every request failing by
    /// timeout or network error, nothing delivered) for the client's
    /// [`outage_after`](crate::HttpClientBuilder::outage_after) bound.
    pub fn is_outage(&self) -> bool {
        self.inner.kind == Kind::Outage
    }

    /// Whether the queue was full and the caller asked not to wait.
    pub fn is_queue_full(&self) -> bool {
        self.inner.kind == Kind::QueueFull
    }
}

impl fmt::Display for SegmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)
    }
}

impl fmt::Debug for SegmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("SegmentError");
        d.field("code", &self.inner.kind.code())
            .field("message", &self.inner.message);
        if let Some(status) = self.inner.status {
            d.field("status", &status);
        }
        if self.inner.attempts > 0 {
            d.field("attempts", &self.inner.attempts);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl StdError for SegmentError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_send_sync_and_static() {
        fn assert_bounds<T: Send + Sync + 'static>() {}
        assert_bounds::<SegmentError>();
    }

    #[test]
    fn code_matches_kind_and_display_is_the_message() {
        let err = SegmentError::with_status(Kind::HttpStatus, 503, "segment answered 503");
        assert_eq!(err.code(), Some("http_status"));
        assert_eq!(err.status(), Some(503));
        assert_eq!(err.to_string(), "segment answered 503");
        assert!(err.is_retryable());
        let err = SegmentError::with_status(Kind::HttpStatus, 400, "bad request");
        assert!(!err.is_retryable());
    }

    #[test]
    fn after_attempts_records_count_and_says_so() {
        let err = SegmentError::new(Kind::Timeout, "request timed out").after_attempts(3);
        assert_eq!(err.attempts(), 3);
        assert_eq!(
            err.message(),
            "request timed out (gave up after 3 attempts)"
        );
        assert!(err.is_timeout());
        let once = SegmentError::new(Kind::Network, "refused").after_attempts(1);
        assert_eq!(once.message(), "refused");
    }

    #[test]
    fn source_is_kept() {
        let io = std::io::Error::other("boom");
        let err = SegmentError::with_source(Kind::Network, "could not connect", io);
        assert_eq!(err.source().map(|s| s.to_string()), Some("boom".into()));
    }
}
