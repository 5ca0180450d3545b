//! The relay: workers that claim committed rows, deliver them through
//! `segment-client`, and write the outcomes back.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use segment_client::HttpClientBuilder;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_postgres::Client;

use crate::claim::Claimer;
use crate::db::{Schema, connect};
use crate::deliver::{ClientFactory, Deliverer};
use crate::error::{Kind, OutboxError};
use crate::listen::listen;
use crate::metrics as names;
use crate::outcome::{Verdict, WriteBackPolicy, Writer};
use crate::schema;
use crate::status::{is_drained, prune};

/// Delivers committed outbox rows to Segment until told to stop.
///
/// Run as many relays as you like, in one process or on many machines: they
/// share the outbox through PostgreSQL alone (`FOR UPDATE SKIP LOCKED` and
/// leases), and each customer's events still arrive in order (see
/// [`crate::claim`]'s module doc, reproduced in the README).
///
/// # Example
/// ```no_run
/// use segment_client::HttpClient;
/// use segment_outbox::Relay;
///
/// # async fn run() -> Result<(), segment_outbox::OutboxError> {
/// let report = Relay::new("postgres://postgres@127.0.0.1/app", || HttpClient::builder("WRITE_KEY"))
///     .workers(4)
///     .run(async { let _ = tokio::signal::ctrl_c().await; })
///     .await?;
/// println!("{} delivered", report.delivered);
/// # Ok(()) }
/// ```
pub struct Relay {
    database_url: String,
    client: ClientFactory,
    schema: Schema,
    workers: usize,
    batch_size: usize,
    lease: Duration,
    poll_interval: Duration,
    policy: WriteBackPolicy,
    shutdown_timeout: Duration,
    until_empty: bool,
    observe_every: Option<Duration>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("schema", &self.schema)
            .field("workers", &self.workers)
            .field("batch_size", &self.batch_size)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// What one relay did before it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayReport {
    /// Rows Segment accepted.
    pub delivered: u64,
    /// Retryable failures, put back to wait with backoff.
    pub retried: u64,
    /// Rows made dead letters.
    pub dead: u64,
    /// Leases given back unsent at shutdown.
    pub released: u64,
}

#[derive(Default)]
struct Totals {
    delivered: AtomicU64,
    retried: AtomicU64,
    dead: AtomicU64,
    released: AtomicU64,
}

struct Shared {
    relay: Relay,
    wake: Arc<Notify>,
    stop: watch::Sender<bool>,
    totals: Totals,
    owner_prefix: String,
}

impl Relay {
    /// A relay for the outbox at `database_url` (a `postgres://` URL or a
    /// `key=value` string), sending with clients made by `client` (the write
    /// key, host and tuning such as `requests_per_second`; the relay sets
    /// batch size, attempts and timeouts itself).
    pub fn new(
        database_url: impl Into<String>,
        client: impl Fn() -> HttpClientBuilder + Send + Sync + 'static,
    ) -> Self {
        Self {
            database_url: database_url.into(),
            client: Arc::new(client),
            schema: Schema::default(),
            workers: 4,
            batch_size: 1000,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            policy: WriteBackPolicy {
                retention: Duration::ZERO,
                initial_backoff: Duration::from_millis(500),
                max_backoff: Duration::from_secs(300),
                max_attempts: 0,
            },
            shutdown_timeout: Duration::from_secs(10),
            until_empty: false,
            observe_every: None,
        }
    }

    /// The outbox's schema. Default: `segment`.
    pub fn schema(mut self, schema: Schema) -> Self {
        self.schema = schema;
        self
    }

    /// Concurrent workers, each with its own connection and batch in flight. Default: 4.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Rows per claim, and so per request (1-2,500). Default: 1,000.
    pub fn batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows;
        self
    }

    /// How long a claim holds its rows, by the database's clock; one batch's
    /// delivery is cut off at half of it, so no request outlives the lease.
    /// Rows of a killed relay come back after this. At least 200 ms. Default: 60 s.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How often an idle worker looks for rows when no notification came
    /// (rows whose backoff or lease ended, a lost `LISTEN`). Default: 1 s.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How long delivered rows are kept (pruned in batches); zero deletes
    /// them at once. Default: zero.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.policy.retention = retention;
        self
    }

    /// Backoff after a retryable failure: `initial`, doubling per attempt up
    /// to `max`, each wait drawn from 50-100% of that. Default: 500 ms, 300 s.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.policy.initial_backoff = initial;
        self.policy.max_backoff = max;
        self
    }

    /// Attempts after which a retryable failure becomes a dead letter; 0
    /// retries for ever (an outage never drops events). Default: 0.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.policy.max_attempts = attempts;
        self
    }

    /// After the shutdown signal, how long in-flight batches may take before
    /// their leases are given back. Default: 10 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Stop once no undelivered row remains, leased ones included (rows of a
    /// dead relay count until their lease ends and they are delivered).
    /// Default: off.
    pub fn until_empty(mut self, on: bool) -> Self {
        self.until_empty = on;
        self
    }

    /// Publish the queue depth and oldest pending age as metrics this often.
    /// Default: never (it costs a query over the pending rows).
    pub fn observe_queue(mut self, every: Option<Duration>) -> Self {
        self.observe_every = every;
        self
    }

    fn check(&self) -> Result<(), OutboxError> {
        let bad = |message: String| Err(OutboxError::new(Kind::InvalidConfig, message));
        if self.workers == 0 {
            return bad("workers must be at least 1".into());
        }
        if !(1..=segment_client::MAX_BATCH_EVENTS).contains(&self.batch_size) {
            return bad(format!(
                "batch size must be 1-{}, not {}",
                segment_client::MAX_BATCH_EVENTS,
                self.batch_size
            ));
        }
        if self.lease < Duration::from_millis(200) {
            return bad(format!(
                "the lease must be at least 200 ms, not {:?}",
                self.lease
            ));
        }
        Ok(())
    }

    /// Runs until `shutdown` resolves (or, with
    /// [`until_empty`](Self::until_empty), until nothing is left). On
    /// shutdown it stops claiming, lets in-flight batches finish within the
    /// shutdown timeout, and gives back the leases of what it did not send.
    ///
    /// Database failures while running are logged and retried (a relay
    /// outlives a PostgreSQL restart); only startup problems are errors.
    ///
    /// # Errors
    /// `invalid_config`, `schema_missing` (run `relay init`),
    /// `schema_newer`, or `database` if PostgreSQL cannot be reached at start.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<RelayReport, OutboxError> {
        self.check()?;
        let control = connect(&self.database_url).await?;
        schema::check(&control, &self.schema).await?;
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            owner_prefix: owner_prefix(),
            wake: Arc::new(Notify::new()),
            stop,
            totals: Totals::default(),
            relay: self,
        });
        let mut background = JoinSet::new();
        background.spawn(listen(
            shared.relay.database_url.clone(),
            shared.relay.schema.clone(),
            Arc::clone(&shared.wake),
            shared.stop.subscribe(),
        ));
        background.spawn(housekeeping(Arc::clone(&shared), control));
        let mut workers = JoinSet::new();
        for index in 0..shared.relay.workers {
            workers.spawn(work(Arc::clone(&shared), index));
        }
        let mut first_error = None;
        tokio::pin!(shutdown);
        let mut shutdown_seen = false;
        while !workers.is_empty() {
            tokio::select! {
                () = &mut shutdown, if !shutdown_seen => {
                    shutdown_seen = true;
                    shared.stop.send_replace(true);
                }
                Some(joined) = workers.join_next() => {
                    let result = joined.unwrap_or_else(|e| {
                        Err(OutboxError::new(Kind::InvalidConfig, format!("a relay worker stopped: {e}")))
                    });
                    if let Err(error) = result {
                        shared.stop.send_replace(true);
                        first_error.get_or_insert(error);
                    }
                }
            }
        }
        shared.stop.send_replace(true);
        background.shutdown().await;
        if let Some(error) = first_error {
            return Err(error);
        }
        let totals = &shared.totals;
        Ok(RelayReport {
            delivered: totals.delivered.load(Ordering::Relaxed),
            retried: totals.retried.load(Ordering::Relaxed),
            dead: totals.dead.load(Ordering::Relaxed),
            released: totals.released.load(Ordering::Relaxed),
        })
    }
}

/// Identifies this process in `lease_owner`, so `status` can tell whose leases they are.
fn owner_prefix() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    let nonce = &segment_client::new_message_id()[..8];
    format!("{host}:{}:{nonce}", std::process::id())
}

/// One worker's connection and prepared statements.
struct Db {
    client: Client,
    claimer: Claimer,
    writer: Writer,
}

impl Db {
    async fn open(relay: &Relay) -> Result<Self, OutboxError> {
        let client = connect(&relay.database_url).await?;
        // Losing an outcome write in a crash costs a resend with the same
        // messageId (Segment drops it), never an event: no need to wait for
        // the WAL flush on every batch.
        // A queue table's statistics are always stale (it fills and drains
        // faster than ANALYZE runs); on a fresh table the planner believed
        // 100 pending rows and chose a bitmap scan of all 100,000 plus a sort,
        // 10x slower per claim. These pin the claim to walking the pending
        // index in id order, whatever the statistics say.
        client
            .batch_execute(
                "SET synchronous_commit = off;
                 SET enable_seqscan = off; SET enable_bitmapscan = off; SET enable_sort = off",
            )
            .await
            .map_err(|e| OutboxError::database("cannot configure the relay connection", e))?;
        let claimer = Claimer::prepare(&client, &relay.schema).await?;
        let writer = Writer::prepare(&client, &relay.schema).await?;
        Ok(Self {
            client,
            claimer,
            writer,
        })
    }
}

async fn work(shared: Arc<Shared>, index: usize) -> Result<(), OutboxError> {
    let relay = &shared.relay;
    let owner = format!("{}:{index}", shared.owner_prefix);
    let mut deliverer =
        Deliverer::new(Arc::clone(&relay.client), relay.batch_size, relay.lease / 2)?;
    let mut stop = shared.stop.subscribe();
    let mut db: Option<Db> = None;
    let mut retry_wait = relay.poll_interval.min(Duration::from_millis(100));
    while !*stop.borrow() {
        let conn = match db.as_mut() {
            Some(conn) => conn,
            None => match Db::open(relay).await {
                Ok(conn) => {
                    retry_wait = relay.poll_interval.min(Duration::from_millis(100));
                    db.insert(conn)
                }
                Err(error) => {
                    tracing::warn!(%error, "relay worker cannot reach PostgreSQL; retrying");
                    idle(&shared, &mut stop, retry_wait).await;
                    retry_wait = (retry_wait * 2).min(Duration::from_secs(10));
                    continue;
                }
            },
        };
        let rows = match conn
            .claimer
            .claim(&conn.client, relay.batch_size, relay.lease, &owner)
            .await
        {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(%error, "claim failed; reconnecting");
                db = None;
                idle(&shared, &mut stop, retry_wait).await;
                continue;
            }
        };
        if rows.is_empty() {
            if relay.until_empty {
                match is_drained(&conn.client, &relay.schema).await {
                    Ok(true) => {
                        shared.stop.send_replace(true);
                        break;
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(%error, "drain check failed; reconnecting");
                        db = None;
                    }
                }
            }
            idle(&shared, &mut stop, relay.poll_interval).await;
            continue;
        }
        if rows.len() == relay.batch_size {
            // More is likely waiting: bring in an idle worker.
            shared.wake.notify_one();
        }
        let started = Instant::now();
        let claimed: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let mut verdicts = Vec::with_capacity(rows.len());
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            let id = row.id;
            match row.into_event() {
                Ok(event) => events.push((id, event)),
                Err(reason) => verdicts.push((id, Verdict::Dead(reason))),
            }
        }
        let mut shutdown = stop.clone();
        let grace = relay.shutdown_timeout;
        let cancel = async move {
            let _ = shutdown.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(grace).await;
        };
        verdicts.extend(deliverer.send(events, cancel).await?);
        if *stop.borrow() && verdicts.len() < claimed.len() {
            let known: std::collections::HashSet<i64> =
                verdicts.iter().map(|(id, _)| *id).collect();
            verdicts.extend(
                claimed
                    .iter()
                    .filter(|id| !known.contains(id))
                    .map(|id| (*id, Verdict::Release)),
            );
        }
        match conn
            .writer
            .write(&conn.client, &owner, &verdicts, &relay.policy)
            .await
        {
            Ok(written) => {
                let totals = &shared.totals;
                totals
                    .delivered
                    .fetch_add(written.delivered, Ordering::Relaxed);
                totals.retried.fetch_add(written.retried, Ordering::Relaxed);
                totals.dead.fetch_add(written.dead, Ordering::Relaxed);
                totals
                    .released
                    .fetch_add(written.released, Ordering::Relaxed);
                metrics::counter!(names::DELIVERED).increment(written.delivered);
                metrics::counter!(names::FAILED).increment(written.retried);
                metrics::counter!(names::DEAD).increment(written.dead);
                metrics::counter!(names::RELEASED).increment(written.released);
                metrics::histogram!(names::BATCH_SECONDS).record(started.elapsed().as_secs_f64());
            }
            Err(error) => {
                // The rows stay leased and come back when the lease ends;
                // a resend reuses their messageIds.
                tracing::warn!(%error, "writing outcomes back failed; the rows return after their lease");
                db = None;
            }
        }
    }
    deliverer.close(Duration::from_secs(1)).await;
    Ok(())
}

/// Waits for a notification, `timeout`, or the stop signal.
async fn idle(shared: &Shared, stop: &mut watch::Receiver<bool>, timeout: Duration) {
    tokio::select! {
        () = shared.wake.notified() => {}
        () = tokio::time::sleep(timeout) => {}
        _ = stop.wait_for(|stopping| *stopping) => {}
    }
}

/// Prunes delivered rows past retention and publishes queue gauges, on the
/// relay's control connection.
async fn housekeeping(shared: Arc<Shared>, control: Client) {
    let relay = &shared.relay;
    let retention = relay.policy.retention;
    let prune_every = (!retention.is_zero())
        .then(|| (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60)));
    let tick = match (prune_every, relay.observe_every) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return,
    };
    let mut stop = shared.stop.subscribe();
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
        if prune_every.is_some()
            && let Err(error) = prune(&control, &relay.schema, retention, 10_000).await
        {
            tracing::warn!(%error, "pruning delivered rows failed");
        }
        if relay.observe_every.is_some()
            && let Err(error) = crate::metrics::observe(&control, &relay.schema).await
        {
            tracing::warn!(%error, "reading the queue depth failed");
        }
    }
}
