//! The duplicate detector: which `messageId`s were seen recently, in bounded memory.

use std::collections::{HashMap, HashSet, VecDeque};

/// Remembers the last `capacity` distinct `messageId`s, as 64-bit hashes (about 20 bytes
/// each with the table's overhead), so a long run with `--counts-only` stays bounded.
///
/// Honest about its window: a repeat of an id forgotten since is counted as new, as it
/// would be by Segment after its own window (24 hours or more). Two different ids share a
/// hash with a probability of about n²/2⁶⁵ (3·10⁻⁸ for a million ids).
pub(crate) struct MessageIdWindow {
    capacity: usize,
    order: VecDeque<u64>,
    seen: HashSet<u64>,
    forgotten: u64,
}

impl MessageIdWindow {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            seen: HashSet::new(),
            forgotten: 0,
        }
    }

    /// Note `id`; `true` if it was already in the window.
    pub(crate) fn seen_before(&mut self, id: &str) -> bool {
        let hash = xxhash_rust::xxh3::xxh3_64(id.as_bytes());
        if !self.seen.insert(hash) {
            return true;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
            self.forgotten += 1;
        }
        self.order.push_back(hash);
        false
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Ids that fell out of the window.
    pub(crate) fn forgotten(&self) -> u64 {
        self.forgotten
    }
}

/// `messageId` -> times received, for the most recent `capacity` ids received more than
/// once.
pub(crate) struct RepeatedIds {
    capacity: usize,
    times: HashMap<Box<str>, usize>,
    order: VecDeque<Box<str>>,
}

impl RepeatedIds {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            times: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Count one more arrival of `id`, a known duplicate (so at least its second).
    pub(crate) fn add(&mut self, id: &str) {
        if let Some(times) = self.times.get_mut(id) {
            *times += 1;
            return;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.times.remove(&oldest);
        }
        self.times.insert(id.into(), 2);
        self.order.push_back(id.into());
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, usize)> {
        self.times.iter().map(|(id, &times)| (&**id, times))
    }

    pub(crate) fn len(&self) -> usize {
        self.times.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_forgets_the_oldest_ids() {
        let mut window = MessageIdWindow::new(3);
        for id in ["a", "b", "c"] {
            assert!(!window.seen_before(id));
        }
        assert!(window.seen_before("a"));
        assert!(!window.seen_before("d")); // pushes "a" out
        assert!(!window.seen_before("a"), "forgotten, so new again");
        assert_eq!((window.len(), window.forgotten()), (3, 2));
    }

    #[test]
    fn repeated_ids_count_arrivals_and_keep_the_newest() {
        let mut repeated = RepeatedIds::new(2);
        repeated.add("a");
        repeated.add("a");
        repeated.add("b");
        repeated.add("c");
        let mut listed: Vec<_> = repeated.iter().collect();
        listed.sort();
        assert_eq!(listed, [("b", 2), ("c", 2)]);
    }
}
