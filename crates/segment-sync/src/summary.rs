//! The end-of-run summary on stderr.

use std::path::Path;

use customer_sync::RunReport;

/// Prints the counts, the rate, and where the details are.
///
/// The first line says what became of the records read, naming only what
/// happened (a count of zero is left out, but for what was delivered), so
/// a run where nothing changed does not read like one where all failed.
pub fn print_summary(source: &str, report: &RunReport, report_file: Option<&Path>) {
    eprintln!("{}", headline(source, report));
    if report.recovered + report.removed > 0 {
        let mut parts = Vec::new();
        if report.recovered > 0 {
            parts.push(format!(
                "resent from the outbox {} (left in flight by an earlier run that did not finish, sent again under their first messageId)",
                report.recovered
            ));
        }
        if report.removed > 0 {
            parts.push(match report.removed_sent {
                0 => format!(
                    "removed from the source {} (nothing is sent for them)",
                    report.removed
                ),
                sent => format!(
                    "removed from the source {} (a removed event queued for {sent})",
                    report.removed
                ),
            });
        }
        eprintln!("  {}", parts.join(", "));
    }
    let tracked = [
        (report.tracked_added, "added"),
        (report.tracked_changed, "changed"),
        (report.tracked_removed, "removed"),
    ];
    if tracked.iter().any(|(count, _)| *count > 0) {
        let kinds: Vec<String> = tracked
            .iter()
            .filter(|(count, _)| *count > 0)
            .map(|(count, kind)| format!("{kind} {count}"))
            .collect();
        let verb = if report.dry_run {
            "would send"
        } else {
            "accepted"
        };
        eprintln!("  track events ([events]) {verb}: {}", kinds.join(", "));
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
    eprintln!("  {}", pace(report));
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
    if let Some(why) = &report.removals_held_back {
        eprintln!("  removed events ([events]) held back: {why}; nothing was removed in Segment");
        let hint = if report.invalid > 0 {
            "fix the invalid records and run again: the removed events go once the read is clean"
        } else if report.read == 0 {
            "check the source: an empty export would remove every customer"
        } else {
            "if they really are gone, run again with --allow-mass-removal"
        };
        eprintln!("hint: {hint}");
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

/// `c.csv: read 40, unchanged 38, invalid 1; delivered 1`.
fn headline(source: &str, report: &RunReport) -> String {
    let mut read = vec![format!("read {}", report.read)];
    // `skipped` also holds rows a later row of the same identity superseded
    // (`--duplicates last`): every duplicate not refused as invalid.
    let refused = report
        .invalid_by_reason
        .get("duplicate_identity")
        .copied()
        .unwrap_or(0);
    let superseded = report
        .duplicates
        .saturating_sub(refused)
        .min(report.skipped);
    for (count, what) in [
        (report.skipped - superseded, "unchanged"),
        (superseded, "superseded by a later row"),
        (report.invalid, "invalid"),
        (report.given_up, "given up"),
    ] {
        if count > 0 {
            read.push(format!("{what} {count}"));
        }
    }
    let queued = report.valid + report.recovered_not_in_source + report.removed_sent;
    let outcome = if queued == 0 && report.skipped == report.read && !report.interrupted {
        "nothing to send, Segment has every record already".to_owned()
    } else if queued == 0 {
        "nothing sent".to_owned()
    } else {
        let mut sent = vec![if report.dry_run {
            format!("would send {}", report.delivered)
        } else {
            format!("delivered {}", report.delivered)
        }];
        for (count, what) in [(report.failed, "failed"), (report.pending, "pending")] {
            if count > 0 {
                sent.push(format!("{what} {count}"));
            }
        }
        sent.join(", ")
    };
    format!("{source}: {}; {outcome}", read.join(", "))
}

/// `0.52 s, 77 records read/s, 70 delivered/s`: no delivery rate when
/// nothing was delivered (a dry run, a run with nothing to send). Repeated
/// identities are in the headline (superseded) or among the invalid.
fn pace(report: &RunReport) -> String {
    let mut line = format!(
        "{:.2} s, {:.0} records read/s",
        report.duration_secs,
        report.read as f64 / report.duration_secs.max(1e-9)
    );
    if !report.dry_run && report.delivered > 0 {
        line.push_str(&format!(", {:.0} delivered/s", report.events_per_sec));
    }
    line
}
