//! JSON objects written as text directly, for producers that build many
//! events: no `serde_json::Value` tree per event and no allocation per
//! field, one buffer per object.
//!
//! An [`ObjectWriter`] only writes whole fields (a key and a serialised
//! value, or a nested object it closes itself), so the [`RawObject`] it
//! finishes is always one valid JSON object. That is what lets
//! [`PreparedEvent::identify_raw`](crate::PreparedEvent::identify_raw) put
//! its bytes into an event without parsing them again.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Map, Value};

/// One JSON object as compact text, with the byte ranges of its top-level
/// fields. Valid JSON by construction: it is made by an [`ObjectWriter`],
/// from a `serde_json` map ([`from_map`](Self::from_map)), or from another
/// `RawObject` ([`subset`](Self::subset)).
///
/// # Example
/// ```
/// use segment_client::ObjectWriter;
///
/// let mut writer = ObjectWriter::new();
/// writer.string("email", "ada@example.com");
/// writer.open("address");
/// writer.string("city", "London");
/// writer.close();
/// let traits = writer.finish();
/// assert_eq!(traits.json(), r#"{"email":"ada@example.com","address":{"city":"London"}}"#);
/// let fields: Vec<(String, &str)> =
///     traits.fields().map(|(name, value)| (name.into_owned(), value)).collect();
/// assert_eq!(fields[1], ("address".to_owned(), r#"{"city":"London"}"#));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawObject {
    json: String,
    /// Per top-level field: where its key starts (at its opening quote),
    /// where the key ends (after its closing quote; the value starts one
    /// byte later, after the `:`), and where the value ends.
    fields: Vec<[u32; 3]>,
}

impl Default for RawObject {
    fn default() -> Self {
        Self {
            json: "{}".to_owned(),
            fields: Vec::new(),
        }
    }
}

impl RawObject {
    /// The object as compact JSON text.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// How many top-level fields it has.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether it has no fields (`{}`).
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The top-level fields in order, as (name, the value's JSON text). A
    /// name is borrowed unless its JSON form has an escape.
    pub fn fields(&self) -> impl ExactSizeIterator<Item = (Cow<'_, str>, &str)> + '_ {
        (0..self.fields.len()).map(|i| (self.name(i), self.value_json(i)))
    }

    /// The top-level field names as their JSON strings, quotes and escapes
    /// included (`"firstName"`), in order: for callers that write names
    /// into JSON again without decoding them.
    pub fn names_json(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.fields
            .iter()
            .map(|&[key, key_end, _]| &self.json[key as usize..key_end as usize])
    }

    /// The JSON text of the value of the top-level field `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        (0..self.fields.len())
            .find(|&i| self.name(i) == name)
            .map(|i| self.value_json(i))
    }

    /// Whether it has a top-level field `name`.
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// A new object of the top-level fields whose name `keep` accepts, in
    /// order, their values copied as they are.
    pub fn subset(&self, mut keep: impl FnMut(&str) -> bool) -> RawObject {
        let mut out = ObjectWriter::new();
        for i in 0..self.fields.len() {
            if keep(&self.name(i)) {
                let [key, key_end, end] = self.fields[i];
                out.raw_field(
                    &self.json[key as usize..key_end as usize],
                    &self.json[key_end as usize + 1..end as usize],
                );
            }
        }
        out.finish()
    }

    /// Adds a top-level `name: null` before the first field whose name
    /// sorts after `name` (so an object with sorted keys stays sorted, as a
    /// `serde_json::Map` would hold it); `false`, and no change, if `name`
    /// is there already.
    pub fn insert_null(&mut self, name: &str) -> bool {
        if self.contains_key(name) {
            return false;
        }
        let at = (0..self.fields.len())
            .find(|&i| *self.name(i) > *name)
            .unwrap_or(self.fields.len());
        let mut field = Vec::with_capacity(name.len() + 8);
        write_json(&mut field, name);
        let key_len = field.len();
        field.extend_from_slice(b":null");
        let field = String::from_utf8(field).unwrap_or_default();
        let mut json = String::with_capacity(self.json.len() + field.len() + 1);
        let mut fields = Vec::with_capacity(self.fields.len() + 1);
        let mut push = |json: &mut String, text: &str, key_len: usize| {
            if json.len() > 1 {
                json.push(',');
            }
            let start = json.len();
            json.push_str(text);
            fields.push([start, start + key_len, json.len()].map(offset));
        };
        json.push('{');
        for i in 0..=self.fields.len() {
            if i == at {
                push(&mut json, &field, key_len);
            }
            if let Some(&[key, key_end, end]) = self.fields.get(i) {
                let text = &self.json[key as usize..end as usize];
                push(&mut json, text, (key_end - key) as usize);
            }
        }
        json.push('}');
        *self = RawObject { json, fields };
        true
    }

    /// The object of a `serde_json` map, serialised as `serde_json` does.
    pub fn from_map(map: &Map<String, Value>) -> RawObject {
        let mut out = ObjectWriter::new();
        for (key, value) in map {
            out.value(key, value);
        }
        out.finish()
    }

    /// The object as a `serde_json` map.
    pub fn to_map(&self) -> Map<String, Value> {
        // Valid JSON by construction, so this cannot fail.
        serde_json::from_str(&self.json).unwrap_or_default()
    }

    fn name(&self, i: usize) -> Cow<'_, str> {
        let [key, key_end, _] = self.fields[i];
        let quoted = &self.json[key as usize..key_end as usize];
        let inner = &quoted[1..quoted.len() - 1];
        if inner.contains('\\') {
            // A JSON string this writer wrote: it decodes.
            Cow::Owned(serde_json::from_str(quoted).unwrap_or_default())
        } else {
            Cow::Borrowed(inner)
        }
    }

    fn value_json(&self, i: usize) -> &str {
        let [_, key_end, end] = self.fields[i];
        &self.json[key_end as usize + 1..end as usize]
    }
}

/// Writes a [`RawObject`] field by field, nested objects included.
///
/// Every method writes a whole field, so the result is valid JSON whatever
/// the order of calls; keys are written in the order given (a caller that
/// wants `serde_json::Map`'s sorted order writes them sorted).
///
/// # Example
/// ```
/// use segment_client::ObjectWriter;
///
/// let mut writer = ObjectWriter::new();
/// writer.open("company"); // left out: nothing is written in it
/// writer.close();
/// writer.value("ltv", &137.5);
/// writer.null("phone");
/// assert_eq!(writer.finish().json(), r#"{"ltv":137.5,"phone":null}"#);
/// ```
#[derive(Debug, Clone)]
pub struct ObjectWriter {
    json: Vec<u8>,
    fields: Vec<[u32; 3]>,
    /// Fields written so far in the top-level object.
    count: u32,
    /// Nested objects still open, innermost last.
    open: Vec<Open>,
    /// An object given back with [`recycle`](Self::recycle): its buffers
    /// hold the object after the one being written.
    spare: Option<RawObject>,
}

#[derive(Debug, Clone, Copy)]
struct Open {
    /// Where the field starts (before its comma), to take it back if empty.
    start: usize,
    key: usize,
    key_end: usize,
    count: u32,
}

impl Default for ObjectWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ObjectWriter {
    /// An empty object.
    pub fn new() -> Self {
        Self::with_capacity(256)
    }

    /// An empty object with room for `bytes` bytes of JSON.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut json = Vec::with_capacity(bytes.max(2));
        json.push(b'{');
        Self {
            json,
            // Sized for a typical record's traits: growing 0-4-8-16 cost
            // three allocations per object.
            fields: Vec::with_capacity(16),
            count: 0,
            open: Vec::new(),
            spare: None,
        }
    }

    /// Drops what was written and starts an empty object, in the same buffers.
    ///
    /// # Example
    /// ```
    /// use segment_client::ObjectWriter;
    ///
    /// let mut writer = ObjectWriter::new();
    /// writer.open("address");
    /// writer.string("city", "London");
    /// writer.clear(); // the record turned out to be invalid
    /// writer.string("plan", "pro");
    /// assert_eq!(writer.finish().json(), r#"{"plan":"pro"}"#);
    /// ```
    pub fn clear(&mut self) {
        self.json.clear();
        self.json.push(b'{');
        self.fields.clear();
        self.count = 0;
        self.open.clear();
    }

    /// Writes `"key":"value"`.
    pub fn string<K: ObjectKey + ?Sized>(&mut self, key: &K, value: &str) {
        let field = self.key(key);
        write_json(&mut self.json, value);
        self.end(field);
    }

    /// Writes `"key":null`.
    pub fn null<K: ObjectKey + ?Sized>(&mut self, key: &K) {
        let field = self.key(key);
        self.json.extend_from_slice(b"null");
        self.end(field);
    }

    /// Writes `"key":` and `value` as `serde_json` serialises it (a
    /// `serde_json::Value`, a number, a string...). A value that fails to
    /// serialise (a map with non-string keys) is left out, with its key.
    pub fn value<K: ObjectKey + ?Sized, T: Serialize + ?Sized>(&mut self, key: &K, value: &T) {
        let field = self.key(key);
        if serde_json::to_writer(&mut self.json, value).is_ok() {
            self.end(field);
        } else {
            self.take_back(field.start);
        }
    }

    /// Opens a nested object under `key`; the fields written until the
    /// matching [`close`](Self::close) go into it.
    pub fn open<K: ObjectKey + ?Sized>(&mut self, key: &K) {
        let field = self.key(key);
        self.json.push(b'{');
        self.open.push(Open {
            start: field.start,
            key: field.key,
            key_end: field.key_end,
            count: 0,
        });
    }

    /// Closes the innermost nested object. One left empty is taken back
    /// with its key (a trait with nothing in it is not sent). Without an
    /// open object, does nothing.
    pub fn close(&mut self) {
        let Some(open) = self.open.pop() else {
            return;
        };
        if open.count == 0 {
            self.take_back(open.start);
        } else {
            self.json.push(b'}');
            self.end(Field {
                start: open.start,
                key: open.key,
                key_end: open.key_end,
            });
        }
    }

    /// Closes what is still open and returns the object.
    pub fn finish(mut self) -> RawObject {
        self.seal();
        RawObject {
            json: into_string(self.json),
            fields: self.fields,
        }
    }

    /// Closes what is still open and returns the object, leaving the writer
    /// [cleared](Self::clear) for the next one: in the buffers of the
    /// object last given back with [`recycle`](Self::recycle), if any. A
    /// producer that writes an object per record and gives each back when
    /// done allocates nothing after the first few.
    ///
    /// # Example
    /// ```
    /// use segment_client::ObjectWriter;
    ///
    /// let mut writer = ObjectWriter::new();
    /// for plan in ["free", "pro"] {
    ///     writer.string("plan", plan);
    ///     let traits = writer.take();
    ///     assert_eq!(traits.json(), format!(r#"{{"plan":"{plan}"}}"#));
    ///     writer.recycle(traits);
    /// }
    /// ```
    pub fn take(&mut self) -> RawObject {
        self.seal();
        let (json, fields) = match self.spare.take() {
            Some(spare) => (spare.json.into_bytes(), spare.fields),
            None => (
                Vec::with_capacity(self.json.len()),
                Vec::with_capacity(self.fields.len()),
            ),
        };
        let json = std::mem::replace(&mut self.json, json);
        let fields = std::mem::replace(&mut self.fields, fields);
        self.clear();
        RawObject {
            json: into_string(json),
            fields,
        }
    }

    /// Gives back an object no longer needed: the next [`take`](Self::take)
    /// starts the object after it in its buffers.
    ///
    /// # Example
    /// ```
    /// use segment_client::ObjectWriter;
    ///
    /// let mut writer = ObjectWriter::new();
    /// writer.string("plan", "free");
    /// let first = writer.take(); // the writer moves to fresh buffers
    /// let reused = first.json().as_ptr();
    /// writer.recycle(first);
    /// writer.string("plan", "pro");
    /// let second = writer.take(); // and to `first`'s for the third object
    /// writer.string("plan", "team");
    /// assert_eq!(writer.take().json().as_ptr(), reused);
    /// assert_eq!(second.json(), r#"{"plan":"pro"}"#);
    /// ```
    pub fn recycle(&mut self, object: RawObject) {
        self.spare = Some(object);
    }

    /// Closes every open object, then the top-level one.
    fn seal(&mut self) {
        while !self.open.is_empty() {
            self.close();
        }
        self.json.push(b'}');
    }

    /// A field of another [`RawObject`], copied: `key` is its JSON string
    /// and `value` its JSON text, both valid by that object's construction.
    fn raw_field(&mut self, key: &str, value: &str) {
        let start = self.separate();
        let key_at = self.json.len();
        self.json.extend_from_slice(key.as_bytes());
        let key_end = self.json.len();
        self.json.push(b':');
        self.json.extend_from_slice(value.as_bytes());
        self.end(Field {
            start,
            key: key_at,
            key_end,
        });
    }

    /// Writes the comma a field needs, and counts it.
    fn separate(&mut self) -> usize {
        let start = self.json.len();
        let count = match self.open.last_mut() {
            Some(open) => &mut open.count,
            None => &mut self.count,
        };
        if *count > 0 {
            self.json.push(b',');
        }
        *count += 1;
        start
    }

    fn key<K: ObjectKey + ?Sized>(&mut self, key: &K) -> Field {
        let start = self.separate();
        let key_at = self.json.len();
        key.write_quoted(&mut self.json);
        let key_end = self.json.len();
        self.json.push(b':');
        Field {
            start,
            key: key_at,
            key_end,
        }
    }

    fn end(&mut self, field: Field) {
        if self.open.is_empty() {
            self.fields
                .push([field.key, field.key_end, self.json.len()].map(offset));
        }
    }

    /// Takes back the field that starts at `start`, which was counted.
    fn take_back(&mut self, start: usize) {
        self.json.truncate(start);
        let count = match self.open.last_mut() {
            Some(open) => &mut open.count,
            None => &mut self.count,
        };
        *count -= 1;
    }
}

/// Only whole UTF-8 strings and serde_json's output are written.
fn into_string(json: Vec<u8>) -> String {
    String::from_utf8(json).unwrap_or_else(|_| "{}".to_owned())
}

#[derive(Debug, Clone, Copy)]
struct Field {
    start: usize,
    key: usize,
    key_end: usize,
}

/// A key of an [`ObjectWriter`]'s field: any string type (`str`, `String`,
/// `Box<str>`, `Arc<str>`, `Rc<str>`, `Cow<str>`, or a reference to one), or a [`JsonKey`]
/// written as JSON once, for a key written again and again.
pub trait ObjectKey: sealed::Sealed {
    /// Writes the key as a JSON string.
    #[doc(hidden)]
    fn write_quoted(&self, out: &mut Vec<u8>);
}

mod sealed {
    use std::borrow::Cow;
    use std::rc::Rc;
    use std::sync::Arc;

    pub trait Sealed {}
    impl Sealed for str {}
    impl Sealed for String {}
    impl Sealed for Box<str> {}
    impl Sealed for Arc<str> {}
    impl Sealed for Rc<str> {}
    impl Sealed for Cow<'_, str> {}
    impl Sealed for super::JsonKey {}
    impl<K: Sealed + ?Sized> Sealed for &K {}
}

/// Every string type a key was given as before keys were generic.
macro_rules! text_keys {
    ($($text:ty),*) => {$(
        impl ObjectKey for $text {
            fn write_quoted(&self, out: &mut Vec<u8>) {
                write_json(out, self);
            }
        }
    )*};
}

text_keys!(
    str,
    String,
    Box<str>,
    std::sync::Arc<str>,
    std::rc::Rc<str>,
    std::borrow::Cow<'_, str>
);

impl<K: ObjectKey + ?Sized> ObjectKey for &K {
    fn write_quoted(&self, out: &mut Vec<u8>) {
        (**self).write_quoted(out);
    }
}

/// An object key quoted and escaped once: a writer that writes the same
/// keys for every record copies it rather than escaping it each time.
///
/// # Example
/// ```
/// use segment_client::{JsonKey, ObjectWriter};
///
/// let email = JsonKey::new("e\"mail");
/// let mut writer = ObjectWriter::new();
/// writer.string(&email, "ada@example.com");
/// assert_eq!(writer.finish().json(), r#"{"e\"mail":"ada@example.com"}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonKey(Box<[u8]>);

impl JsonKey {
    /// The key `key`, written as JSON.
    pub fn new(key: &str) -> Self {
        let mut quoted = Vec::with_capacity(key.len() + 2);
        write_json(&mut quoted, key);
        Self(quoted.into_boxed_slice())
    }
}

impl ObjectKey for JsonKey {
    fn write_quoted(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

/// A JSON string, escaped as `serde_json` escapes it.
pub(crate) fn write_json(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    // Most keys and values need no escape: one pass without branches (it
    // vectorises) finds out, and they are copied as they are. serde_json
    // looks each byte up in a table, several times the cost.
    let plain = bytes.iter().fold(true, |plain, &b| {
        plain & (b >= 0x20 && b != b'"' && b != b'\\')
    });
    if plain {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
    } else {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(out, text);
    }
}

/// A byte offset as stored: objects are far below 4 GiB (events are capped
/// at 32,000 bytes).
fn offset(at: usize) -> u32 {
    u32::try_from(at).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_string_type_is_a_key_as_before_keys_were_generic() {
        use std::borrow::Cow;
        use std::rc::Rc;
        use std::sync::Arc;
        let mut writer = ObjectWriter::new();
        let s: &str = "a";
        writer.string(&s, "1");
        writer.string(&String::from("b"), "2");
        writer.string(&Box::<str>::from("c"), "3");
        writer.string(&Arc::<str>::from("d"), "4");
        writer.string(&Rc::<str>::from("e"), "5");
        writer.null(&Cow::Borrowed("f"));
        writer.value(&&&"g", &7);
        assert_eq!(
            writer.finish().json(),
            r#"{"a":"1","b":"2","c":"3","d":"4","e":"5","f":null,"g":7}"#
        );
    }

    #[test]
    fn a_json_key_writes_what_its_str_writes() {
        let keys = ["plain", "a\"b", "back\\slash", "\u{1}\n", "é😀"];
        let write = |quoted: bool| {
            let mut writer = ObjectWriter::new();
            for key in keys {
                let json_key = JsonKey::new(key);
                match quoted {
                    true => {
                        writer.string(&json_key, "s");
                        writer.open(&json_key);
                        writer.value(&json_key, &1.5);
                        writer.close();
                        writer.null(&json_key);
                    }
                    false => {
                        writer.string(key, "s");
                        writer.open(key);
                        writer.value(key, &1.5);
                        writer.close();
                        writer.null(key);
                    }
                }
            }
            writer.finish()
        };
        let (with_keys, with_strs) = (write(true), write(false));
        assert_eq!(with_keys, with_strs);
        assert_eq!(with_keys.get("a\"b"), Some("\"s\""));
        assert!(with_keys.json().contains(r#""é😀":{"é😀":1.5}"#));
    }

    #[test]
    fn writes_what_serde_json_writes_for_the_same_map() {
        let value = json!({
            "a\"b": "x\ny\u{1}\u{7f}é😀",
            "n": [1, -2, 3.5, 1e300, 18446744073709551615u64, null, true],
            "nested": {"k": {"z": false}},
            "empty": {},
        });
        let map = value.as_object().unwrap();
        let raw = RawObject::from_map(map);
        assert_eq!(raw.json(), serde_json::to_string(map).unwrap());
        assert_eq!(raw.to_map(), *map);
        let names: Vec<String> = raw.fields().map(|(name, _)| name.into_owned()).collect();
        assert_eq!(names, map.keys().cloned().collect::<Vec<_>>());
        for (name, value) in raw.fields() {
            let parsed: Value = serde_json::from_str(value).unwrap();
            assert_eq!(parsed, map[&*name]);
        }
        assert_eq!(raw.names_json().next(), Some(r#""a\"b""#));
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut texts: Vec<String> = ["", "plain", "é😀", "a\"b", "a\\b", "\u{7f}", "/"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        texts.extend((0u8..0x80).map(|b| format!("x{}y", char::from(b))));
        for text in texts {
            let mut out = Vec::new();
            write_json(&mut out, &text);
            assert_eq!(out, serde_json::to_vec(&text).unwrap(), "{text:?}");
        }
    }

    #[test]
    fn empty_nested_objects_are_taken_back_with_their_key() {
        let mut writer = ObjectWriter::new();
        writer.string("a", "1");
        writer.open("b");
        writer.open("c");
        writer.close();
        writer.close();
        writer.open("d");
        writer.open("e");
        writer.null("f");
        writer.close();
        writer.close();
        writer.open("g");
        writer.string("h", "2");
        let raw = writer.finish();
        assert_eq!(
            raw.json(),
            r#"{"a":"1","d":{"e":{"f":null}},"g":{"h":"2"}}"#
        );
        assert_eq!(raw.len(), 3);
        assert_eq!(raw.get("d"), Some(r#"{"e":{"f":null}}"#));
        assert_eq!(raw.get("b"), None);

        let mut writer = ObjectWriter::new();
        writer.open("only");
        assert_eq!(writer.finish().json(), "{}");
    }

    #[test]
    fn subsets_and_nulls_keep_valid_sorted_json() {
        let map = json!({"b": 1, "d": {"x": "y"}, "f": "z"});
        let mut raw = RawObject::from_map(map.as_object().unwrap());
        let sub = raw.subset(|name| name != "d");
        assert_eq!(sub.json(), r#"{"b":1,"f":"z"}"#);
        assert_eq!(raw.subset(|_| false), RawObject::default());

        assert!(raw.insert_null("a"));
        assert!(raw.insert_null("e"));
        assert!(raw.insert_null("g"));
        assert!(!raw.insert_null("b"));
        let mut expected = map.as_object().unwrap().clone();
        for name in ["a", "e", "g"] {
            expected.insert(name.into(), Value::Null);
        }
        assert_eq!(raw.json(), serde_json::to_string(&expected).unwrap());
        assert_eq!(raw.get("g"), Some("null"));
        let mut empty = RawObject::default();
        assert!(empty.insert_null("x\"y"));
        assert_eq!(empty.json(), r#"{"x\"y":null}"#);
        assert_eq!(empty.fields().next().unwrap().0, "x\"y");
    }

    #[test]
    fn a_value_that_cannot_be_serialised_is_left_out() {
        let mut bad = std::collections::HashMap::new();
        bad.insert(vec![1u8], 1);
        let mut writer = ObjectWriter::new();
        writer.string("a", "1");
        writer.value("bad", &bad);
        writer.string("c", "3");
        assert_eq!(writer.finish().json(), r#"{"a":"1","c":"3"}"#);
    }

    #[test]
    fn objects_taken_and_recycled_are_the_objects_fresh_writers_finish() {
        let write = |writer: &mut ObjectWriter, n: usize| {
            writer.string("id", &format!("c{n}"));
            writer.open("address");
            if n.is_multiple_of(2) {
                writer.string("city", "London");
            }
            writer.close();
            writer.open("billing");
            writer.value("ltv", &n);
            // Left open: `take` closes it, as `finish` does.
        };
        let mut reused = ObjectWriter::with_capacity(0);
        let mut buffers = Vec::new();
        for n in 0..6 {
            // Half an object, dropped.
            reused.string("stale", "x");
            reused.open("stale_nested");
            reused.clear();
            write(&mut reused, n);
            let taken = reused.take();
            let mut fresh = ObjectWriter::new();
            write(&mut fresh, n);
            let fresh = fresh.finish();
            assert_eq!(taken, fresh, "object {n}");
            assert_eq!(
                taken.fields().collect::<Vec<_>>(),
                fresh.fields().collect::<Vec<_>>()
            );
            buffers.push(taken.json().as_ptr());
            reused.recycle(taken);
        }
        // The writer and its spare take turns: no allocation after two.
        assert_eq!(buffers[2..], [buffers[0], buffers[1]].repeat(2));
    }
}
