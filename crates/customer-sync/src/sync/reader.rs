//! The reader: source -> mapping -> duplicate check -> state plan -> the
//! client's queue, on a blocking thread, in chunks whose outbox entries are
//! written in one write before they are queued.

use std::sync::Mutex;

use segment_client::{HttpClient, Identity, PreparedEvent, TrackParams};

use super::SyncError;
use super::duplicates::{
    LastRows, RowAt, SIZING_SAMPLE, SeenIdentities, identity_hash, size_duplicate_table,
};
use super::events;
use super::planner::{Decision, EventsPlan, Planner};
use super::recovery;
use super::tracker::{InFlightRecord, StateRef, Tracker, lock};
use crate::mapping::{ChangeKind, DuplicatePolicy, MappedJson, Mapping};
use crate::record::{Location, Record, RecordError, RecordErrorKind};
use crate::report::Counters;
use crate::source::{Source, SourceFormat};
use crate::state::{
    Change, OutboxEntryRef, Pending, PendingRef, REMOVAL_HASH, StateStore, identity_from_key,
    identity_key,
};

/// Records per chunk with a state: one outbox write and transaction each.
const CHUNK: usize = 2_048;
/// Removed events for more than half the customers Segment has are held
/// back as the sign of a bad export, once there are more than this many.
const MASS_REMOVAL_FLOOR: u64 = 10;
/// Records per chunk without a state: one wake-up of the client's worker each.
const CHUNK_STATELESS: usize = 256;

/// What the state plan says of a record to send.
#[derive(Debug, Default, Clone)]
struct Planned {
    hash: u64,
    row: Option<i64>,
    source_hash: u64,
    /// What `[events]` adds to it.
    events: Option<Box<EventsPlan>>,
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
    /// The `removed` event of an identity gone from the source.
    Removal,
}

/// A record's events: the first, its kind if it is a track, the tracks after it.
type PreparedRecord = (
    PreparedEvent,
    Option<ChangeKind>,
    Vec<(PreparedEvent, ChangeKind)>,
);

/// One record on its way to the client: its events validated and serialised.
struct Outgoing {
    /// Its first event: the identify (or group), or its only track.
    event: PreparedEvent,
    /// The kind of the first event when it is an `[events]` track.
    kind: Option<ChangeKind>,
    /// The `[events]` tracks sent after the first event, with their kinds.
    companions: Vec<(PreparedEvent, ChangeKind)>,
    /// What the record is keyed on in the state, the outbox and the report:
    /// the event's identity, or a group call's group.
    identity: Identity,
    at: Location,
    /// What its state row needs, when there is a state.
    state: Option<StateRef>,
    origin: Origin,
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
    /// Whether the source has every record (a keyset read has only the
    /// rows past its mark): only then is an identity it lacks gone.
    pub reads_everything: bool,
    chunk: Vec<Outgoing>,
    /// The chunk's records to track, with their events' places in the
    /// chunk's queue, reused.
    records: Vec<(std::ops::Range<usize>, InFlightRecord)>,
    /// The outcomes committed with a chunk, reused.
    changes: Vec<Change>,
    /// The outbox lines of a chunk, reused: about 1.4 MB a chunk, which
    /// allocated afresh came from (and went back to) the OS each time, its
    /// pages faulted in and zeroed again.
    outbox_lines: Vec<u8>,
    /// The source's records are a database's rows, numbered in the read
    /// rather than by line: messages say so.
    rows: bool,
}

impl<'a> Reader<'a> {
    /// A reader of a run's parts; see the fields.
    pub fn new(
        client: &'a HttpClient,
        tracker: &'a Tracker,
        mapping: &'a Mapping,
        store: Option<&'a Mutex<StateStore>>,
        planner: Option<Planner>,
        duplicates: DuplicatePolicy,
        last_rows: Option<LastRows>,
    ) -> Self {
        Self {
            client,
            tracker,
            mapping,
            store,
            planner,
            duplicates,
            last_rows,
            reads_everything: true,
            chunk: Vec::new(),
            records: Vec::new(),
            changes: Vec::new(),
            outbox_lines: Vec::new(),
            rows: false,
        }
    }

    /// Reads the source to its end (or a stop), then sends what earlier
    /// runs left in flight for identities it did not have.
    pub fn read_all(&mut self, mut source: Source) -> Result<(), SyncError> {
        let read = self.read_records(&mut source);
        let fatal = source.take_fatal();
        let complete = read.is_ok() && fatal.is_none() && !self.tracker.stop.is_stopped();
        let mut changed = None;
        if complete {
            changed = self.last_rows.as_ref().and_then(|rows| {
                (rows.reached != rows.rows.len()).then(|| {
                    SyncError::new(
                        format!(
                            "{} changed while it was read (a repeated identity's last row moved)",
                            source.name()
                        ),
                        Some("run again once the file is no longer being written"),
                    )
                })
            });
            let gone_for_sure = changed.is_none() && self.reads_everything;
            let removed_event = match gone_for_sure {
                true => self.removed_event()?,
                false => None,
            };
            let unmatched = match self.planner.as_mut() {
                Some(planner) => planner.take_unmatched(),
                None => Vec::new(),
            };
            let resent = unmatched.iter().map(|p| p.key.clone()).collect();
            let pushed = self.push_unmatched(unmatched, removed_event.as_deref(), source.name());
            // Stopped or closed under it: what is left waits in the outbox.
            let gone = pushed.and_then(|all_pushed| match all_pushed && gone_for_sure {
                true => self.push_removals(removed_event.as_deref(), source.name(), &resent),
                false => Ok(()),
            });
            if let Err(error) = gone {
                let _ = self.flush_chunk();
                return Err(error);
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
        Ok(())
    }

    fn read_records(&mut self, source: &mut Source) -> Result<(), SyncError> {
        let tracker = self.tracker;
        self.rows = source.format() == SourceFormat::Postgres;
        let mut seen = SeenIdentities::default();
        // Keyed on a column whose values the source knows are distinct: no
        // identity comes twice, and the table of those seen stays empty.
        let distinct = source
            .distinct_column()
            .is_some_and(|column| self.mapping.identity_column() == Some(column));
        // Nor is it needed when a first pass found the repeats.
        let check_seen = self.last_rows.is_none() && !distinct;
        let source_hashes = self
            .planner
            .as_ref()
            .is_some_and(|p| p.uses_source_hashes());
        let mut new_in_sample = 0u64;
        let progress = source.progress();
        let size = (source.total_bytes(), source.expected_records());
        // The last record read goes back to the source, which refills its
        // buffers rather than allocating each field anew.
        let mut last: Option<Record> = None;
        loop {
            if let Some(record) = last.take() {
                source.recycle(record);
            }
            let Some(item) = source.next() else {
                break;
            };
            if tracker.stop.is_stopped() {
                break;
            }
            Counters::add(&tracker.counters.read);
            if Counters::get(&tracker.counters.read) == SIZING_SAMPLE + 1 && check_seen {
                // Sized for the new identities only: known ones use the state index.
                let share = if self.planner.is_some() {
                    new_in_sample as f64 / SIZING_SAMPLE as f64
                } else {
                    1.0
                };
                size_duplicate_table(&mut seen, &progress, size, share);
            }
            let record: &Record = match item {
                Ok(record) => last.insert(record),
                Err(error) => {
                    tracker.invalid(&error);
                    continue;
                }
            };
            let at = record.location.clone();
            // With a state, an unchanged record is skipped before it is mapped.
            let fingerprint = match self.planner.is_some() {
                true => match self.fingerprint(record, source_hashes) {
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
                                let first_line = match check_seen {
                                    true => seen.check(&identity, at.line),
                                    false => None,
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
            let mapped = self.mapping.apply_json(record);
            // Without a state, repeats are settled on the identity when the
            // first pass found them: a superseded row is not sent (nor
            // reported, even if it does not map), and the last row counts as
            // reached even if it then fails to map. The mapping's identity is
            // used when it mapped (reading it again cost 3-7% of a run);
            // when it did not, the identity alone decides, as before.
            if fingerprint.is_none() && self.last_rows.is_some() {
                let send = match &mapped {
                    Ok(mapped) => self.check_duplicate(None, &at, &mapped.identity),
                    Err(_) => match self.mapping.identity_of(record) {
                        Ok(identity) => self.check_duplicate(None, &at, &identity),
                        Err(error) => {
                            tracker.invalid(&error);
                            continue;
                        }
                    },
                };
                if !send {
                    continue;
                }
            }
            let mut mapped = match mapped {
                Ok(mapped) => mapped,
                Err(error) => {
                    tracker.invalid(&error);
                    continue;
                }
            };
            if fingerprint.is_none() && check_seen {
                let first_line = seen.check(&mapped.identity, at.line);
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

    /// The record's identity and, if `hashed`, its source fingerprint (0
    /// otherwise: a first dry run with a state hashed every record for
    /// nothing, 4% of its instructions on CSV and 9% on NDJSON).
    fn fingerprint(&self, record: &Record, hashed: bool) -> Result<(Identity, u64), RecordError> {
        match hashed {
            true => self.mapping.fingerprint(record),
            false => self
                .mapping
                .identity_of(record)
                .map(|identity| (identity, 0)),
        }
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
            let Some(&last) = last_rows.rows.get(&identity_hash(identity)) else {
                return true;
            };
            if last == RowAt::of(at) {
                last_rows.reached += 1;
                return true;
            }
            // Superseded by a later row of the same identity: not sent.
            Counters::add(&tracker.counters.duplicates);
            Counters::add(&tracker.counters.skipped);
            let last = Location {
                line: last.line,
                column: last.column,
                ..at.clone()
            };
            tracker.write(|w| w.duplicate(at, identity, &last));
            return false;
        }
        let Some(first_line) = first_line else {
            return true;
        };
        Counters::add(&tracker.counters.duplicates);
        let (place, remedy) = match self.rows {
            true => (
                format!("row {first_line} of this read"),
                "read it with a --query that keeps one row per identity, or from an export to a file, to send the last row",
            ),
            false => (
                format!("line {first_line}"),
                "read from a regular file to send the last row",
            ),
        };
        let refuse = |why: &str| {
            RecordError::new(
                at.clone(),
                RecordErrorKind::DuplicateIdentity,
                format!("the same identity is on {place}; {why}"),
            )
        };
        match self.duplicates {
            DuplicatePolicy::Last => {
                // Only a source that cannot be read twice (stdin, a named
                // pipe, a database) gets here:
                // the first row is already on its way, and sending this one
                // too could land in either order.
                tracker.invalid(&refuse(&format!(
                    "this input cannot be read twice to find the last row, so the first one was sent and this one was not ({remedy})"
                )));
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
        mapped: &mut MappedJson,
    ) -> Result<Option<Result<Planned, Box<Pending>>>, SyncError> {
        let (Some(planner), Some(store), Some((key, source_hash))) =
            (self.planner.as_mut(), self.store, fingerprint)
        else {
            return Ok(Some(Ok(Planned::default())));
        };
        let counters = &self.tracker.counters;
        let decision = planner.decide(&mut lock(store), key, mapped)?;
        counters
            .superseded
            .store(planner.superseded, std::sync::atomic::Ordering::Relaxed);
        match decision {
            Decision::Send { hash, row, events } => {
                return Ok(Some(Ok(Planned {
                    hash,
                    row,
                    source_hash: *source_hash,
                    events,
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

    /// Validates and serialises the record's events (an invalid one is
    /// reported and never reaches the outbox) and adds it to the chunk.
    fn push(&mut self, at: Location, mapped: MappedJson, planned: Planned) {
        let events = self.mapping.events();
        let state = self.tracker.changes.is_some().then(|| StateRef {
            row: planned.row,
            hash: planned.hash,
            source_hash: planned.source_hash,
            traits: crate::state::trait_names_raw(&mapped.traits),
            values: events.map(|_| {
                (planned.events.as_ref().and_then(|plan| plan.values.clone()))
                    .unwrap_or_else(|| events::values_json(&mapped.traits))
            }),
            removal: false,
        });
        let prepared = self.prepare_events(&mapped, planned.events);
        // Serialised into the events: its buffers take the next record's.
        self.mapping.recycle(mapped.traits);
        match prepared {
            // Only tracks are sent, and this change has none.
            Ok(None) => Counters::add(&self.tracker.counters.skipped),
            Ok(Some((event, kind, companions))) => self.chunk.push(Outgoing {
                event,
                kind,
                companions,
                identity: mapped.identity,
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

    /// The record's events in the order they are sent: its identify (unless
    /// `identify = false`), an earlier run's `added` track to send again,
    /// its own track; the first of them, its kind if it is a track, and the
    /// tracks after it. `None` when nothing is to be sent.
    fn prepare_events(
        &self,
        mapped: &MappedJson,
        plan: Option<Box<EventsPlan>>,
    ) -> Result<Option<PreparedRecord>, segment_client::SegmentError> {
        let mut tracks = Vec::new();
        if let Some(plan) = plan {
            let plan = *plan;
            tracks.extend(plan.resend_added.map(|added| (added, ChangeKind::Added)));
            if let Some(track) = plan.track {
                let params = TrackParams::new(mapped.identity.clone(), track.name)
                    .with_properties(track.properties);
                tracks.push((PreparedEvent::new(params)?, track.kind));
            }
        }
        let identify = self.mapping.events().is_none_or(|events| events.identify);
        if identify {
            return Ok(Some((mapped.to_event()?, None, tracks)));
        }
        let mut tracks = tracks.into_iter();
        Ok(tracks
            .next()
            .map(|(first, kind)| (first, Some(kind), tracks.collect())))
    }

    /// After a complete read: the entries earlier runs left in flight for
    /// identities the source did not have, read back from the outbox a
    /// chunk at a time (so memory stays bounded) and resent, or, for a
    /// customer now gone, superseded by its `removed` event (`removed`).
    /// Returns `false` at a stop or when the client was closed under it:
    /// the entries not pushed then go back to the planner, as waiting for
    /// the next run.
    fn push_unmatched(
        &mut self,
        unmatched: Vec<PendingRef>,
        removed: Option<&str>,
        source: &str,
    ) -> Result<bool, SyncError> {
        let Some(store) = self.store else {
            debug_assert!(unmatched.is_empty(), "entries in flight come from a state");
            return Ok(true);
        };
        let mut unmatched = unmatched.into_iter();
        while let Some(pending) = unmatched.next() {
            let pending = lock(store).load_pending(pending)?;
            match removed {
                // The customer is gone: whatever of it Segment may hold,
                // its removed event supersedes, so that a clean run ends
                // with every gone customer removed.
                Some(name) if !pending.entry.is_removal() => {
                    self.push_superseded_by_removal(name, pending, source);
                }
                _ => self.push_resent(pending),
            }
            let full = self.chunk.len() >= self.chunk_size();
            if full && (self.tracker.stop.is_stopped() || !self.flush_chunk()?) {
                // The rest wait in the outbox, and are counted so (a stop's
                // chunk is flushed, or reported pending, after this).
                if let Some(planner) = self.planner.as_mut() {
                    planner.put_back(unmatched);
                }
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// After a complete read: every identity the state has and the source
    /// does not is reported `removed`, and with `[events] removed` its
    /// `removed` event is queued (unless an earlier run's is being resent,
    /// `resent`). Rows are read a chunk at a time, so memory stays bounded.
    fn push_removals(
        &mut self,
        name: Option<&str>,
        source: &str,
        resent: &std::collections::HashSet<String>,
    ) -> Result<(), SyncError> {
        let (Some(planner), Some(store)) = (self.planner.as_ref(), self.store) else {
            return Ok(());
        };
        let unseen = planner.unseen();
        for rows in unseen.chunks(CHUNK) {
            let gone = lock(store).gone(rows)?;
            for gone in gone {
                Counters::add(&self.tracker.counters.removed);
                let event = match name {
                    Some(name) if gone.accepted && !resent.contains(&gone.key) => {
                        Some(self.removal(
                            name,
                            Some(gone.row),
                            &gone.key,
                            gone.line,
                            gone.values.as_deref(),
                            source,
                        ))
                    }
                    _ => None,
                };
                // Its removed event goes now, or went again from the outbox.
                let sent = event.is_some() || (name.is_some() && resent.contains(&gone.key));
                self.tracker.write(|w| w.removed(&gone.key, sent));
                if let Some(out) = event {
                    self.chunk.push(out);
                }
            }
            if self.chunk.len() >= self.chunk_size() && !self.flush_chunk()? {
                break;
            }
        }
        Ok(())
    }

    /// The `[events]` removed event's name, unless removals are held back
    /// this run (recorded for the report): after a complete read with an
    /// invalid record (a customer in a bad row would look gone), with no
    /// record at all, or when they would remove most of the customers
    /// Segment has (the sign of a bad export; `allow_mass_removal` lets
    /// them go).
    fn removed_event(&self) -> Result<Option<String>, SyncError> {
        let (Some(name), Some(planner), Some(store)) = (
            self.mapping.events().and_then(|e| e.removed.clone()),
            self.planner.as_ref(),
            self.store,
        ) else {
            return Ok(None);
        };
        let counters = &self.tracker.counters;
        let invalid = Counters::get(&counters.invalid);
        let held_back = if invalid > 0 {
            Some(format!(
                "{invalid} records of this read were invalid, and a customer in a bad row would look gone"
            ))
        } else if Counters::get(&counters.read) == 0 {
            Some("the source had no records".to_owned())
        } else {
            let mut gone = 0u64;
            for rows in planner.unseen().chunks(CHUNK) {
                gone += lock(store)
                    .gone(rows)?
                    .iter()
                    .filter(|g| g.accepted)
                    .count() as u64;
            }
            let (_, accepted, _, _) = lock(store).counts()?;
            (gone > MASS_REMOVAL_FLOOR && gone * 2 > accepted && !planner.allows_mass_removal())
                .then(|| {
                    format!("they would remove {gone} of the {accepted} customers Segment has")
                })
        };
        match held_back {
            Some(why) => {
                *lock(&self.tracker.removals_held_back) = Some(why);
                Ok(None)
            }
            None => Ok(Some(name)),
        }
    }

    /// An earlier run's entry for a customer now gone: not resent, but
    /// superseded by the customer's removed event, carrying the traits the
    /// entry would have set.
    fn push_superseded_by_removal(&mut self, name: &str, pending: Pending, source: &str) {
        if let Some(planner) = self.planner.as_mut() {
            planner.superseded += 1;
            self.tracker
                .counters
                .superseded
                .store(planner.superseded, std::sync::atomic::Ordering::Relaxed);
        }
        let entry = &pending.entry;
        if pending.row.is_none() {
            // Never settled, so not among the state's rows that
            // `push_removals` reports: reported here.
            Counters::add(&self.tracker.counters.removed);
            self.tracker.write(|w| w.removed(&entry.key, true));
        }
        let out = self.removal(
            name,
            pending.row,
            &entry.key,
            entry.line,
            entry.values.as_deref(),
            source,
        );
        self.chunk.push(out);
    }

    /// The `removed` event of customer `key` (in state row `row`, if it has
    /// one), gone from the source: a track carrying `values`, the traits
    /// Segment last accepted.
    fn removal(
        &self,
        name: &str,
        row: Option<i64>,
        key: &str,
        line: u64,
        values: Option<&str>,
        source: &str,
    ) -> Outgoing {
        let identity = identity_from_key(key);
        let properties = values
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default();
        let params = TrackParams::new(identity.clone(), name).with_properties(properties);
        let event = PreparedEvent::new(params)
            // Kept traits were a valid payload once; if they no longer fit
            // an event, the removal goes without them.
            .or_else(|_| PreparedEvent::new(TrackParams::new(identity.clone(), name)))
            .expect("a track with a valid identity and no properties is valid");
        Outgoing {
            event,
            kind: Some(ChangeKind::Removed),
            companions: Vec::new(),
            state: self.tracker.changes.is_some().then(|| StateRef {
                row,
                hash: REMOVAL_HASH,
                source_hash: 0,
                traits: "[]".to_owned(),
                values: None,
                removal: true,
            }),
            identity,
            at: Location::new(source, line),
            origin: Origin::Removal,
        }
    }

    /// A record read now with the payload an earlier run left in flight:
    /// its stored event goes again, under its first `messageId`. A stored
    /// event that no longer parses is replaced by the record just read.
    fn push_resent_read(
        &mut self,
        pending: Pending,
        at: Location,
        mapped: MappedJson,
        source_hash: u64,
    ) {
        match recovery::resend(pending, Some(at.clone()), Some(source_hash)) {
            Ok(resend) => self.push_resend(resend, Origin::Resent),
            Err(pending) => {
                // Its track, if any, is lost with the stored event: the
                // record goes again as its identify alone.
                let planned = Planned {
                    hash: pending.entry.hash,
                    row: pending.row,
                    source_hash,
                    events: None,
                };
                self.push(at, mapped, planned);
            }
        }
    }

    /// An entry left in flight for an identity the source does not have.
    fn push_resent(&mut self, pending: Pending) {
        match recovery::resend(pending, None, None) {
            Ok(resend) => self.push_resend(resend, Origin::ResentNotInSource),
            // Its record is not in the source to be sent afresh: the entry
            // is as good as torn, and is dropped with the outbox.
            Err(_) => Counters::add(&self.tracker.counters.superseded),
        }
    }

    fn push_resend(&mut self, resend: recovery::Resend, origin: Origin) {
        self.chunk.push(Outgoing {
            event: resend.event,
            kind: resend.kind,
            companions: resend.companions,
            identity: resend.identity,
            at: resend.at,
            state: Some(resend.state),
            origin,
        });
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
        let mut chunk = std::mem::take(&mut self.chunk);
        if let Some(store) = self.store.filter(|_| tracker.changes.is_some())
            && let Err(error) = write_outbox(
                &mut lock(store),
                &chunk,
                tracker,
                (&mut self.outbox_lines, &mut self.changes),
            )
        {
            // Not durable, so not sent: reported as pending (the next run
            // reads them again).
            for out in &chunk {
                count_queued(tracker, out.origin);
                tracker.pend(&out.at, &out.identity, None);
            }
            return Err(error);
        }
        let mut queued = Vec::with_capacity(chunk.len());
        let mut records = std::mem::take(&mut self.records);
        for out in chunk.drain(..) {
            let first = queued.len();
            let tracks: Vec<(&str, ChangeKind)> = (out.companions.iter())
                .map(|(track, kind)| (track.message_id(), *kind))
                .collect();
            let id_and_kind = (out.event.message_id(), out.kind);
            let record = InFlightRecord::new(out.at, out.identity, out.state, id_and_kind, &tracks);
            count_queued(tracker, out.origin);
            queued.push(out.event);
            queued.extend(out.companions.into_iter().map(|(track, _)| track));
            records.push((first..queued.len(), record));
        }
        // One lock for the chunk, held only to insert and tag: the outcome
        // hook takes it for every event.
        let mut in_flight = tracker.track();
        for (events, record) in records.drain(..) {
            let tag = in_flight.insert(record);
            queued[events]
                .iter_mut()
                .for_each(|event| event.set_tag(tag));
        }
        drop(in_flight);
        // Both kept for the next chunk: allocated afresh, a state's chunks
        // (2,048 records) came from the OS and were faulted in each time.
        (self.chunk, self.records) = (chunk, records);
        // One hand-off per chunk: the worker wakes once for all of it.
        if let Err((_, not_queued)) = self.client.queue_prepared_many_blocking(queued) {
            // Closed under us (a stop or a fatal error): not sent; their
            // outbox entries stay for the next run. (A record whose identify
            // was queued but not its track pends too: its events share one
            // tag, and an outcome for the identify then finds nothing.)
            for event in not_queued {
                if let Some(record) = tracker.untrack(event.tag()) {
                    tracker.pend(&record.at, &record.identity, None);
                }
            }
            return Ok(false);
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
        Origin::Removal => Counters::add(&counters.removed_sent),
    }
}

/// Appends a chunk's new entries to the outbox log, then commits the
/// outcomes that arrived meanwhile in one transaction.
fn write_outbox(
    store: &mut StateStore,
    chunk: &[Outgoing],
    tracker: &Tracker,
    (entries, changes): (&mut Vec<u8>, &mut Vec<Change>),
) -> Result<(), SyncError> {
    entries.clear();
    entries.reserve(chunk.len() * 700);
    for out in chunk
        .iter()
        .filter(|out| matches!(out.origin, Origin::Read | Origin::Removal))
    {
        let Some(state) = &out.state else {
            continue;
        };
        let tracks: Vec<(&[u8], ChangeKind)> = (out.companions.iter())
            .map(|(track, kind)| (track.json(), *kind))
            .collect();
        OutboxEntryRef {
            key: &identity_key(&out.identity),
            hash: state.hash,
            source_hash: state.source_hash,
            message_id: out.event.message_id(),
            source: &out.at.source,
            line: out.at.line,
            traits: &state.traits,
            event: out.event.json(),
            tracks: &tracks,
            values: state.values.as_deref(),
            kind: out.kind,
        }
        .write_line(entries);
    }
    store.append_outbox(entries)?;
    tracker.take_changes_into(changes);
    store.apply(changes)?;
    Ok(())
}
