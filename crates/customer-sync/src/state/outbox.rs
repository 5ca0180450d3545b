//! The outbox log: one JSON line per event, appended before the event is
//! queued, read back after a crash.
//!
//! # Why not segment-client's outbox
//!
//! segment-client has a durable outbox of its own (feature `outbox`): a
//! SQLite table, a row inserted per event before it is sent and deleted once
//! Segment answered. The two are kept apart on purpose:
//!
//! * They answer different questions. The client's is for a long-lived
//!   process with no source to read again: it must hold every event until
//!   answered, and knows nothing of identities. This one is read against the
//!   source: an entry is resent only if its record is read again unchanged,
//!   superseded if it changed, and that needs the identity key, payload hash
//!   and source fingerprint it carries, and the state's rows to tell what
//!   settled. Deletions are unnecessary: the `records` row already says what
//!   settled, and the whole log is truncated when a run ends clean.
//! * It is cheaper where a sync pays it, once per record of a first run:
//!   `cargo bench -p customer-sync --bench outbox` measured 0.45 us of CPU per
//!   event for this log against 2.3 us for the insert-then-delete table
//!   (200,000 events; 0.09 s against 0.45-0.47 s CPU), about 1.8 s more CPU
//!   per million records, which alone would break the first stateful run's
//!   1.4x budget.
//!
//! Running both at once would write every event twice, so the sync never
//! turns the client's outbox on. What could be shared later is the log
//! format (a client outbox as an append-only log with periodic compaction
//! would be cheaper too); that is the client crate's call, and it is being
//! changed in parallel, so nothing is merged here.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use super::hash::{needs_escape, stable_hash};
use super::{StateError, StateIndex, StateStore};
use crate::mapping::ChangeKind;

/// One record in an outbox chunk: the event exactly as it is sent, and
/// what its record's row needs once Segment answers.
#[derive(Debug, Clone)]
pub(crate) struct OutboxEntry {
    /// [`identity_key`] of the record.
    pub key: String,
    /// The payload hash.
    pub hash: u64,
    /// The record's source fingerprint.
    pub source_hash: u64,
    /// The event's `messageId`, reused on every resend.
    pub message_id: String,
    /// Where the record was read.
    pub source: String,
    /// Its line.
    pub line: u64,
    /// Its top-level trait names, as a JSON array (see [`trait_names`]).
    pub traits: String,
    /// The serialised event.
    pub event: Vec<u8>,
    /// The record's `[events]` tracks sent after it, serialised, with their kinds.
    pub tracks: Vec<(Vec<u8>, ChangeKind)>,
    /// The accepted traits to keep for `[events]`, as a JSON object.
    pub values: Option<String>,
    /// The kind of `event` when it is an `[events]` track (a record sent
    /// without its identify); `Removed` for the `removed` event of an
    /// identity gone from the source.
    pub kind: Option<ChangeKind>,
}

impl OutboxEntry {
    /// Whether the entry is the `removed` event of an identity gone from the source.
    pub(crate) fn is_removal(&self) -> bool {
        self.kind == Some(ChangeKind::Removed)
    }
}

/// An [`OutboxEntry`] borrowed from the record being sent, for writing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutboxEntryRef<'a> {
    /// [`identity_key`] of the record.
    pub key: &'a str,
    /// The payload hash.
    pub hash: u64,
    /// The record's source fingerprint.
    pub source_hash: u64,
    /// The event's `messageId`.
    pub message_id: &'a str,
    /// Where the record was read.
    pub source: &'a str,
    /// Its line.
    pub line: u64,
    /// Its top-level trait names, as a JSON array.
    pub traits: &'a str,
    /// The serialised event.
    pub event: &'a [u8],
    /// The record's `[events]` tracks sent after it, serialised, with their kinds.
    pub tracks: &'a [(&'a [u8], ChangeKind)],
    /// The accepted traits to keep for `[events]`, as a JSON object.
    pub values: Option<&'a str>,
    /// The kind of `event` when it is an `[events]` track.
    pub kind: Option<ChangeKind>,
}

impl OutboxEntryRef<'_> {
    /// Appends this entry as one JSON line to `out`.
    pub(crate) fn write_line(&self, out: &mut Vec<u8>) {
        // Written by hand, not through serde: its per-field machinery cost
        // 2,200 instructions a record (callgrind), a tenth of a first run's
        // state cost. The strings come out as serde_json writes them.
        out.extend_from_slice(b"{\"key\":");
        write_json_str(out, self.key);
        out.extend_from_slice(b",\"hash\":");
        write_u64(out, self.hash);
        out.extend_from_slice(b",\"sourceHash\":");
        write_u64(out, self.source_hash);
        out.extend_from_slice(b",\"messageId\":");
        write_json_str(out, self.message_id);
        out.extend_from_slice(b",\"source\":");
        write_json_str(out, self.source);
        out.extend_from_slice(b",\"line\":");
        write_u64(out, self.line);
        out.extend_from_slice(b",\"traits\":");
        out.extend_from_slice(self.traits.as_bytes());
        if let Some(values) = self.values {
            out.extend_from_slice(b",\"values\":");
            out.extend_from_slice(values.as_bytes());
        }
        if let Some(kind) = self.kind {
            out.extend_from_slice(b",\"kind\":\"");
            out.extend_from_slice(kind.as_str().as_bytes());
            out.push(b'"');
        }
        if !self.tracks.is_empty() {
            out.extend_from_slice(b",\"tracks\":[");
            for (i, (track, kind)) in self.tracks.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"kind\":\"");
                out.extend_from_slice(kind.as_str().as_bytes());
                out.extend_from_slice(b"\",\"event\":");
                out.extend_from_slice(track);
                out.push(b'}');
            }
            out.push(b']');
        }
        out.extend_from_slice(b",\"event\":");
        out.extend_from_slice(self.event);
        out.extend_from_slice(b"}\n");
    }
}

impl OutboxEntry {
    /// Parses one line written by [`OutboxEntryRef::write_line`], as bytes
    /// (a torn line may not be valid UTF-8).
    pub(crate) fn parse_bytes(line: &[u8]) -> Option<OutboxEntry> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Line<'a> {
            key: String,
            hash: u64,
            source_hash: u64,
            message_id: String,
            source: String,
            line: u64,
            #[serde(borrow)]
            traits: &'a serde_json::value::RawValue,
            #[serde(borrow)]
            event: &'a serde_json::value::RawValue,
            #[serde(borrow, default)]
            tracks: Vec<Track<'a>>,
            #[serde(borrow, default)]
            values: Option<&'a serde_json::value::RawValue>,
            #[serde(default)]
            kind: Option<&'a str>,
        }
        #[derive(serde::Deserialize)]
        struct Track<'a> {
            kind: &'a str,
            #[serde(borrow)]
            event: &'a serde_json::value::RawValue,
        }
        let parsed: Line<'_> = serde_json::from_slice(line).ok()?;
        let tracks = parsed
            .tracks
            .iter()
            .map(|t| {
                Some((
                    t.event.get().as_bytes().to_vec(),
                    ChangeKind::parse(t.kind)?,
                ))
            })
            .collect::<Option<_>>()?;
        Some(OutboxEntry {
            key: parsed.key,
            hash: parsed.hash,
            source_hash: parsed.source_hash,
            message_id: parsed.message_id,
            source: parsed.source,
            line: parsed.line,
            traits: parsed.traits.get().to_owned(),
            event: parsed.event.get().as_bytes().to_vec(),
            tracks,
            values: parsed.values.map(|v| v.get().to_owned()),
            kind: match parsed.kind {
                None => None,
                Some(kind) => Some(ChangeKind::parse(kind)?),
            },
        })
    }
}

/// `text` as a JSON string: copied as it is when nothing in it needs an
/// escape (identity keys, ids and paths almost never do), else by serde_json.
fn write_json_str(out: &mut Vec<u8>, text: &str) {
    if needs_escape(text.as_bytes()) {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
        return;
    }
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
}

/// `n` in decimal, two digits at a time.
fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    const PAIRS: [u8; 200] = {
        let mut pairs = [0; 200];
        let mut i = 0;
        while i < 100 {
            pairs[2 * i] = b'0' + (i / 10) as u8;
            pairs[2 * i + 1] = b'0' + (i % 10) as u8;
            i += 1;
        }
        pairs
    };
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        at -= 2;
        let pair = n as usize * 2;
        digits[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        at -= 1;
        digits[at] = b'0' + n as u8;
    }
    out.extend_from_slice(&digits[at..]);
}

/// An outbox entry still in flight, left by a run that did not finish.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    /// The entry.
    pub entry: OutboxEntry,
    /// Its record's row, if the state has the identity.
    pub row: Option<i64>,
}

/// Where an outbox entry still in flight is: what a run keeps of it until
/// its identity comes up, when [`StateStore::load_pending`] reads it back.
/// (Kept whole, 40,000 entries of 2 KB events took a rerun to 136 MB.)
#[derive(Debug, Clone)]
pub(crate) struct PendingRef {
    /// Its [`identity_key`].
    pub key: String,
    /// Its record's row, if the state has the identity.
    pub row: Option<i64>,
    /// Its line in the log: the pending entries sort by it, oldest first.
    pub order: usize,
    /// Where its line starts in the log, and its length without the newline.
    offset: u64,
    len: usize,
}

/// What [`StateStore::pending`] found in the outbox log.
#[derive(Debug, Clone, Default)]
pub(crate) struct OutboxScan {
    /// The newest entry of each identity that is still in flight, oldest first.
    pub pending: Vec<PendingRef>,
    /// Older entries of an identity that has a newer one: never sent again.
    pub superseded: u64,
    /// Lines cut short by a crash (not parseable): skipped.
    pub torn: u64,
}

/// Whether `file` is non-empty and does not end with a newline.
pub(super) fn ends_mid_line(file: &mut File) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    if file.metadata()?.len() == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

impl StateStore {
    /// The outbox log's path.
    pub(crate) fn outbox_path(&self) -> PathBuf {
        self.path.with_extension("outbox")
    }

    /// Appends a chunk of entries (lines from [`OutboxEntryRef::write_line`])
    /// in one write, before they are sent.
    ///
    /// # Errors
    /// The log cannot be opened or written.
    pub(crate) fn append_outbox(&mut self, entries: &[u8]) -> Result<(), StateError> {
        let path = self.outbox_path();
        let file = match &mut self.outbox {
            Some(file) => file,
            slot => {
                let mut file = OpenOptions::new()
                    .create(true)
                    .read(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| StateError::io(&path, "cannot open the outbox", e))?;
                // A crash mid-write leaves a partial last line: end it, so the
                // next entry starts on a line of its own.
                if ends_mid_line(&mut file)
                    .map_err(|e| StateError::io(&path, "cannot read the outbox", e))?
                {
                    file.write_all(b"\n")
                        .map_err(|e| StateError::io(&path, "cannot write the outbox", e))?;
                }
                slot.insert(file)
            }
        };
        file.write_all(entries)
            .map_err(|e| StateError::io(&path, "cannot write the outbox", e))
    }

    /// Empties the outbox log; for the end of a run with nothing in flight.
    ///
    /// # Errors
    /// The log cannot be truncated.
    pub(crate) fn clear_outbox(&mut self) -> Result<(), StateError> {
        (self.outbox, self.outbox_reader) = (None, None);
        let path = self.outbox_path();
        match File::options().write(true).open(&path) {
            Ok(file) => file
                .set_len(0)
                .map_err(|e| StateError::io(&path, "cannot empty the outbox", e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StateError::io(&path, "cannot empty the outbox", e)),
        }
    }

    /// What runs that did not finish left in the outbox: for each identity,
    /// its newest entry, if Segment has not answered for it yet. An older
    /// entry for an identity with a newer one is superseded and never sent
    /// again. The log is read as bytes: a line cut short by a crash (even
    /// inside a multi-byte character) is skipped and counted, and the lines
    /// after it are read as usual.
    ///
    /// The log is streamed: after a kill late in a big run it holds an
    /// entry per record sent (hundreds of MB), nearly all of them settled.
    /// Each line's identity and `messageId` are read first and checked
    /// against the state; only an entry still in flight is read whole, to
    /// know it is whole, and only where it is kept. Besides those, each
    /// identity in the log costs a 64-bit hash, to count the superseded.
    ///
    /// # Errors
    /// The log or the database cannot be read.
    pub(crate) fn pending(&self, index: &StateIndex) -> Result<OutboxScan, StateError> {
        let path = self.outbox_path();
        let cannot_read = |e| StateError::io(&path, "cannot read the outbox", e);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(OutboxScan::default()),
            Err(e) => return Err(cannot_read(e)),
        };
        let mut input = BufReader::with_capacity(64 * 1024, file);
        let mut scan = OutboxScan::default();
        let mut identities: HashSet<u64> = HashSet::new();
        // Identity key -> its newest entry, while that entry is in flight.
        let mut in_flight: HashMap<String, PendingRef> = HashMap::new();
        let (mut line, mut place, mut next_offset) = (Vec::new(), 0, 0u64);
        loop {
            line.clear();
            let read = input.read_until(b'\n', &mut line).map_err(cannot_read)?;
            if read == 0 {
                break;
            }
            let offset = next_offset;
            next_offset += read as u64;
            place += 1;
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Some(head) = EntryHead::parse(text) else {
                scan.torn += 1;
                continue;
            };
            // A record with no row never settled; one with a row settled
            // this entry if it is the row's last message.
            let key_hash = stable_hash(head.key.as_bytes());
            let (row, settled) = self.settled(index, key_hash, &head.key, &head.message_id)?;
            if !settled && OutboxEntry::parse_bytes(text).is_none() {
                scan.torn += 1;
                continue;
            }
            if !identities.insert(key_hash) {
                scan.superseded += 1;
            }
            match settled {
                true => {
                    in_flight.remove(head.key.as_ref());
                }
                false => {
                    let found = PendingRef {
                        key: head.key.into_owned(),
                        row,
                        order: place,
                        offset,
                        len: text.len(),
                    };
                    in_flight.insert(found.key.clone(), found);
                }
            }
        }
        scan.pending = in_flight.into_values().collect();
        scan.pending.sort_unstable_by_key(|pending| pending.order);
        Ok(scan)
    }

    /// The entry `pending` says is in flight, read back from the log.
    ///
    /// # Errors
    /// The log cannot be read, or no longer has that entry there (it was
    /// changed during the run).
    pub(crate) fn load_pending(&mut self, pending: PendingRef) -> Result<Pending, StateError> {
        use std::io::{Read, Seek, SeekFrom};
        let path = self.outbox_path();
        let cannot_read = |e| StateError::io(&path, "cannot read the outbox", e);
        // A handle of its own, for reading only: opening the one for
        // appending may end a torn last line, and `status` writes nothing.
        let file = match &mut self.outbox_reader {
            Some(file) => file,
            slot => slot.insert(File::open(&path).map_err(cannot_read)?),
        };
        let mut text = vec![0; pending.len];
        let read = file
            .seek(SeekFrom::Start(pending.offset))
            .and_then(|_| file.read_exact(&mut text));
        match read {
            Ok(()) => {}
            Err(e) if e.kind() != std::io::ErrorKind::UnexpectedEof => return Err(cannot_read(e)),
            // Cut shorter since the scan: changed, as below.
            Err(_) => text.clear(),
        }
        match OutboxEntry::parse_bytes(&text) {
            Some(entry) if entry.key == pending.key => Ok(Pending {
                entry,
                row: pending.row,
            }),
            _ => Err(cannot_read(std::io::Error::other(format!(
                "the entry of {} is no longer at byte {}: the outbox changed since it was read",
                pending.key, pending.offset
            )))),
        }
    }
}

/// The fields of an outbox line that tell whether its entry settled,
/// borrowed where the line has no escapes.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntryHead<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    message_id: Cow<'a, str>,
}

impl<'a> EntryHead<'a> {
    /// `None` for a line that is not whole JSON (cut short by a crash).
    fn parse(line: &'a [u8]) -> Option<Self> {
        serde_json::from_slice(line).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_written_as_serde_json_writes_it() {
        for (key, source, n) in [
            ("u:cus_1", "customers.csv", 0),
            (
                "a:\"quoted\" \\ back\nslash\u{1}",
                "dir/ü €.ndjson",
                u64::MAX,
            ),
            ("u:0123456\u{1f}", "01234567\"", 9),
            ("u:01234567890123\\", "\u{7f}\u{80}ÿ", 10),
            ("u:x", "y", 1_000_000_007),
        ] {
            let mut line = Vec::new();
            OutboxEntryRef {
                key,
                hash: n,
                source_hash: 1234567890,
                message_id: "0746ad9a-cc62-4c17-ade5-61f66f76b719",
                source,
                line: 42,
                traits: r#"["a"]"#,
                event: b"{}",
                tracks: &[],
                values: None,
                kind: None,
            }
            .write_line(&mut line);
            let expected = serde_json::json!({
                "key": key, "hash": n, "sourceHash": 1234567890u64,
                "messageId": "0746ad9a-cc62-4c17-ade5-61f66f76b719",
                "source": source, "line": 42, "traits": ["a"], "event": {},
            });
            // The same bytes serde_json writes for those fields, in that order.
            let head = format!(
                "{{\"key\":{},\"hash\":{n},\"sourceHash\":1234567890,\"messageId\":\"0746ad9a-cc62-4c17-ade5-61f66f76b719\",\"source\":{},\"line\":42,",
                serde_json::to_string(key).unwrap(),
                serde_json::to_string(source).unwrap(),
            );
            assert!(
                line.starts_with(head.as_bytes()),
                "{}",
                String::from_utf8_lossy(&line)
            );
            let parsed: serde_json::Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(parsed, expected);
            let entry = OutboxEntry::parse_bytes(&line).unwrap();
            assert_eq!(
                (entry.key.as_str(), entry.hash, entry.source.as_str()),
                (key, n, source)
            );
        }
    }
}
