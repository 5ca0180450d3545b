//! Applying a resolved [`Mapping`] to one record.

use serde_json::map::Entry;
use serde_json::{Map, Value};

use segment_client::{GroupParams, IdentifyParams, Identity, Message, UserTraits};

use super::convert::{convert, format_advice, quoted};
use super::infer::display;
use super::render::toml_key;
use super::sample::strict;
use super::{Action, Column, Mapping, NullPolicy, Rule, UnmappedPolicy, ValueType, default_rule};
use crate::state::needs_escape;
use crate::{Field, FieldValue, Record, RecordError, RecordErrorKind};

/// One record, mapped: who it is about and the traits to send.
///
/// # Example
/// ```
/// use customer_sync::mapping::MappedCustomer;
/// use segment_client::Identity;
///
/// let mut traits = serde_json::Map::new();
/// traits.insert("email".into(), "ada@example.com".into());
/// let params = MappedCustomer { identity: Identity::user("c1"), traits, member: None }.into_params();
/// assert_eq!(params.traits.custom["email"], "ada@example.com");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MappedCustomer {
    /// The customer's `userId` and/or `anonymousId`: what the state and the
    /// reports key on. In a group mapping, the group id, as a `userId`.
    pub identity: Identity,
    /// The traits in Segment's wire form: wire names (`firstName`,
    /// `company.employee_count`), nested objects for dotted paths, `null`
    /// for traits to unset.
    pub traits: Map<String, Value>,
    /// In a group mapping (`[identity] group_id`), the member the group
    /// call is sent for; `None` for an identify mapping.
    pub member: Option<Identity>,
}

impl MappedCustomer {
    /// The call for this record: an identify, or in a group mapping a
    /// group call (`groupId` from [`identity`](Self::identity), the
    /// member's ids, the traits as group traits).
    pub fn into_message(self) -> Message {
        match self.member {
            Some(member) => {
                let group_id = self.identity.user_id().unwrap_or_default().to_owned();
                GroupParams::new(member, group_id)
                    .with_traits(self.traits)
                    .into()
            }
            None => self.into_params().into(),
        }
    }

    /// The identify parameters for this customer.
    ///
    /// The traits go into [`UserTraits::custom`] under their wire names,
    /// reserved ones included: they serialise identically to the typed
    /// fields without a conversion per record.
    pub fn into_params(self) -> IdentifyParams {
        let traits = UserTraits {
            custom: self.traits,
            ..UserTraits::default()
        };
        IdentifyParams::new(self.identity).with_traits(traits)
    }
}

impl Mapping {
    /// Maps one record to an identity and its traits.
    ///
    /// # Errors
    /// A [`RecordError`] at `record.location`, naming the column; a
    /// problem with the identity wins over one with a trait:
    /// [`MissingIdentity`](RecordErrorKind::MissingIdentity) when every
    /// identity column is absent or empty;
    /// [`InvalidValue`](RecordErrorKind::InvalidValue) when a value does not
    /// convert to its type (`"abc" is not an integer`), when an identity value
    /// is not a string or number or holds a control character (a NUL, a
    /// line break), or when a record key outside the header
    /// would write a trait another column already writes.
    pub fn apply(&self, record: &Record) -> Result<MappedCustomer, RecordError> {
        let applied = self.apply_map(record);
        #[cfg(test)]
        super::fast::check_agrees(self, record, &applied);
        applied
    }

    fn apply_map(&self, record: &Record) -> Result<MappedCustomer, RecordError> {
        let mut traits = self.base.clone();
        let mut slots = IdentitySlots::default();
        for (i, field) in record.fields.iter().enumerate() {
            let Some(column) = self.column(i, field) else {
                self.apply_unknown(record, field, &mut traits)
                    .map_err(|e| self.identity_first(record, e))?;
                continue;
            };
            slots.read(column, record, field)?;
            if let Action::Trait(rule) = &column.action {
                put(record, field, rule, &mut traits)
                    .map_err(|e| self.identity_first(record, e))?;
            }
        }
        let (identity, member) = slots.subject(self, record)?;
        Ok(MappedCustomer {
            identity,
            traits,
            member,
        })
    }

    /// The record's identity and a fingerprint of everything the mapping
    /// reads from it, without mapping it: a 64-bit hash of this mapping and
    /// of each column it uses with its raw value, independent of column
    /// order. Equal fingerprints mean equal payloads, so an incremental sync
    /// can skip an unchanged record before paying for [`apply`](Self::apply).
    ///
    /// # Errors
    /// As for [`apply`](Self::apply), for the identity columns only.
    pub fn fingerprint(&self, record: &Record) -> Result<(Identity, u64), RecordError> {
        let mut slots = IdentitySlots::default();
        let mut sum = self.fingerprint;
        HASHED.with_borrow_mut(|bytes| {
            for (i, field) in record.fields.iter().enumerate() {
                let column = self.column(i, field);
                match column {
                    Some(column) => {
                        slots.read(column, record, field)?;
                        if matches!(column.action, Action::Drop(_)) {
                            continue;
                        }
                    }
                    None if self.unmapped == UnmappedPolicy::Drop => continue,
                    None => {}
                }
                // A sum of per-field hashes does not depend on column order.
                sum = sum.wrapping_add(field_hash_in(bytes, field));
            }
            Ok(())
        })?;
        let (identity, _) = slots.subject(self, record)?;
        Ok((identity, sum))
    }

    /// The record's identity alone, without mapping or hashing the rest:
    /// for the first pass that finds repeated identities, and a first dry
    /// run with a state.
    pub(crate) fn identity_of(&self, record: &Record) -> Result<Identity, RecordError> {
        let mut slots = IdentitySlots::default();
        let identity_columns = [self.user_id, self.anonymous_id, self.group_id];
        for (i, field) in record.fields.iter().enumerate() {
            // Only identity columns are read: most fields end at the lookup.
            let Some(column) = self.column_index(i, field) else {
                continue;
            };
            if identity_columns.contains(&Some(column)) {
                slots.read(&self.columns[column], record, field)?;
            }
        }
        slots.subject(self, record).map(|(identity, _)| identity)
    }

    /// What the record is keyed on, and the member of a group mapping: the
    /// customer's identity, or the group id (as a `userId`) and the member's.
    pub(super) fn subject(
        &self,
        record: &Record,
        user_id: Slot,
        anonymous_id: Slot,
        group_id: Slot,
    ) -> Result<(Identity, Option<Identity>), RecordError> {
        let Some(column) = self.group_id else {
            return Ok((self.identity(record, user_id, anonymous_id)?, None));
        };
        let Slot::Value(group_id) = group_id else {
            let name = &*self.columns[column].name;
            return Err(RecordError::new(
                record.location.clone(),
                RecordErrorKind::MissingIdentity,
                format!("group id column `{name}` is {}", group_id.what()),
            )
            .with_field(name));
        };
        let member = self.identity(record, user_id, anonymous_id)?;
        Ok((Identity::UserId(group_id), Some(member)))
    }

    /// A trait's error, unless the record's identity is wrong too: then
    /// the identity's, the one [`fingerprint`](Self::fingerprint) and
    /// [`identity_of`](Self::identity_of) give before any trait is read, so
    /// one row gets one diagnosis whether or not a state or a pre-read
    /// looked at it first. Only paid for a record that fails.
    fn identity_first(&self, record: &Record, trait_error: RecordError) -> RecordError {
        self.identity_of(record).err().unwrap_or(trait_error)
    }

    /// The column rule for the `i`th field: by position when the record
    /// follows the header (the common case for CSV, one string comparison),
    /// else by name.
    fn column(&self, i: usize, field: &Field) -> Option<&Column> {
        self.column_index(i, field).map(|j| &self.columns[j])
    }

    /// The index of the `i`th field's column, as [`column`](Self::column).
    #[inline]
    pub(super) fn column_index(&self, i: usize, field: &Field) -> Option<usize> {
        match self.columns.get(i) {
            Some(c) if crate::record::same_name(&c.name, &field.name) => Some(i),
            _ => self.by_name.get(&*field.name).copied(),
        }
    }

    fn identity(
        &self,
        record: &Record,
        user_id: Slot,
        anonymous_id: Slot,
    ) -> Result<Identity, RecordError> {
        Ok(match (user_id, anonymous_id) {
            (Slot::Value(user_id), Slot::Value(anonymous_id)) => Identity::Both {
                user_id,
                anonymous_id,
            },
            (Slot::Value(id), _) => Identity::UserId(id),
            (_, Slot::Value(id)) => Identity::AnonymousId(id),
            (user, anonymous) => return Err(self.missing_identity(record, user, anonymous)),
        })
    }

    /// A record key the header did not have (NDJSON): the unmapped policy
    /// with the default rules, computed on the spot. That is a few string
    /// comparisons, rare enough not to need a cache.
    fn apply_unknown(
        &self,
        record: &Record,
        field: &Field,
        traits: &mut Map<String, Value>,
    ) -> Result<(), RecordError> {
        if self.unmapped == UnmappedPolicy::Drop || field.name.trim().is_empty() {
            return Ok(());
        }
        let rule = default_rule(&field.name, self.null, |p| self.is_taken(p)).map_err(|path| {
            RecordError::new(
                record.location.clone(),
                RecordErrorKind::InvalidValue,
                format!(
                    "key is not in the header and trait `{}` is already mapped from another column",
                    display(&path)
                ),
            )
            .with_field(&*field.name)
        })?;
        put(record, field, &rule, traits)
    }

    fn missing_identity(&self, record: &Record, user: Slot, anonymous: Slot) -> RecordError {
        let name = |i: Option<usize>| i.map(|i| &*self.columns[i].name);
        let (field, message) = match (name(self.user_id), name(self.anonymous_id)) {
            (Some(u), Some(a)) => (
                u,
                format!(
                    "no identity: `{u}` is {} and `{a}` is {}",
                    user.what(),
                    anonymous.what()
                ),
            ),
            (Some(u), None) => (u, format!("identity column `{u}` is {}", user.what())),
            (None, Some(a)) => (a, format!("identity column `{a}` is {}", anonymous.what())),
            // `Mapping::new` refuses a header without an identity column;
            // answer with a record error rather than a panic all the same.
            (None, None) => ("", "no identity column".to_owned()),
        };
        RecordError::new(
            record.location.clone(),
            RecordErrorKind::MissingIdentity,
            message,
        )
        .with_field(field)
    }
}

/// An identity column's value in one record.
#[derive(Default)]
pub(super) enum Slot {
    #[default]
    Absent,
    Empty,
    Value(String),
}

/// The identity columns' values in one record, read field by field.
#[derive(Default)]
struct IdentitySlots {
    user_id: Slot,
    anonymous_id: Slot,
    group_id: Slot,
}

impl IdentitySlots {
    /// Reads `field` into each slot its column is the identity column of.
    #[inline]
    fn read(&mut self, column: &Column, record: &Record, field: &Field) -> Result<(), RecordError> {
        if column.user_id {
            self.user_id = identity_value(record, field)?;
        }
        if column.anonymous_id {
            self.anonymous_id = identity_value(record, field)?;
        }
        if column.group_id {
            self.group_id = identity_value(record, field)?;
        }
        Ok(())
    }

    /// [`Mapping::subject`] of these values.
    fn subject(
        self,
        mapping: &Mapping,
        record: &Record,
    ) -> Result<(Identity, Option<Identity>), RecordError> {
        mapping.subject(record, self.user_id, self.anonymous_id, self.group_id)
    }
}

impl Slot {
    fn what(&self) -> &'static str {
        match self {
            Slot::Absent => "missing",
            _ => "empty",
        }
    }
}

thread_local! {
    /// The bytes [`field_hash_in`] hashes, reused: a buffer per field cost
    /// an allocation and a free each.
    static HASHED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A field's name and raw value, hashed for [`Mapping::fingerprint`],
/// written into `bytes` first. These bytes are stored in states through
/// the fingerprint: they must never change.
#[inline]
fn field_hash_in(bytes: &mut Vec<u8>, field: &Field) -> u64 {
    bytes.clear();
    bytes.extend_from_slice(field.name.as_bytes());
    match &field.value {
        FieldValue::Text(text) => {
            bytes.push(0);
            bytes.extend_from_slice(text.as_bytes());
        }
        // A string serde_json writes without an escape, written as it
        // would, without its per-byte table.
        FieldValue::Json(Value::String(text)) if !needs_escape(text.as_bytes()) => {
            bytes.extend_from_slice(b"\x01\"");
            bytes.extend_from_slice(text.as_bytes());
            bytes.push(b'"');
        }
        FieldValue::Json(value) => {
            bytes.push(1);
            // Writing into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *bytes, value);
        }
    }
    xxhash_rust::xxh3::xxh3_64(bytes)
}

pub(super) fn identity_value(record: &Record, field: &Field) -> Result<Slot, RecordError> {
    let id = match &field.value {
        FieldValue::Text(text) => text.trim(),
        FieldValue::Json(Value::String(text)) => text.trim(),
        FieldValue::Json(Value::Null) => "",
        // NDJSON ids are often numbers; Segment wants strings.
        FieldValue::Json(Value::Number(n)) => return Ok(Slot::Value(n.to_string())),
        FieldValue::Json(other) => {
            return Err(RecordError::new(
                record.location.clone(),
                RecordErrorKind::InvalidValue,
                format!("an identity must be a string or a number, not {other}"),
            )
            .with_field(&*field.name));
        }
    };
    if let Some((at, c)) = id.chars().enumerate().find(|(_, c)| c.is_control()) {
        // A NUL or a line break in an id splits one customer into several
        // downstream, or breaks tools that read ids as text lines.
        return Err(RecordError::new(
            record.location.clone(),
            RecordErrorKind::InvalidValue,
            format!(
                "an identity must not contain control characters; U+{:04X} is at character {}",
                u32::from(c),
                at + 1
            ),
        )
        .with_field(&*field.name));
    }
    Ok(if id.is_empty() {
        Slot::Empty
    } else {
        Slot::Value(id.to_owned())
    })
}

fn put(
    record: &Record,
    field: &Field,
    rule: &Rule,
    traits: &mut Map<String, Value>,
) -> Result<(), RecordError> {
    let error = |kind, message: String| {
        RecordError::new(record.location.clone(), kind, message).with_field(&*field.name)
    };
    let value = if field.value.is_empty() {
        match rule.null {
            NullPolicy::Omit => return Ok(()),
            NullPolicy::Null => Value::Null,
        }
    } else {
        match (&field.value, rule.ty) {
            (FieldValue::Text(text), Some(ty)) if rule.inferred => strict(text, ty)
                .ok_or_else(|| error(RecordErrorKind::InvalidValue, misfit(text, ty)))?,
            (value, ty) => convert(value, ty, rule.format.as_deref()).map_err(|message| {
                let message = match (value, ty) {
                    // A date in another form: say how to read it.
                    (FieldValue::Text(text), Some(ValueType::Timestamp))
                        if rule.format.is_none() =>
                    {
                        let advice = format_advice(text, &field.name, &toml_key(&field.name));
                        format!("{message}; {advice}")
                    }
                    _ => message,
                };
                error(RecordErrorKind::InvalidValue, message)
            })?,
        }
    };
    if insert(traits, &rule.path, value) {
        Ok(())
    } else {
        // Only reachable when a record repeats a key, or a key outside the
        // header collides with another such key: header paths never overlap.
        Err(error(
            RecordErrorKind::InvalidValue,
            format!("trait `{}` is set twice", display(&rule.path)),
        ))
    }
}

/// Why a value does not fit its column's inferred type, and how to pin another.
fn misfit(text: &str, ty: ValueType) -> String {
    let what = match ty {
        ValueType::Boolean => "true or false",
        ValueType::Integer => "an integer without leading zeros",
        ValueType::Float => "a plain decimal number",
        ValueType::Timestamp => "a YYYY-MM-DD timestamp",
        ValueType::String | ValueType::Json => "its type",
    };
    format!(
        "{} is not {what}, the type `{ty}` inferred for this column from the first rows; \
         pin the column's type in a mapping file (e.g. type = \"string\") to accept it",
        quoted(text)
    )
}

/// Inserts `value` at `path`, creating nested objects; `false` (and no change
/// at the leaf) if the place is already taken.
pub(super) fn insert(map: &mut Map<String, Value>, path: &[Box<str>], value: Value) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut map = map;
    for segment in parents {
        if !map.contains_key(&**segment) {
            map.insert(segment.to_string(), Value::Object(Map::new()));
        }
        match map.get_mut(&**segment) {
            Some(Value::Object(inner)) => map = inner,
            _ => return false,
        }
    }
    match map.entry(last.to_string()) {
        Entry::Vacant(slot) => {
            slot.insert(value);
            true
        }
        Entry::Occupied(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `field_hash` as first written, a buffer per call: fingerprints are
    /// stored in states, so the bytes hashed must never change.
    fn field_hash_as_before(field: &Field) -> u64 {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(field.name.as_bytes());
        match &field.value {
            FieldValue::Text(text) => {
                bytes.push(0);
                bytes.extend_from_slice(text.as_bytes());
            }
            FieldValue::Json(value) => {
                bytes.push(1);
                let _ = serde_json::to_writer(&mut bytes, value);
            }
        }
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }

    #[test]
    fn field_hashes_are_what_they_were() {
        let fields = [
            ("email", FieldValue::Text("a@b.c".into())),
            ("", FieldValue::Text(String::new())),
            (
                "n",
                FieldValue::Json(serde_json::json!({"b": [1, 2.5, null], "a": "é"})),
            ),
            ("long", FieldValue::Text("x".repeat(500))),
            ("s", FieldValue::Json(serde_json::json!("a@b.c"))),
            (
                "e",
                FieldValue::Json(serde_json::json!("q\"b\\s\u{1}\u{7f}é😀")),
            ),
            ("e", FieldValue::Json(serde_json::json!(""))),
        ];
        for (name, value) in fields {
            let field = Field {
                name: name.into(),
                value,
            };
            assert_eq!(
                field_hash_in(&mut Vec::new(), &field),
                field_hash_as_before(&field),
                "{field:?}"
            );
        }
    }
}
