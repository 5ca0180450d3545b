//! `send_customer_to_segment` with its process-wide client from the environment.
//!
//! One test in its own binary, because it changes the process environment.
#![expect(
    unsafe_code,
    reason = "set_var/remove_var: this binary runs one test and no other thread reads the environment meanwhile"
)]

use segment_client::{
    ContractResult, HOST_VAR, REGION_VAR, SegmentIdentifyPayload, UserTraits, WRITE_KEY_VAR,
    send_customer_to_segment,
};
use segment_receiver::{FaultPlan, Receiver, ReceiverConfig};

fn payload(user_id: &str) -> SegmentIdentifyPayload {
    SegmentIdentifyPayload {
        user_id: user_id.into(),
        traits: UserTraits {
            email: Some(format!("{user_id}@example.com")),
            ..UserTraits::default()
        },
    }
}

#[tokio::test]
async fn send_customer_to_segment_with_and_without_a_write_key() {
    // SAFETY: see the crate-level expectation.
    unsafe {
        std::env::remove_var(WRITE_KEY_VAR);
        std::env::remove_var(REGION_VAR);
    }
    let result = send_customer_to_segment(payload("cus_1")).await;
    let error = result.as_ref().unwrap_err();
    assert_eq!(error.code(), Some("missing_write_key"));
    assert_eq!(
        serde_json::to_value(ContractResult::from(&result)).unwrap(),
        serde_json::json!({"success": false, "error": {"message": error.message(), "code": "missing_write_key"}})
    );

    let receiver = Receiver::start(
        ReceiverConfig::new()
            .write_key("env-key")
            .faults(FaultPlan::user_id("cus_refused", 400, None)),
    )
    .await
    .unwrap();
    // SAFETY: as above.
    unsafe {
        std::env::set_var(WRITE_KEY_VAR, "env-key");
        std::env::set_var(HOST_VAR, receiver.url());
    }
    let result = send_customer_to_segment(payload("cus_1")).await;
    assert_eq!(
        serde_json::to_string(&ContractResult::from(&result)).unwrap(),
        r#"{"success":true}"#
    );
    send_customer_to_segment(payload("cus_2")).await.unwrap();
    let error = send_customer_to_segment(payload("cus_refused"))
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(400));
    let error = send_customer_to_segment(payload("")).await.unwrap_err();
    assert_eq!(error.code(), Some("invalid_payload"));

    let store = receiver.store();
    assert_eq!(store.stats().accepted, 2);
    assert_eq!(
        store.events_for_user("cus_2")[0]["traits"]["email"],
        "cus_2@example.com"
    );
}
