//! Fault injection: [`FaultPlan`] (plain data, also accepted as JSON by
//! `POST /_receiver/faults`) and the per-receiver state that applies it.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

/// Which ingest requests get an injected failure, and how slowly every ingest request is
/// answered.
///
/// Rules are consulted for each ingest request that is well formed and authorized (a
/// request that gets `400` or `401` never reaches them). They are checked in order and
/// the first rule that fires decides the response; a rule that is not reached does not
/// advance its counters. A faulted request records none of its events as accepted, since
/// the client is expected to retry them.
///
/// As JSON (for `POST /_receiver/faults`):
/// `{"rules":[{"kind":"first_n","n":2,"status":503}],"latency_ms":0}`; both fields may be
/// omitted.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use segment_receiver::{Fault, FaultPlan};
///
/// // Two 503s, then one 429 with `Retry-After: 2`, each answer taking 50 ms.
/// let plan = FaultPlan::first_n(2, 503)
///     .with_rule(Fault::FirstN { n: 1, status: 429, retry_after: Some("2".into()) })
///     .with_latency(Duration::from_millis(50));
/// assert_eq!(plan.rules.len(), 2);
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultPlan {
    /// Rules checked in order for each ingest request; the first that fires decides the
    /// response. Default: none.
    pub rules: Vec<Fault>,
    /// Milliseconds added to every ingest request before it is answered (with
    /// `tokio::time::sleep`, so paused-time tests skip it). Default: 0.
    pub latency_ms: u64,
}

/// One fault-injection rule of a [`FaultPlan`].
#[non_exhaustive]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// The first `n` requests that reach this rule get `status`.
    FirstN {
        /// How many requests fail.
        n: u32,
        /// The HTTP status they get.
        status: u16,
        /// A `Retry-After` header value (seconds or an HTTP date) to send with them.
        #[serde(default)]
        retry_after: Option<String>,
    },
    /// Each request that reaches this rule gets `status` with probability `fraction`.
    Fraction {
        /// Probability in `0.0..=1.0`.
        fraction: f64,
        /// The HTTP status the unlucky requests get.
        status: u16,
        /// Seed for the random draws: the same seed fails the same requests in the same
        /// order. `None` draws a fresh seed.
        #[serde(default)]
        seed: Option<u64>,
        /// A `Retry-After` header value (seconds or an HTTP date) to send with them.
        #[serde(default)]
        retry_after: Option<String>,
    },
    /// Requests whose batch holds an event with this `userId` get `status`.
    UserId {
        /// The `userId` to match.
        user_id: String,
        /// The HTTP status matching requests get.
        status: u16,
        /// Fire at most this many times; `None` fires on every matching request.
        #[serde(default)]
        times: Option<u32>,
    },
    /// The first `n` requests that reach this rule are never answered: the connection is
    /// held until the client gives up (or the receiver shuts down, which answers `503`).
    Hang {
        /// How many requests hang.
        n: u32,
    },
}

impl FaultPlan {
    /// No faults and no latency (the default).
    pub fn none() -> Self {
        Self::default()
    }

    /// The first `n` ingest requests get `status`.
    pub fn first_n(n: u32, status: u16) -> Self {
        Self::none().with_rule(Fault::FirstN {
            n,
            status,
            retry_after: None,
        })
    }

    /// The first `n` ingest requests get `429 Too Many Requests` with a `Retry-After`
    /// header holding `retry_after` (seconds, or an HTTP date).
    pub fn retry_after(n: u32, retry_after: impl Into<String>) -> Self {
        Self::none().with_rule(Fault::FirstN {
            n,
            status: 429,
            retry_after: Some(retry_after.into()),
        })
    }

    /// A `fraction` of ingest requests get `status`; deterministic when `seed` is given.
    pub fn fraction(fraction: f64, status: u16, seed: Option<u64>) -> Self {
        Self::none().with_rule(Fault::Fraction {
            fraction,
            status,
            seed,
            retry_after: None,
        })
    }

    /// Requests carrying an event for `user_id` get `status`, at most `times` times
    /// (`None`: every time).
    pub fn user_id(user_id: impl Into<String>, status: u16, times: Option<u32>) -> Self {
        Self::none().with_rule(Fault::UserId {
            user_id: user_id.into(),
            status,
            times,
        })
    }

    /// The first `n` ingest requests are never answered.
    pub fn hang(n: u32) -> Self {
        Self::none().with_rule(Fault::Hang { n })
    }

    /// Append `rule` after the existing rules.
    pub fn with_rule(mut self, rule: Fault) -> Self {
        self.rules.push(rule);
        self
    }

    /// Add `latency` to every ingest request (millisecond resolution).
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Describe the first rule that cannot be applied as written, for
    /// `POST /_receiver/faults`. (The Rust API stays infallible: an invalid status becomes
    /// `500` and an invalid `Retry-After` value is left out.)
    pub(crate) fn problem(&self) -> Option<String> {
        self.rules.iter().enumerate().find_map(|(i, rule)| {
            let status = match rule {
                Fault::FirstN { status, .. }
                | Fault::Fraction { status, .. }
                | Fault::UserId { status, .. } => *status,
                Fault::Hang { .. } => return None,
            };
            if StatusCode::from_u16(status).is_err() {
                return Some(format!("rules[{i}]: status {status} is not an HTTP status"));
            }
            match rule {
                Fault::FirstN {
                    retry_after: Some(value),
                    ..
                }
                | Fault::Fraction {
                    retry_after: Some(value),
                    ..
                } if HeaderValue::from_str(value).is_err() => Some(format!(
                    "rules[{i}]: retry_after is not a valid header value"
                )),
                Fault::Fraction { fraction, .. } if !(0.0..=1.0).contains(fraction) => Some(
                    format!("rules[{i}]: fraction {fraction} is not within 0.0..=1.0"),
                ),
                _ => None,
            }
        })
    }
}

/// What the fault plan decided for one request.
#[derive(Debug)]
pub(crate) enum Action {
    /// No rule fired: handle the request normally.
    Pass,
    /// Answer with this status (and `Retry-After` header, if any) without accepting events.
    Fail {
        status: StatusCode,
        retry_after: Option<HeaderValue>,
    },
    /// Never answer.
    Hang,
}

/// A [`FaultPlan`] being applied: the plan plus each rule's counters.
#[derive(Debug)]
pub(crate) struct Faults {
    active: Mutex<Active>,
}

#[derive(Debug)]
struct Active {
    plan: FaultPlan,
    rules: Vec<RuleState>,
}

#[derive(Debug)]
struct RuleState {
    fired: u32,
    rng: fastrand::Rng,
}

impl Active {
    fn new(plan: FaultPlan) -> Self {
        let rules = plan
            .rules
            .iter()
            .map(|rule| RuleState {
                fired: 0,
                rng: match rule {
                    Fault::Fraction {
                        seed: Some(seed), ..
                    } => fastrand::Rng::with_seed(*seed),
                    _ => fastrand::Rng::new(),
                },
            })
            .collect();
        Self { plan, rules }
    }
}

impl Faults {
    pub(crate) fn new(plan: FaultPlan) -> Self {
        Self {
            active: Mutex::new(Active::new(plan)),
        }
    }

    /// Replace the plan and reset every counter.
    pub(crate) fn replace(&self, plan: FaultPlan) {
        *self.lock() = Active::new(plan);
    }

    pub(crate) fn latency(&self) -> Duration {
        Duration::from_millis(self.lock().plan.latency_ms)
    }

    /// Decide the fate of one request; `has_user` tells whether its batch holds an event
    /// for a given `userId`.
    pub(crate) fn decide(&self, has_user: impl Fn(&str) -> bool) -> Action {
        let mut guard = self.lock();
        let Active { plan, rules } = &mut *guard;
        for (rule, state) in plan.rules.iter().zip(rules.iter_mut()) {
            let (fires, action) = match rule {
                Fault::FirstN {
                    n,
                    status,
                    retry_after,
                } => (state.fired < *n, fail(*status, retry_after.as_deref())),
                Fault::Fraction {
                    fraction,
                    status,
                    retry_after,
                    ..
                } => (
                    state.rng.f64() < *fraction,
                    fail(*status, retry_after.as_deref()),
                ),
                Fault::UserId {
                    user_id,
                    status,
                    times,
                } => (
                    times.is_none_or(|times| state.fired < times) && has_user(user_id),
                    fail(*status, None),
                ),
                Fault::Hang { n } => (state.fired < *n, Action::Hang),
            };
            if fires {
                state.fired = state.fired.saturating_add(1);
                return action;
            }
        }
        Action::Pass
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Active> {
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn fail(status: u16, retry_after: Option<&str>) -> Action {
    Action::Fail {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        retry_after: retry_after.and_then(|value| HeaderValue::from_str(value).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status each of `count` requests gets (200 for a pass, 0 for a hang).
    fn outcomes(faults: &Faults, count: usize, user: &str) -> Vec<u16> {
        (0..count)
            .map(|_| match faults.decide(|u| u == user) {
                Action::Pass => 200,
                Action::Fail { status, .. } => status.as_u16(),
                Action::Hang => 0,
            })
            .collect()
    }

    #[test]
    fn first_n_fails_exactly_n_requests_then_passes() {
        let faults = Faults::new(FaultPlan::first_n(2, 503));
        assert_eq!(outcomes(&faults, 4, "u"), [503, 503, 200, 200]);
    }

    #[test]
    fn replace_resets_the_counters() {
        let faults = Faults::new(FaultPlan::first_n(1, 500));
        assert_eq!(outcomes(&faults, 2, "u"), [500, 200]);
        faults.replace(FaultPlan::first_n(1, 500));
        assert_eq!(outcomes(&faults, 2, "u"), [500, 200]);
    }

    #[test]
    fn retry_after_carries_the_header_value() {
        let faults = Faults::new(FaultPlan::retry_after(1, "7"));
        match faults.decide(|_| false) {
            Action::Fail {
                status,
                retry_after,
            } => {
                assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
                assert_eq!(retry_after, Some(HeaderValue::from_static("7")));
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn a_fraction_rule_can_carry_retry_after() {
        let plan: FaultPlan = serde_json::from_str(
            r#"{"rules":[{"kind":"fraction","fraction":1.0,"status":429,"retry_after":"2"}]}"#,
        )
        .unwrap();
        match Faults::new(plan).decide(|_| false) {
            Action::Fail {
                status,
                retry_after,
            } => {
                assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
                assert_eq!(retry_after, Some(HeaderValue::from_static("2")));
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn seeded_fraction_is_deterministic_and_roughly_right() {
        let plan = FaultPlan::fraction(0.3, 500, Some(42));
        let first = outcomes(&Faults::new(plan.clone()), 1000, "u");
        let second = outcomes(&Faults::new(plan), 1000, "u");
        assert_eq!(first, second);
        let failed = first.iter().filter(|&&s| s == 500).count();
        assert!((200..400).contains(&failed), "{failed} of 1000 failed");

        let other_seed = outcomes(
            &Faults::new(FaultPlan::fraction(0.3, 500, Some(7))),
            1000,
            "u",
        );
        assert_ne!(first, other_seed);
    }

    #[test]
    fn fraction_extremes() {
        assert!(
            outcomes(&Faults::new(FaultPlan::fraction(0.0, 500, None)), 100, "u")
                .iter()
                .all(|&s| s == 200)
        );
        assert!(
            outcomes(&Faults::new(FaultPlan::fraction(1.0, 500, None)), 100, "u")
                .iter()
                .all(|&s| s == 500)
        );
    }

    #[test]
    fn user_id_fires_only_for_matching_batches_and_at_most_times() {
        let faults = Faults::new(FaultPlan::user_id("bad", 500, Some(2)));
        assert_eq!(outcomes(&faults, 2, "good"), [200, 200]);
        assert_eq!(outcomes(&faults, 3, "bad"), [500, 500, 200]);

        let always = Faults::new(FaultPlan::user_id("bad", 503, None));
        assert_eq!(outcomes(&always, 3, "bad"), [503, 503, 503]);
    }

    #[test]
    fn rules_apply_in_order_and_unreached_rules_keep_their_counters() {
        let faults = Faults::new(FaultPlan::hang(1).with_rule(Fault::FirstN {
            n: 2,
            status: 502,
            retry_after: None,
        }));
        assert_eq!(outcomes(&faults, 4, "u"), [0, 502, 502, 200]);
    }

    #[test]
    fn latency_and_json_shape() {
        let plan: FaultPlan = serde_json::from_str(
            r#"{"rules":[{"kind":"first_n","n":1,"status":429,"retry_after":"2"},
                         {"kind":"user_id","user_id":"u1","status":500}],
                "latency_ms":25}"#,
        )
        .expect("valid plan JSON");
        let faults = Faults::new(plan);
        assert_eq!(faults.latency(), Duration::from_millis(25));
        assert_eq!(outcomes(&faults, 3, "u1"), [429, 500, 500]);

        let empty: FaultPlan = serde_json::from_str("{}").expect("all fields default");
        assert!(empty.rules.is_empty());
        assert_eq!(empty.latency_ms, 0);
    }

    #[test]
    fn problem_reports_unusable_rules() {
        assert_eq!(FaultPlan::first_n(1, 503).problem(), None);
        assert!(FaultPlan::first_n(1, 42).problem().is_some());
        assert!(FaultPlan::retry_after(1, "bad\nvalue").problem().is_some());
        assert!(FaultPlan::fraction(1.5, 500, None).problem().is_some());
    }
}
