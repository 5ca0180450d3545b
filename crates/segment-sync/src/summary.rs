//! The end-of-run summary on stderr.

use std::path::Path;

use customer_sync::RunReport;

/// Prints the counts, the rate, and where the details are.
pub fn print_summary(source: &str, report: &RunReport, report_file: Option<&Path>) {
    let verb = if report.dry_run {
        "would send"
    } else {
        "delivered"
    };
    eprintln!(
        "{source}: read {}, valid {}, invalid {}, {verb} {}, failed {}, pending {}",
        report.read, report.valid, report.invalid, report.delivered, report.failed, report.pending
    );
    if report.skipped + report.given_up + report.recovered + report.removed > 0 {
        eprintln!(
            "  unchanged (skipped) {}, given up {}, resent from the outbox {}, removed from the source {}",
            report.skipped, report.given_up, report.recovered, report.removed
        );
    }
    if report.recovered_not_in_source > 0 {
        eprintln!(
            "  of those resent, {} were left in flight by an earlier run for customers no longer in the source",
            report.recovered_not_in_source
        );
    }
    if report.superseded > 0 {
        eprintln!(
            "  {} older outbox entries were superseded by newer values and not sent again",
            report.superseded
        );
    }
    if report.outbox_waiting > 0 {
        eprintln!(
            "  {} records left in flight by an earlier run were not reached; they wait in the outbox for the next run",
            report.outbox_waiting
        );
    }
    if report.outbox_torn > 0 {
        eprintln!(
            "  {} outbox lines cut short by a crash were skipped (their records were read again)",
            report.outbox_torn
        );
    }
    if report.traits_unset + report.traits_left_out > 0 {
        eprintln!(
            "  traits gone since the last sync: {} unset (sent as null), {} left out",
            report.traits_unset, report.traits_left_out
        );
    }
    eprintln!(
        "  {:.2} s, {:.0} records read/s, {:.0} delivered/s{}",
        report.duration_secs,
        report.read as f64 / report.duration_secs.max(1e-9),
        report.events_per_sec,
        if report.duplicates > 0 {
            format!(", {} duplicate identities", report.duplicates)
        } else {
            String::new()
        }
    );
    for (reason, count) in &report.invalid_by_reason {
        eprintln!("  invalid: {count} {reason}");
    }
    for (reason, count) in &report.failed_by_reason {
        eprintln!("  failed: {count} {reason}");
    }
    if report.interrupted {
        eprintln!(
            "  the run was stopped before the end of the source: the rest was not read, and nothing is reported as removed"
        );
    }
    if report.pending > 0 {
        eprintln!(
            "  {} records were not delivered before the run ended; run again to send them",
            report.pending
        );
    }
    if report.given_up > 0 {
        eprintln!("  --retry-failed sends given-up records again");
    }
    let undelivered = report.invalid + report.failed + report.pending + report.given_up;
    match report_file {
        Some(path) => eprintln!("  report: {}", path.display()),
        None if undelivered > 0 => eprintln!(
            "  pass --report FILE to list every record that was not delivered, with its line"
        ),
        None => {}
    }
}
