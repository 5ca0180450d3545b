//! The first invalid records of a run, shown inline before the summary as a
//! compiler shows its first errors, then how many more there are.

use std::path::Path;

use customer_sync::{Counters, RunReport};

/// Prints the first invalid records (file:line, field, reason), then a count
/// of the rest and where to find them.
pub fn print_first_invalid(counters: &Counters, report: &RunReport, report_file: Option<&Path>) {
    let first = counters.first_invalid();
    for error in &first {
        eprintln!("invalid: {error}");
    }
    let more = report.invalid.saturating_sub(first.len() as u64);
    if more == 0 {
        return;
    }
    let records = if more == 1 { "record" } else { "records" };
    match report_file {
        Some(path) => eprintln!(
            "  and {more} more invalid {records} (all in {})",
            path.display()
        ),
        None => {
            eprintln!("  and {more} more invalid {records} (pass --report FILE to list them all)")
        }
    }
}
