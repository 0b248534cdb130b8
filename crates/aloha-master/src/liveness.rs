//! Heartbeats, on their own short lock.
//!
//! Heartbeats are the one thing workers send that changes nothing durable, and they come often
//! (5,000 workers at 1 Hz). They never go through the engine: the gRPC handler records them
//! here at once, even while the engine waits for a slow store commit, so a stalled store never
//! gets healthy workers declared dead. The engine reads who is silent on its tick and applies
//! the cluster's [`LiveChange`]s (registered, watched after a recovery, forgotten, suspect)
//! after each commit.

use std::collections::HashMap;
use std::sync::Mutex;

use aloha_core::cluster::LiveChange;
use aloha_core::{Liveness, WorkerId};
use chrono::{DateTime, Utc};

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Counted.
    Counted {
        /// The worker was suspect (a launch to it failed): the engine must hear of it.
        was_suspect: bool,
    },
    /// The worker is not registered here (a restart, or it was declared dead): it must
    /// register again.
    Unregistered,
}

#[derive(Default)]
struct Table {
    liveness: Liveness,
    /// Registered workers whose heartbeats count.
    alive: HashMap<WorkerId, bool>,
    /// Wall-clock time of the last heartbeat, for display.
    last_wall: HashMap<WorkerId, DateTime<Utc>>,
}

/// The liveness table.
#[derive(Default)]
pub struct LiveTable {
    table: Mutex<Table>,
}

impl LiveTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Each critical section is a few map operations that cannot leave it inconsistent.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a heartbeat.
    pub fn heartbeat(&self, id: &WorkerId, mono_ms: u64, wall: DateTime<Utc>) -> Beat {
        let mut t = self.lock();
        let Some(suspect) = t.alive.get_mut(id) else {
            return Beat::Unregistered;
        };
        let was_suspect = std::mem::take(suspect);
        t.liveness.seen(id, mono_ms);
        t.last_wall.insert(id.clone(), wall);
        Beat::Counted { was_suspect }
    }

    /// Applies what a committed batch decided.
    pub fn apply(&self, changes: &[LiveChange], mono_ms: u64, wall: DateTime<Utc>) {
        if changes.is_empty() {
            return;
        }
        let mut t = self.lock();
        for c in changes {
            match c {
                LiveChange::Alive(id) => {
                    t.liveness.seen(id, mono_ms);
                    t.alive.insert(id.clone(), false);
                    t.last_wall.insert(id.clone(), wall);
                }
                LiveChange::Watch(id) => {
                    t.liveness.seen(id, mono_ms);
                    t.alive.remove(id);
                }
                LiveChange::Forget(id) => {
                    t.liveness.forget(id);
                    t.alive.remove(id);
                }
                LiveChange::Suspect(id) => {
                    if let Some(s) = t.alive.get_mut(id) {
                        *s = true;
                    }
                }
            }
        }
    }

    /// Workers silent for more than `timeout_ms`, with how long each has been silent.
    pub fn expired(&self, mono_ms: u64, timeout_ms: u64) -> Vec<(WorkerId, u64)> {
        let t = self.lock();
        t.liveness
            .expired(mono_ms, timeout_ms)
            .into_iter()
            .map(|id| {
                let silence = t.liveness.silence_ms(&id, mono_ms).unwrap_or(timeout_ms);
                (id, silence)
            })
            .collect()
    }

    /// When the worker last heartbeated (wall clock), if it did since it registered here.
    pub fn last_heartbeat(&self, id: &WorkerId) -> Option<DateTime<Utc>> {
        self.lock().last_wall.get(id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_registered_workers_count_and_suspects_are_reported_once() {
        let t = LiveTable::default();
        let w = WorkerId("w".into());
        let wall = Utc::now();
        assert_eq!(t.heartbeat(&w, 1, wall), Beat::Unregistered);
        t.apply(&[LiveChange::Watch(w.clone())], 0, wall);
        assert_eq!(
            t.heartbeat(&w, 1, wall),
            Beat::Unregistered,
            "watched, not alive"
        );
        t.apply(&[LiveChange::Alive(w.clone())], 5, wall);
        t.apply(&[LiveChange::Suspect(w.clone())], 5, wall);
        assert_eq!(
            t.heartbeat(&w, 6, wall),
            Beat::Counted { was_suspect: true }
        );
        assert_eq!(
            t.heartbeat(&w, 7, wall),
            Beat::Counted { was_suspect: false }
        );
        assert!(t.expired(100, 100).is_empty());
        assert_eq!(t.expired(108, 100), vec![(w.clone(), 101)]);
        t.apply(&[LiveChange::Forget(w.clone())], 9, wall);
        assert!(t.expired(1_000, 100).is_empty());
        assert_eq!(t.heartbeat(&w, 1_000, wall), Beat::Unregistered);
    }
}
