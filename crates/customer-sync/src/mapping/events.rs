//! The `[events]` section: `track` events sent when a customer is added,
//! changed or removed, next to (or instead of) its identify.

use std::fmt::Write;

use segment_client::TrackParams;
use serde_json::{Map, Value};

use super::MappedCustomer;
use super::render::string as toml_string;

/// Which `track` events a sync sends when a customer changes, from the
/// mapping file's `[events]` section. Each name is optional; a missing one
/// sends no event of that kind.
///
/// * `added`: the customer is new to Segment (not in the state, removed
///   before, or never accepted); the properties are all its traits.
/// * `changed`: its payload changed since Segment accepted it; the
///   properties are the traits that changed, with their new values (`null`
///   for a trait it no longer has).
/// * `removed`: a source read to its end no longer has it; the properties
///   are the traits Segment last accepted. This event is the only signal of
///   a removal Segment ever gets, so it is opt-in.
/// * `identify = false` sends only the track events.
///
/// # Example
/// ```
/// use customer_sync::mapping::{Mapping, MappingSpec};
///
/// let spec = MappingSpec::from_toml(
///     "[events]\nadded = \"Customer Created\"\nremoved = \"Customer Deleted\"\n",
/// )?;
/// let mapping = Mapping::new(Some(&spec), &["id", "email"])?;
/// let events = mapping.events().expect("an [events] section");
/// assert_eq!(events.added.as_deref(), Some("Customer Created"));
/// assert_eq!(events.changed, None);
/// assert!(events.identify);
/// # Ok::<(), customer_sync::mapping::MappingError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChangeEvents {
    /// The event sent for a customer new to Segment.
    pub added: Option<String>,
    /// The event sent for a customer whose traits changed.
    pub changed: Option<String>,
    /// The event sent for a customer gone from the source.
    pub removed: Option<String>,
    /// Whether the identify call is sent too (the default).
    pub identify: bool,
}

impl Default for ChangeEvents {
    fn default() -> Self {
        Self {
            added: None,
            changed: None,
            removed: None,
            identify: true,
        }
    }
}

/// Which of the events a record's change is.
///
/// # Example
/// ```
/// use customer_sync::mapping::{ChangeKind, Mapping, MappingSpec};
///
/// let spec = MappingSpec::from_toml("[events]\nchanged = \"Customer Updated\"\n")?;
/// let mapping = Mapping::new(Some(&spec), &["id"])?;
/// let events = mapping.events().unwrap();
/// assert_eq!(events.name(ChangeKind::Changed), Some("Customer Updated"));
/// assert_eq!(events.name(ChangeKind::Added), None);
/// assert_eq!(ChangeKind::Removed.as_str(), "removed");
/// # Ok::<(), customer_sync::mapping::MappingError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// New to Segment.
    Added,
    /// Changed since Segment accepted it.
    Changed,
    /// Gone from the source.
    Removed,
}

impl ChangeKind {
    /// The kind named by [`as_str`](Self::as_str).
    pub(crate) fn parse(name: &str) -> Option<ChangeKind> {
        [ChangeKind::Added, ChangeKind::Changed, ChangeKind::Removed]
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }

    /// The kind's name in reports and the outbox.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Changed => "changed",
            ChangeKind::Removed => "removed",
        }
    }
}

impl ChangeEvents {
    /// The event name for `kind`, if the section names one.
    pub fn name(&self, kind: ChangeKind) -> Option<&str> {
        match kind {
            ChangeKind::Added => self.added.as_deref(),
            ChangeKind::Changed => self.changed.as_deref(),
            ChangeKind::Removed => self.removed.as_deref(),
        }
    }

    /// The `added` track a first sync sends for `customer` (`None` when the
    /// section names no `added` event): its properties are the traits with
    /// a value. `preview` shows it; later runs send `changed` and `removed`
    /// events by what the state says Segment has.
    ///
    /// # Example
    /// ```
    /// use customer_sync::mapping::{Mapping, MappingSpec};
    /// use customer_sync::{Field, FieldValue, Location, Record};
    ///
    /// let spec = MappingSpec::from_toml("[events]\nadded = \"Customer Created\"\n")?;
    /// let mapping = Mapping::new(Some(&spec), &["id", "email"])?;
    /// let field = |name: &str, value: &str| Field {
    ///     name: name.into(),
    ///     value: FieldValue::Text(value.into()),
    /// };
    /// let record = Record {
    ///     location: Location::new("c.csv", 2),
    ///     fields: vec![field("id", "u1"), field("email", "a@x.io")],
    /// };
    /// let customer = mapping.apply(&record)?;
    /// let track = mapping.events().unwrap().added_track(&customer).unwrap();
    /// assert_eq!(track.event, "Customer Created");
    /// assert_eq!(track.properties["email"], "a@x.io");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn added_track(&self, customer: &MappedCustomer) -> Option<TrackParams> {
        let name = self.added.as_deref()?;
        Some(
            TrackParams::new(customer.identity.clone(), name)
                .with_properties(present(&customer.traits)),
        )
    }

    /// The section in mapping-file form.
    pub(super) fn write_toml(&self, out: &mut String) {
        out.push_str("\n[events]\n");
        for kind in [ChangeKind::Added, ChangeKind::Changed, ChangeKind::Removed] {
            if let Some(name) = self.name(kind) {
                let _ = writeln!(out, "{:<8} = {}", kind.as_str(), toml_string(name));
            }
        }
        if !self.identify {
            out.push_str("identify = false  # only the track events are sent\n");
        }
    }

    /// One line for `describe`.
    pub(super) fn describe(&self) -> String {
        let kinds: Vec<String> = [ChangeKind::Added, ChangeKind::Changed, ChangeKind::Removed]
            .into_iter()
            .filter_map(|kind| Some(format!("{} -> \"{}\"", kind.as_str(), self.name(kind)?)))
            .collect();
        let identify = match self.identify {
            true => "with the identify",
            false => "instead of the identify",
        };
        format!("track events: {} ({identify})", kinds.join(", "))
    }
}

/// The traits with a value (a `null` unsets a trait: it is no property).
pub(crate) fn present(traits: &Map<String, Value>) -> Map<String, Value> {
    traits
        .iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}
