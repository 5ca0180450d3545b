//! Column types inferred from a sample of CSV values, conservatively.
//!
//! A CSV cell is text; a column whose sampled values all read one way
//! unambiguously is sent as that type:
//!
//! | type        | every non-empty value is                                   |
//! |-------------|------------------------------------------------------------|
//! | `boolean`   | `true` or `false`, in any case                             |
//! | `integer`   | `-`? digits, no leading zero (`0` itself is fine), within ±2^53 |
//! | `float`     | an integer or `-`? digits `.` digits, no leading zero, no exponent, at most 15 significant digits |
//! | `timestamp` | `YYYY-MM-DD`, optionally with `T` or a space, `HH:MM:SS`, a fraction and `Z` or an offset |
//!
//! Anything else keeps the column a string: a leading zero (`01234` is a
//! code, not a number), a `+`, surrounding spaces, `yes`/`no` or `1`/`0` (also
//! codes), unix seconds (also integers), a mix of kinds (integers and
//! decimals together are decimals), or no value at all. The limits keep
//! every value exact: a double holds any integer up to 2^53 and any decimal
//! of 15 significant digits, so no digit a user wrote is ever changed.
//!
//! A decimal is sent as a JSON number: `0.00` becomes `0.0` and `137.50`
//! becomes `137.5`. JSON numbers carry no scale, so trailing zeros are
//! formatting, not value; a column whose exact text matters (an amount with
//! its currency's decimals, for a tool that compares strings) is pinned with
//! `type = "string"`.
//!
//! The same strict rules apply to every later record: a value the inferred
//! type does not fit (`n/a` in an integer column, `007` after `7`) fails its
//! record as `invalid_value`, naming the column; it is never sent as another
//! type.

use serde_json::{Number, Value};

use super::ValueType;
use super::convert::{parse_default, render};

/// How many records [`Mapping::with_sample`](super::Mapping::with_sample)
/// looks at, at most.
pub const SAMPLE_RECORDS: usize = 1_000;

/// How many bytes of input a sample reads ahead, at most.
pub const SAMPLE_BYTES: u64 = 1 << 20;

/// What the sampled values of one column agree on so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Kind {
    /// No value yet.
    #[default]
    Unknown,
    Boolean,
    Integer,
    Decimal,
    Timestamp,
    /// A value that is none of the above, or kinds that disagree.
    Text,
}

impl Kind {
    /// The kind of one non-empty value.
    pub(super) fn of(text: &str) -> Kind {
        if text.eq_ignore_ascii_case("true") || text.eq_ignore_ascii_case("false") {
            Kind::Boolean
        } else if integer(text).is_some() {
            Kind::Integer
        } else if decimal(text).is_some() {
            Kind::Decimal
        } else if parse_default(text).is_some() {
            Kind::Timestamp
        } else {
            Kind::Text
        }
    }

    /// The kind of a column with values of both kinds.
    pub(super) fn and(self, other: Kind) -> Kind {
        match (self, other) {
            (Kind::Unknown, kind) | (kind, Kind::Unknown) => kind,
            (a, b) if a == b => a,
            (Kind::Integer, Kind::Decimal) | (Kind::Decimal, Kind::Integer) => Kind::Decimal,
            _ => Kind::Text,
        }
    }

    /// The type to send the column as; `None` keeps the text.
    pub(super) fn value_type(self) -> Option<ValueType> {
        match self {
            Kind::Boolean => Some(ValueType::Boolean),
            Kind::Integer => Some(ValueType::Integer),
            Kind::Decimal => Some(ValueType::Float),
            Kind::Timestamp => Some(ValueType::Timestamp),
            Kind::Unknown | Kind::Text => None,
        }
    }
}

/// Converts `text` by the strict rules of an inferred `ty`; `None` if it
/// does not fit them.
pub(super) fn strict(text: &str, ty: ValueType) -> Option<Value> {
    match ty {
        ValueType::Boolean if text.eq_ignore_ascii_case("true") => Some(Value::Bool(true)),
        ValueType::Boolean if text.eq_ignore_ascii_case("false") => Some(Value::Bool(false)),
        ValueType::Integer => integer(text).map(Value::from),
        ValueType::Float => integer(text)
            .map(|n| n as f64)
            .or_else(|| decimal(text))
            .and_then(Number::from_f64)
            .map(Value::Number),
        ValueType::Timestamp => parse_default(text).map(|dt| Value::String(render(dt))),
        _ => None,
    }
}

/// The largest integer a double holds exactly: JSON readers in JavaScript
/// would round anything beyond.
const EXACT: i64 = 1 << 53;

/// Digits without a leading zero (`0` itself is fine), optionally negative.
fn integer(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !plain_digits(digits) || (digits == "0" && text.starts_with('-')) {
        return None;
    }
    text.parse::<i64>().ok().filter(|n| n.abs() <= EXACT)
}

/// `-`? digits `.` digits, the integer part without a leading zero, at most
/// 15 significant digits (all a double keeps exactly).
fn decimal(text: &str) -> Option<f64> {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = unsigned.split_once('.')?;
    if !plain_digits(whole) || fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let significant = whole
        .bytes()
        .chain(fraction.bytes())
        .skip_while(|&b| b == b'0')
        .count();
    if significant > 15 {
        return None;
    }
    text.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// ASCII digits, not empty, no leading zero unless it is the only digit.
fn plain_digits(digits: &str) -> bool {
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits.len() == 1 || !digits.starts_with('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn column(values: &[&str]) -> Option<ValueType> {
        values
            .iter()
            .fold(Kind::Unknown, |kind, v| kind.and(Kind::of(v)))
            .value_type()
    }

    #[test]
    fn clear_columns_get_their_type() {
        assert_eq!(
            column(&["true", "FALSE", "False"]),
            Some(ValueType::Boolean)
        );
        assert_eq!(column(&["0", "12", "-3"]), Some(ValueType::Integer));
        assert_eq!(column(&["0.00", "137.50", "-0.5"]), Some(ValueType::Float));
        assert_eq!(column(&["1", "2.5"]), Some(ValueType::Float));
        assert_eq!(
            column(&[
                "2024-05-01",
                "2024-05-01T10:00:00Z",
                "2024-05-01 10:00:00+02:00"
            ]),
            Some(ValueType::Timestamp)
        );
    }

    #[test]
    fn anything_ambiguous_stays_text() {
        for values in [
            &["01234", "11111"][..],
            &["1", "abc"],
            &["true", "1"],
            &["yes", "no"],
            &["+5"],
            &[" 5"],
            &["1e3"],
            &["-0"],
            &["00.5"],
            &["1.", "2"],
            &[".5"],
            &["9007199254740993"],
            &["1234567890.1234567"],
            &["01/05/2024"],
            &["2024-05-01", "5"],
            &[],
        ] {
            assert_eq!(column(values), None, "{values:?}");
        }
    }

    #[test]
    fn strict_conversion_matches_inference() {
        assert_eq!(strict("0.00", ValueType::Float), Some(json!(0.0)));
        assert_eq!(strict("137.50", ValueType::Float), Some(json!(137.5)));
        assert_eq!(strict("5", ValueType::Float), Some(json!(5.0)));
        assert_eq!(strict("007", ValueType::Integer), None);
        assert_eq!(strict("12.0", ValueType::Integer), None);
        assert_eq!(
            strict("9007199254740992", ValueType::Integer),
            Some(json!(1_i64 << 53))
        );
        assert_eq!(strict("TRUE", ValueType::Boolean), Some(json!(true)));
        assert_eq!(strict("yes", ValueType::Boolean), None);
        assert_eq!(
            strict("2024-05-01", ValueType::Timestamp),
            Some(json!("2024-05-01T00:00:00Z"))
        );
        assert_eq!(strict("1714564800", ValueType::Timestamp), None);
        assert_eq!(strict("x", ValueType::String), None);
    }
}
