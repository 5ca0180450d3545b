//! A server that answers from a script, for the worker's model tests: no
//! sockets, so tokio's paused clock decides every wait exactly.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::encode::Body;
use crate::error::{Kind, SegmentError};
use crate::retry::Failure;

/// One scripted answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Ok,
    /// An error status without `Retry-After`.
    Status(u16),
    /// An error status with `Retry-After` in seconds (0 allowed).
    RetryAfter(u16, u64),
    /// No answer within the request timeout (a hang, as the client sees it).
    Timeout,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub sent_at: Instant,
    pub answered_at: Instant,
    pub message_ids: Vec<String>,
    pub body_bytes: usize,
    pub retry_count: u32,
    pub answer: Answer,
}

#[derive(Debug)]
pub(crate) struct Server {
    answers: Vec<Answer>,
    latency: Duration,
    timeout: Duration,
    log: Mutex<Vec<Request>>,
}

impl Server {
    /// Answers requests with `answers` in turn, cycling.
    pub fn new(answers: Vec<Answer>, latency: Duration, timeout: Duration) -> Self {
        assert!(!answers.is_empty());
        Self {
            answers,
            latency,
            timeout,
            log: Mutex::new(Vec::new()),
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    pub async fn send(&self, body: Body, retry_count: u32) -> Result<(), Failure> {
        assert!(!body.gzip, "model tests send plain JSON");
        let sent_at = Instant::now();
        let json: serde_json::Value = serde_json::from_slice(&body.bytes).expect("valid JSON");
        let message_ids = json["batch"]
            .as_array()
            .expect("a batch")
            .iter()
            .map(|e| e["messageId"].as_str().expect("a messageId").to_owned())
            .collect();
        let answer = {
            let log = self.log.lock().unwrap();
            self.answers[log.len() % self.answers.len()]
        };
        // Reserve the answer's place in the log now, so the script is
        // followed in the order requests arrive.
        let index = {
            let mut log = self.log.lock().unwrap();
            log.push(Request {
                sent_at,
                answered_at: sent_at,
                message_ids,
                body_bytes: body.bytes.len(),
                retry_count,
                answer,
            });
            log.len() - 1
        };
        let wait = if answer == Answer::Timeout {
            self.timeout
        } else {
            self.latency
        };
        tokio::time::sleep(wait).await;
        self.log.lock().unwrap()[index].answered_at = Instant::now();
        let status_failure = |status: u16, retry_after: Option<Duration>| {
            let kind = if status == 429 {
                Kind::RateLimited
            } else {
                Kind::HttpStatus
            };
            Err(Failure {
                error: SegmentError::with_status(kind, status, format!("scripted {status}")),
                retry_after,
            })
        };
        match answer {
            Answer::Ok => Ok(()),
            Answer::Status(status) => status_failure(status, None),
            Answer::RetryAfter(status, secs) => {
                status_failure(status, Some(Duration::from_secs(secs)))
            }
            Answer::Timeout => Err(Failure {
                error: SegmentError::new(Kind::Timeout, "scripted timeout"),
                retry_after: None,
            }),
        }
    }
}
