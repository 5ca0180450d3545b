//! The [`SegmentClient`] trait and the production [`HttpClient`].

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};

use crate::batcher::{Limits, MAX_BATCH_EVENTS, MAX_REQUEST_BYTES};
use crate::calls::{AliasParams, GroupParams, Message, TrackParams, ViewParams};
use crate::contract::SegmentIntegrationResult;
use crate::encode::Encoder;
use crate::error::{Kind, SegmentError};
use crate::health::Health;
use crate::message::{
    Event, IdentifyParams, Identity, MAX_EVENT_BYTES, new_message_id, prepare, prepare_message,
};
use crate::report::{DeliveryReport, EventOutcome};
use crate::retry::RetryPolicy;
use crate::room::{NoRoom, Room};
use crate::throttle::{Pacer, Pause};
use crate::transport::{DryRun, HttpTransport, Transport, batch_endpoint};
use crate::worker::{CloseRequest, Gates, OutcomeHook, Sender, Settings, Task, Worker};

/// An event validated and serialised once, ready to queue with
/// [`HttpClient::queue_prepared_blocking`]. Its JSON is exactly what will be
/// sent (inside a batch), so it can also be stored and queued again later.
///
/// # Example
/// ```
/// use segment_client::{IdentifyParams, Identity, PreparedEvent};
///
/// let event = PreparedEvent::new(IdentifyParams::new(Identity::user("cus_1"))).unwrap();
/// let stored = event.json().to_vec();
/// let again = PreparedEvent::from_json(stored).unwrap();
/// assert_eq!(again.message_id(), event.message_id());
/// assert_eq!(again.identity().user_id(), Some("cus_1"));
/// ```
#[derive(Debug, Clone)]
pub struct PreparedEvent(Event);

impl PreparedEvent {
    /// Validates a call of any type (an [`IdentifyParams`], a
    /// [`TrackParams`], any [`Message`]) and serialises the event, filling in
    /// `messageId` and `timestamp` if they are missing.
    ///
    /// # Errors
    /// `invalid_payload` or `payload_too_large`, as for [`HttpClient::send`].
    pub fn new(message: impl Into<Message>) -> Result<Self, SegmentError> {
        match message.into() {
            Message::Identify(params) => prepare(params),
            other => prepare_message(other),
        }
        .map(Self)
    }

    /// An identify event for `identity` whose traits are already JSON: what
    /// [`new`](Self::new) makes of an [`IdentifyParams`] whose custom traits
    /// are the same object (byte for byte, but for `messageId` and
    /// `timestamp`), without a `serde_json` pass over the traits. For
    /// producers that write each record's traits directly with an
    /// [`ObjectWriter`](crate::ObjectWriter).
    ///
    /// # Errors
    /// `invalid_payload` for an empty `userId` or `anonymousId`;
    /// `payload_too_large` for an event over 32,000 bytes.
    ///
    /// # Example
    /// ```
    /// use segment_client::{Identity, ObjectWriter, PreparedEvent};
    ///
    /// let mut traits = ObjectWriter::new();
    /// traits.string("email", "ada@example.com");
    /// let event = PreparedEvent::identify_raw(Identity::user("cus_1"), &traits.finish())?;
    /// let json: serde_json::Value = serde_json::from_slice(event.json())?;
    /// assert_eq!(json["traits"]["email"], "ada@example.com");
    /// assert_eq!(json["userId"], "cus_1");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn identify_raw(
        identity: Identity,
        traits: &crate::RawObject,
    ) -> Result<Self, SegmentError> {
        crate::message::prepare_identify_raw(identity, traits).map(Self)
    }

    /// Rebuilds an event from the JSON of an earlier [`json`](Self::json).
    ///
    /// # Errors
    /// `invalid_payload` if the JSON is not an event of a known type with a
    /// `messageId`, an identity and the fields its type requires
    /// (`payload_too_large` if it is too big).
    pub fn from_json(json: Vec<u8>) -> Result<Self, SegmentError> {
        crate::message::from_json(json).map(Self)
    }

    /// The event's `messageId`.
    pub fn message_id(&self) -> &str {
        &self.0.message_id
    }

    /// Who the event is about.
    pub fn identity(&self) -> &Identity {
        &self.0.identity
    }

    /// The serialised event, exactly as it goes into a batch.
    pub fn json(&self) -> &[u8] {
        &self.0.json
    }

    /// Gives the event a number of the caller's, handed back in its
    /// [`EventOutcome::tag`](crate::EventOutcome::tag): a slot in the
    /// caller's own table of events in flight, say, so that an
    /// [`on_outcome`](crate::HttpClientBuilder::on_outcome) hook finds the
    /// event without looking up its `messageId`. Not sent to Segment.
    ///
    /// # Example
    /// ```
    /// use segment_client::{IdentifyParams, Identity, PreparedEvent};
    ///
    /// let mut event = PreparedEvent::new(IdentifyParams::new(Identity::user("u1")))?;
    /// event.set_tag(7);
    /// assert_eq!(event.tag(), 7);
    /// # Ok::<(), segment_client::SegmentError>(())
    /// ```
    pub fn set_tag(&mut self, tag: u64) {
        self.0.tag = tag;
    }

    /// The number [`set_tag`](Self::set_tag) gave the event; 0 if none.
    pub fn tag(&self) -> u64 {
        self.0.tag
    }
}

/// A boxed future, so that [`SegmentClient`] works as `&dyn SegmentClient`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Anything that can identify customers to Segment: the production
/// [`HttpClient`], the [`InMemoryClient`](crate::InMemoryClient) test double, or
/// your own.
///
/// Methods return boxed futures so the trait can be used as
/// `&dyn SegmentClient`; implement them with `Box::pin(async move { .. })`.
///
/// # Example
/// ```
/// use segment_client::{InMemoryClient, IdentifyParams, Identity, SegmentClient};
///
/// async fn onboard(client: &dyn SegmentClient) -> Result<(), segment_client::SegmentError> {
///     client.identify(IdentifyParams::new(Identity::user("cus_1"))).await?;
///     let report = client.flush().await?;
///     assert!(report.is_complete());
///     Ok(())
/// }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap()
/// #     .block_on(onboard(&InMemoryClient::new())).unwrap();
/// ```
pub trait SegmentClient: Send + Sync {
    /// Validates the event and queues it for delivery.
    ///
    /// # Errors
    /// `invalid_payload` or `payload_too_large` if Segment would refuse the
    /// event, `client_closed` after [`close_and_flush`](Self::close_and_flush).
    fn identify(&self, params: IdentifyParams) -> BoxFuture<'_, Result<(), SegmentError>>;

    /// Sends everything queued before this call and reports the outcome.
    ///
    /// # Errors
    /// `client_closed` if the client is closed; `deadline_exceeded` if the
    /// flush could not even be started before its deadline.
    fn flush(&self) -> BoxFuture<'_, Result<DeliveryReport, SegmentError>>;

    /// Like [`flush`](Self::flush), then stops the client: later calls return `client_closed`.
    ///
    /// # Errors
    /// As for [`flush`](Self::flush).
    fn close_and_flush(&self) -> BoxFuture<'_, Result<DeliveryReport, SegmentError>>;

    /// Validates a call of any type and queues it for delivery.
    ///
    /// The default handles [`Message::Identify`] with
    /// [`identify`](Self::identify) and refuses every other type with
    /// `invalid_config`, so clients written before the other types existed
    /// keep compiling; [`HttpClient`] and
    /// [`InMemoryClient`](crate::InMemoryClient) handle every type.
    ///
    /// # Errors
    /// `invalid_payload` or `payload_too_large` if Segment would refuse the
    /// event, `client_closed` after [`close_and_flush`](Self::close_and_flush).
    fn send(&self, message: Message) -> BoxFuture<'_, Result<(), SegmentError>> {
        match message {
            Message::Identify(params) => self.identify(params),
            other => {
                let kind = other.kind();
                Box::pin(async move {
                    Err(SegmentError::new(
                        Kind::InvalidConfig,
                        format!("this SegmentClient does not implement `{kind}` calls"),
                    ))
                })
            }
        }
    }

    /// Queues a `track` call; see [`send`](Self::send).
    ///
    /// # Errors
    /// As for [`send`](Self::send); an empty `event` is `invalid_payload`.
    fn track(&self, params: TrackParams) -> BoxFuture<'_, Result<(), SegmentError>> {
        self.send(Message::Track(params))
    }

    /// Queues a `group` call; see [`send`](Self::send).
    ///
    /// # Errors
    /// As for [`send`](Self::send); an empty `groupId` is `invalid_payload`.
    fn group(&self, params: GroupParams) -> BoxFuture<'_, Result<(), SegmentError>> {
        self.send(Message::Group(params))
    }

    /// Queues an `alias` call; see [`send`](Self::send).
    ///
    /// # Errors
    /// As for [`send`](Self::send); an empty `previousId` or `userId` is `invalid_payload`.
    fn alias(&self, params: AliasParams) -> BoxFuture<'_, Result<(), SegmentError>> {
        self.send(Message::Alias(params))
    }

    /// Queues a `page` call; see [`send`](Self::send).
    ///
    /// # Errors
    /// As for [`send`](Self::send).
    fn page(&self, params: ViewParams) -> BoxFuture<'_, Result<(), SegmentError>> {
        self.send(Message::Page(params))
    }

    /// Queues a `screen` call; see [`send`](Self::send).
    ///
    /// # Errors
    /// As for [`send`](Self::send).
    fn screen(&self, params: ViewParams) -> BoxFuture<'_, Result<(), SegmentError>> {
        self.send(Message::Screen(params))
    }

    /// Sends one call of any type, flushes, and says whether *this* event
    /// was delivered; like [`identify_and_confirm`](Self::identify_and_confirm).
    ///
    /// # Errors
    /// Any error of `send` or `flush`, or the event's own delivery failure.
    fn send_and_confirm(&self, mut message: Message) -> BoxFuture<'_, SegmentIntegrationResult> {
        Box::pin(async move {
            let message_id = message
                .message_id_slot()
                .get_or_insert_with(new_message_id)
                .clone();
            self.send(message).await?;
            confirm_in_report(self.flush().await?, &message_id)
        })
    }

    /// Identifies one event, flushes, and says whether *this* event was delivered.
    ///
    /// The default finds the event in the flush's report, which is exact
    /// unless other tasks flush the same client at the same time;
    /// [`HttpClient`] tracks the single event instead.
    ///
    /// # Errors
    /// Any error of `identify` or `flush`, or the event's own delivery failure.
    fn identify_and_confirm(
        &self,
        mut params: IdentifyParams,
    ) -> BoxFuture<'_, SegmentIntegrationResult> {
        Box::pin(async move {
            let message_id = params.message_id.get_or_insert_with(new_message_id).clone();
            self.identify(params).await?;
            confirm_in_report(self.flush().await?, &message_id)
        })
    }
}

/// Whether the event `message_id` was delivered, by a flush's report.
fn confirm_in_report(report: DeliveryReport, message_id: &str) -> SegmentIntegrationResult {
    if let Some(error) = report.failure_of(message_id) {
        return Err(error.clone());
    }
    if report.is_pending(message_id) {
        return Err(still_pending());
    }
    if report.failed_not_listed > 0 {
        return Err(SegmentError::new(
            Kind::Internal,
            "delivery could not be confirmed: the report's failure list was truncated",
        ));
    }
    Ok(())
}

fn still_pending() -> SegmentError {
    SegmentError::new(
        Kind::DeadlineExceeded,
        "the flush deadline passed before this event was delivered; it is still pending",
    )
}

/// How long a caller waits past a deadline for the worker's answer to come back.
const REPLY_GRACE: Duration = Duration::from_millis(250);

/// A confirmation that timed out: the last attempt's cause, under its own code.
fn not_confirmed(timeout: Duration, last: Option<SegmentError>) -> SegmentError {
    let message = format!(
        "the event was not delivered within {} s; it is still queued and being retried",
        timeout.as_secs_f64()
    );
    match last {
        Some(cause) => SegmentError::caused_by(message, cause),
        None => SegmentError::new(Kind::DeadlineExceeded, message),
    }
}

fn closed() -> SegmentError {
    SegmentError::new(Kind::ClientClosed, "the client is closed")
}

fn worker_gone() -> SegmentError {
    SegmentError::new(
        Kind::Internal,
        "the client's background worker stopped unexpectedly",
    )
}

/// A Segment data region, for [`HttpClientBuilder::region`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Region {
    /// `https://api.segment.io`, the default.
    Us,
    /// `https://events.eu1.segmentapis.com`.
    Eu,
}

impl Region {
    /// The region's API host.
    pub fn host(self) -> &'static str {
        match self {
            Region::Us => "https://api.segment.io",
            Region::Eu => "https://events.eu1.segmentapis.com",
        }
    }
}

/// The production client: validates, batches by exact bytes, gzips, sends
/// several requests at once, retries by Segment's rules, and never drops an
/// event without saying so.
///
/// Cheap to clone: clones share one queue and one background worker. Build it
/// with [`HttpClient::builder`] or
/// [`get_segment_client_from_environment`](crate::get_segment_client_from_environment).
///
/// # Example
/// ```no_run
/// use segment_client::{HttpClient, IdentifyParams, Identity};
///
/// # async fn run() -> Result<(), segment_client::SegmentError> {
/// let client = HttpClient::builder("WRITE_KEY").build()?;
/// client.identify(IdentifyParams::new(Identity::user("cus_1"))).await?;
/// let report = client.close_and_flush().await?;
/// println!("{} delivered, {} failed", report.delivered, report.failed_count());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Handle>,
}

struct Handle {
    tx: mpsc::Sender<Task>,
    /// Room in the queue, in events and bytes, shared with the worker.
    room: Arc<Room>,
    control: mpsc::UnboundedSender<CloseRequest>,
    sender: Arc<Sender>,
    closed: AtomicBool,
    flush_timeout: Duration,
    shutdown_timeout: Duration,
    /// Signalled (or disconnected) when the worker ends, wherever it runs.
    worker_done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl Drop for Handle {
    /// The last handle is gone: the worker delivers what is queued within
    /// the shutdown timeout, and is waited for here (unless that would block
    /// a single-threaded runtime's only thread), so a short script that
    /// returns from `main` does not lose its events. Waiting matters for a
    /// worker on the caller's multi-threaded runtime too: otherwise the
    /// runtime's shutdown would drop it mid-request, and its rescue would
    /// race the request it cut off.
    fn drop(&mut self) {
        // Replacing the senders drops them, which tells the worker.
        drop(std::mem::replace(&mut self.tx, mpsc::channel(1).0));
        drop(std::mem::replace(
            &mut self.control,
            mpsc::unbounded_channel().0,
        ));
        let done = self
            .worker_done
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(done) = done else {
            return;
        };
        let wait = self.shutdown_timeout + Duration::from_secs(1);
        match tokio::runtime::Handle::try_current().map(|r| r.runtime_flavor()) {
            Err(_) => {
                let _ = done.recv_timeout(wait);
            }
            Ok(tokio::runtime::RuntimeFlavor::CurrentThread) => {
                tracing::debug!(
                    "client dropped on a single-threaded runtime; not waiting for its worker"
                );
            }
            Ok(_) => tokio::task::block_in_place(|| {
                let _ = done.recv_timeout(wait);
            }),
        }
    }
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .field(
                "queued",
                &(self.inner.tx.max_capacity() - self.inner.tx.capacity()),
            )
            .finish_non_exhaustive()
    }
}

/// Resolves to the delivery outcome of one event; see [`HttpClient::identify_with_receipt`].
#[derive(Debug)]
pub struct DeliveryReceipt {
    rx: oneshot::Receiver<Result<(), SegmentError>>,
}

impl DeliveryReceipt {
    /// The outcome if it is known now, without waiting.
    ///
    /// # Errors
    /// The event's delivery failure, or `deadline_exceeded` if it is still pending.
    pub fn try_result(&mut self) -> SegmentIntegrationResult {
        match self.rx.try_recv() {
            Ok(result) => result,
            Err(oneshot::error::TryRecvError::Empty) => Err(still_pending()),
            Err(oneshot::error::TryRecvError::Closed) => Err(worker_gone()),
        }
    }
}

impl Future for DeliveryReceipt {
    type Output = SegmentIntegrationResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(worker_gone())))
    }
}

impl HttpClient {
    /// A builder for a client that sends with `write_key`.
    pub fn builder(write_key: impl Into<String>) -> HttpClientBuilder {
        HttpClientBuilder::new(write_key.into())
    }

    /// Validates and queues an event, waiting for room if the queue is full.
    ///
    /// # Errors
    /// `invalid_payload`, `payload_too_large`, or `client_closed`.
    pub async fn identify(&self, params: IdentifyParams) -> Result<(), SegmentError> {
        let event = prepare(params)?;
        self.enqueue(Task::Event(event, None)).await
    }

    /// Validates and queues a call of any type (identify, track, group,
    /// alias, page, screen), waiting for room if the queue is full. Every
    /// type shares the queue, the batches and the delivery reports.
    ///
    /// # Example
    /// ```
    /// use segment_client::{AliasParams, GroupParams, HttpClient, Identity, Message, TrackParams, ViewParams};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let receiver = segment_receiver::Receiver::start(Default::default()).await.unwrap();
    /// let client = HttpClient::builder("WRITE_KEY").host(receiver.url()).build()?;
    /// client.send(TrackParams::new(Identity::user("cus_1"), "Signed Up")).await?;
    /// client.send(GroupParams::new(Identity::user("cus_1"), "acc_1")).await?;
    /// client.send(AliasParams::new("anon_1", "cus_1")).await?;
    /// client.send(Message::Page(ViewParams::new(Identity::user("cus_1")).with_name("Home"))).await?;
    /// let report = client.close_and_flush().await?;
    /// assert_eq!(report.delivered, 4);
    /// # Ok::<(), segment_client::SegmentError>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// `invalid_payload` (an empty identity, or a missing field the type
    /// requires: track `event`, group `groupId`, alias `previousId` and
    /// `userId`), `payload_too_large`, or `client_closed`.
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), SegmentError> {
        let event = prepare_message(message.into())?;
        self.enqueue(Task::Event(event, None)).await
    }

    /// Queues a `track` call; see [`send`](Self::send).
    ///
    /// # Errors
    /// As for [`send`](Self::send).
    pub async fn track(&self, params: TrackParams) -> Result<(), SegmentError> {
        self.send(params).await
    }

    /// Queues a `group` call; see [`send`](Self::send).
    ///
    /// # Errors
    /// As for [`send`](Self::send).
    pub async fn group(&self, params: GroupParams) -> Result<(), SegmentError> {
        self.send(params).await
    }

    /// Queues an `alias` call; see [`send`](Self::send).
    ///
    /// # Errors
    /// As for [`send`](Self::send).
    pub async fn alias(&self, params: AliasParams) -> Result<(), SegmentError> {
        self.send(params).await
    }

    /// Queues a `page` call; see [`send`](Self::send).
    ///
    /// # Errors
    /// As for [`send`](Self::send).
    pub async fn page(&self, params: ViewParams) -> Result<(), SegmentError> {
        self.send(Message::Page(params)).await
    }

    /// Queues a `screen` call; see [`send`](Self::send).
    ///
    /// # Errors
    /// As for [`send`](Self::send).
    pub async fn screen(&self, params: ViewParams) -> Result<(), SegmentError> {
        self.send(Message::Screen(params)).await
    }

    /// Like [`send`](Self::send) from a thread outside any async runtime,
    /// blocking while the queue is full.
    ///
    /// # Errors
    /// As for [`send`](Self::send).
    ///
    /// # Panics
    /// If called from within an async runtime.
    pub fn send_blocking(&self, message: impl Into<Message>) -> Result<(), SegmentError> {
        self.queue_prepared_blocking(PreparedEvent::new(message)?)
    }

    /// Like [`send`](Self::send), and returns a receipt that resolves when
    /// this event is delivered or has failed.
    ///
    /// # Errors
    /// As for [`send`](Self::send).
    pub async fn send_with_receipt(
        &self,
        message: impl Into<Message>,
    ) -> Result<DeliveryReceipt, SegmentError> {
        let event = prepare_message(message.into())?;
        let (tx, rx) = oneshot::channel();
        self.enqueue(Task::Event(event, Some(tx))).await?;
        Ok(DeliveryReceipt { rx })
    }

    /// Like [`identify_and_wait`](Self::identify_and_wait) for a call of any type.
    ///
    /// # Errors
    /// As for [`identify_and_wait`](Self::identify_and_wait).
    pub async fn send_and_wait(&self, message: impl Into<Message>) -> SegmentIntegrationResult {
        let event = prepare_message(message.into())?;
        self.confirm(event).await
    }

    /// Validates and queues an event from a thread outside any async runtime,
    /// blocking that thread while the queue is full. Lets a synchronous
    /// producer (such as a file reader) feed the client without an executor.
    ///
    /// # Errors
    /// As for [`identify`](Self::identify).
    ///
    /// # Panics
    /// If called from within an async runtime, like
    /// [`tokio::sync::mpsc::Sender::blocking_send`].
    pub fn identify_blocking(&self, params: IdentifyParams) -> Result<(), SegmentError> {
        let event = prepare(params)?;
        self.enqueue_blocking(Task::Event(event, None))
            .map_err(|_| closed())
    }

    /// Queues an event validated earlier with [`PreparedEvent::new`] or
    /// rebuilt with [`PreparedEvent::from_json`], waiting for room.
    ///
    /// # Errors
    /// `client_closed` after [`close_and_flush`](Self::close_and_flush).
    pub async fn queue_prepared(&self, event: PreparedEvent) -> Result<(), SegmentError> {
        self.enqueue(Task::Event(event.0, None)).await
    }

    /// Queues an event validated earlier with [`PreparedEvent::new`], from a
    /// thread outside any async runtime, blocking while the queue is full.
    /// Lets a bulk producer validate a chunk, store it durably, then queue it
    /// without serialising anything twice.
    ///
    /// # Errors
    /// `client_closed` after [`close_and_flush`](Self::close_and_flush).
    ///
    /// # Panics
    /// If called from within an async runtime, like
    /// [`identify_blocking`](Self::identify_blocking).
    pub fn queue_prepared_blocking(&self, event: PreparedEvent) -> Result<(), SegmentError> {
        self.enqueue_blocking(Task::Event(event.0, None))
            .map_err(|_| closed())
    }

    /// Queues events validated earlier, in order, from a thread outside any
    /// async runtime, blocking while the queue is full: like
    /// [`queue_prepared_blocking`](Self::queue_prepared_blocking) for each,
    /// but the worker is woken once per call rather than once per event, so
    /// a bulk producer hands over a chunk for about the cost of one event.
    /// The queue holds at most the builder's `queue_capacity` events queued
    /// this way (besides as many queued one by one), and at most 16 MB of
    /// events however they were queued; a call with more is queued in parts.
    ///
    /// # Errors
    /// `client_closed` after [`close_and_flush`](Self::close_and_flush),
    /// with the events not queued: `Err((error, events))`, from the first
    /// part that could not be queued (earlier parts are queued).
    ///
    /// # Panics
    /// If called from within an async runtime, like
    /// [`queue_prepared_blocking`](Self::queue_prepared_blocking).
    ///
    /// # Example
    /// ```
    /// use segment_client::{HttpClient, IdentifyParams, Identity, PreparedEvent};
    ///
    /// let client = HttpClient::builder("KEY").dry_run(None).build()?;
    /// let events: Vec<PreparedEvent> = (0..3)
    ///     .map(|i| PreparedEvent::new(IdentifyParams::new(Identity::user(format!("u{i}")))))
    ///     .collect::<Result<_, _>>()?;
    /// client.queue_prepared_many_blocking(events).map_err(|(error, _)| error)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queue_prepared_many_blocking(
        &self,
        events: Vec<PreparedEvent>,
    ) -> Result<(), (SegmentError, Vec<PreparedEvent>)> {
        let (part, part_bytes) = (
            self.inner.room.capacity().max(1),
            self.inner.room.capacity_bytes(),
        );
        let mut events = events.into_iter().map(|event| event.0).peekable();
        while events.peek().is_some() {
            // As many as the room holds, by count and by bytes (at least one).
            let mut bytes = 0;
            let mut chunk: Vec<Event> = Vec::new();
            while let Some(event) = events.next_if(|event| {
                let fits = bytes + crate::room::queued_bytes(event) <= part_bytes;
                chunk.is_empty() || (chunk.len() < part && fits)
            }) {
                bytes += crate::room::queued_bytes(&event);
                chunk.push(event);
            }
            if let Err(task) = self.enqueue_blocking(Task::Events(chunk)) {
                let chunk = match task {
                    Task::Events(chunk) => chunk,
                    _ => Vec::new(),
                };
                let not_queued = chunk.into_iter().chain(events).map(PreparedEvent);
                return Err((closed(), not_queued.collect()));
            }
        }
        Ok(())
    }

    /// Validates and queues an event without waiting.
    ///
    /// # Errors
    /// `queue_full` when the queue has no room, in events or in its 16 MB,
    /// or when other callers are already waiting for room (nothing was
    /// queued); and the errors of [`identify`](Self::identify).
    pub fn try_identify(&self, params: IdentifyParams) -> Result<(), SegmentError> {
        let event = prepare(params)?;
        self.check_open()?;
        let full = || {
            SegmentError::new(
                Kind::QueueFull,
                "the queue is full; the event was not queued",
            )
        };
        let task = Task::Event(event, None);
        let taken = self
            .inner
            .room
            .try_take(&task)
            .map_err(|no_room| match no_room {
                NoRoom::Full => full(),
                NoRoom::Closed => closed(),
            })?;
        self.inner.tx.try_send(task).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => full(),
            mpsc::error::TrySendError::Closed(_) => closed(),
        })?;
        taken.queued();
        Ok(())
    }

    /// Like [`identify`](Self::identify), and returns a receipt that resolves
    /// when this event is delivered or has failed.
    ///
    /// # Errors
    /// As for [`identify`](Self::identify).
    pub async fn identify_with_receipt(
        &self,
        params: IdentifyParams,
    ) -> Result<DeliveryReceipt, SegmentError> {
        let event = prepare(params)?;
        let (tx, rx) = oneshot::channel();
        self.enqueue(Task::Event(event, Some(tx))).await?;
        Ok(DeliveryReceipt { rx })
    }

    /// Validates and queues an event, then waits for *its* outcome only, at
    /// most the client's flush timeout (default 60 s). The worker sends it as
    /// soon as a request slot is free, together with whatever else is queued
    /// then, so concurrent callers share requests.
    ///
    /// # Errors
    /// `invalid_payload`, `payload_too_large` or `client_closed` before
    /// sending; the event's own delivery failure (`outage` after the outage
    /// bound, 30 s by default, if nothing answers); if the timeout passes
    /// first, the last failed attempt's error (same code, with it as
    /// `source()`), or `deadline_exceeded` if no attempt failed.
    pub async fn identify_and_wait(&self, params: IdentifyParams) -> SegmentIntegrationResult {
        self.confirm(prepare(params)?).await
    }

    async fn confirm(&self, event: Event) -> SegmentIntegrationResult {
        let (tx, rx) = oneshot::channel();
        self.enqueue(Task::Confirm(event, tx)).await?;
        let timeout = self.inner.flush_timeout;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(worker_gone()),
            Err(_) => Err(not_confirmed(timeout, self.inner.sender.last_failure())),
        }
    }

    /// Sends everything queued before this call; waits at most the client's
    /// flush timeout (default 60 s).
    ///
    /// # Errors
    /// See [`flush_with_timeout`](Self::flush_with_timeout).
    pub async fn flush(&self) -> Result<DeliveryReport, SegmentError> {
        self.flush_with_timeout(self.inner.flush_timeout).await
    }

    /// Sends everything queued before this call and waits until it is
    /// delivered or failed, or until `timeout` passes; events not finished by
    /// then are listed as pending in the report and keep being retried.
    ///
    /// # Errors
    /// `client_closed` if the client is closed; `deadline_exceeded` if the
    /// worker was too busy to even start the flush before the deadline.
    pub async fn flush_with_timeout(
        &self,
        timeout: Duration,
    ) -> Result<DeliveryReport, SegmentError> {
        self.check_open()?;
        let deadline = Instant::now() + timeout;
        let (reply, rx) = oneshot::channel();
        self.request(Task::Flush { deadline, reply }, rx, deadline)
            .await
    }

    /// Sends everything queued, then stops the worker; waits at most the
    /// client's flush timeout (default 60 s).
    ///
    /// # Errors
    /// See [`close_and_flush_with_timeout`](Self::close_and_flush_with_timeout).
    pub async fn close_and_flush(&self) -> Result<DeliveryReport, SegmentError> {
        self.close_and_flush_with_timeout(self.inner.flush_timeout)
            .await
    }

    /// Sends everything queued, then stops the worker. Events not delivered
    /// by `timeout` are abandoned and listed as pending in the report (and
    /// stay in the outbox, if there is one). Later calls on any clone return
    /// `client_closed`. Closing again is safe: a call during a close waits for
    /// the same events, a call after a close's deadline lists the same
    /// abandoned events as pending again.
    ///
    /// # Errors
    /// `deadline_exceeded` if the worker did not answer by the deadline (it
    /// still closes); `internal` if the worker is gone.
    pub async fn close_and_flush_with_timeout(
        &self,
        timeout: Duration,
    ) -> Result<DeliveryReport, SegmentError> {
        self.inner.closed.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        let (reply, rx) = oneshot::channel();
        // Beside the queue, so a full queue cannot keep the close out.
        if self
            .inner
            .control
            .send(CloseRequest { deadline, reply })
            .is_err()
        {
            return Err(worker_gone());
        }
        match timeout_at(deadline + REPLY_GRACE, rx).await {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(_)) => Err(worker_gone()),
            Err(_) => Err(SegmentError::new(
                Kind::DeadlineExceeded,
                "the close deadline passed before the client's worker answered",
            )),
        }
    }

    /// The queue's room, for tests that fill it.
    #[cfg(test)]
    pub(crate) fn room(&self) -> &Room {
        &self.inner.room
    }

    fn check_open(&self) -> Result<(), SegmentError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            Err(closed())
        } else {
            Ok(())
        }
    }

    /// Queues `task` once there is room for it, in the channel and in bytes.
    async fn enqueue(&self, task: Task) -> Result<(), SegmentError> {
        self.check_open()?;
        let taken = self.inner.room.take(&task).await.ok_or_else(closed)?;
        self.inner.tx.send(task).await.map_err(|_| closed())?;
        taken.queued();
        Ok(())
    }

    /// [`enqueue`](Self::enqueue) from a thread outside any runtime. A task
    /// not queued comes back: the client is closed.
    fn enqueue_blocking(&self, task: Task) -> Result<(), Task> {
        if self.check_open().is_err() {
            return Err(task);
        }
        let Some(taken) = self.inner.room.take_blocking(&task) else {
            return Err(task);
        };
        self.inner
            .tx
            .blocking_send(task)
            .map_err(|mpsc::error::SendError(task)| task)?;
        taken.queued();
        Ok(())
    }

    async fn request(
        &self,
        task: Task,
        rx: oneshot::Receiver<DeliveryReport>,
        deadline: Instant,
    ) -> Result<DeliveryReport, SegmentError> {
        let busy = || {
            SegmentError::new(
                Kind::DeadlineExceeded,
                "the flush deadline passed before the client's worker could take the flush; events stay queued",
            )
        };
        match timeout_at(deadline, self.inner.tx.send(task)).await {
            Err(_) => return Err(busy()),
            Ok(Err(_)) => return Err(closed()),
            Ok(Ok(())) => {}
        }
        // The worker answers by the deadline once it has the request; the
        // grace covers the hop back.
        match timeout_at(deadline + REPLY_GRACE, rx).await {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(_)) => Err(worker_gone()),
            Err(_) => Err(busy()),
        }
    }
}

impl SegmentClient for HttpClient {
    fn identify(&self, params: IdentifyParams) -> BoxFuture<'_, Result<(), SegmentError>> {
        Box::pin(HttpClient::identify(self, params))
    }

    fn flush(&self) -> BoxFuture<'_, Result<DeliveryReport, SegmentError>> {
        Box::pin(HttpClient::flush(self))
    }

    fn close_and_flush(&self) -> BoxFuture<'_, Result<DeliveryReport, SegmentError>> {
        Box::pin(HttpClient::close_and_flush(self))
    }

    fn identify_and_confirm(
        &self,
        params: IdentifyParams,
    ) -> BoxFuture<'_, SegmentIntegrationResult> {
        Box::pin(self.identify_and_wait(params))
    }

    fn send(&self, message: Message) -> BoxFuture<'_, Result<(), SegmentError>> {
        Box::pin(HttpClient::send(self, message))
    }

    fn send_and_confirm(&self, message: Message) -> BoxFuture<'_, SegmentIntegrationResult> {
        Box::pin(self.send_and_wait(message))
    }
}

/// Configures an [`HttpClient`]. Setters take and return the builder by
/// value; [`build`](Self::build) validates everything at once.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use segment_client::{HttpClient, Region};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let client = HttpClient::builder("WRITE_KEY")
///     .region(Region::Eu)
///     .batch_size(500)
///     .max_in_flight(8)
///     .requests_per_second(100.0)
///     .flush_interval(Duration::from_secs(1))
///     .build()
///     .unwrap();
/// # client.close_and_flush().await.unwrap();
/// # });
/// ```
#[must_use]
pub struct HttpClientBuilder {
    write_key: String,
    host: String,
    batch_size: usize,
    max_batch_bytes: usize,
    flush_interval: Duration,
    max_in_flight: usize,
    queue_capacity: usize,
    requests_per_second: Option<f64>,
    gzip_level: Option<u32>,
    request_timeout: Duration,
    retry: RetryPolicy,
    flush_timeout: Duration,
    outage_after: Duration,
    shutdown_timeout: Duration,
    max_failures_in_report: usize,
    on_outcome: Option<OutcomeHook>,
    own_thread: bool,
    dry_run: Option<Option<PathBuf>>,
    #[cfg(test)]
    scripted: Option<Arc<crate::scripted::Server>>,
    #[cfg(feature = "outbox")]
    outbox: Option<PathBuf>,
}

impl fmt::Debug for HttpClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClientBuilder")
            .field("write_key", &"<redacted>")
            .field("host", &self.host)
            .field("batch_size", &self.batch_size)
            .field("max_in_flight", &self.max_in_flight)
            .field("queue_capacity", &self.queue_capacity)
            .finish_non_exhaustive()
    }
}

impl HttpClientBuilder {
    fn new(write_key: String) -> Self {
        Self {
            write_key,
            host: Region::Us.host().to_owned(),
            batch_size: DEFAULT_BATCH_SIZE,
            max_batch_bytes: MAX_REQUEST_BYTES,
            flush_interval: Duration::from_secs(5),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            queue_capacity: 10_000,
            requests_per_second: None,
            gzip_level: Some(DEFAULT_GZIP_LEVEL),
            request_timeout: Duration::from_secs(15),
            retry: RetryPolicy::default(),
            flush_timeout: Duration::from_secs(60),
            outage_after: DEFAULT_OUTAGE_AFTER,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            max_failures_in_report: 10_000,
            on_outcome: None,
            own_thread: false,
            dry_run: None,
            #[cfg(test)]
            scripted: None,
            #[cfg(feature = "outbox")]
            outbox: None,
        }
    }

    /// The API base URL, e.g. `http://127.0.0.1:8080` for a local receiver.
    /// Default: `https://api.segment.io`.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// The API base URL this builder will send to.
    pub fn configured_host(&self) -> &str {
        &self.host
    }

    /// Sends to a region's host. Default: [`Region::Us`].
    pub fn region(self, region: Region) -> Self {
        self.host(region.host())
    }

    /// Most events per request, 1 to 2,500. Default: 1,000 (requests are
    /// also kept under 500,000 bytes, which typical identify events reach
    /// first).
    pub fn batch_size(mut self, events: usize) -> Self {
        self.batch_size = events;
        self
    }

    /// Largest uncompressed request body in bytes, 33,000 to 500,000 (Segment's
    /// limit). Default: 500,000.
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes;
        self
    }

    /// How long a partly filled batch may wait before it is sent. Default: 5 s.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// Requests in flight at once, at least 1. Default: 4.
    pub fn max_in_flight(mut self, requests: usize) -> Self {
        self.max_in_flight = requests;
        self
    }

    /// Events the queue holds before `identify` waits (and `try_identify`
    /// returns `queue_full`), at least 1. Default: 10,000. Whatever this
    /// is, the queue also holds at most 16 MB of events, so that big events
    /// behind a slow server wait with their caller instead of in memory.
    pub fn queue_capacity(mut self, events: usize) -> Self {
        self.queue_capacity = events;
        self
    }

    /// Caps request starts per second across the client. Default: no cap.
    pub fn requests_per_second(mut self, rate: f64) -> Self {
        self.requests_per_second = Some(rate);
        self
    }

    /// Gzips request bodies. Default: on, at level 1 (fast; identify
    /// batches still shrink several times).
    pub fn gzip(mut self, on: bool) -> Self {
        self.gzip_level = on.then_some(DEFAULT_GZIP_LEVEL);
        self
    }

    /// Gzips request bodies at `level` (0-9). Default: 1.
    pub fn gzip_level(mut self, level: u32) -> Self {
        self.gzip_level = Some(level);
        self
    }

    /// Time allowed for one request, connect included. Default: 15 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Attempts per batch, counting the first; `Retry-After` pauses do not
    /// count. At least 1. Default: 10.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.retry.max_attempts = attempts;
        self
    }

    /// Total time one batch may spend on retries, waits included. Default: 10 minutes.
    pub fn retry_budget(mut self, budget: Duration) -> Self {
        self.retry.budget = budget;
        self
    }

    /// Backoff: equal jitter (uniform in the upper half) under a ceiling
    /// that starts at `initial` and doubles up to `max`. Default: 0.5 s up
    /// to 60 s. [`build`](Self::build) refuses an `initial` under 1 ms (a
    /// failing host would be retried in a tight loop) and a `max` under
    /// `initial`.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.retry.initial_backoff = initial;
        self.retry.max_backoff = max;
        self
    }

    /// Default deadline of [`HttpClient::flush`] and
    /// [`HttpClient::close_and_flush`]. Default: 60 s.
    pub fn flush_timeout(mut self, timeout: Duration) -> Self {
        self.flush_timeout = timeout;
        self
    }

    /// How long every request may fail by timeout or network error, with
    /// nothing delivered, before the client calls it an outage: the events
    /// being retried then fail with code `outage` instead of being retried
    /// for hours, and later batches get one attempt each until a request
    /// succeeds. Default: 30 s.
    pub fn outage_after(mut self, bound: Duration) -> Self {
        self.outage_after = bound;
        self
    }

    /// How long a client dropped without
    /// [`close_and_flush`](HttpClient::close_and_flush) keeps delivering what
    /// it queued. Dropping the last clone starts it and waits for it
    /// (except on a single-threaded runtime, whose only thread is never
    /// blocked); a worker on a runtime that shuts down first finishes on a
    /// thread of its own while the runtime drops.
    /// Events not delivered in time are logged as a warning with their count
    /// (and stay in the outbox, if there is one). Default: 5 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Failed events listed one by one in a [`DeliveryReport`]; more are only
    /// counted. Default: 10,000.
    pub fn max_failures_in_report(mut self, events: usize) -> Self {
        self.max_failures_in_report = events;
        self
    }

    /// Calls `hook` with the outcome of every event, on the worker, as soon as
    /// it is known. Keep it quick: it runs between sends. Default: none.
    pub fn on_outcome(mut self, hook: impl Fn(&EventOutcome<'_>) + Send + Sync + 'static) -> Self {
        self.on_outcome = Some(Arc::new(hook));
        self
    }

    /// Runs the worker on a thread of its own instead of the current tokio
    /// runtime, so the client outlives the runtime that built it. Default:
    /// off inside a runtime; a client built outside any runtime always gets
    /// its own thread.
    pub fn own_thread(mut self, on: bool) -> Self {
        self.own_thread = on;
        self
    }

    /// Keeps queued events in a durable outbox (an SQLite file at `path`),
    /// so they survive a crash or a restart: a client built later with the
    /// same path sends what was left, with the original `messageId`s, before
    /// anything new. An event is written when the worker takes it from the
    /// in-memory queue (one transaction per chunk, before it can be sent) and
    /// deleted once Segment answered for it; events abandoned at a
    /// close deadline stay for the next start. Default: no outbox.
    /// Needs the cargo feature `outbox`.
    #[cfg(feature = "outbox")]
    pub fn outbox(mut self, path: impl Into<PathBuf>) -> Self {
        self.outbox = Some(path.into());
        self
    }

    /// Sends nothing: each request body that would be sent is written to
    /// `dir/request-NNNNNN.json` (`.json.gz` with gzip on), numbered in batch
    /// order, or only counted when `dir` is `None`. Batching, validation and
    /// reports work as in a real run, and no write key is needed. Default: off.
    pub fn dry_run(mut self, dir: Option<PathBuf>) -> Self {
        self.dry_run = Some(dir);
        self
    }

    /// Answers every request from `server` instead of the network (model tests).
    #[cfg(test)]
    pub(crate) fn scripted(mut self, server: Arc<crate::scripted::Server>) -> Self {
        self.scripted = Some(server);
        self
    }

    /// Validates the settings and starts the client's background worker.
    ///
    /// # Errors
    /// `missing_write_key` for an empty write key (unless a dry run);
    /// `invalid_config` for a bad host, an out-of-range setting, or a dry-run
    /// directory that cannot be created, naming it.
    pub fn build(self) -> Result<HttpClient, SegmentError> {
        if self.write_key.trim().is_empty() && self.dry_run.is_none() {
            return Err(SegmentError::new(
                Kind::MissingWriteKey,
                "no Segment write key was given",
            ));
        }
        let endpoint = batch_endpoint(&self.host)?;
        let bad = |what: String| SegmentError::new(Kind::InvalidConfig, what);
        if !(1..=MAX_BATCH_EVENTS).contains(&self.batch_size) {
            return Err(bad(format!(
                "batch size must be 1 to {MAX_BATCH_EVENTS}, not {}",
                self.batch_size
            )));
        }
        let encoder = Encoder::new(self.gzip_level);
        let min_bytes = encoder.envelope_bytes() + MAX_EVENT_BYTES;
        if !(min_bytes..=MAX_REQUEST_BYTES).contains(&self.max_batch_bytes) {
            return Err(bad(format!(
                "max batch bytes must be {min_bytes} to {MAX_REQUEST_BYTES}, not {}",
                self.max_batch_bytes
            )));
        }
        if self.max_in_flight == 0 || self.queue_capacity == 0 || self.retry.max_attempts == 0 {
            return Err(bad(
                "max in flight, queue capacity and max attempts must be at least 1".into(),
            ));
        }
        if self.gzip_level.is_some_and(|level| level > 9) {
            return Err(bad("gzip level must be 0 to 9".into()));
        }
        if self
            .requests_per_second
            .is_some_and(|r| !(r.is_finite() && r > 0.0))
        {
            return Err(bad("requests per second must be a positive number".into()));
        }
        if self.flush_interval.is_zero() || self.request_timeout.is_zero() {
            return Err(bad(
                "flush interval and request timeout must be longer than zero".into(),
            ));
        }
        for (name, value) in [
            ("flush interval", self.flush_interval),
            ("request timeout", self.request_timeout),
            ("flush timeout", self.flush_timeout),
            ("shutdown timeout", self.shutdown_timeout),
            ("outage bound", self.outage_after),
            ("retry budget", self.retry.budget),
            ("initial backoff", self.retry.initial_backoff),
            ("max backoff", self.retry.max_backoff),
        ] {
            if value > MAX_SETTING_DURATION {
                return Err(bad(format!(
                    "{name} must be at most 24 hours, not {value:?}"
                )));
            }
        }
        if self.retry.initial_backoff < MIN_BACKOFF {
            return Err(bad(format!(
                "initial backoff must be at least {MIN_BACKOFF:?}, not {:?}: a shorter wait retries a failing host in a tight loop",
                self.retry.initial_backoff
            )));
        }
        if self.retry.max_backoff < self.retry.initial_backoff {
            return Err(bad(format!(
                "max backoff must be at least the initial backoff ({:?}), not {:?}",
                self.retry.initial_backoff, self.retry.max_backoff
            )));
        }
        if self
            .requests_per_second
            .is_some_and(|r| r < 1.0 / MAX_SETTING_DURATION.as_secs_f64())
        {
            return Err(bad(
                "requests per second must allow at least one request a day".into(),
            ));
        }
        if self.max_failures_in_report == 0 {
            return Err(bad("max failures in report must be at least 1".into()));
        }
        #[cfg(feature = "outbox")]
        let outbox = match &self.outbox {
            Some(path) => Some(Arc::new(crate::outbox::Outbox::open(path)?)),
            None => None,
        };
        let mut max_in_flight = self.max_in_flight;
        #[cfg(test)]
        let dry_run = match &self.scripted {
            Some(_) => None,
            None => self.dry_run,
        };
        #[cfg(not(test))]
        let dry_run = self.dry_run;
        let transport = match dry_run {
            Some(dir) => {
                // One body at a time keeps the files in batch order.
                max_in_flight = 1;
                Transport::DryRun(Arc::new(DryRun::new(dir)?))
            }
            None => Transport::Http(HttpTransport::new(
                endpoint,
                &self.write_key,
                self.request_timeout,
                self.max_in_flight,
            )?),
        };
        #[cfg(test)]
        let transport = match &self.scripted {
            Some(server) => Transport::Scripted(Arc::clone(server)),
            None => transport,
        };
        let sender = Arc::new(Sender {
            transport,
            encoder: encoder.clone(),
            policy: self.retry,
            gates: Mutex::new(Gates {
                pause: Pause::default(),
                pacer: self.requests_per_second.map(Pacer::new),
            }),
            health: Mutex::new(Health::new(self.outage_after)),
        });
        let settings = Settings {
            limits: Limits {
                max_events: self.batch_size,
                max_request_bytes: self.max_batch_bytes,
                envelope_bytes: encoder.envelope_bytes(),
            },
            flush_interval: self.flush_interval,
            max_in_flight,
            max_failures_in_report: self.max_failures_in_report,
            shutdown_timeout: self.shutdown_timeout,
            on_outcome: self.on_outcome,
            #[cfg(feature = "outbox")]
            outbox: outbox.clone(),
        };
        let (tx, rx) = mpsc::channel(self.queue_capacity);
        let room = Arc::new(Room::new(self.queue_capacity, crate::room::QUEUE_BYTES));
        let (control, control_rx) = mpsc::unbounded_channel();
        let worker = Worker::new(
            rx,
            Arc::clone(&room),
            control_rx,
            Arc::clone(&sender),
            settings,
        );
        #[cfg(feature = "outbox")]
        let worker = match &outbox {
            Some(outbox) => worker.with_recovered(outbox.load()?),
            None => worker,
        };
        let worker_done = spawn_worker(worker, self.own_thread)?;
        Ok(HttpClient {
            inner: Arc::new(Handle {
                tx,
                room,
                control,
                sender,
                closed: AtomicBool::new(false),
                flush_timeout: self.flush_timeout,
                shutdown_timeout: self.shutdown_timeout,
                worker_done: Mutex::new(worker_done),
            }),
        })
    }
}

/// Chosen with the throughput bench's faulty profile (100k events, 20% 500s,
/// 5% 429s, 50 ms answers): 100 events and 4 in flight took 48.6 s; 500/4
/// 12.3 s; 1,000/4 6.1 s; 500/8 6.3 s; 1,000/8 3.4 s. On the clean 1M run
/// 1,000/8 peaked at 30.6 MB and 1,000/4 at 25.6 MB (target < 32 MB), at the
/// same CPU: 1,000/4 keeps the memory headroom and meets the faulty target.
/// Larger batches cost nothing when traffic is low: a partial batch still
/// goes after the flush interval, and a confirmed call goes at once.
const DEFAULT_BATCH_SIZE: usize = 1_000;
/// See [`DEFAULT_BATCH_SIZE`].
const DEFAULT_MAX_IN_FLIGHT: usize = 4;

/// See [`HttpClientBuilder::shutdown_timeout`].
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest duration any setting takes: longer ones are mistakes (and
/// `Instant + Duration::MAX` overflows).
const MAX_SETTING_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// The shortest first backoff [`HttpClientBuilder::backoff`] accepts.
const MIN_BACKOFF: Duration = Duration::from_millis(1);

/// See [`HttpClientBuilder::outage_after`].
pub(crate) const DEFAULT_OUTAGE_AFTER: Duration = Duration::from_secs(30);

/// Gzip level 1: most of the size win for a fraction of level 6's CPU.
const DEFAULT_GZIP_LEVEL: u32 = 1;

/// Starts the worker on the current runtime, or on a thread of its own,
/// and returns what says that it ended.
fn spawn_worker(
    worker: Worker,
    own_thread: bool,
) -> Result<Option<std::sync::mpsc::Receiver<()>>, SegmentError> {
    let (done_tx, done) = std::sync::mpsc::channel();
    if !own_thread && let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            worker.run().await;
            let _ = done_tx.send(());
        });
        return Ok(Some(done));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            SegmentError::with_source(Kind::Internal, "could not start the client's runtime", e)
        })?;
    std::thread::Builder::new()
        .name("segment-client".into())
        .spawn(move || {
            runtime.block_on(worker.run());
            let _ = done_tx.send(());
        })
        .map_err(|e| {
            SegmentError::with_source(Kind::Internal, "could not start the client's thread", e)
        })?;
    Ok(Some(done))
}
