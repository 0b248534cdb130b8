//! # aloha-plugin-flink
//!
//! The `flink` Application plugin: submits a job to a Flink session cluster with the Flink CLI,
//! learns its JobID, and follows it through the JobManager's REST API until it ends. Built as
//! `libaloha_plugin_flink.so` and loaded by the worker through `aloha-plugin`'s ABI.
//!
//! ## Spec
//! ```json
//! {
//!   "jar": "jobs/wordcount.jar",
//!   "entry_class": "org.example.WordCount",
//!   "args": ["--input", "/data/in"],
//!   "parallelism": 2,
//!   "jobmanager": "127.0.0.1:8081",
//!   "flink_home": "/opt/flink",
//!   "detached": true,
//!   "env": {"PYFLINK_CLIENT_EXECUTABLE": "/opt/venv/bin/python"},
//!   "kill_grace_ms": 5000,
//!   "poll_interval_ms": 1000
//! }
//! ```
//! - `jar` or `python` (exactly one): the job, relative to the app directory (absolute allowed).
//!   A Python job needs a Python with pyflink for the CLI (`PYFLINK_CLIENT_EXECUTABLE`).
//! - `entry_class` (`-c`, jar jobs only), `args` (the job's own), `parallelism` (`-p`).
//! - `jobmanager`: the REST address of the session cluster, `host:port` or `http://host:port`;
//!   default the worker's `jobmanager` (`[plugins.flink]`); required one way or the other.
//! - `flink_home` or `flink` (not both): which CLI runs. Default: the worker's `flink_home` /
//!   `flink`, else `$FLINK_HOME/bin/flink`, else `flink` from `PATH`.
//! - `detached` (default true): `flink run -d`, the CLI returns once the job is submitted.
//! - `env`: variables added to the worker's environment (the CLI's log goes to the app
//!   directory unless it sets `FLINK_LOG_DIR`).
//! - `kill_grace_ms`: SIGTERM→SIGKILL delay for the CLI, and the longest wait for a cancelled job
//!   to reach CANCELED; default the worker's `kill_grace_ms`, else 5000. `poll_interval_ms`: how
//!   often the JobManager is asked; default the worker's `poll_interval_ms`, else 1000.
//!
//! Any other field is refused when the app is created, naming every unknown field.
//!
//! ## Behaviour
//! - `flink run -m <jobmanager> [-d] [-p N] [-c class] (jar | -py file) args...` runs in the app
//!   directory in its own process group (see `aloha_plugin_support::group`; under the worker's
//!   supervisor when it has one, else as the group's leader), its output appended to
//!   `<app_dir>/stdout` and `<app_dir>/stderr`, the leader's pid (the group id) in
//!   `<app_dir>/pid` (and the detail `pid`).
//! - A follower thread reads the CLI's output for `Job has been submitted with JobID <id>` and
//!   reports it as the detail `flink_job_id`. If the CLI ends without one, the app FAILED with
//!   the CLI's exit code and the last lines of its output.
//! - From then on the JobManager is the truth: `GET /jobs/<id>` every poll interval, its state
//!   reported as the detail `flink_job_state`. FINISHED → FINISHED (code 0); FAILED → FAILED
//!   (code 1, with the root exception's first line); CANCELED → FAILED, unless the app was shut
//!   down. A JobManager that forgets the job, or stays unreachable for a minute, fails the app.
//! - `shutdown` stops the CLI's process group (SIGTERM, SIGKILL after the grace period) and
//!   cancels the job (`PATCH /jobs/<id>?mode=cancel`); once the job is CANCELED the app is KILLED
//!   (code 143, `killed: <reason> (Flink job <id> ended CANCELED)`). If it is still not
//!   terminal after the grace period, the app is reported KILLED anyway, saying so. A shutdown
//!   while the CLI is still submitting kills the CLI; if it printed a JobID by then, that job is
//!   cancelled too (a job submitted in the instant before the kill without a JobID printed
//!   cannot be known, and is not cancelled).
//! - `clean` and releasing a running instance kill the CLI's group; a release also asks once for
//!   a job that has not ended to be cancelled.

#![warn(missing_docs)]

pub mod job;
pub mod rest;
pub mod spec;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aloha_plugin::{AppContext, Application, ExitNotifier, ExitState};
use aloha_plugin_support::group::killed_message;
use aloha_plugin_support::output::{open_log, output_tail, Follower};
use aloha_plugin_support::{Launch, ProcessExit, ProcessGroup};

use crate::job::{JobState, FAILED_CODE, KILLED_CODE};
use crate::rest::{JobManager, JobStatus};
use crate::spec::Spec;

/// The kind this plugin runs.
pub const KIND: &str = "flink";

/// How often the CLI's output is read while waiting for the JobID, and the JobManager asked
/// while a cancel is under way.
const FAST_POLL: Duration = Duration::from_millis(200);

/// The longest the JobManager may stay unreachable before the app is failed.
const UNREACHABLE_LIMIT: Duration = Duration::from_secs(60);

/// How many answers in a row "no such job" fail the app.
const UNKNOWN_LIMIT: u32 = 5;

/// Timeout of one REST call.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a CLI still running when the job ended may take to exit before it is killed.
const CLIENT_EXIT_WAIT: Duration = Duration::from_secs(2);

/// Lines of stderr and of stdout quoted in a failure message.
const TAIL_STDERR: usize = 20;
const TAIL_STDOUT: usize = 10;

aloha_plugin::declare_application!(kind = KIND, app = FlinkApp);

/// One attempt of a `flink` app.
pub struct FlinkApp {
    app_dir: PathBuf,
    spec: Spec,
    /// The host's process supervisor, if it has one.
    supervisor: Option<PathBuf>,
    group: Arc<ProcessGroup>,
    started: bool,
    /// The follower's inbox, once the CLI runs.
    control: Option<Sender<Control>>,
}

/// What the follower thread is told.
enum Control {
    /// The CLI's process exited.
    ClientExited(ProcessExit),
    /// The app is to stop, for this reason.
    Shutdown(Option<String>),
    /// The instance is gone: cancel a running job and stop.
    Release,
}

impl Application for FlinkApp {
    fn create(ctx: AppContext) -> Result<Self, String> {
        let spec = spec::parse(ctx.spec(), &ctx.conf, &ctx.app_dir, |k| std::env::var_os(k))?;
        Ok(FlinkApp {
            app_dir: ctx.app_dir,
            spec,
            supervisor: ctx.supervisor,
            group: ProcessGroup::new(),
            started: false,
            control: None,
        })
    }

    fn start(&mut self, events: ExitNotifier) -> Result<(), String> {
        if self.started {
            return Err("the app was started already".into());
        }
        self.started = true;
        let stdout = open_log(&self.app_dir, "stdout")?;
        let stderr = open_log(&self.app_dir, "stderr")?;
        let (control_tx, control_rx) = mpsc::channel();
        let follower = JobFollower {
            stdout: Follower::from_end(self.app_dir.join("stdout")),
            stderr: Follower::from_end(self.app_dir.join("stderr")),
            app_dir: self.app_dir.clone(),
            jobmanager: JobManager::new(&self.spec.rest_url(), HTTP_TIMEOUT),
            poll_interval: self.spec.poll_interval,
            grace: self.spec.kill_grace,
            group: Arc::clone(&self.group),
            events: events.clone(),
            control: control_rx,
            shutdown: None,
        };

        let mut launch = Launch::new(
            &self.spec.flink,
            self.supervisor.as_deref(),
            "flink-monitor",
        );
        let command = launch.command();
        command
            .args(self.spec.arguments())
            .current_dir(&self.app_dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        if !self.spec.env.contains_key("FLINK_LOG_DIR") {
            // The CLI's own log file goes with the app's other logs.
            command.env("FLINK_LOG_DIR", &self.app_dir);
        }
        command.envs(&self.spec.env);
        let launch = launch.pid_file(self.app_dir.join("pid"));

        std::thread::Builder::new()
            .name("flink-follow".into())
            .spawn(move || follower.run())
            .map_err(|e| format!("cannot start the job follower thread: {e}"))?;
        let exits = control_tx.clone();
        self.group.spawn(
            launch,
            move |pid| events.detail("pid", &pid.to_string()),
            move |exit| {
                let _ = exits.send(Control::ClientExited(exit));
            },
        )?;
        // Until here a failed start dropped every sender, and the follower ended unheard.
        self.control = Some(control_tx);
        Ok(())
    }

    fn shutdown(&mut self, reason: Option<&str>) -> Result<(), String> {
        let Some(control) = &self.control else {
            return Ok(());
        };
        // The follower cancels the job (and ignores all but the first shutdown); the CLI's
        // group, if it still runs, is stopped from here.
        let _ = control.send(Control::Shutdown(reason.map(str::to_owned)));
        self.group.shutdown(reason, self.spec.kill_grace)
    }

    fn clean(&mut self) -> Result<(), String> {
        self.group.kill("cleaned up while running")
    }
}

impl Drop for FlinkApp {
    fn drop(&mut self) {
        if let Some(control) = &self.control {
            let _ = control.send(Control::Release);
        }
        let _ = self.group.kill("released while running");
    }
}

/// Learns the JobID from the CLI's output, then follows the job on the JobManager until it ends,
/// and reports that end.
struct JobFollower {
    stdout: Follower,
    stderr: Follower,
    app_dir: PathBuf,
    jobmanager: JobManager,
    poll_interval: Duration,
    grace: Duration,
    group: Arc<ProcessGroup>,
    events: ExitNotifier,
    control: Receiver<Control>,
    /// `Some(reason)` once a shutdown was asked for.
    shutdown: Option<Option<String>>,
}

/// Where the follower stands while it waits for the JobID.
enum Submission {
    /// The CLI printed this JobID.
    Submitted(String),
    /// It is over: the exit was reported, or nobody listens any more.
    Over,
}

impl JobFollower {
    fn run(mut self) {
        if let Submission::Submitted(job_id) = self.wait_for_job_id() {
            self.events.detail("flink_job_id", &job_id);
            self.follow(&job_id);
        }
    }

    /// Phase one: the CLI is submitting.
    fn wait_for_job_id(&mut self) -> Submission {
        loop {
            match self.control.recv_timeout(FAST_POLL) {
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(id) = self.scan(false) {
                        return Submission::Submitted(id);
                    }
                }
                Ok(Control::Shutdown(reason)) => {
                    // The app stops the CLI's group; its exit comes next.
                    self.shutdown.get_or_insert(reason);
                }
                Ok(Control::ClientExited(exit)) => {
                    if let Some(id) = self.scan(true) {
                        return Submission::Submitted(id);
                    }
                    let state = self.no_job(&exit);
                    self.events.exit(state);
                    return Submission::Over;
                }
                Ok(Control::Release) => {
                    // The CLI is being killed; a job it submitted already is cancelled.
                    if let Some(id) = self.scan(true) {
                        let _ = self.jobmanager.cancel(&id);
                    }
                    return Submission::Over;
                }
                // The CLI never started: start reported the error itself.
                Err(RecvTimeoutError::Disconnected) => return Submission::Over,
            }
        }
    }

    /// The first JobID in the new output, if any.
    fn scan(&mut self, last: bool) -> Option<String> {
        let lines = if last {
            let mut lines = self.stdout.finish();
            lines.extend(self.stderr.finish());
            lines
        } else {
            let mut lines = self.stdout.read_lines();
            lines.extend(self.stderr.read_lines());
            lines
        };
        lines
            .iter()
            .find_map(|line| job::find_job_id(line))
            .map(str::to_owned)
    }

    /// How the app ends when the CLI exited without submitting a job.
    fn no_job(&self, exit: &ProcessExit) -> ExitState {
        let shutdown = self.shutdown.clone().or_else(|| exit.shutdown.clone());
        if let Some(reason) = shutdown {
            return ExitState::killed(exit.code(), killed_message(reason.as_deref()));
        }
        let tail = output_tail(&self.app_dir, TAIL_STDERR, TAIL_STDOUT);
        if exit.success() {
            ExitState::failed(
                FAILED_CODE,
                format!(
                    "flink exited with code 0 but printed no JobID: no job was submitted{tail}"
                ),
            )
        } else {
            ExitState::failed(
                exit.code(),
                format!("flink {} before submitting a job{tail}", exit.describe()),
            )
        }
    }

    /// Phase two: the job runs on the cluster.
    fn follow(&mut self, job_id: &str) {
        let mut last_state: Option<JobState> = None;
        let mut unknown = 0;
        let mut unreachable_since: Option<Instant> = None;
        let mut cancelled = false;
        let mut cancel_error: Option<String> = None;
        let mut cancel_deadline = self.shutdown.as_ref().map(|_| Instant::now() + self.grace);
        loop {
            if self.shutdown.is_some() && !cancelled {
                match self.jobmanager.cancel(job_id) {
                    Ok(()) => {
                        cancelled = true;
                        cancel_error = None;
                    }
                    Err(e) => cancel_error = Some(e),
                }
            }
            let ended = match self.jobmanager.job_status(job_id) {
                Ok(JobStatus::Known(state)) => {
                    unknown = 0;
                    unreachable_since = None;
                    if last_state.as_ref() != Some(&state) {
                        self.events.detail("flink_job_state", state.name());
                        last_state = Some(state.clone());
                    }
                    let cause = match (&state, &self.shutdown) {
                        (JobState::Failed, None) => self.jobmanager.failure_cause(job_id),
                        _ => None,
                    };
                    job::outcome(job_id, &state, self.shutdown.as_ref(), cause.as_deref())
                }
                Ok(JobStatus::Unknown) => {
                    unknown += 1;
                    (unknown >= UNKNOWN_LIMIT).then(|| {
                        self.ended_without_state(
                            job_id,
                            format!(
                                "the JobManager at {} does not know Flink job {job_id} (any more)",
                                self.jobmanager.base()
                            ),
                        )
                    })
                }
                Err(e) => {
                    let since = *unreachable_since.get_or_insert_with(Instant::now);
                    let limit = if self.shutdown.is_some() {
                        self.grace
                    } else {
                        UNREACHABLE_LIMIT
                    };
                    (since.elapsed() >= limit).then(|| {
                        self.ended_without_state(
                            job_id,
                            format!("lost contact with the JobManager: {e}"),
                        )
                    })
                }
            };
            let ended = ended.or_else(|| {
                let overdue = cancel_deadline.is_some_and(|d| Instant::now() >= d);
                overdue.then(|| {
                    let state = last_state
                        .as_ref()
                        .map_or("in an unknown state", JobState::name);
                    let why = match &cancel_error {
                        Some(e) => format!("could not cancel Flink job {job_id}: {e}"),
                        None => format!(
                            "Flink job {job_id} was asked to cancel but is still {state} after {} ms",
                            self.grace.as_millis()
                        ),
                    };
                    self.killed_with(&why)
                })
            });
            if let Some(state) = ended {
                self.finish(state);
                return;
            }

            let wait = if self.shutdown.is_some() {
                FAST_POLL.min(self.poll_interval)
            } else {
                self.poll_interval
            };
            match self.control.recv_timeout(wait) {
                Ok(Control::Shutdown(reason)) => {
                    if self.shutdown.is_none() {
                        self.shutdown = Some(reason);
                        cancel_deadline = Some(Instant::now() + self.grace);
                    }
                }
                // In attached mode the CLI runs as long as the job; its exit says nothing the
                // JobManager will not say.
                Ok(Control::ClientExited(_)) | Err(RecvTimeoutError::Timeout) => {}
                Ok(Control::Release) | Err(RecvTimeoutError::Disconnected) => {
                    if !last_state.as_ref().is_some_and(JobState::is_terminal) {
                        let _ = self.jobmanager.cancel(job_id);
                    }
                    return;
                }
            }
        }
    }

    /// The end of an app whose job's fate is unknown: FAILED, or KILLED after a shutdown.
    fn ended_without_state(&self, job_id: &str, why: String) -> ExitState {
        if self.shutdown.is_some() {
            self.killed_with(&format!("Flink job {job_id}: {why}"))
        } else {
            ExitState::failed(FAILED_CODE, why)
        }
    }

    fn killed_with(&self, why: &str) -> ExitState {
        let reason = self
            .shutdown
            .clone()
            .flatten()
            .unwrap_or_else(|| "shutdown requested".to_owned());
        ExitState::killed(KILLED_CODE, format!("killed: {reason} ({why})"))
    }

    /// Reports `state` once the CLI is gone too: an attached CLI gets a moment to print the
    /// job's result and exit by itself.
    fn finish(&self, state: ExitState) {
        if !self.group.wait_exited(CLIENT_EXIT_WAIT) {
            let _ = self.group.kill("the job ended");
            self.group.wait_exited(CLIENT_EXIT_WAIT);
        }
        self.events.exit(state);
    }
}
