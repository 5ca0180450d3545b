//! The sync state: what Segment accepted for each identity, and the outbox of
//! what is in flight, in one SQLite database per sync.
//!
//! Public through a small API only: [`StateStore::open`] (for a run, under
//! the exclusive lock), [`StateStore::open_existing`] and the status
//! queries (for `status`), [`StateStore::remove`] (for `reset`). The index,
//! the outbox log and record updates are the sync engine's, inside the crate.
//!
//! # Files and the lock
//!
//! `NAME.sqlite` (with `-wal`, `-shm`), `NAME.outbox`, and `NAME.lock`, all
//! known to one place (`StateFiles`). A run holds an exclusive `flock` on
//! `NAME.lock` (with its pid in it, for the hint a second run prints) for as
//! long as it uses the state; the OS drops it when the process ends, however
//! it ends. An existing database that is empty or is not a database is an
//! error with a hint to `reset`, never taken for a new state.
//!
//! # Schema (version 2)
//!
//! ```sql
//! CREATE TABLE schema_version (version INTEGER NOT NULL);
//! CREATE TABLE records (               -- what Segment accepted, one row per identity
//!   id                  INTEGER PRIMARY KEY, -- in order of first appearance: a first run appends
//!   identity            TEXT NOT NULL,     -- "u:<userId>" or "a:<anonymousId>"
//!   key_hash            INTEGER NOT NULL,  -- xxh3 of identity, for the in-memory index
//!   accepted_hash       INTEGER,           -- xxh3 of the canonical payload Segment accepted
//!   accepted_at         INTEGER,           -- unix milliseconds of the 2xx
//!   accepted_message_id TEXT,
//!   accepted_traits     INTEGER,           -- trait_sets.id: the accepted top-level trait names
//!   source_hash         INTEGER,           -- Mapping::fingerprint of the record Segment accepted
//!   last_message_id     TEXT,              -- the last message that settled (2xx or failure)
//!   last_error_code     TEXT,              -- the last failure, kept until a success
//!   last_error          TEXT,
//!   last_status         INTEGER,
//!   failed_runs         INTEGER NOT NULL DEFAULT 0,
//!   failed_hash         INTEGER,           -- the payload that failed, to tell a retry from a change
//!   line                INTEGER,           -- where it was last read
//!   accepted_values     TEXT,              -- the accepted top-level traits as a JSON object,
//!                                          -- kept only for `[events]` (changed and removed properties)
//!   removed_at          INTEGER            -- unix milliseconds Segment accepted its `removed` event
//! );
//! CREATE TABLE trait_sets (id INTEGER PRIMARY KEY, names TEXT NOT NULL UNIQUE);  -- JSON arrays
//! CREATE TABLE runs (
//!   id INTEGER PRIMARY KEY, started_at INTEGER NOT NULL, finished_at INTEGER,
//!   source TEXT NOT NULL, summary TEXT      -- the run report as JSON
//! );
//! ```
//!
//! # The outbox
//!
//! Beside the database, `NAME.outbox` is an append-only log, one JSON line
//! per record sent: its identity key, payload hash, source fingerprint, `messageId`, source line,
//! trait names, and the event exactly as it is sent. A chunk of records is
//! appended (one `write`) before any of them is queued; each record's row in
//! `records` is written once, when Segment answered for it. Only the newest
//! entry of an identity counts (older ones are superseded and never sent
//! again); it is in flight when its `messageId` is not its record's
//! `last_message_id`, and the next run sends its stored event again,
//! unchanged, if the record is still the same (see `sync::recovery`). A run
//! that reads its source to the end with nothing left in flight empties the
//! log. Keeping in-flight payloads out of the B-tree (they are written once
//! and read only after a crash) cut a first run's state cost by half.
//!
//! A record whose source fingerprint (its raw mapped columns and the mapping
//! itself, see `Mapping::fingerprint`) matches `source_hash` is skipped
//! without being mapped; only the others are mapped and compared by payload
//! hash, so a mapping change re-sends exactly the records it changes.
//!
//! Records are found through the in-memory `StateIndex` (identity hash to
//! row id), so the table needs no index on the identity: a first run only
//! appends, and later runs update the few rows that changed, by row id.
//! Random-order inserts into an identity B-tree had made a first run over an
//! unsorted file write gigabytes of WAL.
//!
//! Both survive a killed process: the log's writes are in the OS before a
//! record is sent, and the database runs in WAL mode with `synchronous =
//! NORMAL`.

mod cursor;
mod error;
mod hash;
mod index;
mod lock;
mod outbox;
mod records;
mod schema;
mod status;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

use error::RESET_HINT;
pub use error::StateError;
pub(crate) use hash::{
    identity_from_key, identity_key, needs_escape, payload_hash_raw, stable_hash, trait_names_raw,
};
#[cfg(test)]
pub(crate) use hash::{payload_hash, trait_names};
pub(crate) use index::StateIndex;
use lock::{StateFiles, StateLock};
pub(crate) use outbox::{OutboxEntry, OutboxEntryRef, OutboxScan, Pending, PendingRef};
pub(crate) use records::{Change, REMOVAL_HASH, Settled};
pub use schema::SCHEMA_VERSION;
pub use status::{FailedRecord, LoggedRun, PendingRecord};

/// The state database of one sync.
pub struct StateStore {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
    /// The outbox log, opened for appending on first use.
    pub(super) outbox: Option<File>,
    /// The outbox log, opened for reading back entries in flight on first use.
    pub(super) outbox_reader: Option<File>,
    /// Trait-name sets by their JSON, so each record stores an id.
    pub(super) trait_sets: HashMap<String, i64>,
    /// The exclusive lock of a run; `None` for a read-only look (`status`).
    _lock: Option<StateLock>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("path", &self.path)
            .finish()
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl StateStore {
    /// The database path for sync `name` under `dir`.
    pub fn path_for(dir: &Path, name: &str) -> PathBuf {
        StateFiles::of(dir, name).database
    }

    /// Opens (creating if needed) the state of sync `name` under `dir` for a
    /// run: takes its exclusive lock, then migrates it to [`SCHEMA_VERSION`].
    ///
    /// # Errors
    /// Another process holds the lock ([`StateError::is_locked`]); the
    /// directory or database cannot be created or opened; the database
    /// exists but is empty or not a database; or it was written by a newer
    /// version of this tool.
    pub fn open(dir: &Path, name: &str) -> Result<StateStore, StateError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StateError::io(dir, "cannot create the state directory", e))?;
        let files = StateFiles::of(dir, name);
        let lock = StateLock::acquire(&files.lock())?;
        Self::open_with(files, Some(lock))
    }

    /// Opens an existing state without its lock, for `status`: it may be
    /// looked at while a run goes on.
    ///
    /// # Errors
    /// There is no state by that name, or it cannot be read.
    pub fn open_existing(dir: &Path, name: &str) -> Result<StateStore, StateError> {
        let files = StateFiles::of(dir, name);
        if !files.database.exists() {
            return Err(StateError::new(&files.database, "no state by that name")
                .with_hint("run a sync first, or check --state and --name"));
        }
        Self::open_with(files, None)
    }

    /// Deletes every file of sync `name` under `dir` (database, its WAL
    /// files, the outbox log and the lock), under the lock so that no run
    /// is using it. Returns the files that were there.
    ///
    /// # Errors
    /// A run holds the lock, or a file cannot be deleted.
    pub fn remove(dir: &Path, name: &str) -> Result<Vec<PathBuf>, StateError> {
        let files = StateFiles::of(dir, name);
        let lock = files
            .lock()
            .exists()
            .then(|| StateLock::acquire(&files.lock()))
            .transpose()?;
        let mut removed = Vec::new();
        for file in files.all() {
            match std::fs::remove_file(&file) {
                Ok(()) => removed.push(file),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StateError::io(&file, "cannot delete", e)),
            }
        }
        drop(lock);
        Ok(removed)
    }

    /// Whether sync `name` under `dir` has any file.
    pub fn exists(dir: &Path, name: &str) -> bool {
        StateFiles::of(dir, name).all().iter().any(|f| f.exists())
    }

    fn open_with(files: StateFiles, lock: Option<StateLock>) -> Result<StateStore, StateError> {
        let path = files.database.clone();
        if lock.is_some() && !path.exists() {
            Self::create(&files)?;
        }
        // SQLite takes an empty file for a new database: after a truncated
        // copy or a full disk, that would resend every record under new
        // messageIds without a word.
        let wal_len = std::fs::metadata(files.sibling("-wal")).map_or(0, |m| m.len());
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) && wal_len == 0 {
            return Err(StateError::new(&path, "the state database is empty").with_hint(RESET_HINT));
        }
        let conn = Connection::open(&path)
            .map_err(|e| StateError::sql(&path, "cannot open", e).with_hint(RESET_HINT))?;
        let mut store = StateStore {
            conn,
            path,
            outbox: None,
            outbox_reader: None,
            trait_sets: HashMap::new(),
            _lock: lock,
        };
        store
            .configure()
            .and_then(|()| store.migrate())
            .map_err(|e| match e.hint() {
                Some(_) => e,
                None => e.with_hint(RESET_HINT),
            })?;
        Ok(store)
    }

    /// Builds a new database beside its final name and renames it into
    /// place once its schema is written, so that a kill at any moment leaves
    /// either no database or a whole one, never an empty file (which would
    /// rightly be refused as broken). Called under the lock.
    fn create(files: &StateFiles) -> Result<(), StateError> {
        let creating = files.creating();
        for leftover in files.all().iter().skip(3).take(3) {
            match std::fs::remove_file(leftover) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StateError::io(leftover, "cannot delete", e)),
            }
        }
        let conn = Connection::open(&creating)
            .map_err(|e| StateError::sql(&creating, "cannot create", e))?;
        let mut store = StateStore {
            conn,
            path: creating.clone(),
            outbox: None,
            outbox_reader: None,
            trait_sets: HashMap::new(),
            _lock: None,
        };
        store.configure()?;
        store.migrate()?;
        // Closing the last connection checkpoints the WAL into the file.
        store
            .conn
            .close()
            .map_err(|(_, e)| StateError::sql(&creating, "cannot create", e))?;
        std::fs::rename(&creating, &files.database)
            .map_err(|e| StateError::io(&files.database, "cannot create", e))
    }

    /// Where the database is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn sql<'a>(
        &'a self,
        what: &'a str,
    ) -> impl FnOnce(rusqlite::Error) -> StateError + 'a {
        move |e| StateError::sql(&self.path, what, e)
    }
}
