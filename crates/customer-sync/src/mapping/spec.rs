//! The mapping file: its TOML schema, parsing and checks that need no header.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;
use toml::de::DeValue;

use super::convert::valid_format;
use super::error::{MappingError, Pos, position};
use super::events::ChangeEvents;
use super::infer::{TraitPath, display, dotted};

/// What to do when the same identity appears more than once in one input.
///
/// The mapping only parses and exposes it (`[options] duplicates`); the sync
/// engine applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DuplicatePolicy {
    /// The last record wins (`"last"`, the default).
    #[default]
    Last,
    /// The first record wins (`"first"`).
    First,
    /// Every repeat is refused as a `duplicate_identity` record error (`"error"`).
    Error,
}

/// What an empty value (see [`FieldValue::is_empty`](crate::FieldValue::is_empty)) sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NullPolicy {
    /// Leave the trait out, so Segment keeps the value it has (`"omit"`, the default).
    #[default]
    Omit,
    /// Send `null`, which unsets the trait downstream (`"null"`).
    Null,
}

/// What happens to columns the mapping file does not mention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum UnmappedPolicy {
    /// Map them by the default rules: a reserved-trait name becomes that
    /// reserved trait, anything else a custom trait under the column's own
    /// name (`"custom"`, the default).
    #[default]
    Custom,
    /// Leave them out (`"drop"`).
    Drop,
}

/// The type a column's value is converted to before it is sent.
///
/// Empty values never reach the conversion; the [`NullPolicy`] decides them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// Text, sent verbatim; JSON numbers and booleans become their text.
    String,
    /// A whole number: `42`, `-7`, or `12.0` as spreadsheets write it.
    Integer,
    /// A finite number.
    Float,
    /// `true`/`false`, `yes`/`no` or `1`/`0`, in any case.
    Boolean,
    /// A point in time, sent as ISO-8601 UTC (`2024-05-01T12:00:00Z`): RFC 3339
    /// with any offset, `YYYY-MM-DD HH:MM:SS` (UTC), `YYYY-MM-DD`, unix
    /// seconds, or a column's own strftime `format`.
    Timestamp,
    /// Text parsed as JSON and sent as the parsed value.
    Json,
}

macro_rules! keyword {
    ($ty:ty { $($variant:ident => $word:literal),* $(,)? }) => {
        impl $ty {
            /// The keyword the mapping file uses for this value.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $word),* }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

keyword!(DuplicatePolicy { Last => "last", First => "first", Error => "error" });
keyword!(NullPolicy { Omit => "omit", Null => "null" });
keyword!(UnmappedPolicy { Custom => "custom", Drop => "drop" });
keyword!(ValueType {
    String => "string",
    Integer => "integer",
    Float => "float",
    Boolean => "boolean",
    Timestamp => "timestamp",
    Json => "json",
});

/// A parsed mapping file: the identity columns, options, per-column rules and
/// constant traits (see the [module docs](super) for the format).
///
/// It is checked on its own when parsed (unknown keys, bad types, bad trait
/// paths, two columns writing one trait); [`Mapping::new`](super::Mapping::new)
/// then checks it against a header.
///
/// # Example
/// ```
/// use customer_sync::mapping::{DuplicatePolicy, Mapping, MappingSpec};
///
/// let spec = MappingSpec::from_toml(r#"
///     [identity]
///     user_id = "Customer ID"
///
///     [options]
///     duplicates = "first"
///
///     [columns]
///     "E-mail" = "email"
///     seats = { trait = "company.employee_count", type = "integer" }
/// "#)?;
/// assert_eq!(spec.duplicates(), DuplicatePolicy::First);
/// let mapping = Mapping::new(Some(&spec), &["Customer ID", "E-mail", "seats"])?;
/// assert_eq!(mapping.duplicates(), DuplicatePolicy::First);
///
/// let err = MappingSpec::from_toml("[columns.x]\ntrait = \"a\"\ntpye = \"integer\"\n").unwrap_err();
/// assert_eq!(err.line(), Some(3));
/// # Ok::<(), customer_sync::mapping::MappingError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct MappingSpec {
    pub(super) path: Option<PathBuf>,
    pub(super) identity: Option<IdentitySpec>,
    pub(super) unmapped: UnmappedPolicy,
    pub(super) null: NullPolicy,
    pub(super) duplicates: DuplicatePolicy,
    pub(super) columns: Vec<ColumnSpec>,
    pub(super) constants: Vec<(TraitPath, Value)>,
    pub(super) events: Option<ChangeEvents>,
}

/// The `[identity]` table: at least one of `user_id` and `anonymous_id` is
/// set; with `group_id`, records are sent as group calls for that member.
#[derive(Debug, Clone)]
pub(super) struct IdentitySpec {
    pub(super) user_id: Option<Named>,
    pub(super) anonymous_id: Option<Named>,
    pub(super) group_id: Option<Named>,
}

/// A column name and where the file gave it.
#[derive(Debug, Clone)]
pub(super) struct Named {
    pub(super) name: String,
    pub(super) pos: Option<Pos>,
}

/// One `[columns]` entry.
#[derive(Debug, Clone)]
pub(super) struct ColumnSpec {
    pub(super) name: String,
    pub(super) pos: Option<Pos>,
    pub(super) setting: ColumnSetting,
}

#[derive(Debug, Clone)]
pub(super) enum ColumnSetting {
    Drop,
    /// Unset parts are inferred: the path from the column name, the type
    /// from the path.
    Map {
        path: Option<TraitPath>,
        ty: Option<ValueType>,
        format: Option<Box<str>>,
        null: Option<NullPolicy>,
    },
}

impl MappingSpec {
    /// Parses a mapping file's text.
    ///
    /// # Errors
    /// A [`MappingError`] with the line and column for TOML syntax errors,
    /// unknown keys or values, invalid trait paths or strftime formats, a
    /// `drop = true` combined with other settings, and a trait path written
    /// by two columns (or a column and a constant).
    ///
    /// Every problem is reported, not just the first: the error holds one
    /// per unknown key, bad value or conflict, each with its line and column
    /// ([`MappingError::problems`]). TOML syntax errors are reported alone,
    /// since the rest of the file cannot be read reliably past them.
    pub fn from_toml(text: &str) -> Result<MappingSpec, MappingError> {
        let (doc, syntax) = toml::de::DeTable::parse_recoverable(text);
        let mut walk = Walk {
            text,
            problems: Vec::new(),
        };
        if !syntax.is_empty() {
            for e in syntax {
                walk.problem(e.message().trim_end().to_owned(), e.span());
            }
            return Err(walk
                .finish()
                .unwrap_or_else(|| MappingError::new("invalid TOML")));
        }
        let spec = walk.document(doc.into_inner());
        match walk.finish() {
            Some(error) => Err(error),
            None => Ok(spec),
        }
    }

    /// Columns given a `type` or `format` under `[columns]`: a database
    /// source reads those of a type it cannot read as text, for the mapping
    /// to convert.
    pub fn typed_columns(&self) -> Vec<&str> {
        self.columns
            .iter()
            .filter(|c| {
                matches!(&c.setting, ColumnSetting::Map { ty, format, .. } if ty.is_some() || format.is_some())
            })
            .map(|c| c.name.as_str())
            .collect()
    }

    /// Whether the file names the identity columns (`[identity]`).
    pub fn names_identity(&self) -> bool {
        self.identity.is_some()
    }

    /// Makes `column` the user id, as if `[identity] user_id` named it: a
    /// table's primary key when no column is detected as the identity.
    pub fn set_user_id_column(&mut self, column: &str) {
        self.identity = Some(IdentitySpec {
            user_id: Some(Named {
                name: column.to_owned(),
                pos: None,
            }),
            anonymous_id: None,
            group_id: None,
        });
    }

    /// Reads and parses the mapping file at `path`.
    ///
    /// # Errors
    /// As [`from_toml`](Self::from_toml), and if the file cannot be read;
    /// every error names `path`, as do errors from
    /// [`Mapping::new`](super::Mapping::new) with this spec.
    pub fn load(path: &Path) -> Result<MappingSpec, MappingError> {
        let text = std::fs::read_to_string(path).map_err(|e| MappingError::io(path, e))?;
        let mut spec = Self::from_toml(&text).map_err(|e| e.at_path(Some(path)))?;
        spec.path = Some(path.to_path_buf());
        Ok(spec)
    }

    /// The `[options] duplicates` policy, for the sync engine.
    pub fn duplicates(&self) -> DuplicatePolicy {
        self.duplicates
    }

    /// The `[options] null` policy.
    pub fn null_policy(&self) -> NullPolicy {
        self.null
    }

    /// The `[options] unmapped` policy.
    pub fn unmapped(&self) -> UnmappedPolicy {
        self.unmapped
    }

    pub(super) fn error(&self, message: impl Into<String>, pos: Option<Pos>) -> MappingError {
        MappingError::new(message)
            .at(pos)
            .at_path(self.path.as_deref())
    }
}

/// The keys each table of a mapping file allows.
const TOP_KEYS: &[&str] = &["identity", "options", "columns", "constants", "events"];
const IDENTITY_KEYS: &[&str] = &["user_id", "anonymous_id", "group_id"];
const OPTION_KEYS: &[&str] = &["unmapped", "null", "duplicates"];
const EVENT_KEYS: &[&str] = &["added", "changed", "removed", "identify"];
const COLUMN_KEYS: &[&str] = &["trait", "type", "format", "null", "drop"];

type Span = std::ops::Range<usize>;
type Item<'i> = Spanned<DeValue<'i>>;

/// A walk over a parsed mapping file that notes every problem and goes on,
/// so that one run reports them all.
struct Walk<'t> {
    text: &'t str,
    problems: Vec<MappingError>,
}

/// A `[columns]` entry as the file gives it.
#[derive(Default)]
struct ColumnFile {
    trait_path: Option<String>,
    ty: Option<ValueType>,
    format: Option<String>,
    null: Option<NullPolicy>,
    drop: bool,
}

impl Walk<'_> {
    fn at(&self, span: Span) -> Option<Pos> {
        Some(position(self.text, span.start))
    }

    fn problem(&mut self, message: String, span: Option<Span>) {
        let pos = span.and_then(|span| self.at(span));
        self.problems.push(MappingError::new(message).at(pos));
    }

    fn problem_with_hint(&mut self, message: String, span: Option<Span>, hint: &str) {
        let pos = span.and_then(|span| self.at(span));
        self.problems
            .push(MappingError::new(message).at(pos).with_hint(hint));
    }

    fn finish(self) -> Option<MappingError> {
        MappingError::all(self.problems)
    }

    /// Deserializes one value, or notes why it cannot be.
    fn value<T: serde::de::DeserializeOwned>(&mut self, item: Item<'_>) -> Option<T> {
        let span = item.span();
        match T::deserialize(toml::de::ValueDeserializer::from(item)) {
            Ok(value) => Some(value),
            Err(e) => {
                self.problem(e.message().trim_end().to_owned(), e.span().or(Some(span)));
                None
            }
        }
    }

    /// The entries of a table, noting each key not in `allowed` (any key is
    /// allowed with `None`).
    fn fields<'i>(
        &mut self,
        item: Item<'i>,
        what: &str,
        allowed: Option<&[&str]>,
    ) -> Vec<(String, Span, Item<'i>)> {
        let span = item.span();
        let DeValue::Table(table) = item.into_inner() else {
            self.problem(format!("`{what}` must be a table"), Some(span));
            return Vec::new();
        };
        let mut fields = Vec::new();
        for (key, value) in table {
            let key_span = key.span();
            let key = key.into_inner().into_owned();
            match allowed {
                Some(allowed) if !allowed.contains(&key.as_str()) => {
                    let expected: Vec<String> = allowed.iter().map(|k| format!("`{k}`")).collect();
                    let message = format!(
                        "unknown field `{key}`, expected one of {}",
                        expected.join(", ")
                    );
                    match allowed
                        .iter()
                        .find(|k| crate::source::edit_distance(k, &key) <= 2)
                    {
                        Some(close) => self.problem_with_hint(
                            message,
                            Some(key_span),
                            &format!("did you mean `{close}`?"),
                        ),
                        None => self.problem(message, Some(key_span)),
                    }
                }
                _ => fields.push((key, key_span, value)),
            }
        }
        fields
    }

    fn document(&mut self, doc: toml::de::DeTable<'_>) -> MappingSpec {
        let whole = Spanned::new(0..self.text.len(), DeValue::Table(doc));
        let mut spec = MappingSpec::default();
        for (key, _, item) in self.fields(whole, "the mapping file", Some(TOP_KEYS)) {
            match key.as_str() {
                "identity" => spec.identity = self.identity(item),
                "options" => {
                    for (key, _, item) in self.fields(item, "options", Some(OPTION_KEYS)) {
                        match key.as_str() {
                            "unmapped" => {
                                spec.unmapped = self.value(item).unwrap_or(spec.unmapped);
                            }
                            "null" => spec.null = self.value(item).unwrap_or(spec.null),
                            _ => spec.duplicates = self.value(item).unwrap_or(spec.duplicates),
                        }
                    }
                }
                "columns" => spec.columns = self.columns(item),
                "events" => spec.events = self.events(item),
                _ => {
                    let table: toml::Table = self.value(item).unwrap_or_default();
                    if let Err(e) = flatten_constants(&mut Vec::new(), &table, &mut spec.constants)
                    {
                        self.problems.push(e);
                    }
                }
            }
        }
        // Keep the file's order: errors and `describe` then read like the file.
        spec.columns.sort_by_key(|c| c.pos);
        if spec.events.is_some()
            && let Some(group_id) = spec.identity.as_ref().and_then(|i| i.group_id.as_ref())
        {
            self.problems.push(
                MappingError::new(
                    "`[events]` applies to customers (identify), not to group calls".to_owned(),
                )
                .at(group_id.pos)
                .with_hint(
                    "remove `[events]`, or sync the customers in a mapping without `group_id`",
                ),
            );
        }
        self.conflicts(&spec);
        spec
    }

    fn events(&mut self, item: Item<'_>) -> Option<ChangeEvents> {
        let span = item.span();
        let problems_before = self.problems.len();
        let mut events = ChangeEvents::default();
        for (key, _, item) in self.fields(item, "events", Some(EVENT_KEYS)) {
            let value_span = item.span();
            if key == "identify" {
                events.identify = self.value(item).unwrap_or(true);
                continue;
            }
            let Some(name) = self.value::<String>(item) else {
                continue;
            };
            if name.trim().is_empty() {
                self.problem(
                    format!("`events.{key}` is empty: name the track event"),
                    Some(value_span),
                );
                continue;
            }
            match key.as_str() {
                "added" => events.added = Some(name),
                "changed" => events.changed = Some(name),
                _ => events.removed = Some(name),
            }
        }
        if self.problems.len() > problems_before {
            return None;
        }
        let named = events.added.is_some() || events.changed.is_some() || events.removed.is_some();
        if !named {
            self.problem_with_hint(
                "`[events]` names no event: set `added`, `changed` or `removed`".into(),
                Some(span),
                "for example: added = \"Customer Created\"",
            );
            return None;
        }
        if !events.identify && events.added.is_none() {
            self.problem_with_hint(
                "`[events]` has `identify = false` but no `added`: a new customer would send nothing, so Segment would never know it and its changes could not be told".into(),
                Some(span),
                "set `added`, or remove `identify = false`",
            );
            return None;
        }
        Some(events)
    }

    fn identity(&mut self, item: Item<'_>) -> Option<IdentitySpec> {
        let span = item.span();
        let problems_before = self.problems.len();
        let mut identity = IdentitySpec {
            user_id: None,
            anonymous_id: None,
            group_id: None,
        };
        for (key, _, item) in self.fields(item, "identity", Some(IDENTITY_KEYS)) {
            let value_span = item.span();
            let Some(name) = self.value::<String>(item) else {
                continue;
            };
            if name.is_empty() {
                self.problem(format!("`identity.{key}` is empty"), Some(value_span));
                continue;
            }
            let named = Some(Named {
                name,
                pos: self.at(value_span),
            });
            match key.as_str() {
                "user_id" => identity.user_id = named,
                "group_id" => identity.group_id = named,
                _ => identity.anonymous_id = named,
            }
        }
        if identity.user_id.is_none() && identity.anonymous_id.is_none() {
            // Said only when nothing more precise was.
            if self.problems.len() == problems_before && identity.group_id.is_some() {
                self.problem_with_hint(
                    "`[identity]` names a `group_id` but no member: a group call needs a `user_id` or `anonymous_id` too".into(),
                    Some(span),
                    "name the column that holds the group's user (an owner or main contact) as `user_id`",
                );
            } else if self.problems.len() == problems_before {
                self.problem_with_hint(
                    "`[identity]` names no column: set `user_id`, `anonymous_id` or both".into(),
                    Some(span),
                    "remove `[identity]` to detect the identity column by name",
                );
            }
            return None;
        }
        Some(identity)
    }

    fn columns(&mut self, item: Item<'_>) -> Vec<ColumnSpec> {
        let mut columns = Vec::new();
        for (name, _, item) in self.fields(item, "columns", None) {
            let span = item.span();
            let file = match item.get_ref() {
                DeValue::String(_) => ColumnFile {
                    trait_path: self.value(item),
                    ..ColumnFile::default()
                },
                DeValue::Table(_) => self.column_file(&name, item),
                other => {
                    self.problem(
                        format!(
                            "column `{name}`: invalid type: {}, expected a trait path string or a table of column settings",
                            other.type_str()
                        ),
                        Some(span),
                    );
                    continue;
                }
            };
            if let Some(setting) = self.setting(&name, file, span.clone()) {
                columns.push(ColumnSpec {
                    name,
                    pos: self.at(span),
                    setting,
                });
            }
        }
        columns
    }

    fn column_file(&mut self, name: &str, item: Item<'_>) -> ColumnFile {
        let mut file = ColumnFile::default();
        let what = format!("columns.{name}");
        for (key, _, item) in self.fields(item, &what, Some(COLUMN_KEYS)) {
            match key.as_str() {
                "trait" => file.trait_path = self.value(item),
                "type" => file.ty = self.value(item),
                "format" => file.format = self.value(item),
                "null" => file.null = self.value(item),
                _ => file.drop = self.value(item).unwrap_or(false),
            }
        }
        file
    }

    /// The checks of one column's settings that need no header.
    fn setting(&mut self, name: &str, file: ColumnFile, span: Span) -> Option<ColumnSetting> {
        if file.drop {
            if file.trait_path.is_some()
                || file.ty.is_some()
                || file.format.is_some()
                || file.null.is_some()
            {
                self.problem(
                    format!(
                        "column `{name}`: `drop = true` cannot be combined with other settings"
                    ),
                    Some(span),
                );
                return None;
            }
            return Some(ColumnSetting::Drop);
        }
        let problems_before = self.problems.len();
        let path = match file.trait_path {
            Some(p) => match check_path(&p) {
                Ok(path) => Some(path),
                Err(why) => {
                    self.problem(
                        format!("column `{name}`: trait path {p:?} {why}"),
                        Some(span.clone()),
                    );
                    None
                }
            },
            None => None,
        };
        let ty = match (file.ty, &file.format) {
            (None | Some(ValueType::Timestamp), Some(_)) => Some(ValueType::Timestamp),
            (Some(ty), Some(_)) => {
                self.problem(
                    format!(
                        "column `{name}`: `format` applies only to `type = \"timestamp\"`, not {ty:?}",
                        ty = ty.as_str()
                    ),
                    Some(span.clone()),
                );
                None
            }
            (ty, None) => ty,
        };
        if let Some(f) = &file.format
            && !valid_format(f)
        {
            self.problem(
                format!("column `{name}`: {f:?} is not a valid strftime format"),
                Some(span),
            );
        }
        (self.problems.len() == problems_before).then(|| ColumnSetting::Map {
            path,
            ty,
            format: file.format.map(Into::into),
            null: file.null,
        })
    }

    /// Conflicts between explicit paths need no header, so they are reported
    /// with the file's other problems.
    fn conflicts(&mut self, spec: &MappingSpec) {
        let mut claimed: Vec<(&[Box<str>], String)> = Vec::new();
        for c in &spec.columns {
            if let ColumnSetting::Map {
                path: Some(path), ..
            } = &c.setting
            {
                if let Some((_, owner)) = claimed.iter().find(|(p, _)| overlaps(p, path)) {
                    self.problems.push(
                        MappingError::new(format!(
                            "column `{}` and {owner} both write trait `{}`",
                            c.name,
                            display(path)
                        ))
                        .at(c.pos)
                        .with_hint("map each trait path from one column only"),
                    );
                    continue;
                }
                claimed.push((path, format!("column `{}`", c.name)));
            }
        }
        for (path, _) in &spec.constants {
            if let Some((_, owner)) = claimed.iter().find(|(p, _)| overlaps(p, path)) {
                self.problems.push(
                    MappingError::new(format!(
                        "constant `{}` and {owner} both write trait `{}`",
                        display(path),
                        display(path)
                    ))
                    .with_hint("drop the constant or map the column to another trait"),
                );
            }
        }
    }
}

/// Checks a dotted trait path; the error completes "trait path "x" ...".
pub(super) fn check_path(path: &str) -> Result<TraitPath, &'static str> {
    if path.split('.').any(|s| s.trim().is_empty()) {
        return Err("has an empty segment (use `a.b`, not `a..b`, `.a` or `a.`)");
    }
    Ok(dotted(path))
}

/// Whether two paths write the same place: equal, or one nests inside the other.
pub(super) fn overlaps(a: &[Box<str>], b: &[Box<str>]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// Turns the `[constants]` table into leaf paths and JSON values; nested
/// tables nest, so they merge with columns writing sibling paths.
fn flatten_constants(
    prefix: &mut Vec<Box<str>>,
    table: &toml::Table,
    out: &mut Vec<(TraitPath, Value)>,
) -> Result<(), MappingError> {
    for (key, value) in table {
        prefix.push(key.as_str().into());
        match value {
            toml::Value::Table(inner) if !inner.is_empty() => {
                flatten_constants(prefix, inner, out)?;
            }
            other => out.push((prefix.clone().into(), toml_to_json(other, prefix)?)),
        }
        prefix.pop();
    }
    Ok(())
}

fn toml_to_json(value: &toml::Value, at: &[Box<str>]) -> Result<Value, MappingError> {
    Ok(match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| {
                MappingError::new(format!(
                    "constant `{}`: {f} cannot be sent as JSON",
                    display(at)
                ))
            })?,
        toml::Value::Boolean(b) => Value::Bool(*b),
        // Segment takes timestamps as ISO-8601 strings.
        toml::Value::Datetime(dt) => Value::String(dt.to_string()),
        toml::Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| toml_to_json(v, at))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| Ok((k.clone(), toml_to_json(v, at)?)))
                .collect::<Result<_, MappingError>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_err(text: &str) -> MappingError {
        MappingSpec::from_toml(text).unwrap_err()
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let spec = MappingSpec::from_toml("").unwrap();
        assert!(spec.identity.is_none());
        assert_eq!(spec.duplicates(), DuplicatePolicy::Last);
        assert_eq!(spec.null_policy(), NullPolicy::Omit);
        assert_eq!(spec.unmapped(), UnmappedPolicy::Custom);
        assert!(spec.columns.is_empty() && spec.constants.is_empty());
    }

    #[test]
    fn parses_every_option() {
        let spec = MappingSpec::from_toml(
            "[options]\nunmapped = \"drop\"\nnull = \"null\"\nduplicates = \"error\"\n",
        )
        .unwrap();
        assert_eq!(spec.unmapped(), UnmappedPolicy::Drop);
        assert_eq!(spec.null_policy(), NullPolicy::Null);
        assert_eq!(spec.duplicates(), DuplicatePolicy::Error);
        let first = MappingSpec::from_toml("options.duplicates = \"first\"").unwrap();
        assert_eq!(first.duplicates(), DuplicatePolicy::First);
    }

    #[test]
    fn column_shorthand_tables_and_sections() {
        let spec = MappingSpec::from_toml(
            r#"
[columns]
"E-mail" = "email"
seats = { trait = "company.employee_count", type = "integer" }
notes = { drop = true }
when = { format = "%d/%m/%Y" }

[columns."Lifetime Value"]
trait = "billing.ltv"
type = "float"
null = "null"
"#,
        )
        .unwrap();
        let names: Vec<_> = spec.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["E-mail", "seats", "notes", "when", "Lifetime Value"]
        );
        assert!(matches!(spec.columns[2].setting, ColumnSetting::Drop));
        let ColumnSetting::Map { ty, .. } = &spec.columns[3].setting else {
            panic!()
        };
        assert_eq!(*ty, Some(ValueType::Timestamp), "format implies timestamp");
        let ColumnSetting::Map { path, ty, null, .. } = &spec.columns[4].setting else {
            panic!()
        };
        assert_eq!(display(path.as_ref().unwrap()), "billing.ltv");
        assert_eq!(
            (*ty, *null),
            (Some(ValueType::Float), Some(NullPolicy::Null))
        );
        assert_eq!(spec.columns[4].pos.map(|p| p.0), Some(8));
    }

    #[test]
    fn unknown_keys_are_errors_with_line_numbers() {
        let err = parse_err("[identity]\nuser_id = \"id\"\n\n[columns.email]\ntratis = \"x\"\n");
        assert_eq!(err.line(), Some(5), "{err}");
        assert!(err.to_string().contains("unknown field `tratis`"), "{err}");
        assert!(
            err.to_string().starts_with("mapping line 5, column 1: "),
            "{err}"
        );

        let err = parse_err("[options]\nnull = \"omit\"\nunmaped = \"drop\"\n");
        assert_eq!(err.line(), Some(3), "{err}");
        let err = parse_err("[identity]\nuser = \"x\"\n");
        assert_eq!(err.line(), Some(2), "{err}");
        let err = parse_err("[colums]\n");
        assert_eq!(err.line(), Some(1), "{err}");
        assert!(err.to_string().contains("unknown field `colums`"), "{err}");
    }

    #[test]
    fn bad_values_are_errors_with_line_numbers() {
        let err = parse_err("[columns]\nage = { type = \"int\" }\n");
        assert_eq!(err.line(), Some(2), "{err}");
        assert!(err.to_string().contains("unknown variant `int`"), "{err}");
        let err = parse_err("\n[options]\nnull = \"skip\"\n");
        assert_eq!(err.line(), Some(3), "{err}");
        let err = parse_err("[columns]\nx = 3\n");
        assert!(
            err.to_string().contains("trait path string or a table"),
            "{err}"
        );
        let err = parse_err("[columns\n");
        assert_eq!(err.line(), Some(1), "{err}");
    }

    #[test]
    fn semantic_errors_point_at_the_column() {
        let err = parse_err("[columns]\n\"a\" = \"billing..plan\"\n");
        assert_eq!(err.line(), Some(2));
        assert!(err.to_string().contains("empty segment"), "{err}");
        let err = parse_err("[columns]\n\nx = { drop = true, trait = \"x\" }\n");
        assert_eq!(err.line(), Some(3));
        let err = parse_err("[columns]\nx = { type = \"integer\", format = \"%Y\" }\n");
        assert!(err.to_string().contains("`format` applies only"), "{err}");
        let err = parse_err("[columns]\nx = { format = \"%Q\" }\n");
        assert!(err.to_string().contains("not a valid strftime"), "{err}");
        let err = parse_err("[identity]\nuser_id = \"\"\n");
        assert!(err.to_string().contains("empty"), "{err}");
        let err = parse_err("[identity]\n");
        assert!(err.hint().is_some());
    }

    #[test]
    fn two_columns_writing_one_trait_is_an_error() {
        let err = parse_err("[columns]\na = \"email\"\nb = \"email\"\n");
        assert_eq!(err.line(), Some(3), "{err}");
        assert_eq!(
            err.to_string(),
            "mapping line 3, column 5: column `b` and column `a` both write trait `email`"
        );
        // A path nested inside another is the same conflict.
        let err = parse_err("[columns]\na = \"billing\"\nb = \"billing.plan\"\n");
        assert!(err.to_string().contains("both write"), "{err}");
        let err = parse_err("[columns]\na = \"source\"\n[constants]\nsource = \"x\"\n");
        assert!(err.to_string().contains("constant `source`"), "{err}");
        // Siblings are fine.
        MappingSpec::from_toml("[columns]\na = \"b.x\"\nb = \"b.y\"\n[constants]\nb.z = 1\n")
            .unwrap();
    }

    #[test]
    fn constants_of_every_type_flatten_to_leaves() {
        let spec = MappingSpec::from_toml(
            r#"
[constants]
source = "crm"
version = 3
ratio = 0.5
active = true
tags = ["a", 1]
imported = 2024-05-01T12:00:00Z
empty = {}
billing = { currency = "EUR", tier = { level = 2 } }
"#,
        )
        .unwrap();
        let leaves: Vec<(String, Value)> = spec
            .constants
            .iter()
            .map(|(p, v)| (display(p), v.clone()))
            .collect();
        assert_eq!(
            leaves,
            [
                ("active".into(), json!(true)),
                ("billing.currency".into(), json!("EUR")),
                ("billing.tier.level".into(), json!(2)),
                ("empty".into(), json!({})),
                ("imported".into(), json!("2024-05-01T12:00:00Z")),
                ("ratio".into(), json!(0.5)),
                ("source".into(), json!("crm")),
                ("tags".into(), json!(["a", 1])),
                ("version".into(), json!(3)),
            ]
        );
        let err = parse_err("[constants]\nx = nan\n");
        assert!(err.to_string().contains("cannot be sent as JSON"), "{err}");
    }

    #[test]
    fn load_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        let err = MappingSpec::load(&path).unwrap_err();
        assert!(err.to_string().contains("m.toml: cannot read"), "{err}");
        std::fs::write(&path, "[options]\nbogus = 1\n").unwrap();
        let err = MappingSpec::load(&path).unwrap_err();
        assert!(
            err.to_string()
                .contains("m.toml:2:1: unknown field `bogus`"),
            "{err}"
        );
        assert_eq!(err.path(), Some(path.as_path()));
        std::fs::write(&path, "[options]\nnull = \"null\"\n").unwrap();
        assert_eq!(
            MappingSpec::load(&path).unwrap().null_policy(),
            NullPolicy::Null
        );
    }
}
