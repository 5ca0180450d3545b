//! The `records` table: what Segment answered for each identity, written
//! in one transaction per chunk of outcomes, and the `runs` table.

use std::collections::HashMap;
use std::sync::LazyLock;

use rusqlite::{OptionalExtension, params};

use super::{StateError, StateIndex, StateStore, now_ms, stable_hash};

/// One change to the state, applied in a transaction with others.
#[derive(Debug, Clone)]
pub(crate) enum Change {
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
pub(crate) struct Settled {
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
    /// The accepted top-level traits as a JSON object, kept for `[events]`.
    pub values: Option<String>,
    /// Whether this settles the `removed` event of an identity gone from
    /// the source, rather than its record.
    pub removal: bool,
}

/// The payload hash a failed `removed` event is recorded under, so the next
/// run tells it from a failed record.
pub(crate) const REMOVAL_HASH: u64 = 0x5245_4d4f_5645_4421;

/// An identity gone from the source, as the state has it.
#[derive(Debug, Clone)]
pub(crate) struct Gone {
    /// Its row.
    pub row: i64,
    /// [`identity_key`](super::identity_key).
    pub key: String,
    /// The line it was last read from.
    pub line: u64,
    /// Whether Segment has a payload for it (else it never arrived).
    pub accepted: bool,
    /// The accepted traits as a JSON object, if kept.
    pub values: Option<String>,
}

/// The id of a trait-name set, added on first use; most records share a few.
pub(super) fn intern_trait_set(
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

/// New rows of accepted records per `INSERT` statement: a first run writes
/// one per record, and a statement's own cost (its cursor, the seek to the
/// table's end, its reset) was as much as the row's (callgrind).
const INSERT_BATCH: usize = 64;

/// Parameters of one new accepted row: identity, key hash, payload hash,
/// accepted at, messageId (accepted and last), trait set, line, source
/// fingerprint, values.
const INSERT_PARAMS: usize = 9;

/// `INSERT` of `rows` new accepted rows, each with its own numbered
/// parameters.
fn insert_accepted_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO records (identity, key_hash, accepted_hash, accepted_at, accepted_message_id,
                              accepted_traits, last_message_id, line, source_hash, accepted_values)
         VALUES ",
    );
    for row in 0..rows {
        let p = |n: usize| row * INSERT_PARAMS + n;
        if row > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "(?{},?{},?{},?{},?{},?{},?{},?{},?{},?{})",
            p(1),
            p(2),
            p(3),
            p(4),
            p(5),
            p(6),
            p(5),
            p(7),
            p(8),
            p(9)
        ));
    }
    sql
}

/// Inserts `rows` (new identities Segment accepted, in order) with
/// [`INSERT_BATCH`] rows per statement, the rest one by one.
fn insert_accepted(
    tx: &rusqlite::Transaction<'_>,
    rows: &[(&Settled, i64)],
    now: i64,
) -> rusqlite::Result<()> {
    let mut batches = rows.chunks_exact(INSERT_BATCH);
    for batch in batches.by_ref() {
        insert_accepted_rows(tx, batch, now)?;
    }
    for row in batches.remainder() {
        insert_accepted_rows(tx, std::slice::from_ref(row), now)?;
    }
    Ok(())
}

/// One `INSERT` of `rows` (with their trait set ids).
fn insert_accepted_rows(
    tx: &rusqlite::Transaction<'_>,
    rows: &[(&Settled, i64)],
    now: i64,
) -> rusqlite::Result<()> {
    static ONE: LazyLock<String> = LazyLock::new(|| insert_accepted_sql(1));
    static BATCH: LazyLock<String> = LazyLock::new(|| insert_accepted_sql(INSERT_BATCH));
    let mut stmt = tx.prepare_cached(if rows.len() == 1 { &ONE } else { &BATCH })?;
    for (i, (record, traits)) in rows.iter().enumerate() {
        let at = i * INSERT_PARAMS;
        stmt.raw_bind_parameter(at + 1, &record.key)?;
        stmt.raw_bind_parameter(at + 2, stable_hash(record.key.as_bytes()) as i64)?;
        stmt.raw_bind_parameter(at + 3, record.hash as i64)?;
        stmt.raw_bind_parameter(at + 4, now)?;
        stmt.raw_bind_parameter(at + 5, &record.message_id)?;
        stmt.raw_bind_parameter(at + 6, traits)?;
        stmt.raw_bind_parameter(at + 7, record.line as i64)?;
        stmt.raw_bind_parameter(at + 8, record.source_hash as i64)?;
        stmt.raw_bind_parameter(at + 9, &record.values)?;
    }
    stmt.raw_execute()?;
    Ok(())
}

impl StateStore {
    /// The identity key stored in `row`.
    ///
    /// # Errors
    /// The database cannot be read.
    pub(crate) fn identity_of(&self, row: i64) -> Result<Option<String>, StateError> {
        self.conn
            .prepare_cached("SELECT identity FROM records WHERE id = ?1")
            .and_then(|mut stmt| stmt.query_row([row], |r| r.get(0)).optional())
            .map_err(self.sql("cannot read records"))
    }

    /// The row of identity `key` (whose [`stable_hash`] is `key_hash`),
    /// found through the index and checked against the stored identity
    /// text (a key-hash hit alone may be another identity with the same
    /// hash), and whether `message_id` is the last message Segment answered
    /// for it: one query, for each outbox entry a recovery reads.
    ///
    /// # Errors
    /// The database cannot be read.
    pub(super) fn settled(
        &self,
        index: &StateIndex,
        key_hash: u64,
        key: &str,
        message_id: &str,
    ) -> Result<(Option<i64>, bool), StateError> {
        let Some((_, known)) = index.get(key_hash) else {
            return Ok((None, false));
        };
        let stored: Option<(String, Option<String>)> = self
            .conn
            .prepare_cached("SELECT identity, last_message_id FROM records WHERE id = ?1")
            .and_then(|mut stmt| {
                stmt.query_row([known.row], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(self.sql("cannot read records"))?;
        Ok(match stored {
            Some((identity, last)) if identity == key => {
                (Some(known.row), last.as_deref() == Some(message_id))
            }
            _ => (None, false),
        })
    }

    /// The payload hash Segment last accepted for the record in `row`.
    ///
    /// # Errors
    /// The database cannot be read.
    pub(crate) fn accepted_hash(&self, row: i64) -> Result<Option<u64>, StateError> {
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
    pub(crate) fn accepted_traits(&self, row: i64) -> Result<Vec<String>, StateError> {
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

    /// The accepted traits of the record in `row`, if they were kept
    /// (only syncs with `[events]` keep them).
    ///
    /// # Errors
    /// The database cannot be read.
    pub(crate) fn accepted_values(
        &self,
        row: i64,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, StateError> {
        let values: Option<String> = self
            .conn
            .prepare_cached("SELECT accepted_values FROM records WHERE id = ?1")
            .and_then(|mut stmt| stmt.query_row([row], |r| r.get(0)).optional())
            .map(Option::flatten)
            .map_err(self.sql("cannot read accepted values"))?;
        Ok(values.and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// Of these rows, the identities not already removed (their `removed`
    /// event accepted), with what their `removed` event needs.
    ///
    /// # Errors
    /// The database cannot be read.
    pub(crate) fn gone(&self, rows: &[i64]) -> Result<Vec<Gone>, StateError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT identity, COALESCE(line, 0), accepted_hash IS NOT NULL, accepted_values
                 FROM records WHERE id = ?1 AND removed_at IS NULL",
            )
            .map_err(self.sql("cannot read records"))?;
        let mut gone = Vec::new();
        for &row in rows {
            let found = stmt
                .query_row([row], |r| {
                    Ok(Gone {
                        row,
                        key: r.get(0)?,
                        line: r.get::<_, i64>(1)? as u64,
                        accepted: r.get(2)?,
                        values: r.get(3)?,
                    })
                })
                .optional()
                .map_err(self.sql("cannot read records"))?;
            gone.extend(found);
        }
        Ok(gone)
    }

    /// Applies `changes` in one transaction.
    ///
    /// # Errors
    /// The database cannot be written.
    pub(crate) fn apply(&mut self, changes: &[Change]) -> Result<(), StateError> {
        if changes.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let err = |e| StateError::sql(&path, "cannot write", e);
        let now = now_ms();
        let tx = self.conn.transaction().map_err(err)?;
        {
            // Prepared once per transaction: a first run writes a row per record.
            let mut update_accepted = tx
                .prepare(
                    "UPDATE records SET accepted_hash = ?2, accepted_at = ?3, accepted_message_id = ?4,
                       accepted_traits = ?5, last_message_id = ?4, last_error_code = NULL, last_error = NULL,
                       last_status = NULL, failed_runs = 0, failed_hash = NULL, line = ?6, source_hash = ?7,
                       accepted_values = ?8, removed_at = NULL
                     WHERE id = ?1",
                )
                .map_err(err)?;
            // Segment has no payload for a removed identity any more: if it
            // comes back, it is added again.
            let update_removed = "UPDATE records SET accepted_hash = NULL, accepted_traits = NULL,
                   accepted_values = NULL, source_hash = NULL, removed_at = ?2, last_message_id = ?3,
                   last_error_code = NULL, last_error = NULL, last_status = NULL, failed_runs = 0,
                   failed_hash = NULL
                 WHERE id = ?1";
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
            // New identities Segment accepted, inserted a batch at a time,
            // but before any other change, so rows keep their order.
            let mut new_rows: Vec<(&Settled, i64)> = Vec::new();
            // The trait set last interned: records mostly share one.
            let mut last_traits: Option<(&str, i64)> = None;
            for change in changes {
                if let Change::Accepted(record) = change
                    && record.row.is_none()
                    && !record.removal
                {
                    let traits = match last_traits {
                        Some((names, id)) if names == record.traits => id,
                        _ => intern_trait_set(&tx, &mut self.trait_sets, &record.traits)
                            .map_err(err)?,
                    };
                    last_traits = Some((&record.traits, traits));
                    new_rows.push((record, traits));
                    if new_rows.len() == INSERT_BATCH {
                        insert_accepted(&tx, &new_rows, now).map_err(err)?;
                        new_rows.clear();
                    }
                    continue;
                }
                insert_accepted(&tx, &new_rows, now).map_err(err)?;
                new_rows.clear();
                // Known identities are updated by row id.
                match change {
                    Change::Accepted(record) if record.removal => {
                        if let Some(row) = record.row {
                            tx.prepare_cached(update_removed)
                                .and_then(|mut stmt| {
                                    stmt.execute(params![row, now, record.message_id])
                                })
                                .map_err(err)?;
                        }
                    }
                    Change::Accepted(record) => {
                        let traits = intern_trait_set(&tx, &mut self.trait_sets, &record.traits)
                            .map_err(err)?;
                        update_accepted
                            .execute(params![
                                record.row,
                                record.hash as i64,
                                now,
                                record.message_id,
                                traits,
                                record.line as i64,
                                record.source_hash as i64,
                                record.values
                            ])
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
            insert_accepted(&tx, &new_rows, now).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Records the start of a run; returns its id.
    ///
    /// # Errors
    /// The database cannot be written.
    pub(crate) fn begin_run(&mut self, source: &str) -> Result<i64, StateError> {
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
    pub(crate) fn finish_run(
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
}
