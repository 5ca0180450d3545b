//! The stop signal: Ctrl-C or a refused write key asks a run to stop
//! reading. A `watch` channel, so the engine awaits it instead of polling,
//! and the reader thread checks it between records.

use std::sync::Arc;

use tokio::sync::watch;

/// Tells a running sync to stop reading; cheap to clone, safe to call from a signal handler task.
#[derive(Debug, Clone)]
pub struct StopSignal(Arc<watch::Sender<bool>>);

impl Default for StopSignal {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(false)))
    }
}

impl StopSignal {
    /// Asks the run to stop reading and flush what it queued.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    /// Whether a stop was asked for.
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once a stop is asked for (at once if it was already).
    pub async fn stopped(&self) {
        let mut watching = self.0.subscribe();
        // The sender lives in `self`, so the channel never closes under us.
        let _ = watching.wait_for(|stopped| *stopped).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stopped_resolves_on_stop_and_after_it() {
        let stop = StopSignal::default();
        let waiter = tokio::spawn({
            let stop = stop.clone();
            async move { stop.stopped().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished() && !stop.is_stopped());
        stop.stop();
        waiter.await.unwrap();
        assert!(stop.is_stopped());
        stop.stopped().await;
    }
}
