//! The rest of Segment's spec beside identify: track, group, alias, page and
//! screen, and [`Message`], which holds a call of any type.
//!
//! Every type goes through the same validation and serialisation as identify
//! (see `message.rs`), so the queue, batcher, transport and reports treat
//! all of them alike.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::message::{IdentifyParams, Identity, shared_setters};

/// A `track` call: something the user did.
///
/// `event` is required and must not be empty (Segment drops a track without
/// one; the client refuses it with `invalid_payload`).
///
/// # Example
/// ```
/// use segment_client::{Identity, TrackParams};
///
/// let params = TrackParams::new(Identity::user("cus_1"), "Order Completed")
///     .with_property("revenue", 42.5);
/// assert_eq!(params.properties["revenue"], 42.5);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TrackParams {
    /// Who did it.
    pub identity: Identity,
    /// The event's name, e.g. `"Order Completed"`.
    pub event: String,
    /// The event's properties.
    pub properties: Map<String, Value>,
    /// Extra `context` for this event; the client adds `context.library`.
    pub context: Option<Map<String, Value>>,
    /// Segment's `integrations` routing object.
    pub integrations: Option<Map<String, Value>>,
    /// When it happened; defaults to the time it is queued.
    pub timestamp: Option<DateTime<Utc>>,
    /// A caller-chosen `messageId`; defaults to a fresh UUID.
    pub message_id: Option<String>,
}

impl TrackParams {
    /// A track of `event` by `identity`, with no properties.
    pub fn new(identity: Identity, event: impl Into<String>) -> Self {
        Self {
            identity,
            event: event.into(),
            properties: Map::new(),
            context: None,
            integrations: None,
            timestamp: None,
            message_id: None,
        }
    }

    /// Sets all the properties.
    pub fn with_properties(mut self, properties: Map<String, Value>) -> Self {
        self.properties = properties;
        self
    }

    /// Sets one property.
    pub fn with_property(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }
}
shared_setters!(TrackParams);

/// A `group` call: ties a user to a group (an account, company or team).
///
/// `group_id` is required and must not be empty; like every call it also
/// needs a `userId` or `anonymousId`.
///
/// # Example
/// ```
/// use segment_client::{GroupParams, Identity};
///
/// let params = GroupParams::new(Identity::user("cus_1"), "acc_9").with_trait("plan", "pro");
/// assert_eq!(params.group_id, "acc_9");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct GroupParams {
    /// The member of the group.
    pub identity: Identity,
    /// The group's id in your system (`groupId`).
    pub group_id: String,
    /// What is known about the group (`name`, `industry`, `employees`, `plan`, ...).
    pub traits: Map<String, Value>,
    /// Extra `context` for this event; the client adds `context.library`.
    pub context: Option<Map<String, Value>>,
    /// Segment's `integrations` routing object.
    pub integrations: Option<Map<String, Value>>,
    /// When it happened; defaults to the time it is queued.
    pub timestamp: Option<DateTime<Utc>>,
    /// A caller-chosen `messageId`; defaults to a fresh UUID.
    pub message_id: Option<String>,
}

impl GroupParams {
    /// `identity` belongs to the group `group_id`; no traits.
    pub fn new(identity: Identity, group_id: impl Into<String>) -> Self {
        Self {
            identity,
            group_id: group_id.into(),
            traits: Map::new(),
            context: None,
            integrations: None,
            timestamp: None,
            message_id: None,
        }
    }

    /// Sets all the group's traits.
    pub fn with_traits(mut self, traits: Map<String, Value>) -> Self {
        self.traits = traits;
        self
    }

    /// Sets one group trait.
    pub fn with_trait(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.traits.insert(name.into(), value.into());
        self
    }
}
shared_setters!(GroupParams);

/// An `alias` call: merges a previous id (`previousId`) into a user id.
///
/// Both ids are required and must not be empty.
///
/// # Example
/// ```
/// use segment_client::AliasParams;
///
/// let params = AliasParams::new("anon_7", "cus_1");
/// assert_eq!((params.previous_id.as_str(), params.user_id.as_str()), ("anon_7", "cus_1"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AliasParams {
    /// The id the user was known by (`previousId`).
    pub previous_id: String,
    /// The id the user is known by now (`userId`).
    pub user_id: String,
    /// Extra `context` for this event; the client adds `context.library`.
    pub context: Option<Map<String, Value>>,
    /// Segment's `integrations` routing object.
    pub integrations: Option<Map<String, Value>>,
    /// When it happened; defaults to the time it is queued.
    pub timestamp: Option<DateTime<Utc>>,
    /// A caller-chosen `messageId`; defaults to a fresh UUID.
    pub message_id: Option<String>,
}

impl AliasParams {
    /// Merges `previous_id` into `user_id`.
    pub fn new(previous_id: impl Into<String>, user_id: impl Into<String>) -> Self {
        Self {
            previous_id: previous_id.into(),
            user_id: user_id.into(),
            context: None,
            integrations: None,
            timestamp: None,
            message_id: None,
        }
    }
}
shared_setters!(AliasParams);

/// A `page` or `screen` call: a page of a website, or a screen of an app,
/// that the user viewed. `name`, `category` and `properties` are optional.
///
/// # Example
/// ```
/// use segment_client::{Identity, ViewParams};
///
/// let page = ViewParams::new(Identity::anonymous("a1"))
///     .with_name("Pricing")
///     .with_property("url", "https://example.com/pricing");
/// assert_eq!(page.name.as_deref(), Some("Pricing"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ViewParams {
    /// Who viewed it.
    pub identity: Identity,
    /// The page's or screen's name.
    pub name: Option<String>,
    /// Its category.
    pub category: Option<String>,
    /// Its properties (`url`, `path`, `title`, `referrer`, ...).
    pub properties: Map<String, Value>,
    /// Extra `context` for this event; the client adds `context.library`.
    pub context: Option<Map<String, Value>>,
    /// Segment's `integrations` routing object.
    pub integrations: Option<Map<String, Value>>,
    /// When it happened; defaults to the time it is queued.
    pub timestamp: Option<DateTime<Utc>>,
    /// A caller-chosen `messageId`; defaults to a fresh UUID.
    pub message_id: Option<String>,
}

/// The parameters of a `page` call.
pub type PageParams = ViewParams;
/// The parameters of a `screen` call.
pub type ScreenParams = ViewParams;

impl ViewParams {
    /// A view by `identity` with no name, category or properties.
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            name: None,
            category: None,
            properties: Map::new(),
            context: None,
            integrations: None,
            timestamp: None,
            message_id: None,
        }
    }

    /// Sets the name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the category.
    pub fn with_category(mut self, category: impl Into<String>) -> Self {
        self.category = Some(category.into());
        self
    }

    /// Sets all the properties.
    pub fn with_properties(mut self, properties: Map<String, Value>) -> Self {
        self.properties = properties;
        self
    }

    /// Sets one property.
    pub fn with_property(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }
}
shared_setters!(ViewParams);

/// One call of any of Segment's types, ready to be validated and queued with
/// [`SegmentClient::send`](crate::SegmentClient::send) or
/// [`HttpClient::send`](crate::HttpClient::send).
///
/// Every parameter type converts into it with `From`.
///
/// # Example
/// ```
/// use segment_client::{AliasParams, Identity, Message, TrackParams};
///
/// let calls: Vec<Message> = vec![
///     TrackParams::new(Identity::user("cus_1"), "Signed Up").into(),
///     AliasParams::new("anon_7", "cus_1").into(),
/// ];
/// assert_eq!(calls[0].kind(), "track");
/// assert_eq!(calls[1].kind(), "alias");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[expect(
    clippy::large_enum_variant,
    reason = "a message is built once per call and moved straight into validation; boxing identify would cost an allocation per event"
)]
pub enum Message {
    /// An `identify` call.
    Identify(IdentifyParams),
    /// A `track` call.
    Track(TrackParams),
    /// A `group` call.
    Group(GroupParams),
    /// An `alias` call.
    Alias(AliasParams),
    /// A `page` call.
    Page(ViewParams),
    /// A `screen` call.
    Screen(ViewParams),
}

impl Message {
    /// The call's wire `type`: `"identify"`, `"track"`, `"group"`, `"alias"`, `"page"` or `"screen"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Identify(_) => "identify",
            Message::Track(_) => "track",
            Message::Group(_) => "group",
            Message::Alias(_) => "alias",
            Message::Page(_) => "page",
            Message::Screen(_) => "screen",
        }
    }

    /// The caller-chosen `messageId`, if any.
    pub fn message_id(&self) -> Option<&str> {
        match self {
            Message::Identify(p) => p.message_id.as_deref(),
            Message::Track(p) => p.message_id.as_deref(),
            Message::Group(p) => p.message_id.as_deref(),
            Message::Alias(p) => p.message_id.as_deref(),
            Message::Page(p) | Message::Screen(p) => p.message_id.as_deref(),
        }
    }

    /// The `messageId` slot, so a caller can fix the id before queueing.
    pub(crate) fn message_id_slot(&mut self) -> &mut Option<String> {
        match self {
            Message::Identify(p) => &mut p.message_id,
            Message::Track(p) => &mut p.message_id,
            Message::Group(p) => &mut p.message_id,
            Message::Alias(p) => &mut p.message_id,
            Message::Page(p) | Message::Screen(p) => &mut p.message_id,
        }
    }
}

impl From<IdentifyParams> for Message {
    fn from(params: IdentifyParams) -> Self {
        Message::Identify(params)
    }
}

impl From<TrackParams> for Message {
    fn from(params: TrackParams) -> Self {
        Message::Track(params)
    }
}

impl From<GroupParams> for Message {
    fn from(params: GroupParams) -> Self {
        Message::Group(params)
    }
}

impl From<AliasParams> for Message {
    fn from(params: AliasParams) -> Self {
        Message::Alias(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batcher::{Batcher, Limits, MAX_REQUEST_BYTES};
    use crate::encode::Encoder;
    use crate::message::prepare_message;
    use proptest::prelude::*;

    /// A call of type `kind` (0..6) whose payload is `pad` bytes of text.
    fn message(kind: u8, i: usize, pad: usize) -> Message {
        let id = Identity::user(format!("u{i}"));
        let text = "x".repeat(pad);
        let message_id = format!("m{i}");
        match kind {
            0 => Message::Identify(IdentifyParams::new(id).with_message_id(message_id)),
            1 => TrackParams::new(id, "E")
                .with_property("p", text)
                .with_message_id(message_id)
                .into(),
            2 => GroupParams::new(id, "g")
                .with_trait("t", text)
                .with_message_id(message_id)
                .into(),
            3 => AliasParams::new(text + "p", format!("u{i}"))
                .with_message_id(message_id)
                .into(),
            4 => Message::Page(
                ViewParams::new(id)
                    .with_name(text)
                    .with_message_id(message_id),
            ),
            _ => Message::Screen(
                ViewParams::new(id)
                    .with_property("p", text)
                    .with_message_id(message_id),
            ),
        }
    }

    proptest! {
        // Every type shares one batcher: a batch mixing them keeps queue
        // order, loses nothing, stays within the limits, and its body is
        // valid JSON whose items carry each event's own type.
        #[test]
        fn mixed_types_batch_in_order_within_the_limits(
            calls in proptest::collection::vec((0u8..6, 0usize..31_500), 1..120),
            max_events in 1usize..50,
        ) {
            let encoder = Encoder::new(None);
            let limits = Limits {
                max_events,
                max_request_bytes: MAX_REQUEST_BYTES,
                envelope_bytes: encoder.envelope_bytes(),
            };
            let mut batcher = Batcher::new(limits);
            let mut batches = Vec::new();
            let mut kinds = Vec::new();
            for (i, &(kind, pad)) in calls.iter().enumerate() {
                let message = message(kind, i, pad);
                kinds.push(message.kind());
                let event = prepare_message(message).unwrap();
                batches.extend(batcher.push(i as u64, event));
                if batcher.is_full() {
                    batches.extend(batcher.take());
                }
            }
            batches.extend(batcher.take());
            let mut seen = Vec::new();
            for batch in &batches {
                prop_assert!(batch.events.len() <= max_events);
                let body = encoder.encode(batch, chrono::Utc::now()).unwrap();
                prop_assert_eq!(body.bytes.len(), batch.body_bytes);
                prop_assert!(body.bytes.len() <= MAX_REQUEST_BYTES);
                let json: Value = serde_json::from_slice(&body.bytes).unwrap();
                for item in json["batch"].as_array().unwrap() {
                    seen.push((
                        item["messageId"].as_str().unwrap().to_owned(),
                        item["type"].as_str().unwrap().to_owned(),
                    ));
                }
            }
            let expected: Vec<(String, String)> = kinds
                .iter()
                .enumerate()
                .map(|(i, kind)| (format!("m{i}"), (*kind).to_owned()))
                .collect();
            prop_assert_eq!(seen, expected);
        }
    }
}
