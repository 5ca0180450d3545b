//! The in-memory index of every identity in the state, loaded at the start
//! of a run.

use std::collections::{HashMap, HashSet};

use super::{StateError, StateStore};

/// What the state knows of one identity, held in memory for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Known {
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
///
/// Kept hand-written rather than `hashbrown::HashTable`, measured (1M keys,
/// release, this 2-core machine): a `HashTable<(u64, u64, u32)>` takes 52 MB
/// (power-of-two buckets of 24 bytes plus a control byte, at most 7/8 full)
/// against 23 MB here, and built in 123-129 ms against 63-86 ms, looked up
/// in 64-66 ms against 26-30 ms; the 64 MB budget of a 1M-row run cannot pay
/// for it.
#[derive(Debug, Default)]
pub(crate) struct StateIndex {
    /// Key hash per slot; 0 marks an empty slot.
    keys: Vec<u64>,
    /// Accepted source fingerprint per slot, or 0.
    accepted: Vec<u64>,
    /// Row id per slot.
    rows: Vec<u32>,
    len: usize,
    /// Key hashes shared by two identities (or equal to 0): always sent.
    pub(super) ambiguous: HashSet<u64>,
    pub(super) failed: HashMap<u64, (u64, u32)>,
}

impl StateIndex {
    pub(super) fn with_capacity(identities: usize) -> Self {
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
    pub(super) fn insert(&mut self, key: u64, accepted: u64, row: i64) -> Option<i64> {
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
    pub(crate) fn get(&self, key_hash: u64) -> Option<(usize, Known)> {
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
    pub(crate) fn row_at(&self, slot: usize) -> Option<i64> {
        (self.keys.get(slot).copied().unwrap_or(0) != 0).then(|| i64::from(self.rows[slot]))
    }

    /// How many slots the table has (for a bitset over them).
    pub(crate) fn slots(&self) -> usize {
        self.keys.len()
    }

    /// How many identities the state holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl StateStore {
    /// Loads every identity into memory for the run's change detection.
    ///
    /// # Errors
    /// The database cannot be read.
    pub(crate) fn index(&mut self) -> Result<StateIndex, StateError> {
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
}
