//! Spent events' buffers, handed back from the worker to the threads that
//! prepare events.
//!
//! An event is prepared on the caller's thread and dropped on the worker's
//! once its batch is answered. Freed across threads, each of its buffers
//! cost the allocator a slow path on both sides, and pages faulted in anew
//! as freed ones were purged: a tenth of a million-event sync. The worker
//! hands its spent events back here instead, and preparing an event takes
//! one, writing into its buffers. Memory stays bounded: at most [`KEPT`]
//! events wait here (and [`TAKEN`] per preparing thread), each with a JSON
//! buffer of at most [`KEPT_JSON_BYTES`]; the rest are dropped as before.

use std::cell::RefCell;
use std::sync::{Mutex, PoisonError};

use crate::message::Event;

/// Most spent events kept between the worker and the preparing threads.
const KEPT: usize = 4_096;
/// Most spent events a preparing thread takes at once (and so holds).
const TAKEN: usize = 256;
/// Larger JSON buffers are freed: they are rare, and would hold memory.
const KEPT_JSON_BYTES: usize = 2_048;

/// Where the worker puts spent events and preparing threads take them.
struct Bin {
    events: Mutex<Vec<Event>>,
}

impl Bin {
    const fn new() -> Self {
        Self {
            events: Mutex::new(Vec::new()),
        }
    }

    fn give_back(&self, events: Vec<Event>) {
        let mut events = events.into_iter();
        let mut kept = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        let room = KEPT.saturating_sub(kept.len());
        kept.extend(
            events
                .by_ref()
                .filter(|event| event.json.capacity() <= KEPT_JSON_BYTES)
                .take(room),
        );
        drop(kept);
        // What did not fit is dropped outside the lock.
        drop(events);
    }

    /// One of `taken`, refilled from the bin (one lock for [`TAKEN`]) when empty.
    fn take(&self, taken: &mut Vec<Event>) -> Option<Event> {
        if taken.is_empty() {
            let mut kept = self.events.lock().unwrap_or_else(PoisonError::into_inner);
            let from = kept.len().saturating_sub(TAKEN);
            taken.extend(kept.drain(from..));
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

/// A spent event whose buffers to write a new event in, if one is kept.
/// Its fields still hold the old event's values: every one must be set.
pub(crate) fn take() -> Option<Event> {
    TAKEN_HERE.with_borrow_mut(|taken| SPENT.take(taken))
}

/// For tests: `event` is the next one [`take`] gives on this thread.
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
    fn spent_events_are_kept_up_to_the_bound_and_taken_back_in_batches() {
        let bin = Bin::new();
        let kept = || bin.events.lock().unwrap().len();
        bin.give_back(vec![event(KEPT_JSON_BYTES + 1), event(64)]);
        assert_eq!(kept(), 1, "a large buffer is not kept");

        bin.give_back((0..KEPT + 10).map(|_| event(64)).collect());
        assert_eq!(kept(), KEPT, "never more than KEPT");

        // A thread takes a batch at once, then from its own.
        let mut taken = Vec::new();
        let first = bin.take(&mut taken).expect("events are kept");
        assert_eq!(first.json.capacity(), 64);
        assert_eq!(kept(), KEPT - TAKEN);
        for _ in 1..TAKEN {
            assert!(bin.take(&mut taken).is_some());
        }
        assert_eq!(kept(), KEPT - TAKEN, "taken from the thread's own");
        assert!(bin.take(&mut taken).is_some());
        assert_eq!(kept(), KEPT - 2 * TAKEN);

        let empty = Bin::new();
        assert!(
            empty.take(&mut Vec::new()).is_none(),
            "none kept, none taken"
        );
    }
}
