//! `[events]`: which `track` a record sends beside (or instead of) its
//! identify, and with what properties.
//!
//! The kind follows from what Segment has, by the state: nothing accepted
//! (a new identity, one removed before, or one that never arrived) is
//! `added`; an accepted payload other than this one is `changed`. The
//! accepted traits are kept in the state (`accepted_values`) only for syncs
//! with `[events]`, so a `changed` event can carry exactly the traits that
//! changed and a `removed` event the traits Segment had.

use segment_client::{PreparedEvent, RawObject};
use serde_json::{Map, Value};

use super::planner::EventsPlan;
use crate::mapping::events::present;
use crate::mapping::{ChangeEvents, ChangeKind, MappedJson};
use crate::state::{OutboxEntry, StateError, StateStore};

/// What `[events]` adds to a record about to be sent with payload `hash`,
/// in state row `row` whose accepted payload is `accepted`; `unsure` as in
/// [`track_for`]. Reads the kept traits of a record Segment has another
/// payload of: the change is told against them, and what Segment will
/// hold is merged from them.
///
/// `in_flight_added` is an earlier run's `added` track for this customer
/// that may or may not have arrived, with the traits it set (its entry is
/// superseded by this record): it goes again under its own `messageId`
/// (Segment keeps one), and this record's change is told against it.
pub(crate) fn plan(
    events: &ChangeEvents,
    store: &StateStore,
    (row, accepted): (Option<i64>, Option<u64>),
    hash: u64,
    customer: &MappedJson,
    unsure: bool,
    in_flight_added: Option<(PreparedEvent, Map<String, Value>)>,
) -> Result<EventsPlan, StateError> {
    let traits = customer.traits.to_map();
    let (known, unsure, resend_added) = match in_flight_added {
        Some((added, values)) => {
            // Never equal to `hash`: this record superseded it.
            let known = Known::Payload {
                hash: 0,
                values: Some(values),
            };
            (known, false, Some(added))
        }
        None => {
            let known = match (row, accepted) {
                (Some(row), Some(accepted)) => Known::Payload {
                    hash: accepted,
                    values: match accepted != hash || unsure {
                        true => store.accepted_values(row)?,
                        false => None,
                    },
                },
                _ => Known::Nothing,
            };
            (known, unsure, None)
        }
    };
    let values = match &known {
        Known::Payload {
            values: Some(before),
            ..
        } => Some(merged_values(before, &traits)),
        _ => None,
    };
    Ok(EventsPlan {
        resend_added,
        track: track_for(events, &known, hash, &traits, unsure),
        values,
    })
}

/// The stored `added` track of an earlier run's entry, with the traits it
/// set, if the entry has one: beside its identify, or as its only event.
pub(crate) fn stored_added(entry: &OutboxEntry) -> Option<(PreparedEvent, Map<String, Value>)> {
    let json = match entry.kind {
        Some(ChangeKind::Added) => &entry.event,
        _ => entry
            .tracks
            .iter()
            .find(|(_, kind)| *kind == ChangeKind::Added)
            .map(|(track, _)| track)?,
    };
    let event = PreparedEvent::from_json(json.clone()).ok()?;
    let values = entry
        .values
        .as_deref()
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default();
    Some((event, values))
}

/// The track a record sends, decided with its identify.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TrackPlan {
    pub kind: ChangeKind,
    pub name: String,
    pub properties: Map<String, Value>,
}

/// What the state says Segment has for a record about to be sent.
#[derive(Debug)]
pub(crate) enum Known {
    /// No payload: the record is new to Segment.
    Nothing,
    /// The payload with this hash, whose traits were kept as `values`
    /// (`None`: not kept, as in a state written before `[events]`).
    Payload {
        hash: u64,
        values: Option<Map<String, Value>>,
    },
}

/// The track for a record with payload `hash` and `traits` (after the
/// null policy), given what Segment has; `unsure` says Segment may hold
/// another payload than the state says (an earlier run's event was in
/// flight). `None` when the record sends no track.
pub(crate) fn track_for(
    events: &ChangeEvents,
    known: &Known,
    hash: u64,
    traits: &Map<String, Value>,
    unsure: bool,
) -> Option<TrackPlan> {
    let (kind, properties) = match known {
        Known::Nothing => (ChangeKind::Added, present(traits)),
        Known::Payload { hash: accepted, .. } if *accepted == hash && !unsure => return None,
        // Segment may hold another payload than the one compared with (an
        // earlier change was in flight): every trait is news, and so is
        // every trait this record unsets.
        Known::Payload { .. } if unsure => (ChangeKind::Changed, traits.clone()),
        Known::Payload { values, .. } => match values {
            Some(before) => {
                let changed = changed(before, traits);
                if changed.is_empty() {
                    // Only a trait Segment never had is now sent as null.
                    return None;
                }
                (ChangeKind::Changed, changed)
            }
            // The state kept no traits to compare with.
            None => (ChangeKind::Changed, present(traits)),
        },
    };
    Some(TrackPlan {
        kind,
        name: events.name(kind)?.to_owned(),
        properties,
    })
}

/// The traits this payload changes in what Segment holds (`before`), with
/// their new values: a trait sent with another value, or sent as `null`
/// (unset) while Segment has it. A trait the payload leaves out is not a
/// change: Segment keeps its value (null policy `omit`).
pub(crate) fn changed(
    before: &Map<String, Value>,
    after: &Map<String, Value>,
) -> Map<String, Value> {
    after
        .iter()
        .filter(|(name, value)| match before.get(*name) {
            Some(old) => old != *value,
            None => !value.is_null(),
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// What Segment holds once it accepts `after` over `before`: `after`'s
/// values win, its `null`s unset, and what it leaves out stays. As JSON,
/// for the state.
pub(crate) fn merged_values(before: &Map<String, Value>, after: &Map<String, Value>) -> String {
    let mut kept = before.clone();
    for (name, value) in after {
        match value {
            Value::Null => kept.remove(name),
            value => kept.insert(name.clone(), value.clone()),
        };
    }
    serde_json::to_string(&kept).unwrap_or_default()
}

/// The traits to keep for a record Segment accepts, as a JSON object: its
/// traits but those sent as `null` (which unset a trait).
pub(crate) fn values_json(traits: &RawObject) -> String {
    if traits.fields().all(|(_, value)| value != "null") {
        return traits.json().to_owned();
    }
    let kept: Map<String, Value> = traits
        .to_map()
        .into_iter()
        .filter(|(_, value)| !value.is_null())
        .collect();
    serde_json::to_string(&kept).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn events() -> ChangeEvents {
        let spec = crate::mapping::MappingSpec::from_toml(
            "[events]\nadded = \"Created\"\nchanged = \"Updated\"\nremoved = \"Deleted\"\n",
        )
        .unwrap();
        crate::Mapping::new(Some(&spec), &["id"])
            .unwrap()
            .events()
            .unwrap()
            .clone()
    }

    #[test]
    fn a_new_customer_is_added_with_every_trait_it_has() {
        let traits = map(json!({"email": "a@x", "plan": null, "age": 3}));
        let track = track_for(&events(), &Known::Nothing, 7, &traits, false).unwrap();
        assert_eq!(track.kind, ChangeKind::Added);
        assert_eq!(track.name, "Created");
        assert_eq!(
            Value::Object(track.properties),
            json!({"email": "a@x", "age": 3})
        );
    }

    #[test]
    fn a_changed_customer_carries_only_what_changed() {
        let before = map(json!({"email": "a@x", "plan": "free", "age": 3, "kept": 1, "was": 2}));
        let after = map(json!({
            "email": "a@x", "plan": "pro", "age": 3, "city": "Oslo", "never": null, "was": null
        }));
        let known = Known::Payload {
            hash: 1,
            values: Some(before.clone()),
        };
        let track = track_for(&events(), &known, 2, &after, false).unwrap();
        assert_eq!(track.kind, ChangeKind::Changed);
        assert_eq!(
            Value::Object(track.properties),
            json!({"plan": "pro", "city": "Oslo", "was": null}),
            "unchanged traits are left out; an unset one is null; one left out stays in Segment"
        );
        let kept: Value = serde_json::from_str(&merged_values(&before, &after)).unwrap();
        assert_eq!(
            kept,
            json!({"email": "a@x", "plan": "pro", "age": 3, "kept": 1, "city": "Oslo"}),
            "what Segment holds: the left-out trait stays, the unset one goes"
        );
    }

    #[test]
    fn a_payload_change_that_changes_no_value_sends_no_track() {
        let before = map(json!({"plan": "free"}));
        let after = map(json!({"plan": "free", "phone": null}));
        let known = Known::Payload {
            hash: 1,
            values: Some(before),
        };
        assert_eq!(track_for(&events(), &known, 2, &after, false), None);
    }

    #[test]
    fn a_trait_unset_by_the_null_policy_is_a_change_to_null() {
        let before = map(json!({"plan": "free"}));
        let after = map(json!({"plan": null}));
        assert_eq!(
            Value::Object(changed(&before, &after)),
            json!({"plan": null})
        );
    }

    #[test]
    fn nothing_is_tracked_for_what_segment_has_unless_it_may_hold_another_payload() {
        let traits = map(json!({"plan": "pro"}));
        let known = || Known::Payload {
            hash: 5,
            values: Some(traits.clone()),
        };
        assert_eq!(track_for(&events(), &known(), 5, &traits, false), None);
        let unsure = track_for(&events(), &known(), 5, &traits, true).unwrap();
        assert_eq!(
            (unsure.kind, Value::Object(unsure.properties)),
            (ChangeKind::Changed, json!({"plan": "pro"}))
        );
    }

    #[test]
    fn when_segment_may_hold_a_newer_payload_a_change_carries_every_trait() {
        // Accepted v1; v2 (plan b) was in flight when the run was killed, so
        // Segment may have it; now v3 changes the email and sets plan back.
        let v1 = map(json!({"plan": "a", "email": "x"}));
        let v3 = map(json!({"plan": "a", "email": "y", "phone": null}));
        let known = Known::Payload {
            hash: 1,
            values: Some(v1),
        };
        let track = track_for(&events(), &known, 3, &v3, true).unwrap();
        assert_eq!(
            Value::Object(track.properties),
            json!({"plan": "a", "email": "y", "phone": null}),
            "a diff against v1 would leave Segment with plan b (or a phone v2 set)"
        );
    }

    #[test]
    fn without_kept_traits_a_change_carries_every_trait() {
        let traits = map(json!({"plan": "pro", "x": null}));
        let known = Known::Payload {
            hash: 1,
            values: None,
        };
        let track = track_for(&events(), &known, 2, &traits, false).unwrap();
        assert_eq!(Value::Object(track.properties), json!({"plan": "pro"}));
    }

    #[test]
    fn a_kind_the_section_does_not_name_sends_no_track() {
        let spec =
            crate::mapping::MappingSpec::from_toml("[events]\nremoved = \"Deleted\"\n").unwrap();
        let mapping = crate::Mapping::new(Some(&spec), &["id"]).unwrap();
        let traits = map(json!({"plan": "pro"}));
        let events = mapping.events().unwrap();
        assert_eq!(track_for(events, &Known::Nothing, 1, &traits, false), None);
    }

    #[test]
    fn kept_values_leave_out_unset_traits_and_round_trip() {
        let traits = map(json!({"a": "x\"y", "b": null, "c": {"d": [1, 2.5]}}));
        let kept: Value =
            serde_json::from_str(&values_json(&RawObject::from_map(&traits))).unwrap();
        assert_eq!(kept, json!({"a": "x\"y", "c": {"d": [1, 2.5]}}));
        let all_set = map(json!({"a": 1, "b": "two"}));
        assert_eq!(
            values_json(&RawObject::from_map(&all_set)),
            r#"{"a":1,"b":"two"}"#
        );
        assert_eq!(values_json(&RawObject::default()), "{}");
    }
}
