//! The one error type of this crate.

use std::error::Error as StdError;
use std::fmt;

use segment_client::SegmentError;

/// The stable, snake_case codes returned by [`OutboxError::code`].
///
/// | code | meaning |
/// |---|---|
/// | `invalid_event` | the event breaks a Segment rule; nothing was written (see [`OutboxError::segment_error`]) |
/// | `refused_by_database` | `segment.identify` raised an error: the database refused the event |
/// | `database` | PostgreSQL could not be reached or a statement failed |
/// | `schema_missing` | the outbox schema is not installed: run `segment-sync relay init` |
/// | `schema_newer` | the database holds a newer outbox schema than this build knows |
/// | `invalid_config` | a setting is unusable (a bad schema name, a lease shorter than a request) |
/// | `io` | a local I/O failure, such as binding the metrics address |
pub mod codes {
    /// The event breaks a Segment rule.
    pub const INVALID_EVENT: &str = "invalid_event";
    /// `segment.identify` refused the event.
    pub const REFUSED_BY_DATABASE: &str = "refused_by_database";
    /// A PostgreSQL failure.
    pub const DATABASE: &str = "database";
    /// The outbox schema is not installed.
    pub const SCHEMA_MISSING: &str = "schema_missing";
    /// The database's outbox schema is newer than this build.
    pub const SCHEMA_NEWER: &str = "schema_newer";
    /// A setting is unusable.
    pub const INVALID_CONFIG: &str = "invalid_config";
    /// A local I/O failure.
    pub const IO: &str = "io";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    InvalidEvent,
    RefusedByDatabase,
    Database,
    SchemaMissing,
    SchemaNewer,
    InvalidConfig,
    Io,
}

impl Kind {
    fn code(self) -> &'static str {
        match self {
            Kind::InvalidEvent => codes::INVALID_EVENT,
            Kind::RefusedByDatabase => codes::REFUSED_BY_DATABASE,
            Kind::Database => codes::DATABASE,
            Kind::SchemaMissing => codes::SCHEMA_MISSING,
            Kind::SchemaNewer => codes::SCHEMA_NEWER,
            Kind::InvalidConfig => codes::INVALID_CONFIG,
            Kind::Io => codes::IO,
        }
    }
}

/// An error from the outbox or the relay, always returned as a value.
///
/// Opaque: inspect it with [`code`](Self::code) (stable, listed in [`codes`])
/// and the predicates. `Display` is one short line; the cause (a PostgreSQL
/// or Segment error) is its [`source`](StdError::source). Neither ever holds
/// the database password.
///
/// # Example
/// ```
/// use segment_client::{IdentifyParams, Identity};
///
/// let err = segment_outbox::validate(&IdentifyParams::new(Identity::user(""))).unwrap_err();
/// assert_eq!(err.code(), "invalid_event");
/// assert!(err.is_invalid_event());
/// ```
pub struct OutboxError {
    inner: Box<Inner>,
}

struct Inner {
    kind: Kind,
    message: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl OutboxError {
    pub(crate) fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                source: None,
            }),
        }
    }

    pub(crate) fn with_source(
        kind: Kind,
        message: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        let mut err = Self::new(kind, message);
        err.inner.source = Some(Box::new(source));
        err
    }

    /// A database error, classified: `segment.identify`'s own refusals
    /// (SQLSTATE class 22 or 54 raised by the function) become
    /// `refused_by_database`, a missing schema `schema_missing`.
    pub(crate) fn database(context: &str, error: tokio_postgres::Error) -> Self {
        let kind = match error.as_db_error() {
            Some(db) if db.message().starts_with("segment.identify:") => Kind::RefusedByDatabase,
            Some(db)
                if matches!(
                    *db.code(),
                    tokio_postgres::error::SqlState::UNDEFINED_TABLE
                        | tokio_postgres::error::SqlState::UNDEFINED_FUNCTION
                        | tokio_postgres::error::SqlState::INVALID_SCHEMA_NAME
                ) =>
            {
                Kind::SchemaMissing
            }
            _ => Kind::Database,
        };
        let message = match (kind, error.as_db_error()) {
            (Kind::RefusedByDatabase, Some(db)) => db.message().to_owned(),
            _ => context.to_owned(),
        };
        Self::with_source(kind, message, error)
    }

    /// The stable snake_case code of this error; see [`codes`].
    pub fn code(&self) -> &'static str {
        self.inner.kind.code()
    }

    /// A human-readable description.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// Whether the event was refused before anything was written, by the
    /// Rust validation ([`segment_error`](Self::segment_error) says why) or
    /// by `segment.identify` in the database.
    pub fn is_invalid_event(&self) -> bool {
        matches!(
            self.inner.kind,
            Kind::InvalidEvent | Kind::RefusedByDatabase
        )
    }

    /// Whether PostgreSQL failed (unreachable, a statement error).
    pub fn is_database(&self) -> bool {
        self.inner.kind == Kind::Database
    }

    /// Whether the outbox schema is missing or newer than this build:
    /// `segment-sync relay init` (or a newer build) fixes it.
    pub fn is_schema(&self) -> bool {
        matches!(self.inner.kind, Kind::SchemaMissing | Kind::SchemaNewer)
    }

    /// Whether a setting is unusable.
    pub fn is_config(&self) -> bool {
        self.inner.kind == Kind::InvalidConfig
    }

    /// The Segment validation error behind an `invalid_event`.
    pub fn segment_error(&self) -> Option<&SegmentError> {
        self.inner.source.as_deref()?.downcast_ref::<SegmentError>()
    }
}

impl fmt::Display for OutboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)
    }
}

impl fmt::Debug for OutboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("OutboxError");
        d.field("code", &self.code())
            .field("message", &self.inner.message);
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl StdError for OutboxError {
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
        assert_bounds::<OutboxError>();
    }

    #[test]
    fn display_is_the_message_and_source_is_kept() {
        let io = std::io::Error::other("address in use");
        let err = OutboxError::with_source(Kind::Io, "cannot bind the metrics address", io);
        assert_eq!(err.to_string(), "cannot bind the metrics address");
        assert_eq!(err.code(), "io");
        assert_eq!(
            err.source().map(|s| s.to_string()),
            Some("address in use".into())
        );
    }
}
