//! The web console: server-rendered HTML (`maud`) served by the master itself at `/`, with its
//! stylesheet and one small script embedded in the binary (no CDN, nothing fetched from the
//! internet), under `Content-Security-Policy: default-src 'self'`.
//!
//! Pages: the cluster (`/`), workers (`/ui/workers`), apps (`/ui/apps`, filter by state, label
//! and schedule, paged), one app (`/ui/apps/{id}`: fields, history, a live log tail, kill,
//! retry), schedules (`/ui/schedules`, `/ui/schedules/{id}`: next runs, pause, resume,
//! trigger), the live event feed (`/ui/events`) and a submit form (`/ui/submit`). Every page
//! reads the same snapshot the REST API reads; forms post to `/ui/...` handlers that call the
//! same master operations as the API and redirect (303) to the page to look at next.
//!
//! **Live updates.** `console.js` listens to the event stream (`/api/v1/events`) and, after a
//! change, fetches the page again with `X-Console-Fragment: main` and swaps in the new `<main>`:
//! the page follows the cluster without a reload. On the app page it also follows the log.
//!
//! **Standbys** render every page from their replica with a banner saying so and linking the
//! leader; their forms would be refused, so they are not shown.

mod pages;

use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

use aloha_core::api::Role;
use aloha_core::schedules::{Overlap, ScheduleId};
use aloha_core::SubmitRequest;

use crate::engine::ScheduleCmd;
use crate::http::CallerScope;
use crate::master::MasterError;
use crate::node::Node;

const CSS: &str = include_str!("console.css");
const JS: &str = include_str!("console.js");

/// The security headers every console response carries.
const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// The console's routes, to merge into the API router.
pub fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/", get(pages::overview))
        .route("/ui/static/console.css", get(css))
        .route("/ui/static/console.js", get(js))
        .route("/ui/apps", get(pages::apps))
        .route("/ui/apps/{id}", get(pages::app))
        .route("/ui/apps/{id}/kill", post(kill))
        .route("/ui/apps/{id}/retry", post(retry))
        .route("/ui/workers", get(pages::workers))
        .route("/ui/workers/{id}/drain", post(drain))
        .route("/ui/workers/{id}/undrain", post(undrain))
        .route("/ui/schedules", get(pages::schedules))
        .route("/ui/schedules/{id}", get(pages::schedule))
        .route("/ui/schedules/{id}/{action}", post(schedule_action))
        .route("/ui/events", get(pages::events))
        .route("/ui/submit", get(pages::submit_form).post(submit))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
}

async fn css() -> Response {
    static_asset(CSS, "text/css; charset=utf-8")
}

async fn js() -> Response {
    static_asset(JS, "text/javascript; charset=utf-8")
}

fn static_asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// What every page knows about the master that renders it.
pub(crate) struct Frame {
    role: Role,
    leader: Option<String>,
    epoch: u64,
    /// Only the fragment (`<main>`'s content) was asked for.
    fragment: bool,
    /// The session's CSRF token, which every form carries (auth required and logged in).
    csrf: Option<String>,
}

impl Frame {
    pub(crate) async fn of(node: &Node, headers: &HeaderMap) -> Frame {
        let c = node.cluster().await;
        Frame {
            role: c.role,
            leader: c.leader,
            epoch: c.epoch,
            fragment: headers
                .get("x-console-fragment")
                .is_some_and(|v| v.as_bytes() == b"main"),
            csrf: session_of(node, headers).map(|(_, csrf)| csrf),
        }
    }

    /// The hidden CSRF field every form of this page carries (nothing when auth is off).
    pub(crate) fn csrf_field(&self) -> Markup {
        html! {
            @if let Some(c) = &self.csrf {
                input type="hidden" name="csrf" value=(c);
            }
        }
    }

    /// Whether this master leads (forms may be shown).
    pub(crate) fn leads(&self) -> bool {
        self.role == Role::Alive
    }
}

/// A whole page (or just its `<main>` content for a live refresh).
pub(crate) fn page(frame: &Frame, title: &str, current: &str, body: Markup) -> Response {
    let markup = if frame.fragment {
        body
    } else {
        let nav = [
            ("/", "Cluster"),
            ("/ui/workers", "Workers"),
            ("/ui/apps", "Apps"),
            ("/ui/schedules", "Schedules"),
            ("/ui/events", "Events"),
            ("/ui/submit", "Submit"),
        ];
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · Aloha-rs" }
                    link rel="icon" href="data:,";
                    link rel="stylesheet" href="/ui/static/console.css";
                    script src="/ui/static/console.js" defer {}
                }
                body {
                    header {
                        a.brand href="/" { "Aloha-rs" }
                        nav aria-label="Main" {
                            ul {
                                @for (href, label) in nav {
                                    li {
                                        @if href == current {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                        span.role data-role=(role_name(frame.role)) {
                            (role_name(frame.role)) " · epoch " (frame.epoch)
                        }
                        @if frame.csrf.is_some() {
                            form.logout method="post" action="/ui/logout" {
                                (frame.csrf_field())
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                    @if !frame.leads() {
                        div.banner role="status" {
                            "This master is " strong { (role_name(frame.role)) } ": it shows the cluster as stored and does not change it. "
                            @match &frame.leader {
                                Some(l) => { "The leader is " a href=(format!("{l}/")) { (l) } "." }
                                None => { "No leader is known right now." }
                            }
                        }
                    }
                    main data-live="true" aria-live="polite" { (body) }
                    footer { "Live: updates arrive over " code { "/api/v1/events" } " without a reload." }
                }
            }
        }
    };
    let mut r = axum::response::Html(markup.into_string()).into_response();
    secure(&mut r);
    r
}

/// Adds the console's security headers.
fn secure(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

pub(crate) fn role_name(r: Role) -> &'static str {
    match r {
        Role::Alive => "ALIVE",
        Role::Standby => "STANDBY",
        Role::Recovering => "RECOVERING",
    }
}

/// An error page with the status of the error.
pub(crate) fn error_page(frame: &Frame, e: MasterError) -> Response {
    let api = crate::error::ApiError::from(e);
    let (status, message) = api.parts();
    let mut r = page(
        frame,
        "Error",
        "",
        html! {
            h1 { "Error " (status.as_u16()) }
            p.error role="alert" { (message) }
            p { a href="/" { "Back to the cluster" } }
        },
    );
    *r.status_mut() = status;
    r
}

fn see(path: String) -> Response {
    Redirect::to(&path).into_response()
}

// ----------------------------------------------------------------------------------------
// Forms

/// The submit form.
#[derive(Debug, Deserialize)]
pub(crate) struct SubmitForm {
    name: String,
    kind: String,
    /// For `process`: the command line, split on whitespace (`sh -c '...'` needs the JSON
    /// spec instead).
    #[serde(default)]
    command: String,
    /// A JSON spec (wins over `command`).
    #[serde(default)]
    spec: String,
    cores: String,
    memory_mb: String,
    #[serde(default)]
    max_retries: String,
    #[serde(default)]
    max_runtime: String,
    #[serde(default)]
    restart: String,
    #[serde(default)]
    namespace: String,
}

impl SubmitForm {
    fn request(&self) -> Result<SubmitRequest, String> {
        let spec = if !self.spec.trim().is_empty() {
            serde_json::from_str::<serde_json::Value>(&self.spec)
                .map_err(|e| format!("spec is not valid JSON: {e}"))?
        } else {
            let words: Vec<&str> = self.command.split_whitespace().collect();
            if words.is_empty() {
                return Err("give a command or a JSON spec".into());
            }
            serde_json::json!({ "command": words })
        };
        let int = |name: &str, v: &str, default: i64| -> Result<i64, String> {
            let v = v.trim();
            if v.is_empty() {
                Ok(default)
            } else {
                v.parse()
                    .map_err(|_| format!("{name} must be a whole number (got {v:?})"))
            }
        };
        let mut body = serde_json::json!({
            "name": self.name.trim(),
            "kind": self.kind.trim(),
            "spec": spec,
            "cores": int("cores", &self.cores, 1)?,
            "memory_mb": int("memory_mb", &self.memory_mb, 256)?,
            "max_retries": int("max_retries", &self.max_retries, 0)?,
        });
        if !self.max_runtime.trim().is_empty() {
            body["max_runtime"] = self.max_runtime.trim().into();
        }
        if !self.restart.trim().is_empty() {
            body["restart"] = self.restart.trim().into();
        }
        if !self.namespace.trim().is_empty() {
            body["namespace"] = self.namespace.trim().into();
        }
        serde_json::from_value(body).map_err(|e| e.to_string())
    }
}

async fn submit(
    State(node): State<Arc<Node>>,
    CallerScope(scope): CallerScope,
    headers: HeaderMap,
    Form(form): Form<SubmitForm>,
) -> Response {
    let frame = Frame::of(&node, &headers).await;
    let req = match form.request() {
        Ok(r) => r,
        Err(m) => return error_page(&frame, MasterError::BadRequest(m)),
    };
    let r = async {
        let m = node.leader_master().await?;
        m.submit_as(&scope, req, None).await
    }
    .await;
    match r {
        Ok(s) => see(format!("/ui/apps/{}", s.app.id)),
        Err(e) => error_page(&frame, e),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ReasonForm {
    #[serde(default)]
    reason: String,
}

async fn kill(
    State(node): State<Arc<Node>>,
    CallerScope(scope): CallerScope,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ReasonForm>,
) -> Response {
    let frame = Frame::of(&node, &headers).await;
    let reason = Some(form.reason.trim().to_string()).filter(|r| !r.is_empty());
    let r = async {
        let m = node.leader_master().await?;
        m.kill_as(
            &scope,
            &id,
            reason.or_else(|| Some("killed from the console".into())),
        )
        .await
    }
    .await;
    match r {
        Ok(_) => see(format!("/ui/apps/{id}")),
        Err(e) => error_page(&frame, e),
    }
}

async fn retry(
    State(node): State<Arc<Node>>,
    CallerScope(scope): CallerScope,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let frame = Frame::of(&node, &headers).await;
    let r = async {
        let m = node.leader_master().await?;
        m.retry_as(&scope, &id).await
    }
    .await;
    match r {
        Ok(app) => see(format!("/ui/apps/{}", app.id)),
        Err(e) => error_page(&frame, e),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct DrainForm {
    #[serde(default)]
    deadline: String,
}

async fn drain(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<DrainForm>,
) -> Response {
    let frame = Frame::of(&node, &headers).await;
    let text = if form.deadline.trim().is_empty() {
        "1h"
    } else {
        form.deadline.trim()
    };
    let deadline = match humantime::parse_duration(text) {
        Ok(d) => d,
        Err(e) => {
            return error_page(
                &frame,
                MasterError::BadRequest(format!("deadline {text:?}: {e}")),
            )
        }
    };
    let r = async {
        let m = node.leader_master().await?;
        m.drain(&id, Some(deadline)).await
    }
    .await;
    match r {
        Ok(_) => see("/ui/workers".into()),
        Err(e) => error_page(&frame, e),
    }
}

async fn undrain(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let frame = Frame::of(&node, &headers).await;
    let r = async {
        let m = node.leader_master().await?;
        m.drain(&id, None).await
    }
    .await;
    match r {
        Ok(_) => see("/ui/workers".into()),
        Err(e) => error_page(&frame, e),
    }
}

async fn schedule_action(
    State(node): State<Arc<Node>>,
    CallerScope(scope): CallerScope,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let frame = Frame::of(&node, &headers).await;
    let sid = ScheduleId(id.clone());
    let cmd = match action.as_str() {
        "pause" => ScheduleCmd::Pause(sid),
        "resume" => ScheduleCmd::Resume(sid),
        "trigger" => ScheduleCmd::Trigger(sid, Some(Overlap::Allow)),
        _ => {
            let mut r = error_page(
                &frame,
                MasterError::BadRequest(format!("no schedule action {action:?}")),
            );
            *r.status_mut() = StatusCode::NOT_FOUND;
            return r;
        }
    };
    let r = async {
        let m = node.leader_master().await?;
        m.schedule_op_as(&scope, cmd).await
    }
    .await;
    match r {
        Ok(_) => see(format!("/ui/schedules/{id}")),
        Err(e) => error_page(&frame, e),
    }
}

/// `?state=&label=&schedule_id=&after=` of the app list.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AppFilter {
    #[serde(default)]
    state: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    schedule_id: String,
    #[serde(default)]
    after: String,
}

pub(crate) type FilterQuery = Query<AppFilter>;

// ----------------------------------------------------------------------------------------
// Login (with `--auth required`): a token opens a session kept in an HttpOnly, SameSite=Strict
// cookie; every form carries the session's CSRF token, checked before the handler runs.

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "aloha_session";

/// The value of cookie `name`, if the request has it.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The console session a request carries (its principal and CSRF token), if any.
pub fn session_of(node: &Node, headers: &HeaderMap) -> Option<(crate::auth::Principal, String)> {
    if !node.tokens.required() {
        return None;
    }
    node.tokens.session(cookie(headers, SESSION_COOKIE)?)
}

#[derive(Debug, Default, Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

fn login_page(frame: &Frame, error: Option<&str>) -> Response {
    page(
        frame,
        "Log in",
        "",
        html! {
            h1 { "Log in" }
            @if let Some(e) = error {
                p.error role="alert" { (e) }
            }
            form.login method="post" action="/ui/login" {
                div {
                    label for="token" { "Token" }
                    input id="token" name="token" type="password" autocomplete="current-password" required;
                }
                button type="submit" { "Log in" }
            }
            p { "Use an API token (" code { "alohactl token create" } " or the bootstrap token). It is kept in this master's memory only; the browser gets an HttpOnly session cookie." }
        },
    )
}

async fn login_form(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    let frame = Frame::of(&node, &headers).await;
    if !node.tokens.required() {
        return see("/".into());
    }
    login_page(&frame, None)
}

async fn login(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let frame = Frame::of(&node, &headers).await;
    let Some((id, _csrf)) = node.tokens.login(form.token.trim()) else {
        let mut r = login_page(&frame, Some("That token is not valid."));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return r;
    };
    let mut r = see("/".into());
    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        crate::auth::SESSION_TTL.as_secs()
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn logout(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        node.tokens.logout(id);
    }
    let mut r = see("/ui/login".into());
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("aloha_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}
