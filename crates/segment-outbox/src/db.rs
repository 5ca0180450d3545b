//! Connecting to PostgreSQL, and the schema name every statement is built with.

use tokio_postgres::{Client, Config, NoTls};

use crate::error::{Kind, OutboxError};

/// The PostgreSQL schema holding the outbox table and `identify` function.
///
/// A plain lowercase identifier (letters, digits, `_`), so it needs no
/// quoting anywhere and cannot inject SQL. Default: `segment`.
///
/// # Example
/// ```
/// use segment_outbox::Schema;
///
/// assert_eq!(Schema::default().name(), "segment");
/// assert!(Schema::new("billing_events").is_ok());
/// assert!(Schema::new("Robert'); DROP TABLE x;--").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema(String);

impl Default for Schema {
    fn default() -> Self {
        Self("segment".into())
    }
}

impl Schema {
    /// A schema name.
    ///
    /// # Errors
    /// `invalid_config` unless `name` is 1-48 characters of `a-z`, `0-9`
    /// and `_`, not starting with a digit.
    pub fn new(name: &str) -> Result<Self, OutboxError> {
        let ok = !name.is_empty()
            && name.len() <= 48
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(OutboxError::new(
                Kind::InvalidConfig,
                format!(
                    "schema name {name:?} is not a plain lowercase identifier (a-z, 0-9, _; at most 48)"
                ),
            ))
        }
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The `NOTIFY` channel that committing an event signals.
    pub fn channel(&self) -> String {
        format!("{}_outbox", self.0)
    }

    /// `sql` with every `{s}` replaced by the schema name.
    pub(crate) fn sql(&self, sql: &str) -> String {
        sql.replace("{s}", &self.0)
    }
}

/// Opens a connection and drives it on a background task.
///
/// # Errors
/// `invalid_config` for a malformed URL, `database` if PostgreSQL cannot be reached.
pub async fn connect(url: &str) -> Result<Client, OutboxError> {
    let config = parse_url(url)?;
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| OutboxError::database("cannot connect to PostgreSQL", e))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// Parses a `postgres://` URL or a `key=value` connection string.
///
/// # Errors
/// `invalid_config`; the message never repeats the URL, which may hold a password.
pub(crate) fn parse_url(url: &str) -> Result<Config, OutboxError> {
    url.parse::<Config>().map_err(|e| {
        OutboxError::with_source(
            Kind::InvalidConfig,
            "the database URL is not a valid PostgreSQL connection string",
            e,
        )
    })
}
