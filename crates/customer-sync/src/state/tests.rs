use super::index::Known;
use super::outbox::OutboxEntry;
use super::*;
use segment_client::Identity;
use serde_json::{Map, Value};

fn traits(json: Value) -> Map<String, Value> {
    json.as_object().unwrap().clone()
}

#[test]
fn payload_hash_ignores_key_order_but_not_values() {
    let id = Identity::user("u1");
    let a = payload_hash(
        &id,
        &traits(serde_json::json!({"a": 1, "b": {"x": 1, "y": [1, 2]}})),
    );
    let b: Map<String, Value> = serde_json::from_str(r#"{"b":{"y":[1,2],"x":1},"a":1}"#).unwrap();
    assert_eq!(a, payload_hash(&id, &b));
    let c = payload_hash(
        &id,
        &traits(serde_json::json!({"a": 2, "b": {"x": 1, "y": [1, 2]}})),
    );
    assert_ne!(a, c);
    assert_ne!(a, payload_hash(&Identity::user("u2"), &b));
    // Arrays keep their order: it is part of the value.
    let d = payload_hash(
        &id,
        &traits(serde_json::json!({"a": 1, "b": {"x": 1, "y": [2, 1]}})),
    );
    assert_ne!(a, d);
}

/// Payloads of every shape: nesting, unicode and escapes, numbers of every
/// kind, nulls, arrays, and keys whose escaped and decoded orders differ.
fn varied_payloads() -> Vec<Value> {
    use serde_json::json;
    let mut payloads = vec![
        json!({}),
        json!({"email": "a@b.c", "age": 3, "x": [true, null]}),
        json!({"address": {"city": "Zürich", "postalCode": "8001"}, "company": {"employee_count": 12, "name": "Ünïcode \u{1F600} 中文"}}),
        json!({"n": [0, -1, 1.5, -0.0, 1e300, 5e-324, 0.1, 137.5, 9007199254740993u64, u64::MAX, i64::MIN, 2.0]}),
        json!({"nulls": null, "deep": {"a": {"b": {"c": [null, {"d": null}, [], {}]}}}}),
        json!({"q\"uote": "back\\slash", "ctl\u{1}": "line\nbreak\ttab\r\u{7f}\u{0}", "\u{1f}": "\u{8}\u{c}"}),
        json!({"a": "", "A": " ", "b": false, "B": true, "é": "é", "z": {"Z": 1}}),
        json!({"lifetime_value": 3996.01, "createdAt": "2018-07-15T11:19:20Z", "plan": "pro"}),
    ];
    // Keys whose JSON escapes sort differently from their text.
    let mut map = Map::new();
    for key in [
        "\u{1}",
        "\"",
        "\\",
        "a\nb",
        "a",
        "~",
        "\u{7f}",
        "\u{80}",
        "\u{10FFFF}",
    ] {
        map.insert(key.to_owned(), json!({ key: key }));
    }
    payloads.push(Value::Object(map));
    // Random ones, deterministic.
    let mut rng = Rng(11);
    while payloads.len() < 300 {
        let value = random_value(&mut rng, 3);
        if value.is_object() {
            payloads.push(value);
        }
    }
    payloads
}

/// A small deterministic generator (xorshift), for random payloads.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn random_value(rng: &mut Rng, depth: u32) -> Value {
    let text = |rng: &mut Rng| -> String {
        let alphabet = ['a', 'B', '"', '\\', '\n', '\u{1}', 'é', '😀', ' ', '0'];
        (0..rng.below(6))
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect()
    };
    match (depth, rng.below(8)) {
        (_, 0) => Value::Null,
        (_, 1) => Value::Bool(rng.next().is_multiple_of(2)),
        (_, 2) => Value::from(rng.next() as i64),
        (_, 3) => Value::from(rng.next()),
        (_, 4) => {
            // Mostly plain decimals, sometimes any bit pattern (NaN and
            // infinities are not JSON numbers: they become nulls).
            let f = match rng.below(2) {
                0 => (rng.next() % 1_000_000) as f64 / 100.0,
                _ => f64::from_bits(rng.next()),
            };
            serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
        }
        (0, _) | (_, 5) => Value::String(text(rng)),
        (_, 6) => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.below(5))
                .map(|_| (text(rng), random_value(rng, depth - 1)))
                .collect(),
        ),
    }
}

#[test]
fn the_hash_of_json_text_equals_the_hash_of_the_map() {
    let identities = [
        Identity::user("u1"),
        Identity::anonymous("a\"1"),
        Identity::Both {
            user_id: "ü".into(),
            anonymous_id: "a".into(),
        },
    ];
    let payloads = varied_payloads();
    assert!(payloads.len() > 100);
    for payload in &payloads {
        let map = payload.as_object().unwrap();
        let raw = segment_client::RawObject::from_map(map);
        for id in &identities {
            assert_eq!(
                payload_hash_raw(id, &raw),
                payload_hash(id, map),
                "{payload}"
            );
        }
        assert_eq!(trait_names_raw(&raw), trait_names(map), "{payload}");
    }
    // The pinned hash, from text.
    let pinned = traits(serde_json::json!({"email": "a@b.c", "age": 3, "x": [true, null]}));
    assert_eq!(
        payload_hash_raw(
            &Identity::user("u1"),
            &segment_client::RawObject::from_map(&pinned)
        ),
        PINNED_PAYLOAD_HASH
    );
}

#[test]
fn the_hash_of_json_text_with_unsorted_keys_falls_back_to_the_map() {
    // Not what a mapping writes, but the hash must not depend on it.
    let mut writer = segment_client::ObjectWriter::new();
    writer.string("b", "1");
    writer.open("a");
    writer.value("y", &2);
    writer.value("x", &1);
    writer.close();
    let raw = writer.finish();
    let map = traits(serde_json::json!({"a": {"x": 1, "y": 2}, "b": "1"}));
    let id = Identity::user("u");
    assert_eq!(payload_hash_raw(&id, &raw), payload_hash(&id, &map));
}

/// The hash of the payload in `hashes_are_stable_across_versions`, as first computed.
const PINNED_PAYLOAD_HASH: u64 = 7_485_935_815_751_391_336;

#[test]
fn hashes_are_stable_across_versions() {
    // A changed hash or encoding would re-send every customer: pin both.
    assert_eq!(stable_hash(b""), 0x2d06_8005_38d3_94c2);
    let traits = traits(serde_json::json!({"email": "a@b.c", "age": 3, "x": [true, null]}));
    assert_eq!(
        payload_hash(&Identity::user("u1"), &traits),
        PINNED_PAYLOAD_HASH
    );
}

#[test]
fn the_encoding_is_unambiguous() {
    let id = Identity::user("u");
    let a = traits(serde_json::json!({"ab": "c"}));
    let b = traits(serde_json::json!({"a": "bc"}));
    assert_ne!(payload_hash(&id, &a), payload_hash(&id, &b));
    let c = traits(serde_json::json!({"a": "1"}));
    let d = traits(serde_json::json!({"a": 1}));
    assert_ne!(payload_hash(&id, &c), payload_hash(&id, &d));
}

fn settled(row: Option<i64>, message_id: &str, hash: u64) -> Settled {
    Settled {
        row,
        key: "u:1".into(),
        hash,
        source_hash: hash + 100,
        message_id: message_id.into(),
        traits: r#"["email"]"#.into(),
        line: 2,
        values: None,
        removal: false,
    }
}

/// Appends one outbox entry for u:1.
fn send(store: &mut StateStore, message_id: &str, hash: u64) {
    send_for(store, "u:1", message_id, hash);
}

/// The entries the outbox scan found pending, read back.
fn pending(store: &mut StateStore) -> Vec<Pending> {
    scan_outbox(store).1
}

/// The outbox scan, and the entries it found pending, read back.
fn scan_outbox(store: &mut StateStore) -> (OutboxScan, Vec<Pending>) {
    let index = store.index().unwrap();
    let scan = store.pending(&index).unwrap();
    let pending = (scan.pending.iter())
        .map(|p| store.load_pending(p.clone()).unwrap())
        .collect();
    (scan, pending)
}

/// The `messageId`s of `pending`.
fn ids(pending: &[Pending]) -> Vec<&str> {
    pending
        .iter()
        .map(|p| p.entry.message_id.as_str())
        .collect()
}

/// Appends one outbox entry for `key`.
fn send_for(store: &mut StateStore, key: &str, message_id: &str, hash: u64) {
    let mut entries = Vec::new();
    OutboxEntryRef {
        key,
        hash,
        source_hash: 7,
        message_id,
        source: "f.csv",
        line: 2,
        traits: r#"["email"]"#,
        event: br#"{"type":"identify","userId":"1"}"#,
        tracks: Default::default(),
        values: None,
        kind: None,
    }
    .write_line(&mut entries);
    store.append_outbox(&entries).unwrap();
}

#[test]
fn a_superseded_entry_is_never_pending_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = StateStore::open(dir.path(), "t").unwrap();
    // v1 (m1) was accepted; a later run sent v2 (m2), also accepted.
    send(&mut store, "m1", 1);
    store
        .apply(&[Change::Accepted(settled(None, "m1", 1))])
        .unwrap();
    let row = Some(known(&mut store).row);
    send(&mut store, "m2", 2);
    store
        .apply(&[Change::Accepted(settled(row, "m2", 2))])
        .unwrap();
    assert!(
        pending(&mut store).is_empty(),
        "m1 is older than m2: never resent"
    );
    // v3 (m3) is in flight: only it is pending, however many entries came before.
    send(&mut store, "m3", 3);
    let (scan, pending) = scan_outbox(&mut store);
    assert_eq!(ids(&pending), ["m3"]);
    assert_eq!(scan.superseded, 2);
}

#[test]
fn a_torn_line_is_skipped_and_counted_and_the_lines_after_it_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = StateStore::open(dir.path(), "t").unwrap();
    send_for(&mut store, "u:1", "m1", 1);
    // A kill cut a line inside a multi-byte character (not valid UTF-8).
    store
        .append_outbox(b"{\"key\":\"u:2\",\"source\":\"caf\xc3")
        .unwrap();
    drop(store);
    let mut store = StateStore::open(dir.path(), "t").unwrap();
    send_for(&mut store, "u:3", "m3", 3);
    let (scan, pending) = scan_outbox(&mut store);
    assert_eq!(ids(&pending), ["m1", "m3"]);
    assert_eq!(scan.torn, 1);
}

#[test]
fn a_line_with_an_identity_but_not_a_whole_entry_is_torn_and_supersedes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = StateStore::open(dir.path(), "t").unwrap();
    send_for(&mut store, "u:1", "m1", 1);
    // Whole JSON with the identity and messageId the scan reads first,
    // but not an entry (its event is missing).
    store
        .append_outbox(b"{\"key\":\"u:1\",\"messageId\":\"m2\"}\n")
        .unwrap();
    let (scan, pending) = scan_outbox(&mut store);
    assert_eq!(ids(&pending), ["m1"]);
    assert_eq!((scan.torn, scan.superseded), (1, 0));
}

#[test]
fn an_index_hit_is_checked_against_the_identity_text() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = StateStore::open(dir.path(), "t").unwrap();
    // Another identity whose key hash is the same as u:1's (a collision).
    store
            .conn
            .execute(
                "INSERT INTO records (identity, key_hash, accepted_hash, last_message_id) VALUES ('u:other', ?1, 5, 'mx')",
                [stable_hash(b"u:1") as i64],
            )
            .unwrap();
    let index = store.index().unwrap();
    assert!(index.get(stable_hash(b"u:1")).is_some(), "the hash hits");
    let settled = |key: &str| store.settled(&index, stable_hash(key.as_bytes()), key, "mx");
    assert_eq!(settled("u:1").unwrap(), (None, false));
    assert_eq!(
        settled("u:other").unwrap(),
        (None, false),
        "its own hash differs"
    );
    // An in-flight entry for u:1 is pending, not settled by u:other's row.
    send_for(&mut store, "u:1", "mx", 9);
    assert_eq!(pending(&mut store).len(), 1);
}

#[test]
fn the_state_is_locked_for_one_run_at_a_time_and_reset_removes_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = StateStore::open(dir.path(), "t").unwrap();
    send(&mut store, "m1", 1);
    let err = StateStore::open(dir.path(), "t").unwrap_err();
    assert!(err.is_locked(), "{err}");
    assert!(
        err.hint()
            .unwrap()
            .contains(&std::process::id().to_string()),
        "{err:?}"
    );
    assert!(StateStore::remove(dir.path(), "t").unwrap_err().is_locked());
    drop(store);
    let removed = StateStore::remove(dir.path(), "t").unwrap();
    assert!(
        removed
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "outbox"))
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert!(!StateStore::exists(dir.path(), "t"));
}

#[test]
fn an_empty_or_foreign_database_is_an_error_with_a_reset_hint() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("e.sqlite"), b"").unwrap();
    std::fs::write(
        dir.path().join("g.sqlite"),
        b"this is not a database file at all",
    )
    .unwrap();
    for name in ["e", "g"] {
        let err = StateStore::open(dir.path(), name).unwrap_err();
        assert!(err.hint().unwrap().contains("reset"), "{name}: {err}");
    }
    assert_eq!(
        std::fs::metadata(dir.path().join("e.sqlite"))
            .unwrap()
            .len(),
        0,
        "left as it was"
    );
}

#[test]
fn the_index_grows_instead_of_filling_up() {
    let mut index = StateIndex::with_capacity(4);
    for k in 1..=1_000u64 {
        index.insert(k.wrapping_mul(0x9E37_79B9_7F4A_7C15), k, k as i64);
    }
    assert_eq!(index.len(), 1_000);
    assert_eq!(
        index
            .get(7u64.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .unwrap()
            .1
            .row,
        7
    );
}

fn known(store: &mut StateStore) -> Known {
    store.index().unwrap().get(stable_hash(b"u:1")).unwrap().1
}

#[test]
fn an_outbox_entry_is_pending_until_its_record_settles() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = StateStore::open(dir.path(), "t").unwrap();
    send(&mut store, "m1", 42);
    // A line cut short by a crash is not an entry, and does not spoil the next one.
    store.append_outbox(br#"{"key":"u:2","ha"#).unwrap();
    drop(store);
    let mut store = StateStore::open(dir.path(), "t").unwrap();
    let left = pending(&mut store);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].entry.message_id, "m1");
    assert_eq!(left[0].entry.event, br#"{"type":"identify","userId":"1"}"#);
    assert_eq!(left[0].entry.traits, r#"["email"]"#);
    assert_eq!(left[0].row, None, "a record never settled has no row");

    store
        .apply(&[Change::Accepted(settled(None, "m1", 42))])
        .unwrap();
    assert!(
        pending(&mut store).is_empty(),
        "settled entries are not pending"
    );
    let known = known(&mut store);
    assert_eq!((known.source_hash, known.failed), (Some(142), None));
    assert_eq!(store.accepted_hash(known.row).unwrap(), Some(42));
    assert_eq!(store.accepted_traits(known.row).unwrap(), ["email"]);
    assert_eq!(
        store.accepted_message_id("u:1").unwrap().as_deref(),
        Some("m1")
    );
    assert_eq!(store.counts().unwrap(), (1, 1, 0, 0));

    // A new message for the same record is pending again until it settles.
    send(&mut store, "m2", 43);
    assert_eq!(pending(&mut store)[0].row, Some(known.row));
    store.clear_outbox().unwrap();
    assert!(pending(&mut store).is_empty());
    assert_eq!(std::fs::metadata(store.outbox_path()).unwrap().len(), 0);
}

#[test]
fn a_failure_counts_runs_and_keeps_the_last_accepted_hash() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = StateStore::open(dir.path(), "t").unwrap();
    store
        .apply(&[Change::Accepted(settled(None, "m1", 1))])
        .unwrap();
    let row = Some(known(&mut store).row);
    let failure = |m: &str| Change::Failed {
        record: settled(row, m, 2),
        code: "http_status".into(),
        message: "400".into(),
        status: Some(400),
    };
    store.apply(&[failure("m2"), failure("m3")]).unwrap();
    let k = known(&mut store);
    assert_eq!((k.source_hash, k.failed), (Some(101), Some((2, 2))));
    assert_eq!(store.accepted_hash(k.row).unwrap(), Some(1));
    assert_eq!(store.failed(10).unwrap()[0].code, "http_status");
    store
        .apply(&[Change::Accepted(settled(row, "m4", 3))])
        .unwrap();
    let k = known(&mut store);
    assert_eq!(
        (k.source_hash, k.failed),
        (Some(103), None),
        "a success clears failures"
    );
    assert_eq!(store.counts().unwrap().0, 1, "updates never add rows");
}

#[test]
fn an_identity_sent_twice_before_it_had_a_row_is_merged_into_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = StateStore::open(dir.path(), "t").unwrap();
    store
        .apply(&[
            Change::Accepted(settled(None, "m1", 1)),
            Change::Accepted(settled(None, "m2", 2)),
        ])
        .unwrap();
    assert_eq!(
        known(&mut store).source_hash,
        Some(102),
        "the later one wins"
    );
    assert_eq!(store.counts().unwrap().0, 1, "the older row is gone");
}

#[test]
fn outbox_lines_round_trip() {
    let mut line = Vec::new();
    let entry = OutboxEntryRef {
        key: "a:x\"y",
        hash: u64::MAX,
        source_hash: 3,
        message_id: "m",
        source: "dir/f.csv",
        line: 7,
        traits: "[]",
        event: br#"{"a":[1,2]}"#,
        tracks: Default::default(),
        values: None,
        kind: None,
    };
    entry.write_line(&mut line);
    assert_eq!(line.last(), Some(&b'\n'));
    let parsed = OutboxEntry::parse_bytes(line.trim_ascii_end()).unwrap();
    assert_eq!(
        (parsed.key.as_str(), parsed.hash, parsed.line),
        ("a:x\"y", u64::MAX, 7)
    );
    assert_eq!(parsed.event, br#"{"a":[1,2]}"#);
}

#[test]
fn outbox_lines_with_a_track_round_trip() {
    let mut line = Vec::new();
    OutboxEntryRef {
        key: "u:1",
        hash: 9,
        source_hash: 3,
        message_id: "m",
        source: "f.csv",
        line: 7,
        traits: r#"["plan"]"#,
        event: br#"{"type":"identify"}"#,
        tracks: &[(
            br#"{"type":"track","event":"Customer Updated"}"#,
            crate::mapping::ChangeKind::Changed,
        )],
        values: Some(r#"{"plan":"pro"}"#),
        kind: None,
    }
    .write_line(&mut line);
    let parsed = OutboxEntry::parse_bytes(line.trim_ascii_end()).unwrap();
    assert_eq!(
        parsed.tracks,
        [(
            br#"{"type":"track","event":"Customer Updated"}"#.to_vec(),
            crate::mapping::ChangeKind::Changed
        )]
    );
    assert_eq!(parsed.values.as_deref(), Some(r#"{"plan":"pro"}"#));
    assert_eq!(parsed.kind, None);
    assert!(!parsed.is_removal());
    // An unknown kind is a line this version cannot trust: torn.
    let odd = String::from_utf8(line)
        .unwrap()
        .replace("\"changed\"", "\"renamed\"");
    assert!(OutboxEntry::parse_bytes(odd.trim_end().as_bytes()).is_none());
}

#[test]
fn a_version_1_state_is_migrated_and_keeps_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = StateStore::path_for(dir.path(), "t");
    {
        // A state as version 1 wrote it.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(super::schema::MIGRATIONS[0]).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version VALUES (1);
             INSERT INTO records (identity, key_hash, accepted_hash, accepted_message_id, last_message_id, line)
               VALUES ('u:1', 5, 42, 'm1', 'm1', 2);",
        )
        .unwrap();
    }
    let mut store = StateStore::open(dir.path(), "t").unwrap();
    assert_eq!(store.accepted_hash(1).unwrap(), Some(42));
    assert_eq!(store.accepted_values(1).unwrap(), None, "none were kept");
    let version: i64 = store
        .conn
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, super::SCHEMA_VERSION);
    // The new columns are written.
    let mut accepted = settled(Some(1), "m2", 43);
    accepted.values = Some(r#"{"plan":"pro"}"#.into());
    store.apply(&[Change::Accepted(accepted)]).unwrap();
    assert_eq!(
        store.accepted_values(1).unwrap(),
        Some(traits(serde_json::json!({"plan": "pro"})))
    );
}

#[test]
fn an_accepted_removal_marks_the_row_gone_once_and_forgets_its_payload() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = StateStore::open(dir.path(), "t").unwrap();
    let mut accepted = settled(None, "m1", 42);
    accepted.values = Some(r#"{"email":"a@x"}"#.into());
    store.apply(&[Change::Accepted(accepted)]).unwrap();
    let gone = store.gone(&[1]).unwrap();
    assert_eq!(gone.len(), 1);
    assert!(gone[0].accepted);
    assert_eq!(gone[0].values.as_deref(), Some(r#"{"email":"a@x"}"#));

    let mut removal = settled(Some(1), "m-removed", super::REMOVAL_HASH);
    removal.removal = true;
    store.apply(&[Change::Accepted(removal)]).unwrap();
    assert!(store.gone(&[1]).unwrap().is_empty(), "removed once only");
    assert_eq!(
        store.accepted_hash(1).unwrap(),
        None,
        "back, it is added again"
    );
    assert_eq!(store.counts().unwrap().0, 0, "not counted as known");
    let index = store.index().unwrap();
    assert_eq!(index.get(stable_hash(b"u:1")).unwrap().1.source_hash, None);
}

#[test]
fn reopening_keeps_the_schema_and_refuses_newer_ones() {
    let dir = tempfile::tempdir().unwrap();
    drop(StateStore::open(dir.path(), "t").unwrap());
    let store = StateStore::open(dir.path(), "t").unwrap();
    store
        .conn
        .execute("INSERT INTO schema_version (version) VALUES (99)", [])
        .unwrap();
    drop(store);
    let err = StateStore::open(dir.path(), "t").unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
}

#[test]
fn index_finds_every_key_with_its_row() {
    let key = |k: u64| k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut index = StateIndex::with_capacity(1_000);
    for k in 1..=1_000u64 {
        assert_eq!(index.insert(key(k), k, k as i64 + 10), None);
    }
    assert_eq!(
        index.insert(key(5), 77, 2_000),
        Some(15),
        "a repeated key hands back the older row"
    );
    assert_eq!(index.len(), 1_000);
    for k in (1..=1_000u64).filter(|k| *k != 5) {
        let (slot, known) = index.get(key(k)).unwrap();
        assert_eq!((known.source_hash, known.row), (Some(k), k as i64 + 10));
        assert_eq!(index.row_at(slot), Some(k as i64 + 10));
    }
    assert_eq!(index.get(key(5)).unwrap().1.row, 2_000);
    index.ambiguous.insert(key(7));
    assert!(index.get(key(7)).is_none(), "shared by two identities");
    assert!(index.get(12_345).is_none());
    assert!(StateIndex::default().get(1).is_none());
}

#[test]
fn a_kill_while_the_database_is_created_leaves_no_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    // What a kill during creation leaves: the half-built file beside the name.
    std::fs::write(dir.path().join("t.sqlite.new"), b"").unwrap();
    let store = StateStore::open(dir.path(), "t").unwrap();
    assert!(
        std::fs::metadata(dir.path().join("t.sqlite"))
            .unwrap()
            .len()
            > 0
    );
    assert!(!dir.path().join("t.sqlite.new").exists());
    drop(store);
    StateStore::open(dir.path(), "t").unwrap();
}

#[test]
fn new_rows_keep_their_order_and_columns_across_insert_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = StateStore::open(dir.path(), "t").unwrap();
    store
        .apply(&[Change::Accepted(settled(None, "m0", 1))])
        .unwrap();
    // More than two batches of new rows, with a failed new identity and an
    // update of the known one among them, and a second trait set.
    let settled_as = |i: u64| Settled {
        key: format!("u:n{i}"),
        line: i + 10,
        traits: if i.is_multiple_of(3) {
            r#"["a"]"#
        } else {
            r#"["a","b"]"#
        }
        .into(),
        values: i.is_multiple_of(2).then(|| format!(r#"{{"a":{i}}}"#)),
        ..settled(None, &format!("m{i}"), i + 1_000)
    };
    let changes: Vec<Change> = (1..=150u64)
        .map(|i| match i {
            70 => Change::Failed {
                record: settled_as(i),
                code: "bad".into(),
                message: "refused".into(),
                status: Some(400),
            },
            100 => Change::Accepted(settled(Some(1), "m-update", 5)),
            _ => Change::Accepted(settled_as(i)),
        })
        .collect();
    store.apply(&changes).unwrap();
    let rows: Vec<(i64, String)> = store
        .conn
        .prepare("SELECT id, identity FROM records ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected: Vec<String> = std::iter::once("u:1".to_owned())
        .chain((1..=150).filter(|i| *i != 100).map(|i| format!("u:n{i}")))
        .collect();
    assert_eq!(
        rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
        expected
    );
    assert!(rows.windows(2).all(|w| w[0].0 < w[1].0));
    for i in [1u64, 64, 65, 69, 71, 128, 150] {
        let (hash, message, last, line, source, values, names): (
            i64,
            String,
            String,
            i64,
            i64,
            Option<String>,
            String,
        ) = store
            .conn
            .query_row(
                "SELECT accepted_hash, accepted_message_id, last_message_id, line, source_hash,
                        accepted_values, t.names
                 FROM records r JOIN trait_sets t ON t.id = r.accepted_traits WHERE identity = ?1",
                [format!("u:n{i}")],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                },
            )
            .unwrap();
        let want = settled_as(i);
        assert_eq!(
            (hash as u64, message.as_str(), last.as_str(), line as u64),
            (
                want.hash,
                want.message_id.as_str(),
                want.message_id.as_str(),
                want.line
            )
        );
        assert_eq!(
            (source as u64, values, names),
            (want.source_hash, want.values, want.traits)
        );
    }
    let failed: (Option<i64>, i64) = store
        .conn
        .query_row(
            "SELECT accepted_hash, failed_runs FROM records WHERE identity = 'u:n70'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(failed, (None, 1));
    assert_eq!(store.accepted_hash(1).unwrap(), Some(5), "the update");
}
