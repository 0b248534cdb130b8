//! The REST API (axum). Every error is `{"error": "..."}` with a 4xx/5xx status; the handlers
//! never panic on input.

use std::sync::Arc;

use aloha_core::api::{AppList, WorkerList};
use aloha_core::api::{ScheduleInfo, ScheduleList};
use aloha_core::cluster::schedules::RunOutcome;
use aloha_core::cluster::Placement;
use aloha_core::schedules::{Overlap, ScheduleId, SchedulePatch, ScheduleRequest};
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
        .route("/api/v1/apps", post(submit).get(list))
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

/// `GET /readyz`: 200 only on the ALIVE leader whose store answers, else 503 with the reason
/// (for load balancers: send clients to the leader only).
async fn readyz(State(m): State<Arc<Node>>) -> Response {
    match m.ready().await {
        Ok(()) => Json(serde_json::json!({"status": "ready", "role": m.role()})).into_response(),
        Err(why) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
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

/// `POST /api/v1/apps`: 201 with the new app, or — for a repeat of an earlier request with
/// the same `Idempotency-Key` — 200 with the app that request created (409 if the body
/// differs). `?dry_run=true`: 200 with the app as it would be and its placement, nothing
/// created. `?wait=30s`: the answer comes when the app ended or the wait ran out, with the
/// app as it then is.
async fn submit(
    State(m): State<Arc<Node>>,
    headers: HeaderMap,
    query: Result<Query<SubmitQuery>, QueryRejection>,
    body: Result<Json<SubmitRequest>, JsonRejection>,
) -> ApiResult<Response> {
    let Query(query) = query?;
    let wait = query.wait.as_deref().map(parse_wait).transpose()?;
    let key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(v) => {
            let key = v.to_str().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "Idempotency-Key must be visible ASCII",
                )
            })?;
            aloha_core::cluster::check_idempotency_key(key)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
            Some(key.to_string())
        }
    };
    let Json(req) = body?;
    let master = m.leader_master().await?;
    if query.dry_run {
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
    let s = master.submit(req, key).await?;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
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
    let limit = page_limit(q.limit)?;
    let after = q.after.as_deref().filter(|a| !a.is_empty());
    if let Some(sid) = q.schedule_id.as_deref().filter(|s| !s.is_empty()) {
        if state.is_some() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "schedule_id and state cannot be combined",
            ));
        }
        let (apps, next) = m.schedule_runs(sid, after, limit).await?;
        return Ok(Json(AppList { apps, next }));
    }
    let (apps, next) = m.apps(state, after, limit).await?;
    Ok(Json(AppList { apps, next }))
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
    let master = m.leader_master().await?;
    let app = master.kill(&id, reason).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(present(&master.view().cluster, &app)),
    )
        .into_response())
}

/// `POST /api/v1/apps/{id}/retry`: 201 with a new app made from the ended app's template.
async fn retry(State(m): State<Arc<Node>>, Path(id): Path<String>) -> ApiResult<Response> {
    let master = m.leader_master().await?;
    let app = master.retry(&id).await?;
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
async fn undrain_worker(
    State(m): State<Arc<Node>>,
    Path(id): Path<String>,
) -> ApiResult<Json<aloha_core::api::WorkerInfo>> {
    let master = m.leader_master().await?;
    Ok(Json(master.drain(&id, None).await?))
}

async fn workers(State(m): State<Arc<Node>>) -> ApiResult<Json<WorkerList>> {
    Ok(Json(WorkerList {
        workers: m.workers().await?,
    }))
}

async fn cluster(State(m): State<Arc<Node>>) -> impl IntoResponse {
    Json(m.cluster().await)
}

// ----------------------------------------------------------------------------------------
// Schedules

/// A schedule operation on the leader; the schedule as it is after it.
async fn schedule_write(m: &Node, cmd: ScheduleCmd) -> ApiResult<(Arc<Master>, ScheduleAnswer)> {
    let master = m.leader_master().await?;
    let answer = master.schedule_op(cmd).await?;
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
async fn create_schedule(
    State(m): State<Arc<Node>>,
    body: Result<Json<ScheduleRequest>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(req) = body?;
    let (master, answer) = schedule_write(&m, ScheduleCmd::Create(req)).await?;
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

async fn list_schedules(
    State(m): State<Arc<Node>>,
    q: Result<Query<ScheduleListQuery>, QueryRejection>,
) -> ApiResult<Json<ScheduleList>> {
    let Query(q) = q?;
    let limit = page_limit(q.limit)?;
    let after = q.after.as_deref().filter(|a| !a.is_empty());
    Ok(Json(m.schedules(after, limit).await?))
}

async fn show_schedule(
    State(m): State<Arc<Node>>,
    Path(id): Path<String>,
) -> ApiResult<Json<ScheduleInfo>> {
    Ok(Json(m.schedule(&id).await?))
}

async fn update_schedule(
    State(m): State<Arc<Node>>,
    Path(id): Path<String>,
    body: Result<Json<SchedulePatch>, JsonRejection>,
) -> ApiResult<Json<ScheduleInfo>> {
    let Json(patch) = body?;
    let (master, answer) = schedule_write(&m, ScheduleCmd::Update(ScheduleId(id), patch)).await?;
    Ok(Json(schedule_info(&master, answer)?))
}

async fn delete_schedule(
    State(m): State<Arc<Node>>,
    Path(id): Path<String>,
) -> ApiResult<Json<ScheduleInfo>> {
    let (master, answer) = schedule_write(&m, ScheduleCmd::Delete(ScheduleId(id))).await?;
    Ok(Json(schedule_info(&master, answer)?))
}

async fn pause_schedule(
    State(m): State<Arc<Node>>,
    Path(id): Path<String>,
) -> ApiResult<Json<ScheduleInfo>> {
    let (master, answer) = schedule_write(&m, ScheduleCmd::Pause(ScheduleId(id))).await?;
    Ok(Json(schedule_info(&master, answer)?))
}

async fn resume_schedule(
    State(m): State<Arc<Node>>,
    Path(id): Path<String>,
) -> ApiResult<Json<ScheduleInfo>> {
    let (master, answer) = schedule_write(&m, ScheduleCmd::Resume(ScheduleId(id))).await?;
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
async fn trigger_schedule(
    State(m): State<Arc<Node>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let TriggerBody { overlap } = optional_body(&body, "trigger")?;
    let (master, answer) =
        schedule_write(&m, ScheduleCmd::Trigger(ScheduleId(id.clone()), overlap)).await?;
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
async fn backfill_schedule(
    State(m): State<Arc<Node>>,
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
    let (_, answer) = schedule_write(&m, cmd).await?;
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
