//! What one master process has seen of the cluster's past, to notice a store that went back in
//! time (etcd restored from a backup or a snapshot) and refuse to lead over it.
//!
//! Epochs only grow: a leadership's epoch is its leader key's create revision, and etcd
//! revisions only grow, so every new leadership's epoch is above every epoch anyone saw before.
//! A restore breaks that: revisions start again from the backup's, new leaders get epochs that
//! workers already saw, and workers (rightly) refuse every launch from them. A master therefore
//! refuses to lead, and steps down if it leads, when
//!
//! - its lease keep-alive sees an etcd member's revision go backwards (the member was restored
//!   under it: without this, a leader whose leader key is in the backup keeps leading over the
//!   old data, its fence still matching);
//! - it wins an election with an epoch at or below one it saw before (its own earlier
//!   leaderships, and the leaders it followed as a standby);
//! - a worker registers that already followed a higher epoch (the master restarted after the
//!   restore and saw nothing itself).
//!
//! The refusal holds until an operator confirms the restore (`POST
//! /api/v1/cluster/accept-restore`): that raises the store's epoch *generation*, the high bits
//! of every epoch ([`compose_epoch`]), above every generation seen, so every epoch after it is
//! above every epoch before it. Masters waiting in refusal see the new generation and campaign
//! again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

/// Bits of an epoch below the generation: etcd revisions stay far below 2^40.
pub const GENERATION_SHIFT: u32 = 40;

/// A leadership's epoch: the store's generation in the high bits, the leader key's create
/// revision in the low ones.
pub fn compose_epoch(generation: u64, revision: u64) -> u64 {
    (generation << GENERATION_SHIFT) | (revision & ((1 << GENERATION_SHIFT) - 1))
}

/// The generation an epoch was made in.
pub fn generation_of(epoch: u64) -> u64 {
    epoch >> GENERATION_SHIFT
}

/// Why a master refuses to lead.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// What was seen, for operators.
    pub reason: String,
    /// Since when.
    pub since: DateTime<Utc>,
    /// The generation an operator's acceptance must reach: the one above every epoch seen
    /// when the refusal began. Epochs seen later (a new leader's, after an acceptance) do not
    /// raise it, or a master that hears of the new leader before it reads the new generation
    /// would wait for one more acceptance.
    pub needed_generation: u64,
}

/// One process's memory of epochs and its refusal to lead.
#[derive(Default)]
pub struct History {
    max_epoch: AtomicU64,
    refusal: Mutex<Option<Refusal>>,
    refused: Notify,
}

impl History {
    /// A history that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an epoch seen (ours or a leader's).
    pub fn observe(&self, epoch: u64) {
        self.max_epoch.fetch_max(epoch, Ordering::SeqCst);
    }

    /// The highest epoch seen.
    pub fn max_epoch(&self) -> u64 {
        self.max_epoch.load(Ordering::SeqCst)
    }

    /// The lowest generation that puts every epoch after it above every epoch seen.
    pub fn next_generation(&self) -> u64 {
        generation_of(self.max_epoch()) + 1
    }

    /// Refuses to lead from now on, until [`History::accept`]; wakes [`History::refused`]
    /// waiters. The first reason is kept.
    pub fn refuse(&self, reason: impl Into<String>) {
        {
            let mut r = self.refusal.lock().unwrap_or_else(|p| p.into_inner());
            if r.is_none() {
                *r = Some(Refusal {
                    reason: reason.into(),
                    since: Utc::now(),
                    needed_generation: self.next_generation(),
                });
            }
        }
        self.refused.notify_waiters();
    }

    /// Why this master refuses to lead, if it does.
    pub fn refusal(&self) -> Option<Refusal> {
        self.refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The operator confirmed the restore: lead again.
    pub fn accept(&self) {
        *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Resolves once this master refuses to lead.
    pub async fn refused(&self) {
        loop {
            let notified = self.refused.notified();
            if self.refusal().is_some() {
                return;
            }
            notified.await;
        }
    }
}

/// How long a member may serve revisions below what it served before until that counts as a
/// restore. A member restarted after a crash can briefly serve an older revision (it applied
/// entries whose commit it had not persisted) until the cluster's leader brings it up to date,
/// which takes well under a second once there is a quorum.
pub const REWIND_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Revisions seen per etcd member on one sequential request stream (the lease keep-alive). A
/// member's revision goes back for good only when its data was restored; for a moment after a
/// crash it may lag ([`REWIND_GRACE`]).
#[derive(Default)]
pub struct Revisions {
    seen: Mutex<std::collections::HashMap<u64, Seen>>,
}

struct Seen {
    /// The epoch generation of the candidacy that saw `max`.
    generation: u64,
    max: i64,
    /// Since when the member has served revisions below `max`.
    below_since: Option<std::time::Instant>,
}

impl Revisions {
    /// Records `revision` from `member` at `now`, seen by a candidacy of epoch generation
    /// `generation`; `Err((before, now))` once it has stayed below the highest revision seen
    /// from that member for [`REWIND_GRACE`]. A higher generation means an operator accepted a
    /// restore: what was seen before it no longer counts (else a restore accepted within the
    /// grace would be refused a second time). A lower one is a candidacy from before the
    /// acceptance still renewing: it is ignored.
    pub fn observe(
        &self,
        member: u64,
        revision: i64,
        generation: u64,
        now: std::time::Instant,
    ) -> Result<(), (i64, i64)> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = Seen {
            generation,
            max: revision,
            below_since: None,
        };
        let s = seen.entry(member).or_insert(fresh);
        if generation < s.generation {
            return Ok(());
        }
        if generation > s.generation {
            *s = Seen {
                generation,
                max: revision,
                below_since: None,
            };
        }
        if revision >= s.max {
            s.max = revision;
            s.below_since = None;
            return Ok(());
        }
        let since = *s.below_since.get_or_insert(now);
        if now.saturating_duration_since(since) < REWIND_GRACE {
            return Ok(());
        }
        let was = s.max;
        s.max = revision;
        s.below_since = None;
        Err((was, revision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_generation_is_above_every_epoch_of_an_earlier_one() {
        let old = compose_epoch(0, (1 << GENERATION_SHIFT) - 1);
        assert!(compose_epoch(1, 1) > old);
        assert_eq!(
            compose_epoch(0, 42),
            42,
            "generation 0 keeps the plain revision"
        );
        assert_eq!(generation_of(compose_epoch(3, 7)), 3);
    }

    #[test]
    fn a_refusal_keeps_its_first_reason_until_accepted() {
        let h = History::new();
        assert!(h.refusal().is_none());
        h.refuse("etcd went back");
        h.refuse("another");
        assert_eq!(h.refusal().unwrap().reason, "etcd went back");
        h.accept();
        assert!(h.refusal().is_none());
    }

    #[test]
    fn a_refusal_needs_the_generation_above_what_was_seen_when_it_began() {
        let h = History::new();
        h.observe(compose_epoch(0, 26));
        h.refuse("etcd went back");
        // The new leader's epoch (after an operator accepted) is heard of first...
        h.observe(compose_epoch(1, 25));
        assert_eq!(h.next_generation(), 2);
        // ...and generation 1 still ends the refusal.
        assert_eq!(h.refusal().unwrap().needed_generation, 1);
    }

    #[test]
    fn the_next_generation_is_above_the_highest_epoch_seen() {
        let h = History::new();
        assert_eq!(h.next_generation(), 1);
        h.observe(compose_epoch(2, 9));
        h.observe(5);
        assert_eq!(h.max_epoch(), compose_epoch(2, 9));
        assert_eq!(h.next_generation(), 3);
    }

    #[test]
    fn a_member_revision_staying_back_is_a_restore_and_a_brief_lag_is_not() {
        let t0 = std::time::Instant::now();
        let at = |ms: u64| t0 + std::time::Duration::from_millis(ms);
        let r = Revisions::default();
        assert!(r.observe(1, 100, 0, at(0)).is_ok());
        assert!(r.observe(1, 105, 0, at(100)).is_ok());
        // Another member is tracked on its own: lagging behind member 1 is not a restore.
        assert!(r.observe(2, 90, 0, at(100)).is_ok());
        // Restarted after a crash: behind for a moment, then caught up.
        assert!(r.observe(1, 101, 0, at(200)).is_ok());
        assert!(r.observe(1, 103, 0, at(1_000)).is_ok());
        assert!(r.observe(1, 106, 0, at(1_500)).is_ok());
        // Restored: behind, and still behind after the grace.
        assert!(r.observe(1, 40, 0, at(2_000)).is_ok());
        assert!(r.observe(1, 44, 0, at(4_000)).is_ok());
        assert_eq!(r.observe(1, 45, 0, at(7_000)), Err((106, 45)));
        // Reported once; from then on measured against the new history.
        assert!(r.observe(1, 46, 0, at(7_500)).is_ok());
    }

    #[test]
    fn an_accepted_restore_starts_the_revisions_over() {
        let t0 = std::time::Instant::now();
        let at = |ms: u64| t0 + std::time::Duration::from_millis(ms);
        let r = Revisions::default();
        assert!(r.observe(1, 100, 0, at(0)).is_ok());
        // Restored to 40; the operator accepts (generation 1) before the grace is over.
        assert!(r.observe(1, 40, 0, at(1_000)).is_ok());
        assert!(r.observe(1, 41, 1, at(2_000)).is_ok());
        assert!(
            r.observe(1, 42, 1, at(9_000)).is_ok(),
            "measured from the acceptance"
        );
        // An older candidacy, still renewing, neither counts nor resets anything.
        assert!(r.observe(1, 10, 0, at(9_500)).is_ok());
        assert!(r.observe(1, 30, 1, at(10_000)).is_ok());
        assert_eq!(r.observe(1, 30, 1, at(15_500)), Err((42, 30)));
    }

    #[tokio::test]
    async fn refused_wakes_a_waiter() {
        let h = std::sync::Arc::new(History::new());
        let w = tokio::spawn({
            let h = h.clone();
            async move { h.refused().await }
        });
        tokio::task::yield_now().await;
        h.refuse("x");
        tokio::time::timeout(std::time::Duration::from_secs(2), w)
            .await
            .unwrap()
            .unwrap();
    }
}
