//! Events: every app state change, relaunch, worker join/loss and leadership change, numbered.
//!
//! Events are persisted in the same store transaction as the change they describe, so a crash
//! can never keep one without the other; `seq` is contiguous and increasing per cluster. They
//! are what listener plugins receive (as this JSON) and what `GET /api/v1/events` streams.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::Role;
use crate::app::{App, AppId};
use crate::schedules::ScheduleId;
use crate::state::AppState;
use crate::worker::{WorkerId, WorkerRecord, WorkerState};

/// One event as stored, streamed and handed to listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// A terminal app was removed by the retention (`--retain-finished`,
    /// `--retain-finished-for`); its id now answers 404 "expired".
    #[serde(rename = "app.expired")]
    AppExpired {
        /// App id.
        app_id: AppId,
        /// App name.
        name: String,
        /// App kind.
        kind: String,
        /// The terminal state it ended in.
        state: AppState,
    },
    /// A schedule was created.
    #[serde(rename = "schedule.created")]
    ScheduleCreated {
        /// Schedule id.
        schedule_id: ScheduleId,
        /// Its name.
        name: String,
    },
    /// A schedule was changed (`PATCH`); the change applies to its next run.
    #[serde(rename = "schedule.updated")]
    ScheduleUpdated {
        /// Schedule id.
        schedule_id: ScheduleId,
        /// Its name.
        name: String,
    },
    /// A schedule created a run.
    #[serde(rename = "schedule.fired")]
    ScheduleFired {
        /// Schedule id.
        schedule_id: ScheduleId,
        /// Its name.
        name: String,
        /// The run's nominal time.
        scheduled_at: DateTime<Utc>,
        /// The run.
        app_id: AppId,
    },
    /// A nominal time got no run because of the overlap policy (or a pause).
    #[serde(rename = "schedule.skipped")]
    ScheduleSkipped {
        /// Schedule id.
        schedule_id: ScheduleId,
        /// Its name.
        name: String,
        /// The first nominal time skipped.
        scheduled_at: DateTime<Utc>,
        /// How many nominal times (from `scheduled_at` on) this event counts.
        count: u64,
        /// Why.
        message: String,
    },
    /// Nominal times could not fire within `misfire_grace` and got no run (misfire policy).
    #[serde(rename = "schedule.missed")]
    ScheduleMissed {
        /// Schedule id.
        schedule_id: ScheduleId,
        /// Its name.
        name: String,
        /// The first nominal time missed.
        scheduled_at: DateTime<Utc>,
        /// How many.
        count: u64,
    },
    /// A schedule was paused.
    #[serde(rename = "schedule.paused")]
    SchedulePaused {
        /// Schedule id.
        schedule_id: ScheduleId,
        /// Its name.
        name: String,
    },
    /// A schedule was resumed.
    #[serde(rename = "schedule.resumed")]
    ScheduleResumed {
        /// Schedule id.
        schedule_id: ScheduleId,
        /// Its name.
        name: String,
    },
    /// A schedule has no nominal time left and its last run ended.
    #[serde(rename = "schedule.ended")]
    ScheduleEnded {
        /// Schedule id.
        schedule_id: ScheduleId,
        /// Its name.
        name: String,
    },
    /// A schedule was deleted (its runs are left alone).
    #[serde(rename = "schedule.deleted")]
    ScheduleDeleted {
        /// Schedule id.
        schedule_id: ScheduleId,
        /// Its name.
        name: String,
    },
    /// An admin created or changed a namespace (`PUT /api/v1/namespaces/{name}`).
    #[serde(rename = "namespace.updated")]
    NamespaceUpdated {
        /// Its name.
        namespace: String,
        /// Its quota as it is now.
        quota: crate::namespace::Quota,
        /// Its weight as it is now.
        weight: u32,
    },
    /// An admin deleted a namespace.
    #[serde(rename = "namespace.deleted")]
    NamespaceDeleted {
        /// Its name.
        namespace: String,
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
            EventBody::AppExpired { .. } => "app.expired",
            EventBody::ScheduleCreated { .. } => "schedule.created",
            EventBody::ScheduleUpdated { .. } => "schedule.updated",
            EventBody::ScheduleFired { .. } => "schedule.fired",
            EventBody::ScheduleSkipped { .. } => "schedule.skipped",
            EventBody::ScheduleMissed { .. } => "schedule.missed",
            EventBody::SchedulePaused { .. } => "schedule.paused",
            EventBody::ScheduleResumed { .. } => "schedule.resumed",
            EventBody::ScheduleEnded { .. } => "schedule.ended",
            EventBody::ScheduleDeleted { .. } => "schedule.deleted",
            EventBody::NamespaceUpdated { .. } => "namespace.updated",
            EventBody::NamespaceDeleted { .. } => "namespace.deleted",
        }
    }

    /// Every `type` tag.
    pub const TYPES: [&'static str; 17] = [
        "app_state_changed",
        "app_relaunched",
        "worker_joined",
        "worker_lost",
        "leader_changed",
        "app.expired",
        "schedule.created",
        "schedule.updated",
        "schedule.fired",
        "schedule.skipped",
        "schedule.missed",
        "schedule.paused",
        "schedule.resumed",
        "schedule.ended",
        "schedule.deleted",
        "namespace.updated",
        "namespace.deleted",
    ];

    /// The schedule the event is about, if any.
    pub fn schedule_id(&self) -> Option<&ScheduleId> {
        match self {
            EventBody::ScheduleCreated { schedule_id, .. }
            | EventBody::ScheduleUpdated { schedule_id, .. }
            | EventBody::ScheduleFired { schedule_id, .. }
            | EventBody::ScheduleSkipped { schedule_id, .. }
            | EventBody::ScheduleMissed { schedule_id, .. }
            | EventBody::SchedulePaused { schedule_id, .. }
            | EventBody::ScheduleResumed { schedule_id, .. }
            | EventBody::ScheduleEnded { schedule_id, .. }
            | EventBody::ScheduleDeleted { schedule_id, .. } => Some(schedule_id),
            _ => None,
        }
    }

    /// The app the event is about, if any.
    pub fn app_id(&self) -> Option<&AppId> {
        match self {
            EventBody::AppStateChanged { app_id, .. }
            | EventBody::AppRelaunched { app_id, .. }
            | EventBody::AppExpired { app_id, .. } => Some(app_id),
            _ => None,
        }
    }

    /// The app kind the event is about, if any.
    pub fn app_kind(&self) -> Option<&str> {
        match self {
            EventBody::AppStateChanged { kind, .. }
            | EventBody::AppRelaunched { kind, .. }
            | EventBody::AppExpired { kind, .. } => Some(kind),
            _ => None,
        }
    }
}

/// The events a change of one app makes: a state change (or the submission, when there was no
/// old record) and, for a move to RELAUNCHING, a relaunch. Changes that keep the state (a new
/// wait message, details) make none.
pub fn app_events(old: Option<&App>, new: &App) -> Vec<EventBody> {
    let old_state = old.map(|a| a.state);
    if old_state == Some(new.state) {
        return Vec::new();
    }
    let mut out = vec![EventBody::AppStateChanged {
        app_id: new.id.clone(),
        name: new.name.clone(),
        kind: new.kind.clone(),
        old_state,
        new_state: new.state,
        attempt: new.attempt,
        worker_id: new.worker_id.clone(),
        message: new.message.clone(),
    }];
    if new.state == AppState::Relaunching {
        out.push(EventBody::AppRelaunched {
            app_id: new.id.clone(),
            name: new.name.clone(),
            kind: new.kind.clone(),
            attempt: new.attempt,
            retries: new.retries,
            worker_id: new.worker_id.clone(),
            message: new.message.clone(),
        });
    }
    out
}

/// The events a change of one worker record makes: a join for every (re-)registration, a
/// loss when it is declared dead.
pub fn worker_events(old: Option<&WorkerRecord>, new: &WorkerRecord) -> Vec<EventBody> {
    let joined = new.state == WorkerState::Alive
        && old
            .is_none_or(|o| o.state != WorkerState::Alive || o.registered_at != new.registered_at);
    let lost = new.state == WorkerState::Dead && old.is_none_or(|o| o.state != WorkerState::Dead);
    if joined {
        vec![EventBody::WorkerJoined {
            worker_id: new.id.clone(),
            address: new.address.clone(),
            cores: new.cores,
            memory_mb: new.memory_mb,
        }]
    } else if lost {
        vec![EventBody::WorkerLost {
            worker_id: new.id.clone(),
            message: "declared dead: no heartbeat within the worker timeout".into(),
        }]
    } else {
        Vec::new()
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

    fn app() -> App {
        let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let req = serde_json::from_value(
            serde_json::json!({"name": "n", "kind": "process", "max_retries": 1}),
        )
        .unwrap();
        App::submitted(AppId("app-1".into()), 1, req, at)
    }

    #[test]
    fn app_changes_make_state_and_relaunch_events() {
        let at = Utc.timestamp_opt(1_700_000_001, 0).unwrap();
        let a0 = app();
        let e = app_events(None, &a0);
        assert!(matches!(
            &e[..],
            [EventBody::AppStateChanged {
                old_state: None,
                new_state: AppState::Submitted,
                ..
            }]
        ));
        let mut a1 = a0.clone();
        a1.message = Some("waiting".into());
        assert!(
            app_events(Some(&a0), &a1).is_empty(),
            "a message alone is no event"
        );
        a1.transition(AppState::Launching, at, None).unwrap();
        a1.transition(AppState::Running, at, None).unwrap();
        let mut a2 = a1.clone();
        a2.lose("worker w1 lost", at).unwrap();
        let e = app_events(Some(&a1), &a2);
        assert_eq!(e.len(), 2);
        assert!(matches!(
            &e[0],
            EventBody::AppStateChanged {
                old_state: Some(AppState::Running),
                new_state: AppState::Relaunching,
                attempt: 1,
                ..
            }
        ));
        assert!(matches!(
            &e[1],
            EventBody::AppRelaunched {
                attempt: 1,
                retries: 1,
                ..
            }
        ));
    }

    #[test]
    fn worker_registrations_join_and_deaths_lose() {
        let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let w = WorkerRecord {
            id: WorkerId("w1".into()),
            address: "a:1".into(),
            cores: 2,
            memory_mb: 10,
            kinds: vec![],
            state: WorkerState::Alive,
            registered_at: at,
            last_heartbeat: at,
            plugin_errors: vec![],
            dead_since: None,
            drain: None,
        };
        assert!(matches!(
            worker_events(None, &w)[..],
            [EventBody::WorkerJoined { .. }]
        ));
        assert!(worker_events(Some(&w), &w).is_empty());
        let mut again = w.clone();
        again.registered_at = at + chrono::Duration::seconds(5);
        assert_eq!(
            worker_events(Some(&w), &again).len(),
            1,
            "a re-registration joins again"
        );
        let mut dead = w.clone();
        dead.state = WorkerState::Dead;
        assert!(matches!(
            worker_events(Some(&w), &dead)[..],
            [EventBody::WorkerLost { .. }]
        ));
        assert!(worker_events(Some(&dead), &dead).is_empty());
    }
}
