//! Whether Segment can be reached at all: the outage detector, as plain data.
//!
//! A run of requests that all fail without an answer (timeouts, network
//! errors) and deliver nothing is an outage once it has lasted the client's
//! bound and holds more than one request. During an outage one request at a time probes the host; the other
//! batches fail at once instead of each spending its retries on a host that
//! is not there. The first answer of any kind ends the run.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::SegmentError;

/// What the send tasks know about reaching Segment, shared by all of them.
#[derive(Debug)]
pub(crate) struct Health {
    bound: Duration,
    /// When the first request of the current run of unanswered failures started.
    failing_since: Option<Instant>,
    /// Unanswered attempts in the current run: one hung request is not an outage.
    failures_in_row: u32,
    /// Declared once the run has lasted `bound`; ended by the first answer.
    outage: bool,
    /// Whether a request is probing the host during an outage.
    probing: bool,
    /// Whether any request of this client was ever answered 2xx.
    delivered_any: bool,
    /// The last failed attempt's error, for callers that stop waiting.
    last_failure: Option<SegmentError>,
}

/// May a batch make an attempt now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Yes, as usual.
    Send,
    /// Yes, as the one probe of an outage: report back with `answered`/`unanswered`.
    Probe,
    /// No: the host is out and another request is probing it.
    Refuse,
}

impl Health {
    pub fn new(bound: Duration) -> Self {
        Self {
            bound,
            failing_since: None,
            failures_in_row: 0,
            outage: false,
            probing: false,
            delivered_any: false,
            last_failure: None,
        }
    }

    pub fn admit(&mut self) -> Admission {
        match (self.outage, self.probing) {
            (false, _) => Admission::Send,
            (true, false) => {
                self.probing = true;
                Admission::Probe
            }
            (true, true) => Admission::Refuse,
        }
    }

    /// A request was answered 2xx.
    pub fn delivered(&mut self) {
        self.answered();
        self.delivered_any = true;
        self.last_failure = None;
    }

    /// A request got an answer, even an error: the host is there.
    pub fn answered(&mut self) {
        self.failing_since = None;
        self.failures_in_row = 0;
        self.outage = false;
        self.probing = false;
    }

    /// A request that started at `started` failed without an answer (`probe`:
    /// it was the outage's probe). Returns whether the client is now in an outage.
    pub fn unanswered(&mut self, started: Instant, now: Instant, probe: bool) -> bool {
        if probe {
            self.probing = false;
        }
        let since = *self.failing_since.get_or_insert(started);
        self.failures_in_row = self.failures_in_row.saturating_add(1);
        if self.failures_in_row >= 2 && now.saturating_duration_since(since) >= self.bound {
            self.outage = true;
        }
        self.outage
    }

    /// When the current run of unanswered failures becomes an outage, if it
    /// is long enough to become one.
    pub fn outage_at(&self) -> Option<Instant> {
        self.failing_since
            .filter(|_| self.failures_in_row >= 2 && !self.outage)
            .map(|since| since + self.bound)
    }

    /// Declares the outage if the run has lasted the bound by `now`.
    pub fn check_outage(&mut self, now: Instant) -> bool {
        if self.outage_at().is_some_and(|at| at <= now) {
            self.outage = true;
        }
        self.outage
    }

    /// Forgets a probe that ended without an attempt's result (its task was aborted).
    pub fn probe_abandoned(&mut self) {
        self.probing = false;
    }

    pub fn remember(&mut self, error: &SegmentError) {
        self.last_failure = Some(error.clone());
    }

    pub fn last_failure(&self) -> Option<&SegmentError> {
        self.last_failure.as_ref()
    }

    pub fn bound(&self) -> Duration {
        self.bound
    }

    pub fn delivered_any(&self) -> bool {
        self.delivered_any
    }

    /// How long the current run of unanswered failures has lasted.
    pub fn failing_for(&self, now: Instant) -> Duration {
        self.failing_since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_needs_the_whole_bound_without_an_answer() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut health = Health::new(s(30));
        assert!(!health.unanswered(t0, t0 + s(15), false));
        assert!(!health.unanswered(t0 + s(16), t0 + s(29), false));
        // Any answer, even an error status, restarts the count.
        health.answered();
        assert!(!health.unanswered(t0 + s(29), t0 + s(45), false));
        assert!(health.unanswered(t0 + s(46), t0 + s(60), false));
        assert_eq!(health.failing_for(t0 + s(60)), s(31));
    }

    #[test]
    fn an_outage_is_due_when_the_bound_passes_even_between_attempts() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut health = Health::new(s(30));
        assert!(!health.unanswered(t0, t0, false));
        assert_eq!(health.outage_at(), None, "one failure is not a run");
        assert!(!health.unanswered(t0 + s(1), t0 + s(1), false));
        assert_eq!(health.outage_at(), Some(t0 + s(30)));
        assert!(!health.check_outage(t0 + s(29)));
        assert!(health.check_outage(t0 + s(30)));
    }

    #[test]
    fn during_an_outage_one_request_probes_and_the_rest_are_refused() {
        let t0 = Instant::now();
        let mut health = Health::new(Duration::ZERO);
        assert_eq!(health.admit(), Admission::Send);
        assert!(
            !health.unanswered(t0, t0, false),
            "one hung request is not an outage"
        );
        assert!(health.unanswered(t0, t0, false));
        assert_eq!(health.admit(), Admission::Probe);
        assert_eq!(health.admit(), Admission::Refuse);
        // Requests that started before the outage end without freeing the probe slot.
        assert!(health.unanswered(t0, t0, false));
        assert_eq!(health.admit(), Admission::Refuse);
        assert!(health.unanswered(t0, t0, true));
        assert_eq!(health.admit(), Admission::Probe);
        health.delivered();
        assert_eq!(health.admit(), Admission::Send);
        assert!(health.delivered_any());
    }
}
