//! An in-memory [`SegmentClient`] for your own tests.

use std::sync::{Mutex, MutexGuard, PoisonError};

use serde_json::Value;

use crate::calls::Message;
use crate::client::{BoxFuture, SegmentClient};
use crate::error::{Kind, SegmentError};
use crate::message::{Event, IdentifyParams, prepare_message};
use crate::report::{DeliveryReport, EventRef};

/// A [`SegmentClient`] that validates like the real one and records what it
/// was given instead of sending it.
///
/// Flushes "deliver" everything queued, or fail it with a chosen HTTP status
/// (see [`fail_with_status`](Self::fail_with_status)) so you can test your
/// error paths. It keeps every event, so it is meant for tests, not for
/// production volumes.
///
/// # Example
/// ```
/// use segment_client::{InMemoryClient, IdentifyParams, Identity, SegmentClient};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let client = InMemoryClient::new();
/// client.identify(IdentifyParams::new(Identity::user("cus_1"))).await.unwrap();
/// client.fail_with_status(Some(503));
/// client.identify(IdentifyParams::new(Identity::user("cus_2"))).await.unwrap();
/// let report = client.flush().await.unwrap();
/// assert_eq!((report.delivered, report.failed_count()), (0, 2));
/// assert_eq!(client.events()[0]["userId"], "cus_1");
/// # });
/// ```
#[derive(Debug, Default)]
pub struct InMemoryClient {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    messages: Vec<Message>,
    events: Vec<Event>,
    queued: Vec<usize>,
    fail_status: Option<u16>,
    flushes: usize,
    closed: bool,
}

impl InMemoryClient {
    /// An empty client that delivers everything.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// From now on, flushes fail the queued events as if Segment answered
    /// `status`; `None` makes them succeed again.
    pub fn fail_with_status(&self, status: Option<u16>) {
        self.state().fail_status = status;
    }

    /// The parameters of every accepted `identify` call, in order.
    pub fn calls(&self) -> Vec<IdentifyParams> {
        self.state()
            .messages
            .iter()
            .filter_map(|message| match message {
                Message::Identify(params) => Some(params.clone()),
                _ => None,
            })
            .collect()
    }

    /// Every accepted call of any type (identify, track, group, alias, page,
    /// screen), in order.
    pub fn messages(&self) -> Vec<Message> {
        self.state().messages.clone()
    }

    /// Every accepted event in Segment's wire form, with its generated
    /// `messageId` and `timestamp`.
    pub fn events(&self) -> Vec<Value> {
        self.state()
            .events
            .iter()
            .map(|e| serde_json::from_slice(&e.json).expect("prepared events are JSON"))
            .collect()
    }

    /// How many times `flush` or `close_and_flush` was called.
    pub fn flush_count(&self) -> usize {
        self.state().flushes
    }

    fn flush_now(&self, close: bool) -> Result<DeliveryReport, SegmentError> {
        let mut state = self.state();
        if state.closed {
            return if close {
                Ok(DeliveryReport::default())
            } else {
                Err(SegmentError::new(
                    Kind::ClientClosed,
                    "the client is closed",
                ))
            };
        }
        state.flushes += 1;
        state.closed = close;
        let mut report = DeliveryReport::default();
        let queued = std::mem::take(&mut state.queued);
        for index in queued {
            let event = EventRef::from(&state.events[index]);
            match state.fail_status {
                Some(status) => report.record_failure(
                    event,
                    SegmentError::with_status(
                        Kind::HttpStatus,
                        status,
                        format!("segment answered {status}"),
                    ),
                    usize::MAX,
                ),
                None => report.delivered += 1,
            }
        }
        Ok(report)
    }
}

impl SegmentClient for InMemoryClient {
    fn identify(&self, params: IdentifyParams) -> BoxFuture<'_, Result<(), SegmentError>> {
        self.send(Message::Identify(params))
    }

    fn send(&self, message: Message) -> BoxFuture<'_, Result<(), SegmentError>> {
        Box::pin(async move {
            let event = prepare_message(message.clone())?;
            let mut state = self.state();
            if state.closed {
                return Err(SegmentError::new(
                    Kind::ClientClosed,
                    "the client is closed",
                ));
            }
            state.messages.push(message);
            let index = state.events.len();
            state.events.push(event);
            state.queued.push(index);
            Ok(())
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<DeliveryReport, SegmentError>> {
        Box::pin(async move { self.flush_now(false) })
    }

    fn close_and_flush(&self) -> BoxFuture<'_, Result<DeliveryReport, SegmentError>> {
        Box::pin(async move { self.flush_now(true) })
    }
}
