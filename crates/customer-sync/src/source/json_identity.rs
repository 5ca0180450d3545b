//! Reading a JSON object's identity values without parsing the object: the
//! first pass of `--duplicates last` reads every line once more, and a full
//! parse of each (as the run does) cost more than the floor's whole parse.
//!
//! The scan is exact on every object the run accepts, and says it is unsure
//! of everything else it cannot read plainly: for an object
//! [`parse_object`](super::json_object::parse_object) accepts, a `Some`
//! answer holds exactly the ids `Mapping::identity_of` reads from it. For
//! text it does not accept, the scan may answer anything: the caller parses
//! a line fully before its answer decides anything (a repeated identity's
//! last row), so such text never counts as a row.

/// Reads the identity values of the top-level keys `names` (`[user id
/// column, anonymous id column]`) from JSON objects' text.
pub(crate) struct IdentityScan<'n> {
    names: [Option<&'n str>; 2],
    /// Each name as a JSON string (`"name"`), to search for.
    quoted: [Option<memchr::memmem::Finder<'static>>; 2],
}

impl<'n> IdentityScan<'n> {
    pub fn new(names: [Option<&'n str>; 2]) -> Self {
        let quoted = names.map(|name| {
            name.map(|name| {
                memchr::memmem::Finder::new(format!("\"{name}\"").as_bytes()).into_owned()
            })
        });
        Self { names, quoted }
    }

    /// The identity values in `object`: each trimmed, and `""` for a key
    /// that is absent, `null`, or blank. `None` when the scan is unsure: an
    /// identity value that is not a plain string or integer, or has an
    /// escape or a control character; a key with an escape; an identity key
    /// twice; text that is not a plain object.
    pub fn ids<'a>(&self, object: &'a [u8]) -> Option<[&'a str; 2]> {
        // Without a backslash, every `"` is a string's end: a key is found
        // by searching for it, which skips walking the rest.
        match memchr::memchr(b'\\', object) {
            None => self.search(object).or_else(|| walk(object, self.names)),
            Some(_) => walk(object, self.names),
        }
    }

    /// The identity keys found by searching `object`, which has no escape:
    /// `None` unless each is a top-level key (outside any string, as the
    /// quotes before it are even in number; outside any nested value, as
    /// there is no `{` or `[` before it) or absent from the text.
    fn search<'a>(&self, object: &'a [u8]) -> Option<[&'a str; 2]> {
        let open = skip_whitespace(object, 0);
        if object.get(open) != Some(&b'{') {
            return None;
        }
        let mut ids = ["", ""];
        for (id, finder) in ids.iter_mut().zip(&self.quoted) {
            let Some(finder) = finder else {
                continue;
            };
            let Some(at) = finder.find(object) else {
                // Absent: without escapes, no key can spell it otherwise.
                continue;
            };
            let before = &object[open + 1..at];
            if memchr::memchr2(b'{', b'[', before).is_some()
                || before.iter().filter(|&&b| b == b'"').count() % 2 == 1
            {
                return None;
            }
            // A string followed by `:` is a key; one followed by anything
            // else is a value, and the key may come later: unsure.
            let colon = skip_whitespace(object, at + finder.needle().len());
            if object.get(colon) != Some(&b':') {
                return None;
            }
            *id = id_value(object, skip_whitespace(object, colon + 1))?.0;
        }
        Some(ids)
    }
}

/// [`IdentityScan::ids`] by walking the object's members from the start.
fn walk<'a>(object: &'a [u8], names: [Option<&str>; 2]) -> Option<[&'a str; 2]> {
    let mut ids: [Option<&'a str>; 2] = [None, None];
    let mut at = skip_whitespace(object, 0);
    if object.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_whitespace(object, at + 1);
    if object.get(at) == Some(&b'}') {
        return Some(["", ""]);
    }
    loop {
        if object.get(at) != Some(&b'"') {
            return None;
        }
        let (key, after_key) = plain_string(object, at + 1)?;
        at = skip_whitespace(object, after_key);
        if object.get(at) != Some(&b':') {
            return None;
        }
        at = skip_whitespace(object, at + 1);
        let wanted = names
            .iter()
            .position(|name| name.is_some_and(|name| name.as_bytes() == key));
        at = match wanted {
            Some(k) => {
                if ids[k].is_some() {
                    // A duplicate key: the parse refuses the object.
                    return None;
                }
                let (id, end) = id_value(object, at)?;
                ids[k] = Some(id);
                end
            }
            None => skip_value(object, at)?,
        };
        at = skip_whitespace(object, at);
        match object.get(at) {
            Some(b',') => at = skip_whitespace(object, at + 1),
            Some(b'}') => break,
            _ => return None,
        }
    }
    // The same column named twice (user and anonymous id) reads one value.
    for k in 0..2 {
        if ids[k].is_none()
            && let Some(other) = names.iter().position(|n| n.is_some() && *n == names[k])
        {
            ids[k] = ids[other];
        }
    }
    Some(ids.map(Option::unwrap_or_default))
}

/// JSON's four whitespace bytes, as serde_json skips them.
fn skip_whitespace(text: &[u8], mut at: usize) -> usize {
    while matches!(text.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// A string without escapes that starts at `at` (past its opening quote):
/// its bytes and the position past its closing quote; `None` if it has an
/// escape or no end.
fn plain_string(text: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = text.get(at..)?;
    let end = memchr::memchr2(b'"', b'\\', rest)?;
    (rest[end] == b'"').then(|| (&rest[..end], at + end + 1))
}

/// An identity value at `at`: as `identity_value` reads it, or `None` when
/// only a full parse can tell.
fn id_value(text: &[u8], at: usize) -> Option<(&str, usize)> {
    match text.get(at)? {
        b'"' => {
            let (bytes, end) = plain_string(text, at + 1)?;
            let id = std::str::from_utf8(bytes).ok()?;
            if id.chars().any(char::is_control) {
                return None;
            }
            Some((id.trim(), end))
        }
        b'n' => text[at..].starts_with(b"null").then_some(("", at + 4)),
        b'-' | b'0'..=b'9' => {
            let end = scalar_end(text, at);
            let number = std::str::from_utf8(&text[at..end]).ok()?;
            // serde_json writes an integer back as the same digits when it
            // has no sign trick (`-0`), no leading zero and fits in 64 bits.
            let digits = number.strip_prefix('-').unwrap_or(number);
            let plain = !digits.is_empty()
                && digits.len() <= 18
                && digits.bytes().all(|b| b.is_ascii_digit())
                && (digits == "0" || !digits.starts_with('0'))
                && number != "-0";
            plain.then_some((number, end))
        }
        _ => None,
    }
}

/// Skips any value at `at` (its text is only checked where that is free);
/// the position past it.
fn skip_value(text: &[u8], at: usize) -> Option<usize> {
    match text.get(at)? {
        b'"' => skip_string(text, at + 1),
        b'{' | b'[' => skip_nested(text, at),
        _ => Some(scalar_end(text, at)),
    }
}

/// Past the closing quote of the string whose content starts at `at`.
fn skip_string(text: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let found = at + memchr::memchr2(b'"', b'\\', text.get(at..)?)?;
        match text[found] {
            b'"' => return Some(found + 1),
            // An escape takes the byte after the backslash with it.
            _ => at = found + 2,
        }
    }
}

/// Past the object or array that opens at `at`, strings inside included.
fn skip_nested(text: &[u8], mut at: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        match text.get(at)? {
            b'"' => {
                at = skip_string(text, at + 1)?;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(at + 1);
                }
            }
            _ => {}
        }
        at += 1;
    }
}

/// Past a number, `true`, `false` or `null`.
fn scalar_end(text: &[u8], at: usize) -> usize {
    let rest = &text[at..];
    at + rest
        .iter()
        .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
        .unwrap_or(rest.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Mapping;
    use crate::source::json_object::{KeyCache, parse_object};
    use crate::{Location, Record};

    /// What the run reads as the identity of `line`, as the first pass
    /// keys it: `None` when the line is not a record with an identity.
    fn parsed_ids(mapping: &Mapping, line: &str) -> Option<[String; 2]> {
        let fields = parse_object(line.as_bytes(), &mut KeyCache::default()).ok()?;
        let record = Record {
            location: Location::new("t.ndjson", 1),
            fields,
        };
        let identity = mapping.identity_of(&record).ok()?;
        Some([
            identity.user_id().unwrap_or_default().to_owned(),
            identity.anonymous_id().unwrap_or_default().to_owned(),
        ])
    }

    /// Checks the scan against the full parse: a sure answer is the parse's.
    fn agrees(mapping: &Mapping, names: [Option<&str>; 2], line: &str) -> Option<[String; 2]> {
        let scanned = IdentityScan::new(names)
            .ids(line.as_bytes())
            .map(|ids| ids.map(str::to_owned));
        // The walk alone is held to the same rule.
        if let Some(walked) = walk(line.as_bytes(), names)
            && let Some(parsed) = parsed_ids(mapping, line)
        {
            assert_eq!(walked.map(str::to_owned), parsed, "{line}");
        }
        if let Some(scanned) = &scanned
            && let Some(parsed) = parsed_ids(mapping, line)
        {
            assert_eq!(scanned, &parsed, "{line}");
        }
        if let (Some(scanned), None) = (&scanned, parsed_ids(mapping, line))
            && serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.is_object())
            && parse_object(line.as_bytes(), &mut KeyCache::default()).is_ok()
        {
            // A record the parse reads without an identity: the scan must
            // not give it one.
            assert_eq!(scanned, &[String::new(), String::new()], "{line}");
        }
        scanned
    }

    #[test]
    fn a_sure_answer_is_always_the_full_parse_s_identity() {
        let user = Mapping::new(None, &["id", "email"]).unwrap();
        let names = [Some("id"), None];
        let sure = |line: &str| agrees(&user, names, line);
        assert_eq!(
            sure(r#"{"email":"a@b.c","id":" u1 "}"#),
            Some(["u1".into(), String::new()])
        );
        assert_eq!(
            sure(r#" { "id" : 42 , "x": [1, {"id": "no"}] } "#).unwrap()[0],
            "42"
        );
        assert_eq!(sure(r#"{"x":"a\"id\":\"no","id":"u2"}"#).unwrap()[0], "u2");
        assert_eq!(sure(r#"{"id":null}"#).unwrap()[0], "");
        assert_eq!(sure(r#"{"email":"x"}"#).unwrap()[0], "");
        assert_eq!(sure(r#"{}"#).unwrap()[0], "");
        assert_eq!(sure(r#"{"id":"-0"}"#).unwrap()[0], "-0");
        assert_eq!(sure(r#"{"id":-7,"n":1.5e3,"t":true}"#).unwrap()[0], "-7");
        assert_eq!(sure(r#"{"id":"é😀"}"#).unwrap()[0], "é😀");
        // A key's text inside a value, or inside a nested object, is not it.
        assert_eq!(
            sure(r#"{"x":"\u0022id\u0022:1","id":"x"}"#).unwrap()[0],
            "x"
        );
        assert_eq!(sure(r#"{"x":{"id":"no"},"id":"u"}"#).unwrap()[0], "u");
        assert_eq!(sure(r#"{"x":"id","y":"\"id\""}"#).unwrap()[0], "");
        assert_eq!(sure(r#"{"x":"id","id":"u"}"#).unwrap()[0], "u");
        assert_eq!(sure(r#"{"x":["id"],"id":"u"}"#).unwrap()[0], "u");
        assert_eq!(sure(r#"{"idx":"no","xid":"no"}"#).unwrap()[0], "");
        // Records only a full parse can tell.
        for unsure in [
            r#"{"id":"a\"b"}"#,
            r#"{"i\u0064":"x"}"#,
            r#"{"id":1.0}"#,
            r#"{"id":1e3}"#,
            r#"{"id":-0}"#,
            r#"{"id":123456789012345678901}"#,
            r#"{"id":true}"#,
            r#"{"id":["a"]}"#,
            "{\"id\":\"a\u{85}b\"}",
            "{\"id\":\"a\u{7f}\"}",
        ] {
            assert!(parse_object(unsure.as_bytes(), &mut KeyCache::default()).is_ok());
            assert_eq!(sure(unsure), None, "{unsure}");
        }
        // Text the run refuses: any answer will do (a line decides only
        // once parsed), but none may contradict a parse.
        for refused in [
            r#"{"id":"a","id":"b"}"#,
            r#"{"id":007}"#,
            r#"["id"]"#,
            r#"{"id""#,
            r#"{"id":"x""#,
            r#"{"id":"x"} trailing"#,
        ] {
            assert!(parse_object(refused.as_bytes(), &mut KeyCache::default()).is_err());
            sure(refused);
        }
        // Both columns, and a group mapping's names are never scanned.
        let both = Mapping::new(
            Some(
                &crate::mapping::MappingSpec::from_toml(
                    "[identity]\nuser_id = \"uid\"\nanonymous_id = \"aid\"\n",
                )
                .unwrap(),
            ),
            &["uid", "aid"],
        )
        .unwrap();
        let names = [Some("uid"), Some("aid")];
        assert_eq!(
            agrees(&both, names, r#"{"aid":"a1","uid":"u1"}"#),
            Some(["u1".into(), "a1".into()])
        );
        assert_eq!(
            agrees(&both, names, r#"{"aid":"a1"}"#),
            Some([String::new(), "a1".into()])
        );
    }

    #[test]
    fn the_scan_agrees_with_the_parse_on_generated_lines() {
        // Every way of writing a few values, in every order: whatever the
        // scan is sure of, the parse reads the same.
        let user = Mapping::new(None, &["id", "email"]).unwrap();
        let values = [
            r#""u1""#,
            r#"" u 2 ""#,
            r#""""#,
            r#""  ""#,
            "null",
            "12",
            "-3",
            "0",
            "1.5",
            "true",
            r#"{"id":"in"}"#,
            r#"["x",{"a":"]"}]"#,
            r#""q\"uote""#,
            r#""back\\""#,
            r#""\u0041""#,
            r#""id""#,
            r#"{"x":"id"}"#,
        ];
        let mut checked = 0;
        for id in values {
            for other in values {
                for line in [
                    format!(r#"{{"id":{id},"email":{other}}}"#),
                    format!(r#"{{"email":{other},"id":{id}}}"#),
                    format!(r#"{{ "email" : {other} , "id" : {id} }}"#),
                    format!(r#"{{"email":{other}}}"#),
                    format!(r#"{{"id":{id},"email":{other},"id":{id}}}"#),
                    format!(r#"{{"id":{id},"email":{other}}} x"#),
                ] {
                    agrees(&user, [Some("id"), None], &line);
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, values.len() * values.len() * 6);
    }
}

#[cfg(test)]
mod random_tests {
    use super::*;
    use crate::mapping::{Mapping, MappingSpec};
    use crate::source::json_object::{KeyCache, parse_object};
    use crate::{Location, Record};

    /// Random objects from a grammar of hard tokens: whenever the parse
    /// accepts an object and the scan is sure, the scan's ids are the
    /// identity `identity_of` reads (or both empty when it reads none).
    #[test]
    fn random_objects_from_hard_tokens_agree_with_the_parse() {
        let keys = [
            "\"id\"",
            "\"aid\"",
            "\"i\"",
            "\"idx\"",
            "\"i\\u0064\"",
            "\"id \"",
            "\" id\"",
            "\"Id\"",
            "\"e\"",
            "\"a\\\"b\"",
            "\"\u{e9}\"",
        ];
        let values = [
            "\"u1\"",
            "\" u1 \"",
            "\"\"",
            "\" \"",
            "null",
            "1",
            "-1",
            "0",
            "-0",
            "01",
            "1.0",
            "1e2",
            "123456789012345678",
            "1234567890123456789",
            "-123456789012345678",
            "true",
            "false",
            "[]",
            "{}",
            "[\"}\",{\"id\":\"x\"}]",
            "{\"id\":[1,\"]\"]}",
            "\"a\\\\\"",
            "\"a\\\"\"",
            "\"\\u0041\"",
            "\"\u{85}u\"",
            "\"u\u{a0}\"",
            "\"\u{2028}\"",
            "\"\u{feff}u1\"",
            "\"a\tb\"",
            "\"\u{1f600}\"",
            "nul",
            "tru",
            "\"x",
            "[",
            "{",
            "]",
            "}",
            "1 2",
            "\"u1\" \"u2\"",
            "\"\u{200b}\"",
            "\"\u{3000}u1\u{3000}\"",
            "\"u1\\/\"",
            "-",
            "1.",
            "+1",
            "0x1",
        ];
        let ws = ["", " ", "\t", "\n", "\r\n", "\u{c}", "\u{a0}"];
        let both = Mapping::new(
            Some(
                &MappingSpec::from_toml("[identity]\nuser_id = \"id\"\nanonymous_id = \"aid\"\n")
                    .unwrap(),
            ),
            &["id", "aid", "e"],
        )
        .unwrap();
        let only_anon = Mapping::new(
            Some(&MappingSpec::from_toml("[identity]\nanonymous_id = \"id\"\n").unwrap()),
            &["id", "e"],
        )
        .unwrap();
        let same = Mapping::new(
            Some(
                &MappingSpec::from_toml("[identity]\nuser_id = \"id\"\nanonymous_id = \"id\"\n")
                    .unwrap(),
            ),
            &["id", "e"],
        )
        .unwrap();
        let mut seed: u64 = 0x9e3779b97f4a7c15;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut sure_and_parsed = 0;
        for _ in 0..300_000 {
            let mut text = String::new();
            text.push_str(ws[next(ws.len())]);
            text.push('{');
            let n = next(5);
            for k in 0..n {
                if k > 0 {
                    text.push_str(if next(40) == 0 { "" } else { "," });
                }
                text.push_str(ws[next(ws.len())]);
                text.push_str(keys[next(keys.len())]);
                text.push_str(ws[next(ws.len())]);
                text.push(':');
                text.push_str(ws[next(ws.len())]);
                text.push_str(values[next(values.len())]);
                text.push_str(ws[next(ws.len())]);
            }
            if next(30) == 0 {
                text.push(',');
            }
            text.push('}');
            text.push_str(ws[next(ws.len())]);
            if next(30) == 0 {
                text.push('x');
            }
            for (mapping, names) in [
                (&both, [Some("id"), Some("aid")]),
                (&only_anon, [None, Some("id")]),
                (&same, [Some("id"), Some("id")]),
            ] {
                assert_eq!(mapping.customer_id_names(), Some(names));
                // The search (with the walk behind it) and the walk alone.
                let searched = IdentityScan::new(names).ids(text.as_bytes());
                let walked = walk(text.as_bytes(), names);
                let Some(scanned) = searched else {
                    continue;
                };
                let Ok(fields) = parse_object(text.as_bytes(), &mut KeyCache::default()) else {
                    continue;
                };
                let record = Record {
                    location: Location::new("t.ndjson", 1),
                    fields,
                };
                sure_and_parsed += 1;
                let expected = match mapping.identity_of(&record) {
                    Ok(identity) => [
                        identity.user_id().unwrap_or_default().to_owned(),
                        identity.anonymous_id().unwrap_or_default().to_owned(),
                    ],
                    Err(_) => [String::new(), String::new()],
                };
                for answer in [Some(scanned), walked].into_iter().flatten() {
                    assert_eq!(answer.map(str::to_owned), expected, "{text:?} {names:?}");
                }
            }
        }
        assert!(sure_and_parsed > 10_000, "{sure_and_parsed}");
    }
}
