//! Schedules: what a client asks for (`POST /api/v1/schedules`), what the master keeps and
//! persists, and the policies a firing follows. The rules that fire them live in
//! [`crate::cluster`] (`cluster/schedules.rs`); the time generation in [`crate::timetable`].

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::app::{AppId, Restart, SubmitRequest, MAX_NAME_LEN};
use crate::state::AppState;
use crate::timetable::{Timetable, TimetableSpec};

/// Runs kept in a schedule's `recent_runs`.
pub const RECENT_RUNS: usize = 20;
/// Largest accepted `max_queued`.
pub const MAX_QUEUED_LIMIT: u32 = 10_000;
/// Most nominal times one backfill may cover.
pub const MAX_BACKFILL: usize = 10_000;
/// Longest accepted `misfire_grace`.
pub const MAX_MISFIRE_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// A schedule id, `sched-<yyyymmddhhmmss>-<seq>`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct ScheduleId(pub String);

impl ScheduleId {
    /// The id of the `seq`-th schedule, created at `at`.
    pub fn new(seq: u64, at: DateTime<Utc>) -> ScheduleId {
        ScheduleId(format!("sched-{}-{seq:04}", at.format("%Y%m%d%H%M%S")))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ScheduleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a run does when an earlier run of the same schedule has not ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The run is not created (counted in `skipped`).
    #[default]
    Skip,
    /// The run waits until the earlier ones ended, in nominal order; at most `max_queued` wait,
    /// later ones are skipped.
    Queue,
    /// The earlier runs are killed; this one starts when they ended.
    CancelPrevious,
    /// Runs overlap.
    Allow,
}

/// What happens to nominal times that could not fire within `misfire_grace` (the master was
/// down, failing over or overloaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// Every missed time fires, oldest first.
    RunAll,
    /// Only the most recent missed time fires, and only when no time due with it is on time;
    /// the others are counted in `missed`.
    #[default]
    RunLatest,
    /// None fires; all are counted in `missed`.
    Skip,
}

/// A schedule's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScheduleState {
    /// Firing.
    Active,
    /// Paused: nominal times pass without runs.
    Paused,
    /// No nominal time is left (`end_at`) and its last run ended.
    Ended,
}

impl ScheduleState {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleState::Active => "ACTIVE",
            ScheduleState::Paused => "PAUSED",
            ScheduleState::Ended => "ENDED",
        }
    }
}

impl fmt::Display for ScheduleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}
fn default_cores() -> i64 {
    1
}
fn default_memory_mb() -> i64 {
    256
}
fn default_retry_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(300)
}
fn default_max_queued() -> u32 {
    100
}
fn default_misfire_grace() -> Duration {
    Duration::from_secs(10)
}

/// The app every run of a schedule is made from: a submission without its name (a run is named
/// `<schedule name>@<nominal time>`). On-demand runs are not offered: a run must survive a
/// failover to be run exactly once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppTemplate {
    /// The plugin kind.
    pub kind: String,
    /// The plugin spec.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// Cores.
    #[serde(default = "default_cores")]
    pub cores: i64,
    /// Memory, MiB.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: i64,
    /// Relaunches allowed.
    #[serde(default)]
    pub max_retries: i64,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Max runtime of an attempt.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, example = "30s")]
    pub max_runtime: Option<Duration>,
    /// Restart policy.
    #[serde(default)]
    pub restart: Restart,
    /// First relaunch pause.
    #[serde(default = "default_retry_backoff", with = "humantime_serde")]
    #[schema(value_type = String, example = "1s")]
    pub retry_backoff: Duration,
    /// Longest relaunch pause.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    #[schema(value_type = String, example = "1s")]
    pub max_backoff: Duration,
}

impl AppTemplate {
    /// The submission of the run named `name`, in `namespace`.
    pub fn request(&self, name: String, namespace: &str) -> SubmitRequest {
        SubmitRequest {
            name,
            namespace: namespace.to_string(),
            kind: self.kind.clone(),
            spec: self.spec.clone(),
            cores: self.cores,
            memory_mb: self.memory_mb,
            max_retries: self.max_retries,
            labels: self.labels.clone(),
            max_runtime: self.max_runtime,
            restart: self.restart,
            retry_backoff: self.retry_backoff,
            max_backoff: self.max_backoff,
            on_demand: false,
            libs: Vec::new(),
        }
    }
}

/// The body of `POST /api/v1/schedules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// Name; runs are named `<name>@<nominal time>`.
    pub name: String,
    /// The namespace of the schedule and its runs (default `default`); it must exist and
    /// cannot be changed later.
    #[serde(default = "crate::namespace::default_namespace")]
    pub namespace: String,
    /// The runs' template.
    pub app: AppTemplate,
    /// A cron expression; exactly one of `cron` and `every`.
    #[serde(default)]
    pub cron: Option<String>,
    /// A fixed period (at least 1s) from `start_at`.
    #[serde(default, with = "humantime_serde")]
    #[schema(value_type = Option<String>, example = "30s")]
    pub every: Option<Duration>,
    /// IANA zone for `cron` (default UTC).
    #[serde(default)]
    pub time_zone: Option<String>,
    /// First possible nominal time (default: creation). In the past: compensating runs.
    #[serde(default)]
    pub start_at: Option<DateTime<Utc>>,
    /// No nominal time at or after it.
    #[serde(default)]
    pub end_at: Option<DateTime<Utc>>,
    /// Overlap policy.
    #[serde(default)]
    pub overlap: Overlap,
    /// Most runs waiting under `overlap: queue`.
    #[serde(default = "default_max_queued")]
    pub max_queued: u32,
    /// Misfire policy.
    #[serde(default)]
    pub misfire: Misfire,
    /// How late a nominal time may fire and still be on time.
    #[serde(default = "default_misfire_grace", with = "humantime_serde")]
    #[schema(value_type = String, example = "1s")]
    pub misfire_grace: Duration,
    /// Largest per-schedule offset added to every nominal time.
    #[serde(default, with = "humantime_serde")]
    #[schema(value_type = String, example = "1s")]
    pub jitter: Duration,
    /// Created paused.
    #[serde(default)]
    pub paused: bool,
}

/// The fields of a [`ScheduleRequest`] as a stored schedule carries them, for the API
/// description only: the same fields, but without the request's "no other field" rule, which
/// would forbid the record's own fields beside them. A test keeps the two in step.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub struct ScheduleFields {
    /// Name; runs are named `<name>@<nominal time>`.
    name: String,
    /// The namespace of the schedule and its runs.
    namespace: String,
    /// The runs' template.
    app: AppTemplate,
    /// A cron expression; exactly one of `cron` and `every`.
    cron: Option<String>,
    /// A fixed period (at least 1s) from `start_at`.
    #[schema(value_type = Option<String>, example = "30s")]
    every: Option<Duration>,
    /// IANA zone for `cron` (default UTC).
    time_zone: Option<String>,
    /// First possible nominal time.
    start_at: Option<DateTime<Utc>>,
    /// No nominal time at or after it.
    end_at: Option<DateTime<Utc>>,
    /// Overlap policy.
    overlap: Overlap,
    /// Most runs waiting under `overlap: queue`.
    max_queued: u32,
    /// Misfire policy.
    misfire: Misfire,
    /// How late a nominal time may fire and still be on time.
    #[schema(value_type = String, example = "10s")]
    misfire_grace: Duration,
    /// Largest per-schedule offset added to every nominal time.
    #[schema(value_type = String, example = "0s")]
    jitter: Duration,
    /// Paused.
    paused: bool,
}

impl ScheduleRequest {
    /// Checks the fields that do not need the cluster (the kind is checked by the cluster) and
    /// builds the timetable.
    pub fn validate(
        &self,
        id: &ScheduleId,
        created_at: DateTime<Utc>,
    ) -> Result<Timetable, String> {
        if self.name.trim().is_empty() {
            return Err("name must not be empty".into());
        }
        if self.name.len() > MAX_NAME_LEN {
            return Err(format!("name is longer than {MAX_NAME_LEN} bytes"));
        }
        crate::namespace::validate_name(&self.namespace)?;
        if self.max_queued > MAX_QUEUED_LIMIT {
            return Err(format!(
                "max_queued must be at most {MAX_QUEUED_LIMIT} (got {})",
                self.max_queued
            ));
        }
        if self.misfire_grace > MAX_MISFIRE_GRACE {
            return Err("misfire_grace must be at most 7 days".into());
        }
        Timetable::new(&self.timetable_spec(), id.as_str(), created_at)
    }

    /// The time rule of the request.
    pub fn timetable_spec(&self) -> TimetableSpec {
        TimetableSpec {
            cron: self.cron.clone(),
            every: self.every,
            time_zone: self.time_zone.clone(),
            start_at: self.start_at,
            end_at: self.end_at,
            jitter: self.jitter,
        }
    }
}

/// `PATCH /api/v1/schedules/{id}`: any subset of the fields. `null` clears an optional field
/// (`cron`, `every`, `time_zone`, `end_at`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchedulePatch {
    /// Name.
    pub name: Option<String>,
    /// Template (replaced as a whole).
    pub app: Option<AppTemplate>,
    /// Cron.
    #[serde(default, deserialize_with = "some")]
    pub cron: Option<Option<String>>,
    /// Every.
    #[serde(default, deserialize_with = "some_duration")]
    #[schema(value_type = Option<String>)]
    pub every: Option<Option<Duration>>,
    /// Zone.
    #[serde(default, deserialize_with = "some")]
    pub time_zone: Option<Option<String>>,
    /// Start.
    pub start_at: Option<DateTime<Utc>>,
    /// End.
    #[serde(default, deserialize_with = "some")]
    pub end_at: Option<Option<DateTime<Utc>>>,
    /// Overlap.
    pub overlap: Option<Overlap>,
    /// Max queued.
    pub max_queued: Option<u32>,
    /// Misfire.
    pub misfire: Option<Misfire>,
    /// Grace.
    #[serde(default, with = "humantime_serde")]
    #[schema(value_type = Option<String>)]
    pub misfire_grace: Option<Duration>,
    /// Jitter.
    #[serde(default, with = "humantime_serde")]
    #[schema(value_type = Option<String>)]
    pub jitter: Option<Duration>,
    /// Paused.
    pub paused: Option<bool>,
}

/// A present field, `null` included, as `Some`.
fn some<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

fn some_duration<'de, D>(d: D) -> Result<Option<Option<Duration>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    humantime_serde::deserialize::<Option<Duration>, D>(d).map(Some)
}

impl SchedulePatch {
    /// The request `current` becomes with this patch applied. Giving `cron` clears `every` and
    /// the other way round, unless both are given.
    pub fn apply(&self, current: &ScheduleRequest) -> ScheduleRequest {
        let mut r = current.clone();
        if let Some(v) = &self.name {
            r.name = v.clone();
        }
        if let Some(v) = &self.app {
            r.app = v.clone();
        }
        match (&self.cron, &self.every) {
            (Some(c), Some(e)) => {
                r.cron = c.clone();
                r.every = *e;
            }
            (Some(c), None) => {
                r.cron = c.clone();
                if c.is_some() {
                    r.every = None;
                }
            }
            (None, Some(e)) => {
                r.every = *e;
                if e.is_some() {
                    r.cron = None;
                }
            }
            (None, None) => {}
        }
        if let Some(v) = &self.time_zone {
            r.time_zone = v.clone();
        }
        if let Some(v) = self.start_at {
            r.start_at = Some(v);
        }
        if let Some(v) = self.end_at {
            r.end_at = v;
        }
        if let Some(v) = self.overlap {
            r.overlap = v;
        }
        if let Some(v) = self.max_queued {
            r.max_queued = v;
        }
        if let Some(v) = self.misfire {
            r.misfire = v;
        }
        if let Some(v) = self.misfire_grace {
            r.misfire_grace = v;
        }
        if let Some(v) = self.jitter {
            r.jitter = v;
        }
        if let Some(v) = self.paused {
            r.paused = v;
        }
        r
    }
}

/// A schedule's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Counters {
    /// Runs created (backfills and triggers included).
    pub runs: u64,
    /// Nominal times without a run because of `overlap` (or a pause).
    pub skipped: u64,
    /// Nominal times without a run because they could not fire in time (`misfire`).
    pub missed: u64,
}

/// One of a schedule's latest runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecentRun {
    /// The run's app.
    pub app_id: AppId,
    /// Its nominal time.
    pub scheduled_at: DateTime<Utc>,
    /// Its state (filled in when served; not stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<AppState>,
}

/// A schedule as the master keeps and persists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Schedule {
    /// Id.
    pub id: ScheduleId,
    /// Creation sequence number.
    pub seq: u64,
    /// The request as it is now (creation plus patches), `start_at` resolved.
    #[serde(flatten)]
    #[schema(value_type = ScheduleFields)]
    pub spec: ScheduleRequest,
    /// Whether its last nominal time passed and its runs ended.
    #[serde(default)]
    pub ended: bool,
    /// Creation time: nominal times before it are compensating runs (never misfires).
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The latest nominal time handled (fired, queued, skipped or missed): the schedule's
    /// position, written in the same transaction as the runs it created.
    #[serde(default)]
    pub last_scheduled_at: Option<DateTime<Utc>>,
    /// Counters.
    #[serde(default)]
    pub counters: Counters,
    /// The latest runs, newest last.
    #[serde(default)]
    #[schema(value_type = Vec<RecentRun>)]
    pub recent_runs: VecDeque<RecentRun>,
    /// Nominal times waiting for earlier runs to end (`queue`, `cancel_previous`), oldest
    /// first.
    #[serde(default)]
    #[schema(value_type = Vec<DateTime<Utc>>)]
    pub pending: VecDeque<DateTime<Utc>>,
}

impl Schedule {
    /// The state.
    pub fn state(&self) -> ScheduleState {
        if self.ended {
            ScheduleState::Ended
        } else if self.spec.paused {
            ScheduleState::Paused
        } else {
            ScheduleState::Active
        }
    }

    /// The name of the run for `nominal`.
    pub fn run_name(&self, nominal: DateTime<Utc>) -> String {
        format!(
            "{}@{}",
            self.spec.name,
            nominal.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        )
    }

    /// Remembers a new run.
    pub fn remember(&mut self, app_id: AppId, scheduled_at: DateTime<Utc>) {
        self.counters.runs += 1;
        self.recent_runs.push_back(RecentRun {
            app_id,
            scheduled_at,
            state: None,
        });
        while self.recent_runs.len() > RECENT_RUNS {
            self.recent_runs.pop_front();
        }
    }
}

#[cfg(test)]
mod schema_tests {
    use utoipa::PartialSchema;

    fn properties(schema: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>) -> Vec<String> {
        let v = serde_json::to_value(schema).unwrap();
        let mut p: Vec<String> = v["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        p.sort();
        p
    }

    #[test]
    fn the_documented_fields_of_a_schedule_are_those_of_its_request() {
        assert_eq!(
            properties(super::ScheduleFields::schema()),
            properties(super::ScheduleRequest::schema())
        );
    }
}
