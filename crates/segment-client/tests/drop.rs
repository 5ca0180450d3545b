//! Defect 11: a client dropped without `close_and_flush` still delivers what
//! it queued, within its shutdown timeout. The dropping part runs on a thread
//! (and runtime) of its own, as a short script's `main` would.

use segment_client::{HttpClient, IdentifyParams, Identity};
use segment_receiver::{FaultPlan, Receiver, ReceiverConfig};

const KEY: &str = "test-write-key";

async fn receiver() -> Receiver {
    Receiver::start(
        ReceiverConfig::new()
            .write_key(KEY)
            .faults(FaultPlan::none()),
    )
    .await
    .expect("receiver starts")
}

fn customer(i: usize) -> IdentifyParams {
    IdentifyParams::new(Identity::user(format!("cus_{i}")))
}

/// Runs `script` on a fresh thread, outside any runtime, and waits for it
/// without blocking the test's runtime (which serves the receiver).
async fn on_own_thread(script: impl FnOnce() + Send + 'static) {
    let thread = std::thread::spawn(script);
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_client_and_a_current_thread_runtime_delivers_what_was_queued() {
    let receiver = receiver().await;
    let host = receiver.url();
    on_own_thread(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let client = HttpClient::builder(KEY).host(host).build().unwrap();
            for i in 0..10 {
                client.identify(customer(i)).await.unwrap();
            }
        });
        drop(runtime);
    })
    .await;
    assert_eq!(receiver.store().stats().accepted, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_client_and_a_multi_thread_runtime_delivers_what_was_queued() {
    let receiver = receiver().await;
    let host = receiver.url();
    on_own_thread(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let client = HttpClient::builder(KEY).host(host).build().unwrap();
            for i in 0..10 {
                client.identify(customer(i)).await.unwrap();
            }
        });
        drop(runtime);
    })
    .await;
    assert_eq!(receiver.store().stats().accepted, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_client_built_outside_any_runtime_delivers_what_was_queued() {
    let receiver = receiver().await;
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
    let receiver = receiver().await;
    let host = receiver.url();
    on_own_thread(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
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
