//! Sends one request body to Segment's batch endpoint and classifies the answer,
//! or, for a dry run, writes it to a directory instead.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};

use crate::encode::Body;
use crate::error::{Kind, SegmentError};
use crate::retry::{Failure, parse_retry_after};

/// How much of an error answer's body goes into the error message.
const ERROR_BODY_CHARS: usize = 300;

/// Where request bodies go.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per client, never moved on a hot path"
)]
pub(crate) enum Transport {
    Http(HttpTransport),
    /// A dry run: nothing leaves the machine.
    DryRun(std::sync::Arc<DryRun>),
    /// A server that answers from a script, for the worker's model tests.
    #[cfg(test)]
    Scripted(std::sync::Arc<crate::scripted::Server>),
}

impl Transport {
    /// The same transport over new connections; see [`HttpTransport::fresh`].
    pub fn fresh(&self) -> Result<Self, SegmentError> {
        Ok(match self {
            Transport::Http(http) => Transport::Http(http.fresh()?),
            Transport::DryRun(dry) => Transport::DryRun(std::sync::Arc::clone(dry)),
            #[cfg(test)]
            Transport::Scripted(server) => Transport::Scripted(std::sync::Arc::clone(server)),
        })
    }

    /// Where requests go, for messages; `None` for a dry run.
    pub fn endpoint(&self) -> Option<&Url> {
        match self {
            Transport::Http(http) => Some(http.endpoint()),
            Transport::DryRun(_) => None,
            #[cfg(test)]
            Transport::Scripted(_) => None,
        }
    }

    /// Sends (or, in a dry run, writes) one attempt.
    pub async fn send(&self, body: Body, retry_count: u32) -> Result<(), Failure> {
        match self {
            Transport::Http(http) => http.send(body, retry_count).await,
            Transport::DryRun(dry) => dry.write(body),
            #[cfg(test)]
            Transport::Scripted(server) => server.send(body, retry_count).await,
        }
    }
}

/// Writes each request body to `dir/request-NNNNNN.json` (`.json.gz` when
/// gzipped), or only counts them when there is no directory.
#[derive(Debug)]
pub(crate) struct DryRun {
    dir: Option<PathBuf>,
    written: AtomicU64,
}

impl DryRun {
    pub fn new(dir: Option<PathBuf>) -> Result<Self, SegmentError> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                SegmentError::with_source(
                    Kind::InvalidConfig,
                    format!("cannot create the dry-run directory {}", dir.display()),
                    e,
                )
            })?;
        }
        Ok(Self {
            dir,
            written: AtomicU64::new(0),
        })
    }

    fn write(&self, body: Body) -> Result<(), Failure> {
        let n = self.written.fetch_add(1, Ordering::Relaxed) + 1;
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let ext = if body.gzip { "json.gz" } else { "json" };
        let path = dir.join(format!("request-{n:06}.{ext}"));
        // Small files, written once each: blocking briefly is cheaper than a thread hop.
        std::fs::write(&path, &body.bytes).map_err(|e| Failure {
            error: SegmentError::with_source(
                Kind::Internal,
                format!("cannot write the dry-run request {}", path.display()),
                e,
            ),
            retry_after: None,
        })
    }
}

#[derive(Debug, Clone)]
pub(crate) struct HttpTransport {
    http: reqwest::Client,
    endpoint: Url,
    timeout: Duration,
    headers: HeaderMap,
    max_idle: usize,
}

/// Checks that `host` is a usable base URL and returns its batch endpoint.
///
/// A path prefix is kept (proxies need one); a host that already ends in
/// `/v1/batch` is refused with the base URL to use instead, since appending
/// the endpoint again would make every request a 404. Messages never echo
/// user info (`https://KEY@host`): that is where keys end up.
pub(crate) fn batch_endpoint(host: &str) -> Result<Url, SegmentError> {
    let shown = without_user_info(host.trim());
    let bad = |why: &str| {
        SegmentError::new(
            Kind::InvalidConfig,
            format!("segment host `{shown}` is not usable: {why}"),
        )
    };
    let mut base = Url::parse(host.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(bad("expected an http:// or https:// URL"));
    }
    if base.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host name"));
    }
    if !base.username().is_empty() || base.password().is_some() {
        return Err(bad("credentials belong in the write key, not the URL"));
    }
    if base.query().is_some() || base.fragment().is_some() {
        return Err(bad("a base URL has no query or fragment"));
    }
    let path = base.path().trim_end_matches('/');
    if let Some(prefix) = path.strip_suffix("/v1/batch") {
        let mut fixed = base.clone();
        fixed.set_path(prefix);
        let fixed = fixed.as_str().trim_end_matches('/').to_owned();
        return Err(bad(&format!(
            "it ends with /v1/batch, which the client adds itself; use the base URL `{fixed}`"
        )));
    }
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    base.join("v1/batch").map_err(|e| bad(&e.to_string()))
}

/// `host` with anything between `://` and an `@` in its authority replaced,
/// so a message can show which host was meant without showing a key.
fn without_user_info(host: &str) -> String {
    let (scheme, rest) = match host.find("://") {
        Some(at) => host.split_at(at + 3),
        None => ("", host),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
        None => host.to_owned(),
    }
}

/// Checks that `host` is a usable base URL and that a TCP connection to it
/// opens within `timeout`, without sending anything. Lets a tool fail fast on
/// an unreachable host instead of retrying for minutes.
///
/// # Errors
/// `invalid_config` for an unusable URL; `network` if the name does not
/// resolve or nothing answers; `timeout` if the connection does not open in time.
///
/// # Example
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let host = format!("http://{}", listener.local_addr().unwrap());
/// segment_client::check_reachable(&host, Duration::from_secs(1)).await.unwrap();
/// # });
/// ```
pub async fn check_reachable(host: &str, timeout: Duration) -> Result<(), SegmentError> {
    let endpoint = batch_endpoint(host)?;
    let name = endpoint.host_str().unwrap_or_default().to_owned();
    let port = endpoint.port_or_known_default().unwrap_or(443);
    let address = format!(
        "{}:{port}",
        name.trim_start_matches('[').trim_end_matches(']')
    );
    let connect = async {
        let addrs: Vec<_> = tokio::net::lookup_host(&address)
            .await
            .map_err(|e| {
                SegmentError::with_source(Kind::Network, format!("cannot resolve {name}"), e)
            })?
            .collect();
        let mut last = None;
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) => {
                SegmentError::with_source(Kind::Network, format!("cannot connect to {address}"), e)
            }
            None => SegmentError::new(Kind::Network, format!("{name} has no addresses")),
        })
    };
    tokio::time::timeout(timeout, connect)
        .await
        .unwrap_or_else(|_| {
            Err(SegmentError::new(
                Kind::Timeout,
                format!("no connection to {address} within {timeout:?}"),
            ))
        })
}

/// The `Authorization` header for `write_key`: Basic, with an empty password.
fn basic_auth(write_key: &str) -> Result<HeaderValue, SegmentError> {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| {
        SegmentError::new(
            Kind::InvalidConfig,
            "the write key cannot be sent in a header",
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

impl HttpTransport {
    pub fn new(
        endpoint: Url,
        write_key: &str,
        timeout: Duration,
        max_idle: usize,
    ) -> Result<Self, SegmentError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, basic_auth(write_key)?);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Self::with_headers(endpoint, headers, timeout, max_idle)
    }

    /// The same settings over new connections: a connection pool belongs to
    /// the runtime that opened it, so a worker rescued onto a new runtime
    /// needs its own.
    pub fn fresh(&self) -> Result<Self, SegmentError> {
        Self::with_headers(
            self.endpoint.clone(),
            self.headers.clone(),
            self.timeout,
            self.max_idle,
        )
    }

    /// The endpoint requests go to.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    fn with_headers(
        endpoint: Url,
        headers: HeaderMap,
        timeout: Duration,
        max_idle: usize,
    ) -> Result<Self, SegmentError> {
        let http = reqwest::Client::builder()
            .default_headers(headers.clone())
            // A redirected POST becomes a GET without a body, and its 2xx
            // would count as a delivery: a 3xx is an error instead.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("segment-sync/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeout)
            .pool_max_idle_per_host(max_idle)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| {
                SegmentError::with_source(Kind::InvalidConfig, "could not build the HTTP client", e)
            })?;
        Ok(Self {
            http,
            endpoint,
            timeout,
            headers,
            max_idle,
        })
    }

    /// Sends one attempt. `retry_count` is 0 on the first attempt and is sent
    /// as `X-Retry-Count` on the others.
    pub async fn send(&self, body: Body, retry_count: u32) -> Result<(), Failure> {
        let mut request = self.http.post(self.endpoint.clone()).timeout(self.timeout);
        if body.gzip {
            request = request.header(header::CONTENT_ENCODING, "gzip");
        }
        if retry_count > 0 {
            request = request.header("X-Retry-Count", retry_count);
        }
        let response = request
            .body(body.bytes)
            .send()
            .await
            .map_err(|e| self.request_failure(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let detail = error_body(response).await;
        Err(Failure {
            error: status_error(status, &detail),
            retry_after,
        })
    }

    fn request_failure(&self, error: reqwest::Error) -> Failure {
        let error = if error.is_timeout() {
            SegmentError::with_source(
                Kind::Timeout,
                format!("no answer from {} within {:?}", self.endpoint, self.timeout),
                error,
            )
        } else {
            let what = if error.is_connect() {
                "could not connect to"
            } else {
                "request failed to"
            };
            SegmentError::with_source(Kind::Network, format!("{what} {}", self.endpoint), error)
        };
        Failure {
            error,
            retry_after: None,
        }
    }
}

fn status_error(status: StatusCode, detail: &str) -> SegmentError {
    let kind = if status == StatusCode::TOO_MANY_REQUESTS {
        Kind::RateLimited
    } else if status.is_redirection() {
        // Segment never redirects its API: the host setting is wrong.
        Kind::InvalidConfig
    } else {
        Kind::HttpStatus
    };
    let mut message = format!("segment answered {status}");
    if matches!(status.as_u16(), 401 | 403) {
        message.push_str(" (the write key was refused)");
    }
    if status.is_redirection() {
        message.push_str(
            " (a redirect, which is not followed: set the host to the API's base URL itself)",
        );
    }
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(detail);
    }
    SegmentError::with_status(kind, status.as_u16(), message)
}

/// The start of an error answer's body, on one line; empty if unreadable.
async fn error_body(mut response: reqwest::Response) -> String {
    let mut raw = Vec::new();
    while raw.len() < ERROR_BODY_CHARS * 4 {
        match response.chunk().await {
            Ok(Some(chunk)) => raw.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&raw);
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(ERROR_BODY_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_is_built_from_the_host() {
        let url = |h: &str| batch_endpoint(h).map(|u| u.to_string());
        assert_eq!(
            url("https://api.segment.io").unwrap(),
            "https://api.segment.io/v1/batch"
        );
        assert_eq!(
            url("http://127.0.0.1:9/").unwrap(),
            "http://127.0.0.1:9/v1/batch"
        );
        assert_eq!(
            url("https://proxy.example/seg").unwrap(),
            "https://proxy.example/seg/v1/batch"
        );
        assert_eq!(
            url("https://proxy.example/seg/v1/").unwrap(),
            "https://proxy.example/seg/v1/v1/batch"
        );
    }

    #[test]
    fn bad_hosts_are_config_errors() {
        for host in [
            "",
            "api.segment.io",
            "ftp://x",
            "https://key@api.segment.io",
            "http://",
            "http://127.0.0.1:8080/v1/batch",
            "http://127.0.0.1:8080/proxy/v1/batch/",
            "http://127.0.0.1:8080/?x=1",
        ] {
            let err = batch_endpoint(host).unwrap_err();
            assert!(err.is_config(), "{host}: {err}");
        }
    }

    #[test]
    fn user_info_is_never_shown() {
        assert_eq!(without_user_info("https://k:p@h/x@y"), "https://***@h/x@y");
        assert_eq!(
            without_user_info("https://k@bad host"),
            "https://***@bad host"
        );
        assert_eq!(without_user_info("https://h/p"), "https://h/p");
        let err = batch_endpoint("http://127.0.0.1:8080/proxy/v1/batch").unwrap_err();
        assert!(
            err.message().contains("`http://127.0.0.1:8080/proxy`"),
            "{err}"
        );
    }

    #[test]
    fn auth_header_is_basic_with_a_trailing_colon_and_sensitive() {
        let value = basic_auth("abc").unwrap();
        assert_eq!(value.to_str().unwrap(), "Basic YWJjOg==");
        assert!(value.is_sensitive());
    }

    #[test]
    fn statuses_become_errors_with_codes() {
        let err = status_error(StatusCode::TOO_MANY_REQUESTS, "");
        assert_eq!(err.code(), Some("rate_limited"));
        let err = status_error(StatusCode::UNAUTHORIZED, "bad key");
        assert!(err.is_unauthorized());
        assert_eq!(
            err.message(),
            "segment answered 401 Unauthorized (the write key was refused): bad key"
        );
    }
}
