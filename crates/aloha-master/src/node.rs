//! A master process's place in the cluster: its role, who leads, and the [`Master`] it runs
//! while it leads.
//!
//! Single-node mode: one [`Master`] over the embedded store, ALIVE from start to stop.
//!
//! HA mode (etcd): STANDBY → (elected) → RECOVERING → ALIVE, and back to STANDBY whenever the
//! lease is lost, a write is fenced, or etcd is unreachable for longer than the lease:
//!
//! 1. grant a lease and keep it alive on its own task with a local deadline ([`crate::lease`]);
//! 2. register as a member and campaign with the etcd election API (blocks while another
//!    master leads; meanwhile this node follows the leader's address for redirects);
//! 3. elected: the leader key's create revision is the epoch; a fenced store is built around it
//!    and the state is recovered (RECOVERING); then ALIVE and scheduling;
//! 4. on loss of the lease, a fenced write or shutdown: stop acting at once, drop the master,
//!    resign (on shutdown, so a standby takes over immediately) and start again at 1.
//!
//! Standbys serve reads from the store and answer mutations with 503 and the leader's address.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aloha_core::api::{ClusterInfo, Role};
use aloha_core::cluster::Lookup;
use aloha_core::{App, AppId, AppState, WorkerRecord};
use etcd_client::Client;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::clock::SystemClock;
use crate::config::Config;
use crate::events::EventLog;
use crate::lease::{self, LeaseGuard};
use crate::listeners::{Listeners, LoadedListener};
use crate::master::{present, worker_infos, Master, MasterError};
use crate::metrics::Metrics;
use crate::store::etcd::{cluster_prefix, EtcdStore, Fence};
use crate::store::{keys, StateStore};
use crate::worker_client::WorkerConnector;

/// HTTP/2 keep-alive pings to etcd: etcd closes connections that ping more often than its
/// `--grpc-keepalive-min-time` (5 s by default), so stay above it.
const ETCD_KEEPALIVE: Duration = Duration::from_secs(10);

/// Where the leader is, as published in its election value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderInfo {
    /// Its HTTP URL.
    pub http: String,
    /// Its gRPC URL.
    pub rpc: String,
    /// Its epoch (the leader key's create revision).
    #[serde(default)]
    pub epoch: u64,
}

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
    ) -> Arc<Node> {
        let (role, _) = watch::channel(role);
        Arc::new(Node {
            cfg,
            metrics,
            reader,
            events,
            listeners,
            active: RwLock::new(None),
            role,
            leader: RwLock::new(None),
            members: RwLock::new(Vec::new()),
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
        );
        write(
            &node.leader,
            Some(LeaderInfo {
                http: cfg.http_url(),
                rpc: cfg.rpc_url(),
                epoch: master.epoch(),
            }),
        );
        write(&node.members, vec![cfg.http_url()]);
        write(&node.active, Some(master));
        node
    }

    /// This process's role.
    pub fn role(&self) -> Role {
        *self.role.borrow()
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
        }
    }

    // ------------------------------------------------------------------------------------
    // Reads: from the active master, else straight from the store (standby).

    /// A page of apps, newest first, optionally only in `state`, after the app `after`: from
    /// the leader's snapshot, or on a standby from the store.
    pub async fn apps(
        &self,
        state: Option<AppState>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<App>, Option<AppId>), MasterError> {
        let after_seq = match after {
            None => None,
            Some(a) => Some(AppId(a.to_string()).seq().ok_or_else(|| {
                MasterError::BadRequest(format!("after: {a:?} is not an app id"))
            })?),
        };
        if let Some(m) = self.active() {
            let view = m.view();
            let page = view.cluster.page(state, after_seq, limit);
            let apps = page
                .apps
                .iter()
                .map(|a| present(&view.cluster, a).into_owned())
                .collect();
            return Ok((apps, page.next));
        }
        let mut apps: Vec<App> = self
            .stored_apps()
            .await?
            .into_iter()
            .filter(|a| state.is_none_or(|s| a.state == s))
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
        if let Some(m) = self.active() {
            let view = m.view();
            return match view.cluster.lookup(&app_id) {
                Lookup::Found(a) => Ok(present(&view.cluster, &a).into_owned()),
                Lookup::Expired => Err(MasterError::AppExpired(id.to_string())),
                Lookup::NotFound => Err(MasterError::AppNotFound(id.to_string())),
            };
        }
        match self.reader.get(&keys::app(&app_id)).await? {
            Some(v) => serde_json::from_slice(&v).map_err(|e| {
                MasterError::Store(crate::store::StoreError::Backend(format!(
                    "corrupt app {id}: {e}"
                )))
            }),
            None => {
                // Every sequence number up to the stored one was an app: a well-formed id
                // within it was removed by the retention.
                let last = match self.reader.get(keys::APP_SEQ).await? {
                    Some(v) => std::str::from_utf8(&v)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .unwrap_or(0),
                    None => 0,
                };
                match app_id.seq() {
                    Some(s) if s >= 1 && s <= last => Err(MasterError::AppExpired(id.to_string())),
                    _ => Err(MasterError::AppNotFound(id.to_string())),
                }
            }
        }
    }

    /// Workers with their usage.
    pub async fn workers(&self) -> Result<Vec<aloha_core::api::WorkerInfo>, MasterError> {
        if let Some(m) = self.active() {
            return Ok(m.workers());
        }
        let apps = self.stored_apps().await?;
        let workers: Vec<WorkerRecord> = self
            .reader
            .scan_prefix(keys::WORKERS)
            .await?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        Ok(worker_infos(workers.iter(), apps.iter()))
    }

    async fn stored_apps(&self) -> Result<Vec<App>, MasterError> {
        Ok(self
            .reader
            .scan_prefix(keys::APPS)
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

    /// Starts an HA node: connects to etcd and campaigns in the background until `stop`.
    pub async fn ha(
        cfg: Config,
        connector: Arc<dyn WorkerConnector>,
        listeners: Vec<LoadedListener>,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<(Arc<Node>, tokio::task::JoinHandle<()>)> {
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(ETCD_KEEPALIVE, Duration::from_secs(5));
        let connect = |opts: etcd_client::ConnectOptions| {
            let endpoints = cfg.etcd_endpoints.clone();
            async move {
                Client::connect(&endpoints, Some(opts)).await.map_err(|e| {
                    anyhow::anyhow!("cannot reach etcd at {}: {e}", endpoints.join(","))
                })
            }
        };
        let client = connect(opts).await?;
        // Campaigning blocks for as long as another master leads: no request timeout there
        // (dead connections are still detected by the HTTP/2 keep-alive).
        let campaigner = connect(
            etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(2))
                .with_keep_alive(ETCD_KEEPALIVE, Duration::from_secs(5)),
        )
        .await?;
        let store = EtcdStore::new(client.clone(), &cfg.cluster_name);
        let reader: Arc<dyn StateStore> = Arc::new(store.clone());
        let node = Node::new(
            cfg.clone(),
            reader.clone(),
            Arc::new(Metrics::new()),
            Role::Standby,
            EventLog::new(reader),
            listeners,
        );
        let task = tokio::spawn(
            node.clone()
                .ha_loop(client, campaigner, store, connector, stop),
        );
        Ok((node, task))
    }

    fn election_name(&self) -> String {
        format!("{}election", cluster_prefix(&self.cfg.cluster_name))
    }

    fn members_prefix(&self) -> String {
        format!("{}members/", cluster_prefix(&self.cfg.cluster_name))
    }

    async fn ha_loop(
        self: Arc<Self>,
        client: Client,
        campaigner: Client,
        store: EtcdStore,
        connector: Arc<dyn WorkerConnector>,
        mut stop: watch::Receiver<bool>,
    ) {
        let ttl = self.cfg.lease_ttl;
        let me = LeaderInfo {
            http: self.cfg.http_url(),
            rpc: self.cfg.rpc_url(),
            epoch: 0,
        };
        let follower = tokio::spawn(self.clone().follow_leader(client.clone(), stop.clone()));
        let mut backoff = Duration::from_millis(200);
        while !*stop.borrow() {
            self.set_role(Role::Standby);
            // 1. A lease, kept alive on its own task.
            let sent = Instant::now();
            let mut c = client.clone();
            let lease = match c.lease_grant(ttl.as_secs().max(1) as i64, None).await {
                Ok(l) => l.id(),
                Err(e) => {
                    warn!("etcd: cannot grant a lease: {e}; retrying in {backoff:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            backoff = Duration::from_millis(200);
            let guard = LeaseGuard::new(ttl, sent);
            let keeper = tokio::spawn(lease::keep_alive(client.clone(), lease, ttl, guard.clone()));
            let value = serde_json::to_vec(&me).expect("leader info serializes");
            let member_key = format!("{}{}", self.members_prefix(), self.cfg.http_url());
            let _ = c
                .put(
                    member_key,
                    value.clone(),
                    Some(etcd_client::PutOptions::new().with_lease(lease)),
                )
                .await;

            // 2. Campaign until elected, the lease is lost, or we are asked to stop.
            let mut cc = campaigner.clone();
            let elected = tokio::select! {
                r = cc.campaign(self.election_name(), value, lease) => r,
                _ = guard.lost() => {
                    warn!("lease lost while campaigning");
                    keeper.abort();
                    continue;
                }
                _ = stop.changed() => {
                    keeper.abort();
                    let _ = c.lease_revoke(lease).await;
                    break;
                }
            };
            let key = match elected {
                Ok(mut r) => match r.take_leader() {
                    Some(k) => k,
                    None => {
                        error!("etcd campaign returned no leader key");
                        keeper.abort();
                        continue;
                    }
                },
                Err(e) => {
                    warn!("etcd campaign failed: {e}");
                    keeper.abort();
                    let _ = c.lease_revoke(lease).await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };

            // 3. Elected: recover under the fence, then lead.
            let epoch = key.rev() as u64;
            self.set_role(Role::Recovering);
            write(
                &self.leader,
                Some(LeaderInfo {
                    epoch,
                    ..me.clone()
                }),
            );
            info!(epoch, lease, "elected leader; recovering state");
            let fenced = store.fenced(Fence {
                leader_key: key.key().to_vec(),
                revision: key.rev(),
                guard: guard.clone(),
            });
            let master = match Master::recover(
                self.cfg.clone(),
                Arc::new(fenced),
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
                    self.step_down(&mut c, key, lease, &keeper).await;
                    continue;
                }
            };
            let listeners = match self.start_listeners(&master) {
                Ok(l) => l,
                Err(e) => {
                    error!("cannot start listeners: {e}; resigning");
                    self.step_down(&mut c, key, lease, &keeper).await;
                    continue;
                }
            };
            let (loops_stop_tx, loops_stop_rx) = watch::channel(false);
            let loops = tokio::spawn(master.clone().run_loops(loops_stop_rx));
            write(&self.active, Some(master.clone()));
            self.set_role(Role::Alive);
            info!(epoch, "ALIVE: scheduling");

            // 4. Lead until the lease or the fence is lost, or we stop.
            let shutting_down = tokio::select! {
                _ = guard.lost() => { warn!(epoch, "lease lost: stepping down"); false }
                _ = master.fenced() => { warn!(epoch, "fenced: stepping down"); false }
                _ = stop.changed() => { info!(epoch, "shutting down: resigning"); true }
            };
            guard.lose();
            write(&self.active, None);
            self.set_role(Role::Standby);
            let _ = loops_stop_tx.send(true);
            let _ = loops.await;
            stop_listeners(listeners).await;
            self.step_down(&mut c, key, lease, &keeper).await;
            if shutting_down {
                break;
            }
        }
        self.set_role(Role::Standby);
        follower.abort();
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

    async fn step_down(
        &self,
        c: &mut Client,
        key: etcd_client::LeaderKey,
        lease: i64,
        keeper: &tokio::task::JoinHandle<()>,
    ) {
        keeper.abort();
        // Best effort: if etcd is unreachable the lease simply expires.
        let resign = c.resign(Some(etcd_client::ResignOptions::new().with_leader(key)));
        let _ = tokio::time::timeout(Duration::from_secs(2), resign).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), c.lease_revoke(lease)).await;
        if read(&self.leader).is_some_and(|l| l.http == self.cfg.http_url()) {
            write(&self.leader, None);
        }
    }

    /// Keeps `leader` and `members` current while this node does not lead, for redirects and
    /// for `GET /api/v1/cluster`. Polls with timeouts: etcd's observe would block while there is
    /// no leader.
    async fn follow_leader(self: Arc<Self>, client: Client, mut stop: watch::Receiver<bool>) {
        let mut c = client;
        loop {
            if self.role() == Role::Standby {
                let name = self.election_name();
                match tokio::time::timeout(Duration::from_secs(2), c.leader(name)).await {
                    Ok(Ok(resp)) => {
                        if let Some(kv) = resp.kv() {
                            if let Ok(mut info) = serde_json::from_slice::<LeaderInfo>(kv.value()) {
                                info.epoch = kv.create_revision() as u64;
                                write(&self.leader, Some(info));
                            }
                        }
                    }
                    // "no leader" or etcd trouble: nobody to redirect to.
                    Ok(Err(_)) | Err(_) => write(&self.leader, None),
                }
            }
            let opts = etcd_client::GetOptions::new()
                .with_prefix()
                .with_keys_only();
            if let Ok(Ok(resp)) = tokio::time::timeout(
                Duration::from_secs(2),
                c.get(self.members_prefix(), Some(opts)),
            )
            .await
            {
                let prefix = self.members_prefix();
                let mut members: Vec<String> = resp
                    .kvs()
                    .iter()
                    .filter_map(|kv| kv.key_str().ok())
                    .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
                    .collect();
                members.sort();
                write(&self.members, members);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

/// Stops listener threads off the runtime (a delivery in progress may take a while).
pub async fn stop_listeners(listeners: Option<Arc<Listeners>>) {
    if let Some(l) = listeners {
        l.stop();
        let _ = tokio::task::spawn_blocking(move || drop(l)).await;
    }
}
