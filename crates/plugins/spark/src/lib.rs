//! # aloha-plugin-spark
//!
//! The `spark` Application plugin: runs `spark-submit` on the worker, in its own process group,
//! and reports the Spark application id. Built as `libaloha_plugin_spark.so` and loaded by the
//! worker through `aloha-plugin`'s ABI.
//!
//! ## Spec
//! ```json
//! {
//!   "resource": "jobs/etl.py",
//!   "main_class": "com.example.Etl",
//!   "args": ["--day", "2024-01-01"],
//!   "master": "local[*]",
//!   "deploy_mode": "client",
//!   "conf": {"spark.executor.memory": "2g"},
//!   "name": "nightly etl",
//!   "spark_home": "/opt/spark",
//!   "env": {"PYSPARK_PYTHON": "/opt/venv/bin/python"},
//!   "kill_grace_ms": 5000
//! }
//! ```
//! - `resource` (required): the application, a `.py` file or a `.jar`; a relative path is
//!   resolved against the app directory, a URL (`hdfs://...`, `local:/...`, `file:/...`) is
//!   passed as is.
//! - `main_class`: `--class`, for a jar without a `Main-Class`. `args`: the application's own.
//! - `master`: `--master`; default the worker's `master` (`[plugins.spark] master = "..."`),
//!   else `local[*]`. `deploy_mode`: `"client"` or `"cluster"`.
//! - `conf`: `--conf key=value` pairs; values may be strings, numbers or booleans.
//! - `name`: `--name`; default the Aloha app's name.
//! - `spark_home` or `spark_submit` (not both): which `spark-submit` runs. Default: the worker's
//!   `spark_home` / `spark_submit` (`[plugins.spark]`), else `$SPARK_HOME/bin/spark-submit`,
//!   else `spark-submit` from `PATH`. With a `spark_home`, the process gets it as `SPARK_HOME`;
//!   with an explicit `spark_submit`, an inherited `SPARK_HOME` is removed so that the script
//!   finds its own.
//! - `env`: variables added to the worker's environment (e.g. `PYSPARK_PYTHON`, the Python with
//!   pyspark that runs a `.py` driver). `kill_grace_ms`: SIGTERM→SIGKILL delay on shutdown;
//!   default the worker's `kill_grace_ms`, else 5000.
//!
//! Any other field is refused when the app is created, naming every unknown field.
//!
//! ## Behaviour
//! - `spark-submit` runs in the app directory in its own process group (see
//!   `aloha_plugin_support::group`: forked by a long-lived monitor thread, `PR_SET_PDEATHSIG`,
//!   the group swept when the leader exits), under the worker's supervisor when it has one
//!   (which kills the group if the worker dies), else as the group's leader. Its output is
//!   appended to `<app_dir>/stdout` and `<app_dir>/stderr`; the leader's pid (the group id) goes
//!   to `<app_dir>/pid` and is reported as the detail `pid`.
//! - A watcher thread follows both files and reports the Spark application id as the detail
//!   `spark_app_id` as soon as it appears (YARN's `application_...`, standalone's `app-...`).
//!   In local mode Spark prints no id, so the watcher asks the driver's UI, whose address is in
//!   the log, for it (`GET /api/v1/applications` → `local-...`). A standalone cluster-mode
//!   driver id is reported as `spark_driver_id`.
//! - Exit 0 is FINISHED. Any other end is FAILED with the exit code (128+N for death by signal
//!   N) and, in the message, the last lines of stderr and stdout, Spark's routine INFO lines left
//!   out. After a shutdown it is KILLED (`killed: <reason>`).
//! - `shutdown` sends SIGTERM to the whole group (the JVM, the Python driver and its workers),
//!   then SIGKILL after the grace period. `clean` and releasing a running instance send SIGKILL.

#![warn(missing_docs)]

pub mod scan;
pub mod spec;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aloha_plugin::{AppContext, Application, ExitNotifier, ExitState};
use aloha_plugin_support::http::Client;
use aloha_plugin_support::output::{open_log, output_tail, Follower};
use aloha_plugin_support::{Launch, ProcessExit, ProcessGroup};

use crate::scan::UiAddress;
use crate::spec::Spec;

/// The kind this plugin runs.
pub const KIND: &str = "spark";

/// How often the watcher reads new output.
const POLL: Duration = Duration::from_millis(200);

/// How often, and how many times (half a minute in all), the watcher asks the driver's UI for
/// the application id.
const UI_RETRY: Duration = Duration::from_millis(500);
const UI_ATTEMPTS: u32 = 60;

/// Lines of stderr and of stdout quoted in a failure message.
const TAIL_STDERR: usize = 20;
const TAIL_STDOUT: usize = 10;

aloha_plugin::declare_application!(kind = KIND, app = SparkApp);

/// One attempt of a `spark` app.
pub struct SparkApp {
    app_dir: PathBuf,
    spec: Spec,
    /// The host's process supervisor, if it has one.
    supervisor: Option<PathBuf>,
    group: Arc<ProcessGroup>,
    started: bool,
}

impl Application for SparkApp {
    fn create(ctx: AppContext) -> Result<Self, String> {
        let name = ctx.description.get("name").and_then(|n| n.as_str());
        let spec = spec::parse(ctx.spec(), &ctx.conf, &ctx.app_dir, name, |k| {
            std::env::var_os(k)
        })?;
        Ok(SparkApp {
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
        let stdout = open_log(&self.app_dir, "stdout")?;
        let stderr = open_log(&self.app_dir, "stderr")?;
        // Follow from the current ends: the files may hold an earlier start's output.
        let watcher = Watcher {
            stdout: Follower::from_end(self.app_dir.join("stdout")),
            stderr: Follower::from_end(self.app_dir.join("stderr")),
            app_dir: self.app_dir.clone(),
            events: events.clone(),
            app_id: None,
            driver_id: None,
            ui: UiAddress::default(),
            ui_asked: 0,
            ui_last: None,
            http: Client::new(Duration::from_secs(2)),
        };

        let mut launch = Launch::new(
            &self.spec.spark_submit,
            self.supervisor.as_deref(),
            "spark-monitor",
        );
        let command = launch.command();
        command
            .args(self.spec.arguments())
            .current_dir(&self.app_dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (key, value) in self.spec.env_changes() {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        let launch = launch.pid_file(self.app_dir.join("pid"));

        // The watcher starts first and learns of the exit through this channel. If the process
        // does not start, the sender is dropped unused and the watcher ends without a report.
        let (exit_tx, exit_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("spark-watch".into())
            .spawn(move || watcher.run(exit_rx))
            .map_err(|e| format!("cannot start the output watcher thread: {e}"))?;
        self.group
            .spawn(
                launch,
                move |pid| events.detail("pid", &pid.to_string()),
                move |exit| {
                    // The watcher only ends after receiving this (or when the sender is gone).
                    let _ = exit_tx.send(exit);
                },
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

impl Drop for SparkApp {
    fn drop(&mut self) {
        let _ = self.group.kill("released while running");
    }
}

/// Follows `spark-submit`'s output for ids while it runs, and reports its end.
struct Watcher {
    stdout: Follower,
    stderr: Follower,
    app_dir: PathBuf,
    events: ExitNotifier,
    app_id: Option<String>,
    driver_id: Option<String>,
    ui: UiAddress,
    ui_asked: u32,
    ui_last: Option<Instant>,
    http: Client,
}

impl Watcher {
    fn run(mut self, exits: Receiver<ProcessExit>) {
        loop {
            match exits.recv_timeout(POLL) {
                Ok(exit) => {
                    // Whatever was written last may hold the id: read it before the exit.
                    self.scan(true);
                    let state = exit_state(&exit, &self.app_dir);
                    self.events.exit(state);
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.scan(false);
                    self.ask_ui();
                }
                // The process never started: start reports the error itself.
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn scan(&mut self, last: bool) {
        let mut lines = if last {
            self.stderr.finish()
        } else {
            self.stderr.read_lines()
        };
        lines.extend(if last {
            self.stdout.finish()
        } else {
            self.stdout.read_lines()
        });
        for line in &lines {
            if let Some(id) = scan::find_app_id(line) {
                self.report_app_id(id.to_owned());
            }
            if let Some(id) = scan::find_driver_id(line) {
                if self.driver_id.as_deref() != Some(id) {
                    self.events.detail("spark_driver_id", id);
                    self.driver_id = Some(id.to_owned());
                }
            }
            self.ui.learn(line);
        }
    }

    fn report_app_id(&mut self, id: String) {
        if self.app_id.as_deref() != Some(id.as_str()) {
            self.events.detail("spark_app_id", &id);
            self.app_id = Some(id);
        }
    }

    /// Asks the driver's UI for the application id, every half second, while the output has not
    /// given it and the UI's address is known.
    fn ask_ui(&mut self) {
        if self.app_id.is_some() || self.ui_asked >= UI_ATTEMPTS {
            return;
        }
        let Some(base) = self.ui.url() else {
            return;
        };
        if self.ui_last.is_some_and(|t| t.elapsed() < UI_RETRY) {
            return;
        }
        self.ui_last = Some(Instant::now());
        self.ui_asked += 1;
        if let Ok(response) = self.http.get(&format!("{base}/api/v1/applications")) {
            if let Some(id) = scan::app_id_from_ui(&response.body) {
                self.report_app_id(id);
            }
        }
    }
}

/// How the end of `spark-submit` is reported.
fn exit_state(exit: &ProcessExit, app_dir: &std::path::Path) -> ExitState {
    if exit.shutdown.is_some() {
        return exit.exit_state();
    }
    if exit.success() {
        return ExitState::finished(0, "spark-submit exited with code 0");
    }
    ExitState::failed(
        exit.code(),
        format!(
            "spark-submit {}{}",
            exit.describe(),
            output_tail(app_dir, TAIL_STDERR, TAIL_STDOUT)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloha_plugin::ExitKind;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    fn exit(raw: i32, shutdown: Option<Option<String>>) -> ProcessExit {
        ProcessExit {
            pid: 100,
            status: Ok(ExitStatus::from_raw(raw)),
            shutdown,
        }
    }

    #[test]
    fn exit_states_quote_the_output_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("stderr"),
            "26/11/21 16:36:51 INFO SparkContext: Running Spark version 4.0.1\n\
             Traceback (most recent call last):\nValueError: bad input\n\
             26/11/21 16:37:00 INFO ShutdownHookManager: Shutdown hook called\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("stdout"), "rows: 0\n").unwrap();

        let ok = exit_state(&exit(0, None), dir.path());
        assert_eq!(
            ok,
            ExitState::finished(0, "spark-submit exited with code 0")
        );

        let failed = exit_state(&exit(3 << 8, None), dir.path());
        assert_eq!((failed.kind, failed.code), (ExitKind::Failed, 3));
        assert_eq!(
            failed.message,
            "spark-submit exited with code 3\n--- last lines of stderr ---\n\
             Traceback (most recent call last):\nValueError: bad input\n\
             --- last lines of stdout ---\nrows: 0"
        );

        let crashed = exit_state(&exit(libc_sigsegv(), None), dir.path());
        assert_eq!(crashed.code, 139);
        assert!(crashed
            .message
            .starts_with("spark-submit killed by signal 11 (SIGSEGV)\n"));

        let killed = exit_state(&exit(15, Some(Some("by ops".into()))), dir.path());
        assert_eq!(killed, ExitState::killed(143, "killed: by ops"));
    }

    fn libc_sigsegv() -> i32 {
        11
    }
}
