//! A leadership: the engine that owns the state, and the handle every request goes through.
//!
//! [`Master::recover`] loads the stored records, applies the recovery rules of
//! [`Cluster::recover`] and writes their changes; [`Master::run_loops`] then runs the
//! [engine](crate::engine) until the leadership ends. Mutations (`submit`, `kill`, worker
//! registration and reports) are operations sent to the engine and answered once durable;
//! reads (`view`) take the last published snapshot and never wait for a write; heartbeats go
//! to the [liveness table](crate::liveness) at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aloha_core::api::WorkerInfo;
use aloha_core::cluster::namespaces::NamespaceInfo;
use aloha_core::cluster::{
    Cluster, Effects, Lookup, Now, OpError, Placement, Registration, ReportOutcome, Rules,
    Submitted, WorkerReport,
};
use aloha_core::namespace::{Namespace, NamespaceSpec, Scope};
use aloha_core::schedules::Schedule;
use aloha_core::{
    App, AppId, AppState, EventBody, SubmitError, SubmitRequest, WorkerId, WorkerRecord,
    WorkerState,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::config::Config;
use crate::engine::{Engine, EngineError, Op, ScheduleAnswer, ScheduleCmd, Shared, View};
use crate::events::EventLog;
use crate::listeners::Listeners;
use crate::liveness::Beat;
use crate::metrics::Metrics;
use crate::store::{keys, read_u64, StateStore, StoreError, Txn};
use crate::worker_client::WorkerConnector;

/// How many operations may wait for the engine before callers wait to hand theirs over.
const QUEUE: usize = 65_536;
/// Records read per store request while recovering.
const RECOVERY_PAGE: usize = 10_000;

/// Why an operation was refused. Mapped once to HTTP statuses in `http.rs` and gRPC codes in
/// `rpc.rs`.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// Bad submission.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// Malformed input other than a submission.
    #[error("{0}")]
    BadRequest(String),
    /// No such app.
    #[error("app {0} not found")]
    AppNotFound(String),
    /// No such schedule.
    #[error("schedule {0} not found")]
    ScheduleNotFound(String),
    /// No such worker.
    #[error("worker {0} not found")]
    WorkerNotFound(String),
    /// The app ended and was removed by the retention.
    #[error("app {0} expired")]
    AppExpired(String),
    /// The request conflicts with the app's state.
    #[error("{0}")]
    Conflict(String),
    /// A namespace quota refuses it.
    #[error("{0}")]
    Quota(String),
    /// No such namespace.
    #[error("namespace {0} not found")]
    NamespaceNotFound(String),
    /// The caller may not write in that namespace.
    #[error("{0}")]
    Forbidden(String),
    /// This master is not the leader.
    #[error("not leader")]
    NotLeader {
        /// The leader's HTTP URL, when known.
        leader: Option<String>,
    },
    /// The state store failed; nothing was changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<OpError> for MasterError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Submit(e) => MasterError::Submit(e),
            OpError::BadRequest(m) => MasterError::BadRequest(m),
            OpError::NotFound(id) => MasterError::AppNotFound(id.0),
            OpError::ScheduleNotFound(id) => MasterError::ScheduleNotFound(id.0),
            OpError::WorkerNotFound(id) => MasterError::WorkerNotFound(id.0),
            OpError::Expired(id) => MasterError::AppExpired(id.0),
            OpError::Conflict(m) => MasterError::Conflict(m),
            OpError::Quota(m) => MasterError::Quota(m),
            OpError::NamespaceNotFound(n) => MasterError::NamespaceNotFound(n),
            OpError::Forbidden(m) => MasterError::Forbidden(m),
        }
    }
}

impl From<EngineError> for MasterError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Refused(e) => e.into(),
            EngineError::Store(StoreError::Fenced) | EngineError::Stopped => {
                MasterError::NotLeader { leader: None }
            }
            EngineError::Store(e) => MasterError::Store(e),
        }
    }
}

/// A heartbeat's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatAnswer {
    /// Counted.
    Ok,
    /// Not registered here: register again.
    Reregister,
    /// This master no longer leads.
    NotLeader,
}

/// The cluster rules a configuration asks for.
pub fn rules(cfg: &Config) -> Rules {
    let chrono =
        |d: std::time::Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    Rules {
        worker_timeout_ms: cfg.worker_timeout.as_millis() as u64,
        allowed_kinds: cfg.allowed_kinds.clone(),
        retain_finished: cfg.retain_finished,
        retain_finished_for: chrono(cfg.retain_finished_for),
        retain_dead_workers_for: chrono(cfg.retain_dead_workers_for),
        placement: cfg.placement,
        ..Rules::default()
    }
}

/// One leadership. Cheap to share behind an `Arc`.
pub struct Master {
    tx: mpsc::Sender<Op>,
    shared: Arc<Shared>,
    engine: std::sync::Mutex<Option<Engine>>,
    store: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    cfg: Config,
    epoch: u64,
    /// Metrics registry and families (shared by every master incarnation of the process).
    pub metrics: Arc<Metrics>,
    events: Arc<EventLog>,
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, v: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Backend(format!("corrupt record {key}: {e}")))
}

/// Reads every record under `prefix`, a page at a time, decoding as it goes (a million apps
/// are never held twice, as bytes and as records).
pub async fn load_all<T: serde::de::DeserializeOwned>(
    store: &dyn StateStore,
    prefix: &str,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    let mut from = prefix.to_string();
    loop {
        let page = store.scan_from(prefix, &from, RECOVERY_PAGE).await?;
        let n = page.len();
        let Some(last) = page.last().map(|(k, _)| k.clone()) else {
            break;
        };
        for (k, v) in &page {
            out.push(decode(k, v)?);
        }
        if n < RECOVERY_PAGE {
            break;
        }
        // The next key after `last`.
        from = format!("{last}\u{0}");
    }
    Ok(out)
}

impl Master {
    /// Loads the persisted state and recovers (see [`Cluster::recover`]); the recovery's changes
    /// are written before this returns. `epoch` is this leadership's fencing token.
    pub async fn recover(
        cfg: Config,
        store: Arc<dyn StateStore>,
        connector: Arc<dyn WorkerConnector>,
        clock: Arc<dyn Clock>,
        epoch: u64,
        metrics: Arc<Metrics>,
        events: Arc<EventLog>,
    ) -> Result<Arc<Master>, StoreError> {
        let last_seq = read_u64(store.as_ref(), keys::APP_SEQ).await?;
        let last_event_seq = read_u64(store.as_ref(), keys::EVENT_SEQ).await?;
        let workers: Vec<WorkerRecord> = load_all(store.as_ref(), keys::WORKERS).await?;
        let apps: Vec<App> = load_all(store.as_ref(), keys::APPS).await?;
        let schedules: Vec<Schedule> = load_all(store.as_ref(), keys::SCHEDULES).await?;
        let last_schedule_seq = read_u64(store.as_ref(), keys::SCHEDULE_SEQ).await?;
        let namespaces: Vec<Namespace> = load_all(store.as_ref(), keys::NAMESPACES).await?;
        let now = Now {
            wall: clock.now(),
            mono_ms: clock.mono_ms(),
        };
        let mut fx = Effects::default();
        let (napps, nworkers) = (apps.len(), workers.len());
        let nschedules = schedules.len();
        let (cluster, errors) =
            Cluster::recover(rules(&cfg), workers, apps, last_seq, now, &mut fx)
                .with_namespaces(namespaces)
                .with_schedules(schedules, last_schedule_seq);
        for e in errors {
            warn!("{e}; it stays stored but does not fire");
        }
        fx.events.push(EventBody::LeaderChanged {
            role: aloha_core::api::Role::Alive,
            leader: Some(cfg.http_url()),
            epoch,
        });
        let shared = Shared::new(View {
            cluster: cluster.clone(),
            epoch,
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        let tick_every = (cfg.worker_timeout / 10).clamp(
            std::time::Duration::from_millis(50),
            std::time::Duration::from_secs(1),
        );
        let mut engine = Engine {
            cluster,
            last_event_seq,
            epoch,
            store: store.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
            events: events.clone(),
            connector,
            shared: shared.clone(),
            rx,
            tx: tx.clone(),
            tick_every,
        };
        // The recovery's changes are written and published like a batch.
        engine.commit_effects(fx, now).await?;
        info!(
            epoch,
            apps = napps,
            queued = engine.cluster.queued(),
            unknown = engine.cluster.count(AppState::Unknown),
            workers = nworkers,
            schedules = nschedules,
            events = engine.last_event_seq,
            store = store.kind(),
            "recovered state"
        );
        Ok(Arc::new(Master {
            tx,
            shared,
            engine: std::sync::Mutex::new(Some(engine)),
            store,
            clock,
            cfg,
            epoch,
            metrics,
            events,
        }))
    }

    /// This master's epoch (fencing token) as sent to workers.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The state as of the last durable batch. Never waits for the engine.
    pub fn view(&self) -> Arc<View> {
        self.shared.view.load_full()
    }

    /// Starts delivering events to `listeners` (once).
    pub fn attach_listeners(&self, listeners: Arc<Listeners>) {
        let _ = self.shared.listeners.set(listeners);
    }

    /// The event log this master writes.
    pub fn event_log(&self) -> &Arc<EventLog> {
        &self.events
    }

    /// The master's (fenced) store, for the listeners' cursors.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// Whether a write of this master was refused by the fence (it is no longer the leader).
    pub fn is_fenced(&self) -> bool {
        self.shared.is_fenced()
    }

    /// Resolves once this master has been fenced off.
    pub async fn fenced(&self) {
        self.shared.fenced().await
    }

    /// Deletes events beyond the configured retention.
    pub async fn compact_events(&self) -> Result<u64, StoreError> {
        if self.is_fenced() {
            return Ok(0);
        }
        let retention = crate::events::Retention {
            max_events: self.cfg.event_retention,
            max_age: self.cfg.event_max_age,
        };
        self.events
            .compact(self.store.as_ref(), retention, self.clock.now())
            .await
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, EngineError>>) -> Op,
    ) -> Result<T, MasterError> {
        if self.is_fenced() {
            return Err(MasterError::NotLeader { leader: None });
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| MasterError::NotLeader { leader: None })?;
        rx.await
            .map_err(|_| MasterError::NotLeader { leader: None })?
            .map_err(MasterError::from)
    }

    // ----------------------------------------------------------------------------------------
    // Client operations

    /// Accepts a submission: durable before this returns. With an idempotency key, a repeat
    /// of the same request returns the first app (`created: false`).
    pub async fn submit(
        &self,
        req: SubmitRequest,
        key: Option<String>,
    ) -> Result<Submitted, MasterError> {
        self.submit_as(&Scope::All, req, key).await
    }

    /// [`Master::submit`] for a caller that may write only in `scope`.
    pub async fn submit_as(
        &self,
        scope: &Scope,
        req: SubmitRequest,
        key: Option<String>,
    ) -> Result<Submitted, MasterError> {
        let scope = scope.clone();
        let s = self
            .call(|reply| Op::Submit {
                scope,
                req,
                key,
                reply,
            })
            .await?;
        if s.created {
            debug!(app_id = %s.app.id, name = %s.app.name, kind = %s.app.kind, "app submitted");
        }
        Ok(s)
    }

    /// Accepts several submissions in one operation of the engine, each on its own as by
    /// [`Master::submit_as`] with its own idempotency key: one result per request, in order,
    /// every accepted one durable before this returns. The outer error is the batch's (not
    /// the leader, the store failed): then none was accepted.
    pub async fn submit_batch_as(
        &self,
        scope: &Scope,
        reqs: Vec<(SubmitRequest, Option<String>)>,
    ) -> Result<Vec<Result<Submitted, MasterError>>, MasterError> {
        let scope = scope.clone();
        let results = self
            .call(|reply| Op::SubmitBatch { scope, reqs, reply })
            .await?;
        Ok(results
            .into_iter()
            .map(|r| r.map_err(|e| MasterError::from(EngineError::from(e))))
            .collect())
    }

    /// Asks for an app to be killed (see [`Cluster::kill`]).
    pub async fn kill(&self, id: &str, reason: Option<String>) -> Result<Arc<App>, MasterError> {
        self.kill_as(&Scope::All, id, reason).await
    }

    /// [`Master::kill`] for a caller that may write only in `scope`.
    pub async fn kill_as(
        &self,
        scope: &Scope,
        id: &str,
        reason: Option<String>,
    ) -> Result<Arc<App>, MasterError> {
        let id = AppId(id.to_string());
        let app = self
            .call(|reply| Op::Kill {
                scope: scope.clone(),
                id: id.clone(),
                reason,
                reply,
            })
            .await?;
        info!(app_id = %id, "kill requested");
        Ok(app)
    }

    /// A new app from the template of an ended one (see [`Cluster::retry`]).
    pub async fn retry(&self, id: &str) -> Result<Arc<App>, MasterError> {
        self.retry_as(&Scope::All, id).await
    }

    /// [`Master::retry`] for a caller that may write only in `scope`.
    pub async fn retry_as(&self, scope: &Scope, id: &str) -> Result<Arc<App>, MasterError> {
        let id = AppId(id.to_string());
        let app = self
            .call(|reply| Op::Retry {
                scope: scope.clone(),
                id: id.clone(),
                reply,
            })
            .await?;
        info!(app_id = %app.id, retry_of = %id, "app retried");
        Ok(app)
    }

    /// What a submission would do now, changing nothing (see [`Cluster::dry_run`]).
    pub fn dry_run(&self, req: SubmitRequest) -> Result<(App, Placement), MasterError> {
        let now = Now {
            wall: self.clock.now(),
            mono_ms: self.clock.mono_ms(),
        };
        Ok(self.view().cluster.dry_run(req, now)?)
    }

    /// The app `id` once it has ended, or as it is when `wait` runs out.
    pub async fn wait_ended(&self, id: &AppId, wait: Duration) -> Option<Arc<App>> {
        let deadline = tokio::time::Instant::now() + wait;
        let ended = self
            .shared
            .wait_for(deadline, |v| match v.cluster.lookup(id) {
                Lookup::Found(a) if a.state.is_terminal() => Some(a),
                _ => None,
            })
            .await;
        ended.or_else(|| match self.view().cluster.lookup(id) {
            Lookup::Found(a) => Some(a),
            _ => None,
        })
    }

    /// Drains worker `id` (`Some(deadline)`) or ends its drain (`None`); the worker as the API
    /// then shows it.
    pub async fn drain(
        &self,
        id: &str,
        deadline: Option<Duration>,
    ) -> Result<WorkerInfo, MasterError> {
        let worker = WorkerId(id.to_string());
        self.call(|reply| Op::Drain {
            worker: worker.clone(),
            deadline,
            reply,
        })
        .await?;
        match deadline {
            Some(d) => info!(worker_id = %worker, deadline = ?d, "worker drained"),
            None => info!(worker_id = %worker, "worker undrained"),
        }
        self.workers()
            .into_iter()
            .find(|w| w.id == worker)
            .ok_or_else(|| MasterError::WorkerNotFound(id.to_string()))
    }

    /// Creates or changes namespace `name`; answers it as it is after the change.
    pub async fn put_namespace(
        &self,
        name: &str,
        spec: NamespaceSpec,
    ) -> Result<NamespaceInfo, MasterError> {
        self.call(|reply| Op::Namespace {
            name: name.to_string(),
            spec: Some(spec.clone()),
            reply,
        })
        .await?;
        info!(namespace = name, weight = spec.weight, quota = ?spec.quota, "namespace set");
        self.view()
            .cluster
            .namespace(name)
            .ok_or_else(|| MasterError::NamespaceNotFound(name.to_string()))
    }

    /// Deletes namespace `name`.
    pub async fn delete_namespace(&self, name: &str) -> Result<(), MasterError> {
        self.call(|reply| Op::Namespace {
            name: name.to_string(),
            spec: None,
            reply,
        })
        .await?;
        info!(namespace = name, "namespace deleted");
        Ok(())
    }

    /// A schedule operation (see the `Cluster`'s schedule rules).
    pub async fn schedule_op(&self, cmd: ScheduleCmd) -> Result<ScheduleAnswer, MasterError> {
        self.schedule_op_as(&Scope::All, cmd).await
    }

    /// [`Master::schedule_op`] for a caller that may write only in `scope`.
    pub async fn schedule_op_as(
        &self,
        scope: &Scope,
        cmd: ScheduleCmd,
    ) -> Result<ScheduleAnswer, MasterError> {
        let scope = scope.clone();
        self.call(|reply| Op::Schedule { scope, cmd, reply }).await
    }

    // ----------------------------------------------------------------------------------------
    // Worker operations (wire types are converted in `rpc.rs`)

    /// A worker (re-)registers; returns the attempts it must kill.
    pub async fn register_worker(
        &self,
        reg: Registration,
    ) -> Result<Vec<(AppId, u32)>, MasterError> {
        let (id, address, cores, memory_mb, apps) = (
            reg.id.clone(),
            reg.address.clone(),
            reg.cores,
            reg.memory_mb,
            reg.apps.len(),
        );
        for e in &reg.plugin_errors {
            warn!(worker_id = %id, "plugin failed to load on worker: {e}");
        }
        let kill = self.call(|reply| Op::Register { reg, reply }).await?;
        info!(worker_id = %id, %address, cores, memory_mb, apps, killed = kill.len(), "worker registered");
        Ok(kill)
    }

    /// A heartbeat: recorded at once, never through the engine.
    pub async fn heartbeat(&self, worker_id: &str) -> HeartbeatAnswer {
        if self.is_fenced() {
            return HeartbeatAnswer::NotLeader;
        }
        let id = WorkerId(worker_id.to_string());
        match self
            .shared
            .live
            .heartbeat(&id, self.clock.mono_ms(), self.clock.now())
        {
            Beat::Unregistered => HeartbeatAnswer::Reregister,
            Beat::Counted { was_suspect } => {
                if was_suspect {
                    let _ = self.tx.send(Op::Heard(id)).await;
                }
                HeartbeatAnswer::Ok
            }
        }
    }

    /// A worker's report of an app's state.
    pub async fn report(
        &self,
        worker: WorkerId,
        report: WorkerReport,
    ) -> Result<ReportOutcome, MasterError> {
        self.call(|reply| Op::Report {
            worker,
            report,
            reply,
        })
        .await
    }

    /// Runs the timers now (worker expiry, recovery deadline, kill resends, retention) and
    /// returns once their changes are durable. They also run every tick by themselves.
    pub async fn tick(&self) -> Result<(), MasterError> {
        self.call(|reply| Op::Tick { reply }).await
    }

    /// Several reports of one worker, applied in order in one batch; one outcome each.
    pub async fn reports(
        &self,
        worker: WorkerId,
        reports: Vec<WorkerReport>,
    ) -> Result<Vec<ReportOutcome>, MasterError> {
        self.call(|reply| Op::Reports {
            worker,
            reports,
            reply,
        })
        .await
    }

    // ----------------------------------------------------------------------------------------
    // Reads

    /// Workers with their resource usage, by id.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        cluster_workers(&self.view().cluster, |id| {
            self.shared.live.last_heartbeat(id)
        })
    }

    /// Refreshes the state gauges and renders every metric in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let view = self.view();
        let c = &view.cluster;
        for s in AppState::ALL {
            self.metrics.set_apps(s, c.count(s) as i64);
        }
        let mut workers: HashMap<WorkerState, i64> = HashMap::new();
        for w in c.workers() {
            *workers.entry(w.record.state).or_default() += 1;
        }
        for s in [WorkerState::Alive, WorkerState::Dead, WorkerState::Unknown] {
            self.metrics
                .set_workers(s, workers.get(&s).copied().unwrap_or(0));
        }
        self.metrics.queue_length.set(c.queued() as i64);
        self.metrics
            .engine_queue
            .set((self.tx.max_capacity() - self.tx.capacity()) as i64);
        self.metrics.render()
    }

    /// Runs the engine (and the event compactor) until `shutdown` resolves or the master is
    /// fenced. Runs once per master.
    pub async fn run_loops(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        let Some(engine) = self.engine.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        // Event retention runs on its own task: a large deletion never delays the engine
        // longer than one small transaction at a time.
        let compactor = {
            let this = self.clone();
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(std::time::Duration::from_secs(30));
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = every.tick() => {}
                    }
                    match this.compact_events().await {
                        Ok(0) => {}
                        Ok(n) => info!(deleted = n, "event log compacted"),
                        Err(e) => warn!("event log compaction failed: {e}"),
                    }
                }
            })
        };
        engine.run(shutdown).await;
        compactor.abort();
    }
}

/// The workers of `cluster` as the API shows them, with `last_heartbeat` from `heard` when it
/// knows better than the record (heartbeats are not stored).
pub fn cluster_workers(
    cluster: &Cluster,
    heard: impl Fn(&WorkerId) -> Option<chrono::DateTime<chrono::Utc>>,
) -> Vec<WorkerInfo> {
    cluster
        .workers()
        .map(|w| {
            let mut info = worker_info(&w.record, w.used_cores, w.used_memory_mb);
            info.apps = w
                .apps
                .iter()
                .filter_map(|s| cluster.app_by_seq(*s).map(|a| a.id.clone()))
                .collect();
            info.state = aloha_core::worker::WorkerStatus::of(&w.record, info.apps.len());
            if let Some(t) = heard(&w.record.id) {
                info.last_heartbeat = t;
            }
            info
        })
        .collect()
}

/// A worker as the API shows it, from its record and usage.
pub fn worker_info(w: &WorkerRecord, cores_used: u32, memory_used_mb: u64) -> WorkerInfo {
    WorkerInfo {
        id: w.id.clone(),
        address: w.address.clone(),
        state: aloha_core::worker::WorkerStatus::of(w, 0),
        drain_deadline: w.drain.map(|d| d.deadline),
        cores: w.cores,
        cores_used,
        memory_mb: w.memory_mb,
        memory_used_mb,
        last_heartbeat: w.last_heartbeat,
        apps: Vec::new(),
        kinds: w.kinds.clone(),
        plugin_errors: w.plugin_errors.clone(),
    }
}

/// Workers as the API shows them from stored records (standbys): usage derived from the apps
/// bound to each.
pub fn worker_infos<'a>(
    workers: impl Iterator<Item = &'a WorkerRecord>,
    apps: impl Iterator<Item = &'a App>,
) -> Vec<WorkerInfo> {
    let mut usage: HashMap<&WorkerId, (u32, u64, Vec<AppId>)> = HashMap::new();
    for app in apps.filter(|a| a.state.is_on_worker()) {
        if let Some(w) = &app.worker_id {
            let u = usage.entry(w).or_default();
            u.0 += app.cores;
            u.1 += app.memory_mb;
            u.2.push(app.id.clone());
        }
    }
    let mut out: Vec<WorkerInfo> = workers
        .map(|w| {
            let (cores_used, memory_used_mb, apps) = usage.remove(&w.id).unwrap_or_default();
            let mut info = worker_info(w, cores_used, memory_used_mb);
            info.state = aloha_core::worker::WorkerStatus::of(w, apps.len());
            info.apps = apps;
            info
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// An app as the API serves it: a waiting app's message says why it waits, computed from the
/// workers as they are now (it is never written to the store). Other apps are served as they
/// are, without a copy.
pub fn present<'a>(cluster: &Cluster, app: &'a App) -> std::borrow::Cow<'a, App> {
    // An app pausing before a relaunch keeps its message (it says when it is relaunched).
    if app.state.is_waiting() && app.relaunch_at.is_none() {
        let mut out = app.clone();
        out.message = Some(cluster.wait_reason(app));
        std::borrow::Cow::Owned(out)
    } else {
        std::borrow::Cow::Borrowed(app)
    }
}

/// Bumps the single-node epoch counter: every start of an embedded master is a new epoch.
pub async fn next_local_epoch(store: &dyn StateStore) -> Result<u64, StoreError> {
    let prev = read_u64(store, keys::EPOCH).await?;
    let mut txn = Txn::default();
    txn.put(keys::EPOCH, (prev + 1).to_string().into_bytes());
    store.txn(txn).await?;
    Ok(prev + 1)
}

#[cfg(test)]
mod tests;
