//! The run report: counts that add up, and one JSON line per record that did
//! not make it.
//!
//! Per-record lines are streamed to the report file as they happen, so a run
//! over millions of records keeps no list in memory; the summary is the last
//! line. Every line has a `type`: `invalid`, `failed`, `pending`,
//! `duplicate`, `given_up`, `removed`, or `summary`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use segment_client::{Identity, SegmentError};
use serde::Serialize;

use crate::record::{Location, RecordError};

/// The summary of one sync run.
///
/// The counts always add up (see [`adds_up`](RunReport::adds_up)):
/// `read = valid + invalid + skipped + given_up` and
/// `valid + recovered_not_in_source + removed_sent = delivered + failed + pending`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RunReport {
    /// The source as given on the command line.
    pub source: String,
    /// Whether this was a dry run (nothing sent).
    pub dry_run: bool,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// Wall time of the run in seconds.
    pub duration_secs: f64,
    /// Records read from the source, valid or not.
    pub read: u64,
    /// Records that became valid payloads and were queued.
    pub valid: u64,
    /// Records refused before sending (malformed, unmappable, invalid).
    pub invalid: u64,
    /// Rows not sent because another row has the same identity (under
    /// `--duplicates last`, every row but the last; under `first`, every row
    /// but the first, counted as invalid too).
    pub duplicates: u64,
    /// Records not sent because nothing needs sending: unchanged since
    /// Segment accepted them, or a row superseded by a later row of the same
    /// identity (`--duplicates last`).
    pub skipped: u64,
    /// Unchanged records that failed in too many runs in a row (not sent).
    pub given_up: u64,
    /// Outbox entries an earlier, unfinished run left in flight, sent again
    /// with their first `messageId` (a record read again with the same
    /// payload is resent this way, and counts as valid too).
    pub recovered: u64,
    /// Of `recovered`, the entries for identities this source no longer has
    /// (sent at the end of a complete read; not part of `read`).
    pub recovered_not_in_source: u64,
    /// Older outbox entries of an identity with a newer one (or a changed
    /// record): dropped, never sent again.
    pub superseded: u64,
    /// Outbox lines cut short by a crash, skipped (their records are read
    /// and sent again from the source).
    pub outbox_torn: u64,
    /// Entries earlier runs left in flight that this run did not send (it
    /// stopped before the end of the source, or the client closed while it
    /// resent them after the read): still in the outbox, for the next run.
    /// Not part of the counts above.
    pub outbox_waiting: u64,
    /// Identities in the state that this source no longer has. Nothing is
    /// sent for them unless the mapping's `[events]` names a `removed` event
    /// (see `removed_sent`); once Segment accepted that, they are not counted
    /// again.
    pub removed: u64,
    /// `removed` events queued for identities gone from the source
    /// (`[events] removed`): each settles as delivered, failed or pending,
    /// like a record.
    pub removed_sent: u64,
    /// `track` events of `[events]` that Segment accepted, by kind: sent
    /// beside (or instead of) a record's identify, or for a removal.
    pub tracked_added: u64,
    /// See [`tracked_added`](Self::tracked_added).
    pub tracked_changed: u64,
    /// See [`tracked_added`](Self::tracked_added).
    pub tracked_removed: u64,
    /// Records Segment accepted (2xx).
    pub delivered: u64,
    /// Records Segment refused or that ran out of retries.
    pub failed: u64,
    /// Records queued but not finished when the run ended (interrupted or deadline).
    pub pending: u64,
    /// Traits Segment accepted before, now empty or missing, sent as `null` (null policy `null`).
    pub traits_unset: u64,
    /// Traits Segment accepted before, now empty or missing, left out (null policy `omit`).
    pub traits_left_out: u64,
    /// Whether the run was stopped early (Ctrl-C, SIGTERM, fatal error).
    pub interrupted: bool,
    /// Delivered records per second of wall time.
    pub events_per_sec: f64,
    /// Invalid records by reason code.
    pub invalid_by_reason: BTreeMap<String, u64>,
    /// Failed records by reason code.
    pub failed_by_reason: BTreeMap<String, u64>,
    /// Why `[events]` removed events were not sent this run, if they were
    /// held back: the read had invalid records (a customer in a bad row
    /// would look gone), had no records at all, or would remove most of the
    /// customers Segment has. The identities are still reported `removed`.
    pub removals_held_back: Option<String>,
}

impl RunReport {
    /// Whether every record read was valid and delivered.
    pub fn is_clean(&self) -> bool {
        self.invalid == 0
            && self.failed == 0
            && self.pending == 0
            && self.given_up == 0
            && self.removals_held_back.is_none()
            && !self.interrupted
    }

    /// Whether the counts add up: every record read is valid, invalid,
    /// skipped or given up, and every event queued (valid, plus outbox entries
    /// resent for records not in the source) is delivered, failed or pending.
    /// A run that breaks this has a bug; the sync engine refuses to report
    /// success for it.
    pub fn adds_up(&self) -> bool {
        self.read == self.valid + self.invalid + self.skipped + self.given_up
            && self.valid + self.recovered_not_in_source + self.removed_sent
                == self.delivered + self.failed + self.pending
            && self.recovered_not_in_source <= self.recovered
    }
}

/// Counters updated while a run goes on; readable from another thread for progress.
#[derive(Debug, Default)]
pub struct Counters {
    /// Records read.
    pub read: AtomicU64,
    /// Records refused before sending.
    pub invalid: AtomicU64,
    /// Records queued for sending.
    pub valid: AtomicU64,
    /// Identities seen before in this input.
    pub duplicates: AtomicU64,
    /// Records unchanged since accepted.
    pub skipped: AtomicU64,
    /// Records given up after failing too often.
    pub given_up: AtomicU64,
    /// Outbox entries from an earlier run, queued again.
    pub recovered: AtomicU64,
    /// Of those, entries for identities not in this source.
    pub recovered_not_in_source: AtomicU64,
    /// Outbox entries dropped because a newer one supersedes them.
    pub superseded: AtomicU64,
    /// Records queued (or written to the outbox) that did not settle.
    pub pending: AtomicU64,
    /// Records delivered.
    pub delivered: AtomicU64,
    /// Records failed.
    pub failed: AtomicU64,
    /// Identities gone from the source.
    pub removed: AtomicU64,
    /// `removed` events queued.
    pub removed_sent: AtomicU64,
    /// Accepted `track` events of `[events]`: added, changed, removed.
    pub tracked: [AtomicU64; 3],
    /// The first [`FIRST_INVALID`] invalid records, for a display to show
    /// inline as compilers show their first errors.
    first_invalid: Mutex<Vec<RecordError>>,
}

/// How many invalid records [`Counters::first_invalid`] keeps.
pub const FIRST_INVALID: usize = 5;

impl Counters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps `error` if it is among the first [`FIRST_INVALID`] invalid records.
    pub(crate) fn note_invalid(&self, error: &RecordError) {
        let mut first = self
            .first_invalid
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if first.len() < FIRST_INVALID {
            first.push(error.clone());
        }
    }

    /// The first invalid records of the run (at most [`FIRST_INVALID`]), in
    /// the order they were found; the `invalid` counter has the total.
    pub fn first_invalid(&self) -> Vec<RecordError> {
        self.first_invalid
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A snapshot of one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[derive(Serialize)]
struct RecordLine<'a> {
    r#type: &'static str,
    source: &'a str,
    line: u64,
    /// A JSON array element's column (see [`Location::column`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<NonZeroU64>,
    /// A database row's primary key (`id=42`).
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(rename = "groupId", skip_serializing_if = "Option::is_none")]
    group_id: Option<&'a str>,
    #[serde(rename = "userId", skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(rename = "anonymousId", skip_serializing_if = "Option::is_none")]
    anonymous_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(rename = "other_line")]
    first_line: Option<u64>,
    /// The other row's column, when it is a JSON array element.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(rename = "other_column")]
    first_column: Option<NonZeroU64>,
}

/// Writes report lines to a file (or nowhere) as a run goes on.
#[derive(Debug)]
pub struct ReportWriter {
    out: Option<(PathBuf, BufWriter<File>)>,
    /// Records are groups (`--call group`): their key is a group id.
    groups: bool,
}

impl ReportWriter {
    /// A writer that writes nothing (no `--report`).
    pub fn none() -> Self {
        Self {
            out: None,
            groups: false,
        }
    }

    /// Lines name a record's key as `groupId` instead of `userId`: for a
    /// group sync, whose records are keyed by their group id.
    pub fn for_groups(mut self) -> Self {
        self.groups = true;
        self
    }

    /// A record key's `(groupId, userId)`: the user id slot holds a group's
    /// id in a group sync.
    fn key_ids<'a>(&self, user_id: Option<&'a str>) -> (Option<&'a str>, Option<&'a str>) {
        if self.groups {
            (user_id, None)
        } else {
            (None, user_id)
        }
    }

    /// A writer to `path`, created or truncated.
    ///
    /// # Errors
    /// If the file cannot be created.
    pub fn create(path: &Path) -> io::Result<Self> {
        let file = File::create(path)?;
        Ok(Self {
            out: Some((path.to_path_buf(), BufWriter::new(file))),
            groups: false,
        })
    }

    fn write_line(&mut self, line: &impl Serialize) -> io::Result<()> {
        if let Some((_, out)) = &mut self.out {
            serde_json::to_writer(&mut *out, line)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Records an invalid record.
    ///
    /// # Errors
    /// If the report file cannot be written.
    pub fn invalid(&mut self, error: &RecordError) -> io::Result<()> {
        self.write_line(&RecordLine {
            r#type: "invalid",
            source: &error.location.source,
            line: error.location.line,
            column: error.location.column,
            key: error.location.key.as_deref(),
            group_id: None,
            user_id: None,
            anonymous_id: None,
            field: error.field.as_deref(),
            reason: error.kind.code(),
            status: None,
            message: &error.message,
            first_line: None,
            first_column: None,
        })
    }

    /// Records a row not sent under the `last` policy: a later row, at
    /// `last`, has the same identity and is the one sent.
    ///
    /// # Errors
    /// If the report file cannot be written.
    pub fn duplicate(
        &mut self,
        at: &Location,
        identity: &Identity,
        last: &Location,
    ) -> io::Result<()> {
        let place = match last.column {
            Some(column) => format!("line {}, column {column}", last.line),
            None => format!("line {}", last.line),
        };
        let message =
            format!("the same identity is on {place}; only the last row of an identity is sent");
        self.write_line(&RecordLine {
            r#type: "duplicate",
            source: &at.source,
            line: at.line,
            column: at.column,
            key: at.key.as_deref(),
            group_id: self.key_ids(identity.user_id()).0,
            user_id: self.key_ids(identity.user_id()).1,
            anonymous_id: identity.anonymous_id(),
            field: None,
            reason: "duplicate_identity",
            status: None,
            message: &message,
            first_line: Some(last.line),
            first_column: last.column,
        })
    }

    /// Records outbox lines cut short by a crash and skipped.
    ///
    /// # Errors
    /// If the report file cannot be written.
    pub fn outbox_torn(&mut self, count: u64) -> io::Result<()> {
        #[derive(Serialize)]
        struct Torn {
            r#type: &'static str,
            count: u64,
            message: &'static str,
        }
        self.write_line(&Torn {
            r#type: "outbox_torn",
            count,
            message: "outbox lines cut short by a crash were skipped; their records are read from the source again",
        })
    }

    /// Records an unchanged record not retried after failing in `runs` runs.
    ///
    /// # Errors
    /// If the report file cannot be written.
    pub fn given_up(&mut self, at: &Location, identity: &Identity, runs: u32) -> io::Result<()> {
        let message = format!(
            "failed in {runs} runs in a row and has not changed; not retried (pass --retry-failed to force it)"
        );
        self.write_line(&RecordLine {
            r#type: "given_up",
            source: &at.source,
            line: at.line,
            column: at.column,
            key: at.key.as_deref(),
            group_id: self.key_ids(identity.user_id()).0,
            user_id: self.key_ids(identity.user_id()).1,
            anonymous_id: identity.anonymous_id(),
            field: None,
            reason: "given_up",
            status: None,
            message: &message,
            first_line: None,
            first_column: None,
        })
    }

    /// Records an identity the state has but the source no longer does;
    /// `event_sent` says whether its `removed` event was queued.
    ///
    /// # Errors
    /// If the report file cannot be written.
    pub fn removed(&mut self, key: &str, event_sent: bool) -> io::Result<()> {
        #[derive(Serialize)]
        struct Removed<'a> {
            r#type: &'static str,
            #[serde(rename = "groupId", skip_serializing_if = "Option::is_none")]
            group_id: Option<&'a str>,
            #[serde(rename = "userId", skip_serializing_if = "Option::is_none")]
            user_id: Option<&'a str>,
            #[serde(rename = "anonymousId", skip_serializing_if = "Option::is_none")]
            anonymous_id: Option<&'a str>,
            message: &'static str,
        }
        self.write_line(&Removed {
            r#type: "removed",
            group_id: self.key_ids(key.strip_prefix("u:")).0,
            user_id: self.key_ids(key.strip_prefix("u:")).1,
            anonymous_id: key.strip_prefix("a:"),
            message: match event_sent {
                true => "in the state but not in this source; its removed event was queued",
                false => "in the state but not in this source; nothing was sent for it",
            },
        })
    }

    /// Records a record that Segment did not accept, or that was still
    /// pending; `error` says why (for a pending record, why the run ended).
    ///
    /// # Errors
    /// If the report file cannot be written.
    pub fn undelivered(
        &mut self,
        kind: Undelivered,
        at: &Location,
        identity: &Identity,
        error: Option<&SegmentError>,
    ) -> io::Result<()> {
        self.write_line(&RecordLine {
            r#type: kind.as_str(),
            source: &at.source,
            line: at.line,
            column: at.column,
            key: at.key.as_deref(),
            group_id: self.key_ids(identity.user_id()).0,
            user_id: self.key_ids(identity.user_id()).1,
            anonymous_id: identity.anonymous_id(),
            field: None,
            reason: error.and_then(SegmentError::code).unwrap_or(kind.as_str()),
            status: error.and_then(SegmentError::status),
            message: error.map_or(
                "the run ended before Segment confirmed this record; run again to send it",
                SegmentError::message,
            ),
            first_line: None,
            first_column: None,
        })
    }

    /// Writes the summary as the last line and flushes the file.
    ///
    /// # Errors
    /// If the report file cannot be written.
    pub fn finish(mut self, report: &RunReport) -> io::Result<Option<PathBuf>> {
        #[derive(Serialize)]
        struct Summary<'a> {
            r#type: &'static str,
            #[serde(flatten)]
            report: &'a RunReport,
        }
        self.write_line(&Summary {
            r#type: "summary",
            report,
        })?;
        match self.out.take() {
            Some((path, mut out)) => {
                out.flush()?;
                Ok(Some(path))
            }
            None => Ok(None),
        }
    }
}

/// Why a valid record was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undelivered {
    /// Segment refused it, or retries ran out.
    Failed,
    /// The run ended before it finished.
    Pending,
}

impl Undelivered {
    fn as_str(self) -> &'static str {
        match self {
            Undelivered::Failed => "failed",
            Undelivered::Pending => "pending",
        }
    }
}
