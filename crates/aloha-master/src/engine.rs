//! The engine: the one task that owns the cluster state and writes it.
//!
//! REST and gRPC handlers send an [`Op`] on a channel and await its reply. The engine takes
//! whatever is queued (group commit), applies each operation through the pure
//! [`Cluster`] of `aloha-core`, runs the timers when they are due and a placement round when
//! something may be placed, and writes every resulting change — records, events, sequence
//! numbers — in **one** store transaction (split only where the store limits a transaction, as
//! etcd does). Only once that is durable does it publish the new read snapshot, answer the
//! callers, hand the events to the log and the listeners, and send the commands to workers.
//! If the write fails, it puts back the cluster it cloned before the batch (persistent maps:
//! the clone is a few pointer copies), so memory never holds what the store does not, and
//! every operation of the batch gets the error.
//!
//! Readers never wait for the engine: they read the last published [`View`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aloha_core::cluster::namespaces::Target;
use aloha_core::cluster::schedules::{Backfill, RunOutcome};
use aloha_core::cluster::{
    AppWrite, Cluster, Command, Effects, Now, OpError, Registration, ReportOutcome, Submitted,
    WorkerReport,
};
use aloha_core::namespace::Scope;
use aloha_core::schedules::{Overlap, Schedule, ScheduleId, SchedulePatch, ScheduleRequest};
use aloha_core::{App, AppId, Event, EventBody, SubmitRequest, WorkerId};
use aloha_proto as pb;
use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::{debug, error, warn};

use crate::clock::Clock;
use crate::events::EventLog;
use crate::listeners::Listeners;
use crate::liveness::LiveTable;
use crate::metrics::Metrics;
use crate::store::{keys, StateStore, StoreError, Txn};
use crate::worker_client::WorkerConnector;

/// Most operations taken into one batch.
const MAX_BATCH: usize = 4096;
/// Most operations one batch takes on a store that limits transactions (etcd): each makes a
/// record and an event or two, so a batch fits one transaction of etcd's default 128 ops.
const MAX_BATCH_LIMITED: usize = 30;
/// Most bytes of values one transaction carries on a limited store (etcd's default request
/// limit is 1.5 MiB).
const MAX_TXN_BYTES: usize = 1024 * 1024;
/// How long the engine waits after a failed commit before the next batch.
const FAILED_COMMIT_PAUSE: Duration = Duration::from_millis(100);

/// What the readers see: the cluster as of the last durable batch.
pub struct View {
    /// The cluster.
    pub cluster: Cluster,
    /// The leadership's epoch.
    pub epoch: u64,
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The cluster refused it; nothing changed.
    #[error(transparent)]
    Refused(#[from] OpError),
    /// The store failed; nothing of the batch was acknowledged.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine stopped (this master no longer leads).
    #[error("not leader")]
    Stopped,
}

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// An operation for the engine.
pub enum Op {
    /// `POST /api/v1/apps`.
    Submit {
        /// Where the caller may write.
        scope: Scope,
        /// The request.
        req: SubmitRequest,
        /// Its `Idempotency-Key`.
        key: Option<String>,
        /// The answer.
        reply: Reply<Submitted>,
    },
    /// `POST /api/v1/apps/batch`: each app is submitted as by [`Op::Submit`], on its own;
    /// one answer per app, in order.
    SubmitBatch {
        /// Where the caller may write.
        scope: Scope,
        /// The requests, each with its idempotency key.
        reqs: Vec<(SubmitRequest, Option<String>)>,
        /// The answers.
        reply: Reply<Vec<Result<Submitted, OpError>>>,
    },
    /// `POST /api/v1/apps/{id}/kill`.
    Kill {
        /// Where the caller may write.
        scope: Scope,
        /// App.
        id: AppId,
        /// Why.
        reason: Option<String>,
        /// The answer.
        reply: Reply<Arc<App>>,
    },
    /// `POST /api/v1/apps/{id}/retry`.
    Retry {
        /// Where the caller may write.
        scope: Scope,
        /// The ended app.
        id: AppId,
        /// The new app.
        reply: Reply<Arc<App>>,
    },
    /// `POST /api/v1/workers/{id}/drain` (`Some` deadline) or `.../undrain` (`None`).
    Drain {
        /// The worker.
        worker: WorkerId,
        /// The deadline, from now.
        deadline: Option<Duration>,
        /// Done.
        reply: Reply<()>,
    },
    /// `PUT /api/v1/namespaces/{name}` (`Some`) or `DELETE` (`None`).
    Namespace {
        /// The namespace.
        name: String,
        /// Its quota and weight; `None` deletes it.
        spec: Option<aloha_core::namespace::NamespaceSpec>,
        /// Done.
        reply: Reply<()>,
    },
    /// A schedule operation (`/api/v1/schedules...`).
    Schedule {
        /// Where the caller may write.
        scope: Scope,
        /// What to do.
        cmd: ScheduleCmd,
        /// The answer.
        reply: Reply<ScheduleAnswer>,
    },
    /// A worker registers.
    Register {
        /// The registration.
        reg: Registration,
        /// The attempts it must kill.
        reply: Reply<Vec<(AppId, u32)>>,
    },
    /// A worker reports an app's state.
    Report {
        /// The worker.
        worker: WorkerId,
        /// The report.
        report: WorkerReport,
        /// The answer.
        reply: Reply<ReportOutcome>,
    },
    /// A worker reports several apps' states at once, applied in order.
    Reports {
        /// The worker.
        worker: WorkerId,
        /// The reports.
        reports: Vec<WorkerReport>,
        /// One answer per report.
        reply: Reply<Vec<ReportOutcome>>,
    },
    /// A suspect worker heartbeated.
    Heard(WorkerId),
    /// Run the timers now (they also run on their own every tick).
    Tick {
        /// Answered once the batch is durable.
        reply: Reply<()>,
    },
    /// A launch failed.
    LaunchFailed {
        /// Worker.
        worker: WorkerId,
        /// App.
        app: AppId,
        /// Attempt.
        attempt: u32,
        /// Why.
        why: String,
    },
    /// A worker does not run an attempt it was told to kill.
    KillMissed {
        /// Worker.
        worker: WorkerId,
        /// App.
        app: AppId,
        /// Attempt.
        attempt: u32,
        /// Why.
        why: String,
    },
}

/// The schedule operations.
#[derive(Debug)]
pub enum ScheduleCmd {
    /// Create.
    Create(ScheduleRequest),
    /// Change.
    Update(ScheduleId, SchedulePatch),
    /// Delete.
    Delete(ScheduleId),
    /// Pause.
    Pause(ScheduleId),
    /// Resume.
    Resume(ScheduleId),
    /// A run now, under the schedule's overlap policy or this one.
    Trigger(ScheduleId, Option<Overlap>),
    /// Runs for the nominal times in `[start, end)`, or only their list (`dry_run`).
    Backfill {
        /// Schedule.
        id: ScheduleId,
        /// From (inclusive).
        start: DateTime<Utc>,
        /// To (exclusive).
        end: DateTime<Utc>,
        /// Only list the times.
        dry_run: bool,
    },
}

/// What a schedule operation answers.
#[derive(Debug)]
pub enum ScheduleAnswer {
    /// The schedule after the operation.
    Schedule(Arc<Schedule>),
    /// A trigger's outcome.
    Run(RunOutcome),
    /// A backfill's.
    Backfill(Backfill),
}

/// What the engine and the master handle share.
pub struct Shared {
    /// The last published view.
    pub view: ArcSwap<View>,
    /// Heartbeats.
    pub live: LiveTable,
    fenced: AtomicBool,
    fenced_notify: Notify,
    /// Told after every published view.
    published: Notify,
    /// The listeners, once attached.
    pub listeners: std::sync::OnceLock<Arc<Listeners>>,
}

impl Shared {
    /// Shares `view`.
    pub fn new(view: View) -> Arc<Shared> {
        Arc::new(Shared {
            view: ArcSwap::from_pointee(view),
            live: LiveTable::default(),
            fenced: AtomicBool::new(false),
            fenced_notify: Notify::new(),
            published: Notify::new(),
            listeners: std::sync::OnceLock::new(),
        })
    }

    /// Whether a write was refused by the leadership fence (or could not be told apart from
    /// one): this master must stop acting.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    /// Marks the master fenced.
    pub fn mark_fenced(&self, epoch: u64, why: &str) {
        if !self.fenced.swap(true, Ordering::SeqCst) {
            error!(epoch, "{why}: stepping down");
            self.fenced_notify.notify_waiters();
        }
    }

    /// Publishes a view and wakes whoever waits for one.
    pub fn publish(&self, view: View) {
        self.view.store(Arc::new(view));
        self.published.notify_waiters();
    }

    /// Waits until `check` finds what it looks for in a published view, or `deadline`
    /// passes (`None`), or the master is fenced (`None`).
    pub async fn wait_for<T>(
        &self,
        deadline: tokio::time::Instant,
        check: impl Fn(&View) -> Option<T>,
    ) -> Option<T> {
        loop {
            let next = self.published.notified();
            tokio::pin!(next);
            next.as_mut().enable();
            if let Some(found) = check(&self.view.load()) {
                return Some(found);
            }
            if self.is_fenced() {
                return None;
            }
            tokio::select! {
                _ = next => {}
                _ = self.fenced() => return None,
                _ = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }

    /// Resolves once fenced.
    pub async fn fenced(&self) {
        loop {
            let notified = self.fenced_notify.notified();
            if self.is_fenced() {
                return;
            }
            notified.await;
        }
    }
}

/// The engine task's state.
pub struct Engine {
    /// The cluster (the engine's own; readers see published clones).
    pub cluster: Cluster,
    /// The last event sequence number written.
    pub last_event_seq: u64,
    /// The epoch.
    pub epoch: u64,
    /// The store (fenced in HA mode).
    pub store: Arc<dyn StateStore>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The event log.
    pub events: Arc<EventLog>,
    /// Commands to workers.
    pub connector: Arc<dyn WorkerConnector>,
    /// What it shares with the master handle.
    pub shared: Arc<Shared>,
    /// Operations.
    pub rx: mpsc::Receiver<Op>,
    /// For command results (launch failed, kill missed).
    pub tx: mpsc::Sender<Op>,
    /// How often the timers run.
    pub tick_every: Duration,
}

/// An operation's outcome, held until the batch is durable.
enum Pending {
    Submit(Reply<Submitted>, Result<Submitted, OpError>),
    Batch(
        Reply<Vec<Result<Submitted, OpError>>>,
        Vec<Result<Submitted, OpError>>,
    ),
    App(Reply<Arc<App>>, Result<Arc<App>, OpError>),
    Register(Reply<Vec<(AppId, u32)>>, Result<Vec<(AppId, u32)>, OpError>),
    Report(Reply<ReportOutcome>, ReportOutcome),
    Reports(Reply<Vec<ReportOutcome>>, Vec<ReportOutcome>),
    Schedule(Reply<ScheduleAnswer>, Result<ScheduleAnswer, OpError>),
    Done(Reply<()>, Result<(), OpError>),
    Tick(Reply<()>),
}

impl Pending {
    /// Answers the caller: the operation's own result once the batch is durable, else the
    /// store's error.
    fn answer(self, failed: Option<&StoreError>) {
        fn send<T>(tx: Reply<T>, r: Result<T, OpError>, failed: Option<&StoreError>) {
            let _ = tx.send(match failed {
                Some(e) => Err(EngineError::Store(e.clone())),
                None => r.map_err(EngineError::from),
            });
        }
        match self {
            Pending::Submit(tx, r) => send(tx, r, failed),
            Pending::Batch(tx, r) => send(tx, Ok(r), failed),
            Pending::App(tx, r) => send(tx, r, failed),
            Pending::Register(tx, r) => send(tx, r, failed),
            Pending::Report(tx, r) => send(tx, Ok(r), failed),
            Pending::Reports(tx, r) => send(tx, Ok(r), failed),
            Pending::Schedule(tx, r) => send(tx, r, failed),
            Pending::Done(tx, r) => send(tx, r, failed),
            Pending::Tick(tx) => send(tx, Ok(()), failed),
        }
    }
}

fn json(v: &impl serde::Serialize) -> Vec<u8> {
    // Serializing our own plain data types cannot fail (no maps with non-string keys).
    serde_json::to_vec(v).expect("domain types serialize to JSON")
}

impl Engine {
    fn now(&self) -> Now {
        Now {
            wall: self.clock.now(),
            mono_ms: self.clock.mono_ms(),
        }
    }

    /// When the loop must run next without an operation: the tick, or the earliest app
    /// timer if that comes first.
    fn next_wake(&self, next_tick: tokio::time::Instant) -> tokio::time::Instant {
        let due = match (
            self.cluster.next_timer(),
            self.cluster.next_schedule_timer(),
        ) {
            (Some(a), Some(s)) => a.min(s),
            (Some(a), None) => a,
            (None, Some(s)) => s,
            (None, None) => return next_tick,
        };
        let wait = (due - self.clock.now()).to_std().unwrap_or_default();
        next_tick.min(tokio::time::Instant::now() + wait)
    }

    /// Refuses a schedule operation by a caller whose scope does not hold the namespace of the
    /// schedule it creates or acts on.
    fn authorize_schedule(&self, scope: &Scope, cmd: &ScheduleCmd) -> Result<(), OpError> {
        let target = match cmd {
            ScheduleCmd::Create(req) => Target::Namespace(&req.namespace, "the schedule"),
            ScheduleCmd::Update(id, _)
            | ScheduleCmd::Delete(id)
            | ScheduleCmd::Pause(id)
            | ScheduleCmd::Resume(id)
            | ScheduleCmd::Trigger(id, _)
            | ScheduleCmd::Backfill { id, .. } => Target::Schedule(id),
        };
        self.cluster.authorize(scope, target)
    }

    /// Runs a schedule operation on the cluster.
    fn schedule_op(
        &mut self,
        cmd: ScheduleCmd,
        now: Now,
        fx: &mut Effects,
    ) -> Result<ScheduleAnswer, OpError> {
        let c = &mut self.cluster;
        Ok(match cmd {
            ScheduleCmd::Create(req) => ScheduleAnswer::Schedule(c.create_schedule(req, now, fx)?),
            ScheduleCmd::Update(id, patch) => {
                ScheduleAnswer::Schedule(c.update_schedule(&id, patch, now, fx)?)
            }
            ScheduleCmd::Delete(id) => ScheduleAnswer::Schedule(c.delete_schedule(&id, fx)?),
            ScheduleCmd::Pause(id) => ScheduleAnswer::Schedule(c.pause_schedule(&id, now, fx)?),
            ScheduleCmd::Resume(id) => ScheduleAnswer::Schedule(c.resume_schedule(&id, now, fx)?),
            ScheduleCmd::Trigger(id, overlap) => {
                ScheduleAnswer::Run(c.trigger_schedule(&id, overlap, now, fx)?)
            }
            ScheduleCmd::Backfill {
                id,
                start,
                end,
                dry_run,
            } => ScheduleAnswer::Backfill(c.backfill_schedule(&id, start, end, dry_run, now, fx)?),
        })
    }

    fn limited(&self) -> bool {
        self.store.max_txn_ops().is_some()
    }

    /// Runs until `stop` is set or the master is fenced. The timers run every `tick_every`,
    /// also under a constant stream of operations.
    pub async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let max = if self.limited() {
            MAX_BATCH_LIMITED
        } else {
            MAX_BATCH
        };
        let mut next_tick = tokio::time::Instant::now() + self.tick_every;
        // The batch being written, and the next one, gathered and applied meanwhile.
        let mut inflight: Option<InFlight> = None;
        let mut open: Option<Open> = None;
        loop {
            if let Some(f) = inflight.as_mut() {
                // While a batch is written, the operations that come are applied on top of it
                // (its memory, not yet durable) into the next batch, which is written as soon
                // as this one is durable: the store is never idle while operations wait, and
                // nothing of the next batch is answered, published or sent before its own
                // commit. A failed commit takes the next batch down with it.
                let room = open.as_ref().is_none_or(|o| o.len < max) && !*stop.borrow();
                tokio::select! {
                    biased;
                    r = &mut f.task => {
                        let busy = std::time::Instant::now();
                        let f = inflight.take().expect("a batch in flight");
                        let r = r.unwrap_or_else(|e| {
                            Err(StoreError::Backend(format!("the commit task failed: {e}")))
                        });
                        if self.finish(f, r, &mut open) {
                            if let Some(mut o) = open.take() {
                                let now = tokio::time::Instant::now();
                                if now >= next_tick {
                                    next_tick = now + self.tick_every;
                                    o.tick = true;
                                }
                                self.close(&mut o);
                                inflight = self.start(o);
                            }
                            self.metrics.engine_busy.inc_by(busy.elapsed().as_secs_f64());
                        } else {
                            // The store refused the batch: wait a little before the next one
                            // (whose operations queue meanwhile) rather than retrying a
                            // placement in a loop.
                            tokio::select! {
                                _ = tokio::time::sleep(FAILED_COMMIT_PAUSE) => {}
                                _ = stop.changed() => {}
                            }
                        }
                    }
                    op = self.rx.recv(), if room => match op {
                        Some(op) => {
                            let busy = std::time::Instant::now();
                            let o = match open.as_mut() {
                                Some(o) => o,
                                None => open.insert(self.open(false)),
                            };
                            let mut ops = vec![op];
                            self.gather(&mut ops, max.saturating_sub(o.len));
                            self.apply(o, ops);
                            self.metrics.engine_busy.inc_by(busy.elapsed().as_secs_f64());
                        }
                        None => break,
                    },
                }
                continue;
            }
            if self.shared.is_fenced() || *stop.borrow() {
                break;
            }
            let mut batch = Vec::new();
            if !self.cluster.can_place() {
                let wake = self.next_wake(next_tick);
                tokio::select! {
                    biased;
                    _ = stop.changed() => break,
                    op = self.rx.recv() => match op {
                        Some(op) => batch.push(op),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(wake) => {}
                }
            }
            let busy = std::time::Instant::now();
            self.gather(&mut batch, max);
            let now = tokio::time::Instant::now();
            let tick = now >= next_tick;
            if tick {
                next_tick = now + self.tick_every;
            }
            let mut o = self.open(tick);
            self.apply(&mut o, batch);
            self.close(&mut o);
            inflight = self.start(o);
            self.metrics
                .engine_busy
                .inc_by(busy.elapsed().as_secs_f64());
        }
        // The batch gathered behind the last commit was never written: its callers learn that
        // this master no longer leads, as do those still queued.
        if let Some(o) = open.take() {
            self.cluster = o.before;
            for p in o.pending {
                p.refuse();
            }
        }
        self.rx.close();
        while let Ok(op) = self.rx.try_recv() {
            refuse(op);
        }
    }

    /// Adds what is queued to `ops` until they weigh `max` (a batch submission weighs as
    /// many as it holds, any other operation one).
    fn gather(&mut self, ops: &mut Vec<Op>, max: usize) {
        let mut weight: usize = ops.iter().map(Op::weight).sum();
        while weight < max {
            match self.rx.try_recv() {
                Ok(op) => {
                    weight += op.weight();
                    ops.push(op);
                }
                Err(_) => break,
            }
        }
    }

    /// Starts a batch on the current state.
    fn open(&self, tick: bool) -> Open {
        Open {
            before: self.cluster.clone(),
            now: self.now(),
            fx: Effects::default(),
            pending: Vec::new(),
            submitted: 0,
            len: 0,
            tick,
        }
    }

    /// Applies operations to the cluster, into the batch `o`; their answers wait for its
    /// commit.
    fn apply(&mut self, o: &mut Open, ops: Vec<Op>) {
        o.now = self.now();
        let mut o_len = 0;
        let mut submitted = 0u64;
        let mut tick = false;
        let (now, fx, pending) = (o.now, &mut o.fx, &mut o.pending);
        for op in ops {
            o_len += 1;
            match op {
                Op::Submit {
                    scope,
                    req,
                    key,
                    reply,
                } => {
                    let r = self
                        .cluster
                        .authorize(&scope, Target::Namespace(&req.namespace, "the app"))
                        .and_then(|()| self.cluster.submit(req, key, now, fx));
                    if r.as_ref().is_ok_and(|s| s.created) {
                        submitted += 1;
                    }
                    pending.push(Pending::Submit(reply, r));
                }
                Op::SubmitBatch { scope, reqs, reply } => {
                    // Counted as the submissions it holds, so a batch stays within the limit
                    // of what one commit carries.
                    o_len += reqs.len().saturating_sub(1);
                    let results: Vec<_> = reqs
                        .into_iter()
                        .map(|(req, key)| {
                            self.cluster
                                .authorize(&scope, Target::Namespace(&req.namespace, "the app"))
                                .and_then(|()| self.cluster.submit(req, key, now, fx))
                        })
                        .collect();
                    submitted += results
                        .iter()
                        .filter(|r| r.as_ref().is_ok_and(|s| s.created))
                        .count() as u64;
                    pending.push(Pending::Batch(reply, results));
                }
                Op::Kill {
                    scope,
                    id,
                    reason,
                    reply,
                } => {
                    let r = self
                        .cluster
                        .authorize(&scope, Target::App(&id))
                        .and_then(|()| self.cluster.kill(&id, reason, now, fx));
                    pending.push(Pending::App(reply, r));
                }
                Op::Retry { scope, id, reply } => {
                    let r = self
                        .cluster
                        .authorize(&scope, Target::App(&id))
                        .and_then(|()| self.cluster.retry(&id, now, fx));
                    if r.is_ok() {
                        submitted += 1;
                    }
                    pending.push(Pending::App(reply, r));
                }
                Op::Drain {
                    worker,
                    deadline,
                    reply,
                } => {
                    let r = match deadline {
                        Some(d) => self.cluster.drain_worker(&worker, d, now, fx),
                        None => self.cluster.undrain_worker(&worker, fx),
                    };
                    pending.push(Pending::Done(reply, r.map(|_| ())));
                }
                Op::Namespace { name, spec, reply } => {
                    let r = match spec {
                        Some(spec) => self.cluster.put_namespace(&name, spec, now, fx).map(|_| ()),
                        None => self.cluster.delete_namespace(&name, fx),
                    };
                    pending.push(Pending::Done(reply, r));
                }
                Op::Schedule { scope, cmd, reply } => {
                    let r = self
                        .authorize_schedule(&scope, &cmd)
                        .and_then(|()| self.schedule_op(cmd, now, fx));
                    pending.push(Pending::Schedule(reply, r));
                }
                Op::Register { reg, reply } => {
                    let r = self.cluster.register(reg, now, fx);
                    pending.push(Pending::Register(reply, r));
                }
                Op::Report {
                    worker,
                    report,
                    reply,
                } => {
                    let r = self.cluster.report(&worker, &report, now, fx);
                    if let ReportOutcome::Refused(m) = &r {
                        error!(app_id = %report.app, worker_id = %worker, "refused illegal report: {m}");
                    }
                    pending.push(Pending::Report(reply, r));
                }
                Op::Reports {
                    worker,
                    reports,
                    reply,
                } => {
                    let outcomes = reports
                        .iter()
                        .map(|report| {
                            let r = self.cluster.report(&worker, report, now, fx);
                            if let ReportOutcome::Refused(m) = &r {
                                error!(app_id = %report.app, worker_id = %worker, "refused illegal report: {m}");
                            }
                            r
                        })
                        .collect();
                    pending.push(Pending::Reports(reply, outcomes));
                }
                Op::Heard(worker) => self.cluster.worker_heard(&worker),
                Op::Tick { reply } => {
                    tick = true;
                    pending.push(Pending::Tick(reply));
                }
                Op::LaunchFailed {
                    worker,
                    app,
                    attempt,
                    why,
                } => {
                    warn!(app_id = %app, worker_id = %worker, "launch on worker {worker} failed: {why}");
                    self.cluster
                        .launch_failed(&worker, &app, attempt, &why, now, fx)
                }
                Op::KillMissed {
                    worker,
                    app,
                    attempt,
                    why,
                } => self
                    .cluster
                    .kill_missed(&worker, &app, attempt, &why, now, fx),
            }
        }
        o.len += o_len;
        o.submitted += submitted;
        o.tick |= tick;
    }

    /// What a batch does beyond its operations, once they are applied: the timers when due,
    /// the retention and a placement round.
    fn close(&mut self, o: &mut Open) {
        o.now = self.now();
        let now = o.now;
        if o.tick {
            let timeout = self.cluster.rules().worker_timeout_ms;
            let silent = self.shared.live.expired(now.mono_ms, timeout);
            for (w, silence) in &silent {
                warn!(worker_id = %w, silence_ms = silence, "worker lost: no heartbeat");
            }
            self.cluster.expire_workers(&silent, now, &mut o.fx);
            self.cluster.check_recovery(now, &mut o.fx);
            self.cluster.resend_kills(now, &mut o.fx);
        }
        // App timers (relaunch pauses, max runtimes, on-demand keeping) fire when due, not on
        // the tick: the loop wakes for the earliest one.
        if self.cluster.next_timer().is_some_and(|t| t <= now.wall) {
            self.cluster.fire_timers(now, &mut o.fx);
        }
        // Schedules: the timers that are due, then the schedules whose runs ended (a run
        // created here is placed below, in this same batch).
        if self
            .cluster
            .next_schedule_timer()
            .is_some_and(|t| t <= now.wall)
        {
            self.cluster.fire_schedules(now, &mut o.fx);
        }
        if self.cluster.runs_ended() {
            self.cluster.settle_schedules(now, &mut o.fx);
        }
        // The retention runs in every batch that has something to remove (a bounded number
        // each time, more when apps over the count piled up), so it keeps up with any rate at
        // which apps end.
        if self.cluster.expiry_due(now) {
            let n = self.cluster.expire(now, &mut o.fx);
            debug!(removed = n, "retention");
        }
        if self.cluster.can_place() {
            self.cluster.place(now, &mut o.fx);
        }
    }

    /// Writes the batch `o` in a task of its own. Nothing to write: it is done at once.
    fn start(&mut self, mut o: Open) -> Option<InFlight> {
        if o.len > 0 {
            self.metrics.engine_batch.observe(o.len as f64);
        }
        let after = self.cluster.clone();
        match self.prepare(&mut o.fx, o.now) {
            Ok(None) => {
                self.done(o, Vec::new(), after);
                None
            }
            Ok(Some((events, seq, writes))) => {
                let task = tokio::spawn(write(
                    self.store.clone(),
                    self.shared.clone(),
                    self.metrics.clone(),
                    self.epoch,
                    writes,
                ));
                Some(InFlight {
                    task,
                    batch: o,
                    events,
                    seq,
                    after,
                })
            }
            Err(e) => {
                self.failed(o, &e);
                None
            }
        }
    }

    /// Acts on the end of a batch's commit: answers, publishes and sends once it is durable;
    /// otherwise restores the cluster to before it and fails its operations and those of
    /// `next`, applied on top of it. Returns whether the commit succeeded.
    fn finish(&mut self, f: InFlight, r: Result<(), StoreError>, next: &mut Option<Open>) -> bool {
        match r {
            Ok(()) => {
                self.last_event_seq = f.seq;
                self.done(f.batch, f.events, f.after);
                true
            }
            Err(e) => {
                if let Some(n) = next.take() {
                    for p in n.pending {
                        p.answer(Some(&e));
                    }
                }
                self.failed(f.batch, &e);
                false
            }
        }
    }

    /// A durable batch: publishes `after` (the cluster as the batch left it), updates the
    /// liveness table, hands the events to the log and the listeners, sends the commands and
    /// answers the callers.
    fn done(&mut self, o: Open, events: Vec<Arc<Event>>, after: Cluster) {
        self.shared.publish(View {
            cluster: after,
            epoch: self.epoch,
        });
        self.shared
            .live
            .apply(&o.fx.liveness, o.now.mono_ms, o.now.wall);
        if !events.is_empty() {
            for e in &events {
                if let EventBody::AppStateChanged { new_state, .. } = &e.body {
                    self.metrics.transition(*new_state);
                }
            }
            self.events.published(&events);
            if let Some(l) = self.shared.listeners.get() {
                l.publish(&events);
            }
        }
        self.dispatch(o.fx.commands);
        self.metrics.submitted.inc_by(o.submitted);
        for p in o.pending {
            p.answer(None);
        }
    }

    /// A batch the store refused: the cluster goes back to before it and its callers get the
    /// store's error.
    fn failed(&mut self, o: Open, e: &StoreError) {
        warn!(
            "store commit failed, {} operations refused: {e}",
            o.pending.len()
        );
        self.cluster = o.before;
        for p in o.pending {
            p.answer(Some(e));
        }
    }

    /// Commits `fx`; once durable, publishes the view, updates the liveness table, hands the
    /// events to the log and the listeners, and sends the commands. On failure nothing of it
    /// happened (the caller restores the cluster).
    pub async fn commit_effects(&mut self, mut fx: Effects, now: Now) -> Result<(), StoreError> {
        let events = match self.prepare(&mut fx, now)? {
            None => Vec::new(),
            Some((events, seq, writes)) => {
                write(
                    self.store.clone(),
                    self.shared.clone(),
                    self.metrics.clone(),
                    self.epoch,
                    writes,
                )
                .await?;
                self.last_event_seq = seq;
                events
            }
        };
        let o = Open {
            before: self.cluster.clone(),
            now,
            fx,
            pending: Vec::new(),
            submitted: 0,
            len: 0,
            tick: false,
        };
        self.done(o, events, self.cluster.clone());
        Ok(())
    }

    /// The events of `fx` numbered after the last written, their last number, and what `fx`
    /// writes, taken out of it (its commands and liveness changes stay) and encoded later by
    /// [`write`], off the engine's task; None when `fx` writes nothing.
    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
        fx: &mut Effects,
        now: Now,
    ) -> Result<Option<(Vec<Arc<Event>>, u64, Writes)>, StoreError> {
        if fx.writes_nothing() {
            return Ok(None);
        }
        if self.shared.is_fenced() {
            return Err(StoreError::Fenced);
        }
        let mut seq = self.last_event_seq;
        let events: Vec<Arc<Event>> = std::mem::take(&mut fx.events)
            .into_iter()
            .map(|body| {
                seq += 1;
                Arc::new(Event {
                    seq,
                    at: now.wall,
                    body,
                })
            })
            .collect();
        let mut meta: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        if let Some(s) = fx.last_seq.take() {
            meta.push((keys::APP_SEQ.to_string(), Some(s.to_string().into_bytes())));
        }
        if let Some(s) = fx.schedule_seq.take() {
            meta.push((
                keys::SCHEDULE_SEQ.to_string(),
                Some(s.to_string().into_bytes()),
            ));
        }
        if !events.is_empty() {
            meta.push((
                crate::events::EVENT_SEQ.to_string(),
                Some(seq.to_string().into_bytes()),
            ));
        }
        let writes = Writes {
            apps: std::mem::take(&mut fx.apps),
            workers: std::mem::take(&mut fx.workers),
            schedules: std::mem::take(&mut fx.schedules),
            namespaces: std::mem::take(&mut fx.namespaces),
            events: events.clone(),
            meta,
            max_ops: self.store.max_txn_ops(),
        };
        Ok(Some((events, seq, writes)))
    }

    fn dispatch(&self, commands: Vec<Command>) {
        for cmd in commands {
            let connector = self.connector.clone();
            let metrics = self.metrics.clone();
            let tx = self.tx.clone();
            let epoch = self.epoch;
            tokio::spawn(async move { send(connector, metrics, tx, epoch, cmd).await });
        }
    }
}

/// Answers an operation the engine will never run.
pub fn refuse(op: Op) {
    match op {
        Op::Submit { reply, .. } => drop(reply.send(Err(EngineError::Stopped))),
        Op::SubmitBatch { reply, .. } => drop(reply.send(Err(EngineError::Stopped))),
        Op::Kill { reply, .. } | Op::Retry { reply, .. } => {
            drop(reply.send(Err(EngineError::Stopped)))
        }
        Op::Register { reply, .. } => drop(reply.send(Err(EngineError::Stopped))),
        Op::Schedule { reply, .. } => drop(reply.send(Err(EngineError::Stopped))),
        Op::Drain { reply, .. } | Op::Namespace { reply, .. } => {
            drop(reply.send(Err(EngineError::Stopped)))
        }
        Op::Report { reply, .. } => drop(reply.send(Err(EngineError::Stopped))),
        Op::Reports { reply, .. } => drop(reply.send(Err(EngineError::Stopped))),
        Op::Tick { reply } => drop(reply.send(Err(EngineError::Stopped))),
        Op::Heard(_) | Op::LaunchFailed { .. } | Op::KillMissed { .. } => {}
    }
}

impl Op {
    /// What the operation counts for against a batch's limit.
    fn weight(&self) -> usize {
        match self {
            Op::SubmitBatch { reqs, .. } => reqs.len().max(1),
            _ => 1,
        }
    }
}

/// A batch gathered and applied, not yet written.
struct Open {
    /// The cluster before the batch.
    before: Cluster,
    now: Now,
    fx: Effects,
    pending: Vec<Pending>,
    /// Apps it created.
    submitted: u64,
    /// Operations in it.
    len: usize,
    /// Whether it runs the timers.
    tick: bool,
}

/// A batch being written.
struct InFlight {
    task: tokio::task::JoinHandle<Result<(), StoreError>>,
    batch: Open,
    events: Vec<Arc<Event>>,
    /// The last event number once it is written.
    seq: u64,
    /// The cluster as the batch left it: what readers see once it is durable.
    after: Cluster,
}

impl Pending {
    /// Answers that this master stopped before the operation was written.
    fn refuse(self) {
        fn send<T>(tx: Reply<T>) {
            let _ = tx.send(Err(EngineError::Stopped));
        }
        match self {
            Pending::Submit(tx, _) => send(tx),
            Pending::Batch(tx, _) => send(tx),
            Pending::App(tx, _) => send(tx),
            Pending::Register(tx, _) => send(tx),
            Pending::Report(tx, _) => send(tx),
            Pending::Reports(tx, _) => send(tx),
            Pending::Schedule(tx, _) => send(tx),
            Pending::Done(tx, _) => send(tx),
            Pending::Tick(tx) => send(tx),
        }
    }
}

/// Writes the transactions of one batch in order. A write the fence refuses fences this
/// leadership; a failure after part of the batch may have been applied (a later chunk, or a
/// store whose failures are ambiguous) steps it down too, as memory could no longer be kept
/// equal to the store.
async fn write(
    store: Arc<dyn StateStore>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    epoch: u64,
    writes: Writes,
) -> Result<(), StoreError> {
    let chunks = writes.encode();
    let _timer = metrics.store_txn_timer();
    for (i, txn) in chunks.into_iter().enumerate() {
        let r = match store.txn(txn).await {
            Ok(true) => Ok(()),
            // Our only compares are the fence's: the store changed under us.
            Ok(false) | Err(StoreError::Fenced) => Err(StoreError::Fenced),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            if matches!(e, StoreError::Fenced) {
                shared.mark_fenced(epoch, "a write was refused by the leadership fence");
            } else if i > 0 || store.ambiguous_failures() {
                shared.mark_fenced(
                    epoch,
                    &format!("a commit failed in a way that may have applied part of it ({e})"),
                );
            }
            return Err(e);
        }
    }
    Ok(())
}

/// What one batch writes to the store, as records: encoded by [`Writes::encode`] in the
/// commit's own task, so the engine applies the next batch meanwhile.
struct Writes {
    apps: BTreeMap<u64, AppWrite>,
    workers: BTreeMap<WorkerId, Option<Arc<aloha_core::WorkerRecord>>>,
    schedules: BTreeMap<ScheduleId, Option<Arc<Schedule>>>,
    namespaces: BTreeMap<String, Option<Arc<aloha_core::namespace::Namespace>>>,
    events: Vec<Arc<Event>>,
    /// The sequence numbers, written last.
    meta: Vec<(String, Option<Vec<u8>>)>,
    /// The store's limit of operations per transaction.
    max_ops: Option<usize>,
}

impl Writes {
    /// The records as JSON under their keys, in the transactions that write them.
    fn encode(self) -> Vec<Txn> {
        let mut ops: Vec<(String, Option<Vec<u8>>)> = Vec::with_capacity(
            self.apps.len()
                + self.workers.len()
                + self.schedules.len()
                + self.namespaces.len()
                + self.events.len(),
        );
        for w in self.apps.values() {
            match w {
                AppWrite::Put(app) => ops.push((keys::app(&app.id), Some(json(app.as_ref())))),
                AppWrite::Delete(id) => ops.push((keys::app(id), None)),
            }
        }
        for (id, w) in &self.workers {
            ops.push((keys::worker(id), w.as_ref().map(|r| json(r.as_ref()))));
        }
        for (id, s) in &self.schedules {
            ops.push((keys::schedule(id), s.as_ref().map(|r| json(r.as_ref()))));
        }
        for (name, n) in &self.namespaces {
            ops.push((keys::namespace(name), n.as_ref().map(|r| json(r.as_ref()))));
        }
        for e in &self.events {
            ops.push((crate::events::key(e.seq), Some(json(e.as_ref()))));
        }
        chunk(ops, self.meta, self.max_ops)
    }
}

/// Splits writes into transactions of at most `max_ops` operations and about
/// [`MAX_TXN_BYTES`] (one when the store has no limit); the sequence numbers go in the last.
fn chunk(
    ops: Vec<(String, Option<Vec<u8>>)>,
    meta: Vec<(String, Option<Vec<u8>>)>,
    max_ops: Option<usize>,
) -> Vec<Txn> {
    let put = |t: &mut Txn, (k, v): (String, Option<Vec<u8>>)| match v {
        Some(v) => {
            t.put(k, v);
        }
        None => {
            t.delete(k);
        }
    };
    let Some(max) = max_ops else {
        let mut t = Txn::default();
        for op in ops.into_iter().chain(meta) {
            put(&mut t, op);
        }
        return vec![t];
    };
    // Leave room for the fence's compare and the meta keys.
    let max = max.saturating_sub(1 + meta.len()).max(1);
    let mut out = vec![Txn::default()];
    let mut bytes = 0usize;
    for op in ops {
        let size = op.0.len() + op.1.as_ref().map_or(0, Vec::len);
        let cur = out.last_mut().expect("never empty");
        if !cur.ops.is_empty() && (cur.ops.len() >= max || bytes + size > MAX_TXN_BYTES) {
            out.push(Txn::default());
            bytes = 0;
        }
        bytes += size;
        put(out.last_mut().expect("never empty"), op);
    }
    let last = out.last_mut().expect("never empty");
    for op in meta {
        put(last, op);
    }
    out
}

async fn send(
    connector: Arc<dyn WorkerConnector>,
    metrics: Arc<Metrics>,
    tx: mpsc::Sender<Op>,
    epoch: u64,
    cmd: Command,
) {
    match cmd {
        Command::Launch {
            worker,
            address,
            app,
        } => {
            let attempt = app.attempt;
            let req = pb::LaunchAppRequest {
                epoch,
                app_id: app.id.0.clone(),
                attempt,
                description_json: app.description_json(),
            };
            debug!(app_id = %app.id, worker_id = %worker, attempt, "placing app");
            let timer = metrics.rpc_timer("launch_app");
            let res = connector.launch(&address, req).await;
            drop(timer);
            let why = match res {
                Ok(r) if r.accepted => {
                    debug!(app_id = %app.id, worker_id = %worker, "launch accepted");
                    return;
                }
                Ok(r) => format!("refused: {}", r.message),
                Err(e) => e,
            };
            let _ = tx
                .send(Op::LaunchFailed {
                    worker,
                    app: app.id.clone(),
                    attempt,
                    why,
                })
                .await;
        }
        Command::Kill {
            worker,
            address,
            app,
            attempt,
            reason,
        } => {
            let req = pb::KillAppRequest {
                epoch,
                app_id: app.0.clone(),
                attempt,
                reason,
            };
            let timer = metrics.rpc_timer("kill_app");
            let res = connector.kill(&address, req).await;
            drop(timer);
            match res {
                Ok(r) if r.accepted => {
                    debug!(app_id = %app, worker_id = %worker, "kill accepted")
                }
                Ok(r) => {
                    let _ = tx
                        .send(Op::KillMissed {
                            worker,
                            app,
                            attempt,
                            why: r.message,
                        })
                        .await;
                }
                // Transport errors: resent by the tick until the worker answers or is lost.
                Err(e) => warn!(app_id = %app, worker_id = %worker, "kill not delivered: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(n: usize) -> Vec<(String, Option<Vec<u8>>)> {
        (0..n)
            .map(|i| (format!("k{i}"), Some(vec![0; 10])))
            .collect()
    }

    #[test]
    fn unlimited_stores_get_one_transaction_with_the_sequence_last() {
        let t = chunk(ops(1000), vec![("meta".into(), Some(vec![1]))], None);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].ops.len(), 1001);
    }

    #[test]
    fn limited_stores_get_chunks_under_the_limit() {
        let meta = vec![("m1".into(), Some(vec![1])), ("m2".into(), Some(vec![1]))];
        let t = chunk(ops(300), meta, Some(128));
        assert!(t.iter().all(|t| t.ops.len() < 128), "room for the fence");
        assert_eq!(t.iter().map(|t| t.ops.len()).sum::<usize>(), 302);
        assert!(
            matches!(&t.last().unwrap().ops.last().unwrap(), crate::store::Op::Put { key, .. } if key == "m2")
        );
        let big: Vec<_> = (0..3)
            .map(|i| (format!("b{i}"), Some(vec![0; 700 * 1024])))
            .collect();
        assert_eq!(chunk(big, vec![], Some(128)).len(), 3, "by bytes too");
    }
}
