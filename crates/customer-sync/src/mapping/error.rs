//! The configuration-level error: a bad mapping file or a header it cannot map.

use std::fmt;
use std::path::{Path, PathBuf};

/// A position in a mapping file: 1-based line and column.
pub(super) type Pos = (usize, usize);

/// Why a mapping could not be built: a bad mapping file, or a header the
/// mapping cannot be applied to.
///
/// It is fatal and reported before any record is read. `Display` names the
/// file and line (`mapping.toml:7:1: unknown field ...`) or the column at
/// fault; [`hint`](Self::hint) suggests a fix, which the command line prints
/// on a `hint:` line of its own.
#[derive(Debug, thiserror::Error)]
#[error("{inner}")]
pub struct MappingError {
    inner: Box<Inner>,
    #[source]
    source: Option<std::io::Error>,
}

#[derive(Debug)]
struct Inner {
    message: String,
    path: Option<PathBuf>,
    pos: Option<Pos>,
    hint: Option<String>,
}

impl MappingError {
    pub(super) fn new(message: impl Into<String>) -> Self {
        Self {
            inner: Box::new(Inner {
                message: message.into(),
                path: None,
                pos: None,
                hint: None,
            }),
            source: None,
        }
    }

    pub(super) fn io(path: &Path, err: std::io::Error) -> Self {
        // The cause is the `source()`, not repeated in the message.
        let mut this = Self::new("cannot read mapping file").at_path(Some(path));
        this.source = Some(err);
        this
    }

    pub(super) fn at(mut self, pos: Option<Pos>) -> Self {
        self.inner.pos = pos;
        self
    }

    pub(super) fn at_path(mut self, path: Option<&Path>) -> Self {
        self.inner.path = path.map(Path::to_path_buf);
        self
    }

    pub(super) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.inner.hint = Some(hint.into());
        self
    }

    /// A suggested fix, if there is one, without the `hint:` prefix.
    pub fn hint(&self) -> Option<&str> {
        self.inner.hint.as_deref()
    }

    /// The mapping file the error is in, if it came from a file.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The 1-based line in the mapping file, if the error points at one.
    pub fn line(&self) -> Option<usize> {
        self.inner.pos.map(|(line, _)| line)
    }
}

impl fmt::Display for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.path, self.pos) {
            (Some(path), Some((line, col))) => write!(f, "{}:{line}:{col}: ", path.display())?,
            (Some(path), None) => write!(f, "{}: ", path.display())?,
            (None, Some((line, col))) => write!(f, "mapping line {line}, column {col}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

/// The 1-based line and column of byte `offset` in `text`.
pub(super) fn position(text: &str, offset: usize) -> Pos {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_and_position() {
        let err = MappingError::new("unknown field `x`")
            .at(Some((3, 1)))
            .at_path(Some(Path::new("m.toml")));
        assert_eq!(err.to_string(), "m.toml:3:1: unknown field `x`");
        assert_eq!(err.line(), Some(3));
        let err = MappingError::new("bad").at(Some((2, 5)));
        assert_eq!(err.to_string(), "mapping line 2, column 5: bad");
        assert_eq!(MappingError::new("bad").to_string(), "bad");
    }

    #[test]
    fn position_counts_lines_and_chars() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(position(text, 0), (1, 1));
        assert_eq!(position(text, 6), (2, 1));
        assert_eq!(position(text, text.find('=').unwrap()), (1, 3));
        assert_eq!(position(text, 10), (2, 4));
    }

    #[test]
    fn is_send_sync_and_has_io_source() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<MappingError>();
        let err = MappingError::io(
            Path::new("nope.toml"),
            std::io::Error::new(std::io::ErrorKind::NotFound, "not found"),
        );
        assert!(std::error::Error::source(&err).is_some());
        assert!(err.to_string().starts_with("nope.toml: "), "{err}");
    }
}
