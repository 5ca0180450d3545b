//! Helpers shared by the client's end-to-end tests: the real receiver on
//! loopback and a client builder pointed at it.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use segment_client::{HttpClient, HttpClientBuilder, IdentifyParams, Identity};
use segment_receiver::{FaultPlan, Receiver, ReceiverConfig};

pub const KEY: &str = "test-write-key";

/// The real receiver on 127.0.0.1:0, answering with `faults`.
pub async fn receiver(faults: FaultPlan) -> Receiver {
    Receiver::start(ReceiverConfig::new().write_key(KEY).faults(faults))
        .await
        .expect("receiver starts")
}

/// A client builder with the test key, sending to `receiver`.
pub fn client(receiver: &Receiver) -> HttpClientBuilder {
    HttpClient::builder(KEY).host(receiver.url())
}

/// An identify of user `cus_{i}` with no traits.
pub fn customer(i: usize) -> IdentifyParams {
    IdentifyParams::new(Identity::user(format!("cus_{i}")))
}
