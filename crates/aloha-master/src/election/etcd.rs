//! The election over etcd: etcd's election API under `/aloha/<cluster>/election`, one lease
//! per candidacy kept alive every `ttl/3` with a local deadline, members under
//! `/aloha/<cluster>/members/<http-url>` attached to the lease, and the leader key's create
//! revision as the epoch and the fence of every write ([`crate::store::etcd::Fence`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_client::{Client, ConnectOptions, LeaderKey, PutOptions, ResignOptions};
use tokio::task::JoinHandle;
use tracing::{debug, error, warn};

use super::history::{compose_epoch, History, Revisions};
use super::{Candidacy, Election, ElectionError, LeaderInfo, Leadership};
use crate::lease::LeaseGuard;
use crate::store::etcd::{cluster_prefix, EtcdStore, Fence};
use crate::store::StateStore;

/// HTTP/2 keep-alive pings to etcd: etcd closes connections that ping more often than its
/// `--grpc-keepalive-min-time` (5 s by default), so stay above it.
const ETCD_KEEPALIVE: Duration = Duration::from_secs(10);

/// How long resigning may take before the lease is left to expire.
const RESIGN_TIMEOUT: Duration = Duration::from_secs(2);

/// How to reach etcd beyond its endpoints: a user (etcd authentication) and TLS.
#[derive(Debug, Clone, Default)]
pub struct EtcdAccess {
    /// The user and its password.
    pub credentials: Option<(String, String)>,
    /// TLS: the CA that signed etcd's certificates, and this master's client certificate.
    pub tls: Option<etcd_client::TlsOptions>,
}

impl EtcdAccess {
    /// TLS settings from PEM files: the CA to trust (`ca`), and a client certificate and key
    /// (for etcd's `--client-cert-auth`).
    pub fn tls_from_files(
        ca: &std::path::Path,
        client: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<etcd_client::TlsOptions, String> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        };
        let mut tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
        if let Some((cert, key)) = client {
            tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
        }
        Ok(tls)
    }
}

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
    /// Where a store that went back in time is reported.
    history: Arc<History>,
    /// Each etcd member's revision as the keep-alives saw it.
    revisions: Arc<Revisions>,
}

impl EtcdElection {
    /// Connects to etcd at `endpoints` for cluster `cluster`; `me` is what this master
    /// publishes as leader and member, `ttl` its lease's time to live. A member's revision
    /// going backwards under a keep-alive is reported to `history`.
    pub async fn connect(
        endpoints: &[String],
        cluster: &str,
        me: LeaderInfo,
        ttl: Duration,
        history: Arc<History>,
    ) -> Result<EtcdElection, ElectionError> {
        Self::connect_as(endpoints, &EtcdAccess::default(), cluster, me, ttl, history).await
    }

    /// [`EtcdElection::connect`] with `access`: etcd's authentication (the client renews its
    /// auth token by itself) and TLS.
    pub async fn connect_as(
        endpoints: &[String],
        access: &EtcdAccess,
        cluster: &str,
        me: LeaderInfo,
        ttl: Duration,
        history: Arc<History>,
    ) -> Result<EtcdElection, ElectionError> {
        let credentials = access
            .credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()));
        let login = |opts: ConnectOptions| {
            let opts = match &access.tls {
                Some(tls) => opts.with_tls(tls.clone()),
                None => opts,
            };
            match credentials {
                // Auth tokens expire (etcd's --auth-token-ttl, 5 min by default): a refused
                // token is renewed and the call sent again, campaigns included.
                Some((user, password)) => {
                    opts.with_user(user, password).with_auto_token_refresh(true)
                }
                None => opts,
            }
        };
        let connect = |opts: ConnectOptions| async move {
            let opts = login(opts);
            Client::connect(endpoints, Some(opts)).await.map_err(|e| {
                ElectionError::Unavailable(format!(
                    "cannot connect to etcd at {}{}: {e}",
                    endpoints.join(","),
                    credentials.map_or(String::new(), |(user, _)| format!(" as user {user}"))
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
            history,
            revisions: Arc::default(),
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
        let generation = super::generation(&self.store).await.map_err(|e| {
            ElectionError::Unavailable(format!("cannot read the epoch generation: {e}"))
        })?;
        let sent = Instant::now();
        let mut c = self.client.clone();
        let lease = c
            .lease_grant(self.ttl.as_secs().max(1) as i64, None)
            .await
            .map_err(|e| ElectionError::Unavailable(format!("cannot grant a lease: {e}")))?
            .id();
        let guard = LeaseGuard::new(self.ttl, sent);
        let keeper = tokio::spawn(keep_alive(
            EtcdRenewal {
                client: self.client.clone(),
                lease,
                stream: None,
                revisions: self.revisions.clone(),
                generation,
            },
            self.ttl,
            guard.clone(),
            self.history.clone(),
        ));
        let value = serde_json::to_vec(&LeaderInfo {
            lease,
            generation,
            ..self.me.clone()
        })
        .expect("leader info serializes");
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
            generation,
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
            info.epoch = compose_epoch(info.generation, kv.create_revision() as u64);
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

    async fn revoke_leader(&self, leader: &LeaderInfo) -> Result<bool, ElectionError> {
        if leader.lease == 0 {
            return Ok(false);
        }
        match self.client.clone().lease_revoke(leader.lease).await {
            Ok(_) => Ok(true),
            // etcd answers NotFound for a lease that already expired or was revoked.
            Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::NotFound => {
                Ok(false)
            }
            Err(e) => Err(unavailable(e)),
        }
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
    generation: u64,
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
        // The leader key's create revision: unique per leadership, and etcd revisions only grow
        // (until a restore: then the generation, raised by the operator, keeps epochs growing).
        let epoch = compose_epoch(self.generation, key.rev() as u64);
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

/// One keep-alive exchange's outcome.
#[derive(Debug, PartialEq)]
enum Renewed {
    /// Renewed for this long.
    For(Duration),
    /// The backend says the lease is gone.
    Expired,
    /// The backend went back in time under us (restored): the message says how.
    Rewound(String),
}

/// The keep-alive transport, so its retry policy is tested without etcd.
#[async_trait]
trait Renewal: Send {
    /// Sends one keep-alive and waits for its answer, opening a stream first if there is none.
    /// An error drops the stream: the next call opens a new one.
    async fn renew(&mut self) -> Result<Renewed, String>;
    /// Drops the stream (its answer is late): a late answer must not be taken for the next
    /// keep-alive's, whose send time is later.
    fn reset(&mut self);
}

/// The keep-alive over etcd's LeaseKeepAlive stream.
struct EtcdRenewal {
    client: Client,
    lease: i64,
    stream: Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)>,
    revisions: Arc<Revisions>,
    /// The epoch generation the candidacy started in.
    generation: u64,
}

#[async_trait]
impl Renewal for EtcdRenewal {
    fn reset(&mut self) {
        self.stream = None;
    }

    async fn renew(&mut self) -> Result<Renewed, String> {
        if self.stream.is_none() {
            let pair = self
                .client
                .lease_keep_alive(self.lease)
                .await
                .map_err(|e| format!("keep-alive stream: {e}"))?;
            self.stream = Some(pair);
        }
        let (keeper, stream) = self.stream.as_mut().expect("opened above");
        let answer = async {
            keeper.keep_alive().await?;
            stream.message().await
        }
        .await;
        let resp = match answer {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                self.stream = None;
                return Err("keep-alive stream ended".into());
            }
            Err(e) => {
                self.stream = None;
                return Err(format!("keep-alive: {e}"));
            }
        };
        if let Some(h) = resp.header() {
            let observed = self.revisions.observe(
                h.member_id(),
                h.revision(),
                self.generation,
                Instant::now(),
            );
            if let Err((before, now)) = observed {
                return Ok(Renewed::Rewound(format!(
                    "etcd member {:x} went back from revision {before} to {now} and stayed there",
                    h.member_id()
                )));
            }
        }
        Ok(if resp.ttl() > 0 {
            Renewed::For(Duration::from_secs(resp.ttl() as u64))
        } else {
            Renewed::Expired
        })
    }
}

/// After a failed keep-alive, the pause before the next attempt: short, so one slow or lost
/// answer costs a retry, not the lease.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Keeps a lease alive every `ttl / 3` until the guard is lost; declares it lost when the
/// backend says the lease expired or the local deadline passes without a good answer. A failed
/// or slow exchange (no answer within `ttl / 3`) is retried at once on a new stream, not after
/// another `ttl / 3`. A backend that went back in time makes this master refuse to lead
/// ([`History::refuse`]) and loses the lease.
async fn keep_alive(
    mut renewal: impl Renewal,
    ttl: Duration,
    guard: Arc<LeaseGuard>,
    history: Arc<History>,
) {
    let every = (ttl / 3).max(Duration::from_millis(100));
    while guard.valid() {
        let sent = Instant::now();
        let pause = match tokio::time::timeout(every, renewal.renew()).await {
            Ok(Ok(Renewed::For(granted))) => {
                guard.renewed(sent, granted);
                every
            }
            Ok(Ok(Renewed::Expired)) => {
                warn!("etcd says the lease expired");
                break;
            }
            Ok(Ok(Renewed::Rewound(why))) => {
                error!("{why}: the store was restored under this master; refusing to lead until an operator accepts the restore (POST /api/v1/cluster/accept-restore)");
                history.refuse(why);
                break;
            }
            Ok(Err(e)) => {
                debug!("lease keep-alive failed ({e}); retrying");
                RETRY_PAUSE
            }
            Err(_) => {
                debug!("lease keep-alive: no answer within {every:?}; retrying on a new stream");
                renewal.reset();
                RETRY_PAUSE
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = guard.lost() => {}
        }
    }
    guard.lose();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Answers from a script: each entry is (how long the answer takes, the answer).
    struct Scripted {
        script: VecDeque<(Duration, Result<Renewed, String>)>,
        calls: Arc<std::sync::Mutex<Vec<Instant>>>,
    }

    #[async_trait]
    impl Renewal for Scripted {
        async fn renew(&mut self) -> Result<Renewed, String> {
            self.calls.lock().unwrap().push(Instant::now());
            let (delay, answer) = self
                .script
                .pop_front()
                .unwrap_or((Duration::ZERO, Ok(Renewed::For(Duration::from_secs(2)))));
            tokio::time::sleep(delay).await;
            answer
        }
        fn reset(&mut self) {}
    }

    fn scripted(
        script: Vec<(u64, Result<Renewed, String>)>,
    ) -> (Scripted, Arc<std::sync::Mutex<Vec<Instant>>>) {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = Scripted {
            script: script
                .into_iter()
                .map(|(ms, a)| (Duration::from_millis(ms), a))
                .collect(),
            calls: calls.clone(),
        };
        (s, calls)
    }

    // Real time: the lease guard keeps std time. ttl/3 = 1 s, the local deadline 2.4 s after
    // a renewal was sent.
    const TTL: Duration = Duration::from_secs(3);
    fn ok() -> Result<Renewed, String> {
        Ok(Renewed::For(TTL))
    }

    #[tokio::test]
    async fn one_slow_answer_is_retried_at_once_and_the_lease_holds() {
        // The second exchange hangs far past ttl/3; the third (on a new stream) answers.
        let (r, calls) = scripted(vec![(5, ok()), (10_000, ok()), (5, ok())]);
        let guard = LeaseGuard::new(TTL, Instant::now());
        let history = Arc::new(History::new());
        let task = tokio::spawn(keep_alive(r, TTL, guard.clone(), history.clone()));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            guard.valid(),
            "a single slow answer must not cost the lease"
        );
        let calls = calls.lock().unwrap().clone();
        // The retry came right after the slow exchange timed out (ttl/3 = 1 s), not a
        // further ttl/3 later (the old loop's 2 s would have passed the 2.4 s deadline).
        let gap = calls[2] - calls[1];
        assert!(gap < Duration::from_millis(1_500), "retry after {gap:?}");
        task.abort();
    }

    #[tokio::test]
    async fn failures_are_retried_until_the_local_deadline() {
        let (r, _) = scripted(
            vec![(5, ok())]
                .into_iter()
                .chain((0..100).map(|_| (5, Err("refused".to_string()))))
                .collect(),
        );
        let guard = LeaseGuard::new(TTL, Instant::now());
        let task = tokio::spawn(keep_alive(r, TTL, guard.clone(), Arc::new(History::new())));
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!guard.valid(), "nothing renewed it: lost at its deadline");
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_rewound_store_loses_the_lease_and_refuses_to_lead() {
        let (r, _) = scripted(vec![
            (5, ok()),
            (5, Ok(Renewed::Rewound("member 1 went back".into()))),
        ]);
        let guard = LeaseGuard::new(TTL, Instant::now());
        let history = Arc::new(History::new());
        keep_alive(r, TTL, guard.clone(), history.clone()).await;
        assert!(!guard.valid());
        assert_eq!(history.refusal().unwrap().reason, "member 1 went back");
    }
}
