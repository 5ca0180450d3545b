//! [`ReceiverConfig`]: what a receiver accepts, records and injects.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::faults::FaultPlan;

/// How much of each accepted event the receiver keeps in memory.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Record {
    /// Keep every accepted event exactly as received (the default), so that
    /// [`Store::events`](crate::Store::events) and friends can return them.
    #[default]
    Full,
    /// Keep counters, rejections and the set of `messageId`s (so duplicates are still
    /// counted) but no event bodies: for load tests that send millions of events.
    CountsOnly,
}

/// Configuration for a [`Receiver`](crate::Receiver) or [`serve`](crate::serve), built
/// with by-value setters.
///
/// The default accepts any write key (or none), keeps events in memory
/// ([`Record::Full`]), writes no save file and injects no faults.
///
/// # Example
///
/// ```
/// use segment_receiver::{FaultPlan, Record, ReceiverConfig};
///
/// let config = ReceiverConfig::new()
///     .write_key("test-key")
///     .record(Record::CountsOnly)
///     .faults(FaultPlan::first_n(2, 503));
/// # let _ = config;
/// ```
#[derive(Clone)]
pub struct ReceiverConfig {
    pub(crate) write_keys: Vec<String>,
    pub(crate) save_to: Option<PathBuf>,
    pub(crate) record: Record,
    pub(crate) faults: FaultPlan,
    pub(crate) keep: usize,
    pub(crate) body_timeout: Duration,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            write_keys: Vec::new(),
            save_to: None,
            record: Record::default(),
            faults: FaultPlan::default(),
            keep: Self::DEFAULT_KEEP,
            body_timeout: Self::DEFAULT_BODY_TIMEOUT,
        }
    }
}

impl ReceiverConfig {
    /// The default for [`keep`](Self::keep): 100,000.
    pub const DEFAULT_KEEP: usize = 100_000;

    /// The default for [`body_timeout`](Self::body_timeout): 30 seconds.
    pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

    /// A configuration with every setting at its default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keep the last `n` accepted events, requests, dropped events, problems and customer
    /// profiles in memory (each; at least 1), so memory stays bounded however long the
    /// receiver runs. Older ones are let go; [`Stats`](crate::Stats) still counts them.
    ///
    /// Byte budgets apply as well: 64 MiB of event JSON, 16 MiB of request records
    /// (`messageId`s, headers) and 16 MiB of request bodies (older bodies are let go
    /// first), 32 MiB of customer profiles (about 1 KiB each plus their traits, the
    /// least recently updated let go first) with at most 64 KiB of traits each. The
    /// duplicate detector remembers the last `max(n, 1,000,000)` `messageId`s.
    ///
    /// Default: [`DEFAULT_KEEP`](Self::DEFAULT_KEEP) (100,000).
    pub fn keep(mut self, n: usize) -> Self {
        self.keep = n.max(1);
        self
    }

    /// How long a request's body may take to arrive once its headers have; a slower
    /// request gets `408` and its connection is closed, as a real server would.
    ///
    /// Default: [`DEFAULT_BODY_TIMEOUT`](Self::DEFAULT_BODY_TIMEOUT) (30 s).
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// Accept requests authenticated with `key`; may be called several times to accept
    /// several keys.
    ///
    /// Default: no key is configured, and then every request is accepted whatever key it
    /// carries, even none. Once a key is set, a request with a missing or different key
    /// gets `401`.
    pub fn write_key(mut self, key: impl Into<String>) -> Self {
        self.write_keys.push(key.into());
        self
    }

    /// Append each accepted event to `path` as one line of NDJSON (the file is created if
    /// missing and never truncated).
    ///
    /// Default: no save file.
    pub fn save_to(mut self, path: impl Into<PathBuf>) -> Self {
        self.save_to = Some(path.into());
        self
    }

    /// How much of each accepted event to keep in memory.
    ///
    /// Default: [`Record::Full`].
    pub fn record(mut self, mode: Record) -> Self {
        self.record = mode;
        self
    }

    /// The faults to inject from the first request on.
    ///
    /// Default: [`FaultPlan::none()`]. The plan can be replaced on a running receiver with
    /// [`Receiver::set_faults`](crate::Receiver::set_faults) or `POST /_receiver/faults`.
    pub fn faults(mut self, plan: FaultPlan) -> Self {
        self.faults = plan;
        self
    }
}

// Hand-written so that write keys never reach a log line.
impl fmt::Debug for ReceiverConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiverConfig")
            .field(
                "write_keys",
                &format_args!("[{} redacted]", self.write_keys.len()),
            )
            .field("save_to", &self.save_to)
            .field("record", &self.record)
            .field("faults", &self.faults)
            .field("keep", &self.keep)
            .field("body_timeout", &self.body_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_write_keys() {
        let config = ReceiverConfig::new()
            .write_key("secret-key-1")
            .write_key("k2");
        let debug = format!("{config:?}");
        assert!(!debug.contains("secret-key-1"), "{debug}");
        assert!(debug.contains("[2 redacted]"), "{debug}");
    }
}
