//! How much CPU reading a file through a [`Source`] alone takes: the sources'
//! share of a sync, for profiling them (`perf record` this example).
//!
//! `cargo run --release -p customer-sync --example source_throughput -- FILE [RUNS]`
//! reads FILE (its format told by its extension) RUNS times (default 5) and
//! prints the best run's process CPU seconds.

use std::time::Duration;

use customer_sync::source::Source;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: source_throughput FILE [RUNS]")?;
    let runs: u32 = args.next().map_or(Ok(5), |n| n.parse())?;
    let mut best = Duration::MAX;
    let (mut records, mut errors) = (0, 0);
    for _ in 0..runs {
        let started = process_cpu()?;
        let mut source = Source::open(&path)?;
        (records, errors) = (0, 0);
        for item in &mut source {
            match item {
                Ok(_) => records += 1,
                Err(_) => errors += 1,
            }
        }
        if let Some(fatal) = source.take_fatal() {
            return Err(fatal.into());
        }
        best = best.min(process_cpu()? - started);
    }
    println!(
        "{records} records, {errors} errors; best of {runs}: {:.3} s CPU",
        best.as_secs_f64()
    );
    Ok(())
}

/// User + system CPU of this process so far, from `/proc/self/stat` (Linux).
fn process_cpu() -> Result<Duration, Box<dyn std::error::Error>> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses; utime and
    // stime are the 14th and 15th fields of the whole line.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .ok_or("unexpected /proc/self/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // The kernel's USER_HZ is 100 on every mainstream Linux configuration.
    Ok(Duration::from_millis(ticks * 10))
}
