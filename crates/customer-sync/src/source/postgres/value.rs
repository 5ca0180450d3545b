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

/// How a column's values are decoded, settled once per read rather than
/// matched on the type for every value.
#[derive(Debug, Clone)]
pub(super) enum Decoder {
    /// Text types and enums: the bytes as a string.
    Text,
    /// `timestamp` and `timestamptz`.
    Timestamp,
    /// Anything else, by its type ([`decode`]).
    Other(Type),
}

impl Decoder {
    /// The decoder of values of type `ty`.
    pub(super) fn new(ty: &Type) -> Decoder {
        match ty.kind() {
            Kind::Enum(_) => Decoder::Text,
            Kind::Domain(inner) => Decoder::new(inner),
            _ if is_text(ty) => Decoder::Text,
            _ if matches!(*ty, Type::TIMESTAMP | Type::TIMESTAMPTZ) => Decoder::Timestamp,
            _ => Decoder::Other(ty.clone()),
        }
    }

    /// Decodes one non-NULL value, as [`decode`] does.
    pub(super) fn decode(&self, raw: &[u8]) -> Result<Value, String> {
        match self {
            Decoder::Text => text(raw),
            Decoder::Timestamp => timestamp(i64::from_be_bytes(fixed(raw)?)),
            Decoder::Other(ty) => decode(ty, raw),
        }
    }
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
    as_str(raw).map(|s| Value::String(s.to_owned()))
}

/// A text value's bytes as a string.
pub(super) fn as_str(raw: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(raw).map_err(|_| "text is not valid UTF-8".to_owned())
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
    if let Some(text) = rfc3339(micros) {
        return Ok(Value::String(text));
    }
    let base = epoch().and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    base.checked_add_signed(Duration::microseconds(micros))
        .map(|t: DateTime<chrono::Utc>| {
            Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        })
        .ok_or_else(|| "the timestamp is out of range".to_owned())
}

/// Days from 1970-01-01 to 2000-01-01.
const DAYS_1970_TO_2000: i64 = 10_957;

/// What chrono's `to_rfc3339_opts(SecondsFormat::AutoSi, true)` writes, for
/// years 0-9999 (`None` for the others): chrono's own cost about 1,000
/// instructions a value, a sixth of a row's decoding.
fn rfc3339(micros: i64) -> Option<String> {
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000) as u32;
    let (year, month, day) = civil(seconds.div_euclid(86_400) + DAYS_1970_TO_2000);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let second = seconds.rem_euclid(86_400) as u32;
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    let mut two = |at: usize, value: u32| {
        out[at] = b'0' + (value / 10) as u8;
        out[at + 1] = b'0' + (value % 10) as u8;
    };
    two(0, year as u32 / 100);
    two(2, year as u32 % 100);
    two(5, month);
    two(8, day);
    two(11, second / 3600);
    two(14, second / 60 % 60);
    two(17, second % 60);
    // AutoSi: no fraction, or milliseconds when they hold it all.
    let end = match fraction {
        0 => 19,
        f if f % 1000 == 0 => {
            two(20, f / 10_000);
            two(22, f / 100 % 100);
            23
        }
        f => {
            two(20, f / 10_000);
            two(22, f / 100 % 100);
            two(24, f % 100);
            26
        }
    };
    out[end] = b'Z';
    std::str::from_utf8(&out[..=end]).ok().map(str::to_owned)
}

/// The proleptic Gregorian (year, month, day) of a day counted from
/// 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
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

    fn chrono_rfc3339(micros: i64) -> String {
        let base = epoch().and_hms_opt(0, 0, 0).unwrap().and_utc();
        (base + Duration::microseconds(micros)).to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }

    #[test]
    fn timestamps_are_written_as_chrono_writes_them() {
        let day = 86_400_000_000i64;
        for micros in [
            0,
            1,
            999_999,
            1_000,
            1_500_000,
            1_000_000,
            -1,
            -day * 730_485, // year 0
            -day * 730_485 - 1,
            day * 2_921_939, // year 9999 ends
            day * 2_921_940,
            day * 2_921_940 - 1,
            705_000_000 * 1_000_000 + 123_456,
        ] {
            assert_eq!(
                timestamp(micros).unwrap(),
                json!(chrono_rfc3339(micros)),
                "{micros}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_timestamp_is_written_as_chrono_writes_it(micros in proptest::prop_oneof![
            // Years 0-9999, then chrono's whole range.
            -63_000_000_000_000_000i64..252_000_000_000_000_000,
            -8_000_000_000_000_000_000i64..8_000_000_000_000_000_000,
        ]) {
            let mine = timestamp(micros).unwrap();
            proptest::prop_assert_eq!(mine, json!(chrono_rfc3339(micros)));
        }

        #[test]
        fn a_decoder_decodes_as_the_type_does(micros in proptest::prelude::any::<i64>(), text in "\\PC{0,12}") {
            let raw = micros.to_be_bytes();
            for ty in [Type::TIMESTAMPTZ, Type::TIMESTAMP, Type::INT8, Type::FLOAT8] {
                proptest::prop_assert_eq!(Decoder::new(&ty).decode(&raw), decode(&ty, &raw));
            }
            for ty in [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME, Type::INT4] {
                proptest::prop_assert_eq!(Decoder::new(&ty).decode(text.as_bytes()), decode(&ty, text.as_bytes()));
            }
        }
    }
}
