//! The CSV floor: `csv_core` straight into reused buffers, fields borrowed
//! from them by the header's column positions.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use csv_core::{ReadRecordResult, Reader};

use super::{Address, Company, Sink, Traits};
use crate::support::customers::COLUMNS;

pub fn read(path: &Path, sink: &mut Sink) {
    let file = File::open(path).expect("could not open the CSV file");
    let mut input = BufReader::with_capacity(64 * 1024, file);
    let mut parser = Reader::new();
    let mut out = vec![0u8; 4096];
    let mut ends = vec![0usize; 64];
    let mut header: Option<[usize; COLUMNS.len()]> = None;
    loop {
        let (mut out_len, mut ends_len) = (0, 0);
        loop {
            let buffer = input.fill_buf().expect("could not read the CSV file");
            let (result, consumed, written, ended) =
                parser.read_record(buffer, &mut out[out_len..], &mut ends[ends_len..]);
            input.consume(consumed);
            out_len += written;
            ends_len += ended;
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => out.resize(out.len() * 2, 0),
                ReadRecordResult::OutputEndsFull => ends.resize(ends.len() * 2, 0),
                ReadRecordResult::Record => break,
                ReadRecordResult::End => return,
            }
        }
        let field = |i: usize| {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            std::str::from_utf8(&out[start..ends[i]]).expect("the generated CSV is UTF-8")
        };
        let Some(at) = header else {
            // Where each column is, found once from the header row.
            let names: Vec<&str> = (0..ends_len).map(field).collect();
            header = Some(COLUMNS.map(|column| {
                names
                    .iter()
                    .position(|name| *name == column)
                    .expect("the header names every column")
            }));
            continue;
        };
        let value = |column: usize| field(at[column]);
        let traits = Traits {
            address: Address {
                city: value(6),
                country: value(7),
                postal_code: value(8),
            },
            company: Company { name: value(9) },
            created_at: value(5),
            email: value(1),
            first_name: value(2),
            last_name: value(3),
            lifetime_value: value(11)
                .parse()
                .expect("the generated lifetime_value is a number"),
            phone: value(4),
            plan: value(10),
        };
        sink.identify(value(0), &traits);
    }
}
