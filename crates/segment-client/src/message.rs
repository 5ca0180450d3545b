//! Identify parameters, and turning them into a validated, serialised event.
//!
//! Validation happens once, before queueing, so an event the client accepts is
//! one Segment will accept: a refusal comes back from `identify` as a value
//! instead of being silently dropped by Segment later.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Kind, SegmentError};
use crate::payload::{SegmentIdentifyPayload, UserTraits};

/// Segment drops events whose JSON is larger than this many bytes.
pub const MAX_EVENT_BYTES: usize = 32_000;
/// Segment requires a `messageId` shorter than this many characters.
pub const MAX_MESSAGE_ID_CHARS: usize = 100;

/// Who an identify call is about: a user id, an anonymous id, or both.
///
/// Segment needs at least one; this type makes "neither" unrepresentable.
/// Empty strings are still refused by validation.
///
/// # Example
/// ```
/// use segment_client::Identity;
///
/// let id = Identity::user("cus_1");
/// assert_eq!(id.user_id(), Some("cus_1"));
/// assert_eq!(id.anonymous_id(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Identity {
    /// A known user (`userId`).
    UserId(String),
    /// An anonymous visitor (`anonymousId`).
    AnonymousId(String),
    /// Both ids, e.g. when an anonymous visitor signs up.
    Both {
        /// Segment's `userId`.
        user_id: String,
        /// Segment's `anonymousId`.
        anonymous_id: String,
    },
}

impl Identity {
    /// A known user.
    pub fn user(id: impl Into<String>) -> Self {
        Identity::UserId(id.into())
    }

    /// An anonymous visitor.
    pub fn anonymous(id: impl Into<String>) -> Self {
        Identity::AnonymousId(id.into())
    }

    /// The `userId`, if any.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Identity::UserId(id) | Identity::Both { user_id: id, .. } => Some(id),
            Identity::AnonymousId(_) => None,
        }
    }

    /// The `anonymousId`, if any.
    pub fn anonymous_id(&self) -> Option<&str> {
        match self {
            Identity::AnonymousId(id)
            | Identity::Both {
                anonymous_id: id, ..
            } => Some(id),
            Identity::UserId(_) => None,
        }
    }
}

/// Everything an identify call carries.
///
/// Build one with [`IdentifyParams::new`] and the `with_*` methods, or convert
/// a [`SegmentIdentifyPayload`] with `From`. Fields left `None` are filled in
/// when the event is queued: `timestamp` with the current time and
/// `message_id` with a fresh UUID, which is then kept on every retry.
///
/// # Example
/// ```
/// use segment_client::{IdentifyParams, Identity, UserTraits};
///
/// let params = IdentifyParams::new(Identity::user("cus_1"))
///     .with_traits(UserTraits { email: Some("ada@example.com".into()), ..Default::default() })
///     .with_message_id("import-2024-05-01-cus_1");
/// assert_eq!(params.identity.user_id(), Some("cus_1"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct IdentifyParams {
    /// Who the call is about.
    pub identity: Identity,
    /// What is known about them.
    pub traits: UserTraits,
    /// Extra `context` for this event; the client adds `context.library`.
    pub context: Option<Map<String, Value>>,
    /// Segment's `integrations` routing object.
    pub integrations: Option<Map<String, Value>>,
    /// When the event happened; defaults to the time it is queued.
    pub timestamp: Option<DateTime<Utc>>,
    /// A caller-chosen `messageId` (under 100 characters) for deduplication;
    /// defaults to a fresh UUID.
    pub message_id: Option<String>,
}

impl IdentifyParams {
    /// Parameters for `identity` with no traits.
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            traits: UserTraits::default(),
            context: None,
            integrations: None,
            timestamp: None,
            message_id: None,
        }
    }

    /// Sets the traits.
    pub fn with_traits(mut self, traits: UserTraits) -> Self {
        self.traits = traits;
        self
    }

    /// Sets the event's `context` object.
    pub fn with_context(mut self, context: Map<String, Value>) -> Self {
        self.context = Some(context);
        self
    }

    /// Sets the `integrations` object.
    pub fn with_integrations(mut self, integrations: Map<String, Value>) -> Self {
        self.integrations = Some(integrations);
        self
    }

    /// Sets when the event happened.
    pub fn with_timestamp(mut self, timestamp: DateTime<Utc>) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Sets the `messageId`.
    pub fn with_message_id(mut self, message_id: impl Into<String>) -> Self {
        self.message_id = Some(message_id.into());
        self
    }
}

impl From<SegmentIdentifyPayload> for IdentifyParams {
    fn from(payload: SegmentIdentifyPayload) -> Self {
        IdentifyParams::new(Identity::UserId(payload.user_id)).with_traits(payload.traits)
    }
}

/// The `context.library` this client reports to Segment.
pub(crate) fn library() -> Value {
    serde_json::json!({ "name": LIBRARY_NAME, "version": env!("CARGO_PKG_VERSION") })
}

/// The `context.library.name` this client reports to Segment.
pub const LIBRARY_NAME: &str = "segment-sync";

/// A validated event, serialised once: its bytes are what every attempt sends.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub message_id: String,
    pub identity: Identity,
    pub json: Vec<u8>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireIdentify<'a> {
    r#type: &'static str,
    message_id: &'a str,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    anonymous_id: Option<&'a str>,
    traits: &'a UserTraits,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<&'a Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    integrations: Option<&'a Map<String, Value>>,
}

/// A fresh random (version 4) UUID for a `messageId`: what the client uses
/// when none is given. Useful to know an event's id before queueing it.
///
/// # Example
/// ```
/// let id = segment_client::new_message_id();
/// assert_eq!(id.len(), 36);
/// ```
pub fn new_message_id() -> String {
    uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes())
        .into_uuid()
        .to_string()
}

fn invalid(message: String) -> SegmentError {
    SegmentError::new(Kind::InvalidPayload, message)
}

fn check_id(field: &str, value: Option<&str>) -> Result<(), SegmentError> {
    match value {
        Some(v) if v.trim().is_empty() => Err(invalid(format!("{field} is empty"))),
        _ => Ok(()),
    }
}

/// Validates `params` against Segment's rules and serialises the event.
///
/// # Errors
/// `invalid_payload` for an empty identity, a bad `messageId` or a trait set
/// twice; `payload_too_large` for an event over [`MAX_EVENT_BYTES`].
pub(crate) fn prepare(mut params: IdentifyParams) -> Result<Event, SegmentError> {
    check_id("userId", params.identity.user_id())?;
    check_id("anonymousId", params.identity.anonymous_id())?;
    let message_id = match params.message_id.take() {
        Some(id) => {
            check_message_id(&id)?;
            id
        }
        None => new_message_id(),
    };
    if !params.traits.custom.is_empty()
        && let Some(name) = params
            .traits
            .set_reserved()
            .find(|name| params.traits.custom.contains_key(*name))
    {
        return Err(invalid(format!(
            "trait `{name}` is set both as a typed field and in custom traits"
        )));
    }
    if let Some(context) = params.context.as_mut() {
        context.entry("library").or_insert_with(library);
    }
    let timestamp = params
        .timestamp
        .unwrap_or_else(Utc::now)
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    let wire = WireIdentify {
        r#type: "identify",
        message_id: &message_id,
        timestamp,
        user_id: params.identity.user_id(),
        anonymous_id: params.identity.anonymous_id(),
        traits: &params.traits,
        context: params.context.as_ref(),
        integrations: params.integrations.as_ref(),
    };
    let mut json = Vec::with_capacity(512);
    serde_json::to_writer(&mut json, &wire).map_err(|e| {
        SegmentError::with_source(Kind::InvalidPayload, "event could not be serialised", e)
    })?;
    check_size(json.len())?;
    Ok(Event {
        message_id,
        identity: params.identity,
        json,
    })
}

/// Refuses a `messageId` Segment would not accept: empty, or too long.
fn check_message_id(id: &str) -> Result<(), SegmentError> {
    if id.is_empty() {
        return Err(invalid("messageId is empty".into()));
    }
    let chars = id.chars().count();
    if chars >= MAX_MESSAGE_ID_CHARS {
        return Err(invalid(format!(
            "messageId is {chars} characters; Segment requires fewer than {MAX_MESSAGE_ID_CHARS}"
        )));
    }
    Ok(())
}

/// Refuses an event Segment would drop for its size.
fn check_size(bytes: usize) -> Result<(), SegmentError> {
    if bytes > MAX_EVENT_BYTES {
        return Err(SegmentError::new(
            Kind::PayloadTooLarge,
            format!("event is {bytes} bytes; Segment drops events over {MAX_EVENT_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Rebuilds an event from its serialised JSON (as stored by a caller).
///
/// # Errors
/// `invalid_payload` unless it is an identify event with a `messageId` and an
/// identity; `payload_too_large` over [`MAX_EVENT_BYTES`].
pub(crate) fn from_json(json: Vec<u8>) -> Result<Event, SegmentError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Head {
        r#type: String,
        message_id: String,
        user_id: Option<String>,
        anonymous_id: Option<String>,
    }
    check_size(json.len())?;
    let head: Head = serde_json::from_slice(&json).map_err(|e| {
        SegmentError::with_source(Kind::InvalidPayload, "stored event is not valid JSON", e)
    })?;
    if head.r#type != "identify" {
        return Err(invalid(format!("stored event has type `{}`", head.r#type)));
    }
    let identity = match (head.user_id, head.anonymous_id) {
        (Some(user_id), Some(anonymous_id)) => Identity::Both {
            user_id,
            anonymous_id,
        },
        (Some(user_id), None) => Identity::UserId(user_id),
        (None, Some(anonymous_id)) => Identity::AnonymousId(anonymous_id),
        (None, None) => return Err(invalid("stored event has no identity".into())),
    };
    check_id("userId", identity.user_id())?;
    check_id("anonymousId", identity.anonymous_id())?;
    check_message_id(&head.message_id)?;
    Ok(Event {
        message_id: head.message_id,
        identity,
        json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn user(id: &str) -> IdentifyParams {
        IdentifyParams::new(Identity::user(id))
    }

    #[test]
    fn serialises_the_wire_event_once() {
        let ts = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
        let event = prepare(
            user("u1")
                .with_message_id("m1")
                .with_timestamp(ts)
                .with_traits(UserTraits {
                    email: Some("a@b.c".into()),
                    ..UserTraits::default()
                }),
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&event.json).unwrap(),
            r#"{"type":"identify","messageId":"m1","timestamp":"2024-01-02T03:04:05.000Z","userId":"u1","traits":{"email":"a@b.c"}}"#
        );
    }

    #[test]
    fn generates_a_uuid_message_id() {
        let a = prepare(user("u1")).unwrap();
        let b = prepare(user("u1")).unwrap();
        assert_eq!(a.message_id.len(), 36);
        assert_ne!(a.message_id, b.message_id);
    }

    #[test]
    fn refuses_empty_identity() {
        for params in [
            user(""),
            user("  "),
            IdentifyParams::new(Identity::anonymous("")),
        ] {
            let err = prepare(params).unwrap_err();
            assert_eq!(err.code(), Some("invalid_payload"));
        }
        let err = prepare(user("")).unwrap_err();
        assert_eq!(err.message(), "userId is empty");
    }

    #[test]
    fn message_id_must_be_under_100_chars() {
        assert!(prepare(user("u").with_message_id("x".repeat(99))).is_ok());
        let err = prepare(user("u").with_message_id("x".repeat(100))).unwrap_err();
        assert_eq!(err.code(), Some("invalid_payload"));
        assert!(prepare(user("u").with_message_id("")).is_err());
    }

    #[test]
    fn refuses_events_over_32000_bytes() {
        let mut traits = UserTraits::default();
        traits
            .custom
            .insert("blob".into(), Value::String("x".repeat(MAX_EVENT_BYTES)));
        let err = prepare(user("u").with_traits(traits)).unwrap_err();
        assert_eq!(err.code(), Some("payload_too_large"));
        assert!(err.is_invalid_payload());
    }

    #[test]
    fn accepts_an_event_of_exactly_the_limit() {
        let base = prepare(user("u").with_message_id("m")).unwrap().json.len();
        let overhead = r#""blob":"""#.len();
        let mut traits = UserTraits::default();
        traits.custom.insert(
            "blob".into(),
            Value::String("x".repeat(MAX_EVENT_BYTES - base - overhead)),
        );
        let event = prepare(user("u").with_message_id("m").with_traits(traits)).unwrap();
        assert_eq!(event.json.len(), MAX_EVENT_BYTES);
    }

    #[test]
    fn refuses_a_trait_set_twice() {
        let mut traits = UserTraits {
            email: Some("a@b.c".into()),
            ..UserTraits::default()
        };
        traits.custom.insert("email".into(), Value::Null);
        let err = prepare(user("u").with_traits(traits)).unwrap_err();
        assert!(err.message().contains("`email`"), "{}", err.message());
    }

    #[test]
    fn stored_events_round_trip_and_bad_ones_are_refused() {
        let event = prepare(user("u1").with_message_id("m1")).unwrap();
        let again = from_json(event.json.clone()).unwrap();
        assert_eq!(
            (again.message_id.as_str(), again.identity),
            ("m1", Identity::user("u1"))
        );
        assert!(from_json(b"{}".to_vec()).is_err());
        assert!(from_json(br#"{"type":"track","messageId":"m","userId":"u"}"#.to_vec()).is_err());
        assert!(from_json(br#"{"type":"identify","messageId":"m"}"#.to_vec()).is_err());
    }

    #[test]
    fn per_event_context_gets_the_library() {
        let mut context = Map::new();
        context.insert("ip".into(), "127.0.0.1".into());
        let event = prepare(user("u").with_context(context)).unwrap();
        let json: Value = serde_json::from_slice(&event.json).unwrap();
        assert_eq!(json["context"]["library"]["name"], LIBRARY_NAME);
        assert_eq!(json["context"]["ip"], "127.0.0.1");
    }
}
