//! The retry policy: the only place that decides what is retried, and when.
//!
//! Pure: it looks at one failed attempt and the history so far and answers
//! with a decision. The worker carries it out.

use std::time::{Duration, SystemTime};

use crate::error::SegmentError;

/// The longest `Retry-After` this client honours; longer values are capped.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Whether Segment's answer `status` is worth retrying.
///
/// 5xx except 501 (not implemented), 505 (version not supported) and 511
/// (network authentication required); and 408, 410, 429, 460.
pub fn is_retryable_status(status: u16) -> bool {
    match status {
        501 | 505 | 511 => false,
        500..=599 => true,
        408 | 410 | 429 | 460 => true,
        _ => false,
    }
}

/// One failed attempt, as the transport saw it.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub error: SegmentError,
    /// The server's `Retry-After`, already parsed and capped.
    pub retry_after: Option<Duration>,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Wait this long, then try again; the attempt counts.
    Backoff(Duration),
    /// Pause the whole client this long (`Retry-After`); the attempt does not count.
    Pause(Duration),
    /// Stop and report the failure.
    GiveUp,
}

/// Backoff and limits for retrying one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// Attempts per batch, counting the first; `Retry-After` pauses do not count.
    pub max_attempts: u32,
    /// The first backoff ceiling; it doubles per attempt.
    pub initial_backoff: Duration,
    /// The largest backoff ceiling.
    pub max_backoff: Duration,
    /// Total time a batch may spend being retried, waits included.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            budget: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// Decides what follows a failed attempt, given how many counted attempts
    /// were made (including this one) and how long the batch has been trying.
    pub fn decide(&self, failure: &Failure, attempts: u32, elapsed: Duration) -> Decision {
        if !failure.error.is_retryable() {
            return Decision::GiveUp;
        }
        // `Retry-After` is a lower bound on the wait, never a reason to come
        // back sooner than the backoff; without a positive wait it is no
        // pause at all, so the attempt counts like any other.
        let (decision, wait) = match failure.retry_after.filter(|wait| !wait.is_zero()) {
            Some(wait) => {
                let wait = wait.max(self.backoff(attempts));
                (Decision::Pause(wait), wait)
            }
            None if attempts >= self.max_attempts => return Decision::GiveUp,
            None => {
                let wait = self.backoff(attempts);
                (Decision::Backoff(wait), wait)
            }
        };
        if elapsed.saturating_add(wait) > self.budget {
            Decision::GiveUp
        } else {
            decision
        }
    }

    /// Equal-jitter exponential backoff after `attempts` failed attempts:
    /// uniform in `[c/2, c]` with `c = min(max_backoff, initial_backoff * 2^(attempts-1))`.
    ///
    /// Half of each wait is fixed so the time a batch spends on its attempts
    /// has a floor (91.75 s with the defaults), longer than the default
    /// outage bound: a host that never answers is always an `outage`, never
    /// `network` by the luck of the draw. The other half still spreads
    /// clients apart.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let ceiling = self.backoff_ceiling(attempts);
        ceiling / 2 + (ceiling / 2).mul_f64(fastrand::f64())
    }

    fn backoff_ceiling(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(31);
        self.initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }
}

/// Parses a `Retry-After` value: delay seconds or an HTTP-date. Past dates
/// mean "now"; anything over [`MAX_RETRY_AFTER`] is capped.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else if let Ok(secs) = value.parse::<f64>() {
        Duration::try_from_secs_f64(secs).ok()?
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    fn status(code: u16) -> Failure {
        let kind = if code == 429 {
            Kind::RateLimited
        } else {
            Kind::HttpStatus
        };
        Failure {
            error: SegmentError::with_status(kind, code, format!("status {code}")),
            retry_after: None,
        }
    }

    #[test]
    fn classifies_statuses_like_segment() {
        for code in [500, 502, 503, 504, 599, 408, 410, 429, 460] {
            assert!(is_retryable_status(code), "{code} should be retried");
        }
        for code in [200, 400, 401, 403, 404, 413, 422, 501, 505, 511] {
            assert!(!is_retryable_status(code), "{code} should not be retried");
        }
    }

    #[test]
    fn permanent_failures_give_up_at_once() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.decide(&status(400), 1, Duration::ZERO),
            Decision::GiveUp
        );
        assert_eq!(
            policy.decide(&status(401), 1, Duration::ZERO),
            Decision::GiveUp
        );
        assert_eq!(
            policy.decide(&status(501), 1, Duration::ZERO),
            Decision::GiveUp
        );
    }

    #[test]
    fn network_errors_and_timeouts_are_retried() {
        let policy = RetryPolicy::default();
        for kind in [Kind::Network, Kind::Timeout] {
            let failure = Failure {
                error: SegmentError::new(kind, "x"),
                retry_after: None,
            };
            assert!(matches!(
                policy.decide(&failure, 1, Duration::ZERO),
                Decision::Backoff(_)
            ));
        }
    }

    #[test]
    fn attempts_are_limited() {
        let policy = RetryPolicy::default();
        assert!(matches!(
            policy.decide(&status(500), 9, Duration::ZERO),
            Decision::Backoff(_)
        ));
        assert_eq!(
            policy.decide(&status(500), 10, Duration::ZERO),
            Decision::GiveUp
        );
    }

    #[test]
    fn retry_after_pauses_without_counting_even_past_max_attempts() {
        let policy = RetryPolicy::default();
        let failure = Failure {
            retry_after: Some(Duration::from_secs(7)),
            ..status(429)
        };
        // A lower bound: at least the server's wait, at most the backoff ceiling.
        match policy.decide(&failure, 10, Duration::ZERO) {
            Decision::Pause(wait) => {
                assert!(wait >= Duration::from_secs(7) && wait <= Duration::from_secs(60));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_zero_retry_after_counts_and_backs_off() {
        let policy = RetryPolicy::default();
        let failure = Failure {
            retry_after: Some(Duration::ZERO),
            ..status(429)
        };
        assert!(matches!(
            policy.decide(&failure, 1, Duration::ZERO),
            Decision::Backoff(_)
        ));
        assert_eq!(
            policy.decide(&failure, 10, Duration::ZERO),
            Decision::GiveUp
        );
    }

    #[test]
    fn a_short_retry_after_never_waits_less_than_the_backoff_could() {
        let policy = RetryPolicy {
            initial_backoff: Duration::from_secs(8),
            max_backoff: Duration::from_secs(8),
            ..RetryPolicy::default()
        };
        let failure = Failure {
            retry_after: Some(Duration::from_secs(1)),
            ..status(429)
        };
        fastrand::seed(3);
        let waits: Vec<_> = (0..100)
            .map(|_| match policy.decide(&failure, 1, Duration::ZERO) {
                Decision::Pause(wait) => wait,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(waits.iter().all(|w| *w >= Duration::from_secs(1)));
        assert!(waits.iter().any(|w| *w > Duration::from_secs(4)));
    }

    #[test]
    fn the_budget_bounds_every_wait() {
        let policy = RetryPolicy {
            budget: Duration::from_secs(10),
            ..RetryPolicy::default()
        };
        let failure = Failure {
            retry_after: Some(Duration::from_secs(7)),
            ..status(503)
        };
        assert_eq!(
            policy.decide(&failure, 1, Duration::from_secs(4)),
            Decision::GiveUp
        );
        assert_eq!(
            policy.decide(&failure, 1, Duration::from_secs(3)),
            Decision::Pause(Duration::from_secs(7))
        );
    }

    #[test]
    fn backoff_doubles_from_half_a_second_up_to_a_minute_with_equal_jitter() {
        let policy = RetryPolicy::default();
        let ceilings: Vec<_> = (1..=9)
            .map(|a| policy.backoff_ceiling(a).as_millis())
            .collect();
        assert_eq!(
            ceilings,
            [500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]
        );
        fastrand::seed(7);
        let samples: Vec<_> = (0..200).map(|_| policy.backoff(3)).collect();
        assert!(
            samples
                .iter()
                .all(|d| (Duration::from_secs(1)..=Duration::from_secs(2)).contains(d))
        );
        // Equal jitter spreads over the upper half, not just near the ceiling.
        assert!(samples.iter().any(|d| *d < Duration::from_millis(1250)));
        assert!(samples.iter().any(|d| *d > Duration::from_millis(1750)));
    }

    // A batch that never gets an answer must outlast the default outage
    // bound before its attempts run out, every time: otherwise the same
    // dead host is `outage` on one call and `network` on another.
    #[test]
    fn a_batch_never_answered_waits_out_the_default_outage_bound_before_giving_up() {
        let policy = RetryPolicy::default();
        fastrand::seed(11);
        for _ in 0..10_000 {
            let waited: Duration = (1..policy.max_attempts).map(|a| policy.backoff(a)).sum();
            assert!(
                waited >= crate::client::DEFAULT_OUTAGE_AFTER,
                "gave up after {waited:?} of backoff"
            );
        }
    }

    #[test]
    fn parses_retry_after_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("86400", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }
}
