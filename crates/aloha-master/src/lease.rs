//! The leader's lease and its local deadline.
//!
//! etcd expires a lease `ttl` after the last keep-alive it processed. The master cannot see
//! that moment, so it keeps its own, earlier deadline: `sent_at + ttl - margin` for the newest
//! keep-alive that etcd answered, where `sent_at` is when the request left (before etcd saw it).
//! Past that deadline the master stops acting as leader even if nothing told it so: a paused
//! process or a slow etcd cannot make it write after a successor may have been elected.
//!
//! The guard is the same for every [`crate::election::Election`]; the etcd keep-alive that
//! renews it lives in [`crate::election::etcd`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Whether this master may still act on its lease.
pub struct LeaseGuard {
    start: Instant,
    valid_until_ms: AtomicU64,
    margin_ms: u64,
    lost: AtomicBool,
    notify: Notify,
}

impl LeaseGuard {
    /// A guard for a lease of `ttl` granted by a request sent at `sent_at`.
    pub fn new(ttl: Duration, sent_at: Instant) -> Arc<LeaseGuard> {
        let ttl_ms = ttl.as_millis() as u64;
        let g = LeaseGuard {
            start: sent_at,
            valid_until_ms: AtomicU64::new(0),
            margin_ms: (ttl_ms / 5).max(200),
            lost: AtomicBool::new(false),
            notify: Notify::new(),
        };
        g.valid_until_ms
            .store(ttl_ms.saturating_sub(g.margin_ms), Ordering::SeqCst);
        Arc::new(g)
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// The lease may still be held: not declared lost and before the local deadline.
    pub fn valid(&self) -> bool {
        !self.lost.load(Ordering::SeqCst)
            && self.now_ms() < self.valid_until_ms.load(Ordering::SeqCst)
    }

    /// etcd renewed the lease for `ttl` after a keep-alive sent at `sent_at`.
    pub fn renewed(&self, sent_at: Instant, ttl: Duration) {
        let sent_ms = sent_at.saturating_duration_since(self.start).as_millis() as u64;
        let until = (sent_ms + ttl.as_millis() as u64).saturating_sub(self.margin_ms);
        self.valid_until_ms.fetch_max(until, Ordering::SeqCst);
    }

    /// Declares the lease lost for good.
    pub fn lose(&self) {
        if !self.lost.swap(true, Ordering::SeqCst) {
            self.notify.notify_waiters();
        }
    }

    /// Resolves when the lease is lost or its local deadline passes.
    pub async fn lost(&self) {
        loop {
            if !self.valid() {
                self.lose();
                return;
            }
            let left = self
                .valid_until_ms
                .load(Ordering::SeqCst)
                .saturating_sub(self.now_ms());
            tokio::select! {
                _ = self.notify.notified() => {}
                // Wake at the deadline, and at least every 100 ms: a paused process wakes late
                // and must notice at once.
                _ = tokio::time::sleep(Duration::from_millis(left.clamp(1, 100))) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_keeps_a_margin_and_moves_with_renewals() {
        let t0 = Instant::now();
        let g = LeaseGuard::new(Duration::from_secs(5), t0);
        assert!(g.valid());
        assert_eq!(g.valid_until_ms.load(Ordering::SeqCst), 4_000);
        g.renewed(t0 + Duration::from_secs(3), Duration::from_secs(5));
        assert_eq!(g.valid_until_ms.load(Ordering::SeqCst), 7_000);
        // An older answer never moves it back.
        g.renewed(t0 + Duration::from_secs(1), Duration::from_secs(5));
        assert_eq!(g.valid_until_ms.load(Ordering::SeqCst), 7_000);
        g.lose();
        assert!(!g.valid());
    }

    #[tokio::test]
    async fn an_unrenewed_lease_is_lost_at_its_local_deadline() {
        let g = LeaseGuard::new(Duration::from_millis(600), Instant::now());
        let t = Instant::now();
        tokio::time::timeout(Duration::from_secs(3), g.lost())
            .await
            .unwrap();
        assert!(t.elapsed() >= Duration::from_millis(350));
        assert!(!g.valid());
    }
}
