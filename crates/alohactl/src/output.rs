//! Rendering: every function turns API data into the exact text printed, so output is tested
//! without a master. Tables are borderless and never wrapped; long free text is cut instead.
//! Text that came from the cluster is stripped of control characters before it reaches the
//! terminal.

use std::time::Duration;

use aloha_core::api::{ClusterInfo, Role, WorkerInfo};
use aloha_core::app::{format_duration, Restart};
use aloha_core::{App, AppState, HistoryEntry};
use chrono::{DateTime, Utc};
use comfy_table::{presets, ContentArrangement, Table};
use serde::Deserialize;
use serde_json::Value;

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

/// `list`: one row per app.
pub fn app_list(apps: &[App]) -> String {
    if apps.is_empty() {
        return "No apps.\n".to_string();
    }
    grid(
        &[
            "ID",
            "NAME",
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

/// The line after a `list` page that is not the last: the command that shows the next one.
/// Printed on stderr, so a piped table holds only rows.
pub fn more_apps(state: Option<AppState>, limit: Option<u32>, next: &str) -> String {
    let mut line = "more: alohactl list".to_string();
    if let Some(state) = state {
        line.push_str(&format!(" --state {}", state.as_str()));
    }
    if let Some(limit) = limit {
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
    fields(&[
        ("Role", role.to_string()),
        ("Leader", info.leader.as_deref().map_or(dash(), clean)),
        ("Epoch", info.epoch.to_string()),
        ("Address", clean(&info.address)),
        ("Store", clean(&info.store)),
        ("Members", members),
    ])
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
    if app.labels.is_empty() {
        return dash();
    }
    app.labels
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
fn grid(header: &[&str], rows: Vec<Vec<String>>) -> String {
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
