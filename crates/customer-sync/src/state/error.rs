//! [`StateError`]: a problem with the state, fatal for a run.

use std::path::Path;

/// A problem with the state database. Fatal: the run stops before sending.
#[derive(Debug, thiserror::Error)]
#[error("state {path}: {message}")]
pub struct StateError {
    path: String,
    message: String,
    hint: Option<String>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// The hint for a state that exists but cannot be used.
pub(super) const RESET_HINT: &str = "`segment-sync reset --name NAME` deletes this state and starts over (the next run sends every record again)";

impl StateError {
    pub(super) fn new(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.display().to_string(),
            message: message.into(),
            hint: None,
            source: None,
        }
    }

    pub(super) fn io(path: &Path, what: &str, error: std::io::Error) -> Self {
        Self {
            source: Some(Box::new(error)),
            ..Self::new(path, what)
        }
    }

    pub(super) fn sql(path: &Path, what: &str, error: rusqlite::Error) -> Self {
        Self {
            source: Some(Box::new(error)),
            ..Self::new(path, what)
        }
    }

    pub(super) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// A line of advice for the user, if there is one.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Whether another process holds the state's lock.
    pub fn is_locked(&self) -> bool {
        self.message.starts_with(LOCKED)
    }
}

pub(super) const LOCKED: &str = "in use by another segment-sync";
