//! Ctrl-C and SIGTERM, listened to from the moment a command starts: a
//! signal that comes in before its handler would first be polled, or while
//! an earlier one is being handled, is kept rather than missed (tokio
//! coalesces signals that arrive together into one).

/// The process's Ctrl-C and SIGTERM listeners.
pub struct Signals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Starts listening; must run inside the runtime. A signal that cannot
    /// be listened to keeps its default action (the process ends).
    pub fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Waits for the next Ctrl-C or SIGTERM; returns the exit code of a
    /// process ended by it (128 + the signal's number).
    pub async fn next(&mut self) -> i32 {
        #[cfg(unix)]
        {
            async fn recv(signal: Option<&mut tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = recv(self.interrupt.as_mut()) => 130,
                () = recv(self.terminate.as_mut()) => 143,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            130
        }
    }
}
