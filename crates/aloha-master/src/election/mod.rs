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
pub mod memory;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::lease::LeaseGuard;
use crate::store::StateStore;

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
