//! The REST API (axum). Every error is `{"error": "..."}` with a 4xx/5xx status; the handlers
//! never panic on input.

use std::sync::Arc;

use aloha_core::api::{AppList, ErrorBody, WorkerList};
use aloha_core::{AppState, SubmitError, SubmitRequest};
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::master::MasterError;
use crate::node::Node;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// `limit` when the client gives none.
pub const DEFAULT_LIST_LIMIT: usize = 1000;

/// An API error: a status and a message.
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    /// An error with `status` and `msg`.
    pub fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: msg.into(),
                leader: None,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<MasterError> for ApiError {
    fn from(e: MasterError) -> Self {
        let status = match &e {
            MasterError::Submit(SubmitError::UnknownKind { .. }) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            MasterError::Submit(_) | MasterError::BadRequest(_) => StatusCode::BAD_REQUEST,
            MasterError::AppNotFound(_) => StatusCode::NOT_FOUND,
            MasterError::Conflict(_) => StatusCode::CONFLICT,
            MasterError::NotLeader { leader } => {
                return ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    body: ErrorBody {
                        error: "not leader".into(),
                        leader: leader.clone(),
                    },
                }
            }
            MasterError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::new(r.status(), r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, r.body_text())
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The router, with the 1 MiB body limit and JSON errors for unknown routes and methods.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/apps", post(submit).get(list))
        .route("/api/v1/apps/{id}", get(show))
        .route("/api/v1/apps/{id}/kill", post(kill))
        .route("/api/v1/workers", get(workers))
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/events", get(crate::stream::events))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint",
            )
        })
        .route_layer(middleware::from_fn_with_state(node.clone(), track))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(node)
}

/// Times every routed request into `aloha_http_request_duration_seconds{route}`.
async fn track(
    State(node): State<Arc<Node>>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let route = format!(
        "{} {}",
        req.method(),
        matched.as_ref().map(|m| m.as_str()).unwrap_or("unmatched")
    );
    let _timer = node.metrics.http_timer(&route);
    next.run(req).await
}

async fn healthz(State(m): State<Arc<Node>>) -> impl IntoResponse {
    let c = m.cluster().await;
    Json(serde_json::json!({"status": "ok", "role": c.role, "epoch": c.epoch, "leader": c.leader}))
}

async fn metrics(State(m): State<Arc<Node>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render_metrics().await,
    )
}

async fn submit(
    State(m): State<Arc<Node>>,
    body: Result<Json<SubmitRequest>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(req) = body?;
    let app = m.leader_master().await?.submit(req).await?;
    let location = format!("/api/v1/apps/{}", app.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(app),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
}

async fn list(
    State(m): State<Arc<Node>>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<AppList>> {
    let Query(q) = q?;
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<AppState>()
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?,
        ),
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if limit == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "limit must be at least 1",
        ));
    }
    Ok(Json(AppList {
        apps: m.apps(state, limit).await?,
    }))
}

async fn show(State(m): State<Arc<Node>>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(m.app(&id).await?).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KillBody {
    reason: Option<String>,
}

async fn kill(
    State(m): State<Arc<Node>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    // The body is optional: empty, or `{"reason": "..."}`.
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<KillBody>(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid kill body: {e}")))?
            .reason
    };
    let app = m.leader_master().await?.kill(&id, reason).await?;
    Ok((StatusCode::ACCEPTED, Json(app)).into_response())
}

async fn workers(State(m): State<Arc<Node>>) -> ApiResult<Json<WorkerList>> {
    Ok(Json(WorkerList {
        workers: m.workers().await?,
    }))
}

async fn cluster(State(m): State<Arc<Node>>) -> impl IntoResponse {
    Json(m.cluster().await)
}
