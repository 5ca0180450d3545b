//! Incremental sync: decides, per mapped record, whether it is new, changed,
//! unchanged, a retry of an earlier failure, or given up, against the state
//! loaded at the start of the run.

use std::collections::HashMap;

use super::events::{self, TrackPlan};
use crate::mapping::{ChangeEvents, MappedJson, NullPolicy};
use crate::state::{
    Pending, PendingRef, StateError, StateIndex, StateStore, payload_hash_raw, stable_hash,
};

/// How a run treats the stored state.
#[derive(Debug, Clone)]
pub struct IncrementalOptions {
    /// Ignore stored hashes: send everything, with new `messageId`s.
    pub full_resync: bool,
    /// Retry failed records even after `max_failed_runs`.
    pub retry_failed: bool,
    /// Runs an unchanged failing record is retried in before it is given up.
    pub max_failed_runs: u32,
    /// Send `[events]` removed events even when they would remove most of
    /// the customers Segment has (held back otherwise, as the sign of a bad
    /// export).
    pub allow_mass_removal: bool,
}

impl Default for IncrementalOptions {
    fn default() -> Self {
        Self {
            full_resync: false,
            retry_failed: false,
            max_failed_runs: 5,
            allow_mass_removal: false,
        }
    }
}

/// The payload hash of a mapped record; a group call's member is part of it,
/// so a group whose member changed is sent again. Identify hashes are as
/// they always were, so existing states stay valid.
fn customer_hash(customer: &MappedJson) -> u64 {
    let hash = payload_hash_raw(&customer.identity, &customer.traits);
    match &customer.member {
        None => hash,
        Some(member) => {
            let mut bytes = hash.to_le_bytes().to_vec();
            bytes.extend_from_slice(crate::state::identity_key(member).as_bytes());
            stable_hash(&bytes).max(1)
        }
    }
}

/// What to do with one record.
#[derive(Debug, Clone)]
pub(crate) enum Decision {
    /// Send it; `hash` is its payload hash, `row` its state row if it has
    /// one, `events` what `[events]` adds to it.
    Send {
        hash: u64,
        row: Option<i64>,
        events: Option<Box<EventsPlan>>,
    },
    /// It is unchanged since Segment accepted it.
    Skip,
    /// It failed in `runs` runs in a row and has not changed: not retried.
    GiveUp { runs: u32 },
    /// An earlier run left this exact payload in flight: send the stored
    /// event again, under its first `messageId`.
    Resend(Box<Pending>),
}

/// What `[events]` adds to a record being sent.
#[derive(Debug, Clone)]
pub(crate) struct EventsPlan {
    /// An earlier run's `added` track to send again, under its `messageId`,
    /// before this record's track.
    pub resend_added: Option<segment_client::PreparedEvent>,
    /// The track that goes with it, if any.
    pub track: Option<TrackPlan>,
    /// The traits Segment will hold once it accepts the record, as JSON,
    /// when they differ from the record's own (a trait left out stays).
    pub values: Option<String>,
}

/// Trait-level accounting for the report.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TraitChanges {
    /// Traits sent as `null` because they were accepted before and are now empty or missing.
    pub unset: u64,
    /// Traits accepted before, now empty or missing, and left out.
    pub left_out: u64,
}

pub(crate) struct Planner {
    index: StateIndex,
    /// One bit per index entry: was the identity in this run's source?
    /// Per index slot, the line the identity was first seen on in this
    /// run's source (0: not seen); doubles as the duplicate check for
    /// identities the state knows, at 4 bytes each.
    first_lines: Vec<u32>,
    /// Where what earlier runs left in flight is, by identity key; read
    /// back as the source reaches each identity.
    recovered: HashMap<String, PendingRef>,
    /// Outbox entries dropped because the record changed since.
    pub superseded: u64,
    options: IncrementalOptions,
    null_policy: NullPolicy,
    /// The mapping's `[events]`, if any.
    events: Option<ChangeEvents>,
    pub traits: TraitChanges,
    /// Whether outcomes are written to the state (not a dry run): only then
    /// does a new identity's payload hash have a use.
    pub writes_state: bool,
}

impl Planner {
    pub fn new(
        index: StateIndex,
        recovered: HashMap<String, PendingRef>,
        options: IncrementalOptions,
        null_policy: NullPolicy,
        events: Option<ChangeEvents>,
    ) -> Self {
        let slots = index.slots();
        Self {
            index,
            first_lines: vec![0; slots],
            recovered,
            superseded: 0,
            options,
            null_policy,
            events,
            traits: TraitChanges::default(),
            writes_state: true,
        }
    }

    /// For an identity the state knows, marks it seen at `line` and returns
    /// `Some(None)` the first time, `Some(Some(first_line))` when it was
    /// seen before in this source; `None` for an identity the state does not know.
    pub fn first_seen(&mut self, key: &str, line: u64) -> Option<Option<u64>> {
        let (slot, _) = self.index.get(stable_hash(key.as_bytes()))?;
        let first = &mut self.first_lines[slot];
        if *first != 0 {
            return Some(Some(u64::from(*first)));
        }
        *first = u32::try_from(line).unwrap_or(u32::MAX).max(1);
        Some(None)
    }

    /// Whether any record's source fingerprint has a use in this run: to
    /// skip a known identity's unchanged record, or to be stored. A dry run
    /// against a state that knows no identity and holds nothing in flight
    /// (a first run, previewed) has none, and reads identities alone.
    pub fn uses_source_hashes(&self) -> bool {
        self.writes_state || self.index.len() > 0 || !self.recovered.is_empty()
    }

    /// Forgets every identity marked by [`first_seen`](Self::first_seen),
    /// after the first pass over a file.
    pub fn forget_seen(&mut self) {
        self.first_lines.fill(0);
    }

    /// Whether the record with identity `key` and source fingerprint
    /// `source_hash` is exactly what Segment last accepted, so it can be
    /// skipped without being mapped.
    pub fn unchanged(&mut self, key: &str, source_hash: u64) -> bool {
        let Some((_, known)) = self.index.get(stable_hash(key.as_bytes())) else {
            return false;
        };
        !self.options.full_resync
            && known.failed.is_none()
            && known.source_hash == Some(source_hash)
            && !self.recovered.contains_key(key)
    }

    /// Decides for a mapped `customer` that [`unchanged`](Self::unchanged)
    /// did not skip, adjusting its traits by the null policy against what
    /// Segment accepted last time.
    ///
    /// An earlier run's entry still in flight for this identity is resent
    /// as it is when the payload is the same; otherwise it is superseded
    /// (never sent again) and the record is sent whatever the state says,
    /// since Segment may hold the superseded payload.
    pub fn decide(
        &mut self,
        store: &mut StateStore,
        key: &str,
        customer: &mut MappedJson,
    ) -> Result<Decision, StateError> {
        let in_flight = match self.recovered.remove(key) {
            Some(pending) => Some(store.load_pending(pending)?),
            None => None,
        };
        let store = &*store;
        let known = match self.index.get(stable_hash(key.as_bytes())) {
            // A key-hash hit is checked against the identity text: another
            // identity with the same hash must never take this row.
            Some((_, known)) if store.identity_of(known.row)?.as_deref() == Some(key) => {
                Some(known)
            }
            _ => None,
        };
        if !self.writes_state && in_flight.is_none() && known.is_none() && self.events.is_none() {
            // A new identity in a dry run: sent, and its hash never stored
            // (half of what a state added to a first dry run, by callgrind).
            return Ok(Decision::Send {
                hash: 0,
                row: None,
                events: None,
            });
        }
        let mut hash = customer_hash(customer);
        // Segment may hold a superseded payload: the record must be sent.
        let must_send = in_flight.is_some();
        // A superseded `removed` event may have arrived: the record is new again.
        let mut removal_in_flight = false;
        // A superseded `added` event may have arrived: it goes again, under its id.
        let mut in_flight_added = None;
        if let Some(pending) = in_flight {
            if pending.entry.hash == hash && !pending.entry.is_removal() {
                return Ok(Decision::Resend(Box::new(pending)));
            }
            removal_in_flight = pending.entry.is_removal();
            in_flight_added = events::stored_added(&pending.entry);
            self.superseded += 1;
        }
        let row = known.map(|k| k.row);
        let accepted = match row {
            Some(row) if !removal_in_flight => store.accepted_hash(row)?,
            _ => None,
        };
        let send = |planner: &Self, hash, customer: &MappedJson| {
            let events = match &planner.events {
                Some(events) => Some(Box::new(events::plan(
                    events,
                    store,
                    (row, accepted),
                    hash,
                    customer,
                    must_send,
                    in_flight_added.clone(),
                )?)),
                None => None,
            };
            Ok(Decision::Send { hash, row, events })
        };
        if self.options.full_resync {
            return send(self, hash, customer);
        }
        let Some(known) = known else {
            return send(self, hash, customer);
        };
        if accepted.is_some_and(|accepted| accepted != hash) {
            // Changed: compare trait by trait with what Segment has.
            hash = self.apply_null_policy(store, known.row, customer)?;
        }
        if must_send {
            return send(self, hash, customer);
        }
        if let Some((failed_hash, runs)) = known.failed
            && failed_hash == hash
        {
            if runs >= self.options.max_failed_runs && !self.options.retry_failed {
                return Ok(Decision::GiveUp { runs });
            }
            return send(self, hash, customer);
        }
        if accepted == Some(hash) {
            return Ok(Decision::Skip);
        }
        send(self, hash, customer)
    }

    /// Traits Segment accepted last time that are now absent are unset
    /// (`null`) or left out, as the mapping's null policy says. Returns the
    /// adjusted payload's hash.
    fn apply_null_policy(
        &mut self,
        store: &StateStore,
        row: i64,
        customer: &mut MappedJson,
    ) -> Result<u64, StateError> {
        for name in store.accepted_traits(row)? {
            if customer.traits.contains_key(&name) {
                continue;
            }
            match self.null_policy {
                NullPolicy::Null => {
                    customer.traits.insert_null(&name);
                    self.traits.unset += 1;
                }
                NullPolicy::Omit => self.traits.left_out += 1,
            }
        }
        Ok(customer_hash(customer))
    }

    /// The entries earlier runs left in flight whose identity this source
    /// did not have, oldest first; for the end of a complete read.
    pub fn take_unmatched(&mut self) -> Vec<PendingRef> {
        let mut left: Vec<_> = std::mem::take(&mut self.recovered).into_values().collect();
        left.sort_by_key(|p| p.order);
        left
    }

    /// Gives back unmatched entries that were taken but not sent.
    pub fn put_back(&mut self, unmatched: impl IntoIterator<Item = PendingRef>) {
        let unmatched = unmatched.into_iter().map(|p| (p.key.clone(), p));
        self.recovered.extend(unmatched);
    }

    /// How many entries earlier runs left in flight are still unmatched
    /// (none after a complete read, which resends them).
    pub fn unmatched_count(&self) -> usize {
        self.recovered.len()
    }

    /// Whether removed events may remove most customers at once.
    pub fn allows_mass_removal(&self) -> bool {
        self.options.allow_mass_removal
    }

    /// Rows of identities in the state that this run's source did not have.
    pub fn unseen(&self) -> Vec<i64> {
        (0..self.index.slots())
            .filter(|p| self.first_lines[*p] == 0)
            .filter_map(|p| self.index.row_at(p))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use segment_client::{Identity, RawObject};
    use serde_json::json;

    use super::*;
    use crate::state::{Change, Settled};

    fn customer(plan: &str) -> MappedJson {
        MappedJson {
            identity: Identity::user("u1"),
            traits: RawObject::from_map(json!({ "plan": plan }).as_object().unwrap()),
            member: None,
        }
    }

    /// Segment accepted u1's payload `hash` (source hash 7) under m1.
    fn accept(store: &mut StateStore, hash: u64) {
        store
            .apply(&[Change::Accepted(Settled {
                row: None,
                key: "u:u1".into(),
                hash,
                source_hash: 7,
                message_id: "m1".into(),
                traits: r#"["plan"]"#.into(),
                line: 2,
                values: None,
                removal: false,
            })])
            .unwrap();
    }

    /// v2 of u1 (`hash`) in flight under m2, in `store`'s outbox.
    fn in_flight(store: &mut StateStore, hash: u64) -> HashMap<String, PendingRef> {
        let mut line = Vec::new();
        crate::state::OutboxEntryRef {
            key: "u:u1",
            hash,
            source_hash: 8,
            message_id: "m2",
            source: "f.csv",
            line: 2,
            traits: r#"["plan"]"#,
            event: b"{}",
            tracks: &[],
            values: None,
            kind: None,
        }
        .write_line(&mut line);
        store.append_outbox(&line).unwrap();
        let index = store.index().unwrap();
        crate::sync::recovery::in_flight_by_key(store.pending(&index).unwrap().pending)
    }

    #[test]
    fn an_entry_left_in_flight_is_resent_if_unchanged_else_superseded_and_the_record_sent() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(dir.path(), "t").unwrap();
        let v1 = customer("v1");
        let (v1_hash, v2_hash) = (
            payload_hash_raw(&v1.identity, &v1.traits),
            payload_hash_raw(&v1.identity, &customer("v2").traits),
        );
        // Segment accepted v1; a later run had v2 in flight when it was killed.
        accept(&mut store, v1_hash);
        let planner = |index, recovered| {
            Planner::new(
                index,
                recovered,
                IncrementalOptions::default(),
                NullPolicy::Omit,
                None,
            )
        };

        // Nothing in flight: v1 is what Segment has, so it is skipped.
        let mut p = planner(store.index().unwrap(), HashMap::new());
        assert!(matches!(
            p.decide(&mut store, "u:u1", &mut customer("v1")).unwrap(),
            Decision::Skip
        ));

        // v2 in flight and the source back at v1: Segment may hold v2, so v1
        // is sent again, and v2 is never resent.
        let recovered = in_flight(&mut store, v2_hash);
        let mut p = planner(store.index().unwrap(), recovered);
        let decision = p.decide(&mut store, "u:u1", &mut customer("v1")).unwrap();
        assert!(
            matches!(decision, Decision::Send { hash, row: Some(1), events: None } if hash == v1_hash),
            "{decision:?}"
        );
        assert_eq!(p.superseded, 1);
        assert!(p.take_unmatched().is_empty());

        // v2 in flight and the source still at v2: the stored event goes again.
        let recovered = in_flight(&mut store, v2_hash);
        let mut p = planner(store.index().unwrap(), recovered);
        let decision = p.decide(&mut store, "u:u1", &mut customer("v2")).unwrap();
        assert!(
            matches!(&decision, Decision::Resend(p) if p.entry.message_id == "m2"),
            "{decision:?}"
        );
        assert_eq!(p.superseded, 0);
    }

    #[test]
    fn only_a_dry_run_against_a_state_that_knows_nothing_does_without_source_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(dir.path(), "t").unwrap();
        let planner = |store: &mut StateStore, recovered, writes_state| {
            let mut planner = Planner::new(
                store.index().unwrap(),
                recovered,
                IncrementalOptions::default(),
                NullPolicy::Omit,
                None,
            );
            planner.writes_state = writes_state;
            planner
        };
        assert!(!planner(&mut store, HashMap::new(), false).uses_source_hashes());
        // A real first run stores every record's source hash.
        assert!(planner(&mut store, HashMap::new(), true).uses_source_hashes());
        // An earlier run's event in flight: its identity's record is matched.
        let recovered = in_flight(&mut store, 9);
        assert!(planner(&mut store, recovered, false).uses_source_hashes());
        // A known identity: an unchanged record is skipped by its source hash.
        let fresh = tempfile::tempdir().unwrap();
        let mut known = StateStore::open(fresh.path(), "t").unwrap();
        accept(&mut known, 5);
        assert!(planner(&mut known, HashMap::new(), false).uses_source_hashes());
    }
}
