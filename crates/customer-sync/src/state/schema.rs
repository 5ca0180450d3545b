//! The schema and its migrations.

use super::{StateError, StateStore};

/// The schema version this code writes; older databases are migrated on open.
pub const SCHEMA_VERSION: i64 = 2;

/// Migrations, indexed by the version they produce minus one.
pub(super) const MIGRATIONS: &[&str] = &[
    "
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
",
    "
    ALTER TABLE records ADD COLUMN accepted_values TEXT;
    ALTER TABLE records ADD COLUMN removed_at INTEGER;
",
];

impl StateStore {
    pub(super) fn configure(&self) -> Result<(), StateError> {
        self.conn
            .execute_batch(
                // A bigger autocheckpoint folds the log back less often during a
                // first run's million inserts.
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;
                 PRAGMA wal_autocheckpoint = 10000;",
            )
            .map_err(self.sql("cannot configure"))
    }

    pub(super) fn migrate(&mut self) -> Result<(), StateError> {
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
}
