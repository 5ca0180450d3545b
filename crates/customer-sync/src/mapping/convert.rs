//! Value types: turning a field's value into the JSON a trait is sent as.
//!
//! Conversions only ever see non-empty values; emptiness is the null policy's
//! business. Errors are the human part of a `RecordError` message, such as
//! `"abc" is not an integer`.

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use serde_json::{Number, Value};

use super::ValueType;
use crate::FieldValue;

/// Converts `value` to `ty`; `None` sends it as the source gave it (CSV text
/// as a string, JSON as JSON).
pub(super) fn convert(
    value: &FieldValue,
    ty: Option<ValueType>,
    format: Option<&str>,
) -> Result<Value, String> {
    let Some(ty) = ty else {
        return Ok(match value {
            FieldValue::Text(text) => Value::String(text.clone()),
            FieldValue::Json(json) => json.clone(),
        });
    };
    match value {
        FieldValue::Text(text) => from_text(text, ty, format),
        FieldValue::Json(json) => from_json(json, ty, format),
    }
}

fn from_text(text: &str, ty: ValueType, format: Option<&str>) -> Result<Value, String> {
    // Typed values tolerate the padding spreadsheets leave around cells;
    // strings are sent verbatim.
    let trimmed = text.trim();
    match ty {
        ValueType::String => Ok(Value::String(text.to_owned())),
        ValueType::Integer => integer(trimmed).ok_or_else(|| not_a(text, "an integer")),
        ValueType::Float => float(trimmed).ok_or_else(|| not_a(text, "a number")),
        ValueType::Boolean => boolean(trimmed).ok_or_else(|| {
            format!(
                "{} is not a boolean (expected true/false, yes/no or 1/0)",
                quoted(text)
            )
        }),
        ValueType::Timestamp => timestamp(trimmed, format).map(Value::String),
        ValueType::Json => serde_json::from_str(trimmed)
            .map_err(|e| format!("{} is not valid JSON: {e}", quoted(text))),
    }
}

fn from_json(json: &Value, ty: ValueType, format: Option<&str>) -> Result<Value, String> {
    // A JSON string holds text, typed like a CSV cell; other JSON values are
    // accepted where they already are the type asked for.
    if let Value::String(text) = json {
        return from_text(text, ty, format);
    }
    let ok = match (ty, json) {
        (ValueType::String, Value::Array(_) | Value::Object(_)) => {
            Some(Value::String(json.to_string()))
        }
        (ValueType::String, Value::Number(n)) => Some(Value::String(n.to_string())),
        (ValueType::String, Value::Bool(b)) => Some(Value::String(b.to_string())),
        (ValueType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => Some(json.clone()),
        (ValueType::Integer, Value::Number(n)) => n.as_f64().and_then(whole).map(Value::from),
        (ValueType::Float, Value::Number(_)) | (ValueType::Boolean, Value::Bool(_)) => {
            Some(json.clone())
        }
        (ValueType::Boolean, Value::Number(n)) => match n.as_u64() {
            Some(0) => Some(Value::Bool(false)),
            Some(1) => Some(Value::Bool(true)),
            _ => None,
        },
        (ValueType::Timestamp, Value::Number(n)) => {
            return n
                .as_f64()
                .and_then(from_unix)
                .map(Value::String)
                .ok_or_else(|| format!("{n} is out of range for a unix timestamp"));
        }
        (ValueType::Json, _) => Some(json.clone()),
        _ => None,
    };
    ok.ok_or_else(|| {
        let what = match ty {
            ValueType::String => "a string",
            ValueType::Integer => "an integer",
            ValueType::Float => "a number",
            ValueType::Boolean => "a boolean",
            ValueType::Timestamp => "a timestamp",
            ValueType::Json => "JSON",
        };
        format!("{} is not {what}", shorten(&json.to_string()))
    })
}

fn integer(text: &str) -> Option<Value> {
    if let Ok(n) = text.parse::<i64>() {
        return Some(n.into());
    }
    if let Ok(n) = text.parse::<u64>() {
        return Some(n.into());
    }
    // Spreadsheets export whole numbers as `12.0`; accept those, nothing fractional.
    text.parse::<f64>().ok().and_then(whole).map(Value::from)
}

/// `f` as an integer, if it is a whole number that a double holds exactly.
fn whole(f: f64) -> Option<i64> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    (f.fract() == 0.0 && f.abs() <= EXACT).then_some(f as i64)
}

fn float(text: &str) -> Option<Value> {
    // `parse` accepts `inf` and `NaN`, which JSON cannot carry.
    let f = text.parse::<f64>().ok().filter(|f| f.is_finite())?;
    Number::from_f64(f).map(Value::Number)
}

fn boolean(text: &str) -> Option<Value> {
    const TRUE: [&str; 3] = ["true", "yes", "1"];
    const FALSE: [&str; 3] = ["false", "no", "0"];
    if TRUE.iter().any(|t| text.eq_ignore_ascii_case(t)) {
        Some(Value::Bool(true))
    } else if FALSE.iter().any(|f| text.eq_ignore_ascii_case(f)) {
        Some(Value::Bool(false))
    } else {
        None
    }
}

/// Parses a timestamp and renders it as ISO-8601 UTC (`2024-05-01T12:00:00Z`,
/// with milliseconds only when the input had a fraction of a second).
fn timestamp(text: &str, format: Option<&str>) -> Result<String, String> {
    if let Some(format) = format {
        return with_format(text, format)
            .map(render)
            .ok_or_else(|| format!("{} does not match format {format:?}", quoted(text)));
    }
    if looks_numeric(text) {
        return text
            .parse::<f64>()
            .ok()
            .and_then(from_unix)
            .ok_or_else(|| format!("{} is out of range for a unix timestamp", quoted(text)));
    }
    parse_default(text).map(render).ok_or_else(|| {
        format!(
            "{} is not a timestamp; accepted: RFC 3339 (2024-05-01T12:00:00Z, any offset), \
             YYYY-MM-DD HH:MM:SS (UTC), YYYY-MM-DD, unix seconds",
            quoted(text)
        )
    })
}

/// Advice for a timestamp in another form: the `format` setting for
/// `column`, with a strftime format that reads `text` when one can be
/// derived from it, else a common one.
pub(super) fn format_advice(text: &str, column: &str, key: &str) -> String {
    match suggest_format(text.trim()) {
        Some(format) => format!(
            "for this form, set the column's format in a mapping file: [columns] {key} = {{ format = {format:?} }}"
        ),
        None => format!(
            "for another form, set a strftime format for `{column}` in a mapping file, e.g. [columns] {key} = {{ format = \"%d/%m/%Y %H:%M\" }}"
        ),
    }
}

/// A piece of a value, for [`suggest_format`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum Piece<'a> {
    Digits(&'a str),
    Word(&'a str),
    Symbol(char),
}

fn pieces(text: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let run = |pred: fn(char) -> bool| rest.find(|c: char| !pred(c)).unwrap_or(rest.len());
        let (piece, len) = if c.is_ascii_digit() {
            let n = run(|c| c.is_ascii_digit());
            (Piece::Digits(&rest[..n]), n)
        } else if c.is_alphabetic() {
            let n = run(char::is_alphabetic);
            (Piece::Word(&rest[..n]), n)
        } else {
            (Piece::Symbol(c), c.len_utf8())
        };
        out.push(piece);
        rest = &rest[len..];
    }
    out
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// The strftime specifier for a month name: `%B` for a full name, `%b` for
/// a three-letter one.
fn month_name(word: &str) -> Option<&'static str> {
    let lower = word.to_lowercase();
    if MONTHS.contains(&lower.as_str()) {
        Some("%B")
    } else if lower.len() == 3 && MONTHS.iter().any(|m| m.starts_with(&lower)) {
        Some("%b")
    } else {
        None
    }
}

/// A strftime format that reads `text` (`01/05/2024` -> `%d/%m/%Y`,
/// `05/31/2024 14:30` -> `%m/%d/%Y %H:%M`), checked by parsing `text` with
/// it; `None` if no such format can be derived. When day and month cannot
/// be told apart (both 12 or less), the day is taken to come first.
fn suggest_format(text: &str) -> Option<String> {
    let pieces = pieces(text);
    // The date: the first three numbers or month names.
    let date: Vec<usize> = pieces
        .iter()
        .enumerate()
        .filter(|(_, p)| match p {
            Piece::Digits(_) => true,
            Piece::Word(w) => month_name(w).is_some(),
            Piece::Symbol(_) => false,
        })
        .map(|(i, _)| i)
        .take(3)
        .collect();
    if date.len() < 3 {
        return None;
    }
    let number = |i: usize| match pieces[i] {
        Piece::Digits(d) => d.parse::<u32>().ok(),
        _ => None,
    };
    let long = |i: usize| matches!(pieces[i], Piece::Digits(d) if d.len() == 4);
    let mut specs: Vec<(usize, &str)> = Vec::new();
    let month_word = date
        .iter()
        .position(|&i| matches!(pieces[i], Piece::Word(_)));
    if let Some(at) = month_word {
        let Piece::Word(word) = pieces[date[at]] else {
            return None;
        };
        specs.push((date[at], month_name(word)?));
        let others: Vec<usize> = date.iter().copied().filter(|&i| i != date[at]).collect();
        let year = others.iter().copied().find(|&i| long(i))?;
        let day = others.iter().copied().find(|&i| i != year)?;
        specs.extend([(year, "%Y"), (day, "%d")]);
    } else if long(date[0]) {
        specs.extend([(date[0], "%Y"), (date[1], "%m"), (date[2], "%d")]);
    } else if long(date[2]) {
        let (a, b) = (number(date[0])?, number(date[1])?);
        let (first, second) = if b > 12 && a <= 12 {
            ("%m", "%d")
        } else {
            ("%d", "%m")
        };
        specs.extend([(date[0], first), (date[1], second), (date[2], "%Y")]);
    } else {
        return None;
    }
    // The time: the numbers after the date, then a fraction, AM/PM, an offset.
    let twelve_hour = pieces
        .iter()
        .any(|p| matches!(p, Piece::Word(w) if w.eq_ignore_ascii_case("am") || w.eq_ignore_ascii_case("pm")));
    let hour = if twelve_hour { "%I" } else { "%H" };
    let mut time = [hour, "%M", "%S"].into_iter();
    let mut format = String::new();
    let mut i = 0;
    while i < pieces.len() {
        if let Some((_, spec)) = specs.iter().find(|(at, _)| *at == i) {
            format.push_str(spec);
            i += 1;
            continue;
        }
        match pieces[i] {
            Piece::Symbol('.') if format.ends_with("%S") => {
                format.push_str("%.f");
                i += 2;
                continue;
            }
            Piece::Symbol(sign @ ('+' | '-')) if format.contains(hour) => {
                let offset = match pieces.get(i + 1..) {
                    Some([Piece::Digits(h), Piece::Symbol(':'), Piece::Digits(m), ..])
                        if h.len() == 2 && m.len() == 2 =>
                    {
                        i += 4;
                        "%:z"
                    }
                    Some([Piece::Digits(hm), ..]) if hm.len() == 4 => {
                        i += 2;
                        "%z"
                    }
                    _ => {
                        format.push(sign);
                        i += 1;
                        continue;
                    }
                };
                format.push_str(offset);
                continue;
            }
            Piece::Digits(_) => format.push_str(time.next()?),
            Piece::Word(w) if w.eq_ignore_ascii_case("am") || w.eq_ignore_ascii_case("pm") => {
                format.push_str("%p");
            }
            Piece::Word(w) => format.push_str(w),
            Piece::Symbol('%') => format.push_str("%%"),
            Piece::Symbol(c) => format.push(c),
        }
        i += 1;
    }
    with_format(text, &format).map(|_| format)
}

/// Parses the default forms: `YYYY-MM-DD`, optionally followed by `T` or a
/// space, `HH:MM:SS`, a fraction, and `Z` or an offset (`+02:00`, `+0200`);
/// without an offset the time is UTC.
///
/// Hand-written because chrono's strftime parser re-reads its format string
/// on every call, which made a timestamp cost more than the rest of a record.
pub(super) fn parse_default(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(
        number(&b[..4])? as i32,
        number(&b[5..7])?,
        number(&b[8..10])?,
    )?;
    if b.len() == 10 {
        return date.and_hms_opt(0, 0, 0).map(|dt| dt.and_utc());
    }
    if b.len() < 19 || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (hour, minute, second) = (
        number(&b[11..13])?,
        number(&b[14..16])?,
        number(&b[17..19])?,
    );
    let mut rest = &b[19..];
    let mut nanos = 0;
    if let [b'.', tail @ ..] = rest {
        let digits = tail.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        // Nanoseconds: the first nine digits, scaled; any further digits are below precision.
        let kept = digits.min(9);
        nanos = number(&tail[..kept])? * 10u32.pow(9 - kept as u32);
        rest = &tail[digits..];
    }
    let offset_minutes = match rest {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] | [sign @ (b'+' | b'-'), h1, h2, m1, m2] => {
            let (h, m) = (number(&[*h1, *h2])?, number(&[*m1, *m2])?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = (h * 60 + m) as i64;
            if *sign == b'-' { -minutes } else { minutes }
        }
        _ => return None,
    };
    let local = date.and_hms_nano_opt(hour, minute, second, nanos)?;
    Some(local.and_utc() - chrono::TimeDelta::minutes(offset_minutes))
}

/// The value of a run of ASCII digits.
fn number(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
    })
}

/// Whether `text` is a timestamp exactly as [`render`] writes it
/// (`2024-05-01T12:00:00Z`, or with `.mmm` milliseconds that are not all
/// zero) and a valid one: then converting it gives it back unchanged, so the
/// hot path sends it as it is instead of parsing and rendering it again.
pub(super) fn is_rendered_timestamp(text: &str) -> bool {
    let b = text.as_bytes();
    let zone = match b.len() {
        20 => 19,
        24 if b[19] == b'.' && number(&b[20..23]).is_some_and(|ms| ms != 0) => 23,
        _ => return false,
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return false;
    }
    if b[zone] != b'Z' {
        return false;
    }
    let field = |at: usize, len: usize| number(&b[at..at + len]);
    let (Some(year), Some(month), Some(day)) = (field(0, 4), field(5, 2), field(8, 2)) else {
        return false;
    };
    // Seconds stop at 59: a leap second renders through chrono's rules.
    matches!(
        (field(11, 2), field(14, 2), field(17, 2)),
        (Some(0..=23), Some(0..=59), Some(0..=59))
    ) && NaiveDate::from_ymd_opt(year as i32, month, day).is_some()
}

/// Parses with a user's strftime `format`: with an offset if it has one,
/// else as UTC, else as a date at midnight UTC.
fn with_format(text: &str, format: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(text, format)
        .map(|dt| dt.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(text, format)
                .ok()
                .map(|dt| dt.and_utc())
        })
        .or_else(|| {
            NaiveDate::parse_from_str(text, format)
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|dt| dt.and_utc())
        })
}

/// Whether a strftime format string is well formed.
pub(super) fn valid_format(format: &str) -> bool {
    !format.is_empty() && StrftimeItems::new(format).all(|item| !matches!(item, Item::Error))
}

fn looks_numeric(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().filter(|&b| b == b'.').count() <= 1
        && digits.bytes().any(|b| b.is_ascii_digit())
}

fn from_unix(seconds: f64) -> Option<String> {
    if !seconds.is_finite() {
        return None;
    }
    let whole = seconds.floor();
    let nanos = ((seconds - whole) * 1e9).round().min(999_999_999.0) as u32;
    if whole.abs() > 1e15 {
        return None;
    }
    DateTime::from_timestamp(whole as i64, nanos).map(render)
}

pub(super) fn render(dt: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    let nanos = dt.timestamp_subsec_nanos();
    let year = dt.year();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        // Outside four-digit years, or a leap second: chrono knows the rules.
        let precision = if nanos == 0 {
            SecondsFormat::Secs
        } else {
            SecondsFormat::Millis
        };
        return dt.to_rfc3339_opts(precision, true);
    }
    // Written by hand: `to_rfc3339_opts` goes through the formatting
    // machinery, several times slower for a value sent on every record.
    fn digits(out: &mut String, n: u32, width: u32) {
        for place in (0..width).rev() {
            out.push(char::from(b'0' + (n / 10u32.pow(place) % 10) as u8));
        }
    }
    let mut out = String::with_capacity(24);
    digits(&mut out, year as u32, 4);
    let parts = [
        ('-', dt.month()),
        ('-', dt.day()),
        ('T', dt.hour()),
        (':', dt.minute()),
        (':', dt.second()),
    ];
    for (separator, n) in parts {
        out.push(separator);
        digits(&mut out, n, 2);
    }
    if nanos != 0 {
        out.push('.');
        digits(&mut out, nanos / 1_000_000, 3);
    }
    out.push('Z');
    out
}

fn not_a(text: &str, what: &str) -> String {
    format!("{} is not {what}", quoted(text))
}

/// `text` in double quotes, shortened so one huge cell cannot flood a report.
pub(super) fn quoted(text: &str) -> String {
    format!("{:?}", shorten(text))
}

fn shorten(text: &str) -> String {
    const MAX: usize = 60;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(t: &str, ty: ValueType) -> Result<Value, String> {
        convert(&FieldValue::Text(t.into()), Some(ty), None)
    }

    fn json_in(v: Value, ty: ValueType) -> Result<Value, String> {
        convert(&FieldValue::Json(v), Some(ty), None)
    }

    #[test]
    fn as_is_keeps_text_and_json() {
        let t = FieldValue::Text(" 42 ".into());
        assert_eq!(convert(&t, None, None), Ok(json!(" 42 ")));
        let j = FieldValue::Json(json!({"a": [1, true]}));
        assert_eq!(convert(&j, None, None), Ok(json!({"a": [1, true]})));
    }

    #[test]
    fn strings() {
        assert_eq!(text(" Ada ", ValueType::String), Ok(json!(" Ada ")));
        assert_eq!(json_in(json!(12), ValueType::String), Ok(json!("12")));
        assert_eq!(json_in(json!(true), ValueType::String), Ok(json!("true")));
        assert_eq!(
            json_in(json!([1, 2]), ValueType::String),
            Ok(json!("[1,2]"))
        );
    }

    #[test]
    fn integers() {
        assert_eq!(text("42", ValueType::Integer), Ok(json!(42)));
        assert_eq!(text(" -7 ", ValueType::Integer), Ok(json!(-7)));
        assert_eq!(text("12.0", ValueType::Integer), Ok(json!(12)));
        assert_eq!(
            text("18446744073709551615", ValueType::Integer),
            Ok(json!(u64::MAX))
        );
        assert_eq!(
            text("abc", ValueType::Integer),
            Err("\"abc\" is not an integer".into())
        );
        assert!(text("12.5", ValueType::Integer).is_err());
        assert_eq!(json_in(json!(3), ValueType::Integer), Ok(json!(3)));
        assert_eq!(json_in(json!(3.0), ValueType::Integer), Ok(json!(3)));
        assert_eq!(json_in(json!("9"), ValueType::Integer), Ok(json!(9)));
        assert_eq!(
            json_in(json!(true), ValueType::Integer),
            Err("true is not an integer".into())
        );
        assert!(json_in(json!(3.5), ValueType::Integer).is_err());
    }

    #[test]
    fn floats() {
        assert_eq!(text("1.5", ValueType::Float), Ok(json!(1.5)));
        assert_eq!(text("3", ValueType::Float), Ok(json!(3.0)));
        assert_eq!(text("1e3", ValueType::Float), Ok(json!(1000.0)));
        assert_eq!(
            text("1,5", ValueType::Float),
            Err("\"1,5\" is not a number".into())
        );
        assert!(text("NaN", ValueType::Float).is_err());
        assert!(text("inf", ValueType::Float).is_err());
        assert_eq!(json_in(json!(2), ValueType::Float), Ok(json!(2)));
        assert!(json_in(json!({}), ValueType::Float).is_err());
    }

    #[test]
    fn booleans() {
        for t in ["true", "TRUE", "Yes", " yes ", "1"] {
            assert_eq!(text(t, ValueType::Boolean), Ok(json!(true)), "{t}");
        }
        for t in ["false", "False", "NO", "0"] {
            assert_eq!(text(t, ValueType::Boolean), Ok(json!(false)), "{t}");
        }
        let err = text("maybe", ValueType::Boolean).unwrap_err();
        assert!(err.starts_with("\"maybe\" is not a boolean"), "{err}");
        assert_eq!(json_in(json!(false), ValueType::Boolean), Ok(json!(false)));
        assert_eq!(json_in(json!(1), ValueType::Boolean), Ok(json!(true)));
        assert!(json_in(json!(2), ValueType::Boolean).is_err());
    }

    proptest::proptest! {
        /// Whatever the hot path sends as it is, converting gives back
        /// unchanged, by every route: a typed column, JSON, and CSV inference.
        #[test]
        fn a_rendered_timestamp_converts_to_itself(
            (year, month, day) in (0u32..10_000, 0u32..14, 0u32..33),
            (hour, minute, second) in (0u32..25, 0u32..61, 0u32..61),
            millis in proptest::option::of(proptest::prop_oneof![proptest::strategy::Just(0u32), 1u32..1000]),
            off in 0usize..40,
        ) {
            let mut text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
            if let Some(millis) = millis {
                text.push_str(&format!(".{millis:03}"));
            }
            text.push('Z');
            // Now and then one separator is another character.
            let separators = [4, 7, 10, 13, 16, text.len() - 1];
            if let Some(&at) = separators.get(off) {
                text.replace_range(at..at + 1, "x");
            }
            if is_rendered_timestamp(&text) {
                let want = Ok(Value::String(text.clone()));
                proptest::prop_assert_eq!(
                    from_text(&text, ValueType::Timestamp, None), want.clone(), "{}", text
                );
                proptest::prop_assert_eq!(
                    from_json(&Value::String(text.clone()), ValueType::Timestamp, None),
                    want.clone(),
                    "{}", text
                );
                proptest::prop_assert_eq!(
                    crate::mapping::sample::strict(&text, ValueType::Timestamp),
                    want.ok(),
                    "{}", text
                );
            }
        }
    }

    #[test]
    fn rendered_timestamps_are_told_from_the_rest() {
        for yes in [
            "2024-05-01T12:00:00Z",
            "2024-02-29T23:59:59.001Z",
            "0001-01-01T00:00:00Z",
        ] {
            assert!(is_rendered_timestamp(yes), "{yes}");
        }
        for no in [
            "2024-05-01T12:00:00.000Z",
            "2023-02-29T12:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:60:00Z",
            "2024-12-31T23:59:60Z",
            "2024-05-01t12:00:00Z",
            "2024-05-01T12:00:00z",
            "2024-05-01 12:00:00Z",
            "2024-05-01T12:00:00",
            " 2024-05-01T12:00:00Z",
            "2024-05-01T12:00:00+00:00",
            "2024-05-01T12:00:00.5Z",
            "2024-13-01T12:00:00Z",
            "+024-05-01T12:00:00Z",
        ] {
            assert!(!is_rendered_timestamp(no), "{no}");
        }
    }

    #[test]
    fn timestamps_in_every_accepted_form() {
        let cases = [
            ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00Z"),
            ("2024-05-01T14:00:00+02:00", "2024-05-01T12:00:00Z"),
            ("2024-05-01t12:00:00z", "2024-05-01T12:00:00Z"),
            ("2024-05-01T07:00:00-05:00", "2024-05-01T12:00:00Z"),
            ("2024-05-01T12:00:00.250Z", "2024-05-01T12:00:00.250Z"),
            ("2024-05-01T14:00:00+0200", "2024-05-01T12:00:00Z"),
            ("2024-05-01 12:00:00", "2024-05-01T12:00:00Z"),
            ("2024-05-01T12:00:00", "2024-05-01T12:00:00Z"),
            ("2024-05-01 12:00:00.5", "2024-05-01T12:00:00.500Z"),
            ("2024-05-01", "2024-05-01T00:00:00Z"),
            (" 2024-05-01 ", "2024-05-01T00:00:00Z"),
            ("1714564800", "2024-05-01T12:00:00Z"),
            ("1714564800.5", "2024-05-01T12:00:00.500Z"),
            ("0", "1970-01-01T00:00:00Z"),
            ("-86400", "1969-12-31T00:00:00Z"),
            ("2024-05-01T12:00:00.123456789Z", "2024-05-01T12:00:00.123Z"),
            ("2024-02-29T23:30:00-01:00", "2024-03-01T00:30:00Z"),
            ("0001-01-01", "0001-01-01T00:00:00Z"),
            ("253402300800", "+10000-01-01T00:00:00Z"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                text(input, ValueType::Timestamp),
                Ok(json!(expected)),
                "{input}"
            );
        }
        assert_eq!(
            json_in(json!(1714564800), ValueType::Timestamp),
            Ok(json!("2024-05-01T12:00:00Z"))
        );
        assert_eq!(
            json_in(json!("2024-05-01"), ValueType::Timestamp),
            Ok(json!("2024-05-01T00:00:00Z"))
        );
    }

    #[test]
    fn bad_timestamps() {
        for bad in [
            "yesterday",
            "2024-13-01",
            "2024-05-01 25:00:00",
            "01/05/2024",
            "1.2.3",
        ] {
            let err = text(bad, ValueType::Timestamp).unwrap_err();
            assert!(
                err.starts_with(&format!("{bad:?} is not a timestamp")),
                "{err}"
            );
        }
        assert!(text("99999999999999999999", ValueType::Timestamp).is_err());
        assert!(json_in(json!(true), ValueType::Timestamp).is_err());
        assert!(json_in(json!(1e300), ValueType::Timestamp).is_err());
    }

    #[test]
    fn timestamps_with_a_format() {
        let ts = |t: &str, f: &str| {
            convert(
                &FieldValue::Text(t.into()),
                Some(ValueType::Timestamp),
                Some(f),
            )
        };
        assert_eq!(
            ts("01/05/2024 13:30", "%d/%m/%Y %H:%M"),
            Ok(json!("2024-05-01T13:30:00Z"))
        );
        assert_eq!(
            ts("01/05/2024", "%d/%m/%Y"),
            Ok(json!("2024-05-01T00:00:00Z"))
        );
        assert_eq!(
            ts("2024-05-01 14:00 +0200", "%Y-%m-%d %H:%M %z"),
            Ok(json!("2024-05-01T12:00:00Z"))
        );
        assert_eq!(
            ts("2024-05-01", "%d/%m/%Y"),
            Err("\"2024-05-01\" does not match format \"%d/%m/%Y\"".into())
        );
        assert!(valid_format("%d/%m/%Y"));
        assert!(!valid_format("%Q"));
        assert!(!valid_format(""));
    }

    #[test]
    fn a_format_is_derived_from_the_value_seen() {
        let cases = [
            ("01/05/2024", Some("%d/%m/%Y")),
            ("31/05/2024", Some("%d/%m/%Y")),
            ("05/31/2024 14:30", Some("%m/%d/%Y %H:%M")),
            ("2024.05.01 14:30:15", Some("%Y.%m.%d %H:%M:%S")),
            ("01-05-2024 02:30 PM", Some("%d-%m-%Y %I:%M %p")),
            ("1 May 2024", Some("%d %B %Y")),
            ("May 1, 2024", Some("%B %d, %Y")),
            ("Jun 1, 2024", Some("%b %d, %Y")),
            ("01/05/2024 14:30:15.250", Some("%d/%m/%Y %H:%M:%S%.f")),
            ("01/05/2024 14:30 +02:00", Some("%d/%m/%Y %H:%M %:z")),
            ("01/05/2024 14:30 +0200", Some("%d/%m/%Y %H:%M %z")),
            ("yesterday", None),
            ("01/05/24", None),
            ("1714564800000", None),
            ("32/13/2024", None),
        ];
        for (text, expected) in cases {
            assert_eq!(suggest_format(text).as_deref(), expected, "{text}");
        }
        let advice = format_advice("01/05/2024", "Signed Up", "\"Signed Up\"");
        assert!(
            advice.ends_with(r#"[columns] "Signed Up" = { format = "%d/%m/%Y" }"#),
            "{advice}"
        );
        let advice = format_advice("soon", "when", "when");
        assert!(advice.contains("format = \"%d/%m/%Y %H:%M\""), "{advice}");
    }

    #[test]
    fn json_text_is_parsed() {
        assert_eq!(
            text(r#"{"a": [1, 2]}"#, ValueType::Json),
            Ok(json!({"a": [1, 2]}))
        );
        assert_eq!(json_in(json!("[true]"), ValueType::Json), Ok(json!([true])));
        assert_eq!(
            json_in(json!({"k": 1}), ValueType::Json),
            Ok(json!({"k": 1}))
        );
        let err = text("{oops", ValueType::Json).unwrap_err();
        assert!(err.starts_with("\"{oops\" is not valid JSON"), "{err}");
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let err = text(&"x".repeat(500), ValueType::Integer).unwrap_err();
        assert!(err.len() < 100, "{err}");
        assert!(err.contains("..."));
    }
}
