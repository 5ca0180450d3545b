//! The local debugger page at `/`: static HTML, CSS and JavaScript embedded in the
//! binary, a live feed over server-sent events, and the JSON it looks customers and
//! requests up with.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use crate::server::{Shared, error_response};
use crate::store::{Cursor, Feed, KeptEvent, KeptRequest, Problem, Stats, Store};

const HTML: &str = include_str!("../assets/debugger.html");
const CSS: &str = include_str!("../assets/debugger.css");
const JS: &str = include_str!("../assets/debugger.js");

/// Items of each kind sent in one live update at most (the newest): in a burst of more,
/// the older ones never reach the lists, while the counts still cover them.
const FEED_LIMIT: usize = 200;

/// Customers listed for one search at most.
const SEARCH_LIMIT: usize = 50;

/// Bursts of requests are sent to the page as one update per this interval.
const COALESCE: Duration = Duration::from_millis(100);

/// The page loads only its own script and style, so an event that smuggled markup in
/// could not run it even if it were ever inserted as HTML.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'";

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(index))
        .route("/_receiver/ui/debugger.css", get(css))
        .route("/_receiver/ui/debugger.js", get(js))
        .route("/_receiver/live", get(live))
        .route("/_receiver/customers", get(customers))
        .route("/_receiver/customer", get(customer))
        .route("/_receiver/request", get(request))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", HTML)
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

/// One live update, as the page reads it.
#[derive(Serialize)]
struct Update<'a> {
    reset: bool,
    stats: &'a Stats,
    keep: usize,
    dedup_window: usize,
    events: &'a [Arc<KeptEvent>],
    problems: &'a [Arc<Problem>],
    requests: &'a [Arc<KeptRequest>],
}

fn render(feed: &Feed, store: &Store) -> String {
    let update = Update {
        reset: feed.reset,
        stats: &feed.stats,
        keep: store.keep(),
        dedup_window: store.dedup_window(),
        events: &feed.events,
        problems: &feed.problems,
        requests: &feed.requests,
    };
    serde_json::to_string(&update).unwrap_or_else(|_| "{}".to_owned())
}

/// `GET /_receiver/live`: what is kept now, then every change, as server-sent events
/// named `update`. Ends when the receiver shuts down, so it never holds shutdown up.
async fn live(State(shared): State<Arc<Shared>>) -> Response {
    let store = shared.store.clone();
    let mut changes = store.subscribe();
    changes.mark_changed();
    let closing = shared.closing.subscribe();
    Sse::new(updates(store, changes, closing))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn updates(
    store: Store,
    changes: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let start = (store, changes, closing, Cursor::default(), true);
    futures_util::stream::unfold(
        start,
        |(store, mut changes, mut closing, mut cursor, first)| async move {
            tokio::select! {
                changed = changes.changed() => changed.ok()?,
                _ = closing.wait_for(|closing| *closing) => return None,
            }
            if !first {
                tokio::time::sleep(COALESCE).await;
                changes.borrow_and_update();
            }
            let feed = store.feed(&mut cursor, FEED_LIMIT);
            let event = Event::default().event("update").data(render(&feed, &store));
            Some((Ok(event), (store, changes, closing, cursor, false)))
        },
    )
}

/// `GET /_receiver/customers?q=TEXT`: customers whose userId/anonymousId or email
/// contains TEXT, most recently updated first.
async fn customers(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let text = query.get("q").map_or("", String::as_str);
    let found: Vec<_> = shared
        .store
        .customers(text, SEARCH_LIMIT)
        .into_iter()
        .map(|profile| {
            json!({
                "id": profile.id,
                "anonymous": profile.anonymous,
                "email": profile.email(),
                "events": profile.events,
                "last_ms": profile.last_ms,
            })
        })
        .collect();
    Json(found).into_response()
}

/// `GET /_receiver/customer?id=ID`: one customer's merged profile and the kept events
/// that built it.
async fn customer(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let id = query.get("id").map_or("", String::as_str);
    match shared.store.customer(id) {
        Some(view) => {
            Json(json!({ "profile": view.profile, "events": view.events })).into_response()
        }
        None => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such customer is kept",
        ),
    }
}

/// `GET /_receiver/request?id=N`: one kept request with its headers (`Authorization`
/// hidden) and its body as received, gunzipped.
async fn request(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let found = query
        .get("id")
        .and_then(|id| id.parse().ok())
        .and_then(|id| shared.store.request(id));
    match found {
        Some((request, body)) => Json(json!({
            "request": request,
            "headers": request.headers,
            "body": body.as_deref(),
        }))
        .into_response(),
        None => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such request is kept",
        ),
    }
}
