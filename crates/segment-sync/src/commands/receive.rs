//! `segment-sync receive`: a local Segment-compatible receiver.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use segment_receiver::{Receiver, ReceiverConfig, Record};

use crate::Outcome;
use crate::flags::ReceiveArgs;

pub async fn run(args: ReceiveArgs) -> Result<Outcome> {
    let mut config = ReceiverConfig::new().keep(args.keep);
    for key in &args.write_keys {
        config = config.write_key(key);
    }
    if let Some(path) = &args.save {
        config = config.save_to(path);
    }
    if args.counts_only {
        config = config.record(Record::CountsOnly);
    }
    if !args.bind.is_loopback() {
        eprintln!(
            "warning: listening on {}: the receiver and its debugger page have no \
             authentication; anyone who can reach this address can read every event \
             received and reset or fault the receiver",
            args.bind
        );
    }
    // Listen for Ctrl-C before the URL is printed: a script that reads the URL and
    // interrupts at once must get a clean stop and a summary, not a killed process.
    let interrupted = interrupt()?;
    let addr = SocketAddr::from((args.bind, args.port));
    let receiver = Receiver::start_on(addr, config)
        .await
        .with_context(|| format!("cannot start the receiver on {addr}"))?;
    // The first stdout line is the URL, so scripts and tests can read it.
    println!("{}", receiver.url());
    eprintln!(
        "receiving Segment calls at {}; stop with Ctrl-C",
        receiver.url()
    );
    eprintln!(
        "  try: SEGMENT_HOST={} SEGMENT_WRITE_KEY=any segment-sync sync customers.csv",
        receiver.url()
    );
    eprintln!("  see: {}/ (the debugger page)", receiver.url());
    eprintln!(
        "  keeping the last {} events, requests and customers in memory (--keep)",
        args.keep
    );
    if let Some(path) = &args.save {
        eprintln!("  saving accepted events to {}", path.display());
    }
    interrupted.await;
    let stats = receiver.store().stats();
    receiver.shutdown().await;
    eprintln!(
        "received {} requests ({} refused): {} events accepted ({} duplicates), {} dropped",
        stats.requests, stats.refused_requests, stats.accepted, stats.duplicates, stats.rejected
    );
    let counts = |map: &std::collections::BTreeMap<String, u64>| {
        map.iter()
            .map(|(name, count)| format!("{name} {count}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !stats.accepted_by_type.is_empty() {
        eprintln!("  accepted by type: {}", counts(&stats.accepted_by_type));
    }
    if !stats.rejected_by_reason.is_empty() {
        eprintln!("  dropped by reason: {}", counts(&stats.rejected_by_reason));
    }
    Ok(Outcome::Clean)
}

/// Resolves on Ctrl-C (SIGINT); listening starts when this is called.
#[cfg(unix)]
fn interrupt() -> Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupts = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
    Ok(async move {
        interrupts.recv().await;
    })
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
fn interrupt() -> Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
