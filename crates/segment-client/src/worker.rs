//! The background worker: reads the bounded queue, batches, sends with
//! retries, and answers flushes in queue order.
//!
//! Every event gets a sequence number as it leaves the queue. A flush waits
//! until no event numbered before it is outstanding (in the batcher, sealed,
//! or in flight), or until its deadline, whichever comes first.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{Id, JoinSet};
use tokio::time::{Instant, sleep_until};

use crate::batcher::{Batch, Batcher, Limits};
use crate::encode::Encoder;
use crate::error::{Kind, SegmentError};
use crate::message::Event;
use crate::report::{DeliveryReport, EventOutcome, EventRef};
use crate::retry::{Decision, RetryPolicy};
use crate::throttle::{Pacer, Pause};
use crate::transport::Transport;

/// Most queue entries taken per wake-up: enough to amortise the wake-up,
/// few enough that sealed batches waiting for a send slot stay bounded.
const RECV_CHUNK: usize = 128;

/// Where one event's outcome is sent, for callers that wait on a single event.
pub(crate) type Receipt = oneshot::Sender<Result<(), SegmentError>>;
/// A caller's view of every event's outcome.
pub(crate) type OutcomeHook = Arc<dyn Fn(&EventOutcome<'_>) + Send + Sync>;

/// What the client handle sends to the worker, in order.
pub(crate) enum Task {
    Event(Event, Option<Receipt>),
    Flush {
        deadline: Instant,
        reply: oneshot::Sender<DeliveryReport>,
    },
    Close {
        deadline: Instant,
        reply: oneshot::Sender<DeliveryReport>,
    },
}

/// Worker settings, already validated by the builder.
pub(crate) struct Settings {
    pub limits: Limits,
    pub flush_interval: Duration,
    pub max_in_flight: usize,
    pub max_failures_in_report: usize,
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
}

pub(crate) struct Gates {
    pub pause: Pause,
    pub pacer: Option<Pacer>,
}

impl Sender {
    /// Waits until the client is not paused and the rate cap allows a request.
    async fn wait_for_turn(&self) {
        loop {
            let now = Instant::now();
            let resume = self.gates().pause.resume_at(now);
            match resume {
                Some(at) => sleep_until(at).await,
                None => break,
            }
        }
        let slot = self
            .gates()
            .pacer
            .as_mut()
            .map(|p| p.reserve(Instant::now()));
        if let Some(slot) = slot {
            sleep_until(slot).await;
        }
    }

    fn gates(&self) -> std::sync::MutexGuard<'_, Gates> {
        self.gates.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Delivers one batch, retrying as the policy decides.
    async fn deliver(&self, batch: &Batch) -> Result<(), SegmentError> {
        let started = Instant::now();
        let mut counted_attempts = 0;
        let mut sends = 0;
        loop {
            self.wait_for_turn().await;
            let body = self.encoder.encode(batch, Utc::now()).map_err(|e| {
                SegmentError::with_source(Kind::Internal, "could not encode a batch", e)
            })?;
            let failure = match self.transport.send(body, sends).await {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            sends += 1;
            match self
                .policy
                .decide(&failure, counted_attempts + 1, started.elapsed())
            {
                Decision::Backoff(wait) => {
                    counted_attempts += 1;
                    tokio::time::sleep(wait).await;
                }
                Decision::Pause(wait) => self.gates().pause.extend(Instant::now(), wait),
                Decision::GiveUp => return Err(failure.error.after_attempts(sends)),
            }
        }
    }
}

struct Waiter {
    /// Satisfied when no event numbered below this is outstanding.
    upto: u64,
    deadline: Instant,
    reply: oneshot::Sender<DeliveryReport>,
    close: bool,
}

pub(crate) struct Worker {
    rx: mpsc::Receiver<Task>,
    sender: Arc<Sender>,
    settings: Settings,
    batcher: Batcher,
    next_seq: u64,
    batch_deadline: Option<Instant>,
    /// Sealed batches waiting for a free in-flight slot.
    ready: VecDeque<Batch>,
    in_flight: BTreeMap<u64, Arc<Batch>>,
    tasks: JoinSet<Result<(), SegmentError>>,
    task_batches: HashMap<Id, u64>,
    receipts: HashMap<u64, Receipt>,
    waiters: VecDeque<Waiter>,
    report: DeliveryReport,
    closing: bool,
}

impl Worker {
    pub fn new(rx: mpsc::Receiver<Task>, sender: Arc<Sender>, settings: Settings) -> Self {
        Self {
            rx,
            sender,
            batcher: Batcher::new(settings.limits),
            settings,
            next_seq: 0,
            batch_deadline: None,
            ready: VecDeque::new(),
            in_flight: BTreeMap::new(),
            tasks: JoinSet::new(),
            task_batches: HashMap::new(),
            receipts: HashMap::new(),
            waiters: VecDeque::new(),
            report: DeliveryReport::default(),
            closing: false,
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
            self.dispatch_ready();
            self.answer_satisfied_waiters();
            if self.closing && self.waiters.is_empty() && self.outstanding_since().is_none() {
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
                () = &mut batch_timer, if armed_batch.is_some() && self.ready.is_empty() => self.seal(),
                n = self.rx.recv_many(&mut received, RECV_CHUNK), if can_read => {
                    self.persist(&mut received);
                    if n == 0 {
                        // Every handle is gone: deliver what is queued, then stop.
                        self.closing = true;
                        self.seal();
                    }
                    for task in received.drain(..) {
                        self.accept(task);
                    }
                }
            }
        }
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
        let events = tasks.iter().filter_map(|task| match task {
            Task::Event(event, _) => Some(event),
            _ => None,
        });
        let Err(error) = outbox.put(events) else {
            return;
        };
        for task in std::mem::take(tasks) {
            match task {
                Task::Event(event, receipt) => {
                    self.record(&event, Err(&error));
                    if let Some(receipt) = receipt {
                        let _ = receipt.send(Err(error.clone()));
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

    fn accept(&mut self, task: Task) {
        if self.closing {
            return self.refuse_after_close(task);
        }
        match task {
            Task::Event(event, receipt) => {
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
            Task::Flush { deadline, reply } => {
                self.seal();
                self.waiters.push_back(Waiter {
                    upto: self.next_seq,
                    deadline,
                    reply,
                    close: false,
                });
            }
            Task::Close { deadline, reply } => {
                self.seal();
                self.closing = true;
                self.waiters.push_back(Waiter {
                    upto: self.next_seq,
                    deadline,
                    reply,
                    close: true,
                });
                self.refuse_queued_after_close();
            }
        }
    }

    /// Takes what slipped into the queue behind the close: events are
    /// refused (and say so in the close's report), flushes share its answer.
    fn refuse_queued_after_close(&mut self) {
        self.rx.close();
        while let Ok(task) = self.rx.try_recv() {
            self.refuse_after_close(task);
        }
    }

    fn refuse_after_close(&mut self, task: Task) {
        match task {
            Task::Event(event, receipt) => {
                let error = SegmentError::new(
                    Kind::ClientClosed,
                    "the client was closed before this event could be sent",
                );
                self.record(&event, Err(&error));
                if let Some(receipt) = receipt {
                    let _ = receipt.send(Err(error));
                }
            }
            Task::Flush { deadline, reply } | Task::Close { deadline, reply } => {
                self.waiters.push_back(Waiter {
                    upto: self.next_seq,
                    deadline,
                    reply,
                    close: false,
                });
            }
        }
    }

    fn seal(&mut self) {
        self.batch_deadline = None;
        self.ready.extend(self.batcher.take());
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
                let error = SegmentError::new(Kind::Internal, format!("a send task stopped: {e}"));
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
            if let Some(receipt) = self.receipts.remove(&seq) {
                let _ = receipt.send(result.map_err(Clone::clone));
            }
        }
        self.forget(&batch.events);
    }

    fn record(&mut self, event: &Event, result: Result<(), &SegmentError>) {
        if let Some(hook) = &self.settings.on_outcome {
            hook(&EventOutcome {
                message_id: &event.message_id,
                identity: &event.identity,
                result,
            });
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
        while let Some(pos) = self.waiters.iter().position(|w| w.deadline <= now) {
            let waiter = self.waiters.remove(pos).expect("position is valid");
            if waiter.close {
                self.abandon_outstanding();
            }
            let pending = self.pending_before(waiter.upto);
            self.answer(waiter, pending);
        }
    }

    /// At a close's deadline: stop sending, and tell each waiting caller.
    fn abandon_outstanding(&mut self) {
        self.tasks.abort_all();
        self.task_batches.clear();
        let error = SegmentError::new(
            Kind::DeadlineExceeded,
            "the client closed before this event was delivered",
        );
        let in_flight = std::mem::take(&mut self.in_flight);
        let ready = std::mem::take(&mut self.ready);
        let queued = self.batcher.take();
        for batch in in_flight
            .values()
            .map(Arc::as_ref)
            .chain(ready.iter())
            .chain(queued.as_ref())
        {
            for seq in batch.first_seq..batch.first_seq + batch.events.len() as u64 {
                if let Some(receipt) = self.receipts.remove(&seq) {
                    let _ = receipt.send(Err(error.clone()));
                }
            }
        }
        // Kept for the report's pending list.
        self.in_flight = in_flight;
        self.ready = ready;
        self.ready.extend(queued);
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
        if let Err(unread) = waiter.reply.send(report) {
            // The caller gave up waiting; keep its outcomes for the next report.
            self.report
                .merge_earlier(unread, self.settings.max_failures_in_report);
        }
        if waiter.close {
            // Anything left after a close's deadline is reported, then dropped.
            self.in_flight.clear();
            self.ready.clear();
            self.batcher.take();
        }
    }
}
