//! The reader: source -> mapping -> duplicate check -> state plan -> the
//! client's queue, on a blocking thread, in chunks whose outbox entries are
//! written in one transaction before they are queued.

use std::sync::Mutex;
use std::sync::atomic::Ordering;

use segment_client::{HttpClient, Identity, PreparedEvent};

use crate::engine::SyncError;
use crate::mapping::{DuplicatePolicy, MappedCustomer, Mapping};
use crate::plan::{Decision, Planner};
use crate::record::{Location, RecordError, RecordErrorKind};
use crate::report::Counters;
use crate::source::{ReadProgress, Source};
use crate::state::{OutboxEntryRef, StateStore, identity_key, stable_hash};
use crate::tracker::{InFlightRecord, StateRef, Tracker, lock};

/// Records per chunk with a state: one outbox row and transaction each.
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

/// One record on its way to the client: validated and serialised.
pub(crate) struct Outgoing {
    event: PreparedEvent,
    at: Location,
    /// What its state row needs, when there is a state.
    state: Option<StateRef>,
}

/// Reads, maps, plans and queues every record, on a blocking thread.
pub(crate) struct Reader<'a> {
    pub client: &'a HttpClient,
    pub tracker: &'a Tracker,
    pub mapping: &'a Mapping,
    pub store: Option<&'a Mutex<StateStore>>,
    pub planner: Option<Planner>,
    pub duplicates: DuplicatePolicy,
    pub chunk: Vec<Outgoing>,
}

impl Reader<'_> {
    /// Returns the source's name.
    pub fn read_all(&mut self, mut source: Source) -> Result<String, SyncError> {
        let read = self.read_records(&mut source);
        let flushed = self.flush_chunk();
        read?;
        flushed?;
        if let Some(error) = source.take_fatal() {
            return Err(error.into());
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
            if Counters::get(&tracker.counters.read) == SIZING_SAMPLE + 1 {
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
                        let first_line = match self
                            .planner
                            .as_mut()
                            .and_then(|p| p.first_seen(&key, at.line))
                        {
                            Some(first_line) => first_line,
                            None => {
                                new_in_sample += u64::from(
                                    Counters::get(&tracker.counters.read) <= SIZING_SAMPLE,
                                );
                                seen.check(&identity, at.line)
                            }
                        };
                        if !self.accept_duplicate(first_line, &at, &identity) {
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
                let first_line = seen.check(&mapped.identity, at.line);
                if !self.accept_duplicate(first_line, &at, &mapped.identity) {
                    continue;
                }
            }
            let Some(send) = self.plan(&at, fingerprint.as_ref(), &mut mapped)? else {
                continue;
            };
            self.push(at, mapped, send);
            if self.chunk.len() >= self.chunk_size() && !self.flush_chunk()? {
                break;
            }
        }
        Ok(())
    }

    /// Applies the duplicate policy; `false` means the record is not sent.
    /// Applies the duplicate policy to a record whose identity was first
    /// seen on `first_line`, if it was; `false` means it is not sent.
    fn accept_duplicate(
        &self,
        first_line: Option<u64>,
        at: &Location,
        identity: &Identity,
    ) -> bool {
        let Some(first_line) = first_line else {
            return true;
        };
        let tracker = self.tracker;
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
                tracker.write(|w| w.duplicate(at, identity, first_line));
                true
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

    /// Decides against the state; `Some((hash, row))` means send.
    fn plan(
        &mut self,
        at: &Location,
        fingerprint: Option<&(String, u64)>,
        mapped: &mut MappedCustomer,
    ) -> Result<Option<Planned>, SyncError> {
        let (Some(planner), Some(store), Some((key, source_hash))) =
            (self.planner.as_mut(), self.store, fingerprint)
        else {
            return Ok(Some(Planned::default()));
        };
        let counters = &self.tracker.counters;
        match planner.decide(&lock(store), key, mapped)? {
            Decision::Send { hash, row } => {
                return Ok(Some(Planned {
                    hash,
                    row,
                    source_hash: *source_hash,
                }));
            }
            Decision::Skip => Counters::add(&counters.skipped),
            Decision::GiveUp { runs } => {
                Counters::add(&counters.given_up);
                self.tracker
                    .write(|w| w.given_up(at, &mapped.identity, runs));
            }
            Decision::AlreadyQueued => {
                // Read now, queued by the recovery: it moves from one bucket to the other.
                Counters::add(&counters.valid);
                counters.recovered.fetch_sub(1, Ordering::Relaxed);
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
            Ok(event) => self.chunk.push(Outgoing { event, at, state }),
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

    /// Without a state there is nothing to write first, so chunks stay small.
    fn chunk_size(&self) -> usize {
        if self.tracker.changes.is_some() {
            CHUNK
        } else {
            CHUNK_STATELESS
        }
    }

    /// Writes the chunk to the outbox (with the outcomes that arrived
    /// meanwhile) in one transaction, then queues it. Returns `false` when
    /// the client was closed under it (a stop or a fatal error).
    fn flush_chunk(&mut self) -> Result<bool, SyncError> {
        let tracker = self.tracker;
        let chunk = std::mem::take(&mut self.chunk);
        if let Some(store) = self.store.filter(|_| tracker.changes.is_some())
            && let Err(error) = write_outbox(&mut lock(store), &chunk, tracker)
        {
            // Not durable, so not sent: these records count as not read.
            tracker
                .counters
                .read
                .fetch_sub(chunk.len() as u64, Ordering::Relaxed);
            return Err(error);
        }
        let mut events = Vec::with_capacity(chunk.len());
        for out in chunk {
            let state = out.state;
            let record = InFlightRecord {
                at: out.at,
                identity: out.event.identity().clone(),
                state,
            };
            tracker.track(out.event.message_id(), record);
            events.push(out.event);
        }
        // Queued in a tight loop, so the worker wakes about once per chunk.
        let mut events = events.into_iter();
        for event in events.by_ref() {
            let message_id = event.message_id().to_owned();
            if self.client.queue_prepared_blocking(event).is_err() {
                // Closed under us (a stop or a fatal error): read but not
                // queued, so not counted as read; their outbox entries stay
                // for the next run.
                tracker.untrack(&message_id);
                let unqueued = 1 + events.len() as u64;
                for event in events {
                    tracker.untrack(event.message_id());
                }
                tracker.counters.read.fetch_sub(unqueued, Ordering::Relaxed);
                return Ok(false);
            }
            Counters::add(&tracker.counters.valid);
        }
        Ok(true)
    }
}

/// Appends a chunk to the outbox log, then commits the outcomes that
/// arrived meanwhile in one transaction.
fn write_outbox(
    store: &mut StateStore,
    chunk: &[Outgoing],
    tracker: &Tracker,
) -> Result<(), SyncError> {
    let mut entries = Vec::with_capacity(chunk.len() * 700);
    for out in chunk {
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
