//! The worker's app table and the threads that drive plugins.
//!
//! Each app attempt gets one OS thread that owns its plugin instance: plugin calls never run on
//! the tokio runtime, and every report about an attempt is queued by that one thread, so the
//! master hears RUNNING before FINISHED even when the app exits before `start` returns.
//! Reports go into one ordered queue that the session task delivers to the leader, retrying
//! until acknowledged: nothing the worker observed is lost while a master is away.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aloha_core::{AppDescription, AppState};
use aloha_plugin::host::{ApplicationPlugin, PluginEvent};
use aloha_plugin::{AppContext, ExitKind, ExitState};
use aloha_proto as pb;
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::spares::Spares;

/// What the app thread is told.
enum Control {
    Shutdown(String),
    Exited(ExitState),
    Detail(String, String),
}

/// One app attempt on this worker.
struct Entry {
    attempt: u32,
    /// RUNNING once started (LAUNCHING before), then a terminal state.
    state: AppState,
    exit_code: Option<i32>,
    message: String,
    details: BTreeMap<String, String>,
    control: mpsc::Sender<Control>,
    /// The worker stopped it while shutting down.
    worker_shutdown: bool,
    /// A registration already told the master it runs (before `start` returned): a start
    /// failure must then be reported as FAILED, since RUNNING -> ERROR is not a transition.
    announced_running: bool,
}

/// The worker's state shared by the RPC service, the session task and the app threads.
pub struct Worker {
    /// Worker id.
    pub id: String,
    /// Address the master reaches the WorkerService at.
    pub address: String,
    /// Cores offered.
    pub cores: u32,
    /// Memory offered, MiB.
    pub memory_mb: u64,
    /// This process's random token, sent with every registration: the master refuses another
    /// process registering the same id while this one is alive.
    pub instance: String,
    cfg: Config,
    plugins: HashMap<String, Arc<ApplicationPlugin>>,
    /// The process supervisor handed to plugins in every `AppContext`, if there is one.
    supervisor: Option<PathBuf>,
    /// Plugins that failed to load, one line each.
    pub plugin_errors: Vec<String>,
    apps: Mutex<HashMap<String, Entry>>,
    reports: Mutex<VecDeque<pb::AppStateReport>>,
    /// Woken when a report is queued.
    pub report_ready: Notify,
    /// Woken when the worker must register again.
    pub reregister: Notify,
    max_epoch: AtomicU64,
    shutting_down: AtomicBool,
    /// Attempt directories made ahead of time.
    spares: Arc<Spares>,
}

/// How many attempt directories are kept ready (see [`crate::spares`]).
const SPARE_DIRS: usize = 4;

/// 128 random bits as 32 hex digits. The std hasher's keys come from the OS's random source
/// once per process; the pid and the time make two tokens of one host differ even so. The
/// token tells processes apart; it is no secret.
fn instance_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let half = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u32(std::process::id());
        h.write_u128(nanos);
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Critical sections here are single map/queue operations that cannot leave the data
    // half-changed, so a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Worker {
    /// A worker with the given identity and loaded plugins; `supervisor` is the process
    /// supervisor its plugins are told to start apps through (see [`crate::default_supervisor`]).
    pub fn new(
        cfg: Config,
        id: String,
        address: String,
        plugins: Vec<ApplicationPlugin>,
        plugin_errors: Vec<String>,
        supervisor: Option<PathBuf>,
    ) -> Worker {
        let cores = cfg.cores.unwrap_or_else(crate::config::machine_cores);
        let memory_mb = cfg
            .memory_mb
            .unwrap_or_else(crate::config::machine_memory_mb);
        let spares = Spares::start(&cfg.work_dir, SPARE_DIRS);
        Worker {
            id,
            address,
            cores,
            memory_mb,
            instance: instance_token(),
            plugins: plugins
                .into_iter()
                .map(|p| (p.kind().to_string(), Arc::new(p)))
                .collect(),
            supervisor,
            plugin_errors,
            cfg,
            apps: Mutex::new(HashMap::new()),
            reports: Mutex::new(VecDeque::new()),
            report_ready: Notify::new(),
            reregister: Notify::new(),
            max_epoch: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
            spares,
        }
    }

    /// Kinds the loaded plugins provide, sorted.
    pub fn kinds(&self) -> Vec<String> {
        let mut k: Vec<String> = self.plugins.keys().cloned().collect();
        k.sort();
        k
    }

    /// The highest leader epoch this process followed (sent in registrations).
    pub fn max_epoch(&self) -> u64 {
        self.max_epoch.load(Ordering::SeqCst)
    }

    /// Records the epoch of a leader we registered with.
    pub fn observe_epoch(&self, epoch: u64) {
        self.max_epoch.fetch_max(epoch, Ordering::SeqCst);
    }

    /// Refuses commands from a leader older than the newest one seen.
    fn check_epoch(&self, epoch: u64) -> Result<(), String> {
        let max = self.max_epoch.fetch_max(epoch, Ordering::SeqCst);
        if epoch < max {
            Err(format!(
                "stale epoch {epoch}: this worker already follows epoch {max}"
            ))
        } else {
            Ok(())
        }
    }

    fn report_of(&self, app_id: &str, e: &Entry) -> pb::AppStateReport {
        pb::AppStateReport {
            worker_id: self.id.clone(),
            app_id: app_id.to_string(),
            attempt: e.attempt,
            // Until the plugin's start returns the app is as good as running here; the
            // master moves LAUNCHING -> RUNNING on it.
            state: if e.state == AppState::Launching {
                AppState::Running.to_string()
            } else {
                e.state.to_string()
            },
            exit_code: e.exit_code,
            message: e.message.clone(),
            worker_shutdown: e.worker_shutdown,
            details: e.details.clone().into_iter().collect(),
        }
    }

    /// Every app this worker holds, for registration: running ones and finished ones whose
    /// final report the master has not acknowledged.
    pub fn app_reports(&self) -> Vec<pb::AppStateReport> {
        let mut apps = lock(&self.apps);
        for e in apps.values_mut() {
            if e.state == AppState::Launching {
                e.announced_running = true;
            }
        }
        let mut out: Vec<_> = apps.iter().map(|(id, e)| self.report_of(id, e)).collect();
        out.sort_by(|a, b| a.app_id.cmp(&b.app_id));
        out
    }

    /// The master acknowledged a registration listing `reported`: finished apps in it are
    /// done with.
    pub fn registered(&self, reported: &[pb::AppStateReport]) {
        let mut apps = lock(&self.apps);
        for r in reported {
            let done = apps
                .get(&r.app_id)
                .is_some_and(|e| e.attempt == r.attempt && e.state.is_terminal());
            if done {
                apps.remove(&r.app_id);
            }
        }
    }

    fn queue_report(&self, app_id: &str) {
        let report = {
            let apps = lock(&self.apps);
            match apps.get(app_id) {
                Some(e) => self.report_of(app_id, e),
                None => return,
            }
        };
        lock(&self.reports).push_back(report);
        self.report_ready.notify_one();
    }

    /// The oldest undelivered report.
    pub fn next_report(&self) -> Option<pb::AppStateReport> {
        lock(&self.reports).front().cloned()
    }

    /// The oldest undelivered reports, at most `max`, oldest first.
    pub fn next_reports(&self, max: usize) -> Vec<pb::AppStateReport> {
        lock(&self.reports).iter().take(max).cloned().collect()
    }

    /// The master took the oldest report: drop it, and forget the app if it was final.
    pub fn report_delivered(&self, r: &pb::AppStateReport) {
        let mut q = lock(&self.reports);
        if q.front() == Some(r) {
            q.pop_front();
        }
        drop(q);
        let terminal = r.state.parse::<AppState>().is_ok_and(|s| s.is_terminal());
        if terminal {
            let mut apps = lock(&self.apps);
            if apps
                .get(&r.app_id)
                .is_some_and(|e| e.attempt == r.attempt && e.state.is_terminal())
            {
                apps.remove(&r.app_id);
            }
        }
    }

    /// Reports waiting for delivery.
    pub fn pending_reports(&self) -> usize {
        lock(&self.reports).len()
    }

    /// The directory app attempts run in: `<work_dir>/<app_id>/<attempt>`.
    pub fn work_dir(&self) -> &std::path::Path {
        &self.cfg.work_dir
    }

    /// The state of `attempt` of `app_id` while this worker keeps its record: LAUNCHING or
    /// RUNNING while it runs, then terminal until the master acknowledged the final report.
    /// `None` when there is no record of that attempt: it never ran here, a newer attempt
    /// replaced it, or it ended and was forgotten.
    pub fn attempt_state(&self, app_id: &str, attempt: u32) -> Option<AppState> {
        lock(&self.apps)
            .get(app_id)
            .filter(|e| e.attempt == attempt)
            .map(|e| e.state)
    }

    /// Apps not yet in a terminal state.
    pub fn active_apps(&self) -> usize {
        lock(&self.apps)
            .values()
            .filter(|e| !e.state.is_terminal())
            .count()
    }

    fn set_state(
        &self,
        app_id: &str,
        attempt: u32,
        state: AppState,
        exit_code: Option<i32>,
        message: String,
    ) {
        {
            let mut apps = lock(&self.apps);
            let Some(e) = apps.get_mut(app_id) else {
                return;
            };
            if e.attempt != attempt || e.state.is_terminal() {
                return;
            }
            let state = if state == AppState::Error && e.announced_running {
                AppState::Failed
            } else {
                state
            };
            e.state = state;
            e.exit_code = exit_code;
            e.message = message.clone();
        }
        info!(app_id, attempt, %state, exit_code, message, "app state");
        self.queue_report(app_id);
    }

    // ------------------------------------------------------------------------------------
    // Commands from the master

    /// Starts an app attempt on its own thread. Returns at once; the outcome is reported.
    pub fn launch(self: &Arc<Self>, req: pb::LaunchAppRequest) -> Result<(), String> {
        self.check_epoch(req.epoch)?;
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err("worker is shutting down".into());
        }
        let desc: AppDescription = serde_json::from_str(&req.description_json)
            .map_err(|e| format!("malformed app description: {e}"))?;
        if desc.id.as_str() != req.app_id || desc.attempt != req.attempt {
            return Err("app description does not match the request".into());
        }
        let plugin =
            self.plugins.get(&desc.kind).cloned().ok_or_else(|| {
                format!("no plugin for kind {:?} on worker {}", desc.kind, self.id)
            })?;
        let (tx, rx) = mpsc::channel();
        {
            let mut apps = lock(&self.apps);
            if let Some(old) = apps.get(&req.app_id) {
                if old.attempt == req.attempt {
                    return Ok(()); // a resent launch: already running it
                }
                if !old.state.is_terminal() {
                    // A newer attempt supersedes ours: the master no longer owns the old one.
                    let _ = old.control.send(Control::Shutdown(format!(
                        "superseded by attempt {}",
                        req.attempt
                    )));
                }
            }
            apps.insert(
                req.app_id.clone(),
                Entry {
                    attempt: req.attempt,
                    state: AppState::Launching,
                    exit_code: None,
                    message: String::new(),
                    details: BTreeMap::new(),
                    control: tx.clone(),
                    worker_shutdown: false,
                    announced_running: false,
                },
            );
        }
        let app_dir = self
            .cfg
            .work_dir
            .join(&req.app_id)
            .join(req.attempt.to_string());
        let this = self.clone();
        let conf = self
            .cfg
            .plugins
            .get(&desc.kind)
            .cloned()
            .unwrap_or_else(|| serde_json::json!({}));
        let name = format!("app-{}-{}", req.app_id, req.attempt);
        std::thread::Builder::new()
            .name(name)
            .spawn(move || this.drive(plugin, desc, app_dir, conf, tx, rx))
            .map_err(|e| format!("cannot start app thread: {e}"))?;
        Ok(())
    }

    /// Asks a running attempt to stop. `Err` when this worker does not run it.
    pub fn kill(&self, req: pb::KillAppRequest) -> Result<(), String> {
        self.check_epoch(req.epoch)?;
        let apps = lock(&self.apps);
        match apps.get(&req.app_id) {
            Some(e) if e.attempt == req.attempt && e.state.is_terminal() => Ok(()),
            Some(e) if e.attempt == req.attempt => {
                let reason = if req.reason.is_empty() {
                    "killed on request".to_string()
                } else {
                    req.reason.clone()
                };
                let _ = e.control.send(Control::Shutdown(reason));
                Ok(())
            }
            _ => Err(format!(
                "worker {} does not run attempt {} of {}",
                self.id, req.attempt, req.app_id
            )),
        }
    }

    /// Kills an app the master says it does not own here.
    pub fn kill_unowned(&self, app_id: &str, attempt: u32) {
        let apps = lock(&self.apps);
        if let Some(e) = apps.get(app_id) {
            if e.attempt == attempt && !e.state.is_terminal() {
                warn!(
                    app_id,
                    attempt, "killing an app the master does not own here"
                );
                let _ = e
                    .control
                    .send(Control::Shutdown("not owned by the master".into()));
            }
        }
    }

    /// Stops every app (worker shutdown); their reports say the worker stopped them.
    pub fn shutdown_all(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let mut apps = lock(&self.apps);
        for (id, e) in apps.iter_mut().filter(|(_, e)| !e.state.is_terminal()) {
            e.worker_shutdown = true;
            info!(app_id = %id, "stopping app: worker shutting down");
            let _ = e.control.send(Control::Shutdown(format!(
                "worker {} shutting down",
                self.id
            )));
        }
    }

    /// The life of one app attempt, on its own thread.
    fn drive(
        self: Arc<Self>,
        plugin: Arc<ApplicationPlugin>,
        desc: AppDescription,
        app_dir: PathBuf,
        conf: serde_json::Value,
        tx: mpsc::Sender<Control>,
        rx: mpsc::Receiver<Control>,
    ) {
        let app_id = desc.id.0.clone();
        let attempt = desc.attempt;
        let fail = |state: AppState, msg: String| {
            error!(app_id, attempt, "{msg}");
            self.set_state(&app_id, attempt, state, None, msg);
        };
        // A ready-made directory when there is one: no file is created on the way to RUNNING.
        let made = if self.spares.place(&app_dir) {
            Ok(())
        } else {
            std::fs::create_dir_all(&app_dir)
        };
        if let Err(e) = made {
            return fail(
                AppState::Error,
                format!("cannot create app dir {}: {e}", app_dir.display()),
            );
        }
        let description = match serde_json::to_value(&desc) {
            Ok(v) => v,
            Err(e) => return fail(AppState::Error, format!("cannot encode description: {e}")),
        };
        let _ = std::fs::write(
            app_dir.join("description.json"),
            serde_json::to_vec_pretty(&description).unwrap_or_default(),
        );
        let ctx = AppContext {
            description,
            app_dir: app_dir.clone(),
            conf,
            supervisor: self.supervisor.clone(),
        };
        let events = tx.clone();
        let on_event = move |ev: PluginEvent| {
            let _ = events.send(match ev {
                PluginEvent::Exit(x) => Control::Exited(x),
                PluginEvent::Detail { key, value } => Control::Detail(key, value),
            });
        };
        // A panic is a failure of the app (FAILED); an error returned by the plugin means it
        // cannot run this app at all (ERROR: a bad spec, a missing program).
        let state_for = |e: &aloha_plugin::host::CallError| {
            if e.panicked {
                AppState::Failed
            } else {
                AppState::Error
            }
        };
        let inst = match plugin.create(&ctx, on_event) {
            Ok(i) => i,
            Err(e) => return fail(state_for(&e), format!("plugin refused the app: {e}")),
        };
        if let Err(e) = inst.start() {
            let _ = inst.clean();
            return fail(state_for(&e), format!("start failed: {e}"));
        }
        self.set_state(&app_id, attempt, AppState::Running, None, String::new());
        let mut deadline: Option<std::time::Instant> = None;
        let exit = loop {
            let msg = match deadline {
                None => rx.recv().ok(),
                Some(d) => rx
                    .recv_timeout(d.saturating_duration_since(std::time::Instant::now()))
                    .ok(),
            };
            match msg {
                Some(Control::Exited(x)) => break x,
                Some(Control::Detail(k, v)) => {
                    {
                        let mut apps = lock(&self.apps);
                        if let Some(e) = apps.get_mut(&app_id).filter(|e| e.attempt == attempt) {
                            e.details.insert(k, v);
                        }
                    }
                    self.queue_report(&app_id);
                }
                Some(Control::Shutdown(reason)) => {
                    info!(app_id, attempt, %reason, "shutting app down");
                    if let Err(e) = inst.shutdown(Some(&reason)) {
                        warn!(app_id, attempt, "plugin shutdown failed: {e}");
                    }
                    deadline.get_or_insert(std::time::Instant::now() + self.cfg.shutdown_timeout);
                }
                None => {
                    break ExitState {
                        code: -1,
                        kind: ExitKind::Killed,
                        message: format!(
                            "plugin did not report an exit within {} of shutdown",
                            humantime::format_duration(self.cfg.shutdown_timeout)
                        ),
                    }
                }
            }
        };
        let state = match exit.kind {
            ExitKind::Finished => AppState::Finished,
            ExitKind::Failed => AppState::Failed,
            ExitKind::Killed => AppState::Killed,
        };
        if let Err(e) = inst.clean() {
            warn!(app_id, attempt, "plugin clean failed: {e}");
        }
        drop(inst);
        self.set_state(&app_id, attempt, state, Some(exit.code), exit.message);
    }

    /// Waits (polling) until no app is active or `timeout` passes.
    pub async fn wait_apps_stopped(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.active_apps() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }
}
