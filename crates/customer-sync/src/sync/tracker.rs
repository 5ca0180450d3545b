//! What the reader thread and the client's outcome hook share: the live
//! counts, the records in flight, the report file and the state changes
//! waiting to be committed.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
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

type ByMessageId<T> = HashMap<u64, T, BuildHasherDefault<PassThrough>>;

/// Records in flight, keyed by a 64-bit hash of their (first) event's
/// `messageId` (already well mixed, so it is used as is).
///
/// The records live in a slab and the map holds only their slots: a map of
/// whole records (264 bytes each) missed the cache on nearly every answer,
/// which cost a tenth of a run's time in the outcome hook.
#[derive(Default)]
pub(crate) struct InFlight {
    records: ByMessageId<u32>,
    slots: Vec<Option<InFlightRecord>>,
    /// Slots emptied, reused last-freed first (likely still cached).
    free: Vec<u32>,
    /// A record's later events (its `[events]` tracks), to its first event.
    companions: ByMessageId<u64>,
}

impl InFlight {
    fn insert(&mut self, key: u64, record: InFlightRecord) {
        // A key tracked twice keeps the newer record, as a map would.
        self.remove(key);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(record);
                slot
            }
            None => {
                self.slots.push(Some(record));
                u32::try_from(self.slots.len() - 1).expect("fewer than 4G records in flight")
            }
        };
        self.records.insert(key, slot);
    }

    fn get_mut(&mut self, key: u64) -> Option<&mut InFlightRecord> {
        let slot = *self.records.get(&key)?;
        self.slots[slot as usize].as_mut()
    }

    fn remove(&mut self, key: u64) -> Option<InFlightRecord> {
        let slot = self.records.remove(&key)?;
        self.free.push(slot);
        self.slots[slot as usize].take()
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Every record still in flight.
    fn into_records(self) -> impl Iterator<Item = InFlightRecord> {
        self.slots.into_iter().flatten()
    }
}

/// A record queued and not yet settled.
pub(crate) struct InFlightRecord {
    pub at: Location,
    pub identity: Identity,
    /// What its state row needs when it settles, when there is a state.
    pub state: Option<StateRef>,
    /// The kind of its first event when that is an `[events]` track.
    kind: Option<ChangeKind>,
    /// Its later events, all `[events]` tracks: their `messageId` hashes and kinds.
    companions: Vec<(u64, ChangeKind)>,
    /// Its first event's `messageId` (the one its state row and outbox
    /// entry know), kept when it has later events.
    first_id: Option<String>,
    /// Its events not answered yet.
    waiting: u8,
    /// The answers to its events so far: the first error that is not
    /// Segment's verdict on an event, else the first verdict.
    error: Option<SegmentError>,
    /// The kinds of its tracks Segment accepted.
    accepted_tracks: Vec<ChangeKind>,
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
        Self {
            at,
            identity,
            state,
            kind,
            waiting: 1 + companions.len() as u8,
            companions: companions
                .iter()
                .map(|(id, kind)| (stable_hash(id.as_bytes()), *kind))
                .collect(),
            first_id: (!companions.is_empty()).then(|| first_id.to_owned()),
            error: None,
            accepted_tracks: Vec::new(),
        }
    }

    /// Takes the answer to its event whose `messageId` hashes to `hash`. A
    /// record settles as delivered only if all its events were; as pending
    /// if any is pending (the outbox resends every event under its first
    /// `messageId`, and Segment drops the copies it has); else as failed.
    fn answer(&mut self, hash: u64, result: Result<(), &SegmentError>) {
        self.waiting = self.waiting.saturating_sub(1);
        match result {
            Ok(()) => {
                let kind = match self.companions.iter().find(|(h, _)| *h == hash) {
                    Some((_, kind)) => Some(*kind),
                    None => self.kind,
                };
                self.accepted_tracks.extend(kind);
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

/// A hasher for keys that are hashes already.
#[derive(Default)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// What the reader thread and the outcome hook share.
pub(crate) struct Tracker {
    pub counters: Arc<Counters>,
    /// Records queued and not yet settled, by a hash of their `messageId`.
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
    /// of each of their events (the first one's `messageId` is given): a
    /// chunk at a time, under one lock: the outcome hook takes the same lock
    /// for every event, so a lock per record is contended.
    pub fn track_all<'m>(&self, records: impl IntoIterator<Item = (&'m str, InFlightRecord)>) {
        let mut in_flight = lock(&self.in_flight);
        for (message_id, record) in records {
            let key = stable_hash(message_id.as_bytes());
            for (companion, _) in &record.companions {
                in_flight.companions.insert(*companion, key);
            }
            in_flight.insert(key, record);
        }
    }

    /// Stops tracking the record whose first event is `message_id`; returns
    /// it, if it was tracked.
    pub fn untrack(&self, message_id: &str) -> Option<InFlightRecord> {
        let mut in_flight = lock(&self.in_flight);
        let record = in_flight.remove(stable_hash(message_id.as_bytes()))?;
        for (companion, _) in &record.companions {
            in_flight.companions.remove(companion);
        }
        Some(record)
    }

    /// Takes the answer to one event; returns its record once every event
    /// of it is answered, with the record's first `messageId`.
    fn answer(
        &self,
        message_id: &str,
        result: Result<(), &SegmentError>,
    ) -> Option<InFlightRecord> {
        let mut in_flight = lock(&self.in_flight);
        let hash = stable_hash(message_id.as_bytes());
        let key = in_flight.companions.get(&hash).copied().unwrap_or(hash);
        let record = in_flight.get_mut(key)?;
        record.answer(hash, result);
        if record.waiting > 0 {
            return None;
        }
        in_flight.companions.remove(&hash);
        in_flight.remove(key)
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
        let Some(record) = self.answer(outcome.message_id, outcome.result) else {
            return;
        };
        for kind in &record.accepted_tracks {
            Counters::add(&self.counters.tracked[*kind as usize]);
        }
        let InFlightRecord {
            at,
            identity,
            state,
            first_id,
            error,
            ..
        } = record;
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
        let left = std::mem::take(&mut *lock(&self.in_flight));
        let mut left: Vec<_> = left.into_records().collect();
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
    fn in_flight_slots_are_reused_and_a_key_tracked_twice_keeps_the_newer_record() {
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
        in_flight.insert(1, record("a", 2));
        in_flight.insert(2, record("b", 3));
        assert_eq!(in_flight.remove(1).map(|r| r.at.line), Some(2));
        assert!(in_flight.remove(1).is_none(), "gone once taken");
        in_flight.insert(3, record("c", 4));
        assert_eq!(in_flight.slots.len(), 2, "the freed slot is reused");
        in_flight.insert(2, record("b2", 5));
        assert_eq!(in_flight.get_mut(2).map(|r| r.at.line), Some(5));
        assert_eq!(in_flight.get_mut(3).map(|r| r.at.line), Some(4));
        let mut left: Vec<_> = in_flight.into_records().map(|r| r.at.line).collect();
        left.sort_unstable();
        assert_eq!(left, [4, 5]);
    }

    /// A record `u1` whose identify `m1` has the added track `t1` beside it.
    fn pair(tracker: &Tracker) {
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
        tracker.track_all([("m1", record)]);
    }

    fn answer(tracker: &Tracker, message_id: &str, result: Result<(), &SegmentError>) {
        tracker.settle(&EventOutcome {
            message_id,
            identity: &Identity::user("u1"),
            result,
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
        pair(&tracker);
        answer(&tracker, "t1", Ok(()));
        assert!(tracker.has_in_flight(), "the identify is not answered yet");
        assert!(tracker.take_changes().is_empty());
        answer(&tracker, "m1", Ok(()));
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
        pair(&tracker);
        answer(&tracker, "m1", Err(&verdict));
        answer(&tracker, "t1", Err(&no_verdict));
        assert!(
            tracker.take_changes().is_empty(),
            "nothing settles in the state"
        );
        assert_eq!(Counters::get(&tracker.counters.pending), 1);
        assert_eq!(Counters::get(&tracker.counters.failed), 0);

        // Both answered, one refused: failed, and the track not counted.
        let tracker = self::tracker();
        pair(&tracker);
        answer(&tracker, "t1", Err(&verdict));
        answer(&tracker, "m1", Ok(()));
        let changes = tracker.take_changes();
        assert!(
            matches!(changes.as_slice(), [Change::Failed { record, .. }] if record.message_id == "m1"),
            "{changes:?}"
        );
        assert_eq!(Counters::get(&tracker.counters.failed), 1);
        assert_eq!(Counters::get(&tracker.counters.tracked[0]), 0);
    }

    #[test]
    fn untracking_a_record_forgets_its_track_too() {
        let tracker = tracker();
        pair(&tracker);
        assert!(tracker.untrack("m1").is_some());
        answer(&tracker, "t1", Ok(()));
        assert!(!tracker.has_in_flight());
        assert!(tracker.take_changes().is_empty());
        assert!(lock(&tracker.in_flight).companions.is_empty());
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
