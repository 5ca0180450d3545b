//! Parsing one JSON object into [`Field`]s, keeping the keys' source order.
//!
//! `serde_json::Map` (without the `preserve_order` feature) sorts keys, so the
//! object is deserialized with a visitor straight into a `Vec<Field>`. Keys
//! that repeat the previous record's key at the same position reuse its
//! `Arc<str>`, so a file whose lines share a shape allocates no key names.
//! A record given back ([`Source::recycle`](super::Source::recycle)) has its
//! string values refilled in place, so such a file allocates no values either.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserialize, DeserializeSeed, MapAccess, Visitor};
use serde_json::Value;

use crate::{Field, FieldValue, Location, Record, RecordError, RecordErrorKind};

/// The previous object's key names, for reuse.
#[derive(Debug, Default)]
pub(super) struct KeyCache {
    previous: Vec<Arc<str>>,
    /// When set, only these keys' values are kept; every other value is
    /// parsed and checked exactly as a `Value` would be, without building
    /// it, and comes out as `null` (a first pass that reads identities).
    pub(super) only: Option<Vec<Box<str>>>,
    /// A record's fields given back, refilled by the next object.
    pub(super) spare: Option<Vec<Field>>,
}

/// One JSON object of the input (an NDJSON line, an array element), not
/// yet parsed: a first pass may read what it needs from the bytes alone.
pub(crate) struct UnparsedObject<'a> {
    /// The line it starts on.
    pub line: u64,
    /// Its bytes.
    pub bytes: &'a [u8],
    /// For an array element, the column of its first byte: parse errors
    /// are placed in the file. `None` for an NDJSON line.
    pub(super) column: Option<u64>,
    pub(super) name: &'a Arc<str>,
    pub(super) keys: &'a mut KeyCache,
}

impl UnparsedObject<'_> {
    /// The object parsed as the run parses it: a record, or why it is not one.
    pub fn parse(&mut self) -> Result<Record, RecordError> {
        let location = Location {
            source: Arc::clone(self.name),
            line: self.line,
            column: self.column.and_then(std::num::NonZeroU64::new),
            key: None,
        };
        let err = match parse_object(self.bytes, self.keys) {
            Ok(fields) => return Ok(Record { location, fields }),
            Err(err) => err,
        };
        let message = match self.column {
            None => describe_error(&err, |_, column| format!("column {column}")),
            // serde_json counts from the element's first byte.
            Some(column) => describe_error(&err, |err_line, err_column| {
                let column = if err_line <= 1 {
                    column + err_column.saturating_sub(1)
                } else {
                    err_column
                };
                format!(
                    "line {} column {column}",
                    self.line + err_line.saturating_sub(1)
                )
            }),
        };
        Err(RecordError::new(
            location,
            RecordErrorKind::Malformed,
            message,
        ))
    }
}

/// Parses `bytes` as exactly one JSON object (surrounding whitespace allowed).
///
/// A duplicate key is an error: which value is meant would be a guess.
pub(super) fn parse_object(
    bytes: &[u8],
    cache: &mut KeyCache,
) -> Result<Vec<Field>, serde_json::Error> {
    // One UTF-8 check of the whole object is cheaper than serde_json's check
    // of each string in it; bytes that fail it are parsed as bytes, so the
    // error names the position of the bad string as before.
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_with(serde_json::Deserializer::from_str(text), cache),
        Err(_) => parse_with(serde_json::Deserializer::from_slice(bytes), cache),
    }
}

fn parse_with<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
    cache: &mut KeyCache,
) -> Result<Vec<Field>, serde_json::Error> {
    let fields = ObjectSeed { cache }.deserialize(&mut de)?;
    de.end()?;
    Ok(fields)
}

/// Describes a parse error at a position given by `at(line, column)`, where
/// line and column are serde_json's (relative to the parsed bytes).
pub(super) fn describe_error(
    err: &serde_json::Error,
    at: impl FnOnce(u64, u64) -> String,
) -> String {
    let full = err.to_string();
    // serde_json appends " at line L column C"; the caller knows the real
    // position in the file, so replace it.
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let bare = full.strip_suffix(&suffix).unwrap_or(&full);
    let position = at(err.line() as u64, err.column() as u64);
    if err.is_syntax() || err.is_eof() {
        format!("invalid JSON at {position}: {bare}")
    } else {
        format!("{bare} at {position}")
    }
}

struct ObjectSeed<'c> {
    cache: &'c mut KeyCache,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = Vec<Field>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Vec<Field>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_> {
    type Value = Vec<Field>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Field>, A::Error> {
        // The first `count` fields are this object's; any past them are a
        // given-back record's, whose values are refilled rather than rebuilt.
        let mut fields = match self.cache.spare.take() {
            Some(spare) => spare,
            None => Vec::with_capacity(self.cache.previous.len()),
        };
        let mut count = 0;
        // While every key so far is the previous object's key at the same
        // position, the keys are distinct (that object's were), so the
        // duplicate check is skipped: a file of same-shaped lines never pays it.
        let mut same_shape = true;
        loop {
            let previous = self.cache.previous.get(count);
            let seed = KeySeed { previous };
            let Some(name) = map.next_key_seed(seed)? else {
                break;
            };
            same_shape = same_shape && previous.is_some_and(|p| Arc::ptr_eq(p, &name));
            if !same_shape && is_duplicate(&fields[..count], &name) {
                return Err(de::Error::custom(format_args!("duplicate key `{name}`")));
            }
            let kept = match &self.cache.only {
                Some(only) => only.iter().any(|kept| **kept == *name),
                None => true,
            };
            if count == fields.len() {
                fields.push(Field {
                    name,
                    value: FieldValue::Json(Value::Null),
                });
            } else {
                fields[count].name = name;
            }
            let slot = &mut fields[count].value;
            match kept {
                true => map.next_value_seed(Refill(slot))?,
                false => {
                    map.next_value::<Checked>()?;
                    *slot = FieldValue::Json(Value::Null);
                }
            }
            count += 1;
        }
        fields.truncate(count);
        // Rebuilding the cache costs two atomic operations a key; a record
        // of the same shape leaves it as it is.
        if !(same_shape && fields.len() == self.cache.previous.len()) {
            self.cache.previous.clear();
            self.cache
                .previous
                .extend(fields.iter().map(|f| Arc::clone(&f.name)));
        }
        Ok(fields)
    }
}

/// Parses a JSON value into a field's slot exactly as `serde_json::Value`
/// parses it, but a string goes into the string already there, keeping its
/// allocation: a recycled record's values cost no allocation when the next
/// object has strings where it had.
struct Refill<'s>(&'s mut FieldValue);

impl<'de> DeserializeSeed<'de> for Refill<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Refill<'_> {
    fn set(self, value: Value) {
        *self.0 = FieldValue::Json(value);
    }
}

/// Every method but the strings' builds what `Value`'s own visitor builds.
impl<'de> Visitor<'de> for Refill<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_str<E>(self, text: &str) -> Result<(), E> {
        match self.0 {
            FieldValue::Json(Value::String(kept)) => {
                kept.clear();
                kept.push_str(text);
            }
            slot => *slot = FieldValue::Json(Value::String(text.to_owned())),
        }
        Ok(())
    }

    fn visit_string<E>(self, text: String) -> Result<(), E> {
        self.set(Value::String(text));
        Ok(())
    }

    fn visit_bool<E>(self, value: bool) -> Result<(), E> {
        self.set(Value::Bool(value));
        Ok(())
    }

    fn visit_i64<E>(self, value: i64) -> Result<(), E> {
        self.set(Value::Number(value.into()));
        Ok(())
    }

    fn visit_u64<E>(self, value: u64) -> Result<(), E> {
        self.set(Value::Number(value.into()));
        Ok(())
    }

    fn visit_i128<E: de::Error>(self, value: i128) -> Result<(), E> {
        let number = serde_json::Number::deserialize(de::value::I128Deserializer::new(value))?;
        self.set(Value::Number(number));
        Ok(())
    }

    fn visit_u128<E: de::Error>(self, value: u128) -> Result<(), E> {
        let number = serde_json::Number::deserialize(de::value::U128Deserializer::new(value))?;
        self.set(Value::Number(number));
        Ok(())
    }

    fn visit_f64<E>(self, value: f64) -> Result<(), E> {
        self.set(serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number));
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.set(Value::Null);
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        self.set(Value::Null);
        Ok(())
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.set(Value::deserialize(deserializer)?);
        Ok(())
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.set(Value::deserialize(de::value::SeqAccessDeserializer::new(
            seq,
        ))?);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.set(Value::deserialize(de::value::MapAccessDeserializer::new(
            map,
        ))?);
        Ok(())
    }
}

/// A JSON value parsed and checked as `serde_json::Value` parses it (the
/// same numbers, strings, nesting and errors), and not kept.
struct Checked;

impl<'de> de::Deserialize<'de> for Checked {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Checked, D::Error> {
        deserializer.deserialize_any(Checked)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_none<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Checked, D::Error> {
        Checked::deserialize(deserializer)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        // As `Value`: keys are strings, and a repeated nested key is no error.
        while map.next_key::<Checked>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

fn is_duplicate(fields: &[Field], name: &str) -> bool {
    // Records have tens of keys; a linear scan beats hashing there. Past a few
    // hundred keys it would go quadratic, so hash instead (1 MiB caps the size).
    const LINEAR_LIMIT: usize = 64;
    if fields.len() <= LINEAR_LIMIT {
        return fields.iter().any(|f| &*f.name == name);
    }
    let seen: std::collections::HashSet<&str> = fields.iter().map(|f| &*f.name).collect();
    seen.contains(name)
}

struct KeySeed<'p> {
    previous: Option<&'p Arc<str>>,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Arc<str>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Arc<str>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Arc<str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Arc<str>, E> {
        match self.previous {
            Some(previous) if crate::record::same_name(previous, key) => Ok(Arc::clone(previous)),
            _ => Ok(Arc::from(key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(fields: &[Field]) -> Vec<&str> {
        fields.iter().map(|f| &*f.name).collect()
    }

    #[test]
    fn keeps_source_order() {
        let mut cache = KeyCache::default();
        let fields = parse_object(br#"{"z": 1, "a": "x", "m": null}"#, &mut cache).unwrap();
        assert_eq!(names(&fields), ["z", "a", "m"]);
        assert_eq!(fields[1].value, FieldValue::Json(Value::from("x")));
    }

    #[test]
    fn reuses_key_names_of_the_previous_object() {
        let mut cache = KeyCache::default();
        let first = parse_object(br#"{"id": 1, "email": "a"}"#, &mut cache).unwrap();
        let second = parse_object(br#"{"id": 2, "name": "b"}"#, &mut cache).unwrap();
        assert!(Arc::ptr_eq(&first[0].name, &second[0].name));
        assert!(!Arc::ptr_eq(&first[1].name, &second[1].name));
        assert_eq!(names(&second), ["id", "name"]);
    }

    #[test]
    fn rejects_non_objects_duplicates_and_trailing_data() {
        let mut cache = KeyCache::default();
        for bad in [&b"[1]"[..], b"1", b"{\"a\":1,\"a\":2}", b"{} {}", b"{", b""] {
            assert!(
                parse_object(bad, &mut cache).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn finds_duplicates_after_a_same_shaped_prefix() {
        let mut cache = KeyCache::default();
        parse_object(br#"{"id": 1, "email": "a", "name": "x"}"#, &mut cache).unwrap();
        for bad in [
            &br#"{"id": 2, "email": "b", "id": 3}"#[..],
            br#"{"id": 2, "email": "b", "email": "c"}"#,
            br#"{"id": 2, "id": 3}"#,
            br#"{"x": 2, "x": 3}"#,
        ] {
            let err = parse_object(bad, &mut cache).unwrap_err();
            assert!(
                err.to_string().contains("duplicate key"),
                "{}: {err}",
                String::from_utf8_lossy(bad)
            );
            // The failed object leaves the cache as the last good one left it.
            parse_object(br#"{"id": 1, "email": "a", "name": "x"}"#, &mut cache).unwrap();
        }
        let longer = parse_object(
            br#"{"id": 1, "email": "a", "name": "x", "id2": 4}"#,
            &mut cache,
        );
        assert_eq!(names(&longer.unwrap()), ["id", "email", "name", "id2"]);
    }

    #[test]
    fn handles_escaped_keys_and_many_keys() {
        let mut cache = KeyCache::default();
        let fields = parse_object(br#"{"a\"b": 1, "\u00e9": 2}"#, &mut cache).unwrap();
        assert_eq!(names(&fields), ["a\"b", "é"]);

        let many: Vec<String> = (0..200).map(|i| format!("\"k{i}\": {i}")).collect();
        let text = format!("{{{}, \"k150\": 0}}", many.join(","));
        let err = parse_object(text.as_bytes(), &mut cache).unwrap_err();
        assert!(err.to_string().contains("duplicate key `k150`"));
    }

    #[test]
    fn keeping_only_some_keys_checks_the_others_as_a_value_would() {
        let mut all = KeyCache::default();
        let mut only = KeyCache {
            only: Some(vec!["id".into()]),
            ..KeyCache::default()
        };
        let good = br#"{"id": " u1 ", "n": [1, -2.5e10, {"a": {"a": 1, "a": 2}}], "s": "\u00e9\n", "t": true, "z": null}"#;
        let kept = parse_object(good, &mut only).unwrap();
        let full = parse_object(good, &mut all).unwrap();
        assert_eq!(names(&kept), names(&full));
        assert_eq!(kept[0], full[0]);
        assert!(
            kept[1..]
                .iter()
                .all(|f| f.value == FieldValue::Json(Value::Null))
        );
        // Whatever a full parse refuses, the partial one refuses too.
        for bad in [
            &br#"{"id": 1, "n": 1e400}"#[..],
            br#"{"id": 1, "s": "\ud800"}"#,
            br#"{"id": 1, "s": "\x"}"#,
            br#"{"id": 1, "n": [1,]}"#,
            br#"{"id": 1, "n": 01}"#,
            br#"{"id": 1, "id": 2}"#,
            br#"{"id": 1, "n": {1: 2}}"#,
            b"{\"id\": 1, \"s\": \"a\x01b\"}",
        ] {
            let text = String::from_utf8_lossy(bad);
            assert!(parse_object(bad, &mut all).is_err(), "{text}");
            assert!(parse_object(bad, &mut only).is_err(), "{text}");
        }
        let deep = format!(
            "{{\"id\": 1, \"n\": {}1{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(parse_object(deep.as_bytes(), &mut all).is_err());
        assert!(parse_object(deep.as_bytes(), &mut only).is_err());
    }

    #[test]
    fn describes_errors_at_the_callers_position() {
        let mut cache = KeyCache::default();
        let err = parse_object(b"{\"a\" 1}", &mut cache).unwrap_err();
        let text = describe_error(&err, |_, col| format!("column {col}"));
        assert_eq!(text, "invalid JSON at column 6: expected `:`");

        let err = parse_object(b"[]", &mut cache).unwrap_err();
        let text = describe_error(&err, |_, col| format!("column {col}"));
        assert!(
            text.starts_with("invalid type: sequence, expected a JSON object at column"),
            "{text}"
        );
    }

    #[test]
    fn a_given_back_record_s_strings_are_refilled_in_place() {
        let mut cache = KeyCache::default();
        let first =
            parse_object(br#"{"id": "c1", "email": "ada@example.com"}"#, &mut cache).unwrap();
        let FieldValue::Json(Value::String(email)) = &first[1].value else {
            panic!("email is a string: {first:?}");
        };
        let kept = email.as_ptr();
        cache.spare = Some(first);
        let second =
            parse_object(br#"{"id": "c2", "email": "bo@example.com"}"#, &mut cache).unwrap();
        assert_eq!(
            second[1].value,
            FieldValue::Json(Value::from("bo@example.com"))
        );
        let FieldValue::Json(Value::String(email)) = &second[1].value else {
            panic!("email is a string: {second:?}");
        };
        assert_eq!(email.as_ptr(), kept, "the given-back string was not reused");
    }

    /// One member of a generated object: a key from a small set (so shapes
    /// repeat, and sometimes a key repeats within an object) and a value of
    /// any JSON kind, sometimes escaped, sometimes not a value at all.
    fn member(kind: u8, n: usize) -> String {
        let key = ["id", "email", "name", "age", "tags"][usize::from(kind % 5)];
        let value = match (kind / 5) % 13 {
            0 => format!("\"v{n}\""),
            1 => format!("\"esc\\n{n}\\u00e9\""),
            2 => String::from("\"\""),
            3 => format!("{n}"),
            4 => format!("-{n}.5e3"),
            5 => String::from("18446744073709551615"),
            6 => String::from("true"),
            7 => String::from("null"),
            8 => format!("[\"a{n}\", 1, {{\"x\": null}}]"),
            9 => format!("{{\"b\": \"{n}\", \"a\": [true]}}"),
            10 => String::from("1e400"),
            11 => String::from("\"bad \\x escape\""),
            _ => format!("\"long {}\"", "z".repeat(n % 300)),
        };
        format!("\"{key}\": {value}")
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        /// Objects parsed with the previous record given back come out as a
        /// fresh parse gives them (the same fields, or the same error),
        /// whatever the previous record held.
        #[test]
        fn refilled_records_equal_fresh_parses(
            objects in proptest::collection::vec(
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..7),
                1..40,
            ),
        ) {
            // Once reading every key, once as a first pass keeping two.
            for only in [None, Some(vec![Box::from("id"), Box::from("tags")])] {
            let mut recycled = KeyCache { only: only.clone(), ..KeyCache::default() };
            let mut fresh = KeyCache { only, ..KeyCache::default() };
            for (n, kinds) in objects.iter().enumerate() {
                let members: Vec<String> =
                    kinds.iter().enumerate().map(|(i, k)| member(*k, n + i)).collect();
                let text = format!("{{{}}}", members.join(", "));
                let got = parse_object(text.as_bytes(), &mut recycled);
                let want = parse_object(text.as_bytes(), &mut fresh);
                match (got, want) {
                    (Ok(got), Ok(want)) => {
                        proptest::prop_assert_eq!(&got, &want, "{}", text);
                        recycled.spare = Some(got);
                    }
                    (Err(got), Err(want)) => {
                        proptest::prop_assert_eq!(got.to_string(), want.to_string(), "{}", text);
                    }
                    (got, want) => proptest::prop_assert!(false, "{text}: {got:?} vs {want:?}"),
                }
            }
            }
        }
    }
}
