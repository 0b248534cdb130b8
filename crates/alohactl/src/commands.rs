//! One function per subcommand: build the request, call the API, print the result.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::path::Path;

use aloha_core::api::{AppList, ClusterInfo, WorkerInfo, WorkerList};
use aloha_core::{App, SubmitRequest};
use chrono::Utc;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cli::{
    Cli, ClusterCommand, Command, ListArgs, NamespaceCommand, Output, SubmitArgs, TokenCommand,
    WorkersCommand,
};
use crate::client::{fresh_idempotency_key, segment, Client, Served};
use crate::error::CtlError;
use crate::io::{print, Io};
use crate::output;
use crate::wait::{self, SystemClock};

/// Runs the parsed command line.
pub fn run(cli: Cli, io: &mut Io<'_>) -> Result<(), CtlError> {
    let token = match (cli.token, &cli.token_file) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                CtlError::Usage(format!(
                    "cannot read the token file {}: {e}",
                    path.display()
                ))
            })?;
            Some(text.lines().next().unwrap_or("").trim().to_string())
        }
        (None, None) => None,
    }
    .filter(|t| !t.is_empty());
    let client = Client::new(
        cli.masters,
        cli.timeout,
        token.as_deref(),
        cli.ca_cert.as_deref(),
    )?;
    let format = cli.output;
    match cli.command {
        Command::Submit(args) => submit(&client, format, &args, io),
        Command::SubmitBatch(args) => crate::batch::run(&client, format, &args, io),
        Command::Status { id } => status(&client, format, &id, io),
        Command::List(args) => list(&client, format, &args, io),
        Command::Kill { id } => kill(&client, format, &id, io),
        Command::Retry { id } => retry(&client, format, &id, io),
        Command::Logs(args) => crate::logs::run(&client, &args, io),
        Command::Workers { action: None } => workers(&client, format, io),
        Command::Workers {
            action: Some(action),
        } => drain(&client, format, action, io),
        Command::Cluster { action: None } => cluster(&client, format, io),
        Command::Cluster {
            action: Some(ClusterCommand::AcceptRestore),
        } => accept_restore(&client, format, io),
        Command::Events(args) => crate::events::run(&client, format, &args, io),
        Command::Token(command) => tokens(&client, format, command, io),
        Command::Namespace(command) => namespaces(&client, format, command, io),
        Command::Schedule(command) => crate::schedules::run(&client, format, command, io),
    }
}

fn submit(
    client: &Client,
    format: Output,
    args: &SubmitArgs,
    io: &mut Io<'_>,
) -> Result<(), CtlError> {
    let spec_text = match &args.spec_file {
        Some(path) => Some((
            "--spec-file".to_string(),
            read_spec_file(path, &mut std::io::stdin())?,
        )),
        None => args.spec.clone().map(|s| ("--spec".to_string(), s)),
    };
    let request = submit_request(args, spec_text)?;
    if args.dry_run {
        return dry_run(client, format, &request, io);
    }
    // One key per invocation: the retries inside this submission share it, so they cannot make
    // a second app; a rerun of the command gets a new one unless the caller gives its own.
    let key = match &args.idempotency_key {
        Some(key) => key.clone(),
        None => fresh_idempotency_key()?,
    };
    // 201 for a new app, 200 for a repeat of this key: both answer with the app.
    let created: Served<App> = client.post_idempotent("/api/v1/apps", &request, &key)?;

    match (format, args.wait) {
        (Output::Json, false) => return print(io, &output::json(&created.raw)),
        (Output::Json, true) => {}
        (Output::Table, _) => print(io, &output::app_summary(&created.data))?,
    }
    if !args.wait {
        return Ok(());
    }
    if format == Output::Table {
        print(io, "\n")?;
    }
    let path = app_path(created.data.id.as_str());
    let lines: Option<&mut dyn Write> = match format {
        Output::Table => Some(&mut *io.out),
        Output::Json => None,
    };
    let end = wait::follow(
        created,
        || client.get(&path, &[]),
        &mut SystemClock,
        args.poll_interval,
        lines,
        &mut *io.err,
    )?;
    if format == Output::Json {
        print(io, &output::json(&end.raw))?;
    }
    wait::outcome(&end.data)
}

/// `submit --dry-run`: the app as it would be and where it would go; nothing is created, so no
/// idempotency key is needed and the request may be resent anywhere.
fn dry_run(
    client: &Client,
    format: Output,
    request: &SubmitRequest,
    io: &mut Io<'_>,
) -> Result<(), CtlError> {
    let query = [("dry_run", "true".to_string())];
    let answer: Served<output::DryRun> = client.post_read_only("/api/v1/apps", &query, request)?;
    print(
        io,
        &match format {
            Output::Table => output::dry_run(&answer.data),
            Output::Json => output::json(&answer.raw),
        },
    )
}

fn status(client: &Client, format: Output, id: &str, io: &mut Io<'_>) -> Result<(), CtlError> {
    let app: Served<App> = client.get(&app_path(id), &[])?;
    print(
        io,
        &match format {
            Output::Table => output::app_detail(&app.data),
            Output::Json => output::json(&app.raw),
        },
    )
}

fn list(client: &Client, format: Output, args: &ListArgs, io: &mut Io<'_>) -> Result<(), CtlError> {
    let apps = fetch_apps(client, args)?;
    match format {
        Output::Table => {
            print(io, &output::app_list(&apps.data.apps))?;
            if let Some(next) = &apps.data.next {
                // On stderr: the rows on stdout stay clean for a pipe.
                io.err
                    .write_all(output::more_apps(args, next.as_str()).as_bytes())?;
                io.err.flush()?;
            }
            Ok(())
        }
        Output::Json => print(io, &output::json(&apps.raw)),
    }
}

/// One page of apps, as served; with `--all`, every page from `--after` on, joined into one
/// list whose `next` is null.
fn fetch_apps(client: &Client, args: &ListArgs) -> Result<Served<AppList>, CtlError> {
    let mut query = Vec::new();
    if let Some(state) = args.state {
        query.push(("state", state.as_str().to_string()));
    }
    if let Some(namespace) = &args.namespace {
        query.push(("namespace", namespace.clone()));
    }
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    fetch_pages(
        client,
        "/api/v1/apps",
        &query,
        args.after.as_deref(),
        args.all,
    )
}

/// A page of a listing (`GET /api/v1/apps`, `GET /api/v1/schedules`): its items and the cursor
/// of the next page.
pub(crate) trait Page: DeserializeOwned {
    /// The key of the items in the JSON body.
    const ITEMS: &'static str;
    /// One item.
    type Item;
    /// The items and the next page's cursor.
    fn into_parts(self) -> (Vec<Self::Item>, Option<String>);
    /// The last page: these items, no cursor.
    fn last(items: Vec<Self::Item>) -> Self;
}

impl Page for AppList {
    const ITEMS: &'static str = "apps";
    type Item = App;
    fn into_parts(self) -> (Vec<App>, Option<String>) {
        (self.apps, self.next.map(|n| n.0))
    }
    fn last(apps: Vec<App>) -> AppList {
        AppList { apps, next: None }
    }
}

/// One page of `path` after `after`, as served; with `all`, every page from there on, joined
/// into one whose `next` is null (JSON: the items as the master sent them, fields this
/// alohactl does not know included).
pub(crate) fn fetch_pages<P: Page>(
    client: &Client,
    path: &str,
    query: &[(&str, String)],
    after: Option<&str>,
    all: bool,
) -> Result<Served<P>, CtlError> {
    let page_query = |after: Option<&str>| {
        let mut q = query.to_vec();
        q.extend(after.map(|a| ("after", a.to_string())));
        q
    };
    let first: Served<P> = client.get(path, &page_query(after))?;
    if !all {
        return Ok(first);
    }

    let mut raw_items = Vec::new();
    let mut items = Vec::new();
    // Cursors already followed: a master that hands one back twice would loop forever.
    let mut followed: HashSet<String> = after.iter().map(|a| a.to_string()).collect();
    let mut page = first;
    loop {
        // Present: the page decoded, so its items are an array.
        if let Some(served) = page.raw.get(P::ITEMS).and_then(Value::as_array) {
            raw_items.extend(served.iter().cloned());
        }
        let (mut these, next) = page.data.into_parts();
        items.append(&mut these);
        let Some(next) = next else {
            break;
        };
        if !followed.insert(next.clone()) {
            return Err(CtlError::Internal(format!(
                "the master gave the page cursor {} twice; stopped listing to avoid a loop",
                output::clean(&next)
            )));
        }
        page = client.get(path, &page_query(Some(&next)))?;
    }
    let mut raw = serde_json::Map::new();
    raw.insert(P::ITEMS.to_string(), Value::Array(raw_items));
    raw.insert("next".to_string(), Value::Null);
    Ok(Served {
        raw: Value::Object(raw),
        data: P::last(items),
    })
}

fn kill(client: &Client, format: Output, id: &str, io: &mut Io<'_>) -> Result<(), CtlError> {
    let app: Served<App> = client.post(&format!("{}/kill", app_path(id)), None::<&()>)?;
    print(
        io,
        &match format {
            Output::Table => format!(
                "kill requested for {}\n",
                output::clean(app.data.id.as_str())
            ),
            Output::Json => output::json(&app.raw),
        },
    )
}

/// `retry`: the new app, printed as `submit` prints the app it created. A POST without a key,
/// like a kill: not resent once it may have reached a master.
fn retry(client: &Client, format: Output, id: &str, io: &mut Io<'_>) -> Result<(), CtlError> {
    let app: Served<App> = client.post(&format!("{}/retry", app_path(id)), None::<&()>)?;
    print(
        io,
        &match format {
            Output::Table => output::app_summary(&app.data),
            Output::Json => output::json(&app.raw),
        },
    )
}

fn workers(client: &Client, format: Output, io: &mut Io<'_>) -> Result<(), CtlError> {
    let workers: Served<WorkerList> = client.get("/api/v1/workers", &[])?;
    print(
        io,
        &match format {
            Output::Table => output::worker_list(&workers.data.workers, Utc::now()),
            Output::Json => output::json(&workers.raw),
        },
    )
}

/// `workers drain|undrain`: a POST without a key, like a kill (repeating it is harmless, but
/// it is not resent once it may have reached a master).
fn drain(
    client: &Client,
    format: Output,
    action: WorkersCommand,
    io: &mut Io<'_>,
) -> Result<(), CtlError> {
    let worker: Served<WorkerInfo> = match &action {
        WorkersCommand::Drain { id, deadline } => {
            let body = serde_json::json!({ "deadline": deadline });
            let body = if deadline.is_some() {
                body
            } else {
                serde_json::json!({})
            };
            client.post(
                &format!("/api/v1/workers/{}/drain", segment(id)),
                Some(&body),
            )?
        }
        WorkersCommand::Undrain { id } => client.post(
            &format!("/api/v1/workers/{}/undrain", segment(id)),
            None::<&()>,
        )?,
    };
    let w = &worker.data;
    print(
        io,
        &match format {
            Output::Table => format!(
                "worker {} is {}{}\n",
                output::clean(w.id.as_str()),
                w.state,
                w.drain_deadline
                    .map(|d| format!(
                        "; what still runs at {} is stopped and relaunched elsewhere",
                        d.format("%Y-%m-%dT%H:%M:%SZ")
                    ))
                    .unwrap_or_default()
            ),
            Output::Json => output::json(&worker.raw),
        },
    )
}

fn cluster(client: &Client, format: Output, io: &mut Io<'_>) -> Result<(), CtlError> {
    let info: Served<ClusterInfo> = client.get("/api/v1/cluster", &[])?;
    print(
        io,
        &match format {
            Output::Table => output::cluster(&info.data),
            Output::Json => output::json(&info.raw),
        },
    )
}

fn tokens(
    client: &Client,
    format: Output,
    command: TokenCommand,
    io: &mut Io<'_>,
) -> Result<(), CtlError> {
    let (raw, text) = match command {
        TokenCommand::Create {
            name,
            role,
            namespaces,
        } => {
            let body = serde_json::json!({"name": name, "role": role, "namespaces": namespaces});
            let r: Served<Value> = client.post("/api/v1/tokens", Some(&body))?;
            let text = format!(
                "{}\n# {} ({}, {}): shown once; store it now\n",
                r.data["token"].as_str().unwrap_or_default(),
                output::clean(r.data["id"].as_str().unwrap_or_default()),
                output::clean(r.data["name"].as_str().unwrap_or_default()),
                r.data["role"].as_str().unwrap_or_default(),
            );
            (r.raw, text)
        }
        TokenCommand::List => {
            let r: Served<Value> = client.get("/api/v1/tokens", &[])?;
            let rows: Vec<Vec<String>> = r.data["tokens"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|t| {
                    let mut row: Vec<String> = ["id", "name", "role"]
                        .iter()
                        .map(|k| output::clean(t[*k].as_str().unwrap_or_default()))
                        .collect();
                    let scope: Vec<&str> = t["namespaces"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or_default()
                        .iter()
                        .filter_map(Value::as_str)
                        .collect();
                    row.push(if scope.is_empty() {
                        "*".to_string()
                    } else {
                        output::clean(&scope.join(","))
                    });
                    row.push(output::clean(t["created_at"].as_str().unwrap_or_default()));
                    row
                })
                .collect();
            let text = output::grid(&["ID", "NAME", "ROLE", "NAMESPACES", "CREATED"], rows);
            (r.raw, text)
        }
        TokenCommand::Revoke { id } => {
            let r: Served<Value> =
                client.delete(&format!("/api/v1/tokens/{}", crate::client::segment(&id)))?;
            (r.raw, format!("revoked {}\n", output::clean(&id)))
        }
    };
    print(
        io,
        &match format {
            Output::Table => text,
            Output::Json => output::json(&raw),
        },
    )
}

fn namespaces(
    client: &Client,
    format: Output,
    command: NamespaceCommand,
    io: &mut Io<'_>,
) -> Result<(), CtlError> {
    let path = |name: &str| format!("/api/v1/namespaces/{}", crate::client::segment(name));
    let (raw, text) = match command {
        NamespaceCommand::List => {
            let r: Served<Value> = client.get("/api/v1/namespaces", &[])?;
            let list = r.data["namespaces"].as_array().cloned().unwrap_or_default();
            (r.raw, output::namespace_list(&list))
        }
        NamespaceCommand::Show { name } => {
            let r: Served<Value> = client.get(&path(&name), &[])?;
            let text = output::namespace_list(std::slice::from_ref(&r.data));
            (r.raw, text)
        }
        NamespaceCommand::Set(a) => {
            let mut quota = serde_json::Map::new();
            for (k, v) in [
                ("max_cores", a.max_cores),
                ("max_memory_mb", a.max_memory_mb),
                ("max_running_apps", a.max_running_apps),
                ("max_queued_apps", a.max_queued_apps),
                ("max_schedules", a.max_schedules),
            ] {
                if let Some(v) = v {
                    quota.insert(k.into(), v.into());
                }
            }
            let body = serde_json::json!({"quota": quota, "weight": a.weight});
            let r: Served<Value> = client.put(&path(&a.name), &body)?;
            let text = output::namespace_list(std::slice::from_ref(&r.data));
            (r.raw, text)
        }
        NamespaceCommand::Delete { name } => {
            let r: Served<Value> = client.delete(&path(&name))?;
            (
                r.raw,
                format!("deleted namespace {}\n", output::clean(&name)),
            )
        }
    };
    print(
        io,
        &match format {
            Output::Table => text,
            Output::Json => output::json(&raw),
        },
    )
}

fn accept_restore(client: &Client, format: Output, io: &mut Io<'_>) -> Result<(), CtlError> {
    let r: Served<Value> = client.post::<(), _>("/api/v1/cluster/accept-restore", None)?;
    print(
        io,
        &match format {
            Output::Table => format!(
                "restore accepted: epoch generation {}; the masters campaign again\n",
                r.data["generation"]
            ),
            Output::Json => output::json(&r.raw),
        },
    )
}

fn app_path(id: &str) -> String {
    format!("/api/v1/apps/{}", segment(id))
}

/// Reads `--spec-file`; `-` is `stdin`.
pub(crate) fn read_spec_file(path: &Path, stdin: &mut dyn Read) -> Result<String, CtlError> {
    read_input("--spec-file", path, stdin)
}

/// Reads the file named by `flag`; `-` is `stdin`.
pub(crate) fn read_input(
    flag: &str,
    path: &Path,
    stdin: &mut dyn Read,
) -> Result<String, CtlError> {
    let mut text = String::new();
    let read = if path == Path::new("-") {
        stdin.read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    read.map_err(|e| CtlError::Usage(format!("cannot read {flag} {}: {e}", path.display())))?;
    Ok(text)
}

/// The submission for `args`. `spec_text` is the spec's source (flag name) and text, when one
/// was given. Fields left out on the command line are left to the master's defaults.
pub fn submit_request(
    args: &SubmitArgs,
    spec_text: Option<(String, String)>,
) -> Result<SubmitRequest, CtlError> {
    let spec = build_spec(&args.kind, spec_text, &args.command)?;
    let labels = build_labels(&args.labels)?;
    // Start from the master's own defaults (applied by deserialization) for omitted fields.
    let mut request: SubmitRequest = serde_json::from_value(serde_json::json!({
        "name": args.name,
        "kind": args.kind,
    }))
    .map_err(|e| CtlError::Internal(format!("cannot build the submission: {e}")))?;
    request.spec = spec;
    request.labels = labels;
    if let Some(cores) = args.cores {
        request.cores = i64::from(cores);
    }
    if let Some(memory_mb) = args.memory_mb {
        request.memory_mb = i64::try_from(memory_mb)
            .map_err(|_| CtlError::Usage(format!("--memory-mb {memory_mb} is too large")))?;
    }
    if let Some(max_retries) = args.max_retries {
        request.max_retries = i64::from(max_retries);
    }
    if args.max_runtime.is_some() {
        request.max_runtime = args.max_runtime;
    }
    if let Some(restart) = args.restart {
        request.restart = restart.into();
    }
    if let Some(d) = args.retry_backoff {
        request.retry_backoff = d;
    }
    if let Some(d) = args.max_backoff {
        request.max_backoff = d;
    }
    request.on_demand = args.on_demand;
    if let Some(ns) = &args.namespace {
        request.namespace = ns.clone();
    }
    Ok(request)
}

/// The plugin spec: from the command after `--` (process kind only), from `--spec` /
/// `--spec-file` text (must be a JSON object), or empty.
pub fn build_spec(
    kind: &str,
    spec_text: Option<(String, String)>,
    command: &[String],
) -> Result<Value, CtlError> {
    if !command.is_empty() {
        if kind != "process" {
            return Err(CtlError::Usage(format!(
                "a command after `--` makes a process spec and cannot be used with --kind {kind}; \
                 give the spec with --spec or --spec-file"
            )));
        }
        if spec_text.is_some() {
            return Err(CtlError::Usage(
                "give either a command after `--` or a spec, not both".into(),
            ));
        }
        return Ok(serde_json::json!({ "command": command }));
    }
    let Some((source, text)) = spec_text else {
        return Ok(Value::Object(Default::default()));
    };
    let spec: Value = serde_json::from_str(&text)
        .map_err(|e| CtlError::Usage(format!("{source} is not valid JSON: {e}")))?;
    if !spec.is_object() {
        return Err(CtlError::Usage(format!(
            "{source} must be a JSON object, like {{\"command\": [\"echo\", \"hi\"]}}"
        )));
    }
    Ok(spec)
}

/// Labels as a map; a key given twice is a mistake worth reporting.
pub fn build_labels(pairs: &[(String, String)]) -> Result<BTreeMap<String, String>, CtlError> {
    let mut labels = BTreeMap::new();
    for (k, v) in pairs {
        if labels.insert(k.clone(), v.clone()).is_some() {
            return Err(CtlError::Usage(format!(
                "label {k:?} is given more than once"
            )));
        }
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn submit_args(args: &[&str]) -> SubmitArgs {
        let cli = Cli::try_parse_from(
            ["alohactl", "submit", "--name", "job"]
                .into_iter()
                .chain(args.iter().copied()),
        )
        .unwrap();
        match cli.command {
            Command::Submit(s) => s,
            other => panic!("{other:?}"),
        }
    }

    fn request(args: &[&str]) -> Result<SubmitRequest, CtlError> {
        let a = submit_args(args);
        let text = a.spec.clone().map(|s| ("--spec".to_string(), s));
        submit_request(&a, text)
    }

    #[test]
    fn trailing_args_become_a_process_spec() {
        let r = request(&["--", "sh", "-c", "exit 3"]).unwrap();
        assert_eq!(r.kind, "process");
        assert_eq!(
            r.spec,
            serde_json::json!({"command": ["sh", "-c", "exit 3"]})
        );
    }

    #[test]
    fn omitted_numbers_take_the_masters_defaults() {
        let r = request(&[]).unwrap();
        assert_eq!((r.cores, r.memory_mb, r.max_retries), (1, 256, 0));
        assert_eq!(r.spec, serde_json::json!({}));
        assert!(r.labels.is_empty());
        let r = request(&["--cores", "4", "--memory-mb", "1024", "--max-retries", "3"]).unwrap();
        assert_eq!((r.cores, r.memory_mb, r.max_retries), (4, 1024, 3));
    }

    #[test]
    fn the_body_matches_the_api() {
        let r = request(&["--label", "team=data", "--", "true"]).unwrap();
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({
                "name": "job", "kind": "process", "spec": {"command": ["true"]},
                "cores": 1, "memory_mb": 256, "max_retries": 0, "labels": {"team": "data"}
            })
        );
    }

    #[test]
    fn task_model_flags_go_into_the_body() {
        let r = request(&[
            "--max-runtime",
            "90s",
            "--restart",
            "on_failure",
            "--retry-backoff",
            "100ms",
            "--max-backoff",
            "1m",
            "--on-demand",
            "--",
            "true",
        ])
        .unwrap();
        let body = serde_json::to_value(&r).unwrap();
        assert_eq!(body["max_runtime"], "1m 30s");
        assert_eq!(body["restart"], "on_failure");
        assert_eq!(body["retry_backoff"], "100ms");
        assert_eq!(body["max_backoff"], "1m");
        assert_eq!(body["on_demand"], true);
        // Left out, they are left out of the body too: the master's defaults apply.
        let plain = serde_json::to_value(request(&[]).unwrap()).unwrap();
        for field in [
            "max_runtime",
            "restart",
            "retry_backoff",
            "max_backoff",
            "on_demand",
        ] {
            assert!(plain.get(field).is_none(), "{field}: {plain}");
        }
    }

    #[test]
    fn spec_json_is_checked() {
        let r = request(&["--kind", "spark", "--spec", r#"{"class": "Main"}"#]).unwrap();
        assert_eq!(r.spec, serde_json::json!({"class": "Main"}));
        let err = request(&["--spec", "[1]"]).unwrap_err();
        assert!(
            err.to_string().starts_with("--spec must be a JSON object"),
            "{err}"
        );
        let err = request(&["--spec", "{nope"]).unwrap_err();
        assert!(
            err.to_string().starts_with("--spec is not valid JSON"),
            "{err}"
        );
        assert_eq!(err.exit_code(), std::process::ExitCode::from(2));
    }

    #[test]
    fn a_command_needs_the_process_kind() {
        let err = request(&["--kind", "spark", "--", "run"]).unwrap_err();
        assert!(matches!(err, CtlError::Usage(_)));
        assert!(err.to_string().contains("--kind spark"), "{err}");
        let err = build_spec(
            "process",
            Some(("--spec".into(), "{}".into())),
            &["x".into()],
        );
        assert!(matches!(err, Err(CtlError::Usage(_))));
    }

    #[test]
    fn labels_must_be_unique() {
        let r = request(&["--label", "a=1", "--label", "b="]).unwrap();
        assert_eq!(r.labels.get("a").map(String::as_str), Some("1"));
        assert_eq!(r.labels.get("b").map(String::as_str), Some(""));
        let err = request(&["--label", "a=1", "--label", "a=2"]).unwrap_err();
        assert_eq!(err.to_string(), "label \"a\" is given more than once");
    }

    #[test]
    fn spec_files_and_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.json");
        std::fs::write(&path, r#"{"command": ["date"]}"#).unwrap();
        let text = read_spec_file(&path, &mut std::io::empty()).unwrap();
        let a = submit_args(&["--spec-file", path.to_str().unwrap()]);
        let r = submit_request(&a, Some(("--spec-file".into(), text))).unwrap();
        assert_eq!(r.spec, serde_json::json!({"command": ["date"]}));

        let mut stdin: &[u8] = br#"{"x": 1}"#;
        assert_eq!(
            read_spec_file(Path::new("-"), &mut stdin).unwrap(),
            r#"{"x": 1}"#
        );

        let err =
            read_spec_file(&dir.path().join("missing.json"), &mut std::io::empty()).unwrap_err();
        assert!(
            err.to_string().starts_with("cannot read --spec-file "),
            "{err}"
        );
    }

    /// An app as the master serves it.
    fn app_json() -> String {
        app_value("app-20240102030400-0001").to_string()
    }

    /// The app `id`, as the master serves it.
    fn app_value(id: &str) -> Value {
        serde_json::json!({
            "id": id, "seq": 1, "name": "job", "kind": "process",
            "spec": {}, "cores": 1, "memory_mb": 256, "max_retries": 0, "labels": {},
            "state": "SUBMITTED", "worker_id": null, "attempt": 0, "retries": 0,
            "exit_code": null, "message": null, "submitted_at": "2024-01-02T03:04:00Z",
            "started_at": null, "finished_at": null,
            "history": [{"state": "SUBMITTED", "at": "2024-01-02T03:04:00Z"}]
        })
    }

    /// Runs `alohactl submit --name job <args>` against `client`; returns stdout.
    fn run_submit(client: &Client, args: &[&str]) -> Result<String, CtlError> {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        submit(
            client,
            Output::Json,
            &submit_args(args),
            &mut Io {
                out: &mut out,
                err: &mut err,
            },
        )?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn each_submit_sends_its_own_idempotency_key_unless_given_one() {
        use crate::client::tests::{client, TestServer};
        use std::time::Duration;

        // 201 for the first, 200 (a recognised repeat) afterwards: both are success.
        let count = std::sync::atomic::AtomicUsize::new(0);
        let server = TestServer::start(move |_| {
            let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (if n == 0 { 201 } else { 200 }, app_json())
        });
        let c = client(&[&server.url], Duration::from_secs(5));
        for _ in 0..2 {
            let printed = run_submit(&c, &["--", "true"]).unwrap();
            assert!(printed.contains("app-20240102030400-0001"), "{printed}");
        }
        run_submit(&c, &["--idempotency-key", "nightly-1", "--", "true"]).unwrap();

        let keys: Vec<String> = server
            .seen()
            .iter()
            .map(|s| s.header("idempotency-key").unwrap_or_default().to_string())
            .collect();
        assert_eq!(keys.len(), 3);
        for k in &keys[..2] {
            assert_eq!(k.len(), 32, "{k}");
            assert!(k.bytes().all(|b| b.is_ascii_hexdigit()), "{k}");
        }
        assert_ne!(keys[0], keys[1], "every invocation needs a fresh key");
        assert_eq!(keys[2], "nightly-1");
    }

    #[test]
    fn a_dry_run_asks_for_one_without_a_key_and_prints_the_placement() {
        use crate::client::tests::{client, TestServer};
        use std::time::Duration;

        let server = TestServer::start(|_| {
            let mut answer = app_value("app-20240102030400-0001");
            answer["dry_run"] = Value::Bool(true);
            answer["placement"] = serde_json::json!({"waiting": "no worker has 8 free cores"});
            (200, answer.to_string())
        });
        let c = client(&[&server.url], Duration::from_secs(5));
        let args = submit_args(&["--dry-run", "--", "true"]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut io = Io {
            out: &mut out,
            err: &mut err,
        };
        submit(&c, Output::Table, &args, &mut io).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("placement: waiting (no worker has 8 free cores)\n"),
            "{text}"
        );
        let printed = run_submit(&c, &["--dry-run", "--", "true"]).unwrap();
        let printed: Value = serde_json::from_str(&printed).unwrap();
        assert_eq!(printed["dry_run"], true, "JSON is printed as served");

        let seen = server.seen();
        assert_eq!(seen.len(), 2);
        for s in &seen {
            assert_eq!(
                (s.method.as_str(), s.target.as_str()),
                ("POST", "/api/v1/apps?dry_run=true")
            );
            assert_eq!(s.header("idempotency-key"), None, "a dry run needs no key");
        }
    }

    #[test]
    fn retry_posts_to_the_app_and_prints_the_new_one() {
        use crate::client::tests::{client, TestServer};
        use std::time::Duration;

        let server = TestServer::start(|seen| {
            if seen.target.contains("app-busy") {
                let body =
                    r#"{"error":"app app-busy is RUNNING: only an ended app can be retried"}"#;
                return (409, body.to_string());
            }
            let mut app = app_value("app-20240102030400-0002");
            app["retry_of"] = "app-20240102030400-0001".into();
            (201, app.to_string())
        });
        let c = client(&[&server.url], Duration::from_secs(5));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut io = Io {
            out: &mut out,
            err: &mut err,
        };
        retry(&c, Output::Table, "app-20240102030400-0001", &mut io).unwrap();
        let e = retry(&c, Output::Table, "app-busy", &mut io).unwrap_err();
        assert_eq!(
            e.to_string(),
            "app app-busy is RUNNING: only an ended app can be retried (HTTP 409 Conflict)"
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("Id:"), "{text}");
        assert!(
            text.contains("app-20240102030400-0002")
                && text.contains("Retry of:     app-20240102030400-0001"),
            "{text}"
        );
        let seen = server.seen();
        assert_eq!(
            (seen[0].method.as_str(), seen[0].target.as_str()),
            ("POST", "/api/v1/apps/app-20240102030400-0001/retry")
        );
        assert_eq!(seen[0].body, "");
    }

    #[test]
    fn app_ids_are_one_path_segment() {
        assert_eq!(
            app_path("app-20240102030405-0007"),
            "/api/v1/apps/app-20240102030405-0007"
        );
        assert_eq!(app_path("../workers"), "/api/v1/apps/..%2Fworkers");
    }

    fn list_args(args: &[&str]) -> ListArgs {
        let cli = Cli::try_parse_from(["alohactl", "list"].into_iter().chain(args.iter().copied()))
            .unwrap();
        match cli.command {
            Command::List(l) => l,
            other => panic!("{other:?}"),
        }
    }

    /// Runs `alohactl list <args>`; returns stdout and stderr.
    fn run_list(
        client: &Client,
        format: Output,
        args: &[&str],
    ) -> Result<(String, String), CtlError> {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        list(
            client,
            format,
            &list_args(args),
            &mut Io {
                out: &mut out,
                err: &mut err,
            },
        )?;
        Ok((
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        ))
    }

    /// A master holding apps `a5` (newest) to `a1`, serving pages of `limit` (default 2) after
    /// the `after` cursor, as `GET /api/v1/apps` does.
    fn paging_master() -> crate::client::tests::TestServer {
        crate::client::tests::TestServer::start(|seen| {
            let ids = ["a5", "a4", "a3", "a2", "a1"];
            let url = reqwest::Url::parse(&format!("http://x{}", seen.target)).unwrap();
            let param = |name: &str| {
                url.query_pairs()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.into_owned())
            };
            let limit: usize = param("limit").map_or(2, |l| l.parse().unwrap());
            let start =
                param("after").map_or(0, |a| ids.iter().position(|id| *id == a).unwrap() + 1);
            let page = &ids[start..(start + limit).min(ids.len())];
            let next = (start + limit < ids.len()).then(|| page[page.len() - 1]);
            let apps: Vec<Value> = page.iter().map(|id| app_value(id)).collect();
            (
                200,
                serde_json::json!({"apps": apps, "next": next}).to_string(),
            )
        })
    }

    fn targets(server: &crate::client::tests::TestServer) -> Vec<String> {
        server.seen().into_iter().map(|s| s.target).collect()
    }

    #[test]
    fn a_page_with_more_names_the_next_command_on_stderr() {
        use std::time::Duration;
        let server = paging_master();
        let c = crate::client::tests::client(&[&server.url], Duration::from_secs(5));

        let (out, err) = run_list(&c, Output::Table, &["--state", "submitted"]).unwrap();
        assert!(
            out.contains("a5") && out.contains("a4") && !out.contains("a3"),
            "{out}"
        );
        assert!(
            !out.contains("more"),
            "the hint is not part of the table: {out}"
        );
        assert_eq!(err, "more: alohactl list --state SUBMITTED --after a4\n");

        // The hint's command gives the next page; the last page has no hint.
        let (out, err) = run_list(&c, Output::Table, &["--after", "a2"]).unwrap();
        assert!(out.contains("a1") && !out.contains("a2"), "{out}");
        assert_eq!(err, "");
        assert_eq!(
            targets(&server),
            ["/api/v1/apps?state=SUBMITTED", "/api/v1/apps?after=a2"]
        );
    }

    #[test]
    fn json_pages_are_printed_as_served() {
        use std::time::Duration;
        let server = paging_master();
        let c = crate::client::tests::client(&[&server.url], Duration::from_secs(5));
        let (out, err) = run_list(&c, Output::Json, &["--limit", "3", "--after", "a5"]).unwrap();
        let got: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            got,
            serde_json::json!({"apps": [app_value("a4"), app_value("a3"), app_value("a2")], "next": "a2"})
        );
        assert_eq!(err, "", "JSON carries `next` itself");
        assert_eq!(targets(&server), ["/api/v1/apps?limit=3&after=a5"]);
    }

    #[test]
    fn all_follows_next_to_the_last_page() {
        use std::time::Duration;
        let server = paging_master();
        let c = crate::client::tests::client(&[&server.url], Duration::from_secs(5));

        let (out, err) = run_list(&c, Output::Json, &["--all"]).unwrap();
        let got: Value = serde_json::from_str(&out).unwrap();
        let all: Vec<Value> = ["a5", "a4", "a3", "a2", "a1"]
            .iter()
            .map(|id| app_value(id))
            .collect();
        assert_eq!(got, serde_json::json!({"apps": all, "next": null}));
        assert_eq!(err, "");
        assert_eq!(
            targets(&server),
            [
                "/api/v1/apps",
                "/api/v1/apps?after=a4",
                "/api/v1/apps?after=a2"
            ]
        );

        // From a cursor, in a table, with the page size given: one table, no hint.
        let (out, err) = run_list(
            &c,
            Output::Table,
            &["--all", "--after", "a4", "--limit", "1"],
        )
        .unwrap();
        let rows: Vec<&str> = out
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(rows, ["a3", "a2", "a1"], "{out}");
        assert_eq!(err, "");
        assert_eq!(
            targets(&server)[3..],
            [
                "/api/v1/apps?limit=1&after=a4",
                "/api/v1/apps?limit=1&after=a3",
                "/api/v1/apps?limit=1&after=a2"
            ]
        );
    }

    #[test]
    fn all_stops_when_a_master_repeats_a_cursor() {
        use std::time::Duration;
        let server = crate::client::tests::TestServer::start(|_| {
            let apps = [app_value("a2")];
            (
                200,
                serde_json::json!({"apps": apps, "next": "a2"}).to_string(),
            )
        });
        let c = crate::client::tests::client(&[&server.url], Duration::from_secs(5));
        let err = run_list(&c, Output::Json, &["--all"]).unwrap_err();
        assert!(err.to_string().contains("cursor a2 twice"), "{err}");
        assert_eq!(
            targets(&server),
            ["/api/v1/apps", "/api/v1/apps?after=a2"],
            "the first page, then a2 once"
        );
        // Also when the repeated cursor is the one the listing started from.
        let err = run_list(&c, Output::Json, &["--all", "--after", "a2"]).unwrap_err();
        assert!(err.to_string().contains("cursor a2 twice"), "{err}");
        assert_eq!(targets(&server).len(), 3);
    }
}
