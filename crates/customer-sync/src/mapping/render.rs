//! Showing a resolved mapping: as a table for people, and as a mapping file.

use std::fmt::Write as _;

use serde_json::Value;

use super::infer::{default_path, display, implied_type};
use super::spec::check_path;
use super::{Action, DropReason, Mapping, NullPolicy, Rule, UnmappedPolicy};

impl Mapping {
    /// A human-readable summary: the identity, a table of column → trait path
    /// (type), dropped columns, the unmapped and null policies, and constants.
    ///
    /// # Example
    /// ```
    /// use customer_sync::mapping::Mapping;
    ///
    /// let mapping = Mapping::new(None, &["id", "email", "seats"])?;
    /// let text = mapping.describe();
    /// assert!(text.contains("userId <- `id`"), "{text}");
    /// assert!(text.contains("email"), "{text}");
    /// # Ok::<(), customer_sync::mapping::MappingError>(())
    /// ```
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let mut identity = Vec::new();
        if let Some(i) = self.user_id {
            identity.push(format!("userId <- `{}`", self.columns[i].name));
        }
        if let Some(i) = self.anonymous_id {
            identity.push(format!("anonymousId <- `{}`", self.columns[i].name));
        }
        if let Some(i) = self.group_id {
            identity.push(format!(
                "groupId <- `{}` (group calls)",
                self.columns[i].name
            ));
        }
        let _ = writeln!(out, "identity: {}", identity.join(", "));

        let rows: Vec<[String; 3]> = self
            .columns
            .iter()
            .map(|c| {
                let name = format!("`{}`", c.name);
                match &c.action {
                    Action::IdentityOnly => [name, "(identity only)".into(), String::new()],
                    Action::Drop(reason) => {
                        let why = match reason {
                            DropReason::File => "(dropped)",
                            DropReason::Unmapped => "(dropped: unmapped)",
                            DropReason::EmptyName => "(dropped: no column name)",
                        };
                        [name, why.into(), String::new()]
                    }
                    Action::Trait(rule) => [name, display(&rule.path), self.type_label(rule)],
                }
            })
            .collect();
        let width = |k: usize| rows.iter().map(|r| r[k].chars().count()).max().unwrap_or(0);
        let (w0, w1) = (width(0).max(6), width(1).max(5));
        let _ = writeln!(out, "  {:<w0$}  {:<w1$}  type", "column", "trait");
        for [column, path, ty] in &rows {
            let line = format!("  {column:<w0$}  {path:<w1$}  {ty}");
            let _ = writeln!(out, "{}", line.trim_end());
        }

        let unmapped = match self.unmapped {
            UnmappedPolicy::Custom => {
                "by the default rules (reserved traits by name, else custom traits)"
            }
            UnmappedPolicy::Drop => "dropped",
        };
        let _ = writeln!(out, "other record keys: {unmapped}");
        let null = match self.null {
            NullPolicy::Omit => "omitted (Segment keeps its value)",
            NullPolicy::Null => "sent as null (unsets the trait)",
        };
        let _ = writeln!(out, "empty values: {null}");
        let _ = writeln!(out, "duplicate identities: {}", self.duplicates);
        let inferred = self
            .columns
            .iter()
            .any(|c| matches!(&c.action, Action::Trait(rule) if rule.inferred));
        if inferred {
            let _ = writeln!(
                out,
                "types inferred from the first {} records; pin one with `type` in a mapping file (--toml)",
                self.sampled
            );
        }
        if !self.constants.is_empty() {
            let _ = writeln!(out, "constants:");
            for (path, value) in &self.constants {
                let _ = writeln!(out, "  {} = {value}", display(path));
            }
        }
        if let Some(events) = &self.events {
            let _ = writeln!(out, "{}", events.describe());
        }
        out
    }

    fn type_label(&self, rule: &Rule) -> String {
        let mut label = rule.ty.map_or("as-is", |t| t.as_str()).to_owned();
        if rule.inferred {
            label.push_str(" (inferred)");
        }
        if let Some(format) = &rule.format {
            let _ = write!(label, " {format:?}");
        }
        if rule.null != self.null {
            let _ = write!(label, ", empty: {}", rule.null);
        }
        label
    }

    /// An equivalent mapping file: every column's rule spelt out, so it makes
    /// a good starting point to edit. Parsing it and resolving it against the
    /// same header gives the same mapping.
    ///
    /// # Example
    /// ```
    /// use customer_sync::mapping::{Mapping, MappingSpec};
    ///
    /// let header = ["Customer ID", "E-mail", "zip"];
    /// let spec = MappingSpec::from_toml("[identity]\nuser_id = \"Customer ID\"\n")?;
    /// let mapping = Mapping::new(Some(&spec), &header)?;
    /// let file = mapping.to_toml();
    /// assert!(file.contains(r#"E-mail = "email""#), "{file}");
    /// let again = Mapping::new(Some(&MappingSpec::from_toml(&file)?), &header)?;
    /// assert_eq!(again.describe(), mapping.describe());
    /// # Ok::<(), customer_sync::mapping::MappingError>(())
    /// ```
    pub fn to_toml(&self) -> String {
        let mut out = self.payload_toml();
        if let Some(events) = &self.events {
            events.write_toml(&mut out);
        }
        out
    }

    /// The mapping-file form of everything that shapes the payload: the
    /// seed of every record's fingerprint, so it leaves out `[events]`
    /// (turning events on must not make every record look changed).
    pub(super) fn payload_toml(&self) -> String {
        let mut out = String::new();
        out.push_str("# Segment identify mapping (edit, then pass with --mapping).\n\n");
        out.push_str("[identity]\n");
        if let Some(i) = self.user_id {
            let _ = writeln!(out, "user_id = {}", string(&self.columns[i].name));
        }
        if let Some(i) = self.anonymous_id {
            let _ = writeln!(out, "anonymous_id = {}", string(&self.columns[i].name));
        }
        if let Some(i) = self.group_id {
            let _ = writeln!(out, "group_id = {}", string(&self.columns[i].name));
        }

        out.push_str("\n[options]\n");
        let options = [
            (
                format!("unmapped = \"{}\"", self.unmapped),
                "columns not under [columns]: \"custom\" or \"drop\"",
            ),
            (
                format!("null = \"{}\"", self.null),
                "empty values: \"omit\", or \"null\" to unset the trait",
            ),
            (
                format!("duplicates = \"{}\"", self.duplicates),
                "one identity twice: \"last\", \"first\" or \"error\"",
            ),
        ];
        for (setting, comment) in options {
            let _ = writeln!(out, "{setting:<22}# {comment}");
        }

        let mut entries = Vec::new();
        let mut notes = Vec::new();
        for column in &self.columns {
            let key = toml_key(&column.name);
            match &column.action {
                Action::IdentityOnly => {}
                Action::Drop(DropReason::Unmapped) => notes.push(format!(
                    "# {key} = {}  # not sent: unmapped = \"drop\"",
                    string(&display(&default_path(&column.name)))
                )),
                // Never sent, whatever the file says: nothing to write.
                Action::Drop(DropReason::EmptyName) => {
                    notes.push(format!("# {key} has no name and is never sent"));
                }
                Action::Drop(DropReason::File) => {
                    entries.push((key, "{ drop = true }".to_owned(), false));
                }
                Action::Trait(rule) => match self.entry(&column.name, rule) {
                    Some(value) => entries.push((key, value, rule.inferred)),
                    None => notes.push(format!(
                        "# {key} is sent under its own name, by unmapped = \"custom\""
                    )),
                },
            }
        }
        if !entries.is_empty() || !notes.is_empty() {
            out.push_str("\n[columns]\n");
            let width = entries.iter().map(|(k, _, _)| k.chars().count()).max();
            for (key, value, inferred) in &entries {
                let line = format!("{key:<w$} = {value}", w = width.unwrap_or(0));
                // Part of the fingerprint's text: keep it free of sample counts.
                match inferred {
                    true => {
                        let _ = writeln!(out, "{line}  # type inferred from the data");
                    }
                    false => {
                        let _ = writeln!(out, "{line}");
                    }
                }
            }
            for note in notes {
                let _ = writeln!(out, "{note}");
            }
        }

        if !self.constants.is_empty() {
            out.push_str("\n[constants]\n");
            for (path, value) in &self.constants {
                let keys: Vec<String> = path.iter().map(|s| toml_key(s)).collect();
                let _ = writeln!(out, "{} = {}", keys.join("."), toml_value(value));
            }
        }
        out
    }

    /// The `[columns]` value for a mapped column, or `None` if its trait path
    /// cannot be written as a dotted path and is not what the column's name
    /// gives by default.
    fn entry(&self, name: &str, rule: &Rule) -> Option<String> {
        let dotted = display(&rule.path);
        let expressible = check_path(&dotted).is_ok_and(|p| p == rule.path);
        let mut parts = Vec::new();
        if expressible {
            parts.push(format!("trait = {}", string(&dotted)));
        } else if default_path(name) != rule.path {
            return None;
        }
        if rule.ty != implied_type(&rule.path)
            && let Some(ty) = rule.ty
            && rule.format.is_none()
        {
            parts.push(format!("type = \"{ty}\""));
        }
        if let Some(format) = &rule.format {
            parts.push(format!("format = {}", string(format)));
        }
        if rule.null != self.null {
            parts.push(format!("null = \"{}\"", rule.null));
        }
        Some(match parts.as_slice() {
            [] => "{}".to_owned(),
            [only] if expressible && only.starts_with("trait") => string(&dotted),
            _ => format!("{{ {} }}", parts.join(", ")),
        })
    }
}

/// A TOML key: bare when TOML allows it, quoted otherwise.
pub(super) fn toml_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare { name.to_owned() } else { string(name) }
}

/// A TOML basic string.
pub(super) fn string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A constant's JSON value as a TOML value. Constants come from TOML, so
/// every value has a TOML form (`null` cannot occur; it is written as `""`
/// rather than producing an invalid file).
fn toml_value(value: &Value) -> String {
    match value {
        Value::Null => "\"\"".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            // `{:?}` keeps the `.0` that makes `1.0` a TOML float.
            (None, Some(f)) if n.is_f64() => format!("{f:?}"),
            _ => n.to_string(),
        },
        Value::String(s) => string(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_value).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) if map.is_empty() => "{}".into(),
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{} = {}", toml_key(k), toml_value(v)))
                .collect();
            format!("{{ {} }}", fields.join(", "))
        }
    }
}
