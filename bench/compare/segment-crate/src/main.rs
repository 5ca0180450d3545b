//! The comparison's `segment` crate driver: reads the generated NDJSON and
//! pushes an identify per customer (the traits the segment-sync CLI's default
//! mapping makes) through the crate's `AutoBatcher`, then flushes. A failed
//! request loses its batch (the crate does not retry); it is counted and the
//! run goes on. Usage: compare-segment-crate PATH (SEGMENT_HOST,
//! SEGMENT_WRITE_KEY).

use std::fs::File;
use std::io::{BufRead, BufReader};

use segment::message::{Identify, User};
use segment::{AutoBatcher, Batcher, HttpClient};
use serde_json::{Value, json};

#[tokio::main]
async fn main() {
    let path = std::env::args().nth(1).expect("usage: compare-segment-crate PATH");
    let write_key = std::env::var("SEGMENT_WRITE_KEY").unwrap_or_else(|_| "compare".into());
    let host = std::env::var("SEGMENT_HOST").expect("SEGMENT_HOST is set");
    let client = HttpClient::new(reqwest::Client::new(), host);
    let mut batcher = AutoBatcher::new(client, Batcher::new(None), write_key);
    let mut errors = 0u64;
    for line in BufReader::new(File::open(path).expect("could not open the input")).lines() {
        let line = line.expect("could not read the input");
        let c: Value = serde_json::from_str(&line).expect("a customer per line");
        let identify = Identify {
            user: User::UserId {
                user_id: c["customer_id"].as_str().unwrap_or_default().to_owned(),
            },
            traits: json!({
                "address": {"city": c["city"], "country": c["country"], "postalCode": c["postal_code"]},
                "company": {"name": c["company_name"]},
                "createdAt": c["created_at"],
                "email": c["email"],
                "firstName": c["first_name"],
                "lastName": c["last_name"],
                "lifetime_value": c["lifetime_value"],
                "phone": c["phone"],
                "plan": c["plan"],
            }),
            ..Default::default()
        };
        if batcher.push(identify).await.is_err() {
            errors += 1;
        }
    }
    if batcher.flush().await.is_err() {
        errors += 1;
    }
    println!("failed {errors}");
}
