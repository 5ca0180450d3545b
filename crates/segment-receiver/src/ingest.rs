//! Decoding, authenticating and validating one ingest request, the way Segment's HTTP
//! Tracking API does. Pure functions over headers and bytes; `server.rs` wires them up.

use std::borrow::Cow;
use std::io::Read;

use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::store::RejectReason;

/// Largest request body, after gunzip: larger bodies get `400`.
pub(crate) const MAX_BODY_BYTES: usize = 500_000;
/// Largest event (its JSON text as received): larger events are silently dropped.
pub(crate) const MAX_EVENT_BYTES: usize = 32_000;
/// Most events in one batch: a larger batch has all its events silently dropped.
pub(crate) const MAX_BATCH_EVENTS: usize = 2_500;

const EVENT_TYPES: [&str; 6] = ["identify", "track", "page", "screen", "group", "alias"];

/// Which ingest endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `POST /v1/batch`: an envelope with a `batch` array.
    Batch,
    /// `POST /v1/<type>`: the body is one event whose type is implied by the path.
    Single(&'static str),
}

impl Endpoint {
    /// The endpoint for `/v1/{segment}`, if Segment has one.
    pub(crate) fn from_segment(segment: &str) -> Option<Self> {
        match segment {
            "batch" => Some(Self::Batch),
            s => EVENT_TYPES
                .iter()
                .find(|kind| **kind == s)
                .map(|kind| Self::Single(kind)),
        }
    }
}

/// A request answered with an error status before any event is looked at.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    /// A stable snake_case code for the JSON body.
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    fn unauthorized(message: &str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: message.to_owned(),
        }
    }

    pub(crate) fn body_too_large() -> Self {
        Self::bad_request(
            "body_too_large",
            format!("request body is larger than {MAX_BODY_BYTES} bytes"),
        )
    }

    pub(crate) fn body_timeout(timeout: std::time::Duration) -> Self {
        Self {
            status: StatusCode::REQUEST_TIMEOUT,
            code: "body_timeout",
            message: format!(
                "request body did not arrive within {} ms",
                timeout.as_millis()
            ),
        }
    }

    pub(crate) fn unreadable_body() -> Self {
        Self::bad_request(
            "unreadable_body",
            format!("request body could not be read or is larger than {MAX_BODY_BYTES} bytes"),
        )
    }
}

/// Whether the request body is gzipped.
pub(crate) fn is_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"gzip"))
}

/// The `Content-Length` header, if present and numeric.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The `X-Retry-Count` header, if present and numeric.
pub(crate) fn retry_count(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("x-retry-count")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The body as JSON bytes: gunzipped if needed, never more than [`MAX_BODY_BYTES`].
pub(crate) fn decode_body<'a>(
    headers: &HeaderMap,
    wire: &'a [u8],
) -> Result<Cow<'a, [u8]>, Refusal> {
    let body = match headers.get(header::CONTENT_ENCODING) {
        None => Cow::Borrowed(wire),
        Some(_) if is_gzip(headers) => Cow::Owned(gunzip(wire)?),
        Some(value) if value.as_bytes().eq_ignore_ascii_case(b"identity") => Cow::Borrowed(wire),
        Some(_) => {
            return Err(Refusal::bad_request(
                "unsupported_encoding",
                "Content-Encoding must be gzip or identity",
            ));
        }
    };
    if body.len() > MAX_BODY_BYTES {
        return Err(Refusal::body_too_large());
    }
    Ok(body)
}

fn gunzip(wire: &[u8]) -> Result<Vec<u8>, Refusal> {
    // Reading one byte past the limit is enough to know a body is too large, and caps what
    // a gzip bomb can make us allocate.
    let limit = MAX_BODY_BYTES + 1;
    let mut body = Vec::with_capacity(wire.len().saturating_mul(4).min(limit));
    flate2::read::GzDecoder::new(wire)
        .take(limit as u64)
        .read_to_end(&mut body)
        .map_err(|err| Refusal::bad_request("invalid_gzip", format!("invalid gzip body: {err}")))?;
    Ok(body)
}

/// A parsed request body: the events' raw JSON text, borrowed from the body.
#[derive(Debug)]
pub(crate) struct Parsed<'a> {
    pub events: Vec<&'a RawValue>,
    pub sent_at: Option<String>,
    pub write_key: Option<String>,
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
    #[serde(rename = "sentAt", borrow, default)]
    sent_at: Option<&'a RawValue>,
    #[serde(rename = "writeKey", borrow, default)]
    write_key: Option<&'a RawValue>,
}

/// The envelope fields of a single-event body (the event itself is kept raw).
#[derive(Deserialize)]
struct SingleBody<'a> {
    #[serde(rename = "sentAt", borrow, default)]
    sent_at: Option<&'a RawValue>,
    #[serde(rename = "writeKey", borrow, default)]
    write_key: Option<&'a RawValue>,
}

/// Parse the body of a request to `endpoint`. Events are kept as raw text so that sizes
/// are measured on the bytes received and nothing is re-serialised.
pub(crate) fn parse(endpoint: Endpoint, body: &[u8]) -> Result<Parsed<'_>, Refusal> {
    let invalid = |err: serde_json::Error| {
        Refusal::bad_request("invalid_json", format!("invalid JSON body: {err}"))
    };
    // A derived struct would also accept a JSON array; Segment wants an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Refusal::bad_request(
            "invalid_json",
            "request body must be a JSON object",
        ));
    }
    match endpoint {
        Endpoint::Batch => {
            let parsed: BatchBody<'_> = serde_json::from_slice(body).map_err(invalid)?;
            Ok(Parsed {
                events: parsed.batch,
                sent_at: json_string(parsed.sent_at),
                write_key: json_string(parsed.write_key),
            })
        }
        Endpoint::Single(_) => {
            let event: &RawValue = serde_json::from_slice(body).map_err(invalid)?;
            let envelope: SingleBody<'_> = serde_json::from_str(event.get()).map_err(invalid)?;
            Ok(Parsed {
                events: vec![event],
                sent_at: json_string(envelope.sent_at),
                write_key: json_string(envelope.write_key),
            })
        }
    }
}

/// The write key from `Authorization: Basic base64("<key>:")`, if the header is present.
fn header_write_key(headers: &HeaderMap) -> Option<Result<String, Refusal>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let malformed = || {
        Refusal::unauthorized(
            "malformed Authorization header: expected Basic base64(\"<writeKey>:\")",
        )
    };
    let parse = || {
        let text = value.to_str().ok()?;
        let (scheme, encoded) = text.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let credentials = String::from_utf8(decoded).ok()?;
        // The password part is empty for Segment; tolerate a missing colon too.
        let key = credentials
            .split_once(':')
            .map_or(credentials.as_str(), |(key, _)| key);
        Some(key.to_owned())
    };
    Some(parse().ok_or_else(malformed))
}

/// Check the request's write key: the `Authorization` header if present, otherwise the
/// body's `writeKey`. With no keys configured, everything passes.
pub(crate) fn authorize(
    keys: &[String],
    headers: &HeaderMap,
    body_key: Option<&str>,
) -> Result<(), Refusal> {
    if keys.is_empty() {
        return Ok(());
    }
    let key = match header_write_key(headers) {
        Some(key) => Cow::Owned(key?),
        None => Cow::Borrowed(body_key.ok_or_else(|| Refusal::unauthorized("missing write key"))?),
    };
    // Never echo the key back: it may be a real one sent to the wrong place.
    if keys.iter().any(|k| *k == *key) {
        Ok(())
    } else {
        Err(Refusal::unauthorized("invalid write key"))
    }
}

/// One event of a request and what Segment would do with it.
#[derive(Debug)]
pub(crate) struct Event<'a> {
    pub raw: &'a RawValue,
    pub message_id: Option<String>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// Its string `type`, if it has one.
    pub kind: Option<String>,
    /// `Err` if Segment would silently drop it.
    pub verdict: Result<(), (RejectReason, String)>,
}

/// The fields validation looks at; everything else is skipped without being built.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(rename = "userId", borrow, default)]
    user_id: Option<&'a RawValue>,
    #[serde(rename = "anonymousId", borrow, default)]
    anonymous_id: Option<&'a RawValue>,
    #[serde(rename = "messageId", borrow, default)]
    message_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
    #[serde(rename = "groupId", borrow, default)]
    group_id: Option<&'a RawValue>,
    #[serde(rename = "previousId", borrow, default)]
    previous_id: Option<&'a RawValue>,
}

/// Apply Segment's per-event rules to the events of one request.
pub(crate) fn check_events(endpoint: Endpoint, raws: Vec<&RawValue>) -> Vec<Event<'_>> {
    let count = raws.len();
    let too_many = count > MAX_BATCH_EVENTS;
    raws.into_iter()
        .map(|raw| {
            let text = raw.get();
            let head = if text.starts_with('{') {
                serde_json::from_str::<Head<'_>>(text).map_err(|err| err.to_string())
            } else {
                Err("event is not a JSON object".to_owned())
            };
            let (message_id, user_id, anonymous_id, kind) = match &head {
                Ok(head) => (
                    json_string(head.message_id),
                    json_string(head.user_id),
                    json_string(head.anonymous_id),
                    json_string(head.kind),
                ),
                Err(_) => (None, None, None, None),
            };
            let verdict = if too_many {
                Err((
                    RejectReason::TooManyEvents,
                    format!("batch has {count} events; the limit is {MAX_BATCH_EVENTS}"),
                ))
            } else if text.len() > MAX_EVENT_BYTES {
                Err((
                    RejectReason::EventTooLarge,
                    format!(
                        "event is {} bytes; the limit is {MAX_EVENT_BYTES}",
                        text.len()
                    ),
                ))
            } else {
                head.map_err(|detail| (RejectReason::InvalidEvent, detail))
                    .and_then(|head| check_head(endpoint, &head, user_id.as_deref()))
            };
            Event {
                raw,
                message_id,
                user_id,
                anonymous_id,
                kind,
                verdict,
            }
        })
        .collect()
}

fn check_head(
    endpoint: Endpoint,
    head: &Head<'_>,
    user_id: Option<&str>,
) -> Result<(), (RejectReason, String)> {
    // On a single-event endpoint the path gives the type.
    let kind = match endpoint {
        Endpoint::Single(kind) => kind,
        Endpoint::Batch => match json_string(head.kind).filter(|kind| !kind.is_empty()) {
            None => {
                return Err((
                    RejectReason::MissingType,
                    "batch item has no string \"type\"".to_owned(),
                ));
            }
            Some(kind) => match EVENT_TYPES.iter().find(|known| **known == kind) {
                Some(known) => known,
                None => {
                    return Err((
                        RejectReason::InvalidEvent,
                        format!("unknown event type {kind:?}"),
                    ));
                }
            },
        },
    };
    let anonymous_id = json_string(head.anonymous_id);
    let has_identity = [user_id, anonymous_id.as_deref()]
        .into_iter()
        .flatten()
        .any(|id| !id.is_empty());
    if !has_identity {
        return Err((
            RejectReason::MissingIdentity,
            "event has neither a non-empty userId nor anonymousId".to_owned(),
        ));
    }
    // Segment answers 200 and drops a call without the fields its type requires.
    let required: &[(&str, Option<&RawValue>, bool)] = match kind {
        "track" => &[("event", head.event, false)],
        "group" => &[("groupId", head.group_id, true)],
        "alias" => &[
            ("previousId", head.previous_id, true),
            ("userId", head.user_id, false),
        ],
        _ => &[],
    };
    for (field, value, number_ok) in required {
        if !is_present(*value, *number_ok) {
            return Err((
                RejectReason::MissingField,
                format!("{kind} has no non-empty string {field:?}"),
            ));
        }
    }
    Ok(())
}

/// Whether a required field holds a non-empty string (or a number, where Segment's
/// libraries accept one for an id).
fn is_present(raw: Option<&RawValue>, number_ok: bool) -> bool {
    let Some(raw) = raw else {
        return false;
    };
    let text = raw.get();
    if number_ok && (text.starts_with('-') || text.starts_with(|c: char| c.is_ascii_digit())) {
        return true;
    }
    json_string(Some(raw)).is_some_and(|value| !value.trim().is_empty())
}

/// The value of a JSON string field; `None` when absent or not a string.
fn json_string(raw: Option<&RawValue>) -> Option<String> {
    raw.filter(|raw| raw.get().starts_with('"'))
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use std::io::Write as _;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).expect("in-memory write");
        encoder.finish().expect("in-memory write")
    }

    fn gzip_headers() -> HeaderMap {
        HeaderMap::from_iter([(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"))])
    }

    fn basic(credentials: &str) -> HeaderMap {
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        let value = HeaderValue::from_str(&format!("Basic {encoded}")).expect("ASCII");
        HeaderMap::from_iter([(header::AUTHORIZATION, value)])
    }

    /// Parse `body` as a batch and return each event's verdict.
    fn verdicts(body: &str) -> Vec<Result<(), RejectReason>> {
        let parsed = parse(Endpoint::Batch, body.as_bytes()).expect("valid batch");
        check_events(Endpoint::Batch, parsed.events)
            .into_iter()
            .map(|event| event.verdict.map_err(|(reason, _)| reason))
            .collect()
    }

    #[test]
    fn endpoints_match_segment_paths() {
        assert_eq!(Endpoint::from_segment("batch"), Some(Endpoint::Batch));
        assert_eq!(
            Endpoint::from_segment("identify"),
            Some(Endpoint::Single("identify"))
        );
        assert_eq!(
            Endpoint::from_segment("alias"),
            Some(Endpoint::Single("alias"))
        );
        assert_eq!(Endpoint::from_segment("import"), None);
    }

    #[test]
    fn gzip_bodies_are_decoded() {
        let json = br#"{"batch":[]}"#;
        let wire = gzip(json);
        let decoded = decode_body(&gzip_headers(), &wire).expect("valid gzip");
        assert_eq!(&*decoded, json);
        assert!(matches!(
            decode_body(&HeaderMap::new(), json),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn corrupt_gzip_and_unknown_encodings_are_refused() {
        let err = decode_body(&gzip_headers(), b"not gzip").expect_err("corrupt");
        assert_eq!(
            (err.status, err.code),
            (StatusCode::BAD_REQUEST, "invalid_gzip")
        );

        let br = HeaderMap::from_iter([(header::CONTENT_ENCODING, HeaderValue::from_static("br"))]);
        assert_eq!(
            decode_body(&br, b"{}").expect_err("brotli").code,
            "unsupported_encoding"
        );
    }

    #[test]
    fn oversize_bodies_are_refused_plain_and_gzipped() {
        let exactly = vec![b' '; MAX_BODY_BYTES];
        assert!(decode_body(&HeaderMap::new(), &exactly).is_ok());
        let over = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(
            decode_body(&HeaderMap::new(), &over)
                .expect_err("too big")
                .code,
            "body_too_large"
        );
        // A small gzip bomb: 10 MB of zeros compresses to ~10 kB but must not be inflated.
        let bomb = gzip(&vec![0; 10_000_000]);
        assert!(bomb.len() < MAX_BODY_BYTES);
        assert_eq!(
            decode_body(&gzip_headers(), &bomb).expect_err("bomb").code,
            "body_too_large"
        );
    }

    #[test]
    fn bad_json_and_non_array_batch_are_refused() {
        for body in [
            &b"{not json"[..],
            b"[]",
            b"{}",
            br#"{"batch":{}}"#,
            br#"{"batch":[1,]}"#,
            b"",
        ] {
            let err = parse(Endpoint::Batch, body).expect_err("invalid");
            assert_eq!(
                (err.status, err.code),
                (StatusCode::BAD_REQUEST, "invalid_json"),
                "{body:?}"
            );
        }
        assert!(parse(Endpoint::Single("identify"), b"[1]").is_err());
    }

    #[test]
    fn parse_reads_the_envelope() {
        let body = br#"{"batch":[{"a":1}, {"b":2}],"sentAt":"2024-01-01T00:00:00Z","writeKey":"k","context":{}}"#;
        let parsed = parse(Endpoint::Batch, body).expect("valid");
        assert_eq!(
            parsed.events.iter().map(|e| e.get()).collect::<Vec<_>>(),
            [r#"{"a":1}"#, r#"{"b":2}"#]
        );
        assert_eq!(parsed.sent_at.as_deref(), Some("2024-01-01T00:00:00Z"));
        assert_eq!(parsed.write_key.as_deref(), Some("k"));

        let single = parse(
            Endpoint::Single("identify"),
            br#"{"userId":"u","writeKey":"k2"}"#,
        )
        .expect("valid");
        assert_eq!(single.events.len(), 1);
        assert_eq!(single.write_key.as_deref(), Some("k2"));
    }

    #[test]
    fn auth_accepts_the_header_or_the_body_key() {
        let keys = ["good".to_owned()];
        assert_eq!(authorize(&keys, &basic("good:"), None), Ok(()));
        assert_eq!(authorize(&keys, &HeaderMap::new(), Some("good")), Ok(()));
        assert_eq!(
            authorize(&[], &HeaderMap::new(), None),
            Ok(()),
            "no keys configured"
        );
        assert_eq!(authorize(&[], &basic("anything:"), None), Ok(()));
    }

    #[test]
    fn auth_refuses_missing_wrong_and_malformed_keys_without_echoing_them() {
        let keys = ["good".to_owned()];
        let bearer = HeaderMap::from_iter([(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer good"),
        )]);
        for (headers, body_key) in [
            (HeaderMap::new(), None),
            (HeaderMap::new(), Some("bad-key")),
            (basic("bad-key:"), None),
            (basic("bad-key:"), Some("good")), // the header wins when present
            (bearer, None),
        ] {
            let err = authorize(&keys, &headers, body_key).expect_err("refused");
            assert_eq!(err.status, StatusCode::UNAUTHORIZED);
            assert!(!err.message.contains("bad-key"), "{}", err.message);
        }
    }

    #[test]
    fn valid_events_pass_and_ids_are_extracted() {
        let body = r#"{"batch":[{"type":"identify","userId":"u1","messageId":"m1"},
                                {"type":"track","event":"E","anonymousId":"a1","userId":""}]}"#;
        assert_eq!(verdicts(body), [Ok(()), Ok(())]);
        let parsed = parse(Endpoint::Batch, body.as_bytes()).expect("valid");
        let events = check_events(Endpoint::Batch, parsed.events);
        assert_eq!(events[0].message_id.as_deref(), Some("m1"));
        assert_eq!(events[0].user_id.as_deref(), Some("u1"));
    }

    #[test]
    fn events_without_identity_are_rejected() {
        let body = r#"{"batch":[{"type":"identify"},{"type":"identify","userId":""},
                                {"type":"identify","userId":42},{"type":"identify","anonymousId":null}]}"#;
        assert_eq!(verdicts(body), vec![Err(RejectReason::MissingIdentity); 4]);
    }

    #[test]
    fn batch_items_need_a_known_type_but_single_events_do_not() {
        let body = r#"{"batch":[{"userId":"u"},{"type":"","userId":"u"},{"type":"bogus","userId":"u"},1]}"#;
        assert_eq!(
            verdicts(body),
            [
                Err(RejectReason::MissingType),
                Err(RejectReason::MissingType),
                Err(RejectReason::InvalidEvent),
                Err(RejectReason::InvalidEvent),
            ]
        );
        let single = parse(Endpoint::Single("identify"), br#"{"userId":"u"}"#).expect("valid");
        assert!(
            check_events(Endpoint::Single("identify"), single.events)[0]
                .verdict
                .is_ok()
        );
    }

    #[test]
    fn every_type_needs_the_fields_segment_requires() {
        let body = r#"{"batch":[
            {"type":"track","userId":"u"},
            {"type":"track","userId":"u","event":""},
            {"type":"track","userId":"u","event":7},
            {"type":"track","userId":"u","event":"Signed Up"},
            {"type":"group","userId":"u"},
            {"type":"group","userId":"u","groupId":""},
            {"type":"group","userId":"u","groupId":"acc"},
            {"type":"group","userId":"u","groupId":42},
            {"type":"alias","userId":"u"},
            {"type":"alias","anonymousId":"a","previousId":"p"},
            {"type":"alias","userId":"u","previousId":"p"},
            {"type":"page","userId":"u"},
            {"type":"screen","anonymousId":"a"}]}"#;
        let missing = Err(RejectReason::MissingField);
        assert_eq!(
            verdicts(body),
            [
                missing,
                missing,
                missing,
                Ok(()),
                missing,
                missing,
                Ok(()),
                Ok(()),
                missing,
                missing,
                Ok(()),
                Ok(()),
                Ok(()),
            ]
        );
        // On a single-event endpoint the path gives the type the rules follow.
        let track = Endpoint::from_segment("track").expect("an endpoint");
        let single = parse(track, br#"{"userId":"u"}"#).expect("valid");
        let events = check_events(track, single.events);
        assert_eq!(
            events[0].verdict.as_ref().map_err(|(r, _)| *r),
            Err(RejectReason::MissingField)
        );
        assert!(events[0].verdict.as_ref().unwrap_err().1.contains("event"));
    }

    #[test]
    fn oversize_events_are_measured_on_the_raw_bytes() {
        // Padding inside the event's own text counts: the limit is on bytes as received.
        let event = |pad: usize| {
            format!(
                r#"{{"type":"identify","userId":"u","messageId":"m"{}}}"#,
                " ".repeat(pad)
            )
        };
        let base = event(0).len();
        let at_limit = event(MAX_EVENT_BYTES - base);
        let over = event(MAX_EVENT_BYTES - base + 1);
        assert_eq!(at_limit.len(), MAX_EVENT_BYTES);
        let body = format!(r#"{{"batch":[{at_limit},{over}]}}"#);
        assert_eq!(verdicts(&body), [Ok(()), Err(RejectReason::EventTooLarge)]);
        let parsed = parse(Endpoint::Batch, body.as_bytes()).expect("valid");
        assert_eq!(
            check_events(Endpoint::Batch, parsed.events)[1]
                .message_id
                .as_deref(),
            Some("m")
        );
    }

    #[test]
    fn more_than_2500_events_rejects_the_whole_batch() {
        let event = r#"{"type":"identify","userId":"u"}"#;
        let batch = |n: usize| format!(r#"{{"batch":[{}]}}"#, vec![event; n].join(","));
        assert!(verdicts(&batch(MAX_BATCH_EVENTS)).iter().all(Result::is_ok));
        let over = verdicts(&batch(MAX_BATCH_EVENTS + 1));
        assert_eq!(over.len(), MAX_BATCH_EVENTS + 1);
        assert!(over.iter().all(|v| *v == Err(RejectReason::TooManyEvents)));
    }

    #[test]
    fn headers_are_read_leniently() {
        let headers = HeaderMap::from_iter([
            (header::CONTENT_ENCODING, HeaderValue::from_static("GZIP")),
            (header::CONTENT_LENGTH, HeaderValue::from_static("12")),
            (
                header::HeaderName::from_static("x-retry-count"),
                HeaderValue::from_static("3"),
            ),
        ]);
        assert!(is_gzip(&headers));
        assert_eq!(content_length(&headers), Some(12));
        assert_eq!(retry_count(&headers), Some(3));
        assert_eq!(retry_count(&HeaderMap::new()), None);
    }
}
