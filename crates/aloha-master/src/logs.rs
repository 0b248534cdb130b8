//! `GET /api/v1/apps/{id}/logs`: an app attempt's `stdout` or `stderr`, proxied from the worker
//! that ran it (its `ReadLog` / `FollowLog` RPCs).
//!
//! The worker and its address come from whatever state this node reads from (the leader's
//! snapshot, a standby's replica, else the store), as `GET /api/v1/apps/{id}` does: logs are
//! served by standbys too. Nothing is kept on the master; a log lives as long as the worker's
//! work dir.
//!
//! A range is a `text/plain` body with `X-Log-*` headers to page by. `follow=true` streams the
//! log as it grows until the attempt ended: raw chunked `text/plain`, or Server-Sent Events
//! (`event: log` with the text and its offsets as JSON, then `event: end`) when the client
//! accepts `text/event-stream`. A plain stream that the worker breaks off (it died) ends
//! abruptly, so a client never mistakes a cut stream for a complete one.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use aloha_core::worker::WorkerStatus;
use aloha_core::{App, AppState};
use aloha_proto::{LogChunk, ReadLogRequest};
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio_stream::StreamExt;
use tracing::info;

use crate::error::{ApiError, ApiResult};
use crate::node::Node;
use crate::worker_client::{LogCallError, LogStream, WorkerConnector};

/// Bytes served when the request names no `limit`; without `offset`, the tail this long.
pub const DEFAULT_LIMIT: u64 = 64 * 1024;
/// The largest `limit`: the most bytes one response holds.
pub const MAX_LIMIT: u64 = 1024 * 1024;
/// How long a log request waits for a just-placed attempt to reach its worker.
const LAUNCH_GRACE: Duration = Duration::from_secs(5);

/// The file size when read.
pub const X_LOG_SIZE: &str = "x-log-size";
/// Where the body starts in the file.
pub const X_LOG_OFFSET: &str = "x-log-offset";
/// Where the next page starts.
pub const X_LOG_NEXT_OFFSET: &str = "x-log-next-offset";
/// The attempt served.
pub const X_LOG_ATTEMPT: &str = "x-log-attempt";
/// The worker it ran on.
pub const X_LOG_WORKER: &str = "x-log-worker";
/// `true` once the attempt ended: the file will not grow.
pub const X_LOG_ENDED: &str = "x-log-ended";

/// The query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    stream: Option<String>,
    attempt: Option<u32>,
    offset: Option<u64>,
    limit: Option<u64>,
    #[serde(default)]
    follow: bool,
}

/// What a request asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wanted {
    stream: &'static str,
    attempt: Option<u32>,
    offset: Option<u64>,
    limit: u64,
    follow: bool,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, msg)
}

fn check(q: LogsQuery) -> ApiResult<Wanted> {
    let stream = match q.stream.as_deref() {
        None | Some("stdout") => "stdout",
        Some("stderr") => "stderr",
        Some(other) => {
            return Err(bad(format!(
                "stream must be stdout or stderr (got {other:?})"
            )))
        }
    };
    if q.attempt == Some(0) {
        return Err(bad("attempt must be 1 or more"));
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 {
        return Err(bad("limit must be at least 1"));
    }
    if limit > MAX_LIMIT {
        return Err(bad(format!(
            "limit must be at most {MAX_LIMIT} bytes (1 MiB); got {limit}"
        )));
    }
    Ok(Wanted {
        stream,
        attempt: q.attempt,
        offset: q.offset,
        limit,
        follow: q.follow,
    })
}

/// The worker attempt `attempt` of `app` ran on. The current attempt's is on the app; an
/// earlier one's is in the `launching on worker <id>` history entry of its launch (the n-th
/// LAUNCHING entry from the end is attempt `app.attempt - n`). When the history no longer
/// reaches back that far, the current worker is the best guess: it says so if it has no
/// such attempt.
fn worker_of_attempt(app: &App, attempt: u32) -> Option<String> {
    let current = app.worker_id.as_ref().map(|w| w.0.clone());
    if attempt >= app.attempt {
        return current;
    }
    let back = (app.attempt - attempt) as usize;
    app.history
        .iter()
        .rev()
        .filter(|h| h.state == AppState::Launching)
        .nth(back)
        .and_then(|h| h.message.as_deref()?.strip_prefix("launching on worker "))
        .map(str::to_string)
        .or(current)
}

/// An error from the worker, as the client sees it.
fn worker_error(worker: &str, e: LogCallError) -> ApiError {
    match e {
        LogCallError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m),
        LogCallError::BadRequest(m) => bad(m),
        LogCallError::Busy(m) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, m),
        LogCallError::Unreachable(m) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("worker {worker} is unreachable: {m}"),
        ),
        LogCallError::Failed(m) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("worker {worker} could not serve the log: {m}"),
        ),
    }
}

/// Where to ask: the attempt, its worker's id and address.
struct Target {
    app: App,
    attempt: u32,
    worker: String,
    address: String,
}

async fn target(node: &Node, id: &str, attempt: Option<u32>) -> ApiResult<Target> {
    let app = node.app(id).await?;
    if app.attempt == 0 {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("app {id} has not been launched yet"),
        ));
    }
    let attempt = attempt.unwrap_or(app.attempt);
    if attempt > app.attempt {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "app {id} has no attempt {attempt} (its latest is {})",
                app.attempt
            ),
        ));
    }
    let Some(worker) = worker_of_attempt(&app, attempt) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("attempt {attempt} of app {id} has no worker on record"),
        ));
    };
    let gone = |why: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the logs of attempt {attempt} of app {id} are on worker {worker}, {why}"),
        )
    };
    let workers = node.workers().await?;
    let Some(w) = workers.iter().find(|w| w.id.0 == worker) else {
        return Err(gone(
            "which the master no longer knows (it was forgotten)".into(),
        ));
    };
    match w.state {
        WorkerStatus::Dead => return Err(gone("which is DEAD".into())),
        WorkerStatus::Unknown => {
            return Err(gone(
                "which has not been heard from since the master recovered (UNKNOWN)".into(),
            ))
        }
        WorkerStatus::Alive | WorkerStatus::Draining | WorkerStatus::Drained => {}
    }
    let address = w.address.clone();
    Ok(Target {
        app,
        attempt,
        worker,
        address,
    })
}

/// Calls the worker; while the attempt is LAUNCHING, a worker that does not know it yet (the
/// launch command is on its way) is asked again for up to [`LAUNCH_GRACE`].
async fn call<T, F, Fut>(t: &Target, mut f: F) -> ApiResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, LogCallError>>,
{
    let deadline = tokio::time::Instant::now() + LAUNCH_GRACE;
    loop {
        match f().await {
            Err(LogCallError::NotFound(_))
                if t.app.state == AppState::Launching
                    && t.attempt == t.app.attempt
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            r => return r.map_err(|e| worker_error(&t.worker, e)),
        }
    }
}

fn header_pairs(t: &Target, chunk: Option<&LogChunk>) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    put(X_LOG_ATTEMPT, t.attempt.to_string());
    put(X_LOG_WORKER, t.worker.clone());
    if let Some(c) = chunk {
        put(X_LOG_SIZE, c.size.to_string());
        put(X_LOG_OFFSET, c.offset.to_string());
        put(X_LOG_NEXT_OFFSET, c.next_offset.to_string());
        put(X_LOG_ENDED, c.ended.to_string());
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h
}

/// The handler.
#[utoipa::path(get, path = "/api/v1/apps/{id}/logs", tag = "apps",
    params(("id" = String, Path, description = "app id"),
           ("stream" = Option<String>, Query, description = "stdout (default) or stderr"),
           ("attempt" = Option<u32>, Query, description = "the attempt (default: the latest)"),
           ("offset" = Option<u64>, Query, description = "read from this byte (default: the last `limit` bytes)"),
           ("limit" = Option<u64>, Query, description = "at most this many bytes, default 65536, at most 1 MiB"),
           ("follow" = Option<bool>, Query, description = "stream the log as it grows until the attempt ends (chunked text, or SSE with Accept: text/event-stream)")),
    responses((status = 200, description = "the bytes, with X-Log-Size, X-Log-Offset, X-Log-Next-Offset, X-Log-Ended headers", content_type = "text/plain", body = String),
              (status = 400, description = "bad parameters", body = aloha_core::api::ErrorBody),
              (status = 404, description = "unknown or expired app, not launched yet, no such attempt or file", body = aloha_core::api::ErrorBody),
              (status = 429, description = "too many followers on the app's worker", body = aloha_core::api::ErrorBody),
              (status = 503, description = "the app's worker is gone or unreachable (the message names it)", body = aloha_core::api::ErrorBody)))]
pub async fn app_logs(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<LogsQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q?;
    let mut wanted = check(q)?;
    let sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if sse && wanted.offset.is_none() {
        // A reconnecting EventSource resumes where it was.
        if let Some(v) = headers.get("last-event-id") {
            let last = v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok());
            wanted.offset = Some(last.ok_or_else(|| bad("Last-Event-ID must be a log offset"))?);
        }
    }
    let t = target(&node, &id, wanted.attempt).await?;
    let req = ReadLogRequest {
        app_id: id.clone(),
        attempt: t.attempt,
        stream: wanted.stream.to_string(),
        offset: wanted.offset,
        limit: wanted.limit,
    };
    // Log reads have their own channels to workers, apart from the engine's launch and kill
    // commands, so that long follow streams never share a connection's flow control with them.
    let c = node.log_connector();
    if !wanted.follow {
        let chunk = call(&t, || c.read_log(&t.address, req.clone())).await?;
        let mut h = header_pairs(&t, Some(&chunk));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return Ok((h, chunk.data).into_response());
    }
    let mut stream = call(&t, || c.follow_log(&t.address, req.clone())).await?;
    // The worker's first chunk is empty and says where the stream starts.
    let first = match stream.next().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(e)) => return Err(worker_error(&t.worker, e)),
        None => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("worker {} ended the log stream at once", t.worker),
            ))
        }
    };
    info!(app_id = %id, attempt = t.attempt, worker_id = %t.worker, stream = wanted.stream,
          offset = first.offset, sse, "following a log");
    let mut h = header_pairs(&t, Some(&first));
    h.remove(X_LOG_NEXT_OFFSET);
    h.remove(X_LOG_ENDED);
    if sse {
        return Ok((h, sse_body(t.worker, first, stream)).into_response());
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    let worker = t.worker;
    let body = stream.map(move |r| match r {
        Ok(chunk) => Ok(Bytes::from(chunk.data)),
        // Breaking the body off tells the client the log is incomplete.
        Err(e) => Err(std::io::Error::other(format!(
            "worker {worker} broke off the log: {e}"
        ))),
    });
    Ok((h, Body::from_stream(body)).into_response())
}

/// The SSE form of a follow: `event: log` per chunk (`id:` is the offset to resume from),
/// `event: end` once the attempt ended and all was sent, `event: error` if the worker broke it
/// off.
fn sse_body(
    worker: String,
    first: LogChunk,
    chunks: LogStream,
) -> Sse<impl tokio_stream::Stream<Item = Result<sse::Event, Infallible>>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<sse::Event>(4);
    tokio::spawn(async move {
        let mut chunks = chunks;
        let mut text = Utf8Text::default();
        let mut pos = first.offset;
        let mut size = first.size;
        loop {
            // A client that went away frees its place at the worker even while the log is quiet.
            let r = tokio::select! {
                r = chunks.next() => match r {
                    Some(r) => r,
                    None => return,
                },
                _ = tx.closed() => return,
            };
            let chunk = match r {
                Ok(c) => c,
                Err(e) => {
                    let data = serde_json::json!({
                        "error": format!("worker {worker} broke off the log: {e}")});
                    let _ = tx
                        .send(sse::Event::default().event("error").data(data.to_string()))
                        .await;
                    return;
                }
            };
            size = size.max(chunk.size);
            let t = text.push(&chunk.data);
            if !t.is_empty() {
                // Bytes of a character split across chunks wait for the next one.
                let next = chunk.next_offset - text.pending() as u64;
                let data = serde_json::json!({
                    "offset": pos, "next_offset": next, "size": size, "text": t});
                pos = next;
                let ev = sse::Event::default()
                    .event("log")
                    .id(next.to_string())
                    .data(data.to_string());
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
            if chunk.ended {
                let rest = text.finish();
                if !rest.is_empty() {
                    let next = chunk.next_offset;
                    let data = serde_json::json!({
                        "offset": pos, "next_offset": next, "size": size, "text": rest});
                    pos = next;
                    let ev = sse::Event::default()
                        .event("log")
                        .id(next.to_string())
                        .data(data.to_string());
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
                let data = serde_json::json!({"next_offset": pos, "size": size});
                let _ = tx
                    .send(sse::Event::default().event("end").data(data.to_string()))
                    .await;
                return;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Log bytes as text for SSE: a character split across two chunks is held back until its
/// end arrives; bytes that are not UTF-8 become U+FFFD.
#[derive(Debug, Default)]
struct Utf8Text {
    pending: Vec<u8>,
}

impl Utf8Text {
    /// The text of what arrived so far, but for an incomplete character at the end.
    fn push(&mut self, data: &[u8]) -> String {
        self.pending.extend_from_slice(data);
        let cut = complete_len(&self.pending);
        let rest = self.pending.split_off(cut);
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = rest;
        text
    }

    /// Bytes held back.
    fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Whatever is held back (the log ended inside a character).
    fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// The length of `b` without an incomplete UTF-8 sequence at its end (at most 3 bytes).
fn complete_len(b: &[u8]) -> usize {
    for k in 1..=b.len().min(3) {
        let tail = &b[b.len() - k..];
        if let Err(e) = std::str::from_utf8(tail) {
            if e.valid_up_to() == 0 && e.error_len().is_none() {
                return b.len() - k;
            }
        }
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: serde_json::Value) -> LogsQuery {
        serde_json::from_value(pairs).unwrap()
    }

    #[test]
    fn queries_default_to_the_tail_of_stdout_and_refuse_bad_values() {
        let Ok(w) = check(LogsQuery::default()) else {
            panic!("the defaults are refused")
        };
        assert_eq!(
            w,
            Wanted {
                stream: "stdout",
                attempt: None,
                offset: None,
                limit: DEFAULT_LIMIT,
                follow: false
            }
        );
        let good = serde_json::json!({"stream": "stderr", "limit": MAX_LIMIT,
            "offset": 5, "attempt": 2, "follow": true});
        let Ok(w) = check(query(good)) else {
            panic!("a good query is refused")
        };
        assert_eq!(
            (w.stream, w.limit, w.offset),
            ("stderr", MAX_LIMIT, Some(5))
        );
        for q in [
            serde_json::json!({"stream": "stdin"}),
            serde_json::json!({"limit": 0}),
            serde_json::json!({"limit": MAX_LIMIT + 1}),
            serde_json::json!({"attempt": 0}),
        ] {
            assert!(check(query(q.clone())).is_err(), "{q}");
        }
    }

    fn app_with(attempt: u32, launches: &[&str], current: &str) -> App {
        let mut app: App = serde_json::from_value(serde_json::json!({
            "id": "app-20250101000000-0001", "seq": 1, "name": "a", "kind": "process",
            "spec": {}, "cores": 1, "memory_mb": 1, "max_retries": 0, "labels": {},
            "state": "RUNNING", "worker_id": current, "attempt": attempt, "retries": 0,
            "exit_code": null, "message": null, "submitted_at": "2025-01-01T00:00:00Z",
            "started_at": null, "finished_at": null, "history": []
        }))
        .unwrap();
        for w in launches {
            app.history.push(aloha_core::app::HistoryEntry {
                state: AppState::Launching,
                at: app.submitted_at,
                message: Some(format!("launching on worker {w}")),
            });
            app.history.push(aloha_core::app::HistoryEntry {
                state: AppState::Running,
                at: app.submitted_at,
                message: None,
            });
        }
        app
    }

    #[test]
    fn an_earlier_attempt_is_looked_up_on_the_worker_that_launched_it() {
        let app = app_with(3, &["w1", "w2", "w3"], "w3");
        assert_eq!(worker_of_attempt(&app, 3).as_deref(), Some("w3"));
        assert_eq!(worker_of_attempt(&app, 2).as_deref(), Some("w2"));
        assert_eq!(worker_of_attempt(&app, 1).as_deref(), Some("w1"));
        // The history was trimmed: the current worker is the best guess.
        let app = app_with(3, &["w3"], "w3");
        assert_eq!(worker_of_attempt(&app, 1).as_deref(), Some("w3"));
    }

    #[test]
    fn sse_text_holds_back_a_split_character_only() {
        let mut t = Utf8Text::default();
        let bytes = "añb€".as_bytes(); // a, ñ (2 bytes), b, € (3 bytes)
        assert_eq!(t.push(&bytes[..2]), "a");
        assert_eq!(t.pending(), 1);
        assert_eq!(t.push(&bytes[2..5]), "ñb");
        assert_eq!(t.pending(), 1);
        assert_eq!(t.push(&bytes[5..]), "€");
        assert_eq!(t.pending(), 0);
        // Not UTF-8 at all: replaced, not held forever.
        assert_eq!(t.push(&[0xff, b'x']), "\u{fffd}x");
        assert_eq!(t.push(&[0xe2]), "");
        assert_eq!(t.finish(), "\u{fffd}");
    }
}
