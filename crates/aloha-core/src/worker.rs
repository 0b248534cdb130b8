//! Workers as the master knows them, and their liveness.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A worker id, chosen by the worker (`--id`) and stable for the life of its process.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct WorkerId(pub String);

impl WorkerId {
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The master's view of a worker's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkerState {
    /// Registered and heartbeating.
    Alive,
    /// Missed heartbeats for the worker timeout; its apps were relaunched or failed.
    Dead,
    /// Known from persisted state after a master restart; not heard from yet.
    Unknown,
}

impl WorkerState {
    /// Whether `self -> next` is a legal change: ALIVE → DEAD (silent past the timeout) or
    /// UNKNOWN (a master recovered); UNKNOWN → ALIVE (re-registered) or DEAD; DEAD → ALIVE (a
    /// worker declared dead registers again). A re-registration of an ALIVE worker keeps it
    /// ALIVE and is not a change of state.
    pub fn can_move_to(self, next: WorkerState) -> bool {
        use WorkerState::*;
        matches!(
            (self, next),
            (Alive, Dead) | (Alive, Unknown) | (Unknown, Alive) | (Unknown, Dead) | (Dead, Alive)
        )
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkerState::Alive => "ALIVE",
            WorkerState::Dead => "DEAD",
            WorkerState::Unknown => "UNKNOWN",
        })
    }
}

/// A worker as the master persists it. Resource usage is not stored: it is derived from the apps
/// bound to the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// Id.
    pub id: WorkerId,
    /// `host:port` of its WorkerService.
    pub address: String,
    /// Total cores it offers.
    pub cores: u32,
    /// Total memory it offers, MiB.
    pub memory_mb: u64,
    /// App kinds its plugins provide.
    pub kinds: Vec<String>,
    /// Health.
    pub state: WorkerState,
    /// Last (re-)registration.
    pub registered_at: DateTime<Utc>,
    /// Last heartbeat, wall clock (liveness itself runs on a monotonic clock).
    pub last_heartbeat: DateTime<Utc>,
    /// Plugins that failed to load on the worker.
    #[serde(default)]
    pub plugin_errors: Vec<String>,
    /// When it was declared DEAD (DEAD workers are forgotten a while after).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_since: Option<DateTime<Utc>>,
    /// An operator's drain: no new placements; what still runs at the deadline is stopped and
    /// relaunched elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<Drain>,
}

/// A drain of a worker (`POST /api/v1/workers/{id}/drain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    /// When it was asked for.
    pub since: DateTime<Utc>,
    /// When what still runs there is stopped and relaunched elsewhere.
    pub deadline: DateTime<Utc>,
    /// The deadline passed and the remaining apps were told to stop.
    #[serde(default)]
    pub deadline_passed: bool,
}

/// A worker's state as the API shows it: its health, or for an ALIVE worker being drained,
/// `DRAINING` (apps still on it) or `DRAINED` (empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkerStatus {
    /// Registered and heartbeating, taking apps.
    Alive,
    /// ALIVE, drained, apps still on it.
    Draining,
    /// ALIVE, drained and empty.
    Drained,
    /// Declared dead.
    Dead,
    /// Not heard from since a master recovered.
    Unknown,
}

impl WorkerStatus {
    /// The status of a worker in `state`, with a drain or not, holding `apps` apps.
    pub fn of(record: &WorkerRecord, apps: usize) -> WorkerStatus {
        match (record.state, record.drain.is_some()) {
            (WorkerState::Alive, true) if apps > 0 => WorkerStatus::Draining,
            (WorkerState::Alive, true) => WorkerStatus::Drained,
            (WorkerState::Alive, false) => WorkerStatus::Alive,
            (WorkerState::Dead, _) => WorkerStatus::Dead,
            (WorkerState::Unknown, _) => WorkerStatus::Unknown,
        }
    }
}

impl fmt::Display for WorkerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkerStatus::Alive => "ALIVE",
            WorkerStatus::Draining => "DRAINING",
            WorkerStatus::Drained => "DRAINED",
            WorkerStatus::Dead => "DEAD",
            WorkerStatus::Unknown => "UNKNOWN",
        })
    }
}

/// Tracks when each worker was last heard from, on a monotonic millisecond clock supplied by the
/// caller, and says which ones have been silent for longer than the timeout.
#[derive(Debug, Clone, Default)]
pub struct Liveness {
    last_seen_ms: HashMap<WorkerId, u64>,
}

impl Liveness {
    /// Records a sign of life (registration or heartbeat).
    pub fn seen(&mut self, worker: &WorkerId, now_ms: u64) {
        self.last_seen_ms.insert(worker.clone(), now_ms);
    }

    /// Stops tracking a worker (declared dead).
    pub fn forget(&mut self, worker: &WorkerId) {
        self.last_seen_ms.remove(worker);
    }

    /// Workers silent for more than `timeout_ms` at `now_ms`, sorted by id.
    pub fn expired(&self, now_ms: u64, timeout_ms: u64) -> Vec<WorkerId> {
        let mut out: Vec<WorkerId> = self
            .last_seen_ms
            .iter()
            .filter(|(_, &seen)| now_ms.saturating_sub(seen) > timeout_ms)
            .map(|(id, _)| id.clone())
            .collect();
        out.sort();
        out
    }

    /// Milliseconds since the worker was last heard from, if tracked.
    pub fn silence_ms(&self, worker: &WorkerId, now_ms: u64) -> Option<u64> {
        self.last_seen_ms
            .get(worker)
            .map(|&seen| now_ms.saturating_sub(seen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> WorkerId {
        WorkerId(s.into())
    }

    #[test]
    fn silent_workers_expire_after_the_timeout_and_not_before() {
        let mut l = Liveness::default();
        l.seen(&w("a"), 1_000);
        l.seen(&w("b"), 5_000);
        assert!(
            l.expired(11_000, 10_000).is_empty(),
            "exactly at the timeout is alive"
        );
        assert_eq!(l.expired(11_001, 10_000), vec![w("a")]);
        l.seen(&w("a"), 11_001);
        assert_eq!(l.expired(15_001, 10_000), vec![w("b")]);
        l.forget(&w("b"));
        assert!(l.expired(15_001, 10_000).is_empty());
        assert_eq!(l.silence_ms(&w("a"), 12_001), Some(1_000));
    }

    #[test]
    fn worker_states_change_only_along_legal_edges() {
        use WorkerState::*;
        for (from, to, ok) in [
            (Alive, Dead, true),
            (Alive, Unknown, true),
            (Unknown, Alive, true),
            (Unknown, Dead, true),
            (Dead, Alive, true),
            (Dead, Unknown, false),
            (Alive, Alive, false),
            (Dead, Dead, false),
        ] {
            assert_eq!(from.can_move_to(to), ok, "{from} -> {to}");
        }
    }

    #[test]
    fn a_clock_that_goes_backwards_never_expires_anyone() {
        let mut l = Liveness::default();
        l.seen(&w("a"), 50_000);
        assert!(l.expired(10, 1).is_empty());
    }
}
