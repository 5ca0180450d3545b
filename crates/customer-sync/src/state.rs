//! The sync state: what Segment accepted for each identity, and the outbox of
//! what is in flight, in one SQLite database per sync.
//!
//! # Schema (version 1)
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
//!   line                INTEGER            -- where it was last read
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
//! `records` is written once, when Segment answered for it, in the next
//! chunk's transaction. An entry whose `messageId` is not its record's
//! `last_message_id` is still in flight, and the next run sends its stored
//! event again, unchanged. A run that ends with nothing in flight empties the
//! log. Keeping in-flight payloads out of the B-tree (they are written once
//! and read only after a crash) cut a first run's state cost by half.
//!
//! A record whose source fingerprint (its raw mapped columns and the mapping
//! itself, see `Mapping::fingerprint`) matches `source_hash` is skipped
//! without being mapped; only the others are mapped and compared by payload
//! hash, so a mapping change re-sends exactly the records it changes.
//!
//! Records are found through the in-memory [`StateIndex`] (identity hash to
//! row id), so the table needs no index on the identity: a first run only
//! appends, and later runs update the few rows that changed, by row id.
//! Random-order inserts into an identity B-tree had made a first run over an
//! unsorted file write gigabytes of WAL.
//!
//! Both survive a killed process: the log's writes are in the OS before a
//! record is sent, and the database runs in WAL mode with `synchronous =
//! NORMAL`.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use segment_client::Identity;
use serde_json::{Map, Value};

/// The schema version this code writes; older databases are migrated on open.
pub const SCHEMA_VERSION: i64 = 1;

/// Migrations, indexed by the version they produce minus one.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE records (
      id INTEGER PRIMARY KEY,
      identity TEXT NOT NULL,
      key_hash INTEGER NOT NULL,
      accepted_hash INTEGER,
      accepted_at INTEGER,
      accepted_message_id TEXT,
      accepted_traits INTEGER,
      source_hash INTEGER,
      last_message_id TEXT,
      last_error_code TEXT,
      last_error TEXT,
      last_status INTEGER,
      failed_runs INTEGER NOT NULL DEFAULT 0,
      failed_hash INTEGER,
      line INTEGER
    );
    CREATE TABLE trait_sets (id INTEGER PRIMARY KEY, names TEXT NOT NULL UNIQUE);
    CREATE TABLE runs (
      id INTEGER PRIMARY KEY,
      started_at INTEGER NOT NULL,
      finished_at INTEGER,
      source TEXT NOT NULL,
      summary TEXT
    );
"];

/// A problem with the state database. Fatal: the run stops before sending.
#[derive(Debug, thiserror::Error)]
#[error("state {path}: {message}")]
pub struct StateError {
    path: String,
    message: String,
    hint: Option<String>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// The hint for a state that exists but cannot be used.
const RESET_HINT: &str = "`segment-sync reset --name NAME` deletes this state and starts over (the next run sends every record again)";

impl StateError {
    fn new(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.display().to_string(),
            message: message.into(),
            hint: None,
            source: None,
        }
    }

    fn io(path: &Path, what: &str, error: std::io::Error) -> Self {
        Self {
            source: Some(Box::new(error)),
            ..Self::new(path, what)
        }
    }

    fn sql(path: &Path, what: &str, error: rusqlite::Error) -> Self {
        Self {
            source: Some(Box::new(error)),
            ..Self::new(path, what)
        }
    }

    fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// A line of advice for the user, if there is one.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Whether another process holds the state's lock.
    pub fn is_locked(&self) -> bool {
        self.message.starts_with(LOCKED)
    }
}

const LOCKED: &str = "in use by another segment-sync";

/// The key a record is stored under: its userId, or its anonymousId.
pub fn identity_key(identity: &Identity) -> String {
    match identity.user_id() {
        Some(user_id) => format!("u:{user_id}"),
        None => format!("a:{}", identity.anonymous_id().unwrap_or_default()),
    }
}

/// A 64-bit hash of `bytes` that never changes between versions or machines.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// The hash of what Segment would store for this payload: identity and
/// traits, in a canonical encoding (keys sorted at every level,
/// length-prefixed strings, no whitespace), so that key order and formatting
/// never cause a re-send.
pub fn payload_hash(identity: &Identity, traits: &Map<String, Value>) -> u64 {
    thread_local! {
        static CANONICAL: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    CANONICAL.with_borrow_mut(|out| {
        out.clear();
        write_str(out, identity.user_id().unwrap_or_default());
        write_str(out, identity.anonymous_id().unwrap_or_default());
        write_map(out, traits);
        // 0 stands for "none" in the index.
        stable_hash(out).max(1)
    })
}

fn write_str(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn write_map(out: &mut Vec<u8>, map: &Map<String, Value>) {
    out.push(b'{');
    out.extend_from_slice(&(map.len() as u64).to_le_bytes());
    // serde_json's map iterates in key order unless its `preserve_order`
    // feature is on somewhere in the build; only then is a sort needed.
    if map.keys().is_sorted() {
        for (key, value) in map {
            write_str(out, key);
            write_value(out, value);
        }
    } else {
        let mut entries: Vec<_> = map.iter().collect();
        entries.sort_unstable_by_key(|(key, _)| *key);
        for (key, value) in entries {
            write_str(out, key);
            write_value(out, value);
        }
    }
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(b'z'),
        Value::Bool(true) => out.push(b't'),
        Value::Bool(false) => out.push(b'f'),
        Value::Number(number) => {
            out.push(b'n');
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{number};");
        }
        Value::String(text) => {
            out.push(b's');
            write_str(out, text);
        }
        Value::Array(items) => {
            out.push(b'[');
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                write_value(out, item);
            }
        }
        Value::Object(map) => write_map(out, map),
    }
}

/// The payload's top-level trait names as a JSON array, for the null policy.
pub(crate) fn trait_names(traits: &Map<String, Value>) -> String {
    let mut out = Vec::with_capacity(16 * traits.len() + 2);
    out.push(b'[');
    for (i, name) in traits.keys().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, name);
    }
    out.push(b']');
    String::from_utf8(out).unwrap_or_default()
}

/// One record in an outbox chunk: the event exactly as it is sent, and
/// what its record's row needs once Segment answers.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    /// [`identity_key`] of the record.
    pub key: String,
    /// The payload hash.
    pub hash: u64,
    /// The record's source fingerprint.
    pub source_hash: u64,
    /// The event's `messageId`, reused on every resend.
    pub message_id: String,
    /// Where the record was read.
    pub source: String,
    /// Its line.
    pub line: u64,
    /// Its top-level trait names, as a JSON array (see [`trait_names`]).
    pub traits: String,
    /// The serialised event.
    pub event: Vec<u8>,
}

/// An [`OutboxEntry`] borrowed from the record being sent, for writing.
#[derive(Debug, Clone, Copy)]
pub struct OutboxEntryRef<'a> {
    /// [`identity_key`] of the record.
    pub key: &'a str,
    /// The payload hash.
    pub hash: u64,
    /// The record's source fingerprint.
    pub source_hash: u64,
    /// The event's `messageId`.
    pub message_id: &'a str,
    /// Where the record was read.
    pub source: &'a str,
    /// Its line.
    pub line: u64,
    /// Its top-level trait names, as a JSON array.
    pub traits: &'a str,
    /// The serialised event.
    pub event: &'a [u8],
}

impl OutboxEntryRef<'_> {
    /// Appends this entry as one JSON line to `out`.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Head<'a> {
            key: &'a str,
            hash: u64,
            source_hash: u64,
            message_id: &'a str,
            source: &'a str,
            line: u64,
        }
        // Writing into a Vec cannot fail; the event and trait list are JSON already.
        let _ = serde_json::to_writer(
            &mut *out,
            &Head {
                key: self.key,
                hash: self.hash,
                source_hash: self.source_hash,
                message_id: self.message_id,
                source: self.source,
                line: self.line,
            },
        );
        out.pop();
        out.extend_from_slice(b",\"traits\":");
        out.extend_from_slice(self.traits.as_bytes());
        out.extend_from_slice(b",\"event\":");
        out.extend_from_slice(self.event);
        out.extend_from_slice(b"}\n");
    }
}

impl OutboxEntry {
    /// Parses one line written by [`OutboxEntryRef::write_line`].
    pub fn parse(line: &str) -> Option<OutboxEntry> {
        Self::parse_bytes(line.as_bytes())
    }

    /// Parses one line written by [`OutboxEntryRef::write_line`], as bytes
    /// (a torn line may not be valid UTF-8).
    pub fn parse_bytes(line: &[u8]) -> Option<OutboxEntry> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Line<'a> {
            key: String,
            hash: u64,
            source_hash: u64,
            message_id: String,
            source: String,
            line: u64,
            #[serde(borrow)]
            traits: &'a serde_json::value::RawValue,
            #[serde(borrow)]
            event: &'a serde_json::value::RawValue,
        }
        let parsed: Line<'_> = serde_json::from_slice(line).ok()?;
        Some(OutboxEntry {
            key: parsed.key,
            hash: parsed.hash,
            source_hash: parsed.source_hash,
            message_id: parsed.message_id,
            source: parsed.source,
            line: parsed.line,
            traits: parsed.traits.get().to_owned(),
            event: parsed.event.get().as_bytes().to_vec(),
        })
    }
}

/// What the state knows of one identity, held in memory for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// Its row in `records`.
    pub row: i64,
    /// The source fingerprint of the record Segment last accepted, if any.
    pub source_hash: Option<u64>,
    /// The hash of the payload that last failed, and in how many runs in a row.
    pub failed: Option<(u64, u32)>,
}

/// All identities in the state, in an open-addressing table keyed by key
/// hash: 20 bytes a slot (key, accepted source fingerprint, row id; the few
/// failed ones on the side), so a million customers cost about 23 MB and one cache miss per
/// lookup instead of a query per record.
#[derive(Debug, Default)]
pub struct StateIndex {
    /// Key hash per slot; 0 marks an empty slot.
    keys: Vec<u64>,
    /// Accepted source fingerprint per slot, or 0.
    accepted: Vec<u64>,
    /// Row id per slot.
    rows: Vec<u32>,
    len: usize,
    /// Key hashes shared by two identities (or equal to 0): always sent.
    ambiguous: HashSet<u64>,
    failed: HashMap<u64, (u64, u32)>,
}

impl StateIndex {
    fn with_capacity(identities: usize) -> Self {
        let slots = identities + identities / 7 + 16;
        Self {
            keys: vec![0; slots],
            accepted: vec![0; slots],
            rows: vec![0; slots],
            ..Self::default()
        }
    }

    /// Doubles the table (more rows than it was sized for).
    fn grow(&mut self) {
        let old = std::mem::replace(self, Self::with_capacity(self.keys.len().max(8) * 2));
        for slot in 0..old.keys.len() {
            if old.keys[slot] != 0 {
                let at = self.find(old.keys[slot]);
                self.keys[at] = old.keys[slot];
                self.accepted[at] = old.accepted[slot];
                self.rows[at] = old.rows[slot];
                self.len += 1;
            }
        }
        self.ambiguous = old.ambiguous;
        self.failed = old.failed;
    }

    fn slot(&self, key: u64) -> usize {
        // Multiply-shift: a table of any size, not only powers of two.
        ((u128::from(key) * self.keys.len() as u128) >> 64) as usize
    }

    /// The slot holding `key`, or the empty slot where it would go.
    fn find(&self, key: u64) -> usize {
        let mut slot = self.slot(key);
        while self.keys[slot] != 0 && self.keys[slot] != key {
            slot = (slot + 1) % self.keys.len();
        }
        slot
    }

    /// Adds a row; returns the row it replaces when the key is already there.
    fn insert(&mut self, key: u64, accepted: u64, row: i64) -> Option<i64> {
        let row = u32::try_from(row).unwrap_or(u32::MAX);
        if key == 0 {
            self.ambiguous.insert(key);
            return None;
        }
        // Never full: a full table would make `find` search forever.
        if (self.len + 1) * 8 > self.keys.len() * 7 {
            self.grow();
        }
        let slot = self.find(key);
        if self.keys[slot] == key {
            return Some(i64::from(std::mem::replace(&mut self.rows[slot], row)))
                .inspect(|_| self.accepted[slot] = accepted);
        }
        self.keys[slot] = key;
        self.accepted[slot] = accepted;
        self.rows[slot] = row;
        self.len += 1;
        None
    }

    /// What is known of the identity with this key hash, and its slot (for
    /// marking it seen). `None` for an unknown identity, and also when two
    /// identities share the hash (then the record is simply sent).
    pub fn get(&self, key_hash: u64) -> Option<(usize, Known)> {
        if self.keys.is_empty()
            || (!self.ambiguous.is_empty() && self.ambiguous.contains(&key_hash))
        {
            return None;
        }
        let slot = self.find(key_hash);
        (self.keys[slot] == key_hash).then(|| {
            let accepted = self.accepted[slot];
            let known = Known {
                row: i64::from(self.rows[slot]),
                source_hash: (accepted != 0).then_some(accepted),
                failed: self.failed.get(&key_hash).copied(),
            };
            (slot, known)
        })
    }

    /// The row id in `slot`, if the slot holds one.
    pub fn row_at(&self, slot: usize) -> Option<i64> {
        (self.keys.get(slot).copied().unwrap_or(0) != 0).then(|| i64::from(self.rows[slot]))
    }

    /// How many slots the table has (for a bitset over them).
    pub fn slots(&self) -> usize {
        self.keys.len()
    }

    /// How many identities the state holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the state holds no identity.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// An outbox entry still in flight, left by a run that did not finish.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The entry.
    pub entry: OutboxEntry,
    /// Its record's row, if the state has the identity.
    pub row: Option<i64>,
    /// Its place among the pending entries (log order).
    pub order: usize,
}

/// What [`StateStore::pending`] found in the outbox log.
#[derive(Debug, Clone, Default)]
pub struct OutboxScan {
    /// The newest entry of each identity that is still in flight, oldest first.
    pub pending: Vec<Pending>,
    /// Older entries of an identity that has a newer one: never sent again.
    pub superseded: u64,
    /// Lines cut short by a crash (not parseable): skipped.
    pub torn: u64,
}

/// One change to the state, applied in a transaction with others.
#[derive(Debug, Clone)]
pub enum Change {
    /// Segment answered 2xx for a record.
    Accepted(Settled),
    /// Segment refused a record, or retries ran out.
    Failed {
        /// The record.
        record: Settled,
        /// The error code.
        code: String,
        /// The error message.
        message: String,
        /// The HTTP status, if any.
        status: Option<u16>,
    },
}

/// A record Segment answered for.
#[derive(Debug, Clone)]
pub struct Settled {
    /// Its row, when the state already had the identity; a new row otherwise.
    pub row: Option<i64>,
    /// [`identity_key`] of the record.
    pub key: String,
    /// The payload hash.
    pub hash: u64,
    /// The record's source fingerprint.
    pub source_hash: u64,
    /// The `messageId` that settled.
    pub message_id: String,
    /// Top-level trait names, as a JSON array.
    pub traits: String,
    /// The line it was read from.
    pub line: u64,
}

/// A failed record, for `segment-sync status`.
#[derive(Debug, Clone)]
pub struct FailedRecord {
    /// [`identity_key`] of the record.
    pub key: String,
    /// The last error code.
    pub code: String,
    /// The last error message.
    pub message: String,
    /// Runs in a row in which it failed.
    pub failed_runs: u32,
}

/// The state database of one sync.
pub struct StateStore {
    conn: Connection,
    path: PathBuf,
    /// The outbox log, opened for appending on first use.
    outbox: Option<File>,
    /// Trait-name sets by their JSON, so each record stores an id.
    trait_sets: HashMap<String, i64>,
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

/// Every file one sync's state owns, in one place: opening, locking and
/// [`StateStore::remove`] all go through it.
#[derive(Debug, Clone)]
struct StateFiles {
    database: PathBuf,
}

impl StateFiles {
    fn of(dir: &Path, name: &str) -> Self {
        Self {
            database: dir.join(format!("{name}.sqlite")),
        }
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.database.clone().into_os_string();
        name.push(suffix);
        PathBuf::from(name)
    }

    fn outbox(&self) -> PathBuf {
        self.database.with_extension("outbox")
    }

    fn lock(&self) -> PathBuf {
        self.database.with_extension("lock")
    }

    /// All of them; the lock file last, so it is held while the rest go.
    fn all(&self) -> [PathBuf; 5] {
        [
            self.database.clone(),
            self.sibling("-wal"),
            self.sibling("-shm"),
            self.outbox(),
            self.lock(),
        ]
    }
}

/// An exclusive `flock` on `NAME.lock`, held for as long as a run (or a
/// reset) uses the state. The OS releases it when the process ends, however
/// it ends, so a kill -9 never leaves a stale lock behind.
#[derive(Debug)]
struct StateLock {
    _file: File,
}

impl StateLock {
    fn acquire(path: &Path) -> Result<StateLock, StateError> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| StateError::io(path, "cannot open the lock file", e))?;
        if !try_lock_exclusive(&file)
            .map_err(|e| StateError::io(path, "cannot lock the state", e))?
        {
            use std::io::Read;
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() {
                "another process".to_owned()
            } else {
                format!("process {holder}")
            };
            return Err(StateError::new(path, format!("{LOCKED} ({who})")).with_hint(format!(
                "{who} is running a sync or reset on this state; wait for it to end (or stop it), or use another --state/--name"
            )));
        }
        // Who holds it, for the hint a second run prints.
        file.set_len(0)
            .and_then(|()| file.write_all(std::process::id().to_string().as_bytes()))
            .map_err(|e| StateError::io(path, "cannot write the lock file", e))?;
        Ok(StateLock { _file: file })
    }
}

/// Takes an exclusive, non-blocking `flock`; `false` when someone else holds it.
#[cfg(unix)]
fn try_lock_exclusive(file: &File) -> std::io::Result<bool> {
    use rustix::fs::{FlockOperation, flock};
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// No `flock` here: runs are not kept apart (documented in the README).
#[cfg(not(unix))]
fn try_lock_exclusive(_file: &File) -> std::io::Result<bool> {
    Ok(true)
}

/// Whether `file` is non-empty and does not end with a newline.
fn ends_mid_line(file: &mut File) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    if file.metadata()?.len() == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

/// The id of a trait-name set, added on first use; most records share a few.
fn intern_trait_set(
    tx: &rusqlite::Transaction<'_>,
    cache: &mut HashMap<String, i64>,
    names: &str,
) -> rusqlite::Result<i64> {
    if let Some(id) = cache.get(names) {
        return Ok(*id);
    }
    tx.execute(
        "INSERT OR IGNORE INTO trait_sets (names) VALUES (?1)",
        [names],
    )?;
    let id = tx.query_row("SELECT id FROM trait_sets WHERE names = ?1", [names], |r| {
        r.get(0)
    })?;
    cache.insert(names.to_owned(), id);
    Ok(id)
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
            trait_sets: HashMap::new(),
            _lock: lock,
        };
        store
            .configure()
            .and_then(|()| store.migrate())
            .map_err(|e| match e.hint {
                Some(_) => e,
                None => e.with_hint(RESET_HINT),
            })?;
        Ok(store)
    }

    /// Where the database is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql<'a>(&'a self, what: &'a str) -> impl FnOnce(rusqlite::Error) -> StateError + 'a {
        move |e| StateError::sql(&self.path, what, e)
    }

    fn configure(&self) -> Result<(), StateError> {
        self.conn
            .execute_batch(
                // A bigger autocheckpoint folds the log back less often during a
                // first run's million inserts.
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;
                 PRAGMA wal_autocheckpoint = 10000;",
            )
            .map_err(self.sql("cannot configure"))
    }

    fn migrate(&mut self) -> Result<(), StateError> {
        self.conn
            .execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            .map_err(self.sql("cannot create the version table"))?;
        let version: i64 = self
            .conn
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version",
                [],
                |r| r.get(0),
            )
            .map_err(self.sql("cannot read the schema version"))?;
        if version > SCHEMA_VERSION {
            return Err(StateError::new(
                &self.path,
                format!("schema version {version} is newer than this tool's {SCHEMA_VERSION}"),
            )
            .with_hint("upgrade segment-sync"));
        }
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction()
            .map_err(|e| StateError::sql(&path, "cannot migrate", e))?;
        for (i, migration) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(version).unwrap_or(0))
        {
            tx.execute_batch(migration)
                .map_err(|e| StateError::sql(&path, "cannot migrate", e))?;
            tx.execute("DELETE FROM schema_version", [])
                .map_err(|e| StateError::sql(&path, "cannot migrate", e))?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [i as i64 + 1],
            )
            .map_err(|e| StateError::sql(&path, "cannot migrate", e))?;
        }
        tx.commit()
            .map_err(|e| StateError::sql(&path, "cannot migrate", e))
    }

    /// Loads every identity into memory for the run's change detection.
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn index(&mut self) -> Result<StateIndex, StateError> {
        let count: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM records", [], |r| r.get(0))
            .map_err(self.sql("cannot count records"))?;
        let mut index = StateIndex::with_capacity(usize::try_from(count).unwrap_or(0));
        let mut replaced = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT id, key_hash, COALESCE(source_hash, 0), failed_runs, failed_hash
                     FROM records ORDER BY id",
                )
                .map_err(self.sql("cannot read records"))?;
            let mut rows = stmt.query([]).map_err(self.sql("cannot read records"))?;
            while let Some(row) = rows.next().map_err(self.sql("cannot read records"))? {
                let mut read = || -> rusqlite::Result<()> {
                    let id: i64 = row.get(0)?;
                    let key = row.get::<_, i64>(1)? as u64;
                    if let Some(older) = index.insert(key, row.get::<_, i64>(2)? as u64, id) {
                        replaced.push((key, older, id));
                    }
                    let failed_runs = row.get::<_, i64>(3)?;
                    if failed_runs > 0 {
                        let hash = row.get::<_, Option<i64>>(4)?.unwrap_or(0) as u64;
                        index
                            .failed
                            .insert(key, (hash, u32::try_from(failed_runs).unwrap_or(u32::MAX)));
                    } else {
                        index.failed.remove(&key);
                    }
                    Ok(())
                };
                read().map_err(self.sql("cannot read records"))?;
            }
        }
        self.merge_repeated_rows(&mut index, &replaced)?;
        Ok(index)
    }

    /// An identity sent twice in one run before its first row existed gets
    /// two rows; the newer one wins and the older is deleted. Two different
    /// identities sharing a key hash are marked ambiguous instead.
    fn merge_repeated_rows(
        &mut self,
        index: &mut StateIndex,
        replaced: &[(u64, i64, i64)],
    ) -> Result<(), StateError> {
        if replaced.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let err = |e| StateError::sql(&path, "cannot merge repeated rows", e);
        let tx = self.conn.transaction().map_err(err)?;
        for &(key, older, newer) in replaced {
            let identity = |row: i64| -> rusqlite::Result<String> {
                tx.query_row("SELECT identity FROM records WHERE id = ?1", [row], |r| {
                    r.get(0)
                })
            };
            if identity(older).map_err(err)? == identity(newer).map_err(err)? {
                tx.execute("DELETE FROM records WHERE id = ?1", [older])
                    .map_err(err)?;
            } else {
                index.ambiguous.insert(key);
            }
        }
        tx.commit().map_err(err)
    }

    /// The outbox log's path.
    pub fn outbox_path(&self) -> PathBuf {
        self.path.with_extension("outbox")
    }

    /// Appends a chunk of entries (lines from [`OutboxEntryRef::write_line`])
    /// in one write, before they are sent.
    ///
    /// # Errors
    /// The log cannot be opened or written.
    pub fn append_outbox(&mut self, entries: &[u8]) -> Result<(), StateError> {
        let path = self.outbox_path();
        let file = match &mut self.outbox {
            Some(file) => file,
            slot => {
                let mut file = OpenOptions::new()
                    .create(true)
                    .read(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| StateError::io(&path, "cannot open the outbox", e))?;
                // A crash mid-write leaves a partial last line: end it, so the
                // next entry starts on a line of its own.
                if ends_mid_line(&mut file)
                    .map_err(|e| StateError::io(&path, "cannot read the outbox", e))?
                {
                    file.write_all(b"\n")
                        .map_err(|e| StateError::io(&path, "cannot write the outbox", e))?;
                }
                slot.insert(file)
            }
        };
        file.write_all(entries)
            .map_err(|e| StateError::io(&path, "cannot write the outbox", e))
    }

    /// Empties the outbox log; for the end of a run with nothing in flight.
    ///
    /// # Errors
    /// The log cannot be truncated.
    pub fn clear_outbox(&mut self) -> Result<(), StateError> {
        self.outbox = None;
        let path = self.outbox_path();
        match File::options().write(true).open(&path) {
            Ok(file) => file
                .set_len(0)
                .map_err(|e| StateError::io(&path, "cannot empty the outbox", e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StateError::io(&path, "cannot empty the outbox", e)),
        }
    }

    /// What runs that did not finish left in the outbox: for each identity,
    /// its newest entry, if Segment has not answered for it yet. An older
    /// entry for an identity with a newer one is superseded and never sent
    /// again. The log is read as bytes: a line cut short by a crash (even
    /// inside a multi-byte character) is skipped and counted, and the lines
    /// after it are read as usual.
    ///
    /// # Errors
    /// The log or the database cannot be read.
    pub fn pending(&self, index: &StateIndex) -> Result<OutboxScan, StateError> {
        let path = self.outbox_path();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(StateError::io(&path, "cannot read the outbox", e)),
        };
        let mut scan = OutboxScan::default();
        // Identity key -> its newest entry's place in `newest`.
        let mut newest: Vec<OutboxEntry> = Vec::new();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        for line in bytes.split(|&b| b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Some(entry) = OutboxEntry::parse_bytes(line) else {
                scan.torn += 1;
                continue;
            };
            match by_key.get(&entry.key) {
                Some(&at) => {
                    newest[at] = entry;
                    scan.superseded += 1;
                }
                None => {
                    by_key.insert(entry.key.clone(), newest.len());
                    newest.push(entry);
                }
            }
        }
        for entry in newest {
            // A record with no row never settled; one with a row settled
            // this entry if it is the row's last message.
            let row = self.row_of(index, &entry.key)?;
            let settled = match row {
                Some(row) => {
                    self.last_message_id(row)?.as_deref() == Some(entry.message_id.as_str())
                }
                None => false,
            };
            if !settled {
                let order = scan.pending.len();
                scan.pending.push(Pending { entry, row, order });
            }
        }
        Ok(scan)
    }

    /// The row of identity `key`, found through the index and checked
    /// against the stored identity text (a key-hash hit alone may be
    /// another identity with the same hash).
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn row_of(&self, index: &StateIndex, key: &str) -> Result<Option<i64>, StateError> {
        let Some((_, known)) = index.get(stable_hash(key.as_bytes())) else {
            return Ok(None);
        };
        Ok((self.identity_of(known.row)?.as_deref() == Some(key)).then_some(known.row))
    }

    /// The identity key stored in `row`.
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn identity_of(&self, row: i64) -> Result<Option<String>, StateError> {
        self.conn
            .prepare_cached("SELECT identity FROM records WHERE id = ?1")
            .and_then(|mut stmt| stmt.query_row([row], |r| r.get(0)).optional())
            .map_err(self.sql("cannot read records"))
    }

    fn last_message_id(&self, row: i64) -> Result<Option<String>, StateError> {
        self.conn
            .prepare_cached("SELECT last_message_id FROM records WHERE id = ?1")
            .and_then(|mut stmt| stmt.query_row([row], |r| r.get(0)).optional())
            .map(Option::flatten)
            .map_err(self.sql("cannot read records"))
    }

    /// The payload hash Segment last accepted for the record in `row`.
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn accepted_hash(&self, row: i64) -> Result<Option<u64>, StateError> {
        self.conn
            .prepare_cached("SELECT accepted_hash FROM records WHERE id = ?1")
            .and_then(|mut stmt| {
                stmt.query_row([row], |r| r.get::<_, Option<i64>>(0))
                    .optional()
            })
            .map(|hash| hash.flatten().map(|h| h as u64))
            .map_err(self.sql("cannot read records"))
    }

    /// The accepted trait names of the record in `row`, for the null policy.
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn accepted_traits(&self, row: i64) -> Result<Vec<String>, StateError> {
        let traits: Option<String> = self
            .conn
            .prepare_cached(
                "SELECT t.names FROM records r JOIN trait_sets t ON t.id = r.accepted_traits WHERE r.id = ?1",
            )
            .and_then(|mut stmt| stmt.query_row([row], |r| r.get(0)).optional())
            .map_err(self.sql("cannot read accepted traits"))?;
        Ok(traits
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default())
    }

    /// Applies `changes` in one transaction.
    ///
    /// # Errors
    /// The database cannot be written.
    pub fn apply(&mut self, changes: &[Change]) -> Result<(), StateError> {
        if changes.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let err = |e| StateError::sql(&path, "cannot write", e);
        let now = now_ms();
        let tx = self.conn.transaction().map_err(err)?;
        {
            // Prepared once per transaction: a first run writes a row per record.
            let mut insert_accepted = tx
                .prepare(
                    "INSERT INTO records (identity, key_hash, accepted_hash, accepted_at, accepted_message_id,
                                          accepted_traits, last_message_id, line, source_hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5, ?7, ?8)",
                )
                .map_err(err)?;
            let mut update_accepted = tx
                .prepare(
                    "UPDATE records SET accepted_hash = ?2, accepted_at = ?3, accepted_message_id = ?4,
                       accepted_traits = ?5, last_message_id = ?4, last_error_code = NULL, last_error = NULL,
                       last_status = NULL, failed_runs = 0, failed_hash = NULL, line = ?6, source_hash = ?7
                     WHERE id = ?1",
                )
                .map_err(err)?;
            let mut insert_failed = tx
                .prepare(
                    "INSERT INTO records (identity, key_hash, last_message_id, last_error_code, last_error,
                                          last_status, failed_runs, failed_hash, line)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?8)",
                )
                .map_err(err)?;
            let mut update_failed = tx
                .prepare(
                    "UPDATE records SET last_message_id = ?2, last_error_code = ?3, last_error = ?4,
                       last_status = ?5, failed_runs = failed_runs + 1, failed_hash = ?6, line = ?7
                     WHERE id = ?1",
                )
                .map_err(err)?;
            for change in changes {
                // New identities are appended; known ones are updated by row id.
                match change {
                    Change::Accepted(record) => {
                        let traits = intern_trait_set(&tx, &mut self.trait_sets, &record.traits)
                            .map_err(err)?;
                        let (hash, line) = (record.hash as i64, record.line as i64);
                        match record.row {
                            Some(row) => update_accepted.execute(params![
                                row,
                                hash,
                                now,
                                record.message_id,
                                traits,
                                line,
                                record.source_hash as i64
                            ]),
                            None => insert_accepted.execute(params![
                                record.key,
                                stable_hash(record.key.as_bytes()) as i64,
                                hash,
                                now,
                                record.message_id,
                                traits,
                                line,
                                record.source_hash as i64
                            ]),
                        }
                        .map_err(err)?;
                    }
                    Change::Failed {
                        record,
                        code,
                        message,
                        status,
                    } => {
                        let (hash, line, status) = (
                            record.hash as i64,
                            record.line as i64,
                            status.map(i64::from),
                        );
                        match record.row {
                            Some(row) => update_failed.execute(params![
                                row,
                                record.message_id,
                                code,
                                message,
                                status,
                                hash,
                                line
                            ]),
                            None => insert_failed.execute(params![
                                record.key,
                                stable_hash(record.key.as_bytes()) as i64,
                                record.message_id,
                                code,
                                message,
                                status,
                                hash,
                                line
                            ]),
                        }
                        .map_err(err)?;
                    }
                }
            }
        }
        tx.commit().map_err(err)
    }

    /// Records the start of a run; returns its id.
    ///
    /// # Errors
    /// The database cannot be written.
    pub fn begin_run(&mut self, source: &str) -> Result<i64, StateError> {
        self.conn
            .execute(
                "INSERT INTO runs (started_at, source) VALUES (?1, ?2)",
                params![now_ms(), source],
            )
            .map_err(self.sql("cannot record the run"))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records the end of run `id` with its report.
    ///
    /// # Errors
    /// The database cannot be written.
    pub fn finish_run(
        &mut self,
        id: i64,
        summary: &impl serde::Serialize,
    ) -> Result<(), StateError> {
        let summary = serde_json::to_string(summary).unwrap_or_default();
        self.conn
            .execute(
                "UPDATE runs SET finished_at = ?2, summary = ?3 WHERE id = ?1",
                params![id, now_ms(), summary],
            )
            .map_err(self.sql("cannot record the run"))?;
        Ok(())
    }

    /// The identity keys of these rows, for the removed report.
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn identities(&self, rows: &[i64]) -> Result<Vec<String>, StateError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT identity FROM records WHERE id = ?1")
            .map_err(self.sql("cannot read records"))?;
        rows.iter()
            .map(|row| stmt.query_row([row], |r| r.get(0)))
            .collect::<Result<_, _>>()
            .map_err(self.sql("cannot read records"))
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
                "SELECT COUNT(*), COUNT(accepted_hash), COUNT(*) FILTER (WHERE failed_runs > 0) FROM records",
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
                "SELECT identity, COALESCE(last_error_code, ''), COALESCE(last_error, ''), failed_runs
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traits(json: Value) -> Map<String, Value> {
        json.as_object().unwrap().clone()
    }

    #[test]
    fn payload_hash_ignores_key_order_but_not_values() {
        let id = Identity::user("u1");
        let a = payload_hash(
            &id,
            &traits(serde_json::json!({"a": 1, "b": {"x": 1, "y": [1, 2]}})),
        );
        let b: Map<String, Value> =
            serde_json::from_str(r#"{"b":{"y":[1,2],"x":1},"a":1}"#).unwrap();
        assert_eq!(a, payload_hash(&id, &b));
        let c = payload_hash(
            &id,
            &traits(serde_json::json!({"a": 2, "b": {"x": 1, "y": [1, 2]}})),
        );
        assert_ne!(a, c);
        assert_ne!(a, payload_hash(&Identity::user("u2"), &b));
        // Arrays keep their order: it is part of the value.
        let d = payload_hash(
            &id,
            &traits(serde_json::json!({"a": 1, "b": {"x": 1, "y": [2, 1]}})),
        );
        assert_ne!(a, d);
    }

    /// The hash of the payload in `hashes_are_stable_across_versions`, as first computed.
    const PINNED_PAYLOAD_HASH: u64 = 7_485_935_815_751_391_336;

    #[test]
    fn hashes_are_stable_across_versions() {
        // A changed hash or encoding would re-send every customer: pin both.
        assert_eq!(stable_hash(b""), 0x2d06_8005_38d3_94c2);
        let traits = traits(serde_json::json!({"email": "a@b.c", "age": 3, "x": [true, null]}));
        assert_eq!(
            payload_hash(&Identity::user("u1"), &traits),
            PINNED_PAYLOAD_HASH
        );
    }

    #[test]
    fn the_encoding_is_unambiguous() {
        let id = Identity::user("u");
        let a = traits(serde_json::json!({"ab": "c"}));
        let b = traits(serde_json::json!({"a": "bc"}));
        assert_ne!(payload_hash(&id, &a), payload_hash(&id, &b));
        let c = traits(serde_json::json!({"a": "1"}));
        let d = traits(serde_json::json!({"a": 1}));
        assert_ne!(payload_hash(&id, &c), payload_hash(&id, &d));
    }

    fn settled(row: Option<i64>, message_id: &str, hash: u64) -> Settled {
        Settled {
            row,
            key: "u:1".into(),
            hash,
            source_hash: hash + 100,
            message_id: message_id.into(),
            traits: r#"["email"]"#.into(),
            line: 2,
        }
    }

    /// Appends one outbox entry for u:1.
    fn send(store: &mut StateStore, message_id: &str, hash: u64) {
        let mut entries = Vec::new();
        OutboxEntryRef {
            key: "u:1",
            hash,
            source_hash: 7,
            message_id,
            source: "f.csv",
            line: 2,
            traits: r#"["email"]"#,
            event: br#"{"type":"identify","userId":"1"}"#,
        }
        .write_line(&mut entries);
        store.append_outbox(&entries).unwrap();
    }

    fn pending(store: &mut StateStore) -> Vec<Pending> {
        let index = store.index().unwrap();
        store.pending(&index).unwrap().pending
    }

    /// Appends one outbox entry for `key`.
    fn send_for(store: &mut StateStore, key: &str, message_id: &str, hash: u64) {
        let mut entries = Vec::new();
        OutboxEntryRef {
            key,
            hash,
            source_hash: 7,
            message_id,
            source: "f.csv",
            line: 2,
            traits: r#"["email"]"#,
            event: br#"{"type":"identify","userId":"1"}"#,
        }
        .write_line(&mut entries);
        store.append_outbox(&entries).unwrap();
    }

    #[test]
    fn a_superseded_entry_is_never_pending_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(dir.path(), "t").unwrap();
        // v1 (m1) was accepted; a later run sent v2 (m2), also accepted.
        send(&mut store, "m1", 1);
        store
            .apply(&[Change::Accepted(settled(None, "m1", 1))])
            .unwrap();
        let row = Some(known(&mut store).row);
        send(&mut store, "m2", 2);
        store
            .apply(&[Change::Accepted(settled(row, "m2", 2))])
            .unwrap();
        assert!(
            pending(&mut store).is_empty(),
            "m1 is older than m2: never resent"
        );
        // v3 (m3) is in flight: only it is pending, however many entries came before.
        send(&mut store, "m3", 3);
        let index = store.index().unwrap();
        let scan = store.pending(&index).unwrap();
        let ids: Vec<_> = scan
            .pending
            .iter()
            .map(|p| p.entry.message_id.as_str())
            .collect();
        assert_eq!(ids, ["m3"]);
        assert_eq!(scan.superseded, 2);
    }

    #[test]
    fn a_torn_line_is_skipped_and_counted_and_the_lines_after_it_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(dir.path(), "t").unwrap();
        send_for(&mut store, "u:1", "m1", 1);
        // A kill cut a line inside a multi-byte character (not valid UTF-8).
        store
            .append_outbox(b"{\"key\":\"u:2\",\"source\":\"caf\xc3")
            .unwrap();
        drop(store);
        let mut store = StateStore::open(dir.path(), "t").unwrap();
        send_for(&mut store, "u:3", "m3", 3);
        let index = store.index().unwrap();
        let scan = store.pending(&index).unwrap();
        let ids: Vec<_> = scan
            .pending
            .iter()
            .map(|p| p.entry.message_id.as_str())
            .collect();
        assert_eq!(ids, ["m1", "m3"]);
        assert_eq!(scan.torn, 1);
    }

    #[test]
    fn an_index_hit_is_checked_against_the_identity_text() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(dir.path(), "t").unwrap();
        // Another identity whose key hash is the same as u:1's (a collision).
        store
            .conn
            .execute(
                "INSERT INTO records (identity, key_hash, accepted_hash, last_message_id) VALUES ('u:other', ?1, 5, 'mx')",
                [stable_hash(b"u:1") as i64],
            )
            .unwrap();
        let index = store.index().unwrap();
        assert!(index.get(stable_hash(b"u:1")).is_some(), "the hash hits");
        assert_eq!(store.row_of(&index, "u:1").unwrap(), None);
        assert!(
            store.row_of(&index, "u:other").unwrap().is_none(),
            "its own hash differs"
        );
        // An in-flight entry for u:1 is pending, not settled by u:other's row.
        send_for(&mut store, "u:1", "mx", 9);
        assert_eq!(pending(&mut store).len(), 1);
    }

    #[test]
    fn the_state_is_locked_for_one_run_at_a_time_and_reset_removes_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(dir.path(), "t").unwrap();
        send(&mut store, "m1", 1);
        let err = StateStore::open(dir.path(), "t").unwrap_err();
        assert!(err.is_locked(), "{err}");
        assert!(
            err.hint()
                .unwrap()
                .contains(&std::process::id().to_string()),
            "{err:?}"
        );
        assert!(StateStore::remove(dir.path(), "t").unwrap_err().is_locked());
        drop(store);
        let removed = StateStore::remove(dir.path(), "t").unwrap();
        assert!(
            removed
                .iter()
                .any(|p| p.extension().is_some_and(|e| e == "outbox"))
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(!StateStore::exists(dir.path(), "t"));
    }

    #[test]
    fn an_empty_or_foreign_database_is_an_error_with_a_reset_hint() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("e.sqlite"), b"").unwrap();
        std::fs::write(
            dir.path().join("g.sqlite"),
            b"this is not a database file at all",
        )
        .unwrap();
        for name in ["e", "g"] {
            let err = StateStore::open(dir.path(), name).unwrap_err();
            assert!(err.hint().unwrap().contains("reset"), "{name}: {err}");
        }
        assert_eq!(
            std::fs::metadata(dir.path().join("e.sqlite"))
                .unwrap()
                .len(),
            0,
            "left as it was"
        );
    }

    #[test]
    fn the_index_grows_instead_of_filling_up() {
        let mut index = StateIndex::with_capacity(4);
        for k in 1..=1_000u64 {
            index.insert(k.wrapping_mul(0x9E37_79B9_7F4A_7C15), k, k as i64);
        }
        assert_eq!(index.len(), 1_000);
        assert_eq!(
            index
                .get(7u64.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .unwrap()
                .1
                .row,
            7
        );
    }

    fn known(store: &mut StateStore) -> Known {
        store.index().unwrap().get(stable_hash(b"u:1")).unwrap().1
    }

    #[test]
    fn an_outbox_entry_is_pending_until_its_record_settles() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(dir.path(), "t").unwrap();
        send(&mut store, "m1", 42);
        // A line cut short by a crash is not an entry, and does not spoil the next one.
        store.append_outbox(br#"{"key":"u:2","ha"#).unwrap();
        drop(store);
        let mut store = StateStore::open(dir.path(), "t").unwrap();
        let left = pending(&mut store);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].entry.message_id, "m1");
        assert_eq!(left[0].entry.event, br#"{"type":"identify","userId":"1"}"#);
        assert_eq!(left[0].entry.traits, r#"["email"]"#);
        assert_eq!(left[0].row, None, "a record never settled has no row");

        store
            .apply(&[Change::Accepted(settled(None, "m1", 42))])
            .unwrap();
        assert!(
            pending(&mut store).is_empty(),
            "settled entries are not pending"
        );
        let known = known(&mut store);
        assert_eq!((known.source_hash, known.failed), (Some(142), None));
        assert_eq!(store.accepted_hash(known.row).unwrap(), Some(42));
        assert_eq!(store.accepted_traits(known.row).unwrap(), ["email"]);
        assert_eq!(
            store.accepted_message_id("u:1").unwrap().as_deref(),
            Some("m1")
        );
        assert_eq!(store.counts().unwrap(), (1, 1, 0, 0));

        // A new message for the same record is pending again until it settles.
        send(&mut store, "m2", 43);
        assert_eq!(pending(&mut store)[0].row, Some(known.row));
        store.clear_outbox().unwrap();
        assert!(pending(&mut store).is_empty());
        assert_eq!(std::fs::metadata(store.outbox_path()).unwrap().len(), 0);
    }

    #[test]
    fn a_failure_counts_runs_and_keeps_the_last_accepted_hash() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(dir.path(), "t").unwrap();
        store
            .apply(&[Change::Accepted(settled(None, "m1", 1))])
            .unwrap();
        let row = Some(known(&mut store).row);
        let failure = |m: &str| Change::Failed {
            record: settled(row, m, 2),
            code: "http_status".into(),
            message: "400".into(),
            status: Some(400),
        };
        store.apply(&[failure("m2"), failure("m3")]).unwrap();
        let k = known(&mut store);
        assert_eq!((k.source_hash, k.failed), (Some(101), Some((2, 2))));
        assert_eq!(store.accepted_hash(k.row).unwrap(), Some(1));
        assert_eq!(store.failed(10).unwrap()[0].code, "http_status");
        store
            .apply(&[Change::Accepted(settled(row, "m4", 3))])
            .unwrap();
        let k = known(&mut store);
        assert_eq!(
            (k.source_hash, k.failed),
            (Some(103), None),
            "a success clears failures"
        );
        assert_eq!(store.counts().unwrap().0, 1, "updates never add rows");
    }

    #[test]
    fn an_identity_sent_twice_before_it_had_a_row_is_merged_into_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(dir.path(), "t").unwrap();
        store
            .apply(&[
                Change::Accepted(settled(None, "m1", 1)),
                Change::Accepted(settled(None, "m2", 2)),
            ])
            .unwrap();
        assert_eq!(
            known(&mut store).source_hash,
            Some(102),
            "the later one wins"
        );
        assert_eq!(store.counts().unwrap().0, 1, "the older row is gone");
    }

    #[test]
    fn outbox_lines_round_trip() {
        let mut line = Vec::new();
        let entry = OutboxEntryRef {
            key: "a:x\"y",
            hash: u64::MAX,
            source_hash: 3,
            message_id: "m",
            source: "dir/f.csv",
            line: 7,
            traits: "[]",
            event: br#"{"a":[1,2]}"#,
        };
        entry.write_line(&mut line);
        assert_eq!(line.last(), Some(&b'\n'));
        let parsed = OutboxEntry::parse(std::str::from_utf8(&line).unwrap().trim_end()).unwrap();
        assert_eq!(
            (parsed.key.as_str(), parsed.hash, parsed.line),
            ("a:x\"y", u64::MAX, 7)
        );
        assert_eq!(parsed.event, br#"{"a":[1,2]}"#);
    }

    #[test]
    fn reopening_keeps_the_schema_and_refuses_newer_ones() {
        let dir = tempfile::tempdir().unwrap();
        drop(StateStore::open(dir.path(), "t").unwrap());
        let store = StateStore::open(dir.path(), "t").unwrap();
        store
            .conn
            .execute("INSERT INTO schema_version (version) VALUES (99)", [])
            .unwrap();
        drop(store);
        let err = StateStore::open(dir.path(), "t").unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn index_finds_every_key_with_its_row() {
        let key = |k: u64| k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut index = StateIndex::with_capacity(1_000);
        for k in 1..=1_000u64 {
            assert_eq!(index.insert(key(k), k, k as i64 + 10), None);
        }
        assert_eq!(
            index.insert(key(5), 77, 2_000),
            Some(15),
            "a repeated key hands back the older row"
        );
        assert_eq!(index.len(), 1_000);
        for k in (1..=1_000u64).filter(|k| *k != 5) {
            let (slot, known) = index.get(key(k)).unwrap();
            assert_eq!((known.source_hash, known.row), (Some(k), k as i64 + 10));
            assert_eq!(index.row_at(slot), Some(k as i64 + 10));
        }
        assert_eq!(index.get(key(5)).unwrap().1.row, 2_000);
        index.ambiguous.insert(key(7));
        assert!(index.get(key(7)).is_none(), "shared by two identities");
        assert!(index.get(12_345).is_none());
        assert!(StateIndex::default().get(1).is_none());
    }
}
