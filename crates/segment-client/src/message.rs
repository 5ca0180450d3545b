//! Identify parameters, and turning them into a validated, serialised event.
//!
//! Validation happens once, before queueing, so an event the client accepts is
//! one Segment will accept: a refusal comes back from `identify` as a value
//! instead of being silently dropped by Segment later.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::calls::{Message, ViewParams};
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

/// Adds the shared `with_*` setters (context, integrations, timestamp,
/// messageId) to a parameter type.
macro_rules! shared_setters {
    ($ty:ident) => {
        impl $ty {
            /// Sets the event's `context` object; the client adds `context.library`.
            pub fn with_context(mut self, context: Map<String, Value>) -> Self {
                self.context = Some(context);
                self
            }

            /// Sets the `integrations` routing object.
            pub fn with_integrations(mut self, integrations: Map<String, Value>) -> Self {
                self.integrations = Some(integrations);
                self
            }

            /// Sets when the event happened; defaults to the time it is queued.
            pub fn with_timestamp(mut self, timestamp: DateTime<Utc>) -> Self {
                self.timestamp = Some(timestamp);
                self
            }

            /// Sets the `messageId` (under 100 characters); defaults to a fresh UUID.
            pub fn with_message_id(mut self, message_id: impl Into<String>) -> Self {
                self.message_id = Some(message_id.into());
                self
            }
        }
    };
}
pub(crate) use shared_setters;

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
}
shared_setters!(IdentifyParams);

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
    /// The caller's number for the event, handed back in its outcome.
    pub tag: u64,
}

/// The fields every event type shares on the wire, around its own `body`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a, B: Serialize> {
    r#type: &'static str,
    message_id: &'a str,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    anonymous_id: Option<&'a str>,
    #[serde(flatten)]
    body: B,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<&'a Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    integrations: Option<&'a Map<String, Value>>,
}

/// The fields every call type carries besides its identity.
struct Shared {
    context: Option<Map<String, Value>>,
    integrations: Option<Map<String, Value>>,
    timestamp: Option<DateTime<Utc>>,
    message_id: Option<String>,
}

macro_rules! shared {
    ($params:expr) => {
        Shared {
            context: $params.context,
            integrations: $params.integrations,
            timestamp: $params.timestamp,
            message_id: $params.message_id,
        }
    };
}

#[derive(Serialize)]
struct IdentifyBody<'a> {
    traits: &'a UserTraits,
}

#[derive(Serialize)]
struct TrackBody<'a> {
    event: &'a str,
    properties: &'a Map<String, Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GroupBody<'a> {
    group_id: &'a str,
    traits: &'a Map<String, Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AliasBody<'a> {
    previous_id: &'a str,
}

#[derive(Serialize)]
struct ViewBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<&'a str>,
    properties: &'a Map<String, Value>,
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
    // Encoded into a stack buffer: `to_string` goes through the formatting
    // machinery, a visible cost at a million events.
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes())
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut text)
        .to_owned()
}

/// `timestamp` as Segment's events carry it, `2024-01-02T03:04:05.000Z`
/// (RFC 3339, milliseconds, UTC): what `to_rfc3339_opts(Millis, true)`
/// writes, without the formatting machinery for the common case.
pub(crate) fn write_timestamp(out: &mut Vec<u8>, at: DateTime<Utc>) {
    // Events made one after another mostly share a millisecond: the text of
    // the last one written on this thread is kept and copied.
    /// Seconds and milliseconds, and their text.
    type Rendered = ((i64, u32), [u8; RENDERED_LEN]);
    thread_local! {
        static LAST: std::cell::Cell<Option<Rendered>> = const { std::cell::Cell::new(None) };
    }
    // A leap second's milliseconds run past 999, so its key is its own.
    let key = (at.timestamp(), at.timestamp_subsec_millis());
    if let Some((last, text)) = LAST.get()
        && last == key
    {
        out.extend_from_slice(&text);
        return;
    }
    let start = out.len();
    render_timestamp(out, at);
    if let Ok(text) = <[u8; RENDERED_LEN]>::try_from(&out[start..]) {
        LAST.set(Some((key, text)));
    }
}

/// The length of a four-digit year's timestamp, `2024-01-02T03:04:05.000Z`.
const RENDERED_LEN: usize = 24;

fn render_timestamp(out: &mut Vec<u8>, at: DateTime<Utc>) {
    use chrono::{Datelike, Timelike};
    let year = at.year();
    let nanos = at.timestamp_subsec_nanos();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        // Outside four-digit years, or a leap second: chrono knows the rules.
        out.extend_from_slice(at.to_rfc3339_opts(SecondsFormat::Millis, true).as_bytes());
        return;
    }
    fn digits(out: &mut Vec<u8>, n: u32, width: u32) {
        for place in (0..width).rev() {
            out.push(b'0' + (n / 10u32.pow(place) % 10) as u8);
        }
    }
    digits(out, year as u32, 4);
    for (separator, n) in [
        (b'-', at.month()),
        (b'-', at.day()),
        (b'T', at.hour()),
        (b':', at.minute()),
        (b':', at.second()),
    ] {
        out.push(separator);
        digits(out, n, 2);
    }
    out.push(b'.');
    digits(out, nanos / 1_000_000, 3);
    out.push(b'Z');
}

/// Validates an identify call whose traits are already JSON and writes the
/// event around them: byte for byte what [`prepare`] writes for the same
/// identity and traits (a `serde_json::Map` serialises to the same text as
/// the [`RawObject`](crate::RawObject) made from it), without a
/// `serde_json` pass over the traits.
///
/// # Errors
/// `invalid_payload` for an empty identity; `payload_too_large` for an
/// event over [`MAX_EVENT_BYTES`].
pub(crate) fn prepare_identify_raw(
    identity: Identity,
    traits: &crate::raw::RawObject,
) -> Result<Event, SegmentError> {
    check_id("userId", identity.user_id())?;
    check_id("anonymousId", identity.anonymous_id())?;
    let message_id = new_message_id();
    let mut json = Vec::with_capacity(traits.json().len() + 192);
    json.extend_from_slice(br#"{"type":"identify","messageId":""#);
    // A UUID needs no escaping.
    json.extend_from_slice(message_id.as_bytes());
    json.extend_from_slice(br#"","timestamp":""#);
    write_timestamp(&mut json, Utc::now());
    json.push(b'"');
    if let Some(user_id) = identity.user_id() {
        json.extend_from_slice(br#","userId":"#);
        write_string(&mut json, user_id);
    }
    if let Some(anonymous_id) = identity.anonymous_id() {
        json.extend_from_slice(br#","anonymousId":"#);
        write_string(&mut json, anonymous_id);
    }
    json.extend_from_slice(br#","traits":"#);
    json.extend_from_slice(traits.json().as_bytes());
    json.push(b'}');
    check_size(json.len())?;
    Ok(Event {
        message_id,
        identity,
        json,
        tag: 0,
    })
}

/// A JSON string, escaped as `serde_json` escapes it.
fn write_string(out: &mut Vec<u8>, text: &str) {
    crate::raw::write_json(out, text);
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

/// Validates an identify call against Segment's rules and serialises it.
///
/// # Errors
/// `invalid_payload` for an empty identity, a bad `messageId` or a trait set
/// twice; `payload_too_large` for an event over [`MAX_EVENT_BYTES`].
pub(crate) fn prepare(params: IdentifyParams) -> Result<Event, SegmentError> {
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
    let body = IdentifyBody {
        traits: &params.traits,
    };
    finish("identify", params.identity.clone(), shared!(params), body)
}

/// Validates a call of any type against Segment's rules and serialises it:
/// the one path every event takes before it is queued.
///
/// # Errors
/// `invalid_payload` for an empty identity, a missing field the type
/// requires (track `event`, group `groupId`, alias `previousId`/`userId`), a
/// bad `messageId` or a trait set twice; `payload_too_large` over
/// [`MAX_EVENT_BYTES`].
pub(crate) fn prepare_message(message: Message) -> Result<Event, SegmentError> {
    match message {
        Message::Identify(params) => prepare(params),
        Message::Track(p) => {
            require("track", "event", &p.event)?;
            let body = TrackBody {
                event: &p.event,
                properties: &p.properties,
            };
            finish("track", p.identity.clone(), shared!(p), body)
        }
        Message::Group(p) => {
            require("group", "groupId", &p.group_id)?;
            let body = GroupBody {
                group_id: &p.group_id,
                traits: &p.traits,
            };
            finish("group", p.identity.clone(), shared!(p), body)
        }
        Message::Alias(p) => {
            require("alias", "previousId", &p.previous_id)?;
            require("alias", "userId", &p.user_id)?;
            let body = AliasBody {
                previous_id: &p.previous_id,
            };
            finish(
                "alias",
                Identity::UserId(p.user_id.clone()),
                shared!(p),
                body,
            )
        }
        Message::Page(p) => finish_view("page", p),
        Message::Screen(p) => finish_view("screen", p),
    }
}

fn finish_view(kind: &'static str, p: ViewParams) -> Result<Event, SegmentError> {
    let body = ViewBody {
        name: p.name.as_deref(),
        category: p.category.as_deref(),
        properties: &p.properties,
    };
    finish(kind, p.identity.clone(), shared!(p), body)
}

/// Refuses an empty required field, as Segment drops such an event.
fn require(kind: &str, field: &str, value: &str) -> Result<(), SegmentError> {
    if value.trim().is_empty() {
        Err(invalid(format!("{kind} {field} is empty")))
    } else {
        Ok(())
    }
}

/// The shared half of validation and serialisation, for every type.
fn finish<B: Serialize>(
    kind: &'static str,
    identity: Identity,
    shared: Shared,
    body: B,
) -> Result<Event, SegmentError> {
    let Shared {
        mut context,
        integrations,
        timestamp,
        message_id,
    } = shared;
    check_id("userId", identity.user_id())?;
    check_id("anonymousId", identity.anonymous_id())?;
    let message_id = match message_id {
        Some(id) => {
            check_message_id(&id)?;
            id
        }
        None => new_message_id(),
    };
    if let Some(context) = context.as_mut() {
        context.entry("library").or_insert_with(library);
    }
    let timestamp = {
        let mut text = Vec::with_capacity(24);
        write_timestamp(&mut text, timestamp.unwrap_or_else(Utc::now));
        String::from_utf8(text).unwrap_or_default()
    };
    let wire = Wire {
        r#type: kind,
        message_id: &message_id,
        timestamp,
        user_id: identity.user_id(),
        anonymous_id: identity.anonymous_id(),
        body,
        context: context.as_ref(),
        integrations: integrations.as_ref(),
    };
    let mut json = Vec::with_capacity(512);
    serde_json::to_writer(&mut json, &wire).map_err(|e| {
        SegmentError::with_source(Kind::InvalidPayload, "event could not be serialised", e)
    })?;
    check_size(json.len())?;
    Ok(Event {
        message_id,
        identity,
        json,
        tag: 0,
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
/// `invalid_payload` unless it is an event of a known type with a
/// `messageId`, an identity and the fields its type requires; `payload_too_large` over [`MAX_EVENT_BYTES`].
pub(crate) fn from_json(json: Vec<u8>) -> Result<Event, SegmentError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Head {
        r#type: String,
        message_id: String,
        user_id: Option<String>,
        anonymous_id: Option<String>,
        event: Option<String>,
        group_id: Option<String>,
        previous_id: Option<String>,
    }
    check_size(json.len())?;
    let head: Head = serde_json::from_slice(&json).map_err(|e| {
        SegmentError::with_source(Kind::InvalidPayload, "stored event is not valid JSON", e)
    })?;
    let kind = head.r#type.as_str();
    let required: &[(&str, &Option<String>)] = match kind {
        "identify" | "page" | "screen" => &[],
        "track" => &[("event", &head.event)],
        "group" => &[("groupId", &head.group_id)],
        "alias" => &[("previousId", &head.previous_id), ("userId", &head.user_id)],
        other => return Err(invalid(format!("stored event has type `{other}`"))),
    };
    for (field, value) in required {
        require(kind, field, value.as_deref().unwrap_or_default())?;
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
        tag: 0,
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
    fn timestamps_are_written_as_chrono_writes_them() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut times: Vec<DateTime<Utc>> = (0..2_000)
            .map(|_| {
                let seconds = rng.i64(-62_135_596_800..253_402_300_799);
                DateTime::from_timestamp(seconds, rng.u32(..1_000_000_000)).unwrap()
            })
            .collect();
        times.extend([
            Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap(),
            DateTime::from_timestamp(0, 999_999_999).unwrap(),
            DateTime::from_timestamp(253_402_300_800, 1_000_000).unwrap(),
            DateTime::from_timestamp(-62_135_596_801, 0).unwrap(),
            // A leap second.
            DateTime::from_timestamp(1_483_228_799, 1_500_000_000).unwrap(),
            Utc::now(),
        ]);
        for at in times {
            let mut out = Vec::new();
            write_timestamp(&mut out, at);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                at.to_rfc3339_opts(SecondsFormat::Millis, true)
            );
        }
    }

    #[test]
    fn a_timestamp_kept_from_the_last_event_is_only_reused_in_its_millisecond() {
        let second = 1_700_000_000;
        let times = [
            (second, 100_000_000),
            (second, 100_999_999),
            (second, 200_000_000),
            (second + 1, 200_000_000),
            (second + 1, 200_000_000),
            // A leap second, then the second after it.
            (1_483_228_799, 1_500_000_000),
            (1_483_228_800, 500_000_000),
            // Past four-digit years, then back.
            (253_402_300_800, 1_000_000),
            (253_402_300_800, 1_000_000),
            (second, 100_000_000),
        ];
        let mut out = Vec::new();
        let mut want = String::new();
        for (seconds, nanos) in times {
            let at = DateTime::from_timestamp(seconds, nanos).unwrap();
            write_timestamp(&mut out, at);
            want.push_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true));
            want.push(' ');
            out.push(b' ');
        }
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    #[test]
    fn raw_traits_make_the_same_event_as_a_map() {
        let traits = serde_json::json!({
            "address": {"city": "London", "postalCode": "N1"},
            "email": "a\"b@c.d\n",
            "ltv": 137.5,
            "n": [1, null, true],
            "z": null,
        });
        let map = traits.as_object().unwrap().clone();
        let raw = crate::raw::RawObject::from_map(&map);
        for identity in [
            Identity::user("u1"),
            Identity::anonymous("a\"1"),
            Identity::Both {
                user_id: "u é".into(),
                anonymous_id: "a1".into(),
            },
        ] {
            let fast = prepare_identify_raw(identity.clone(), &raw).unwrap();
            let slow = prepare(
                IdentifyParams::new(identity.clone())
                    .with_message_id(fast.message_id.clone())
                    .with_traits(UserTraits {
                        custom: map.clone(),
                        ..UserTraits::default()
                    }),
            )
            .unwrap();
            // The same bytes but for the timestamp, taken at another moment.
            let strip = |json: &[u8]| {
                let mut value: Value = serde_json::from_slice(json).unwrap();
                let stamp = value["timestamp"].as_str().unwrap().to_owned();
                value["timestamp"] = Value::Null;
                (serde_json::to_string(&value).unwrap(), stamp.len())
            };
            assert_eq!(strip(&fast.json), strip(&slow.json));
            let (fast_text, slow_text) = (
                String::from_utf8(fast.json.clone()).unwrap(),
                String::from_utf8(slow.json.clone()).unwrap(),
            );
            let at = fast_text.find(r#""timestamp":""#).unwrap() + 13;
            let cut = |text: &str| format!("{}{}", &text[..at], &text[at + 24..]);
            assert_eq!(cut(&fast_text), cut(&slow_text));
            assert_eq!(fast.identity, identity);
        }
        assert_eq!(
            prepare_identify_raw(Identity::user(" "), &raw)
                .unwrap_err()
                .message(),
            "userId is empty"
        );
        let mut writer = crate::raw::ObjectWriter::new();
        writer.string("blob", &"x".repeat(MAX_EVENT_BYTES));
        let err = prepare_identify_raw(Identity::user("u"), &writer.finish()).unwrap_err();
        assert_eq!(err.code(), Some("payload_too_large"));
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

    fn ts() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap()
    }

    fn wire(message: impl Into<Message>) -> String {
        String::from_utf8(prepare_message(message.into()).unwrap().json).unwrap()
    }

    #[test]
    fn every_type_has_segments_wire_shape() {
        use crate::calls::{AliasParams, GroupParams, TrackParams};
        let id = Identity::user("u1");
        assert_eq!(
            wire(
                TrackParams::new(id.clone(), "Order Completed")
                    .with_property("revenue", 9.5)
                    .with_message_id("m1")
                    .with_timestamp(ts())
            ),
            r#"{"type":"track","messageId":"m1","timestamp":"2024-01-02T03:04:05.000Z","userId":"u1","event":"Order Completed","properties":{"revenue":9.5}}"#
        );
        assert_eq!(
            wire(
                GroupParams::new(Identity::anonymous("a1"), "acc_1")
                    .with_trait("name", "Initech")
                    .with_message_id("m2")
                    .with_timestamp(ts())
            ),
            r#"{"type":"group","messageId":"m2","timestamp":"2024-01-02T03:04:05.000Z","anonymousId":"a1","groupId":"acc_1","traits":{"name":"Initech"}}"#
        );
        assert_eq!(
            wire(
                AliasParams::new("anon_7", "u1")
                    .with_message_id("m3")
                    .with_timestamp(ts())
            ),
            r#"{"type":"alias","messageId":"m3","timestamp":"2024-01-02T03:04:05.000Z","userId":"u1","previousId":"anon_7"}"#
        );
        let view = ViewParams::new(id)
            .with_name("Pricing")
            .with_category("Docs")
            .with_property("path", "/pricing")
            .with_message_id("m4")
            .with_timestamp(ts());
        assert_eq!(
            wire(Message::Page(view.clone())),
            r#"{"type":"page","messageId":"m4","timestamp":"2024-01-02T03:04:05.000Z","userId":"u1","name":"Pricing","category":"Docs","properties":{"path":"/pricing"}}"#
        );
        assert_eq!(
            wire(Message::Screen(
                ViewParams::new(Identity::user("u1"))
                    .with_message_id("m5")
                    .with_timestamp(ts())
            )),
            r#"{"type":"screen","messageId":"m5","timestamp":"2024-01-02T03:04:05.000Z","userId":"u1","properties":{}}"#
        );
        // Identify through the common path is byte-identical to the identify path.
        let identify = user("u1").with_message_id("m6").with_timestamp(ts());
        assert_eq!(
            wire(identify.clone()),
            String::from_utf8(prepare(identify).unwrap().json).unwrap()
        );
    }

    #[test]
    fn what_segment_drops_is_refused_for_every_type() {
        use crate::calls::{AliasParams, GroupParams, TrackParams};
        let refused: Vec<(Message, &str)> = vec![
            (
                TrackParams::new(Identity::user("u"), "").into(),
                "track event is empty",
            ),
            (
                TrackParams::new(Identity::user("u"), " ").into(),
                "track event is empty",
            ),
            (
                GroupParams::new(Identity::user("u"), "").into(),
                "group groupId is empty",
            ),
            (
                AliasParams::new("", "u").into(),
                "alias previousId is empty",
            ),
            (AliasParams::new("p", "").into(), "alias userId is empty"),
            (
                TrackParams::new(Identity::user(""), "E").into(),
                "userId is empty",
            ),
            (
                GroupParams::new(Identity::anonymous(""), "g").into(),
                "anonymousId is empty",
            ),
            (
                Message::Page(ViewParams::new(Identity::user(""))),
                "userId is empty",
            ),
            (
                Message::Screen(ViewParams::new(Identity::anonymous(" "))),
                "anonymousId is empty",
            ),
            (
                Message::Page(
                    ViewParams::new(Identity::user("u")).with_message_id("x".repeat(100)),
                ),
                "messageId is 100 characters; Segment requires fewer than 100",
            ),
            (
                TrackParams::new(Identity::user("u"), "E")
                    .with_message_id("")
                    .into(),
                "messageId is empty",
            ),
        ];
        for (message, text) in refused {
            let kind = message.kind();
            let err = prepare_message(message).unwrap_err();
            assert_eq!(err.code(), Some("invalid_payload"), "{kind}");
            assert_eq!(err.message(), text, "{kind}");
        }
    }

    #[test]
    fn the_32000_byte_limit_holds_for_every_type() {
        use crate::calls::{AliasParams, GroupParams, TrackParams};
        let big = Value::String("x".repeat(MAX_EVENT_BYTES));
        let mut context = Map::new();
        context.insert("blob".into(), big.clone());
        let messages: Vec<Message> = vec![
            TrackParams::new(Identity::user("u"), "E")
                .with_property("blob", big.clone())
                .into(),
            GroupParams::new(Identity::user("u"), "g")
                .with_trait("blob", big.clone())
                .into(),
            AliasParams::new("p", "u").with_context(context).into(),
            Message::Page(ViewParams::new(Identity::user("u")).with_property("blob", big.clone())),
            Message::Screen(
                ViewParams::new(Identity::user("u")).with_name("x".repeat(MAX_EVENT_BYTES)),
            ),
        ];
        for message in messages {
            let kind = message.kind();
            let err = prepare_message(message).unwrap_err();
            assert_eq!(err.code(), Some("payload_too_large"), "{kind}");
        }
        // Exactly at the limit is accepted.
        let base = wire(TrackParams::new(Identity::user("u"), "E").with_message_id("m")).len();
        let pad = MAX_EVENT_BYTES - base - r#""b":"""#.len();
        let at_limit = prepare_message(
            TrackParams::new(Identity::user("u"), "E")
                .with_message_id("m")
                .with_property("b", "x".repeat(pad))
                .into(),
        )
        .unwrap();
        assert_eq!(at_limit.json.len(), MAX_EVENT_BYTES);
    }

    #[test]
    fn stored_events_of_every_type_round_trip() {
        use crate::calls::{AliasParams, GroupParams, TrackParams};
        let messages: Vec<Message> = vec![
            TrackParams::new(Identity::user("u"), "E").into(),
            GroupParams::new(Identity::anonymous("a"), "g").into(),
            AliasParams::new("p", "u").into(),
            Message::Page(ViewParams::new(Identity::user("u"))),
            Message::Screen(ViewParams::new(Identity::user("u"))),
        ];
        for message in messages {
            let event = prepare_message(message).unwrap();
            let again = from_json(event.json.clone()).unwrap();
            assert_eq!(again.message_id, event.message_id);
            assert_eq!(again.identity, event.identity);
        }
        for bad in [
            r#"{"type":"track","messageId":"m","userId":"u"}"#,
            r#"{"type":"track","messageId":"m","userId":"u","event":""}"#,
            r#"{"type":"group","messageId":"m","userId":"u"}"#,
            r#"{"type":"alias","messageId":"m","userId":"u"}"#,
            r#"{"type":"alias","messageId":"m","anonymousId":"a","previousId":"p"}"#,
            r#"{"type":"bogus","messageId":"m","userId":"u"}"#,
        ] {
            assert!(from_json(bad.as_bytes().to_vec()).is_err(), "{bad}");
        }
    }
}
