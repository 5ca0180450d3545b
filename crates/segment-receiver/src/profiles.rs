//! Customer profiles: the traits Segment would hold for each customer, merged from their
//! `identify` events in arrival order, in bounded memory.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;
use serde_json::{Map, Value};

/// Events of one customer whose sequence numbers a profile remembers (the newest).
const RECENT_EVENTS: usize = 100;

/// Fixed cost charged per profile on top of its text, so a flood of tiny profiles is
/// bounded too.
const PROFILE_OVERHEAD: usize = 256 + RECENT_EVENTS * 8;

/// One trait of an `identify` event, with its size measured before the store's lock.
pub(crate) struct TraitUpdate {
    pub name: String,
    pub value: Value,
    /// Bytes of the name plus the value's JSON text.
    pub bytes: usize,
}

/// The traits of an `identify` event, each measured, outside the store's lock; `None`
/// when it has no `traits` object.
pub(crate) fn identify_traits(raw: &serde_json::value::RawValue) -> Option<Vec<TraitUpdate>> {
    #[derive(serde::Deserialize)]
    struct WithTraits {
        #[serde(default)]
        traits: Option<Map<String, Value>>,
    }
    let traits = serde_json::from_str::<WithTraits>(raw.get()).ok()?.traits?;
    Some(
        traits
            .into_iter()
            .map(|(name, value)| TraitUpdate {
                bytes: name.len() + json_len(&value),
                name,
                value,
            })
            .collect(),
    )
}

/// What Segment would hold for one customer.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Profile {
    /// The `userId`, or the `anonymousId` for a customer who has none.
    pub id: Box<str>,
    pub anonymous: bool,
    /// Merged traits: a later value replaces an earlier one, `null` removes it.
    pub traits: Map<String, Value>,
    /// Events of this customer accepted (all of them, kept or not).
    pub events: u64,
    /// Traits not merged because the profile reached its size limit.
    pub truncated: bool,
    pub first_ms: u64,
    pub last_ms: u64,
    #[serde(skip)]
    trait_bytes: usize,
    #[serde(skip)]
    last_seq: u64,
    /// Sequence numbers of the newest events, oldest first.
    #[serde(skip)]
    pub recent: VecDeque<u64>,
}

impl Profile {
    fn bytes(&self) -> usize {
        PROFILE_OVERHEAD + self.id.len() + self.trait_bytes
    }

    /// The profile's `email` trait, if it is a string.
    pub(crate) fn email(&self) -> Option<&str> {
        self.traits.get("email").and_then(Value::as_str)
    }

    /// Merge one `identify` event's traits, in their order, within `limit` bytes.
    fn merge(&mut self, traits: Vec<TraitUpdate>, limit: usize) {
        for update in traits {
            let old = self
                .traits
                .get(&update.name)
                .map_or(0, |value| update.name.len() + json_len(value));
            if update.value.is_null() {
                if self.traits.remove(&update.name).is_some() {
                    self.trait_bytes -= old;
                }
                continue;
            }
            if self.trait_bytes - old + update.bytes > limit {
                self.truncated = true;
                continue;
            }
            self.trait_bytes = self.trait_bytes - old + update.bytes;
            self.traits.insert(update.name, update.value);
        }
    }
}

/// The bytes of `value`'s compact JSON text.
pub(crate) fn json_len(value: &Value) -> usize {
    serde_json::to_string(value).map_or(0, |text| text.len())
}

/// Every kept profile, least recently updated evicted first once over `keep` profiles or
/// `budget` bytes.
pub(crate) struct Profiles {
    keep: usize,
    budget: usize,
    profile_limit: usize,
    by_id: HashMap<Box<str>, Profile>,
    /// Last sequence number -> id, to find the least recently updated.
    by_recency: BTreeMap<u64, Box<str>>,
    bytes: usize,
    forgotten: u64,
}

/// One accepted event as the profiles see it.
pub(crate) struct Touch<'a> {
    pub id: &'a str,
    pub anonymous: bool,
    pub seq: u64,
    pub at_ms: u64,
    /// Some for `identify` events.
    pub traits: Option<Vec<TraitUpdate>>,
}

impl Profiles {
    pub(crate) fn new(keep: usize, budget: usize, profile_limit: usize) -> Self {
        Self {
            keep: keep.max(1),
            budget,
            profile_limit,
            by_id: HashMap::new(),
            by_recency: BTreeMap::new(),
            bytes: 0,
            forgotten: 0,
        }
    }

    pub(crate) fn touch(&mut self, touch: Touch<'_>) {
        let profile = self
            .by_id
            .entry(touch.id.into())
            .or_insert_with(|| Profile {
                id: touch.id.into(),
                anonymous: touch.anonymous,
                traits: Map::new(),
                events: 0,
                truncated: false,
                first_ms: touch.at_ms,
                last_ms: touch.at_ms,
                trait_bytes: 0,
                last_seq: 0,
                recent: VecDeque::new(),
            });
        let before = if profile.events == 0 {
            0
        } else {
            self.by_recency.remove(&profile.last_seq);
            profile.bytes()
        };
        profile.events += 1;
        profile.last_ms = touch.at_ms;
        profile.last_seq = touch.seq;
        if profile.recent.len() == RECENT_EVENTS {
            profile.recent.pop_front();
        }
        profile.recent.push_back(touch.seq);
        if let Some(traits) = touch.traits {
            profile.merge(traits, self.profile_limit);
        }
        self.bytes = self.bytes - before + profile.bytes();
        self.by_recency.insert(touch.seq, profile.id.clone());
        while self.by_id.len() > 1 && (self.by_id.len() > self.keep || self.bytes > self.budget) {
            let Some((_, id)) = self.by_recency.pop_first() else {
                break;
            };
            if let Some(old) = self.by_id.remove(&id) {
                self.bytes -= old.bytes();
                self.forgotten += 1;
            }
        }
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Profile> {
        self.by_id.get(id)
    }

    /// Up to `limit` profiles whose id or email contains `query` (case-insensitive), most
    /// recently updated first; all of them, newest first, for an empty query.
    pub(crate) fn search(&self, query: &str, limit: usize) -> Vec<&Profile> {
        let query = query.trim().to_lowercase();
        self.by_recency
            .values()
            .rev()
            .filter_map(|id| self.by_id.get(id))
            .filter(|profile| {
                query.is_empty()
                    || profile.id.to_lowercase().contains(&query)
                    || profile
                        .email()
                        .is_some_and(|email| email.to_lowercase().contains(&query))
            })
            .take(limit)
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Profiles let go to stay within bounds.
    pub(crate) fn forgotten(&self) -> u64 {
        self.forgotten
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn traits(value: Value) -> Option<Vec<TraitUpdate>> {
        let Value::Object(map) = value else {
            panic!("test traits are an object")
        };
        Some(
            map.into_iter()
                .map(|(name, value)| TraitUpdate {
                    bytes: name.len() + json_len(&value),
                    name,
                    value,
                })
                .collect(),
        )
    }

    fn touch(id: &str, seq: u64, value: Value) -> Touch<'_> {
        Touch {
            id,
            anonymous: false,
            seq,
            at_ms: seq,
            traits: traits(value),
        }
    }

    #[test]
    fn traits_merge_in_arrival_order_and_null_unsets() {
        let mut profiles = Profiles::new(10, 1 << 20, 1 << 10);
        profiles.touch(touch("u1", 1, json!({"email": "a@x", "plan": "free"})));
        profiles.touch(touch("u1", 2, json!({"plan": "pro", "name": "Ada"})));
        profiles.touch(touch("u1", 3, json!({"name": null})));
        let profile = profiles.get("u1").expect("kept");
        assert_eq!(
            Value::Object(profile.traits.clone()),
            json!({"email": "a@x", "plan": "pro"})
        );
        assert_eq!(profile.events, 3);
        assert_eq!(profile.recent, [1, 2, 3]);
        assert_eq!(profiles.search("A@X", 10).len(), 1);
        assert_eq!(profiles.search("u1", 10).len(), 1);
        assert!(profiles.search("nobody", 10).is_empty());
    }

    #[test]
    fn a_profile_stops_growing_at_its_limit_and_says_so() {
        let mut profiles = Profiles::new(10, 1 << 20, 100);
        profiles.touch(touch("u1", 1, json!({"a": "x".repeat(60)})));
        profiles.touch(touch("u1", 2, json!({"b": "y".repeat(60)})));
        let profile = profiles.get("u1").expect("kept");
        assert!(profile.traits.contains_key("a") && !profile.traits.contains_key("b"));
        assert!(profile.truncated);
    }

    #[test]
    fn the_least_recently_updated_profiles_go_first() {
        let mut profiles = Profiles::new(2, 1 << 20, 1 << 10);
        profiles.touch(touch("u1", 1, json!({})));
        profiles.touch(touch("u2", 2, json!({})));
        profiles.touch(touch("u1", 3, json!({})));
        profiles.touch(touch("u3", 4, json!({})));
        assert!(profiles.get("u2").is_none());
        assert!(profiles.get("u1").is_some() && profiles.get("u3").is_some());
        assert_eq!((profiles.len(), profiles.forgotten()), (2, 1));

        let mut small = Profiles::new(1_000, 3 * (PROFILE_OVERHEAD + 2), 1 << 10);
        for seq in 0..10 {
            small.touch(touch(&format!("u{seq}"), seq, json!({})));
        }
        assert!(small.bytes() <= 3 * (PROFILE_OVERHEAD + 2));
        assert_eq!(small.len(), 3);
    }
}
