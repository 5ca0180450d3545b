//! `segment-sync demo`: the bundled sample into an in-process receiver.

use std::io::Cursor;

use anyhow::{Context, Result};
use customer_sync::source::{Source, SourceFormat};
use customer_sync::{SyncOptions, SyncRun};
use segment_client::HttpClient;
use segment_receiver::{Receiver, ReceiverConfig};

use crate::Outcome;
use crate::commands::{open_input, resolve_mapping};
use crate::flags::{DemoArgs, SourceArgs};
use crate::summary::print_summary;

/// The sample customers, built into the binary so `demo` works from any directory.
const SAMPLE: &[u8] = include_bytes!("../../../../examples/customers.csv");
const SAMPLE_NAME: &str = "examples/customers.csv";
const DEMO_KEY: &str = "demo-write-key";

pub async fn run(args: DemoArgs) -> Result<Outcome> {
    let receiver = Receiver::start(ReceiverConfig::new().write_key(DEMO_KEY))
        .await
        .context("cannot start the local receiver")?;
    eprintln!(
        "started a local Segment-compatible receiver at {}",
        receiver.url()
    );

    let (source, mapping) = match &args.source {
        Some(path) => open_input(&SourceArgs {
            source: path.clone(),
            format: None,
            mapping: None,
            database: Default::default(),
            call: crate::flags::CallArg::Identify,
        })?,
        None => {
            let mut source =
                Source::from_reader(SAMPLE_NAME, SourceFormat::Csv, Cursor::new(SAMPLE))?;
            let mapping = resolve_mapping(&mut source, None)?;
            (source, mapping)
        }
    };
    let name = source.name().to_owned();
    eprintln!("syncing {name} with the default mapping:");
    eprint!("{}", indent(&mapping.describe()));

    let client = HttpClient::builder(DEMO_KEY)
        .host(receiver.url())
        .batch_size(2_500);
    let report = SyncRun::new(source, mapping, client, SyncOptions::default())
        .run()
        .await?;
    print_summary(&name, &report, None);

    let store = receiver.store();
    let stats = store.stats();
    println!(
        "the receiver accepted {} events in {} request{} ({} rejected, {} duplicates); the first {}:",
        stats.accepted,
        stats.requests,
        if stats.requests == 1 { "" } else { "s" },
        stats.rejected,
        stats.duplicates,
        args.show.min(stats.accepted as usize)
    );
    for event in store.events().iter().take(args.show) {
        println!("{}", serde_json::to_string_pretty(event)?);
    }
    println!(
        "next: `segment-sync receive` runs this receiver on its own; `segment-sync sync FILE` sends to Segment"
    );
    receiver.shutdown().await;
    Ok(if report.is_clean() {
        Outcome::Clean
    } else {
        Outcome::Partial
    })
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("  {line}\n")).collect()
}
