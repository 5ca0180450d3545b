//! What the reader thread and the client's outcome hook share: the live
//! counts, the records in flight, the report file and the state changes
//! waiting to be committed.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use segment_client::{EventOutcome, Identity, SegmentError};

use super::StopSignal;
use crate::record::{Location, RecordError};
use crate::report::{Counters, ReportWriter, RunReport, Undelivered};
use crate::state::{Change, Settled, identity_key, stable_hash};

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Records in flight, keyed by a 64-bit hash of their `messageId` (already
/// well mixed, so it is used as is).
pub(crate) type InFlight = HashMap<u64, InFlightRecord, BuildHasherDefault<PassThrough>>;

/// A record queued and not yet settled.
pub(crate) struct InFlightRecord {
    pub at: Location,
    pub identity: Identity,
    /// What its state row needs when it settles, when there is a state.
    pub state: Option<StateRef>,
}

/// What a record's state row needs when it settles.
pub(crate) struct StateRef {
    /// Its row, if the state already had the identity.
    pub row: Option<i64>,
    pub hash: u64,
    /// Its source fingerprint (`Mapping::fingerprint`).
    pub source_hash: u64,
    /// Top-level trait names, as a JSON array.
    pub traits: String,
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
    /// Outcomes waiting to be committed to the state, when there is one.
    pub changes: Option<Mutex<Vec<Change>>>,
    pub stop: StopSignal,
}

impl Tracker {
    /// Tracks records from just before they are queued until their
    /// outcome: a chunk at a time, under one lock: the outcome hook takes
    /// the same lock for every event, so a lock per record is contended.
    pub fn track_all<'m>(&self, records: impl IntoIterator<Item = (&'m str, InFlightRecord)>) {
        let mut in_flight = lock(&self.in_flight);
        for (message_id, record) in records {
            in_flight.insert(stable_hash(message_id.as_bytes()), record);
        }
    }

    /// Stops tracking a record; returns it, if it was tracked.
    pub fn untrack(&self, message_id: &str) -> Option<InFlightRecord> {
        lock(&self.in_flight).remove(&stable_hash(message_id.as_bytes()))
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

    pub fn take_changes(&self) -> Vec<Change> {
        self.changes
            .as_ref()
            .map(|c| std::mem::take(&mut *lock(c)))
            .unwrap_or_default()
    }

    /// Called by the client for every event, as soon as its fate is known.
    pub fn settle(&self, outcome: &EventOutcome<'_>) {
        let Some(InFlightRecord {
            at,
            identity,
            state,
        }) = self.untrack(outcome.message_id)
        else {
            return;
        };
        match outcome.result {
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
            hash: state.hash,
            source_hash: state.source_hash,
            message_id: outcome.message_id.to_owned(),
            traits: state.traits,
            line: at.line,
        };
        let change = match outcome.result {
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
        let mut left: Vec<_> = left.into_values().collect();
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
        report.events_per_sec = report.delivered as f64 / report.duration_secs.max(1e-9);
        report.invalid_by_reason = lock(&self.invalid_by_reason).clone();
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

    #[test]
    fn a_refused_payload_is_a_verdict_on_the_event() {
        let mut params = IdentifyParams::new(Identity::user("u1"));
        params.message_id = Some("x".repeat(200));
        let error = segment_client::PreparedEvent::new(params).unwrap_err();
        assert!(error.is_invalid_payload(), "{error:?}");
        assert!(is_verdict_on_event(&error));
    }
}
