//! `-v`/`-vv` and `RUST_LOG`: the libraries' tracing events on stderr,
//! written around the progress bar instead of through it.

use std::io::Write;
use std::sync::{Mutex, PoisonError};

use indicatif::ProgressBar;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The bar on screen, if any: log lines are printed while it is hidden.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Installs the subscriber: `RUST_LOG` if set (`target=level,...`), else
/// info (`-v`) or debug (`-vv`) for this tool's crates; nothing otherwise.
pub fn init(verbose: u8) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse::<Targets>().ok());
    let filter = match (from_env, verbose) {
        (Some(filter), _) => filter,
        (None, 0) => return,
        (None, v) => {
            let level = if v == 1 {
                LevelFilter::INFO
            } else {
                LevelFilter::DEBUG
            };
            Targets::new()
                .with_target("segment_client", level)
                .with_target("customer_sync", level)
                .with_target("segment_sync", level)
        }
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(AroundBar)
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(filter)
        .try_init();
}

/// Shows log lines around `bar` while it is on screen (`None` when it is gone).
pub fn route_through(bar: Option<ProgressBar>) {
    *BAR.lock().unwrap_or_else(PoisonError::into_inner) = bar;
}

struct AroundBar;

/// One formatted event, written in one go when dropped.
struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let bar = BAR.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let write = || {
            let _ = std::io::stderr().lock().write_all(&self.0);
        };
        match bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

impl<'a> MakeWriter<'a> for AroundBar {
    type Writer = Line;

    fn make_writer(&'a self) -> Self::Writer {
        Line(Vec::new())
    }
}
