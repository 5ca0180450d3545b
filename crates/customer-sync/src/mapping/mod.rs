//! Mapping: how a source [`Record`] becomes a Segment identify call.
//!
//! A [`Mapping`] is resolved once per input, from the input's header and an
//! optional mapping file ([`MappingSpec`]), and then [applied](Mapping::apply)
//! to every record. Everything that can be checked without records (unknown
//! keys, a column the header lacks, two columns writing one trait, no
//! identity column) fails in [`Mapping::new`] with a [`MappingError`], before
//! any record is read; a bad value fails only its record, with a
//! [`RecordError`] naming the line and column.
//!
//! # Default mapping (no mapping file)
//!
//! Column names are matched ignoring case, `_`, `-`, `.` and spaces, so
//! `First Name`, `first_name` and `firstName` are the same.
//!
//! - **Identity.** `userId` comes from the first of these present: `user_id`,
//!   `customer_id`, `id`, `uid`, `external_id`, `account_id`, `contact_id`,
//!   `member_id`; `anonymousId` from `anonymous_id`. At least one is
//!   required. Identity columns are not also sent as traits (so an `id`
//!   column used as the identity is not the `id` trait).
//! - **Reserved traits.** `first_name`/`given_name` → `firstName`;
//!   `last_name`/`surname`/`family_name` → `lastName`; `email`/`email_address`;
//!   `phone`/`phone_number`; `name`/`full_name`; `title`/`job_title`;
//!   `username`; `website`; `avatar`/`avatar_url`; `description`; `gender`;
//!   `id`; `age` (integer); `birthday`/`birth_date`/`date_of_birth`/`dob`
//!   (timestamp); `created_at`/`signup_date`/`signed_up_at` → `createdAt`
//!   (timestamp). Address parts, also with an `address_` prefix:
//!   `street`/`street_address`/`address` → `address.street`, `city`, `state`,
//!   `postal_code`/`postcode`/`zip`/`zip_code` → `address.postalCode`,
//!   `country`. Company: `company`/`company_name` → `company.name`,
//!   `company_id`, `industry`/`company_industry`,
//!   `employee_count`/`company_employee_count` → `company.employee_count`
//!   (integer; Segment spells it in snake_case), `company_plan`.
//!   If two columns would write the same trait, the first in the header gets
//!   it and the later one is sent under its own name.
//! - **Everything else** is a custom trait under the column's own name, with
//!   the value as the source gave it (JSON stays JSON), except that a CSV
//!   column whose first rows all hold booleans, integers, decimals or
//!   timestamps is sent as that type (see "Inferred types" below).
//! - **Empty values** (empty or blank text, JSON `null`, an empty JSON string)
//!   are left out, so Segment keeps what it has.
//!
//! `segment-sync mapping --print <SOURCE>` prints this resolved mapping
//! ([`Mapping::describe`]) and an equivalent mapping file
//! ([`Mapping::to_toml`]) to start from.
//!
//! # Mapping file
//!
//! A TOML file passed with `--mapping`. Every table is optional; unknown keys
//! are errors, reported with their line and column, and every problem of a
//! file is reported at once ([`MappingError::problems`]). A complete example:
//!
//! ```toml
//! # Which columns identify the customer. Without this table the identity is
//! # detected by name as above. Name one or both; when both are set, a record
//! # needs at least one of them non-empty.
//! [identity]
//! user_id = "Customer ID"
//! # anonymous_id = "Visitor"
//!
//! [options]
//! unmapped = "custom"  # columns not under [columns]: "custom" (default rules) or "drop"
//! null = "omit"        # empty values: "omit" the trait, or send "null" to unset it
//! duplicates = "last"  # one identity twice in an input: "last", "first" or "error"
//!
//! # One entry per column, keyed by its exact header name. A string is the trait
//! # path; a table may set `trait`, `type`, `format`, `null`, or `drop = true`.
//! [columns]
//! "E-mail" = "email"
//! "First Name" = "firstName"
//! signup = { trait = "createdAt", format = "%d/%m/%Y %H:%M" }
//! seats = { trait = "company.employee_count", type = "integer" }
//! plan = "billing.plan"                      # any dotted path nests
//! mrr = { trait = "billing.mrr", type = "float" }
//! newsletter = { type = "boolean" }          # trait by the default rules
//! phone = { null = "null" }                  # an empty phone unsets it
//! internal_notes = { drop = true }
//!
//! # The long form of an entry, handy for many settings.
//! [columns."Lifetime Value"]
//! trait = "ltv"
//! type = "float"
//!
//! # Sent with every record; any TOML value, nested tables nest.
//! [constants]
//! source = "crm-export"
//! billing.currency = "EUR"
//!
//! # Optional: `track` events when a customer is added, changed or removed
//! # (see `ChangeEvents`). Needs a state; not for group calls.
//! [events]
//! added = "Customer Created"    # properties: every trait with a value
//! changed = "Customer Updated"  # properties: the traits that changed (null: gone)
//! removed = "Customer Deleted"  # opt-in; properties: the traits Segment had
//! # identify = false            # send only the track events
//! ```
//!
//! Column settings:
//!
//! | key      | meaning | default |
//! |----------|---------|---------|
//! | `trait`  | trait path; dots nest (`address.city` → `{"address":{"city":..}}`); use Segment's wire names (`firstName`, `createdAt`, `company.employee_count`) | the default rules' trait for the column name |
//! | `type`   | `string`, `integer`, `float`, `boolean` (true/false, yes/no, 1/0, any case), `timestamp` (sent as `YYYY-MM-DDTHH:MM:SSZ`; accepts RFC 3339 with any offset, `YYYY-MM-DD HH:MM:SS` as UTC, `YYYY-MM-DD`, unix seconds), `json` (text parsed as JSON) | the reserved trait's type (`age`, `company.employee_count`: integer; `birthday`, `createdAt`: timestamp; other reserved traits: string); custom traits are sent as the source gave them |
//! | `format` | strftime format for a timestamp (`%d/%m/%Y`); implies `type = "timestamp"`; without `%z` the time is UTC | the forms above |
//! | `null`   | `omit` or `null` for this column's empty values | `[options] null` |
//! | `drop`   | `true` to never send this column | `false` |
//!
//! Rules: a column named under `[columns]` or `[identity]` must be in the
//! header (for NDJSON, the first record's keys; a later record without it
//! just lacks the value). Each trait path is written by one column or
//! constant only; a path inside another (`billing` and `billing.plan`)
//! counts as the same. A column may be both the identity and a trait when it
//! is also listed under `[columns]`. Record keys outside the header follow
//! `unmapped`.
//!
//! Values that do not convert fail their record as `invalid_value` (for
//! example `"abc" is not an integer`); a missing or empty identity, or one
//! with a control character, fails it as `missing_identity` or
//! `invalid_value`.
//!
//! # Inferred types
//!
//! [`Mapping::with_sample`] (which the command line uses, on up to
//! [`SAMPLE_RECORDS`] records read ahead) gives each CSV column without a
//! type the type all its sampled values agree on, strictly:
//!
//! | type        | every non-empty value is |
//! |-------------|--------------------------|
//! | `boolean`   | `true` or `false`, in any case |
//! | `integer`   | `-`? digits without a leading zero (`0` itself is fine), within ±2^53 |
//! | `float`     | an integer, or `-`? digits `.` digits without a leading zero or exponent, at most 15 significant digits |
//! | `timestamp` | `YYYY-MM-DD`, optionally with `T` or a space, `HH:MM:SS`, a fraction, and `Z` or an offset |
//!
//! Anything else keeps the column a string: a leading zero (`01234` is a
//! code), `yes`/`no` and `1`/`0` (codes too), unix seconds, a `+`, spaces
//! around the value, a mix of kinds (integers with decimals make decimals),
//! or no value in the sample. Every later value must fit the inferred type
//! by the same rules, or its record fails as `invalid_value` naming the
//! column; a value is never sent as another type than its column's.
//!
//! Decimals are sent as JSON numbers: `0.00` as `0.0`, `137.50` as `137.5`.
//! A JSON number carries no scale, so the trailing zeros are formatting,
//! not value; the 15-digit limit means no digit is ever changed. Pin
//! `type = "string"` for a column whose exact text matters.
//!
//! `mapping --print` marks inferred types, and [`Mapping::to_toml`] writes
//! them out, so they can be pinned or changed in a mapping file.

mod apply;
mod convert;
mod error;
pub(crate) mod events;
mod fast;
mod infer;
mod render;
mod sample;
mod spec;

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

pub use apply::MappedCustomer;
pub use error::{MappingError, MappingProblem};
pub use events::{ChangeEvents, ChangeKind};
pub use fast::MappedJson;
pub use sample::{SAMPLE_BYTES, SAMPLE_RECORDS};
pub use spec::{DuplicatePolicy, MappingSpec, NullPolicy, UnmappedPolicy, ValueType};

use infer::{TraitPath, default_path, display, implied_type, literal, normalize};
use spec::{ColumnSetting, overlaps};

use crate::Record;
#[cfg(doc)]
use crate::RecordError;

/// A mapping resolved for one header: what each column becomes, the identity
/// columns, the options and the constant traits.
///
/// Building one does all the name matching; [`apply`](Self::apply) then looks
/// a field's rule up by its position (records of one CSV file share the
/// header's order), checking the name, and only falls back to a name lookup
/// when the position does not match. It holds no interior mutability, so it
/// is `Send + Sync` and can be shared by reference across threads.
///
/// # Example
/// ```
/// use customer_sync::mapping::Mapping;
/// use customer_sync::{Field, FieldValue, Location, Record};
///
/// let header = ["customer_id", "E-mail", "zip", "plan"];
/// let mapping = Mapping::new(None, &header)?; // the default rules
///
/// let record = Record {
///     location: Location::new("customers.csv", 2),
///     fields: header
///         .iter()
///         .zip(["c1", "ada@example.com", "N1 9GU", "pro"])
///         .map(|(name, value)| Field {
///             name: (*name).into(),
///             value: FieldValue::Text(value.into()),
///         })
///         .collect(),
/// };
/// let customer = mapping.apply(&record)?;
/// assert_eq!(customer.identity.user_id(), Some("c1"));
/// assert_eq!(
///     serde_json::Value::Object(customer.traits),
///     serde_json::json!({
///         "email": "ada@example.com",
///         "address": {"postalCode": "N1 9GU"},
///         "plan": "pro",
///     })
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Mapping {
    /// One per header column, in header order.
    columns: Vec<Column>,
    by_name: HashMap<Box<str>, usize>,
    user_id: Option<usize>,
    anonymous_id: Option<usize>,
    /// The group id column of a group mapping (`[identity] group_id`).
    group_id: Option<usize>,
    unmapped: UnmappedPolicy,
    null: NullPolicy,
    duplicates: DuplicatePolicy,
    /// Constant traits as leaves, for `describe` and `to_toml`.
    constants: Vec<(TraitPath, Value)>,
    /// Constant traits, nested: every record's traits start as a copy.
    base: Map<String, Value>,
    /// Paths written by header columns and constants, and their proper
    /// prefixes: record keys outside the header must not collide with them.
    taken: HashSet<TraitPath>,
    taken_prefixes: HashSet<TraitPath>,
    /// How many records the column types were inferred from (0: none).
    sampled: usize,
    /// The fast path's plan: the trait paths in key order (see `fast`).
    steps: Option<Vec<fast::Step>>,
    /// A hash of the whole resolved mapping (its mapping-file form), the
    /// seed of every record's [`fingerprint`](Mapping::fingerprint): a changed
    /// mapping changes every fingerprint.
    fingerprint: u64,
    /// The `[events]` section, if any.
    events: Option<ChangeEvents>,
}

#[derive(Debug, Clone, PartialEq)]
struct Column {
    name: Box<str>,
    user_id: bool,
    anonymous_id: bool,
    group_id: bool,
    action: Action,
}

#[derive(Debug, Clone, PartialEq)]
enum Action {
    /// An identity column that is not also a trait.
    IdentityOnly,
    Drop(DropReason),
    Trait(Rule),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum DropReason {
    File,
    Unmapped,
    EmptyName,
}

#[derive(Debug, Clone, PartialEq)]
struct Rule {
    path: TraitPath,
    ty: Option<ValueType>,
    /// Whether `ty` was inferred from a sample of values: then every value
    /// must fit it strictly (see the `sample` module).
    inferred: bool,
    format: Option<Box<str>>,
    null: NullPolicy,
}

impl Mapping {
    /// Whether the default rules find an identity column among `columns`.
    pub fn detects_identity(columns: &[&str]) -> bool {
        infer::find_identity(columns, infer::USER_ID_COLUMNS).is_some()
            || infer::find_identity(columns, infer::ANONYMOUS_ID_COLUMNS).is_some()
    }

    /// Resolves `spec` (or, with `None`, the default rules) for an input whose
    /// header is `columns`. For NDJSON, pass the first record's keys.
    ///
    /// # Errors
    /// A [`MappingError`] when no identity column is found (naming the
    /// columns looked for, with a hint to use a mapping file), when the
    /// header names a column twice, when a column named in the mapping file
    /// is not in the header, or when two columns would write the same trait.
    /// Errors name the mapping file and line when there is one.
    pub fn new(spec: Option<&MappingSpec>, columns: &[&str]) -> Result<Mapping, MappingError> {
        let defaults = MappingSpec::default();
        let spec = spec.unwrap_or(&defaults);

        let mut by_name: HashMap<Box<str>, usize> = HashMap::with_capacity(columns.len());
        for (i, name) in columns.iter().enumerate() {
            if by_name.insert((*name).into(), i).is_some() {
                return Err(spec
                    .error(format!("column `{name}` appears twice in the header"), None)
                    .with_hint("rename one of them; the mapping cannot tell them apart"));
            }
        }
        let find = |name: &str, pos, what: &str| {
            by_name.get(name).copied().ok_or_else(|| {
                spec.error(format!("{what} `{name}` is not in the header"), pos)
                    .with_hint(header_hint(name, columns))
            })
        };

        // Every problem is noted and the resolution goes on, so that one run
        // reports them all.
        let mut problems: Vec<MappingError> = Vec::new();
        let (user_id, anonymous_id) =
            match &spec.identity {
                Some(identity) => (
                    identity.user_id.as_ref().and_then(|n| {
                        noted(&mut problems, find(&n.name, n.pos, "identity column"))
                    }),
                    identity.anonymous_id.as_ref().and_then(|n| {
                        noted(&mut problems, find(&n.name, n.pos, "identity column"))
                    }),
                ),
                None => {
                    // A group id is only ever named, never guessed.
                    let user = infer::find_identity(columns, infer::USER_ID_COLUMNS);
                    let anonymous = infer::find_identity(columns, infer::ANONYMOUS_ID_COLUMNS);
                    if user.is_none() && anonymous.is_none() {
                        return Err(no_identity(spec, columns));
                    }
                    (user, anonymous)
                }
            };

        let group_id = spec
            .identity
            .as_ref()
            .and_then(|identity| identity.group_id.as_ref())
            .and_then(|n| noted(&mut problems, find(&n.name, n.pos, "group id column")));

        // Paths are claimed in priority order: constants, then the mapping
        // file's columns, then the default rules in header order.
        let mut claimed: Vec<(TraitPath, String)> = spec
            .constants
            .iter()
            .map(|(path, _)| (path.clone(), format!("constant `{}`", display(path))))
            .collect();
        let mut actions: Vec<Option<Action>> = vec![None; columns.len()];
        for entry in &spec.columns {
            let Some(i) = noted(&mut problems, find(&entry.name, entry.pos, "column")) else {
                continue;
            };
            actions[i] = Some(match &entry.setting {
                ColumnSetting::Drop => Action::Drop(DropReason::File),
                ColumnSetting::Map {
                    path,
                    ty,
                    format,
                    null,
                } => {
                    let path = path.clone().unwrap_or_else(|| default_path(&entry.name));
                    if let Some((_, owner)) = claimed.iter().find(|(p, _)| overlaps(p, &path)) {
                        problems.push(
                            spec.error(
                                format!(
                                    "column `{}` and {owner} both write trait `{}`",
                                    entry.name,
                                    display(&path)
                                ),
                                entry.pos,
                            )
                            .with_hint("map each trait path from one column only"),
                        );
                        continue;
                    }
                    claimed.push((path.clone(), format!("column `{}`", entry.name)));
                    Rule {
                        ty: ty.or_else(|| implied_type(&path)),
                        inferred: false,
                        path,
                        format: format.clone(),
                        null: null.unwrap_or(spec.null),
                    }
                    .into()
                }
            });
        }

        let mut resolved = Vec::with_capacity(columns.len());
        for (i, (name, action)) in columns.iter().zip(actions).enumerate() {
            let is_identity = Some(i) == user_id || Some(i) == anonymous_id || Some(i) == group_id;
            let action = match action {
                Some(action) => action,
                None if is_identity => Action::IdentityOnly,
                None if name.trim().is_empty() => Action::Drop(DropReason::EmptyName),
                None if spec.unmapped == UnmappedPolicy::Drop => Action::Drop(DropReason::Unmapped),
                None => {
                    let rule = default_rule(name, spec.null, |path| {
                        claimed.iter().any(|(p, _)| overlaps(p, path))
                    })
                    .map_err(|path| {
                        let owner = claimed
                            .iter()
                            .find(|(p, _)| overlaps(p, &path))
                            .map_or_else(String::new, |(_, o)| o.clone());
                        spec.error(
                            format!(
                                "column `{name}` cannot be mapped: {owner} already writes trait `{}`",
                                display(&path)
                            ),
                            None,
                        )
                        .with_hint(format!(
                            "map or drop `{name}` under [columns] in a mapping file"
                        ))
                    });
                    match rule {
                        Ok(rule) => {
                            claimed.push((rule.path.clone(), format!("column `{name}`")));
                            Action::Trait(rule)
                        }
                        Err(error) => {
                            problems.push(error);
                            Action::Drop(DropReason::Unmapped)
                        }
                    }
                }
            };
            resolved.push(Column {
                name: (*name).into(),
                user_id: Some(i) == user_id,
                anonymous_id: Some(i) == anonymous_id,
                group_id: Some(i) == group_id,
                action,
            });
        }

        if let Some(error) = MappingError::all(problems) {
            return Err(error);
        }

        let mut base = Map::new();
        for (path, value) in &spec.constants {
            // Constant paths were checked not to overlap, so this cannot fail.
            apply::insert(&mut base, path, value.clone());
        }
        let mut taken = HashSet::new();
        let mut taken_prefixes = HashSet::new();
        for (path, _) in claimed {
            for n in 1..path.len() {
                taken_prefixes.insert(TraitPath::from(&path[..n]));
            }
            taken.insert(path);
        }
        let mut mapping = Mapping {
            columns: resolved,
            by_name,
            user_id,
            anonymous_id,
            group_id,
            unmapped: spec.unmapped,
            null: spec.null,
            duplicates: spec.duplicates,
            constants: spec.constants.clone(),
            base,
            taken,
            taken_prefixes,
            sampled: 0,
            steps: None,
            fingerprint: 0,
            events: spec.events.clone(),
        };
        mapping.steps = fast::plan(&mapping.columns, &mapping.constants);
        mapping.fingerprint = xxhash_rust::xxh3::xxh3_64(mapping.payload_toml().as_bytes());
        Ok(mapping)
    }

    /// Resolves like [`new`](Self::new), then gives each CSV column that has
    /// no type (a custom trait, or a mapping-file column without `type`) the
    /// type its values in `sample` agree on: boolean, integer, float
    /// (decimals) or timestamp, judged conservatively; anything ambiguous
    /// stays a string (the rules are in the module docs under "Inferred
    /// types"). Later records must fit an inferred type strictly, or fail as
    /// `invalid_value` naming the column.
    ///
    /// JSON values already have types: columns with a JSON value in the
    /// sample are left as they are. Inferred types are part of
    /// [`to_toml`](Self::to_toml), so they can be pinned in a mapping file,
    /// and of every record's [`fingerprint`](Self::fingerprint), so a change
    /// of inference makes an incremental sync look at every record again.
    ///
    /// # Example
    /// ```
    /// use customer_sync::mapping::Mapping;
    /// use customer_sync::{Field, FieldValue, Location, Record};
    ///
    /// let header = ["id", "active", "ltv", "code"];
    /// let record = |line, values: [&str; 4]| Record {
    ///     location: Location::new("c.csv", line),
    ///     fields: header
    ///         .iter()
    ///         .zip(values)
    ///         .map(|(name, value)| Field { name: (*name).into(), value: FieldValue::Text(value.into()) })
    ///         .collect(),
    /// };
    /// let sample = [record(2, ["u1", "false", "0.00", "01234"]), record(3, ["u2", "true", "137.50", "2"])];
    /// let mapping = Mapping::with_sample(None, &header, &sample)?;
    /// let customer = mapping.apply(&sample[0])?;
    /// assert_eq!(
    ///     serde_json::Value::Object(customer.traits),
    ///     serde_json::json!({"active": false, "ltv": 0.0, "code": "01234"})
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As for [`new`](Self::new).
    pub fn with_sample<'a>(
        spec: Option<&MappingSpec>,
        columns: &[&str],
        sample: impl IntoIterator<Item = &'a Record>,
    ) -> Result<Mapping, MappingError> {
        let mut mapping = Mapping::new(spec, columns)?;
        let mut kinds = vec![sample::Kind::Unknown; mapping.columns.len()];
        let mut sampled = 0;
        for record in sample {
            sampled += 1;
            for (i, field) in record.fields.iter().enumerate() {
                let Some(j) = mapping.column_index(i, field) else {
                    continue;
                };
                let kind = match &field.value {
                    _ if field.value.is_empty() => continue,
                    crate::FieldValue::Text(text) => sample::Kind::of(text),
                    crate::FieldValue::Json(_) => sample::Kind::Text,
                };
                kinds[j] = kinds[j].and(kind);
            }
        }
        for (column, kind) in mapping.columns.iter_mut().zip(kinds) {
            if let Action::Trait(rule) = &mut column.action
                && rule.ty.is_none()
                && let Some(ty) = kind.value_type()
            {
                rule.ty = Some(ty);
                rule.inferred = true;
            }
        }
        mapping.sampled = sampled;
        mapping.fingerprint = xxhash_rust::xxh3::xxh3_64(mapping.payload_toml().as_bytes());
        Ok(mapping)
    }

    /// The header positions of the columns a record is keyed on (userId and
    /// anonymousId; a group mapping's group id in the userId slot), for a
    /// first pass that reads identities without building records.
    pub(crate) fn identity_columns(&self) -> [Option<usize>; 2] {
        match self.group_id {
            // A group is keyed on its group id, as a userId.
            Some(group_id) => [Some(group_id), None],
            None => [self.user_id, self.anonymous_id],
        }
    }

    /// The column a record's identity is read from, when it is that
    /// column's value and nothing else: a userId from it, no anonymousId,
    /// not a group. A source whose values in it are distinct
    /// ([`Source::distinct_column`](crate::Source::distinct_column)) cannot
    /// repeat an identity.
    ///
    /// # Example
    /// ```
    /// use customer_sync::Mapping;
    ///
    /// let mapping = Mapping::new(None, &["customer_id", "email"])?;
    /// assert_eq!(mapping.identity_column(), Some("customer_id"));
    /// let both = Mapping::new(None, &["user_id", "anonymous_id"])?;
    /// assert_eq!(both.identity_column(), None);
    /// # Ok::<(), customer_sync::mapping::MappingError>(())
    /// ```
    pub fn identity_column(&self) -> Option<&str> {
        match (self.user_id, self.anonymous_id, self.group_id) {
            (Some(i), None, None) => Some(&self.columns[i].name),
            _ => None,
        }
    }

    /// The names of the user id and anonymous id columns, for reading a
    /// customer's identity without the record; `None` for a group mapping
    /// (its key is the group id).
    pub(crate) fn customer_id_names(&self) -> Option<[Option<&str>; 2]> {
        let name = |column: Option<usize>| column.map(|i| &*self.columns[i].name);
        match self.group_id {
            Some(_) => None,
            None => Some([name(self.user_id), name(self.anonymous_id)]),
        }
    }

    /// The names of the columns a record's identity is read from (userId,
    /// anonymousId, a group mapping's group id): all
    /// [`identity_of`](Self::identity_of) looks at.
    pub(crate) fn identity_names(&self) -> Vec<Box<str>> {
        [self.user_id, self.anonymous_id, self.group_id]
            .into_iter()
            .flatten()
            .map(|i| self.columns[i].name.clone())
            .collect()
    }

    /// Whether records become `group` calls (`[identity] group_id`): each
    /// record is one group, keyed in the state and reports by its group id
    /// (as its `userId`), and sent as a group call for the member the
    /// `user_id`/`anonymous_id` columns name.
    pub fn is_group(&self) -> bool {
        self.group_id.is_some()
    }

    /// The `[events]` section: which `track` events a sync sends when a
    /// customer is added, changed or removed (see [`ChangeEvents`]).
    pub fn events(&self) -> Option<&ChangeEvents> {
        self.events.as_ref()
    }

    /// The duplicate-identity policy (`[options] duplicates`), for the sync engine.
    pub fn duplicates(&self) -> DuplicatePolicy {
        self.duplicates
    }

    /// The default null policy (`[options] null`); columns may override it.
    pub fn null_policy(&self) -> NullPolicy {
        self.null
    }

    /// What happens to columns and record keys the mapping file does not name.
    pub fn unmapped(&self) -> UnmappedPolicy {
        self.unmapped
    }

    /// Whether `path` collides with a trait a header column or constant writes.
    fn is_taken(&self, path: &[Box<str>]) -> bool {
        self.taken.contains(path)
            || self.taken_prefixes.contains(path)
            || (1..path.len()).any(|n| self.taken.contains(&path[..n]))
    }
}

impl From<Rule> for Action {
    fn from(rule: Rule) -> Self {
        Action::Trait(rule)
    }
}

/// The default rule for a column: its reserved trait, or its own name when
/// that trait is taken (`is_taken`). Fails with the path when both are taken.
fn default_rule(
    name: &str,
    null: NullPolicy,
    is_taken: impl Fn(&[Box<str>]) -> bool,
) -> Result<Rule, TraitPath> {
    let mut path = default_path(name);
    if is_taken(&path) {
        let own = literal(name);
        if is_taken(&own) {
            return Err(path);
        }
        path = own;
    }
    Ok(Rule {
        ty: implied_type(&path),
        inferred: false,
        path,
        format: None,
        null,
    })
}

/// The value of `result`, or `None` with its error added to `problems`.
fn noted<T>(problems: &mut Vec<MappingError>, result: Result<T, MappingError>) -> Option<T> {
    result.map_err(|e| problems.push(e)).ok()
}

/// Suggests the header column a misspelt name probably meant, or lists the header.
fn header_hint(name: &str, columns: &[&str]) -> String {
    let wanted = normalize(name);
    if let Some(close) = columns.iter().find(|c| normalize(c) == wanted) {
        return format!("the header has `{close}`; names must match exactly");
    }
    format!("the header's columns are: {}", list(columns))
}

fn list(columns: &[&str]) -> String {
    const SHOWN: usize = 20;
    let mut out = columns
        .iter()
        .take(SHOWN)
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if columns.len() > SHOWN {
        out.push_str(&format!(" and {} more", columns.len() - SHOWN));
    }
    if out.is_empty() {
        out.push_str("(none)");
    }
    out
}

fn no_identity(spec: &MappingSpec, columns: &[&str]) -> MappingError {
    let names = |candidates: &[&str]| {
        candidates
            .iter()
            .map(|c| {
                let camel = camel_case(c);
                if camel == *c {
                    format!("`{c}`")
                } else {
                    format!("`{c}`/`{camel}`")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    spec.error(
        format!(
            "no identity column: looked for {} (userId) and {} (anonymousId), ignoring case, `_`, `-` and spaces; the header has {}",
            names(infer::USER_ID_COLUMNS),
            names(infer::ANONYMOUS_ID_COLUMNS),
            list(columns)
        ),
        None,
    )
    .with_hint("name the identity column in a mapping file passed with --mapping: [identity] user_id = \"<column>\"")
}

fn camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests;
