//! The configuration-level error: a bad mapping file or a header it cannot map.

use std::fmt;
use std::path::{Path, PathBuf};

/// A position in a mapping file: 1-based line and column.
pub(super) type Pos = (usize, usize);

/// Why a mapping could not be built: a bad mapping file, or a header the
/// mapping cannot be applied to.
///
/// It is fatal and reported before any record is read. It holds every
/// problem found, not just the first, so one run shows them all
/// ([`problems`](Self::problems)); the accessors below describe the first.
/// `Display` names the file and line (`mapping.toml:7:1: unknown field ...`)
/// or the column at fault, one problem per line; [`hint`](Self::hint)
/// suggests a fix, which the command line prints on a `hint:` line of its own.
///
/// # Example
/// ```
/// use customer_sync::mapping::MappingSpec;
///
/// let err = MappingSpec::from_toml("[columns]\na = { tpye = \"integer\" }\nb = { null = \"skip\" }\n").unwrap_err();
/// let lines: Vec<Option<usize>> = err.problems().iter().map(|p| p.line()).collect();
/// assert_eq!(lines, [Some(2), Some(3)]);
/// assert_eq!(err.problems()[0].hint(), Some("did you mean `type`?"));
/// ```
#[derive(Debug, thiserror::Error)]
pub struct MappingError {
    /// At least one.
    problems: Vec<MappingProblem>,
    #[source]
    source: Option<std::io::Error>,
}

/// One problem of a [`MappingError`]: a message, where it is, and a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingProblem {
    message: String,
    path: Option<PathBuf>,
    pos: Option<Pos>,
    hint: Option<String>,
}

impl MappingProblem {
    /// What is wrong, without the position.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The mapping file it is in, if it came from a file.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The 1-based line in the mapping file, if it points at one.
    pub fn line(&self) -> Option<usize> {
        self.pos.map(|(line, _)| line)
    }

    /// The 1-based column (in characters) in the mapping file, if it points at one.
    pub fn column(&self) -> Option<usize> {
        self.pos.map(|(_, column)| column)
    }

    /// A suggested fix, if there is one, without the `hint:` prefix.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }
}

impl MappingError {
    pub(super) fn new(message: impl Into<String>) -> Self {
        Self {
            problems: vec![MappingProblem {
                message: message.into(),
                path: None,
                pos: None,
                hint: None,
            }],
            source: None,
        }
    }

    /// All the problems of `errors` in one error, in file order (those
    /// without a position last); `None` if there are none.
    pub(super) fn all(errors: Vec<MappingError>) -> Option<Self> {
        let mut problems: Vec<MappingProblem> =
            errors.into_iter().flat_map(|e| e.problems).collect();
        problems.sort_by_key(|p| p.pos.map_or((usize::MAX, 0), |pos| pos));
        (!problems.is_empty()).then_some(Self {
            problems,
            source: None,
        })
    }

    pub(super) fn io(path: &Path, err: std::io::Error) -> Self {
        // The cause is the `source()`, not repeated in the message.
        let mut this = Self::new("cannot read mapping file").at_path(Some(path));
        this.source = Some(err);
        this
    }

    /// Places the (first) problem at `pos`.
    pub(super) fn at(mut self, pos: Option<Pos>) -> Self {
        self.problems[0].pos = pos;
        self
    }

    /// Names the mapping file of every problem.
    pub(super) fn at_path(mut self, path: Option<&Path>) -> Self {
        for problem in &mut self.problems {
            problem.path = path.map(Path::to_path_buf);
        }
        self
    }

    /// Gives the (first) problem a hint.
    pub(super) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.problems[0].hint = Some(hint.into());
        self
    }

    /// Every problem found, in file order.
    pub fn problems(&self) -> &[MappingProblem] {
        &self.problems
    }

    /// The first problem's suggested fix, if there is one, without the `hint:` prefix.
    pub fn hint(&self) -> Option<&str> {
        self.problems[0].hint()
    }

    /// The mapping file the error is in, if it came from a file.
    pub fn path(&self) -> Option<&Path> {
        self.problems[0].path()
    }

    /// The 1-based line in the mapping file of the first problem, if it points at one.
    pub fn line(&self) -> Option<usize> {
        self.problems[0].line()
    }
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            problem.fmt(f)?;
        }
        Ok(())
    }
}

impl fmt::Display for MappingProblem {
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
    fn several_problems_in_file_order_one_per_line() {
        let err = MappingError::all(vec![
            MappingError::new("b").at(Some((5, 1))),
            MappingError::new("no position"),
            MappingError::new("a").at(Some((2, 3))).with_hint("fix a"),
        ])
        .unwrap()
        .at_path(Some(Path::new("m.toml")));
        assert_eq!(
            err.to_string(),
            "m.toml:2:3: a\nm.toml:5:1: b\nm.toml: no position"
        );
        assert_eq!(err.line(), Some(2));
        assert_eq!(err.hint(), Some("fix a"));
        assert_eq!(err.problems()[1].column(), Some(1));
        assert!(MappingError::all(Vec::new()).is_none());
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
