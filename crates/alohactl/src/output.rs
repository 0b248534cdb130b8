//! Rendering: every function turns API data into the exact text printed, so output is tested
//! without a master. Tables are borderless and never wrapped; long free text is cut instead.
//! Text that came from the cluster is stripped of control characters before it reaches the
//! terminal.

use std::time::Duration;

use aloha_core::api::{ClusterInfo, Role, ScheduleInfo, WorkerInfo};
use aloha_core::app::{format_duration, Restart};
use aloha_core::schedules::{AppTemplate, Overlap};
use aloha_core::{App, HistoryEntry};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use comfy_table::{presets, ContentArrangement, Table};
use serde::Deserialize;
use serde_json::Value;

use crate::cli::ListArgs;

/// Widest MESSAGE cell in `list`, in characters.
const LIST_MESSAGE_CHARS: usize = 60;
/// Widest NAME cell in `list`, in characters.
const LIST_NAME_CHARS: usize = 32;

/// Pretty JSON, as served, with a final newline.
pub fn json(raw: &Value) -> String {
    // Serializing a `Value` to a string cannot fail: its map keys are always strings.
    let mut text = serde_json::to_string_pretty(raw).unwrap_or_else(|_| raw.to_string());
    text.push('\n');
    text
}

/// The answer to a dry run: the app as it would be, and where it would go.
#[derive(Debug, Clone, Deserialize)]
pub struct DryRun {
    /// The app as the submission would create it.
    #[serde(flatten)]
    pub app: App,
    /// Where it would go now.
    pub placement: Placement,
}

/// Where a dry run's app would go: `{"worker_id": "w1"}` or `{"waiting": "<reason>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Placed at once on this worker.
    WorkerId(String),
    /// Queued, for this reason.
    Waiting(String),
}

/// The fields `submit` shows for the app it created (and `retry` for the new app).
pub fn app_summary(app: &App) -> String {
    let mut rows = vec![
        ("Id", app.id.to_string()),
        ("Name", clean(&app.name)),
        ("Namespace", clean(&app.namespace)),
        ("Kind", clean(&app.kind)),
        ("State", app.state.to_string()),
        ("Cores", app.cores.to_string()),
        ("Memory", format!("{} MiB", app.memory_mb)),
        ("Max retries", app.max_retries.to_string()),
    ];
    rows.extend(task_rows(app));
    rows.push(("Labels", labels(app)));
    rows.push(("Submitted", time(app.submitted_at)));
    if let Some(m) = &app.message {
        rows.push(("Message", clean(m)));
    }
    fields(&rows)
}

/// `submit --dry-run`: the would-be app, where it would go, and that nothing was created.
pub fn dry_run(answer: &DryRun) -> String {
    let mut text = app_summary(&answer.app);
    let placement = match &answer.placement {
        Placement::WorkerId(w) => format!("worker {}", clean(w)),
        Placement::Waiting(why) => format!("waiting ({})", clean(why)),
    };
    text.push_str(&format!(
        "placement: {placement}\ndry run: nothing was created\n"
    ));
    text
}

/// The rows of the task model (restart policy, max runtime, provenance), only those that are
/// set, so that a plain app reads as before.
fn task_rows(app: &App) -> Vec<(&'static str, String)> {
    let mut rows = Vec::new();
    if app.restart != Restart::Never {
        rows.push((
            "Restart",
            format!(
                "{} (backoff {}, doubling up to {})",
                app.restart,
                format_duration(app.retry_backoff),
                format_duration(app.max_backoff)
            ),
        ));
    }
    if let Some(d) = app.max_runtime {
        rows.push(("Max runtime", format_duration(d)));
    }
    if let Some(at) = app.relaunch_at {
        rows.push(("Relaunch at", time(at)));
    }
    if app.on_demand {
        rows.push(("On demand", "yes (kept in memory only)".to_string()));
    }
    if let Some(of) = &app.retry_of {
        rows.push(("Retry of", clean(of.as_str())));
    }
    if let Some(schedule) = &app.schedule_id {
        let run = app
            .scheduled_at
            .map(|at| format!(", run of {}", time(at)))
            .unwrap_or_default();
        rows.push(("Schedule", format!("{}{run}", clean(schedule))));
    }
    rows
}

/// `status`: every field, then the history, then the plugin's details.
pub fn app_detail(app: &App) -> String {
    let mut rows = vec![
        ("Id", app.id.to_string()),
        ("Name", clean(&app.name)),
        ("Namespace", clean(&app.namespace)),
        ("Kind", clean(&app.kind)),
        ("State", app.state.to_string()),
        ("Message", app.message.as_deref().map_or(dash(), clean)),
        (
            "Worker",
            app.worker_id.as_ref().map_or(dash(), |w| clean(w.as_str())),
        ),
        ("Attempt", app.attempt.to_string()),
        ("Retries", format!("{} of {}", app.retries, app.max_retries)),
    ];
    rows.extend(task_rows(app));
    rows.extend([
        ("Exit code", app.exit_code.map_or(dash(), |c| c.to_string())),
        ("Cores", app.cores.to_string()),
        ("Memory", format!("{} MiB", app.memory_mb)),
        ("Labels", labels(app)),
        (
            "Kill requested",
            if app.kill_requested { "yes" } else { "no" }.to_string(),
        ),
        ("Submitted", time(app.submitted_at)),
        ("Started", app.started_at.map_or(dash(), time)),
        ("Finished", app.finished_at.map_or(dash(), time)),
        ("Spec", clean(&app.spec.to_string())),
    ]);
    let mut text = fields(&rows);
    text.push_str("\nHistory:\n");
    text.push_str(&grid(
        &["STATE", "AT", "MESSAGE"],
        app.history
            .iter()
            .map(|h| {
                vec![
                    h.state.to_string(),
                    time(h.at),
                    h.message.as_deref().map(clean).unwrap_or_default(),
                ]
            })
            .collect(),
    ));
    if !app.details.is_empty() {
        text.push_str("\nDetails:\n");
        text.push_str(&grid(
            &["KEY", "VALUE"],
            app.details
                .iter()
                .map(|(k, v)| vec![clean(k), clean(v)])
                .collect(),
        ));
    }
    text
}

/// `namespace list|show|set`: one row per namespace, usage next to quota (`used/max`, `-` for
/// no limit).
pub fn namespace_list(list: &[serde_json::Value]) -> String {
    let limit = |ns: &serde_json::Value, used: &str, max: &str| {
        let u = ns["usage"][used].as_u64().unwrap_or(0);
        match ns["quota"][max].as_u64() {
            Some(m) => format!("{u}/{m}"),
            None => format!("{u}/-"),
        }
    };
    grid(
        &[
            "NAME",
            "WEIGHT",
            "CORES",
            "MEMORY_MB",
            "RUNNING",
            "QUEUED",
            "SCHEDULES",
            "SHARE",
        ],
        list.iter()
            .map(|ns| {
                vec![
                    clean(ns["name"].as_str().unwrap_or_default()),
                    ns["weight"].as_u64().unwrap_or(1).to_string(),
                    limit(ns, "cores", "max_cores"),
                    limit(ns, "memory_mb", "max_memory_mb"),
                    limit(ns, "running_apps", "max_running_apps"),
                    limit(ns, "queued_apps", "max_queued_apps"),
                    limit(ns, "schedules", "max_schedules"),
                    format!(
                        "{:.1}%",
                        ns["dominant_share"].as_f64().unwrap_or(0.0) * 100.0
                    ),
                ]
            })
            .collect(),
    )
}

/// `list`: one row per app.
pub fn app_list(apps: &[App]) -> String {
    if apps.is_empty() {
        return "No apps.\n".to_string();
    }
    grid(
        &[
            "ID",
            "NAME",
            "NAMESPACE",
            "KIND",
            "STATE",
            "WORKER",
            "ATTEMPT",
            "SUBMITTED",
            "MESSAGE",
        ],
        apps.iter()
            .map(|a| {
                vec![
                    a.id.to_string(),
                    truncate(&clean(&a.name), LIST_NAME_CHARS),
                    clean(&a.namespace),
                    clean(&a.kind),
                    a.state.to_string(),
                    a.worker_id.as_ref().map_or(dash(), |w| clean(w.as_str())),
                    a.attempt.to_string(),
                    time(a.submitted_at),
                    a.message
                        .as_deref()
                        .map(|m| truncate(&clean(m), LIST_MESSAGE_CHARS))
                        .unwrap_or_default(),
                ]
            })
            .collect(),
    )
}

/// One app's result in the answer of `POST /api/v1/apps/batch`.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchResult {
    /// 201 (created), 200 (created before, with the same key), or why it was refused.
    pub status: u16,
    /// The app, when accepted.
    #[serde(default)]
    pub app: Option<BatchApp>,
    /// Why it was refused.
    #[serde(default)]
    pub error: Option<String>,
}

/// What `submit-batch` shows of an accepted app (the JSON output has all of it).
#[derive(Debug, Clone, Deserialize)]
pub struct BatchApp {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
}

impl BatchResult {
    /// Whether the app exists: created now (201) or by an earlier request with its key (200).
    pub fn accepted(&self) -> bool {
        matches!(self.status, 200 | 201)
    }
}

/// `submit-batch`: one row per app, in file order; `submissions` are the apps as sent, for the
/// names of the refused ones.
pub fn batch_results(results: &[BatchResult], submissions: &[Value]) -> String {
    grid(
        &["INDEX", "STATUS", "APP", "NAME", "ERROR"],
        results
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let name = match &r.app {
                    Some(app) => Some(app.name.as_str()),
                    None => submissions.get(i).and_then(|s| s["name"].as_str()),
                };
                vec![
                    i.to_string(),
                    r.status.to_string(),
                    r.app.as_ref().map_or(dash(), |a| clean(&a.id)),
                    name.map_or(dash(), |n| truncate(&clean(n), LIST_NAME_CHARS)),
                    r.error.as_deref().map(clean).unwrap_or_default(),
                ]
            })
            .collect(),
    )
}

/// The line after a `list` page that is not the last: the command that shows the next one.
/// Printed on stderr, so a piped table holds only rows.
pub fn more_apps(args: &ListArgs, next: &str) -> String {
    let mut line = "more: alohactl list".to_string();
    if let Some(state) = args.state {
        line.push_str(&format!(" --state {}", state.as_str()));
    }
    if let Some(namespace) = &args.namespace {
        line.push_str(&format!(" --namespace {}", clean(namespace)));
    }
    if let Some(limit) = args.limit {
        line.push_str(&format!(" --limit {limit}"));
    }
    line.push_str(&format!(" --after {}\n", clean(next)));
    line
}

/// `workers`: one row per worker, then any plugin that failed to load.
pub fn worker_list(workers: &[WorkerInfo], now: DateTime<Utc>) -> String {
    if workers.is_empty() {
        return "No workers.\n".to_string();
    }
    let mut text = grid(
        &[
            "ID",
            "ADDRESS",
            "STATE",
            "CORES",
            "MEMORY",
            "APPS",
            "LAST HEARTBEAT",
        ],
        workers
            .iter()
            .map(|w| {
                vec![
                    clean(w.id.as_str()),
                    clean(&w.address),
                    w.state.to_string(),
                    format!("{}/{}", w.cores_used, w.cores),
                    format!("{}/{} MiB", w.memory_used_mb, w.memory_mb),
                    w.apps.len().to_string(),
                    format!("{} ago", age(now, w.last_heartbeat)),
                ]
            })
            .collect(),
    );
    for w in workers {
        for e in &w.plugin_errors {
            text.push_str(&format!(
                "worker {}: plugin failed to load: {}\n",
                clean(w.id.as_str()),
                clean(e)
            ));
        }
    }
    text
}

/// `cluster`: the answering master's view.
pub fn cluster(info: &ClusterInfo) -> String {
    let role = match info.role {
        Role::Alive => "ALIVE",
        Role::Standby => "STANDBY",
        Role::Recovering => "RECOVERING",
    };
    let members = if info.members.is_empty() {
        dash()
    } else {
        info.members
            .iter()
            .map(|m| clean(m))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut rows = vec![
        ("Role", role.to_string()),
        ("Leader", info.leader.as_deref().map_or(dash(), clean)),
        ("Epoch", info.epoch.to_string()),
        ("Address", clean(&info.address)),
        ("Store", clean(&info.store)),
        ("Members", members),
    ];
    if let Some(why) = &info.refusing_to_lead {
        rows.push(("Refusing to lead", clean(why)));
    }
    fields(&rows)
}

/// `schedule show` (and `create`, `update`): every field, the template, the next runs in the
/// schedule's zone and in UTC, then the recent runs.
pub fn schedule_detail(info: &ScheduleInfo) -> String {
    let s = &info.schedule;
    let spec = &s.spec;
    let zone = spec.time_zone.as_deref();
    let mut rows = vec![
        ("Id", clean(s.id.as_str())),
        ("Name", clean(&spec.name)),
        ("Namespace", clean(&spec.namespace)),
        ("State", info.state.to_string()),
        ("Rule", rule(info)),
        ("Time zone", zone.map_or_else(|| "UTC".to_string(), clean)),
        ("Start at", spec.start_at.map_or(dash(), time)),
        ("End at", spec.end_at.map_or(dash(), time)),
        ("Overlap", api_name(&spec.overlap)),
    ];
    if spec.overlap == Overlap::Queue {
        rows.push(("Max queued", spec.max_queued.to_string()));
    }
    rows.extend([
        (
            "Misfire",
            format!(
                "{} (grace {})",
                api_name(&spec.misfire),
                format_duration(spec.misfire_grace)
            ),
        ),
        (
            "Jitter",
            if spec.jitter.is_zero() {
                dash()
            } else {
                format!("up to {}", format_duration(spec.jitter))
            },
        ),
        (
            "Runs",
            format!(
                "{} created, {} skipped, {} missed",
                s.counters.runs, s.counters.skipped, s.counters.missed
            ),
        ),
        ("Last scheduled", s.last_scheduled_at.map_or(dash(), time)),
    ]);
    if !s.pending.is_empty() {
        let pending: Vec<String> = s.pending.iter().map(|t| time(*t)).collect();
        rows.push(("Pending", pending.join(", ")));
    }
    rows.extend([
        ("Created", time(s.created_at)),
        ("Updated", time(s.updated_at)),
    ]);
    rows.extend(template_rows(&spec.app));
    let mut text = fields(&rows);

    text.push_str("\nNext runs:\n");
    if info.next_runs.is_empty() {
        text.push_str("-\n");
    }
    for t in &info.next_runs {
        text.push_str(&zoned_time(*t, zone));
        text.push('\n');
    }
    text.push_str("\nRecent runs:\n");
    if s.recent_runs.is_empty() {
        text.push_str("-\n");
    } else {
        text.push_str(&grid(
            &["APP", "SCHEDULED AT", "STATE"],
            s.recent_runs
                .iter()
                .map(|r| {
                    vec![
                        clean(r.app_id.as_str()),
                        time(r.scheduled_at),
                        r.state.map_or(dash(), |st| st.to_string()),
                    ]
                })
                .collect(),
        ));
    }
    text
}

/// The template's rows: what every run is made of.
fn template_rows(app: &AppTemplate) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        ("Kind", clean(&app.kind)),
        ("Spec", clean(&app.spec.to_string())),
        ("Cores", app.cores.to_string()),
        ("Memory", format!("{} MiB", app.memory_mb)),
        ("Max retries", app.max_retries.to_string()),
    ];
    if app.restart != Restart::Never {
        rows.push((
            "Restart",
            format!(
                "{} (backoff {}, doubling up to {})",
                app.restart,
                format_duration(app.retry_backoff),
                format_duration(app.max_backoff)
            ),
        ));
    }
    if let Some(d) = app.max_runtime {
        rows.push(("Max runtime", format_duration(d)));
    }
    rows.push(("Labels", label_list(&app.labels)));
    rows
}

/// `schedule pause|resume|delete`: the schedule in a few lines.
pub fn schedule_summary(info: &ScheduleInfo) -> String {
    let s = &info.schedule;
    let next = info
        .next_runs
        .first()
        .map_or(dash(), |t| zoned_time(*t, s.spec.time_zone.as_deref()));
    fields(&[
        ("Id", clean(s.id.as_str())),
        ("Name", clean(&s.spec.name)),
        ("State", info.state.to_string()),
        ("Rule", rule(info)),
        ("Next run", next),
        (
            "Runs",
            format!(
                "{} created, {} skipped, {} missed",
                s.counters.runs, s.counters.skipped, s.counters.missed
            ),
        ),
    ])
}

/// `schedule list`: one row per schedule; next runs in UTC, the zone beside them.
pub fn schedule_list(schedules: &[ScheduleInfo]) -> String {
    if schedules.is_empty() {
        return "No schedules.\n".to_string();
    }
    grid(
        &[
            "ID",
            "NAME",
            "STATE",
            "RULE",
            "ZONE",
            "NEXT RUN",
            "RUNS/SKIPPED/MISSED",
        ],
        schedules
            .iter()
            .map(|info| {
                let s = &info.schedule;
                vec![
                    clean(s.id.as_str()),
                    truncate(&clean(&s.spec.name), LIST_NAME_CHARS),
                    info.state.to_string(),
                    rule(info),
                    s.spec
                        .time_zone
                        .as_deref()
                        .map_or_else(|| "UTC".into(), clean),
                    info.next_runs.first().map_or(dash(), |t| time(*t)),
                    format!(
                        "{}/{}/{}",
                        s.counters.runs, s.counters.skipped, s.counters.missed
                    ),
                ]
            })
            .collect(),
    )
}

/// The line after a `schedule list` page that is not the last (on stderr).
pub fn more_schedules(limit: Option<u32>, next: &str) -> String {
    let mut line = "more: alohactl schedule list".to_string();
    if let Some(limit) = limit {
        line.push_str(&format!(" --limit {limit}"));
    }
    line.push_str(&format!(" --after {}\n", clean(next)));
    line
}

/// `cron <expr>` or `every <period>`.
fn rule(info: &ScheduleInfo) -> String {
    let spec = &info.schedule.spec;
    match (&spec.cron, spec.every) {
        (Some(cron), _) => format!("cron {}", clean(cron)),
        (None, Some(every)) => format!("every {}", format_duration(every)),
        (None, None) => dash(),
    }
}

/// A nominal time on the schedule's wall clock and in UTC:
/// `2026-12-03 11:00:00 CET  (2026-12-03T10:00:00Z)`. A UTC schedule's times are printed once;
/// a zone this alohactl does not know is named beside the UTC time.
pub fn zoned_time(t: DateTime<Utc>, zone: Option<&str>) -> String {
    let Some(name) = zone.filter(|z| !matches!(*z, "UTC" | "Etc/UTC")) else {
        return time(t);
    };
    match name.parse::<Tz>() {
        Ok(tz) => format!(
            "{}  ({})",
            t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z"),
            time(t)
        ),
        Err(_) => format!("{}  (zone {} unknown here)", time(t), clean(name)),
    }
}

/// The answer to `POST .../trigger`: the run created (201), or that it waits (202).
#[derive(Debug, Clone)]
pub enum Triggered {
    /// The run's app.
    Run(Box<App>),
    /// The run waits for earlier runs to end.
    Queued,
}

impl Triggered {
    /// Reads a trigger's answer: `{"outcome": "queued", ...}` or an app.
    pub fn from_json(raw: &Value) -> Result<Triggered, serde_json::Error> {
        if raw.get("outcome").and_then(Value::as_str) == Some("queued") {
            return Ok(Triggered::Queued);
        }
        App::deserialize(raw).map(|app| Triggered::Run(Box::new(app)))
    }
}

/// `schedule trigger`: the run, as `submit` prints an app, or that it is queued.
pub fn triggered(id: &str, answer: &Triggered) -> String {
    match answer {
        Triggered::Run(app) => app_summary(app),
        Triggered::Queued => format!(
            "queued: the run of {} starts when the earlier runs end\n",
            clean(id)
        ),
    }
}

/// The answer to `POST .../backfill`.
#[derive(Debug, Clone, Deserialize)]
pub struct Backfill {
    /// The nominal times in the range.
    pub times: Vec<DateTime<Utc>>,
    /// What became of each (empty for a dry run).
    #[serde(default)]
    pub runs: Vec<BackfillRun>,
}

/// What became of one backfilled nominal time.
#[derive(Debug, Clone, Deserialize)]
pub struct BackfillRun {
    /// The nominal time.
    pub scheduled_at: DateTime<Utc>,
    /// `created`, `queued` or `skipped`.
    pub outcome: String,
    /// The run created.
    #[serde(default)]
    pub app_id: Option<String>,
    /// Why it was skipped.
    #[serde(default)]
    pub message: Option<String>,
}

/// `schedule backfill`: the nominal times of a dry run, or one line per time with its outcome.
pub fn backfill(answer: &Backfill, dry_run: bool) -> String {
    if dry_run {
        let mut text: String = answer.times.iter().map(|t| time(*t) + "\n").collect();
        text.push_str(&format!(
            "{} nominal time{}; dry run: nothing was created\n",
            answer.times.len(),
            if answer.times.len() == 1 { "" } else { "s" }
        ));
        return text;
    }
    if answer.runs.is_empty() {
        return "No nominal time in the range.\n".to_string();
    }
    grid(
        &["SCHEDULED AT", "OUTCOME", "APP / MESSAGE"],
        answer
            .runs
            .iter()
            .map(|r| {
                let detail = r
                    .app_id
                    .as_deref()
                    .or(r.message.as_deref())
                    .map(|d| truncate(&clean(d), LIST_MESSAGE_CHARS))
                    .unwrap_or_default();
                vec![time(r.scheduled_at), clean(&r.outcome), detail]
            })
            .collect(),
    )
}

/// The API's name of a policy (`cancel_previous`).
fn api_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => dash(),
    }
}

/// One state change followed by `submit --wait`: `<time> <id> <STATE> [message]`.
pub fn state_line(id: &str, entry: &HistoryEntry) -> String {
    let mut line = format!("{} {} {}", time(entry.at), clean(id), entry.state);
    if let Some(m) = entry.message.as_deref().filter(|m| !m.is_empty()) {
        line.push(' ');
        line.push_str(&clean(m));
    }
    line.push('\n');
    line
}

/// A timestamp as printed everywhere: RFC 3339, UTC, whole seconds.
pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// How long ago `then` was, in at most two units: `42s`, `3m5s`, `2h10m`, `4d1h`.
pub fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    // A heartbeat "in the future" is clock skew between hosts; call it now.
    let s = (now - then).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// A configured duration, as a user would type it: `10s`, `500ms`, `1.5s`.
pub fn duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// At most `max` characters, the last one `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Text from the cluster, safe for a terminal and a single line: control characters (newlines,
/// escape sequences) become spaces.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn dash() -> String {
    "-".to_string()
}

fn labels(app: &App) -> String {
    label_list(&app.labels)
}

fn label_list(labels: &std::collections::BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return dash();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{}={}", clean(k), clean(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `Key:  value` lines, values aligned.
fn fields(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    let mut text = String::new();
    for (key, value) in rows {
        let label = format!("{key}:");
        text.push_str(format!("{label:<width$}  {value}").trim_end());
        text.push('\n');
    }
    text
}

/// A borderless table with a header, columns two spaces apart, no trailing blanks.
pub fn grid(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for row in rows {
        table.add_row(row);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut text = String::new();
    for line in table.lines() {
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloha_core::api::{AppList, WorkerList};

    /// An app as a master serves it: running, relaunched once, with details.
    const APP: &str = r#"{
        "id": "app-20240102030405-0007", "seq": 7, "name": "nightly-etl", "kind": "process",
        "spec": {"command": ["sh", "-c", "exit 3"]}, "cores": 2, "memory_mb": 512,
        "max_retries": 2, "labels": {"team": "data", "tier": "batch"}, "state": "RUNNING",
        "worker_id": "w2", "attempt": 2, "retries": 1, "exit_code": null,
        "message": "worker w1 lost; relaunching (retry 1 of 2)",
        "submitted_at": "2024-01-02T03:04:05.123Z", "started_at": "2024-01-02T03:05:00Z",
        "finished_at": null, "kill_requested": false, "details": {"pid": "4242"},
        "history": [
            {"state": "SUBMITTED", "at": "2024-01-02T03:04:05.123Z"},
            {"state": "LAUNCHING", "at": "2024-01-02T03:04:06Z"},
            {"state": "RUNNING", "at": "2024-01-02T03:04:07Z"},
            {"state": "RELAUNCHING", "at": "2024-01-02T03:04:50Z",
             "message": "worker w1 lost; relaunching (retry 1 of 2)"},
            {"state": "LAUNCHING", "at": "2024-01-02T03:04:59Z"},
            {"state": "RUNNING", "at": "2024-01-02T03:05:00Z"}
        ]
    }"#;

    fn app() -> App {
        serde_json::from_str(APP).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn detail_view() {
        let expected = "\
Id:              app-20240102030405-0007
Name:            nightly-etl
Namespace:       default
Kind:            process
State:           RUNNING
Message:         worker w1 lost; relaunching (retry 1 of 2)
Worker:          w2
Attempt:         2
Retries:         1 of 2
Exit code:       -
Cores:           2
Memory:          512 MiB
Labels:          team=data, tier=batch
Kill requested:  no
Submitted:       2024-01-02T03:04:05Z
Started:         2024-01-02T03:05:00Z
Finished:        -
Spec:            {\"command\":[\"sh\",\"-c\",\"exit 3\"]}

History:
STATE        AT                    MESSAGE
SUBMITTED    2024-01-02T03:04:05Z
LAUNCHING    2024-01-02T03:04:06Z
RUNNING      2024-01-02T03:04:07Z
RELAUNCHING  2024-01-02T03:04:50Z  worker w1 lost; relaunching (retry 1 of 2)
LAUNCHING    2024-01-02T03:04:59Z
RUNNING      2024-01-02T03:05:00Z

Details:
KEY  VALUE
pid  4242
";
        assert_eq!(app_detail(&app()), expected);
    }

    #[test]
    fn task_model_fields_show_only_when_set() {
        let mut raw: Value = serde_json::from_str(APP).unwrap();
        raw["max_runtime"] = "1h 30m".into();
        raw["restart"] = "on_failure".into();
        raw["retry_backoff"] = "100ms".into();
        raw["max_backoff"] = "1m".into();
        raw["relaunch_at"] = "2024-01-02T03:06:00Z".into();
        raw["retry_of"] = "app-20240102030000-0001".into();
        raw["schedule_id"] = "nightly".into();
        raw["scheduled_at"] = "2024-01-02T03:00:00Z".into();
        raw["on_demand"] = true.into();
        let a: App = serde_json::from_value(raw).unwrap();
        let text = app_detail(&a);
        let rows = "Retries:         1 of 2\n\
             Restart:         on_failure (backoff 100ms, doubling up to 1m)\n\
             Max runtime:     1h 30m\n\
             Relaunch at:     2024-01-02T03:06:00Z\n\
             On demand:       yes (kept in memory only)\n\
             Retry of:        app-20240102030000-0001\n\
             Schedule:        nightly, run of 2024-01-02T03:00:00Z\n\
             Exit code:";
        assert!(text.contains(rows), "{text}");
        let summary = app_summary(&a);
        assert!(summary.contains("Max runtime:  1h 30m\n"), "{summary}");
        assert!(
            summary.contains("Retry of:     app-20240102030000-0001\n"),
            "{summary}"
        );

        // The default policy adds nothing (the exact views above are unchanged).
        for plain in [app_detail(&app()), app_summary(&app())] {
            for key in [
                "Restart",
                "Max runtime",
                "Retry of",
                "Schedule",
                "On demand",
            ] {
                assert!(!plain.contains(key), "{key}: {plain}");
            }
        }
    }

    #[test]
    fn dry_run_view() {
        let mut raw: Value = serde_json::from_str(APP).unwrap();
        raw["dry_run"] = true.into();
        raw["placement"] = serde_json::json!({"worker_id": "w1"});
        let answer: DryRun = serde_json::from_value(raw.clone()).unwrap();
        assert_eq!(answer.placement, Placement::WorkerId("w1".into()));
        let text = dry_run(&answer);
        assert!(text.starts_with(&app_summary(&app())), "{text}");
        assert!(
            text.ends_with("placement: worker w1\ndry run: nothing was created\n"),
            "{text}"
        );
        raw["placement"] = serde_json::json!({"waiting": "no worker has\n2 free cores"});
        let answer: DryRun = serde_json::from_value(raw.clone()).unwrap();
        assert!(dry_run(&answer).contains("placement: waiting (no worker has 2 free cores)\n"));
        raw.as_object_mut().unwrap().remove("placement");
        assert!(serde_json::from_value::<DryRun>(raw).is_err());
    }

    #[test]
    fn summary_view() {
        let mut a = app();
        a.message = None;
        a.labels.clear();
        let expected = "\
Id:           app-20240102030405-0007
Name:         nightly-etl
Namespace:    default
Kind:         process
State:        RUNNING
Cores:        2
Memory:       512 MiB
Max retries:  2
Labels:       -
Submitted:    2024-01-02T03:04:05Z
";
        assert_eq!(app_summary(&a), expected);
    }

    #[test]
    fn list_view_cuts_long_text() {
        let mut second = app();
        second.id = aloha_core::AppId("app-20240102030000-0006".into());
        second.name = "x".repeat(40);
        second.state = aloha_core::AppState::Submitted;
        second.worker_id = None;
        second.attempt = 0;
        second.message = Some(format!("waiting:\n{}", "no worker has 2 cores ".repeat(5)));
        let served = serde_json::json!({"apps": [app(), second]});
        let list: AppList = serde_json::from_value(served).unwrap();
        let text = app_list(&list.apps);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID  "), "{text}");
        for col in [
            "NAME",
            "KIND",
            "STATE",
            "WORKER",
            "ATTEMPT",
            "SUBMITTED",
            "MESSAGE",
        ] {
            assert!(lines[0].contains(col), "{col} missing: {text}");
        }
        assert!(lines[1].starts_with("app-20240102030405-0007  nightly-etl"));
        assert!(lines[1].contains("  RUNNING  "));
        assert!(lines[1].contains("  w2  "));
        assert!(lines[1].ends_with("worker w1 lost; relaunching (retry 1 of 2)"));
        let cut_name = format!("{}…", "x".repeat(LIST_NAME_CHARS - 1));
        assert!(lines[2].contains(&cut_name), "{text}");
        assert!(lines[2].contains("  -  "), "no worker shows as -");
        let message = lines[2].rsplit("  ").next().unwrap();
        assert!(message.starts_with("waiting: no worker"), "{message}");
        assert_eq!(message.chars().count(), LIST_MESSAGE_CHARS);
        assert!(message.ends_with('…'));
        assert_eq!(app_list(&[]), "No apps.\n");
    }

    #[test]
    fn worker_view() {
        let served = r#"{"workers": [
            {"id": "w1", "address": "10.0.0.1:7070", "state": "ALIVE", "cores": 8,
             "cores_used": 2, "memory_mb": 16384, "memory_used_mb": 768,
             "last_heartbeat": "2024-01-02T03:04:03Z", "apps": ["app-1", "app-2"],
             "kinds": ["process"]},
            {"id": "w2", "address": "10.0.0.2:7070", "state": "DEAD", "cores": 4,
             "cores_used": 0, "memory_mb": 4096, "memory_used_mb": 0,
             "last_heartbeat": "2024-01-02T02:00:00Z", "apps": [], "kinds": [],
             "plugin_errors": ["libspark.so: undefined symbol aloha_abi_version"]}
        ]}"#;
        let list: WorkerList = serde_json::from_str(served).unwrap();
        let expected = "\
ID  ADDRESS        STATE  CORES  MEMORY         APPS  LAST HEARTBEAT
w1  10.0.0.1:7070  ALIVE  2/8    768/16384 MiB  2     2s ago
w2  10.0.0.2:7070  DEAD   0/4    0/4096 MiB     0     1h4m ago
worker w2: plugin failed to load: libspark.so: undefined symbol aloha_abi_version
";
        assert_eq!(
            worker_list(&list.workers, at("2024-01-02T03:04:05Z")),
            expected
        );
        assert_eq!(
            worker_list(&[], at("2024-01-02T03:04:05Z")),
            "No workers.\n"
        );
    }

    #[test]
    fn cluster_view() {
        let info: ClusterInfo = serde_json::from_str(
            r#"{"role": "STANDBY", "leader": "http://m1:8080", "epoch": 3,
                "address": "http://m2:8080", "members": ["http://m1:8080", "http://m2:8080"],
                "store": "etcd"}"#,
        )
        .unwrap();
        let expected = "\
Role:     STANDBY
Leader:   http://m1:8080
Epoch:    3
Address:  http://m2:8080
Store:    etcd
Members:  http://m1:8080, http://m2:8080
";
        assert_eq!(cluster(&info), expected);
    }

    #[test]
    fn state_lines() {
        let a = app();
        assert_eq!(
            state_line(a.id.as_str(), &a.history[0]),
            "2024-01-02T03:04:05Z app-20240102030405-0007 SUBMITTED\n"
        );
        assert_eq!(
            state_line(a.id.as_str(), &a.history[3]),
            "2024-01-02T03:04:50Z app-20240102030405-0007 RELAUNCHING worker w1 lost; relaunching (retry 1 of 2)\n"
        );
    }

    /// A Berlin schedule as a master serves it, with runs.
    fn schedule() -> ScheduleInfo {
        serde_json::from_value(serde_json::json!({
            "id": "sched-20261203093000-0001", "seq": 1, "name": "hourly",
            "app": {"kind": "process", "spec": {"command": ["etl"]}, "cores": 2,
                    "memory_mb": 512, "max_retries": 1, "labels": {"team": "data"},
                    "restart": "on_failure", "retry_backoff": "1s", "max_backoff": "5m",
                    "max_runtime": "30m"},
            "cron": "0 * * * *", "every": null, "time_zone": "Europe/Berlin",
            "start_at": "2026-12-03T09:30:00Z", "end_at": null, "overlap": "queue",
            "max_queued": 3, "misfire": "run_latest", "misfire_grace": "10s", "jitter": "0s",
            "paused": false, "ended": false, "created_at": "2026-12-03T09:30:00Z",
            "updated_at": "2026-12-03T09:31:00Z", "last_scheduled_at": "2026-12-03T10:00:00Z",
            "counters": {"runs": 1, "skipped": 2, "missed": 0},
            "recent_runs": [{"app_id": "app-20261203100000-0001",
                             "scheduled_at": "2026-12-03T10:00:00Z", "state": "RUNNING"}],
            "pending": [], "state": "ACTIVE",
            "next_runs": ["2026-12-03T11:00:00Z", "2026-12-03T12:00:00Z"]
        }))
        .unwrap()
    }

    #[test]
    fn schedule_detail_view() {
        let expected = "\
Id:              sched-20261203093000-0001
Name:            hourly
Namespace:       default
State:           ACTIVE
Rule:            cron 0 * * * *
Time zone:       Europe/Berlin
Start at:        2026-12-03T09:30:00Z
End at:          -
Overlap:         queue
Max queued:      3
Misfire:         run_latest (grace 10s)
Jitter:          -
Runs:            1 created, 2 skipped, 0 missed
Last scheduled:  2026-12-03T10:00:00Z
Created:         2026-12-03T09:30:00Z
Updated:         2026-12-03T09:31:00Z
Kind:            process
Spec:            {\"command\":[\"etl\"]}
Cores:           2
Memory:          512 MiB
Max retries:     1
Restart:         on_failure (backoff 1s, doubling up to 5m)
Max runtime:     30m
Labels:          team=data

Next runs:
2026-12-03 12:00:00 CET  (2026-12-03T11:00:00Z)
2026-12-03 13:00:00 CET  (2026-12-03T12:00:00Z)

Recent runs:
APP                      SCHEDULED AT          STATE
app-20261203100000-0001  2026-12-03T10:00:00Z  RUNNING
";
        assert_eq!(schedule_detail(&schedule()), expected);
    }

    #[test]
    fn schedule_summary_list_and_zones() {
        let mut every = schedule();
        every.schedule.id = aloha_core::schedules::ScheduleId("sched-2".into());
        every.schedule.spec.cron = None;
        every.schedule.spec.every = Some(Duration::from_secs(90));
        every.schedule.spec.time_zone = None;
        every.state = aloha_core::schedules::ScheduleState::Paused;
        every.next_runs.clear();
        let expected = "\
ID                         NAME    STATE   RULE            ZONE           NEXT RUN              RUNS/SKIPPED/MISSED
sched-20261203093000-0001  hourly  ACTIVE  cron 0 * * * *  Europe/Berlin  2026-12-03T11:00:00Z  1/2/0
sched-2                    hourly  PAUSED  every 1m 30s    UTC            -                     1/2/0
";
        assert_eq!(schedule_list(&[schedule(), every.clone()]), expected);
        assert_eq!(schedule_list(&[]), "No schedules.\n");
        assert_eq!(
            more_schedules(Some(5), "sched-2"),
            "more: alohactl schedule list --limit 5 --after sched-2\n"
        );
        let summary = schedule_summary(&every);
        assert!(
            summary.contains("State:     PAUSED\nRule:      every 1m 30s\nNext run:  -\n"),
            "{summary}"
        );

        let t = at("2026-07-01T10:00:00Z");
        assert_eq!(zoned_time(t, None), "2026-07-01T10:00:00Z");
        assert_eq!(zoned_time(t, Some("UTC")), "2026-07-01T10:00:00Z");
        assert_eq!(
            zoned_time(t, Some("Europe/Berlin")),
            "2026-07-01 12:00:00 CEST  (2026-07-01T10:00:00Z)"
        );
        assert_eq!(
            zoned_time(t, Some("Mars/Olympus")),
            "2026-07-01T10:00:00Z  (zone Mars/Olympus unknown here)"
        );
    }

    #[test]
    fn backfill_and_trigger_views() {
        let answer: Backfill = serde_json::from_value(serde_json::json!({
            "schedule_id": "sched-1", "dry_run": false,
            "times": ["2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z", "2026-12-03T00:00:00Z"],
            "runs": [
                {"scheduled_at": "2026-12-01T00:00:00Z", "outcome": "created",
                 "app_id": "app-20261203100000-0004"},
                {"scheduled_at": "2026-12-02T00:00:00Z", "outcome": "queued"},
                {"scheduled_at": "2026-12-03T00:00:00Z", "outcome": "skipped",
                 "message": "a run of this time exists"}
            ]
        }))
        .unwrap();
        let expected = "\
SCHEDULED AT          OUTCOME  APP / MESSAGE
2026-12-01T00:00:00Z  created  app-20261203100000-0004
2026-12-02T00:00:00Z  queued
2026-12-03T00:00:00Z  skipped  a run of this time exists
";
        assert_eq!(backfill(&answer, false), expected);
        let none = Backfill {
            times: vec![],
            runs: vec![],
        };
        assert_eq!(
            backfill(&none, true),
            "0 nominal times; dry run: nothing was created\n"
        );
        assert_eq!(backfill(&none, false), "No nominal time in the range.\n");

        let queued = serde_json::json!({"schedule_id": "s", "outcome": "queued"});
        assert!(matches!(
            Triggered::from_json(&queued),
            Ok(Triggered::Queued)
        ));
        let run = Triggered::from_json(&serde_json::from_str(APP).unwrap()).unwrap();
        assert_eq!(triggered("s", &run), app_summary(&app()));
        assert!(Triggered::from_json(&serde_json::json!({"x": 1})).is_err());
    }

    #[test]
    fn batch_rows_name_every_app_in_file_order() {
        let results: Vec<BatchResult> = serde_json::from_value(serde_json::json!([
            {"status": 201, "app": {"id": "app-20240102030405-0001", "name": "a", "seq": 1}},
            {"status": 422, "error": "unknown kind \"nope\";\nknown kinds: process"},
            {"status": 200, "app": {"id": "app-20240102030405-0002", "name": "c"}},
            {"status": 400, "error": "name must not be empty"}
        ]))
        .unwrap();
        let sent = [
            serde_json::json!({"name": "a"}),
            serde_json::json!({"name": "b", "kind": "nope"}),
            serde_json::json!({"name": "c"}),
            serde_json::json!({"kind": "process"}),
        ];
        assert_eq!(
            results
                .iter()
                .map(BatchResult::accepted)
                .collect::<Vec<_>>(),
            [true, false, true, false]
        );
        let expected = "\
INDEX  STATUS  APP                      NAME  ERROR
0      201     app-20240102030405-0001  a
1      422     -                        b     unknown kind \"nope\"; known kinds: process
2      200     app-20240102030405-0002  c
3      400     -                        -     name must not be empty
";
        assert_eq!(batch_results(&results, &sent), expected);
    }

    #[test]
    fn small_helpers() {
        let now = at("2024-01-02T03:04:05Z");
        assert_eq!(age(now, at("2024-01-02T03:04:05Z")), "0s");
        assert_eq!(age(now, at("2024-01-02T03:04:10Z")), "0s");
        assert_eq!(age(now, at("2024-01-02T03:01:00Z")), "3m5s");
        assert_eq!(age(now, at("2023-12-30T01:00:00Z")), "3d2h");
        assert_eq!(duration(Duration::from_secs(10)), "10s");
        assert_eq!(duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(duration(Duration::from_millis(300)), "300ms");
        assert_eq!(truncate("héllo", 5), "héllo");
        assert_eq!(truncate("héllo!", 5), "héll…");
        assert_eq!(clean("a\nb\x1b[31mc"), "a b [31mc");
        assert_eq!(json(&serde_json::json!({"a": 1})), "{\n  \"a\": 1\n}\n");
    }
}
