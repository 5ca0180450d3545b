//! [`Store`]: what a receiver accepted, rejected and was asked, in bounded memory, plus the
//! optional NDJSON save file.
//!
//! Everything is kept as `Arc`s so that readers copy pointers under the lock and do their
//! parsing and serialising after releasing it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::watch;

use crate::config::Record;
use crate::dedup::{MessageIdWindow, RepeatedIds};
use crate::profiles::{Profile, Profiles, Touch, TraitUpdate};

/// A snapshot of a receiver's counters. They cover everything received, including what
/// is no longer kept in memory.
///
/// Every accepted event counts once in `accepted`; of those with a `messageId`, the first
/// arrival counts in `unique_message_ids` and every later one in `duplicates` (within the
/// duplicate detector's window, see [`ReceiverConfig::keep`](crate::ReceiverConfig::keep)).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// Requests to an ingest endpoint (`/v1/...`), whatever their outcome.
    pub requests: u64,
    /// Events accepted (answered `200` and not rejected), duplicates included.
    pub accepted: u64,
    /// Accepted events whose `messageId` was not seen before.
    pub unique_message_ids: u64,
    /// Accepted events whose `messageId` had already been accepted before.
    pub duplicates: u64,
    /// Events silently dropped, as Segment does, for a [`RejectReason`].
    pub rejected: u64,
    /// `accepted`, split by event type (`identify`, `track`, `group`, `alias`, `page`,
    /// `screen`).
    #[serde(default)]
    pub accepted_by_type: BTreeMap<String, u64>,
    /// `rejected`, split by [`RejectReason::as_str`].
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Answered ingest requests by HTTP status (a hung request has none yet).
    pub responses_by_status: BTreeMap<u16, u64>,
    /// Request body bytes as they came over the wire (compressed, if gzipped).
    pub bytes_received: u64,
    /// Requests with `Content-Encoding: gzip`.
    pub gzip_requests: u64,
    /// Requests refused as Segment would refuse them (bad JSON, too large, bad auth, bad
    /// gzip, body too slow); injected faults are not counted here.
    #[serde(default)]
    pub refused_requests: u64,
    /// Customer profiles kept (distinct `userId`s, or `anonymousId`s without one).
    #[serde(default)]
    pub customers: u64,
}

/// Why an event was dropped although its request got `200` (as Segment does).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The event's JSON text is over 32,000 bytes.
    EventTooLarge,
    /// The event has neither a non-empty string `userId` nor `anonymousId`.
    MissingIdentity,
    /// The batch held more than 2,500 events, so all of them were dropped.
    TooManyEvents,
    /// A batch item has no `type`.
    MissingType,
    /// The event is not a JSON object, or its `type` is not a Segment event type.
    InvalidEvent,
    /// A field its type requires is missing or empty: `event` for a track, `groupId`
    /// for a group, `previousId` and `userId` for an alias.
    MissingField,
}

impl RejectReason {
    /// The stable snake_case code, as used in [`Stats::rejected_by_reason`] and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EventTooLarge => "event_too_large",
            Self::MissingIdentity => "missing_identity",
            Self::TooManyEvents => "too_many_events",
            Self::MissingType => "missing_type",
            Self::InvalidEvent => "invalid_event",
            Self::MissingField => "missing_field",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event that was silently dropped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rejection {
    /// Why it was dropped.
    pub reason: RejectReason,
    /// Its `messageId`, if it had a string one.
    pub message_id: Option<String>,
    /// Its `userId`, if it had a string one.
    pub user_id: Option<String>,
    /// A human-readable explanation, e.g. `event is 40000 bytes; the limit is 32000`.
    pub detail: String,
}

/// One HTTP request to an ingest endpoint, whatever its outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestRecord {
    /// The request path, e.g. `/v1/batch`.
    pub path: String,
    /// The status it was answered with; `0` while a [`Fault::Hang`](crate::Fault::Hang)
    /// holds it unanswered.
    pub status: u16,
    /// Events in the body (0 if the body could not be parsed).
    pub events: usize,
    /// Body bytes as received (compressed, if gzipped).
    pub wire_bytes: usize,
    /// Body bytes after gunzip.
    pub body_bytes: usize,
    /// Whether the body was sent with `Content-Encoding: gzip`.
    pub gzip: bool,
    /// The `X-Retry-Count` header, if present and numeric.
    pub retry_count: Option<u32>,
    /// The `sentAt` field, if it is a string.
    pub sent_at: Option<String>,
    /// The string `messageId`s of the body's events, in order; empty with
    /// [`Record::CountsOnly`].
    pub message_ids: Vec<String>,
    /// Its number, counting from 1 since the receiver started (or was reset).
    #[serde(default)]
    pub id: u64,
    /// When it was received, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub received_ms: u64,
    /// The error code it was refused with (e.g. `invalid_json`), if it was refused.
    #[serde(default)]
    pub error: Option<String>,
}

/// How much a [`Store`] holds in memory right now: what is bounded, and by how much.
///
/// Byte figures count the text kept (event JSON, `messageId`s, headers, bodies, traits),
/// not allocator overhead.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Retained {
    /// Accepted events kept (the most recent ones).
    pub events: usize,
    /// Bytes of those events' JSON.
    pub event_bytes: usize,
    /// `messageId`s the duplicate detector remembers, plus those listed as repeated.
    pub message_ids: usize,
    /// `messageId`s the duplicate detector has forgotten to stay within its window.
    pub message_ids_forgotten: u64,
    /// Request records kept (the most recent ones).
    pub requests: usize,
    /// Bytes those records hold: `messageId`s, headers and bodies.
    pub request_bytes: usize,
    /// Request bodies among them still kept.
    pub request_bodies: usize,
    /// Dropped-event records kept.
    pub rejections: usize,
    /// Problems (refused requests, dropped events, duplicates) kept for the page.
    pub problems: usize,
    /// Customer profiles kept.
    pub customers: usize,
    /// Bytes charged to those profiles: their traits' JSON plus a fixed charge of about
    /// 1 KiB each for the rest of their memory.
    pub customer_bytes: usize,
    /// Profiles let go to stay within bounds.
    pub customers_forgotten: u64,
}

/// How much a [`Store`] may hold. Every collection is bounded by a count and, where its
/// items vary in size, by bytes; counters in [`Stats`] always cover everything.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Events, requests, dropped-event records and customers kept (each).
    pub keep: usize,
    /// `messageId`s the duplicate detector remembers.
    pub dedup_window: usize,
    /// Bytes of kept event JSON.
    pub event_bytes: usize,
    /// Bytes of kept request records (`messageId`s and headers), bodies excluded.
    pub request_bytes: usize,
    /// Bytes of kept request bodies; older bodies are let go first.
    pub body_bytes: usize,
    /// Bytes of all customer profiles together.
    pub customer_bytes: usize,
    /// Bytes of one customer's merged traits.
    pub profile_bytes: usize,
}

impl Limits {
    pub(crate) fn with_keep(keep: usize) -> Self {
        let keep = keep.max(1);
        Self {
            keep,
            dedup_window: keep.max(DEFAULT_DEDUP_WINDOW),
            event_bytes: 64 << 20,
            request_bytes: 16 << 20,
            body_bytes: 16 << 20,
            customer_bytes: 32 << 20,
            profile_bytes: 64 << 10,
        }
    }

    /// Problems are grouped per request and reason, so fewer are needed.
    fn problems(&self) -> usize {
        self.keep.min(MAX_PROBLEMS)
    }
}

/// How many `messageId`s the duplicate detector remembers by default (or `keep`, if more).
pub(crate) const DEFAULT_DEDUP_WINDOW: usize = 1_000_000;

/// Problems kept for the page at most, whatever `keep` is.
const MAX_PROBLEMS: usize = 10_000;

/// Characters of a dropped event shown with its problem.
const EXCERPT_CHARS: usize = 600;

/// `messageId`s listed with one problem.
const PROBLEM_IDS: usize = 5;

/// One accepted event on its way into the store, built before the lock is taken.
pub(crate) struct NewEvent {
    /// The event exactly as received; `None` with [`Record::CountsOnly`].
    pub raw: Option<Box<RawValue>>,
    pub message_id: Option<Box<str>>,
    pub user_id: Option<Box<str>>,
    pub anonymous_id: Option<Box<str>>,
    /// Its `type`, or the endpoint's for a single-event request.
    pub kind: Box<str>,
    /// The traits of an `identify` event, in order; `None` for other types and with
    /// [`Record::CountsOnly`].
    pub traits: Option<Vec<TraitUpdate>>,
}

/// One dropped event on its way into the store.
pub(crate) struct Dropped {
    pub rejection: Rejection,
    /// The start of the event's text, for the page; set on the first of its reason in a
    /// request only.
    pub excerpt: Option<Box<str>>,
}

impl From<Rejection> for Dropped {
    fn from(rejection: Rejection) -> Self {
        Self {
            rejection,
            excerpt: None,
        }
    }
}

/// One request on its way into the store.
pub(crate) struct NewRequest {
    pub record: RequestRecord,
    /// Headers as received, `Authorization` already hidden.
    pub headers: Vec<(String, String)>,
    /// The body as text (gunzipped when possible); `None` if it was not read.
    pub body: Option<Box<str>>,
    /// The refusal's message, if the request was refused.
    pub error_message: Option<String>,
}

impl From<RequestRecord> for NewRequest {
    fn from(record: RequestRecord) -> Self {
        Self {
            record,
            headers: Vec::new(),
            body: None,
            error_message: None,
        }
    }
}

/// An accepted event as kept.
#[derive(Serialize)]
pub(crate) struct KeptEvent {
    pub seq: u64,
    pub at_ms: u64,
    pub request: u64,
    #[serde(rename = "type")]
    pub kind: Box<str>,
    #[serde(rename = "userId")]
    pub user_id: Option<Box<str>>,
    #[serde(rename = "anonymousId")]
    pub anonymous_id: Option<Box<str>>,
    #[serde(rename = "messageId")]
    pub message_id: Option<Box<str>>,
    pub duplicate: bool,
    pub event: Arc<RawValue>,
}

/// What kind of trouble a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ProblemKind {
    /// Segment would have refused the request (4xx).
    Refused,
    /// Segment would have answered 200 and dropped events.
    Dropped,
    /// Events whose `messageId` was seen before.
    Duplicate,
    /// A fault injected on purpose.
    Fault,
}

/// Something a user should look at, grouped per request and reason.
#[derive(Serialize)]
pub(crate) struct Problem {
    pub seq: u64,
    pub at_ms: u64,
    pub request: u64,
    pub kind: ProblemKind,
    pub code: Box<str>,
    pub detail: Box<str>,
    /// Events concerned (1 for a refused request).
    pub count: usize,
    #[serde(rename = "messageIds")]
    pub message_ids: Vec<Box<str>>,
    #[serde(rename = "userId")]
    pub user_id: Option<Box<str>>,
    pub excerpt: Option<Box<str>>,
}

/// A request as kept; its body is kept apart, under its own budget.
#[derive(Serialize)]
pub(crate) struct KeptRequest {
    #[serde(flatten)]
    pub record: RequestRecord,
    #[serde(skip)]
    pub headers: Vec<(String, String)>,
    pub error_message: Option<String>,
    #[serde(skip)]
    bytes: usize,
}

/// Where a reader of the live feed is: the next item of each kind it has not seen.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cursor {
    generation: u64,
    event: u64,
    problem: u64,
    request: u64,
}

/// What was added since a [`Cursor`], newest last, at most a limit of each kind.
pub(crate) struct Feed {
    /// Everything was forgotten (`POST /_receiver/reset`) since the cursor's last read.
    pub reset: bool,
    pub stats: Stats,
    pub events: Vec<Arc<KeptEvent>>,
    pub problems: Vec<Arc<Problem>>,
    pub requests: Vec<Arc<KeptRequest>>,
}

/// One customer's profile with the kept events that built it.
pub(crate) struct CustomerView {
    pub profile: Profile,
    pub events: Vec<Arc<KeptEvent>>,
}

/// A handle on what a receiver recorded; cheap to clone (an `Arc` inside), and every
/// method takes a consistent snapshot.
///
/// Memory is bounded: the last [`keep`](crate::ReceiverConfig::keep) events, requests
/// and dropped events are kept, and [`retained`](Self::retained) says how much that is.
///
/// # Example
///
/// ```
/// use segment_receiver::{Receiver, ReceiverConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), segment_receiver::ReceiverError> {
/// let receiver = Receiver::start(ReceiverConfig::new()).await?;
/// // ... point a client at receiver.url() and send events ...
/// let store = receiver.store().clone();
/// assert_eq!(store.stats().duplicates, 0);
/// for event in store.events_for_user("user-1") {
///     println!("{}", event["traits"]);
/// }
/// receiver.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    mode: Record,
    limits: Limits,
    state: Mutex<State>,
    save_file: Option<Mutex<BufWriter<File>>>,
    /// Bumped after every change, for the live page.
    version: watch::Sender<u64>,
}

struct State {
    /// Bumped by [`Store::clear`], so live readers know to start over.
    generation: u64,
    stats: Stats,
    next_event: u64,
    next_problem: u64,
    next_request: u64,
    events: VecDeque<Arc<KeptEvent>>,
    event_bytes: usize,
    /// userId -> sequence numbers of their kept events, oldest first.
    by_user: HashMap<Box<str>, VecDeque<u64>>,
    message_ids: MessageIdWindow,
    repeated: RepeatedIds,
    rejections: VecDeque<Rejection>,
    problems: VecDeque<Arc<Problem>>,
    requests: VecDeque<Arc<KeptRequest>>,
    request_bytes: usize,
    /// Request id -> body, oldest first; under its own budget.
    bodies: VecDeque<(u64, Arc<str>)>,
    body_bytes: usize,
    profiles: Profiles,
}

impl State {
    fn new(limits: &Limits, generation: u64) -> Self {
        Self {
            generation,
            stats: Stats::default(),
            next_event: 1,
            next_problem: 1,
            next_request: 1,
            events: VecDeque::new(),
            event_bytes: 0,
            by_user: HashMap::new(),
            message_ids: MessageIdWindow::new(limits.dedup_window),
            repeated: RepeatedIds::new(limits.keep),
            rejections: VecDeque::new(),
            problems: VecDeque::new(),
            requests: VecDeque::new(),
            request_bytes: 0,
            bodies: VecDeque::new(),
            body_bytes: 0,
            profiles: Profiles::new(limits.keep, limits.customer_bytes, limits.profile_bytes),
        }
    }

    fn event(&self, seq: u64) -> Option<&Arc<KeptEvent>> {
        let first = self.events.front()?.seq;
        let index = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.events.get(index)
    }

    fn push_event(&mut self, event: KeptEvent, limits: &Limits) {
        if let Some(user) = &event.user_id {
            self.by_user
                .entry(user.clone())
                .or_default()
                .push_back(event.seq);
        }
        self.event_bytes += event.event.get().len();
        self.events.push_back(Arc::new(event));
        while self.events.len() > limits.keep
            || (self.event_bytes > limits.event_bytes && self.events.len() > 1)
        {
            let Some(old) = self.events.pop_front() else {
                break;
            };
            self.event_bytes -= old.event.get().len();
            if let Some(user) = &old.user_id
                && let Some(seqs) = self.by_user.get_mut(user)
            {
                seqs.pop_front();
                if seqs.is_empty() {
                    self.by_user.remove(user);
                }
            }
        }
    }

    fn push_problem(&mut self, mut problem: Problem, limits: &Limits) {
        problem.seq = self.next_problem;
        self.next_problem += 1;
        if self.problems.len() >= limits.problems() {
            self.problems.pop_front();
        }
        self.problems.push_back(Arc::new(problem));
    }

    fn push_request(&mut self, request: KeptRequest, body: Option<Box<str>>, limits: &Limits) {
        if let Some(body) = body {
            self.body_bytes += body.len();
            self.bodies.push_back((request.record.id, Arc::from(body)));
            while self.bodies.len() > limits.keep
                || (self.body_bytes > limits.body_bytes && self.bodies.len() > 1)
            {
                if let Some((_, old)) = self.bodies.pop_front() {
                    self.body_bytes -= old.len();
                }
            }
        }
        self.request_bytes += request.bytes;
        self.requests.push_back(Arc::new(request));
        while self.requests.len() > limits.keep
            || (self.request_bytes > limits.request_bytes && self.requests.len() > 1)
        {
            let Some(old) = self.requests.pop_front() else {
                break;
            };
            self.request_bytes -= old.bytes;
            // Its body, if still kept, is older than every other kept body.
            if self
                .bodies
                .front()
                .is_some_and(|(id, _)| *id <= old.record.id)
                && let Some((_, body)) = self.bodies.pop_front()
            {
                self.body_bytes -= body.len();
            }
        }
    }

    fn body(&self, id: u64) -> Option<Arc<str>> {
        let index = self.bodies.binary_search_by_key(&id, |(id, _)| *id).ok()?;
        self.bodies.get(index).map(|(_, body)| body.clone())
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The bytes a request record holds besides its body.
fn record_bytes(record: &RequestRecord, headers: &[(String, String)]) -> usize {
    let ids: usize = record.message_ids.iter().map(|id| id.len() + 24).sum();
    let headers: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 48).sum();
    256 + record.path.len() + ids + headers
}

/// The first [`EXCERPT_CHARS`] characters of `text`.
pub(crate) fn excerpt(text: &str) -> Box<str> {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]).into_boxed_str(),
        None => text.into(),
    }
}

impl Store {
    pub(crate) fn new(mode: Record, limits: Limits, save_file: Option<File>) -> Self {
        Self {
            inner: Arc::new(Inner {
                mode,
                limits,
                state: Mutex::new(State::new(&limits, 0)),
                save_file: save_file
                    .map(|file| Mutex::new(BufWriter::with_capacity(1 << 16, file))),
                version: watch::Sender::new(0),
            }),
        }
    }

    pub(crate) fn mode(&self) -> Record {
        self.inner.mode
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// The kept accepted events in arrival order, each exactly as received (duplicates
    /// included; see [`duplicates`](Self::duplicates)): the last
    /// [`keep`](crate::ReceiverConfig::keep). Empty with [`Record::CountsOnly`].
    pub fn events(&self) -> Vec<serde_json::Value> {
        let snapshot: Vec<_> = self.lock().events.iter().cloned().collect();
        snapshot
            .iter()
            .filter_map(|event| parse(&event.event))
            .collect()
    }

    /// The kept accepted events whose `userId` is `user_id`, in arrival order.
    pub fn events_for_user(&self, user_id: &str) -> Vec<serde_json::Value> {
        self.user_snapshot(user_id)
            .iter()
            .filter_map(|event| parse(&event.event))
            .collect()
    }

    fn user_snapshot(&self, user_id: &str) -> Vec<Arc<KeptEvent>> {
        let state = self.lock();
        state
            .by_user
            .get(user_id)
            .into_iter()
            .flatten()
            .filter_map(|&seq| state.event(seq).cloned())
            .collect()
    }

    /// The kept events (all, or one user's) as one JSON array, built from the raw text
    /// without re-parsing and outside the lock: what `GET /_receiver/events` returns.
    pub(crate) fn events_json(&self, user_id: Option<&str>) -> String {
        let snapshot = match user_id {
            None => self.lock().events.iter().cloned().collect(),
            Some(user_id) => self.user_snapshot(user_id),
        };
        let capacity = snapshot
            .iter()
            .map(|e| e.event.get().len() + 1)
            .sum::<usize>()
            + 2;
        let mut out = String::with_capacity(capacity);
        out.push('[');
        for (i, event) in snapshot.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(event.event.get());
        }
        out.push(']');
        out
    }

    /// `messageId` -> times received, for the `messageId`s accepted more than once (the
    /// most recent [`keep`](crate::ReceiverConfig::keep) such ids).
    pub fn duplicates(&self) -> BTreeMap<String, usize> {
        self.lock()
            .repeated
            .iter()
            .map(|(id, times)| (id.to_owned(), times))
            .collect()
    }

    /// Events that were silently dropped, oldest first (the last
    /// [`keep`](crate::ReceiverConfig::keep); the counters in [`stats`](Self::stats)
    /// cover all of them).
    pub fn rejections(&self) -> Vec<Rejection> {
        self.lock().rejections.iter().cloned().collect()
    }

    /// Requests to ingest endpoints, oldest first (the last
    /// [`keep`](crate::ReceiverConfig::keep), fewer if their `messageId`s and headers
    /// exceed 16 MiB).
    pub fn requests(&self) -> Vec<RequestRecord> {
        let snapshot: Vec<_> = self.lock().requests.iter().cloned().collect();
        snapshot.iter().map(|r| r.record.clone()).collect()
    }

    /// How much is held in memory right now.
    pub fn retained(&self) -> Retained {
        let state = self.lock();
        Retained {
            events: state.events.len(),
            event_bytes: state.event_bytes,
            message_ids: state.message_ids.len() + state.repeated.len(),
            message_ids_forgotten: state.message_ids.forgotten(),
            requests: state.requests.len(),
            request_bytes: state.request_bytes + state.body_bytes,
            request_bodies: state.bodies.len(),
            rejections: state.rejections.len(),
            problems: state.problems.len(),
            customers: state.profiles.len(),
            customer_bytes: state.profiles.bytes(),
            customers_forgotten: state.profiles.forgotten(),
        }
    }

    /// How many events, requests and customers are kept (each).
    pub(crate) fn keep(&self) -> usize {
        self.inner.limits.keep
    }

    /// The duplicate detector's window, in `messageId`s.
    pub(crate) fn dedup_window(&self) -> usize {
        self.lock().message_ids.capacity()
    }

    /// Forget everything recorded so far. The save file is left as it is.
    pub fn clear(&self) {
        {
            let mut state = self.lock();
            let generation = state.generation + 1;
            *state = State::new(&self.inner.limits, generation);
        }
        self.changed();
    }

    /// Record one ingest request with the events it got accepted and rejected. One lock
    /// per request, however many events it carries.
    pub(crate) fn record(
        &self,
        request: impl Into<NewRequest>,
        accepted: Vec<NewEvent>,
        rejected: Vec<Dropped>,
    ) {
        let NewRequest {
            mut record,
            headers,
            body,
            error_message,
        } = request.into();
        let at_ms = now_ms();
        let limits = &self.inner.limits;
        let bytes = record_bytes(&record, &headers);
        {
            let mut guard = self.lock();
            let state = &mut *guard;
            let request_id = state.next_request;
            state.next_request += 1;
            record.id = request_id;
            record.received_ms = at_ms;

            let stats = &mut state.stats;
            stats.requests += 1;
            if record.status != 0 {
                *stats.responses_by_status.entry(record.status).or_default() += 1;
            }
            stats.bytes_received += record.wire_bytes as u64;
            stats.gzip_requests += u64::from(record.gzip);
            if let Some(code) = &record.error {
                let kind = if code == "injected_fault" {
                    ProblemKind::Fault
                } else {
                    stats.refused_requests += 1;
                    ProblemKind::Refused
                };
                let problem = Problem {
                    seq: 0,
                    at_ms,
                    request: request_id,
                    kind,
                    code: code.as_str().into(),
                    detail: error_message.as_deref().unwrap_or(code).into(),
                    count: record.events.max(1),
                    message_ids: record
                        .message_ids
                        .iter()
                        .take(PROBLEM_IDS)
                        .map(|id| id.as_str().into())
                        .collect(),
                    user_id: None,
                    excerpt: None,
                };
                state.push_problem(problem, limits);
            }

            self.record_dropped(state, rejected, request_id, at_ms);
            self.record_accepted(state, accepted, request_id, at_ms);

            let kept = KeptRequest {
                record,
                headers,
                error_message,
                bytes,
            };
            state.push_request(kept, body, limits);
            state.stats.customers = state.profiles.len() as u64;
        }
        self.changed();
    }

    fn record_dropped(
        &self,
        state: &mut State,
        rejected: Vec<Dropped>,
        request_id: u64,
        at_ms: u64,
    ) {
        let limits = &self.inner.limits;
        // One problem per reason per request: a 2,501-event batch is one line, not 2,501.
        let mut groups: Vec<Problem> = Vec::new();
        for Dropped { rejection, excerpt } in rejected {
            let stats = &mut state.stats;
            stats.rejected += 1;
            *stats
                .rejected_by_reason
                .entry(rejection.reason.as_str().to_owned())
                .or_default() += 1;
            let code = rejection.reason.as_str();
            let group = match groups.iter_mut().position(|g| &*g.code == code) {
                Some(index) => &mut groups[index],
                None => {
                    groups.push(Problem {
                        seq: 0,
                        at_ms,
                        request: request_id,
                        kind: ProblemKind::Dropped,
                        code: code.into(),
                        detail: rejection.detail.as_str().into(),
                        count: 0,
                        message_ids: Vec::new(),
                        user_id: rejection.user_id.as_deref().map(Into::into),
                        excerpt,
                    });
                    groups.last_mut().expect("just pushed")
                }
            };
            group.count += 1;
            if let Some(id) = &rejection.message_id
                && group.message_ids.len() < PROBLEM_IDS
            {
                group.message_ids.push(id.as_str().into());
            }
            if state.rejections.len() >= limits.keep {
                state.rejections.pop_front();
            }
            state.rejections.push_back(rejection);
        }
        for group in groups {
            state.push_problem(group, limits);
        }
    }

    fn record_accepted(
        &self,
        state: &mut State,
        accepted: Vec<NewEvent>,
        request_id: u64,
        at_ms: u64,
    ) {
        let limits = &self.inner.limits;
        let mut duplicates: Option<Problem> = None;
        for event in accepted {
            state.stats.accepted += 1;
            match state.stats.accepted_by_type.get_mut(&*event.kind) {
                Some(count) => *count += 1,
                None => {
                    state
                        .stats
                        .accepted_by_type
                        .insert(event.kind.to_string(), 1);
                }
            }
            let mut duplicate = false;
            if let Some(id) = &event.message_id {
                if state.message_ids.seen_before(id) {
                    duplicate = true;
                    state.stats.duplicates += 1;
                    state.repeated.add(id);
                    let problem = duplicates.get_or_insert_with(|| Problem {
                        seq: 0,
                        at_ms,
                        request: request_id,
                        kind: ProblemKind::Duplicate,
                        code: "duplicate_message_id".into(),
                        detail: "messageId already received; Segment would drop the repeat".into(),
                        count: 0,
                        message_ids: Vec::new(),
                        user_id: event.user_id.clone(),
                        excerpt: None,
                    });
                    problem.count += 1;
                    if problem.message_ids.len() < PROBLEM_IDS {
                        problem.message_ids.push(id.clone());
                    }
                } else {
                    state.stats.unique_message_ids += 1;
                }
            }
            let Some(raw) = event.raw else {
                continue;
            };
            let seq = state.next_event;
            state.next_event += 1;
            let customer = present(&event.user_id)
                .map(|id| (id, false))
                .or_else(|| present(&event.anonymous_id).map(|id| (id, true)));
            if let Some((id, anonymous)) = customer {
                state.profiles.touch(Touch {
                    id,
                    anonymous,
                    seq,
                    at_ms,
                    traits: event.traits,
                });
            }
            let kept = KeptEvent {
                seq,
                at_ms,
                request: request_id,
                kind: event.kind,
                user_id: event.user_id,
                anonymous_id: event.anonymous_id,
                message_id: event.message_id,
                duplicate,
                event: Arc::from(raw),
            };
            state.push_event(kept, limits);
        }
        if let Some(problem) = duplicates {
            state.push_problem(problem, limits);
        }
    }

    /// A receiver of change notifications, for the live page.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.version.subscribe()
    }

    fn changed(&self) {
        self.inner.version.send_modify(|version| *version += 1);
    }

    /// What was added after `cursor` (at most `limit` of each kind, the newest), and move
    /// the cursor past it.
    pub(crate) fn feed(&self, cursor: &mut Cursor, limit: usize) -> Feed {
        let state = self.lock();
        let reset = cursor.generation != state.generation;
        if reset {
            *cursor = Cursor {
                generation: state.generation,
                ..Cursor::default()
            };
        }
        let events = newest_after(&state.events, cursor.event, limit, |e| e.seq);
        let problems = newest_after(&state.problems, cursor.problem, limit, |p| p.seq);
        let requests = newest_after(&state.requests, cursor.request, limit, |r| r.record.id);
        cursor.event = state.next_event;
        cursor.problem = state.next_problem;
        cursor.request = state.next_request;
        Feed {
            reset,
            stats: state.stats.clone(),
            events,
            problems,
            requests,
        }
    }

    /// Profiles whose userId/anonymousId or email contains `query`, newest first.
    pub(crate) fn customers(&self, query: &str, limit: usize) -> Vec<Profile> {
        let state = self.lock();
        state
            .profiles
            .search(query, limit)
            .into_iter()
            .cloned()
            .collect()
    }

    /// One customer's profile and the kept events that built it, oldest first.
    pub(crate) fn customer(&self, id: &str) -> Option<CustomerView> {
        let state = self.lock();
        let profile = state.profiles.get(id)?.clone();
        let events = profile
            .recent
            .iter()
            .filter_map(|&seq| state.event(seq).cloned())
            .collect();
        Some(CustomerView { profile, events })
    }

    /// One kept request, with its headers and (if still kept) body.
    pub(crate) fn request(&self, id: u64) -> Option<(Arc<KeptRequest>, Option<Arc<str>>)> {
        let state = self.lock();
        let first = state.requests.front()?.record.id;
        let index = usize::try_from(id.checked_sub(first)?).ok()?;
        let request = state.requests.get(index)?.clone();
        Some((request, state.body(id)))
    }

    /// Append `events` to the save file, one NDJSON line each, and flush: one write per
    /// request rather than per event, so the file stays current (a CLI user may be
    /// tailing it) at the cost of a short page-cache write on the runtime thread.
    pub(crate) fn save<'a>(
        &self,
        events: impl IntoIterator<Item = &'a RawValue>,
    ) -> io::Result<()> {
        let Some(save_file) = &self.inner.save_file else {
            return Ok(());
        };
        let mut writer = save_file.lock().unwrap_or_else(PoisonError::into_inner);
        for raw in events {
            let text = raw.get();
            if text.contains(['\n', '\r']) {
                // Pretty-printed input: whitespace between tokens may hold newlines (a JSON
                // string cannot), so re-encode compactly to keep one event per line.
                let value: serde_json::Value = serde_json::from_str(text)?;
                serde_json::to_writer(&mut *writer, &value)?;
            } else {
                writer.write_all(text.as_bytes())?;
            }
            writer.write_all(b"\n")?;
        }
        writer.flush()
    }

    /// Flush the save file, if any (at shutdown).
    pub(crate) fn flush(&self) -> io::Result<()> {
        match &self.inner.save_file {
            Some(save_file) => save_file
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .flush(),
            None => Ok(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// An id that is there and not empty.
fn present(id: &Option<Box<str>>) -> Option<&str> {
    id.as_deref().filter(|id| !id.is_empty())
}

/// The newest `limit` items of `queue` whose key is at least `next`, oldest first.
fn newest_after<T>(
    queue: &VecDeque<Arc<T>>,
    next: u64,
    limit: usize,
    key: impl Fn(&T) -> u64,
) -> Vec<Arc<T>> {
    let fresh = queue
        .iter()
        .rev()
        .take_while(|item| key(item) >= next)
        .take(limit)
        .count();
    queue.iter().skip(queue.len() - fresh).cloned().collect()
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("mode", &self.inner.mode)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Parse a stored event. It was validated JSON when it was stored, so this cannot fail in
/// practice; `None` keeps a panic out of the API all the same.
fn parse(raw: &RawValue) -> Option<serde_json::Value> {
    serde_json::from_str(raw.get()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(status: u16) -> RequestRecord {
        RequestRecord {
            path: "/v1/batch".into(),
            status,
            events: 0,
            wire_bytes: 10,
            body_bytes: 10,
            gzip: false,
            retry_count: None,
            sent_at: None,
            message_ids: Vec::new(),
            id: 0,
            received_ms: 0,
            error: None,
        }
    }

    fn event(mode: Record, json: &str, message_id: &str, user_id: &str) -> NewEvent {
        NewEvent {
            raw: (mode == Record::Full)
                .then(|| RawValue::from_string(json.to_owned()).expect("test JSON")),
            message_id: Some(message_id.into()),
            user_id: Some(user_id.into()),
            anonymous_id: None,
            kind: "identify".into(),
            traits: None,
        }
    }

    #[test]
    fn counts_duplicates_and_indexes_users() {
        let store = Store::new(Record::Full, Limits::with_keep(10_000), None);
        let a = r#"{"userId":"u1","messageId":"m1"}"#;
        let b = r#"{"userId":"u2","messageId":"m2"}"#;
        store.record(
            request(200),
            vec![
                event(Record::Full, a, "m1", "u1"),
                event(Record::Full, b, "m2", "u2"),
            ],
            Vec::new(),
        );
        store.record(
            request(200),
            vec![event(Record::Full, a, "m1", "u1")],
            Vec::new(),
        );
        store.record(
            request(200),
            vec![event(Record::Full, a, "m1", "u1")],
            Vec::new(),
        );

        let stats = store.stats();
        assert_eq!((stats.requests, stats.accepted), (3, 4));
        assert_eq!((stats.unique_message_ids, stats.duplicates), (2, 2));
        assert_eq!(stats.responses_by_status, BTreeMap::from([(200, 3)]));
        assert_eq!(store.duplicates(), BTreeMap::from([("m1".to_owned(), 3)]));
        assert_eq!(store.events_for_user("u1").len(), 3);
        assert_eq!(store.events_for_user("u2")[0]["messageId"], "m2");
        assert!(store.events_for_user("nobody").is_empty());
        assert_eq!(store.events().len(), 4);
        assert_eq!(store.events_json(Some("u2")), format!("[{b}]"));

        store.clear();
        assert_eq!(store.stats(), Stats::default());
        assert!(store.events().is_empty() && store.requests().is_empty());
    }

    #[test]
    fn counts_only_keeps_counters_but_no_bodies() {
        let store = Store::new(Record::CountsOnly, Limits::with_keep(10_000), None);
        let json = r#"{"userId":"u1","messageId":"m1"}"#;
        for _ in 0..2 {
            store.record(
                request(200),
                vec![event(Record::CountsOnly, json, "m1", "u1")],
                Vec::new(),
            );
        }
        assert_eq!(store.stats().duplicates, 1);
        assert_eq!(store.duplicates().get("m1"), Some(&2));
        assert!(store.events().is_empty());
        assert!(store.events_for_user("u1").is_empty());
    }

    #[test]
    fn rejections_and_requests_are_bounded_but_counted() {
        let store = Store::new(Record::Full, Limits::with_keep(10_000), None);
        let rejection = Rejection {
            reason: RejectReason::MissingIdentity,
            message_id: None,
            user_id: None,
            detail: String::new(),
        };
        let keep = 10_000;
        for _ in 0..keep + 5 {
            store.record(request(200), Vec::new(), vec![rejection.clone().into()]);
        }
        let stats = store.stats();
        assert_eq!(stats.requests, (keep + 5) as u64);
        assert_eq!(
            stats.rejected_by_reason.get("missing_identity"),
            Some(&((keep + 5) as u64))
        );
        assert_eq!(store.requests().len(), keep);
        assert_eq!(store.rejections().len(), keep);
    }

    fn small_limits(keep: usize) -> Limits {
        Limits {
            keep,
            dedup_window: 1_000,
            event_bytes: 1 << 20,
            request_bytes: 1 << 20,
            body_bytes: 1 << 20,
            customer_bytes: 1 << 20,
            profile_bytes: 4 << 10,
        }
    }

    fn identify(i: usize) -> NewEvent {
        let json = format!(r#"{{"type":"identify","userId":"u{i}","messageId":"m{i}"}}"#);
        event(Record::Full, &json, &format!("m{i}"), &format!("u{i}"))
    }

    #[test]
    fn counts_only_remembers_a_bounded_window_of_message_ids() {
        let store = Store::new(Record::CountsOnly, small_limits(10), None);
        let json = r#"{"userId":"u","messageId":"m"}"#;
        for i in 0..5_000 {
            let id = format!("m{i}");
            store.record(
                request(200),
                vec![event(Record::CountsOnly, json, &id, "u")],
                Vec::new(),
            );
        }
        // A repeat inside the window is still caught.
        store.record(
            request(200),
            vec![event(Record::CountsOnly, json, "m4999", "u")],
            Vec::new(),
        );
        let stats = store.stats();
        assert_eq!((stats.accepted, stats.duplicates), (5_001, 1));
        let retained = store.retained();
        assert!(
            retained.message_ids <= 1_000 + 10,
            "the detector grew past its window: {retained:?}"
        );
    }

    #[test]
    fn refused_requests_keep_a_bounded_number_of_bytes() {
        let store = Store::new(Record::Full, small_limits(10_000), None);
        // 100 refused batches of 2,500 events: 9 MB of messageIds in all.
        let ids: Vec<String> = (0..2_500).map(|i| format!("{i:036}")).collect();
        for _ in 0..100 {
            let mut refused = request(503);
            refused.message_ids = ids.clone();
            store.record(refused, Vec::new(), Vec::new());
        }
        assert_eq!(store.stats().requests, 100);
        let retained = store.retained();
        assert!(
            retained.request_bytes <= 1 << 20,
            "request log over its budget: {retained:?}"
        );
        let requests = store.requests();
        assert!(!requests.is_empty(), "the most recent requests are kept");
        assert_eq!(requests.last().map(|r| r.message_ids.len()), Some(2_500));
    }

    #[test]
    fn only_the_last_keep_events_are_kept() {
        let store = Store::new(Record::Full, small_limits(100), None);
        for i in 0..250 {
            store.record(request(200), vec![identify(i)], Vec::new());
        }
        assert_eq!(store.stats().accepted, 250);
        let events = store.events();
        assert_eq!(events.len(), 100);
        assert_eq!(events[0]["messageId"], "m150");
        assert_eq!(events[99]["messageId"], "m249");
        assert!(store.events_for_user("u0").is_empty());
        assert_eq!(store.events_for_user("u249").len(), 1);
        let json: Vec<serde_json::Value> =
            serde_json::from_str(&store.events_json(None)).expect("a JSON array");
        assert_eq!(json.len(), 100);
        let retained = store.retained();
        assert_eq!((retained.events, retained.requests), (100, 100));
        assert!(retained.customers <= 100, "{retained:?}");
    }

    #[test]
    fn kept_events_are_bounded_in_bytes_too() {
        let mut limits = small_limits(1_000);
        limits.event_bytes = 10_000;
        let store = Store::new(Record::Full, limits, None);
        let pad = "x".repeat(900);
        for i in 0..50 {
            let json =
                format!(r#"{{"type":"identify","userId":"u","messageId":"m{i}","p":"{pad}"}}"#);
            store.record(
                request(200),
                vec![event(Record::Full, &json, &format!("m{i}"), "u")],
                Vec::new(),
            );
        }
        let retained = store.retained();
        assert!(retained.event_bytes <= 10_000, "{retained:?}");
        assert!(retained.events >= 9, "{retained:?}");
        assert_eq!(
            store.events().last().map(|e| e["messageId"].clone()),
            Some("m49".into())
        );
    }

    #[test]
    fn request_bodies_are_let_go_first_within_their_budget() {
        let mut limits = small_limits(100);
        limits.body_bytes = 1_000;
        let store = Store::new(Record::Full, limits, None);
        for _ in 0..10 {
            let request = NewRequest {
                body: Some("x".repeat(300).into()),
                ..request(200).into()
            };
            store.record(request, Vec::new(), Vec::new());
        }
        let retained = store.retained();
        assert_eq!((retained.requests, retained.request_bodies), (10, 3));
        let body = |id| store.request(id).expect("request kept").1;
        assert!(body(1).is_none() && body(7).is_none());
        assert!(body(8).is_some() && body(10).is_some());
    }

    #[test]
    fn problems_group_a_request_s_dropped_events_by_reason() {
        let store = Store::new(Record::Full, small_limits(100), None);
        let dropped = |reason| Dropped {
            rejection: Rejection {
                reason,
                message_id: Some("m".into()),
                user_id: None,
                detail: "why".into(),
            },
            excerpt: Some("{}".into()),
        };
        let rejected = (0..2_501)
            .map(|_| dropped(RejectReason::TooManyEvents))
            .chain([dropped(RejectReason::MissingIdentity)])
            .collect();
        store.record(request(200), Vec::new(), rejected);
        let feed = store.feed(&mut Cursor::default(), 10);
        let problems: Vec<_> = feed
            .problems
            .iter()
            .map(|p| (p.kind, &*p.code, p.count, p.message_ids.len()))
            .collect();
        assert_eq!(
            problems,
            [
                (ProblemKind::Dropped, "too_many_events", 2_501, PROBLEM_IDS),
                (ProblemKind::Dropped, "missing_identity", 1, 1),
            ]
        );
        assert_eq!(store.stats().rejected, 2_502);
    }

    #[test]
    fn the_live_feed_sends_only_what_is_new_and_notices_a_reset() {
        let store = Store::new(Record::Full, small_limits(100), None);
        let mut cursor = Cursor::default();
        store.record(request(200), vec![identify(1), identify(2)], Vec::new());
        let first = store.feed(&mut cursor, 10);
        assert!(!first.reset);
        assert_eq!((first.events.len(), first.requests.len()), (2, 1));
        store.record(request(200), vec![identify(3)], Vec::new());
        let second = store.feed(&mut cursor, 10);
        assert_eq!(second.events.len(), 1);
        assert_eq!(second.events[0].message_id.as_deref(), Some("m3"));
        assert!(store.feed(&mut cursor, 10).events.is_empty());
        store.clear();
        assert!(store.feed(&mut cursor, 10).reset);
    }

    #[test]
    fn an_anonymous_customer_gets_a_profile_under_their_anonymous_id() {
        let store = Store::new(Record::Full, small_limits(100), None);
        let json = r#"{"type":"identify","userId":"","anonymousId":"a1","traits":{}}"#;
        let mut anonymous = event(Record::Full, json, "m1", "");
        anonymous.anonymous_id = Some("a1".into());
        store.record(request(200), vec![anonymous], Vec::new());
        let view = store.customer("a1").expect("a profile");
        assert!(view.profile.anonymous);
        assert_eq!(view.events.len(), 1);
        assert!(store.customer("").is_none());
    }

    #[test]
    fn a_hung_request_counts_as_a_request_but_not_a_response() {
        let store = Store::new(Record::Full, Limits::with_keep(10_000), None);
        store.record(request(0), Vec::new(), Vec::new());
        let stats = store.stats();
        assert_eq!(stats.requests, 1);
        assert!(stats.responses_by_status.is_empty());
    }

    #[test]
    fn reject_reason_codes_match_serde() {
        for reason in [
            RejectReason::EventTooLarge,
            RejectReason::MissingIdentity,
            RejectReason::TooManyEvents,
            RejectReason::MissingType,
            RejectReason::InvalidEvent,
        ] {
            let json = serde_json::to_string(&reason).expect("serialises");
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
        }
    }
}
