//! End-to-end: the debugger page of `segment-sync receive`, in headless Chromium, showing
//! what the real `segment-sync sync` sent, what Segment would refuse or drop, and markup
//! in a trait as plain text.

mod browser;
mod common;

use std::io::Write as _;
use std::process::Stdio;

use base64::Engine as _;
use browser::{Browser, Page};
use common::{BIN, KEY, path_str, stderr, write};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// Two customers whose traits hold markup that must show as text and never run.
const MARKUP_CSV: &str = "\
customer_id,email,first_name,plan,title
cus_1,ada@example.com,Ada,free,<script>window.__xss = 1</script>
cus_2,grace@example.com,\"<img src=x onerror=\"\"window.__xss = 2\"\">\",pro,
";

/// `segment-sync receive` as a process, and its URL.
async fn receive(dir: &TempDir) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args([
            "receive",
            "--port",
            "0",
            "--write-key",
            KEY,
            "--keep",
            "1000",
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary runs");
    let stdout = child.stdout.take().expect("piped stdout");
    let url = BufReader::new(stdout)
        .lines()
        .next_line()
        .await
        .expect("read stdout")
        .expect("the first line is the URL");
    (child, url)
}

async fn sync(dir: &TempDir, url: &str, file: &str) {
    let output = Command::new(BIN)
        .args(["sync", file])
        .current_dir(dir.path())
        .env("SEGMENT_WRITE_KEY", KEY)
        .env("SEGMENT_HOST", url)
        .env_remove("SEGMENT_REGION")
        .output()
        .await
        .expect("the binary runs");
    assert!(output.status.success(), "{}", stderr(&output));
}

fn basic(key: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
    format!("Basic {encoded}")
}

async fn post(url: &str, body: impl Into<reqwest::Body>, headers: &[(&str, &str)]) -> u16 {
    let mut request = reqwest::Client::new()
        .post(format!("{url}/v1/batch"))
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .send()
        .await
        .expect("the receiver answers")
        .status()
        .as_u16()
}

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(text.as_bytes()).expect("in-memory write");
    encoder.finish().expect("in-memory write")
}

async fn count(page: &mut Page, selector: &str) -> u64 {
    let selector = serde_json::to_string(selector).expect("a string");
    page.eval(&format!("document.querySelectorAll({selector}).length"))
        .await
        .as_u64()
        .expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debugger_page_shows_what_the_receiver_got_in_a_real_browser() {
    let browser = Browser::launch().await;
    let mut page = browser.page().await;
    let dir = TempDir::new().expect("temp dir");
    let (_receiver, url) = receive(&dir).await;

    page.navigate(&format!("{url}/")).await;
    page.wait_for("document.getElementById('status').textContent === 'live'")
        .await;
    assert_eq!(count(&mut page, "#events li").await, 0);
    assert_eq!(page.text("#keep").await, "1000", "--keep reaches the page");
    // Survives only if the page is never reloaded.
    page.eval("window.__sameDocument = true").await;

    // Live events: the real CLI sends two customers; they appear without a reload.
    let markup = write(&dir, "markup.csv", MARKUP_CSV);
    sync(&dir, &url, path_str(&markup)).await;
    page.wait_for("document.querySelectorAll('#events li').length === 2")
        .await;
    assert_eq!(page.eval("window.__sameDocument === true").await, true);
    assert_eq!(page.text("#count-events").await, "2");

    // Markup in traits is shown literally, as text, and never runs.
    let events = page.text("#events").await;
    let events = events.as_str().expect("text");
    assert!(
        events.contains("<script>window.__xss = 1</script>"),
        "{events}"
    );
    assert!(events.contains("<img src=x onerror="), "{events}");
    page.click("#events li .line").await;
    let full = page.text("#events li pre").await;
    assert!(
        full.as_str()
            .is_some_and(|text| text.contains("\"userId\": \"cus_2\"")
                && text.contains("<img src=x onerror=")),
        "{full}"
    );
    assert_eq!(count(&mut page, "main img, main script").await, 0);
    assert_eq!(page.eval("window.__xss === undefined").await, true);

    // A customer's merged profile: a later identify changes, adds and unsets traits.
    let later = r#"{"batch":[{"type":"identify","userId":"cus_1","messageId":"later-1",
        "traits":{"plan":"pro","firstName":null,"company":{"name":"Analytical Engines"}}}]}"#;
    assert_eq!(
        post(&url, later, &[("authorization", &basic(KEY))]).await,
        200
    );
    page.wait_for("document.querySelectorAll('#events li').length === 3")
        .await;
    page.click("nav button[data-tab=customers]").await;
    page.eval("document.getElementById('customer-query').value = 'ada@example'")
        .await;
    page.click("#customer-search button").await;
    page.wait_for("document.querySelector('#customer h2')?.textContent === 'cus_1'")
        .await;
    let traits = page
        .eval(
            "Object.fromEntries([...document.querySelectorAll('#profile-traits tr')]
               .map(tr => [tr.cells[0].textContent, tr.cells[1].textContent]))",
        )
        .await;
    assert_eq!(
        traits,
        serde_json::json!({
            "company": r#"{"name":"Analytical Engines"}"#,
            "email": "ada@example.com",
            "plan": "pro",
            "title": "<script>window.__xss = 1</script>",
        })
    );
    assert_eq!(count(&mut page, "#customer .customer-events li").await, 2);

    // A resent messageId is counted and shown as a duplicate.
    assert_eq!(
        post(&url, later, &[("authorization", &basic(KEY))]).await,
        200
    );
    page.wait_for("document.getElementById('count-duplicates').textContent === '1'")
        .await;
    let duplicate = page.text("#problems li[data-kind=duplicate]").await;
    assert!(
        duplicate
            .as_str()
            .is_some_and(|text| text.contains("duplicate_message_id")),
        "{duplicate}"
    );

    // Problems: refusals with Segment's reasons, and a silent drop, flagged as loudly.
    let event = r#"{"type":"identify","userId":"cus_9","messageId":"m9"}"#;
    let auth = basic(KEY);
    let authorized = [("authorization", auth.as_str())];
    assert_eq!(post(&url, "{not json", &authorized).await, 400);
    assert_eq!(
        post(
            &url,
            format!(r#"{{"batch":[{event}]}}"#),
            &[("authorization", &basic("wrong-key"))]
        )
        .await,
        401
    );
    let gzipped = [
        ("authorization", auth.as_str()),
        ("content-encoding", "gzip"),
    ];
    assert_eq!(post(&url, "not gzip at all", &gzipped).await, 400);
    let anonymous =
        r#"{"batch":[{"type":"identify","messageId":"m-nobody","traits":{"plan":"x"}}]}"#;
    assert_eq!(post(&url, gzip(anonymous), &gzipped).await, 200);
    page.click("nav button[data-tab=problems]").await;
    page.wait_for("document.getElementById('count-dropped').textContent === '1'")
        .await;
    assert_eq!(page.text("#count-refused").await, "3");
    let invalid_json = page.text("#problems li[data-code=invalid_json]").await;
    assert!(
        invalid_json
            .as_str()
            .is_some_and(|text| text.contains("refused") && text.contains("invalid JSON body")),
        "{invalid_json}"
    );
    let unauthorized = page.text("#problems li[data-code=unauthorized]").await;
    assert!(
        unauthorized
            .as_str()
            .is_some_and(|text| text.contains("invalid write key") && !text.contains("wrong-key")),
        "{unauthorized}"
    );
    assert_eq!(
        count(&mut page, "#problems li[data-code=invalid_gzip]").await,
        1
    );
    let dropped = page
        .text("#problems li[data-kind=dropped][data-code=missing_identity]")
        .await;
    assert!(
        dropped
            .as_str()
            .is_some_and(|text| text.contains("dropped (200)")
                && text.contains("neither a non-empty userId nor anonymousId")),
        "{dropped}"
    );

    // Requests: the gzipped request's body is shown decoded, its key hidden.
    page.click("nav button[data-tab=requests]").await;
    page.click("#requests li .line").await;
    page.wait_for("document.querySelector('#request pre')?.textContent.includes('m-nobody')")
        .await;
    let request = page.text("#request").await;
    let request = request.as_str().expect("text");
    assert!(request.contains("authorization(hidden)"), "{request}");
    assert!(!request.contains(&auth), "{request}");

    // A fuller page for the README's screenshot: the sample customers, live.
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/customers.csv");
    page.click("nav button[data-tab=events]").await;
    sync(&dir, &url, sample).await;
    page.wait_for("document.querySelectorAll('#events li').length >= 40")
        .await;
    assert_eq!(page.eval("window.__sameDocument === true").await, true);
    let png = page.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("debugger.png");
    std::fs::write(&shot, &png).expect("write the screenshot");
    // `DEBUGGER_SCREENSHOT=docs/debugger.png` refreshes the README's picture.
    if let Some(path) = std::env::var_os("DEBUGGER_SCREENSHOT") {
        std::fs::write(path, &png).expect("write the screenshot");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debugger_page_shows_every_type_and_drops_what_segment_drops() {
    let browser = Browser::launch().await;
    let mut page = browser.page().await;
    let dir = TempDir::new().expect("temp dir");
    let (_receiver, url) = receive(&dir).await;
    page.navigate(&format!("{url}/")).await;
    page.wait_for("document.getElementById('status').textContent === 'live'")
        .await;

    let body = r#"{"batch":[
        {"type":"track","userId":"u1","messageId":"t1","event":"Order Completed","properties":{"revenue":12}},
        {"type":"group","userId":"u1","messageId":"g1","groupId":"acc_1","traits":{"name":"Initech"}},
        {"type":"alias","userId":"u1","messageId":"a1","previousId":"anon_7"},
        {"type":"page","userId":"u1","messageId":"p1","name":"Pricing","properties":{"path":"/pricing"}},
        {"type":"screen","anonymousId":"anon_7","messageId":"s1","name":"Home"},
        {"type":"track","userId":"u1","messageId":"t2"}]}"#;
    assert_eq!(
        post(&url, body, &[("authorization", &basic(KEY))]).await,
        200
    );
    page.wait_for("document.querySelectorAll('#events li').length === 5")
        .await;
    let rows = page
        .eval(
            "[...document.querySelectorAll('#events li .line')]
               .map(line => [line.querySelector('.type').textContent,
                             line.querySelector('.traits').textContent])",
        )
        .await;
    // Newest first; the short column shows what each type carries.
    assert_eq!(
        rows,
        serde_json::json!([
            ["screen", "Home"],
            ["page", r#"Pricing {"path":"/pricing"}"#],
            ["alias", "previousId anon_7"],
            ["group", r#"acc_1 {"name":"Initech"}"#],
            ["track", r#"Order Completed {"revenue":12}"#],
        ])
    );
    page.click("nav button[data-tab=problems]").await;
    page.wait_for("document.getElementById('count-dropped').textContent === '1'")
        .await;
    let dropped = page
        .text("#problems li[data-kind=dropped][data-code=missing_field]")
        .await;
    assert!(
        dropped
            .as_str()
            .is_some_and(|text| text.contains("dropped (200)") && text.contains("\"event\"")),
        "{dropped}"
    );
}

#[tokio::test]
async fn binding_beyond_loopback_warns_that_there_is_no_authentication() {
    let dir = TempDir::new().expect("temp dir");
    // 192.0.2.1 is reserved for documentation: the warning is printed, then binding it
    // fails, so nothing is ever exposed by this test.
    let output = Command::new(BIN)
        .args(["receive", "--bind", "192.0.2.1", "--port", "0"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("the binary runs");
    let text = stderr(&output);
    assert!(
        text.contains("warning: listening on 192.0.2.1") && text.contains("no authentication"),
        "{text}"
    );
    assert!(text.contains("cannot start the receiver"), "{text}");
    assert_eq!(output.status.code(), Some(2), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_receiver_with_a_summary_that_counts_refusals() {
    let dir = TempDir::new().expect("temp dir");
    let mut child = Command::new(BIN)
        .args(["receive", "--port", "0", "--keep", "10"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary runs");
    let stdout = child.stdout.take().expect("piped stdout");
    let url = BufReader::new(stdout)
        .lines()
        .next_line()
        .await
        .expect("read stdout")
        .expect("the first line is the URL");
    assert_eq!(post(&url, "{not json", &[]).await, 400);
    let event = r#"{"batch":[{"type":"identify","userId":"u1","messageId":"m1"},
        {"type":"track","userId":"u1","messageId":"m2","event":"E"},
        {"type":"group","userId":"u1","messageId":"m3"}]}"#;
    assert_eq!(post(&url, event, &[]).await, 200);

    let pid = child.id().expect("running").to_string();
    let status = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(status.success());
    let output = child.wait_with_output().await.expect("it stops");
    let text = stderr(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("keeping the last 10 events"), "{text}");
    assert!(
        text.contains(
            "received 2 requests (1 refused): 2 events accepted (0 duplicates), 1 dropped"
        ),
        "{text}"
    );
    assert!(
        text.contains("accepted by type: identify 1, track 1"),
        "{text}"
    );
    assert!(
        text.contains("dropped by reason: missing_field 1"),
        "{text}"
    );
}
