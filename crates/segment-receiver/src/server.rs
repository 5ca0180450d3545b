//! The HTTP server: router, the ingest handler, [`serve`] and [`Receiver`].

use std::fmt;
use std::fs::OpenOptions;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{ReceiverConfig, Record};
use crate::control;
use crate::error::ReceiverError;
use crate::faults::{Action, FaultPlan, Faults};
use crate::ingest::{self, Endpoint, Refusal};
use crate::page;
use crate::profiles::identify_traits;
use crate::store::{
    Dropped, Limits, NewEvent, NewRequest, Rejection, RequestRecord, Store, excerpt,
};

/// State shared by every handler of one receiver.
pub(crate) struct Shared {
    write_keys: Vec<String>,
    pub(crate) store: Store,
    pub(crate) faults: Faults,
    body_timeout: Duration,
    /// Flips to `true` when shutdown starts, releasing hung requests and ending live
    /// page streams so that graceful shutdown does not wait for them forever.
    pub(crate) closing: watch::Sender<bool>,
}

impl Shared {
    fn new(config: ReceiverConfig) -> Result<Arc<Self>, ReceiverError> {
        let save_file = match config.save_to {
            Some(path) => Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|err| ReceiverError::open_save_file(path, err))?,
            ),
            None => None,
        };
        Ok(Arc::new(Self {
            write_keys: config.write_keys,
            store: Store::new(config.record, Limits::with_keep(config.keep), save_file),
            faults: Faults::new(config.faults),
            body_timeout: config.body_timeout,
            closing: watch::Sender::new(false),
        }))
    }
}

/// Serve a receiver on `listener` until `shutdown` resolves, then stop gracefully: stop
/// accepting, answer in-flight requests (hung ones get `503`), flush the save file.
///
/// This is what `segment-sync receive` runs; [`Receiver::start`] runs the same code on a
/// background task.
///
/// # Errors
///
/// Fails if the save file cannot be opened or flushed, or if the server fails.
///
/// # Example
///
/// ```no_run
/// # async fn demo() -> Result<(), segment_receiver::ReceiverError> {
/// use segment_receiver::{ReceiverConfig, serve};
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.expect("bind");
/// let ctrl_c = async {
///     let _ = tokio::signal::ctrl_c().await;
/// };
/// serve(listener, ReceiverConfig::new().save_to("events.ndjson"), ctrl_c).await?;
/// # Ok(())
/// # }
/// ```
pub async fn serve(
    listener: TcpListener,
    config: ReceiverConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiverError> {
    run(listener, Shared::new(config)?, shutdown).await
}

async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiverError> {
    let closing = shared.clone();
    let signal = async move {
        shutdown.await;
        closing.closing.send_replace(true);
    };
    axum::serve(listener, router(shared.clone()))
        .with_graceful_shutdown(signal)
        .await
        .map_err(ReceiverError::serve)?;
    shared.store.flush().map_err(ReceiverError::flush_save_file)
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/{endpoint}", post(ingest_handler))
        .merge(control::routes())
        .merge(page::routes())
        .with_state(shared)
}

/// A running receiver, serving on a background task until [`shutdown`](Self::shutdown) or
/// until it is dropped (which also stops it gracefully, without waiting).
///
/// # Example
///
/// ```
/// use segment_receiver::{Receiver, ReceiverConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), segment_receiver::ReceiverError> {
/// let receiver = Receiver::start(ReceiverConfig::new().write_key("test-key")).await?;
/// assert!(receiver.url().starts_with("http://127.0.0.1:"));
/// // ... point the client at receiver.url() ...
/// assert_eq!(receiver.store().stats().accepted, 0);
/// receiver.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ReceiverError>>,
}

impl Receiver {
    /// Start a receiver on `127.0.0.1` and a free port.
    ///
    /// # Errors
    ///
    /// Fails if the port cannot be bound or the save file cannot be opened.
    pub async fn start(config: ReceiverConfig) -> Result<Receiver, ReceiverError> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Start a receiver on `addr` (port 0 picks a free port).
    ///
    /// # Errors
    ///
    /// Fails if `addr` cannot be bound or the save file cannot be opened.
    pub async fn start_on(
        addr: SocketAddr,
        config: ReceiverConfig,
    ) -> Result<Receiver, ReceiverError> {
        let shared = Shared::new(config)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|err| ReceiverError::bind(addr, err))?;
        let addr = listener.local_addr().map_err(ReceiverError::local_addr)?;
        let (stop, stopped) = oneshot::channel::<()>();
        // A dropped `Receiver` drops `stop`, which also ends the wait.
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(run(listener, shared.clone(), shutdown));
        Ok(Receiver {
            addr,
            shared,
            stop,
            task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What it has recorded so far.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Replace the fault plan, resetting its counters.
    pub fn set_faults(&self, plan: FaultPlan) {
        self.shared.faults.replace(plan);
    }

    /// Stop gracefully: stop accepting connections, answer in-flight requests (hung ones
    /// get `503`), flush the save file, and wait for all of it.
    ///
    /// A failure at this point (the save file could not be flushed) cannot be acted on by
    /// a test, so it is not returned; [`serve`] returns it.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("addr", &self.addr)
            .field("store", &self.shared.store)
            .finish_non_exhaustive()
    }
}

/// What to do once a request has been recorded.
enum Reply {
    Now(Response),
    Hang,
}

async fn ingest_handler(
    State(shared): State<Arc<Shared>>,
    Path(segment): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(endpoint) = Endpoint::from_segment(&segment) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let latency = shared.faults.latency();
    let request = NewRequest {
        record: RequestRecord {
            path: format!("/v1/{segment}"),
            status: 0,
            events: 0,
            wire_bytes: 0,
            body_bytes: 0,
            gzip: ingest::is_gzip(&headers),
            retry_count: ingest::retry_count(&headers),
            sent_at: None,
            message_ids: Vec::new(),
            id: 0,
            received_ms: 0,
            error: None,
        },
        headers: shown_headers(&headers),
        body: None,
        error_message: None,
    };
    let reply = match read_body(&headers, body, shared.body_timeout).await {
        Ok(wire) => {
            let mut request = request;
            request.record.wire_bytes = wire.len();
            process(&shared, endpoint, &segment, &headers, &wire, request)
        }
        Err(refusal) => {
            let mut request = request;
            request.record.wire_bytes = ingest::content_length(&headers).unwrap_or(0);
            refuse(&shared, request, refusal)
        }
    };
    // Recorded before the delay, as a real server commits before it answers: a client that
    // times out meanwhile and retries produces a duplicate, which is the point.
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match reply {
        Reply::Now(response) => response,
        Reply::Hang => {
            let mut closing = shared.closing.subscribe();
            let _ = closing.wait_for(|closing| *closing).await;
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "receiver is shutting down",
            )
        }
    }
}

/// The request's headers for the page, with the write key hidden.
fn shown_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let shown = if *name == header::AUTHORIZATION {
                "(hidden)".to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.as_str().to_owned(), shown)
        })
        .collect()
}

async fn read_body(
    headers: &HeaderMap,
    body: Body,
    timeout: Duration,
) -> Result<bytes::Bytes, Refusal> {
    // Refuse early when the client announces an oversize body. Compressed bodies are held
    // to the same limit: a gzipped body over it would inflate past it anyway.
    if ingest::content_length(headers).is_some_and(|len| len > ingest::MAX_BODY_BYTES) {
        return Err(Refusal::body_too_large());
    }
    // A body that trickles in would otherwise hold its connection (and task) forever.
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, ingest::MAX_BODY_BYTES)).await {
        Ok(read) => read.map_err(|_| Refusal::unreadable_body()),
        Err(_) => Err(Refusal::body_timeout(timeout)),
    }
}

/// Bytes of an undecodable body shown on the page.
const SHOWN_RAW_BYTES: usize = 4_096;

/// Decode, authorize and validate one request, consult the fault plan, and record the
/// outcome (one store lock).
fn process(
    shared: &Shared,
    endpoint: Endpoint,
    segment: &str,
    headers: &HeaderMap,
    wire: &[u8],
    mut request: NewRequest,
) -> Reply {
    // Bodies are kept for the page only when events are.
    let full = shared.store.mode() == Record::Full;
    let body = match ingest::decode_body(headers, wire) {
        Ok(body) => body,
        Err(refusal) => {
            if full {
                let shown = &wire[..wire.len().min(SHOWN_RAW_BYTES)];
                request.body = Some(String::from_utf8_lossy(shown).into());
            }
            return refuse(shared, request, refusal);
        }
    };
    request.record.body_bytes = body.len();
    if full {
        request.body = Some(String::from_utf8_lossy(&body).into());
    }
    let parsed = match ingest::parse(endpoint, &body) {
        Ok(parsed) => parsed,
        Err(refusal) => return refuse(shared, request, refusal),
    };
    request.record.events = parsed.events.len();
    request.record.sent_at = parsed.sent_at;
    if let (Some(key), Some(shown)) = (&parsed.write_key, &mut request.body) {
        // The page shows bodies; a write key in one is as secret as in the header.
        let quoted = serde_json::to_string(key).unwrap_or_default();
        if shown.contains(&quoted) {
            *shown = shown.replace(&quoted, "\"(hidden)\"").into();
        }
    }
    if let Err(refusal) =
        ingest::authorize(&shared.write_keys, headers, parsed.write_key.as_deref())
    {
        return refuse(shared, request, refusal);
    }
    let events = ingest::check_events(endpoint, parsed.events);
    if full {
        request.record.message_ids = events.iter().filter_map(|e| e.message_id.clone()).collect();
    }

    let has_user = |user: &str| events.iter().any(|e| e.user_id.as_deref() == Some(user));
    match shared.faults.decide(has_user) {
        Action::Pass => {}
        Action::Hang => {
            shared.store.record(request, Vec::new(), Vec::new());
            return Reply::Hang;
        }
        Action::Fail {
            status,
            retry_after,
        } => {
            let message = "fault injected by segment-receiver";
            request.record.status = status.as_u16();
            request.record.error = Some("injected_fault".to_owned());
            request.error_message = Some(message.to_owned());
            shared.store.record(request, Vec::new(), Vec::new());
            let mut response = error_response(status, "injected_fault", message);
            if let Some(value) = retry_after {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return Reply::Now(response);
        }
    }

    let mut accepted = Vec::with_capacity(events.len());
    let mut rejected: Vec<Dropped> = Vec::new();
    for event in events {
        match event.verdict {
            Ok(()) => accepted.push(event),
            Err((reason, detail)) => {
                // The page shows the first dropped event of each reason.
                let first = !rejected.iter().any(|d| d.rejection.reason == reason);
                rejected.push(Dropped {
                    excerpt: first.then(|| excerpt(event.raw.get())),
                    rejection: Rejection {
                        reason,
                        message_id: event.message_id,
                        user_id: event.user_id,
                        detail,
                    },
                });
            }
        }
    }
    if let Err(err) = shared.store.save(accepted.iter().map(|e| e.raw)) {
        // Nothing is recorded, so the client's retry is not a duplicate.
        let refusal = Refusal {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "save_failed",
            message: format!("could not append to the save file: {err}"),
        };
        return refuse(shared, request, refusal);
    }
    let accepted = accepted
        .into_iter()
        .map(|event| {
            // The path decides a single event's type, as at Segment; a batch item's
            // type was checked against the known ones.
            let kind = match endpoint {
                Endpoint::Single(kind) => kind,
                Endpoint::Batch => event.kind.as_deref().unwrap_or(segment),
            };
            let traits = (full && kind == "identify")
                .then(|| identify_traits(event.raw))
                .flatten();
            NewEvent {
                raw: full.then(|| event.raw.to_owned()),
                kind: kind.into(),
                traits,
                message_id: event.message_id.map(String::into_boxed_str),
                user_id: event.user_id.filter(|_| full).map(String::into_boxed_str),
                anonymous_id: event
                    .anonymous_id
                    .filter(|_| full)
                    .map(String::into_boxed_str),
            }
        })
        .collect();
    request.record.status = StatusCode::OK.as_u16();
    shared.store.record(request, accepted, rejected);
    Reply::Now(
        (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            r#"{"success":true}"#,
        )
            .into_response(),
    )
}

fn refuse(shared: &Shared, mut request: NewRequest, refusal: Refusal) -> Reply {
    request.record.status = refusal.status.as_u16();
    request.record.error = Some(refusal.code.to_owned());
    request.error_message = Some(refusal.message.clone());
    shared.store.record(request, Vec::new(), Vec::new());
    let mut response = error_response(refusal.status, refusal.code, &refusal.message);
    if refusal.status == StatusCode::REQUEST_TIMEOUT {
        // The rest of the body may still be on its way: do not read it, close instead.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Reply::Now(response)
}

/// `{"success":false,"code":..,"message":..}`, the shape of every error this server sends.
pub(crate) fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "success": false, "code": code, "message": message });
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RejectReason;
    use base64::Engine as _;
    use std::io::Write as _;
    use std::time::Duration;

    const IDENTIFY: &str =
        r#"{"type":"identify","userId":"u1","messageId":"m1","traits":{"email":"a@example.com"}}"#;

    fn batch(events: &[&str]) -> String {
        format!(
            r#"{{"batch":[{}],"sentAt":"2024-05-01T00:00:00.000Z","context":{{"library":{{"name":"test"}}}}}}"#,
            events.join(",")
        )
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).expect("in-memory write");
        encoder.finish().expect("in-memory write")
    }

    fn basic(key: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
        )
    }

    async fn post(
        receiver: &Receiver,
        path: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = reqwest::Client::new()
            .post(format!("{}{path}", receiver.url()))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("the receiver answers")
    }

    async fn start(config: ReceiverConfig) -> Receiver {
        Receiver::start(config).await.expect("receiver starts")
    }

    #[tokio::test]
    async fn valid_batch_is_accepted_and_recorded_exactly_as_received() {
        let receiver = start(ReceiverConfig::new()).await;
        // Odd spacing inside the event must survive: events are kept as raw text.
        let spaced = r#"{ "type" : "identify", "userId":"u2", "messageId":"m2" }"#;
        let response = post(
            &receiver,
            "/v1/batch",
            batch(&[IDENTIFY, spaced]),
            &[("x-retry-count", "2")],
        )
        .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.expect("body"), r#"{"success":true}"#);

        let store = receiver.store();
        assert_eq!(store.events().len(), 2);
        assert_eq!(
            store.events_for_user("u1")[0]["traits"]["email"],
            "a@example.com"
        );
        assert_eq!(store.events_json(Some("u2")), format!("[{spaced}]"));
        let stats = store.stats();
        assert_eq!(
            (
                stats.requests,
                stats.accepted,
                stats.unique_message_ids,
                stats.rejected
            ),
            (1, 2, 2, 0)
        );
        let request = &store.requests()[0];
        assert_eq!(
            (request.path.as_str(), request.status, request.events),
            ("/v1/batch", 200, 2)
        );
        assert_eq!(request.retry_count, Some(2));
        assert_eq!(request.sent_at.as_deref(), Some("2024-05-01T00:00:00.000Z"));
        assert_eq!(request.message_ids, ["m1", "m2"]);
        receiver.shutdown().await;
    }

    #[tokio::test]
    async fn gzip_bodies_are_inflated_and_wire_bytes_counted() {
        let receiver = start(ReceiverConfig::new()).await;
        let body = batch(&[IDENTIFY]);
        let wire = gzip(body.as_bytes());
        let wire_len = wire.len();
        let response = post(
            &receiver,
            "/v1/batch",
            wire,
            &[("content-encoding", "gzip")],
        )
        .await;
        assert_eq!(response.status(), 200);
        let stats = receiver.store().stats();
        assert_eq!(
            (stats.accepted, stats.gzip_requests, stats.bytes_received),
            (1, 1, wire_len as u64)
        );
        let request = &receiver.store().requests()[0];
        assert_eq!(
            (request.gzip, request.wire_bytes, request.body_bytes),
            (true, wire_len, body.len())
        );

        let corrupt = post(
            &receiver,
            "/v1/batch",
            "not gzip",
            &[("content-encoding", "gzip")],
        )
        .await;
        assert_eq!(corrupt.status(), 400);
        receiver.shutdown().await;
    }

    #[tokio::test]
    async fn bad_json_gets_400_with_a_json_error_and_records_no_events() {
        let receiver = start(ReceiverConfig::new()).await;
        for body in ["{not json", r#"{"batch":{}}"#, r#"{"sentAt":"x"}"#] {
            let response = post(&receiver, "/v1/batch", body, &[]).await;
            assert_eq!(response.status(), 400, "{body}");
            let error: serde_json::Value =
                serde_json::from_str(&response.text().await.expect("body")).expect("JSON error");
            assert_eq!(error["code"], "invalid_json");
        }
        let stats = receiver.store().stats();
        assert_eq!((stats.requests, stats.accepted), (3, 0));
        assert_eq!(stats.responses_by_status.get(&400), Some(&3));
        receiver.shutdown().await;
    }

    #[tokio::test]
    async fn oversize_bodies_get_400_plain_or_gzipped() {
        let receiver = start(ReceiverConfig::new()).await;
        let padding = " ".repeat(ingest::MAX_BODY_BYTES);
        let plain = format!(r#"{{"batch":[{IDENTIFY}]{padding}}}"#);
        assert_eq!(
            post(&receiver, "/v1/batch", plain.clone(), &[])
                .await
                .status(),
            400
        );
        // Small on the wire, too large once inflated.
        let gzipped = gzip(plain.as_bytes());
        assert!(gzipped.len() < ingest::MAX_BODY_BYTES);
        assert_eq!(
            post(
                &receiver,
                "/v1/batch",
                gzipped,
                &[("content-encoding", "gzip")]
            )
            .await
            .status(),
            400
        );
        assert_eq!(receiver.store().stats().accepted, 0);
        receiver.shutdown().await;
    }

    #[tokio::test]
    async fn events_segment_drops_get_200_and_a_rejection_reason() {
        let receiver = start(ReceiverConfig::new()).await;
        let oversize = format!(
            r#"{{"type":"identify","userId":"big","messageId":"m-big","traits":{{"bio":"{}"}}}}"#,
            "x".repeat(ingest::MAX_EVENT_BYTES)
        );
        let anonymous = r#"{"type":"identify","messageId":"m-anon","traits":{}}"#;
        let untyped = r#"{"userId":"u3","messageId":"m-untyped"}"#;
        let response = post(
            &receiver,
            "/v1/batch",
            batch(&[IDENTIFY, &oversize, anonymous, untyped]),
            &[],
        )
        .await;
        assert_eq!(response.status(), 200);

        let store = receiver.store();
        let stats = store.stats();
        assert_eq!((stats.accepted, stats.rejected), (1, 3));
        let reasons: Vec<_> = store
            .rejections()
            .iter()
            .map(|r| (r.reason, r.message_id.clone()))
            .collect();
        assert_eq!(
            reasons,
            [
                (RejectReason::EventTooLarge, Some("m-big".to_owned())),
                (RejectReason::MissingIdentity, Some("m-anon".to_owned())),
                (RejectReason::MissingType, Some("m-untyped".to_owned())),
            ]
        );
        assert_eq!(stats.rejected_by_reason.get("event_too_large"), Some(&1));
        assert!(store.events_for_user("big").is_empty());
        receiver.shutdown().await;
    }

    #[tokio::test]
    async fn a_batch_over_2500_events_is_accepted_with_200_but_entirely_rejected() {
        let receiver = start(ReceiverConfig::new()).await;
        let events = vec![IDENTIFY; ingest::MAX_BATCH_EVENTS + 1];
        let response = post(&receiver, "/v1/batch", batch(&events), &[]).await;
        assert_eq!(response.status(), 200);
        let stats = receiver.store().stats();
        assert_eq!((stats.accepted, stats.rejected), (0, 2501));
        assert_eq!(stats.rejected_by_reason.get("too_many_events"), Some(&2501));
        receiver.shutdown().await;
    }

    #[tokio::test]
    async fn write_key_is_checked_in_the_header_or_the_body() {
        let receiver = start(ReceiverConfig::new().write_key("key-a").write_key("key-b")).await;
        let body = batch(&[IDENTIFY]);

        let missing = post(&receiver, "/v1/batch", body.clone(), &[]).await;
        assert_eq!(missing.status(), 401);
        let wrong = post(
            &receiver,
            "/v1/batch",
            body.clone(),
            &[("authorization", &basic("secret-wrong"))],
        )
        .await;
        assert_eq!(wrong.status(), 401);
        let error = wrong.text().await.expect("body");
        assert!(
            error.contains(r#""code":"unauthorized""#) && !error.contains("secret-wrong"),
            "{error}"
        );

        let header = post(
            &receiver,
            "/v1/batch",
            body.clone(),
            &[("authorization", &basic("key-b"))],
        )
        .await;
        assert_eq!(header.status(), 200);
        let in_body = format!(r#"{{"writeKey":"key-a","batch":[{IDENTIFY}]}}"#);
        assert_eq!(
            post(&receiver, "/v1/batch", in_body, &[]).await.status(),
            200
        );

        let stats = receiver.store().stats();
        assert_eq!(stats.accepted, 2);
        assert_eq!(stats.responses_by_status, [(200, 2), (401, 2)].into());
        receiver.shutdown().await;
    }

    #[tokio::test]
    async fn single_event_endpoints_imply_the_type() {
        let receiver = start(ReceiverConfig::new().write_key("k")).await;
        let event = r#"{"userId":"u9","messageId":"m9","writeKey":"k","traits":{}}"#;
        assert_eq!(
            post(&receiver, "/v1/identify", event, &[]).await.status(),
            200
        );
        assert_eq!(
            post(&receiver, "/v1/track", r#"{"writeKey":"k"}"#, &[])
                .await
                .status(),
            200
        );
        assert_eq!(post(&receiver, "/v1/nope", event, &[]).await.status(), 404);
        let store = receiver.store();
        assert_eq!(store.events_for_user("u9").len(), 1);
        assert_eq!(store.rejections()[0].reason, RejectReason::MissingIdentity);
        assert_eq!(store.requests()[0].path, "/v1/identify");
        receiver.shutdown().await;
    }

    #[tokio::test]
    async fn a_resent_message_id_is_counted_as_a_duplicate() {
        let receiver = start(ReceiverConfig::new()).await;
        for _ in 0..3 {
            assert_eq!(
                post(&receiver, "/v1/batch", batch(&[IDENTIFY]), &[])
                    .await
                    .status(),
                200
            );
        }
        let stats = receiver.store().stats();
        assert_eq!(
            (stats.accepted, stats.unique_message_ids, stats.duplicates),
            (3, 1, 2)
        );
        assert_eq!(receiver.store().duplicates(), [("m1".to_owned(), 3)].into());
        receiver.shutdown().await;
    }

    #[tokio::test]
    async fn every_type_is_counted_by_type_and_dropped_by_its_rules() {
        let receiver = start(ReceiverConfig::new()).await;
        let events = [
            r#"{"type":"identify","userId":"u","messageId":"m1"}"#,
            r#"{"type":"track","userId":"u","event":"E","messageId":"m2"}"#,
            r#"{"type":"track","userId":"u","messageId":"m3"}"#,
            r#"{"type":"group","userId":"u","groupId":"g","messageId":"m4"}"#,
            r#"{"type":"group","userId":"u","messageId":"m5"}"#,
            r#"{"type":"alias","userId":"u","previousId":"p","messageId":"m6"}"#,
            r#"{"type":"alias","userId":"u","messageId":"m7"}"#,
            r#"{"type":"page","anonymousId":"a","messageId":"m8"}"#,
            r#"{"type":"screen","userId":"u","messageId":"m9"}"#,
        ];
        let response = post(&receiver, "/v1/batch", batch(&events), &[]).await;
        assert_eq!(response.status(), 200, "Segment answers 200 and drops");
        let single = post(&receiver, "/v1/track", r#"{"userId":"u"}"#.to_owned(), &[]).await;
        assert_eq!(single.status(), 200);
        let stats = receiver.store().stats();
        assert_eq!((stats.accepted, stats.rejected), (6, 4));
        assert_eq!(stats.rejected_by_reason["missing_field"], 4);
        let by_type: Vec<(&str, u64)> = stats
            .accepted_by_type
            .iter()
            .map(|(kind, n)| (kind.as_str(), *n))
            .collect();
        assert_eq!(
            by_type,
            [
                ("alias", 1),
                ("group", 1),
                ("identify", 1),
                ("page", 1),
                ("screen", 1),
                ("track", 1)
            ]
        );
        receiver.shutdown().await;
    }

    #[tokio::test]
    async fn counts_only_keeps_no_bodies() {
        let receiver = start(ReceiverConfig::new().record(Record::CountsOnly)).await;
        for _ in 0..2 {
            assert_eq!(
                post(&receiver, "/v1/batch", batch(&[IDENTIFY]), &[])
                    .await
                    .status(),
                200
            );
        }
        let store = receiver.store();
        assert_eq!(store.stats().duplicates, 1);
        assert!(store.events().is_empty());
        assert!(store.requests()[0].message_ids.is_empty());
        receiver.shutdown().await;
    }

    #[tokio::test]
    async fn first_n_faults_fail_requests_without_accepting_their_events() {
        let receiver = start(ReceiverConfig::new().faults(FaultPlan::first_n(2, 503))).await;
        let statuses = [
            post(&receiver, "/v1/batch", batch(&[IDENTIFY]), &[])
                .await
                .status(),
            post(&receiver, "/v1/batch", batch(&[IDENTIFY]), &[])
                .await
                .status(),
            post(&receiver, "/v1/batch", batch(&[IDENTIFY]), &[])
                .await
                .status(),
        ];
        assert_eq!(statuses, [503, 503, 200]);
        let store = receiver.store();
        let stats = store.stats();
        assert_eq!(
            (stats.requests, stats.accepted, stats.duplicates),
            (3, 1, 0)
        );
        let recorded: Vec<_> = store
            .requests()
            .iter()
            .map(|r| (r.status, r.message_ids.clone()))
            .collect();
        assert_eq!(
            recorded,
            [
                (503, vec!["m1".to_owned()]),
                (503, vec!["m1".to_owned()]),
                (200, vec!["m1".to_owned()])
            ]
        );

        receiver.set_faults(FaultPlan::first_n(1, 500));
        assert_eq!(
            post(&receiver, "/v1/batch", batch(&[IDENTIFY]), &[])
                .await
                .status(),
            500
        );
        receiver.shutdown().await;
    }

    #[tokio::test]
    async fn retry_after_faults_send_the_header_and_a_body() {
        let receiver = start(ReceiverConfig::new().faults(FaultPlan::retry_after(1, "2"))).await;
        let response = post(&receiver, "/v1/batch", batch(&[IDENTIFY]), &[]).await;
        assert_eq!(response.status(), 429);
        assert_eq!(
            response.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"2"[..])
        );
        assert!(
            response
                .text()
                .await
                .expect("body")
                .contains("injected_fault")
        );
        let second = post(&receiver, "/v1/batch", batch(&[IDENTIFY]), &[]).await;
        assert_eq!(second.status(), 200);
        assert!(second.headers().get("retry-after").is_none());
        receiver.shutdown().await;
    }

    #[tokio::test]
    async fn user_id_faults_fire_for_matching_batches_at_most_times() {
        let receiver =
            start(ReceiverConfig::new().faults(FaultPlan::user_id("u1", 500, Some(1)))).await;
        let other = r#"{"type":"identify","userId":"u2","messageId":"m2"}"#;
        assert_eq!(
            post(&receiver, "/v1/batch", batch(&[other]), &[])
                .await
                .status(),
            200
        );
        assert_eq!(
            post(&receiver, "/v1/batch", batch(&[other, IDENTIFY]), &[])
                .await
                .status(),
            500
        );
        assert_eq!(
            post(&receiver, "/v1/batch", batch(&[other, IDENTIFY]), &[])
                .await
                .status(),
            200
        );
        let stats = receiver.store().stats();
        // The faulted batch accepted nothing, not even its innocent event.
        assert_eq!((stats.accepted, stats.duplicates), (3, 1));
        receiver.shutdown().await;
    }

    #[tokio::test]
    async fn seeded_fraction_faults_are_reproducible_over_http() {
        async fn statuses(seed: u64) -> Vec<u16> {
            let receiver =
                start(ReceiverConfig::new().faults(FaultPlan::fraction(0.5, 502, Some(seed))))
                    .await;
            let mut statuses = Vec::new();
            for _ in 0..20 {
                statuses.push(
                    post(&receiver, "/v1/batch", batch(&[IDENTIFY]), &[])
                        .await
                        .status()
                        .as_u16(),
                );
            }
            receiver.shutdown().await;
            statuses
        }
        let first = statuses(9).await;
        assert_eq!(first, statuses(9).await);
        assert!(first.contains(&502) && first.contains(&200), "{first:?}");
    }

    #[tokio::test]
    async fn hung_requests_wait_for_the_client_and_do_not_block_shutdown() {
        let receiver = start(ReceiverConfig::new().faults(FaultPlan::hang(1))).await;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(200))
            .build()
            .expect("client");
        let url = format!("{}/v1/batch", receiver.url());
        let hung = client.post(&url).body(batch(&[IDENTIFY])).send().await;
        assert!(hung.expect_err("never answered").is_timeout());
        let next = client
            .post(&url)
            .body(batch(&[IDENTIFY]))
            .send()
            .await
            .expect("answered");
        assert_eq!(next.status(), 200);

        let statuses: Vec<_> = receiver
            .store()
            .requests()
            .iter()
            .map(|r| r.status)
            .collect();
        assert_eq!(statuses, [0, 200]);
        assert_eq!(receiver.store().stats().accepted, 1);
        receiver.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_answers_a_request_that_is_still_hanging() {
        let receiver = start(ReceiverConfig::new().faults(FaultPlan::hang(1))).await;
        let request = reqwest::Client::new()
            .post(format!("{}/v1/batch", receiver.url()))
            .body(batch(&[IDENTIFY]))
            .send();
        let pending = tokio::spawn(request);
        // Wait until the request is being held, without sleeping: the store notes it first.
        while receiver.store().stats().requests == 0 {
            tokio::task::yield_now().await;
        }
        receiver.shutdown().await;
        let response = pending.await.expect("task").expect("answered at shutdown");
        assert_eq!(response.status(), 503);
    }

    /// Open a raw connection and send `head` plus the first bytes of a body that is
    /// announced as 1,000 bytes long, and never the rest.
    async fn stalled_body(receiver: &Receiver) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt as _;
        let mut stream = tokio::net::TcpStream::connect(receiver.addr())
            .await
            .expect("connect");
        let head = "POST /v1/batch HTTP/1.1\r\nhost: 127.0.0.1\r\n\
                    content-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"batch\":[";
        stream.write_all(head.as_bytes()).await.expect("write");
        stream
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_body_gets_408_and_its_connection_is_closed() {
        use tokio::io::AsyncReadExt as _;
        let timeout = Duration::from_secs(5);
        let receiver = start(ReceiverConfig::new().body_timeout(timeout)).await;
        let started = tokio::time::Instant::now();
        let mut streams = Vec::new();
        for _ in 0..20 {
            streams.push(stalled_body(&receiver).await);
        }
        for mut stream in streams {
            let mut answer = Vec::new();
            tokio::time::timeout(Duration::from_secs(3_600), stream.read_to_end(&mut answer))
                .await
                .expect("the receiver gives up on the body and closes the connection")
                .expect("read");
            let answer = String::from_utf8_lossy(&answer);
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
            assert!(answer.contains("body_timeout"), "{answer}");
        }
        assert!(started.elapsed() >= timeout);
        let stats = receiver.store().stats();
        assert_eq!(stats.requests, 20);
        assert_eq!(stats.responses_by_status.get(&408), Some(&20));
        receiver.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn latency_uses_tokio_time() {
        let plan = FaultPlan::none().with_latency(Duration::from_secs(30));
        let receiver = start(ReceiverConfig::new().faults(plan)).await;
        let started = tokio::time::Instant::now();
        assert_eq!(
            post(&receiver, "/v1/batch", batch(&[IDENTIFY]), &[])
                .await
                .status(),
            200
        );
        assert!(started.elapsed() >= Duration::from_secs(30));
        receiver.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_on_a_multi_thread_runtime_are_all_counted() {
        let receiver = start(ReceiverConfig::new()).await;
        let client = reqwest::Client::new();
        let url = format!("{}/v1/batch", receiver.url());
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let event = format!(r#"{{"type":"identify","userId":"u{i}","messageId":"m{i}"}}"#);
                let request = client.post(&url).body(batch(&[&event])).send();
                tokio::spawn(request)
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.expect("task").expect("answered").status(), 200);
        }
        let stats = receiver.store().stats();
        assert_eq!(
            (stats.requests, stats.accepted, stats.unique_message_ids),
            (50, 50, 50)
        );
        receiver.shutdown().await;
    }
}
