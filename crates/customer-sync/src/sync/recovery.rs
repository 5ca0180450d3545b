//! Outbox recovery: what earlier runs left in flight goes out again under
//! its first `messageId`, and only then.
//!
//! The rules, applied as the source is read (not before it, so that an old
//! event can never race a newer one through the client's concurrent
//! batches):
//!
//! * only the newest entry of an identity is a candidate (the state code
//!   drops older ones as superseded);
//! * a record read again with the same payload resends the stored event;
//! * a record read with another payload supersedes the entry, which is
//!   never sent, and is itself sent whatever the state says (Segment may
//!   hold the superseded payload);
//! * after a complete read, entries of identities the source no longer has
//!   are resent, so the state ends up agreeing with Segment; after an
//!   incomplete read they wait in the outbox for the next run.

use std::collections::HashMap;

use segment_client::{Identity, PreparedEvent};

use super::tracker::{StateRef, Tracker};
use crate::mapping::ChangeKind;
use crate::record::Location;
use crate::state::{OutboxScan, Pending, PendingRef, identity_from_key, identity_key};

/// The in-flight entries by identity key, for the planner.
pub(crate) fn in_flight_by_key(pending: Vec<PendingRef>) -> HashMap<String, PendingRef> {
    pending.into_iter().map(|p| (p.key.clone(), p)).collect()
}

/// Counts what the outbox scan dropped, and reports torn lines.
pub(crate) fn report_scan(tracker: &Tracker, scan: &OutboxScan) {
    if scan.torn > 0 {
        tracker.write(|w| w.outbox_torn(scan.torn));
    }
    tracker
        .counters
        .superseded
        .store(scan.superseded, std::sync::atomic::Ordering::Relaxed);
}

/// An in-flight entry's stored event, ready to queue again unchanged, with
/// what its row needs when Segment answers.
pub(super) struct Resend {
    pub event: PreparedEvent,
    /// The kind of `event` when it is an `[events]` track.
    pub kind: Option<ChangeKind>,
    /// Its `[events]` tracks sent after it, with their kinds.
    pub companions: Vec<(PreparedEvent, ChangeKind)>,
    /// What the record is keyed on: the event's identity, or for a group
    /// call the group (its key's id as a `userId`).
    pub identity: Identity,
    pub at: Location,
    pub state: StateRef,
}

/// The stored event of `pending`, found at `at` (by default where it was
/// read when first sent) with source fingerprint `source_hash` (by default
/// the stored one). `Err` hands the entry back when its event no longer
/// parses: then the record must be sent afresh, if it can be.
pub(super) fn resend(
    pending: Pending,
    at: Option<Location>,
    source_hash: Option<u64>,
) -> Result<Resend, Box<Pending>> {
    let event = match PreparedEvent::from_json(pending.entry.event.clone()) {
        Ok(event) => event,
        Err(_) => return Err(Box::new(pending)),
    };
    let companions = pending
        .entry
        .tracks
        .iter()
        .map(|(track, kind)| Some((PreparedEvent::from_json(track.clone()).ok()?, *kind)))
        .collect::<Option<Vec<_>>>();
    let Some(companions) = companions else {
        return Err(Box::new(pending));
    };
    let entry = pending.entry;
    let identity = if identity_key(event.identity()) == entry.key {
        event.identity().clone()
    } else {
        identity_from_key(&entry.key)
    };
    Ok(Resend {
        event,
        kind: entry.kind,
        companions,
        identity,
        at: at.unwrap_or_else(|| Location::new(entry.source.as_str(), entry.line)),
        state: StateRef {
            row: pending.row,
            hash: entry.hash,
            source_hash: source_hash.unwrap_or(entry.source_hash),
            traits: entry.traits,
            values: entry.values,
            removal: entry.kind == Some(ChangeKind::Removed),
        },
    })
}
