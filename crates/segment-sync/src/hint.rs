//! Errors that carry a `hint:` line for the user.

use std::error::Error;
use std::fmt;

/// An error with advice, printed as `error: ...` then `hint: ...`. It shows
/// as the error it wraps: the same message and the same `source()` chain.
#[derive(Debug)]
pub struct Hinted {
    error: Box<dyn Error + Send + Sync>,
    hint: String,
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl Error for Hinted {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.error.source()
    }
}

/// A message of our own, with no cause.
#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for Message {}

/// An error with a hint.
pub fn with_hint(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    hinted(Message(message.into()), hint)
}

/// `error` with a hint, keeping its message and its causes.
pub fn hinted(error: impl Error + Send + Sync + 'static, hint: impl Into<String>) -> anyhow::Error {
    Hinted {
        error: Box::new(error),
        hint: hint.into(),
    }
    .into()
}

/// Several problems found at once (a mapping file's), each printed as an
/// `error:` line of its own with its hint, before the error itself.
#[derive(Debug)]
pub struct Several {
    summary: String,
    problems: Vec<(String, Option<String>)>,
}

impl fmt::Display for Several {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary)
    }
}

impl Error for Several {}

/// An error that stands for `problems` (message, hint), summed up as `summary`.
pub fn several(
    summary: impl Into<String>,
    problems: Vec<(String, Option<String>)>,
) -> anyhow::Error {
    Several {
        summary: summary.into(),
        problems,
    }
    .into()
}

/// The problems listed anywhere in `error`'s chain, if any.
pub fn problems_of(error: &anyhow::Error) -> &[(String, Option<String>)] {
    error
        .chain()
        .find_map(|e| e.downcast_ref::<Several>())
        .map_or(&[], |several| several.problems.as_slice())
}

/// An `anyhow` error (with its context and causes) with a hint.
pub fn hinted_anyhow(error: anyhow::Error, hint: impl Into<String>) -> anyhow::Error {
    hinted(AnyhowError(error), hint)
}

/// An `anyhow::Error` as a `std` error, keeping its chain.
#[derive(Debug)]
struct AnyhowError(anyhow::Error);

impl fmt::Display for AnyhowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Error for AnyhowError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.chain().nth(1)
    }
}

/// The hint attached anywhere in `error`'s chain, if any.
pub fn hint_of(error: &anyhow::Error) -> Option<&str> {
    error
        .chain()
        .find_map(|e| e.downcast_ref::<Hinted>())
        .map(|h| h.hint.as_str())
}

/// The lines to print for `error`: its message, then each cause the lines
/// before have not already said (a message that quotes its cause, as many
/// libraries' do, would otherwise print it twice).
pub fn causes(error: &anyhow::Error) -> Vec<String> {
    let mut said: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !said.iter().any(|earlier| earlier.contains(&text)) {
            said.push(text);
        }
    }
    said
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_keeps_the_message_and_the_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let error = hinted(io, "check the path");
        assert_eq!(error.to_string(), "no such file");
        assert_eq!(hint_of(&error), Some("check the path"));
        let error = with_hint("bad", "fix it");
        assert_eq!(causes(&error), ["bad"]);
    }

    #[test]
    fn causes_the_message_already_says_are_left_out() {
        let io = std::io::Error::other("disk full");
        let error = anyhow::Error::new(io).context("cannot write report.json: disk full");
        assert_eq!(causes(&error), ["cannot write report.json: disk full"]);
        let io = std::io::Error::other("disk full");
        let error = anyhow::Error::new(io).context("cannot write report.json");
        assert_eq!(causes(&error), ["cannot write report.json", "disk full"]);
    }
}
