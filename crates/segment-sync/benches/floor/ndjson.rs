//! The NDJSON floor: a line at a time, each parsed into borrowed fields.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::{JsonCustomer, Sink};

pub fn read(path: &Path, sink: &mut Sink) {
    let file = File::open(path).expect("could not open the NDJSON file");
    let mut input = BufReader::with_capacity(64 * 1024, file);
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        if input
            .read_until(b'\n', &mut line)
            .expect("could not read the NDJSON file")
            == 0
        {
            return;
        }
        let customer: JsonCustomer<'_> =
            serde_json::from_slice(&line).expect("the generated NDJSON parses");
        let (user_id, traits) = customer.traits();
        sink.identify(user_id, &traits);
    }
}
