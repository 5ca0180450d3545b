//! Stable hashes: identity keys, and the canonical payload hash that
//! decides whether a record changed since Segment accepted it.

use std::io::Write;

use segment_client::Identity;
use serde_json::{Map, Value};

/// The key a record is stored under: its userId, or its anonymousId.
pub(crate) fn identity_key(identity: &Identity) -> String {
    match identity.user_id() {
        Some(user_id) => format!("u:{user_id}"),
        None => format!("a:{}", identity.anonymous_id().unwrap_or_default()),
    }
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

/// The payload's top-level trait names as a JSON array, for the null policy.
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
