//! [`SyncError`]: a fatal problem that stopped a run, with a hint and the
//! partial report.

use segment_client::SegmentError;

use crate::report::RunReport;
use crate::source::SourceError;
use crate::state::StateError;

/// A fatal problem that stopped a run (per-record problems are never fatal).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SyncError {
    message: String,
    hint: Option<String>,
    pub(super) report: Option<Box<RunReport>>,
    #[source]
    pub(super) source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SyncError {
    pub(crate) fn new(message: impl Into<String>, hint: Option<&str>) -> Self {
        Self {
            message: message.into(),
            hint: hint.map(str::to_owned),
            report: None,
            source: None,
        }
    }

    /// A line of advice for the user, if there is one.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// The report of the records handled before the run stopped, if it got that far.
    pub fn report(&self) -> Option<&RunReport> {
        self.report.as_deref()
    }
}

impl From<SourceError> for SyncError {
    fn from(error: SourceError) -> Self {
        let mut err = SyncError::new(error.to_string(), error.hint());
        err.source = Some(Box::new(error));
        err
    }
}

impl From<StateError> for SyncError {
    fn from(error: StateError) -> Self {
        let hint = error
            .hint()
            .unwrap_or("check --state and --name; `segment-sync reset` starts over")
            .to_owned();
        let mut err = SyncError::new(error.to_string(), Some(&hint));
        err.source = Some(Box::new(error));
        err
    }
}

impl From<SegmentError> for SyncError {
    fn from(error: SegmentError) -> Self {
        let hint = if error.is_unauthorized() {
            Some("check SEGMENT_WRITE_KEY (or --write-key): Segment refused it")
        } else if error.code() == Some(segment_client::codes::MISSING_WRITE_KEY) {
            Some("set SEGMENT_WRITE_KEY, or pass --write-key; --dry-run needs none")
        } else if error.is_outage() {
            Some(
                "Segment could not be reached; what was not sent stays pending in the state and goes first on the next run: check the network and --host, then run again",
            )
        } else if error.is_config() {
            Some("check SEGMENT_HOST / SEGMENT_REGION (or --host / --region)")
        } else {
            None
        };
        let mut err = SyncError::new(error.to_string(), hint);
        err.source = Some(Box::new(error));
        err
    }
}
