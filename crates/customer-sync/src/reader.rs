//! The reader: source -> mapping -> duplicate check -> state plan -> the
//! client's queue, on a blocking thread, in chunks whose outbox entries are
//! written in one write before they are queued.

use std::collections::HashMap;
use std::sync::Mutex;

use segment_client::{HttpClient, Identity, PreparedEvent};

use crate::engine::SyncError;
use crate::mapping::{DuplicatePolicy, MappedCustomer, Mapping};
use crate::plan::{Decision, Planner};
use crate::record::{Location, RecordError, RecordErrorKind};
use crate::report::Counters;
use crate::source::{ReadProgress, Source};
use crate::state::{OutboxEntryRef, Pending, StateStore, identity_key, stable_hash};
use crate::tracker::{InFlightRecord, StateRef, Tracker, lock};

/// Records per chunk with a state: one outbox write and transaction each.
const CHUNK: usize = 2_048;
/// Records per chunk without a state: one wake-up of the client's worker each.
const CHUNK_STATELESS: usize = 64;
/// Records read before the duplicate table is sized from the source's size.
const SIZING_SAMPLE: u64 = 1_024;

/// What the state plan says of a record to send.
#[derive(Debug, Default, Clone, Copy)]
struct Planned {
    hash: u64,
    row: Option<i64>,
    source_hash: u64,
}

/// Where an event on its way to the client comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A record read now: its outbox entry is written before it is queued.
    Read,
    /// A record read now whose payload an earlier run left in flight: the
    /// stored event is queued again, its entry is in the outbox already.
    Resent,
    /// An entry left in flight for an identity this source does not have.
    ResentNotInSource,
}

/// One event on its way to the client: validated and serialised.
pub(crate) struct Outgoing {
    event: PreparedEvent,
    at: Location,
    /// What its state row needs, when there is a state.
    state: Option<StateRef>,
    origin: Origin,
}

/// Rows whose identity is on several rows, found by reading the source once
/// before the run (`--duplicates last`): identity hash -> the last row's line.
#[derive(Debug, Default)]
pub(crate) struct LastRows {
    lines: HashMap<u64, u64>,
    /// How many of those last rows the run has reached.
    reached: usize,
}

impl LastRows {
    /// Finds every identity on several rows of `source`, and its last row.
    /// Bounded memory: 12 bytes per identity while it reads, then only the
    /// repeated ones are kept.
    pub fn scan(source: Source, mapping: &Mapping) -> Result<LastRows, SyncError> {
        let mut source = source;
        let mut seen = SeenIdentities::default();
        let mut lines = HashMap::new();
        let (progress, total_bytes) = (source.progress(), source.total_bytes());
        let mut count = 0u64;
        for record in source.by_ref().flatten() {
            count += 1;
            if count == SIZING_SAMPLE + 1 {
                size_duplicate_table(&mut seen, &progress, total_bytes, 1.0);
            }
            // A record without an identity is reported by the run itself.
            let Ok((identity, _)) = mapping.fingerprint(&record) else {
                continue;
            };
            if seen.check(&identity, record.location.line).is_some() {
                lines.insert(identity_hash(&identity), record.location.line);
            }
        }
        if let Some(error) = source.take_fatal() {
            // The run reads the same source and reports where it breaks;
            // what the scan found before that still holds.
            drop(error);
        }
        Ok(LastRows { lines, reached: 0 })
    }
}

/// Reads, maps, plans and queues every record, on a blocking thread.
pub(crate) struct Reader<'a> {
    pub client: &'a HttpClient,
    pub tracker: &'a Tracker,
    pub mapping: &'a Mapping,
    pub store: Option<&'a Mutex<StateStore>>,
    pub planner: Option<Planner>,
    pub duplicates: DuplicatePolicy,
    /// The pre-read's verdict on repeated identities, for `last` on a file.
    pub last_rows: Option<LastRows>,
    pub chunk: Vec<Outgoing>,
}

impl Reader<'_> {
    /// Reads the source to its end (or a stop), then sends what earlier
    /// runs left in flight for identities it did not have. Returns the
    /// source's name.
    pub fn read_all(&mut self, mut source: Source) -> Result<String, SyncError> {
        let read = self.read_records(&mut source);
        let fatal = source.take_fatal();
        let complete = read.is_ok() && fatal.is_none() && !self.tracker.stop.is_stopped();
        let mut changed = None;
        if complete {
            changed = self.last_rows.as_ref().and_then(|rows| {
                (rows.reached != rows.lines.len()).then(|| {
                    SyncError::new(
                        format!(
                            "{} changed while it was read (a repeated identity's last row moved)",
                            source.name()
                        ),
                        Some("run again once the file is no longer being written"),
                    )
                })
            });
            if let Some(planner) = self.planner.as_mut() {
                for pending in planner.take_unmatched() {
                    self.push_resent(pending, Origin::ResentNotInSource);
                }
            }
        }
        let flushed = self.flush_chunk();
        read?;
        flushed?;
        if let Some(error) = fatal {
            return Err(error.into());
        }
        if let Some(error) = changed {
            return Err(error);
        }
        Ok(source.name().to_owned())
    }

    fn read_records(&mut self, source: &mut Source) -> Result<(), SyncError> {
        let tracker = self.tracker;
        let mut seen = SeenIdentities::default();
        let mut new_in_sample = 0u64;
        let (progress, total_bytes) = (source.progress(), source.total_bytes());
        for item in source.by_ref() {
            if tracker.stop.is_stopped() {
                break;
            }
            Counters::add(&tracker.counters.read);
            if Counters::get(&tracker.counters.read) == SIZING_SAMPLE + 1
                && self.last_rows.is_none()
            {
                // Sized for the new identities only: known ones use the state index.
                let share = if self.planner.is_some() {
                    new_in_sample as f64 / SIZING_SAMPLE as f64
                } else {
                    1.0
                };
                size_duplicate_table(&mut seen, &progress, total_bytes, share);
            }
            let record = match item {
                Ok(record) => record,
                Err(error) => {
                    tracker.invalid(&error);
                    continue;
                }
            };
            let at = record.location.clone();
            // With a state, an unchanged record is skipped before it is mapped.
            let fingerprint = match self.planner.is_some() {
                true => match self.mapping.fingerprint(&record) {
                    Ok((identity, source_hash)) => {
                        let key = identity_key(&identity);
                        // Identities the state knows are checked in its index;
                        // only new ones take room in the duplicate table.
                        let known = self
                            .planner
                            .as_mut()
                            .and_then(|p| p.first_seen(&key, at.line));
                        let send = match known {
                            Some(first_line) => self.check_duplicate(first_line, &at, &identity),
                            None => {
                                new_in_sample += u64::from(
                                    Counters::get(&tracker.counters.read) <= SIZING_SAMPLE,
                                );
                                let first_line = match self.last_rows {
                                    Some(_) => None,
                                    None => seen.check(&identity, at.line),
                                };
                                self.check_duplicate(first_line, &at, &identity)
                            }
                        };
                        if !send {
                            continue;
                        }
                        if self
                            .planner
                            .as_mut()
                            .is_some_and(|p| p.unchanged(&key, source_hash))
                        {
                            Counters::add(&tracker.counters.skipped);
                            continue;
                        }
                        Some((key, source_hash))
                    }
                    Err(error) => {
                        tracker.invalid(&error);
                        continue;
                    }
                },
                false => None,
            };
            let mut mapped = match self.mapping.apply(&record) {
                Ok(mapped) => mapped,
                Err(error) => {
                    tracker.invalid(&error);
                    continue;
                }
            };
            if fingerprint.is_none() {
                let first_line = match self.last_rows {
                    Some(_) => None,
                    None => seen.check(&mapped.identity, at.line),
                };
                if !self.check_duplicate(first_line, &at, &mapped.identity) {
                    continue;
                }
            }
            match self.plan(&at, fingerprint.as_ref(), &mut mapped)? {
                Some(Ok(send)) => self.push(at, mapped, send),
                Some(Err(pending)) => {
                    let source_hash = fingerprint.as_ref().map_or(0, |f| f.1);
                    self.push_resent_read(*pending, at, mapped, source_hash);
                }
                None => continue,
            }
            if self.chunk.len() >= self.chunk_size() && !self.flush_chunk()? {
                break;
            }
        }
        Ok(())
    }

    /// Applies the duplicate policy; `false` means the record is not sent
    /// (and is counted and reported). `first_line` is where the identity
    /// was first seen in this read, if it was, for the streaming check.
    fn check_duplicate(
        &mut self,
        first_line: Option<u64>,
        at: &Location,
        identity: &Identity,
    ) -> bool {
        let tracker = self.tracker;
        if let Some(last_rows) = &mut self.last_rows {
            let Some(&last_line) = last_rows.lines.get(&identity_hash(identity)) else {
                return true;
            };
            if last_line == at.line {
                last_rows.reached += 1;
                return true;
            }
            // Superseded by a later row of the same identity: not sent.
            Counters::add(&tracker.counters.duplicates);
            Counters::add(&tracker.counters.skipped);
            tracker.write(|w| w.duplicate(at, identity, last_line));
            return false;
        }
        let Some(first_line) = first_line else {
            return true;
        };
        Counters::add(&tracker.counters.duplicates);
        let refuse = |why: &str| {
            RecordError::new(
                at.clone(),
                RecordErrorKind::DuplicateIdentity,
                format!("the same identity is on line {first_line}; {why}"),
            )
        };
        match self.duplicates {
            DuplicatePolicy::Last => {
                // Only a source that cannot be read twice (stdin) gets here:
                // the first row is already on its way, and sending this one
                // too could land in either order.
                tracker.invalid(&refuse(
                    "this input cannot be read twice to find the last row, so the first one was sent and this one was not (read from a file to send the last row)",
                ));
                false
            }
            DuplicatePolicy::First => {
                tracker.invalid(&refuse("the first one wins, so this one was not sent"));
                false
            }
            DuplicatePolicy::Error => {
                tracker.invalid(&refuse("duplicates are errors in this mapping"));
                false
            }
        }
    }

    /// Decides against the state: `Some(Ok(planned))` means send it,
    /// `Some(Err(pending))` means resend what an earlier run left in flight,
    /// `None` means nothing is sent (counted here).
    fn plan(
        &mut self,
        at: &Location,
        fingerprint: Option<&(String, u64)>,
        mapped: &mut MappedCustomer,
    ) -> Result<Option<Result<Planned, Box<Pending>>>, SyncError> {
        let (Some(planner), Some(store), Some((key, source_hash))) =
            (self.planner.as_mut(), self.store, fingerprint)
        else {
            return Ok(Some(Ok(Planned::default())));
        };
        let counters = &self.tracker.counters;
        let decision = planner.decide(&lock(store), key, mapped)?;
        counters
            .superseded
            .store(planner.superseded, std::sync::atomic::Ordering::Relaxed);
        match decision {
            Decision::Send { hash, row } => {
                return Ok(Some(Ok(Planned {
                    hash,
                    row,
                    source_hash: *source_hash,
                })));
            }
            Decision::Resend(pending) => return Ok(Some(Err(pending))),
            Decision::Skip => Counters::add(&counters.skipped),
            Decision::GiveUp { runs } => {
                Counters::add(&counters.given_up);
                self.tracker
                    .write(|w| w.given_up(at, &mapped.identity, runs));
            }
        }
        Ok(None)
    }

    /// Validates and serialises the record (an invalid one is reported and
    /// never reaches the outbox) and adds it to the chunk.
    fn push(&mut self, at: Location, mapped: MappedCustomer, planned: Planned) {
        let state = self.tracker.changes.is_some().then(|| StateRef {
            row: planned.row,
            hash: planned.hash,
            source_hash: planned.source_hash,
            traits: crate::state::trait_names(&mapped.traits),
        });
        match PreparedEvent::new(mapped.into_params()) {
            Ok(event) => self.chunk.push(Outgoing {
                event,
                at,
                state,
                origin: Origin::Read,
            }),
            Err(error) => {
                let kind = if error.code() == Some(segment_client::codes::PAYLOAD_TOO_LARGE) {
                    RecordErrorKind::PayloadTooLarge
                } else {
                    RecordErrorKind::InvalidPayload
                };
                self.tracker
                    .invalid(&RecordError::new(at, kind, error.message()));
            }
        }
    }

    /// A record read now with the payload an earlier run left in flight:
    /// its stored event goes again, under its first `messageId`. A stored
    /// event that no longer parses is replaced by the record just read.
    fn push_resent_read(
        &mut self,
        pending: Pending,
        at: Location,
        mapped: MappedCustomer,
        source_hash: u64,
    ) {
        match PreparedEvent::from_json(pending.entry.event.clone()) {
            Ok(event) => self.chunk.push(Outgoing {
                event,
                at,
                state: Some(StateRef {
                    row: pending.row,
                    hash: pending.entry.hash,
                    source_hash,
                    traits: pending.entry.traits,
                }),
                origin: Origin::Resent,
            }),
            Err(_) => {
                let planned = Planned {
                    hash: pending.entry.hash,
                    row: pending.row,
                    source_hash,
                };
                self.push(at, mapped, planned);
            }
        }
    }

    /// An entry left in flight for an identity the source does not have.
    fn push_resent(&mut self, pending: Pending, origin: Origin) {
        let at = Location::new(pending.entry.source.as_str(), pending.entry.line);
        match PreparedEvent::from_json(pending.entry.event) {
            Ok(event) => self.chunk.push(Outgoing {
                event,
                at,
                state: Some(StateRef {
                    row: pending.row,
                    hash: pending.entry.hash,
                    source_hash: pending.entry.source_hash,
                    traits: pending.entry.traits,
                }),
                origin,
            }),
            // Its record is not in the source to be sent afresh: the line is
            // as good as torn.
            Err(_) => Counters::add(&self.tracker.counters.superseded),
        }
    }

    /// Without a state there is nothing to write first, so chunks stay small.
    fn chunk_size(&self) -> usize {
        if self.tracker.changes.is_some() {
            CHUNK
        } else {
            CHUNK_STATELESS
        }
    }

    /// Writes the chunk's new entries to the outbox (and commits the
    /// outcomes that arrived meanwhile), then queues it. Returns `false`
    /// when the client was closed under it (a stop or a fatal error).
    fn flush_chunk(&mut self) -> Result<bool, SyncError> {
        let tracker = self.tracker;
        let chunk = std::mem::take(&mut self.chunk);
        if let Some(store) = self.store.filter(|_| tracker.changes.is_some())
            && let Err(error) = write_outbox(&mut lock(store), &chunk, tracker)
        {
            // Not durable, so not sent: reported as pending (the next run
            // reads them again).
            for out in &chunk {
                count_queued(tracker, out.origin);
                tracker.pend(&out.at, out.event.identity(), None);
            }
            return Err(error);
        }
        let mut events = Vec::with_capacity(chunk.len());
        for out in chunk {
            let record = InFlightRecord {
                at: out.at,
                identity: out.event.identity().clone(),
                state: out.state,
            };
            tracker.track(out.event.message_id(), record);
            events.push((out.event, out.origin));
        }
        // Queued in a tight loop, so the worker wakes about once per chunk.
        let mut events = events.into_iter();
        while let Some((event, origin)) = events.next() {
            let message_id = event.message_id().to_owned();
            count_queued(tracker, origin);
            if self.client.queue_prepared_blocking(event).is_err() {
                // Closed under us (a stop or a fatal error): not sent; their
                // outbox entries stay for the next run.
                let not_queued = std::iter::once((message_id, origin))
                    .chain(events.map(|(event, origin)| (event.message_id().to_owned(), origin)));
                for (i, (message_id, origin)) in not_queued.enumerate() {
                    if i > 0 {
                        count_queued(tracker, origin);
                    }
                    if let Some(record) = tracker.untrack(&message_id) {
                        tracker.pend(&record.at, &record.identity, None);
                    }
                }
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Counts an event handed to the client (or given up on at the door).
fn count_queued(tracker: &Tracker, origin: Origin) {
    let counters = &tracker.counters;
    match origin {
        Origin::Read => Counters::add(&counters.valid),
        Origin::Resent => {
            Counters::add(&counters.valid);
            Counters::add(&counters.recovered);
        }
        Origin::ResentNotInSource => {
            Counters::add(&counters.recovered);
            Counters::add(&counters.recovered_not_in_source);
        }
    }
}

/// Appends a chunk's new entries to the outbox log, then commits the
/// outcomes that arrived meanwhile in one transaction.
fn write_outbox(
    store: &mut StateStore,
    chunk: &[Outgoing],
    tracker: &Tracker,
) -> Result<(), SyncError> {
    let mut entries = Vec::with_capacity(chunk.len() * 700);
    for out in chunk.iter().filter(|out| out.origin == Origin::Read) {
        let Some(state) = &out.state else {
            continue;
        };
        OutboxEntryRef {
            key: &identity_key(out.event.identity()),
            hash: state.hash,
            source_hash: state.source_hash,
            message_id: out.event.message_id(),
            source: &out.at.source,
            line: out.at.line,
            traits: &state.traits,
            event: out.event.json(),
        }
        .write_line(&mut entries);
    }
    store.append_outbox(&entries)?;
    store.apply(&tracker.take_changes())?;
    Ok(())
}

/// Sizes the duplicate table for the whole source, estimated from the bytes
/// the first records took, so it does not grow (and briefly double) later.
fn size_duplicate_table(
    seen: &mut SeenIdentities,
    progress: &ReadProgress,
    total_bytes: Option<u64>,
    share: f64,
) {
    let read = progress.bytes_read();
    if let Some(total) = total_bytes.filter(|_| read > 0) {
        let estimate = total as f64 / read as f64 * SIZING_SAMPLE as f64 * share * 1.05;
        seen.reserve(estimate as usize);
    }
}

/// Identities already seen in this input: an open-addressing table of
/// 64-bit identity hashes with the line each was first seen on, 12 bytes a
/// slot, sized once from an estimate of the record count so it rarely grows.
#[derive(Default)]
pub(crate) struct SeenIdentities {
    /// 0 marks an empty slot; hashes are forced odd so they are never 0.
    keys: Vec<u64>,
    lines: Vec<u32>,
    len: usize,
}

impl SeenIdentities {
    /// Makes room for `records` identities without growing.
    pub fn reserve(&mut self, records: usize) {
        let wanted = records + records / 7 + 16;
        if wanted > self.keys.len() {
            self.rehash(wanted);
        }
    }

    /// Remembers `identity` at `line`; returns the earlier line if it was seen.
    pub fn check(&mut self, identity: &Identity, line: u64) -> Option<u64> {
        if (self.len + 1) * 8 > self.keys.len() * 7 {
            self.rehash((self.keys.len() * 3 / 2).max(1024));
        }
        let key = identity_hash(identity);
        let mut slot = self.slot(key);
        loop {
            match self.keys[slot] {
                0 => {
                    self.keys[slot] = key;
                    self.lines[slot] = u32::try_from(line).unwrap_or(u32::MAX);
                    self.len += 1;
                    return None;
                }
                k if k == key => return Some(u64::from(self.lines[slot])),
                _ => slot = (slot + 1) % self.keys.len(),
            }
        }
    }

    /// Maps a hash onto the table without a power-of-two size (multiply-shift).
    fn slot(&self, key: u64) -> usize {
        ((u128::from(key) * self.keys.len() as u128) >> 64) as usize
    }

    fn rehash(&mut self, capacity: usize) {
        let keys = std::mem::replace(&mut self.keys, vec![0; capacity]);
        let lines = std::mem::replace(&mut self.lines, vec![0; capacity]);
        for (key, line) in keys.into_iter().zip(lines).filter(|(k, _)| *k != 0) {
            let mut slot = self.slot(key);
            while self.keys[slot] != 0 {
                slot = (slot + 1) % self.keys.len();
            }
            self.keys[slot] = key;
            self.lines[slot] = line;
        }
    }
}

fn identity_hash(identity: &Identity) -> u64 {
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(identity.user_id().unwrap_or_default().as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(identity.anonymous_id().unwrap_or_default().as_bytes());
    stable_hash(&bytes) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

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
