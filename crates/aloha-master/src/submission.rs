//! Spark's REST submission protocol (`--submission-addr`), so that `spark-submit --master
//! spark://HOST:PORT --deploy-mode cluster --conf spark.master.rest.enabled=true` submits to
//! Aloha, and `spark-submit --status ID` / `--kill ID` follow the submission.
//!
//! Routes, as Spark's `RestSubmissionServer` serves them:
//! - `POST /v1/submissions/create`: a `CreateSubmissionRequest`, either Spark's (`appResource`,
//!   `mainClass`, `sparkProperties`, ...: a `spark` app whose driver the worker runs with
//!   `spark-submit`) or Aloha's (`entryPoint` names any plugin kind); answered with a
//!   `CreateSubmissionResponse`;
//! - `GET /v1/submissions/status/{id}`: a `SubmissionStatusResponse`;
//! - `POST /v1/submissions/kill/{id}`: a `KillSubmissionResponse`;
//! - anything else: an `ErrorResponse`, `400`, or `468` for a protocol version other than `v1`.
//!
//! The submission id is the app id. Submissions take the same leader path as
//! `POST /api/v1/apps`. A master that does not lead answers `200` with `success: false` and a
//! message starting `Current state is not alive`, which is what makes Spark's client try the
//! next master of `spark://m1:6066,m2:6066`.
//!
//! The translation of requests and the shapes of responses are pure functions (tested below);
//! the handlers only ask the [`Node`] and the leader's [`Master`](crate::master::Master).
//!
//! Spark's protocol has no authentication of its own (Spark's CVE-2018-11770); here requests
//! need, unless the port is on loopback and no JWS secret is set, Spark's JWS bearer
//! (`--submission-jws-secret-file`, [`crate::jws`]) or an Aloha token (`--auth required`): see
//! [`router`] and docs/rest-api.md.

use std::collections::BTreeMap;
use std::sync::Arc;

use aloha_core::api::Role;
use aloha_core::cluster::Lookup;
use aloha_core::namespace::Scope;
use aloha_core::{AppId, AppState, SubmitRequest};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{debug, info};

use crate::http::CallerScope;
use crate::master::{present, MasterError};
use crate::node::Node;

/// The protocol version served (Spark's `RestSubmissionServer.PROTOCOL_VERSION`).
pub const PROTOCOL_VERSION: &str = "v1";
/// The status of a request for another protocol version (Spark's `SC_UNKNOWN_PROTOCOL_VERSION`).
pub const UNKNOWN_PROTOCOL_VERSION: u16 = 468;
/// Relaunches granted to a supervised driver (`spark.driver.supervise=true`, Aloha's
/// `supervise`): it is restarted `on_failure`, and on the loss of its worker, this many times,
/// with the default backoff (1 s, doubling, at most 5 min). Spark's master relaunches a
/// supervised driver without end; a bound keeps a driver that always fails from cycling forever.
pub const SUPERVISE_MAX_RETRIES: i64 = 10;
/// Memory of a Spark driver without `spark.driver.memory`, MiB (Spark's default, 1g).
pub const DEFAULT_DRIVER_MEMORY_MB: i64 = 1024;
/// The prefix of every answer of a master that does not lead: Spark's client recognises a
/// standby by it (`Utils.responseFromBackup`).
pub const NOT_ALIVE: &str = "Current state is not alive";
/// Largest accepted request body.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Spark properties that are about how the client submitted, not about the driver: the driver
/// runs on the worker's `--master` (`[plugins.spark] master`), in client mode, and gets its name
/// as `--name`.
const CLIENT_ONLY_PROPERTIES: [&str; 5] = [
    "spark.master",
    "spark.submit.deployMode",
    "spark.master.rest.enabled",
    "spark.app.name",
    NAMESPACE_PROPERTY,
];
const SPARK_FIELDS: [&str; 8] = [
    "action",
    "clientSparkVersion",
    "appResource",
    "mainClass",
    "appArgs",
    "sparkProperties",
    "environmentVariables",
    "message",
];
const ALOHA_FIELDS: [&str; 10] = [
    "action",
    "name",
    "namespace",
    "entryPoint",
    "libs",
    "args",
    "memory",
    "cores",
    "supervise",
    "message",
];

/// The Spark property that names the driver's namespace (default `default`).
pub const NAMESPACE_PROPERTY: &str = "spark.aloha.namespace";

/// What the server says it runs, in `serverSparkVersion` (Spark's client only shows it).
pub fn server_version() -> String {
    format!("aloha-rs {}", env!("CARGO_PKG_VERSION"))
}

/// The response classes of Spark's protocol; `action` is the class name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Answer to `POST /v1/submissions/create`.
    Create,
    /// Answer to `GET /v1/submissions/status/{id}`.
    Status,
    /// Answer to `POST /v1/submissions/kill/{id}`.
    Kill,
    /// Any refused request.
    Error,
}

impl Action {
    /// Spark's class name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "CreateSubmissionResponse",
            Action::Status => "SubmissionStatusResponse",
            Action::Kill => "KillSubmissionResponse",
            Action::Error => "ErrorResponse",
        }
    }
}

/// A response message, serialized with Spark's field names; absent fields are left out (Spark
/// writes its messages with `Include.NON_NULL`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reply {
    /// The response class.
    pub action: &'static str,
    /// See [`server_version`].
    pub server_spark_version: String,
    /// Whether the request did what it asked.
    pub success: bool,
    /// The submission (app) id; never on an `ErrorResponse`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submission_id: Option<String>,
    /// Why, or what happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Status only: the driver's state in Spark's names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_state: Option<&'static str>,
    /// Status only: the worker the driver runs (or ran) on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// Status only: that worker's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_host_port: Option<String>,
    /// Error only, on a version mismatch: the highest version served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub highest_protocol_version: Option<&'static str>,
    /// Create only: request fields this server does not know (ignored).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_fields: Vec<String>,
}

impl Reply {
    /// A reply of class `action`.
    pub fn new(action: Action, success: bool, message: impl Into<String>) -> Reply {
        Reply {
            action: action.as_str(),
            server_spark_version: server_version(),
            success,
            submission_id: None,
            message: Some(message.into()),
            driver_state: None,
            worker_id: None,
            worker_host_port: None,
            highest_protocol_version: None,
            unknown_fields: Vec::new(),
        }
    }

    fn id(mut self, id: &str) -> Reply {
        self.submission_id = Some(id.to_string());
        self
    }
}

/// A reply with its HTTP status.
pub struct Answer(pub StatusCode, pub Reply);

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Answer {
    Answer(status, Reply::new(Action::Error, false, message))
}

fn bad_request(message: impl Into<String>) -> Answer {
    error(StatusCode::BAD_REQUEST, message)
}

/// A driver's state as Spark names it. LAUNCHING is not a Spark state: it shows as SUBMITTED
/// (the driver is not running yet).
pub fn driver_state(state: AppState) -> &'static str {
    match state {
        AppState::Submitted | AppState::Launching => "SUBMITTED",
        AppState::Running => "RUNNING",
        AppState::Finished => "FINISHED",
        AppState::Relaunching => "RELAUNCHING",
        AppState::Unknown => "UNKNOWN",
        AppState::Killed => "KILLED",
        AppState::Failed => "FAILED",
        AppState::Error => "ERROR",
    }
}

/// The router: every path goes through [`dispatch`], which routes like Spark's servlets (and
/// answers like its `ErrorServlet` where none matches).
///
/// Spark's protocol has no authentication of its own. `open` (a loopback address without a
/// JWS secret): served as Spark serves it. Otherwise every request needs a bearer: a JWS
/// signed with the `--submission-jws-secret-file` secret (Spark's `JWSFilter`: any action), or
/// with `--auth required` a token like the REST API's (`submitter` to create and kill, `reader`
/// for the status); else `401`.
pub fn router(node: Arc<Node>, open: bool) -> Router {
    let r = Router::new().fallback(dispatch);
    let r = if open {
        r
    } else {
        r.layer(axum::middleware::from_fn_with_state(
            node.clone(),
            authorize,
        ))
    };
    r.layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(node)
}

/// A request with a valid JWS passes; without one, an Aloha token decides when `--auth
/// required` is on ([`crate::http::authorize`]), else `401`.
async fn authorize(
    State(node): State<Arc<Node>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(key) = &node.config().submission_jws else {
        return crate::http::authorize(State(node), req, next).await;
    };
    if let Some(bearer) = crate::auth::bearer(req.headers()) {
        match key.verify(bearer, chrono::Utc::now().timestamp()) {
            Ok(()) => return next.run(req).await,
            // An Aloha token is no JWS: only worth a debug line.
            Err(e) => debug!("submission request without a valid JWS: {e}"),
        }
    }
    if node.tokens.required() {
        return crate::http::authorize(State(node), req, next).await;
    }
    let msg = if crate::auth::bearer(req.headers()).is_some() {
        "invalid JWS: it must be HS256-signed with the submission secret"
    } else {
        "a JWS is required: Authorization: Bearer <jws>"
    };
    let mut r = crate::error::ApiError::new(StatusCode::UNAUTHORIZED, msg).into_response();
    r.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer realm=\"aloha\""),
    );
    r
}

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Create,
    Status(String),
    Kill(String),
    /// Known action, wrong method.
    Method(&'static str),
    /// No such action: `ErrorServlet`'s answer.
    Missing(&'static str),
    /// Another protocol version.
    Version(String),
}

/// Routes `path` as Spark's servlet mappings and `ErrorServlet` do.
fn route(method: &Method, path: &str) -> Route {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        [] => Route::Missing("Missing protocol version."),
        [v] if *v == PROTOCOL_VERSION => Route::Missing("Missing the /submissions prefix."),
        [v, "submissions", action, rest @ ..] if *v == PROTOCOL_VERSION => {
            match (*action, rest.first()) {
                ("create", _) if method == Method::POST => Route::Create,
                ("create", _) => Route::Method("create takes POST"),
                ("status", Some(id)) if method == Method::GET => Route::Status(id.to_string()),
                ("kill", Some(id)) if method == Method::POST => Route::Kill(id.to_string()),
                ("status", Some(_)) => Route::Method("status takes GET"),
                ("kill", Some(_)) => Route::Method("kill takes POST"),
                ("status", None) => Route::Missing("Submission ID is missing in status request."),
                ("kill", None) => Route::Missing("Submission ID is missing in kill request."),
                _ => Route::Missing(
                    "Missing an action: please specify one of /create, /kill, or /status.",
                ),
            }
        }
        [v, ..] if *v == PROTOCOL_VERSION => {
            Route::Missing("Missing an action: please specify one of /create, /kill, or /status.")
        }
        [v, ..] => Route::Version(v.to_string()),
    }
}

async fn dispatch(
    State(node): State<Arc<Node>>,
    CallerScope(scope): CallerScope,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Answer {
    let hint = format!(
        " Please submit requests through http://[host]:[port]/{PROTOCOL_VERSION}/submissions/..."
    );
    match route(&method, uri.path()) {
        Route::Create => create(&node, &scope, &body).await,
        Route::Status(id) => status(&node, &id).await,
        Route::Kill(id) => kill(&node, &scope, &id).await,
        Route::Method(what) => error(StatusCode::METHOD_NOT_ALLOWED, format!("{what}.{hint}")),
        Route::Missing(what) => bad_request(format!("{what}{hint}")),
        Route::Version(v) => {
            let mut a = error(
                StatusCode::from_u16(UNKNOWN_PROTOCOL_VERSION).unwrap_or(StatusCode::BAD_REQUEST),
                format!("Unknown protocol version '{v}'.{hint}"),
            );
            a.1.highest_protocol_version = Some(PROTOCOL_VERSION);
            a
        }
    }
}

// ----------------------------------------------------------------------------------------
// Requests

/// Spark's `CreateSubmissionRequest`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SparkCreate {
    client_spark_version: Option<String>,
    app_resource: Option<String>,
    main_class: Option<String>,
    app_args: Option<Vec<String>>,
    spark_properties: Option<BTreeMap<String, String>>,
    environment_variables: Option<BTreeMap<String, String>>,
}

/// Aloha's `CreateSubmissionRequest`: any plugin kind.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlohaCreate {
    name: Option<String>,
    namespace: Option<String>,
    entry_point: Option<String>,
    libs: Option<Vec<String>>,
    /// The spec: a JSON string holding an object (an object itself is taken too).
    args: Option<Value>,
    memory: Option<i64>,
    cores: Option<i64>,
    supervise: Option<bool>,
}

/// A create request turned into Aloha's submission, with the fields that were ignored.
#[derive(Debug)]
pub struct Translated {
    /// What `POST /api/v1/apps` would get.
    pub request: SubmitRequest,
    /// Fields of the request this server does not know.
    pub unknown_fields: Vec<String>,
}

fn missing(field: &str) -> String {
    format!("Malformed request: field '{field}' is missing in message CreateSubmissionRequest.")
}

/// Turns a create request's body into a submission, or says (for a `400`) what is wrong with
/// it: not JSON, not an object, no `action` or another one, a missing or ill-typed field.
pub fn translate(body: &[u8]) -> Result<Translated, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("Malformed request: {e}"))?;
    let Some(object) = value.as_object() else {
        return Err("Malformed request: the message must be a JSON object".into());
    };
    let action = match object.get("action") {
        None | Some(Value::Null) => {
            return Err("Malformed request: the action field is missing".into())
        }
        Some(Value::String(a)) => a.as_str(),
        Some(other) => {
            return Err(format!(
                "Malformed request: action must be a string, not {other}"
            ))
        }
    };
    if action != "CreateSubmissionRequest" {
        return Err(format!("Received message of unexpected type {action}."));
    }
    let aloha = object.contains_key("entryPoint");
    let known: &[&str] = if aloha { &ALOHA_FIELDS } else { &SPARK_FIELDS };
    let unknown_fields = object
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .cloned()
        .collect();
    let request = if aloha {
        let req: AlohaCreate =
            serde_json::from_value(value).map_err(|e| format!("Malformed request: {e}"))?;
        aloha_request(req)?
    } else {
        let req: SparkCreate =
            serde_json::from_value(value).map_err(|e| format!("Malformed request: {e}"))?;
        spark_request(req)?
    };
    Ok(Translated {
        request,
        unknown_fields,
    })
}

/// A Spark driver: a `spark` app whose worker runs `spark-submit` on its own `--master`.
fn spark_request(req: SparkCreate) -> Result<SubmitRequest, String> {
    let version = req
        .client_spark_version
        .ok_or_else(|| missing("clientSparkVersion"))?;
    let props = req
        .spark_properties
        .ok_or_else(|| "Malformed request: No Spark properties set!".to_string())?;
    let resource = req.app_resource.ok_or_else(|| missing("appResource"))?;
    let name = props
        .get("spark.app.name")
        .cloned()
        .ok_or_else(|| missing("spark.app.name"))?;
    // Spark's standalone master needs a main class too; a Python driver (which only a direct
    // client can send) does without.
    let main_class = match req.main_class {
        Some(c) => Some(c),
        None if resource.ends_with(".py") => None,
        None => return Err("Malformed request: Main class is missing.".into()),
    };
    let supervise = match props.get("spark.driver.supervise") {
        None => false,
        Some(v) => parse_bool(v).ok_or_else(|| {
            format!("Property 'spark.driver.supervise' expected boolean value: actual was '{v}'.")
        })?,
    };
    let cores = match props.get("spark.driver.cores") {
        None => 1,
        Some(v) => parse_cores(v).ok_or_else(|| {
            format!(
                "Property 'spark.driver.cores' expected a whole number of cores: actual was '{v}'."
            )
        })?,
    };
    let memory_mb = match props.get("spark.driver.memory") {
        None => DEFAULT_DRIVER_MEMORY_MB,
        Some(v) => parse_memory_mb(v).ok_or_else(|| {
            format!("Property 'spark.driver.memory' expected memory value: actual was '{v}'.")
        })?,
    };
    for key in ["spark.cores.max"] {
        if let Some(v) = props.get(key) {
            if v.trim().parse::<f64>().is_err() {
                return Err(format!(
                    "Property '{key}' expected numeric value: actual was '{v}'."
                ));
            }
        }
    }
    if let Some(v) = props.get("spark.executor.memory") {
        if parse_memory_mb(v).is_none() {
            return Err(format!(
                "Property 'spark.executor.memory' expected memory value: actual was '{v}'."
            ));
        }
    }
    let conf: BTreeMap<&String, &String> = props
        .iter()
        .filter(|(k, _)| !CLIENT_ONLY_PROPERTIES.contains(&k.as_str()))
        .collect();
    let mut spec = serde_json::json!({
        "resource": resource,
        "args": req.app_args.unwrap_or_default(),
        "conf": conf,
        "env": req.environment_variables.unwrap_or_default(),
    });
    if let Some(c) = main_class {
        spec["main_class"] = Value::String(c);
    }
    let mut body = serde_json::json!({
        "name": name,
        "kind": "spark",
        "spec": spec,
        "cores": cores,
        "memory_mb": memory_mb,
        "labels": {"submitted_via": "spark-rest", "spark_client_version": version},
    });
    // The namespace, as a Spark property (`--conf spark.aloha.namespace=team-a`).
    if let Some(ns) = props.get(NAMESPACE_PROPERTY) {
        body["namespace"] = ns.clone().into();
    }
    if supervise {
        supervised(&mut body);
    }
    serde_json::from_value(body).map_err(|e| format!("Malformed request: {e}"))
}

/// Aloha's request: an app of kind `entryPoint` whose spec is `args`.
fn aloha_request(req: AlohaCreate) -> Result<SubmitRequest, String> {
    let name = req.name.ok_or_else(|| missing("name"))?;
    let kind = req.entry_point.ok_or_else(|| missing("entryPoint"))?;
    let spec = match req.args {
        None | Some(Value::Null) => serde_json::json!({}),
        Some(Value::String(text)) => serde_json::from_str(&text)
            .map_err(|e| format!("Malformed request: args must hold a JSON object: {e}"))?,
        Some(other) => other,
    };
    if !spec.is_object() {
        return Err("Malformed request: args must hold a JSON object (the plugin's spec)".into());
    }
    let mut body = serde_json::json!({
        "name": name,
        "kind": kind,
        "spec": spec,
        "libs": req.libs.unwrap_or_default(),
        "labels": {"submitted_via": "aloha-rest"},
    });
    if let Some(ns) = req.namespace {
        body["namespace"] = ns.into();
    }
    if let Some(m) = req.memory {
        body["memory_mb"] = m.into();
    }
    if let Some(c) = req.cores {
        body["cores"] = c.into();
    }
    if req.supervise == Some(true) {
        supervised(&mut body);
    }
    serde_json::from_value(body).map_err(|e| format!("Malformed request: {e}"))
}

fn supervised(body: &mut Value) {
    body["restart"] = "on_failure".into();
    body["max_retries"] = SUPERVISE_MAX_RETRIES.into();
}

/// A boolean as Scala's `toBoolean` reads it.
fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// A whole number of cores, at least 1 (`"2"`, `"2.0"`).
fn parse_cores(v: &str) -> Option<i64> {
    let n: f64 = v.trim().parse().ok()?;
    (n >= 1.0 && n.fract() == 0.0 && n <= u32::MAX as f64).then_some(n as i64)
}

/// A Spark memory string in MiB: `512m`, `2g`, `1024k`, `1t`, with or without a trailing `b`;
/// a bare number is MiB (as `spark.driver.memory` is read). Whole numbers only, like Spark.
pub fn parse_memory_mb(v: &str) -> Option<i64> {
    let v = v.trim().to_ascii_lowercase();
    let digits = v.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: i64 = v[..digits].parse().ok()?;
    let mib = match &v[digits..] {
        "" | "m" | "mb" => Some(n),
        "b" => Some(n / (1024 * 1024)),
        "k" | "kb" => Some(n / 1024),
        "g" | "gb" => n.checked_mul(1024),
        "t" | "tb" => n.checked_mul(1024 * 1024),
        "p" | "pb" => n.checked_mul(1024 * 1024 * 1024),
        _ => None,
    }?;
    Some(mib)
}

// ----------------------------------------------------------------------------------------
// Handlers

/// The answer of a master that does not lead: `success: false`, so Spark's client goes on to
/// the next master.
fn not_alive(node: &Node, action: Action, what: &str, id: Option<&str>) -> Answer {
    let role = match node.role() {
        Role::Alive => "ALIVE, but fenced",
        Role::Standby => "STANDBY",
        Role::Recovering => "RECOVERING",
    };
    let leader = match node.leader().map(|l| l.http) {
        Some(l) => format!(" The leader is {l}."),
        None => String::new(),
    };
    let mut reply = Reply::new(
        action,
        false,
        format!("{NOT_ALIVE}: {role}. Can only {what} in ALIVE state.{leader}"),
    );
    reply.submission_id = id.map(str::to_string);
    debug!(
        action = action.as_str(),
        role, "not the leader: answered success false"
    );
    Answer(StatusCode::OK, reply)
}

/// A failure of the master (not of the request).
fn master_error(e: MasterError) -> Answer {
    let status = match e {
        MasterError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        MasterError::Submit(_) | MasterError::BadRequest(_) => StatusCode::BAD_REQUEST,
        MasterError::Forbidden(_) => StatusCode::FORBIDDEN,
        MasterError::Quota(_) => StatusCode::TOO_MANY_REQUESTS,
        MasterError::AppNotFound(_) | MasterError::NamespaceNotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

async fn create(node: &Node, scope: &Scope, body: &[u8]) -> Answer {
    let t = match translate(body) {
        Ok(t) => t,
        Err(why) => return bad_request(why),
    };
    let what = "accept driver submissions";
    let Ok(master) = node.leader_master().await else {
        return not_alive(node, Action::Create, what, None);
    };
    match master.submit_as(scope, t.request, None).await {
        Ok(s) => {
            let id = s.app.id.to_string();
            info!(app_id = %id, kind = %s.app.kind, "submitted through the REST submission protocol");
            let mut reply = Reply::new(
                Action::Create,
                true,
                format!("Driver successfully submitted as {id}"),
            )
            .id(&id);
            reply.unknown_fields = t.unknown_fields;
            Answer(StatusCode::OK, reply)
        }
        Err(MasterError::NotLeader { .. }) => not_alive(node, Action::Create, what, None),
        Err(e) => master_error(e),
    }
}

async fn status(node: &Node, id: &str) -> Answer {
    let Ok(master) = node.leader_master().await else {
        return not_alive(node, Action::Status, "request driver status", Some(id));
    };
    let view = master.view();
    let cluster = &view.cluster;
    let app = match cluster.lookup(&AppId(id.to_string())) {
        Lookup::Found(app) => app,
        Lookup::Expired => {
            let m = format!("Submission {id} ended and was removed by the retention.");
            return Answer(StatusCode::OK, Reply::new(Action::Status, false, m).id(id));
        }
        Lookup::NotFound => {
            let m = format!("Submission {id} not found.");
            return Answer(StatusCode::OK, Reply::new(Action::Status, false, m).id(id));
        }
    };
    let app = present(cluster, &app);
    let mut reply = Reply::new(Action::Status, true, "").id(id);
    reply.message = app.message.clone();
    reply.driver_state = Some(driver_state(app.state));
    if let Some(w) = &app.worker_id {
        reply.worker_id = Some(w.to_string());
        reply.worker_host_port = cluster.worker(w).map(|w| w.record.address.clone());
    }
    Answer(StatusCode::OK, reply)
}

async fn kill(node: &Node, scope: &Scope, id: &str) -> Answer {
    let what = "kill drivers";
    let Ok(master) = node.leader_master().await else {
        return not_alive(node, Action::Kill, what, Some(id));
    };
    let reason = Some("killed through the REST submission protocol".to_string());
    match master.kill_as(scope, id, reason).await {
        Ok(_) => Answer(
            StatusCode::OK,
            Reply::new(
                Action::Kill,
                true,
                format!("Kill request for {id} submitted"),
            )
            .id(id),
        ),
        Err(MasterError::NotLeader { .. }) => not_alive(node, Action::Kill, what, Some(id)),
        Err(
            MasterError::AppNotFound(_) | MasterError::AppExpired(_) | MasterError::Conflict(_),
        ) => Answer(
            StatusCode::OK,
            Reply::new(
                Action::Kill,
                false,
                format!("Driver {id} has already finished or does not exist"),
            )
            .id(id),
        ),
        Err(e) => master_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloha_core::app::Restart;
    use serde_json::json;

    fn spark_body(props: Value) -> Value {
        json!({
            "action": "CreateSubmissionRequest",
            "clientSparkVersion": "4.0.1",
            "appResource": "file:/jobs/app.jar",
            "mainClass": "Main",
            "appArgs": ["10"],
            "sparkProperties": props,
            "environmentVariables": {"SPARK_LOCAL_IP": "127.0.0.1"},
        })
    }

    fn translated(body: &Value) -> Result<Translated, String> {
        translate(body.to_string().as_bytes())
    }

    #[test]
    fn a_spark_request_becomes_a_spark_app() {
        let body = spark_body(json!({
            "spark.app.name": "Main",
            "spark.master": "spark://127.0.0.1:6066",
            "spark.submit.deployMode": "cluster",
            "spark.master.rest.enabled": "true",
            "spark.driver.cores": "2",
            "spark.driver.memory": "2g",
            "spark.driver.supervise": "true",
            "spark.executor.memory": "1g",
        }));
        let t = translated(&body).unwrap();
        let r = t.request;
        assert_eq!((r.name.as_str(), r.kind.as_str()), ("Main", "spark"));
        assert_eq!((r.cores, r.memory_mb), (2, 2048));
        assert_eq!(r.restart, Restart::OnFailure);
        assert_eq!(r.max_retries, SUPERVISE_MAX_RETRIES);
        assert_eq!(
            r.spec,
            json!({
                "resource": "file:/jobs/app.jar",
                "main_class": "Main",
                "args": ["10"],
                "conf": {
                    "spark.driver.cores": "2",
                    "spark.driver.memory": "2g",
                    "spark.driver.supervise": "true",
                    "spark.executor.memory": "1g",
                },
                "env": {"SPARK_LOCAL_IP": "127.0.0.1"},
            }),
            "the client's master, deploy mode and name stay behind"
        );
        assert_eq!(r.labels["submitted_via"], "spark-rest");
        assert_eq!(r.labels["spark_client_version"], "4.0.1");
        assert!(t.unknown_fields.is_empty());
    }

    #[test]
    fn the_namespace_comes_from_a_spark_property_or_the_aloha_field() {
        let t = translated(&spark_body(json!({"spark.app.name": "x"}))).unwrap();
        assert_eq!(t.request.namespace, "default");
        let t = translated(&spark_body(
            json!({"spark.app.name": "x", "spark.aloha.namespace": "team-a"}),
        ))
        .unwrap();
        assert_eq!(t.request.namespace, "team-a");
        assert!(
            t.request.spec["conf"]
                .get("spark.aloha.namespace")
                .is_none(),
            "the property is the master's, not the driver's"
        );
        let t = translated(
            &json!({"action": "CreateSubmissionRequest", "name": "n", "entryPoint": "process",
                    "args": "{\"command\": [\"true\"]}", "namespace": "team-b"}),
        )
        .unwrap();
        assert_eq!(t.request.namespace, "team-b");
        assert!(t.unknown_fields.is_empty());
    }

    #[test]
    fn spark_defaults_are_one_core_one_gib_and_no_supervision() {
        let t = translated(&spark_body(json!({"spark.app.name": "x"}))).unwrap();
        assert_eq!((t.request.cores, t.request.memory_mb), (1, 1024));
        assert_eq!(t.request.restart, Restart::Never);
        assert_eq!(t.request.max_retries, 0);
    }

    #[test]
    fn an_aloha_request_becomes_an_app_of_its_entry_point() {
        let body = json!({
            "action": "CreateSubmissionRequest",
            "name": "hello",
            "entryPoint": "process",
            "libs": ["/opt/lib/a.so"],
            "args": "{\"command\": [\"true\"]}",
            "memory": 64,
            "cores": 2,
            "supervise": true,
            "colour": "blue",
        });
        let t = translated(&body).unwrap();
        let r = t.request;
        assert_eq!((r.name.as_str(), r.kind.as_str()), ("hello", "process"));
        assert_eq!(r.spec, json!({"command": ["true"]}));
        assert_eq!((r.cores, r.memory_mb), (2, 64));
        assert_eq!(r.libs, ["/opt/lib/a.so"]);
        assert_eq!(r.restart, Restart::OnFailure);
        assert_eq!(t.unknown_fields, ["colour"]);
    }

    #[test]
    fn malformed_requests_say_what_is_wrong() {
        let cases = [
            (json!("not an object"), "JSON object"),
            (json!({"appResource": "a.jar"}), "action field is missing"),
            (
                json!({"action": "KillSubmissionRequest"}),
                "unexpected type KillSubmissionRequest",
            ),
            (json!({"action": 3}), "action must be a string"),
            (
                {
                    let mut b = spark_body(json!({"spark.app.name": "x"}));
                    b.as_object_mut().unwrap().remove("appResource");
                    b
                },
                "'appResource' is missing",
            ),
            (
                {
                    let mut b = spark_body(json!({"spark.app.name": "x"}));
                    b.as_object_mut().unwrap().remove("clientSparkVersion");
                    b
                },
                "'clientSparkVersion' is missing",
            ),
            (spark_body(json!({})), "'spark.app.name' is missing"),
            (
                spark_body(json!({"spark.app.name": "x", "spark.driver.memory": "lots"})),
                "spark.driver.memory",
            ),
            (
                spark_body(json!({"spark.app.name": "x", "spark.driver.cores": "1.5"})),
                "spark.driver.cores",
            ),
            (
                spark_body(json!({"spark.app.name": "x", "spark.driver.supervise": "yes"})),
                "spark.driver.supervise",
            ),
            (
                json!({"action": "CreateSubmissionRequest", "entryPoint": "process"}),
                "'name' is missing",
            ),
            (
                json!({"action": "CreateSubmissionRequest", "entryPoint": "process",
                       "name": "x", "args": "[1]"}),
                "args must hold a JSON object",
            ),
            (
                json!({"action": "CreateSubmissionRequest", "entryPoint": "process",
                       "name": "x", "cores": "two"}),
                "Malformed request",
            ),
        ];
        for (body, expected) in cases {
            let err = translated(&body).unwrap_err();
            assert!(err.contains(expected), "{body}: {err}");
        }
        assert!(translate(b"{not json")
            .unwrap_err()
            .starts_with("Malformed request"));
    }

    #[test]
    fn memory_strings_are_read_like_spark() {
        for (text, mib) in [
            ("512m", Some(512)),
            ("2g", Some(2048)),
            ("2GB", Some(2048)),
            ("1024k", Some(1)),
            ("1t", Some(1024 * 1024)),
            ("300", Some(300)),
            ("1048576b", Some(1)),
            ("1.5g", None),
            ("g", None),
            ("12x", None),
        ] {
            assert_eq!(parse_memory_mb(text), mib, "{text}");
        }
    }

    #[test]
    fn paths_route_like_sparks_servlets() {
        let (get, post) = (Method::GET, Method::POST);
        assert_eq!(route(&post, "/v1/submissions/create"), Route::Create);
        assert_eq!(
            route(&get, "/v1/submissions/status/app-1"),
            Route::Status("app-1".into())
        );
        assert_eq!(
            route(&post, "/v1/submissions/kill/app-1/"),
            Route::Kill("app-1".into())
        );
        assert!(matches!(
            route(&get, "/v1/submissions/create"),
            Route::Method(_)
        ));
        assert!(matches!(
            route(&post, "/v1/submissions/status/a"),
            Route::Method(_)
        ));
        assert!(matches!(route(&get, "/"), Route::Missing(_)));
        assert!(matches!(route(&get, "/v1"), Route::Missing(_)));
        assert!(matches!(route(&get, "/v1/submissions/"), Route::Missing(_)));
        assert!(matches!(
            route(&get, "/v1/submissions/status"),
            Route::Missing(_)
        ));
        assert_eq!(
            route(&post, "/v2/submissions/create"),
            Route::Version("v2".into())
        );
    }

    #[test]
    fn replies_carry_sparks_fields_only() {
        let r = Reply::new(Action::Create, true, "ok").id("app-1");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["action"], "CreateSubmissionResponse");
        assert_eq!(v["success"], true);
        assert_eq!(v["submissionId"], "app-1");
        assert!(v["serverSparkVersion"].is_string());
        assert!(v.get("driverState").is_none() && v.get("unknownFields").is_none());
        let states: Vec<&str> = AppState::ALL.iter().map(|s| driver_state(*s)).collect();
        assert_eq!(
            states,
            [
                "SUBMITTED",
                "SUBMITTED",
                "RUNNING",
                "FINISHED",
                "FAILED",
                "KILLED",
                "RELAUNCHING",
                "UNKNOWN",
                "ERROR"
            ]
        );
    }
}
