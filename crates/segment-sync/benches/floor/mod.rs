//! The floor: the least a program must do to turn customer records into
//! Segment requests, one file per format.
//!
//! Each format's floor reads the generated file (or, for PostgreSQL, the
//! loaded table as binary COPY), parses it into borrowed structs (serde for
//! JSON, `csv_core` for CSV, the COPY framing for PostgreSQL), builds the identify event
//! the CLI sends for that customer with its default mapping (same keys, same
//! order, same values; a fresh UUID `messageId` and the current `timestamp`),
//! packs the events into batches of at most 2,500 events and 500,000 bytes,
//! and gzips each body at level 1 with reused buffers, on one thread. No
//! network, state, validation or reporting: what is left is the cost of the
//! input and of the bytes Segment needs.

mod csv;
mod json_array;
mod ndjson;
mod postgres;

use std::borrow::Cow;
use std::path::Path;

use chrono::{SecondsFormat, Utc};
use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use serde::{Deserialize, Serialize};

use crate::support::customers::Format;

/// Segment's request limits.
const MAX_BODY_BYTES: usize = 500_000;
const MAX_BATCH_EVENTS: usize = 2_500;
const PREFIX: &[u8] = br#"{"batch":["#;
/// `sentAt` is always `YYYY-MM-DDTHH:MM:SS.mmmZ`.
const SENT_AT_LEN: usize = 24;

/// What one floor run produced, to check it did the whole job.
#[derive(Debug, Default)]
pub struct FloorOutput {
    pub events: u64,
    pub requests: u64,
    pub json_bytes: u64,
    pub gzip_bytes: u64,
    /// The first event's JSON, to check it against the CLI's.
    pub first_event: String,
}

/// What a floor reads.
pub enum Source<'a> {
    /// A generated file.
    File(Format, &'a Path),
    /// A loaded table (`url` with TLS off).
    Table { url: &'a str, table: &'a str },
}

/// Runs the floor over `source`.
pub fn run(source: Source<'_>) -> FloorOutput {
    let mut sink = Sink::new();
    match source {
        Source::File(Format::Csv, path) => csv::read(path, &mut sink),
        Source::File(Format::Ndjson, path) => ndjson::read(path, &mut sink),
        Source::File(Format::JsonArray, path) => json_array::read(path, &mut sink),
        Source::Table { url, table } => postgres::read(url, table, &mut sink),
    }
    sink.finish()
}

/// One customer as the JSON formats hold it, borrowed from the input.
#[derive(Deserialize)]
pub struct JsonCustomer<'a> {
    #[serde(borrow)]
    customer_id: Cow<'a, str>,
    #[serde(borrow)]
    email: Cow<'a, str>,
    #[serde(borrow)]
    first_name: Cow<'a, str>,
    #[serde(borrow)]
    last_name: Cow<'a, str>,
    #[serde(borrow)]
    phone: Cow<'a, str>,
    #[serde(borrow)]
    created_at: Cow<'a, str>,
    #[serde(borrow)]
    city: Cow<'a, str>,
    #[serde(borrow)]
    country: Cow<'a, str>,
    #[serde(borrow)]
    postal_code: Cow<'a, str>,
    #[serde(borrow)]
    company_name: Cow<'a, str>,
    #[serde(borrow)]
    plan: Cow<'a, str>,
    lifetime_value: f64,
}

impl<'a> JsonCustomer<'a> {
    fn traits(&'a self) -> (&'a str, Traits<'a>) {
        (
            &self.customer_id,
            Traits {
                address: Address {
                    city: &self.city,
                    country: &self.country,
                    postal_code: &self.postal_code,
                },
                company: Company {
                    name: &self.company_name,
                },
                created_at: &self.created_at,
                email: &self.email,
                first_name: &self.first_name,
                last_name: &self.last_name,
                lifetime_value: self.lifetime_value,
                phone: &self.phone,
                plan: &self.plan,
            },
        )
    }
}

/// The traits the CLI's default mapping makes of a customer, keys in the
/// order it sends them (sorted, as its trait map is).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Traits<'a> {
    address: Address<'a>,
    company: Company<'a>,
    created_at: &'a str,
    email: &'a str,
    first_name: &'a str,
    last_name: &'a str,
    /// A custom trait; the CLI sends it as a number from every format (from
    /// CSV because its sampled column type is a number).
    #[serde(rename = "lifetime_value")]
    lifetime_value: f64,
    phone: &'a str,
    plan: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Address<'a> {
    city: &'a str,
    country: &'a str,
    postal_code: &'a str,
}

#[derive(Serialize)]
struct Company<'a> {
    name: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    r#type: &'static str,
    message_id: &'a str,
    timestamp: &'a str,
    user_id: &'a str,
    traits: &'a Traits<'a>,
}

/// Events in, gzipped batch bodies out, every buffer reused.
pub struct Sink {
    event: Vec<u8>,
    body: Vec<u8>,
    batch_events: usize,
    suffix_bytes: usize,
    context: Vec<u8>,
    compress: Compress,
    gzipped: Vec<u8>,
    output: FloorOutput,
}

impl Sink {
    fn new() -> Sink {
        let context = br#"{"library":{"name":"segment-sync","version":"0.1.0"}}"#.to_vec();
        let suffix_bytes = br#"],"sentAt":"","context":}"#.len() + SENT_AT_LEN + context.len();
        let mut body = Vec::with_capacity(MAX_BODY_BYTES);
        body.extend_from_slice(PREFIX);
        Sink {
            event: Vec::with_capacity(1024),
            body,
            batch_events: 0,
            suffix_bytes,
            context,
            // Raw deflate; the gzip header is added to the count, the trailer
            // (a CRC-32 of the body) is computed, as a request needs it.
            compress: Compress::new(Compression::new(1), false),
            gzipped: Vec::with_capacity(MAX_BODY_BYTES),
            output: FloorOutput::default(),
        }
    }

    /// Builds and batches the identify event of `user_id` with `traits`.
    fn identify(&mut self, user_id: &str, traits: &Traits<'_>) {
        let mut message_id = [0u8; 36];
        let message_id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes())
            .into_uuid()
            .hyphenated()
            .encode_lower(&mut message_id);
        let timestamp = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let event = Event {
            r#type: "identify",
            message_id,
            timestamp: &timestamp,
            user_id,
            traits,
        };
        self.event.clear();
        serde_json::to_writer(&mut self.event, &event).expect("writing to a Vec cannot fail");
        if self.output.events == 0 {
            self.output.first_event = String::from_utf8_lossy(&self.event).into_owned();
        }
        let comma = usize::from(self.batch_events > 0);
        if self.batch_events == MAX_BATCH_EVENTS
            || self.body.len() + comma + self.event.len() + self.suffix_bytes > MAX_BODY_BYTES
        {
            self.send();
        }
        if self.batch_events > 0 {
            self.body.push(b',');
        }
        self.body.extend_from_slice(&self.event);
        self.batch_events += 1;
        self.output.events += 1;
    }

    /// Closes the envelope and gzips the body, as if sending it.
    fn send(&mut self) {
        if self.batch_events == 0 {
            return;
        }
        let sent_at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        self.body.extend_from_slice(br#"],"sentAt":""#);
        self.body.extend_from_slice(sent_at.as_bytes());
        self.body.extend_from_slice(br#"","context":"#);
        self.body.extend_from_slice(&self.context);
        self.body.push(b'}');
        assert!(self.body.len() <= MAX_BODY_BYTES, "a batch over the limit");
        self.compress.reset();
        self.gzipped.clear();
        loop {
            let consumed = self.compress.total_in() as usize;
            let status = self
                .compress
                .compress_vec(
                    &self.body[consumed..],
                    &mut self.gzipped,
                    FlushCompress::Finish,
                )
                .expect("deflate cannot fail on a Vec");
            if status == Status::StreamEnd {
                break;
            }
            self.gzipped.reserve(64 * 1024);
        }
        // The trailer: the body's CRC-32 and length (the client computes
        // the same; a gzip body without it is not one). The 10-byte header
        // is only counted.
        let mut crc = Crc::new();
        crc.update(&self.body);
        self.gzipped.extend_from_slice(&crc.sum().to_le_bytes());
        self.gzipped.extend_from_slice(&crc.amount().to_le_bytes());
        self.output.requests += 1;
        self.output.json_bytes += self.body.len() as u64;
        self.output.gzip_bytes += self.gzipped.len() as u64 + 10;
        self.body.truncate(PREFIX.len());
        self.batch_events = 0;
    }

    fn finish(mut self) -> FloorOutput {
        self.send();
        self.output
    }
}
