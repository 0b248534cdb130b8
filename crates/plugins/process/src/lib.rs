//! # aloha-plugin-process
//!
//! The `process` Application plugin: runs a command on the worker, in its own process group.
//! Built as `libaloha_plugin_process.so` and loaded by the worker through `aloha-plugin`'s ABI.
//!
//! ## Spec
//! ```json
//! {
//!   "command": ["prog", "arg", "..."],
//!   "env": {"K": "V"},
//!   "cwd": "sub/dir",
//!   "kill_grace_ms": 5000
//! }
//! ```
//! - `command` (required): program and arguments, no shell involved. A program without a `/`
//!   is looked up in `PATH`; one with a `/` but relative is resolved against `cwd`.
//! - `env`: variables added to the worker's environment (replacing those of the same name).
//!   The command also gets `ALOHA_APP_ID`, `ALOHA_ATTEMPT` and, for a schedule's runs,
//!   `ALOHA_SCHEDULE_ID` and `ALOHA_SCHEDULED_AT` (RFC 3339, UTC); these win over `env`.
//! - `cwd`: the working directory, relative to the app directory (absolute allowed); it must
//!   exist when the app starts. Default: the app directory.
//! - `kill_grace_ms`: time between SIGTERM and SIGKILL on shutdown. Default: the worker's
//!   `kill_grace_ms` for this plugin (`[plugins.process]`), else 5000.
//!
//! Any other field is refused when the app is created, naming every unknown field.
//!
//! ## Behaviour
//! - Output is appended to `<app_dir>/stdout` and `<app_dir>/stderr`; stdin is `/dev/null`. The
//!   pid of the group's leader, which is also the process group id, goes to `<app_dir>/pid` and
//!   is reported as the detail `pid`.
//! - When the worker hands over a supervisor (`AppContext::supervisor`, its `aloha-supervise`),
//!   the group's leader is the supervisor and the command is its child; should the worker die,
//!   even by SIGKILL, the supervisor kills the whole group. It passes the command's exit code or
//!   death signal on as its own, so the reports below are the same with or without it.
//! - The leader leads its own process group and has `PR_SET_PDEATHSIG` (SIGUSR2 for the
//!   supervisor, SIGKILL for a command started directly), so it dies with the worker. That
//!   signal fires when the *thread* that forked the leader exits, so the leader is forked by a
//!   monitor thread of the plugin that lives until the leader has been reaped, never by the
//!   host's (possibly short-lived) calling thread.
//! - When the leader exits, whatever is left of its group gets SIGKILL, so no orphan of the app
//!   survives it (processes that moved to another group or session escape this). The exit is
//!   reported as FINISHED (code 0), FAILED (`exited with code N`, or `killed by signal N (SIGX)`
//!   with code 128+N), or KILLED (`killed: <reason>`) if a shutdown was asked for before it.
//! - `shutdown` sends SIGTERM to the group and returns; a background thread sends SIGKILL after
//!   the grace period if the leader is still there. Idempotent; a no-op before start or after exit.
//! - `clean` sends SIGKILL to the group if its leader still runs. It never deletes the app
//!   directory: the logs stay for the operator. Releasing an instance whose process still runs
//!   does the same, since nobody could learn of its exit any more.
//!
//! The process-group handling (monitor thread, signals, sweep, pid file) is
//! `aloha_plugin_support::group`, shared with the `spark` and `flink` plugins.

#![warn(missing_docs)]

pub mod spec;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use aloha_plugin::{AppContext, Application, ExitNotifier};
use aloha_plugin_support::output::open_log;
use aloha_plugin_support::{Launch, ProcessGroup};

use crate::spec::Spec;

/// The kind this plugin runs.
pub const KIND: &str = "process";

aloha_plugin::declare_application!(kind = KIND, app = ProcessApp);

/// One attempt of a `process` app.
pub struct ProcessApp {
    app_dir: PathBuf,
    spec: Spec,
    /// `ALOHA_APP_ID` and the others, from the description.
    aloha_env: Vec<(&'static str, String)>,
    /// The host's process supervisor, if it has one.
    supervisor: Option<PathBuf>,
    group: Arc<ProcessGroup>,
    started: bool,
}

impl Application for ProcessApp {
    fn create(ctx: AppContext) -> Result<Self, String> {
        let spec = spec::parse(ctx.spec(), &ctx.conf, &ctx.app_dir)?;
        Ok(ProcessApp {
            aloha_env: aloha_plugin_support::aloha_env(&ctx.description),
            app_dir: ctx.app_dir,
            spec,
            supervisor: ctx.supervisor,
            group: ProcessGroup::new(),
            started: false,
        })
    }

    fn start(&mut self, events: ExitNotifier) -> Result<(), String> {
        if self.started {
            return Err("the app was started already".into());
        }
        self.started = true;
        if !self.spec.cwd.is_dir() {
            return Err(format!(
                "working directory {} does not exist or is not a directory",
                self.spec.cwd.display()
            ));
        }
        // `spec::parse` guarantees a non-empty command, so the indexing cannot fail.
        let mut launch = Launch::new(
            &self.spec.command[0],
            self.supervisor.as_deref(),
            "process-monitor",
        );
        launch
            .command()
            .args(&self.spec.command[1..])
            .envs(&self.spec.env)
            .envs(self.aloha_env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.spec.cwd)
            .stdin(Stdio::null())
            .stdout(open_log(&self.app_dir, "stdout")?)
            .stderr(open_log(&self.app_dir, "stderr")?);
        let launch = launch.pid_file(self.app_dir.join("pid"));
        let details = events.clone();
        self.group
            .spawn(
                launch,
                move |pid| details.detail("pid", &pid.to_string()),
                move |exit| events.exit(exit.exit_state()),
            )
            .map(|_pid| ())
    }

    fn shutdown(&mut self, reason: Option<&str>) -> Result<(), String> {
        self.group.shutdown(reason, self.spec.kill_grace)
    }

    fn clean(&mut self) -> Result<(), String> {
        self.group.kill("cleaned up while running")
    }
}

impl Drop for ProcessApp {
    fn drop(&mut self) {
        let _ = self.group.kill("released while running");
    }
}
