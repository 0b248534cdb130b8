//! An election in memory, for unit tests of failover: several candidates in one process share
//! a [`MemoryElectorate`]; the oldest campaigning candidate leads, as with etcd's election API.
//! Leases never expire on their own: a test ends one with [`MemoryElectorate::revoke_leader`]
//! to simulate a lost lease (a paused or partitioned leader). A leadership's store is a
//! [`FencedMemoryStore`] that refuses every write once that leadership is gone.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::watch;

use super::history::compose_epoch;
use super::{Candidacy, Election, ElectionError, LeaderInfo, Leadership};
use crate::lease::LeaseGuard;
use crate::store::{FencedMemoryStore, MemoryStore, StateStore};

/// Long enough that a lease's local deadline never passes during a test: only a revocation
/// ends it.
const FOREVER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The shared state of one in-memory election: the candidates, the leader and the store.
#[derive(Clone)]
pub struct MemoryElectorate {
    inner: Arc<Inner>,
}

struct Inner {
    hub: Mutex<Hub>,
    /// Bumped on every change, to wake campaigners.
    changed: watch::Sender<()>,
    store: Arc<MemoryStore>,
}

#[derive(Default)]
struct Hub {
    next_lease: u64,
    last_epoch: u64,
    leases: BTreeMap<u64, Lease>,
    /// Campaigning leases, oldest first; the leader, when there is one, is the first.
    queue: Vec<u64>,
    /// (lease, epoch) of the leader.
    leader: Option<(u64, u64)>,
}

struct Lease {
    me: LeaderInfo,
    guard: Arc<LeaseGuard>,
    /// The epoch generation when the candidacy began.
    generation: u64,
}

impl Hub {
    fn elect(&mut self) {
        if self.leader.is_none() {
            if let Some(&first) = self.queue.first() {
                self.last_epoch += 1;
                self.leader = Some((first, self.last_epoch));
            }
        }
    }
}

impl Inner {
    fn hub(&self) -> MutexGuard<'_, Hub> {
        // Every critical section below leaves the hub consistent before it can panic.
        self.hub.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends `lease`: its guard is lost, its leadership (if any) is gone, the next candidate is
    /// elected. Idempotent.
    fn revoke(&self, lease: u64) {
        let gone = {
            let mut hub = self.hub();
            let gone = hub.leases.remove(&lease);
            hub.queue.retain(|&l| l != lease);
            if hub.leader.is_some_and(|(l, _)| l == lease) {
                hub.leader = None;
            }
            hub.elect();
            gone
        };
        if let Some(l) = gone {
            l.guard.lose();
        }
        self.changed.send_replace(());
    }
}

impl Default for MemoryElectorate {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryElectorate {
    /// An election nobody takes part in yet, over an empty store.
    pub fn new() -> Self {
        let (changed, _) = watch::channel(());
        MemoryElectorate {
            inner: Arc::new(Inner {
                hub: Mutex::new(Hub::default()),
                changed,
                store: Arc::new(MemoryStore::new()),
            }),
        }
    }

    /// The store every candidate shares (unfenced).
    pub fn store(&self) -> Arc<MemoryStore> {
        self.inner.store.clone()
    }

    /// One candidate's view of this election; `me` is what it publishes.
    pub fn join(&self, me: LeaderInfo) -> Arc<dyn Election> {
        Arc::new(MemoryElection {
            inner: self.inner.clone(),
            me,
        })
    }

    /// The current leader, if any.
    pub fn leader(&self) -> Option<LeaderInfo> {
        leader_of(&self.inner.hub())
    }

    /// Revokes the leader's lease, as if it had expired: the leader's guard is lost and its
    /// store refuses writes; the oldest other candidate is elected. Returns who led.
    pub fn revoke_leader(&self) -> Option<LeaderInfo> {
        let (lease, info) = {
            let hub = self.inner.hub();
            let (lease, _) = hub.leader?;
            (lease, leader_of(&hub))
        };
        self.inner.revoke(lease);
        info
    }
}

fn leader_of(hub: &Hub) -> Option<LeaderInfo> {
    let (lease, epoch) = hub.leader?;
    hub.leases.get(&lease).map(|l| LeaderInfo {
        epoch: compose_epoch(l.generation, epoch),
        lease: lease as i64,
        generation: l.generation,
        ..l.me.clone()
    })
}

struct MemoryElection {
    inner: Arc<Inner>,
    me: LeaderInfo,
}

#[async_trait]
impl Election for MemoryElection {
    fn store(&self) -> Arc<dyn StateStore> {
        self.inner.store.clone()
    }

    async fn candidacy(&self) -> Result<Box<dyn Candidacy>, ElectionError> {
        let generation = super::generation(self.inner.store.as_ref())
            .await
            .map_err(|e| ElectionError::Unavailable(e.to_string()))?;
        let guard = LeaseGuard::new(FOREVER, Instant::now());
        let lease = {
            let mut hub = self.inner.hub();
            hub.next_lease += 1;
            let lease = hub.next_lease;
            hub.leases.insert(
                lease,
                Lease {
                    me: self.me.clone(),
                    guard: guard.clone(),
                    generation,
                },
            );
            lease
        };
        Ok(Box::new(MemoryCandidacy {
            inner: self.inner.clone(),
            lease,
            guard,
            generation,
        }))
    }

    async fn leader(&self) -> Result<Option<LeaderInfo>, ElectionError> {
        Ok(leader_of(&self.inner.hub()))
    }

    async fn members(&self) -> Result<Vec<String>, ElectionError> {
        let mut members: Vec<String> = self
            .inner
            .hub()
            .leases
            .values()
            .map(|l| l.me.http.clone())
            .collect();
        members.sort();
        members.dedup();
        Ok(members)
    }

    async fn revoke_leader(&self, leader: &LeaderInfo) -> Result<bool, ElectionError> {
        let known = u64::try_from(leader.lease)
            .is_ok_and(|lease| self.inner.hub().leases.contains_key(&lease));
        if known {
            self.inner.revoke(leader.lease as u64);
        }
        Ok(known)
    }
}

struct MemoryCandidacy {
    inner: Arc<Inner>,
    lease: u64,
    guard: Arc<LeaseGuard>,
    generation: u64,
}

impl Drop for MemoryCandidacy {
    fn drop(&mut self) {
        // Nobody renews the lease any more: in memory it ends at once.
        self.inner.revoke(self.lease);
    }
}

#[async_trait]
impl Candidacy for MemoryCandidacy {
    fn guard(&self) -> Arc<LeaseGuard> {
        self.guard.clone()
    }

    async fn campaign(&mut self) -> Result<Leadership, ElectionError> {
        let mut changed = self.inner.changed.subscribe();
        {
            let mut hub = self.inner.hub();
            if hub.leases.contains_key(&self.lease) && !hub.queue.contains(&self.lease) {
                hub.queue.push(self.lease);
                hub.elect();
            }
        }
        self.inner.changed.send_replace(());
        loop {
            changed.borrow_and_update();
            let epoch = {
                let hub = self.inner.hub();
                if !hub.leases.contains_key(&self.lease) || !self.guard.valid() {
                    return Err(ElectionError::Campaign("the lease was revoked".into()));
                }
                hub.leader.filter(|&(l, _)| l == self.lease).map(|(_, e)| e)
            };
            if let Some(epoch) = epoch {
                let (inner, lease, guard) = (self.inner.clone(), self.lease, self.guard.clone());
                let holds = move || guard.valid() && inner.hub().leader == Some((lease, epoch));
                return Ok(Leadership {
                    epoch: compose_epoch(self.generation, epoch),
                    guard: self.guard.clone(),
                    store: Arc::new(FencedMemoryStore::new(
                        self.inner.store.clone(),
                        Arc::new(holds),
                    )),
                });
            }
            // The sender lives in `inner`, which this candidacy holds: never closed.
            let _ = changed.changed().await;
        }
    }

    async fn resign(self: Box<Self>) {
        self.inner.revoke(self.lease);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StoreError, Txn};

    fn me(n: u16) -> LeaderInfo {
        LeaderInfo {
            http: format!("http://127.0.0.1:{n}"),
            rpc: format!("http://127.0.0.1:{}", n + 1),
            epoch: 0,
            lease: 0,
            generation: 0,
        }
    }

    fn put(key: &str) -> Txn {
        let mut t = Txn::default();
        t.put(key, b"x".to_vec());
        t
    }

    #[tokio::test]
    async fn the_oldest_candidate_leads_and_the_next_takes_over_with_a_higher_epoch() {
        let e = MemoryElectorate::new();
        let (a, b) = (e.join(me(1000)), e.join(me(2000)));
        let mut ca = a.candidacy().await.unwrap();
        let mut cb = b.candidacy().await.unwrap();
        assert_eq!(
            a.members().await.unwrap(),
            ["http://127.0.0.1:1000", "http://127.0.0.1:2000"]
        );
        let la = ca.campaign().await.unwrap();
        assert_eq!(b.leader().await.unwrap().unwrap().http, me(1000).http);
        // b blocks while a leads.
        let mut b_campaign = tokio::spawn(async move {
            let l = cb.campaign().await;
            (cb, l)
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut b_campaign)
                .await
                .is_err()
        );
        assert!(la.store.txn(put("a")).await.unwrap());

        // a's lease is lost: b leads with a higher epoch; a's store writes nothing.
        assert_eq!(e.revoke_leader().unwrap().epoch, la.epoch);
        assert!(!la.guard.valid());
        let (cb, lb) = b_campaign.await.unwrap();
        let lb = lb.unwrap();
        assert!(lb.epoch > la.epoch);
        assert!(matches!(
            la.store.txn(put("late")).await,
            Err(StoreError::Fenced)
        ));
        assert_eq!(e.store().get("late").await.unwrap(), None);
        assert!(lb.store.txn(put("b")).await.unwrap());
        assert_eq!(e.leader().unwrap().epoch, lb.epoch);
        drop(ca);

        // Resigning frees the seat at once.
        cb.resign().await;
        assert_eq!(e.leader(), None);
        assert!(matches!(
            lb.store.txn(put("after")).await,
            Err(StoreError::Fenced)
        ));
        assert!(a.members().await.unwrap().is_empty());
    }
}
