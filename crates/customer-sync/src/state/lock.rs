//! The files a state owns, and the exclusive lock a run holds on them.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::StateError;
use super::error::LOCKED;

/// Every file one sync's state owns, in one place: opening, locking and
/// [`StateStore::remove`] all go through it.
#[derive(Debug, Clone)]
pub(super) struct StateFiles {
    pub(super) database: PathBuf,
}

impl StateFiles {
    pub(super) fn of(dir: &Path, name: &str) -> Self {
        Self {
            database: dir.join(format!("{name}.sqlite")),
        }
    }

    pub(super) fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.database.clone().into_os_string();
        name.push(suffix);
        PathBuf::from(name)
    }

    pub(super) fn outbox(&self) -> PathBuf {
        self.database.with_extension("outbox")
    }

    pub(super) fn lock(&self) -> PathBuf {
        self.database.with_extension("lock")
    }

    /// Where a new database is built before it is renamed into place, so
    /// that a kill during creation never leaves an empty `NAME.sqlite`.
    pub(super) fn creating(&self) -> PathBuf {
        self.sibling(".new")
    }

    /// All of them; the lock file last, so it is held while the rest go.
    pub(super) fn all(&self) -> [PathBuf; 8] {
        let creating = self.creating().into_os_string();
        let with = |suffix: &str| {
            let mut name = creating.clone();
            name.push(suffix);
            PathBuf::from(name)
        };
        [
            self.database.clone(),
            self.sibling("-wal"),
            self.sibling("-shm"),
            self.creating(),
            with("-wal"),
            with("-shm"),
            self.outbox(),
            self.lock(),
        ]
    }
}

/// An exclusive `flock` on `NAME.lock`, held for as long as a run (or a
/// reset) uses the state. The OS releases it when the process ends, however
/// it ends, so a kill -9 never leaves a stale lock behind.
#[derive(Debug)]
pub(super) struct StateLock {
    _file: File,
}

impl StateLock {
    pub(super) fn acquire(path: &Path) -> Result<StateLock, StateError> {
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
