//! The cluster as one pure state machine: every rule of the master, as functions of data and
//! time that return what to write, what events happened and what to tell workers.
//!
//! [`Cluster`] owns the apps, the workers and the indexes placement needs. Each operation
//! (submit, kill, register, report, place, expire workers, ...) changes the cluster and
//! appends to an [`Effects`]: the records to write (or delete), the events the changes made
//! (derived from the old and new record, so none can be forgotten) and the [`Command`]s for
//! workers. Nothing outside this module changes an app or a worker.
//!
//! The engine in `aloha-master` runs a batch of operations on the cluster, writes the batch's
//! effects in one store transaction, and only then answers callers and sends commands. If the
//! write fails it puts back the clone it took before the batch: every collection here is a
//! persistent map, so that clone — also the immutable snapshot readers get — is cheap.
//!
//! Time comes in as [`Now`]: wall-clock time for what people read, a monotonic clock in
//! milliseconds for timeouts.

pub mod index;
pub mod namespaces;
pub mod schedules;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use imbl::{HashMap as PMap, OrdMap, OrdSet};

use crate::app::{App, AppId, SubmitError, SubmitRequest, ON_DEMAND_KEEP};
use crate::event::{app_events, worker_events, EventBody};
use crate::namespace::{self, Namespace};
use crate::report::{self, Outcome, Report};
use crate::schedule::PlacementPolicy;
use crate::schedules::{Schedule, ScheduleId};
use crate::state::AppState;
use crate::worker::{WorkerId, WorkerRecord, WorkerState};
use index::{CapacityIndex, Shape};
use namespaces::{usage_delta, NsEntry};

/// Longest accepted `Idempotency-Key`, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The time an operation happens at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Now {
    /// Wall-clock time, for timestamps.
    pub wall: DateTime<Utc>,
    /// A monotonic clock, milliseconds, for timeouts.
    pub mono_ms: u64,
}

/// How many shares of `Rules::expire_batch` one [`Cluster::expire`] call may remove of the apps
/// over `retain_finished` when they have piled up.
pub const EXPIRE_CATCH_UP: usize = 16;

/// The rules' settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// A worker silent this long is declared DEAD; also how long apps may stay UNKNOWN after a
    /// recovery.
    pub worker_timeout_ms: u64,
    /// Kinds accepted even before a worker providing them registered.
    pub allowed_kinds: Vec<String>,
    /// Most terminal apps kept.
    pub retain_finished: usize,
    /// Terminal apps older than this are removed.
    pub retain_finished_for: chrono::Duration,
    /// DEAD workers are forgotten this long after they died.
    pub retain_dead_workers_for: chrono::Duration,
    /// A kill a worker has not confirmed is sent again after this long.
    pub kill_resend_ms: u64,
    /// Most apps and workers one retention pass removes (the rest wait for the next batch),
    /// so that one batch stays small.
    pub expire_batch: usize,
    /// Which of the workers that fit an app it goes to.
    pub placement: PlacementPolicy,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            worker_timeout_ms: 10_000,
            allowed_kinds: vec!["process".into(), "spark".into(), "flink".into()],
            retain_finished: 10_000,
            retain_finished_for: chrono::Duration::days(7),
            retain_dead_workers_for: chrono::Duration::hours(1),
            kill_resend_ms: 5_000,
            expire_batch: 256,
            placement: PlacementPolicy::Spread,
        }
    }
}

/// A write to the store that an operation asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum AppWrite {
    /// Write the app record.
    Put(Arc<App>),
    /// Delete the app record (retention).
    Delete(AppId),
}

/// A change of the liveness table the edge keeps for heartbeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveChange {
    /// Registered: its heartbeats count from now.
    Alive(WorkerId),
    /// Known from the store but not heard from: expires after the timeout unless it
    /// registers; its heartbeats are answered "register again".
    Watch(WorkerId),
    /// Declared dead or forgotten: stop tracking it.
    Forget(WorkerId),
    /// A launch to it failed: its next heartbeat must be reported ([`Cluster::worker_heard`]).
    Suspect(WorkerId),
}

/// A command for a worker, sent after the batch that decided it is durable.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Launch the app's current attempt.
    Launch {
        /// Worker.
        worker: WorkerId,
        /// Its WorkerService address.
        address: String,
        /// The app, as placed.
        app: Arc<App>,
    },
    /// Kill an attempt.
    Kill {
        /// Worker.
        worker: WorkerId,
        /// Its address.
        address: String,
        /// App.
        app: AppId,
        /// Attempt.
        attempt: u32,
        /// Why.
        reason: String,
    },
}

/// What a batch of operations did: records to write, events, commands.
#[derive(Debug, Default)]
pub struct Effects {
    /// App writes, by sequence number (the last write of an app wins).
    pub apps: BTreeMap<u64, AppWrite>,
    /// Worker writes (`None`: delete the record).
    pub workers: BTreeMap<WorkerId, Option<Arc<WorkerRecord>>>,
    /// The last app sequence number, when it moved.
    pub last_seq: Option<u64>,
    /// Events, in the order the changes happened.
    pub events: Vec<EventBody>,
    /// Commands for workers.
    pub commands: Vec<Command>,
    /// Liveness table changes.
    pub liveness: Vec<LiveChange>,
    /// Schedule writes (`None`: delete the record).
    pub schedules: BTreeMap<ScheduleId, Option<Arc<Schedule>>>,
    /// The last schedule sequence number, when it moved.
    pub schedule_seq: Option<u64>,
    /// Namespace writes (`None`: delete the record).
    pub namespaces: BTreeMap<String, Option<Arc<Namespace>>>,
}

impl Effects {
    /// Whether there is anything to write.
    pub fn writes_nothing(&self) -> bool {
        self.apps.is_empty()
            && self.workers.is_empty()
            && self.last_seq.is_none()
            && self.events.is_empty()
            && self.schedules.is_empty()
            && self.schedule_seq.is_none()
            && self.namespaces.is_empty()
    }
}

/// Why an operation was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// A bad submission.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// Malformed input other than a submission.
    #[error("{0}")]
    BadRequest(String),
    /// No such app.
    #[error("app {0} not found")]
    NotFound(AppId),
    /// No such schedule.
    #[error("schedule {0} not found")]
    ScheduleNotFound(ScheduleId),
    /// No such worker.
    #[error("worker {0} not found")]
    WorkerNotFound(WorkerId),
    /// The app ended and was removed by the retention.
    #[error("app {0} expired")]
    Expired(AppId),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// A namespace quota refuses it (`max_queued_apps`, `max_schedules`).
    #[error("{0}")]
    Quota(String),
    /// No such namespace.
    #[error("namespace {0} not found")]
    NamespaceNotFound(String),
    /// The caller may not write in the namespace of what it acts on.
    #[error("{0}")]
    Forbidden(String),
}

/// A submission's result: the app, and whether it was created now (or is the app an earlier
/// request with the same idempotency key created).
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    /// The app as it is after the submission.
    pub app: Arc<App>,
    /// False for an idempotent repeat.
    pub created: bool,
}

/// A worker's registration, converted from the wire at the edge.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// Worker id.
    pub id: WorkerId,
    /// Its WorkerService address.
    pub address: String,
    /// Cores offered.
    pub cores: u32,
    /// Memory offered, MiB.
    pub memory_mb: u64,
    /// Kinds its plugins provide.
    pub kinds: Vec<String>,
    /// Plugins that failed to load.
    pub plugin_errors: Vec<String>,
    /// Every app attempt it holds.
    pub apps: Vec<WorkerReport>,
    /// The registering process's random instance token; `None` from older workers.
    pub instance: Option<String>,
}

/// A worker's statement about one app attempt, converted from the wire at the edge.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerReport {
    /// App.
    pub app: AppId,
    /// Attempt.
    pub attempt: u32,
    /// The state there.
    pub state: AppState,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Plugin message.
    pub message: Option<String>,
    /// The worker is shutting down and stopped the app itself.
    pub worker_shutdown: bool,
    /// Plugin details, merged into the app's.
    pub details: BTreeMap<String, String>,
}

/// What became of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Applied or already known: the worker may drop it.
    Done,
    /// The master does not own the attempt on this worker: the worker must kill it.
    Kill(String),
    /// Refused for good (illegal): the worker must not resend it.
    Refused(String),
    /// The worker is not registered: it must register (and list the app) first.
    NotRegistered(String),
}

/// A worker as the cluster keeps it: its record, what its apps hold, and placement flags that
/// are not persisted.
#[derive(Debug, Clone)]
pub struct Worker {
    /// The persisted record.
    pub record: Arc<WorkerRecord>,
    /// Cores held by apps bound to it.
    pub used_cores: u32,
    /// Memory held by apps bound to it, MiB.
    pub used_memory_mb: u64,
    /// Apps bound to it (LAUNCHING, RUNNING, UNKNOWN), by sequence number.
    pub apps: OrdSet<u64>,
    /// A launch to it failed: nothing is placed there until it is heard from again.
    pub suspect: bool,
    /// It is shutting down: nothing is placed there until it registers again.
    pub draining: bool,
    /// The instance token of the process that last registered it (not persisted: after a
    /// recovery the worker is UNKNOWN and any instance may register).
    pub instance: Option<String>,
}

impl Worker {
    fn new(record: WorkerRecord) -> Worker {
        Worker {
            record: Arc::new(record),
            used_cores: 0,
            used_memory_mb: 0,
            apps: OrdSet::new(),
            suspect: false,
            draining: false,
            instance: None,
        }
    }

    /// Whether new apps may go there.
    pub fn placeable(&self) -> bool {
        self.record.state == WorkerState::Alive
            && !self.suspect
            && !self.draining
            && self.record.drain.is_none()
    }

    /// Free cores and memory.
    pub fn free(&self) -> (u32, u64) {
        (
            self.record.cores.saturating_sub(self.used_cores),
            self.record.memory_mb.saturating_sub(self.used_memory_mb),
        )
    }
}

/// Whether the process with `instance` may register as the known worker `w`. A worker id
/// belongs to one process at a time: while `w` is ALIVE (heard from within the worker
/// timeout), another process's registration is refused, else it would take the id over and
/// the master would relaunch apps the first process still runs. The same process
/// re-registering (reconnect, master failover) is accepted, and so is any process once `w`
/// was declared DEAD, or is UNKNOWN after a recovery (the token is not persisted): its apps
/// are then reconciled as for any registration. Without a token on either side (an older
/// worker) there is nothing to compare and the registration is accepted.
pub fn takeover_check(w: &Worker, instance: Option<&str>) -> Result<(), OpError> {
    match (w.record.state, w.instance.as_deref(), instance) {
        (WorkerState::Alive, Some(known), Some(new)) if known != new => {
            Err(OpError::Conflict(format!(
                "worker id {} is in use by another live worker process (registered at {}, \
                 address {}); stop that process or choose another --id. The id is free again \
                 once the master declares it DEAD",
                w.record.id,
                w.record
                    .registered_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                w.record.address
            )))
        }
        _ => Ok(()),
    }
}

/// Where a submission would go ([`Cluster::dry_run`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// Placed at once on this worker.
    Worker(WorkerId),
    /// Queued, for this reason.
    Waiting(String),
}

/// Where a lookup by id ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The app.
    Found(Arc<App>),
    /// It existed and was removed by the retention.
    Expired,
    /// No such app.
    NotFound,
}

/// The most apps one filtered page ([`Cluster::page_where`]) looks at.
pub const PAGE_SCAN_LIMIT: usize = 20_000;

/// One page of apps, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The apps.
    pub apps: Vec<Arc<App>>,
    /// The id to pass as `after` for the next page; `None` on the last page.
    pub next: Option<AppId>,
}

/// The cluster state and its rules. Cheap to clone (persistent maps).
#[derive(Debug, Clone)]
pub struct Cluster {
    rules: Arc<Rules>,
    apps: OrdMap<u64, Arc<App>>,
    /// Sequence numbers by state, indexed by `AppState as usize`.
    states: Vec<OrdSet<u64>>,
    /// Namespaces: records, usage and each one's waiting queue.
    namespaces: OrdMap<String, NsEntry>,
    workers: OrdMap<WorkerId, Worker>,
    capacity: CapacityIndex,
    /// How many worker records (any state) provide each kind.
    kinds: OrdMap<String, u32>,
    /// Terminal apps by the time they ended, for the retention (on-demand apps are not
    /// counted: they have their own timer).
    terminal: OrdSet<(DateTime<Utc>, u64)>,
    /// The apps' timers, by when they fire: a restart policy's relaunch pause, a max runtime,
    /// an on-demand app's end of keeping ([`app_timer`]).
    timers: OrdSet<(DateTime<Utc>, u64)>,
    /// DEAD workers by the time they died, for forgetting them.
    dead: OrdSet<(DateTime<Utc>, WorkerId)>,
    /// Drained workers by their deadline, until it passed.
    drain_timers: OrdSet<(DateTime<Utc>, WorkerId)>,
    idempotency: PMap<String, u64>,
    /// Apps with a kill pending on a worker: when the kill was last sent (0: never).
    pending_kills: OrdMap<u64, u64>,
    last_seq: u64,
    recovery_deadline_ms: Option<u64>,
    /// What the ALIVE workers offer, per kind, for the "waiting for ..." reason: recomputed
    /// when a worker record changes (rare), so reading a waiting app costs no walk over
    /// thousands of workers.
    offers: Arc<Offers>,
    /// Schedules, by id.
    schedules: OrdMap<ScheduleId, schedules::ScheduleEntry>,
    /// Schedule ids by sequence number (paging, newest first).
    schedule_order: OrdMap<u64, ScheduleId>,
    /// Schedule timers, by when they fire.
    schedule_timers: OrdSet<(DateTime<Utc>, ScheduleId)>,
    /// The retained runs of each schedule (retries included), by app sequence number.
    schedule_runs: OrdMap<ScheduleId, OrdSet<u64>>,
    /// The runs of each schedule that have not ended.
    schedule_active: OrdMap<ScheduleId, OrdSet<u64>>,
    /// Runs by (schedule, nominal time), retries excluded: never two for one.
    run_index: PMap<(ScheduleId, DateTime<Utc>), u64>,
    /// Schedules one of whose runs ended since the last settling.
    runs_ended: OrdSet<ScheduleId>,
    last_schedule_seq: u64,
}

/// The ALIVE workers' total capacities, per kind.
#[derive(Debug, Clone, Default, PartialEq)]
struct Offers {
    alive: usize,
    /// Total cores and memory of the ALIVE workers (the denominators of fair shares).
    total: (u64, u64),
    /// Distinct (cores, memory) totals of the ALIVE workers providing each kind.
    by_kind: BTreeMap<String, std::collections::BTreeSet<(u32, u64)>>,
}

fn shape(app: &App) -> Shape {
    Shape {
        kind: app.kind.clone(),
        cores: app.cores,
        memory_mb: app.memory_mb,
    }
}

/// Whether an app is in the placement queue: waiting, and not pausing before a relaunch.
fn queued(app: &App) -> bool {
    app.state.is_waiting() && app.relaunch_at.is_none()
}

/// When the app's timer fires, if it has one: the end of a relaunch pause, the end of the
/// running attempt's max runtime, or the end of an ended on-demand app's keeping.
fn app_timer(app: &App) -> Option<DateTime<Utc>> {
    if app.state.is_waiting() {
        return app.relaunch_at;
    }
    if app.state == AppState::Running && !app.over_max_runtime() && !app.kill_requested {
        let limit = chrono::Duration::from_std(app.max_runtime?).ok()?;
        return app.started_at.map(|s| s + limit);
    }
    if app.state.is_terminal() && app.on_demand {
        let keep = chrono::Duration::from_std(ON_DEMAND_KEEP).ok()?;
        return app.finished_at.map(|f| f + keep);
    }
    None
}

/// Whether a kill of the app's current attempt is pending on its worker.
fn kill_pending(app: &App) -> bool {
    (app.kill_requested || app.over_max_runtime() || app.is_evicted()) && app.state.is_on_worker()
}

/// When a worker's drain deadline fires, if it has one still to fire.
fn drain_timer(record: &WorkerRecord) -> Option<DateTime<Utc>> {
    record
        .drain
        .filter(|d| !d.deadline_passed)
        .map(|d| d.deadline)
}

/// Where an app holds resources: its worker, when it is on one.
fn holding(app: &App) -> Option<&WorkerId> {
    if app.state.is_on_worker() {
        app.worker_id.as_ref()
    } else {
        None
    }
}

impl Cluster {
    /// An empty cluster.
    pub fn new(rules: Rules) -> Cluster {
        Cluster {
            rules: Arc::new(rules),
            apps: OrdMap::new(),
            states: vec![OrdSet::new(); AppState::ALL.len()],
            namespaces: OrdMap::new(),
            workers: OrdMap::new(),
            capacity: CapacityIndex::default(),
            kinds: OrdMap::new(),
            terminal: OrdSet::new(),
            timers: OrdSet::new(),
            dead: OrdSet::new(),
            drain_timers: OrdSet::new(),
            idempotency: PMap::new(),
            pending_kills: OrdMap::new(),
            last_seq: 0,
            recovery_deadline_ms: None,
            offers: Arc::default(),
            schedules: OrdMap::new(),
            schedule_order: OrdMap::new(),
            schedule_timers: OrdSet::new(),
            schedule_runs: OrdMap::new(),
            schedule_active: OrdMap::new(),
            run_index: PMap::new(),
            runs_ended: OrdSet::new(),
            last_schedule_seq: 0,
        }
    }

    /// Recomputes [`Offers`] (after a worker record changed).
    fn refresh_offers(&mut self) {
        let mut o = Offers::default();
        for w in self.workers.values() {
            if w.record.state != WorkerState::Alive {
                continue;
            }
            o.alive += 1;
            o.total.0 += u64::from(w.record.cores);
            o.total.1 += w.record.memory_mb;
            for k in &w.record.kinds {
                o.by_kind
                    .entry(k.clone())
                    .or_default()
                    .insert((w.record.cores, w.record.memory_mb));
            }
        }
        self.offers = Arc::new(o);
    }

    /// Rebuilds the cluster from stored records after a (re)start or a failover, and applies
    /// the recovery rules: workers not DEAD become UNKNOWN until they register again (within
    /// one worker timeout); apps that were LAUNCHING or RUNNING become UNKNOWN until their
    /// worker lists them (within one worker timeout); waiting apps keep their order.
    pub fn recover(
        rules: Rules,
        workers: impl IntoIterator<Item = WorkerRecord>,
        apps: impl IntoIterator<Item = App>,
        last_seq: u64,
        now: Now,
        fx: &mut Effects,
    ) -> Cluster {
        let mut c = Cluster::new(rules);
        for w in workers {
            c.index_worker(None, &Worker::new(w));
        }
        for app in apps {
            c.last_seq = c.last_seq.max(app.seq);
            let app = Arc::new(app);
            c.reindex(None, Some(&app));
            c.apps.insert(app.seq, app);
        }
        c.last_seq = c.last_seq.max(last_seq);
        let ids: Vec<WorkerId> = c.workers.keys().cloned().collect();
        for id in ids {
            let w = c.workers[&id].clone();
            if w.record.state == WorkerState::Dead {
                continue;
            }
            let mut rec = (*w.record).clone();
            rec.state = WorkerState::Unknown;
            c.put_worker(&id, rec, fx);
            fx.liveness.push(LiveChange::Watch(id));
        }
        let on_workers: Vec<u64> = [AppState::Launching, AppState::Running]
            .iter()
            .flat_map(|s| c.states[*s as usize].iter().copied())
            .collect();
        for seq in on_workers {
            let old = c.apps[&seq].clone();
            let mut app = (*old).clone();
            let msg = format!(
                "master recovered; waiting for worker {} to report the app",
                app.worker_id.as_ref().map(|w| w.as_str()).unwrap_or("?")
            );
            // LAUNCHING/RUNNING -> UNKNOWN is always legal.
            if app
                .transition(AppState::Unknown, now.wall, Some(msg))
                .is_ok()
            {
                c.put_app(Some(old), app, fx);
            }
        }
        c.recovery_deadline_ms = Some(now.mono_ms + c.rules.worker_timeout_ms);
        c.refresh_offers();
        c
    }

    // ------------------------------------------------------------------------------------
    // Mirroring: a standby's read replica follows the leader's writes as they are stored,
    // without applying any rule of its own.

    /// A cluster holding exactly the stored records (no recovery rules applied): a standby's
    /// replica of what the leader wrote.
    pub fn mirror(
        rules: Rules,
        workers: impl IntoIterator<Item = WorkerRecord>,
        apps: impl IntoIterator<Item = App>,
        last_seq: u64,
    ) -> Cluster {
        let mut c = Cluster::new(rules);
        for w in workers {
            c.index_worker(None, &Worker::new(w));
        }
        for app in apps {
            c.mirror_app(app);
        }
        c.last_seq = c.last_seq.max(last_seq);
        c.refresh_offers();
        c
    }

    /// The leader wrote this app record.
    pub fn mirror_app(&mut self, app: App) {
        let old = self.apps.get(&app.seq).cloned();
        let app = Arc::new(app);
        self.reindex(old.as_deref(), Some(&app));
        self.last_seq = self.last_seq.max(app.seq);
        self.apps.insert(app.seq, app);
    }

    /// The leader deleted the record of app `id` (retention).
    pub fn mirror_app_deleted(&mut self, id: &AppId) {
        let Some(seq) = id.seq() else { return };
        if let Some(old) = self.apps.remove(&seq) {
            self.reindex(Some(&old), None);
        }
    }

    /// The leader wrote this worker record.
    pub fn mirror_worker(&mut self, record: WorkerRecord) {
        let id = record.id.clone();
        let old = self.workers.get(&id).cloned();
        let mut w = old.clone().unwrap_or_else(|| Worker::new(record.clone()));
        w.record = Arc::new(record);
        self.index_worker(old.as_ref(), &w);
        self.refresh_offers();
    }

    /// The leader deleted the record of worker `id`.
    pub fn mirror_worker_deleted(&mut self, id: &WorkerId) {
        let mut fx = Effects::default();
        self.forget_worker(id, &mut fx);
    }

    /// The leader moved the app sequence number.
    pub fn mirror_last_seq(&mut self, seq: u64) {
        self.last_seq = self.last_seq.max(seq);
    }

    // ------------------------------------------------------------------------------------
    // Reads

    /// The rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The last sequence number handed out.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Live apps (retained), of every state.
    pub fn app_count(&self) -> usize {
        self.apps.len()
    }

    /// Apps in `state`.
    pub fn count(&self, state: AppState) -> usize {
        self.states[state as usize].len()
    }

    /// Apps waiting to be placed.
    pub fn queued(&self) -> usize {
        self.queued_total()
    }

    /// Distinct resource shapes waiting.
    pub fn queued_shapes(&self) -> usize {
        self.queued_shapes_total()
    }

    /// One app by id.
    pub fn lookup(&self, id: &AppId) -> Lookup {
        let Some(seq) = id.seq() else {
            return Lookup::NotFound;
        };
        match self.apps.get(&seq) {
            Some(app) if app.id == *id => Lookup::Found(app.clone()),
            Some(_) => Lookup::NotFound,
            // Every sequence number up to `last_seq` was a committed app; the only way one
            // leaves is the retention.
            None if seq >= 1 && seq <= self.last_seq => Lookup::Expired,
            None => Lookup::NotFound,
        }
    }

    /// The app with sequence number `seq`.
    pub fn app_by_seq(&self, seq: u64) -> Option<&Arc<App>> {
        self.apps.get(&seq)
    }

    /// A page of apps, newest first: at most `limit`, optionally only in `state`, starting
    /// after the app `after` (exclusive).
    pub fn page(&self, state: Option<AppState>, after: Option<u64>, limit: usize) -> Page {
        self.page_where(state, after, limit, |_| true)
    }

    /// Like [`Cluster::page`], keeping only the apps `keep` accepts (a namespace or a label).
    /// It looks at [`PAGE_SCAN_LIMIT`] apps at most: a filter that few apps match returns a
    /// short page, even an empty one, whose `next` goes on from the last app looked at.
    pub fn page_where(
        &self,
        state: Option<AppState>,
        after: Option<u64>,
        limit: usize,
        keep: impl Fn(&App) -> bool,
    ) -> Page {
        let upper = after.unwrap_or(u64::MAX);
        let seqs: Box<dyn Iterator<Item = u64>> = match state {
            Some(s) => Box::new(self.states[s as usize].range(..upper).rev().copied()),
            None => Box::new(self.apps.range(..upper).rev().map(|(k, _)| *k)),
        };
        let mut apps = Vec::with_capacity(limit.min(1024));
        let mut last: Option<&Arc<App>> = None;
        let mut more = false;
        for (scanned, seq) in seqs.enumerate() {
            if apps.len() == limit || scanned == PAGE_SCAN_LIMIT {
                more = true;
                break;
            }
            if let Some(a) = self.apps.get(&seq) {
                last = Some(a);
                if keep(a) {
                    apps.push(a.clone());
                }
            }
        }
        // The last app looked at: the last one kept when the page is full.
        let next = last.filter(|_| more).map(|a| a.id.clone());
        Page { apps, next }
    }

    /// Every worker, by id.
    pub fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.workers.values()
    }

    /// One worker.
    pub fn worker(&self, id: &WorkerId) -> Option<&Worker> {
        self.workers.get(id)
    }

    /// Kinds a submission may name: the allowed ones and those of every known worker.
    pub fn known_kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.rules.allowed_kinds.clone();
        kinds.extend(self.kinds.keys().cloned());
        kinds.sort();
        kinds.dedup();
        kinds
    }

    /// Why a waiting app is not placed, computed from the workers as they are now.
    pub fn wait_reason(&self, app: &App) -> String {
        if let Some(quota) = self.quota_reason(app) {
            return quota;
        }
        let need = format!("{} cores and {} MiB", app.cores, app.memory_mb);
        if self.offers.alive == 0 {
            return format!("waiting for an ALIVE worker (needs {need})");
        }
        let Some(totals) = self.offers.by_kind.get(&app.kind) else {
            return format!("waiting: no ALIVE worker provides kind {:?}", app.kind);
        };
        if !totals
            .iter()
            .any(|(c, m)| *c >= app.cores && *m >= app.memory_mb)
        {
            let max_cores = totals.iter().map(|t| t.0).max().unwrap_or(0);
            let max_mem = totals.iter().map(|t| t.1).max().unwrap_or(0);
            return format!(
                "cannot be placed: needs {need} but the largest ALIVE worker has {max_cores} cores and {max_mem} MiB"
            );
        }
        format!("waiting for resources: needs {need} free on one worker")
    }

    /// Until when apps left UNKNOWN by a recovery may still be reported (monotonic ms).
    pub fn recovery_deadline_ms(&self) -> Option<u64> {
        self.recovery_deadline_ms
    }

    /// Whether a placement round could place anything (something waits that is not known to
    /// fit nowhere).
    pub fn can_place(&self) -> bool {
        self.namespaces.values().any(|e| e.queue.next().is_some())
    }

    // ------------------------------------------------------------------------------------
    // The one write path

    /// Installs `new` in place of `old` (`None`: a new app): updates every index, records the
    /// write and the events the change makes. Returns the installed app.
    fn put_app(&mut self, old: Option<Arc<App>>, new: App, fx: &mut Effects) -> Arc<App> {
        fx.events.extend(app_events(old.as_deref(), &new));
        let new = Arc::new(new);
        self.reindex(old.as_deref(), Some(&new));
        self.apps.insert(new.seq, new.clone());
        if !new.on_demand {
            fx.apps.insert(new.seq, AppWrite::Put(new.clone()));
        }
        new
    }

    /// Removes an app (retention): indexes, the record, its idempotency key.
    fn remove_app(&mut self, seq: u64, fx: &mut Effects) {
        let Some(old) = self.apps.remove(&seq) else {
            return;
        };
        self.reindex(Some(&old), None);
        fx.events.push(EventBody::AppExpired {
            app_id: old.id.clone(),
            name: old.name.clone(),
            kind: old.kind.clone(),
            state: old.state,
        });
        if !old.on_demand {
            fx.apps.insert(seq, AppWrite::Delete(old.id.clone()));
        }
    }

    /// Keeps every index true to an app going from `old` to `new` (either may be absent).
    fn reindex(&mut self, old: Option<&App>, new: Option<&App>) {
        let seq = old.or(new).map(|a| a.seq).unwrap_or_default();
        let (old_state, new_state) = (old.map(|a| a.state), new.map(|a| a.state));
        if old_state != new_state {
            if let Some(s) = old_state {
                self.states[s as usize].remove(&seq);
            }
            if let Some(s) = new_state {
                self.states[s as usize].insert(seq);
            }
        }
        // The namespace's queue.
        let was_waiting = old.filter(|a| queued(a));
        let is_waiting = new.filter(|a| queued(a));
        match (was_waiting, is_waiting) {
            (Some(_), Some(_)) => {}
            (Some(o), None) => self.ns_entry(&o.namespace).queue.remove(&shape(o), seq),
            (None, Some(n)) => self.ns_entry(&n.namespace).queue.push(&shape(n), seq),
            (None, None) => {}
        }
        // The namespace's usage.
        let (was_on, is_on) = (old.and_then(holding), new.and_then(holding));
        let counted = |a: &App, on: bool| (on, a.state.is_waiting());
        let before = old.map(|o| counted(o, was_on.is_some()));
        let after = new.map(|n| counted(n, is_on.is_some()));
        if before != after || old.map(|o| &o.namespace) != new.map(|n| &n.namespace) {
            if let (Some(o), Some((h, w))) = (old, before) {
                if h || w {
                    let e = self.ns_entry(&o.namespace);
                    usage_delta(&mut e.usage, o, h, w, false);
                    if h {
                        // Its quota may let a held-back app go.
                        e.queue.unblock_all();
                    }
                }
            }
            if let (Some(n), Some((h, w))) = (new, after) {
                if h || w {
                    usage_delta(&mut self.ns_entry(&n.namespace).usage, n, h, w, true);
                }
            }
            if let Some(o) = old {
                self.tidy_namespace(&o.namespace);
            }
        }
        // Resources on workers.
        if was_on != is_on {
            if let (Some(o), Some(w)) = (old, was_on) {
                self.use_resources(w, seq, o, false);
            }
            if let (Some(n), Some(w)) = (new, is_on) {
                self.use_resources(w, seq, n, true);
            }
        }
        // Terminal apps, for the retention.
        let was_done = old.filter(|a| a.state.is_terminal() && !a.on_demand);
        let is_done = new.filter(|a| a.state.is_terminal() && !a.on_demand);
        if let Some(o) = was_done {
            if is_done.is_none() {
                self.terminal
                    .remove(&(o.finished_at.unwrap_or_default(), seq));
            }
        }
        if let Some(n) = is_done {
            if was_done.is_none() {
                self.terminal
                    .insert((n.finished_at.unwrap_or_default(), seq));
            }
        }
        // Timers.
        let (was_due, is_due) = (old.and_then(app_timer), new.and_then(app_timer));
        if was_due != is_due {
            if let Some(t) = was_due {
                self.timers.remove(&(t, seq));
            }
            if let Some(t) = is_due {
                self.timers.insert((t, seq));
            }
        }
        // Kills pending on a worker.
        match new {
            Some(n) if kill_pending(n) => {
                if !self.pending_kills.contains_key(&seq) {
                    self.pending_kills.insert(seq, 0);
                }
            }
            _ => {
                self.pending_kills.remove(&seq);
            }
        }
        // Schedule runs.
        self.reindex_run(old, new);
        // Idempotency keys live exactly as long as their app.
        if let Some(k) = old.and_then(|a| a.idempotency_key.as_ref()) {
            if new.is_none() {
                self.idempotency.remove(&**k);
            }
        }
        if let Some(k) = new.and_then(|a| a.idempotency_key.as_ref()) {
            if old.is_none() {
                self.idempotency.insert(k.to_string(), seq);
            }
        }
    }

    /// An app starts (`add`) or stops holding its resources on worker `id`.
    fn use_resources(&mut self, id: &WorkerId, seq: u64, app: &App, add: bool) {
        let Some(mut w) = self.workers.get(id).cloned() else {
            return;
        };
        if add {
            w.used_cores = w.used_cores.saturating_add(app.cores);
            w.used_memory_mb = w.used_memory_mb.saturating_add(app.memory_mb);
            w.apps.insert(seq);
        } else {
            w.used_cores = w.used_cores.saturating_sub(app.cores);
            w.used_memory_mb = w.used_memory_mb.saturating_sub(app.memory_mb);
            w.apps.remove(&seq);
        }
        self.set_worker(id, w);
        if !add {
            self.unblock_all_queues();
        }
    }

    /// Replaces the worker entry `id`, keeping the capacity index true.
    fn set_worker(&mut self, id: &WorkerId, w: Worker) {
        let old = self.workers.get(id).cloned();
        self.index_worker(old.as_ref(), &w);
    }

    fn index_worker(&mut self, old: Option<&Worker>, new: &Worker) {
        let id = new.record.id.clone();
        if let Some(o) = old {
            if o.placeable() {
                self.capacity.remove(&id, &o.record.kinds, o.free());
            }
            if !Arc::ptr_eq(&o.record, &new.record) {
                for k in &o.record.kinds {
                    self.drop_kind(k);
                }
                if let Some(since) = o.record.dead_since {
                    self.dead.remove(&(since, id.clone()));
                }
                if let Some(t) = drain_timer(&o.record) {
                    self.drain_timers.remove(&(t, id.clone()));
                }
            }
        }
        if new.placeable() {
            self.capacity.insert(&id, &new.record.kinds, new.free());
        }
        if old.is_none_or(|o| !Arc::ptr_eq(&o.record, &new.record)) {
            for k in &new.record.kinds {
                let n = self.kinds.get(k).copied().unwrap_or(0);
                self.kinds.insert(k.clone(), n + 1);
            }
            if let (WorkerState::Dead, Some(since)) = (new.record.state, new.record.dead_since) {
                self.dead.insert((since, id.clone()));
            }
            if let Some(t) = drain_timer(&new.record) {
                self.drain_timers.insert((t, id.clone()));
            }
        }
        let gained =
            new.placeable() && old.is_none_or(|o| !o.placeable() || o.free() != new.free());
        self.workers.insert(id, new.clone());
        if gained {
            self.unblock_all_queues();
        }
    }

    fn drop_kind(&mut self, kind: &str) {
        match self.kinds.get(kind).copied() {
            Some(n) if n > 1 => {
                self.kinds.insert(kind.to_string(), n - 1);
            }
            _ => {
                self.kinds.remove(kind);
            }
        }
    }

    /// Installs a new record for worker `id` (state changes must be legal), records the write
    /// and its events.
    fn put_worker(&mut self, id: &WorkerId, record: WorkerRecord, fx: &mut Effects) {
        let old = self.workers.get(id).cloned();
        if let Some(o) = &old {
            let (from, to) = (o.record.state, record.state);
            debug_assert!(
                from == to || from.can_move_to(to),
                "worker {id}: illegal {from} -> {to}"
            );
        }
        fx.events.extend(worker_events(
            old.as_ref().map(|o| o.record.as_ref()),
            &record,
        ));
        let record = Arc::new(record);
        let mut w = old
            .clone()
            .unwrap_or_else(|| Worker::new((*record).clone()));
        w.record = record.clone();
        self.index_worker(old.as_ref(), &w);
        self.refresh_offers();
        fx.workers.insert(id.clone(), Some(record));
    }

    fn forget_worker(&mut self, id: &WorkerId, fx: &mut Effects) {
        let Some(old) = self.workers.remove(id) else {
            return;
        };
        if old.placeable() {
            self.capacity.remove(id, &old.record.kinds, old.free());
        }
        for k in &old.record.kinds {
            self.drop_kind(k);
        }
        if let Some(since) = old.record.dead_since {
            self.dead.remove(&(since, id.clone()));
        }
        if let Some(t) = drain_timer(&old.record) {
            self.drain_timers.remove(&(t, id.clone()));
        }
        fx.workers.insert(id.clone(), None);
        fx.liveness.push(LiveChange::Forget(id.clone()));
        self.refresh_offers();
    }

    // ------------------------------------------------------------------------------------
    // Operations from clients

    /// Accepts a submission, or returns the app an earlier submission with the same
    /// idempotency key created (if the request is the same; a different one is a conflict).
    pub fn submit(
        &mut self,
        req: SubmitRequest,
        idempotency_key: Option<String>,
        now: Now,
        fx: &mut Effects,
    ) -> Result<Submitted, OpError> {
        if let Some(key) = &idempotency_key {
            check_idempotency_key(key)?;
            if let Some(seq) = self.idempotency.get(key) {
                let app = self.apps[seq].clone();
                if app.same_request(&req) {
                    return Ok(Submitted {
                        app,
                        created: false,
                    });
                }
                return Err(OpError::Conflict(format!(
                    "Idempotency-Key {key:?} was already used for app {} with a different request",
                    app.id
                )));
            }
        }
        self.validate(&req)?;
        self.admit_app(&req.namespace)?;
        let app = self.create(req, now, fx, |app| {
            app.idempotency_key = idempotency_key.map(String::into_boxed_str)
        });
        Ok(Submitted { app, created: true })
    }

    /// Checks a submission against the known kinds.
    fn validate(&self, req: &SubmitRequest) -> Result<(), OpError> {
        // No allocation on the happy path: the known kinds are only collected for an error.
        let known =
            self.rules.allowed_kinds.contains(&req.kind) || self.kinds.contains_key(&req.kind);
        if known {
            req.validate([req.kind.as_str()])?;
        } else {
            let kinds = self.known_kinds();
            req.validate(kinds.iter().map(String::as_str))?;
        }
        Ok(())
    }

    /// Creates the next app from a validated request; `fill` sets what the request does not
    /// carry (idempotency key, schedule, retried app).
    fn create(
        &mut self,
        req: SubmitRequest,
        now: Now,
        fx: &mut Effects,
        fill: impl FnOnce(&mut App),
    ) -> Arc<App> {
        let seq = self.last_seq + 1;
        let mut app = App::submitted(AppId::new(seq, now.wall), seq, req, now.wall);
        fill(&mut app);
        let app = self.put_app(None, app, fx);
        self.last_seq = seq;
        fx.last_seq = Some(seq);
        app
    }

    /// A new app from the template of the ended app `id`, with `retry_of: id` and the same
    /// schedule run. Only an ended app can be retried.
    pub fn retry(&mut self, id: &AppId, now: Now, fx: &mut Effects) -> Result<Arc<App>, OpError> {
        let old = match self.lookup(id) {
            Lookup::Found(a) => a,
            Lookup::Expired => return Err(OpError::Expired(id.clone())),
            Lookup::NotFound => return Err(OpError::NotFound(id.clone())),
        };
        if !old.state.is_terminal() {
            return Err(OpError::Conflict(format!(
                "app {id} is {}: only an ended app can be retried",
                old.state
            )));
        }
        self.admit_app(&old.namespace)?;
        Ok(self.create(old.template(), now, fx, |app| {
            app.retry_of = Some(Box::new(old.id.clone()));
            app.schedule_id = old.schedule_id.clone();
            app.scheduled_at = old.scheduled_at;
        }))
    }

    /// What a submission would do, changing nothing: the app as it would be created, and
    /// where it would go now.
    pub fn dry_run(&self, req: SubmitRequest, now: Now) -> Result<(App, Placement), OpError> {
        self.validate(&req)?;
        self.admit_app(&req.namespace)?;
        let seq = self.last_seq + 1;
        let app = App::submitted(AppId::new(seq, now.wall), seq, req, now.wall);
        let shape = shape(&app);
        let ahead = self
            .namespaces
            .get(&app.namespace)
            .map_or(0, |e| e.queue.waiting(&shape));
        let placement = match (
            self.quota_reason(&app),
            self.capacity.best(&shape, self.rules.placement),
        ) {
            (Some(held), _) => Placement::Waiting(held),
            (None, Some(w)) if ahead == 0 => Placement::Worker(w),
            (None, Some(_)) => Placement::Waiting(format!(
                "queued behind {ahead} waiting apps of the same kind and size"
            )),
            (None, None) => Placement::Waiting(self.wait_reason(&app)),
        };
        Ok((app, placement))
    }

    /// Asks for an app to be killed: a waiting app ends KILLED at once; an app on a worker
    /// gets a kill command and ends KILLED when the worker reports it (or is lost).
    pub fn kill(
        &mut self,
        id: &AppId,
        reason: Option<String>,
        now: Now,
        fx: &mut Effects,
    ) -> Result<Arc<App>, OpError> {
        let reason = reason
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| "requested by the user".to_string());
        let old = match self.lookup(id) {
            Lookup::Found(a) => a,
            Lookup::Expired => return Err(OpError::Expired(id.clone())),
            Lookup::NotFound => return Err(OpError::NotFound(id.clone())),
        };
        if old.state.is_terminal() {
            return Err(OpError::Conflict(format!(
                "app {id} already ended {}",
                old.state
            )));
        }
        let mut app = (*old).clone();
        app.kill_requested = true;
        app.kill_reason = Some(reason.as_str().into());
        if app.state.is_waiting() {
            app.transition(
                AppState::Killed,
                now.wall,
                Some(format!("killed: {reason}")),
            )
            .map_err(|e| OpError::Conflict(e.to_string()))?;
            return Ok(self.put_app(Some(old), app, fx));
        }
        app.message = Some(format!("kill requested: {reason}"));
        let seq = app.seq;
        let app = self.put_app(Some(old), app, fx);
        self.send_kill(seq, now, fx);
        Ok(app)
    }

    /// Sends the pending kill of app `seq` if its worker is ALIVE.
    fn send_kill(&mut self, seq: u64, now: Now, fx: &mut Effects) {
        let Some(app) = self.apps.get(&seq) else {
            return;
        };
        let Some(w) = app.worker_id.as_ref().and_then(|w| self.workers.get(w)) else {
            return;
        };
        if w.record.state != WorkerState::Alive {
            return;
        }
        fx.commands.push(Command::Kill {
            worker: w.record.id.clone(),
            address: w.record.address.clone(),
            app: app.id.clone(),
            attempt: app.attempt,
            reason: if app.kill_requested {
                app.kill_reason
                    .as_deref()
                    .unwrap_or("requested by the user")
                    .to_string()
            } else if app.over_max_runtime() {
                app.max_runtime_message()
            } else {
                format!(
                    "worker {} drained: its deadline passed; relaunching elsewhere",
                    w.record.id
                )
            },
        });
        self.pending_kills.insert(seq, now.mono_ms.max(1));
    }

    // ------------------------------------------------------------------------------------
    // Operations from workers

    /// A worker (re-)registers and lists the apps it holds. Apps the cluster owns there are
    /// confirmed, apps it does not own are returned to be killed, apps it expected there but
    /// the worker does not list are lost. Returns the attempts the worker must kill.
    pub fn register(
        &mut self,
        reg: Registration,
        now: Now,
        fx: &mut Effects,
    ) -> Result<Vec<(AppId, u32)>, OpError> {
        if reg.id.0.trim().is_empty() || reg.address.trim().is_empty() {
            return Err(OpError::BadRequest(
                "worker_id and address are required".into(),
            ));
        }
        let wid = reg.id.clone();
        if let Some(w) = self.workers.get(&wid) {
            takeover_check(w, reg.instance.as_deref())?;
        }
        // A drain outlives re-registrations (and master failovers: it is in the record).
        let drain = self.workers.get(&wid).and_then(|w| w.record.drain);
        let record = WorkerRecord {
            id: wid.clone(),
            address: reg.address.clone(),
            cores: reg.cores,
            memory_mb: reg.memory_mb,
            kinds: reg.kinds.clone(),
            state: WorkerState::Alive,
            registered_at: now.wall,
            last_heartbeat: now.wall,
            plugin_errors: reg.plugin_errors.clone(),
            dead_since: None,
            drain,
        };
        self.put_worker(&wid, record, fx);
        if let Some(mut w) = self.workers.get(&wid).cloned() {
            if w.suspect || w.draining || w.instance != reg.instance {
                w.suspect = false;
                w.draining = false;
                w.instance = reg.instance.clone();
                self.set_worker(&wid, w);
            }
        }
        let mut kill = Vec::new();
        // Which attempts the worker holds: another attempt of an app does not count.
        let mut reported: HashSet<(AppId, u32)> = HashSet::new();
        for r in &reg.apps {
            reported.insert((r.app.clone(), r.attempt));
            if let ReportOutcome::Kill(_) = self.apply_report(&wid, r, now, fx) {
                kill.push((r.app.clone(), r.attempt));
            }
        }
        // Apps placed on this worker that the worker no longer has.
        let bound: Vec<u64> = self
            .workers
            .get(&wid)
            .map(|w| w.apps.iter().copied().collect())
            .unwrap_or_default();
        for seq in bound {
            let Some(old) = self.apps.get(&seq).cloned() else {
                continue;
            };
            if reported.contains(&(old.id.clone(), old.attempt)) {
                continue;
            }
            let mut app = (*old).clone();
            let outcome = if app.started_at.is_none() {
                // The attempt never started: the launch was lost with a master (the worker
                // lists every attempt it took, finished ones included). It never ran, so it is
                // queued again without spending a retry; the worker now follows this epoch and
                // refuses the old launch should it still arrive.
                let next = if app.kill_requested {
                    AppState::Killed
                } else {
                    AppState::Relaunching
                };
                let msg = format!(
                    "worker {wid} never received attempt {}; queued again",
                    app.attempt
                );
                app.transition(next, now.wall, Some(msg)).map(|()| next)
            } else {
                let reason = format!("worker {wid} re-registered without attempt {}", app.attempt);
                app.lose(&reason, now.wall)
            };
            if outcome.is_ok() {
                self.put_app(Some(old), app, fx);
            }
        }
        fx.liveness.push(LiveChange::Alive(wid.clone()));
        // Kills pending on this worker go out again at once.
        let pending: Vec<u64> = self
            .workers
            .get(&wid)
            .map(|w| {
                w.apps
                    .iter()
                    .copied()
                    .filter(|s| self.pending_kills.contains_key(s))
                    .collect()
            })
            .unwrap_or_default();
        for seq in pending {
            self.send_kill(seq, now, fx);
        }
        Ok(kill)
    }

    /// A worker's report of an app's state.
    pub fn report(
        &mut self,
        worker: &WorkerId,
        r: &WorkerReport,
        now: Now,
        fx: &mut Effects,
    ) -> ReportOutcome {
        let Some(w) = self.workers.get(worker).cloned() else {
            return ReportOutcome::NotRegistered(format!(
                "worker {worker} is not registered; register first"
            ));
        };
        if w.record.state != WorkerState::Alive {
            // Keep the report on the worker: it re-registers and lists the app.
            return ReportOutcome::NotRegistered(format!(
                "worker {worker} is not registered; register first"
            ));
        }
        if r.worker_shutdown && !w.draining {
            // The worker is going away: nothing new goes there (relaunches included).
            let mut w = w;
            w.draining = true;
            self.set_worker(worker, w);
        }
        self.apply_report(worker, r, now, fx)
    }

    fn apply_report(
        &mut self,
        wid: &WorkerId,
        r: &WorkerReport,
        now: Now,
        fx: &mut Effects,
    ) -> ReportOutcome {
        let old = match self.lookup(&r.app) {
            Lookup::Found(a) => a,
            Lookup::Expired | Lookup::NotFound => {
                return if r.state.is_terminal() {
                    ReportOutcome::Done
                } else {
                    ReportOutcome::Kill(format!(
                        "the master does not know app {} (attempt {} on {wid})",
                        r.app, r.attempt
                    ))
                };
            }
        };
        let rep = Report {
            worker: wid.clone(),
            attempt: r.attempt,
            state: r.state,
            exit_code: r.exit_code,
            message: r.message.clone().filter(|m| !m.is_empty()),
            worker_shutdown: r.worker_shutdown,
        };
        let details_changed = r.details.iter().any(|(k, v)| old.details.get(k) != Some(v));
        let mut app = (*old).clone();
        match report::apply(&mut app, &rep, now.wall) {
            Outcome::Applied(_) => {
                app.details.extend(r.details.clone());
                self.put_app(Some(old), app, fx);
                ReportOutcome::Done
            }
            Outcome::AlreadyKnown => {
                if details_changed {
                    app.details.extend(r.details.clone());
                    self.put_app(Some(old), app, fx);
                }
                ReportOutcome::Done
            }
            Outcome::Stale { kill: true } => ReportOutcome::Kill(format!(
                "the master does not own attempt {} of {} on {wid}",
                r.attempt, r.app
            )),
            Outcome::Stale { kill: false } => ReportOutcome::Done,
            Outcome::Illegal(e) => ReportOutcome::Refused(e.to_string()),
        }
    }

    /// A worker that was suspect (a launch to it failed) was heard from: it may take apps
    /// again.
    pub fn worker_heard(&mut self, id: &WorkerId) {
        if let Some(mut w) = self.workers.get(id).cloned() {
            if w.suspect {
                w.suspect = false;
                self.set_worker(id, w);
            }
        }
    }

    /// A launch did not reach the worker or was refused by it: the attempt never started, so
    /// the app goes back to the queue without spending a retry, and nothing more is placed on
    /// the worker until it is heard from again.
    pub fn launch_failed(
        &mut self,
        worker: &WorkerId,
        app: &AppId,
        attempt: u32,
        why: &str,
        now: Now,
        fx: &mut Effects,
    ) {
        if let Some(mut w) = self.workers.get(worker).cloned() {
            if !w.suspect {
                w.suspect = true;
                self.set_worker(worker, w);
            }
            fx.liveness.push(LiveChange::Suspect(worker.clone()));
        }
        let Some(old) = self
            .attempt_on(worker, app, attempt)
            .filter(|a| a.state == AppState::Launching)
        else {
            return;
        };
        let next = if old.kill_requested {
            AppState::Killed
        } else {
            AppState::Relaunching
        };
        let mut a = (*old).clone();
        let msg = format!("launch on worker {worker} failed: {why}");
        if a.transition(next, now.wall, Some(msg)).is_ok() {
            self.put_app(Some(old), a, fx);
        }
    }

    /// The app, if its current attempt is `attempt` on `worker` (an answer about any other
    /// attempt is stale).
    fn attempt_on(&self, worker: &WorkerId, app: &AppId, attempt: u32) -> Option<Arc<App>> {
        match self.lookup(app) {
            Lookup::Found(a) if a.attempt == attempt && a.worker_id.as_ref() == Some(worker) => {
                Some(a)
            }
            _ => None,
        }
    }

    /// The worker answered a kill by saying it does not run the attempt: it is lost there.
    pub fn kill_missed(
        &mut self,
        worker: &WorkerId,
        app: &AppId,
        attempt: u32,
        why: &str,
        now: Now,
        fx: &mut Effects,
    ) {
        let Some(old) = self
            .attempt_on(worker, app, attempt)
            .filter(|a| a.state.is_on_worker())
        else {
            return;
        };
        let mut a = (*old).clone();
        let reason = format!("worker {worker} does not run attempt {attempt}: {why}");
        if a.lose(&reason, now.wall).is_ok() {
            self.put_app(Some(old), a, fx);
        }
    }

    // ------------------------------------------------------------------------------------
    // Timers

    /// Declares the `silent` workers DEAD (each with how long it has been silent, ms) and
    /// loses their apps.
    pub fn expire_workers(&mut self, silent: &[(WorkerId, u64)], now: Now, fx: &mut Effects) {
        for (wid, silence_ms) in silent {
            let Some(w) = self.workers.get(wid).cloned() else {
                fx.liveness.push(LiveChange::Forget(wid.clone()));
                continue;
            };
            fx.liveness.push(LiveChange::Forget(wid.clone()));
            if w.record.state == WorkerState::Dead {
                continue;
            }
            let reason = format!(
                "worker {wid} lost: no heartbeat for {}",
                format_ms(silence_ms / 100 * 100)
            );
            let mut rec = (*w.record).clone();
            rec.state = WorkerState::Dead;
            rec.dead_since = Some(now.wall);
            self.put_worker(wid, rec, fx);
            for seq in w.apps.iter() {
                let Some(old) = self.apps.get(seq).cloned() else {
                    continue;
                };
                let mut app = (*old).clone();
                if app.lose(&reason, now.wall).is_ok() {
                    self.put_app(Some(old), app, fx);
                }
            }
        }
    }

    /// After a recovery, apps no worker reported within the worker timeout are lost.
    pub fn check_recovery(&mut self, now: Now, fx: &mut Effects) {
        if self.recovery_deadline_ms.is_none_or(|d| now.mono_ms <= d) {
            return;
        }
        self.recovery_deadline_ms = None;
        let stuck: Vec<u64> = self.states[AppState::Unknown as usize]
            .iter()
            .copied()
            .collect();
        let reason = format!(
            "no worker reported the app within {} of master recovery",
            format_ms(self.rules.worker_timeout_ms)
        );
        for seq in stuck {
            let Some(old) = self.apps.get(&seq).cloned() else {
                continue;
            };
            let worker_alive = old
                .worker_id
                .as_ref()
                .and_then(|w| self.workers.get(w))
                .is_some_and(|w| w.record.state == WorkerState::Alive);
            if worker_alive {
                continue;
            }
            let mut app = (*old).clone();
            if app.lose(&reason, now.wall).is_ok() {
                self.put_app(Some(old), app, fx);
            }
        }
    }

    /// When the earliest app timer fires (see [`Cluster::fire_timers`]).
    pub fn next_timer(&self) -> Option<DateTime<Utc>> {
        let app = self.timers.get_min().map(|(t, _)| *t);
        let drain = self.drain_timers.get_min().map(|(t, _)| *t);
        match (app, drain) {
            (Some(a), Some(d)) => Some(a.min(d)),
            (a, d) => a.or(d),
        }
    }

    /// Runs the app timers due at `now`: a relaunch pause that ended queues the app; an
    /// attempt past its max runtime is killed (it then ends FAILED, or is relaunched by the
    /// restart policy); an ended on-demand app is forgotten. Returns how many fired.
    pub fn fire_timers(&mut self, now: Now, fx: &mut Effects) -> usize {
        let mut fired = 0;
        while let Some((at, seq)) = self.timers.get_min().cloned() {
            if at > now.wall {
                break;
            }
            fired += 1;
            let Some(old) = self.apps.get(&seq).cloned() else {
                self.timers.remove(&(at, seq));
                continue;
            };
            if old.state.is_terminal() {
                // An ended on-demand app: its minute is up.
                self.remove_app(seq, fx);
                continue;
            }
            let mut app = (*old).clone();
            if app.state.is_waiting() {
                app.relaunch_at = None;
                self.put_app(Some(old), app, fx);
                continue;
            }
            app.max_runtime_exceeded = Some(app.attempt);
            app.message = Some(format!("{}; killing it", app.max_runtime_message()));
            self.put_app(Some(old), app, fx);
            self.send_kill(seq, now, fx);
        }
        while let Some((at, wid)) = self.drain_timers.get_min().cloned() {
            if at > now.wall {
                break;
            }
            fired += 1;
            self.drain_deadline(&wid, now, fx);
        }
        fired
    }

    /// A drain's deadline passed: what still runs on the worker is stopped, to be relaunched
    /// elsewhere within its retries.
    fn drain_deadline(&mut self, wid: &WorkerId, now: Now, fx: &mut Effects) {
        let Some(w) = self.workers.get(wid).cloned() else {
            return;
        };
        let mut rec = (*w.record).clone();
        if let Some(d) = rec.drain.as_mut() {
            d.deadline_passed = true;
        }
        self.put_worker(wid, rec, fx);
        for seq in w.apps.iter() {
            let Some(old) = self.apps.get(seq).cloned() else {
                continue;
            };
            if old.kill_requested || old.is_evicted() || !old.state.is_on_worker() {
                continue;
            }
            let mut app = (*old).clone();
            app.evicted = Some(app.attempt);
            app.message = Some(format!(
                "worker {wid} drained: its deadline passed; stopping the app to relaunch it elsewhere"
            ));
            self.put_app(Some(old), app, fx);
            self.send_kill(*seq, now, fx);
        }
    }

    /// Drains a worker: nothing new is placed there; what still runs there when `deadline`
    /// has passed is stopped and relaunched elsewhere. A new drain replaces the deadline.
    pub fn drain_worker(
        &mut self,
        wid: &WorkerId,
        deadline: std::time::Duration,
        now: Now,
        fx: &mut Effects,
    ) -> Result<Arc<WorkerRecord>, OpError> {
        let w = self
            .workers
            .get(wid)
            .cloned()
            .ok_or_else(|| OpError::WorkerNotFound(wid.clone()))?;
        let deadline = chrono::Duration::from_std(deadline)
            .map_err(|_| OpError::BadRequest("deadline is out of range".into()))?;
        let mut rec = (*w.record).clone();
        rec.drain = Some(crate::worker::Drain {
            since: rec.drain.map_or(now.wall, |d| d.since),
            deadline: now.wall + deadline,
            deadline_passed: false,
        });
        self.put_worker(wid, rec, fx);
        if deadline.is_zero() {
            self.drain_deadline(wid, now, fx);
        }
        Ok(self.workers[wid].record.clone())
    }

    /// Ends a drain: the worker takes apps again (apps already being stopped still stop).
    pub fn undrain_worker(
        &mut self,
        wid: &WorkerId,
        fx: &mut Effects,
    ) -> Result<Arc<WorkerRecord>, OpError> {
        let w = self
            .workers
            .get(wid)
            .cloned()
            .ok_or_else(|| OpError::WorkerNotFound(wid.clone()))?;
        if w.record.drain.is_some() {
            let mut rec = (*w.record).clone();
            rec.drain = None;
            self.put_worker(wid, rec, fx);
        }
        Ok(self.workers[wid].record.clone())
    }

    /// Sends again the kills workers have not confirmed for a while.
    pub fn resend_kills(&mut self, now: Now, fx: &mut Effects) {
        let due: Vec<u64> = self
            .pending_kills
            .iter()
            .filter(|(_, &sent)| {
                sent == 0 || now.mono_ms.saturating_sub(sent) >= self.rules.kill_resend_ms
            })
            .map(|(s, _)| *s)
            .collect();
        for seq in due {
            self.send_kill(seq, now, fx);
        }
    }

    /// The retention: removes terminal apps beyond `retain_finished` or older than
    /// `retain_finished_for`, and forgets DEAD workers after `retain_dead_workers_for`; at most
    /// `expire_batch` of each per call, except that apps over the count are removed up to
    /// [`EXPIRE_CATCH_UP`] × `expire_batch` at once: a batch that ended more apps than one call's
    /// share is followed by a call that removes as many, so the retention keeps up with any
    /// rate at which apps end. Returns how many were removed.
    pub fn expire(&mut self, now: Now, fx: &mut Effects) -> usize {
        let mut n = 0;
        let cutoff = now.wall - self.rules.retain_finished_for;
        let over = self
            .terminal
            .len()
            .saturating_sub(self.rules.retain_finished);
        let limit = self
            .rules
            .expire_batch
            .max(over.min(EXPIRE_CATCH_UP * self.rules.expire_batch));
        while n < limit {
            let Some((at, seq)) = self.terminal.get_min().cloned() else {
                break;
            };
            if self.terminal.len() <= self.rules.retain_finished && at >= cutoff {
                break;
            }
            self.terminal.remove(&(at, seq));
            self.remove_app(seq, fx);
            n += 1;
        }
        let cutoff = now.wall - self.rules.retain_dead_workers_for;
        let mut m = 0;
        while m < self.rules.expire_batch {
            let Some((at, id)) = self.dead.get_min().cloned() else {
                break;
            };
            if at >= cutoff {
                break;
            }
            self.dead.remove(&(at, id.clone()));
            self.forget_worker(&id, fx);
            m += 1;
        }
        n + m
    }

    /// Whether [`Cluster::expire`] has something to remove now.
    pub fn expiry_due(&self, now: Now) -> bool {
        let apps = self.terminal.get_min().is_some_and(|(at, _)| {
            self.terminal.len() > self.rules.retain_finished
                || *at < now.wall - self.rules.retain_finished_for
        });
        let workers = self
            .dead
            .get_min()
            .is_some_and(|(at, _)| *at < now.wall - self.rules.retain_dead_workers_for);
        apps || workers
    }

    // ------------------------------------------------------------------------------------
    // Placement

    /// Places waiting apps, oldest first, each on the placeable worker of its kind that fits it
    /// and that `Rules::placement` prefers (spread: most free cores, then most free memory;
    /// binpack: fewest free cores, then least free memory; ties: smallest id); an app that fits
    /// nowhere is skipped, so smaller apps behind it go first. Returns how many were placed.
    ///
    /// Costs O(apps placed × log workers + shapes examined): a shape that fits nowhere is not
    /// examined again until capacity grows.
    pub fn place(&mut self, now: Now, fx: &mut Effects) -> usize {
        let mut placed = 0;
        while let Some((ns, seq, shape)) = self.fairest_namespace() {
            let e = &self.namespaces[&ns];
            let held =
                namespace::held_back(&ns, &e.quota(), &e.usage, shape.cores, shape.memory_mb);
            let best = match held {
                Some(_) => None,
                None => self.capacity.best(&shape, self.rules.placement),
            };
            let Some(wid) = best else {
                // Over its namespace's quota, or fits on no worker now: skip the shape until
                // the namespace frees resources or capacity grows.
                self.ns_entry(&ns).queue.block(&shape);
                continue;
            };
            let (Some(old), Some(w)) = (self.apps.get(&seq).cloned(), self.workers.get(&wid))
            else {
                // Indexes out of step with the records would be a bug; never loop on it.
                self.ns_entry(&ns).queue.remove(&shape, seq);
                continue;
            };
            let address = w.record.address.clone();
            let mut app = (*old).clone();
            app.worker_id = Some(wid.clone());
            let msg = format!("launching on worker {wid}");
            if app
                .transition(AppState::Launching, now.wall, Some(msg))
                .is_err()
            {
                self.ns_entry(&ns).queue.remove(&shape, seq);
                continue;
            }
            let app = self.put_app(Some(old), app, fx);
            fx.commands.push(Command::Launch {
                worker: wid,
                address,
                app,
            });
            placed += 1;
        }
        placed
    }

    /// Checks every index against the records (tests; O(everything)).
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut waiting: Vec<u64> = self
            .apps
            .values()
            .filter(|a| queued(a))
            .map(|a| a.seq)
            .collect();
        waiting.sort_unstable();
        if waiting != self.queued_all() {
            return Err(format!(
                "queue {:?} != waiting apps {:?}",
                self.queued_all(),
                waiting
            ));
        }
        let recounted = self.recount_usage();
        for (ns, u) in recounted.iter() {
            if self.usage(ns) != *u {
                return Err(format!(
                    "namespace {ns}: usage {:?} != recounted {u:?}",
                    self.usage(ns)
                ));
            }
        }
        for (ns, e) in self.namespaces.iter() {
            if !e.usage.is_empty() && recounted.get(ns).is_none() {
                return Err(format!("namespace {ns}: usage {:?} of nothing", e.usage));
            }
        }
        for s in AppState::ALL {
            let n = self.apps.values().filter(|a| a.state == s).count();
            if n != self.states[s as usize].len() {
                return Err(format!(
                    "state index {s}: {} != {n}",
                    self.states[s as usize].len()
                ));
            }
        }
        for w in self.workers.values() {
            let on: Vec<&Arc<App>> = self
                .apps
                .values()
                .filter(|a| holding(a) == Some(&w.record.id))
                .collect();
            let cores: u32 = on.iter().map(|a| a.cores).sum();
            let mem: u64 = on.iter().map(|a| a.memory_mb).sum();
            if (cores, mem) != (w.used_cores, w.used_memory_mb) || on.len() != w.apps.len() {
                return Err(format!(
                    "worker {} usage {}/{} ({} apps) != apps {cores}/{mem} ({})",
                    w.record.id,
                    w.used_cores,
                    w.used_memory_mb,
                    w.apps.len(),
                    on.len()
                ));
            }
        }
        let mut fresh = self.clone();
        fresh.refresh_offers();
        if fresh.offers != self.offers {
            return Err("the ALIVE workers' offers are stale".into());
        }
        let terminal = self
            .apps
            .values()
            .filter(|a| a.state.is_terminal() && !a.on_demand)
            .count();
        if terminal != self.terminal.len() {
            return Err(format!(
                "terminal index {} != {terminal}",
                self.terminal.len()
            ));
        }
        let drains: OrdSet<(DateTime<Utc>, WorkerId)> = self
            .workers
            .values()
            .filter_map(|w| drain_timer(&w.record).map(|t| (t, w.record.id.clone())))
            .collect();
        if drains != self.drain_timers {
            return Err(format!(
                "drain timers {:?} != the workers' {:?}",
                self.drain_timers, drains
            ));
        }
        let timers: OrdSet<(DateTime<Utc>, u64)> = self
            .apps
            .values()
            .filter_map(|a| app_timer(a).map(|t| (t, a.seq)))
            .collect();
        if timers != self.timers {
            return Err(format!(
                "timers {:?} != the apps' {:?}",
                self.timers, timers
            ));
        }
        self.check_schedule_invariants()
    }

    fn check_schedule_invariants(&self) -> Result<(), String> {
        let mut runs: OrdMap<ScheduleId, OrdSet<u64>> = OrdMap::new();
        let mut active: OrdMap<ScheduleId, OrdSet<u64>> = OrdMap::new();
        let mut index: PMap<(ScheduleId, DateTime<Utc>), u64> = PMap::new();
        for a in self.apps.values() {
            let Some(sid) = a.schedule_id.as_deref().map(|s| ScheduleId(s.to_string())) else {
                continue;
            };
            runs.entry(sid.clone()).or_default().insert(a.seq);
            if !a.state.is_terminal() {
                active.entry(sid.clone()).or_default().insert(a.seq);
            }
            if let (Some(t), None) = (a.scheduled_at, a.retry_of.as_ref()) {
                if index.insert((sid.clone(), t), a.seq).is_some() {
                    return Err(format!("two runs of {sid} for {t}"));
                }
            }
        }
        if runs != self.schedule_runs || active != self.schedule_active || index != self.run_index {
            return Err("the schedule run indexes are out of step with the apps".into());
        }
        let timers: OrdSet<(DateTime<Utc>, ScheduleId)> = self
            .schedules
            .values()
            .filter_map(|e| self.timer_of(e).map(|t| (t, e.record.id.clone())))
            .collect();
        if timers != self.schedule_timers {
            return Err(format!(
                "schedule timers {:?} != {:?}",
                self.schedule_timers, timers
            ));
        }
        Ok(())
    }
}

/// Checks an `Idempotency-Key`: 1 to 255 visible ASCII characters.
pub fn check_idempotency_key(key: &str) -> Result<(), OpError> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(OpError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        )));
    }
    Ok(())
}

/// Milliseconds as people read them ("10s", "1m 5s 300ms").
fn format_ms(ms: u64) -> String {
    let (s, ms) = (ms / 1000, ms % 1000);
    let (m, s) = (s / 60, s % 60);
    let (h, m) = (m / 60, m % 60);
    let mut parts = Vec::new();
    if h > 0 {
        parts.push(format!("{h}h"));
    }
    if m > 0 {
        parts.push(format!("{m}m"));
    }
    if s > 0 {
        parts.push(format!("{s}s"));
    }
    if ms > 0 || parts.is_empty() {
        parts.push(format!("{ms}ms"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod namespace_tests;
#[cfg(test)]
mod schedule_tests;
#[cfg(test)]
mod tests;
