//! Deterministic generated customers, written as CSV, NDJSON or a JSON array.
//!
//! Customer `i` is the same in every format, so the formats' figures compare
//! the cost of reading them, not the data. About 150 bytes a row as CSV;
//! one company name in six holds a comma (so the CSV quotes it).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::DateTime;

/// The header; every format has these keys in this order.
pub const COLUMNS: [&str; 12] = [
    "customer_id",
    "email",
    "first_name",
    "last_name",
    "phone",
    "created_at",
    "city",
    "country",
    "postal_code",
    "company_name",
    "plan",
    "lifetime_value",
];

/// The three file formats a sync reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ndjson,
    JsonArray,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Ndjson, Format::JsonArray, Format::Csv];

    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
            Format::JsonArray => "json",
        }
    }

    pub fn from_extension(extension: &str) -> Option<Format> {
        Format::ALL
            .into_iter()
            .find(|format| format.extension() == extension)
    }
}

/// A generated file and what it holds.
pub struct Input {
    pub path: PathBuf,
    pub format: Format,
    pub rows: u64,
    pub bytes: u64,
    pub took: Duration,
}

/// Writes customers `1..=rows` as `format` to `dir/customers-{rows}.{ext}`.
pub fn generate(dir: &Path, format: Format, rows: u64) -> Input {
    let started = Instant::now();
    let path = dir.join(format!("customers-{rows}.{}", format.extension()));
    let file = File::create(&path).expect("could not create the input file");
    let mut out = BufWriter::with_capacity(1 << 20, file);
    write_customers(&mut out, format, rows).expect("could not write the input file");
    out.flush().expect("could not write the input file");
    let bytes = std::fs::metadata(&path).expect("the input exists").len();
    Input {
        path,
        format,
        rows,
        bytes,
        took: started.elapsed(),
    }
}

fn write_customers(out: &mut impl Write, format: Format, rows: u64) -> std::io::Result<()> {
    match format {
        Format::Csv => {
            writeln!(out, "{}", COLUMNS.join(","))?;
            (1..=rows).try_for_each(|i| write_csv_row(out, &Customer::new(i)))
        }
        Format::Ndjson => (1..=rows).try_for_each(|i| {
            write_json_object(out, &Customer::new(i))?;
            out.write_all(b"\n")
        }),
        Format::JsonArray => {
            out.write_all(b"[\n")?;
            for i in 1..=rows {
                if i > 1 {
                    out.write_all(b",\n")?;
                }
                write_json_object(out, &Customer::new(i))?;
            }
            out.write_all(b"\n]\n")
        }
    }
}

/// One customer's values, as text.
pub struct Customer {
    pub id: String,
    pub email: String,
    pub first_name: &'static str,
    pub last_name: &'static str,
    pub phone: String,
    pub created_at: String,
    pub city: &'static str,
    pub country: &'static str,
    pub postal_code: String,
    pub company_name: String,
    pub plan: &'static str,
    /// A decimal with two digits; a JSON number in the JSON formats.
    pub lifetime_value: String,
}

impl Customer {
    /// Customer `i`: deterministic.
    pub fn new(i: u64) -> Customer {
        let h = mix(i);
        let (first, first_lower) = pick(&FIRST_NAMES, h);
        let (last, last_lower) = pick(&LAST_NAMES, h >> 8);
        let (city, country) = pick(&CITIES, h >> 16);
        let created =
            DateTime::from_timestamp(FIRST_SIGNUP + ((h >> 20) % SIGNUP_SPAN_SECONDS) as i64, 0)
                .expect("the signup time is in range");
        Customer {
            id: format!("cus_{i:07}"),
            email: format!("{first_lower}.{last_lower}.{i}@example.com"),
            first_name: first,
            last_name: last,
            phone: format!(
                "+1-{:03}-555-{:04}",
                200 + (h >> 24) % 800,
                (h >> 34) % 10_000
            ),
            created_at: created.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            city,
            country,
            postal_code: format!("{:05}", (h >> 30) % 100_000),
            company_name: format!(
                "{} {}",
                pick(&COMPANY_WORDS, h >> 40),
                pick(&COMPANY_KINDS, h >> 43)
            ),
            plan: pick(&PLANS, h >> 48),
            // Cents never end in 0, so the JSON number reads back as written.
            lifetime_value: format!("{}.{:02}", (h >> 50) % 5_000, 1 + (h >> 13) % 9 * 11),
        }
    }

    /// The values in [`COLUMNS`] order.
    pub fn values(&self) -> [&str; 12] {
        [
            &self.id,
            &self.email,
            self.first_name,
            self.last_name,
            &self.phone,
            &self.created_at,
            self.city,
            self.country,
            &self.postal_code,
            &self.company_name,
            self.plan,
            &self.lifetime_value,
        ]
    }
}

fn write_csv_row(out: &mut impl Write, customer: &Customer) -> std::io::Result<()> {
    for (i, value) in customer.values().into_iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        // The generator's values hold commas but never quotes or line breaks.
        if value.contains(',') {
            write!(out, "\"{value}\"")?;
        } else {
            out.write_all(value.as_bytes())?;
        }
    }
    out.write_all(b"\n")
}

fn write_json_object(out: &mut impl Write, customer: &Customer) -> std::io::Result<()> {
    out.write_all(b"{")?;
    for (i, (key, value)) in COLUMNS.iter().zip(customer.values()).enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        if *key == "lifetime_value" {
            write!(out, "\"{key}\":{value}")?;
        } else {
            // The generator's values need no escaping.
            write!(out, "\"{key}\":\"{value}\"")?;
        }
    }
    out.write_all(b"}")
}

const FIRST_NAMES: [(&str, &str); 12] = [
    ("Ada", "ada"),
    ("Grace", "grace"),
    ("Alan", "alan"),
    ("Edsger", "edsger"),
    ("Barbara", "barbara"),
    ("Donald", "donald"),
    ("Frances", "frances"),
    ("Ken", "ken"),
    ("Margaret", "margaret"),
    ("Dennis", "dennis"),
    ("Radia", "radia"),
    ("John", "john"),
];
const LAST_NAMES: [(&str, &str); 11] = [
    ("Lovelace", "lovelace"),
    ("Hopper", "hopper"),
    ("Turing", "turing"),
    ("Dijkstra", "dijkstra"),
    ("Liskov", "liskov"),
    ("Knuth", "knuth"),
    ("Allen", "allen"),
    ("Thompson", "thompson"),
    ("Hamilton", "hamilton"),
    ("Ritchie", "ritchie"),
    ("Perlman", "perlman"),
];
const CITIES: [(&str, &str); 8] = [
    ("San Francisco", "US"),
    ("New York", "US"),
    ("London", "GB"),
    ("Berlin", "DE"),
    ("Paris", "FR"),
    ("Amsterdam", "NL"),
    ("Toronto", "CA"),
    ("Sydney", "AU"),
];
const COMPANY_WORDS: [&str; 8] = [
    "Acme",
    "Globex",
    "Initech",
    "Northwind",
    "Umbrella",
    "Hooli",
    "Vandelay",
    "Stark",
];
/// One kind holds a comma, so about one company name in six is quoted in CSV.
const COMPANY_KINDS: [&str; 6] = [
    "Analytics",
    "Logistics",
    "Software",
    "Retail Group",
    "Health",
    "Partners, LLC",
];
const PLANS: [&str; 4] = ["free", "starter", "pro", "enterprise"];
/// 2019-01-01T00:00:00Z.
const FIRST_SIGNUP: i64 = 1_546_300_800;
const SIGNUP_SPAN_SECONDS: u64 = 6 * 365 * 86_400;

fn pick<T: Copy>(items: &[T], h: u64) -> T {
    items[(h % items.len() as u64) as usize]
}

/// SplitMix64: a well-spread hash of the row number.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
