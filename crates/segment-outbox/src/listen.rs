//! Wake-ups: `LISTEN` on the outbox's channel, so a commit reaches an idle
//! worker at once. Workers also poll, so a lost connection only costs latency.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::db::{Schema, parse_url};

/// Listens until `stop` turns true, reconnecting after failures; each
/// notification wakes one idle worker.
pub(crate) async fn listen(
    url: String,
    schema: Schema,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut retry = Duration::from_millis(100);
    while !*stop.borrow() {
        tokio::select! {
            result = listen_once(&url, &schema, &wake) => {
                if let Err(error) = result {
                    tracing::warn!(%error, "LISTEN connection lost; polling until it is back");
                }
            }
            _ = stop.changed() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            _ = stop.changed() => return,
        }
        retry = (retry * 2).min(Duration::from_secs(10));
    }
}

async fn listen_once(
    url: &str,
    schema: &Schema,
    wake: &Arc<Notify>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = parse_url(url)?;
    let (client, mut connection) = config.connect(NoTls).await?;
    // The connection must be polled for notifications to arrive; each one
    // only says "something was committed", so it just wakes a worker.
    let notify = Arc::clone(wake);
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => notify.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error),
                None => return Ok(()),
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {}", schema.channel()))
        .await?;
    // Whatever was committed before LISTEN took effect is found by a claim.
    wake.notify_one();
    driver.await??;
    drop(client);
    Err("the LISTEN connection closed".into())
}
