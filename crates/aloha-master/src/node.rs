//! A master process's place in the cluster: its role, who leads, and the [`Master`] it runs
//! while it leads.
//!
//! Single-node mode: one [`Master`] over the embedded store, ALIVE from start to stop.
//!
//! HA mode: STANDBY → (elected) → RECOVERING → ALIVE, and back to STANDBY whenever the lease
//! is lost, a write is fenced, or the election backend is unreachable for longer than the
//! lease. The loop below is written against the [`Election`] trait (etcd in production,
//! memory in the unit tests at the end of this file):
//!
//! 1. take a candidacy: a lease kept alive with a local deadline ([`crate::lease`]) and a
//!    membership;
//! 2. campaign (blocks while another master leads; meanwhile this node follows the leader's
//!    address for redirects);
//! 3. elected: the leadership's epoch and fenced store; the state is recovered through that
//!    store (RECOVERING); then ALIVE and scheduling;
//! 4. on loss of the lease, a fenced write or shutdown: stop acting at once, drop the master,
//!    resign (so a standby takes over immediately) and start again at 1.
//!
//! Standbys serve reads from their replica of the leader's state ([`crate::replica`]) and
//! answer mutations with 503 and the leader's address.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use aloha_core::api::{ClusterInfo, Role, ScheduleInfo, ScheduleList};
use aloha_core::cluster::{Cluster, Lookup};
use aloha_core::schedules::{Schedule, ScheduleId};
use aloha_core::{App, AppId, AppState, WorkerRecord};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::auth::Tokens;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::election::etcd::EtcdElection;
use crate::election::history::History;
use crate::election::{
    generation, raise_generation, Candidacy, Election, ElectionError, Leadership,
};
use crate::engine::View;
use crate::events::EventLog;
use crate::lease::LeaseGuard;
use crate::listeners::{Listeners, LoadedListener};
use crate::master::{present, worker_infos, Master, MasterError};
use crate::metrics::Metrics;
use crate::replica::{self, Replica};
use crate::store::{keys, StateStore};
use crate::worker_client::{GrpcWorkerConnector, WorkerConnector};

pub use crate::election::LeaderInfo;

/// The role, the leader and the active master of this process.
pub struct Node {
    cfg: Config,
    /// Shared by every master incarnation.
    pub metrics: Arc<Metrics>,
    reader: Arc<dyn StateStore>,
    /// The event log (reads; the active master writes it).
    pub events: Arc<EventLog>,
    listeners: Vec<LoadedListener>,
    active: RwLock<Option<Arc<Master>>>,
    role: watch::Sender<Role>,
    leader: RwLock<Option<LeaderInfo>>,
    members: RwLock<Vec<String>>,
    /// A standby's replica of the leader's state (HA over etcd), for reads.
    replica: Arc<Replica>,
    /// Epochs seen and the refusal to lead over a store that went back in time.
    pub history: Arc<History>,
    /// The lease of the leadership this node holds, while it leads (HA).
    lease: RwLock<Option<Arc<LeaseGuard>>>,
    /// The store the epoch generation is read from and raised in (HA).
    election_store: RwLock<Option<Arc<dyn StateStore>>>,
    /// Channels to workers for log reads ([`crate::logs`]).
    log_connector: GrpcWorkerConnector,
    /// REST API tokens ([`crate::auth`]).
    pub tokens: Arc<Tokens>,
}

fn read<T: Clone>(l: &RwLock<T>) -> T {
    // Writers only store whole values, so a poisoned lock still holds a consistent one.
    l.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn write<T>(l: &RwLock<T>, v: T) {
    *l.write().unwrap_or_else(|p| p.into_inner()) = v;
}

impl Node {
    fn new(
        cfg: Config,
        reader: Arc<dyn StateStore>,
        metrics: Arc<Metrics>,
        role: Role,
        events: Arc<EventLog>,
        listeners: Vec<LoadedListener>,
        history: Arc<History>,
    ) -> Arc<Node> {
        let (role, _) = watch::channel(role);
        Arc::new(Node {
            metrics,
            reader,
            events,
            listeners,
            active: RwLock::new(None),
            role,
            leader: RwLock::new(None),
            members: RwLock::new(Vec::new()),
            replica: Arc::default(),
            history,
            lease: RwLock::new(None),
            election_store: RwLock::new(None),
            log_connector: GrpcWorkerConnector::from_config(&cfg),
            tokens: Arc::new(Tokens::new(
                cfg.auth_mode(),
                cfg.bootstrap_token.as_ref().map(|t| t.secret()),
            )),
            cfg,
        })
    }

    /// A single-node master: ALIVE for as long as it runs.
    pub fn single(
        cfg: Config,
        store: Arc<dyn StateStore>,
        master: Arc<Master>,
        listeners: Vec<LoadedListener>,
    ) -> Arc<Node> {
        let node = Node::new(
            cfg.clone(),
            store,
            master.metrics.clone(),
            Role::Alive,
            master.event_log().clone(),
            listeners,
            Arc::default(),
        );
        write(
            &node.leader,
            Some(LeaderInfo {
                http: cfg.http_url(),
                rpc: cfg.rpc_url(),
                epoch: master.epoch(),
                lease: 0,
                generation: 0,
            }),
        );
        write(&node.members, vec![cfg.http_url()]);
        write(&node.active, Some(master));
        node.events.set_authoritative(true);
        node
    }

    /// This process's role.
    pub fn role(&self) -> Role {
        *self.role.borrow()
    }

    /// Changes of this process's role.
    pub fn role_watch(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    /// The unfenced store reads come from (and the token table is loaded from).
    pub fn reader(&self) -> Arc<dyn StateStore> {
        self.reader.clone()
    }

    /// The connector log reads use.
    pub fn log_connector(&self) -> &GrpcWorkerConnector {
        &self.log_connector
    }

    /// This node's configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn set_role(&self, role: Role) {
        self.role.send_replace(role);
    }

    /// The master, if this process leads and has not been fenced.
    pub fn active(&self) -> Option<Arc<Master>> {
        read(&self.active).filter(|m| !m.is_fenced())
    }

    /// The leader's address and epoch, if known.
    pub fn leader(&self) -> Option<LeaderInfo> {
        read(&self.leader)
    }

    /// The error a mutation gets on a node that does not lead.
    pub fn not_leader(&self) -> MasterError {
        MasterError::NotLeader {
            leader: self
                .leader()
                .map(|l| l.http)
                .filter(|h| *h != self.cfg.http_url()),
        }
    }

    /// The master to send a mutation to: waits through RECOVERING (submissions made while the
    /// new leader reads its state are accepted once it has), fails on a standby.
    pub async fn leader_master(&self) -> Result<Arc<Master>, MasterError> {
        let mut rx = self.role.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(m) = self.active() {
                return Ok(m);
            }
            if *rx.borrow_and_update() != Role::Recovering {
                return Err(self.not_leader());
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return Err(self.not_leader());
            }
        }
    }

    /// Whether this process should get traffic (`GET /readyz`): it is the ALIVE leader and its
    /// store answers a read within 2 s. The reason when not.
    pub async fn ready(&self) -> Result<(), String> {
        let role = self.role();
        if let Some(r) = self.history.refusal() {
            return Err(format!(
                "refusing to lead: {} (POST /api/v1/cluster/accept-restore once the restore is intended)",
                r.reason
            ));
        }
        let Some(m) = self.active().filter(|_| role == Role::Alive) else {
            let name = match role {
                Role::Alive => "ALIVE, but fenced",
                Role::Standby => "STANDBY",
                Role::Recovering => "RECOVERING",
            };
            return Err(format!("not the ALIVE leader (this master is {name})"));
        };
        match tokio::time::timeout(Duration::from_secs(2), m.store().get(keys::APP_SEQ)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("the state store does not answer: {e}")),
            Err(_) => Err("the state store did not answer within 2s".into()),
        }
    }

    /// What `GET /api/v1/cluster` shows.
    pub async fn cluster(&self) -> ClusterInfo {
        let leader = self.leader();
        ClusterInfo {
            role: self.role(),
            leader: leader.as_ref().map(|l| l.http.clone()),
            epoch: leader.map(|l| l.epoch).unwrap_or(0),
            address: self.cfg.http_url(),
            members: read(&self.members),
            store: self.reader.kind().to_string(),
            refusing_to_lead: self.history.refusal().map(|r| r.reason),
        }
    }

    // ------------------------------------------------------------------------------------
    // Reads: from the active master's snapshot, else (a standby) from the replica, else
    // straight from the store.

    /// The state reads are served from: the leader's last durable batch, or a standby's
    /// replica; `None` when neither is there (a standby still loading, single-node tests).
    fn snapshot(&self) -> Option<Arc<View>> {
        match self.active() {
            Some(m) => Some(m.view()),
            None => self.replica.get(),
        }
    }

    /// A page of apps, newest first, optionally only in `state` and only in `namespace`, after
    /// the app `after`: from the leader's snapshot, or on a standby from the store. With a
    /// namespace a page may be short, even empty, and still have a `next` (see
    /// [`aloha_core::cluster::Cluster::page_where`]).
    pub async fn apps(
        &self,
        state: Option<AppState>,
        namespace: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<App>, Option<AppId>), MasterError> {
        let after_seq = match after {
            None => None,
            Some(a) => Some(AppId(a.to_string()).seq().ok_or_else(|| {
                MasterError::BadRequest(format!("after: {a:?} is not an app id"))
            })?),
        };
        if let Some(view) = self.snapshot() {
            let cluster = &view.cluster;
            let page = match namespace {
                Some(ns) => cluster.page_where(state, after_seq, limit, |a| a.namespace == ns),
                None => cluster.page(state, after_seq, limit),
            };
            let apps = page
                .apps
                .iter()
                .map(|a| present(cluster, a).into_owned())
                .collect();
            return Ok((apps, page.next));
        }
        let mut apps: Vec<App> = self
            .stored_apps()
            .await?
            .into_iter()
            .filter(|a| state.is_none_or(|s| a.state == s))
            .filter(|a| namespace.is_none_or(|ns| a.namespace == ns))
            .filter(|a| after_seq.is_none_or(|s| a.seq < s))
            .collect();
        apps.sort_by_key(|a| std::cmp::Reverse(a.seq));
        let next = (apps.len() > limit).then(|| apps[limit - 1].id.clone());
        apps.truncate(limit);
        Ok((apps, next))
    }

    /// One app.
    pub async fn app(&self, id: &str) -> Result<App, MasterError> {
        let app_id = AppId(id.to_string());
        if let Some(view) = self.snapshot() {
            return match view.cluster.lookup(&app_id) {
                Lookup::Found(a) => Ok(present(&view.cluster, &a).into_owned()),
                Lookup::Expired => Err(MasterError::AppExpired(id.to_string())),
                Lookup::NotFound => Err(MasterError::AppNotFound(id.to_string())),
            };
        }
        match bounded(self.reader.get(&keys::app(&app_id))).await? {
            Some(v) => serde_json::from_slice(&v).map_err(|e| {
                MasterError::Store(crate::store::StoreError::Backend(format!(
                    "corrupt app {id}: {e}"
                )))
            }),
            None => {
                // Every sequence number up to the stored one was an app: a well-formed id
                // within it was removed by the retention.
                let last =
                    bounded(crate::store::read_u64(self.reader.as_ref(), keys::APP_SEQ)).await?;
                match app_id.seq() {
                    Some(s) if s >= 1 && s <= last => Err(MasterError::AppExpired(id.to_string())),
                    _ => Err(MasterError::AppNotFound(id.to_string())),
                }
            }
        }
    }

    /// The view schedules (and the console) are read from: the snapshot, or on a standby still
    /// loading its replica a mirror built from the store.
    pub(crate) async fn schedule_view(&self) -> Result<Arc<View>, MasterError> {
        if let Some(view) = self.snapshot() {
            return Ok(view);
        }
        let apps = self.stored_apps().await?;
        let schedules: Vec<Schedule> = bounded(self.reader.scan_prefix(keys::SCHEDULES))
            .await?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        let namespaces: Vec<aloha_core::namespace::Namespace> =
            bounded(self.reader.scan_prefix(keys::NAMESPACES))
                .await?
                .into_iter()
                .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
                .collect();
        let rules = crate::master::rules(&self.cfg);
        let (cluster, _) = Cluster::mirror(rules, Vec::new(), apps, 0)
            .with_namespaces(namespaces)
            .with_schedules(schedules, 0);
        Ok(Arc::new(View { cluster, epoch: 0 }))
    }

    /// A page of schedules, newest first, after the schedule `after`.
    pub async fn schedules(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ScheduleList, MasterError> {
        let view = self.schedule_view().await?;
        let after = after.map(|a| ScheduleId(a.to_string()));
        if let Some(a) = &after {
            if view.cluster.schedule(a).is_none() {
                return Err(MasterError::BadRequest(format!("after: no schedule {a}")));
            }
        }
        let (page, next) = view.cluster.schedule_page(after.as_ref(), limit);
        Ok(ScheduleList {
            schedules: page.iter().map(|e| view.cluster.schedule_info(e)).collect(),
            next,
        })
    }

    /// One schedule.
    pub async fn schedule(&self, id: &str) -> Result<ScheduleInfo, MasterError> {
        let view = self.schedule_view().await?;
        let sid = ScheduleId(id.to_string());
        let e = view
            .cluster
            .schedule(&sid)
            .ok_or_else(|| MasterError::ScheduleNotFound(id.to_string()))?;
        Ok(view.cluster.schedule_info(e))
    }

    /// A page of the runs of schedule `id`, newest first.
    pub async fn schedule_runs(
        &self,
        id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<App>, Option<AppId>), MasterError> {
        let after_seq = match after {
            None => None,
            Some(a) => Some(AppId(a.to_string()).seq().ok_or_else(|| {
                MasterError::BadRequest(format!("after: {a:?} is not an app id"))
            })?),
        };
        let view = self.schedule_view().await?;
        let page = view
            .cluster
            .runs_page(&ScheduleId(id.to_string()), after_seq, limit);
        let apps = page
            .apps
            .iter()
            .map(|a| present(&view.cluster, a).into_owned())
            .collect();
        Ok((apps, page.next))
    }

    /// Workers with their usage.
    pub async fn workers(&self) -> Result<Vec<aloha_core::api::WorkerInfo>, MasterError> {
        if let Some(m) = self.active() {
            return Ok(m.workers());
        }
        if let Some(view) = self.replica.get() {
            return Ok(crate::master::cluster_workers(&view.cluster, |_| None));
        }
        let apps = self.stored_apps().await?;
        let workers: Vec<WorkerRecord> = bounded(self.reader.scan_prefix(keys::WORKERS))
            .await?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        Ok(worker_infos(workers.iter(), apps.iter()))
    }

    async fn stored_apps(&self) -> Result<Vec<App>, MasterError> {
        Ok(bounded(self.reader.scan_prefix(keys::APPS))
            .await?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect())
    }

    /// Renders metrics (with state gauges when leading).
    pub async fn render_metrics(&self) -> String {
        match self.active() {
            Some(m) => m.render_metrics(),
            None => self.metrics.render(),
        }
    }

    // ------------------------------------------------------------------------------------
    // HA mode

    /// Starts an HA node over etcd: connects and campaigns in the background until `stop`.
    pub async fn ha(
        cfg: Config,
        connector: Arc<dyn WorkerConnector>,
        listeners: Vec<LoadedListener>,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<(Arc<Node>, tokio::task::JoinHandle<()>)> {
        let history = Arc::new(History::new());
        let access = crate::election::etcd::EtcdAccess {
            credentials: cfg.etcd_user.clone().zip(cfg.etcd_password.clone()),
            tls: match &cfg.etcd_ca {
                Some(ca) => Some(
                    crate::election::etcd::EtcdAccess::tls_from_files(
                        ca,
                        cfg.etcd_cert.as_deref().zip(cfg.etcd_key.as_deref()),
                    )
                    .map_err(|e| anyhow::anyhow!("etcd TLS: {e}"))?,
                ),
                None => None,
            },
        };
        let election = EtcdElection::connect_as(
            &cfg.etcd_endpoints,
            &access,
            &cfg.cluster_name,
            Self::me(&cfg),
            cfg.lease_ttl,
            history.clone(),
        )
        .await?;
        let (client, prefix) = (election.client(), election.prefix());
        let rules = crate::master::rules(&cfg);
        let (node, task) = Node::elected_by(
            cfg,
            Arc::new(election),
            connector,
            listeners,
            stop.clone(),
            history,
        );
        tokio::spawn(replica::follow(
            client,
            prefix,
            rules,
            node.replica.clone(),
            node.role.subscribe(),
            stop,
        ));
        Ok((node, task))
    }

    /// Starts an HA node over any [`Election`]: campaigns in the background until `stop`.
    pub fn elected_by(
        cfg: Config,
        election: Arc<dyn Election>,
        connector: Arc<dyn WorkerConnector>,
        listeners: Vec<LoadedListener>,
        stop: watch::Receiver<bool>,
        history: Arc<History>,
    ) -> (Arc<Node>, tokio::task::JoinHandle<()>) {
        let reader = election.store();
        let node = Node::new(
            cfg,
            reader.clone(),
            Arc::new(Metrics::new()),
            Role::Standby,
            EventLog::new(reader.clone()),
            listeners,
            history,
        );
        write(&node.election_store, Some(reader));
        let task = tokio::spawn(node.clone().ha_loop(election, connector, stop));
        (node, task)
    }

    /// What this master publishes as leader and member.
    fn me(cfg: &Config) -> LeaderInfo {
        LeaderInfo {
            http: cfg.http_url(),
            rpc: cfg.rpc_url(),
            epoch: 0,
            lease: 0,
            generation: 0,
        }
    }

    async fn ha_loop(
        self: Arc<Self>,
        election: Arc<dyn Election>,
        connector: Arc<dyn WorkerConnector>,
        mut stop: watch::Receiver<bool>,
    ) {
        let follower = tokio::spawn(self.clone().follow_leader(election.clone(), stop.clone()));
        let watcher = self.cfg.fast_failover.then(|| {
            tokio::spawn(crate::peer::watch_leader(
                self.clone(),
                election.clone(),
                stop.clone(),
            ))
        });
        let mut backoff = Duration::from_millis(200);
        while !*stop.borrow() {
            self.set_role(Role::Standby);
            // 0. Not over a store that went back in time, until an operator accepts it.
            if !self.wait_while_refusing(&election, &mut stop).await {
                break;
            }
            // 1. A lease, kept alive on its own task, and a membership.
            let mut candidacy = match election.candidacy().await {
                Ok(c) => c,
                Err(e) => {
                    warn!("{e}; retrying in {backoff:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            backoff = Duration::from_millis(200);
            let guard = candidacy.guard();

            // 2. Campaign until elected, the lease is lost, or we are asked to stop.
            let campaigned = tokio::select! {
                r = candidacy.campaign() => Campaigned::Done(r),
                _ = guard.lost() => Campaigned::LeaseLost,
                _ = stop.changed() => Campaigned::Stopping,
            };
            let leadership = match campaigned {
                Campaigned::Done(Ok(l)) if l.epoch <= self.history.max_epoch() => {
                    let seen = self.history.max_epoch();
                    error!(
                        epoch = l.epoch,
                        seen,
                        "elected with epoch {} but epoch {seen} was seen before: the state store \
                         went back in time (etcd restored from a backup?). Refusing to lead until \
                         an operator accepts the restore: POST /api/v1/cluster/accept-restore",
                        l.epoch
                    );
                    self.history.refuse(format!(
                        "elected with epoch {} after epoch {seen} was seen: the store went back in time",
                        l.epoch
                    ));
                    candidacy.resign().await;
                    continue;
                }
                Campaigned::Done(Ok(l)) => {
                    self.history.observe(l.epoch);
                    l
                }
                Campaigned::Done(Err(e)) => {
                    warn!("{e}");
                    candidacy.resign().await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Campaigned::LeaseLost => {
                    // Dropping the candidacy stops its keep-alive; the lease is gone anyway.
                    warn!("lease lost while campaigning");
                    continue;
                }
                Campaigned::Stopping => {
                    candidacy.resign().await;
                    break;
                }
            };

            // 3 and 4.
            let shutting_down = self.lead(leadership, &connector, &mut stop).await;
            self.step_down(candidacy).await;
            if shutting_down {
                break;
            }
        }
        self.set_role(Role::Standby);
        follower.abort();
        if let Some(w) = watcher {
            w.abort();
        }
    }

    /// Recovers under the leadership's fence and leads until the lease or the fence is lost or
    /// `stop` changes; then stops acting at once. Returns whether we are shutting down.
    async fn lead(
        &self,
        leadership: Leadership,
        connector: &Arc<dyn WorkerConnector>,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let Leadership {
            epoch,
            guard,
            store,
        } = leadership;
        self.set_role(Role::Recovering);
        write(
            &self.leader,
            Some(LeaderInfo {
                epoch,
                ..Self::me(&self.cfg)
            }),
        );
        info!(epoch, "elected leader; recovering state");
        let master = match Master::recover(
            self.cfg.clone(),
            store,
            connector.clone(),
            Arc::new(SystemClock::default()),
            epoch,
            self.metrics.clone(),
            self.events.clone(),
        )
        .await
        {
            Ok(m) => m,
            Err(e) => {
                error!("recovery failed: {e}; resigning");
                return false;
            }
        };
        let listeners = match self.start_listeners(&master) {
            Ok(l) => l,
            Err(e) => {
                error!("cannot start listeners: {e}; resigning");
                return false;
            }
        };
        let (loops_stop_tx, loops_stop_rx) = watch::channel(false);
        let loops = tokio::spawn(master.clone().run_loops(loops_stop_rx));
        write(&self.active, Some(master.clone()));
        self.events.set_authoritative(true);
        self.set_role(Role::Alive);
        info!(epoch, "ALIVE: scheduling");

        write(&self.lease, Some(guard.clone()));
        let shutting_down = tokio::select! {
            _ = guard.lost() => { warn!(epoch, "lease lost: stepping down"); false }
            _ = master.fenced() => { warn!(epoch, "fenced: stepping down"); false }
            _ = self.history.refused() => { error!(epoch, "the store went back in time: stepping down"); false }
            _ = stop.changed() => { info!(epoch, "shutting down: resigning"); true }
        };
        guard.lose();
        write(&self.lease, None);
        write(&self.active, None);
        // Another master writes the log from now on: read it from the store.
        self.events.set_authoritative(false);
        self.set_role(Role::Standby);
        let _ = loops_stop_tx.send(true);
        let _ = loops.await;
        stop_listeners(listeners).await;
        shutting_down
    }

    /// Starts this leadership's listener threads and attaches them to `master`.
    pub fn start_listeners(&self, master: &Arc<Master>) -> Result<Option<Arc<Listeners>>, String> {
        if self.listeners.is_empty() {
            return Ok(None);
        }
        let l = Listeners::start(
            &self.listeners,
            master.store().clone(),
            self.events.clone(),
            self.metrics.clone(),
            tokio::runtime::Handle::current(),
        )?;
        master.attach_listeners(l.clone());
        Ok(Some(l))
    }

    /// While this node refuses to lead, waits until an operator accepts the restore (the
    /// epoch generation rises above every epoch seen) or `stop`; false when stopping.
    async fn wait_while_refusing(
        &self,
        election: &Arc<dyn Election>,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut warned = false;
        while let Some(refusal) = self.history.refusal() {
            if !warned {
                warn!(
                    reason = %refusal.reason,
                    "refusing to lead until an operator accepts the restore \
                     (POST /api/v1/cluster/accept-restore)"
                );
                warned = true;
            }
            let store = election.store();
            if let Ok(Ok(g)) =
                tokio::time::timeout(Duration::from_secs(2), generation(store.as_ref())).await
            {
                if g >= refusal.needed_generation {
                    info!(
                        generation = g,
                        "the restore was accepted: campaigning again"
                    );
                    self.history.accept();
                    break;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.changed() => return false,
            }
        }
        !*stop.borrow()
    }

    /// A worker registered that already followed `seen`, above this leader's `epoch`: if this
    /// HA leadership still holds its lease, the store went back in time under it. Steps down,
    /// refuses to lead and returns true: the caller refuses the registration. (A leader whose
    /// lease is gone is simply deposed; single-node mode has no lease and never refuses.)
    pub fn worker_epoch_ahead(&self, worker: &str, seen: u64, epoch: u64) -> bool {
        if seen <= epoch {
            return false;
        }
        self.history.observe(seen);
        let holds = read(&self.lease).is_some_and(|g| g.valid());
        if holds {
            error!(
                worker,
                seen,
                epoch,
                "a worker already followed a higher epoch: the state store went back in time"
            );
            self.history.refuse(format!(
                "worker {worker} already followed epoch {seen}, above this leader's {epoch}: the store went back in time"
            ));
        }
        holds
    }

    /// An operator accepts that the state store was restored: raises the epoch generation
    /// above every epoch seen, so masters refusing to lead campaign again with epochs above
    /// every earlier one. Returns the generation in force.
    pub async fn accept_restore(&self) -> Result<u64, MasterError> {
        let Some(store) = read(&self.election_store) else {
            return Err(MasterError::BadRequest(
                "accept-restore applies to HA mode (etcd) only".into(),
            ));
        };
        if self.role() != Role::Standby || self.active().is_some() {
            return Err(MasterError::Conflict(
                "this master leads: nothing to accept".into(),
            ));
        }
        let current = bounded(generation(store.as_ref())).await?;
        let target = self.history.next_generation().max(current + 1);
        let generation = bounded(raise_generation(store.as_ref(), target)).await?;
        info!(generation, "an operator accepted the restored store");
        Ok(generation)
    }

    async fn step_down(&self, candidacy: Box<dyn Candidacy>) {
        candidacy.resign().await;
        if read(&self.leader).is_some_and(|l| l.http == self.cfg.http_url()) {
            write(&self.leader, None);
        }
    }

    /// Keeps `leader` and `members` current while this node does not lead, for redirects and
    /// for `GET /api/v1/cluster`. Polls with timeouts: etcd's observe would block while there is
    /// no leader.
    async fn follow_leader(
        self: Arc<Self>,
        election: Arc<dyn Election>,
        mut stop: watch::Receiver<bool>,
    ) {
        const ASK: Duration = Duration::from_secs(2);
        loop {
            if self.role() == Role::Standby {
                match tokio::time::timeout(ASK, election.leader()).await {
                    Ok(Ok(leader)) => {
                        // Not our own leader key: etcd may already name us while our campaign
                        // has not returned yet, and our own epoch is no sign of a rewind.
                        if let Some(l) = leader.as_ref().filter(|l| l.http != self.cfg.http_url()) {
                            self.history.observe(l.epoch);
                        }
                        write(&self.leader, leader)
                    }
                    // etcd trouble: nobody to redirect to.
                    Ok(Err(_)) | Err(_) => write(&self.leader, None),
                }
            }
            if let Ok(Ok(members)) = tokio::time::timeout(ASK, election.members()).await {
                write(&self.members, members);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

/// How a campaign ended.
enum Campaigned {
    Done(Result<Leadership, ElectionError>),
    LeaseLost,
    Stopping,
}

/// Stops listener threads off the runtime (a delivery in progress may take a while).
pub async fn stop_listeners(listeners: Option<Arc<Listeners>>) {
    if let Some(l) = listeners {
        l.stop();
        let _ = tokio::task::spawn_blocking(move || drop(l)).await;
    }
}

/// How long a read straight from the store (a standby without its replica yet) may take before
/// it is answered 503: an etcd without quorum must not hold a GET for many seconds.
pub const STORE_READ_DEADLINE: Duration = Duration::from_secs(3);

/// A store read bounded by [`STORE_READ_DEADLINE`].
pub async fn bounded<T>(
    read: impl std::future::Future<Output = Result<T, crate::store::StoreError>>,
) -> Result<T, MasterError> {
    match tokio::time::timeout(STORE_READ_DEADLINE, read).await {
        Ok(r) => r.map_err(MasterError::from),
        Err(_) => Err(MasterError::Store(crate::store::StoreError::Unavailable(
            format!(
                "the state store did not answer within {}s",
                STORE_READ_DEADLINE.as_secs()
            ),
        ))),
    }
}

#[cfg(test)]
mod tests {
    //! Failover over the in-memory election: the same HA loop as over etcd, with the lease
    //! loss simulated by revoking it.
    use super::*;
    use crate::election::memory::MemoryElectorate;
    use crate::store::{StoreError, Txn};
    use aloha_core::SubmitRequest;
    use aloha_proto as pb;
    use async_trait::async_trait;

    /// No workers in these tests: apps stay SUBMITTED, nothing is ever sent.
    struct NoWorkers;

    #[async_trait]
    impl WorkerConnector for NoWorkers {
        async fn launch(
            &self,
            _: &str,
            _: pb::LaunchAppRequest,
        ) -> Result<pb::LaunchAppResponse, String> {
            Err("no workers in this test".into())
        }
        async fn kill(
            &self,
            _: &str,
            _: pb::KillAppRequest,
        ) -> Result<pb::KillAppResponse, String> {
            Err("no workers in this test".into())
        }
    }

    struct Running {
        node: Arc<Node>,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
        url: String,
    }

    fn start(electorate: &MemoryElectorate, port: u16) -> Running {
        let cfg = Config {
            http_addr: format!("127.0.0.1:{port}").parse().unwrap(),
            rpc_addr: format!("127.0.0.1:{}", port + 1).parse().unwrap(),
            ..Config::default()
        };
        let url = cfg.http_url();
        let election = electorate.join(Node::me(&cfg));
        let (stop, stop_rx) = watch::channel(false);
        let (node, task) = Node::elected_by(
            cfg,
            election,
            Arc::new(NoWorkers),
            Vec::new(),
            stop_rx,
            Arc::default(),
        );
        Running {
            node,
            stop,
            task,
            url,
        }
    }

    async fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting until {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn req(i: usize) -> SubmitRequest {
        serde_json::from_value(serde_json::json!({
            "name": format!("app{i}"), "kind": "process", "spec": {"command": ["true"]}
        }))
        .unwrap()
    }

    fn put(key: &str) -> Txn {
        let mut t = Txn::default();
        t.put(key, b"x".to_vec());
        t
    }

    /// `a` leads, `b` is a standby that knows where `a` is.
    async fn leader_and_standby(e: &MemoryElectorate) -> (Running, Running) {
        let a = start(e, 17001);
        wait_until("a is ALIVE", || a.node.role() == Role::Alive).await;
        let b = start(e, 17003);
        wait_until("b follows a", || {
            b.node.leader().is_some_and(|l| l.http == a.url) && read(&b.node.members).len() == 2
        })
        .await;
        assert_eq!(b.node.role(), Role::Standby);
        assert!(b.node.active().is_none());
        (a, b)
    }

    #[tokio::test]
    async fn a_standby_takes_over_a_lost_lease_with_every_acknowledged_app_and_the_old_leader_stops(
    ) {
        let e = MemoryElectorate::new();
        let (a, b) = leader_and_standby(&e).await;
        let old = a.node.leader_master().await.unwrap();
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(old.submit(req(i), None).await.unwrap().app.id.clone());
        }
        // The standby reads them from the store meanwhile.
        let (listed, _) = b.node.apps(None, None, None, 100).await.unwrap();
        assert_eq!(listed.len(), ids.len());

        // The leader's lease is lost (it expired, as for a paused or partitioned leader).
        assert_eq!(e.revoke_leader().unwrap().http, a.url);
        wait_until("b is ALIVE", || b.node.role() == Role::Alive).await;
        let new = b.node.active().unwrap();
        assert!(new.epoch() > old.epoch());
        assert_eq!(b.node.leader().unwrap().epoch, new.epoch());
        for id in &ids {
            let app = b.node.app(&id.0).await.unwrap();
            assert_eq!(app.state, AppState::Submitted, "{id}");
        }

        // The old leader stops acting: no active master, STANDBY, its writes are refused and
        // write nothing, and mutations there name the new leader.
        wait_until("a is STANDBY", || a.node.role() == Role::Standby).await;
        assert!(a.node.active().is_none());
        assert!(matches!(
            old.store().txn(put("late")).await,
            Err(StoreError::Fenced)
        ));
        assert_eq!(e.store().get("late").await.unwrap(), None);
        assert!(old.submit(req(99), None).await.is_err());
        wait_until("a follows b", || {
            a.node.leader().is_some_and(|l| l.http == b.url)
        })
        .await;
        match a.node.leader_master().await {
            Err(MasterError::NotLeader { leader }) => assert_eq!(leader, Some(b.url.clone())),
            Err(other) => panic!("expected not leader, got {other}"),
            Ok(_) => panic!("expected not leader, got a master"),
        }
        // ... and the new leader accepts them.
        new.submit(req(5), None).await.unwrap();
        let (listed, _) = a.node.apps(None, None, None, 100).await.unwrap();
        assert_eq!(listed.len(), ids.len() + 1);
        // The old leader campaigns again, as a standby.
        wait_until("a is a member again", || {
            e.leader().is_some_and(|l| l.http == b.url) && read(&a.node.members).len() == 2
        })
        .await;

        for r in [a, b] {
            r.stop.send(true).unwrap();
            r.task.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_shutdown_resigns_and_a_standby_is_elected_at_once() {
        let e = MemoryElectorate::new();
        let (a, b) = leader_and_standby(&e).await;
        let id = a
            .node
            .leader_master()
            .await
            .unwrap()
            .submit(req(0), None)
            .await
            .unwrap()
            .app
            .id
            .clone();

        a.stop.send(true).unwrap();
        a.task.await.unwrap();
        assert_eq!(a.node.role(), Role::Standby);
        assert!(a.node.active().is_none());
        // In memory a lease never expires on its own: only the resignation elects b.
        tokio::time::timeout(Duration::from_secs(1), async {
            while b.node.role() != Role::Alive {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("b elected at once after a resigned");
        assert_eq!(b.node.app(&id.0).await.unwrap().state, AppState::Submitted);
        assert_eq!(e.leader().unwrap().http, b.url);
        wait_until("a left the members", || {
            read(&b.node.members) == vec![b.url.clone()]
        })
        .await;

        b.stop.send(true).unwrap();
        b.task.await.unwrap();
        assert_eq!(e.leader(), None);
    }

    #[tokio::test]
    async fn masters_refuse_to_lead_over_a_store_that_went_back_in_time_until_an_operator_accepts()
    {
        let e = MemoryElectorate::new();
        let (a, b) = leader_and_standby(&e).await;
        let old = a.node.active().unwrap().epoch();
        // As after an etcd restore: a worker already followed epoch 1000 (above anything the
        // store hands out now), and b saw it too.
        b.node.history.observe(1_000);
        assert!(a.node.worker_epoch_ahead("w1", 1_000, old));
        wait_until("a steps down", || a.node.role() == Role::Standby).await;
        // b is elected with an epoch below 1000: it refuses and resigns; nobody leads.
        wait_until("b refuses", || b.node.history.refusal().is_some()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        for n in [&a.node, &b.node] {
            assert!(n.active().is_none());
            assert!(n.cluster().await.refusing_to_lead.is_some());
            assert!(n.ready().await.unwrap_err().contains("refusing to lead"));
        }
        // A worker behind the leader is no reason to refuse; single-node has no lease.
        assert!(!a.node.worker_epoch_ahead("w2", 5, 10));

        // The operator accepts: the generation rises and the next leader's epoch is above 1000.
        let generation = b.node.accept_restore().await.unwrap();
        assert_eq!(generation, 1);
        wait_until("somebody leads again", || {
            a.node.role() == Role::Alive || b.node.role() == Role::Alive
        })
        .await;
        let leader = if a.node.role() == Role::Alive { &a } else { &b };
        let epoch = leader.node.active().unwrap().epoch();
        assert!(epoch > 1_000, "epoch {epoch}");
        assert_eq!(crate::election::history::generation_of(epoch), 1);
        assert!(leader.node.history.refusal().is_none());
        assert!(matches!(
            leader.node.accept_restore().await,
            Err(MasterError::Conflict(_))
        ));
    }
}
