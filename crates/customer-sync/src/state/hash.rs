//! Stable hashes: identity keys, and the canonical payload hash that
//! decides whether a record changed since Segment accepted it.

use std::io::Write;

use segment_client::{Identity, RawObject};
use serde_json::{Map, Value};

/// The key a record is stored under: its userId, or its anonymousId.
pub(crate) fn identity_key(identity: &Identity) -> String {
    let (prefix, id) = match identity.user_id() {
        Some(user_id) => ("u:", user_id),
        None => ("a:", identity.anonymous_id().unwrap_or_default()),
    };
    // Built by hand: `format!` goes through the formatting machinery, and
    // this runs several times per record.
    let mut key = String::with_capacity(prefix.len() + id.len());
    key.push_str(prefix);
    key.push_str(id);
    key
}

/// The identity an [`identity_key`] was made from, as far as the key tells:
/// its userId, or its anonymousId.
pub(crate) fn identity_from_key(key: &str) -> Identity {
    match key.split_once(':') {
        Some(("a", id)) => Identity::AnonymousId(id.to_owned()),
        Some((_, id)) => Identity::UserId(id.to_owned()),
        None => Identity::UserId(key.to_owned()),
    }
}

/// A 64-bit hash of `bytes` that never changes between versions or machines.
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// The hash of what Segment would store for this payload: identity and
/// traits, in a canonical encoding (keys sorted at every level,
/// length-prefixed strings, no whitespace), so that key order and formatting
/// never cause a re-send.
pub(crate) fn payload_hash(identity: &Identity, traits: &Map<String, Value>) -> u64 {
    thread_local! {
        static CANONICAL: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    CANONICAL.with_borrow_mut(|out| {
        out.clear();
        write_str(out, identity.user_id().unwrap_or_default());
        write_str(out, identity.anonymous_id().unwrap_or_default());
        write_map(out, traits);
        // 0 stands for "none" in the index.
        stable_hash(out).max(1)
    })
}

fn write_str(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn write_map(out: &mut Vec<u8>, map: &Map<String, Value>) {
    out.push(b'{');
    out.extend_from_slice(&(map.len() as u64).to_le_bytes());
    // serde_json's map iterates in key order unless its `preserve_order`
    // feature is on somewhere in the build; only then is a sort needed.
    if map.keys().is_sorted() {
        for (key, value) in map {
            write_str(out, key);
            write_value(out, value);
        }
    } else {
        let mut entries: Vec<_> = map.iter().collect();
        entries.sort_unstable_by_key(|(key, _)| *key);
        for (key, value) in entries {
            write_str(out, key);
            write_value(out, value);
        }
    }
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(b'z'),
        Value::Bool(true) => out.push(b't'),
        Value::Bool(false) => out.push(b'f'),
        Value::Number(number) => {
            out.push(b'n');
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{number};");
        }
        Value::String(text) => {
            out.push(b's');
            write_str(out, text);
        }
        Value::Array(items) => {
            out.push(b'[');
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                write_value(out, item);
            }
        }
        Value::Object(map) => write_map(out, map),
    }
}

/// The payload's top-level trait names as a JSON array, for the null
/// policy: the reference [`trait_names_raw`] is tested against.
#[cfg(test)]
pub(crate) fn trait_names(traits: &Map<String, Value>) -> String {
    let mut out = Vec::with_capacity(16 * traits.len() + 2);
    out.push(b'[');
    for (i, name) in traits.keys().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, name);
    }
    out.push(b']');
    String::from_utf8(out).unwrap_or_default()
}

/// [`payload_hash`] of traits held as JSON text: the same canonical bytes,
/// written by one pass over the text instead of a walk over a
/// `serde_json::Map` (so equal for the same payload, and existing states
/// stay valid). A [`RawObject`]'s text is what `serde_json` writes, so its
/// numbers are already in the canonical form; an object whose keys are not
/// sorted (never so for a mapping's traits) goes through a map instead.
pub(crate) fn payload_hash_raw(identity: &Identity, traits: &RawObject) -> u64 {
    thread_local! {
        static CANONICAL: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let fast = CANONICAL.with_borrow_mut(|out| {
        out.clear();
        write_str(out, identity.user_id().unwrap_or_default());
        write_str(out, identity.anonymous_id().unwrap_or_default());
        let mut text = Canonical {
            json: traits.json().as_bytes(),
            at: 0,
        };
        text.value(out)?;
        // 0 stands for "none" in the index.
        Some(stable_hash(out).max(1))
    });
    fast.unwrap_or_else(|| payload_hash(identity, &traits.to_map()))
}

/// The payload's top-level trait names as a JSON array, as [`trait_names`]
/// writes them.
pub(crate) fn trait_names_raw(traits: &RawObject) -> String {
    let mut out = String::with_capacity(16 * traits.len() + 2);
    out.push('[');
    for (i, name) in traits.names_json().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Escaped by serde_json, as `trait_names` escapes them.
        out.push_str(name);
    }
    out.push(']');
    out
}

/// Whether `bytes` has a `"`, a `\` or a control character (what JSON
/// escapes), eight bytes at a time.
pub(crate) fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    for chunk in words.by_ref() {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let (quote, backslash) = (word ^ (ONES * 0x22), word ^ (ONES * 0x5c));
        // A byte below 0x20, or a zero byte after the xor: a borrow can
        // only flag bytes above a real one, so any flag means a real one.
        let flagged = (word.wrapping_sub(ONES * 0x20) & !word)
            | (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash);
        if flagged & HIGHS != 0 {
            return true;
        }
    }
    (words.remainder().iter()).any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Appends to `out` the bytes of `bytes` before its first `"` or `\`;
/// returns how many, or `None` if there is neither. Eight bytes at a time,
/// each word copied whole and the excess cut: traits' strings are short,
/// and this costs 11% fewer instructions for the whole hash than a
/// `memchr2` and a copy per string (a byte loop cost 9% more; callgrind,
/// 30k rows).
fn copy_to_quote_or_backslash(bytes: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let (quote, backslash) = (word ^ (ONES * 0x22), word ^ (ONES * 0x5c));
        // A zero byte in either: the lowest flagged byte is exact (a borrow
        // can only flag bytes above a real zero).
        let zero =
            (quote.wrapping_sub(ONES) & !quote) | (backslash.wrapping_sub(ONES) & !backslash);
        let found = zero & HIGHS;
        out.extend_from_slice(&word.to_le_bytes());
        if found != 0 {
            let excess = 8 - (found.trailing_zeros() / 8) as usize;
            out.truncate(out.len() - excess);
            return Some(at + 8 - excess);
        }
        at += 8;
    }
    let tail = bytes[at..].iter().position(|&b| b == b'"' || b == b'\\')?;
    out.extend_from_slice(&bytes[at..at + tail]);
    Some(at + tail)
}

/// A reader of compact JSON text, as `serde_json` writes it, that writes the
/// canonical encoding of `write_value`; `None` where the text is not in that
/// form (unsorted keys), for the caller to fall back on a map.
struct Canonical<'a> {
    json: &'a [u8],
    at: usize,
}

impl Canonical<'_> {
    fn peek(&self) -> Option<u8> {
        self.json.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    fn value(&mut self, out: &mut Vec<u8>) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(out),
            b'[' => self.array(out),
            b'"' => {
                out.push(b's');
                self.string(out)
            }
            b't' => self.literal(b"true", b't', out),
            b'f' => self.literal(b"false", b'f', out),
            b'n' => self.literal(b"null", b'z', out),
            _ => self.number(out),
        }
    }

    fn literal(&mut self, text: &[u8], code: u8, out: &mut Vec<u8>) -> Option<()> {
        self.json.get(self.at..)?.starts_with(text).then_some(())?;
        self.at += text.len();
        out.push(code);
        Some(())
    }

    fn number(&mut self, out: &mut Vec<u8>) -> Option<()> {
        let start = self.at;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.peek() {
            self.at += 1;
        }
        (self.at > start).then_some(())?;
        out.push(b'n');
        out.extend_from_slice(&self.json[start..self.at]);
        out.push(b';');
        Some(())
    }

    /// A string, as `write_str`: its length, then its decoded bytes.
    fn string(&mut self, out: &mut Vec<u8>) -> Option<()> {
        self.eat(b'"')?;
        let length_at = out.len();
        out.extend_from_slice(&[0; 8]);
        let text_at = out.len();
        loop {
            let rest = self.json.get(self.at..)?;
            self.at += copy_to_quote_or_backslash(rest, out)?;
            if self.peek()? == b'"' {
                self.at += 1;
                break;
            }
            self.escape(out)?;
        }
        let length = (out.len() - text_at) as u64;
        out[length_at..text_at].copy_from_slice(&length.to_le_bytes());
        Some(())
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Option<()> {
        self.eat(b'\\')?;
        let code = self.peek()?;
        self.at += 1;
        let byte = match code {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let mut unit = self.hex4()?;
                if (0xd800..0xdc00).contains(&unit) {
                    // A surrogate pair: the low half follows as `\uXXXX`.
                    self.eat(b'\\')?;
                    self.eat(b'u')?;
                    let low = self.hex4()?;
                    (0xdc00..0xe000).contains(&low).then_some(())?;
                    unit = 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
                }
                let c = char::from_u32(unit)?;
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                return Some(());
            }
            _ => return None,
        };
        out.push(byte);
        Some(())
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.json.get(self.at..self.at + 4)?;
        self.at += 4;
        u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    }

    /// An object, as `write_map`: `{`, its size, then each key and value,
    /// keys in order (the size is filled in at the end).
    fn object(&mut self, out: &mut Vec<u8>) -> Option<()> {
        self.eat(b'{')?;
        out.push(b'{');
        let count_at = out.len();
        out.extend_from_slice(&[0; 8]);
        let mut count = 0u64;
        let mut previous: Option<(usize, usize)> = None;
        if self.eat(b'}').is_none() {
            loop {
                let key_at = out.len();
                self.string(out)?;
                // The key's decoded bytes, after its 8-byte length.
                let key = (key_at + 8, out.len());
                if let Some(previous) = previous {
                    // Keys must come sorted, as `write_map` writes them.
                    (out[previous.0..previous.1] < out[key.0..key.1]).then_some(())?;
                }
                previous = Some(key);
                self.eat(b':')?;
                self.value(out)?;
                count += 1;
                if self.eat(b',').is_none() {
                    self.eat(b'}')?;
                    break;
                }
            }
        }
        out[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
        Some(())
    }

    fn array(&mut self, out: &mut Vec<u8>) -> Option<()> {
        self.eat(b'[')?;
        out.push(b'[');
        let count_at = out.len();
        out.extend_from_slice(&[0; 8]);
        let mut count = 0u64;
        if self.eat(b']').is_none() {
            loop {
                self.value(out)?;
                count += 1;
                if self.eat(b',').is_none() {
                    self.eat(b']')?;
                    break;
                }
            }
        }
        out[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::{copy_to_quote_or_backslash, needs_escape};

    proptest::proptest! {
        #[test]
        fn the_escape_word_scan_agrees_with_a_byte_scan(
            bytes in proptest::collection::vec(proptest::prop_oneof![
                // Near the bytes it looks for, and past 0x80, where a word
                // trick could go wrong.
                0x1eu8..0x24, 0x5au8..0x5f, 0x7eu8..=0xff, proptest::num::u8::ANY
            ], 0..40),
        ) {
            let expected = bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
            proptest::prop_assert_eq!(needs_escape(&bytes), expected, "{:?}", bytes);
        }
    }

    #[test]
    fn the_word_scan_finds_what_a_byte_scan_finds() {
        // Every position, after fillers that differ from `"` and `\` by one
        // bit (0xa2, 0xdc...) and after a real zero byte, where a word
        // trick could go wrong.
        for filler in [b'a', 0xa2, 0xdc, 0x23, 0x5d, 0x00, 0xff, b'"' ^ 0x80] {
            for len in 0..40 {
                for target in [Some(b'"'), Some(b'\\'), None] {
                    for at in 0..len.max(1) {
                        let mut bytes = vec![filler; len];
                        if let (Some(byte), true) = (target, at < len) {
                            bytes[at] = byte;
                        }
                        let expected = bytes.iter().position(|&b| b == b'"' || b == b'\\');
                        let mut out = b"x".to_vec();
                        let found = copy_to_quote_or_backslash(&bytes, &mut out);
                        assert_eq!(found, expected, "{bytes:?}");
                        if let Some(n) = found {
                            assert_eq!(out[1..], bytes[..n], "{bytes:?}");
                        }
                    }
                }
            }
        }
    }
}
