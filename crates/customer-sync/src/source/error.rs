//! [`SourceError`]: a problem that stops a source as a whole.

use std::io;
use std::sync::Arc;

/// A fatal problem with a source: it cannot be opened, its format cannot be
/// told, its structure is broken (a CSV header, a JSON array that is not one
/// or is cut short), or reading failed part-way through.
///
/// Unlike a [`RecordError`](crate::RecordError), which concerns one record and
/// lets the run continue, a `SourceError` means nothing more can be read.
/// `Display` is one lowercase line naming the path (and the line, when there
/// is one); [`hint`](SourceError::hint) has advice for the user, if any.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SourceError {
    // Boxed so that `Result<Record, SourceError>` stays small on the hot path.
    inner: Box<Repr>,
}

#[derive(Debug, thiserror::Error)]
enum Repr {
    // The cause is the `source()`, never repeated in the message.
    #[error("cannot open {path}")]
    Open {
        path: Arc<str>,
        source: io::Error,
        hint: Option<String>,
    },
    #[error("{path} is a directory, not a file")]
    Directory { path: Arc<str>, hint: String },
    #[error("cannot read {path} at line {line}")]
    Read {
        path: Arc<str>,
        line: u64,
        source: io::Error,
    },
    #[error("cannot tell the format of {path}: {reason}")]
    UnknownFormat { path: Arc<str>, reason: String },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: Arc<str>,
        line: u64,
        message: String,
        hint: Option<&'static str>,
    },
    #[error("{message}")]
    Database {
        name: Arc<str>,
        message: String,
        hint: Option<String>,
        lost: bool,
    },
}

impl SourceError {
    fn new(repr: Repr) -> Self {
        Self {
            inner: Box::new(repr),
        }
    }

    pub(super) fn open(path: &Arc<str>, source: io::Error, hint: Option<String>) -> Self {
        Self::new(Repr::Open {
            path: Arc::clone(path),
            source,
            hint,
        })
    }

    pub(super) fn directory(path: &Arc<str>, hint: String) -> Self {
        Self::new(Repr::Directory {
            path: Arc::clone(path),
            hint,
        })
    }

    pub(super) fn read(path: &Arc<str>, line: u64, source: io::Error) -> Self {
        Self::new(Repr::Read {
            path: Arc::clone(path),
            line,
            source,
        })
    }

    pub(super) fn unknown_format(path: &Arc<str>, reason: String) -> Self {
        Self::new(Repr::UnknownFormat {
            path: Arc::clone(path),
            reason,
        })
    }

    pub(super) fn invalid(
        path: &Arc<str>,
        line: u64,
        message: impl Into<String>,
        hint: Option<&'static str>,
    ) -> Self {
        Self::new(Repr::Invalid {
            path: Arc::clone(path),
            line,
            message: message.into(),
            hint,
        })
    }

    pub(super) fn database(
        name: &Arc<str>,
        message: impl Into<String>,
        hint: Option<&str>,
        lost: bool,
    ) -> Self {
        Self::new(Repr::Database {
            name: Arc::clone(name),
            message: message.into(),
            hint: hint.map(str::to_owned),
            lost,
        })
    }

    /// Whether the connection to a database source failed part-way: what
    /// was read is accounted for and the next run finishes the sync (as
    /// opposed to a source that cannot be used at all).
    pub fn is_connection_lost(&self) -> bool {
        matches!(&*self.inner, Repr::Database { lost: true, .. })
    }

    /// The source's name as given (a path, or `stdin`).
    pub fn path(&self) -> &str {
        match &*self.inner {
            Repr::Open { path, .. }
            | Repr::Directory { path, .. }
            | Repr::Read { path, .. }
            | Repr::UnknownFormat { path, .. }
            | Repr::Invalid { path, .. }
            | Repr::Database { name: path, .. } => path,
        }
    }

    /// The 1-based line the problem is at, when it is at one.
    pub fn line(&self) -> Option<u64> {
        match &*self.inner {
            Repr::Read { line, .. } | Repr::Invalid { line, .. } => Some(*line),
            Repr::Open { .. }
            | Repr::Directory { .. }
            | Repr::UnknownFormat { .. }
            | Repr::Database { .. } => None,
        }
    }

    /// Whether the operating system refused to open or read the source
    /// (as opposed to its content being unusable).
    pub fn is_io(&self) -> bool {
        matches!(&*self.inner, Repr::Open { .. } | Repr::Read { .. })
    }

    /// Advice for the user, for problems where there is some to give.
    pub fn hint(&self) -> Option<&str> {
        match &*self.inner {
            Repr::UnknownFormat { .. } => {
                Some("use a .csv, .ndjson, .jsonl or .json file, or --format")
            }
            Repr::Invalid { hint, .. } => *hint,
            Repr::Open { hint, .. } | Repr::Database { hint, .. } => hint.as_deref(),
            Repr::Directory { hint, .. } => Some(hint),
            Repr::Read { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn is_send_sync_and_small() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<SourceError>();
        assert_eq!(size_of::<SourceError>(), size_of::<usize>());
    }

    #[test]
    fn open_error_names_the_path_and_keeps_the_cause() {
        let path: Arc<str> = "customers.csv".into();
        let cause = io::Error::from(io::ErrorKind::NotFound);
        let err = SourceError::open(&path, cause, None);
        // The cause is the source, not part of the message.
        assert_eq!(err.to_string(), "cannot open customers.csv");
        assert_eq!(err.path(), "customers.csv");
        assert_eq!(err.line(), None);
        assert!(err.is_io());
        assert!(err.source().is_some());
        assert_eq!(err.hint(), None);
    }

    #[test]
    fn invalid_error_names_path_and_line() {
        let path: Arc<str> = "a.json".into();
        let err = SourceError::invalid(&path, 3, "the array is not closed", Some("hint"));
        assert_eq!(err.to_string(), "a.json:3: the array is not closed");
        assert_eq!(err.line(), Some(3));
        assert_eq!(err.hint(), Some("hint"));
        assert!(!err.is_io());
        assert!(err.source().is_none());
    }
}
