//! Room in the queue between the client's callers and its worker, counted
//! in bytes as well as entries.
//!
//! The channel bounds its entries (the builder's `queue_capacity`), but an
//! entry may be one event of up to 32 KB or a bulk chunk of many: 10,000
//! entries of 10 KB held 260 MB while a slow server kept the queue full.
//! So every caller takes room for what it queues before queueing it, and
//! the worker gives it back as it takes entries off the queue. The waits
//! are first come, first served, for async callers and blocking ones alike.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use tokio::sync::{Semaphore, SemaphorePermit, TryAcquireError};

use crate::message::Event;
use crate::worker::Task;

/// The most bytes of queued events, however they were queued. Events under
/// 1.6 KB meet the count (10,000 by default) first.
pub(crate) const QUEUE_BYTES: usize = 16 << 20;

/// What a queued event holds: its JSON buffer. It does not change while
/// the event is queued, so what is taken is what is given back.
pub(crate) fn queued_bytes(event: &Event) -> usize {
    event.json.capacity()
}

/// Room for queued events, shared by the client's handles and its worker.
pub(crate) struct Room {
    /// Events inside bulk entries ([`Task::Events`]): the channel bounds
    /// entries, this bounds the events in them to the same capacity.
    bulk_events: Semaphore,
    /// Bytes of every queued event.
    bytes: Semaphore,
    capacity: usize,
    capacity_bytes: usize,
}

/// Room taken for an entry not queued yet. Dropped, it goes back (the
/// caller stopped waiting, or the queue was closed); once the entry is on
/// the queue, [`queued`](Self::queued) leaves it for the worker to give back.
#[must_use]
pub(crate) struct Taken<'a>(SemaphorePermit<'a>, SemaphorePermit<'a>);

impl Taken<'_> {
    /// The entry is on the queue: the worker gives the room back.
    pub fn queued(self) {
        self.0.forget();
        self.1.forget();
    }
}

/// Why room could not be taken at once.
pub(crate) enum NoRoom {
    Full,
    Closed,
}

impl Room {
    pub fn new(capacity: usize, capacity_bytes: usize) -> Self {
        // A permit count is a u32 per call.
        let (capacity, capacity_bytes) = (
            capacity.min(u32::MAX as usize),
            capacity_bytes.min(u32::MAX as usize),
        );
        Self {
            bulk_events: Semaphore::new(capacity),
            bytes: Semaphore::new(capacity_bytes),
            capacity,
            capacity_bytes,
        }
    }

    /// The most events one bulk entry may hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The most bytes of events one entry may hold, unless it is one event.
    pub fn capacity_bytes(&self) -> usize {
        self.capacity_bytes
    }

    /// What an entry costs, in bulk events and bytes. An entry over the
    /// whole room (one event) takes all of it, so it waits for an empty
    /// queue instead of forever.
    fn cost(&self, task: &Task) -> (u32, u32) {
        let one = |event: &Event| (0, queued_bytes(event));
        let (events, bytes) = match task {
            Task::Event(event, _) | Task::Confirm(event, _) => one(event),
            Task::Events(events) => (events.len(), events.iter().map(queued_bytes).sum()),
            Task::Flush { .. } => (0, 0),
        };
        let fit = |n: usize, most: usize| u32::try_from(n.min(most)).unwrap_or(u32::MAX);
        (fit(events, self.capacity), fit(bytes, self.capacity_bytes))
    }

    /// Takes room for `task`, waiting while there is not enough; `None`
    /// once the worker is gone.
    pub async fn take(&self, task: &Task) -> Option<Taken<'_>> {
        // Room there now is taken without a wait, which would also spend
        // the task's scheduling budget and yield to the worker more often.
        match self.try_take(task) {
            Err(NoRoom::Full) => {}
            now => return now.ok(),
        }
        let (events, bytes) = self.cost(task);
        let events = self.bulk_events.acquire_many(events).await.ok()?;
        let bytes = self.bytes.acquire_many(bytes).await.ok()?;
        Some(Taken(events, bytes))
    }

    /// Takes room for `task` if there is enough now.
    pub fn try_take(&self, task: &Task) -> Result<Taken<'_>, NoRoom> {
        let no_room = |error| match error {
            TryAcquireError::NoPermits => NoRoom::Full,
            TryAcquireError::Closed => NoRoom::Closed,
        };
        let (events, bytes) = self.cost(task);
        let events = self.bulk_events.try_acquire_many(events).map_err(no_room)?;
        let bytes = self.bytes.try_acquire_many(bytes).map_err(no_room)?;
        Ok(Taken(events, bytes))
    }

    /// [`take`](Self::take), blocking this thread (outside any runtime).
    ///
    /// # Panics
    /// When it would have to wait on a thread that runs async tasks, as
    /// tokio's own blocking calls do: the worker that gives room back may
    /// run on that very thread.
    pub fn take_blocking(&self, task: &Task) -> Option<Taken<'_>> {
        match self.try_take(task) {
            Err(NoRoom::Full) => {}
            now => return now.ok(),
        }
        // tokio's check, which tells a runtime's own threads from its
        // blocking pool's (where blocking is fine): a receive whose sender
        // is gone returns at once, or panics inside a runtime.
        let (sender, receiver) = tokio::sync::oneshot::channel::<()>();
        drop(sender);
        let _ = receiver.blocking_recv();
        block_on(self.take(task))
    }

    /// Gives back the room `task` took: the worker has taken it off the queue.
    pub fn give(&self, task: &Task) {
        let (events, bytes) = self.cost(task);
        self.bulk_events.add_permits(events as usize);
        self.bytes.add_permits(bytes as usize);
    }

    /// No more room will be given: every caller waiting for it is told.
    pub fn close(&self) {
        self.bulk_events.close();
        self.bytes.close();
    }
}

/// Runs `future` on this thread, parked between polls: how a caller outside
/// any runtime waits for room (tokio's own `block_on` for such callers is
/// not public, and this needs no other crate).
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::client::{HttpClient, PreparedEvent};
    use crate::error::SegmentError;
    use crate::message::{IdentifyParams, Identity};
    use crate::scripted::{Answer, Server};

    fn event(bytes: usize) -> Event {
        let event = Event {
            message_id: "m".to_owned(),
            identity: Identity::user("u"),
            json: vec![b' '; bytes],
            tag: 0,
        };
        assert_eq!(queued_bytes(&event), bytes);
        event
    }

    fn bulk(sizes: &[usize]) -> Task {
        Task::Events(sizes.iter().map(|&bytes| event(bytes)).collect())
    }

    fn free(room: &Room) -> (usize, usize) {
        (
            room.bulk_events.available_permits(),
            room.bytes.available_permits(),
        )
    }

    #[test]
    fn room_is_taken_and_given_back_by_events_and_bytes() {
        let room = Room::new(10, 100);
        let two = bulk(&[30, 30]);
        room.take_blocking(&two).unwrap().queued();
        assert_eq!(free(&room), (8, 40));
        room.give(&two);
        assert_eq!(free(&room), (10, 100));
        // One event counts its bytes only: the channel counts the entry.
        let one = Task::Event(event(30), None);
        room.take_blocking(&one).unwrap().queued();
        assert_eq!(free(&room), (10, 70));
        room.give(&one);
        // One event over the whole room takes all of it, and gives it all back.
        let big = bulk(&[500]);
        room.take_blocking(&big).unwrap().queued();
        assert_eq!(free(&room), (9, 0));
        assert!(matches!(room.try_take(&one), Err(NoRoom::Full)));
        room.give(&big);
        assert_eq!(free(&room), (10, 100));
        // Room taken and dropped before queueing goes back.
        drop(room.take_blocking(&two).unwrap());
        assert_eq!(free(&room), (10, 100));
        room.close();
        assert!(room.take_blocking(&one).is_none(), "closed");
    }

    #[test]
    fn a_blocked_taker_wakes_when_room_is_given_back() {
        let room = Arc::new(Room::new(10, 100));
        let all = bulk(&[100]);
        room.take_blocking(&all).unwrap().queued();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let room = Arc::clone(&room);
            std::thread::spawn(move || {
                // Kept, as if queued: 40 bytes stay free.
                let taken = room.take_blocking(&Task::Event(event(60), None));
                tx.send(taken.map(Taken::queued).is_some()).unwrap();
            })
        };
        // Time for the waiter to park; if it has not, it takes the room
        // without waiting and the test still holds.
        std::thread::sleep(std::time::Duration::from_millis(100));
        room.give(&all);
        assert_eq!(rx.recv(), Ok(true), "the waiter got its room");
        waiter.join().unwrap();
        // Closed while waiting: the waiter is told.
        let waiter = {
            let room = Arc::clone(&room);
            std::thread::spawn(move || room.take_blocking(&bulk(&[100])).is_none())
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        room.close();
        assert!(waiter.join().unwrap(), "a closed room wakes its waiters");
    }

    /// An identify of about 30 KB.
    fn big_identify(i: usize) -> IdentifyParams {
        let mut context = serde_json::Map::new();
        context.insert("note".into(), "x".repeat(30_000).into());
        IdentifyParams::new(Identity::user(format!("u{i}"))).with_context(context)
    }

    /// A client whose server never answers within the test.
    fn hung_client() -> HttpClient {
        let hang = Duration::from_secs(3600);
        let server = Server::new(vec![Answer::Timeout], Duration::ZERO, hang);
        HttpClient::builder("k")
            .scripted(Arc::new(server))
            .gzip(false)
            .max_in_flight(1)
            .request_timeout(hang)
            .build()
            .unwrap()
    }

    /// What the worker itself may hold beyond the queue when events come
    /// one at a time: a batch in flight, one ready, one being filled, and
    /// one chunk of entries taken off the queue. (A bulk entry taken off
    /// the queue may hold 16 MB by itself.)
    const HELD_BY_WORKER: usize =
        3 * crate::batcher::MAX_REQUEST_BYTES + crate::worker::RECV_CHUNK * 32 * 1024;

    #[tokio::test(start_paused = true)]
    async fn big_events_queued_one_at_a_time_wait_for_room_in_bytes() {
        let client = hung_client();
        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let producer = {
            let (client, queued) = (client.clone(), Arc::clone(&queued));
            tokio::spawn(async move {
                for i in 0..3_000 {
                    client.identify(big_identify(i)).await.unwrap();
                    queued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
        };
        // The producer runs until the queue has no room; the server never answers.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let queued = queued.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            queued * 30_000 <= QUEUE_BYTES + HELD_BY_WORKER,
            "{queued} events of 30 KB were queued against a server that never answered"
        );
        assert!(!producer.is_finished(), "the producer waits for room");
        producer.abort();
        close(&client).await;
    }

    /// Closes at once, so that nothing is left to a real-time rescue.
    async fn close(client: &HttpClient) {
        let report = client.close_and_flush_with_timeout(Duration::ZERO).await;
        assert_eq!(report.unwrap().delivered, 0, "the server never answered");
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "Cannot block the current thread")]
    async fn a_blocking_call_inside_a_runtime_panics_rather_than_waits_for_room() {
        // Waiting here would keep the worker, on this very thread, from
        // ever giving room back.
        let client = hung_client();
        client
            .room()
            .take(&bulk(&[QUEUE_BYTES]))
            .await
            .unwrap()
            .queued();
        let _ = client.identify_blocking(big_identify(0));
    }

    #[tokio::test(start_paused = true)]
    async fn every_way_of_queueing_one_event_waits_for_room_in_bytes() {
        let client = hung_client();
        // Every byte of room taken (the channel itself has room for 10,000).
        let hog = bulk(&[QUEUE_BYTES]);
        client.room().take(&hog).await.unwrap().queued();
        let waits = |what: &str, result: Result<Result<(), SegmentError>, _>| {
            assert!(result.is_err(), "{what} did not wait for room: {result:?}");
        };
        let second = Duration::from_secs(1);
        let identify = client.identify(big_identify(0));
        waits("identify", tokio::time::timeout(second, identify).await);
        let prepared = PreparedEvent::new(big_identify(1)).unwrap();
        let queue_prepared = client.queue_prepared(prepared);
        waits(
            "queue_prepared",
            tokio::time::timeout(second, queue_prepared).await,
        );
        let error = client.try_identify(big_identify(2)).unwrap_err();
        assert!(error.is_queue_full(), "{error:?}");
        // What gave up waiting gave back what it had taken: all the room
        // is free once the hog's is given back.
        client.room().give(&hog);
        assert_eq!(free(client.room()), (10_000, QUEUE_BYTES));
        client.identify(big_identify(3)).await.unwrap();
        close(&client).await;
    }
}
