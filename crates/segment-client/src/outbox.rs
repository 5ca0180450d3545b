//! The optional durable outbox: queued events in SQLite, so a crash or a
//! restart does not lose them (cargo feature `outbox`).
//!
//! The worker writes each event when it takes it from the queue, one
//! transaction per chunk, before the event can be sent; it deletes events
//! once Segment answered for their batch (delivered or refused). On start,
//! whatever is left is queued again with its original `messageId`, so
//! Segment drops any copy it already received.
//!
//! Schema: `outbox(message_id TEXT PRIMARY KEY, user_id TEXT, anonymous_id
//! TEXT, event BLOB NOT NULL, queued_at INTEGER NOT NULL)`, in WAL mode.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, params};

use crate::error::{Kind, SegmentError};
use crate::message::{Event, Identity};

pub(crate) struct Outbox {
    conn: Mutex<Connection>,
}

fn outbox_error(what: &str, error: rusqlite::Error) -> SegmentError {
    SegmentError::with_source(Kind::Internal, format!("outbox: {what}: {error}"), error)
}

impl Outbox {
    /// Opens or creates the outbox at `path`.
    pub fn open(path: &Path) -> Result<Outbox, SegmentError> {
        let config = |e: rusqlite::Error| {
            SegmentError::with_source(
                Kind::InvalidConfig,
                format!("cannot open the outbox {}: {e}", path.display()),
                e,
            )
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                SegmentError::with_source(
                    Kind::InvalidConfig,
                    format!("cannot create the outbox directory {}", dir.display()),
                    e,
                )
            })?;
        }
        let conn = Connection::open(path).map_err(config)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS outbox (
               message_id TEXT PRIMARY KEY, user_id TEXT, anonymous_id TEXT,
               event BLOB NOT NULL, queued_at INTEGER NOT NULL
             );",
        )
        .map_err(config)?;
        Ok(Outbox {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The events left by an earlier process, oldest first.
    pub fn load(&self) -> Result<Vec<Event>, SegmentError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT message_id, user_id, anonymous_id, event FROM outbox ORDER BY queued_at, rowid")
            .map_err(|e| outbox_error("cannot read", e))?;
        let rows = stmt
            .query_map([], |r| {
                let user_id: Option<String> = r.get(1)?;
                let anonymous_id: Option<String> = r.get(2)?;
                let identity = match (user_id, anonymous_id) {
                    (Some(user_id), Some(anonymous_id)) => Identity::Both {
                        user_id,
                        anonymous_id,
                    },
                    (Some(user_id), None) => Identity::UserId(user_id),
                    (None, anonymous_id) => Identity::AnonymousId(anonymous_id.unwrap_or_default()),
                };
                Ok(Event {
                    message_id: r.get(0)?,
                    identity,
                    json: r.get(3)?,
                    tag: 0,
                })
            })
            .map_err(|e| outbox_error("cannot read", e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| outbox_error("cannot read", e))
    }

    /// Writes `events` in one transaction.
    pub fn put<'a>(&self, events: impl Iterator<Item = &'a Event>) -> Result<(), SegmentError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(|e| outbox_error("cannot write", e))?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO outbox (message_id, user_id, anonymous_id, event, queued_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(|e| outbox_error("cannot write", e))?;
            for event in events {
                insert
                    .execute(params![
                        event.message_id,
                        event.identity.user_id(),
                        event.identity.anonymous_id(),
                        event.json,
                        now
                    ])
                    .map_err(|e| outbox_error("cannot write", e))?;
            }
        }
        tx.commit().map_err(|e| outbox_error("cannot write", e))
    }

    /// Deletes the events with these ids in one transaction.
    pub fn remove<'a>(
        &self,
        message_ids: impl Iterator<Item = &'a str>,
    ) -> Result<(), SegmentError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(|e| outbox_error("cannot delete", e))?;
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM outbox WHERE message_id = ?1")
                .map_err(|e| outbox_error("cannot delete", e))?;
            for id in message_ids {
                delete
                    .execute([id])
                    .map_err(|e| outbox_error("cannot delete", e))?;
            }
        }
        tx.commit().map_err(|e| outbox_error("cannot delete", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{IdentifyParams, prepare};

    #[test]
    fn events_survive_reopening_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/outbox.sqlite");
        let events: Vec<Event> = (0..3)
            .map(|i| prepare(IdentifyParams::new(Identity::user(format!("u{i}")))).unwrap())
            .collect();
        let outbox = Outbox::open(&path).unwrap();
        outbox.put(events.iter()).unwrap();
        outbox.put(events[..1].iter()).unwrap();
        drop(outbox);

        let outbox = Outbox::open(&path).unwrap();
        let loaded = outbox.load().unwrap();
        assert_eq!(loaded.len(), 3, "a repeated put is ignored");
        assert_eq!(loaded[2].message_id, events[2].message_id);
        assert_eq!(loaded[2].json, events[2].json);
        assert_eq!(loaded[2].identity, Identity::user("u2"));
        outbox
            .remove(events[..2].iter().map(|e| e.message_id.as_str()))
            .unwrap();
        assert_eq!(outbox.load().unwrap().len(), 1);
    }
}
