//! Headless Chromium driven over the DevTools protocol: a websocket and a handful of
//! commands (navigate, evaluate, screenshot), so the tests need no chromedriver and no
//! browser-automation framework.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Where Debian's `chromium` package puts the browser; `CHROMIUM` overrides it.
const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";

/// How long a page gets to reach an expected state: a guard against hanging, never a
/// measure of speed.
const WAIT: Duration = Duration::from_secs(20);

/// A headless Chromium with a fresh profile, killed when dropped.
pub struct Browser {
    _child: Child,
    _profile: TempDir,
    debug_port: u16,
}

/// One tab, driven over its DevTools websocket.
pub struct Page {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Browser {
    /// Start headless Chromium. Panics with what to install when it is missing: a
    /// browser test that cannot run must fail, not pass.
    pub async fn launch() -> Browser {
        let path = std::env::var_os("CHROMIUM")
            .map_or_else(|| PathBuf::from(DEFAULT_CHROMIUM), PathBuf::from);
        assert!(
            path.exists(),
            "this test needs headless Chromium and found none at {}: install Debian's \
             `chromium` package (`apt-get install -y chromium`; .ci/run does) or set \
             CHROMIUM to the browser's path",
            path.display()
        );
        let profile = TempDir::new().expect("a temporary profile directory");
        let mut child = Command::new(&path)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                "--window-size=1280,860",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", path.display()));

        // Chromium prints its DevTools address on stderr; keep draining stderr afterwards
        // so that the browser never blocks on a full pipe.
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let find_port = async {
            while let Some(line) = lines.next_line().await.expect("read chromium's stderr") {
                if let Some(rest) = line.split("DevTools listening on ws://127.0.0.1:").nth(1) {
                    let port = rest.split('/').next().unwrap_or_default();
                    return port.parse::<u16>().ok();
                }
            }
            None
        };
        let debug_port = tokio::time::timeout(WAIT, find_port)
            .await
            .expect("chromium announces its DevTools port in time")
            .expect("chromium announces its DevTools port");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Browser {
            _child: child,
            _profile: profile,
            debug_port,
        }
    }

    /// The tab Chromium opened at start.
    pub async fn page(&self) -> Page {
        let list = format!("http://127.0.0.1:{}/json/list", self.debug_port);
        let text = reqwest::get(list)
            .await
            .expect("DevTools answers")
            .text()
            .await
            .expect("DevTools lists its targets");
        let targets: Vec<Value> = serde_json::from_str(&text).expect("a JSON list of targets");
        let url = targets
            .iter()
            .find(|target| target["type"] == "page")
            .and_then(|target| target["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_owned();
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("connect to the page's DevTools websocket");
        Page { socket, next_id: 1 }
    }
}

impl Page {
    /// Send one DevTools command and return its result; panics on a protocol error.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let command = json!({ "id": id, "method": method, "params": params });
        self.socket
            .send(Message::text(command.to_string()))
            .await
            .expect("send a DevTools command");
        let answer = async {
            while let Some(message) = self.socket.next().await {
                let message = message.expect("read from DevTools");
                let Message::Text(text) = message else {
                    continue;
                };
                let value: Value = serde_json::from_str(&text).expect("DevTools sends JSON");
                // Anything without our id is an event we did not ask for.
                if value["id"] == id {
                    return value;
                }
            }
            panic!("DevTools closed the connection during {method}")
        };
        let answer = tokio::time::timeout(WAIT, answer)
            .await
            .unwrap_or_else(|_| panic!("DevTools did not answer {method}"));
        assert!(
            answer.get("error").is_none(),
            "{method} failed: {}",
            answer["error"]
        );
        answer["result"].clone()
    }

    /// Evaluate `expression` in the page (awaiting a promise) and return its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression} threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// The text of the first element matching `selector`, or `null` if none does.
    pub async fn text(&mut self, selector: &str) -> Value {
        let selector = serde_json::to_string(selector).expect("a string");
        self.eval(&format!(
            "document.querySelector({selector})?.textContent ?? null"
        ))
        .await
    }

    /// Click the first element matching `selector` (it must exist).
    pub async fn click(&mut self, selector: &str) {
        let quoted = serde_json::to_string(selector).expect("a string");
        let clicked = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({quoted}); if (!e) return false; e.click(); return true; }})()"
            ))
            .await;
        assert_eq!(clicked, true, "nothing to click at {selector}");
    }

    /// Wait until `condition` (a JavaScript expression) is truthy. Polls, as a user
    /// looking at the page would; panics with the page's text after [`WAIT`].
    pub async fn wait_for(&mut self, condition: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let value = self.eval(&format!("!!({condition})")).await;
            if value == true {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let body = self.eval("document.body.innerText").await;
                panic!("the page never showed `{condition}`; it shows:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Load `url` and wait for it (and its scripts) to finish loading.
    pub async fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
        self.wait_for(&format!(
            "location.href === {} && document.readyState === 'complete'",
            serde_json::to_string(url).expect("a string")
        ))
        .await;
    }

    /// A PNG of what the page shows.
    pub async fn screenshot(&mut self) -> Vec<u8> {
        let result = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let data = result["data"].as_str().expect("base64 PNG data");
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("valid base64")
    }
}
