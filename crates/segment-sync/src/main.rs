//! The `segment-sync` command: a thin shell over the `customer-sync` library.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("segment-sync: not built yet");
    ExitCode::from(2)
}
