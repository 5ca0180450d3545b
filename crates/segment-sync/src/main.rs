//! The `segment-sync` command: a thin shell over the `customer-sync` library.
//!
//! `main` parses flags, runs the command, and maps the outcome to an exit
//! code: 0 when every record was delivered, 1 when some records failed, were
//! invalid or are still pending, 2 on a fatal or configuration error. A
//! closed stdout or stderr (e.g. piped into `head`) is not an error: the
//! exit code stays the run's own.

// Every print of this binary goes through these, which shadow the standard
// macros in every module below: `std`'s panic when the stream is closed (a
// `2>&1 | head` that exited, a dead log consumer), and a closed stream must
// never turn a run into a crash or change its exit code. Defined before the
// modules, so that textual scoping makes them the ones in use there.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr(), $($arg)*);
    }};
}

macro_rules! eprint {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::write!(::std::io::stderr(), $($arg)*);
    }};
}

macro_rules! println {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stdout(), $($arg)*);
    }};
}

mod commands;
mod config;
mod flags;
mod hint;
mod logging;
mod problems;
mod progress;
mod signals;
mod summary;

use std::process::ExitCode;

use clap::Parser;

// Records are allocated on the reader thread and freed on the client's
// worker: glibc's allocator spent a quarter of the CPU on that traffic.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: 15 in both its v2 and v3 headers.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the process before it goes back to the
/// OS. mimalloc 3's default, 1 s, holds a sync's peak memory a quarter
/// higher; 1 ms faulted a fresh page in for about every 8th event (120,000
/// page faults on 1M CSV rows, a tenth of the CPU). 10 ms: the peak of 1 ms
/// (36 MB on 1M CSV rows) with 37,000 faults.
const PURGE_DELAY_MS: std::ffi::c_long = 10;

/// Sets the allocator's purge delay to [`PURGE_DELAY_MS`].
#[expect(
    unsafe_code,
    reason = "sets an integer option of the allocator; no pointers involved"
)]
fn return_freed_memory_promptly() {
    // SAFETY: mi_option_set only stores an integer in the allocator's option table.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

/// How a command that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything was delivered (or shown).
    Clean,
    /// Some records failed, were invalid, or are still pending.
    Partial,
}

fn main() -> ExitCode {
    return_freed_memory_promptly();
    let cli = flags::Cli::parse();
    logging::init(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(commands::run(cli.command));
    // Don't wait for a reader thread stuck on a closed client.
    runtime.shutdown_background();
    match result {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Partial) => ExitCode::from(1),
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            for (problem, hint) in hint::problems_of(&error) {
                eprintln!("error: {problem}");
                if let Some(hint) = hint {
                    eprintln!("  hint: {hint}");
                }
            }
            let lines = hint::causes(&error);
            for (i, line) in lines.iter().enumerate() {
                match i {
                    0 => eprintln!("error: {line}"),
                    _ => eprintln!("  caused by: {line}"),
                }
            }
            if let Some(hint) = hint::hint_of(&error) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

#[cfg(test)]
mod tests {
    /// mimalloc's default purge delay in milliseconds: 10 in v2, 1000 in v3.
    const DEFAULT_PURGE_DELAYS_MS: [std::ffi::c_long; 2] = [10, 1000];

    #[expect(
        unsafe_code,
        reason = "reads an integer option of the allocator; no pointers involved"
    )]
    fn purge_delay() -> std::ffi::c_long {
        // SAFETY: mi_option_get only reads an integer from the allocator's option table.
        unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) }
    }

    /// Option 15 must be the purge delay: its documented default before the
    /// binary sets it, and the binary's value after. A reordered enum in a
    /// future mimalloc fails here instead of setting some other option.
    #[test]
    fn the_purge_delay_option_reads_back_what_the_binary_sets() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            let default = purge_delay();
            assert!(
                DEFAULT_PURGE_DELAYS_MS.contains(&default),
                "option {} reads {default}: not the purge delay's default",
                super::MI_OPTION_PURGE_DELAY
            );
        }
        super::return_freed_memory_promptly();
        assert_eq!(purge_delay(), super::PURGE_DELAY_MS);
    }
}
