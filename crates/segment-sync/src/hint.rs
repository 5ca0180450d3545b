//! Errors that carry a `hint:` line for the user.

use std::fmt;

/// An error message with advice, printed as `error: ...` then `hint: ...`.
#[derive(Debug)]
pub struct Hinted {
    message: String,
    hint: String,
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

/// An error with a hint.
pub fn with_hint(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    Hinted {
        message: message.into(),
        hint: hint.into(),
    }
    .into()
}

/// The hint attached anywhere in `error`'s chain, if any.
pub fn hint_of(error: &anyhow::Error) -> Option<&str> {
    error
        .chain()
        .find_map(|e| e.downcast_ref::<Hinted>())
        .map(|h| h.hint.as_str())
}
