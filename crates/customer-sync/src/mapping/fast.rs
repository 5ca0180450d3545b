//! The mapping's fast path: a record's traits written straight into JSON
//! text, in the order a `serde_json::Map` keeps them (keys sorted at every
//! level), without a `serde_json::Value` tree or an allocation per field.
//!
//! [`Mapping::apply`] stays the reference: a record the fast path cannot
//! take as it is (a key outside the header, a key twice, any error) goes
//! through `apply` and its map is serialised, so every result and every
//! error is exactly `apply`'s. In unit tests, `apply` checks that the fast
//! path agrees with it on every record it maps.

use std::cell::RefCell;
use std::collections::BTreeMap;

use segment_client::{Identity, JsonKey, ObjectWriter, PreparedEvent, RawObject, SegmentError};
use serde_json::Value;

use super::apply::{Slot, identity_value};
use super::convert::{convert, is_rendered_timestamp};
use super::infer::TraitPath;
use super::sample::strict;
use super::{Action, Column, MappedCustomer, Mapping, NullPolicy, Rule, UnmappedPolicy, ValueType};
use crate::{Field, FieldValue, Record, RecordError};

/// One record, mapped, with its traits as JSON text: what a sync sends.
///
/// `traits` is the same object as [`MappedCustomer::traits`] (the same
/// JSON text as `serde_json` writes for that map), so per top-level trait
/// there is a name and a value's JSON text:
/// [`RawObject::fields`], [`RawObject::get`], and
/// [`RawObject::subset`] for an object of some of them.
///
/// # Example
/// ```
/// use customer_sync::mapping::Mapping;
/// use customer_sync::{Field, FieldValue, Location, Record};
///
/// let header = ["customer_id", "email", "zip"];
/// let mapping = Mapping::new(None, &header)?;
/// let record = Record {
///     location: Location::new("customers.csv", 2),
///     fields: header
///         .iter()
///         .zip(["c1", "ada@example.com", "N1 9GU"])
///         .map(|(name, value)| Field { name: (*name).into(), value: FieldValue::Text(value.into()) })
///         .collect(),
/// };
/// let mapped = mapping.apply_json(&record)?;
/// assert_eq!(mapped.traits.json(), r#"{"address":{"postalCode":"N1 9GU"},"email":"ada@example.com"}"#);
/// assert_eq!(mapped.traits.get("email"), Some(r#""ada@example.com""#));
/// let event = mapped.to_event()?;
/// assert!(std::str::from_utf8(event.json())?.contains(r#""userId":"c1""#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MappedJson {
    /// As [`MappedCustomer::identity`].
    pub identity: Identity,
    /// The traits in Segment's wire form, as one JSON object.
    pub traits: RawObject,
    /// As [`MappedCustomer::member`].
    pub member: Option<Identity>,
}

impl From<MappedCustomer> for MappedJson {
    fn from(customer: MappedCustomer) -> Self {
        Self {
            identity: customer.identity,
            traits: RawObject::from_map(&customer.traits),
            member: customer.member,
        }
    }
}

impl MappedJson {
    /// The validated, serialised call for this record: an identify, or in a
    /// group mapping a group call; the event [`MappedCustomer::into_message`]
    /// makes, but for `messageId` and `timestamp`.
    ///
    /// # Errors
    /// `invalid_payload` or `payload_too_large`, as
    /// [`PreparedEvent::new`] says.
    pub fn to_event(&self) -> Result<PreparedEvent, SegmentError> {
        match &self.member {
            None => PreparedEvent::identify_raw(self.identity.clone(), &self.traits),
            // Group mappings are rare: they take the general path.
            Some(member) => PreparedEvent::new(
                MappedCustomer {
                    identity: self.identity.clone(),
                    traits: self.traits.to_map(),
                    member: Some(member.clone()),
                }
                .into_message(),
            ),
        }
    }
}

/// One step of writing a record's traits: the trait paths of the header's
/// columns and of the constants as a tree, walked in key order. Keys are
/// escaped once, here, not for every record.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Step {
    Open(JsonKey),
    Close,
    Column { column: usize, key: JsonKey },
    Constant { key: JsonKey, value: Value },
}

/// The steps for `columns` and `constants`; `None` if their paths collide
/// (resolution refuses that, so it cannot happen: then `apply` does all).
pub(super) fn plan(columns: &[Column], constants: &[(TraitPath, Value)]) -> Option<Vec<Step>> {
    enum Node {
        Column(usize),
        Constant(Value),
        Group(BTreeMap<Box<str>, Node>),
    }
    fn insert(tree: &mut BTreeMap<Box<str>, Node>, path: &[Box<str>], leaf: Node) -> Option<()> {
        let (last, parents) = path.split_last()?;
        let mut tree = tree;
        for segment in parents {
            let node = tree
                .entry(segment.clone())
                .or_insert_with(|| Node::Group(BTreeMap::new()));
            match node {
                Node::Group(inner) => tree = inner,
                _ => return None,
            }
        }
        match tree.insert(last.clone(), leaf) {
            None => Some(()),
            Some(_) => None,
        }
    }
    fn walk(tree: BTreeMap<Box<str>, Node>, steps: &mut Vec<Step>) {
        for (key, node) in tree {
            match node {
                Node::Column(column) => steps.push(Step::Column {
                    column,
                    key: JsonKey::new(&key),
                }),
                Node::Constant(value) => steps.push(Step::Constant {
                    key: JsonKey::new(&key),
                    value,
                }),
                Node::Group(inner) => {
                    steps.push(Step::Open(JsonKey::new(&key)));
                    walk(inner, steps);
                    steps.push(Step::Close);
                }
            }
        }
    }
    let mut tree = BTreeMap::new();
    for (path, value) in constants {
        insert(&mut tree, path, Node::Constant(value.clone()))?;
    }
    for (i, column) in columns.iter().enumerate() {
        if let Action::Trait(rule) = &column.action {
            insert(&mut tree, &rule.path, Node::Column(i))?;
        }
    }
    let mut steps = Vec::new();
    walk(tree, &mut steps);
    Some(steps)
}

/// Marks a column without a field in the record at hand.
const ABSENT: u32 = u32::MAX;

thread_local! {
    /// Per column, the index of its field in the record being mapped.
    static FIELDS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// Writes each record's traits, in the buffers of a record given back
    /// with [`Mapping::recycle`] (a fresh object per record cost four
    /// allocations).
    static TRAITS: RefCell<ObjectWriter> = RefCell::new(ObjectWriter::with_capacity(0));
}

impl Mapping {
    /// Maps one record as [`apply`](Self::apply) does, with the traits
    /// written as JSON text directly: the form a sync sends, at a fraction
    /// of the cost of building a `serde_json::Map`.
    ///
    /// # Errors
    /// Exactly those of [`apply`](Self::apply).
    pub fn apply_json(&self, record: &Record) -> Result<MappedJson, RecordError> {
        match self.apply_fast(record) {
            Some(mapped) => Ok(mapped),
            None => self.apply(record).map(MappedJson::from),
        }
    }

    /// The fast path; `None` when the record needs `apply` (see the module docs).
    pub(super) fn apply_fast(&self, record: &Record) -> Option<MappedJson> {
        let steps = self.steps.as_deref()?;
        FIELDS.with_borrow_mut(|fields| {
            fields.clear();
            fields.resize(self.columns.len(), ABSENT);
            for (i, field) in record.fields.iter().enumerate() {
                match self.column_index(i, field) {
                    Some(column) if fields[column] == ABSENT => {
                        fields[column] = u32::try_from(i).ok()?;
                    }
                    Some(_) => return None,
                    None if self.unmapped == UnmappedPolicy::Drop
                        || field.name.trim().is_empty() => {}
                    None => return None,
                }
            }
            let field = |column: usize| -> Option<&Field> {
                let at = *fields.get(column)?;
                (at != ABSENT).then(|| &record.fields[at as usize])
            };
            let slot = |column: Option<usize>| match column.and_then(field) {
                Some(field) => identity_value(record, field).ok(),
                None => Some(Slot::Absent),
            };
            let (user_id, anonymous_id, group_id) = (
                slot(self.user_id)?,
                slot(self.anonymous_id)?,
                slot(self.group_id)?,
            );
            let (identity, member) = self.subject(record, user_id, anonymous_id, group_id).ok()?;
            let traits = TRAITS.with_borrow_mut(|traits| {
                traits.clear();
                for step in steps {
                    match step {
                        Step::Open(key) => traits.open(key),
                        Step::Close => traits.close(),
                        Step::Constant { key, value } => traits.value(key, value),
                        Step::Column { column, key } => {
                            let (Some(field), Action::Trait(rule)) =
                                (field(*column), &self.columns[*column].action)
                            else {
                                continue;
                            };
                            write_trait(traits, key, field, rule)?;
                        }
                    }
                }
                Some(traits.take())
            })?;
            Some(MappedJson {
                identity,
                traits,
                member,
            })
        })
    }

    /// Gives back the traits of a record [mapped](Self::apply_json) and
    /// sent, for the next record on this thread to be written in.
    ///
    /// # Example
    /// ```
    /// use customer_sync::mapping::Mapping;
    /// use customer_sync::{Field, FieldValue, Location, Record};
    ///
    /// let mapping = Mapping::new(None, &["customer_id", "plan"])?;
    /// let record = |line, id: &str, plan: &str| Record {
    ///     location: Location::new("customers.csv", line),
    ///     fields: [("customer_id", id), ("plan", plan)]
    ///         .map(|(name, value)| Field {
    ///             name: name.into(),
    ///             value: FieldValue::Text(value.into()),
    ///         })
    ///         .into(),
    /// };
    /// let first = mapping.apply_json(&record(2, "c1", "free"))?;
    /// mapping.recycle(first.traits);
    /// let second = mapping.apply_json(&record(3, "c2", "pro"))?;
    /// assert_eq!(second.traits.json(), r#"{"plan":"pro"}"#);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recycle(&self, traits: RawObject) {
        TRAITS.with_borrow_mut(|writer| writer.recycle(traits));
    }
}

/// Writes one field's trait as `put` would insert it; `None` on any error
/// (`apply` then says which).
fn write_trait(traits: &mut ObjectWriter, key: &JsonKey, field: &Field, rule: &Rule) -> Option<()> {
    if field.value.is_empty() {
        if rule.null == NullPolicy::Null {
            traits.null(key);
        }
        return Some(());
    }
    match (&field.value, rule.ty) {
        (
            FieldValue::Text(text) | FieldValue::Json(Value::String(text)),
            Some(ValueType::Timestamp),
        ) if rule.format.is_none() && is_rendered_timestamp(text) => traits.string(key, text),
        (FieldValue::Text(text), Some(ty)) if rule.inferred => {
            traits.value(key, &strict(text, ty)?)
        }
        // Strings go as they are, without a copy.
        (FieldValue::Text(text), None | Some(ValueType::String))
        | (FieldValue::Json(Value::String(text)), None | Some(ValueType::String)) => {
            traits.string(key, text);
        }
        (FieldValue::Json(value), None) => traits.value(key, value),
        (value, ty) => traits.value(key, &convert(value, ty, rule.format.as_deref()).ok()?),
    }
    Some(())
}

/// For unit tests: the fast path gives what `apply` gave, whenever it
/// takes the record.
#[cfg(test)]
pub(super) fn check_agrees(
    mapping: &Mapping,
    record: &Record,
    applied: &Result<MappedCustomer, RecordError>,
) {
    let fast = mapping.apply_fast(record);
    match (applied, fast) {
        (Ok(customer), Some(fast)) => {
            assert_eq!(fast.identity, customer.identity, "{record:?}");
            assert_eq!(fast.member, customer.member, "{record:?}");
            assert_eq!(
                fast.traits.json(),
                serde_json::to_string(&customer.traits).unwrap(),
                "{record:?}"
            );
        }
        (Err(error), Some(fast)) => {
            panic!("apply failed ({error}) where the fast path gave {fast:?} for {record:?}")
        }
        (_, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::Location;
    use crate::mapping::MappingSpec;

    fn record(fields: &[(&str, FieldValue)]) -> Record {
        Record {
            location: Location::new("c.csv", 2),
            fields: fields
                .iter()
                .map(|(name, value)| Field {
                    name: Arc::from(*name),
                    value: value.clone(),
                })
                .collect(),
        }
    }

    #[test]
    fn header_records_take_the_fast_path_and_others_do_not() {
        let text = |t: &str| FieldValue::Text(t.into());
        let spec = MappingSpec::from_toml(
            "[columns]\nltv = { trait = \"billing.ltv\", type = \"float\" }\n\
             [constants]\nbilling.currency = \"EUR\"\nsource = { a = 1 }\n",
        )
        .unwrap();
        let header = ["id", "email", "zip", "city", "ltv", "created_at"];
        let mapping = Mapping::new(Some(&spec), &header).unwrap();
        let full = record(&[
            ("id", text("c1")),
            ("email", text("a@b.c")),
            ("zip", text("")),
            ("city", text("London")),
            ("ltv", text("12.50")),
            ("created_at", text("2024-05-01")),
        ]);
        let fast = mapping.apply_fast(&full).expect("the fast path");
        assert_eq!(
            fast.traits.json(),
            r#"{"address":{"city":"London"},"billing":{"currency":"EUR","ltv":12.5},"createdAt":"2024-05-01T00:00:00Z","email":"a@b.c","source":{"a":1}}"#
        );
        assert_eq!(mapping.apply_json(&full).unwrap(), fast);

        // A key outside the header, and a bad value: `apply` decides.
        let wider = record(&[("id", text("c1")), ("extra", text("x"))]);
        assert!(mapping.apply_fast(&wider).is_none());
        assert_eq!(
            mapping.apply_json(&wider).unwrap().traits.get("extra"),
            Some(r#""x""#)
        );
        let bad = record(&[("id", text("c1")), ("ltv", text("abc"))]);
        assert!(mapping.apply_fast(&bad).is_none());
        assert_eq!(
            mapping.apply_json(&bad).unwrap_err(),
            mapping.apply(&bad).unwrap_err()
        );
        // JSON values, in another key order than the header.
        let json_record = record(&[
            ("email", FieldValue::Json(json!("a@b.c"))),
            ("id", FieldValue::Json(json!(7))),
            (
                "city",
                FieldValue::Json(json!({"name": "London", "a": [1]})),
            ),
        ]);
        let fast = mapping.apply_fast(&json_record).expect("the fast path");
        assert_eq!(fast.identity, Identity::user("7"));
        // `city` is a reserved string trait: JSON is sent as its text.
        assert_eq!(
            fast.traits.get("address"),
            Some(r#"{"city":"{\"a\":[1],\"name\":\"London\"}"}"#)
        );
        assert_eq!(MappedJson::from(mapping.apply(&json_record).unwrap()), fast);
    }

    #[test]
    fn recycled_traits_are_written_over_and_a_record_given_up_midway_leaves_nothing() {
        let spec = MappingSpec::from_toml(
            "[columns]\nltv = { trait = \"billing.ltv\", type = \"float\" }\n",
        )
        .unwrap();
        let mapping = Mapping::new(Some(&spec), &["id", "city", "ltv", "plan"]).unwrap();
        let text = |s: &str| FieldValue::Text(s.into());
        let customer = |id: &str, ltv: &str| {
            record(&[
                ("id", text(id)),
                ("city", text("London")),
                ("ltv", text(ltv)),
                ("plan", text("pro")),
            ])
        };
        let ids = ["c1", "c2", "c3", "c4"];
        // (`apply` runs the fast path too in tests: all of it before.)
        let expected: Vec<_> = (ids.iter())
            .map(|id| serde_json::to_string(&mapping.apply(&customer(id, "1.5")).unwrap().traits))
            .collect::<Result<_, _>>()
            .unwrap();
        let (mut buffers, mut held) = (Vec::new(), Vec::new());
        for (id, expected) in ids.into_iter().zip(expected) {
            // Given up midway, at `ltv` (not a number) inside `billing`.
            assert!(mapping.apply_fast(&customer(id, "abc")).is_none());
            let mapped = mapping
                .apply_fast(&customer(id, "1.5"))
                .expect("the fast path");
            assert_eq!(mapped.traits.json(), expected, "{id}");
            buffers.push(mapped.traits.json().as_ptr());
            let size = mapped.traits.json().len();
            mapping.recycle(mapped.traits);
            // Were the buffer dropped instead, this would take its memory
            // and the next record would get another.
            held.push(Vec::<u8>::with_capacity(size));
        }
        // Two buffers take turns: nothing is allocated after the first two.
        assert_eq!((buffers[2], buffers[3]), (buffers[0], buffers[1]));
    }
}
