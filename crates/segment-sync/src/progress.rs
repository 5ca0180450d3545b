//! Progress on stderr: a bar on a terminal, a log line now and then otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use customer_sync::{Counters, SyncProgress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

/// How often a log line is printed when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// A running progress display.
pub struct Progress {
    task: JoinHandle<()>,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Starts showing `progress`.
    pub fn start(progress: SyncProgress) -> Self {
        if std::io::stderr().is_terminal() {
            let bar =
                ProgressBar::with_draw_target(progress.total_bytes, ProgressDrawTarget::stderr());
            let template = if progress.total_bytes.is_some() {
                "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% eta {eta}  {msg}"
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
                loop {
                    shown.set_position(progress.read.bytes_read());
                    shown.set_message(line(&progress.counters, started));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            Self {
                task,
                bar: Some(bar),
            }
        } else {
            let task = tokio::spawn(async move {
                let started = Instant::now();
                loop {
                    tokio::time::sleep(LOG_EVERY).await;
                    eprintln!("progress: {}", line(&progress.counters, started));
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

fn line(counters: &Counters, started: Instant) -> String {
    let delivered = Counters::get(&counters.delivered);
    let rate = delivered as f64 / started.elapsed().as_secs_f64().max(1e-3);
    format!(
        "read {}  sent {}  failed {}  invalid {}  {:.0}/s",
        Counters::get(&counters.read),
        delivered,
        Counters::get(&counters.failed),
        Counters::get(&counters.invalid),
        rate
    )
}
