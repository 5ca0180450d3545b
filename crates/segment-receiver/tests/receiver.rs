//! End-to-end tests over real HTTP: the `/_receiver/` control endpoints (as used when the
//! receiver runs in another process), the NDJSON save file, and `serve`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use segment_receiver::{FaultPlan, Receiver, ReceiverConfig, Stats, serve};
use serde_json::{Value, json};

const ALICE: &str =
    r#"{"type":"identify","userId":"alice","messageId":"m-alice","traits":{"name":"Alice"}}"#;
const BOB: &str = r#"{"type":"identify","userId":"bob","messageId":"m-bob","traits":{}}"#;
const NOBODY: &str = r#"{"type":"identify","messageId":"m-nobody","traits":{}}"#;

fn batch(events: &[&str]) -> String {
    format!(
        r#"{{"batch":[{}],"sentAt":"2024-05-01T00:00:00Z"}}"#,
        events.join(",")
    )
}

/// A fresh path under Cargo's per-target scratch directory.
fn scratch_file(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("segment-receiver-tests");
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(base: String) -> Self {
        Self {
            client: reqwest::Client::new(),
            base,
        }
    }

    async fn post(&self, path: &str, body: impl Into<String>) -> (u16, String) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.into())
            .send()
            .await
            .expect("the receiver answers");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("the receiver answers");
        assert_eq!(response.status(), 200, "GET {path}");
        let text = response.text().await.expect("body");
        serde_json::from_str(&text).expect("control endpoints answer JSON")
    }
}

#[tokio::test]
async fn control_endpoints_report_what_was_received() {
    let receiver = Receiver::start(ReceiverConfig::new()).await.expect("start");
    let http = Http::new(receiver.url());
    assert_eq!(
        http.post("/v1/batch", batch(&[ALICE, BOB, NOBODY])).await.0,
        200
    );
    assert_eq!(http.post("/v1/batch", batch(&[ALICE])).await.0, 200);

    let stats: Stats =
        serde_json::from_value(http.get("/_receiver/stats").await).expect("Stats JSON");
    assert_eq!(stats, receiver.store().stats());
    assert_eq!(
        (
            stats.requests,
            stats.accepted,
            stats.duplicates,
            stats.rejected
        ),
        (2, 3, 1, 1)
    );

    let all = http.get("/_receiver/events").await;
    assert_eq!(all.as_array().map(Vec::len), Some(3));
    let alice = http.get("/_receiver/events?userId=alice").await;
    assert_eq!(
        alice,
        json!([
            serde_json::from_str::<Value>(ALICE).expect("JSON"),
            serde_json::from_str::<Value>(ALICE).expect("JSON")
        ])
    );
    assert_eq!(http.get("/_receiver/events?userId=carol").await, json!([]));

    assert_eq!(
        http.get("/_receiver/duplicates").await,
        json!({ "m-alice": 2 })
    );
    let rejections = http.get("/_receiver/rejections").await;
    assert_eq!(rejections[0]["reason"], "missing_identity");
    assert_eq!(rejections[0]["message_id"], "m-nobody");

    let requests = http.get("/_receiver/requests").await;
    assert_eq!(requests.as_array().map(Vec::len), Some(2));
    assert_eq!(requests[0]["status"], 200);
    assert_eq!(requests[0]["events"], 3);
    assert_eq!(requests[0]["sent_at"], "2024-05-01T00:00:00Z");
    receiver.shutdown().await;
}

#[tokio::test]
async fn faults_can_be_set_and_reset_over_http() {
    let receiver = Receiver::start(ReceiverConfig::new()).await.expect("start");
    let http = Http::new(receiver.url());

    let plan = json!({ "rules": [{ "kind": "first_n", "n": 1, "status": 503 }] });
    assert_eq!(
        http.post("/_receiver/faults", plan.to_string()).await.0,
        200
    );
    assert_eq!(http.post("/v1/batch", batch(&[ALICE])).await.0, 503);
    assert_eq!(http.post("/v1/batch", batch(&[ALICE])).await.0, 200);

    // Bad plans are refused and leave the current one in place.
    for bad in [
        "{not json",
        r#"{"rules":[{"kind":"explode"}]}"#,
        r#"{"rules":[{"kind":"first_n","n":1,"status":7}]}"#,
    ] {
        let (status, body) = http.post("/_receiver/faults", bad).await;
        assert_eq!(status, 400, "{bad}");
        assert!(body.contains("invalid_fault_plan"), "{body}");
    }

    let plan = serde_json::to_string(&FaultPlan::user_id("bob", 500, None)).expect("serialises");
    assert_eq!(http.post("/_receiver/faults", plan).await.0, 200);
    assert_eq!(http.post("/v1/batch", batch(&[BOB])).await.0, 500);

    assert_eq!(http.post("/_receiver/reset", "").await.0, 200);
    assert_eq!(receiver.store().stats(), Stats::default());
    assert_eq!(http.get("/_receiver/requests").await, json!([]));
    // The reset also removed the fault.
    assert_eq!(http.post("/v1/batch", batch(&[BOB])).await.0, 200);
    assert_eq!(http.get("/_receiver/stats").await["accepted"], 1);
    receiver.shutdown().await;
}

#[tokio::test]
async fn control_endpoints_need_no_write_key() {
    let receiver = Receiver::start(ReceiverConfig::new().write_key("k"))
        .await
        .expect("start");
    let http = Http::new(receiver.url());
    assert_eq!(http.post("/v1/batch", batch(&[ALICE])).await.0, 401);
    assert_eq!(
        http.get("/_receiver/stats").await["responses_by_status"]["401"],
        1
    );
    assert_eq!(http.post("/_receiver/reset", "").await.0, 200);
    receiver.shutdown().await;
}

#[tokio::test]
async fn save_file_gets_one_ndjson_line_per_accepted_event_and_is_appended_to() {
    let path = scratch_file("events.ndjson");
    let pretty =
        "{\n  \"type\": \"identify\",\n  \"userId\": \"carol\",\n  \"messageId\": \"m-carol\"\n}";

    let receiver = Receiver::start(ReceiverConfig::new().save_to(&path))
        .await
        .expect("start");
    let http = Http::new(receiver.url());
    assert_eq!(
        http.post("/v1/batch", batch(&[ALICE, NOBODY, pretty]))
            .await
            .0,
        200
    );
    receiver.set_faults(FaultPlan::first_n(1, 503));
    assert_eq!(http.post("/v1/batch", batch(&[BOB])).await.0, 503);
    receiver.shutdown().await;

    // A second run appends rather than truncates.
    let receiver = Receiver::start(ReceiverConfig::new().save_to(&path))
        .await
        .expect("restart");
    assert_eq!(
        Http::new(receiver.url())
            .post("/v1/batch", batch(&[BOB]))
            .await
            .0,
        200
    );
    receiver.shutdown().await;

    let saved = std::fs::read_to_string(&path).expect("save file exists");
    let lines: Vec<&str> = saved.lines().collect();
    assert_eq!(lines.len(), 3, "{saved}");
    // Compact events are saved byte for byte; the pretty one is folded onto one line.
    assert_eq!(lines[0], ALICE);
    assert_eq!(
        serde_json::from_str::<Value>(lines[1]).expect("JSON"),
        serde_json::from_str::<Value>(pretty).expect("JSON")
    );
    assert_eq!(lines[2], BOB);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn serve_runs_until_its_shutdown_future_resolves() {
    let path = scratch_file("served.ndjson");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let http = Http::new(format!("http://{}", listener.local_addr().expect("addr")));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        ReceiverConfig::new().save_to(&path),
        async {
            let _ = stopped.await;
        },
    ));

    assert_eq!(http.post("/v1/batch", batch(&[ALICE])).await.0, 200);
    assert_eq!(http.get("/_receiver/stats").await["accepted"], 1);
    stop.send(()).expect("server still running");
    server.await.expect("task").expect("clean shutdown");

    assert_eq!(
        std::fs::read_to_string(&path).expect("saved"),
        format!("{ALICE}\n")
    );
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn startup_errors_are_short_and_keep_their_source() {
    let first = Receiver::start(ReceiverConfig::new()).await.expect("start");
    let err = Receiver::start_on(first.addr(), ReceiverConfig::new())
        .await
        .expect_err("port in use");
    assert_eq!(err.to_string(), format!("failed to bind {}", first.addr()));
    assert!(std::error::Error::source(&err).is_some());

    let missing_dir = scratch_file("no-such-dir").join("events.ndjson");
    let err = Receiver::start(ReceiverConfig::new().save_to(&missing_dir))
        .await
        .expect_err("no dir");
    assert!(
        err.to_string().starts_with("failed to open save file"),
        "{err}"
    );
    first.shutdown().await;
}

#[tokio::test]
async fn keep_bounds_what_the_control_endpoints_return() {
    let receiver = Receiver::start(ReceiverConfig::new().keep(3))
        .await
        .expect("start");
    let http = Http::new(receiver.url());
    for i in 0..5 {
        let event = format!(r#"{{"type":"identify","userId":"u{i}","messageId":"m{i}"}}"#);
        assert_eq!(http.post("/v1/batch", batch(&[&event])).await.0, 200);
    }
    let events = http.get("/_receiver/events").await;
    let ids: Vec<&str> = events
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["messageId"].as_str())
        .collect();
    assert_eq!(ids, ["m2", "m3", "m4"]);
    assert_eq!(
        http.get("/_receiver/requests")
            .await
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    let stats = http.get("/_receiver/stats").await;
    assert_eq!(
        (stats["requests"].as_u64(), stats["accepted"].as_u64()),
        (Some(5), Some(5))
    );
    receiver.shutdown().await;
}

/// The first `update` message of `GET /_receiver/live`, parsed.
async fn first_live_update(response: &mut reqwest::Response) -> Value {
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = response
            .chunk()
            .await
            .expect("read the stream")
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data = text
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .expect("a data line");
    serde_json::from_str(data).expect("JSON data")
}

#[tokio::test]
async fn the_page_and_its_live_feed_are_served() {
    let receiver = Receiver::start(ReceiverConfig::new()).await.expect("start");
    let http = Http::new(receiver.url());
    assert_eq!(http.post("/v1/batch", batch(&[ALICE, NOBODY])).await.0, 200);

    let page = http
        .client
        .get(format!("{}/", receiver.url()))
        .send()
        .await
        .expect("the page");
    assert_eq!(page.status(), 200);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(page.text().await.expect("html").contains("debugger.js"));

    let mut live = http
        .client
        .get(format!("{}/_receiver/live", receiver.url()))
        .send()
        .await
        .expect("the live feed");
    assert_eq!(
        live.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/event-stream"[..])
    );
    let update = first_live_update(&mut live).await;
    assert_eq!(update["stats"]["accepted"], 1);
    assert_eq!(update["events"][0]["userId"], "alice");
    assert_eq!(update["events"][0]["event"]["traits"]["name"], "Alice");
    assert_eq!(update["problems"][0]["kind"], "dropped");
    assert_eq!(update["problems"][0]["code"], "missing_identity");

    // A new request reaches the open stream.
    assert_eq!(http.post("/v1/batch", batch(&[BOB])).await.0, 200);
    let update = first_live_update(&mut live).await;
    assert_eq!(update["events"].as_array().map(Vec::len), Some(1));
    assert_eq!(update["events"][0]["userId"], "bob");

    // Shutdown is not held up by the open stream.
    tokio::time::timeout(std::time::Duration::from_secs(30), receiver.shutdown())
        .await
        .expect("shutdown ends live streams");
}

#[tokio::test]
async fn customers_and_requests_can_be_looked_up_with_secrets_hidden() {
    let receiver = Receiver::start(ReceiverConfig::new().write_key("secret-key"))
        .await
        .expect("start");
    let http = Http::new(receiver.url());
    let first = r#"{"type":"identify","userId":"ada","messageId":"m1","traits":{"email":"ada@example.com","plan":"free","title":"Countess"}}"#;
    let second = r#"{"type":"identify","userId":"ada","messageId":"m2","traits":{"plan":"pro","title":null}}"#;
    let track = r#"{"type":"track","userId":"ada","messageId":"m3","event":"Signed In"}"#;
    let body = format!(r#"{{"writeKey":"secret-key","batch":[{first},{second},{track}]}}"#);
    let response = http
        .client
        .post(format!("{}/v1/batch", receiver.url()))
        .header("authorization", "Basic c2VjcmV0LWtleTo=")
        .body(body)
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);

    let found = http.get("/_receiver/customers?q=ADA@EXAMPLE").await;
    assert_eq!(found[0]["id"], "ada");
    assert_eq!(found[0]["events"], 3);
    let customer = http.get("/_receiver/customer?id=ada").await;
    assert_eq!(
        customer["profile"]["traits"],
        json!({ "email": "ada@example.com", "plan": "pro" })
    );
    let types: Vec<&str> = customer["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(types, ["identify", "identify", "track"]);

    let request = http.get("/_receiver/request?id=1").await;
    assert_eq!(request["request"]["status"], 200);
    let headers = request["headers"].to_string();
    assert!(
        headers.contains(r#"["authorization","(hidden)"]"#),
        "{headers}"
    );
    assert!(!headers.contains("c2VjcmV0LWtleTo"), "{headers}");
    let body = request["body"].as_str().expect("the body is kept");
    assert!(body.contains("Countess"), "{body}");
    assert!(
        !body.contains("secret-key") && body.contains(r#""writeKey":"(hidden)""#),
        "{body}"
    );
    receiver.shutdown().await;
}
