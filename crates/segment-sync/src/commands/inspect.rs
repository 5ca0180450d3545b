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
        // With `[events]`, what a first sync sends: the identify (unless
        // `identify = false`) and the `added` track.
        let events = mapping.events();
        let outcome = match outcome {
            Ok(mapped) => {
                let track = events.and_then(|events| events.added_track(&mapped));
                let mut sent = Ok(0);
                if events.is_none_or(|events| events.identify) {
                    sent = client.send(mapped.into_message()).await.map(|()| 1);
                }
                if let (Ok(count), Some(track)) = (&sent, track) {
                    sent = client.send(track.into()).await.map(|()| count + 1);
                }
                sent.map_err(|e| e.to_string())
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(count) => {
                let sent = client.events();
                for event in &sent[sent.len() - count..] {
                    writeln!(stdout, "{}", serde_json::to_string_pretty(event)?)?;
                }
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
