//! Repeated identities in one input: the streaming check (the line an
//! identity was first seen on) and, for `--duplicates last` on a file, a
//! first pass that finds each repeated identity's last row.

use std::collections::HashMap;

use segment_client::Identity;

use super::StopSignal;
use super::planner::Planner;
use crate::mapping::Mapping;
use crate::source::{ReadProgress, Source};
use crate::state::{identity_key, stable_hash};

/// Records read before the duplicate table is sized from the source's size.
pub(crate) const SIZING_SAMPLE: u64 = 1_024;

/// Rows whose identity is on several rows, found by reading the source once
/// before the run (`--duplicates last`): identity hash -> the last row's line.
#[derive(Debug, Default)]
pub(crate) struct LastRows {
    pub lines: HashMap<u64, u64>,
    /// How many of those last rows the run has reached.
    pub reached: usize,
}

impl LastRows {
    /// Finds every identity on several rows of `source`, and its last row.
    /// Bounded memory: identities the state knows are checked in the
    /// planner's per-slot array (4 bytes each, there anyway), new ones take
    /// 12 bytes each in a table dropped at the end; only the repeated ones
    /// are kept. Stops early at a stop (the run then reads nothing either).
    pub fn scan(
        source: Source,
        mapping: &Mapping,
        stop: &StopSignal,
        mut planner: Option<&mut Planner>,
    ) -> LastRows {
        let mut source = source;
        let mut seen = SeenIdentities::default();
        let mut lines = HashMap::new();
        let (progress, total_bytes) = (source.progress(), source.total_bytes());
        let (mut count, mut new_in_sample) = (0u64, 0u64);
        for record in source.by_ref().flatten() {
            count += 1;
            if count.is_multiple_of(SIZING_SAMPLE) && stop.is_stopped() {
                break;
            }
            if count == SIZING_SAMPLE + 1 {
                // Sized for the new identities only, as in the run itself.
                let share = match planner {
                    Some(_) => new_in_sample as f64 / SIZING_SAMPLE as f64,
                    None => 1.0,
                };
                size_duplicate_table(&mut seen, &progress, total_bytes, share);
            }
            // A record without an identity is reported by the run itself.
            let Ok(identity) = mapping.identity_of(&record) else {
                continue;
            };
            let line = record.location.line;
            let known = planner
                .as_deref_mut()
                .and_then(|p| p.first_seen(&identity_key(&identity), line));
            let repeated = match known {
                Some(first_line) => first_line.is_some(),
                None => {
                    new_in_sample += u64::from(count <= SIZING_SAMPLE);
                    seen.check(&identity, line).is_some()
                }
            };
            if repeated {
                lines.insert(identity_hash(&identity), line);
            }
        }
        if let Some(planner) = planner {
            planner.forget_seen();
        }
        // A fatal error is the run's to report, when it reads the same
        // source; what the scan found before it still holds.
        let _ = source.take_fatal();
        LastRows { lines, reached: 0 }
    }
}

/// Sizes the duplicate table for the whole source, estimated from the bytes
/// the first records took, so it does not grow (and briefly double) later.
pub(crate) fn size_duplicate_table(
    seen: &mut SeenIdentities,
    progress: &ReadProgress,
    total_bytes: Option<u64>,
    share: f64,
) {
    let read = progress.bytes_read();
    if let Some(total) = total_bytes.filter(|_| read > 0) {
        let estimate = total as f64 / read as f64 * SIZING_SAMPLE as f64 * share * 1.05;
        seen.reserve(estimate as usize);
    }
}

/// Identities already seen in this input: an open-addressing table of
/// 64-bit identity hashes with the line each was first seen on, 12 bytes a
/// slot, sized once from an estimate of the record count so it rarely grows.
/// (A `hashbrown::HashTable<(u64, u32)>` would take 17 bytes a bucket in
/// power-of-two tables, about 2.5x this for a million identities; see
/// `StateIndex` for the measurement.)
#[derive(Default)]
pub(crate) struct SeenIdentities {
    /// 0 marks an empty slot; hashes are forced odd so they are never 0.
    keys: Vec<u64>,
    lines: Vec<u32>,
    len: usize,
}

impl SeenIdentities {
    /// Makes room for `records` identities without growing.
    pub fn reserve(&mut self, records: usize) {
        let wanted = records + records / 7 + 16;
        if wanted > self.keys.len() {
            self.rehash(wanted);
        }
    }

    /// Remembers `identity` at `line`; returns the earlier line if it was seen.
    pub fn check(&mut self, identity: &Identity, line: u64) -> Option<u64> {
        if (self.len + 1) * 8 > self.keys.len() * 7 {
            self.rehash((self.keys.len() * 3 / 2).max(1024));
        }
        let key = identity_hash(identity);
        let mut slot = self.slot(key);
        loop {
            match self.keys[slot] {
                0 => {
                    self.keys[slot] = key;
                    self.lines[slot] = u32::try_from(line).unwrap_or(u32::MAX);
                    self.len += 1;
                    return None;
                }
                k if k == key => return Some(u64::from(self.lines[slot])),
                _ => slot = (slot + 1) % self.keys.len(),
            }
        }
    }

    /// Maps a hash onto the table without a power-of-two size (multiply-shift).
    fn slot(&self, key: u64) -> usize {
        ((u128::from(key) * self.keys.len() as u128) >> 64) as usize
    }

    fn rehash(&mut self, capacity: usize) {
        let keys = std::mem::replace(&mut self.keys, vec![0; capacity]);
        let lines = std::mem::replace(&mut self.lines, vec![0; capacity]);
        for (key, line) in keys.into_iter().zip(lines).filter(|(k, _)| *k != 0) {
            let mut slot = self.slot(key);
            while self.keys[slot] != 0 {
                slot = (slot + 1) % self.keys.len();
            }
            self.keys[slot] = key;
            self.lines[slot] = line;
        }
    }
}

pub(crate) fn identity_hash(identity: &Identity) -> u64 {
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(identity.user_id().unwrap_or_default().as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(identity.anonymous_id().unwrap_or_default().as_bytes());
    stable_hash(&bytes) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_identities_finds_repeats_with_their_first_line_across_growth() {
        let mut seen = SeenIdentities::default();
        for i in 0..5_000u64 {
            assert_eq!(seen.check(&Identity::user(format!("u{i}")), i + 2), None);
        }
        assert_eq!(seen.check(&Identity::user("u42"), 9_000), Some(44));
        assert_eq!(
            seen.check(&Identity::anonymous("u42"), 9_001),
            None,
            "another kind of id"
        );
        seen.reserve(100_000);
        assert_eq!(seen.check(&Identity::user("u4999"), 9_002), Some(5_001));
        assert_eq!(seen.len, 5_001);
    }
}
