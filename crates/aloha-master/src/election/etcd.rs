//! The election over etcd: etcd's election API under `/aloha/<cluster>/election`, one lease
//! per candidacy kept alive every `ttl/3` with a local deadline, members under
//! `/aloha/<cluster>/members/<http-url>` attached to the lease, and the leader key's create
//! revision as the epoch and the fence of every write ([`crate::store::etcd::Fence`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_client::{Client, ConnectOptions, LeaderKey, PutOptions, ResignOptions};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::{Candidacy, Election, ElectionError, LeaderInfo, Leadership};
use crate::lease::LeaseGuard;
use crate::store::etcd::{cluster_prefix, EtcdStore, Fence};
use crate::store::StateStore;

/// HTTP/2 keep-alive pings to etcd: etcd closes connections that ping more often than its
/// `--grpc-keepalive-min-time` (5 s by default), so stay above it.
const ETCD_KEEPALIVE: Duration = Duration::from_secs(10);

/// How long resigning may take before the lease is left to expire.
const RESIGN_TIMEOUT: Duration = Duration::from_secs(2);

/// One master's view of the etcd election of its cluster.
pub struct EtcdElection {
    /// For everything but campaigning: requests time out.
    client: Client,
    /// Campaigning blocks for as long as another master leads: no request timeout there (dead
    /// connections are still detected by the HTTP/2 keep-alive).
    campaigner: Client,
    store: EtcdStore,
    name: String,
    members_prefix: String,
    me: LeaderInfo,
    ttl: Duration,
}

impl EtcdElection {
    /// Connects to etcd at `endpoints` for cluster `cluster`; `me` is what this master
    /// publishes as leader and member, `ttl` its lease's time to live.
    pub async fn connect(
        endpoints: &[String],
        cluster: &str,
        me: LeaderInfo,
        ttl: Duration,
    ) -> Result<EtcdElection, ElectionError> {
        let connect = |opts: ConnectOptions| async move {
            Client::connect(endpoints, Some(opts)).await.map_err(|e| {
                ElectionError::Unavailable(format!(
                    "cannot reach etcd at {}: {e}",
                    endpoints.join(",")
                ))
            })
        };
        let client = connect(
            ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(2))
                .with_timeout(Duration::from_secs(5))
                .with_keep_alive(ETCD_KEEPALIVE, Duration::from_secs(5)),
        )
        .await?;
        let campaigner = connect(
            ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(2))
                .with_keep_alive(ETCD_KEEPALIVE, Duration::from_secs(5)),
        )
        .await?;
        let prefix = cluster_prefix(cluster);
        Ok(EtcdElection {
            store: EtcdStore::new(client.clone(), cluster),
            client,
            campaigner,
            name: format!("{prefix}election"),
            members_prefix: format!("{prefix}members/"),
            me,
            ttl,
        })
    }
}

impl EtcdElection {
    /// A client for other readers of the same etcd (the standby replica's watch).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The cluster's key prefix, `/aloha/<cluster>/`.
    pub fn prefix(&self) -> String {
        self.store.prefix().to_string()
    }
}

fn unavailable(e: etcd_client::Error) -> ElectionError {
    ElectionError::Unavailable(format!("etcd: {e}"))
}

#[async_trait]
impl Election for EtcdElection {
    fn store(&self) -> Arc<dyn StateStore> {
        Arc::new(self.store.clone())
    }

    async fn candidacy(&self) -> Result<Box<dyn Candidacy>, ElectionError> {
        let sent = Instant::now();
        let mut c = self.client.clone();
        let lease = c
            .lease_grant(self.ttl.as_secs().max(1) as i64, None)
            .await
            .map_err(|e| ElectionError::Unavailable(format!("cannot grant a lease: {e}")))?
            .id();
        let guard = LeaseGuard::new(self.ttl, sent);
        let keeper = tokio::spawn(keep_alive(
            self.client.clone(),
            lease,
            self.ttl,
            guard.clone(),
        ));
        let value = serde_json::to_vec(&self.me).expect("leader info serializes");
        let member_key = format!("{}{}", self.members_prefix, self.me.http);
        // Best effort: membership is only shown by `GET /api/v1/cluster`.
        let _ = c
            .put(
                member_key,
                value.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await;
        Ok(Box::new(EtcdCandidacy {
            client: self.client.clone(),
            campaigner: self.campaigner.clone(),
            store: self.store.clone(),
            name: self.name.clone(),
            value,
            lease,
            guard,
            keeper,
            key: None,
        }))
    }

    async fn leader(&self) -> Result<Option<LeaderInfo>, ElectionError> {
        // etcd answers "no leader" with an error; the node treats any error as "nobody to
        // redirect to".
        let resp = self
            .client
            .clone()
            .leader(self.name.clone())
            .await
            .map_err(unavailable)?;
        Ok(resp.kv().and_then(|kv| {
            let mut info = serde_json::from_slice::<LeaderInfo>(kv.value()).ok()?;
            info.epoch = kv.create_revision() as u64;
            Some(info)
        }))
    }

    async fn members(&self) -> Result<Vec<String>, ElectionError> {
        let opts = etcd_client::GetOptions::new()
            .with_prefix()
            .with_keys_only();
        let resp = self
            .client
            .clone()
            .get(self.members_prefix.clone(), Some(opts))
            .await
            .map_err(unavailable)?;
        let mut members: Vec<String> = resp
            .kvs()
            .iter()
            .filter_map(|kv| kv.key_str().ok())
            .filter_map(|k| k.strip_prefix(&self.members_prefix).map(str::to_string))
            .collect();
        members.sort();
        Ok(members)
    }
}

/// A lease granted by etcd, and the leader key once elected.
struct EtcdCandidacy {
    client: Client,
    campaigner: Client,
    store: EtcdStore,
    name: String,
    value: Vec<u8>,
    lease: i64,
    guard: Arc<LeaseGuard>,
    keeper: JoinHandle<()>,
    key: Option<LeaderKey>,
}

impl Drop for EtcdCandidacy {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

#[async_trait]
impl Candidacy for EtcdCandidacy {
    fn guard(&self) -> Arc<LeaseGuard> {
        self.guard.clone()
    }

    async fn campaign(&mut self) -> Result<Leadership, ElectionError> {
        let mut resp = self
            .campaigner
            .clone()
            .campaign(self.name.clone(), self.value.clone(), self.lease)
            .await
            .map_err(|e| ElectionError::Campaign(format!("etcd: {e}")))?;
        let key = resp
            .take_leader()
            .ok_or_else(|| ElectionError::Campaign("etcd returned no leader key".into()))?;
        // The leader key's create revision: unique per leadership, and etcd revisions only grow.
        let epoch = key.rev() as u64;
        let store = self.store.fenced(Fence {
            leader_key: key.key().to_vec(),
            revision: key.rev(),
            guard: self.guard.clone(),
        });
        self.key = Some(key);
        Ok(Leadership {
            epoch,
            guard: self.guard.clone(),
            store: Arc::new(store),
        })
    }

    async fn resign(mut self: Box<Self>) {
        self.keeper.abort();
        let mut c = self.client.clone();
        if let Some(key) = self.key.take() {
            let resign = c.resign(Some(ResignOptions::new().with_leader(key)));
            let _ = tokio::time::timeout(RESIGN_TIMEOUT, resign).await;
        }
        let _ = tokio::time::timeout(RESIGN_TIMEOUT, c.lease_revoke(self.lease)).await;
    }
}

/// Keeps `lease` alive every `ttl / 3` until the guard is lost; declares it lost when etcd says
/// the lease expired or the local deadline passes without a good answer.
async fn keep_alive(client: Client, lease: i64, ttl: Duration, guard: Arc<LeaseGuard>) {
    let every = (ttl / 3).max(Duration::from_millis(100));
    let mut client = client;
    let mut stream_pair = None;
    while guard.valid() {
        if stream_pair.is_none() {
            match tokio::time::timeout(every, client.lease_keep_alive(lease)).await {
                Ok(Ok(pair)) => stream_pair = Some(pair),
                Ok(Err(e)) => debug!("lease keep-alive stream: {e}"),
                Err(_) => debug!("lease keep-alive stream: timed out"),
            }
        }
        if let Some((keeper, stream)) = stream_pair.as_mut() {
            let sent = Instant::now();
            let answered = tokio::time::timeout(every, async {
                keeper.keep_alive().await?;
                stream.message().await
            })
            .await;
            match answered {
                Ok(Ok(Some(resp))) if resp.ttl() > 0 => {
                    guard.renewed(sent, Duration::from_secs(resp.ttl() as u64));
                }
                Ok(Ok(Some(_))) => {
                    warn!(lease, "etcd says the lease expired");
                    guard.lose();
                    return;
                }
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                    debug!(lease, "lease keep-alive failed; reconnecting");
                    stream_pair = None;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = guard.lost() => {}
        }
    }
    guard.lose();
}
