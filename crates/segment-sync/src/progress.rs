//! Progress on stderr: a bar on a terminal, a log line now and then otherwise.
//!
//! The ETA comes from the measured rate at which records finish (delivered,
//! failed, invalid or skipped) over the last few seconds, applied to the
//! records left. The bytes read say how far the reader is, but the reader
//! runs ahead of delivery by a whole queue (and far ahead under `--rate`),
//! so a byte-based ETA promised the end too early.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use customer_sync::{Counters, SyncProgress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

/// How often a log line is printed when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// How often the display samples the counters.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// A running progress display.
pub struct Progress {
    task: JoinHandle<()>,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Starts showing `progress`.
    pub fn start(progress: SyncProgress) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let template = if progress.total_bytes.is_some() {
                "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}%  {msg}"
            } else {
                "{spinner} [{elapsed_precise}] {msg}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            crate::logging::route_through(Some(bar.clone()));
            let shown = bar.clone();
            let task = tokio::spawn(async move {
                let started = Instant::now();
                let mut eta = Eta::default();
                loop {
                    let now = snapshot(&progress, started);
                    eta.observe(now);
                    if let Some(total) = now.estimated_total() {
                        shown.set_length(total);
                        shown.set_position(now.done.min(total));
                    }
                    shown.set_message(line(&progress.counters, started, eta.left()));
                    tokio::time::sleep(SAMPLE_EVERY).await;
                }
            });
            Self {
                task,
                bar: Some(bar),
            }
        } else {
            let task = tokio::spawn(async move {
                let started = Instant::now();
                let mut eta = Eta::default();
                let mut last_log = Instant::now();
                loop {
                    tokio::time::sleep(SAMPLE_EVERY).await;
                    eta.observe(snapshot(&progress, started));
                    if last_log.elapsed() >= LOG_EVERY {
                        last_log = Instant::now();
                        eprintln!(
                            "progress: {}",
                            line(&progress.counters, started, eta.left())
                        );
                    }
                }
            });
            Self { task, bar: None }
        }
    }

    /// Stops and clears the display.
    pub fn finish(self) {
        self.task.abort();
        if let Some(bar) = self.bar {
            crate::logging::route_through(None);
            bar.finish_and_clear();
        }
    }
}

fn snapshot(progress: &SyncProgress, started: Instant) -> Snapshot {
    let c = &progress.counters;
    Snapshot {
        at: started.elapsed(),
        bytes_read: progress.read.bytes_read(),
        total_bytes: progress.total_bytes,
        read: Counters::get(&c.read) + Counters::get(&c.recovered),
        done: Counters::get(&c.delivered)
            + Counters::get(&c.failed)
            + Counters::get(&c.invalid)
            + Counters::get(&c.skipped)
            + Counters::get(&c.given_up),
    }
}

fn line(counters: &Counters, started: Instant, eta: Option<Duration>) -> String {
    let delivered = Counters::get(&counters.delivered);
    let rate = delivered as f64 / started.elapsed().as_secs_f64().max(1e-3);
    let mut line = format!(
        "read {}  sent {}  failed {}  invalid {}  {:.0}/s",
        Counters::get(&counters.read),
        delivered,
        Counters::get(&counters.failed),
        Counters::get(&counters.invalid),
        rate
    );
    if let Some(eta) = eta {
        line.push_str(&format!("  eta {}", short_duration(eta)));
    }
    line
}

/// `42s`, `3m05s`, `2h07m`.
fn short_duration(d: Duration) -> String {
    let secs = d.as_secs_f64().ceil() as u64;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// A sample of a run's progress.
#[derive(Debug, Clone, Copy, Default)]
struct Snapshot {
    /// Time since the run started.
    at: Duration,
    bytes_read: u64,
    total_bytes: Option<u64>,
    /// Records read so far (with those resent from an earlier run's outbox).
    read: u64,
    /// Records finished: delivered, failed, invalid, skipped or given up.
    done: u64,
}

impl Snapshot {
    /// The records the whole source holds, from the bytes per record so
    /// far; exact once everything is read.
    fn estimated_total(&self) -> Option<u64> {
        let total_bytes = self.total_bytes?;
        if self.bytes_read == 0 || self.read == 0 {
            return None;
        }
        if self.bytes_read >= total_bytes {
            return Some(self.read);
        }
        let per_record = self.bytes_read as f64 / self.read as f64;
        Some((total_bytes as f64 / per_record).round() as u64)
    }
}

/// How far back the measured rate looks: long enough to smooth out batches,
/// short enough to follow a rate that changes.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// The shortest span a rate is measured over before an ETA is shown.
const MIN_RATE_SPAN: Duration = Duration::from_secs(1);

/// Estimates the time left from the rate at which records finish.
#[derive(Debug, Default)]
struct Eta {
    /// Samples over the last [`RATE_WINDOW`], oldest first.
    samples: VecDeque<Snapshot>,
}

impl Eta {
    fn observe(&mut self, snapshot: Snapshot) {
        self.samples.push_back(snapshot);
        while self
            .samples
            .front()
            .is_some_and(|first| snapshot.at.saturating_sub(first.at) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// The time left: the records not finished yet, at the rate records
    /// finished over the window; `None` until that rate is measured, or
    /// when the source's size is unknown (stdin).
    fn left(&self) -> Option<Duration> {
        let (first, last) = (self.samples.front()?, self.samples.back()?);
        let span = last.at.saturating_sub(first.at);
        let finished = last.done.saturating_sub(first.done);
        if span < MIN_RATE_SPAN || finished == 0 {
            return None;
        }
        let rate = finished as f64 / span.as_secs_f64();
        let left = last.estimated_total()?.saturating_sub(last.done);
        Some(Duration::from_secs_f64(left as f64 / rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run whose reader is far ahead of delivery, as with `--rate`: 1,000
    /// records of 100 bytes; after 10 s, 600 read (the queue is full) and
    /// 300 delivered at a steady 30 records/s.
    #[test]
    fn the_eta_follows_the_delivery_rate_not_the_reader() {
        let mut eta = Eta::default();
        for second in 1..=10u64 {
            eta.observe(Snapshot {
                at: Duration::from_secs(second),
                bytes_read: (second * 60).min(600) * 100,
                total_bytes: Some(100_000),
                read: (second * 60).min(600),
                done: second * 30,
            });
        }
        let left = eta.left().unwrap().as_secs_f64();
        // 700 records left at 30 records/s.
        assert!((left - 700.0 / 30.0).abs() < 0.5, "{left}");
    }

    #[test]
    fn the_total_is_estimated_from_bytes_per_record_and_exact_at_the_end() {
        let mut at = Snapshot {
            bytes_read: 25_000,
            total_bytes: Some(100_000),
            read: 250,
            ..Snapshot::default()
        };
        assert_eq!(at.estimated_total(), Some(1_000));
        at.bytes_read = 100_000;
        at.read = 997;
        assert_eq!(at.estimated_total(), Some(997));
        at.read = 0;
        assert_eq!(at.estimated_total(), None);
    }

    #[test]
    fn durations_read_short() {
        assert_eq!(short_duration(Duration::from_millis(26_100)), "27s");
        assert_eq!(short_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(short_duration(Duration::from_secs(7_620)), "2h07m");
    }

    #[test]
    fn no_eta_before_a_rate_is_measured_or_without_a_size() {
        let mut eta = Eta::default();
        assert_eq!(eta.left(), None);
        let first = Snapshot {
            at: Duration::from_millis(100),
            bytes_read: 100,
            total_bytes: Some(1_000),
            read: 1,
            done: 0,
        };
        eta.observe(first);
        assert_eq!(eta.left(), None, "one sample has no rate");
        let mut eta = Eta::default();
        for second in 1..=5 {
            eta.observe(Snapshot {
                at: Duration::from_secs(second),
                total_bytes: None,
                ..first
            });
        }
        assert_eq!(eta.left(), None, "stdin has no size");
    }
}
