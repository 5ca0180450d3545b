//! What the reader thread and the client's outcome hook share: the live
//! counts, the records in flight, the report file and the state changes
//! waiting to be committed.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use segment_client::{EventOutcome, Identity, SegmentError};

use super::StopSignal;
use crate::mapping::ChangeKind;
use crate::record::{Location, RecordError};
use crate::report::{Counters, ReportWriter, RunReport, Undelivered};
use crate::state::{Change, REMOVAL_HASH, Settled, identity_key, stable_hash};

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Records in flight, in a slab. Each record's events carry its slot and
/// the slot's generation as their tag ([`PreparedEvent::set_tag`]), so an
/// outcome finds its record at once: looked up by a hash of its
/// `messageId` in a map filled on the reader's thread, nearly every
/// answer missed the cache on the map (8% of a CSV dry run, with the
/// hashing).
///
/// [`PreparedEvent::set_tag`]: segment_client::PreparedEvent::set_tag
#[derive(Default)]
pub(crate) struct InFlight {
    slots: Vec<InFlightSlot>,
    /// Slots emptied, reused last-freed first (likely still cached).
    free: Vec<u32>,
    len: usize,
}

#[derive(Default)]
struct InFlightSlot {
    /// Counts the records the slot took, from 1: a tag of an earlier one
    /// (or 0, no tag) finds nothing. (It wraps after 2^32 records in one
    /// slot, to 1: a tag that old could then match again.)
    generation: u32,
    record: Option<InFlightRecord>,
}

impl InFlight {
    /// Tracks `record`; returns the tag its events are to carry.
    pub(crate) fn insert(&mut self, record: InFlightRecord) -> u64 {
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(InFlightSlot::default());
            u32::try_from(self.slots.len() - 1).expect("fewer than 4G records in flight")
        });
        let slot = &mut self.slots[index as usize];
        slot.generation = slot.generation.checked_add(1).unwrap_or(1);
        slot.record = Some(record);
        self.len += 1;
        u64::from(slot.generation) << 32 | u64::from(index)
    }

    fn slot(&mut self, tag: u64) -> Option<&mut InFlightSlot> {
        let slot = self.slots.get_mut((tag & u64::from(u32::MAX)) as usize)?;
        (u64::from(slot.generation) == tag >> 32).then_some(slot)
    }

    fn get_mut(&mut self, tag: u64) -> Option<&mut InFlightRecord> {
        self.slot(tag)?.record.as_mut()
    }

    fn remove(&mut self, tag: u64) -> Option<InFlightRecord> {
        let record = self.slot(tag)?.record.take()?;
        self.free.push((tag & u64::from(u32::MAX)) as u32);
        self.len -= 1;
        Some(record)
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes every record still in flight. The slots keep their
    /// generations, so the tags of the records taken find nothing later
    /// (a reader left behind at a stop may still track records).
    fn take_all(&mut self) -> Vec<InFlightRecord> {
        let mut taken = Vec::with_capacity(self.len);
        for (index, slot) in (0u32..).zip(&mut self.slots) {
            if let Some(record) = slot.record.take() {
                taken.push(record);
                self.free.push(index);
            }
        }
        self.len = 0;
        taken
    }
}

/// A record queued and not yet settled. What only `[events]` tracks need
/// is boxed apart: the record crosses from the reader's core to the
/// worker's, in 200 bytes rather than 264.
pub(crate) struct InFlightRecord {
    pub at: Location,
    pub identity: Identity,
    /// What its state row needs when it settles, when there is a state.
    pub state: Option<StateRef>,
    /// Its events not answered yet.
    waiting: u8,
    /// The answers to its events so far: the first error that is not
    /// Segment's verdict on an event, else the first verdict.
    error: Option<SegmentError>,
    /// When any of its events is an `[events]` track.
    tracks: Option<Box<Tracks>>,
}

/// The `[events]` tracks of a record in flight.
struct Tracks {
    /// The kind of its first event when that is a track.
    kind: Option<ChangeKind>,
    /// Its later events, all tracks: their `messageId` hashes and kinds.
    companions: Vec<(u64, ChangeKind)>,
    /// Its first event's `messageId` (the one its state row and outbox
    /// entry know), kept when it has later events.
    first_id: Option<String>,
    /// The kinds of its tracks Segment accepted.
    accepted: Vec<ChangeKind>,
}

impl InFlightRecord {
    /// A record of one event (`first_id`, of kind `kind` if it is a track)
    /// and, after it, the tracks `companions` (each with its kind).
    pub fn new(
        at: Location,
        identity: Identity,
        state: Option<StateRef>,
        (first_id, kind): (&str, Option<ChangeKind>),
        companions: &[(&str, ChangeKind)],
    ) -> Self {
        let tracks = (kind.is_some() || !companions.is_empty()).then(|| {
            Box::new(Tracks {
                kind,
                companions: companions
                    .iter()
                    .map(|(id, kind)| (stable_hash(id.as_bytes()), *kind))
                    .collect(),
                first_id: (!companions.is_empty()).then(|| first_id.to_owned()),
                accepted: Vec::new(),
            })
        });
        Self {
            at,
            identity,
            state,
            waiting: 1 + companions.len() as u8,
            error: None,
            tracks,
        }
    }

    /// Whether it has events after its first (tracks), which its answers
    /// tell apart by their `messageId` hashes.
    fn has_companions(&self) -> bool {
        self.tracks
            .as_ref()
            .is_some_and(|tracks| !tracks.companions.is_empty())
    }

    /// Takes the answer to its event whose `messageId` hashes to `hash`. A
    /// record settles as delivered only if all its events were; as pending
    /// if any is pending (the outbox resends every event under its first
    /// `messageId`, and Segment drops the copies it has); else as failed.
    fn answer(&mut self, hash: u64, result: Result<(), &SegmentError>) {
        self.waiting = self.waiting.saturating_sub(1);
        match result {
            Ok(()) => {
                if let Some(tracks) = &mut self.tracks {
                    let kind = match tracks.companions.iter().find(|(h, _)| *h == hash) {
                        Some((_, kind)) => Some(*kind),
                        None => tracks.kind,
                    };
                    tracks.accepted.extend(kind);
                }
            }
            Err(error) => {
                let replaces = match &self.error {
                    None => true,
                    Some(first) => is_verdict_on_event(first) && !is_verdict_on_event(error),
                };
                if replaces {
                    self.error = Some(error.clone());
                }
            }
        }
    }
}

/// What a record's state row needs when it settles.
#[derive(Debug, Clone)]
pub(crate) struct StateRef {
    /// Its row, if the state already had the identity.
    pub row: Option<i64>,
    pub hash: u64,
    /// Its source fingerprint (`Mapping::fingerprint`).
    pub source_hash: u64,
    /// Top-level trait names, as a JSON array.
    pub traits: String,
    /// The traits to keep for `[events]`, as a JSON object.
    pub values: Option<String>,
    /// Whether the record is the `removed` event of an identity gone from
    /// the source.
    pub removal: bool,
}

/// What the reader thread and the outcome hook share.
pub(crate) struct Tracker {
    pub counters: Arc<Counters>,
    /// Records queued and not yet settled, by their events' tags.
    pub in_flight: Mutex<InFlight>,
    pub report: Mutex<ReportWriter>,
    pub report_error: Mutex<Option<io::Error>>,
    pub fatal: Mutex<Option<SegmentError>>,
    pub failed_by_reason: Mutex<BTreeMap<String, u64>>,
    pub invalid_by_reason: Mutex<BTreeMap<String, u64>>,
    /// Why `[events]` removed events were held back this run, if they were.
    pub removals_held_back: Mutex<Option<String>>,
    /// Outcomes waiting to be committed to the state, when there is one.
    pub changes: Option<Mutex<Vec<Change>>>,
    pub stop: StopSignal,
}

impl Tracker {
    /// Tracks records from just before they are queued until the outcome
    /// of each of their events ([`InFlight::insert`] gives the tag their
    /// events carry): a chunk at a time, under one lock, which the outcome
    /// hook takes for every event (a lock per record is contended).
    pub fn track(&self) -> MutexGuard<'_, InFlight> {
        lock(&self.in_flight)
    }

    /// Stops tracking the record whose events carry `tag`; returns it, if
    /// it was tracked.
    pub fn untrack(&self, tag: u64) -> Option<InFlightRecord> {
        lock(&self.in_flight).remove(tag)
    }

    /// Takes the answer to one event; returns its record once every event
    /// of it is answered.
    fn answer(
        &self,
        tag: u64,
        message_id: &str,
        result: Result<(), &SegmentError>,
    ) -> Option<InFlightRecord> {
        let mut in_flight = lock(&self.in_flight);
        let record = in_flight.get_mut(tag)?;
        // Only a record with later events needs to know which one answered.
        let hash = match record.has_companions() {
            true => stable_hash(message_id.as_bytes()),
            false => 0,
        };
        record.answer(hash, result);
        if record.waiting > 0 {
            return None;
        }
        in_flight.remove(tag)
    }

    pub fn write(&self, write: impl FnOnce(&mut ReportWriter) -> io::Result<()>) {
        if let Err(e) = write(&mut lock(&self.report)) {
            lock(&self.report_error).get_or_insert(e);
        }
    }

    pub fn invalid(&self, error: &RecordError) {
        Counters::add(&self.counters.invalid);
        self.counters.note_invalid(error);
        *lock(&self.invalid_by_reason)
            .entry(error.kind.code().to_owned())
            .or_default() += 1;
        self.write(|w| w.invalid(error));
    }

    /// Takes the outcomes waiting to be committed into `taken` (emptied
    /// first), leaving its allocation in their place: a first run's chunk
    /// of outcomes is some 400 KB, which allocated afresh each time came
    /// from the OS and was faulted in again.
    pub fn take_changes_into(&self, taken: &mut Vec<Change>) {
        taken.clear();
        if let Some(changes) = &self.changes {
            std::mem::swap(&mut *lock(changes), taken);
        }
    }

    pub fn take_changes(&self) -> Vec<Change> {
        self.changes
            .as_ref()
            .map(|c| std::mem::take(&mut *lock(c)))
            .unwrap_or_default()
    }

    /// Called by the client for every event, as soon as its fate is known;
    /// a record settles once all its events are answered.
    pub fn settle(&self, outcome: &EventOutcome<'_>) {
        let Some(record) = self.answer(outcome.tag, outcome.message_id, outcome.result) else {
            return;
        };
        let InFlightRecord {
            at,
            identity,
            state,
            error,
            tracks,
            ..
        } = record;
        let first_id = tracks.and_then(|tracks| {
            for kind in &tracks.accepted {
                Counters::add(&self.counters.tracked[*kind as usize]);
            }
            tracks.first_id
        });
        let result = match &error {
            None => Ok(()),
            Some(error) => Err(error),
        };
        match result {
            Ok(()) => Counters::add(&self.counters.delivered),
            Err(error) if is_verdict_on_event(error) => {
                Counters::add(&self.counters.failed);
                let code = error.code().unwrap_or("unknown").to_owned();
                *lock(&self.failed_by_reason).entry(code).or_default() += 1;
                self.write(|w| w.undelivered(Undelivered::Failed, &at, &identity, Some(error)));
            }
            Err(error) => {
                // Not Segment's word on this event (the network, an outage,
                // a closed client, a refused key, a wrong host): it stays in
                // the outbox and the next run sends it again, under the same
                // messageId.
                self.pend(&at, &identity, Some(error));
                if error.is_unauthorized() || error.is_config() || error.is_outage() {
                    // Every later batch would meet the same answer: stop reading at once.
                    lock(&self.fatal).get_or_insert_with(|| error.clone());
                    self.stop.stop();
                }
                return;
            }
        }
        let (Some(changes), Some(state)) = (&self.changes, state) else {
            return;
        };
        let record = Settled {
            row: state.row,
            key: identity_key(&identity),
            hash: if state.removal && result.is_err() {
                REMOVAL_HASH
            } else {
                state.hash
            },
            source_hash: state.source_hash,
            // The record's first event's id: the one its outbox entry has.
            message_id: first_id.unwrap_or_else(|| outcome.message_id.to_owned()),
            traits: state.traits,
            line: at.line,
            values: state.values,
            removal: state.removal,
        };
        let change = match result {
            Ok(()) => Change::Accepted(record),
            Err(error) => Change::Failed {
                record,
                code: error.code().unwrap_or("unknown").to_owned(),
                message: error.message().to_owned(),
                status: error.status(),
            },
        };
        lock(changes).push(change);
    }

    /// Whether any record is still in flight.
    pub fn has_in_flight(&self) -> bool {
        !lock(&self.in_flight).is_empty()
    }

    /// Whether every event of the run settled (delivered or failed): then
    /// nothing in the outbox needs sending again.
    pub fn all_settled(&self) -> bool {
        !self.has_in_flight() && Counters::get(&self.counters.pending) == 0
    }

    /// Counts and reports a record that did not settle; its outbox entry
    /// stays for the next run.
    pub fn pend(&self, at: &Location, identity: &Identity, why: Option<&SegmentError>) {
        Counters::add(&self.counters.pending);
        self.write(|w| w.undelivered(Undelivered::Pending, at, identity, why));
    }

    /// Whatever is still tracked at the end did not finish: report it as
    /// pending. Its outbox entry stays, so the next run sends it again.
    pub fn settle_pending(&self, close_error: Option<&SegmentError>) {
        let mut left = lock(&self.in_flight).take_all();
        left.sort_by_key(|record| record.at.line);
        for record in &left {
            self.pend(&record.at, &record.identity, close_error);
        }
    }

    pub fn summary(&self, mut report: RunReport) -> RunReport {
        let c = &self.counters;
        report.read = Counters::get(&c.read);
        report.valid = Counters::get(&c.valid);
        report.invalid = Counters::get(&c.invalid);
        report.duplicates = Counters::get(&c.duplicates);
        report.skipped = Counters::get(&c.skipped);
        report.given_up = Counters::get(&c.given_up);
        report.recovered = Counters::get(&c.recovered);
        report.recovered_not_in_source = Counters::get(&c.recovered_not_in_source);
        report.superseded = Counters::get(&c.superseded);
        report.delivered = Counters::get(&c.delivered);
        report.failed = Counters::get(&c.failed);
        // Counted record by record, never derived, so the check in
        // `RunReport::adds_up` means something.
        report.pending = Counters::get(&c.pending);
        report.removed = Counters::get(&c.removed);
        report.removed_sent = Counters::get(&c.removed_sent);
        let [added, changed, removed] = c.tracked.each_ref().map(Counters::get);
        (
            report.tracked_added,
            report.tracked_changed,
            report.tracked_removed,
        ) = (added, changed, removed);
        report.events_per_sec = report.delivered as f64 / report.duration_secs.max(1e-9);
        report.invalid_by_reason = lock(&self.invalid_by_reason).clone();
        report.removals_held_back = lock(&self.removals_held_back).clone();
        report.failed_by_reason = lock(&self.failed_by_reason).clone();
        report
    }
}

/// Whether `error` is Segment saying that the event itself is bad (a
/// non-retryable 4xx such as 400 or 413, or a payload refused before
/// sending): only these count toward giving a record up. Network errors,
/// timeouts, 5xx, 429, a refused write key, a closed client or an outage say
/// nothing about the event: it stays pending and is sent again.
pub(crate) fn is_verdict_on_event(error: &SegmentError) -> bool {
    if error.is_config() || error.is_outage() {
        // A wrong host (404 on the first request) or an unreachable Segment
        // says nothing about the event itself.
        return false;
    }
    if error.is_invalid_payload() {
        return true;
    }
    match error.status() {
        Some(401 | 403) => false,
        Some(status) if (400..500).contains(&status) => !error.is_retryable(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use segment_client::{HttpClient, IdentifyParams};

    use super::*;
    use crate::report::ReportWriter;

    #[tokio::test]
    async fn a_closed_client_is_no_verdict_on_the_event() {
        let client = HttpClient::builder("key").build().unwrap();
        client.close_and_flush().await.unwrap();
        let error = client
            .identify(IdentifyParams::new(Identity::user("u1")))
            .await
            .unwrap_err();
        assert!(error.is_closed());
        assert!(!is_verdict_on_event(&error), "{error:?}");
    }

    fn tracker() -> Tracker {
        Tracker {
            counters: Arc::default(),
            in_flight: Mutex::default(),
            report: Mutex::new(ReportWriter::none()),
            report_error: Mutex::default(),
            fatal: Mutex::default(),
            failed_by_reason: Mutex::default(),
            invalid_by_reason: Mutex::default(),
            removals_held_back: Mutex::default(),
            changes: Some(Mutex::default()),
            stop: StopSignal::default(),
        }
    }

    #[test]
    fn in_flight_slots_are_reused_and_a_tag_finds_only_its_own_record() {
        let record = |user: &str, line: u64| {
            InFlightRecord::new(
                Location::new("c.csv", line),
                Identity::user(user),
                None,
                ("m", None),
                &[],
            )
        };
        let mut in_flight = InFlight::default();
        let a = in_flight.insert(record("a", 2));
        let b = in_flight.insert(record("b", 3));
        assert_ne!(a, 0, "0 is no tag");
        assert_eq!(in_flight.get_mut(0).map(|r| r.at.line), None);
        assert_eq!(in_flight.remove(a).map(|r| r.at.line), Some(2));
        assert!(in_flight.remove(a).is_none(), "gone once taken");
        let c = in_flight.insert(record("c", 4));
        assert_eq!(in_flight.slots.len(), 2, "the freed slot is reused");
        // An outcome for the slot's earlier record finds nothing.
        assert_eq!(c & u64::from(u32::MAX), a & u64::from(u32::MAX));
        assert!(in_flight.get_mut(a).is_none());
        assert!(in_flight.remove(a).is_none());
        assert_eq!(in_flight.get_mut(b).map(|r| r.at.line), Some(3));
        assert_eq!(in_flight.get_mut(c).map(|r| r.at.line), Some(4));
        assert!(!in_flight.is_empty());
        let mut left: Vec<_> = in_flight.take_all().iter().map(|r| r.at.line).collect();
        left.sort_unstable();
        assert_eq!(left, [3, 4]);
    }

    /// A record `u1` whose identify `m1` has the added track `t1` beside
    /// it; the tag both events carry.
    fn pair(tracker: &Tracker) -> u64 {
        let state = StateRef {
            row: None,
            hash: 5,
            source_hash: 6,
            traits: "[]".into(),
            values: Some("{}".into()),
            removal: false,
        };
        let record = InFlightRecord::new(
            Location::new("f.csv", 2),
            Identity::user("u1"),
            Some(state),
            ("m1", None),
            &[("t1", ChangeKind::Added)],
        );
        tracker.track().insert(record)
    }

    fn answer(tracker: &Tracker, tag: u64, message_id: &str, result: Result<(), &SegmentError>) {
        tracker.settle(&EventOutcome {
            message_id,
            identity: &Identity::user("u1"),
            result,
            tag,
        });
    }

    fn verdict() -> SegmentError {
        let mut params = IdentifyParams::new(Identity::user("u1"));
        params.message_id = Some("x".repeat(200));
        segment_client::PreparedEvent::new(params).unwrap_err()
    }

    async fn no_verdict() -> SegmentError {
        let client = HttpClient::builder("key").build().unwrap();
        client.close_and_flush().await.unwrap();
        client
            .identify(IdentifyParams::new(Identity::user("u1")))
            .await
            .unwrap_err()
    }

    #[test]
    fn a_record_with_a_track_settles_once_both_are_accepted_under_its_first_id() {
        let tracker = tracker();
        let tag = pair(&tracker);
        answer(&tracker, tag, "t1", Ok(()));
        assert!(tracker.has_in_flight(), "the identify is not answered yet");
        assert!(tracker.take_changes().is_empty());
        answer(&tracker, tag, "m1", Ok(()));
        assert!(!tracker.has_in_flight());
        let changes = tracker.take_changes();
        let [Change::Accepted(settled)] = changes.as_slice() else {
            panic!("{changes:?}");
        };
        assert_eq!(settled.message_id, "m1", "the outbox entry's id");
        assert_eq!(settled.values.as_deref(), Some("{}"));
        let c = &tracker.counters;
        assert_eq!(Counters::get(&c.delivered), 1);
        assert_eq!(Counters::get(&c.tracked[ChangeKind::Added as usize]), 1);
    }

    #[tokio::test]
    async fn a_record_with_a_track_stays_pending_if_either_event_is() {
        let (verdict, no_verdict) = (verdict(), no_verdict().await);
        // The identify refused, the track not answered by Segment: pending,
        // so the outbox resends both under their ids.
        let tracker = tracker();
        let tag = pair(&tracker);
        answer(&tracker, tag, "m1", Err(&verdict));
        answer(&tracker, tag, "t1", Err(&no_verdict));
        assert!(
            tracker.take_changes().is_empty(),
            "nothing settles in the state"
        );
        assert_eq!(Counters::get(&tracker.counters.pending), 1);
        assert_eq!(Counters::get(&tracker.counters.failed), 0);

        // Both answered, one refused: failed, and the track not counted.
        let tracker = self::tracker();
        let tag = pair(&tracker);
        answer(&tracker, tag, "t1", Err(&verdict));
        answer(&tracker, tag, "m1", Ok(()));
        let changes = tracker.take_changes();
        assert!(
            matches!(changes.as_slice(), [Change::Failed { record, .. }] if record.message_id == "m1"),
            "{changes:?}"
        );
        assert_eq!(Counters::get(&tracker.counters.failed), 1);
        assert_eq!(Counters::get(&tracker.counters.tracked[0]), 0);
    }

    #[test]
    fn a_tag_from_before_the_records_left_were_settled_finds_nothing_after() {
        // A reader left behind at a stop may still track records after
        // the rest were settled as pending; a late outcome for a settled
        // record must not settle the new one in its slot.
        let tracker = tracker();
        let record = |line| {
            InFlightRecord::new(
                Location::new("f.csv", line),
                Identity::user("u1"),
                None,
                ("m1", None),
                &[],
            )
        };
        let old = tracker.track().insert(record(2));
        tracker.settle_pending(None);
        assert_eq!(Counters::get(&tracker.counters.pending), 1);
        let new = tracker.track().insert(record(3));
        assert_ne!(new, old);
        answer(&tracker, old, "m1", Ok(()));
        assert_eq!(Counters::get(&tracker.counters.delivered), 0);
        assert!(tracker.has_in_flight(), "the new record is still in flight");
        answer(&tracker, new, "m1", Ok(()));
        assert_eq!(Counters::get(&tracker.counters.delivered), 1);
    }

    #[test]
    fn untracking_a_record_forgets_its_track_too() {
        let tracker = tracker();
        let tag = pair(&tracker);
        assert!(tracker.untrack(tag).is_some());
        assert!(tracker.untrack(tag).is_none(), "once");
        answer(&tracker, tag, "t1", Ok(()));
        assert!(!tracker.has_in_flight());
        assert!(tracker.take_changes().is_empty());
        assert_eq!(Counters::get(&tracker.counters.delivered), 0);
    }

    #[test]
    fn a_refused_payload_is_a_verdict_on_the_event() {
        let mut params = IdentifyParams::new(Identity::user("u1"));
        params.message_id = Some("x".repeat(200));
        let error = segment_client::PreparedEvent::new(params).unwrap_err();
        assert!(error.is_invalid_payload(), "{error:?}");
        assert!(is_verdict_on_event(&error));
    }
}
