//! One customer record as read from a source, and the per-record error.
//!
//! Sources produce [`Record`]s; mapping turns them into identify calls. Both
//! report problems as [`RecordError`]s that name where the record is (file and
//! line) and which field is at fault, so one bad record never stops a run.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;

use serde::Serialize;

/// Where a record came from: the source's name and its line (or row), and
/// for a database row its primary key.
///
/// # Example
/// ```
/// use customer_sync::Location;
///
/// let at = Location::new("customers.csv", 12);
/// assert_eq!(at.to_string(), "customers.csv:12");
///
/// // A JSON array element: minified arrays have every element on line 1.
/// let column = std::num::NonZeroU64::new(48);
/// let element = Location { column, ..Location::new("customers.json", 1) };
/// assert_eq!(element.to_string(), "customers.json:1:48");
///
/// let row = Location::new("public.customers", 3).with_key("id=42");
/// assert_eq!(row.to_string(), "public.customers (id=42)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Location {
    /// The file name as given, or `stdin`.
    pub source: Arc<str>,
    /// 1-based line of the record's start in the file; for a JSON array
    /// source, the line where the element starts; for a database source,
    /// the row's position in this run's read.
    pub line: u64,
    /// For a JSON array element, the 1-based column of its first byte on
    /// `line`: a minified array has every element on line 1. `None` for
    /// other sources. (Non-zero, so that `None` takes no word of its own.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<NonZeroU64>,
    /// A database row's primary key, as `column=value` pairs (`id=42`);
    /// `None` for files and for query results without a key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Arc<str>>,
}

impl Location {
    /// A location in `source` at `line`.
    pub fn new(source: impl Into<Arc<str>>, line: u64) -> Self {
        Self {
            source: source.into(),
            line,
            column: None,
            key: None,
        }
    }

    /// The same location, naming the row by its primary key.
    pub fn with_key(mut self, key: impl Into<Arc<str>>) -> Self {
        self.key = Some(key.into());
        self
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.key, self.column) {
            (Some(key), _) => write!(f, "{} ({key})", self.source),
            (None, Some(column)) => write!(f, "{}:{}:{column}", self.source, self.line),
            (None, None) => write!(f, "{}:{}", self.source, self.line),
        }
    }
}

/// A field's value as the source gave it.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// Text, as CSV gives every value (possibly empty).
    Text(String),
    /// A JSON value, as NDJSON and JSON array sources give them.
    Json(serde_json::Value),
}

impl FieldValue {
    /// Whether the value is empty: empty or whitespace-only text, JSON `null`
    /// or an empty JSON string.
    pub fn is_empty(&self) -> bool {
        match self {
            FieldValue::Text(text) => is_blank(text),
            FieldValue::Json(serde_json::Value::Null) => true,
            FieldValue::Json(serde_json::Value::String(s)) => is_blank(s),
            FieldValue::Json(_) => false,
        }
    }
}

/// Whether two short names are the same text: a column or key name is
/// compared with the header's on every field of every record, and for 4 to
/// 16 bytes two overlapping word loads beat a call to `memcmp`.
#[inline]
pub(crate) fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        8..=16 => {
            let word = |s: &[u8], at: usize| {
                u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or_default())
            };
            word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8)
        }
        4..=7 => {
            let word = |s: &[u8], at: usize| {
                u32::from_le_bytes(s[at..at + 4].try_into().unwrap_or_default())
            };
            word(a, 0) == word(b, 0) && word(a, n - 4) == word(b, n - 4)
        }
        _ => a == b,
    }
}

/// Whether `text` is empty or whitespace only. Most values start with a
/// visible ASCII character, which settles it without `trim`'s Unicode scan
/// (run on every field of every record).
fn is_blank(text: &str) -> bool {
    match text.as_bytes().first() {
        Some(first) if first.is_ascii_graphic() => false,
        _ => text.trim().is_empty(),
    }
}

/// One named field of a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The column (CSV) or key (JSON) name; shared between records of a CSV file.
    pub name: Arc<str>,
    /// The value.
    pub value: FieldValue,
}

/// One customer record, in source order.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Where it is in the source.
    pub location: Location,
    /// Its fields, in the source's column (or key) order.
    pub fields: Vec<Field>,
}

impl Record {
    /// The value of the field called `name`, if present.
    pub fn get(&self, name: &str) -> Option<&FieldValue> {
        self.fields
            .iter()
            .find(|f| &*f.name == name)
            .map(|f| &f.value)
    }
}

/// Why a record was refused. The string codes are stable and appear in run reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecordErrorKind {
    /// The record could not be parsed: bad JSON, a ragged CSV row, bad UTF-8.
    Malformed,
    /// No identity column, or it is empty.
    MissingIdentity,
    /// A value does not parse as its declared type.
    InvalidValue,
    /// The mapped event is over Segment's 32,000-byte limit.
    PayloadTooLarge,
    /// The same identity appears earlier in the same input.
    DuplicateIdentity,
    /// The event breaks another Segment rule.
    InvalidPayload,
}

impl RecordErrorKind {
    /// The stable snake_case code.
    pub fn code(self) -> &'static str {
        match self {
            RecordErrorKind::Malformed => "malformed",
            RecordErrorKind::MissingIdentity => "missing_identity",
            RecordErrorKind::InvalidValue => "invalid_value",
            RecordErrorKind::PayloadTooLarge => "payload_too_large",
            RecordErrorKind::DuplicateIdentity => "duplicate_identity",
            RecordErrorKind::InvalidPayload => "invalid_payload",
        }
    }
}

/// A problem with one record: where, which field, what kind, and a message.
///
/// `Display` reads `customers.csv:12: field `age`: "abc" is not an integer`.
///
/// # Example
/// ```
/// use customer_sync::{Location, RecordError, RecordErrorKind};
///
/// let err = RecordError::new(
///     Location::new("customers.csv", 12),
///     RecordErrorKind::InvalidValue,
///     "\"abc\" is not an integer",
/// )
/// .with_field("age");
/// assert_eq!(err.to_string(), "customers.csv:12: field `age`: \"abc\" is not an integer");
/// assert_eq!(err.kind.code(), "invalid_value");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
pub struct RecordError {
    /// Where the record is.
    pub location: Location,
    /// The field at fault, if one is.
    pub field: Option<String>,
    /// What kind of problem it is.
    pub kind: RecordErrorKind,
    /// A human-readable explanation.
    pub message: String,
}

impl RecordError {
    /// A new error at `location`.
    pub fn new(location: Location, kind: RecordErrorKind, message: impl Into<String>) -> Self {
        Self {
            location,
            field: None,
            kind,
            message: message.into(),
        }
    }

    /// Names the field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.location)?;
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn blank_is_what_trim_leaves_empty(text in "\\PC{0,4}|[ \\t\\r\\n\u{a0}\u{2003}\u{3000}\u{85}a.]{0,4}") {
            proptest::prop_assert_eq!(is_blank(&text), text.trim().is_empty(), "{:?}", text);
        }
    }

    proptest::proptest! {
        #[test]
        fn same_name_is_equality(a in "[ab]{0,20}", b in "[ab]{0,20}") {
            proptest::prop_assert_eq!(same_name(&a, &b), a == b);
            proptest::prop_assert!(same_name(&a, &a.clone()));
            // One byte changed, wherever it is, makes another name.
            for at in 0..a.len() {
                let mut other = a.clone().into_bytes();
                other[at] = if other[at] == b'a' { b'b' } else { b'a' };
                let other = String::from_utf8(other).unwrap_or_default();
                proptest::prop_assert!(!same_name(&a, &other), "{} {}", a, other);
            }
        }
    }

    #[test]
    fn blank_values_of_every_kind() {
        for blank in ["", " ", "\t\n", "\u{a0}", "\u{2003}", "\u{3000} "] {
            assert!(FieldValue::Text(blank.into()).is_empty(), "{blank:?}");
            assert!(FieldValue::Json(blank.into()).is_empty(), "{blank:?}");
        }
        for value in ["a", " a", "\u{a0}a", "\u{e9}", "0"] {
            assert!(!FieldValue::Text(value.into()).is_empty(), "{value:?}");
            assert!(!FieldValue::Json(value.into()).is_empty(), "{value:?}");
        }
        assert!(FieldValue::Json(serde_json::Value::Null).is_empty());
        assert!(!FieldValue::Json(serde_json::json!(0)).is_empty());
    }
}
