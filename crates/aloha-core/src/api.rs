//! The JSON shapes of the REST API, shared by the master (which serves them) and `alohactl`
//! (which reads them). Apps are served as [`crate::App`] itself.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::app::{App, AppId};
use crate::worker::WorkerId;

/// Every error response: `{"error": "..."}` plus, on a standby, where the leader is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, one line.
    pub error: String,
    /// The leader's HTTP address, when the request went to a standby.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

/// `GET /api/v1/apps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppList {
    /// Apps, newest first.
    pub apps: Vec<App>,
    /// The cursor for the next page (pass it as `after`), or null on the last page.
    #[serde(default)]
    pub next: Option<AppId>,
}

/// One worker in `GET /api/v1/workers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerInfo {
    /// Id.
    pub id: WorkerId,
    /// Its WorkerService address.
    pub address: String,
    /// Health, or `DRAINING`/`DRAINED` for an ALIVE worker being drained.
    pub state: crate::worker::WorkerStatus,
    /// The drain's deadline, while it is drained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_deadline: Option<DateTime<Utc>>,
    /// Total cores.
    pub cores: u32,
    /// Cores held by apps.
    pub cores_used: u32,
    /// Total memory, MiB.
    pub memory_mb: u64,
    /// Memory held by apps, MiB.
    pub memory_used_mb: u64,
    /// Last heartbeat.
    pub last_heartbeat: DateTime<Utc>,
    /// Apps bound to it (LAUNCHING, RUNNING or UNKNOWN).
    pub apps: Vec<AppId>,
    /// Kinds its plugins provide.
    pub kinds: Vec<String>,
    /// Plugins that failed to load there.
    #[serde(default)]
    pub plugin_errors: Vec<String>,
}

/// `GET /api/v1/workers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerList {
    /// Workers, by id.
    pub workers: Vec<WorkerInfo>,
}

/// A master's role in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    /// The leader, scheduling.
    Alive,
    /// Waiting to be elected.
    Standby,
    /// Elected, reading persisted state; submissions are queued but nothing is placed yet.
    Recovering,
}

/// `GET /api/v1/cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterInfo {
    /// This master's role.
    pub role: Role,
    /// The leader's HTTP address, when known.
    pub leader: Option<String>,
    /// The leader's epoch (fencing token); 0 when unknown.
    pub epoch: u64,
    /// This master's own HTTP address.
    pub address: String,
    /// Masters seen in the cluster (HA mode), including this one.
    #[serde(default)]
    pub members: Vec<String>,
    /// `embedded` (redb) or `etcd`.
    pub store: String,
    /// Set while this master refuses to lead because its state store went back in time (etcd
    /// restored from a backup): what it saw. Cleared by `POST /api/v1/cluster/accept-restore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusing_to_lead: Option<String>,
}

/// A schedule as the API serves it: the record, its state and its next nominal times (the
/// states of `recent_runs` filled in from the apps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleInfo {
    /// The record.
    #[serde(flatten)]
    pub schedule: crate::schedules::Schedule,
    /// `ACTIVE`, `PAUSED` or `ENDED`.
    pub state: crate::schedules::ScheduleState,
    /// The next 5 nominal times.
    pub next_runs: Vec<chrono::DateTime<chrono::Utc>>,
}

/// The body of `GET /api/v1/schedules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleList {
    /// A page of schedules, newest first.
    pub schedules: Vec<ScheduleInfo>,
    /// The cursor for the next page (`?after=`), or null on the last page.
    pub next: Option<crate::schedules::ScheduleId>,
}
