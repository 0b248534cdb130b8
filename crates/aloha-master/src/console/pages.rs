//! The console's pages.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{html, Markup};

use aloha_core::cluster::Lookup;
use aloha_core::schedules::ScheduleId;
use aloha_core::{App, AppId, AppState};

use super::{error_page, page, FilterQuery, Frame};
use crate::master::{present, MasterError};
use crate::node::Node;

/// Apps per page of the app list.
const PAGE: usize = 50;

fn time(t: &DateTime<Utc>) -> Markup {
    let text = t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    html! { time datetime=(t.to_rfc3339()) { (text) } }
}

fn opt_time(t: &Option<DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => time(t),
        None => html! { "—" },
    }
}

fn state_badge(s: &str) -> Markup {
    html! { span.state data-state=(s) { (s) } }
}

fn app_link(id: &AppId) -> Markup {
    html! { a href=(format!("/ui/apps/{id}")) { code { (id) } } }
}

/// A usage bar: `used` of `total`, with the numbers as text for screen readers.
fn bar(label: &str, used: u64, total: u64, unit: &str) -> Markup {
    let pct = (used * 100).checked_div(total).unwrap_or(0).min(100);
    html! {
        div.usage {
            span.usage-label { (label) " " (used) " / " (total) (unit) }
            meter min="0" max=(total.max(1)) value=(used) aria-label=(format!("{label} used")) {
                (pct) "%"
            }
        }
    }
}

async fn frame(node: &Node, headers: &HeaderMap) -> Frame {
    Frame::of(node, headers).await
}

// ----------------------------------------------------------------------------------------

/// `/`: the cluster.
pub(crate) async fn overview(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    let f = frame(&node, &headers).await;
    let info = node.cluster().await;
    let view = match node.schedule_view().await {
        Ok(v) => v,
        Err(e) => return error_page(&f, e),
    };
    let c = &view.cluster;
    let workers = node.workers().await.unwrap_or_default();
    let alive = workers
        .iter()
        .filter(|w| w.state.to_string() != "DEAD" && w.state.to_string() != "UNKNOWN")
        .count();
    let (cores, used): (u64, u64) = workers.iter().fold((0, 0), |(t, u), w| {
        (t + u64::from(w.cores), u + u64::from(w.cores_used))
    });
    let body = html! {
        h1 { "Cluster" }
        dl.fields {
            dt { "This master" } dd { (info.address) " (" (super::role_name(info.role)) ")" }
            dt { "Leader" } dd {
                @match &info.leader {
                    Some(l) => { a href=(format!("{l}/")) { (l) } }
                    None => { "none known" }
                }
            }
            dt { "Epoch" } dd { (info.epoch) }
            dt { "Store" } dd { (info.store) }
            dt { "Members" } dd {
                ul.inline { @for m in &info.members { li { (m) } } }
            }
        }
        h2 { "Apps" }
        table.narrow {
            caption.visually-hidden { "Apps by state" }
            thead { tr { th scope="col" { "State" } th scope="col" { "Apps" } } }
            tbody {
                @for s in AppState::ALL {
                    tr {
                        td { a href=(format!("/ui/apps?state={s}")) { (state_badge(s.as_str())) } }
                        td.num { (c.count(s)) }
                    }
                }
            }
        }
        p { "Queued: " (c.queued()) " · schedules: " (c.schedule_count()) }
        h2 { "Workers" }
        p { (alive) " of " (workers.len()) " workers alive. " a href="/ui/workers" { "All workers" } }
        (bar("Cores", used, cores, ""))
    };
    page(&f, "Cluster", "/", body)
}

/// `/ui/workers`.
pub(crate) async fn workers(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    let f = frame(&node, &headers).await;
    let workers = match node.workers().await {
        Ok(w) => w,
        Err(e) => return error_page(&f, e),
    };
    let body = html! {
        h1 { "Workers" }
        @if workers.is_empty() {
            p { "No worker has registered." }
        } @else {
            table {
                caption.visually-hidden { "Workers" }
                thead { tr {
                    th scope="col" { "Id" } th scope="col" { "State" } th scope="col" { "Usage" }
                    th scope="col" { "Apps" } th scope="col" { "Kinds" } th scope="col" { "Last heartbeat" }
                    @if f.leads() { th scope="col" { "Drain" } }
                } }
                tbody {
                    @for w in &workers {
                        tr data-worker=(w.id) {
                            td { code { (w.id) } br; small { (w.address) } }
                            td {
                                (state_badge(&w.state.to_string()))
                                @if let Some(d) = &w.drain_deadline { br; small { "deadline " (time(d)) } }
                            }
                            td {
                                (bar("Cores", w.cores_used.into(), w.cores.into(), ""))
                                (bar("Memory", w.memory_used_mb, w.memory_mb, " MiB"))
                            }
                            td { @for a in &w.apps { (app_link(a)) " " } }
                            td { (w.kinds.join(", ")) }
                            td { (time(&w.last_heartbeat)) }
                            @if f.leads() {
                                td {
                                    @if w.drain_deadline.is_some() {
                                        form method="post" action=(format!("/ui/workers/{}/undrain", w.id)) { (f.csrf_field())
                                            button type="submit" { "Undrain" }
                                        }
                                    } @else {
                                        form.inline method="post" action=(format!("/ui/workers/{}/drain", w.id)) { (f.csrf_field())
                                            label for=(format!("deadline-{}", w.id)) { "Deadline" }
                                            input id=(format!("deadline-{}", w.id)) name="deadline" value="1h" size="5";
                                            button type="submit" { "Drain" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(&f, "Workers", "/ui/workers", body)
}

/// `/ui/apps`: filter by state, label (`key=value`) and schedule; newest first, paged.
pub(crate) async fn apps(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    query: Result<FilterQuery, axum::extract::rejection::QueryRejection>,
) -> Response {
    let f = frame(&node, &headers).await;
    let q = match query {
        Ok(q) => q.0,
        Err(e) => return error_page(&f, MasterError::BadRequest(e.body_text())),
    };
    let state = match q.state.trim() {
        "" => None,
        s => match s.parse::<AppState>() {
            Ok(s) => Some(s),
            Err(e) => return error_page(&f, MasterError::BadRequest(e.to_string())),
        },
    };
    let label = match q.label.trim() {
        "" => None,
        l => match l.split_once('=') {
            Some((k, v)) => Some((k.trim().to_string(), v.trim().to_string())),
            None => {
                return error_page(
                    &f,
                    MasterError::BadRequest(format!("label filter {l:?} must be key=value")),
                )
            }
        },
    };
    let schedule = Some(q.schedule_id.trim().to_string()).filter(|s| !s.is_empty());
    let after = match q.after.trim() {
        "" => None,
        a => match AppId(a.to_string()).seq() {
            Some(s) => Some(s),
            None => {
                return error_page(
                    &f,
                    MasterError::BadRequest(format!("after: {a:?} is not an app id")),
                )
            }
        },
    };
    let view = match node.schedule_view().await {
        Ok(v) => v,
        Err(e) => return error_page(&f, e),
    };
    let c = &view.cluster;
    let page_of = match &schedule {
        Some(sid) => {
            let p = c.runs_page(&ScheduleId(sid.clone()), after, PAGE);
            let apps: Vec<Arc<App>> = p
                .apps
                .into_iter()
                .filter(|a| state.is_none_or(|s| a.state == s))
                .filter(|a| {
                    label
                        .as_ref()
                        .is_none_or(|(k, v)| a.labels.get(k) == Some(v))
                })
                .collect();
            aloha_core::cluster::Page { apps, next: p.next }
        }
        None => c.page_where(state, after, PAGE, |a| {
            label
                .as_ref()
                .is_none_or(|(k, v)| a.labels.get(k) == Some(v))
        }),
    };
    let mut next_href = None;
    if let Some(n) = &page_of.next {
        next_href = Some(format!(
            "/ui/apps?state={}&label={}&schedule_id={}&after={n}",
            q.state.trim(),
            urlencode(q.label.trim()),
            schedule.clone().unwrap_or_default()
        ));
    }
    let body = html! {
        h1 { "Apps" }
        form.filters method="get" action="/ui/apps" role="search" {
            label for="f-state" { "State" }
            select id="f-state" name="state" {
                option value="" selected[state.is_none()] { "any" }
                @for s in AppState::ALL {
                    option value=(s.as_str()) selected[state == Some(s)] { (s.as_str()) }
                }
            }
            label for="f-label" { "Label" }
            input id="f-label" name="label" placeholder="team=data" value=(q.label);
            label for="f-schedule" { "Schedule" }
            input id="f-schedule" name="schedule_id" placeholder="sched-…" value=(q.schedule_id);
            button type="submit" { "Filter" }
        }
        @if page_of.apps.is_empty() {
            p { "No app matches." }
        } @else {
            table {
                caption.visually-hidden { "Apps, newest first" }
                thead { tr {
                    th scope="col" { "Id" } th scope="col" { "Name" } th scope="col" { "Namespace" }
                    th scope="col" { "Kind" } th scope="col" { "State" } th scope="col" { "Worker" } th scope="col" { "Attempt" }
                    th scope="col" { "Submitted" }
                } }
                tbody {
                    @for a in &page_of.apps {
                        tr data-app=(a.id) {
                            td { (app_link(&a.id)) }
                            td { (a.name) }
                            td { (a.namespace) }
                            td { (a.kind) }
                            td { (state_badge(a.state.as_str())) }
                            td { @if let Some(w) = &a.worker_id { code { (w) } } }
                            td.num { (a.attempt) }
                            td { (time(&a.submitted_at)) }
                        }
                    }
                }
            }
        }
        @if let Some(href) = next_href { p { a rel="next" href=(href) { "Older apps →" } } }
    };
    page(&f, "Apps", "/ui/apps", body)
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `/ui/apps/{id}`.
pub(crate) async fn app(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let f = frame(&node, &headers).await;
    let view = match node.schedule_view().await {
        Ok(v) => v,
        Err(e) => return error_page(&f, e),
    };
    let app_id = AppId(id.clone());
    let a = match view.cluster.lookup(&app_id) {
        Lookup::Found(a) => present(&view.cluster, &a).into_owned(),
        Lookup::Expired => return error_page(&f, MasterError::AppExpired(id)),
        Lookup::NotFound => return error_page(&f, MasterError::AppNotFound(id)),
    };
    let spec = serde_json::to_string_pretty(&a.spec.value()).unwrap_or_default();
    let body = html! {
        h1 { "App " code { (a.id) } }
        p.lead { (a.name) " · " (state_badge(a.state.as_str())) }
        @if f.leads() {
            div.actions {
                @if !a.state.is_terminal() {
                    form method="post" action=(format!("/ui/apps/{}/kill", a.id)) { (f.csrf_field())
                        label for="kill-reason" { "Reason" }
                        input id="kill-reason" name="reason" placeholder="no longer needed";
                        button.danger type="submit" { "Kill" }
                    }
                } @else {
                    form method="post" action=(format!("/ui/apps/{}/retry", a.id)) { (f.csrf_field())
                        button type="submit" { "Retry as a new app" }
                    }
                }
            }
        }
        dl.fields {
            dt { "Namespace" } dd { (a.namespace) }
            dt { "Kind" } dd { (a.kind) }
            dt { "Resources" } dd { (a.cores) " cores, " (a.memory_mb) " MiB" }
            dt { "Worker" } dd { @if let Some(w) = &a.worker_id { code { (w) } } @else { "—" } }
            dt { "Attempt" } dd { (a.attempt) " (retries " (a.retries) " of " (a.max_retries) ")" }
            dt { "Exit code" } dd { @if let Some(c) = a.exit_code { (c) } @else { "—" } }
            dt { "Message" } dd { @if let Some(m) = &a.message { (m) } @else { "—" } }
            dt { "Submitted" } dd { (time(&a.submitted_at)) }
            dt { "Started" } dd { (opt_time(&a.started_at)) }
            dt { "Finished" } dd { (opt_time(&a.finished_at)) }
            dt { "Restart" } dd { (a.restart) }
            @if let Some(r) = a.max_runtime { dt { "Max runtime" } dd { (aloha_core::app::format_duration(r)) } }
            @if let Some(s) = &a.schedule_id {
                dt { "Schedule" } dd {
                    a href=(format!("/ui/schedules/{s}")) { code { (s) } } " run of " (opt_time(&a.scheduled_at))
                }
            }
            @if let Some(r) = &a.retry_of { dt { "Retry of" } dd { (app_link(r)) } }
            @if !a.labels.is_empty() {
                dt { "Labels" } dd { @for (k, v) in &a.labels { code { (k) "=" (v) } " " } }
            }
            @if !a.details.is_empty() {
                dt { "Details" } dd { @for (k, v) in &a.details { code { (k) "=" (v) } " " } }
            }
        }
        h2 { "Spec" }
        pre.spec { (spec) }
        h2 { "History" }
        ol.history {
            @for h in &a.history {
                li { (time(&h.at)) " " (state_badge(h.state.as_str())) @if let Some(m) = &h.message { " " (m) } }
            }
        }
        h2 id="logs" { "Output" }
        @if a.attempt == 0 {
            p { "Not launched yet." }
        } @else {
            div.logs data-app=(a.id) data-attempt=(a.attempt) data-terminal=(a.state.is_terminal()) {
                label for="log-stream" { "Stream" }
                select id="log-stream" data-log-stream {
                    option value="stdout" { "stdout" }
                    option value="stderr" { "stderr" }
                }
                a data-log-raw href=(format!("/api/v1/apps/{}/logs?stream=stdout", a.id)) { "raw" }
                pre.log aria-label="Log tail" data-log { }
            }
        }
    };
    page(&f, &format!("App {}", a.id), "/ui/apps", body)
}

/// `/ui/schedules`.
pub(crate) async fn schedules(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    let f = frame(&node, &headers).await;
    let list = match node.schedules(None, 1000).await {
        Ok(l) => l,
        Err(e) => return error_page(&f, e),
    };
    let body = html! {
        h1 { "Schedules" }
        @if list.schedules.is_empty() {
            p { "No schedule. Create one with " code { "POST /api/v1/schedules" } " or " code { "alohactl schedule create" } "." }
        } @else {
            table {
                caption.visually-hidden { "Schedules, newest first" }
                thead { tr {
                    th scope="col" { "Id" } th scope="col" { "Name" } th scope="col" { "State" }
                    th scope="col" { "Rule" } th scope="col" { "Next run" } th scope="col" { "Runs" }
                    th scope="col" { "Skipped" } th scope="col" { "Missed" }
                } }
                tbody {
                    @for s in &list.schedules {
                        tr data-schedule=(s.schedule.id) {
                            td { a href=(format!("/ui/schedules/{}", s.schedule.id)) { code { (s.schedule.id) } } }
                            td { (s.schedule.spec.name) }
                            td { (state_badge(s.state.as_str())) }
                            td { (rule(&s.schedule.spec)) }
                            td { @if let Some(n) = s.next_runs.first() { (time(n)) } @else { "—" } }
                            td.num { (s.schedule.counters.runs) }
                            td.num { (s.schedule.counters.skipped) }
                            td.num { (s.schedule.counters.missed) }
                        }
                    }
                }
            }
        }
    };
    page(&f, "Schedules", "/ui/schedules", body)
}

/// A policy as the API names it (`run_latest`).
fn api_name(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn rule(s: &aloha_core::schedules::ScheduleRequest) -> Markup {
    let zone = s.time_zone.clone().unwrap_or_else(|| "UTC".into());
    html! {
        @if let Some(c) = &s.cron { code { (c) } " (" (zone) ")" }
        @if let Some(e) = s.every { "every " (aloha_core::app::format_duration(e)) }
    }
}

/// `/ui/schedules/{id}`.
pub(crate) async fn schedule(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let f = frame(&node, &headers).await;
    let s = match node.schedule(&id).await {
        Ok(s) => s,
        Err(e) => return error_page(&f, e),
    };
    let spec = &s.schedule.spec;
    let tz: Option<chrono_tz::Tz> = spec.time_zone.as_deref().and_then(|z| z.parse().ok());
    let body = html! {
        h1 { "Schedule " code { (s.schedule.id) } }
        p.lead { (spec.name) " · " (state_badge(s.state.as_str())) }
        @if f.leads() && s.state.as_str() != "ENDED" {
            div.actions {
                @if spec.paused {
                    form method="post" action=(format!("/ui/schedules/{}/resume", s.schedule.id)) { (f.csrf_field()) button type="submit" { "Resume" } }
                } @else {
                    form method="post" action=(format!("/ui/schedules/{}/pause", s.schedule.id)) { (f.csrf_field()) button type="submit" { "Pause" } }
                }
                form method="post" action=(format!("/ui/schedules/{}/trigger", s.schedule.id)) { (f.csrf_field()) button type="submit" { "Trigger a run now" } }
            }
        }
        dl.fields {
            dt { "Namespace" } dd { (spec.namespace) }
            dt { "Rule" } dd { (rule(spec)) }
            dt { "Overlap" } dd { (api_name(&spec.overlap)) }
            dt { "Misfire" } dd { (api_name(&spec.misfire)) " (grace " (aloha_core::app::format_duration(spec.misfire_grace)) ")" }
            dt { "Start" } dd { (opt_time(&spec.start_at)) }
            dt { "End" } dd { (opt_time(&spec.end_at)) }
            dt { "Last scheduled" } dd { (opt_time(&s.schedule.last_scheduled_at)) }
            dt { "Counters" } dd {
                (s.schedule.counters.runs) " runs, " (s.schedule.counters.skipped) " skipped, "
                (s.schedule.counters.missed) " missed"
            }
            dt { "Waiting" } dd { (s.schedule.pending.len()) }
        }
        h2 { "Next runs" }
        ol {
            @for n in &s.next_runs {
                li {
                    @if let Some(tz) = tz { (n.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z").to_string()) " · " }
                    (time(n))
                }
            }
        }
        h2 { "Recent runs" }
        @if s.schedule.recent_runs.is_empty() {
            p { "None yet." }
        } @else {
            table {
                caption.visually-hidden { "Recent runs, newest last" }
                thead { tr { th scope="col" { "Scheduled at" } th scope="col" { "App" } th scope="col" { "State" } } }
                tbody {
                    @for r in &s.schedule.recent_runs {
                        tr {
                            td { (time(&r.scheduled_at)) }
                            td { (app_link(&r.app_id)) }
                            td { @if let Some(st) = r.state { (state_badge(st.as_str())) } @else { "removed" } }
                        }
                    }
                }
            }
        }
        p { a href=(format!("/ui/apps?schedule_id={}", s.schedule.id)) { "All its runs" } }
    };
    page(
        &f,
        &format!("Schedule {}", s.schedule.id),
        "/ui/schedules",
        body,
    )
}

/// `/ui/events`: the live event feed (filled by the script from the event stream).
pub(crate) async fn events(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    let f = frame(&node, &headers).await;
    let body = html! {
        h1 { "Events" }
        p { "State changes as they happen, newest first." }
        ul.feed data-feed { }
    };
    page(&f, "Events", "/ui/events", body)
}

/// `/ui/submit`.
pub(crate) async fn submit_form(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    let f = frame(&node, &headers).await;
    let body = html! {
        h1 { "Submit an app" }
        @if !f.leads() {
            p { "Submit on the leader." }
        } @else {
            form.submit method="post" action="/ui/submit" { (f.csrf_field())
                div { label for="s-name" { "Name" } input id="s-name" name="name" required; }
                div {
                    label for="s-namespace" { "Namespace" }
                    input id="s-namespace" name="namespace" value="default" required;
                }
                div {
                    label for="s-kind" { "Kind" }
                    input id="s-kind" name="kind" value="process" required;
                }
                div {
                    label for="s-command" { "Command (process; split on spaces)" }
                    input id="s-command" name="command" placeholder="sleep 30";
                }
                div {
                    label for="s-spec" { "Or the spec as JSON" }
                    textarea id="s-spec" name="spec" rows="3" placeholder=r#"{"command": ["sh", "-c", "echo hi"]}"# {}
                }
                div { label for="s-cores" { "Cores" } input id="s-cores" name="cores" value="1" inputmode="numeric"; }
                div { label for="s-memory" { "Memory (MiB)" } input id="s-memory" name="memory_mb" value="256" inputmode="numeric"; }
                div { label for="s-retries" { "Max retries" } input id="s-retries" name="max_retries" value="0" inputmode="numeric"; }
                div { label for="s-runtime" { "Max runtime" } input id="s-runtime" name="max_runtime" placeholder="10m"; }
                div {
                    label for="s-restart" { "Restart" }
                    select id="s-restart" name="restart" {
                        option value="never" { "never" }
                        option value="on_failure" { "on_failure" }
                        option value="always" { "always" }
                    }
                }
                button type="submit" { "Submit" }
            }
        }
    };
    page(&f, "Submit", "/ui/submit", body)
}
