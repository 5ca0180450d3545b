//! [`Store`]: what a receiver accepted, rejected and was asked, plus the optional NDJSON
//! save file.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::config::Record;

/// How many [`RequestRecord`]s and [`Rejection`]s are kept (the most recent ones); the
/// counters in [`Stats`] cover everything.
pub(crate) const KEEP_LAST: usize = 10_000;

/// A snapshot of a receiver's counters.
///
/// Every accepted event counts once in `accepted`; of those with a `messageId`, the first
/// arrival counts in `unique_message_ids` and every later one in `duplicates`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// Requests to an ingest endpoint (`/v1/...`), whatever their outcome.
    pub requests: u64,
    /// Events accepted (answered `200` and not rejected), duplicates included.
    pub accepted: u64,
    /// Distinct `messageId`s among accepted events.
    pub unique_message_ids: u64,
    /// Accepted events whose `messageId` had already been accepted before.
    pub duplicates: u64,
    /// Events silently dropped, as Segment does, for a [`RejectReason`].
    pub rejected: u64,
    /// `rejected`, split by [`RejectReason::as_str`].
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Answered ingest requests by HTTP status (a hung request has none yet).
    pub responses_by_status: BTreeMap<u16, u64>,
    /// Request body bytes as they came over the wire (compressed, if gzipped).
    pub bytes_received: u64,
    /// Requests with `Content-Encoding: gzip`.
    pub gzip_requests: u64,
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
}

/// One accepted event on its way into the store. Built before the lock is taken so the
/// critical section does no allocation beyond growing collections.
pub(crate) struct NewEvent {
    /// The event exactly as received; `None` with [`Record::CountsOnly`].
    pub raw: Option<Box<RawValue>>,
    pub message_id: Option<Box<str>>,
    pub user_id: Option<Box<str>>,
}

/// A handle on what a receiver recorded; cheap to clone (an `Arc` inside), and every
/// method takes a consistent snapshot.
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
    state: Mutex<State>,
    save_file: Option<Mutex<BufWriter<File>>>,
}

#[derive(Default)]
struct State {
    stats: Stats,
    events: Vec<Box<RawValue>>,
    /// userId -> indexes into `events`.
    by_user: HashMap<Box<str>, Vec<usize>>,
    seen_message_ids: HashSet<Box<str>>,
    /// messageId -> times received, only for those received more than once.
    repeated_message_ids: HashMap<Box<str>, usize>,
    rejections: VecDeque<Rejection>,
    requests: VecDeque<RequestRecord>,
}

impl Store {
    pub(crate) fn new(mode: Record, save_file: Option<File>) -> Self {
        Self {
            inner: Arc::new(Inner {
                mode,
                state: Mutex::new(State::default()),
                save_file: save_file
                    .map(|file| Mutex::new(BufWriter::with_capacity(1 << 16, file))),
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

    /// Accepted events in arrival order, each exactly as received (duplicates included;
    /// see [`duplicates`](Self::duplicates)). Empty with [`Record::CountsOnly`].
    pub fn events(&self) -> Vec<serde_json::Value> {
        let state = self.lock();
        state.events.iter().filter_map(|raw| parse(raw)).collect()
    }

    /// Accepted events whose `userId` is `user_id`, in arrival order.
    pub fn events_for_user(&self, user_id: &str) -> Vec<serde_json::Value> {
        let state = self.lock();
        state.by_user.get(user_id).map_or_else(Vec::new, |indexes| {
            indexes
                .iter()
                .filter_map(|&i| state.events.get(i).and_then(|raw| parse(raw)))
                .collect()
        })
    }

    /// The accepted events (all, or one user's) as one JSON array, built from the raw text
    /// without re-parsing: what `GET /_receiver/events` returns.
    pub(crate) fn events_json(&self, user_id: Option<&str>) -> String {
        let state = self.lock();
        let mut out = String::from("[");
        let mut push = |raw: &RawValue| {
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(raw.get());
        };
        match user_id {
            None => state.events.iter().for_each(|raw| push(raw)),
            Some(user_id) => state
                .by_user
                .get(user_id)
                .into_iter()
                .flatten()
                .filter_map(|&i| state.events.get(i))
                .for_each(|raw| push(raw)),
        }
        out.push(']');
        out
    }

    /// `messageId` -> times received, for the `messageId`s accepted more than once.
    pub fn duplicates(&self) -> BTreeMap<String, usize> {
        self.lock()
            .repeated_message_ids
            .iter()
            .map(|(id, &times)| (id.to_string(), times))
            .collect()
    }

    /// Events that were silently dropped, oldest first (the last 10,000; the counters in
    /// [`stats`](Self::stats) cover all of them).
    pub fn rejections(&self) -> Vec<Rejection> {
        self.lock().rejections.iter().cloned().collect()
    }

    /// Requests to ingest endpoints, oldest first (the last 10,000).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().requests.iter().cloned().collect()
    }

    /// Forget everything recorded so far. The save file is left as it is.
    pub fn clear(&self) {
        *self.lock() = State::default();
    }

    /// Record one ingest request with the events it got accepted and rejected. One lock
    /// per request, however many events it carries.
    pub(crate) fn record(
        &self,
        request: RequestRecord,
        accepted: Vec<NewEvent>,
        rejected: Vec<Rejection>,
    ) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let stats = &mut state.stats;
        stats.requests += 1;
        if request.status != 0 {
            *stats.responses_by_status.entry(request.status).or_default() += 1;
        }
        stats.bytes_received += request.wire_bytes as u64;
        stats.gzip_requests += u64::from(request.gzip);

        for rejection in rejected {
            stats.rejected += 1;
            *stats
                .rejected_by_reason
                .entry(rejection.reason.as_str().to_owned())
                .or_default() += 1;
            push_bounded(&mut state.rejections, rejection);
        }

        for event in accepted {
            stats.accepted += 1;
            if let Some(id) = event.message_id {
                if state.seen_message_ids.contains(&id) {
                    stats.duplicates += 1;
                    *state.repeated_message_ids.entry(id).or_insert(1) += 1;
                } else {
                    state.seen_message_ids.insert(id);
                }
            }
            if let Some(raw) = event.raw {
                if let Some(user_id) = event.user_id {
                    state
                        .by_user
                        .entry(user_id)
                        .or_default()
                        .push(state.events.len());
                }
                state.events.push(raw);
            }
        }
        stats.unique_message_ids = state.seen_message_ids.len() as u64;
        push_bounded(&mut state.requests, request);
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

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T) {
    if queue.len() == KEEP_LAST {
        queue.pop_front();
    }
    queue.push_back(item);
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
        }
    }

    fn event(mode: Record, json: &str, message_id: &str, user_id: &str) -> NewEvent {
        NewEvent {
            raw: (mode == Record::Full)
                .then(|| RawValue::from_string(json.to_owned()).expect("test JSON")),
            message_id: Some(message_id.into()),
            user_id: Some(user_id.into()),
        }
    }

    #[test]
    fn counts_duplicates_and_indexes_users() {
        let store = Store::new(Record::Full, None);
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
        let store = Store::new(Record::CountsOnly, None);
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
        let store = Store::new(Record::Full, None);
        let rejection = Rejection {
            reason: RejectReason::MissingIdentity,
            message_id: None,
            user_id: None,
            detail: String::new(),
        };
        for _ in 0..KEEP_LAST + 5 {
            store.record(request(200), Vec::new(), vec![rejection.clone()]);
        }
        let stats = store.stats();
        assert_eq!(stats.requests, (KEEP_LAST + 5) as u64);
        assert_eq!(
            stats.rejected_by_reason.get("missing_identity"),
            Some(&((KEEP_LAST + 5) as u64))
        );
        assert_eq!(store.requests().len(), KEEP_LAST);
        assert_eq!(store.rejections().len(), KEEP_LAST);
    }

    #[test]
    fn a_hung_request_counts_as_a_request_but_not_a_response() {
        let store = Store::new(Record::Full, None);
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
