//! `GET /api/v1/events`: the event log as a Server-Sent Events stream.
//!
//! Each SSE event has `id:` = the event's sequence number, `event:` = its type and `data:` = the
//! event JSON. A client that reconnects with `Last-Event-ID: N` (or `?after=N`) receives every
//! event after N that is still retained, then live ones: nothing is missed across a disconnect.
//! If N is older than the retention, the stream first sends an `event: gap` naming the range
//! that is gone. Without either, the stream starts with the next new event. `?follow=false`
//! ends the stream once the backlog is sent. Filters: `app_id`, `kind` (app kind), `type`
//! (comma-separated event types).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use aloha_core::Event;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{self, KeepAlive, Sse};
use serde::Deserialize;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::error::ApiError;
use crate::node::Node;

/// Event types a filter may name.
pub const TYPES: [&str; 17] = aloha_core::EventBody::TYPES;

/// Longest wait for one read of the log while streaming.
const READ_DEADLINE: Duration = Duration::from_secs(5);

/// Query parameters of the stream.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    app_id: Option<String>,
    kind: Option<String>,
    #[serde(rename = "type")]
    types: Option<String>,
    after: Option<u64>,
    follow: Option<bool>,
}

/// What a client wants to see.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    app_id: Option<String>,
    kind: Option<String>,
    types: Vec<String>,
}

impl Filter {
    /// Whether `e` passes.
    pub fn matches(&self, e: &Event) -> bool {
        if let Some(id) = &self.app_id {
            if e.body.app_id().map(|a| a.as_str()) != Some(id.as_str()) {
                return false;
            }
        }
        if let Some(k) = &self.kind {
            if e.body.app_kind() != Some(k.as_str()) {
                return false;
            }
        }
        self.types.is_empty() || self.types.iter().any(|t| t == e.body.type_name())
    }
}

fn sse_event(e: &Event) -> sse::Event {
    sse::Event::default()
        .id(e.seq.to_string())
        .event(e.body.type_name())
        .data(serde_json::to_string(e).unwrap_or_default())
}

/// The handler.
#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    params(("type" = Option<String>, Query, description = "comma-separated event types"),
           ("app_id" = Option<String>, Query, description = "only events about this app"),
           ("kind" = Option<String>, Query, description = "only events about apps of this kind"),
           ("after" = Option<u64>, Query, description = "start after this event sequence number (as Last-Event-ID)"),
           ("follow" = Option<bool>, Query, description = "keep streaming (default true)"),
           ("Last-Event-ID" = Option<String>, Header, description = "resume after this event")),
    responses((status = 200, description = "Server-Sent Events; each `data` is an Event", content_type = "text/event-stream", body = aloha_core::Event),
              (status = 400, description = "a bad filter", body = aloha_core::api::ErrorBody)))]
pub async fn events(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl tokio_stream::Stream<Item = Result<sse::Event, Infallible>>>, ApiError> {
    let Query(q) = q?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    let last_event_id = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| bad("Last-Event-ID must be an event sequence number".into()))?,
        ),
        None => None,
    };
    let types: Vec<String> = q
        .types
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(t) = types.iter().find(|t| !TYPES.contains(&t.as_str())) {
        return Err(bad(format!(
            "unknown event type {t:?} (expected one of {})",
            TYPES.join(", ")
        )));
    }
    let filter = Filter {
        app_id: q.app_id,
        kind: q.kind,
        types,
    };
    let follow = q.follow.unwrap_or(true);
    let log = node.events.clone();
    let last_seq = crate::node::bounded(log.load_last_seq()).await?;
    let start = match last_event_id.or(q.after) {
        // A position past the end of the log is a client's mistake (or a log from another
        // cluster): say so rather than wait for events that will not come.
        Some(n) if n > last_seq => {
            return Err(bad(format!(
                "after {n} is past the last event ({last_seq})"
            )))
        }
        Some(n) => n,
        None => last_seq,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<sse::Event>(256);
    let metrics = node.metrics.clone();
    tokio::spawn(async move {
        metrics.event_streams.inc();
        let mut last = start;
        let mut first = true;
        'stream: loop {
            // A read that hangs (a store connection broken by a pause, a lost quorum) ends the
            // stream rather than stalling it: the client reconnects, to another master if need be.
            let read = tokio::time::timeout(READ_DEADLINE, log.read_after(last, 500)).await;
            let batch = match read.unwrap_or_else(|_| {
                Err(crate::store::StoreError::Unavailable(format!(
                    "the event log did not answer within {}s",
                    READ_DEADLINE.as_secs()
                )))
            }) {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx
                        .send(sse::Event::default().event("error").data(e.to_string()))
                        .await;
                    break;
                }
            };
            if let (true, Some(e)) = (first, batch.first()) {
                if e.seq > last.saturating_add(1) {
                    let gap = serde_json::json!({"from": last.saturating_add(1), "to": e.seq - 1,
                        "message": "these events are past the retention and cannot be replayed"});
                    if tx
                        .send(sse::Event::default().event("gap").data(gap.to_string()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
            first = false;
            if batch.is_empty() {
                if !follow {
                    break;
                }
                tokio::select! {
                    _ = log.wait_new(Duration::from_millis(500)) => {}
                    _ = tx.closed() => break,
                }
                continue;
            }
            for e in batch {
                last = e.seq;
                if filter.matches(&e) && tx.send(sse_event(&e)).await.is_err() {
                    break 'stream;
                }
            }
        }
        metrics.event_streams.dec();
    });
    let stream = ReceiverStream::new(rx).map(Ok);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
