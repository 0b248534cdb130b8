//! `alohactl schedule ...`: one function per subcommand, and building the bodies of
//! `POST /api/v1/schedules` and `PATCH /api/v1/schedules/{id}` from flags.
//!
//! Bodies are built as JSON, field by field, so that only what the command line says is sent
//! and the master's defaults apply to the rest. An update that changes the template fetches the
//! current one and merges the flags into its JSON (the master replaces the template as a
//! whole), so fields of a newer master that this alohactl does not know survive the round trip.
//! Between that read and the PATCH another client's change to the template would be lost; the
//! API offers no version to guard it with.
//!
//! Retry rules are the client's: reads (`list`, `show`, a dry-run backfill) may be resent to
//! any master; writes (create, update, pause, resume, trigger, backfill, delete) only when they
//! surely did not reach one.

use aloha_core::api::{ScheduleInfo, ScheduleList};
use serde_json::{Map, Value};

use crate::cli::{
    BackfillArgs, Output, RuleArgs, ScheduleCommand, ScheduleCreateArgs, ScheduleListArgs,
    ScheduleUpdateArgs, TemplateArgs,
};
use crate::client::{segment, Client, Served};
use crate::commands::{build_labels, build_spec, fetch_pages, read_input, Page};
use crate::error::CtlError;
use crate::io::{print, Io};
use crate::output;

/// Runs `alohactl schedule <command>`.
pub fn run(
    client: &Client,
    format: Output,
    command: ScheduleCommand,
    io: &mut Io<'_>,
) -> Result<(), CtlError> {
    match command {
        ScheduleCommand::Create(args) => create(client, format, &args, io),
        ScheduleCommand::List(args) => list(client, format, &args, io),
        ScheduleCommand::Show { id } => {
            let info: Served<ScheduleInfo> = client.get(&schedule_path(&id), &[])?;
            print_schedule(format, &info, output::schedule_detail, io)
        }
        ScheduleCommand::Update(args) => update(client, format, &args, io),
        ScheduleCommand::Pause { id } => {
            let info: Served<ScheduleInfo> =
                client.post(&format!("{}/pause", schedule_path(&id)), None::<&()>)?;
            print_schedule(format, &info, output::schedule_summary, io)
        }
        ScheduleCommand::Resume { id } => {
            let info: Served<ScheduleInfo> =
                client.post(&format!("{}/resume", schedule_path(&id)), None::<&()>)?;
            print_schedule(format, &info, output::schedule_summary, io)
        }
        ScheduleCommand::Trigger { id, allow_overlap } => {
            trigger(client, format, &id, allow_overlap, io)
        }
        ScheduleCommand::Backfill(args) => backfill(client, format, &args, io),
        ScheduleCommand::Delete { id } => {
            let info: Served<ScheduleInfo> = client.delete(&schedule_path(&id))?;
            print_schedule(format, &info, deleted, io)
        }
    }
}

/// `schedule delete`: the schedule as it was, and what became of it.
fn deleted(info: &ScheduleInfo) -> String {
    let mut text = format!(
        "deleted schedule {}; its runs are left alone\n",
        output::clean(info.schedule.id.as_str())
    );
    text.push_str(&output::schedule_summary(info));
    text
}

fn print_schedule(
    format: Output,
    info: &Served<ScheduleInfo>,
    table: fn(&ScheduleInfo) -> String,
    io: &mut Io<'_>,
) -> Result<(), CtlError> {
    print(
        io,
        &match format {
            Output::Table => table(&info.data),
            Output::Json => output::json(&info.raw),
        },
    )
}

fn create(
    client: &Client,
    format: Output,
    args: &ScheduleCreateArgs,
    io: &mut Io<'_>,
) -> Result<(), CtlError> {
    let stdin = &mut std::io::stdin();
    let file = match &args.file {
        Some(path) => Some(read_input("--file", path, stdin)?),
        None => None,
    };
    let spec = spec_text(&args.template, stdin)?;
    let body = create_body(args, file, spec)?;
    // No idempotency key for schedules: sent like a kill, never repeated once it may have
    // reached a master.
    let info: Served<ScheduleInfo> = client.post("/api/v1/schedules", Some(&body))?;
    print_schedule(format, &info, output::schedule_detail, io)
}

fn update(
    client: &Client,
    format: Output,
    args: &ScheduleUpdateArgs,
    io: &mut Io<'_>,
) -> Result<(), CtlError> {
    let path = schedule_path(&args.id);
    let spec = spec_text(&args.template, &mut std::io::stdin())?;
    let mut patch = patch_fields(args)?;
    if args.template.any() {
        let current: Served<ScheduleInfo> = client.get(&path, &[])?;
        let app = merged_template(current.raw.get("app"), &args.template, spec)?;
        patch.insert("app".into(), app);
    }
    let info: Served<ScheduleInfo> = client.patch(&path, &Value::Object(patch))?;
    print_schedule(format, &info, output::schedule_detail, io)
}

impl Page for ScheduleList {
    const ITEMS: &'static str = "schedules";
    type Item = ScheduleInfo;
    fn into_parts(self) -> (Vec<ScheduleInfo>, Option<String>) {
        (self.schedules, self.next.map(|n| n.0))
    }
    fn last(schedules: Vec<ScheduleInfo>) -> ScheduleList {
        ScheduleList {
            schedules,
            next: None,
        }
    }
}

fn list(
    client: &Client,
    format: Output,
    args: &ScheduleListArgs,
    io: &mut Io<'_>,
) -> Result<(), CtlError> {
    let query: Vec<(&str, String)> = args
        .limit
        .map(|l| ("limit", l.to_string()))
        .into_iter()
        .collect();
    let page: Served<ScheduleList> = fetch_pages(
        client,
        "/api/v1/schedules",
        &query,
        args.after.as_deref(),
        args.all,
    )?;
    match format {
        Output::Table => {
            print(io, &output::schedule_list(&page.data.schedules))?;
            if let Some(next) = &page.data.next {
                // On stderr: the rows on stdout stay clean for a pipe.
                io.err
                    .write_all(output::more_schedules(args.limit, next.as_str()).as_bytes())?;
                io.err.flush()?;
            }
            Ok(())
        }
        Output::Json => print(io, &output::json(&page.raw)),
    }
}

/// `schedule trigger`: 201 prints the run, 202 that it is queued; the 409 of a skipped run is
/// an API error (exit 1, the master's "not run: ..." on one line).
fn trigger(
    client: &Client,
    format: Output,
    id: &str,
    allow_overlap: bool,
    io: &mut Io<'_>,
) -> Result<(), CtlError> {
    let body = allow_overlap.then(|| serde_json::json!({"overlap": "allow"}));
    let answer: Served<Value> =
        client.post(&format!("{}/trigger", schedule_path(id)), body.as_ref())?;
    if format == Output::Json {
        return print(io, &output::json(&answer.raw));
    }
    let triggered = output::Triggered::from_json(&answer.raw).map_err(|e| {
        CtlError::Internal(format!(
            "unexpected answer to the trigger of {}: {e}",
            output::clean(id)
        ))
    })?;
    print(io, &output::triggered(id, &triggered))
}

fn backfill(
    client: &Client,
    format: Output,
    args: &BackfillArgs,
    io: &mut Io<'_>,
) -> Result<(), CtlError> {
    let body = serde_json::json!({
        "start": args.start,
        "end": args.end,
        "dry_run": args.dry_run,
    });
    let path = format!("{}/backfill", schedule_path(&args.id));
    // A dry run changes nothing: resent anywhere, like a GET.
    let answer: Served<output::Backfill> = if args.dry_run {
        client.post_read_only(&path, &[], &body)?
    } else {
        client.post(&path, Some(&body))?
    };
    print(
        io,
        &match format {
            Output::Table => output::backfill(&answer.data, args.dry_run),
            Output::Json => output::json(&answer.raw),
        },
    )
}

fn schedule_path(id: &str) -> String {
    format!("/api/v1/schedules/{}", segment(id))
}

/// The spec's source (flag name) and text, when `--spec` or `--spec-file` was given.
fn spec_text(
    t: &TemplateArgs,
    stdin: &mut dyn std::io::Read,
) -> Result<Option<(String, String)>, CtlError> {
    Ok(match (&t.spec_file, &t.spec) {
        (Some(path), _) => Some((
            "--spec-file".to_string(),
            read_input("--spec-file", path, stdin)?,
        )),
        (None, Some(text)) => Some(("--spec".to_string(), text.clone())),
        (None, None) => None,
    })
}

/// The body of `POST /api/v1/schedules`: `--file`'s object (if any) with the flags' fields set
/// over it. Left out, fields take the master's defaults.
pub fn create_body(
    args: &ScheduleCreateArgs,
    file: Option<String>,
    spec: Option<(String, String)>,
) -> Result<Value, CtlError> {
    let mut body = match &file {
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(CtlError::Usage("--file must hold a JSON object".into())),
            Err(e) => return Err(CtlError::Usage(format!("--file is not valid JSON: {e}"))),
        },
        None => Map::new(),
    };
    if let Some(name) = &args.name {
        body.insert("name".into(), name.clone().into());
    }
    if let Some(ns) = &args.namespace {
        body.insert("namespace".into(), ns.clone().into());
    }
    let rule = rule_fields(&args.rule);
    // One rule: a flag's replaces the file's other one.
    if rule.contains_key("cron") {
        body.remove("every");
    }
    if rule.contains_key("every") {
        body.remove("cron");
    }
    body.extend(rule);
    if file.is_none() && !body.contains_key("cron") && !body.contains_key("every") {
        return Err(CtlError::Usage(
            "a schedule needs --cron EXPR or --every DURATION".into(),
        ));
    }
    let app = merged_template(body.get("app"), &args.template, spec)?;
    body.insert("app".into(), app);
    Ok(Value::Object(body))
}

/// The fields of `PATCH /api/v1/schedules/{id}` but the template: only those given.
pub fn patch_fields(args: &ScheduleUpdateArgs) -> Result<Map<String, Value>, CtlError> {
    let mut patch = Map::new();
    if let Some(name) = &args.name {
        patch.insert("name".into(), name.clone().into());
    }
    patch.extend(rule_fields(&args.rule));
    if args.clear_end_at {
        patch.insert("end_at".into(), Value::Null);
    }
    if patch.is_empty() && !args.template.any() {
        return Err(CtlError::Usage(format!(
            "nothing to change in schedule {}: give at least one flag (see 'alohactl schedule \
             update --help')",
            output::clean(&args.id)
        )));
    }
    Ok(patch)
}

/// The rule and policy fields given on the command line, as the API names them.
fn rule_fields(r: &RuleArgs) -> Map<String, Value> {
    let mut m = Map::new();
    let duration = |d| Value::String(aloha_core::app::format_duration(d));
    if let Some(cron) = &r.cron {
        m.insert("cron".into(), cron.clone().into());
    }
    if let Some(every) = r.every {
        m.insert("every".into(), duration(every));
    }
    if let Some(zone) = &r.time_zone {
        m.insert("time_zone".into(), zone.clone().into());
    }
    if let Some(t) = r.start_at {
        m.insert("start_at".into(), api_value(&t));
    }
    if let Some(t) = r.end_at {
        m.insert("end_at".into(), api_value(&t));
    }
    if let Some(o) = r.overlap {
        m.insert(
            "overlap".into(),
            api_value(&aloha_core::schedules::Overlap::from(o)),
        );
    }
    if let Some(n) = r.max_queued {
        m.insert("max_queued".into(), n.into());
    }
    if let Some(p) = r.misfire {
        m.insert(
            "misfire".into(),
            api_value(&aloha_core::schedules::Misfire::from(p)),
        );
    }
    if let Some(d) = r.misfire_grace {
        m.insert("misfire_grace".into(), duration(d));
    }
    if let Some(d) = r.jitter {
        m.insert("jitter".into(), duration(d));
    }
    if r.paused {
        m.insert("paused".into(), true.into());
    }
    m
}

/// `current` (a template as JSON: from `--file`, or the schedule's before an update; `None`
/// for a new one, whose kind is `process` unless `--kind` says otherwise) with the template
/// flags set over it.
pub fn merged_template(
    current: Option<&Value>,
    t: &TemplateArgs,
    spec: Option<(String, String)>,
) -> Result<Value, CtlError> {
    let mut app = match current {
        Some(Value::Object(map)) => map.clone(),
        Some(_) => {
            return Err(CtlError::Usage(
                "the schedule's `app` is not an object".into(),
            ))
        }
        None => Map::new(),
    };
    if let Some(kind) = &t.kind {
        app.insert("kind".into(), kind.clone().into());
    }
    let kind = app
        .entry("kind")
        .or_insert_with(|| "process".into())
        .as_str()
        .unwrap_or_default()
        .to_string();
    if spec.is_some() || !t.command.is_empty() {
        app.insert("spec".into(), build_spec(&kind, spec, &t.command)?);
    }
    if let Some(cores) = t.cores {
        app.insert("cores".into(), cores.into());
    }
    if let Some(mb) = t.memory_mb {
        app.insert("memory_mb".into(), mb.into());
    }
    if let Some(n) = t.max_retries {
        app.insert("max_retries".into(), n.into());
    }
    let duration = |d| Value::String(aloha_core::app::format_duration(d));
    if let Some(d) = t.max_runtime {
        app.insert("max_runtime".into(), duration(d));
    }
    if let Some(r) = t.restart {
        app.insert(
            "restart".into(),
            api_value(&aloha_core::app::Restart::from(r)),
        );
    }
    if let Some(d) = t.retry_backoff {
        app.insert("retry_backoff".into(), duration(d));
    }
    if let Some(d) = t.max_backoff {
        app.insert("max_backoff".into(), duration(d));
    }
    if !t.labels.is_empty() {
        let labels = build_labels(&t.labels)?;
        app.insert("labels".into(), api_value(&labels));
    }
    Ok(Value::Object(app))
}

/// A value as the API writes it. Serializing these types (enums, times, string maps) cannot
/// fail.
fn api_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::client::tests::{client, TestServer};
    use clap::Parser;
    use serde_json::json;
    use std::time::Duration;

    fn parse(args: &[&str]) -> ScheduleCommand {
        let cli = Cli::try_parse_from(
            ["alohactl", "schedule"]
                .into_iter()
                .chain(args.iter().copied()),
        )
        .unwrap();
        match cli.command {
            Command::Schedule(c) => c,
            other => panic!("{other:?}"),
        }
    }

    fn create_args(args: &[&str]) -> ScheduleCreateArgs {
        let mut all = vec!["create"];
        all.extend_from_slice(args);
        match parse(&all) {
            ScheduleCommand::Create(a) => a,
            other => panic!("{other:?}"),
        }
    }

    fn update_args(args: &[&str]) -> ScheduleUpdateArgs {
        let mut all = vec!["update", "sched-1"];
        all.extend_from_slice(args);
        match parse(&all) {
            ScheduleCommand::Update(a) => a,
            other => panic!("{other:?}"),
        }
    }

    fn body(args: &[&str]) -> Result<Value, CtlError> {
        let a = create_args(args);
        let spec = a.template.spec.clone().map(|s| ("--spec".to_string(), s));
        create_body(&a, None, spec)
    }

    #[test]
    fn create_sends_only_the_given_fields() {
        let b = body(&["--name", "tick", "--every", "1s", "--", "echo", "hi"]).unwrap();
        assert_eq!(
            b,
            json!({"name": "tick", "every": "1s",
                   "app": {"kind": "process", "spec": {"command": ["echo", "hi"]}}})
        );
    }

    #[test]
    fn every_create_flag_goes_into_the_body() {
        let b = body(&[
            "--name",
            "nightly",
            "--cron",
            "0 3 * * *",
            "--time-zone",
            "Europe/Berlin",
            "--start-at",
            "2026-12-03T11:00:00+01:00",
            "--end-at",
            "2027-01-01T00:00:00Z",
            "--overlap",
            "cancel_previous",
            "--max-queued",
            "5",
            "--misfire",
            "run_all",
            "--misfire-grace",
            "1m 30s",
            "--jitter",
            "10s",
            "--paused",
            "--cores",
            "2",
            "--memory-mb",
            "512",
            "--max-retries",
            "3",
            "--max-runtime",
            "1h",
            "--restart",
            "on_failure",
            "--retry-backoff",
            "100ms",
            "--max-backoff",
            "1m",
            "--label",
            "team=data",
            "--",
            "etl.sh",
        ])
        .unwrap();
        assert_eq!(
            b,
            json!({
                "name": "nightly", "cron": "0 3 * * *", "time_zone": "Europe/Berlin",
                "start_at": "2026-12-03T10:00:00Z", "end_at": "2027-01-01T00:00:00Z",
                "overlap": "cancel_previous", "max_queued": 5, "misfire": "run_all",
                "misfire_grace": "1m 30s", "jitter": "10s", "paused": true,
                "app": {
                    "kind": "process", "spec": {"command": ["etl.sh"]}, "cores": 2,
                    "memory_mb": 512, "max_retries": 3, "max_runtime": "1h",
                    "restart": "on_failure", "retry_backoff": "100ms", "max_backoff": "1m",
                    "labels": {"team": "data"}
                }
            })
        );
        // The body is what the master reads.
        serde_json::from_value::<aloha_core::schedules::ScheduleRequest>(b).unwrap();
    }

    #[test]
    fn create_needs_a_rule_and_a_process_kind_for_a_command() {
        let err = body(&["--name", "x", "--", "true"]).unwrap_err();
        assert!(matches!(err, CtlError::Usage(_)), "{err:?}");
        assert!(err.to_string().contains("--cron EXPR or --every"), "{err}");
        let err = body(&[
            "--name", "x", "--every", "1m", "--kind", "spark", "--", "run",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("--kind spark"), "{err}");
        let b = body(&[
            "--name",
            "x",
            "--every",
            "1m",
            "--kind",
            "spark",
            "--spec",
            r#"{"class": "Main"}"#,
        ])
        .unwrap();
        assert_eq!(
            b["app"],
            json!({"kind": "spark", "spec": {"class": "Main"}})
        );
    }

    #[test]
    fn create_flags_override_a_file() {
        let file = json!({
            "name": "from-file", "every": "1h", "overlap": "queue",
            "app": {"kind": "process", "spec": {"command": ["a"]}, "cores": 4, "labels": {"x": "1"}}
        })
        .to_string();
        let a = create_args(&["--file", "s.json", "--cron", "0 * * * *", "--", "b"]);
        let b = create_body(&a, Some(file.clone()), None).unwrap();
        assert_eq!(
            b,
            json!({
                "name": "from-file", "cron": "0 * * * *", "overlap": "queue",
                "app": {"kind": "process", "spec": {"command": ["b"]}, "cores": 4, "labels": {"x": "1"}}
            })
        );
        // Without flags the file is sent as it is (and --name is not required).
        let a = create_args(&["--file", "s.json"]);
        let b = create_body(&a, Some(file.clone()), None).unwrap();
        assert_eq!(b, serde_json::from_str::<Value>(&file).unwrap());
        for bad in ["[1]", "{nope"] {
            let err = create_body(&a, Some(bad.into()), None).unwrap_err();
            assert!(err.to_string().starts_with("--file "), "{err}");
        }
    }

    #[test]
    fn create_flags_are_checked_by_clap() {
        let parse_err = |args: &[&str]| {
            Cli::try_parse_from(
                ["alohactl", "schedule", "create"]
                    .into_iter()
                    .chain(args.iter().copied()),
            )
            .unwrap_err()
            .kind()
        };
        use clap::error::ErrorKind;
        assert_eq!(
            parse_err(&["--every", "1s"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse_err(&["--name", "x", "--every", "1s", "--cron", "* * * * *"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            parse_err(&["--name", "x", "--every", "1s", "--overlap", "sometimes"]),
            ErrorKind::InvalidValue
        );
        assert_eq!(
            parse_err(&["--name", "x", "--every", "1s", "--start-at", "tomorrow"]),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn update_patches_only_the_given_fields() {
        let p = patch_fields(&update_args(&["--name", "renamed", "--every", "5m"])).unwrap();
        assert_eq!(Value::Object(p), json!({"name": "renamed", "every": "5m"}));
        let p = patch_fields(&update_args(&["--clear-end-at", "--overlap", "allow"])).unwrap();
        assert_eq!(
            Value::Object(p),
            json!({"end_at": null, "overlap": "allow"})
        );
        let err = patch_fields(&update_args(&[])).unwrap_err();
        assert!(err.to_string().starts_with("nothing to change"), "{err}");
        // Template flags alone are a change.
        assert!(patch_fields(&update_args(&["--cores", "2"]))
            .unwrap()
            .is_empty());
        let conflict = Cli::try_parse_from([
            "alohactl",
            "schedule",
            "update",
            "sched-1",
            "--end-at",
            "2027-01-01T00:00:00Z",
            "--clear-end-at",
        ]);
        assert!(conflict.is_err());
    }

    #[test]
    fn template_flags_merge_into_the_current_template() {
        let current = json!({
            "kind": "process", "spec": {"command": ["v1"]}, "cores": 2, "memory_mb": 256,
            "max_retries": 1, "labels": {"team": "data"}, "restart": "never",
            "retry_backoff": "1s", "max_backoff": "5m"
        });
        let a = update_args(&["--memory-mb", "1024", "--", "v2", "--fast"]);
        let merged = merged_template(Some(&current), &a.template, None).unwrap();
        let mut expected = current.clone();
        expected["memory_mb"] = 1024.into();
        expected["spec"] = json!({"command": ["v2", "--fast"]});
        assert_eq!(merged, expected);
        // Given labels replace the template's.
        let a = update_args(&["--label", "tier=gold"]);
        let merged = merged_template(Some(&current), &a.template, None).unwrap();
        assert_eq!(merged["labels"], json!({"tier": "gold"}));
        // The current kind decides whether a command is allowed.
        let spark = json!({"kind": "spark", "spec": {}});
        let a = update_args(&["--", "run"]);
        let err = merged_template(Some(&spark), &a.template, None).unwrap_err();
        assert!(err.to_string().contains("--kind spark"), "{err}");
    }

    /// A schedule as the master serves it.
    pub(crate) fn info_json(id: &str) -> Value {
        json!({
            "id": id, "seq": 1, "name": "nightly",
            "app": {"kind": "process", "spec": {"command": ["v1"]}, "cores": 1,
                    "memory_mb": 256, "max_retries": 0, "labels": {}, "restart": "never",
                    "retry_backoff": "1s", "max_backoff": "5m"},
            "cron": "0 * * * *", "every": null, "time_zone": "Europe/Berlin",
            "start_at": "2026-12-03T09:30:00Z", "end_at": null, "overlap": "skip",
            "max_queued": 100, "misfire": "run_latest", "misfire_grace": "10s", "jitter": "0s",
            "paused": false, "ended": false, "created_at": "2026-12-03T09:30:00Z",
            "updated_at": "2026-12-03T09:30:00Z", "last_scheduled_at": null,
            "counters": {"runs": 0, "skipped": 0, "missed": 0}, "recent_runs": [], "pending": [],
            "state": "ACTIVE", "next_runs": ["2026-12-03T10:00:00Z", "2026-12-03T11:00:00Z"]
        })
    }

    fn run_cmd(c: &Client, format: Output, args: &[&str]) -> Result<String, CtlError> {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        run(
            c,
            format,
            parse(args),
            &mut Io {
                out: &mut out,
                err: &mut err,
            },
        )?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn update_reads_the_template_then_patches_it() {
        let server = TestServer::start(|seen| {
            let mut info = info_json("sched-1");
            if seen.method == "PATCH" {
                info["name"] = "renamed".into();
            }
            (200, info.to_string())
        });
        let c = client(&[&server.url], Duration::from_secs(5));
        let out = run_cmd(
            &c,
            Output::Table,
            &["update", "sched-1", "--name", "renamed", "--cores", "3"],
        )
        .unwrap();
        assert!(out.contains("Name:            renamed"), "{out}");
        let seen = server.seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            (seen[0].method.as_str(), seen[0].target.as_str()),
            ("GET", "/api/v1/schedules/sched-1")
        );
        assert_eq!(
            (seen[1].method.as_str(), seen[1].target.as_str()),
            ("PATCH", "/api/v1/schedules/sched-1")
        );
        let mut app = info_json("sched-1")["app"].clone();
        app["cores"] = 3.into();
        let patch: Value = serde_json::from_str(&seen[1].body).unwrap();
        assert_eq!(patch, json!({"name": "renamed", "app": app}));

        // Without template flags nothing is read first.
        run_cmd(&c, Output::Json, &["update", "sched-1", "--paused"]).unwrap();
        let seen = server.seen();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[2].method, "PATCH");
        assert_eq!(seen[2].body, r#"{"paused":true}"#);
    }

    #[test]
    fn trigger_prints_the_run_or_that_it_is_queued_or_fails() {
        let server = TestServer::start(|seen| {
            if seen.target.contains("sched-q") {
                return (
                    202,
                    r#"{"schedule_id":"sched-q","outcome":"queued"}"#.into(),
                );
            }
            if seen.target.contains("sched-busy") {
                return (
                    409,
                    r#"{"error":"not run: an earlier run has not ended"}"#.into(),
                );
            }
            let app = json!({
                "id": "app-20261203100000-0001", "seq": 1, "name": "nightly@2026-12-03T10:00:00Z",
                "kind": "process", "spec": {}, "cores": 1, "memory_mb": 256, "max_retries": 0,
                "labels": {}, "state": "SUBMITTED", "worker_id": null, "attempt": 0,
                "retries": 0, "exit_code": null, "message": null,
                "submitted_at": "2026-12-03T10:00:00Z", "started_at": null,
                "finished_at": null, "schedule_id": "sched-1",
                "scheduled_at": "2026-12-03T10:00:00Z", "history": []
            });
            (201, app.to_string())
        });
        let c = client(&[&server.url], Duration::from_secs(5));
        let out = run_cmd(
            &c,
            Output::Table,
            &["trigger", "sched-1", "--allow-overlap"],
        )
        .unwrap();
        assert!(out.contains("app-20261203100000-0001"), "{out}");
        assert!(out.contains("Schedule:"), "{out}");
        let out = run_cmd(&c, Output::Table, &["trigger", "sched-q"]).unwrap();
        assert_eq!(
            out,
            "queued: the run of sched-q starts when the earlier runs end\n"
        );
        let err = run_cmd(&c, Output::Table, &["trigger", "sched-busy"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not run: an earlier run has not ended (HTTP 409 Conflict)"
        );
        let seen = server.seen();
        assert_eq!(seen[0].target, "/api/v1/schedules/sched-1/trigger");
        assert_eq!(seen[0].body, r#"{"overlap":"allow"}"#);
        assert_eq!(seen[1].body, "");
    }

    #[test]
    fn backfill_sends_the_range_and_list_pages() {
        let server = TestServer::start(|seen| {
            if seen.target.starts_with("/api/v1/schedules?") || seen.target == "/api/v1/schedules" {
                let next = (!seen.target.contains("after")).then_some("sched-2");
                let id = if next.is_some() { "sched-2" } else { "sched-1" };
                let page = json!({"schedules": [info_json(id)], "next": next});
                return (200, page.to_string());
            }
            (
                200,
                json!({"times": ["2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z"], "runs": []})
                    .to_string(),
            )
        });
        let c = client(&[&server.url], Duration::from_secs(5));
        let out = run_cmd(
            &c,
            Output::Table,
            &[
                "backfill",
                "sched-1",
                "--start",
                "2026-12-01T00:00:00Z",
                "--end",
                "2026-12-03T00:00:00Z",
                "--dry-run",
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            "2026-12-01T00:00:00Z\n2026-12-02T00:00:00Z\n2 nominal times; dry run: nothing was created\n"
        );
        let seen = server.seen();
        assert_eq!(seen[0].target, "/api/v1/schedules/sched-1/backfill");
        let sent: Value = serde_json::from_str(&seen[0].body).unwrap();
        assert_eq!(
            sent,
            json!({"start": "2026-12-01T00:00:00Z", "end": "2026-12-03T00:00:00Z", "dry_run": true})
        );

        let out = run_cmd(&c, Output::Json, &["list", "--all"]).unwrap();
        let all: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            all,
            json!({"schedules": [info_json("sched-2"), info_json("sched-1")], "next": null})
        );
        let targets: Vec<String> = server.seen().into_iter().map(|s| s.target).collect();
        assert_eq!(
            targets[1..],
            ["/api/v1/schedules", "/api/v1/schedules?after=sched-2"]
        );
    }
}
