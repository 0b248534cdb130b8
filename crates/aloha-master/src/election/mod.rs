//! Leader election behind one trait, so the HA loop in [`crate::node`] is the same over etcd
//! (production) and memory (unit tests of failover).
//!
//! A process takes part in three steps:
//!
//! 1. [`Election::candidacy`]: a lease, kept alive on its own task with a local deadline
//!    ([`LeaseGuard`]), and a membership attached to it;
//! 2. [`Candidacy::campaign`]: blocks while another candidate leads, then returns a
//!    [`Leadership`]: its epoch, the guard that says when the lease is lost, and the fenced
//!    [`StateStore`] every write of this leadership must go through;
//! 3. [`Candidacy::resign`]: gives the leadership (if any) and the lease back at once, so
//!    another candidate is elected without waiting for the lease to expire. Dropping a
//!    candidacy without resigning stops renewing its lease: it expires on its own.
//!
//! Meanwhile [`Election::leader`] and [`Election::members`] tell any process who leads (for
//! redirects) and who takes part (for `GET /api/v1/cluster`).
//!
//! Implementations: [`etcd::EtcdElection`] (etcd's election API, fencing by the leader key's
//! create revision) and [`memory::MemoryElectorate`] (several candidates in one process; a test
//! can revoke the leader's lease).

pub mod etcd;
pub mod history;
pub mod memory;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::lease::LeaseGuard;
use crate::store::{keys, read_u64, Compare, StateStore, StoreError, Txn};

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
    /// The lease its leadership stands on (etcd's lease id), for fast failover: a standby that
    /// sees the leader's process gone revokes it. 0 when unknown.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lease: i64,
    /// The epoch generation it campaigned in (the high bits of its epoch).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

/// The store's epoch generation: 0 until an operator first accepted a restored store.
pub async fn generation(store: &dyn StateStore) -> Result<u64, StoreError> {
    read_u64(store, keys::EPOCH_GENERATION).await
}

/// Raises the store's epoch generation to at least `at_least` (compare-and-set, retried on a
/// race); returns the generation now in force.
pub async fn raise_generation(store: &dyn StateStore, at_least: u64) -> Result<u64, StoreError> {
    loop {
        let current = store.get(keys::EPOCH_GENERATION).await?;
        let now = match &current {
            None => 0,
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| StoreError::Backend("corrupt epoch generation".into()))?,
        };
        if now >= at_least {
            return Ok(now);
        }
        let mut txn = Txn::default();
        txn.compares.push(Compare::Value {
            key: keys::EPOCH_GENERATION.into(),
            value: current,
        });
        txn.put(keys::EPOCH_GENERATION, at_least.to_string().into_bytes());
        if store.txn(txn).await? {
            return Ok(at_least);
        }
    }
}

/// Why an election step failed. Every failure is retried by the HA loop.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// The election backend could not be reached or refused the request.
    #[error("election backend unavailable: {0}")]
    Unavailable(String),
    /// A campaign ended without a leadership (the lease expired under it, a protocol error).
    #[error("campaign failed: {0}")]
    Campaign(String),
}

/// One won election: valid until its guard is lost or a write through its store is fenced.
pub struct Leadership {
    /// The fencing token: unique per leadership, growing with every election. Sent to workers.
    pub epoch: u64,
    /// The lease this leadership stands on; [`LeaseGuard::lost`] resolves when it is gone.
    pub guard: Arc<LeaseGuard>,
    /// The store to write through: refuses every write ([`crate::store::StoreError::Fenced`])
    /// once this leadership is gone, however late the write arrives.
    pub store: Arc<dyn StateStore>,
}

/// A leader election among the masters of one cluster, seen from one master.
#[async_trait]
pub trait Election: Send + Sync + 'static {
    /// The unfenced store: reads on standbys, the event log's reads.
    fn store(&self) -> Arc<dyn StateStore>;

    /// Takes a lease (kept alive until the candidacy is resigned or dropped) and registers
    /// this master as a member.
    async fn candidacy(&self) -> Result<Box<dyn Candidacy>, ElectionError>;

    /// The current leader (address and epoch), `None` when nobody leads.
    async fn leader(&self) -> Result<Option<LeaderInfo>, ElectionError>;

    /// The HTTP URLs of every master taking part, sorted.
    async fn members(&self) -> Result<Vec<String>, ElectionError>;

    /// Ends `leader`'s lease at once, as if it had expired: its leadership is gone and the next
    /// candidate is elected (fast failover, [`crate::peer`]). `Ok(false)` when that lease had
    /// already ended or is unknown.
    async fn revoke_leader(&self, leader: &LeaderInfo) -> Result<bool, ElectionError>;
}

/// One lease's candidacy. Dropping it stops the lease's keep-alive.
#[async_trait]
pub trait Candidacy: Send {
    /// The lease's guard: lost when the lease expires (or its local deadline passes) while
    /// campaigning or leading.
    fn guard(&self) -> Arc<LeaseGuard>;

    /// Campaigns: blocks while another candidate leads, returns once elected. Cancel-safe in
    /// the sense the HA loop needs: dropping the future and then the candidacy gives up.
    async fn campaign(&mut self) -> Result<Leadership, ElectionError>;

    /// Gives up the leadership (if elected) and the lease, best effort and bounded in time:
    /// if the backend is unreachable the lease simply expires.
    async fn resign(self: Box<Self>);
}
