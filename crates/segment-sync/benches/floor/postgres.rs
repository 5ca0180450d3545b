//! The PostgreSQL floor: one binary `COPY (SELECT ...) TO STDOUT`, its rows
//! decoded in place.
//!
//! Why binary COPY: it is how the CLI reads a table, and the cheapest way
//! tokio-postgres offers to read many rows. A portal (`query_raw`, or a
//! cursor fetched N rows at a time) pays the extended protocol's per-row
//! `DataRow` handling and a `Row` allocation per row, and was measured at
//! about 2.3x the client CPU of binary COPY on this table's shape (README,
//! "PostgreSQL as a source"); text COPY would need unescaping, parsing the
//! server's timestamp text and the number. Binary COPY hands over
//! length-prefixed fields: text is borrowed as it arrives (checked as UTF-8,
//! as it must be to go into JSON), `float8` is 8 big-endian bytes and
//! `timestamptz` microseconds since 2000-01-01, formatted as the CLI formats
//! it (RFC 3339, UTC, fractions only when there are some).
//!
//! One statement is its own snapshot, so the floor opens no transaction (the
//! CLI's `REPEATABLE READ, READ ONLY` one costs two round trips, nothing per
//! row). The connection runs on the same current-thread runtime as the
//! decoding: one thread, as every floor.

use chrono::{DateTime, SecondsFormat};
use futures_util::StreamExt;
use tokio_postgres::NoTls;

use super::{Address, Company, Sink, Traits};
use crate::support::customers::COLUMNS;

/// Microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// `PGCOPY\n\xff\r\n\0`, flags (4 bytes), header extension length (4 bytes).
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
const HEADER_BYTES: usize = 19;

pub fn read(url: &str, table: &str, sink: &mut Sink) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("could not start a tokio runtime");
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .expect("could not connect to PostgreSQL");
        let connection = tokio::spawn(connection);
        let sql = format!(
            "COPY (SELECT {} FROM {table}) TO STDOUT (FORMAT binary)",
            COLUMNS.join(", ")
        );
        let stream = client.copy_out(&sql).await.expect("could not start COPY");
        futures_util::pin_mut!(stream);
        let mut rows = Rows::default();
        while let Some(data) = stream.next().await {
            let data = data.expect("the COPY stream failed");
            rows.feed(&data, sink);
        }
        assert!(rows.ended, "the COPY data ended without its trailer");
        drop(client);
        let _ = connection.await;
    });
}

/// Splits COPY data into rows. The server sends a row per message, but
/// nothing promises it, so a row cut between messages is kept and joined.
#[derive(Default)]
struct Rows {
    header_seen: bool,
    ended: bool,
    /// The start of a row (or of the header) that is not all in yet.
    partial: Vec<u8>,
    fields: Vec<(usize, usize)>,
}

impl Rows {
    fn feed(&mut self, data: &[u8], sink: &mut Sink) {
        if self.partial.is_empty() {
            let used = self.parse(data, sink);
            self.partial.extend_from_slice(&data[used..]);
        } else {
            let mut joined = std::mem::take(&mut self.partial);
            joined.extend_from_slice(data);
            let used = self.parse(&joined, sink);
            joined.drain(..used);
            self.partial = joined;
        }
    }

    /// Handles every whole row in `data`; returns how many bytes it used.
    fn parse(&mut self, data: &[u8], sink: &mut Sink) -> usize {
        let mut at = 0;
        if !self.header_seen {
            if data.len() < HEADER_BYTES {
                return 0;
            }
            assert_eq!(&data[..SIGNATURE.len()], SIGNATURE, "not binary COPY data");
            let extension = u32::from_be_bytes(data[15..19].try_into().expect("4 bytes"));
            at = HEADER_BYTES + extension as usize;
            self.header_seen = true;
        }
        while !self.ended {
            let Some(next) = self.row(data, at) else {
                break;
            };
            if next == at + 2 {
                // The trailer: a field count of -1.
                self.ended = true;
            } else {
                self.identify(data, sink);
            }
            at = next;
        }
        at
    }

    /// Finds the fields of the row at `at`; returns where the next begins,
    /// or `None` when the row is not all in `data`.
    fn row(&mut self, data: &[u8], at: usize) -> Option<usize> {
        let count = i16::from_be_bytes(data.get(at..at + 2)?.try_into().ok()?);
        if count == -1 {
            return Some(at + 2);
        }
        assert_eq!(count as usize, COLUMNS.len(), "a row of another table");
        self.fields.clear();
        let mut p = at + 2;
        for _ in 0..count {
            let len = i32::from_be_bytes(data.get(p..p + 4)?.try_into().ok()?);
            p += 4;
            // The table's columns are NOT NULL.
            let len = usize::try_from(len).expect("a NULL in a NOT NULL column");
            if p + len > data.len() {
                return None;
            }
            self.fields.push((p, p + len));
            p += len;
        }
        Some(p)
    }

    /// The identify event of the row whose fields were just found.
    fn identify(&self, data: &[u8], sink: &mut Sink) {
        let raw = |i: usize| &data[self.fields[i].0..self.fields[i].1];
        let text = |i: usize| std::str::from_utf8(raw(i)).expect("text columns are UTF-8");
        let micros = i64::from_be_bytes(raw(5).try_into().expect("timestamptz is 8 bytes"));
        let created_at = DateTime::from_timestamp_micros(micros + POSTGRES_EPOCH_MICROS)
            .expect("the timestamp is in range")
            .to_rfc3339_opts(SecondsFormat::AutoSi, true);
        let lifetime_value = f64::from_be_bytes(raw(11).try_into().expect("float8 is 8 bytes"));
        let traits = Traits {
            address: Address {
                city: text(6),
                country: text(7),
                postal_code: text(8),
            },
            company: Company { name: text(9) },
            created_at: &created_at,
            email: text(1),
            first_name: text(2),
            last_name: text(3),
            lifetime_value,
            phone: text(4),
            plan: text(10),
        };
        sink.identify(text(0), &traits);
    }
}
