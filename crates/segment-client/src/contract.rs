//! The integration contract: send one customer, get a result value.

use std::sync::{Mutex, PoisonError};

use serde::Serialize;
use serde::ser::SerializeStruct;

use crate::client::{HttpClient, SegmentClient};
use crate::error::SegmentError;
use crate::payload::SegmentIdentifyPayload;

/// The result of the contract functions: `Ok(())` once Segment accepted the event.
pub type SegmentIntegrationResult = Result<(), SegmentError>;

/// Identifies one customer with the process-wide client configured from the
/// environment and says whether this event was delivered.
///
/// The client is built on first success and reused by later calls; it runs
/// on a thread of its own, so it works from any runtime. A configuration
/// error is returned, not cached: fix the environment and call again.
///
/// # How long it waits
/// Until this event's outcome is known, at most the flush timeout
/// (`SEGMENT_FLUSH_TIMEOUT`, default 60 s). A lone call takes one round trip;
/// concurrent calls share requests. Against a host that does not answer
/// (closed port, unresolvable name, no response) it fails with `outage` once
/// nothing has answered for `SEGMENT_OUTAGE_AFTER` (default 30 s), with the
/// last attempt's error as `source()`.
///
/// # Errors
/// `missing_write_key` or `invalid_config` for the environment; otherwise as
/// for [`send_customer_to_segment_with_client`].
///
/// # Example
/// ```no_run
/// use segment_client::{send_customer_to_segment, ContractResult, SegmentIdentifyPayload};
///
/// # async fn run() {
/// let payload = SegmentIdentifyPayload { user_id: "cus_1".into(), ..Default::default() };
/// let result = send_customer_to_segment(payload).await;
/// println!("{}", serde_json::to_string(&ContractResult::from(&result)).unwrap());
/// # }
/// ```
pub async fn send_customer_to_segment(payload: SegmentIdentifyPayload) -> SegmentIntegrationResult {
    let client = process_client()?;
    send_customer_to_segment_with_client(&client, payload).await
}

fn process_client() -> Result<HttpClient, SegmentError> {
    static CLIENT: Mutex<Option<HttpClient>> = Mutex::new(None);
    let mut slot = CLIENT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(client) = slot.as_ref() {
        return Ok(client.clone());
    }
    let client = crate::config::builder_from_lookup(|name| std::env::var(name).ok())?
        .own_thread(true)
        .build()?;
    *slot = Some(client.clone());
    Ok(client)
}

/// Identifies one customer with `client` and says whether this event was
/// delivered.
///
/// With an [`HttpClient`] the call waits for this event only, at most the
/// client's flush timeout (default 60 s): concurrent calls share requests,
/// and a lone call takes one round trip. An unreachable host gives `outage`
/// after the client's outage bound (default 30 s).
///
/// # Errors
/// `invalid_payload`/`payload_too_large` before anything is sent; the
/// delivery failure of this event (`http_status`, `rate_limited`, `outage`,
/// and `network`/`timeout` once attempts run out); if the flush timeout
/// passes first, the last attempt's error under its own code, or
/// `deadline_exceeded` if none failed; `client_closed` for a closed client.
///
/// # Example
/// ```
/// use segment_client::{send_customer_to_segment_with_client, InMemoryClient, SegmentIdentifyPayload};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let client = InMemoryClient::new();
/// let payload = SegmentIdentifyPayload { user_id: "cus_1".into(), ..Default::default() };
/// send_customer_to_segment_with_client(&client, payload).await.unwrap();
/// assert_eq!(client.events().len(), 1);
/// # });
/// ```
pub async fn send_customer_to_segment_with_client<C: SegmentClient + ?Sized>(
    client: &C,
    payload: SegmentIdentifyPayload,
) -> SegmentIntegrationResult {
    client.identify_and_confirm(payload.into()).await
}

/// The contract's JSON form of a [`SegmentIntegrationResult`]:
/// `{"success":true}` or `{"success":false,"error":{"message":"..","code":".."}}`.
///
/// # Example
/// ```
/// use segment_client::ContractResult;
///
/// let ok: segment_client::SegmentIntegrationResult = Ok(());
/// assert_eq!(serde_json::to_string(&ContractResult::from(&ok)).unwrap(), r#"{"success":true}"#);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ContractResult<'a>(pub &'a SegmentIntegrationResult);

impl<'a> From<&'a SegmentIntegrationResult> for ContractResult<'a> {
    fn from(result: &'a SegmentIntegrationResult) -> Self {
        Self(result)
    }
}

impl Serialize for ContractResult<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = if self.0.is_ok() { 1 } else { 2 };
        let mut s = serializer.serialize_struct("SegmentIntegrationResult", fields)?;
        s.serialize_field("success", &self.0.is_ok())?;
        if let Err(error) = self.0 {
            s.serialize_field("error", error)?;
        }
        s.end()
    }
}

impl Serialize for SegmentError {
    /// `{"message":"..","code":".."}`, the contract's error object.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("SegmentError", 2)?;
        s.serialize_field("message", self.message())?;
        s.serialize_field("code", &self.code())?;
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    #[test]
    fn json_shape_matches_the_contract() {
        let ok: SegmentIntegrationResult = Ok(());
        assert_eq!(
            serde_json::to_string(&ContractResult(&ok)).unwrap(),
            r#"{"success":true}"#
        );
        let err: SegmentIntegrationResult = Err(SegmentError::new(Kind::MissingWriteKey, "no key"));
        assert_eq!(
            serde_json::to_string(&ContractResult(&err)).unwrap(),
            r#"{"success":false,"error":{"message":"no key","code":"missing_write_key"}}"#
        );
    }
}
