//! The comparison's segment-sync library driver, and its input generator.
//!
//! `compare-library generate N PATH` writes N generated customers (the
//! benches' generator, so every client gets the same file), as NDJSON, or as
//! CSV or a JSON array when PATH ends in `.csv` or `.json`.
//! `compare-library send PATH` reads that NDJSON and calls
//! `HttpClient::identify` for each customer with typed traits, as an
//! application would, then `close_and_flush`; `SEGMENT_HOST` and
//! `SEGMENT_WRITE_KEY` say where. It prints the delivery report's counts.
//! Built by `bench/compare/run.sh` as an example of the `segment-sync` crate.

#[path = "../../../crates/segment-sync/benches/support/customers.rs"]
#[allow(dead_code)]
mod customers;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use segment_client::{Address, Company, HttpClient, IdentifyParams, Identity, UserTraits};
use serde::Deserialize;

#[derive(Deserialize)]
struct Customer {
    customer_id: String,
    email: String,
    first_name: String,
    last_name: String,
    phone: String,
    created_at: DateTime<Utc>,
    city: String,
    country: String,
    postal_code: String,
    company_name: String,
    plan: String,
    lifetime_value: f64,
}

impl Customer {
    fn into_params(self) -> IdentifyParams {
        let mut traits = UserTraits {
            address: Some(Address {
                city: Some(self.city),
                country: Some(self.country),
                postal_code: Some(self.postal_code),
                ..Address::default()
            }),
            company: Some(Company {
                name: Some(self.company_name),
                ..Company::default()
            }),
            created_at: Some(self.created_at),
            email: Some(self.email),
            first_name: Some(self.first_name),
            last_name: Some(self.last_name),
            phone: Some(self.phone),
            ..UserTraits::default()
        };
        traits.custom.insert("plan".into(), self.plan.into());
        traits
            .custom
            .insert("lifetime_value".into(), self.lifetime_value.into());
        IdentifyParams::new(Identity::user(self.customer_id)).with_traits(traits)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["generate", rows, path] => {
            let rows = rows.parse().expect("N is a whole number");
            let path = Path::new(path);
            let dir = path.parent().expect("PATH has a directory");
            let format = path
                .extension()
                .and_then(|extension| customers::Format::from_extension(extension.to_str()?))
                .unwrap_or(customers::Format::Ndjson);
            let input = customers::generate(dir, format, rows);
            std::fs::rename(&input.path, path).expect("could not move the generated file");
            ExitCode::SUCCESS
        }
        ["send", path] => send(Path::new(path)),
        _ => {
            eprintln!("usage: compare-library generate N PATH | send PATH");
            ExitCode::from(2)
        }
    }
}

#[tokio::main]
async fn send(path: &Path) -> ExitCode {
    let write_key = std::env::var("SEGMENT_WRITE_KEY").unwrap_or_else(|_| "compare".into());
    let mut builder = HttpClient::builder(write_key);
    if let Ok(host) = std::env::var("SEGMENT_HOST") {
        builder = builder.host(host);
    }
    let client = builder.build().expect("the client builds");
    let input = BufReader::new(File::open(path).expect("could not open the input"));
    let mut refused = 0u64;
    for line in input.lines() {
        let line = line.expect("could not read the input");
        let customer: Customer = serde_json::from_str(&line).expect("a customer per line");
        if client.identify(customer.into_params()).await.is_err() {
            refused += 1;
        }
    }
    let report = client.close_and_flush().await.expect("close_and_flush");
    println!(
        "delivered {} failed {} pending {} refused {refused}",
        report.delivered,
        report.failed_count(),
        report.pending.len()
    );
    if report.is_complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
