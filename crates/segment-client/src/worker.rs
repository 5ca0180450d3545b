//! The background worker: reads the bounded queue, batches, sends with
//! retries, and answers flushes in queue order.
//!
//! Every event gets a sequence number as it leaves the queue. A flush waits
//! until no event numbered before it is outstanding (in the batcher, sealed,
//! or in flight), or until its deadline, whichever comes first.
//!
//! Confirmed events (a caller waits for that one event) are sent as soon as
//! a request slot is free, together with whatever else is queued by then:
//! concurrent callers share requests the way a database groups commits.
//!
//! The worker never ends with events it has not reported: a close after its
//! deadline reports them as pending; a runtime shut down under it hands them
//! to a fresh thread that tries to deliver them within the shutdown timeout;
//! a panic reports them as failed (`internal`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{Id, JoinSet};
use tokio::time::{Instant, sleep_until};
use tracing::Instrument;

use crate::batcher::{Batch, Batcher, Limits};
use crate::encode::Encoder;
use crate::error::{Kind, SegmentError};
use crate::health::{Admission, Health};
use crate::message::Event;
use crate::report::{DeliveryReport, EventOutcome, EventRef};
use crate::retry::{Decision, RetryPolicy};
use crate::room::Room;
use crate::throttle::{Pacer, Pause};
use crate::transport::Transport;

/// Most queue entries taken per wake-up: enough to amortise the wake-up,
/// few enough that sealed batches waiting for a send slot stay bounded.
pub(crate) const RECV_CHUNK: usize = 128;

/// Where one event's outcome is sent, for callers that wait on a single event.
pub(crate) type Receipt = oneshot::Sender<Result<(), SegmentError>>;
/// A caller's view of every event's outcome.
pub(crate) type OutcomeHook = Arc<dyn Fn(&EventOutcome<'_>) + Send + Sync>;

/// What the client handle sends to the worker, in order.
pub(crate) enum Task {
    Event(Event, Option<Receipt>),
    /// Events queued together by a bulk producer: one wake-up of the worker
    /// per chunk instead of one per event.
    Events(Vec<Event>),
    /// An event whose caller waits for its outcome: sent promptly.
    Confirm(Event, Receipt),
    Flush {
        deadline: Instant,
        reply: oneshot::Sender<DeliveryReport>,
    },
}

/// A close, sent beside the queue so that a full queue cannot keep it out.
pub(crate) struct CloseRequest {
    pub deadline: Instant,
    pub reply: oneshot::Sender<DeliveryReport>,
}

/// Worker settings, already validated by the builder.
#[derive(Clone)]
pub(crate) struct Settings {
    pub limits: Limits,
    pub flush_interval: Duration,
    pub max_in_flight: usize,
    pub max_failures_in_report: usize,
    pub shutdown_timeout: Duration,
    pub on_outcome: Option<OutcomeHook>,
    #[cfg(feature = "outbox")]
    pub outbox: Option<Arc<crate::outbox::Outbox>>,
}

/// What the send tasks share: how to encode and send, and the client-wide gates.
pub(crate) struct Sender {
    pub transport: Transport,
    pub encoder: Encoder,
    pub policy: RetryPolicy,
    pub gates: Mutex<Gates>,
    pub health: Mutex<Health>,
}

#[derive(Clone, Copy)]
pub(crate) struct Gates {
    pub pause: Pause,
    pub pacer: Option<Pacer>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sender {
    /// The same settings over a new connection pool, with fresh gates.
    fn fresh(&self, outage_bound: Duration) -> Result<Self, SegmentError> {
        let mut gates = *lock(&self.gates);
        gates.pause = Pause::default();
        Ok(Self {
            transport: self.transport.fresh()?,
            encoder: self.encoder.clone(),
            policy: self.policy,
            gates: Mutex::new(gates),
            health: Mutex::new(Health::new(outage_bound)),
        })
    }

    /// Waits until the client is not paused and the rate cap allows a request.
    async fn wait_for_turn(&self) {
        loop {
            let now = Instant::now();
            let resume = lock(&self.gates).pause.resume_at(now);
            match resume {
                Some(at) => sleep_until(at).await,
                None => break,
            }
        }
        let slot = lock(&self.gates)
            .pacer
            .as_mut()
            .map(|p| p.reserve(Instant::now()));
        if let Some(slot) = slot {
            sleep_until(slot).await;
        }
    }

    /// The last failed attempt's error, if the last attempt failed.
    pub fn last_failure(&self) -> Option<SegmentError> {
        lock(&self.health).last_failure().cloned()
    }

    /// Delivers one batch, retrying as the policy decides.
    async fn deliver(&self, batch: &Batch) -> Result<(), SegmentError> {
        let first = batch.events.first().map_or("", |e| e.message_id.as_str());
        let last = batch.events.last().map_or("", |e| e.message_id.as_str());
        let span = tracing::debug_span!(
            "segment_batch",
            first_message_id = first,
            last_message_id = last,
            events = batch.events.len(),
            bytes = batch.body_bytes,
        );
        self.deliver_with_retries(batch).instrument(span).await
    }

    async fn deliver_with_retries(&self, batch: &Batch) -> Result<(), SegmentError> {
        let started = Instant::now();
        let mut counted_attempts = 0;
        let mut sends = 0;
        loop {
            let admission = lock(&self.health).admit();
            if admission == Admission::Refuse {
                let error = self.outage_error(sends);
                tracing::warn!(code = "outage", "batch failed: segment is unreachable");
                return Err(error);
            }
            self.wait_for_turn().await;
            let body = self.encoder.encode(batch, Utc::now()).map_err(|e| {
                SegmentError::with_source(Kind::Internal, "could not encode a batch", e)
            })?;
            let sent_at = Instant::now();
            let attempt = sends + 1;
            let result = self
                .transport
                .send(body, sends)
                .instrument(tracing::debug_span!("segment_request", attempt))
                .await;
            sends = attempt;
            let mut failure = match result {
                Ok(()) => {
                    lock(&self.health).delivered();
                    tracing::debug!(attempt, "batch delivered");
                    return Ok(());
                }
                Err(failure) => failure,
            };
            {
                let mut health = lock(&self.health);
                if failure.error.status() == Some(404) && !health.delivered_any() {
                    // Nothing here takes batches: a wrong host or path, like a 401.
                    failure.error = not_found(self.transport.endpoint());
                }
                health.remember(&failure.error);
                let answered = failure.error.status().is_some();
                if answered {
                    health.answered();
                } else if health.unanswered(sent_at, Instant::now(), admission == Admission::Probe)
                {
                    drop(health);
                    let error = self.outage_error(sends);
                    tracing::warn!(
                        attempt,
                        code = "outage",
                        cause = %failure.error,
                        "segment is unreachable: nothing answered for the outage bound"
                    );
                    return Err(error);
                }
            }
            let decision = self
                .policy
                .decide(&failure, counted_attempts + 1, started.elapsed());
            match decision {
                Decision::Backoff(wait) => {
                    counted_attempts += 1;
                    tracing::debug!(
                        attempt,
                        status = failure.error.status(),
                        code = failure.error.code(),
                        wait_ms = wait.as_millis() as u64,
                        "attempt failed; retrying after a backoff"
                    );
                    let until = Instant::now() + wait;
                    let outage_at = lock(&self.health).outage_at();
                    if let Some(at) = outage_at.filter(|at| *at < until) {
                        // Say "outage" when the bound passes, not at the
                        // next attempt, which may be a minute later.
                        sleep_until(at).await;
                        if lock(&self.health).check_outage(Instant::now()) {
                            tracing::warn!(
                                attempt,
                                code = "outage",
                                cause = %failure.error,
                                "segment is unreachable: nothing answered for the outage bound"
                            );
                            return Err(self.outage_error(sends));
                        }
                    }
                    sleep_until(until).await;
                }
                Decision::Pause(wait) => {
                    tracing::info!(
                        attempt,
                        status = failure.error.status(),
                        wait_ms = wait.as_millis() as u64,
                        "Retry-After: pausing every request of the client"
                    );
                    lock(&self.gates).pause.extend(Instant::now(), wait);
                }
                Decision::GiveUp => {
                    tracing::warn!(
                        attempts = sends,
                        status = failure.error.status(),
                        code = failure.error.code(),
                        "batch failed; not retried further"
                    );
                    return Err(failure.error.after_attempts(sends));
                }
            }
        }
    }

    fn outage_error(&self, attempts: u32) -> SegmentError {
        let health = lock(&self.health);
        let message = format!(
            "segment could not be reached for {} s; nothing was delivered in that time",
            health.failing_for(Instant::now()).as_secs()
        );
        match health.last_failure() {
            Some(cause) => SegmentError::with_source(Kind::Outage, message, cause.clone()),
            None => SegmentError::new(Kind::Outage, message),
        }
        .after_attempts(attempts)
    }
}

fn not_found(endpoint: Option<&reqwest::Url>) -> SegmentError {
    let at = endpoint.map_or_else(String::new, |e| format!(" at {e}"));
    SegmentError::with_status(
        Kind::InvalidConfig,
        404,
        format!(
            "segment answered 404 Not Found{at}: nothing takes batches there; check the host setting (a base URL such as https://api.segment.io)"
        ),
    )
}

struct Waiter {
    /// Satisfied when no event numbered below this is outstanding.
    upto: u64,
    deadline: Instant,
    /// `None` for the close that follows the last handle being dropped.
    reply: Option<oneshot::Sender<DeliveryReport>>,
    close: bool,
}

pub(crate) struct Worker {
    rx: mpsc::Receiver<Task>,
    room: Arc<Room>,
    control: mpsc::UnboundedReceiver<CloseRequest>,
    control_open: bool,
    sender: Arc<Sender>,
    settings: Settings,
    batcher: Batcher,
    next_seq: u64,
    batch_deadline: Option<Instant>,
    /// A caller waits for an event in the batcher: send it at the next free slot.
    urgent: bool,
    /// Sealed batches waiting for a free in-flight slot.
    ready: VecDeque<Batch>,
    in_flight: BTreeMap<u64, Arc<Batch>>,
    tasks: JoinSet<Result<(), SegmentError>>,
    task_batches: HashMap<Id, u64>,
    receipts: HashMap<u64, Receipt>,
    waiters: VecDeque<Waiter>,
    report: DeliveryReport,
    closing: bool,
    /// What a close left pending at its deadline; later closes report it again.
    abandoned: Option<Vec<EventRef>>,
    /// Set when `run` returns normally; anything else dropping the worker
    /// (a runtime shutting down, a panic) must account for its events.
    finished: bool,
}

impl Worker {
    pub fn new(
        rx: mpsc::Receiver<Task>,
        room: Arc<Room>,
        control: mpsc::UnboundedReceiver<CloseRequest>,
        sender: Arc<Sender>,
        settings: Settings,
    ) -> Self {
        Self {
            rx,
            room,
            control,
            control_open: true,
            sender,
            batcher: Batcher::new(settings.limits),
            settings,
            next_seq: 0,
            batch_deadline: None,
            urgent: false,
            ready: VecDeque::new(),
            in_flight: BTreeMap::new(),
            tasks: JoinSet::new(),
            task_batches: HashMap::new(),
            receipts: HashMap::new(),
            waiters: VecDeque::new(),
            report: DeliveryReport::default(),
            closing: false,
            abandoned: None,
            finished: false,
        }
    }

    pub async fn run(mut self) {
        // Timers are armed once and reset only when their deadline changes:
        // a fresh timer per received event cost a measurable share of CPU.
        let batch_timer = sleep_until(Instant::now());
        let waiter_timer = sleep_until(Instant::now());
        tokio::pin!(batch_timer, waiter_timer);
        let (mut armed_batch, mut armed_waiter) = (None, None);
        let mut received = Vec::with_capacity(RECV_CHUNK);
        loop {
            self.seal_if_urgent();
            self.dispatch_ready();
            self.answer_satisfied_waiters();
            if self.closing
                && !self.control_open
                && self.waiters.is_empty()
                && self.outstanding_since().is_none()
            {
                break;
            }
            let waiter_deadline = self.waiters.iter().map(|w| w.deadline).min();
            if waiter_deadline != armed_waiter {
                armed_waiter = waiter_deadline;
                if let Some(deadline) = armed_waiter {
                    waiter_timer.as_mut().reset(deadline);
                }
            }
            if self.batch_deadline != armed_batch {
                armed_batch = self.batch_deadline;
                if let Some(deadline) = armed_batch {
                    batch_timer.as_mut().reset(deadline);
                }
            }
            let can_read = self.ready.is_empty() && !self.closing;
            tokio::select! {
                biased;
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.finish_task(joined);
                }
                () = &mut waiter_timer, if armed_waiter.is_some() => self.expire_waiters(),
                close = self.control.recv(), if self.control_open => match close {
                    Some(CloseRequest { deadline, reply }) => self.close(deadline, Some(reply)),
                    None => self.control_open = false,
                },
                () = &mut batch_timer, if armed_batch.is_some() && self.ready.is_empty() => self.seal(),
                n = self.rx.recv_many(&mut received, RECV_CHUNK), if can_read => {
                    for task in &received {
                        self.room.give(task);
                    }
                    self.persist(&mut received);
                    for task in received.drain(..) {
                        self.accept(task);
                    }
                    if n == 0 {
                        // Every handle is gone without a close: deliver what
                        // is queued within the shutdown timeout, then stop.
                        let deadline = Instant::now() + self.settings.shutdown_timeout;
                        self.close(deadline, None);
                    }
                }
            }
        }
        self.finished = true;
    }

    /// Queues events an earlier process left in the outbox, ahead of new ones.
    #[cfg(feature = "outbox")]
    pub fn with_recovered(mut self, events: Vec<Event>) -> Self {
        for event in events {
            self.accept(Task::Event(event, None));
        }
        self
    }

    /// Writes events just taken from the queue to the outbox, before they
    /// can be sent. If that fails they are not durable, so they fail loudly
    /// instead of going out without the guarantee the caller asked for.
    #[cfg(feature = "outbox")]
    fn persist(&mut self, tasks: &mut Vec<Task>) {
        let Some(outbox) = self.settings.outbox.clone() else {
            return;
        };
        let events = tasks.iter().flat_map(|task| match task {
            Task::Event(event, _) | Task::Confirm(event, _) => std::slice::from_ref(event),
            Task::Events(events) => events.as_slice(),
            Task::Flush { .. } => &[],
        });
        let Err(error) = outbox.put(events) else {
            return;
        };
        tracing::error!(
            code = error.code(),
            "could not write events to the outbox; they fail"
        );
        for task in std::mem::take(tasks) {
            match task {
                Task::Event(event, receipt) => self.fail_event(&event, receipt, &error),
                Task::Confirm(event, receipt) => self.fail_event(&event, Some(receipt), &error),
                Task::Events(events) => {
                    for event in events {
                        self.fail_event(&event, None, &error);
                    }
                }
                other => tasks.push(other),
            }
        }
    }

    #[cfg(not(feature = "outbox"))]
    fn persist(&mut self, _tasks: &mut [Task]) {}

    /// Drops finished events from the outbox. A failed delete only means a
    /// resend after a restart, which Segment drops by `messageId`.
    #[cfg(feature = "outbox")]
    fn forget(&self, events: &[Event]) {
        if let Some(outbox) = &self.settings.outbox {
            let _ = outbox.remove(events.iter().map(|e| e.message_id.as_str()));
        }
    }

    #[cfg(not(feature = "outbox"))]
    fn forget(&self, _events: &[Event]) {}

    fn fail_event(&mut self, event: &Event, receipt: Option<Receipt>, error: &SegmentError) {
        self.record(event, Err(error));
        if let Some(receipt) = receipt {
            let _ = receipt.send(Err(error.clone()));
        }
    }

    fn accept(&mut self, task: Task) {
        match task {
            Task::Event(event, receipt) => self.accept_event(event, receipt),
            Task::Events(events) => {
                for event in events {
                    self.accept_event(event, None);
                }
            }
            Task::Confirm(event, receipt) => {
                self.accept_event(event, Some(receipt));
                self.urgent = true;
            }
            Task::Flush { deadline, reply } => {
                self.seal();
                self.waiters.push_back(Waiter {
                    upto: self.next_seq,
                    deadline,
                    reply: Some(reply),
                    close: false,
                });
            }
        }
    }

    fn accept_event(&mut self, event: Event, receipt: Option<Receipt>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(receipt) = receipt {
            self.receipts.insert(seq, receipt);
        }
        if self.batcher.is_empty() {
            self.batch_deadline = Some(Instant::now() + self.settings.flush_interval);
        }
        self.ready.extend(self.batcher.push(seq, event));
        if self.batcher.is_full() {
            self.seal();
        }
    }

    /// Starts closing (once), or joins a close under way: everything queued
    /// before the close is delivered, then the worker stops.
    fn close(&mut self, deadline: Instant, reply: Option<oneshot::Sender<DeliveryReport>>) {
        if let Some(abandoned) = &self.abandoned {
            // An earlier close already gave up on these: say so again.
            let pending = abandoned.clone();
            let waiter = Waiter {
                upto: self.next_seq,
                deadline,
                reply,
                close: true,
            };
            return self.answer(waiter, pending);
        }
        if !self.closing {
            self.closing = true;
            // What is in the queue was sent before the close: take it all.
            self.rx.close();
            self.room.close();
            let mut rest = Vec::new();
            // The room is closed: nothing is given back to it.
            while let Ok(task) = self.rx.try_recv() {
                rest.push(task);
            }
            self.persist(&mut rest);
            for task in rest {
                self.accept(task);
            }
            self.seal();
        }
        self.waiters.push_back(Waiter {
            upto: self.next_seq,
            deadline,
            reply,
            close: true,
        });
    }

    fn seal(&mut self) {
        self.batch_deadline = None;
        self.urgent = false;
        self.ready.extend(self.batcher.take());
    }

    /// Sends a waited-for event as soon as a slot is free, with whatever else
    /// is queued by then: while every slot is busy, events keep gathering.
    fn seal_if_urgent(&mut self) {
        if self.urgent && self.ready.is_empty() && self.tasks.len() < self.settings.max_in_flight {
            self.seal();
        }
    }

    fn dispatch_ready(&mut self) {
        while self.tasks.len() < self.settings.max_in_flight {
            let Some(batch) = self.ready.pop_front() else {
                break;
            };
            let batch = Arc::new(batch);
            let first_seq = batch.first_seq;
            self.in_flight.insert(first_seq, Arc::clone(&batch));
            let sender = Arc::clone(&self.sender);
            let handle = self
                .tasks
                .spawn(async move { sender.deliver(&batch).await });
            self.task_batches.insert(handle.id(), first_seq);
        }
    }

    fn finish_task(
        &mut self,
        joined: Result<(Id, Result<(), SegmentError>), tokio::task::JoinError>,
    ) {
        let (id, result) = match joined {
            Ok((id, result)) => (id, result),
            Err(e) => {
                tracing::error!("a send task stopped: {e}");
                let error = SegmentError::new(Kind::Internal, "a send task stopped unexpectedly");
                (e.id(), Err(error))
            }
        };
        let Some(first_seq) = self.task_batches.remove(&id) else {
            return;
        };
        let Some(batch) = self.in_flight.remove(&first_seq) else {
            return;
        };
        for (seq, event) in (first_seq..).zip(&batch.events) {
            let result = result.as_ref().map(|_| ());
            self.record(event, result);
            // Most events have no receipt: skip hashing their numbers.
            if !self.receipts.is_empty()
                && let Some(receipt) = self.receipts.remove(&seq)
            {
                let _ = receipt.send(result.map_err(Clone::clone));
            }
        }
        self.forget(&batch.events);
    }

    fn record(&mut self, event: &Event, result: Result<(), &SegmentError>) {
        if let Some(hook) = &self.settings.on_outcome {
            let outcome = EventOutcome {
                message_id: &event.message_id,
                identity: &event.identity,
                result,
                tag: event.tag,
            };
            // A bug in the caller's hook must not take every queued event with it.
            if catch_unwind(AssertUnwindSafe(|| hook(&outcome))).is_err() {
                tracing::error!(
                    message_id = %event.message_id,
                    "the on_outcome hook panicked; the outcome is still counted"
                );
            }
        }
        match result {
            Ok(()) => self.report.delivered += 1,
            Err(error) => self.report.record_failure(
                EventRef::from(event),
                error.clone(),
                self.settings.max_failures_in_report,
            ),
        }
    }

    /// The sequence number of the oldest event not yet finished.
    fn outstanding_since(&self) -> Option<u64> {
        [
            self.in_flight.keys().next().copied(),
            self.ready.front().map(|b| b.first_seq),
            self.batcher.first_seq(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn answer_satisfied_waiters(&mut self) {
        let oldest = self.outstanding_since().unwrap_or(u64::MAX);
        while self.waiters.front().is_some_and(|w| w.upto <= oldest) {
            let waiter = self.waiters.pop_front().expect("front exists");
            self.answer(waiter, Vec::new());
        }
    }

    fn expire_waiters(&mut self) {
        let now = Instant::now();
        if self.waiters.iter().any(|w| w.close && w.deadline <= now) {
            return self.abandon_outstanding();
        }
        while let Some(pos) = self.waiters.iter().position(|w| w.deadline <= now) {
            let waiter = self.waiters.remove(pos).expect("position is valid");
            let pending = self.pending_before(waiter.upto);
            self.answer(waiter, pending);
        }
    }

    /// At a close's deadline: stop sending, tell each waiting caller, and
    /// keep the list for any later close.
    fn abandon_outstanding(&mut self) {
        self.tasks.abort_all();
        self.task_batches.clear();
        lock(&self.sender.health).probe_abandoned();
        let error = SegmentError::new(
            Kind::DeadlineExceeded,
            "the client closed before this event was delivered",
        );
        let seqs: Vec<u64> = self.receipts.keys().copied().collect();
        for seq in seqs {
            if let Some(receipt) = self.receipts.remove(&seq) {
                let _ = receipt.send(Err(error.clone()));
            }
        }
        let waiters = std::mem::take(&mut self.waiters);
        let answers: Vec<_> = waiters
            .into_iter()
            .map(|w| {
                let pending = self.pending_before(w.upto);
                (w, pending)
            })
            .collect();
        self.abandoned = Some(self.pending_before(u64::MAX));
        // Anything left is reported (and stays in the outbox), not sent.
        self.in_flight.clear();
        self.ready.clear();
        self.batcher.take();
        self.batch_deadline = None;
        self.urgent = false;
        for (waiter, pending) in answers {
            self.answer(waiter, pending);
        }
    }

    fn pending_before(&self, upto: u64) -> Vec<EventRef> {
        let batches = self
            .in_flight
            .values()
            .map(Arc::as_ref)
            .chain(self.ready.iter());
        let queued = (self.batcher.first_seq().unwrap_or(0)..).zip(self.batcher.events());
        batches
            .flat_map(|b| (b.first_seq..).zip(&b.events))
            .chain(queued)
            .filter(|(seq, _)| *seq < upto)
            .map(|(_, event)| EventRef::from(event))
            .collect()
    }

    fn answer(&mut self, waiter: Waiter, pending: Vec<EventRef>) {
        let mut report = std::mem::take(&mut self.report);
        report.pending = pending;
        let Some(reply) = waiter.reply else {
            // Closed by dropping the last handle: nobody reads this report.
            if !report.is_complete() {
                tracing::warn!(
                    failed = report.failed_count(),
                    pending = report.pending.len(),
                    delivered = report.delivered,
                    "the client was dropped without close_and_flush and not every event was delivered within its shutdown timeout"
                );
            }
            return;
        };
        if let Err(unread) = reply.send(report) {
            // The caller gave up waiting; keep its outcomes for the next report.
            self.report
                .merge_earlier(unread, self.settings.max_failures_in_report);
        }
    }

    /// Every event the worker holds, oldest first, with its receipt.
    fn take_held(&mut self) -> Vec<(Event, Option<Receipt>)> {
        let in_flight = std::mem::take(&mut self.in_flight);
        let ready = std::mem::take(&mut self.ready);
        let batches = in_flight
            .into_values()
            .map(|b| Arc::try_unwrap(b).unwrap_or_else(|shared| shared.clone_events()))
            .chain(ready)
            .chain(self.batcher.take());
        let mut held = Vec::new();
        for batch in batches {
            for (seq, event) in (batch.first_seq..).zip(batch.events) {
                held.push((event, self.receipts.remove(&seq)));
            }
        }
        while let Ok(task) = self.rx.try_recv() {
            match task {
                Task::Event(event, receipt) => held.push((event, receipt)),
                Task::Events(events) => held.extend(events.into_iter().map(|e| (e, None))),
                Task::Confirm(event, receipt) => held.push((event, Some(receipt))),
                Task::Flush { .. } => {}
            }
        }
        held
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Nothing takes events off the queue any more: a producer waiting
        // for room must not wait forever.
        self.room.close();
        if self.finished {
            return;
        }
        let held = self.take_held();
        if held.is_empty() {
            return;
        }
        if std::thread::panicking() {
            tracing::error!(
                events = held.len(),
                "the client's worker stopped unexpectedly; its events are reported as failed"
            );
            let error = SegmentError::new(
                Kind::Internal,
                "the client's worker stopped unexpectedly before this event was sent",
            );
            for (event, receipt) in held {
                self.fail_event(&event, receipt, &error);
            }
            return;
        }
        // The runtime is shutting down under the worker (a client dropped
        // without close_and_flush as `main` returns): deliver on a thread of
        // our own, within the shutdown timeout.
        if let Err(error) = rescue(&self.sender, &self.settings, held) {
            tracing::error!(
                code = error.code(),
                "could not deliver a dropped client's events: {error}"
            );
        }
    }
}

/// Delivers `held` on a fresh thread and runtime, waiting at most the
/// shutdown timeout (plus the hop back).
fn rescue(
    sender: &Sender,
    settings: &Settings,
    held: Vec<(Event, Option<Receipt>)>,
) -> Result<(), SegmentError> {
    let internal = |what: &str, e: std::io::Error| {
        SegmentError::with_source(Kind::Internal, what.to_owned(), e)
    };
    let outage_bound = lock(&sender.health).bound();
    let sender = Arc::new(sender.fresh(outage_bound)?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            internal(
                "could not start a runtime to deliver a dropped client's events",
                e,
            )
        })?;
    // Every sender is dropped at once: the worker closes as soon as it
    // has taken the events, with the shutdown timeout as its deadline.
    let (_, rx) = mpsc::channel(1);
    let (_, control) = mpsc::unbounded_channel();
    let room = Arc::new(Room::new(1, crate::room::QUEUE_BYTES));
    let mut worker = Worker::new(rx, room, control, sender, settings.clone());
    let count = held.len();
    for (event, receipt) in held {
        worker.accept_event(event, receipt);
    }
    tracing::info!(
        events = count,
        "delivering a dropped client's queued events"
    );
    let thread = std::thread::Builder::new()
        .name("segment-client-shutdown".into())
        .spawn(move || runtime.block_on(worker.run()))
        .map_err(|e| {
            internal(
                "could not start a thread to deliver a dropped client's events",
                e,
            )
        })?;
    let _ = thread.join();
    Ok(())
}
