//! Repeated identities in one input: the streaming check (the line an
//! identity was first seen on) and, for `--duplicates last` on a file, a
//! first pass that finds each repeated identity's last row.

use std::collections::HashMap;
use std::num::NonZeroU64;

use segment_client::Identity;

use super::StopSignal;
use super::planner::Planner;
use crate::mapping::Mapping;
use crate::source::{IdentityScan, ReadProgress, Source, SourceError, SourceFormat};
use crate::state::stable_hash;
use crate::{Location, Record, RecordError};

/// Records read before the duplicate table is sized from the source's size
/// (or its expected record count) and the share of new identities.
pub(crate) const SIZING_SAMPLE: u64 = 1_024;

/// Where a row starts: its line, and for a JSON array element its column,
/// as several elements may share a line. Ordered as in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct RowAt {
    pub line: u64,
    pub column: Option<NonZeroU64>,
}

impl RowAt {
    /// Where the record at `location` starts.
    pub fn of(location: &Location) -> Self {
        Self {
            line: location.line,
            column: location.column,
        }
    }

    /// A row that is alone on the line it starts on.
    fn line(line: u64) -> Self {
        Self { line, column: None }
    }
}

/// Rows whose identity is on several rows, found by reading the source once
/// before the run (`--duplicates last`): identity hash -> where its last row
/// starts.
#[derive(Debug, Default)]
pub(crate) struct LastRows {
    pub rows: HashMap<u64, RowAt>,
    /// How many of those last rows the run has reached.
    pub reached: usize,
}

impl LastRows {
    /// Finds every identity on several rows of `source` (a file), and its
    /// last row. Bounded memory: identities the state knows are checked in
    /// the planner's per-slot array (4 bytes each, there anyway); each row
    /// of a new one takes 16 bytes in a list dropped at the end (a JSON
    /// array's new identities, 12 bytes each in a table); only the repeated
    /// ones are kept. Stops early at a stop (the run then reads nothing
    /// either).
    ///
    /// # Errors
    /// When an NDJSON object a repeated identity's last row may be on (its
    /// identity read without parsing it) cannot be read again to settle
    /// that: the file cannot be opened again.
    pub fn scan(
        mut source: Source,
        mapping: &Mapping,
        stop: &StopSignal,
        planner: Option<&mut Planner>,
    ) -> Result<LastRows, SourceError> {
        let mut pass = FirstPass {
            rows: Vec::new(),
            // A JSON array may put several elements on one line, which then
            // names no one row: its rows are checked in file order as they
            // come, in a table, as before the list.
            seen: (source.format() == SourceFormat::JsonArray).then(SeenIdentities::default),
            last: HashMap::new(),
            planner,
            progress: source.progress(),
            total_bytes: source.total_bytes(),
            expected_records: source.expected_records(),
            count: 0,
            new_in_sample: 0,
            key: String::new(),
        };
        let completed = pass.read(&mut source, mapping, stop);
        pass.finish(&source, mapping, stop, completed)
    }
}

/// Whether an identity was seen before in the first pass.
enum Observed {
    /// Not known to be repeated yet.
    Noted,
    /// Seen before (known to the state, or found in the table): its hash.
    Again(u64),
    /// A stop asks to end the pass.
    Stop,
}

/// How sure the first pass is that the run accepts a row.
#[derive(Clone, Copy)]
enum Row {
    /// Read as the run reads it.
    Accepted,
    /// Its identity read from an object not parsed: the run may refuse it.
    Scanned,
}

/// A row of an identity the state does not know.
#[derive(Clone, Copy)]
struct FirstRow {
    /// The identity's hash, odd (see [`identity_hash_of`]); its lowest bit
    /// cleared for a [`Row::Scanned`].
    tagged_hash: u64,
    line: u64,
}

impl FirstRow {
    fn new(hash: u64, line: u64, row: Row) -> Self {
        debug_assert_eq!(hash & 1, 1, "identity hashes are odd");
        let tagged_hash = match row {
            Row::Accepted => hash,
            Row::Scanned => hash & !1,
        };
        Self { tagged_hash, line }
    }

    fn hash(self) -> u64 {
        self.tagged_hash | 1
    }

    fn scanned(self) -> bool {
        self.tagged_hash & 1 == 0
    }
}

/// The first pass's bookkeeping.
struct FirstPass<'a> {
    /// Every row of a new identity, sorted at the end to find the repeated
    /// ones: written in order, where a table looked up at each row waited
    /// on memory for every one (5% of a run at a million identities).
    rows: Vec<FirstRow>,
    /// For a JSON array, new identities instead: hash -> first line.
    seen: Option<SeenIdentities>,
    /// Repeated identities found as they come: hash -> the last row so far.
    last: HashMap<u64, RowAt>,
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
    /// Notes every row of `source`; `false` if a stop ended the pass.
    fn read(&mut self, source: &mut Source, mapping: &Mapping, stop: &StopSignal) -> bool {
        // CSV rows are read field by field, without building records.
        let wanted = mapping.identity_columns();
        while let Some(next) = source.next_csv_fields(wanted) {
            let Some((line, [user_id, anonymous_id])) = next else {
                return true;
            };
            // As `Mapping::apply` reads a CSV identity: trimmed, empty is absent.
            if !self.take_row(user_id.trim(), anonymous_id.trim(), RowAt::line(line), stop) {
                return false;
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
                        return self.observe_record(object.parse(), mapping, stop);
                    };
                    match self.observe(user_id, anonymous_id, object.line, Row::Scanned, stop) {
                        Observed::Stop => false,
                        Observed::Noted => true,
                        // A scan's answer is sure only for an object the
                        // run accepts: the object decides once parsed.
                        Observed::Again(_) => self.observe_record(object.parse(), mapping, stop),
                    }
                });
                match went_on {
                    None => break,
                    Some(Some(true)) => {}
                    Some(None) => return true,
                    Some(Some(false)) => return false,
                }
            }
        }
        for record in source.by_ref() {
            if !self.observe_record(record, mapping, stop) {
                return false;
            }
        }
        // A fatal error is the run's to report, when it reads the same
        // source; what the scan found before it still holds.
        let _ = source.take_fatal();
        true
    }

    /// Notes a record as the run reads it: a row, if it has an identity.
    /// `false` when a stop asks to end the pass.
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
        let at = RowAt::of(&record.location);
        self.take_row(user_id, anonymous_id, at, stop)
    }

    /// Notes a row the run accepts: the last so far of its identity if
    /// that is known to be repeated yet. `false` when a stop asks to end
    /// the pass.
    fn take_row(
        &mut self,
        user_id: &str,
        anonymous_id: &str,
        at: RowAt,
        stop: &StopSignal,
    ) -> bool {
        match self.observe(user_id, anonymous_id, at.line, Row::Accepted, stop) {
            Observed::Stop => false,
            Observed::Noted => true,
            Observed::Again(hash) => {
                self.last.insert(hash, at);
                true
            }
        }
    }

    /// Notes an identity on `line`, a row as sure as `row`.
    fn observe(
        &mut self,
        user_id: &str,
        anonymous_id: &str,
        line: u64,
        row: Row,
        stop: &StopSignal,
    ) -> Observed {
        if user_id.is_empty() && anonymous_id.is_empty() {
            return Observed::Noted;
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
            let size = (self.total_bytes, self.expected_records);
            match &mut self.seen {
                Some(seen) => size_duplicate_table(seen, &self.progress, size, share),
                None => {
                    if let Some(rows) = expected_identities(&self.progress, size, share) {
                        self.rows.reserve(rows.saturating_sub(self.rows.len()));
                    }
                }
            }
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
        match known {
            Some(Some(_)) => Observed::Again(hash),
            Some(None) => Observed::Noted,
            None => {
                self.new_in_sample += u64::from(self.count <= SIZING_SAMPLE);
                match &mut self.seen {
                    Some(seen) => match seen.check_hash(hash, line) {
                        Some(_) => Observed::Again(hash),
                        None => Observed::Noted,
                    },
                    None => {
                        self.rows.push(FirstRow::new(hash, line, row));
                        Observed::Noted
                    }
                }
            }
        }
    }

    /// Finds the new identities on several rows and their last rows. A
    /// repeated identity's last row is its last the run accepts after its
    /// first: scanned rows past the last sure one are parsed, from the file
    /// read again. Most NDJSON rows are scanned, so an NDJSON file with a
    /// repeated identity is read a third time, up to its last such row.
    fn finish(
        self,
        source: &Source,
        mapping: &Mapping,
        stop: &StopSignal,
        completed: bool,
    ) -> Result<LastRows, SourceError> {
        if let Some(planner) = self.planner {
            planner.forget_seen();
        }
        let (mut rows, mut last) = (self.rows, self.last);
        rows.sort_unstable_by_key(|row| (row.hash(), row.line));
        // (line, hash) of each scanned row that may be a last row.
        let mut unsure = Vec::new();
        for repeated in rows.chunk_by(|a, b| a.hash() == b.hash()) {
            // The first row is never a last row, whatever the run makes of it.
            for row in repeated[1..].iter().rev() {
                if !row.scanned() {
                    last.insert(row.hash(), RowAt::line(row.line));
                    break;
                }
                unsure.push((row.line, row.hash()));
            }
        }
        drop(rows);
        if !unsure.is_empty() && completed {
            unsure.sort_unstable();
            settle_scanned(source.reopen_file()?, &unsure, mapping, stop, &mut last);
        }
        Ok(LastRows {
            rows: last,
            reached: 0,
        })
    }
}

/// Parses the objects on the lines of `unsure` (sorted), and makes each the
/// run accepts its identity's last row if it is later than the one known.
fn settle_scanned(
    mut source: Source,
    unsure: &[(u64, u64)],
    mapping: &Mapping,
    stop: &StopSignal,
    last: &mut HashMap<u64, RowAt>,
) {
    source.keep_only(mapping.identity_names());
    let mut next = unsure.iter().peekable();
    let mut read = 0u64;
    while next.peek().is_some() {
        let went_on = source.next_unparsed(|mut object| {
            read += 1;
            if read.is_multiple_of(SIZING_SAMPLE) && stop.is_stopped() {
                return false;
            }
            while next.next_if(|(line, _)| *line < object.line).is_some() {}
            let Some(&(line, hash)) = next.next_if(|(line, _)| *line == object.line) else {
                return true;
            };
            let accepted = object
                .parse()
                .ok()
                .and_then(|record| mapping.identity_of(&record).ok());
            // A row whose identity changed since it was scanned is not its
            // identity's (the run then finds the file changed).
            if accepted.is_some_and(|identity| identity_hash(&identity) == hash) {
                let known = last.entry(hash).or_default();
                *known = RowAt::line(line).max(*known);
            }
            true
        });
        if !matches!(went_on, Some(Some(true))) {
            break;
        }
    }
}

/// Sizes the duplicate table for the whole source, so it does not grow (and
/// briefly hold its old and new tables at once, 2.5x its size) later; see
/// [`expected_identities`].
pub(crate) fn size_duplicate_table(
    seen: &mut SeenIdentities,
    progress: &ReadProgress,
    size: (Option<u64>, Option<u64>),
    share: f64,
) {
    if let Some(identities) = expected_identities(progress, size, share) {
        seen.reserve(identities);
    }
}

/// How many identities a source holds that take room, estimated after
/// [`SIZING_SAMPLE`] records: from the bytes they took when the source has
/// a byte count (a file), else from the record count it expects (a
/// PostgreSQL table's planner estimate, [`Source::expected_records`]);
/// neither, `None`. `share` is the share of the sample's identities that
/// take room (the new ones, with a state).
fn expected_identities(
    progress: &ReadProgress,
    (total_bytes, expected_records): (Option<u64>, Option<u64>),
    share: f64,
) -> Option<usize> {
    let read = progress.bytes_read();
    let records = match (total_bytes.filter(|_| read > 0), expected_records) {
        (Some(total), _) => total as f64 / read as f64 * SIZING_SAMPLE as f64,
        (None, Some(expected)) => expected as f64,
        (None, None) => return None,
    };
    Some((records * share * 1.05) as usize)
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
    use super::*;

    /// The first pass over `data` as a file named `name` (a scanned object
    /// may be read again from it).
    fn last_rows_at(name: &str, format: SourceFormat, data: &[u8]) -> HashMap<u64, RowAt> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        let source = Source::open_as(&path, format).unwrap();
        let mapping = Mapping::new(None, &["id", "email"]).unwrap();
        LastRows::scan(source, &mapping, &StopSignal::default(), None)
            .unwrap()
            .rows
    }

    /// As [`last_rows_at`], the lines only.
    fn last_rows(name: &str, format: SourceFormat, data: &[u8]) -> HashMap<u64, u64> {
        let rows = last_rows_at(name, format, data).into_iter();
        rows.map(|(hash, at)| (hash, at.line)).collect()
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
    fn a_scanned_row_after_a_parsed_one_is_the_last_only_if_the_run_accepts_it() {
        // Rows 2 (u1) and 5 (u2) are parsed in the first pass (their
        // identity follows a nested object the scan does not read); the
        // rows after them are scanned, and settled from the file read again.
        let ndjson = [
            r#"{"id":"u1"}"#,
            r#"{"n":{"id":"x"},"id":"u1"}"#,
            r#"{"id":"u1","email":"a"}"#,
            r#"{"id":"u2"}"#,
            r#"{"n":{"id":"x"},"id":"u2"}"#,
            r#"{"id":"u2","email":}"#,
            r#"{"id":"u3"}"#,
            r#"{"id":"u3"} x"#,
            r#"{"id":"u3"}"#,
            r#"{"id":"u3","email":}"#,
        ]
        .join("\n");
        let found = last_rows("t.ndjson", SourceFormat::Ndjson, ndjson.as_bytes());
        let expected: HashMap<u64, u64> = [
            (identity_hash_of("u1", ""), 3),
            (identity_hash_of("u2", ""), 5),
            (identity_hash_of("u3", ""), 9),
        ]
        .into();
        assert_eq!(found, expected);
    }

    #[test]
    fn a_scanned_row_whose_identity_changed_since_is_not_its_identitys_last() {
        // The file as read again: line 2 is now u2's, not u1's.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.ndjson");
        std::fs::write(&path, "{\"id\":\"u1\"}\n{\"id\":\"u2\"}\n").unwrap();
        let mapping = Mapping::new(None, &["id", "email"]).unwrap();
        let settled = |unsure: &[(u64, u64)]| {
            let source = Source::open_as(&path, SourceFormat::Ndjson).unwrap();
            let mut last = HashMap::new();
            settle_scanned(source, unsure, &mapping, &StopSignal::default(), &mut last);
            last
        };
        let (u1, u2) = (identity_hash_of("u1", ""), identity_hash_of("u2", ""));
        assert_eq!(settled(&[(2, u1)]), HashMap::new());
        let expected = [(u1, RowAt::line(1)), (u2, RowAt::line(2))].into();
        assert_eq!(settled(&[(1, u1), (2, u2)]), expected);
    }

    #[test]
    fn array_elements_sharing_a_line_are_taken_in_file_order() {
        // A JSON array may hold several elements on one line: a line is not
        // a row there. u1's first row is parsed (its id follows a nested
        // object), its next two are scanned; its last row is on line 2.
        let shared = "[{\"n\":{\"id\":\"x\"},\"id\":\"u1\"},{\"id\":\"u1\"},\n{\"id\":\"z\"},{\"id\":\"u1\"}]\n";
        let found = last_rows("t.json", SourceFormat::JsonArray, shared.as_bytes());
        assert_eq!(found, [(identity_hash_of("u1", ""), 2)].into());
        // b's two rows share line 1 with a's: its last starts at column 24.
        let one_line = r#"[{"id":"a"},{"id":"b"},{"id":"b"}]"#;
        let found = last_rows_at("t.json", SourceFormat::JsonArray, one_line.as_bytes());
        let last = RowAt {
            line: 1,
            column: NonZeroU64::new(24),
        };
        assert_eq!(found, [(identity_hash_of("b", ""), last)].into());
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
