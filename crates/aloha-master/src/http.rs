//! The REST API (axum). Every error is `{"error": "..."}` with a 4xx/5xx status; the handlers
//! never panic on input.

use std::sync::Arc;

use aloha_core::api::{AppList, WorkerList};
use aloha_core::api::{ClusterInfo, ErrorBody, ScheduleInfo, ScheduleList, WorkerInfo};
use aloha_core::cluster::namespaces::NamespaceInfo;
use aloha_core::cluster::schedules::RunOutcome;
use aloha_core::cluster::Placement;
use aloha_core::namespace::{NamespaceSpec, Scope};
use aloha_core::schedules::{Overlap, ScheduleId, SchedulePatch, ScheduleRequest};
use aloha_core::App;
use aloha_core::{AppState, SubmitRequest};
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::engine::{ScheduleAnswer, ScheduleCmd};
pub use crate::error::ApiError;
use crate::error::ApiResult;
use crate::master::{present, Master};
use crate::node::Node;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// `limit` when the client gives none.
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// The largest page; a larger `limit` is served as this.
pub const MAX_LIST_LIMIT: usize = 1000;
/// The header that makes a submission idempotent.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The longest `?wait=` of a submission.
pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitQuery {
    /// Validate and say where the app would go; create nothing.
    #[serde(default)]
    dry_run: bool,
    /// Answer once the app ended, or when this runs out (`"30s"`).
    wait: Option<String>,
}

/// Where the caller may write: the scope of its token ([`crate::auth::Principal`], put in the
/// request by [`authorize`]); everywhere when the API needs no token.
pub(crate) struct CallerScope(pub Scope);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for CallerScope {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(CallerScope(crate::auth::scope(
            parts.extensions.get::<crate::auth::Principal>(),
        )))
    }
}

/// A `?wait=` duration: at most [`MAX_WAIT`].
fn parse_wait(text: &str) -> Result<std::time::Duration, ApiError> {
    let d = humantime::parse_duration(text).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("wait must be a duration such as \"30s\" (got {text:?}: {e})"),
        )
    })?;
    if d > MAX_WAIT {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "wait must be at most {}s (got {text:?})",
                MAX_WAIT.as_secs()
            ),
        ));
    }
    Ok(d)
}

/// The router, with the 1 MiB body limit and JSON errors for unknown routes and methods.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/apps", post(submit).get(list))
        .route("/api/v1/apps/batch", post(submit_batch))
        .route("/api/v1/apps/{id}", get(show))
        .route("/api/v1/apps/{id}/kill", post(kill))
        .route("/api/v1/apps/{id}/retry", post(retry))
        .route("/api/v1/apps/{id}/logs", get(crate::logs::app_logs))
        .route(
            "/api/v1/schedules",
            post(create_schedule).get(list_schedules),
        )
        .route(
            "/api/v1/schedules/{id}",
            get(show_schedule)
                .patch(update_schedule)
                .delete(delete_schedule),
        )
        .route("/api/v1/schedules/{id}/pause", post(pause_schedule))
        .route("/api/v1/schedules/{id}/resume", post(resume_schedule))
        .route("/api/v1/schedules/{id}/trigger", post(trigger_schedule))
        .route("/api/v1/schedules/{id}/backfill", post(backfill_schedule))
        .route("/api/v1/workers", get(workers))
        .route("/api/v1/workers/{id}/drain", post(drain_worker))
        .route("/api/v1/workers/{id}/undrain", post(undrain_worker))
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/cluster/accept-restore", post(accept_restore))
        .route("/api/v1/namespaces", get(list_namespaces))
        .route(
            "/api/v1/namespaces/{name}",
            get(show_namespace)
                .put(put_namespace)
                .delete(delete_namespace),
        )
        .route("/api/v1/tokens", post(create_token).get(list_tokens))
        .route("/api/v1/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/api/v1/events", get(crate::stream::events))
        .merge(crate::console::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint",
            )
        })
        .route_layer(middleware::from_fn_with_state(node.clone(), track))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(node.clone(), authorize))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(node)
}

/// The OpenAPI 3.1 description of the REST API, generated from the handlers and the types.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Aloha-rs REST API",
        description = "The master's REST API: apps, schedules, workers, the cluster, events, logs and probes. Every error is `{\"error\": \"...\"}`; a standby answers writes with 503 and the leader's address. The web console (`/`, `/ui/...`) and Spark's submission protocol (`--submission-addr`) are not part of this API.",
    ),
    paths(
        healthz, readyz, metrics, openapi, submit, submit_batch, list, show, kill, retry,
        crate::logs::app_logs, create_schedule, list_schedules, show_schedule, update_schedule,
        delete_schedule, pause_schedule, resume_schedule, trigger_schedule, backfill_schedule,
        workers, drain_worker, undrain_worker, cluster, accept_restore,
        list_namespaces, show_namespace, put_namespace, delete_namespace, create_token, list_tokens, revoke_token, crate::stream::events,
    ),
    components(schemas(
        App, AppState, SubmitRequest, BatchRequest, BatchResults, BatchResult, AppList, ErrorBody, WorkerInfo, WorkerList, ClusterInfo,
        ScheduleInfo, ScheduleList, ScheduleRequest, SchedulePatch, aloha_core::Event,
    )),
    tags(
        (name = "apps", description = "Submit, list, inspect, kill and retry apps; their logs"),
        (name = "schedules", description = "Cron and fixed-period schedules"),
        (name = "workers", description = "Workers and their drains"),
        (name = "cluster", description = "Leadership"),
        (name = "namespaces", description = "Namespaces: quotas, weights and usage"),
        (name = "tokens", description = "REST API tokens (admin)"),
        (name = "events", description = "The event stream"),
        (name = "probes", description = "Liveness, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "probes",
    responses((status = 200, description = "this document (OpenAPI 3.1)", body = Object)))]
async fn openapi() -> impl IntoResponse {
    Json(<ApiDoc as utoipa::OpenApi>::openapi())
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

#[utoipa::path(get, path = "/healthz", tag = "probes",
    responses((status = 200, description = "the process serves HTTP: its role, epoch and the leader", body = Object)))]
async fn healthz(State(m): State<Arc<Node>>) -> impl IntoResponse {
    let c = m.cluster().await;
    Json(serde_json::json!({"status": "ok", "role": c.role, "epoch": c.epoch, "leader": c.leader}))
}

/// `GET /readyz`: 200 only on the ALIVE leader whose store answers, else 503 with the reason
/// (for load balancers: send clients to the leader only).
#[utoipa::path(get, path = "/readyz", tag = "probes",
    responses((status = 200, description = "the ALIVE leader whose store answers", body = Object),
              (status = 503, description = "not the ALIVE leader, or its store does not answer", body = ErrorBody)))]
async fn readyz(State(m): State<Arc<Node>>) -> Response {
    match m.ready().await {
        Ok(()) => Json(serde_json::json!({"status": "ready", "role": m.role()})).into_response(),
        Err(why) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "probes",
    responses((status = 200, description = "Prometheus / OpenMetrics text", content_type = "application/openmetrics-text", body = String)))]
async fn metrics(State(m): State<Arc<Node>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render_metrics().await,
    )
}

/// `POST /api/v1/apps`: 201 with the new app, or — for a repeat of an earlier request with
/// the same `Idempotency-Key` — 200 with the app that request created (409 if the body
/// differs). `?dry_run=true`: 200 with the app as it would be and its placement, nothing
/// created. `?wait=30s`: the answer comes when the app ended or the wait ran out, with the
/// app as it then is.
#[utoipa::path(post, path = "/api/v1/apps", tag = "apps",
    params(("dry_run" = Option<bool>, Query, description = "validate and place, create nothing (200)"),
           ("wait" = Option<String>, Query, description = "answer once the app ended or this ran out (e.g. 30s, at most 300s)"),
           ("Idempotency-Key" = Option<String>, Header, description = "a repeat with the same key and body answers 200 with the first app")),
    request_body = SubmitRequest,
    responses((status = 201, description = "created and durable", body = App),
              (status = 200, description = "an idempotent repeat (the first app), or a dry run (the app as it would be, with dry_run and placement)", body = App),
              (status = 400, description = "invalid submission, key or query", body = ErrorBody), (status = 409, description = "the key was used with another body", body = ErrorBody),
              (status = 422, description = "unknown kind or field, or a body of the wrong type", body = ErrorBody), (status = 503, description = "not the leader (the body names it), or the store failed", body = ErrorBody)))]
async fn submit(
    State(m): State<Arc<Node>>,
    CallerScope(scope): CallerScope,
    headers: HeaderMap,
    query: Result<Query<SubmitQuery>, QueryRejection>,
    body: Result<Json<SubmitRequest>, JsonRejection>,
) -> ApiResult<Response> {
    let Query(query) = query?;
    let wait = query.wait.as_deref().map(parse_wait).transpose()?;
    let key = idempotency_key(&headers)?;
    let Json(req) = body?;
    let master = m.leader_master().await?;
    if query.dry_run {
        scope
            .check(&req.namespace, "the app")
            .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, e))?;
        let (app, placement) = master.dry_run(req)?;
        let mut out = serde_json::to_value(&app)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        out["dry_run"] = serde_json::Value::Bool(true);
        out["placement"] = match placement {
            Placement::Worker(w) => serde_json::json!({"worker_id": w}),
            Placement::Waiting(why) => serde_json::json!({"waiting": why}),
        };
        return Ok((StatusCode::OK, Json(out)).into_response());
    }
    let s = master.submit_as(&scope, req, key).await?;
    let mut current = s.app.clone();
    if let Some(wait) = wait {
        if let Some(now) = master.wait_ended(&s.app.id, wait).await {
            current = now;
        }
    }
    let app = present(&master.view().cluster, &current);
    let location = format!("/api/v1/apps/{}", app.id);
    let status = if s.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, [(header::LOCATION, location)], Json(app)).into_response())
}

/// The request's `Idempotency-Key`, checked.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = v.to_str().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key must be visible ASCII",
        )
    })?;
    aloha_core::cluster::check_idempotency_key(key)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(Some(key.to_string()))
}

/// Most apps in one `POST /api/v1/apps/batch`.
pub const MAX_BATCH_APPS: usize = 1000;

/// `POST /api/v1/apps/batch` takes no query parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchQuery {}

/// The body of `POST /api/v1/apps/batch`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 1000 submissions, each as the body of `POST /api/v1/apps`.
    pub apps: Vec<SubmitRequest>,
}

/// The answer of `POST /api/v1/apps/batch`: one result per submission, in order.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct BatchResults {
    /// The results.
    pub results: Vec<BatchResult>,
}

/// One submission's result in a batch: the status `POST /api/v1/apps` would have answered,
/// with the app or the error.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct BatchResult {
    /// 201 (created), 200 (an idempotent repeat: the first app), or the error's status.
    pub status: u16,
    /// The app, when accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<App>,
    /// Why it was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /api/v1/apps/batch`: up to 1000 submissions in one request, each accepted or refused
/// on its own (one result each, in order, with the status `POST /api/v1/apps` would give it),
/// all in one operation of the engine; every accepted app is durable when the answer comes.
/// With an `Idempotency-Key`, app `i` takes the key `<key>#<i>`, so a repeat of the batch
/// answers 200 with the first apps.
#[utoipa::path(post, path = "/api/v1/apps/batch", tag = "apps",
    params(("Idempotency-Key" = Option<String>, Header, description = "app i of the batch takes the key `<key>#<i>`: a repeat with the same key and bodies answers 200 for each with the first app")),
    request_body = BatchRequest,
    responses((status = 200, description = "one result per app, in order; each accepted app is durable", body = BatchResults),
              (status = 400, description = "no apps, more than 1000, a bad key, or a query parameter (there are none)", body = ErrorBody),
              (status = 413, description = "a body over 1 MiB", body = ErrorBody),
              (status = 422, description = "a body of the wrong shape (the path of the first bad field is named)", body = ErrorBody),
              (status = 503, description = "not the leader (the body names it), or the store failed: no app was accepted", body = ErrorBody)))]
async fn submit_batch(
    State(m): State<Arc<Node>>,
    CallerScope(scope): CallerScope,
    headers: HeaderMap,
    query: Result<Query<BatchQuery>, QueryRejection>,
    body: Result<Json<BatchRequest>, JsonRejection>,
) -> ApiResult<Response> {
    // No parameters: a `?dry_run=true` meant for `POST /api/v1/apps` must not create apps.
    let Query(BatchQuery {}) = query?;
    let key = idempotency_key(&headers)?;
    let Json(batch) = body?;
    let n = batch.apps.len();
    if n == 0 || n > MAX_BATCH_APPS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("a batch holds 1 to {MAX_BATCH_APPS} apps; this one holds {n}"),
        ));
    }
    let keys: Vec<Option<String>> = (0..n)
        .map(|i| key.as_ref().map(|k| format!("{k}#{i}")))
        .collect();
    if let Some(Some(last)) = keys.last() {
        aloha_core::cluster::check_idempotency_key(last).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("{e} (with the `#<index>` a batch adds)"),
            )
        })?;
    }
    let master = m.leader_master().await?;
    let results = master
        .submit_batch_as(&scope, batch.apps.into_iter().zip(keys).collect())
        .await?;
    let view = master.view();
    let results = results
        .into_iter()
        .map(|r| match r {
            Ok(s) => BatchResult {
                status: if s.created { 201 } else { 200 },
                app: Some(present(&view.cluster, &s.app).into_owned()),
                error: None,
            },
            Err(e) => {
                let e = ApiError::from(e);
                let (status, msg) = e.parts();
                BatchResult {
                    status: status.as_u16(),
                    app: None,
                    error: Some(msg.to_string()),
                }
            }
        })
        .collect();
    Ok((StatusCode::OK, Json(BatchResults { results })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    namespace: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
    schedule_id: Option<String>,
}

/// `limit` as given: 1 or more, served up to [`MAX_LIST_LIMIT`].
fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if limit == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "limit must be at least 1",
        ));
    }
    Ok(limit.min(MAX_LIST_LIMIT))
}

#[utoipa::path(get, path = "/api/v1/apps", tag = "apps",
    params(("state" = Option<AppState>, Query, description = "only apps in this state"),
           ("namespace" = Option<String>, Query, description = "only apps in this namespace; a page then looks at 20,000 apps at most, so it may be short, even empty, with a `next`"),
           ("limit" = Option<usize>, Query, description = "page size, default 100, served up to 1000"),
           ("after" = Option<String>, Query, description = "the cursor: the `next` of the previous page"),
           ("schedule_id" = Option<String>, Query, description = "only the runs of this schedule")),
    responses((status = 200, description = "a page, newest first", body = AppList), (status = 400, description = "a bad query", body = ErrorBody)))]
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
    let namespace = q.namespace.as_deref().filter(|n| !n.is_empty());
    if let Some(ns) = namespace {
        aloha_core::namespace::validate_name(ns)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    }
    let limit = page_limit(q.limit)?;
    let after = q.after.as_deref().filter(|a| !a.is_empty());
    if let Some(sid) = q.schedule_id.as_deref().filter(|s| !s.is_empty()) {
        if state.is_some() || namespace.is_some() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "schedule_id cannot be combined with state or namespace",
            ));
        }
        let (apps, next) = m.schedule_runs(sid, after, limit).await?;
        return Ok(Json(AppList { apps, next }));
    }
    let (apps, next) = m.apps(state, namespace, after, limit).await?;
    Ok(Json(AppList { apps, next }))
}

#[utoipa::path(get, path = "/api/v1/apps/{id}", tag = "apps",
    params(("id" = String, Path, description = "app id")),
    responses((status = 200, description = "the app", body = App), (status = 404, description = "unknown or expired", body = ErrorBody)))]
async fn show(State(m): State<Arc<Node>>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(m.app(&id).await?).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KillBody {
    reason: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/apps/{id}/kill", tag = "apps",
    params(("id" = String, Path, description = "app id")),
    request_body(content = Object, description = "optional: {\"reason\": \"...\"}"),
    responses((status = 202, description = "kill requested", body = App), (status = 400, description = "a bad body", body = ErrorBody),
              (status = 404, description = "unknown or expired", body = ErrorBody), (status = 409, description = "the app already ended", body = ErrorBody), (status = 503, description = "not the leader (the body names it), or the store failed", body = ErrorBody)))]
async fn kill(
    State(m): State<Arc<Node>>,
    CallerScope(scope): CallerScope,
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
    let master = m.leader_master().await?;
    let app = master.kill_as(&scope, &id, reason).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(present(&master.view().cluster, &app)),
    )
        .into_response())
}

/// `POST /api/v1/apps/{id}/retry`: 201 with a new app made from the ended app's template.
#[utoipa::path(post, path = "/api/v1/apps/{id}/retry", tag = "apps",
    params(("id" = String, Path, description = "the ended app")),
    responses((status = 201, description = "a new app from its template, with retry_of", body = App),
              (status = 404, description = "unknown or expired", body = ErrorBody), (status = 409, description = "the app has not ended", body = ErrorBody), (status = 503, description = "not the leader (the body names it), or the store failed", body = ErrorBody)))]
async fn retry(
    State(m): State<Arc<Node>>,
    CallerScope(scope): CallerScope,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let master = m.leader_master().await?;
    let app = master.retry_as(&scope, &id).await?;
    let location = format!("/api/v1/apps/{}", app.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(present(&master.view().cluster, &app)),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    /// How long running apps may go on (`"10m"`); default 1h.
    deadline: Option<String>,
}

/// The longest drain deadline.
const MAX_DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// `POST /api/v1/workers/{id}/drain`: no new placements; apps still running at the deadline
/// are stopped and relaunched elsewhere. 200 with the worker (`DRAINING`, or `DRAINED` when
/// empty).
#[utoipa::path(post, path = "/api/v1/workers/{id}/drain", tag = "workers",
    params(("id" = String, Path, description = "worker id")),
    request_body(content = Object, description = "optional: {\"deadline\": \"10m\"} (default 1h, at most 7 days)"),
    responses((status = 200, description = "the worker, DRAINING or DRAINED", body = WorkerInfo),
              (status = 400, description = "a bad deadline", body = ErrorBody), (status = 404, description = "unknown worker", body = ErrorBody), (status = 503, description = "not the leader (the body names it), or the store failed", body = ErrorBody)))]
async fn drain_worker(
    State(m): State<Arc<Node>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<aloha_core::api::WorkerInfo>> {
    let DrainBody { deadline } = optional_body(&body, "drain")?;
    let deadline = match deadline.as_deref() {
        None => std::time::Duration::from_secs(3600),
        Some(text) => humantime::parse_duration(text).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("deadline must be a duration such as \"10m\" (got {text:?}: {e})"),
            )
        })?,
    };
    if deadline > MAX_DRAIN_DEADLINE {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "deadline must be at most 7 days",
        ));
    }
    let master = m.leader_master().await?;
    Ok(Json(master.drain(&id, Some(deadline)).await?))
}

/// `POST /api/v1/workers/{id}/undrain`: the worker takes apps again.
#[utoipa::path(post, path = "/api/v1/workers/{id}/undrain", tag = "workers",
    params(("id" = String, Path, description = "worker id")),
    responses((status = 200, description = "the worker, taking apps again", body = WorkerInfo),
              (status = 404, description = "unknown worker", body = ErrorBody), (status = 503, description = "not the leader (the body names it), or the store failed", body = ErrorBody)))]
async fn undrain_worker(
    State(m): State<Arc<Node>>,
    Path(id): Path<String>,
) -> ApiResult<Json<aloha_core::api::WorkerInfo>> {
    let master = m.leader_master().await?;
    Ok(Json(master.drain(&id, None).await?))
}

#[utoipa::path(get, path = "/api/v1/workers", tag = "workers",
    responses((status = 200, description = "every worker with its usage", body = WorkerList), (status = 503, description = "the store failed", body = ErrorBody)))]
async fn workers(State(m): State<Arc<Node>>) -> ApiResult<Json<WorkerList>> {
    Ok(Json(WorkerList {
        workers: m.workers().await?,
    }))
}

#[utoipa::path(get, path = "/api/v1/cluster", tag = "cluster",
    responses((status = 200, description = "this master's role, the leader, the epoch, the members", body = ClusterInfo)))]
async fn cluster(State(m): State<Arc<Node>>) -> impl IntoResponse {
    Json(m.cluster().await)
}

/// Every client error is `{"error": ...}`: the plain-text answers of axum's extractors (a path
/// segment that is not UTF-8, say) are wrapped; JSON and HTML answers are left alone.
async fn json_errors(req: Request, next: Next) -> Response {
    let r = next.run(req).await;
    let plain = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !r.status().is_client_error() || !plain {
        return r;
    }
    let status = r.status();
    let body = axum::body::to_bytes(r.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    ApiError::new(status, String::from_utf8_lossy(&body).trim().to_string()).into_response()
}

// ----------------------------------------------------------------------------------------
// Authentication

/// Lets a request through when auth is off, the route is open, or it carries a token (or a
/// console session) with the role the route needs; else 401 (with `WWW-Authenticate:
/// Bearer`) or 403, both JSON.
pub(crate) async fn authorize(
    State(node): State<Arc<Node>>,
    mut req: Request,
    next: Next,
) -> Response {
    if !node.tokens.required() {
        return next.run(req).await;
    }
    let Some(needed) = crate::auth::required_role(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let (principal, csrf) = match crate::auth::bearer(req.headers()) {
        Some(token) => (node.tokens.check(token), None),
        None => match crate::console::session_of(&node, req.headers()) {
            Some((p, csrf)) => (Some(p), Some(csrf)),
            None => (None, None),
        },
    };
    let Some(principal) = principal else {
        let page = req.uri().path() == "/" || req.uri().path().starts_with("/ui/");
        if page && req.method() == axum::http::Method::GET {
            // A person at the console: to the login page.
            return (StatusCode::SEE_OTHER, [(header::LOCATION, "/ui/login")]).into_response();
        }
        let msg = if crate::auth::bearer(req.headers()).is_some() {
            "invalid or revoked token"
        } else {
            "a token is required: Authorization: Bearer <token>"
        };
        let mut r = ApiError::new(StatusCode::UNAUTHORIZED, msg).into_response();
        r.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer realm=\"aloha\""),
        );
        return r;
    };
    if principal.role < needed {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "token {} has the role {}; this needs {needed}",
                principal.token_id, principal.role
            ),
        )
        .into_response();
    }
    // A session (a browser) changing something: the form must carry the session's CSRF token
    // (the cookie alone would come along on a forged cross-site form post).
    if let Some(csrf) = csrf {
        if !matches!(
            *req.method(),
            axum::http::Method::GET | axum::http::Method::HEAD
        ) {
            let (parts, body) = req.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
                return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "the body is too large")
                    .into_response();
            };
            let given = form_urlencoded::parse(&bytes)
                .find(|(k, _)| k == "csrf")
                .map(|(_, v)| v.into_owned())
                .or_else(|| {
                    parts
                        .headers
                        .get("x-csrf-token")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                });
            let ok = given.is_some_and(|g| {
                g.len() == csrf.len()
                    && bool::from(subtle::ConstantTimeEq::ct_eq(g.as_bytes(), csrf.as_bytes()))
            });
            if !ok {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "missing or wrong CSRF token: reload the page and try again",
                )
                .into_response();
            }
            req = Request::from_parts(parts, axum::body::Body::from(bytes));
        }
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What it is for (1 to 64 characters, no control characters).
    pub name: String,
    /// `reader`, `submitter` or `admin`.
    pub role: crate::auth::Role,
    /// For a `submitter`: the namespaces it may write in (absent or empty: every namespace).
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// A new token: its text, shown this once, and its record.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    /// The bearer token. Not stored (only its hash is) and never shown again.
    pub token: String,
    /// Its record.
    #[serde(flatten)]
    pub info: crate::auth::TokenInfo,
}

/// `GET /api/v1/tokens`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TokenList {
    /// Every token, without secrets.
    pub tokens: Vec<crate::auth::TokenInfo>,
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = NewToken,
    responses((status = 201, description = "the token, shown once", body = CreatedToken),
              (status = 400, description = "bad name or role", body = ErrorBody),
              (status = 401, description = "no valid token", body = ErrorBody),
              (status = 403, description = "not an admin token", body = ErrorBody),
              (status = 503, description = "not the leader, or the store failed", body = ErrorBody)))]
async fn create_token(
    State(m): State<Arc<Node>>,
    body: Result<Json<NewToken>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let Json(req) = body?;
    let name = req.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "name must be 1 to 64 characters without control characters",
        ));
    }
    let mut namespaces = req.namespaces;
    if !namespaces.is_empty() && req.role != crate::auth::Role::Submitter {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "only submitter tokens are scoped to namespaces (a {} token reads or writes every namespace)",
                req.role
            ),
        ));
    }
    for ns in &namespaces {
        aloha_core::namespace::validate_name(ns)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    }
    namespaces.sort();
    namespaces.dedup();
    let master = m.leader_master().await?;
    let (info, token) = m
        .tokens
        .create(
            master.store().as_ref(),
            name,
            req.role,
            namespaces,
            chrono::Utc::now(),
        )
        .await
        .map_err(|e| match e {
            crate::auth::CreateError::Store(s) => {
                ApiError::from(crate::master::MasterError::from(s))
            }
            other => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
        })?;
    tracing::info!(id = %info.id, role = %info.role, "token created");
    Ok((StatusCode::CREATED, Json(CreatedToken { token, info })))
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, description = "every token, without secrets", body = TokenList),
              (status = 401, description = "no valid token", body = ErrorBody),
              (status = 403, description = "not an admin token", body = ErrorBody)))]
async fn list_tokens(State(m): State<Arc<Node>>) -> Json<TokenList> {
    Json(TokenList {
        tokens: m.tokens.list(),
    })
}

/// The answer of `DELETE /api/v1/tokens/{id}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RevokedToken {
    /// The token revoked.
    pub revoked: String,
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "token id (tok-...)")),
    responses((status = 200, description = "revoked: it admits nobody from now on (standbys within 2 s)", body = RevokedToken),
              (status = 404, description = "no such token", body = ErrorBody),
              (status = 401, description = "no valid token", body = ErrorBody),
              (status = 403, description = "not an admin token", body = ErrorBody),
              (status = 503, description = "not the leader, or the store failed", body = ErrorBody)))]
async fn revoke_token(
    State(m): State<Arc<Node>>,
    Path(id): Path<String>,
) -> ApiResult<Json<RevokedToken>> {
    let master = m.leader_master().await?;
    if !m
        .tokens
        .revoke(master.store().as_ref(), &id)
        .await
        .map_err(crate::master::MasterError::from)?
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no token {id}"),
        ));
    }
    tracing::info!(%id, "token revoked");
    Ok(Json(RevokedToken { revoked: id }))
}

/// `GET /api/v1/namespaces`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct NamespaceList {
    /// Every namespace (`default` included), by name, with its usage next to its quota.
    pub namespaces: Vec<NamespaceInfo>,
}

#[utoipa::path(get, path = "/api/v1/namespaces", tag = "namespaces",
    responses((status = 200, description = "every namespace with its quota, weight and usage", body = NamespaceList)))]
async fn list_namespaces(State(m): State<Arc<Node>>) -> ApiResult<Json<NamespaceList>> {
    let view = m.schedule_view().await?;
    Ok(Json(NamespaceList {
        namespaces: view.cluster.namespaces(),
    }))
}

#[utoipa::path(get, path = "/api/v1/namespaces/{name}", tag = "namespaces",
    params(("name" = String, Path, description = "namespace")),
    responses((status = 200, description = "the namespace", body = NamespaceInfo),
              (status = 404, description = "no such namespace", body = ErrorBody)))]
async fn show_namespace(
    State(m): State<Arc<Node>>,
    Path(name): Path<String>,
) -> ApiResult<Json<NamespaceInfo>> {
    let view = m.schedule_view().await?;
    view.cluster
        .namespace(&name)
        .map(Json)
        .ok_or_else(|| crate::master::MasterError::NamespaceNotFound(name).into())
}

/// `PUT /api/v1/namespaces/{name}`: creates the namespace or replaces its quota and weight.
#[utoipa::path(put, path = "/api/v1/namespaces/{name}", tag = "namespaces",
    params(("name" = String, Path, description = "namespace: a-z, 0-9 and '-', at most 63")),
    request_body = NamespaceSpec,
    responses((status = 200, description = "the namespace as it now is", body = NamespaceInfo),
              (status = 400, description = "a bad name, quota or weight", body = ErrorBody),
              (status = 403, description = "not an admin token", body = ErrorBody),
              (status = 422, description = "unknown field or wrong type", body = ErrorBody),
              (status = 503, description = "not the leader (the body names it), or the store failed", body = ErrorBody)))]
async fn put_namespace(
    State(m): State<Arc<Node>>,
    Path(name): Path<String>,
    body: Result<Json<NamespaceSpec>, JsonRejection>,
) -> ApiResult<Json<NamespaceInfo>> {
    let Json(spec) = body?;
    let master = m.leader_master().await?;
    Ok(Json(master.put_namespace(&name, spec).await?))
}

/// The answer of `DELETE /api/v1/namespaces/{name}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DeletedNamespace {
    /// The namespace deleted.
    pub deleted: String,
}

#[utoipa::path(delete, path = "/api/v1/namespaces/{name}", tag = "namespaces",
    params(("name" = String, Path, description = "namespace")),
    responses((status = 200, description = "deleted (its ended apps stay until the retention removes them)", body = DeletedNamespace),
              (status = 404, description = "no such namespace", body = ErrorBody),
              (status = 409, description = "`default`, or it still has queued or running apps or schedules", body = ErrorBody),
              (status = 503, description = "not the leader (the body names it), or the store failed", body = ErrorBody)))]
async fn delete_namespace(
    State(m): State<Arc<Node>>,
    Path(name): Path<String>,
) -> ApiResult<Json<DeletedNamespace>> {
    let master = m.leader_master().await?;
    master.delete_namespace(&name).await?;
    Ok(Json(DeletedNamespace { deleted: name }))
}

/// The answer of `POST /api/v1/cluster/accept-restore`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AcceptedRestore {
    /// The epoch generation now in force: every epoch from now on is above every earlier one.
    pub generation: u64,
}

#[utoipa::path(post, path = "/api/v1/cluster/accept-restore", tag = "cluster",
    responses(
        (status = 200, description = "the restore is accepted; masters refusing to lead campaign again", body = AcceptedRestore),
        (status = 400, description = "single-node mode", body = ErrorBody),
        (status = 409, description = "this master leads: nothing to accept", body = ErrorBody),
        (status = 503, description = "the store failed", body = ErrorBody)))]
async fn accept_restore(State(m): State<Arc<Node>>) -> ApiResult<Json<AcceptedRestore>> {
    let generation = m.accept_restore().await?;
    Ok(Json(AcceptedRestore { generation }))
}

// ----------------------------------------------------------------------------------------
// Schedules

/// A schedule operation on the leader; the schedule as it is after it.
async fn schedule_write(
    m: &Node,
    scope: &Scope,
    cmd: ScheduleCmd,
) -> ApiResult<(Arc<Master>, ScheduleAnswer)> {
    let master = m.leader_master().await?;
    let answer = master.schedule_op_as(scope, cmd).await?;
    Ok((master, answer))
}

fn schedule_info(master: &Master, answer: ScheduleAnswer) -> ApiResult<ScheduleInfo> {
    let ScheduleAnswer::Schedule(s) = answer else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unexpected answer of the engine",
        ));
    };
    let view = master.view();
    Ok(match view.cluster.schedule(&s.id) {
        Some(e) => view.cluster.schedule_info(e),
        // Deleted: as it was.
        None => ScheduleInfo {
            state: s.state(),
            next_runs: Vec::new(),
            schedule: (*s).clone(),
        },
    })
}

/// `POST /api/v1/schedules`: 201 with the schedule.
#[utoipa::path(post, path = "/api/v1/schedules", tag = "schedules",
    request_body = ScheduleRequest,
    responses((status = 201, description = "created", body = ScheduleInfo),
              (status = 400, description = "a bad rule, zone, window or template", body = ErrorBody), (status = 422, description = "unknown field or wrong type", body = ErrorBody), (status = 503, description = "not the leader (the body names it), or the store failed", body = ErrorBody)))]
async fn create_schedule(
    State(m): State<Arc<Node>>,
    CallerScope(scope): CallerScope,
    body: Result<Json<ScheduleRequest>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(req) = body?;
    let (master, answer) = schedule_write(&m, &scope, ScheduleCmd::Create(req)).await?;
    let info = schedule_info(&master, answer)?;
    let location = format!("/api/v1/schedules/{}", info.schedule.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(info),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleListQuery {
    limit: Option<usize>,
    after: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/schedules", tag = "schedules",
    params(("limit" = Option<usize>, Query, description = "page size, default 100, up to 1000"),
           ("after" = Option<String>, Query, description = "the cursor: the `next` of the previous page")),
    responses((status = 200, description = "a page, newest first", body = ScheduleList), (status = 400, description = "a bad query", body = ErrorBody)))]
async fn list_schedules(
    State(m): State<Arc<Node>>,
    q: Result<Query<ScheduleListQuery>, QueryRejection>,
) -> ApiResult<Json<ScheduleList>> {
    let Query(q) = q?;
    let limit = page_limit(q.limit)?;
    let after = q.after.as_deref().filter(|a| !a.is_empty());
    Ok(Json(m.schedules(after, limit).await?))
}

#[utoipa::path(get, path = "/api/v1/schedules/{id}", tag = "schedules",
    params(("id" = String, Path, description = "schedule id")),
    responses((status = 200, description = "the schedule", body = ScheduleInfo), (status = 404, description = "unknown schedule", body = ErrorBody)))]
async fn show_schedule(
    State(m): State<Arc<Node>>,
    Path(id): Path<String>,
) -> ApiResult<Json<ScheduleInfo>> {
    Ok(Json(m.schedule(&id).await?))
}

#[utoipa::path(patch, path = "/api/v1/schedules/{id}", tag = "schedules",
    params(("id" = String, Path, description = "schedule id")),
    request_body = SchedulePatch,
    responses((status = 200, description = "the schedule after the change", body = ScheduleInfo),
              (status = 400, description = "a bad change", body = ErrorBody), (status = 404, description = "unknown schedule", body = ErrorBody), (status = 422, description = "unknown field or wrong type", body = ErrorBody), (status = 503, description = "not the leader (the body names it), or the store failed", body = ErrorBody)))]
async fn update_schedule(
    State(m): State<Arc<Node>>,
    CallerScope(scope): CallerScope,
    Path(id): Path<String>,
    body: Result<Json<SchedulePatch>, JsonRejection>,
) -> ApiResult<Json<ScheduleInfo>> {
    let Json(patch) = body?;
    let (master, answer) =
        schedule_write(&m, &scope, ScheduleCmd::Update(ScheduleId(id), patch)).await?;
    Ok(Json(schedule_info(&master, answer)?))
}

#[utoipa::path(delete, path = "/api/v1/schedules/{id}", tag = "schedules",
    params(("id" = String, Path, description = "schedule id")),
    responses((status = 200, description = "the schedule as it was (its runs are left alone)", body = ScheduleInfo),
              (status = 404, description = "unknown schedule", body = ErrorBody), (status = 503, description = "not the leader (the body names it), or the store failed", body = ErrorBody)))]
async fn delete_schedule(
    State(m): State<Arc<Node>>,
    CallerScope(scope): CallerScope,
    Path(id): Path<String>,
) -> ApiResult<Json<ScheduleInfo>> {
    let (master, answer) = schedule_write(&m, &scope, ScheduleCmd::Delete(ScheduleId(id))).await?;
    Ok(Json(schedule_info(&master, answer)?))
}

#[utoipa::path(post, path = "/api/v1/schedules/{id}/pause", tag = "schedules",
    params(("id" = String, Path, description = "schedule id")),
    responses((status = 200, description = "paused", body = ScheduleInfo), (status = 404, description = "unknown schedule", body = ErrorBody),
              (status = 409, description = "the schedule has ended", body = ErrorBody), (status = 503, description = "not the leader (the body names it), or the store failed", body = ErrorBody)))]
async fn pause_schedule(
    State(m): State<Arc<Node>>,
    CallerScope(scope): CallerScope,
    Path(id): Path<String>,
) -> ApiResult<Json<ScheduleInfo>> {
    let (master, answer) = schedule_write(&m, &scope, ScheduleCmd::Pause(ScheduleId(id))).await?;
    Ok(Json(schedule_info(&master, answer)?))
}

#[utoipa::path(post, path = "/api/v1/schedules/{id}/resume", tag = "schedules",
    params(("id" = String, Path, description = "schedule id")),
    responses((status = 200, description = "resumed (times passed while paused are skipped)", body = ScheduleInfo),
              (status = 404, description = "unknown schedule", body = ErrorBody), (status = 503, description = "not the leader (the body names it), or the store failed", body = ErrorBody)))]
async fn resume_schedule(
    State(m): State<Arc<Node>>,
    CallerScope(scope): CallerScope,
    Path(id): Path<String>,
) -> ApiResult<Json<ScheduleInfo>> {
    let (master, answer) = schedule_write(&m, &scope, ScheduleCmd::Resume(ScheduleId(id))).await?;
    Ok(Json(schedule_info(&master, answer)?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    overlap: Option<Overlap>,
}

/// An optional JSON body: empty means the default.
fn optional_body<T: serde::de::DeserializeOwned + Default>(
    body: &Bytes,
    what: &str,
) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid {what} body: {e}")))
}

fn outcome_json(t: chrono::DateTime<chrono::Utc>, o: &RunOutcome) -> serde_json::Value {
    match o {
        RunOutcome::Created(app) => serde_json::json!({
            "scheduled_at": t, "outcome": "created", "app_id": app.id}),
        RunOutcome::Queued => serde_json::json!({"scheduled_at": t, "outcome": "queued"}),
        RunOutcome::Skipped(why) => serde_json::json!({
            "scheduled_at": t, "outcome": "skipped", "message": why}),
    }
}

/// `POST /api/v1/schedules/{id}/trigger`: 201 with the run, 202 when it waits for earlier
/// runs (`queue`, `cancel_previous`), 409 when the overlap policy skips it.
#[utoipa::path(post, path = "/api/v1/schedules/{id}/trigger", tag = "schedules",
    params(("id" = String, Path, description = "schedule id")),
    request_body(content = Object, description = "optional: {\"overlap\": \"allow\"}"),
    responses((status = 201, description = "the run", body = App),
              (status = 202, description = "it waits for earlier runs", body = Object),
              (status = 404, description = "unknown schedule", body = ErrorBody), (status = 409, description = "skipped by the overlap policy, or the schedule ended", body = ErrorBody), (status = 503, description = "not the leader (the body names it), or the store failed", body = ErrorBody)))]
async fn trigger_schedule(
    State(m): State<Arc<Node>>,
    CallerScope(scope): CallerScope,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let TriggerBody { overlap } = optional_body(&body, "trigger")?;
    let (master, answer) = schedule_write(
        &m,
        &scope,
        ScheduleCmd::Trigger(ScheduleId(id.clone()), overlap),
    )
    .await?;
    let ScheduleAnswer::Run(outcome) = answer else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unexpected answer of the engine",
        ));
    };
    Ok(match outcome {
        RunOutcome::Created(app) => (
            StatusCode::CREATED,
            [(header::LOCATION, format!("/api/v1/apps/{}", app.id))],
            Json(present(&master.view().cluster, &app).into_owned()),
        )
            .into_response(),
        RunOutcome::Queued => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"schedule_id": id, "outcome": "queued"})),
        )
            .into_response(),
        RunOutcome::Skipped(why) => {
            ApiError::new(StatusCode::CONFLICT, format!("not run: {why}")).into_response()
        }
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackfillBody {
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/v1/schedules/{id}/backfill`: the nominal times in `[start, end)` and, unless a
/// dry run, what became of each.
#[utoipa::path(post, path = "/api/v1/schedules/{id}/backfill", tag = "schedules",
    params(("id" = String, Path, description = "schedule id")),
    request_body(content = Object, description = "{\"start\", \"end\", \"dry_run\"}: RFC 3339 times, [start, end)"),
    responses((status = 200, description = "{times, runs: [{scheduled_at, outcome, app_id | message}]}", body = Object),
              (status = 400, description = "a bad window (more than 10000 times, or end before start)", body = ErrorBody), (status = 404, description = "unknown schedule", body = ErrorBody),
              (status = 422, description = "a bad body", body = ErrorBody), (status = 503, description = "not the leader (the body names it), or the store failed", body = ErrorBody)))]
async fn backfill_schedule(
    State(m): State<Arc<Node>>,
    CallerScope(scope): CallerScope,
    Path(id): Path<String>,
    body: Result<Json<BackfillBody>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Json(b) = body?;
    let cmd = ScheduleCmd::Backfill {
        id: ScheduleId(id.clone()),
        start: b.start,
        end: b.end,
        dry_run: b.dry_run,
    };
    let (_, answer) = schedule_write(&m, &scope, cmd).await?;
    let ScheduleAnswer::Backfill(bf) = answer else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unexpected answer of the engine",
        ));
    };
    let runs: Vec<serde_json::Value> = bf
        .times
        .iter()
        .zip(bf.outcomes.iter())
        .map(|(t, o)| outcome_json(*t, o))
        .collect();
    Ok(Json(serde_json::json!({
        "schedule_id": id,
        "dry_run": b.dry_run,
        "times": bf.times,
        "runs": runs,
    })))
}
