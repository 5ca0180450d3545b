//! The receiver in a child process (this bench binary, re-executed), so its
//! CPU and memory are not counted, and its control endpoints.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use segment_receiver::{FaultPlan, Receiver, ReceiverConfig, Record, Stats};

/// Makes the re-executed bench binary serve the receiver instead.
pub const SERVE_RECEIVER: &str = "--serve-receiver";

/// The receiver child; killed when dropped so no run leaves it behind.
pub struct ReceiverProcess {
    child: Child,
    pub url: String,
}

impl ReceiverProcess {
    pub fn spawn() -> Self {
        let exe = std::env::current_exe().expect("the bench binary could not find its own path");
        let mut child = Command::new(exe)
            .arg(SERVE_RECEIVER)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("could not start the receiver process");
        let stdout = child.stdout.take().expect("the child's stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("could not read the receiver's URL");
        let url = line.trim().to_owned();
        let receiver = Self { child, url };
        assert!(
            receiver.url.starts_with("http://"),
            "the receiver process printed {line:?} instead of its URL"
        );
        receiver
    }
}

impl Drop for ReceiverProcess {
    fn drop(&mut self) {
        // It may already be gone; either way there is nothing left to do.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child's side: serve until the parent closes stdin, exits or kills us.
pub fn serve_receiver() {
    let runtime = tokio::runtime::Runtime::new().expect("could not start the receiver's runtime");
    let config = ReceiverConfig::new().record(Record::CountsOnly);
    let receiver = runtime
        .block_on(Receiver::start(config))
        .expect("could not start the receiver");
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", receiver.url())
        .and_then(|()| stdout.flush())
        .expect("could not tell the parent the receiver's URL");
    // The server runs on the runtime's worker threads while this one waits.
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    runtime.block_on(receiver.shutdown());
}

/// The receiver's control endpoints, called from the bench process.
pub struct Control<'a> {
    runtime: &'a tokio::runtime::Runtime,
    http: reqwest::Client,
    url: &'a str,
}

impl<'a> Control<'a> {
    pub fn new(runtime: &'a tokio::runtime::Runtime, url: &'a str) -> Self {
        Self {
            runtime,
            http: reqwest::Client::new(),
            url,
        }
    }

    pub fn url(&self) -> &str {
        self.url
    }

    pub fn reset(&self) {
        self.post("reset", String::new());
    }

    pub fn set_faults(&self, plan: &FaultPlan) {
        let body = serde_json::to_string(plan).expect("a fault plan serialises");
        self.post("faults", body);
    }

    fn post(&self, endpoint: &str, body: String) {
        let request = self
            .http
            .post(format!("{}/_receiver/{endpoint}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send();
        self.runtime
            .block_on(request)
            .and_then(reqwest::Response::error_for_status)
            .unwrap_or_else(|e| panic!("POST /_receiver/{endpoint} failed: {e}"));
    }

    pub fn stats(&self) -> Stats {
        let request = self
            .http
            .get(format!("{}/_receiver/stats", self.url))
            .send();
        let body = self.runtime.block_on(async {
            request
                .await
                .and_then(reqwest::Response::error_for_status)?
                .text()
                .await
        });
        let body = body.expect("could not fetch the receiver's stats");
        serde_json::from_str(&body).expect("the receiver's stats are not the expected JSON")
    }
}
