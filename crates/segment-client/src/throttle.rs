//! Client-wide gates on when a request may start, as plain data.
//!
//! [`Pause`] holds a `Retry-After` that stops every request of the client;
//! [`Pacer`] spaces requests to honour a requests-per-second cap. Neither does
//! I/O or sleeps: the worker asks them for an instant and waits for it.

use std::time::Duration;

use tokio::time::Instant;

/// A client-wide pause requested by the server with `Retry-After`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Pause {
    until: Option<Instant>,
}

impl Pause {
    /// Pauses until `now + wait`, unless an existing pause lasts longer.
    pub fn extend(&mut self, now: Instant, wait: Duration) {
        let until = now + wait;
        self.until = Some(self.until.map_or(until, |u| u.max(until)));
    }

    /// When requests may start again, if that is in the future.
    pub fn resume_at(&self, now: Instant) -> Option<Instant> {
        self.until.filter(|until| *until > now)
    }
}

/// Spaces request starts to at most `rate` per second.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pacer {
    interval: Duration,
    next: Option<Instant>,
}

impl Pacer {
    /// A pacer for `rate` requests per second (must be positive).
    pub fn new(rate: f64) -> Self {
        Self {
            interval: Duration::from_secs_f64(1.0 / rate),
            next: None,
        }
    }

    /// Reserves the next slot: the instant at which a request may start.
    pub fn reserve(&mut self, now: Instant) -> Instant {
        let slot = self.next.map_or(now, |next| next.max(now));
        self.next = Some(slot + self.interval);
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_keeps_the_longest_wait() {
        let now = Instant::now();
        let mut pause = Pause::default();
        assert_eq!(pause.resume_at(now), None);
        pause.extend(now, Duration::from_secs(5));
        pause.extend(now, Duration::from_secs(2));
        assert_eq!(pause.resume_at(now), Some(now + Duration::from_secs(5)));
        assert_eq!(pause.resume_at(now + Duration::from_secs(5)), None);
    }

    #[test]
    fn pacer_spaces_requests_evenly_and_does_not_bank_idle_time() {
        let now = Instant::now();
        let mut pacer = Pacer::new(4.0);
        let slots: Vec<_> = (0..3).map(|_| pacer.reserve(now) - now).collect();
        assert_eq!(
            slots,
            [
                Duration::ZERO,
                Duration::from_millis(250),
                Duration::from_millis(500)
            ]
        );
        // After a long idle spell the next request goes at once, but only one.
        let later = now + Duration::from_secs(10);
        assert_eq!(pacer.reserve(later), later);
        assert_eq!(pacer.reserve(later), later + Duration::from_millis(250));
    }
}
