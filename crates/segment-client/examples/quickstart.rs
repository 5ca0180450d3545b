//! Sends the bundled sample customers to a local Segment-compatible receiver
//! through the public API, and shows what the receiver accepted.
//!
//! Needs no Segment account and no network:
//! `cargo run -p segment-client --example quickstart`.
//! Set `SEGMENT_WRITE_KEY` (and `SEGMENT_HOST` or `SEGMENT_REGION`) to send
//! the same customers to a real Segment source instead.

use segment_client::{
    ContractResult, HttpClient, SegmentIdentifyPayload, send_customer_to_segment_with_client,
};
use segment_receiver::{Receiver, ReceiverConfig};

const SAMPLE: &str = include_str!("customers.json");
const LOCAL_KEY: &str = "local-demo-key";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let customers: Vec<SegmentIdentifyPayload> = serde_json::from_str(SAMPLE)?;

    let (client, receiver) = match segment_client::get_segment_client_from_environment() {
        Ok(client) => {
            println!("sending to the Segment source configured in the environment");
            (client, None)
        }
        Err(e) if e.code() == Some(segment_client::codes::MISSING_WRITE_KEY) => {
            let receiver = Receiver::start(ReceiverConfig::new().write_key(LOCAL_KEY)).await?;
            println!(
                "SEGMENT_WRITE_KEY is not set: using a local receiver at {}",
                receiver.url()
            );
            let client = HttpClient::builder(LOCAL_KEY)
                .host(receiver.url())
                .build()?;
            (client, Some(receiver))
        }
        Err(e) => return Err(e.into()),
    };

    for customer in customers {
        let user_id = customer.user_id.clone();
        let result = send_customer_to_segment_with_client(&client, customer).await;
        println!(
            "{user_id:>10}  {}",
            serde_json::to_string(&ContractResult::from(&result))?
        );
    }
    let report = client.close_and_flush().await?;
    println!(
        "delivered {}, failed {}, pending {} in the final flush",
        report.delivered,
        report.failed_count(),
        report.pending.len()
    );

    if let Some(receiver) = receiver {
        let stats = receiver.store().stats();
        println!(
            "receiver accepted {} events in {} requests ({} rejected)",
            stats.accepted, stats.requests, stats.rejected
        );
        for event in receiver.store().events() {
            println!("  {event}");
        }
        receiver.shutdown().await;
    }
    Ok(())
}
