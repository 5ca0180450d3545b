//! The high-water mark of a keyset (`--cursor`) sync: the `(cursor,
//! primary key)` of the last row that settled with everything before it.

use rusqlite::OptionalExtension;

use super::{StateError, StateStore};

/// Created on first use, so states written before keyset mode need no
/// migration.
const CREATE: &str = "CREATE TABLE IF NOT EXISTS cursor_mark (
    column_name TEXT PRIMARY KEY,
    mark TEXT NOT NULL
)";

impl StateStore {
    /// The mark stored for `column`, if a run stored one.
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn cursor_mark(&self, column: &str) -> Result<Option<String>, StateError> {
        let exists: bool = self
            .conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'cursor_mark')",
                [],
                |r| r.get(0),
            )
            .map_err(self.sql("cannot read the cursor mark"))?;
        if !exists {
            return Ok(None);
        }
        self.conn
            .query_row(
                "SELECT mark FROM cursor_mark WHERE column_name = ?1",
                [column],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql("cannot read the cursor mark"))
    }

    /// Stores the mark for `column` (only one column's mark is kept).
    ///
    /// # Errors
    /// The database cannot be written.
    pub fn set_cursor_mark(&mut self, column: &str, mark: &str) -> Result<(), StateError> {
        let path = self.path.clone();
        let sql = |e| StateError::sql(&path, "cannot store the cursor mark", e);
        let tx = self.conn.transaction().map_err(sql)?;
        tx.execute_batch(CREATE).map_err(sql)?;
        tx.execute("DELETE FROM cursor_mark", []).map_err(sql)?;
        tx.execute(
            "INSERT INTO cursor_mark (column_name, mark) VALUES (?1, ?2)",
            [column, mark],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)
    }
}
