//! Events: every app state change, relaunch, worker join/loss and leadership change, numbered.
//!
//! Events are persisted in the same store transaction as the change they describe, so a crash
//! can never keep one without the other; `seq` is contiguous and increasing per cluster. They
//! are what listener plugins receive (as this JSON) and what `GET /api/v1/events` streams.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::Role;
use crate::app::AppId;
use crate::state::AppState;
use crate::worker::WorkerId;

/// One event as stored, streamed and handed to listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the event log: 1, 2, 3, ... without gaps.
    pub seq: u64,
    /// When the change happened.
    pub at: DateTime<Utc>,
    /// What happened.
    #[serde(flatten)]
    pub body: EventBody,
}

/// The kinds of event, tagged by `type` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// An app changed state (including its submission, with `old_state` null).
    AppStateChanged {
        /// App id.
        app_id: AppId,
        /// App name.
        name: String,
        /// App kind.
        kind: String,
        /// State before; `None` for a submission.
        old_state: Option<AppState>,
        /// State after.
        new_state: AppState,
        /// Attempt (0 before the first launch).
        attempt: u32,
        /// Worker of the attempt, if any.
        worker_id: Option<WorkerId>,
        /// Why, when there is something to say.
        message: Option<String>,
    },
    /// An app's attempt was lost and the app is queued for another one.
    AppRelaunched {
        /// App id.
        app_id: AppId,
        /// App name.
        name: String,
        /// App kind.
        kind: String,
        /// The attempt that was lost.
        attempt: u32,
        /// Relaunches spent so far (this one included).
        retries: u32,
        /// The worker the lost attempt ran on.
        worker_id: Option<WorkerId>,
        /// Why it was lost.
        message: Option<String>,
    },
    /// A worker registered (first time or again).
    WorkerJoined {
        /// Worker id.
        worker_id: WorkerId,
        /// Its address.
        address: String,
        /// Cores offered.
        cores: u32,
        /// Memory offered, MiB.
        memory_mb: u64,
    },
    /// A worker was declared dead.
    WorkerLost {
        /// Worker id.
        worker_id: WorkerId,
        /// Why.
        message: String,
    },
    /// A master took or lost leadership.
    LeaderChanged {
        /// The role the master now has.
        role: Role,
        /// The leader's HTTP address.
        leader: Option<String>,
        /// The leader's epoch.
        epoch: u64,
    },
}

impl EventBody {
    /// The `type` tag, for filtering.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventBody::AppStateChanged { .. } => "app_state_changed",
            EventBody::AppRelaunched { .. } => "app_relaunched",
            EventBody::WorkerJoined { .. } => "worker_joined",
            EventBody::WorkerLost { .. } => "worker_lost",
            EventBody::LeaderChanged { .. } => "leader_changed",
        }
    }

    /// The app the event is about, if any.
    pub fn app_id(&self) -> Option<&AppId> {
        match self {
            EventBody::AppStateChanged { app_id, .. } | EventBody::AppRelaunched { app_id, .. } => {
                Some(app_id)
            }
            _ => None,
        }
    }

    /// The app kind the event is about, if any.
    pub fn app_kind(&self) -> Option<&str> {
        match self {
            EventBody::AppStateChanged { kind, .. } | EventBody::AppRelaunched { kind, .. } => {
                Some(kind)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn events_serialize_flat_with_a_type_tag() {
        let e = Event {
            seq: 7,
            at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
            body: EventBody::AppStateChanged {
                app_id: AppId("app-1".into()),
                name: "n".into(),
                kind: "process".into(),
                old_state: Some(AppState::Running),
                new_state: AppState::Finished,
                attempt: 1,
                worker_id: Some(WorkerId("w1".into())),
                message: None,
            },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "app_state_changed");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["old_state"], "RUNNING");
        assert_eq!(v["new_state"], "FINISHED");
        assert_eq!(v["app_id"], "app-1");
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.body.type_name(), "app_state_changed");
        assert_eq!(back.body.app_kind(), Some("process"));
    }
}
