//! The REST client: one blocking HTTP request to the cluster, whichever master answers it.
//!
//! Masters are tried in order. An address that cannot be reached is skipped. A standby answers
//! 503 with the leader's address in the body; the client then asks that leader, once per
//! request, so in HA mode it follows the leader by itself. The master that answered last is
//! asked first next time, so `submit --wait` does not knock on dead doors at every poll.
//!
//! A request that is not idempotent (a POST such as kill) is only repeated elsewhere when it
//! provably never reached a master (the connection was not established) or was refused with 503;
//! a POST that timed out or lost its connection may have been applied, and is reported as such.
//! A POST that carries an `Idempotency-Key` (a submission) is safe to repeat: the master answers a
//! repeat of the same key and body with the app the first one created. So it is resent, with the
//! same key, to the other masters after a timeout or a lost connection too, like a GET. So is a
//! POST that changes nothing (a submission's dry run, a backfill's). PATCH and DELETE (schedule
//! updates and deletions) follow the rule of a POST without a key.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use aloha_core::api::ErrorBody;
use reqwest::blocking::Client as Http;
use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::cli::parse_master;
use crate::error::CtlError;

/// The longest time spent establishing a connection to one master. Shorter than the request
/// timeout so that a dead master (e.g. a vanished host) delays failover to the next one less.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How much of an unexpected body is quoted in an error message.
const SNIPPET_CHARS: usize = 160;

/// The header that makes a submission safe to repeat (see `docs/rest-api.md`).
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// A fresh idempotency key: 128 random bits from the operating system, as 32 hex digits.
pub fn fresh_idempotency_key() -> Result<String, CtlError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| CtlError::Internal(format!("cannot make an idempotency key: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A response body both as served (for `--output json`) and decoded (for tables and logic).
#[derive(Debug, Clone)]
pub struct Served<T> {
    /// The JSON exactly as the master sent it.
    pub raw: Value,
    /// The same, decoded.
    pub data: T,
}

/// The cluster's REST API, over every known master.
pub struct Client {
    masters: Vec<String>,
    http: Http,
    timeout: Duration,
    /// The master that answered last; asked first.
    preferred: Mutex<Option<String>>,
}

/// One request, re-sendable to several masters.
struct Request<'a> {
    method: Method,
    path: &'a str,
    query: &'a [(&'a str, String)],
    body: Option<Vec<u8>>,
    /// Sent as `Idempotency-Key`; makes a POST safe to repeat.
    idempotency_key: Option<&'a str>,
    /// Changes nothing on the master (a GET, a dry run): resent elsewhere as freely as a GET.
    read_only: bool,
}

/// An HTTP answer from one master, not yet judged.
struct Answer {
    url: String,
    status: StatusCode,
    body: Vec<u8>,
}

/// Why one master gave no HTTP answer.
enum NoAnswer {
    /// The connection was never established: the request did not reach the master.
    NotConnected(String),
    /// The request may have reached the master: timed out or broke mid-way.
    Lost(String),
}

impl Client {
    /// A client for `masters` (already normalized by [`parse_master`]) with a per-request
    /// `timeout`. Honors the usual `HTTP_PROXY`/`NO_PROXY` environment.
    pub fn new(
        masters: Vec<String>,
        timeout: Duration,
        token: Option<&str>,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<Client, CtlError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = token {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| CtlError::Usage("the token must be printable ASCII".into()))?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let mut builder = Http::builder();
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                CtlError::Usage(format!(
                    "cannot read the CA certificate {}: {e}",
                    path.display()
                ))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                CtlError::Usage(format!("{} is not a PEM certificate: {e}", path.display()))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
            .user_agent(concat!("alohactl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CtlError::Internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client::with_http(masters, http, timeout))
    }

    /// A client over a prepared HTTP client (tests use one that ignores proxies).
    fn with_http(masters: Vec<String>, http: Http, timeout: Duration) -> Client {
        let mut unique: Vec<String> = Vec::with_capacity(masters.len());
        for m in masters {
            if !unique.contains(&m) {
                unique.push(m);
            }
        }
        Client {
            masters: unique,
            http,
            timeout,
            preferred: Mutex::new(None),
        }
    }

    /// Every master, the one that answered last first.
    pub fn masters(&self) -> Vec<String> {
        let preferred = self
            .preferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out: Vec<String> = preferred.into_iter().collect();
        for m in &self.masters {
            if !out.contains(m) {
                out.push(m.clone());
            }
        }
        out
    }

    /// `GET path?query`, decoded as `T`.
    pub fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Served<T>, CtlError> {
        self.call(&Request {
            method: Method::GET,
            path,
            query,
            body: None,
            idempotency_key: None,
            read_only: true,
        })
    }

    /// `POST path` with an optional JSON body, decoded as `T`. Not repeated on another master
    /// once it may have reached one.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<Served<T>, CtlError> {
        self.call(&Request {
            method: Method::POST,
            path,
            query: &[],
            body: body.map(encode).transpose()?,
            idempotency_key: None,
            read_only: false,
        })
    }

    /// `PATCH path` with a JSON body, decoded as `T`. Like a POST without a key, not repeated
    /// on another master once it may have reached one.
    pub fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Served<T>, CtlError> {
        self.call(&Request {
            method: Method::PATCH,
            path,
            query: &[],
            body: Some(encode(body)?),
            idempotency_key: None,
            read_only: false,
        })
    }

    /// `PUT path` with a JSON body, decoded as `T`. A PUT sets a whole resource, so sending it
    /// twice leaves the same state: like a GET it is resent to the other masters after a
    /// timeout or a lost connection.
    pub fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Served<T>, CtlError> {
        self.call(&Request {
            method: Method::PUT,
            path,
            query: &[],
            body: Some(encode(body)?),
            idempotency_key: None,
            read_only: true,
        })
    }

    /// `DELETE path`, decoded as `T`. Not repeated on another master once it may have reached
    /// one: a repeat would answer 404 for a deletion that succeeded.
    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<Served<T>, CtlError> {
        self.call(&Request {
            method: Method::DELETE,
            path,
            query: &[],
            body: None,
            idempotency_key: None,
            read_only: false,
        })
    }

    /// `POST path?query` with a JSON body the master only reads, changing nothing (a dry run),
    /// decoded as `T`. Like a GET it is resent to the other masters after a timeout or a lost
    /// connection.
    pub fn post_read_only<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        body: &B,
    ) -> Result<Served<T>, CtlError> {
        self.call(&Request {
            method: Method::POST,
            path,
            query,
            body: Some(encode(body)?),
            idempotency_key: None,
            read_only: true,
        })
    }

    /// `POST path` with a JSON body and an `Idempotency-Key: key` header, decoded as `T`. The
    /// master applies it at most once per key, so it is resent with the same key to the other
    /// masters after a timeout or a lost connection.
    pub fn post_idempotent<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        key: &str,
    ) -> Result<Served<T>, CtlError> {
        self.call(&Request {
            method: Method::POST,
            path,
            query: &[],
            body: Some(encode(body)?),
            idempotency_key: Some(key),
            read_only: false,
        })
    }

    fn call<T: DeserializeOwned>(&self, req: &Request<'_>) -> Result<Served<T>, CtlError> {
        decode(self.exchange(req)?)
    }

    /// The preferred master first, then the configured ones in order.
    fn candidates(&self) -> VecDeque<String> {
        let preferred = self
            .preferred
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        preferred
            .into_iter()
            .chain(self.masters.iter().cloned())
            .collect()
    }

    fn remember(&self, base: &str) {
        *self
            .preferred
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(base.to_string());
    }

    /// Sends `req` until a master gives an answer other than 503, following one leader hint.
    /// If every master refused with 503, the last refusal is returned (as an answer, so that it
    /// becomes an API error with the master's own words). A keyed request that may have reached
    /// a master without an answer, and got none elsewhere, is reported as uncertain.
    fn exchange(&self, req: &Request<'_>) -> Result<Answer, CtlError> {
        let mut queue = self.candidates();
        let mut tried: Vec<String> = Vec::new();
        let mut failures: Vec<(String, String)> = Vec::new();
        let mut unavailable: Option<Answer> = None;
        let mut followed_leader = false;
        // The last master that may have applied a keyed request without answering.
        let mut lost: Option<(String, String)> = None;

        while let Some(base) = queue.pop_front() {
            if tried.contains(&base) {
                continue;
            }
            tried.push(base.clone());
            match self.send(&base, req) {
                Err(NoAnswer::NotConnected(why)) => failures.push((base, why)),
                Err(NoAnswer::Lost(why)) if req.read_only => failures.push((base, why)),
                // Safe to send elsewhere; but the error, if no one answers, must say it may
                // have been applied.
                Err(NoAnswer::Lost(why)) if req.idempotency_key.is_some() => {
                    lost = Some((join(&base, req.path), why.clone()));
                    failures.push((base, why));
                }
                Err(NoAnswer::Lost(why)) => {
                    return Err(CtlError::Uncertain {
                        method: req.method.to_string(),
                        url: join(&base, req.path),
                        cause: why,
                        idempotency_key: None,
                    })
                }
                Ok(answer) if answer.status == StatusCode::SERVICE_UNAVAILABLE => {
                    let leader = parse_error_body(&answer.body)
                        .and_then(|b| b.leader)
                        .and_then(|l| parse_master(&l).ok());
                    if let Some(leader) = leader {
                        if !followed_leader && !tried.contains(&leader) {
                            followed_leader = true;
                            queue.push_front(leader);
                        }
                    }
                    unavailable = Some(answer);
                }
                Ok(answer) => {
                    self.remember(&base);
                    return Ok(answer);
                }
            }
        }
        if let Some((url, cause)) = lost {
            // No master confirmed it, but one may have applied it: only the key makes a
            // later repeat safe, so the error names it.
            return Err(CtlError::Uncertain {
                method: req.method.to_string(),
                url,
                cause,
                idempotency_key: req.idempotency_key.map(str::to_string),
            });
        }
        match unavailable {
            Some(answer) => Ok(answer),
            None => Err(CtlError::Unreachable { failures }),
        }
    }

    /// One HTTP exchange with one master.
    fn send(&self, base: &str, req: &Request<'_>) -> Result<Answer, NoAnswer> {
        let url = build_url(base, req.path, req.query)
            .map_err(|e| NoAnswer::NotConnected(format!("invalid URL: {e}")))?;
        let url_text = url.to_string();
        let mut builder = self.http.request(req.method.clone(), url);
        if let Some(body) = &req.body {
            builder = builder
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        if let Some(key) = req.idempotency_key {
            let value = HeaderValue::from_str(key)
                .map_err(|_| NoAnswer::NotConnected(format!("invalid idempotency key {key:?}")))?;
            builder = builder.header(IDEMPOTENCY_KEY, value);
        }
        let response = builder.send().map_err(|e| self.classify(&e))?;
        let status = response.status();
        let body = response.bytes().map_err(|e| self.classify(&e))?.to_vec();
        Ok(Answer {
            url: url_text,
            status,
            body,
        })
    }

    fn classify(&self, e: &reqwest::Error) -> NoAnswer {
        if e.is_connect() {
            NoAnswer::NotConnected(root_cause(e))
        } else if e.is_timeout() {
            NoAnswer::Lost(format!(
                "no answer within {}",
                crate::output::duration(self.timeout)
            ))
        } else {
            NoAnswer::Lost(root_cause(e))
        }
    }
}

fn encode<B: Serialize>(body: &B) -> Result<Vec<u8>, CtlError> {
    serde_json::to_vec(body)
        .map_err(|e| CtlError::Internal(format!("cannot encode the request: {e}")))
}

/// `base` + `path` (which starts with `/`) + the query.
fn build_url(base: &str, path: &str, query: &[(&str, String)]) -> Result<Url, String> {
    let mut url = Url::parse(&join(base, path)).map_err(|e| e.to_string())?;
    if !query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in query {
            pairs.append_pair(k, v);
        }
    }
    Ok(url)
}

fn join(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

/// Percent-encodes one path segment (an app id typed by a user may contain anything).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The innermost cause of a reqwest error: "Connection refused (os error 111)" rather than
/// "error sending request for url (...)".
fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Reads an error body `{"error": "...", "leader": "..."}`; `None` if the body is not one.
pub fn parse_error_body(body: &[u8]) -> Option<ErrorBody> {
    serde_json::from_slice::<ErrorBody>(body).ok()
}

/// Judges an answer: a success status must carry the expected JSON; any other status becomes an
/// API error carrying the master's `error` string.
fn decode<T: DeserializeOwned>(answer: Answer) -> Result<Served<T>, CtlError> {
    if !answer.status.is_success() {
        return Err(api_error(answer.status, &answer.body));
    }
    let bad = |problem: String| CtlError::BadResponse {
        url: answer.url.clone(),
        status: answer.status,
        problem,
    };
    let raw: Value = serde_json::from_slice(&answer.body)
        .map_err(|_| bad(format!("the body is not JSON: {}", snippet(&answer.body))))?;
    let data = T::deserialize(&raw).map_err(|e| bad(format!("unexpected JSON: {e}")))?;
    Ok(Served { raw, data })
}

/// The error for a non-success answer.
pub fn api_error(status: StatusCode, body: &[u8]) -> CtlError {
    let message = match parse_error_body(body) {
        Some(b) if !b.error.trim().is_empty() => b.error,
        Some(_) => "the master gave no reason".to_string(),
        None if body.iter().all(u8::is_ascii_whitespace) => "the master gave no reason".to_string(),
        None if serde_json::from_slice::<Value>(body).is_ok() => {
            format!(
                "the master answered with an unexpected body: {}",
                snippet(body)
            )
        }
        None => format!(
            "the master answered with a non-JSON body: {}",
            snippet(body)
        ),
    };
    CtlError::Api { status, message }
}

/// The start of a body, on one line, for error messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        return "(empty)".to_string();
    }
    crate::output::truncate(&line, SNIPPET_CHARS)
}

/// The test server and client are also used by the `commands` tests.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aloha_core::api::WorkerList;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;

    /// A request as the test server saw it.
    #[derive(Debug, Clone)]
    pub(crate) struct Seen {
        pub(crate) method: String,
        pub(crate) target: String,
        /// `(name, value)`, names in lower case.
        pub(crate) headers: Vec<(String, String)>,
        pub(crate) body: String,
    }

    impl Seen {
        pub(crate) fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// A real HTTP/1.1 server on 127.0.0.1:0 that answers every request with `respond`'s
    /// canned `(status, body)`, or never answers when the status is 0. Stops on drop.
    pub(crate) struct TestServer {
        pub(crate) url: String,
        seen: Arc<Mutex<Vec<Seen>>>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl TestServer {
        pub(crate) fn start<F>(respond: F) -> TestServer
        where
            F: Fn(&Seen) -> (u16, String) + Send + 'static,
        {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let seen = Arc::new(Mutex::new(Vec::new()));
            let stop = Arc::new(AtomicBool::new(false));
            let (seen2, stop2) = (seen.clone(), stop.clone());
            let thread = std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let Some(request) = read_request(&stream) else {
                        continue;
                    };
                    seen2.lock().unwrap().push(request.clone());
                    let (status, body) = respond(&request);
                    if status == 0 {
                        // Hold the connection open without answering until the client gives up.
                        let mut sink = [0u8; 1];
                        let _ = (&stream).read(&mut sink);
                        continue;
                    }
                    let response = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = (&stream).write_all(response.as_bytes());
                }
            });
            TestServer {
                url,
                seen,
                stop,
                thread: Some(thread),
            }
        }

        pub(crate) fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }

        /// The requests seen, once there are at least `n`: a server that never answers may
        /// record a request only after the client has given up on it.
        fn seen_at_least(&self, n: usize) -> Vec<Seen> {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let seen = self.seen();
                if seen.len() >= n || std::time::Instant::now() > deadline {
                    return seen;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            // Wake the accept loop so it sees the flag.
            let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn read_request(stream: &TcpStream) -> Option<Seen> {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let mut parts = line.split_whitespace();
        let method = parts.next()?.to_string();
        let target = parts.next()?.to_string();
        let mut length = 0usize;
        let mut headers = Vec::new();
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).ok()?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().ok()?;
                }
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).ok()?;
        Some(Seen {
            method,
            target,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// An address where nothing listens: bind a port, then free it.
    fn dead_address() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    pub(crate) fn client(masters: &[&str], timeout: Duration) -> Client {
        let http = Http::builder().no_proxy().timeout(timeout).build().unwrap();
        Client::with_http(
            masters.iter().map(|m| m.to_string()).collect(),
            http,
            timeout,
        )
    }

    const WORKERS: &str = r#"{"workers":[]}"#;

    fn standby_pointing_to(leader: &str) -> impl Fn(&Seen) -> (u16, String) + Send + 'static {
        let body = format!(r#"{{"error":"not the leader","leader":"{leader}"}}"#);
        move |_| (503, body.clone())
    }

    #[test]
    fn one_master_answers_json() {
        let server = TestServer::start(|_| (200, WORKERS.into()));
        let c = client(&[&server.url], Duration::from_secs(5));
        let got: Served<WorkerList> = c.get("/api/v1/workers", &[]).unwrap();
        assert!(got.data.workers.is_empty());
        assert_eq!(got.raw, serde_json::json!({"workers": []}));
        let seen = server.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            (seen[0].method.as_str(), seen[0].target.as_str()),
            ("GET", "/api/v1/workers")
        );
    }

    #[test]
    fn queries_and_path_segments_are_encoded() {
        let server = TestServer::start(|_| (200, r#"{"apps":[]}"#.into()));
        let c = client(&[&server.url], Duration::from_secs(5));
        let path = format!("/api/v1/apps/{}", segment("a b/../c"));
        let _: Served<Value> = c
            .get(&path, &[("state", "RUNNING".into()), ("limit", "3".into())])
            .unwrap();
        assert_eq!(
            server.seen()[0].target,
            "/api/v1/apps/a%20b%2F..%2Fc?state=RUNNING&limit=3"
        );
    }

    #[test]
    fn unreachable_masters_are_skipped_and_the_answering_one_is_remembered() {
        let dead = dead_address();
        let server = TestServer::start(|_| (200, WORKERS.into()));
        let c = client(&[&dead, &server.url], Duration::from_secs(5));
        let _: Served<WorkerList> = c.get("/api/v1/workers", &[]).unwrap();
        assert_eq!(*c.preferred.lock().unwrap(), Some(server.url.clone()));
        assert_eq!(c.candidates().front(), Some(&server.url));
        // A POST that never connected is safe to send elsewhere too.
        let _: Served<Value> = client(&[&dead, &server.url], Duration::from_secs(5))
            .post("/api/v1/apps/x/kill", None::<&()>)
            .unwrap();
        assert_eq!(server.seen().len(), 2);
    }

    #[test]
    fn all_unreachable_names_every_master() {
        let (a, b) = (dead_address(), dead_address());
        let c = client(&[&a, &b], Duration::from_secs(5));
        let err = c.get::<WorkerList>("/api/v1/workers", &[]).unwrap_err();
        match &err {
            CtlError::Unreachable { failures } => {
                let urls: Vec<&str> = failures.iter().map(|(u, _)| u.as_str()).collect();
                assert_eq!(urls, [a.as_str(), b.as_str()]);
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().starts_with("cannot reach any master ("));
    }

    #[test]
    fn a_standby_redirects_to_the_leader_once() {
        let leader = TestServer::start(|_| (201, r#"{"ok":true}"#.into()));
        let standby = TestServer::start(standby_pointing_to(&format!("{}/", leader.url)));
        // The leader is not even in the list: the hint alone finds it.
        let c = client(&[&standby.url], Duration::from_secs(5));
        let got: Served<Value> = c
            .post("/api/v1/apps", Some(&serde_json::json!({"name": "x"})))
            .unwrap();
        assert_eq!(got.raw, serde_json::json!({"ok": true}));
        assert_eq!(standby.seen().len(), 1);
        let seen = leader.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            (seen[0].method.as_str(), seen[0].target.as_str()),
            ("POST", "/api/v1/apps")
        );
        assert_eq!(seen[0].body, r#"{"name":"x"}"#);
        // Next time the leader is asked first.
        let _: Served<Value> = c
            .post("/api/v1/apps", Some(&serde_json::json!({"name": "x"})))
            .unwrap();
        assert_eq!(standby.seen().len(), 1);
        assert_eq!(leader.seen().len(), 2);
    }

    #[test]
    fn leader_hints_are_followed_only_once() {
        // Two standbys that point at each other, and a third that points at the first: no loop,
        // and the error is the master's own.
        let b = TestServer::start(|_| (503, r#"{"error":"b is standby"}"#.into()));
        let a = TestServer::start(standby_pointing_to(&b.url));
        let c2 = TestServer::start(standby_pointing_to(&a.url));
        let c = client(&[&c2.url], Duration::from_secs(5));
        let err = c.get::<WorkerList>("/api/v1/workers", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not the leader (HTTP 503 Service Unavailable)"
        );
        assert_eq!((c2.seen().len(), a.seen().len(), b.seen().len()), (1, 1, 0));
    }

    #[test]
    fn an_unreachable_leader_falls_back_to_the_other_masters() {
        let dead = dead_address();
        let standby = TestServer::start(standby_pointing_to(&dead));
        let other = TestServer::start(|_| (200, WORKERS.into()));
        let c = client(&[&standby.url, &other.url], Duration::from_secs(5));
        let _: Served<WorkerList> = c.get("/api/v1/workers", &[]).unwrap();
        assert_eq!(other.seen().len(), 1);
    }

    #[test]
    fn a_503_without_leader_tries_the_next_master() {
        let first = TestServer::start(|_| (503, r#"{"error":"electing"}"#.into()));
        let second = TestServer::start(|_| (200, WORKERS.into()));
        let c = client(&[&first.url, &second.url], Duration::from_secs(5));
        let _: Served<WorkerList> = c.get("/api/v1/workers", &[]).unwrap();
        let only = client(&[&first.url], Duration::from_secs(5));
        let err = only.get::<WorkerList>("/api/v1/workers", &[]).unwrap_err();
        assert_eq!(err.to_string(), "electing (HTTP 503 Service Unavailable)");
    }

    #[test]
    fn client_errors_are_not_retried_elsewhere() {
        let first = TestServer::start(|_| (404, r#"{"error":"no app app-9"}"#.into()));
        let second = TestServer::start(|_| (200, "{}".into()));
        let c = client(&[&first.url, &second.url], Duration::from_secs(5));
        let err = c.get::<Value>("/api/v1/apps/app-9", &[]).unwrap_err();
        assert!(matches!(err, CtlError::Api { status, .. } if status == StatusCode::NOT_FOUND));
        assert_eq!(err.to_string(), "no app app-9 (HTTP 404 Not Found)");
        assert!(second.seen().is_empty());
    }

    #[test]
    fn a_silent_master_fails_over_for_get_but_not_for_post() {
        let silent = TestServer::start(|_| (0, String::new()));
        let good = TestServer::start(|_| (200, WORKERS.into()));
        let c = client(&[&silent.url, &good.url], Duration::from_millis(300));
        let _: Served<WorkerList> = c.get("/api/v1/workers", &[]).unwrap();
        assert_eq!(good.seen().len(), 1);

        let c = client(&[&silent.url, &good.url], Duration::from_millis(300));
        let err = c
            .post::<_, Value>("/api/v1/apps", Some(&serde_json::json!({})))
            .unwrap_err();
        assert!(matches!(err, CtlError::Uncertain { .. }), "{err:?}");
        assert!(err.to_string().contains("may or may not have been applied"));
        assert_eq!(good.seen().len(), 1, "the submission must not be repeated");
    }

    #[test]
    fn a_keyed_post_that_timed_out_is_resent_to_the_next_master_with_the_same_key() {
        let silent = TestServer::start(|_| (0, String::new()));
        // A repeat the master recognises answers 200 (not 201): success all the same.
        let good = TestServer::start(|_| (200, r#"{"id":"app-1"}"#.into()));
        let c = client(&[&silent.url, &good.url], Duration::from_millis(300));
        let got: Served<Value> = c
            .post_idempotent("/api/v1/apps", &serde_json::json!({"name": "x"}), "key-1")
            .unwrap();
        assert_eq!(got.raw, serde_json::json!({"id": "app-1"}));
        let (first, second) = (silent.seen_at_least(1), good.seen());
        assert_eq!((first.len(), second.len()), (1, 1));
        for seen in [&first[0], &second[0]] {
            assert_eq!(
                (seen.method.as_str(), seen.target.as_str()),
                ("POST", "/api/v1/apps")
            );
            assert_eq!(seen.header("Idempotency-Key"), Some("key-1"));
            assert_eq!(seen.body, r#"{"name":"x"}"#);
        }
        assert_eq!(c.candidates().front(), Some(&good.url));
    }

    #[test]
    fn a_keyed_post_refused_with_503_is_resent_with_the_same_key() {
        let electing = TestServer::start(|_| (503, r#"{"error":"electing"}"#.into()));
        let good = TestServer::start(|_| (201, r#"{"id":"app-1"}"#.into()));
        let c = client(&[&electing.url, &good.url], Duration::from_secs(5));
        let _: Served<Value> = c
            .post_idempotent("/api/v1/apps", &serde_json::json!({}), "key-2")
            .unwrap();
        assert_eq!(electing.seen()[0].header("idempotency-key"), Some("key-2"));
        assert_eq!(good.seen()[0].header("idempotency-key"), Some("key-2"));
    }

    #[test]
    fn a_keyed_post_no_master_answered_is_uncertain_and_names_the_key() {
        let (a, b) = (
            TestServer::start(|_| (0, String::new())),
            TestServer::start(|_| (0, String::new())),
        );
        let refused = dead_address();
        let c = client(&[&a.url, &refused, &b.url], Duration::from_millis(300));
        let err = c
            .post_idempotent::<_, Value>("/api/v1/apps", &serde_json::json!({}), "key-3")
            .unwrap_err();
        match &err {
            CtlError::Uncertain {
                url,
                idempotency_key,
                ..
            } => {
                assert_eq!(url, &format!("{}/api/v1/apps", b.url));
                assert_eq!(idempotency_key.as_deref(), Some("key-3"));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            err.to_string()
                .ends_with("(repeating it with --idempotency-key key-3 is safe)"),
            "{err}"
        );
        assert_eq!((a.seen_at_least(1).len(), b.seen_at_least(1).len()), (1, 1));
    }

    #[test]
    fn a_kill_that_timed_out_is_not_resent() {
        let silent = TestServer::start(|_| (0, String::new()));
        let good = TestServer::start(|_| (202, r#"{"id":"app-1"}"#.into()));
        let c = client(&[&silent.url, &good.url], Duration::from_millis(300));
        let err = c
            .post::<(), Value>("/api/v1/apps/app-1/kill", None)
            .unwrap_err();
        assert!(
            matches!(
                &err,
                CtlError::Uncertain {
                    idempotency_key: None,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err
            .to_string()
            .ends_with("it may or may not have been applied"));
        assert!(good.seen().is_empty(), "the kill must not be repeated");
        let seen = silent.seen_at_least(1);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].target, "/api/v1/apps/app-1/kill");
        assert_eq!(seen[0].header("idempotency-key"), None);
    }

    #[test]
    fn fresh_idempotency_keys_are_32_hex_digits_and_differ() {
        let (a, b) = (
            fresh_idempotency_key().unwrap(),
            fresh_idempotency_key().unwrap(),
        );
        for k in [&a, &b] {
            assert_eq!(k.len(), 32, "{k}");
            assert!(k.bytes().all(|c| c.is_ascii_hexdigit()), "{k}");
        }
        assert_ne!(a, b);
    }

    #[test]
    fn bad_bodies_become_clear_errors() {
        let html = TestServer::start(|_| (200, "<html>oops</html>".into()));
        let c = client(&[&html.url], Duration::from_secs(5));
        let err = c.get::<WorkerList>("/api/v1/workers", &[]).unwrap_err();
        assert!(matches!(err, CtlError::BadResponse { .. }));
        assert!(
            err.to_string()
                .ends_with("the body is not JSON: <html>oops</html>"),
            "{err}"
        );

        let wrong = TestServer::start(|_| (200, r#"{"workers":3}"#.into()));
        let c = client(&[&wrong.url], Duration::from_secs(5));
        let err = c.get::<WorkerList>("/api/v1/workers", &[]).unwrap_err();
        assert!(err.to_string().contains("unexpected JSON"), "{err}");

        let gateway = TestServer::start(|_| (502, "Bad gateway\n\n".into()));
        let c = client(&[&gateway.url], Duration::from_secs(5));
        let err = c.get::<WorkerList>("/api/v1/workers", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the master answered with a non-JSON body: Bad gateway (HTTP 502 Bad Gateway)"
        );
    }

    #[test]
    fn error_bodies() {
        let b = parse_error_body(br#"{"error":"x","leader":"http://l:1"}"#).unwrap();
        assert_eq!(
            (b.error.as_str(), b.leader.as_deref()),
            ("x", Some("http://l:1"))
        );
        assert_eq!(parse_error_body(br#"{"error":"x"}"#).unwrap().leader, None);
        assert!(parse_error_body(b"nope").is_none());
        assert!(parse_error_body(br#"{"message":"x"}"#).is_none());

        let e = api_error(StatusCode::CONFLICT, br#"{"error":"app already ended"}"#);
        assert_eq!(e.to_string(), "app already ended (HTTP 409 Conflict)");
        let e = api_error(StatusCode::INTERNAL_SERVER_ERROR, b"");
        assert_eq!(
            e.to_string(),
            "the master gave no reason (HTTP 500 Internal Server Error)"
        );
        let e = api_error(StatusCode::from_u16(599).unwrap(), br#"{"error":""}"#);
        assert_eq!(e.to_string(), "the master gave no reason (HTTP 599)");
        let e = api_error(StatusCode::BAD_REQUEST, br#"{"detail":"x"}"#);
        assert_eq!(
            e.to_string(),
            "the master answered with an unexpected body: {\"detail\":\"x\"} (HTTP 400 Bad Request)"
        );
    }
}
