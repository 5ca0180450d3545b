//! Prometheus metrics: the names the relay records, and an HTTP endpoint
//! serving them as text, with a health check.
//!
//! The relay records through the [`metrics`] facade, which costs nothing
//! until a recorder is installed; [`serve_metrics`] installs the Prometheus
//! one (the exporter without its own HTTP stack: axum serves the text).

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_postgres::Client;

use crate::db::Schema;
use crate::error::{Kind, OutboxError};

/// Counter: rows Segment accepted.
pub const DELIVERED: &str = "segment_outbox_delivered_total";
/// Counter: retryable failures, put back with backoff.
pub const FAILED: &str = "segment_outbox_failed_total";
/// Counter: rows made dead letters.
pub const DEAD: &str = "segment_outbox_dead_total";
/// Counter: leases given back unsent at shutdown.
pub const RELEASED: &str = "segment_outbox_released_total";
/// Histogram: seconds from claim to outcome written, per batch.
pub const BATCH_SECONDS: &str = "segment_outbox_batch_seconds";
/// Gauge: undelivered rows (pending or leased).
pub const QUEUE_DEPTH: &str = "segment_outbox_queue_depth";
/// Gauge: age in seconds of the oldest undelivered row.
pub const OLDEST_PENDING_SECONDS: &str = "segment_outbox_oldest_pending_seconds";

/// Installs the Prometheus recorder for this process and serves
/// `GET /metrics` (Prometheus text) and `GET /health` on `addr` until
/// `shutdown` resolves. Returns the bound address (`addr` may use port 0)
/// and the serving task.
///
/// # Errors
/// `io` if `addr` cannot be bound; `invalid_config` if another recorder is
/// already installed in this process.
pub async fn serve_metrics(
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), OutboxError> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&[
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
        .map_err(|e| OutboxError::with_source(Kind::InvalidConfig, "bad histogram buckets", e))?
        .install_recorder()
        .map_err(|e| {
            OutboxError::with_source(
                Kind::InvalidConfig,
                "cannot install the metrics recorder",
                e,
            )
        })?;
    describe();
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        OutboxError::with_source(Kind::Io, format!("cannot listen on {addr} for metrics"), e)
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| OutboxError::with_source(Kind::Io, "cannot read the metrics address", e))?;
    let app = router(handle);
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(%error, "the metrics endpoint stopped");
        }
    });
    Ok((bound, task))
}

fn router(handle: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .route("/health", get(|| std::future::ready("ok\n")))
}

fn describe() {
    metrics::describe_counter!(DELIVERED, "Outbox rows Segment accepted.");
    metrics::describe_counter!(
        FAILED,
        "Retryable delivery failures, put back with backoff."
    );
    metrics::describe_counter!(DEAD, "Outbox rows made dead letters.");
    metrics::describe_counter!(RELEASED, "Leases given back unsent at shutdown.");
    metrics::describe_histogram!(
        BATCH_SECONDS,
        metrics::Unit::Seconds,
        "Claim to outcome written, per batch."
    );
    metrics::describe_gauge!(QUEUE_DEPTH, "Undelivered outbox rows (pending or leased).");
    metrics::describe_gauge!(
        OLDEST_PENDING_SECONDS,
        metrics::Unit::Seconds,
        "Age of the oldest undelivered row."
    );
}

/// Publishes the queue depth and the oldest pending age.
pub(crate) async fn observe(client: &Client, schema: &Schema) -> Result<(), OutboxError> {
    let row = client
        .query_one(
            &schema.sql(
                "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at))::float8, 0)
                 FROM {s}.outbox WHERE state = 'pending'",
            ),
            &[],
        )
        .await
        .map_err(|e| OutboxError::database("cannot read the queue depth", e))?;
    #[expect(
        clippy::cast_precision_loss,
        reason = "a gauge; exact beyond 2^53 rows is moot"
    )]
    let depth = row.get::<_, i64>(0) as f64;
    metrics::gauge!(QUEUE_DEPTH).set(depth);
    metrics::gauge!(OLDEST_PENDING_SECONDS).set(row.get::<_, f64>(1));
    Ok(())
}
