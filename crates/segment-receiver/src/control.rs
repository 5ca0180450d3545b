//! The unauthenticated control endpoints under `/_receiver/`, so that a receiver running
//! in another process can be inspected and steered over HTTP.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::faults::FaultPlan;
use crate::server::{Shared, error_response};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_receiver/stats", get(stats))
        .route("/_receiver/events", get(events))
        .route("/_receiver/duplicates", get(duplicates))
        .route("/_receiver/rejections", get(rejections))
        .route("/_receiver/requests", get(requests))
        .route("/_receiver/faults", post(set_faults))
        .route("/_receiver/reset", post(reset))
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.store.stats()).into_response()
}

/// All accepted events, or one user's with `?userId=U`.
async fn events(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let body = shared
        .store
        .events_json(query.get("userId").map(String::as_str));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn duplicates(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.store.duplicates()).into_response()
}

async fn rejections(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.store.rejections()).into_response()
}

async fn requests(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.store.requests()).into_response()
}

/// Replace the fault plan (and reset its counters) with the `FaultPlan` JSON in the body.
async fn set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let plan: FaultPlan = match serde_json::from_slice(&body) {
        Ok(plan) => plan,
        Err(err) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid_fault_plan",
                &err.to_string(),
            );
        }
    };
    if let Some(problem) = plan.problem() {
        return error_response(StatusCode::BAD_REQUEST, "invalid_fault_plan", &problem);
    }
    shared.faults.replace(plan);
    Json(serde_json::json!({ "success": true })).into_response()
}

/// Forget everything recorded and remove every fault.
async fn reset(State(shared): State<Arc<Shared>>) -> Response {
    shared.store.clear();
    shared.faults.replace(FaultPlan::none());
    Json(serde_json::json!({ "success": true })).into_response()
}
