//! Defect 11: a client dropped without `close_and_flush` still delivers what
//! it queued, within its shutdown timeout. The dropping part runs on a thread
//! (and runtime) of its own, as a short script's `main` would.

mod common;

use common::{KEY, customer, receiver};
use segment_client::HttpClient;
use segment_receiver::FaultPlan;

/// Runs `script` on a fresh thread, outside any runtime, and waits for it
/// without blocking the test's runtime (which serves the receiver).
async fn on_own_thread(script: impl FnOnce() + Send + 'static) {
    let thread = std::thread::spawn(script);
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .unwrap()
        .unwrap();
}

/// A two-worker multi-thread runtime, as a script's `#[tokio::main]` makes.
fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Builds a client inside `runtime`, queues ten identifies, then drops the
/// client (without flushing) and the runtime.
fn queue_ten_then_drop_client_and_runtime(runtime: tokio::runtime::Runtime, host: String) {
    runtime.block_on(async {
        let client = HttpClient::builder(KEY).host(host).build().unwrap();
        for i in 0..10 {
            client.identify(customer(i)).await.unwrap();
        }
    });
    drop(runtime);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_client_and_a_current_thread_runtime_delivers_what_was_queued() {
    let receiver = receiver(FaultPlan::none()).await;
    let host = receiver.url();
    on_own_thread(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        queue_ten_then_drop_client_and_runtime(runtime, host);
    })
    .await;
    assert_eq!(receiver.store().stats().accepted, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_client_and_a_multi_thread_runtime_delivers_what_was_queued() {
    let receiver = receiver(FaultPlan::none()).await;
    let host = receiver.url();
    on_own_thread(move || {
        queue_ten_then_drop_client_and_runtime(multi_thread_runtime(), host);
    })
    .await;
    assert_eq!(receiver.store().stats().accepted, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_client_built_outside_any_runtime_delivers_what_was_queued() {
    let receiver = receiver(FaultPlan::none()).await;
    let host = receiver.url();
    on_own_thread(move || {
        let client = HttpClient::builder(KEY).host(host).build().unwrap();
        for i in 0..10 {
            client.identify_blocking(customer(i)).unwrap();
        }
        drop(client);
    })
    .await;
    assert_eq!(receiver.store().stats().accepted, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_an_own_thread_client_inside_a_multi_thread_runtime_waits_for_delivery() {
    let receiver = receiver(FaultPlan::none()).await;
    let host = receiver.url();
    on_own_thread(move || {
        let runtime = multi_thread_runtime();
        runtime.block_on(async {
            let client = HttpClient::builder(KEY)
                .host(host)
                .own_thread(true)
                .build()
                .unwrap();
            for i in 0..10 {
                client.identify(customer(i)).await.unwrap();
            }
            // Dropped inside the runtime, from a task: the drop may not block
            // a worker thread outright, but it must still wait for delivery.
            tokio::spawn(async move { drop(client) }).await.unwrap();
        });
    })
    .await;
    assert_eq!(receiver.store().stats().accepted, 10);
}
