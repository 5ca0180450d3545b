//! `preview` and `mapping --print`: see what would be sent, send nothing.

use std::io::Write;

use anyhow::Result;
use segment_client::{InMemoryClient, SegmentClient};

use crate::Outcome;
use crate::commands::open_input;
use crate::flags::{MappingArgs, PreviewArgs};

/// Prints the first payloads exactly as the client would serialise them.
pub async fn preview(args: &PreviewArgs) -> Result<Outcome> {
    let (source, mapping) = open_input(&args.input)?;
    // The in-memory client validates like the real one and keeps the wire form.
    let client = InMemoryClient::new();
    let mut stdout = std::io::stdout().lock();
    let mut problems = 0;
    for item in source.take(args.count) {
        let outcome = item
            .and_then(|record| mapping.apply(&record))
            .map_err(|e| e.to_string());
        let outcome = match outcome {
            Ok(mapped) => client
                .send(mapped.into_message())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                let event = client.events().pop().unwrap_or_default();
                writeln!(stdout, "{}", serde_json::to_string_pretty(&event)?)?;
            }
            Err(message) => {
                problems += 1;
                eprintln!("invalid: {message}");
            }
        }
    }
    Ok(if problems == 0 {
        Outcome::Clean
    } else {
        Outcome::Partial
    })
}

/// Prints the mapping that applies to the source's columns.
pub fn mapping(args: &MappingArgs) -> Result<Outcome> {
    let (_, mapping) = open_input(&args.input)?;
    let text = if args.toml {
        mapping.to_toml()
    } else {
        mapping.describe()
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        writeln!(stdout)?;
    }
    Ok(Outcome::Clean)
}
