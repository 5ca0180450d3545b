//! Spent events' buffers, handed back from the worker to the threads that
//! prepare events.
//!
//! An event is prepared on the caller's thread and dropped on the worker's
//! once its batch is answered. Freed across threads, each of its buffers
//! cost the allocator a slow path on both sides, and pages faulted in anew
//! as freed ones were purged. The worker hands its spent events back here
//! instead, and preparing an event takes one, writing into its buffers (on
//! 1M CSV rows: 11,000-13,000 page faults instead of 27,000-35,000; CPU
//! within this machine's noise, 0-3% less). Memory stays bounded: events
//! holding at most [`KEPT_BYTES`] wait here (and [`TAKEN`] per preparing
//! thread, until it ends), none with a JSON buffer larger than
//! [`KEPT_JSON_BYTES`]; the rest are dropped as before.

use std::cell::RefCell;
use std::sync::{Mutex, PoisonError};

use crate::message::Event;

/// Most bytes spent events hold (see [`held`]) kept between the worker and
/// the preparing threads: about 3,000 events of a typical customer.
const KEPT_BYTES: usize = 2 << 20;
/// Most spent events a preparing thread takes at once (and so holds).
const TAKEN: usize = 256;
/// Larger JSON buffers are freed: they are rare, and would hold memory.
const KEPT_JSON_BYTES: usize = 2_048;

/// Where the worker puts spent events and preparing threads take them, in
/// bundles of [`TAKEN`] made outside the lock: each side holds it only to
/// push or pop a bundle. (Moving each event under the lock made the
/// preparing thread wait on it, and tripled the context switches.)
struct Bin {
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    /// Bundles of at most [`TAKEN`] events, with what each holds.
    bundles: Vec<(Vec<Event>, usize)>,
    /// What they all hold.
    bytes: usize,
}

/// What a spent event holds: itself and its buffers (its identity's text,
/// a few dozen bytes, is not counted). It does not change while it waits.
fn held(event: &Event) -> usize {
    std::mem::size_of::<Event>() + event.json.capacity() + event.message_id.capacity()
}

impl Bin {
    const fn new() -> Self {
        Self {
            kept: Mutex::new(Kept {
                bundles: Vec::new(),
                bytes: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn give_back(&self, events: Vec<Event>) {
        let room = KEPT_BYTES.saturating_sub(self.lock().bytes);
        let (mut bundles, mut bytes) = (Vec::new(), 0);
        let mut bundle = (Vec::new(), 0);
        for event in events {
            if event.json.capacity() > KEPT_JSON_BYTES {
                continue;
            }
            let held = held(&event);
            if bytes + held > room {
                break;
            }
            bytes += held;
            if bundle.0.is_empty() {
                bundle.0.reserve_exact(TAKEN);
            }
            bundle.0.push(event);
            bundle.1 += held;
            if bundle.0.len() == TAKEN {
                bundles.push(std::mem::take(&mut bundle));
            }
        }
        if !bundle.0.is_empty() {
            bundles.push(bundle);
        }
        let mut kept = self.lock();
        // Another thread may have given back since: the bound still holds.
        let mut left = Vec::new();
        for bundle in bundles {
            if kept.bytes + bundle.1 > KEPT_BYTES {
                left.push(bundle);
                continue;
            }
            kept.bytes += bundle.1;
            kept.bundles.push(bundle);
        }
        drop(kept);
        // What did not fit is dropped outside the lock.
        drop(left);
    }

    /// One of `taken`, refilled with a bundle from the bin when empty.
    fn take(&self, taken: &mut Vec<Event>) -> Option<Event> {
        if taken.is_empty() {
            let mut kept = self.lock();
            if let Some((bundle, bytes)) = kept.bundles.pop() {
                kept.bytes -= bytes;
                drop(kept);
                *taken = bundle;
            }
        }
        taken.pop()
    }
}

static SPENT: Bin = Bin::new();

thread_local! {
    static TAKEN_HERE: RefCell<Vec<Event>> = const { RefCell::new(Vec::new()) };
}

/// Keeps `events` (answered, never to be sent again) for their buffers to
/// be reused, as many as there is room for; the rest are dropped.
pub(crate) fn give_back(events: Vec<Event>) {
    SPENT.give_back(events);
}

/// Empty buffers for a new event's `messageId` and JSON: a spent event's,
/// when one is kept.
pub(crate) fn buffers() -> (String, Vec<u8>) {
    match TAKEN_HERE.with_borrow_mut(|taken| SPENT.take(taken)) {
        Some(Event {
            mut message_id,
            mut json,
            ..
        }) => {
            message_id.clear();
            json.clear();
            (message_id, json)
        }
        None => (String::new(), Vec::new()),
    }
}

/// For tests: `event` gives the next [`buffers`] on this thread.
#[cfg(test)]
pub(crate) fn take_next(event: Event) {
    TAKEN_HERE.with_borrow_mut(|taken| taken.push(event));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Identity;

    fn event(json_capacity: usize) -> Event {
        Event {
            message_id: "old-id".to_owned(),
            identity: Identity::user("old-user"),
            json: Vec::with_capacity(json_capacity),
            tag: 7,
        }
    }

    #[test]
    fn spent_events_are_kept_up_to_the_bound_and_taken_back_in_bundles() {
        let bin = Bin::new();
        let kept = || {
            let kept = bin.kept.lock().unwrap();
            let events: usize = kept.bundles.iter().map(|(bundle, _)| bundle.len()).sum();
            (events, kept.bytes)
        };
        let one = held(&event(1_024));
        bin.give_back(vec![event(KEPT_JSON_BYTES + 1), event(1_024)]);
        assert_eq!(kept(), (1, one), "a large buffer is not kept");

        let fit = KEPT_BYTES / one;
        bin.give_back((0..fit + 10).map(|_| event(1_024)).collect());
        assert_eq!(kept(), (fit, fit * one), "never more than KEPT_BYTES");
        let biggest = (bin.kept.lock().unwrap().bundles.iter())
            .map(|(bundle, _)| bundle.len())
            .max();
        assert_eq!(biggest, Some(TAKEN), "in bundles of TAKEN");

        // A thread takes a bundle at once, then from its own.
        let mut taken = Vec::new();
        let first = bin.take(&mut taken).expect("events are kept");
        assert_eq!(first.json.capacity(), 1_024);
        let (left, bytes) = kept();
        let bundle = fit - left;
        assert!((1..=TAKEN).contains(&bundle), "took {bundle}");
        assert_eq!(bytes, left * one);
        for _ in 1..bundle {
            assert!(bin.take(&mut taken).is_some());
        }
        assert_eq!(kept().0, left, "taken from the thread's own");
        assert!(bin.take(&mut taken).is_some());
        assert!(kept().0 < left, "then another bundle");

        let empty = Bin::new();
        assert!(
            empty.take(&mut Vec::new()).is_none(),
            "none kept, none taken"
        );
    }
}
