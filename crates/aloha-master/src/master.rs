//! The master's state and every operation on it.
//!
//! One `tokio::sync::Mutex` guards the in-memory view (apps, workers). Each operation
//! takes the lock, decides with the pure functions of `aloha-core`, makes the change on copies,
//! persists the copies in one store transaction, and only then installs them in memory. So the
//! memory view never holds anything the store does not, and a failed write changes nothing.
//! Commands to workers (launch, kill) are collected while the lock is held and sent after it is
//! released, so a slow worker never stalls the master. Liveness (heartbeats) sits apart behind
//! its own short lock: a heartbeat is recorded at once even while a slow store write holds the
//! state lock, so a stalled store never gets healthy workers declared dead.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use aloha_core::api::WorkerInfo;
use aloha_core::report::{self, Outcome, Report};
use aloha_core::schedule::{self, Capacity, Decision};
use aloha_core::{
    App, AppId, AppState, Event, EventBody, Liveness, SubmitError, SubmitRequest, WorkerId,
    WorkerRecord, WorkerState,
};
use aloha_proto as pb;
use tokio::sync::{Mutex, Notify};
use tracing::{debug, error, info, warn};

use crate::clock::Clock;
use crate::config::Config;
use crate::events::EventLog;
use crate::listeners::Listeners;
use crate::metrics::Metrics;
use crate::store::{keys, StateStore, StoreError, Txn};
use crate::worker_client::WorkerConnector;

/// Most app and worker records written in one store transaction. With their events (at most two
/// per record) and the sequence keys this stays under etcd's default `--max-txn-ops` of 128.
const MAX_RECORDS_PER_TXN: usize = 40;

/// How often a pending kill is sent again to a worker that has not confirmed it.
const KILL_RESEND_MS: u64 = 5_000;

/// Why an operation was refused. Mapped once to HTTP statuses in `http.rs`.
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
    /// The request conflicts with the app's state.
    #[error("{0}")]
    Conflict(String),
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

/// A command for a worker, sent after the state lock is released.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    Launch {
        worker: WorkerId,
        address: String,
        app: AppId,
        attempt: u32,
        description: String,
    },
    Kill {
        worker: WorkerId,
        address: String,
        app: AppId,
        attempt: u32,
        reason: String,
    },
}

/// Heartbeat bookkeeping, behind its own lock (see the module docs).
#[derive(Default)]
struct LiveTable {
    liveness: Liveness,
    /// Registered workers whose heartbeats count (registered and not declared dead).
    alive: HashSet<WorkerId>,
    /// Workers a launch to failed at the transport level: not placed on until they heartbeat.
    suspect: HashSet<WorkerId>,
    /// Workers stopping their apps because they shut down: never placed on again until they
    /// register anew.
    draining: HashSet<WorkerId>,
    /// Wall-clock time of the last heartbeat, for display.
    last_wall: HashMap<WorkerId, chrono::DateTime<chrono::Utc>>,
}

struct Inner {
    apps: BTreeMap<AppId, App>,
    workers: BTreeMap<WorkerId, WorkerRecord>,
    /// The last sequence number handed out (persisted as `meta/app_seq`).
    last_seq: u64,
    /// The last event sequence number written (persisted as `meta/event_seq`).
    last_event_seq: u64,
    /// Until when apps left UNKNOWN by a recovery may still be reported by their worker.
    recovery_deadline_ms: Option<u64>,
    /// When a kill was last sent per app, for resending.
    kill_sent_ms: HashMap<AppId, u64>,
}

/// Changes made on copies, persisted together, then installed.
#[derive(Default)]
struct Changes {
    apps: Vec<App>,
    workers: Vec<WorkerRecord>,
    /// Events not derived from the records (leadership).
    events: Vec<EventBody>,
    txn: Txn,
}

impl Changes {
    fn app(&mut self, app: App) {
        self.apps.retain(|a| a.id != app.id);
        self.apps.push(app);
    }

    fn worker(&mut self, w: WorkerRecord) {
        self.workers.retain(|x| x.id != w.id);
        self.workers.push(w);
    }

    fn is_empty(&self) -> bool {
        self.apps.is_empty()
            && self.workers.is_empty()
            && self.events.is_empty()
            && self.txn.is_empty()
    }

    /// The app as it will be after these changes.
    fn current<'a>(&'a self, inner: &'a Inner, id: &AppId) -> Option<&'a App> {
        self.apps
            .iter()
            .find(|a| &a.id == id)
            .or_else(|| inner.apps.get(id))
    }
}

fn json(v: &impl serde::Serialize) -> Vec<u8> {
    // Serializing our own plain data types cannot fail (no maps with non-string keys).
    serde_json::to_vec(v).expect("domain types serialize to JSON")
}

/// The master. Cheap to share behind an `Arc`.
pub struct Master {
    /// A weak handle to itself, for spawning command senders.
    me: Weak<Master>,
    inner: Mutex<Inner>,
    store: Arc<dyn StateStore>,
    connector: Arc<dyn WorkerConnector>,
    clock: Arc<dyn Clock>,
    cfg: Config,
    epoch: u64,
    wake_scheduler: Notify,
    /// Set once a write was refused by the leadership fence: this master must stop acting.
    fenced: AtomicBool,
    fenced_notify: Notify,
    live: std::sync::Mutex<LiveTable>,
    /// Metrics registry and families (shared by every master incarnation of the process).
    pub metrics: Arc<Metrics>,
    events: Arc<EventLog>,
    listeners: std::sync::OnceLock<Arc<Listeners>>,
}

impl Master {
    /// Loads the persisted state and recovers: waiting apps are queued again in their order,
    /// apps that were on workers become UNKNOWN until their worker reports them, workers are
    /// UNKNOWN until they re-register. `epoch` is this leadership's fencing token.
    pub async fn recover(
        cfg: Config,
        store: Arc<dyn StateStore>,
        connector: Arc<dyn WorkerConnector>,
        clock: Arc<dyn Clock>,
        epoch: u64,
        metrics: Arc<Metrics>,
        events: Arc<EventLog>,
    ) -> Result<Arc<Master>, StoreError> {
        let last_seq = match store.get(keys::APP_SEQ).await? {
            Some(v) => parse_u64(&v, keys::APP_SEQ)?,
            None => 0,
        };
        let last_event_seq = match store.get(crate::events::EVENT_SEQ).await? {
            Some(v) => parse_u64(&v, crate::events::EVENT_SEQ)?,
            None => 0,
        };
        let now = clock.now();
        let mono = clock.mono_ms();
        // Load the records as stored; the recovery changes go through `persist` below, like
        // every other change, so they are events too.
        let mut workers = BTreeMap::new();
        for (key, value) in store.scan_prefix(keys::WORKERS).await? {
            let w: WorkerRecord = decode(&key, &value)?;
            workers.insert(w.id.clone(), w);
        }
        let mut apps = BTreeMap::new();
        for (key, value) in store.scan_prefix(keys::APPS).await? {
            let app: App = decode(&key, &value)?;
            apps.insert(app.id.clone(), app);
        }
        let mut changes = Changes::default();
        let mut liveness = Liveness::default();
        for w in workers.values().filter(|w| w.state != WorkerState::Dead) {
            // Not heard from since the restart: give it one worker timeout to come back.
            let mut w = w.clone();
            w.state = WorkerState::Unknown;
            liveness.seen(&w.id, mono);
            changes.worker(w);
        }
        for app in apps.values() {
            if matches!(app.state, AppState::Launching | AppState::Running) {
                let mut app = app.clone();
                let msg = format!(
                    "master recovered; waiting for worker {} to report the app",
                    app.worker_id.as_ref().map(|w| w.as_str()).unwrap_or("?")
                );
                // LAUNCHING/RUNNING -> UNKNOWN is always legal.
                if app.transition(AppState::Unknown, now, Some(msg)).is_ok() {
                    changes.app(app);
                }
            }
        }
        changes.events.push(EventBody::LeaderChanged {
            role: aloha_core::api::Role::Alive,
            leader: Some(cfg.http_url()),
            epoch,
        });
        let master = Arc::new_cyclic(|me| Master {
            me: me.clone(),
            inner: Mutex::new(Inner {
                apps,
                workers,
                last_seq,
                last_event_seq,
                recovery_deadline_ms: Some(mono + cfg.worker_timeout.as_millis() as u64),
                kill_sent_ms: HashMap::new(),
            }),
            store,
            connector,
            clock,
            cfg,
            epoch,
            wake_scheduler: Notify::new(),
            fenced: AtomicBool::new(false),
            fenced_notify: Notify::new(),
            live: std::sync::Mutex::new(LiveTable {
                liveness,
                ..LiveTable::default()
            }),
            metrics,
            events,
            listeners: std::sync::OnceLock::new(),
        });
        {
            let mut inner = master.inner.lock().await;
            master.persist(&mut inner, changes).await?;
            let queued = inner.apps.values().filter(|a| a.state.is_waiting()).count();
            let unknown = inner
                .apps
                .values()
                .filter(|a| a.state == AppState::Unknown)
                .count();
            info!(
                epoch,
                apps = inner.apps.len(),
                queued,
                unknown,
                workers = inner.workers.len(),
                events = inner.last_event_seq,
                store = master.store.kind(),
                "recovered state"
            );
        }
        master.wake_scheduler.notify_one();
        Ok(master)
    }

    /// This master's epoch (fencing token) as sent to workers.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The one way state changes: derives the events of the changes, writes records and events
    /// in one store transaction, installs the records in memory, then publishes the events to
    /// the log's readers and the listeners. A failed write changes nothing.
    async fn persist(&self, inner: &mut Inner, mut changes: Changes) -> Result<(), StoreError> {
        // etcd refuses a transaction of more than `--max-txn-ops` operations (128 by default).
        // A large change (a recovery, a scheduling round after a worker joins a long queue) is
        // written in chunks of records, each with its own events; every chunk is a complete,
        // consistent change on its own, and a failed chunk leaves the ones before it applied.
        while changes.apps.len() + changes.workers.len() > MAX_RECORDS_PER_TXN {
            let mut chunk = Changes::default();
            let n = changes.workers.len().min(MAX_RECORDS_PER_TXN);
            chunk.workers = changes.workers.drain(..n).collect();
            let m = (MAX_RECORDS_PER_TXN - n).min(changes.apps.len());
            chunk.apps = changes.apps.drain(..m).collect();
            self.persist_one(inner, chunk).await?;
        }
        self.persist_one(inner, changes).await
    }

    async fn persist_one(&self, inner: &mut Inner, mut changes: Changes) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        if self.is_fenced() {
            return Err(StoreError::Fenced);
        }
        let mut bodies = Vec::new();
        for app in &changes.apps {
            bodies.extend(aloha_core::event::app_events(inner.apps.get(&app.id), app));
        }
        for w in &changes.workers {
            bodies.extend(aloha_core::event::worker_events(
                inner.workers.get(&w.id),
                w,
            ));
        }
        bodies.append(&mut changes.events);
        let now = self.clock.now();
        let mut seq = inner.last_event_seq;
        let events: Vec<Arc<Event>> = bodies
            .into_iter()
            .map(|body| {
                seq += 1;
                Arc::new(Event { seq, at: now, body })
            })
            .collect();
        for e in &events {
            changes.txn.put(crate::events::key(e.seq), json(e.as_ref()));
        }
        if !events.is_empty() {
            changes
                .txn
                .put(crate::events::EVENT_SEQ, seq.to_string().into_bytes());
        }
        for app in &changes.apps {
            changes.txn.put(keys::app(&app.id), json(app));
        }
        for w in &changes.workers {
            changes.txn.put(keys::worker(&w.id), json(w));
        }
        let timer = self.metrics.store_txn_timer();
        let ok = self.store.txn(changes.txn).await;
        drop(timer);
        let ok = match ok {
            Err(StoreError::Fenced) => {
                self.mark_fenced();
                return Err(StoreError::Fenced);
            }
            other => other?,
        };
        if !ok {
            // Our only compares are the fence's: the store changed under us.
            self.mark_fenced();
            return Err(StoreError::Fenced);
        }
        for app in changes.apps {
            if inner.apps.get(&app.id).map(|a| a.state) != Some(app.state) {
                self.metrics.transition(app.state);
            }
            inner.apps.insert(app.id.clone(), app);
        }
        for w in changes.workers {
            inner.workers.insert(w.id.clone(), w);
        }
        inner.last_event_seq = seq;
        if !events.is_empty() {
            self.events.published(&events);
            if let Some(l) = self.listeners.get() {
                l.publish(&events);
            }
        }
        Ok(())
    }

    /// Starts delivering events to `listeners` (once).
    pub fn attach_listeners(&self, listeners: Arc<Listeners>) {
        let _ = self.listeners.set(listeners);
    }

    /// The event log this master writes.
    pub fn event_log(&self) -> &Arc<EventLog> {
        &self.events
    }

    /// The master's (fenced) store, for the listeners' cursors.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
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

    fn live(&self) -> std::sync::MutexGuard<'_, LiveTable> {
        // Each critical section is a few map operations that cannot leave it inconsistent.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a write of this master was refused by the fence (it is no longer the leader).
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    fn mark_fenced(&self) {
        if !self.fenced.swap(true, Ordering::SeqCst) {
            error!(
                epoch = self.epoch,
                "a write was refused by the leadership fence: stepping down"
            );
            self.fenced_notify.notify_waiters();
        }
    }

    /// Resolves once this master has been fenced off.
    pub async fn fenced(&self) {
        loop {
            let notified = self.fenced_notify.notified();
            if self.is_fenced() {
                return;
            }
            notified.await;
        }
    }

    fn ensure_leader(&self, _inner: &Inner) -> Result<(), MasterError> {
        if self.is_fenced() {
            Err(MasterError::NotLeader { leader: None })
        } else {
            Ok(())
        }
    }

    fn known_kinds(&self, inner: &Inner) -> Vec<String> {
        let mut kinds: Vec<String> = self.cfg.allowed_kinds.clone();
        for w in inner.workers.values() {
            kinds.extend(w.kinds.iter().cloned());
        }
        kinds.sort();
        kinds.dedup();
        kinds
    }

    // ----------------------------------------------------------------------------------------
    // REST operations

    /// Accepts a submission: durable before this returns.
    pub async fn submit(&self, req: SubmitRequest) -> Result<App, MasterError> {
        let mut inner = self.inner.lock().await;
        self.ensure_leader(&inner)?;
        let kinds = self.known_kinds(&inner);
        req.validate(kinds.iter().map(String::as_str))?;
        let seq = inner.last_seq + 1;
        let now = self.clock.now();
        let app = App::submitted(AppId::new(seq, now), seq, req, now);
        let mut changes = Changes::default();
        changes.txn.put(keys::APP_SEQ, seq.to_string().into_bytes());
        changes.app(app.clone());
        self.persist(&mut inner, changes).await?;
        inner.last_seq = seq;
        self.metrics.submitted.inc();
        info!(app_id = %app.id, name = %app.name, kind = %app.kind, "app submitted");
        drop(inner);
        self.wake_scheduler.notify_one();
        Ok(app)
    }

    /// One app.
    pub async fn app(&self, id: &str) -> Result<App, MasterError> {
        let inner = self.inner.lock().await;
        inner
            .apps
            .get(&AppId(id.to_string()))
            .cloned()
            .ok_or_else(|| MasterError::AppNotFound(id.to_string()))
    }

    /// Apps, newest first, optionally only those in `state`, at most `limit`.
    pub async fn apps(&self, state: Option<AppState>, limit: usize) -> Vec<App> {
        let inner = self.inner.lock().await;
        let mut apps: Vec<&App> = inner
            .apps
            .values()
            .filter(|a| state.is_none_or(|s| a.state == s))
            .collect();
        apps.sort_by_key(|a| std::cmp::Reverse(a.seq));
        apps.into_iter().take(limit).cloned().collect()
    }

    /// Asks for an app to be killed. Waiting apps end KILLED at once; apps on a worker get a
    /// kill command and end KILLED when the worker reports it.
    pub async fn kill(&self, id: &str, reason: Option<String>) -> Result<App, MasterError> {
        let reason = reason
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| "requested by the user".to_string());
        let mut inner = self.inner.lock().await;
        self.ensure_leader(&inner)?;
        let id = AppId(id.to_string());
        let mut app = inner
            .apps
            .get(&id)
            .cloned()
            .ok_or_else(|| MasterError::AppNotFound(id.0.clone()))?;
        if app.state.is_terminal() {
            return Err(MasterError::Conflict(format!(
                "app {id} already ended {}",
                app.state
            )));
        }
        let now = self.clock.now();
        app.kill_requested = true;
        app.kill_reason = Some(reason.clone());
        let mut commands = Vec::new();
        if app.state.is_waiting() {
            app.transition(AppState::Killed, now, Some(format!("killed: {reason}")))
                .map_err(|e| MasterError::Conflict(e.to_string()))?;
        } else {
            app.message = Some(format!("kill requested: {reason}"));
            if let Some(cmd) = self.kill_command(&inner, &app, &reason) {
                commands.push(cmd);
                inner
                    .kill_sent_ms
                    .insert(app.id.clone(), self.clock.mono_ms());
            }
        }
        let mut changes = Changes::default();
        changes.app(app.clone());
        self.persist(&mut inner, changes).await?;
        info!(app_id = %id, %reason, "kill requested");
        drop(inner);
        self.dispatch(commands);
        self.wake_scheduler.notify_one();
        Ok(app)
    }

    fn kill_command(&self, inner: &Inner, app: &App, reason: &str) -> Option<Command> {
        let worker = app.worker_id.as_ref()?;
        let w = inner.workers.get(worker)?;
        (w.state == WorkerState::Alive).then(|| Command::Kill {
            worker: worker.clone(),
            address: w.address.clone(),
            app: app.id.clone(),
            attempt: app.attempt,
            reason: reason.to_string(),
        })
    }

    /// Workers with their resource usage, by id.
    pub async fn workers(&self) -> Vec<WorkerInfo> {
        let inner = self.inner.lock().await;
        let mut infos = worker_infos(inner.workers.values(), inner.apps.values());
        let live = self.live();
        for w in &mut infos {
            if let Some(t) = live.last_wall.get(&w.id) {
                w.last_heartbeat = *t;
            }
        }
        infos
    }

    /// Every app, for reads that need the whole set.
    pub async fn all_apps(&self) -> Vec<App> {
        self.inner.lock().await.apps.values().cloned().collect()
    }

    /// Refreshes the state gauges and renders every metric in the Prometheus text format.
    pub async fn render_metrics(&self) -> String {
        {
            let inner = self.inner.lock().await;
            let mut by_state: HashMap<AppState, i64> = HashMap::new();
            for a in inner.apps.values() {
                *by_state.entry(a.state).or_default() += 1;
            }
            for s in AppState::ALL {
                self.metrics
                    .set_apps(s, by_state.get(&s).copied().unwrap_or(0));
            }
            for s in [WorkerState::Alive, WorkerState::Dead, WorkerState::Unknown] {
                let n = inner.workers.values().filter(|w| w.state == s).count();
                self.metrics.set_workers(s, n as i64);
            }
            let queued = inner.apps.values().filter(|a| a.state.is_waiting()).count();
            self.metrics.queue_length.set(queued as i64);
        }
        self.metrics.render()
    }

    // ----------------------------------------------------------------------------------------
    // Worker RPCs

    fn not_leader_register(&self) -> pb::RegisterWorkerResponse {
        pb::RegisterWorkerResponse {
            accepted: false,
            message: "not leader".into(),
            ..Default::default()
        }
    }

    /// A worker (re-)registers and lists the apps it holds; the master reconciles: apps it owns
    /// there are confirmed, apps it does not own are killed, apps it expected there but the
    /// worker does not list are lost.
    pub async fn register_worker(
        &self,
        req: pb::RegisterWorkerRequest,
    ) -> Result<pb::RegisterWorkerResponse, MasterError> {
        if req.worker_id.trim().is_empty() || req.address.trim().is_empty() {
            return Err(MasterError::BadRequest(
                "worker_id and address are required".into(),
            ));
        }
        let mut inner = self.inner.lock().await;
        if self.is_fenced() {
            return Ok(self.not_leader_register());
        }
        let now = self.clock.now();
        let wid = WorkerId(req.worker_id.clone());
        let record = WorkerRecord {
            id: wid.clone(),
            address: req.address.clone(),
            cores: req.cores,
            memory_mb: req.memory_mb,
            kinds: req.kinds.clone(),
            state: WorkerState::Alive,
            registered_at: now,
            last_heartbeat: now,
            plugin_errors: req.plugin_errors.clone(),
            dead_since: None,
        };
        let mut changes = Changes::default();
        changes.worker(record);
        let mut kill = Vec::new();
        // Which attempts the worker holds: a different attempt of an app does not count.
        let mut reported: HashSet<(AppId, u32)> = HashSet::new();
        for r in &req.apps {
            let id = AppId(r.app_id.clone());
            reported.insert((id.clone(), r.attempt));
            match self.apply_report(&inner, &mut changes, &wid, r) {
                ReportResult::Kill => kill.push(pb::AppRef {
                    app_id: r.app_id.clone(),
                    attempt: r.attempt,
                }),
                ReportResult::Done | ReportResult::Refused(_) => {}
            }
        }
        // Apps the master placed on this worker that the worker no longer has.
        let lost: Vec<AppId> = inner
            .apps
            .values()
            .filter(|a| {
                a.state.is_on_worker()
                    && a.worker_id.as_ref() == Some(&wid)
                    && !reported.contains(&(a.id.clone(), a.attempt))
            })
            .map(|a| a.id.clone())
            .collect();
        for id in lost {
            if let Some(mut app) = changes.current(&inner, &id).cloned() {
                let outcome = if app.started_at.is_none() {
                    // The attempt never started: the launch was lost with a master (the worker
                    // lists every attempt it took, finished ones included). It never ran, so
                    // it is queued again without spending a retry; the worker now follows this
                    // epoch and refuses the old launch should it still arrive.
                    let next = if app.kill_requested {
                        AppState::Killed
                    } else {
                        AppState::Relaunching
                    };
                    let msg = format!(
                        "worker {wid} never received attempt {}; queued again",
                        app.attempt
                    );
                    app.transition(next, now, Some(msg)).map(|()| next)
                } else {
                    let reason =
                        format!("worker {wid} re-registered without attempt {}", app.attempt);
                    app.lose(&reason, now)
                };
                if outcome.is_ok() {
                    warn!(app_id = %id, worker_id = %wid, state = %app.state, "app lost on re-registration");
                    changes.app(app);
                }
            }
        }
        self.persist(&mut inner, changes).await?;
        {
            let mut live = self.live();
            live.liveness.seen(&wid, self.clock.mono_ms());
            live.alive.insert(wid.clone());
            live.suspect.remove(&wid);
            live.draining.remove(&wid);
            live.last_wall.insert(wid.clone(), now);
        }
        info!(worker_id = %wid, address = %req.address, cores = req.cores, memory_mb = req.memory_mb,
              kinds = ?req.kinds, apps = req.apps.len(), killed = kill.len(), "worker registered");
        for e in &req.plugin_errors {
            warn!(worker_id = %wid, "plugin failed to load on worker: {e}");
        }
        let resend = self.pending_kills(&mut inner, Some(&wid), true);
        drop(inner);
        self.dispatch(resend);
        self.wake_scheduler.notify_one();
        Ok(pb::RegisterWorkerResponse {
            accepted: true,
            leader_rpc_address: self.cfg.rpc_url(),
            epoch: self.epoch,
            heartbeat_interval_ms: self.cfg.heartbeat_interval().as_millis() as u64,
            kill,
            message: String::new(),
        })
    }

    /// A heartbeat. Unknown or dead workers are told to register again. Takes only the
    /// liveness lock, never the state lock.
    pub async fn heartbeat(&self, worker_id: &str) -> pb::HeartbeatResponse {
        if self.is_fenced() {
            return pb::HeartbeatResponse {
                accepted: false,
                ..Default::default()
            };
        }
        let wid = WorkerId(worker_id.to_string());
        let mut live = self.live();
        if !live.alive.contains(&wid) {
            drop(live);
            debug!(
                worker_id,
                "heartbeat from an unregistered or dead worker; asking it to register"
            );
            return pb::HeartbeatResponse {
                reregister: true,
                accepted: true,
                leader_rpc_address: self.cfg.rpc_url(),
                epoch: self.epoch,
            };
        }
        live.liveness.seen(&wid, self.clock.mono_ms());
        live.suspect.remove(&wid);
        // Not persisted: liveness is in-memory and a new leader begins with a fresh timeout.
        live.last_wall.insert(wid, self.clock.now());
        pb::HeartbeatResponse {
            reregister: false,
            accepted: true,
            leader_rpc_address: self.cfg.rpc_url(),
            epoch: self.epoch,
        }
    }

    /// A worker's report of an app's state.
    pub async fn report(
        &self,
        r: pb::AppStateReport,
    ) -> Result<pb::ReportAppStateResponse, MasterError> {
        let mut inner = self.inner.lock().await;
        if self.is_fenced() {
            return Ok(pb::ReportAppStateResponse {
                accepted: false,
                kill: false,
                message: "not leader".into(),
            });
        }
        let wid = WorkerId(r.worker_id.clone());
        let registered = inner
            .workers
            .get(&wid)
            .is_some_and(|w| w.state == WorkerState::Alive);
        if !registered {
            // Keep the report on the worker: it re-registers and lists the app.
            return Ok(pb::ReportAppStateResponse {
                accepted: false,
                kill: false,
                message: format!("worker {wid} is not registered; register first"),
            });
        }
        if r.worker_shutdown {
            // The worker is going away: nothing new goes there (relaunches included).
            self.live().draining.insert(wid.clone());
        }
        let mut changes = Changes::default();
        let result = self.apply_report(&inner, &mut changes, &wid, &r);
        let terminal = changes.apps.iter().any(|a| !a.state.is_on_worker());
        self.persist(&mut inner, changes).await?;
        if terminal {
            inner.kill_sent_ms.remove(&AppId(r.app_id.clone()));
        }
        drop(inner);
        if terminal {
            self.wake_scheduler.notify_one();
        }
        Ok(match result {
            ReportResult::Done => pb::ReportAppStateResponse {
                accepted: true,
                kill: false,
                message: String::new(),
            },
            ReportResult::Kill => pb::ReportAppStateResponse {
                accepted: true,
                kill: true,
                message: format!(
                    "the master does not own attempt {} of {} on {wid}",
                    r.attempt, r.app_id
                ),
            },
            // Refused for good: the worker must not resend it.
            ReportResult::Refused(msg) => pb::ReportAppStateResponse {
                accepted: true,
                kill: false,
                message: msg,
            },
        })
    }

    fn apply_report(
        &self,
        inner: &Inner,
        changes: &mut Changes,
        wid: &WorkerId,
        r: &pb::AppStateReport,
    ) -> ReportResult {
        let id = AppId(r.app_id.clone());
        let state: AppState = match r.state.parse() {
            Ok(s) => s,
            Err(e) => {
                warn!(app_id = %id, worker_id = %wid, "refused report: {e}");
                return ReportResult::Refused(e.to_string());
            }
        };
        let Some(mut app) = changes.current(inner, &id).cloned() else {
            warn!(app_id = %id, worker_id = %wid, "report for an app this master does not know");
            return if state.is_terminal() {
                ReportResult::Done
            } else {
                ReportResult::Kill
            };
        };
        let rep = Report {
            worker: wid.clone(),
            attempt: r.attempt,
            state,
            exit_code: r.exit_code,
            message: Some(r.message.clone()).filter(|m| !m.is_empty()),
            worker_shutdown: r.worker_shutdown,
        };
        let old = app.state;
        let details_changed =
            !r.details.is_empty() && r.details.iter().any(|(k, v)| app.details.get(k) != Some(v));
        match report::apply(&mut app, &rep, self.clock.now()) {
            Outcome::Applied(new) => {
                app.details.extend(r.details.clone());
                info!(app_id = %id, worker_id = %wid, attempt = r.attempt, from = %old, to = %new,
                      message = app.message.as_deref().unwrap_or(""), "app state changed");
                changes.app(app);
                ReportResult::Done
            }
            Outcome::AlreadyKnown => {
                if details_changed {
                    app.details.extend(r.details.clone());
                    changes.app(app);
                }
                ReportResult::Done
            }
            Outcome::Stale { kill } => {
                debug!(app_id = %id, worker_id = %wid, attempt = r.attempt, reported = %state,
                       current = %app.state, "stale report");
                if kill {
                    ReportResult::Kill
                } else {
                    ReportResult::Done
                }
            }
            Outcome::Illegal(e) => {
                error!(app_id = %id, worker_id = %wid, "refused illegal report: {e}");
                ReportResult::Refused(e.to_string())
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // Scheduling and timers

    /// Runs one placement round: decides with `aloha_core::schedule::place`, persists the
    /// LAUNCHING apps in one transaction, then sends the launch commands.
    pub async fn schedule_round(&self) -> Result<usize, StoreError> {
        let mut inner = self.inner.lock().await;
        if self.is_fenced() {
            return Ok(0);
        }
        let waiting: Vec<&App> = inner
            .apps
            .values()
            .filter(|a| a.state.is_waiting())
            .collect();
        if waiting.is_empty() {
            return Ok(0);
        }
        let mut used: HashMap<&WorkerId, (u32, u64)> = HashMap::new();
        for a in inner.apps.values().filter(|a| a.state.is_on_worker()) {
            if let Some(w) = &a.worker_id {
                let u = used.entry(w).or_default();
                u.0 += a.cores;
                u.1 += a.memory_mb;
            }
        }
        let excluded: HashSet<WorkerId> = {
            let live = self.live();
            live.suspect.union(&live.draining).cloned().collect()
        };
        let capacities: Vec<Capacity> = inner
            .workers
            .values()
            .filter(|w| w.state == WorkerState::Alive && !excluded.contains(&w.id))
            .map(|w| {
                let (c, m) = used.get(&w.id).copied().unwrap_or_default();
                Capacity {
                    id: w.id.clone(),
                    cores: w.cores,
                    memory_mb: w.memory_mb,
                    free_cores: w.cores.saturating_sub(c),
                    free_memory_mb: w.memory_mb.saturating_sub(m),
                    kinds: w.kinds.clone(),
                }
            })
            .collect();
        let decisions = schedule::place(&waiting, &capacities);
        let now = self.clock.now();
        let mut changes = Changes::default();
        let mut commands = Vec::new();
        for d in decisions {
            match d {
                Decision::Place { app, worker } => {
                    let (Some(mut a), Some(w)) =
                        (inner.apps.get(&app).cloned(), inner.workers.get(&worker))
                    else {
                        continue;
                    };
                    a.worker_id = Some(worker.clone());
                    if let Err(e) = a.transition(
                        AppState::Launching,
                        now,
                        Some(format!("launching on worker {worker}")),
                    ) {
                        error!("scheduler produced an illegal launch: {e}");
                        continue;
                    }
                    commands.push(Command::Launch {
                        worker: worker.clone(),
                        address: w.address.clone(),
                        app: a.id.clone(),
                        attempt: a.attempt,
                        description: serde_json::to_string(&a.description())
                            .expect("descriptions serialize to JSON"),
                    });
                    info!(app_id = %a.id, worker_id = %worker, attempt = a.attempt, "placing app");
                    changes.app(a);
                }
                Decision::Wait { app, reason } => {
                    if let Some(a) = inner.apps.get(&app) {
                        if a.message.as_deref() != Some(reason.as_str()) {
                            let mut a = a.clone();
                            a.message = Some(reason);
                            changes.app(a);
                        }
                    }
                }
            }
        }
        let placed = commands.len();
        self.persist(&mut inner, changes).await?;
        drop(inner);
        self.dispatch(commands);
        Ok(placed)
    }

    /// Liveness and recovery timers: declares silent workers DEAD and loses their apps,
    /// loses apps no worker reported within the timeout after a recovery, resends pending
    /// kills.
    pub async fn tick(&self) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().await;
        if self.is_fenced() {
            return Ok(());
        }
        let mono = self.clock.mono_ms();
        let now = self.clock.now();
        let timeout = self.cfg.worker_timeout.as_millis() as u64;
        let mut changes = Changes::default();
        let (expired, silences): (Vec<WorkerId>, HashMap<WorkerId, u64>) = {
            let live = self.live();
            let expired = live.liveness.expired(mono, timeout);
            let silences = expired
                .iter()
                .map(|w| {
                    (
                        w.clone(),
                        live.liveness.silence_ms(w, mono).unwrap_or(timeout),
                    )
                })
                .collect();
            (expired, silences)
        };
        for wid in &expired {
            let Some(mut w) = inner.workers.get(wid).cloned() else {
                continue;
            };
            let silence = silences.get(wid).copied().unwrap_or(timeout);
            let reason = format!(
                "worker {wid} lost: no heartbeat for {}",
                humantime::format_duration(std::time::Duration::from_millis(silence / 100 * 100))
            );
            warn!(worker_id = %wid, "{reason}");
            w.state = WorkerState::Dead;
            changes.worker(w);
            let on_it: Vec<AppId> = inner
                .apps
                .values()
                .filter(|a| a.state.is_on_worker() && a.worker_id.as_ref() == Some(wid))
                .map(|a| a.id.clone())
                .collect();
            for id in on_it {
                if let Some(mut app) = changes.current(&inner, &id).cloned() {
                    if let Ok(state) = app.lose(&reason, now) {
                        info!(app_id = %id, to = %state, "app lost with its worker");
                        changes.app(app);
                    }
                }
            }
        }
        if inner.recovery_deadline_ms.is_some_and(|d| mono > d) {
            inner.recovery_deadline_ms = None;
            let stuck: Vec<AppId> = inner
                .apps
                .values()
                .filter(|a| {
                    a.state == AppState::Unknown
                        && !a
                            .worker_id
                            .as_ref()
                            .and_then(|w| inner.workers.get(w))
                            .is_some_and(|w| w.state == WorkerState::Alive)
                })
                .map(|a| a.id.clone())
                .collect();
            for id in stuck {
                // Judge by the state after this tick's other changes: an app whose worker was
                // just declared dead has already been handled above.
                let current = changes.current(&inner, &id).cloned();
                if let Some(mut app) = current.filter(|a| a.state == AppState::Unknown) {
                    let reason = format!(
                        "no worker reported the app within {} of master recovery",
                        humantime::format_duration(self.cfg.worker_timeout)
                    );
                    if app.lose(&reason, now).is_ok() {
                        changes.app(app);
                    }
                }
            }
        }
        let lost_any = !changes.apps.is_empty();
        self.persist(&mut inner, changes).await?;
        {
            let mut live = self.live();
            for wid in &expired {
                // A worker that heartbeated again while this tick ran is left alone: its
                // heartbeat now asks it to register again.
                live.liveness.forget(wid);
                live.alive.remove(wid);
            }
        }
        let resend = self.pending_kills(&mut inner, None, false);
        drop(inner);
        self.dispatch(resend);
        if lost_any {
            self.wake_scheduler.notify_one();
        }
        Ok(())
    }

    /// Kill commands for apps with a pending kill that were not sent recently (or at all, when
    /// `force`), optionally only on one worker.
    fn pending_kills(
        &self,
        inner: &mut Inner,
        only: Option<&WorkerId>,
        force: bool,
    ) -> Vec<Command> {
        let mono = self.clock.mono_ms();
        let due: Vec<App> = inner
            .apps
            .values()
            .filter(|a| a.kill_requested && a.state.is_on_worker())
            .filter(|a| only.is_none() || a.worker_id.as_ref() == only)
            .filter(|a| {
                force
                    || inner
                        .kill_sent_ms
                        .get(&a.id)
                        .is_none_or(|&t| mono.saturating_sub(t) >= KILL_RESEND_MS)
            })
            .cloned()
            .collect();
        let mut out = Vec::new();
        for app in due {
            let reason = app
                .kill_reason
                .clone()
                .unwrap_or_else(|| "requested by the user".to_string());
            if let Some(cmd) = self.kill_command(inner, &app, &reason) {
                inner.kill_sent_ms.insert(app.id.clone(), mono);
                out.push(cmd);
            }
        }
        out
    }

    /// A launch command did not reach the worker or was refused by it: the attempt never
    /// started, so the app goes back to the queue without spending a retry, and the worker is
    /// not used again until it heartbeats.
    async fn launch_failed(&self, worker: &WorkerId, app: &AppId, attempt: u32, why: String) {
        let mut inner = self.inner.lock().await;
        self.live().suspect.insert(worker.clone());
        let Some(mut a) = inner.apps.get(app).cloned() else {
            return;
        };
        if a.state != AppState::Launching
            || a.attempt != attempt
            || a.worker_id.as_ref() != Some(worker)
        {
            return;
        }
        let now = self.clock.now();
        let next = if a.kill_requested {
            AppState::Killed
        } else {
            AppState::Relaunching
        };
        let msg = format!("launch on worker {worker} failed: {why}");
        warn!(app_id = %app, worker_id = %worker, "{msg}");
        if a.transition(next, now, Some(msg)).is_err() {
            return;
        }
        let mut changes = Changes::default();
        changes.app(a);
        if let Err(e) = self.persist(&mut inner, changes).await {
            error!(app_id = %app, "could not persist a failed launch: {e}");
        }
        drop(inner);
        self.wake_scheduler.notify_one();
    }

    /// The worker answered a kill by saying it does not run the attempt: the app is lost there.
    async fn kill_missed(&self, worker: &WorkerId, app: &AppId, attempt: u32, why: String) {
        let mut inner = self.inner.lock().await;
        let Some(mut a) = inner.apps.get(app).cloned() else {
            return;
        };
        if !a.state.is_on_worker() || a.attempt != attempt || a.worker_id.as_ref() != Some(worker) {
            return;
        }
        if a.lose(
            &format!("worker {worker} does not run attempt {attempt}: {why}"),
            self.clock.now(),
        )
        .is_ok()
        {
            let mut changes = Changes::default();
            changes.app(a);
            if let Err(e) = self.persist(&mut inner, changes).await {
                error!(app_id = %app, "could not persist a missed kill: {e}");
            }
        }
    }

    fn dispatch(&self, commands: Vec<Command>) {
        if commands.is_empty() {
            return;
        }
        let Some(this) = self.self_ref() else {
            return;
        };
        for cmd in commands {
            let this = this.clone();
            tokio::spawn(async move { this.send(cmd).await });
        }
    }

    async fn send(self: Arc<Self>, cmd: Command) {
        match cmd {
            Command::Launch {
                worker,
                address,
                app,
                attempt,
                description,
            } => {
                let req = pb::LaunchAppRequest {
                    epoch: self.epoch,
                    app_id: app.0.clone(),
                    attempt,
                    description_json: description,
                };
                let timer = self.metrics.rpc_timer("launch_app");
                let res = self.connector.launch(&address, req).await;
                drop(timer);
                match res {
                    Ok(r) if r.accepted => {
                        debug!(app_id = %app, worker_id = %worker, "launch accepted")
                    }
                    Ok(r) => {
                        self.launch_failed(
                            &worker,
                            &app,
                            attempt,
                            format!("refused: {}", r.message),
                        )
                        .await
                    }
                    Err(e) => self.launch_failed(&worker, &app, attempt, e).await,
                }
            }
            Command::Kill {
                worker,
                address,
                app,
                attempt,
                reason,
            } => {
                let req = pb::KillAppRequest {
                    epoch: self.epoch,
                    app_id: app.0.clone(),
                    attempt,
                    reason,
                };
                let timer = self.metrics.rpc_timer("kill_app");
                let res = self.connector.kill(&address, req).await;
                drop(timer);
                match res {
                    Ok(r) if r.accepted => {
                        debug!(app_id = %app, worker_id = %worker, "kill accepted")
                    }
                    Ok(r) => self.kill_missed(&worker, &app, attempt, r.message).await,
                    // Transport errors: resent by the tick until the worker answers or is lost.
                    Err(e) => warn!(app_id = %app, worker_id = %worker, "kill not delivered: {e}"),
                }
            }
        }
    }

    /// Runs the scheduler and the timers until `shutdown` resolves.
    pub async fn run_loops(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let tick_every = (self.cfg.worker_timeout / 10).clamp(
            std::time::Duration::from_millis(50),
            std::time::Duration::from_secs(1),
        );
        let mut ticker = tokio::time::interval(tick_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Event retention runs on its own task: a large deletion never delays scheduling.
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
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = self.wake_scheduler.notified() => {}
                _ = ticker.tick() => {
                    if let Err(e) = self.tick().await {
                        error!("liveness check failed: {e}");
                    }
                }
            }
            if let Err(e) = self.schedule_round().await {
                error!("scheduling round failed: {e}");
            }
        }
        compactor.abort();
    }

    fn self_ref(&self) -> Option<Arc<Master>> {
        self.me.upgrade()
    }
}

/// Workers as the API shows them: resource usage derived from the apps bound to each.
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
            WorkerInfo {
                id: w.id.clone(),
                address: w.address.clone(),
                state: w.state,
                cores: w.cores,
                cores_used,
                memory_mb: w.memory_mb,
                memory_used_mb,
                last_heartbeat: w.last_heartbeat,
                apps,
                kinds: w.kinds.clone(),
                plugin_errors: w.plugin_errors.clone(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Bumps the single-node epoch counter: every start of an embedded master is a new epoch.
pub async fn next_local_epoch(store: &dyn StateStore) -> Result<u64, StoreError> {
    let prev = match store.get(keys::EPOCH).await? {
        Some(v) => parse_u64(&v, keys::EPOCH)?,
        None => 0,
    };
    let mut txn = Txn::default();
    txn.put(keys::EPOCH, (prev + 1).to_string().into_bytes());
    store.txn(txn).await?;
    Ok(prev + 1)
}

enum ReportResult {
    Done,
    Kill,
    Refused(String),
}

fn parse_u64(v: &[u8], key: &str) -> Result<u64, StoreError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::Backend(format!("corrupt value under {key}")))
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, v: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Backend(format!("corrupt record {key}: {e}")))
}

#[cfg(test)]
mod tests {
    //! The master's operations over the in-memory store with a hand-driven clock. Commands to
    //! workers are recorded by a connector at the gRPC edge; the end-to-end tests in `tests/`
    //! run the same paths over real gRPC.
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::MemoryStore;
    use async_trait::async_trait;
    use std::sync::Mutex as StdMutex;
    use std::time::Duration;

    #[derive(Default)]
    struct Recorder {
        sent: StdMutex<Vec<(String, String, u32)>>, // (verb, app, attempt)
    }

    #[async_trait]
    impl WorkerConnector for Recorder {
        async fn launch(
            &self,
            _: &str,
            r: pb::LaunchAppRequest,
        ) -> Result<pb::LaunchAppResponse, String> {
            self.sent
                .lock()
                .unwrap()
                .push(("launch".into(), r.app_id, r.attempt));
            Ok(pb::LaunchAppResponse {
                accepted: true,
                message: String::new(),
            })
        }
        async fn kill(
            &self,
            _: &str,
            r: pb::KillAppRequest,
        ) -> Result<pb::KillAppResponse, String> {
            self.sent
                .lock()
                .unwrap()
                .push(("kill".into(), r.app_id, r.attempt));
            Ok(pb::KillAppResponse {
                accepted: true,
                message: String::new(),
            })
        }
    }

    struct Rig {
        master: Arc<Master>,
        store: Arc<MemoryStore>,
        clock: Arc<ManualClock>,
        rec: Arc<Recorder>,
    }

    fn cfg() -> Config {
        Config {
            worker_timeout: Duration::from_secs(10),
            ..Config::default()
        }
    }

    async fn rig_on(store: Arc<MemoryStore>, clock: Arc<ManualClock>) -> Rig {
        let rec = Arc::new(Recorder::default());
        let epoch = next_local_epoch(store.as_ref()).await.unwrap();
        let metrics = Arc::new(Metrics::new());
        let master = Master::recover(
            cfg(),
            store.clone(),
            rec.clone(),
            clock.clone(),
            epoch,
            metrics,
            EventLog::new(store.clone()),
        )
        .await
        .unwrap();
        Rig {
            master,
            store,
            clock,
            rec,
        }
    }

    async fn rig() -> Rig {
        rig_on(
            Arc::new(MemoryStore::new()),
            Arc::new(ManualClock::default()),
        )
        .await
    }

    fn reg(id: &str, cores: u32, apps: Vec<pb::AppStateReport>) -> pb::RegisterWorkerRequest {
        pb::RegisterWorkerRequest {
            worker_id: id.into(),
            address: format!("{id}:1"),
            cores,
            memory_mb: 4096,
            kinds: vec!["process".into()],
            apps,
            plugin_errors: vec![],
        }
    }

    fn report(worker: &str, app: &str, attempt: u32, state: &str) -> pb::AppStateReport {
        pb::AppStateReport {
            worker_id: worker.into(),
            app_id: app.into(),
            attempt,
            state: state.into(),
            ..Default::default()
        }
    }

    fn submit_req(max_retries: i64) -> SubmitRequest {
        serde_json::from_value(serde_json::json!({
            "name": "t", "kind": "process", "spec": {"command": ["true"]}, "max_retries": max_retries
        }))
        .unwrap()
    }

    async fn sent(rec: &Recorder, n: usize) -> Vec<(String, String, u32)> {
        for _ in 0..200 {
            if rec.sent.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        rec.sent.lock().unwrap().clone()
    }

    async fn running_app(r: &Rig, worker: &str, max_retries: i64) -> String {
        let app = r.master.submit(submit_req(max_retries)).await.unwrap();
        assert_eq!(r.master.schedule_round().await.unwrap(), 1);
        let id = app.id.0.clone();
        let a = r.master.app(&id).await.unwrap();
        assert_eq!(a.state, AppState::Launching);
        assert_eq!(a.worker_id.as_ref().map(|w| w.as_str()), Some(worker));
        r.master
            .report(report(worker, &id, 1, "RUNNING"))
            .await
            .unwrap();
        id
    }

    #[tokio::test]
    async fn submit_place_launch_run_finish() {
        let r = rig().await;
        r.master
            .register_worker(reg("w1", 2, vec![]))
            .await
            .unwrap();
        let id = running_app(&r, "w1", 0).await;
        assert_eq!(sent(&r.rec, 1).await, [("launch".into(), id.clone(), 1)]);
        let mut fin = report("w1", &id, 1, "FINISHED");
        fin.exit_code = Some(0);
        r.master.report(fin).await.unwrap();
        let app = r.master.app(&id).await.unwrap();
        assert_eq!(app.state, AppState::Finished);
        assert_eq!(app.exit_code, Some(0));
        // Persisted, not just in memory.
        let stored: App =
            serde_json::from_slice(&r.store.get(&keys::app(&app.id)).await.unwrap().unwrap())
                .unwrap();
        assert_eq!(stored, app);
    }

    #[tokio::test]
    async fn a_silent_worker_dies_and_its_app_moves() {
        let r = rig().await;
        r.master
            .register_worker(reg("w1", 2, vec![]))
            .await
            .unwrap();
        let id = running_app(&r, "w1", 1).await;
        r.master
            .register_worker(reg("w2", 2, vec![]))
            .await
            .unwrap();
        r.clock.advance(6_000);
        r.master.heartbeat("w2").await;
        r.master.tick().await.unwrap();
        assert_eq!(
            r.master.app(&id).await.unwrap().state,
            AppState::Running,
            "not yet"
        );
        r.clock.advance(5_000);
        r.master.tick().await.unwrap();
        let app = r.master.app(&id).await.unwrap();
        assert_eq!(app.state, AppState::Relaunching);
        assert!(app
            .message
            .unwrap()
            .starts_with("worker w1 lost: no heartbeat for"));
        let workers = r.master.workers().await;
        assert_eq!(workers[0].state, WorkerState::Dead);
        assert_eq!(r.master.schedule_round().await.unwrap(), 1);
        let app = r.master.app(&id).await.unwrap();
        assert_eq!(
            (app.attempt, app.worker_id.unwrap().0),
            (2, "w2".to_string())
        );
    }

    #[tokio::test]
    async fn recovery_marks_running_apps_unknown_until_their_worker_reports() {
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(ManualClock::default());
        let r = rig_on(store.clone(), clock.clone()).await;
        r.master
            .register_worker(reg("w1", 2, vec![]))
            .await
            .unwrap();
        let id = running_app(&r, "w1", 0).await;
        let waiting = r
            .master
            .submit(
                serde_json::from_value(
                    serde_json::json!({"name": "big", "kind": "process", "cores": 8}),
                )
                .unwrap(),
            )
            .await
            .unwrap();
        drop(r);
        let r = rig_on(store, clock).await;
        assert_eq!(r.master.epoch(), 2);
        assert_eq!(r.master.app(&id).await.unwrap().state, AppState::Unknown);
        assert_eq!(
            r.master.app(&waiting.id.0).await.unwrap().state,
            AppState::Submitted
        );
        let resp = r
            .master
            .register_worker(reg("w1", 2, vec![report("w1", &id, 1, "RUNNING")]))
            .await
            .unwrap();
        assert!(resp.kill.is_empty());
        let app = r.master.app(&id).await.unwrap();
        assert_eq!((app.state, app.attempt), (AppState::Running, 1));
        let next = r.master.submit(submit_req(0)).await.unwrap();
        assert_eq!(next.seq, 3, "sequence continues across restarts");
    }

    #[tokio::test]
    async fn an_app_lost_with_its_worker_at_the_recovery_deadline_is_lost_once() {
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(ManualClock::default());
        let r = rig_on(store.clone(), clock.clone()).await;
        r.master
            .register_worker(reg("w1", 2, vec![]))
            .await
            .unwrap();
        let id = running_app(&r, "w1", 1).await;
        drop(r);
        let r = rig_on(store, clock.clone()).await;
        // The worker's timeout and the recovery deadline end in the same tick.
        clock.advance(10_001);
        r.master.tick().await.unwrap();
        let app = r.master.app(&id).await.unwrap();
        assert_eq!(app.state, AppState::Relaunching, "{:?}", app.message);
        assert_eq!(app.retries, 1);
    }

    #[tokio::test]
    async fn reconciliation_kills_what_the_master_does_not_own_and_loses_what_is_missing() {
        let r = rig().await;
        r.master
            .register_worker(reg("w1", 2, vec![]))
            .await
            .unwrap();
        let id = running_app(&r, "w1", 0).await;
        // w1 comes back with a stranger and without our app.
        let resp = r
            .master
            .register_worker(reg(
                "w1",
                2,
                vec![report("w1", "app-stranger", 1, "RUNNING")],
            ))
            .await
            .unwrap();
        assert_eq!(resp.kill.len(), 1);
        assert_eq!(resp.kill[0].app_id, "app-stranger");
        let app = r.master.app(&id).await.unwrap();
        assert_eq!(app.state, AppState::Failed);
        assert!(app
            .message
            .unwrap()
            .contains("re-registered without attempt 1"));
    }

    #[tokio::test]
    async fn illegal_and_stale_reports_change_nothing() {
        let r = rig().await;
        r.master
            .register_worker(reg("w1", 2, vec![]))
            .await
            .unwrap();
        let id = running_app(&r, "w1", 0).await;
        let before = r.master.app(&id).await.unwrap();
        let resp = r
            .master
            .report(report("w1", &id, 1, "SUBMITTED"))
            .await
            .unwrap();
        assert!(resp.accepted && !resp.kill, "refused for good, not retried");
        assert!(resp.message.contains("illegal transition"));
        let resp = r
            .master
            .report(report("w1", &id, 1, "SLEEPING"))
            .await
            .unwrap();
        assert!(resp.message.contains("unknown app state"));
        let resp = r
            .master
            .report(report("w1", &id, 9, "RUNNING"))
            .await
            .unwrap();
        assert!(resp.kill, "an attempt the master does not own must die");
        assert_eq!(r.master.app(&id).await.unwrap(), before);
        // An unregistered worker's report is kept on the worker (not accepted).
        let resp = r
            .master
            .report(report("w9", &id, 1, "FINISHED"))
            .await
            .unwrap();
        assert!(!resp.accepted);
    }

    #[tokio::test]
    async fn kills_end_waiting_apps_at_once_and_running_ones_through_the_worker() {
        let r = rig().await;
        let waiting = r.master.submit(submit_req(0)).await.unwrap();
        let killed = r.master.kill(&waiting.id.0, None).await.unwrap();
        assert_eq!(killed.state, AppState::Killed);
        assert!(matches!(
            r.master.kill(&waiting.id.0, None).await,
            Err(MasterError::Conflict(_))
        ));
        assert!(matches!(
            r.master.kill("app-x", None).await,
            Err(MasterError::AppNotFound(_))
        ));

        r.master
            .register_worker(reg("w1", 2, vec![]))
            .await
            .unwrap();
        let id = running_app(&r, "w1", 3).await;
        let app = r.master.kill(&id, Some("enough".into())).await.unwrap();
        assert_eq!(app.state, AppState::Running);
        assert!(app.kill_requested);
        let sent = sent(&r.rec, 2).await;
        assert!(sent.contains(&("kill".into(), id.clone(), 1)), "{sent:?}");
        // If the worker dies before confirming, the app ends KILLED, not relaunched.
        r.clock.advance(10_001);
        r.master.tick().await.unwrap();
        assert_eq!(r.master.app(&id).await.unwrap().state, AppState::Killed);
    }

    #[tokio::test]
    async fn a_worker_listing_an_older_attempt_does_not_keep_the_current_one_unknown() {
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(ManualClock::default());
        let r = rig_on(store.clone(), clock.clone()).await;
        r.master
            .register_worker(reg("w1", 2, vec![]))
            .await
            .unwrap();
        let id = running_app(&r, "w1", 2).await;
        // w1 goes silent: attempt 1 is lost; w1 comes back and gets attempt 2.
        clock.advance(10_001);
        r.master.tick().await.unwrap();
        r.master
            .register_worker(reg("w1", 2, vec![]))
            .await
            .unwrap();
        assert_eq!(r.master.schedule_round().await.unwrap(), 1);
        assert_eq!(r.master.app(&id).await.unwrap().attempt, 2);
        drop(r);
        // After a restart, w1 lists only the old attempt: it must be killed, and attempt 2,
        // which w1 does not have, is lost at once instead of staying UNKNOWN.
        let r = rig_on(store, clock).await;
        let resp = r
            .master
            .register_worker(reg("w1", 2, vec![report("w1", &id, 1, "RUNNING")]))
            .await
            .unwrap();
        assert_eq!(resp.kill.len(), 1);
        let app = r.master.app(&id).await.unwrap();
        assert_eq!(app.state, AppState::Relaunching, "{:?}", app.message);
    }

    #[tokio::test]
    async fn a_launch_lost_with_the_master_is_queued_again_without_spending_a_retry() {
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(ManualClock::default());
        let r = rig_on(store.clone(), clock.clone()).await;
        r.master
            .register_worker(reg("w1", 2, vec![]))
            .await
            .unwrap();
        let app = r.master.submit(submit_req(0)).await.unwrap();
        assert_eq!(r.master.schedule_round().await.unwrap(), 1);
        // The master dies right after persisting LAUNCHING: the worker never got the launch.
        drop(r);
        let r = rig_on(store, clock).await;
        r.master
            .register_worker(reg("w1", 2, vec![]))
            .await
            .unwrap();
        let a = r.master.app(&app.id.0).await.unwrap();
        assert_eq!(a.state, AppState::Relaunching, "{:?}", a.message);
        assert_eq!(a.retries, 0, "no retry spent on an attempt that never ran");
        assert_eq!(r.master.schedule_round().await.unwrap(), 1);
        assert_eq!(r.master.app(&app.id.0).await.unwrap().attempt, 2);
    }

    #[tokio::test]
    async fn large_changes_are_written_in_chunks_that_each_fit_a_transaction() {
        let store = Arc::new(MemoryStore::with_max_ops(128));
        let clock = Arc::new(ManualClock::default());
        let r = rig_on(store.clone(), clock.clone()).await;
        r.master
            .register_worker(reg("w1", 500, vec![]))
            .await
            .unwrap();
        let ids: Vec<String> = futures_ids(&r, 150).await;
        // One round places all 150 (each: a record, an event): far more than 128 operations.
        assert_eq!(r.master.schedule_round().await.unwrap(), 150);
        for id in &ids {
            let a = r.master.app(id).await.unwrap();
            assert_eq!(a.state, AppState::Launching);
        }
        drop(r);
        // And a recovery that turns all 150 UNKNOWN.
        let r = rig_on(store, clock).await;
        for id in &ids {
            assert_eq!(r.master.app(id).await.unwrap().state, AppState::Unknown);
        }
    }

    async fn futures_ids(r: &Rig, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..n {
            let req = serde_json::from_value(serde_json::json!({
                "name": "t", "kind": "process", "memory_mb": 0
            }))
            .unwrap();
            out.push(r.master.submit(req).await.unwrap().id.0);
        }
        out
    }
}
