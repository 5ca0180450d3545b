//! Repeated identities in one input: the streaming check (the line an
//! identity was first seen on) and, for `--duplicates last` on a file, a
//! first pass that finds each repeated identity's last row.

use std::collections::HashMap;

use segment_client::Identity;

use super::StopSignal;
use super::planner::Planner;
use crate::mapping::Mapping;
use crate::source::{IdentityScan, ReadProgress, Source};
use crate::state::stable_hash;
use crate::{Record, RecordError};

/// Records read before the duplicate table is sized from the source's size
/// (or its expected record count) and the share of new identities.
pub(crate) const SIZING_SAMPLE: u64 = 1_024;

/// Rows whose identity is on several rows, found by reading the source once
/// before the run (`--duplicates last`): identity hash -> the last row's line.
#[derive(Debug, Default)]
pub(crate) struct LastRows {
    pub lines: HashMap<u64, u64>,
    /// How many of those last rows the run has reached.
    pub reached: usize,
}

impl LastRows {
    /// Finds every identity on several rows of `source`, and its last row.
    /// Bounded memory: identities the state knows are checked in the
    /// planner's per-slot array (4 bytes each, there anyway), new ones take
    /// 12 bytes each in a table dropped at the end; only the repeated ones
    /// are kept. Stops early at a stop (the run then reads nothing either).
    pub fn scan(
        mut source: Source,
        mapping: &Mapping,
        stop: &StopSignal,
        planner: Option<&mut Planner>,
    ) -> LastRows {
        let mut pass = FirstPass {
            seen: SeenIdentities::default(),
            lines: HashMap::new(),
            planner,
            progress: source.progress(),
            total_bytes: source.total_bytes(),
            expected_records: source.expected_records(),
            count: 0,
            new_in_sample: 0,
            key: String::new(),
        };
        // CSV rows are read field by field, without building records.
        let wanted = mapping.identity_columns();
        while let Some(next) = source.next_csv_fields(wanted) {
            let Some((line, [user_id, anonymous_id])) = next else {
                return pass.finish();
            };
            // As `Mapping::apply` reads a CSV identity: trimmed, empty is absent.
            if !pass.take_row(user_id.trim(), anonymous_id.trim(), line, stop) {
                return pass.finish();
            }
        }
        // Other formats: only the identity keys' values are built.
        source.keep_only(mapping.identity_names());
        // JSON: most objects' identities are read without parsing them.
        if let Some(names) = mapping.customer_id_names() {
            let scan = IdentityScan::new(names);
            loop {
                let went_on = source.next_unparsed(|mut object| {
                    let Some([user_id, anonymous_id]) = scan.ids(object.bytes) else {
                        return pass.observe_record(object.parse(), mapping, stop);
                    };
                    match pass.observe(user_id, anonymous_id, object.line, stop) {
                        Observed::Stop => false,
                        Observed::Once => true,
                        // A scan's answer is sure only for an object the
                        // run accepts: the object decides once parsed.
                        Observed::Again(_) => pass.observe_record(object.parse(), mapping, stop),
                    }
                });
                match went_on {
                    None => break,
                    Some(Some(true)) => {}
                    Some(Some(false) | None) => return pass.finish(),
                }
            }
        }
        for record in source.by_ref() {
            if !pass.observe_record(record, mapping, stop) {
                break;
            }
        }
        // A fatal error is the run's to report, when it reads the same
        // source; what the scan found before it still holds.
        let _ = source.take_fatal();
        pass.finish()
    }
}

/// Whether an identity was seen before in the first pass.
enum Observed {
    Once,
    /// Seen before: its hash.
    Again(u64),
    /// A stop asks to end the pass.
    Stop,
}

/// The first pass's bookkeeping.
struct FirstPass<'a> {
    seen: SeenIdentities,
    lines: HashMap<u64, u64>,
    planner: Option<&'a mut Planner>,
    progress: ReadProgress,
    total_bytes: Option<u64>,
    expected_records: Option<u64>,
    count: u64,
    new_in_sample: u64,
    /// Reused for the identity key.
    key: String,
}

impl FirstPass<'_> {
    /// Notes a record as the run reads it: a row, if it has an identity,
    /// and the last so far of that identity if it was seen before. `false`
    /// when a stop asks to end the pass.
    fn observe_record(
        &mut self,
        record: Result<Record, RecordError>,
        mapping: &Mapping,
        stop: &StopSignal,
    ) -> bool {
        // A record without an identity is reported by the run itself.
        let Ok(record) = record else {
            return true;
        };
        let Ok(identity) = mapping.identity_of(&record) else {
            return true;
        };
        let (user_id, anonymous_id) = (
            identity.user_id().unwrap_or_default(),
            identity.anonymous_id().unwrap_or_default(),
        );
        self.take_row(user_id, anonymous_id, record.location.line, stop)
    }

    /// Notes a row the run accepts: the last so far of its identity if that
    /// was seen before. `false` when a stop asks to end the pass.
    fn take_row(
        &mut self,
        user_id: &str,
        anonymous_id: &str,
        line: u64,
        stop: &StopSignal,
    ) -> bool {
        match self.observe(user_id, anonymous_id, line, stop) {
            Observed::Stop => false,
            Observed::Once => true,
            Observed::Again(hash) => {
                self.lines.insert(hash, line);
                true
            }
        }
    }

    /// Notes an identity on `line`, without taking it as a row yet.
    fn observe(
        &mut self,
        user_id: &str,
        anonymous_id: &str,
        line: u64,
        stop: &StopSignal,
    ) -> Observed {
        if user_id.is_empty() && anonymous_id.is_empty() {
            return Observed::Once;
        }
        self.count += 1;
        if self.count.is_multiple_of(SIZING_SAMPLE) && stop.is_stopped() {
            return Observed::Stop;
        }
        if self.count == SIZING_SAMPLE + 1 {
            // Sized for the new identities only, as in the run itself.
            let share = match self.planner {
                Some(_) => self.new_in_sample as f64 / SIZING_SAMPLE as f64,
                None => 1.0,
            };
            size_duplicate_table(
                &mut self.seen,
                &self.progress,
                (self.total_bytes, self.expected_records),
                share,
            );
        }
        let hash = identity_hash_of(user_id, anonymous_id);
        let known = match self.planner.as_deref_mut() {
            Some(planner) => {
                self.key.clear();
                let (prefix, id) = match user_id.is_empty() {
                    false => ("u:", user_id),
                    true => ("a:", anonymous_id),
                };
                self.key.push_str(prefix);
                self.key.push_str(id);
                planner.first_seen(&self.key, line)
            }
            None => None,
        };
        let repeated = match known {
            Some(first_line) => first_line.is_some(),
            None => {
                self.new_in_sample += u64::from(self.count <= SIZING_SAMPLE);
                self.seen.check_hash(hash, line).is_some()
            }
        };
        match repeated {
            true => Observed::Again(hash),
            false => Observed::Once,
        }
    }

    fn finish(self) -> LastRows {
        if let Some(planner) = self.planner {
            planner.forget_seen();
        }
        LastRows {
            lines: self.lines,
            reached: 0,
        }
    }
}

/// Sizes the duplicate table for the whole source, so it does not grow (and
/// briefly hold its old and new tables at once, 2.5x its size) later: from
/// the bytes the first records took when the source has a byte count (a
/// file), else from the record count it expects (a PostgreSQL table's
/// planner estimate, [`Source::expected_records`]); neither, it grows as it
/// fills. `share` is the share of the sample's identities that take room in
/// it (the new ones, with a state).
pub(crate) fn size_duplicate_table(
    seen: &mut SeenIdentities,
    progress: &ReadProgress,
    (total_bytes, expected_records): (Option<u64>, Option<u64>),
    share: f64,
) {
    let read = progress.bytes_read();
    let records = match (total_bytes.filter(|_| read > 0), expected_records) {
        (Some(total), _) => total as f64 / read as f64 * SIZING_SAMPLE as f64,
        (None, Some(expected)) => expected as f64,
        (None, None) => return,
    };
    seen.reserve((records * share * 1.05) as usize);
}

/// Identities already seen in this input: an open-addressing table of
/// 64-bit identity hashes with the line each was first seen on, 12 bytes a
/// slot, sized once from an estimate of the record count so it rarely grows.
/// (A `hashbrown::HashTable<(u64, u32)>` would take 17 bytes a bucket in
/// power-of-two tables, about 2.5x this for a million identities; see
/// `StateIndex` for the measurement.) A hash and its line share a slot: a
/// million identities outgrow the caches, and a lookup is then one cache
/// miss rather than one for the hash and another for the line.
#[derive(Default)]
pub(crate) struct SeenIdentities {
    slots: Vec<Slot>,
    len: usize,
}

/// A hash in two halves (so a slot packs into 12 bytes, unpadded) and its
/// line. A hash of 0 marks an empty slot; hashes are forced odd so they are
/// never 0.
#[derive(Clone, Copy, Default)]
struct Slot {
    key_low: u32,
    key_high: u32,
    line: u32,
}

const _: () = assert!(size_of::<Slot>() == 12);

impl Slot {
    fn new(key: u64, line: u32) -> Self {
        Self {
            key_low: key as u32,
            key_high: (key >> 32) as u32,
            line,
        }
    }

    fn key(self) -> u64 {
        u64::from(self.key_high) << 32 | u64::from(self.key_low)
    }
}

impl SeenIdentities {
    /// Makes room for `records` identities without growing.
    pub fn reserve(&mut self, records: usize) {
        let wanted = records + records / 7 + 16;
        if wanted > self.slots.len() {
            self.rehash(wanted);
        }
    }

    /// Remembers `identity` at `line`; returns the earlier line if it was seen.
    pub fn check(&mut self, identity: &Identity, line: u64) -> Option<u64> {
        self.check_hash(identity_hash(identity), line)
    }

    /// As [`check`](Self::check), for an identity already hashed with [`identity_hash_of`].
    pub fn check_hash(&mut self, key: u64, line: u64) -> Option<u64> {
        if (self.len + 1) * 8 > self.slots.len() * 7 {
            self.rehash((self.slots.len() * 3 / 2).max(1024));
        }
        let mut index = self.slot(key);
        loop {
            let slot = self.slots[index];
            match slot.key() {
                0 => {
                    self.slots[index] = Slot::new(key, u32::try_from(line).unwrap_or(u32::MAX));
                    self.len += 1;
                    return None;
                }
                k if k == key => return Some(u64::from(slot.line)),
                _ => index = (index + 1) % self.slots.len(),
            }
        }
    }

    /// Maps a hash onto the table without a power-of-two size (multiply-shift).
    fn slot(&self, key: u64) -> usize {
        ((u128::from(key) * self.slots.len() as u128) >> 64) as usize
    }

    fn rehash(&mut self, capacity: usize) {
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); capacity]);
        for slot in old.into_iter().filter(|slot| slot.key() != 0) {
            let mut index = self.slot(slot.key());
            while self.slots[index].key() != 0 {
                index = (index + 1) % self.slots.len();
            }
            self.slots[index] = slot;
        }
    }
}

pub(crate) fn identity_hash(identity: &Identity) -> u64 {
    identity_hash_of(
        identity.user_id().unwrap_or_default(),
        identity.anonymous_id().unwrap_or_default(),
    )
}

/// The hash of an identity given as its parts ("" for an absent one); odd,
/// so never 0.
pub(crate) fn identity_hash_of(user_id: &str, anonymous_id: &str) -> u64 {
    thread_local! {
        static BYTES: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BYTES.with_borrow_mut(|bytes| {
        bytes.clear();
        bytes.extend_from_slice(user_id.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(anonymous_id.as_bytes());
        stable_hash(bytes) | 1
    })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::source::SourceFormat;

    fn last_rows(name: &str, format: SourceFormat, data: &[u8]) -> HashMap<u64, u64> {
        let source = Source::from_reader(name, format, Cursor::new(data.to_vec())).unwrap();
        let mapping = Mapping::new(None, &["id", "email"]).unwrap();
        LastRows::scan(source, &mapping, &StopSignal::default(), None).lines
    }

    #[test]
    fn the_first_pass_finds_each_repeated_identity_and_its_last_row_as_the_run_reads_it() {
        // Trimmed ids, a ragged row, a row that is not UTF-8 and a blank id
        // are read as the run reads them: only well-formed rows count.
        let csv = b"id,email\n u1 ,a\nu2,b\nu1,c\nu3\nu2,d,extra\n\xff,x\n ,y\nu2,e\nu3,f\n";
        let found = last_rows("t.csv", SourceFormat::Csv, csv);
        let expected: HashMap<u64, u64> = [
            (identity_hash_of("u1", ""), 4),
            (identity_hash_of("u2", ""), 9),
        ]
        .into();
        assert_eq!(found, expected);
        // The record path (JSON) agrees with the CSV fast path.
        let ndjson = b"{\"id\":\" u1 \",\"email\":\"a\"}\n{\"id\":\"u2\"}\n{\"id\":\"u1\"}\n{\"email\":\"z\"}\n{\"id\":\"u2\"}\n";
        let found = last_rows("t.ndjson", SourceFormat::Ndjson, ndjson);
        let expected: HashMap<u64, u64> = [
            (identity_hash_of("u1", ""), 3),
            (identity_hash_of("u2", ""), 5),
        ]
        .into();
        assert_eq!(found, expected);
        assert_eq!(
            identity_hash(&Identity::user("u1")),
            identity_hash_of("u1", "")
        );
    }

    #[test]
    fn a_json_object_the_run_refuses_is_never_a_last_row_though_its_identity_scans() {
        // Each refused object's identity reads plainly without a parse; were
        // it taken as a last row, the valid row before it would be skipped
        // and its customer not sent at all.
        let objects = [
            r#"{"id":"u1","email":"a"}"#,
            r#"{"id":"u1","email":}"#,
            r#"{"id":"u2"}"#,
            r#"{"id":"u2"} x"#,
            r#"{"id":"u3"}"#,
            r#"{"id":"u3","id":"u3"}"#,
            r#"{"id":"u3","email":"\x"}"#,
            r#"{"id":"u4"} x"#,
            r#"{"id":"u4"}"#,
            r#"{"id":"u5","n":1}"#,
            r#"{ "n" : [2, {"id": "no"}], "id" : "u5" }"#,
        ];
        // u4's only valid row is its last: the run sends it, as before.
        let expected = |u4: u64, u5: u64| -> HashMap<u64, u64> {
            [
                (identity_hash_of("u4", ""), u4),
                (identity_hash_of("u5", ""), u5),
            ]
            .into()
        };
        let (first, last) = objects.split_at(10);
        let ndjson = format!("{}\n\n{}\n", first.join("\n"), last[0]);
        let found = last_rows("t.ndjson", SourceFormat::Ndjson, ndjson.as_bytes());
        assert_eq!(found, expected(9, 12));
        let array = format!("[\n{}\n]\n", objects.join(",\n"));
        let found = last_rows("t.json", SourceFormat::JsonArray, array.as_bytes());
        assert_eq!(found, expected(10, 12));
    }

    #[test]
    fn without_a_byte_count_the_table_is_sized_from_the_expected_records_and_never_grows() {
        // A PostgreSQL table: no byte count, the planner's row estimate.
        let progress = ReadProgress::default();
        let filled = |expected: Option<u64>, share: f64, identities: u64| {
            let mut seen = SeenIdentities::default();
            size_duplicate_table(&mut seen, &progress, (None, expected), share);
            let sized = seen.slots.len();
            for i in 0..identities {
                assert_eq!(
                    seen.check_hash(identity_hash_of(&format!("u{i}"), ""), i),
                    None
                );
            }
            (sized, seen.slots.len())
        };
        // Every identity new: room for them all, reserved once.
        let (sized, after) = filled(Some(200_000), 1.0, 200_000);
        assert!(sized >= 200_000, "{sized}");
        assert_eq!(after, sized, "grew from {sized} to {after}");
        // With a state, only the new identities take room (a quarter here).
        let (sized, after) = filled(Some(200_000), 0.25, 50_000);
        assert!((50_000..100_000).contains(&sized), "{sized}");
        assert_eq!(after, sized, "grew from {sized} to {after}");
        // No estimate: not sized, it grows as it fills (as before).
        assert_eq!(filled(None, 1.0, 0), (0, 0));
    }

    #[test]
    fn seen_identities_finds_repeats_with_their_first_line_across_growth() {
        let mut seen = SeenIdentities::default();
        for i in 0..5_000u64 {
            assert_eq!(seen.check(&Identity::user(format!("u{i}")), i + 2), None);
        }
        assert_eq!(seen.check(&Identity::user("u42"), 9_000), Some(44));
        assert_eq!(
            seen.check(&Identity::anonymous("u42"), 9_001),
            None,
            "another kind of id"
        );
        seen.reserve(100_000);
        assert_eq!(seen.check(&Identity::user("u4999"), 9_002), Some(5_001));
        assert_eq!(seen.len, 5_001);
    }
}
