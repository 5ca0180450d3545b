//! What a flush tells the caller: delivered, failed with reasons, still pending.

use crate::error::SegmentError;
use crate::message::{Event, Identity};

/// Identifies one event in a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef {
    /// The event's `messageId`.
    pub message_id: String,
    /// Who the event was about.
    pub identity: Identity,
}

impl From<&Event> for EventRef {
    fn from(event: &Event) -> Self {
        Self {
            message_id: event.message_id.clone(),
            identity: event.identity.clone(),
        }
    }
}

/// An event Segment did not accept, and why.
#[derive(Debug, Clone)]
pub struct FailedEvent {
    /// The event.
    pub event: EventRef,
    /// Why it failed: the last attempt's error, with the attempt count.
    pub error: SegmentError,
}

/// The outcome of a flush or close.
///
/// Covers every event whose delivery finished since the previous report, plus
/// the events queued before this flush that were still pending when its
/// deadline passed. Counts are exact; the per-event failure list is capped by
/// [`HttpClientBuilder::max_failures_in_report`](crate::HttpClientBuilder::max_failures_in_report)
/// so a long outage cannot grow memory without bound (use
/// [`HttpClientBuilder::on_outcome`](crate::HttpClientBuilder::on_outcome) to
/// see every event).
///
/// # Example
/// ```
/// use segment_client::DeliveryReport;
///
/// let report = DeliveryReport::default();
/// assert!(report.is_complete());
/// assert_eq!(report.failed_count(), 0);
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DeliveryReport {
    /// Events Segment answered 2xx for.
    pub delivered: u64,
    /// Failed events, oldest first, up to the configured cap.
    pub failed: Vec<FailedEvent>,
    /// Failed events that did not fit in `failed`.
    pub failed_not_listed: u64,
    /// Events queued before the flush and not finished at its deadline.
    pub pending: Vec<EventRef>,
}

impl DeliveryReport {
    /// Whether every event was delivered: nothing failed, nothing pending.
    pub fn is_complete(&self) -> bool {
        self.failed_count() == 0 && self.pending.is_empty()
    }

    /// How many events failed, listed or not.
    pub fn failed_count(&self) -> u64 {
        self.failed.len() as u64 + self.failed_not_listed
    }

    /// The failure of the event with `message_id`, if it is listed.
    pub fn failure_of(&self, message_id: &str) -> Option<&SegmentError> {
        self.failed
            .iter()
            .find(|f| f.event.message_id == message_id)
            .map(|f| &f.error)
    }

    /// Whether the event with `message_id` was still pending.
    pub fn is_pending(&self, message_id: &str) -> bool {
        self.pending.iter().any(|p| p.message_id == message_id)
    }

    pub(crate) fn record_failure(&mut self, event: EventRef, error: SegmentError, cap: usize) {
        if self.failed.len() < cap {
            self.failed.push(FailedEvent { event, error });
        } else {
            self.failed_not_listed += 1;
        }
    }

    /// Adds an earlier report back in (its reader went away), keeping order.
    pub(crate) fn merge_earlier(&mut self, mut earlier: DeliveryReport, cap: usize) {
        earlier.delivered += self.delivered;
        earlier.failed_not_listed += self.failed_not_listed;
        for failure in self.failed.drain(..) {
            earlier.record_failure(failure.event, failure.error, cap);
        }
        earlier.pending.clear();
        *self = earlier;
    }
}

/// The outcome of one event, passed to an
/// [`on_outcome`](crate::HttpClientBuilder::on_outcome) callback.
#[derive(Debug, Clone, Copy)]
pub struct EventOutcome<'a> {
    /// The event's `messageId`.
    pub message_id: &'a str,
    /// Who the event was about.
    pub identity: &'a Identity,
    /// `Ok` once Segment answered 2xx for its batch, or why it failed.
    pub result: Result<(), &'a SegmentError>,
    /// What [`PreparedEvent::set_tag`](crate::PreparedEvent::set_tag) gave
    /// the event; 0 if nothing did.
    pub tag: u64,
}
