//! Read-only queries for `segment-sync status` and for tests.

use rusqlite::OptionalExtension;

use super::{StateError, StateStore};

/// A failed record, for `segment-sync status`.
#[derive(Debug, Clone)]
pub struct FailedRecord {
    /// The identity key of the record (`u:<userId>` or `a:<anonymousId>`).
    pub key: String,
    /// The last error code.
    pub code: String,
    /// The last error message.
    pub message: String,
    /// Runs in a row in which it failed.
    pub failed_runs: u32,
    /// Its line in the source when it last failed, if known.
    pub line: Option<u64>,
}

impl FailedRecord {
    /// The identity as a user reads it: `("userId", "cus_1001")` or
    /// `("anonymousId", "a-17")`.
    pub fn identity(&self) -> (&'static str, &str) {
        readable_identity(&self.key)
    }
}

impl PendingRecord {
    /// The identity as a user reads it, as [`FailedRecord::identity`].
    pub fn identity(&self) -> (&'static str, &str) {
        readable_identity(&self.key)
    }
}

/// `u:cus_1001` -> `("userId", "cus_1001")`; `a:x` -> `("anonymousId", "x")`.
fn readable_identity(key: &str) -> (&'static str, &str) {
    match key.split_once(':') {
        Some(("a", id)) => ("anonymousId", id),
        Some((_, id)) => ("userId", id),
        None => ("userId", key),
    }
}

/// One run in the state's run log, for `segment-sync status`.
#[derive(Debug, Clone)]
pub struct LoggedRun {
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at_ms: i64,
    /// When it finished; `None` if it did not (killed, crashed, or stopped
    /// on a state error before it could say so).
    pub finished_at_ms: Option<i64>,
    /// The source as given on the command line.
    pub source: String,
    /// The run's report as JSON (a [`RunReport`](crate::RunReport)'s fields,
    /// with `exit` and, for a run a fatal error stopped, `error`); `None`
    /// if it did not finish.
    pub summary: Option<String>,
}

/// An outbox entry still waiting for Segment, for `segment-sync status`.
#[derive(Debug, Clone)]
pub struct PendingRecord {
    /// The identity key (`u:<userId>` or `a:<anonymousId>`).
    pub key: String,
    /// The source it was read from.
    pub source: String,
    /// Its line there.
    pub line: u64,
    /// The `messageId` the next run sends it under.
    pub message_id: String,
}

impl StateStore {
    /// Outbox entries the next run sends again, oldest first, at most `limit`.
    ///
    /// # Errors
    /// The database or the outbox log cannot be read.
    pub fn pending_records(&mut self, limit: usize) -> Result<Vec<PendingRecord>, StateError> {
        let index = self.index()?;
        let pending = self.pending(&index)?.pending;
        let mut records = Vec::new();
        for pending in pending.into_iter().take(limit) {
            // A run going on may have emptied the log since the scan: an
            // entry no longer there is no longer waiting.
            let Ok(loaded) = self.load_pending(pending) else {
                continue;
            };
            let entry = loaded.entry;
            records.push(PendingRecord {
                key: entry.key,
                source: entry.source,
                line: entry.line,
                message_id: entry.message_id,
            });
        }
        Ok(records)
    }

    /// The `messageId` Segment last accepted for `key`, if any. Scans the
    /// table: for tests and tools, not for a run's hot path.
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn accepted_message_id(&self, key: &str) -> Result<Option<String>, StateError> {
        self.conn
            .query_row(
                "SELECT accepted_message_id FROM records WHERE identity = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(self.sql("cannot read records"))
    }

    /// Counts for `status`: (records, accepted, pending, failed).
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn counts(&mut self) -> Result<(u64, u64, u64, u64), StateError> {
        let (records, accepted, failed) = self
            .conn
            .query_row(
                "SELECT COUNT(*) FILTER (WHERE removed_at IS NULL), COUNT(accepted_hash), COUNT(*) FILTER (WHERE failed_runs > 0) FROM records",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64)),
            )
            .map_err(self.sql("cannot count records"))?;
        let index = self.index()?;
        let pending = self.pending(&index)?.pending.len() as u64;
        Ok((records, accepted, pending, failed))
    }

    /// Failed records, most-failed first, at most `limit`.
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn failed(&self, limit: usize) -> Result<Vec<FailedRecord>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT identity, COALESCE(last_error_code, ''), COALESCE(last_error, ''), failed_runs, line
                 FROM records WHERE failed_runs > 0 ORDER BY failed_runs DESC, identity LIMIT ?1",
            )
            .map_err(self.sql("cannot read failed records"))?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(FailedRecord {
                    key: r.get(0)?,
                    code: r.get(1)?,
                    message: r.get(2)?,
                    failed_runs: u32::try_from(r.get::<_, i64>(3)?).unwrap_or(u32::MAX),
                    line: r
                        .get::<_, Option<i64>>(4)?
                        .and_then(|l| u64::try_from(l).ok()),
                })
            })
            .map_err(self.sql("cannot read failed records"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.sql("cannot read failed records"))
    }

    /// The last run's start time and summary JSON, if any run was recorded.
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn last_run(&self) -> Result<Option<(i64, Option<String>)>, StateError> {
        self.conn
            .query_row(
                "SELECT started_at, summary FROM runs ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.sql("cannot read runs"))
    }

    /// The last `limit` runs, newest first.
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn runs(&self, limit: usize) -> Result<Vec<LoggedRun>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT started_at, finished_at, source, summary FROM runs ORDER BY id DESC LIMIT ?1",
            )
            .map_err(self.sql("cannot read runs"))?;
        let rows = stmt
            .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                Ok(LoggedRun {
                    started_at_ms: r.get(0)?,
                    finished_at_ms: r.get(1)?,
                    source: r.get(2)?,
                    summary: r.get(3)?,
                })
            })
            .map_err(self.sql("cannot read runs"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.sql("cannot read runs"))
    }
}
