//! The JSON array floor: the whole file in memory, elements parsed in place
//! into borrowed fields (the CLI streams it instead; holding it is cheaper).

use std::fmt;
use std::path::Path;

use serde::Deserializer as _;
use serde::de::{SeqAccess, Visitor};

use super::{JsonCustomer, Sink};

pub fn read(path: &Path, sink: &mut Sink) {
    let bytes = std::fs::read(path).expect("could not read the JSON file");
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    de.deserialize_seq(Elements { sink })
        .expect("the generated JSON array parses");
    de.end().expect("nothing follows the array");
}

struct Elements<'s> {
    sink: &'s mut Sink,
}

impl<'de> Visitor<'de> for Elements<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of customers")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(customer) = seq.next_element::<JsonCustomer<'de>>()? {
            let (user_id, traits) = customer.traits();
            self.sink.identify(user_id, &traits);
        }
        Ok(())
    }
}
