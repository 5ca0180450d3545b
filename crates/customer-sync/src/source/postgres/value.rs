//! PostgreSQL values (binary wire format) to JSON, by column type.
//!
//! | PostgreSQL | JSON |
//! |---|---|
//! | `text`, `varchar`, `char(n)`, `name`, `citext`, enums | string |
//! | `int2`, `int4`, `int8` | integer |
//! | `float4`, `float8` | number (`NaN` and infinities fail the record) |
//! | `numeric` | number when an `f64` holds it exactly, else its decimal string |
//! | `bool` | boolean |
//! | `date` | `"YYYY-MM-DD"` |
//! | `timestamp`, `timestamptz` | ISO-8601 UTC, `"2024-05-01T12:30:00Z"` (fractions kept) |
//! | `uuid` | string |
//! | `json`, `jsonb` | the JSON value |
//! | arrays of the above | arrays (nested for several dimensions) |
//! | `NULL` | `null` (then the mapping's null policy) |

use chrono::{DateTime, Duration, NaiveDate, SecondsFormat};
use serde_json::{Number, Value};
use tokio_postgres::types::{Kind, Type};

/// Whether values of `ty` can be read (see the module table).
pub(super) fn is_supported(ty: &Type) -> bool {
    match ty.kind() {
        Kind::Enum(_) => true,
        Kind::Array(member) => !matches!(member.kind(), Kind::Array(_)) && is_supported(member),
        Kind::Domain(inner) => is_supported(inner),
        Kind::Simple => {
            is_text(ty)
                || [
                    Type::BOOL,
                    Type::INT2,
                    Type::INT4,
                    Type::INT8,
                    Type::FLOAT4,
                    Type::FLOAT8,
                    Type::NUMERIC,
                    Type::DATE,
                    Type::TIMESTAMP,
                    Type::TIMESTAMPTZ,
                    Type::UUID,
                    Type::JSON,
                    Type::JSONB,
                ]
                .contains(ty)
        }
        _ => false,
    }
}

fn is_text(ty: &Type) -> bool {
    [
        Type::TEXT,
        Type::VARCHAR,
        Type::BPCHAR,
        Type::NAME,
        Type::UNKNOWN,
    ]
    .contains(ty)
        || ty.name() == "citext"
}

/// Decodes one non-NULL value of type `ty`; the error says why it cannot be
/// sent (an infinite date, a NaN, bytes that are not what the type says).
pub(super) fn decode(ty: &Type, raw: &[u8]) -> Result<Value, String> {
    match ty.kind() {
        Kind::Enum(_) => return text(raw),
        Kind::Array(member) => return array(member, raw),
        Kind::Domain(inner) => return decode(inner, raw),
        _ => {}
    }
    if is_text(ty) {
        return text(raw);
    }
    match *ty {
        Type::BOOL => Ok(Value::Bool(fixed::<1>(raw)?[0] != 0)),
        Type::INT2 => Ok(i16::from_be_bytes(fixed(raw)?).into()),
        Type::INT4 => Ok(i32::from_be_bytes(fixed(raw)?).into()),
        Type::INT8 => Ok(i64::from_be_bytes(fixed(raw)?).into()),
        Type::FLOAT4 => float(f64::from(f32::from_be_bytes(fixed(raw)?))),
        Type::FLOAT8 => float(f64::from_be_bytes(fixed(raw)?)),
        Type::NUMERIC => numeric(raw),
        Type::DATE => date(i32::from_be_bytes(fixed(raw)?)),
        Type::TIMESTAMP | Type::TIMESTAMPTZ => timestamp(i64::from_be_bytes(fixed(raw)?)),
        Type::UUID => Ok(Value::String(
            uuid::Uuid::from_bytes(fixed(raw)?).hyphenated().to_string(),
        )),
        Type::JSON => json(raw),
        Type::JSONB => match raw.split_first() {
            Some((1, rest)) => json(rest),
            _ => Err("unknown jsonb format version".to_owned()),
        },
        _ => Err(format!("type `{}` is not supported", ty.name())),
    }
}

fn fixed<const N: usize>(raw: &[u8]) -> Result<[u8; N], String> {
    raw.try_into()
        .map_err(|_| format!("expected {N} bytes, got {}", raw.len()))
}

fn text(raw: &[u8]) -> Result<Value, String> {
    std::str::from_utf8(raw)
        .map(|s| Value::String(s.to_owned()))
        .map_err(|_| "text is not valid UTF-8".to_owned())
}

fn json(raw: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(raw).map_err(|e| format!("invalid JSON: {e}"))
}

fn float(f: f64) -> Result<Value, String> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| format!("{f} cannot be sent as a JSON number"))
}

/// Days and microseconds are counted from 2000-01-01 on the wire.
fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).expect("a valid date")
}

fn date(days: i32) -> Result<Value, String> {
    if days == i32::MAX || days == i32::MIN {
        return Err("an infinite date cannot be sent".to_owned());
    }
    epoch()
        .checked_add_signed(Duration::days(i64::from(days)))
        .map(|d| Value::String(d.format("%Y-%m-%d").to_string()))
        .ok_or_else(|| "the date is out of range".to_owned())
}

fn timestamp(micros: i64) -> Result<Value, String> {
    if micros == i64::MAX || micros == i64::MIN {
        return Err("an infinite timestamp cannot be sent".to_owned());
    }
    let base = epoch().and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    base.checked_add_signed(Duration::microseconds(micros))
        .map(|t: DateTime<chrono::Utc>| {
            Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        })
        .ok_or_else(|| "the timestamp is out of range".to_owned())
}

/// `numeric` in binary: digit count, weight (of the first base-10000 digit),
/// sign, display scale, then the base-10000 digits.
fn numeric(raw: &[u8]) -> Result<Value, String> {
    let header = |i: usize| -> Result<u16, String> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "numeric value cut short".to_owned())
    };
    let ndigits = usize::from(header(0)?);
    let weight = i32::from(header(1)? as i16);
    let sign = header(2)?;
    let dscale = usize::from(header(3)?);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err("NaN cannot be sent as a JSON number".to_owned()),
        _ => return Err("an infinite numeric cannot be sent as a JSON number".to_owned()),
    }
    let digits: Vec<u16> = (0..ndigits)
        .map(|i| header(4 + i))
        .collect::<Result<_, _>>()?;
    let digit = |i: i32| -> u16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut text = String::with_capacity(ndigits * 4 + 4);
    if sign == 0x4000 {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        text.push_str(&digit(0).to_string());
        for i in 1..=weight {
            text.push_str(&format!("{:04}", digit(i)));
        }
    }
    if dscale > 0 {
        text.push('.');
        let mut fraction = String::with_capacity(dscale + 4);
        let mut i = weight + 1;
        while fraction.len() < dscale {
            fraction.push_str(&format!("{:04}", digit(i)));
            i += 1;
        }
        fraction.truncate(dscale);
        text.push_str(&fraction);
    }
    Ok(numeric_value(text))
}

/// A decimal as a JSON number when nothing is lost, else as its string:
/// integers that fit 64 bits, and decimals whose `f64` prints back the same
/// digits (trailing zeros aside). `12.50` is sent as `12.5`;
/// `0.1000000000000000055511` and 20-digit integers stay strings.
pub(super) fn numeric_value(text: String) -> Value {
    if !text.contains('.') {
        if let Ok(i) = text.parse::<i64>() {
            return i.into();
        }
        if let Ok(u) = text.parse::<u64>() {
            return u.into();
        }
    }
    let normal = match text.contains('.') {
        true => text.trim_end_matches('0').trim_end_matches('.'),
        false => text.as_str(),
    };
    let normal = if normal == "-0" { "0" } else { normal };
    if let Ok(f) = normal.parse::<f64>()
        && f.is_finite()
        && f.to_string() == normal
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(text)
}

/// A one- or more-dimensional array: flags, element type, then per
/// dimension its length and lower bound, then the elements (length-prefixed,
/// -1 for NULL).
fn array(member: &Type, raw: &[u8]) -> Result<Value, String> {
    let mut at = 0usize;
    let int = |at: &mut usize| -> Result<i32, String> {
        let bytes = raw
            .get(*at..*at + 4)
            .ok_or_else(|| "array cut short".to_owned())?;
        *at += 4;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    };
    let ndim = int(&mut at)?;
    let _has_nulls = int(&mut at)?;
    let _element_oid = int(&mut at)?;
    let mut dims = Vec::with_capacity(usize::try_from(ndim).unwrap_or(0));
    for _ in 0..ndim {
        let len = usize::try_from(int(&mut at)?).map_err(|_| "negative array length".to_owned())?;
        let _lower_bound = int(&mut at)?;
        dims.push(len);
    }
    let total: usize = dims.iter().product::<usize>() * usize::from(ndim > 0);
    let mut elements = Vec::with_capacity(total.min(raw.len()));
    for _ in 0..total {
        let len = int(&mut at)?;
        if len < 0 {
            elements.push(Value::Null);
            continue;
        }
        let len = len as usize;
        let bytes = raw
            .get(at..at + len)
            .ok_or_else(|| "array element cut short".to_owned())?;
        at += len;
        elements.push(decode(member, bytes)?);
    }
    Ok(nest(&dims, &mut elements.into_iter()))
}

fn nest(dims: &[usize], elements: &mut impl Iterator<Item = Value>) -> Value {
    match dims.split_first() {
        None => Value::Array(Vec::new()),
        Some((&len, [])) => Value::Array(elements.take(len).collect()),
        Some((&len, rest)) => Value::Array((0..len).map(|_| nest(rest, elements)).collect()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn numeric_is_a_number_only_when_nothing_is_lost() {
        assert_eq!(numeric_value("42".into()), json!(42));
        assert_eq!(numeric_value("-7".into()), json!(-7));
        assert_eq!(numeric_value("12.50".into()), json!(12.5));
        assert_eq!(numeric_value("0.10".into()), json!(0.1));
        assert_eq!(numeric_value("12.00".into()), json!(12.0));
        assert_eq!(
            numeric_value("12345678901234567890123".into()),
            json!("12345678901234567890123")
        );
        assert_eq!(
            numeric_value("0.1000000000000000055511".into()),
            json!("0.1000000000000000055511")
        );
        assert_eq!(
            numeric_value("1234567.123456789012".into()),
            json!("1234567.123456789012")
        );
    }

    #[test]
    fn numeric_binary_decodes_weights_and_scales() {
        // 12345.678: digits [1, 2345, 6780], weight 1, scale 3.
        let mut raw = Vec::new();
        for v in [3u16, 1, 0, 3, 1, 2345, 6780] {
            raw.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(numeric(&raw).unwrap(), json!(12345.678));
        // -0.0005: digit [5], weight -1, scale 4.
        let mut raw = Vec::new();
        for v in [1u16, 0xFFFF, 0x4000, 4, 5] {
            raw.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(numeric(&raw).unwrap(), json!(-0.0005));
    }

    #[test]
    fn dates_and_timestamps_are_utc_iso() {
        assert_eq!(date(0).unwrap(), json!("2000-01-01"));
        assert_eq!(date(-1).unwrap(), json!("1999-12-31"));
        assert_eq!(
            timestamp(1_500_000).unwrap(),
            json!("2000-01-01T00:00:01.500Z")
        );
        assert!(date(i32::MAX).unwrap_err().contains("infinite"));
    }
}
