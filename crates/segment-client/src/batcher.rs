//! Groups validated events into batches that respect Segment's limits.
//!
//! Pure and byte-accounted: it knows each event's exact serialised size and
//! the envelope's, so every batch it seals encodes to at most
//! `max_request_bytes` uncompressed and holds at most `max_events` events.

use crate::message::Event;

/// Segment answers 400 to batch requests over this many bytes (uncompressed).
pub const MAX_REQUEST_BYTES: usize = 500_000;
/// Segment silently drops batches with more events than this.
pub const MAX_BATCH_EVENTS: usize = 2_500;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_events: usize,
    pub max_request_bytes: usize,
    /// Bytes the envelope adds around the comma-separated events.
    pub envelope_bytes: usize,
}

/// Events that will travel in one request, in queue order.
#[derive(Debug)]
pub(crate) struct Batch {
    /// Queue position of the first event; the events are contiguous.
    pub first_seq: u64,
    pub events: Vec<Event>,
    /// The exact size of the uncompressed request body.
    pub body_bytes: usize,
}

impl Batch {
    /// A copy of a batch still shared with a send task.
    pub fn clone_events(&self) -> Self {
        Self {
            first_seq: self.first_seq,
            events: self.events.clone(),
            body_bytes: self.body_bytes,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Batcher {
    limits: Limits,
    events: Vec<Event>,
    first_seq: u64,
    /// Envelope plus events plus the commas between them.
    bytes: usize,
    /// How many events the last batch sealed held: the next one is given
    /// room for as many up front rather than growing (and copying) to it.
    last_len: usize,
}

impl Batcher {
    pub fn new(limits: Limits) -> Self {
        debug_assert!(limits.max_events >= 1);
        Self {
            limits,
            events: Vec::new(),
            first_seq: 0,
            bytes: limits.envelope_bytes,
            last_len: 256,
        }
    }

    /// Adds an event; returns the previous batch if this event did not fit in it.
    ///
    /// A batch that reached `max_events` is left for the caller to take, see
    /// [`is_full`](Self::is_full).
    pub fn push(&mut self, seq: u64, event: Event) -> Option<Batch> {
        let added = event.json.len() + usize::from(!self.events.is_empty());
        let sealed = if !self.events.is_empty()
            && (self.is_full() || self.bytes + added > self.limits.max_request_bytes)
        {
            self.take()
        } else {
            None
        };
        if self.events.is_empty() {
            self.first_seq = seq;
            self.events
                .reserve_exact(self.limits.max_events.min(self.last_len));
        }
        self.bytes += event.json.len() + usize::from(!self.events.is_empty());
        self.events.push(event);
        sealed
    }

    /// Whether the current batch holds `max_events` events.
    pub fn is_full(&self) -> bool {
        self.events.len() >= self.limits.max_events
    }

    /// Whether no events are waiting.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Queue position of the oldest waiting event.
    pub fn first_seq(&self) -> Option<u64> {
        (!self.events.is_empty()).then_some(self.first_seq)
    }

    /// Seals the current batch, if it has any events.
    pub fn take(&mut self) -> Option<Batch> {
        if self.events.is_empty() {
            return None;
        }
        self.last_len = self.events.len();
        let batch = Batch {
            first_seq: self.first_seq,
            events: std::mem::take(&mut self.events),
            body_bytes: self.bytes,
        };
        self.bytes = self.limits.envelope_bytes;
        Some(batch)
    }

    /// The events still waiting, oldest first.
    pub fn events(&self) -> &[Event] {
        &self.events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Identity;
    use proptest::prelude::*;

    fn event(seq: u64, len: usize) -> Event {
        Event {
            message_id: seq.to_string(),
            identity: Identity::user("u"),
            json: vec![b'x'; len],
            tag: 0,
        }
    }

    fn run(limits: Limits, sizes: &[usize]) -> Vec<Batch> {
        let mut batcher = Batcher::new(limits);
        let mut out = Vec::new();
        for (seq, &len) in sizes.iter().enumerate() {
            out.extend(batcher.push(seq as u64, event(seq as u64, len)));
            if batcher.is_full() {
                out.extend(batcher.take());
            }
        }
        out.extend(batcher.take());
        out
    }

    fn segment_limits(max_events: usize) -> Limits {
        Limits {
            max_events,
            max_request_bytes: MAX_REQUEST_BYTES,
            envelope_bytes: 120,
        }
    }

    #[test]
    fn a_batch_is_given_room_for_as_many_events_as_the_last_one_held() {
        let batches = run(segment_limits(700), &[10; 2_100]);
        let shapes: Vec<_> = (batches.iter())
            .map(|b| (b.events.len(), b.events.capacity()))
            .collect();
        // The first grows from its first guess; the later ones never grow.
        assert_eq!(shapes[1..], [(700, 700), (700, 700)]);
    }

    #[test]
    fn seals_on_count() {
        let batches = run(segment_limits(3), &[10; 7]);
        let counts: Vec<_> = batches.iter().map(|b| b.events.len()).collect();
        assert_eq!(counts, [3, 3, 1]);
        assert_eq!(batches[1].first_seq, 3);
        assert_eq!(batches[0].body_bytes, 120 + 3 * 10 + 2);
    }

    #[test]
    fn seals_on_bytes_exactly_at_the_limit() {
        let limits = Limits {
            max_events: 100,
            max_request_bytes: 100,
            envelope_bytes: 10,
        };
        // Envelope 10 + 44 + comma + 45 = exactly 100: fits. One more byte-long event does not.
        let batches = run(limits, &[44, 45, 1]);
        assert_eq!(batches[0].events.len(), 2);
        assert_eq!(batches[0].body_bytes, 100);
        assert_eq!(batches[1].events.len(), 1);
        assert_eq!(batches[1].body_bytes, 11);
    }

    #[test]
    fn max_size_events_pack_into_legal_batches() {
        let batches = run(segment_limits(MAX_BATCH_EVENTS), &[32_000; 40]);
        assert!(batches.iter().all(|b| b.body_bytes <= MAX_REQUEST_BYTES));
        assert_eq!(batches[0].events.len(), 15);
    }

    proptest! {
        #[test]
        fn nothing_lost_duplicated_or_reordered_and_limits_hold(
            sizes in proptest::collection::vec(1usize..32_000, 0..400),
            max_events in 1usize..300,
        ) {
            let limits = segment_limits(max_events);
            let batches = run(limits, &sizes);
            let seqs: Vec<u64> = batches
                .iter()
                .flat_map(|b| b.events.iter().map(|e| e.message_id.parse::<u64>().unwrap()))
                .collect();
            prop_assert_eq!(seqs, (0..sizes.len() as u64).collect::<Vec<_>>());
            for b in &batches {
                prop_assert!(!b.events.is_empty());
                prop_assert!(b.events.len() <= max_events);
                let exact = limits.envelope_bytes
                    + b.events.iter().map(|e| e.json.len()).sum::<usize>()
                    + b.events.len() - 1;
                prop_assert_eq!(b.body_bytes, exact);
                prop_assert!(b.body_bytes <= MAX_REQUEST_BYTES);
                prop_assert_eq!(b.first_seq, b.events[0].message_id.parse::<u64>().unwrap());
            }
            // A batch is only sealed early when the next event really would not fit.
            for pair in batches.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                if a.events.len() < max_events {
                    prop_assert!(a.body_bytes + 1 + b.events[0].json.len() > MAX_REQUEST_BYTES);
                }
            }
        }
    }
}
