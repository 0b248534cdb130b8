//! Apps: what a client submits, what the master keeps, and the one function that changes state.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::state::AppState;
use crate::worker::WorkerId;

/// Largest accepted name, label key or label value, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Largest accepted `max_retries`.
pub const MAX_RETRIES_LIMIT: u32 = 100;
/// Most entries kept in an app's history; older entries are dropped first (the first entry,
/// SUBMITTED, is always kept).
pub const MAX_HISTORY: usize = 200;
/// Longest accepted `max_runtime`, `retry_backoff` or `max_backoff`.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);
/// How long an on-demand app is kept after it ends.
pub const ON_DEMAND_KEEP: Duration = Duration::from_secs(60);

/// What happens when an attempt ends by itself (not by a user's kill).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// The app ends with its attempt.
    #[default]
    Never,
    /// A FAILED attempt (a non-zero exit, a death by signal, the max runtime) is relaunched.
    OnFailure,
    /// Every ending attempt is relaunched: a persistent task.
    Always,
}

impl Restart {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::Never => "never",
            Restart::OnFailure => "on_failure",
            Restart::Always => "always",
        }
    }
}

impl fmt::Display for Restart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_never(r: &Restart) -> bool {
    *r == Restart::Never
}
fn default_retry_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(300)
}
fn is_default_retry_backoff(d: &Duration) -> bool {
    *d == default_retry_backoff()
}
fn is_default_max_backoff(d: &Duration) -> bool {
    *d == default_max_backoff()
}

/// A duration as the API writes it (`"1m 30s"`).
pub fn format_duration(d: Duration) -> String {
    humantime_serde::re::humantime::format_duration(d).to_string()
}

/// An app id, `app-<yyyymmddhhmmss>-<seq>`: unique across master restarts because the sequence
/// is persisted with the app.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct AppId(pub String);

impl AppId {
    /// Builds the id of the `seq`-th app, submitted at `at`.
    pub fn new(seq: u64, at: DateTime<Utc>) -> Self {
        AppId(format!("app-{}-{seq:04}", at.format("%Y%m%d%H%M%S")))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The submission sequence number the id ends with, if the id is well formed
    /// (`app-<14 digits>-<digits>`).
    pub fn seq(&self) -> Option<u64> {
        let rest = self.0.strip_prefix("app-")?;
        let (stamp, seq) = rest.split_once('-')?;
        if stamp.len() != 14 || !stamp.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        seq.parse().ok()
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A plugin spec as the master keeps it: the compact JSON text of the object the client sent.
///
/// Kept as text rather than a parsed `serde_json::Value`: a parsed one-key object costs a B-tree
/// node of about 600 bytes, the text of a typical spec under 100, and the master only ever
/// passes the spec on. It serializes as the JSON it holds (not as a string) and deserializes
/// from any JSON value.
#[derive(Clone)]
pub struct Spec(Box<serde_json::value::RawValue>);

impl PartialEq for Spec {
    fn eq(&self, other: &Spec) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Spec {}

impl Spec {
    /// The spec of `value` (compact JSON).
    pub fn new(value: &serde_json::Value) -> Spec {
        // Serializing a `Value` cannot fail, and its text is valid JSON for `RawValue`.
        let text = serde_json::to_string(value).expect("a JSON value serializes");
        Spec(serde_json::value::RawValue::from_string(text).expect("serde_json wrote valid JSON"))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The spec parsed.
    pub fn value(&self) -> serde_json::Value {
        // The text was written by serde_json from a Value: it parses.
        serde_json::from_str(self.0.get()).unwrap_or(serde_json::Value::Null)
    }

    /// Whether the spec is the JSON of `value`.
    pub fn is(&self, value: &serde_json::Value) -> bool {
        serde_json::to_string(value).is_ok_and(|t| t == self.0.get())
    }
}

impl Default for Spec {
    fn default() -> Self {
        Spec::new(&empty_object())
    }
}

impl fmt::Debug for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get())
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get())
    }
}

impl Serialize for Spec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Spec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Through `Value`, so that any deserializer works (alohactl decodes apps from a Value,
        // which `RawValue` alone refuses).
        Ok(Spec::new(&serde_json::Value::deserialize(d)?))
    }
}

/// The body of `POST /api/v1/apps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// A human-readable name; need not be unique.
    pub name: String,
    /// The plugin kind that runs the app (`process`, `spark`, ...).
    pub kind: String,
    /// Plugin-specific settings, handed to the plugin untouched. Must be a JSON object.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// Cores the app needs on one worker (at least 1).
    #[serde(default = "default_cores")]
    pub cores: i64,
    /// Memory the app needs on one worker, in MiB.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: i64,
    /// How many times the app is relaunched elsewhere when its worker is lost.
    #[serde(default)]
    pub max_retries: i64,
    /// Free-form key/value labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// An attempt running longer than this is killed and ends FAILED (`"30s"`, `"10m"`).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, example = "30s")]
    pub max_runtime: Option<Duration>,
    /// What happens when an attempt ends by itself: `never`, `on_failure`, `always`.
    #[serde(default, skip_serializing_if = "is_never")]
    pub restart: Restart,
    /// The pause before the first relaunch by the restart policy; it doubles with every
    /// relaunch, up to `max_backoff`.
    #[serde(
        default = "default_retry_backoff",
        with = "humantime_serde",
        skip_serializing_if = "is_default_retry_backoff"
    )]
    #[schema(value_type = String, example = "1s")]
    pub retry_backoff: Duration,
    /// The longest pause between relaunches.
    #[serde(
        default = "default_max_backoff",
        with = "humantime_serde",
        skip_serializing_if = "is_default_max_backoff"
    )]
    #[schema(value_type = String, example = "1s")]
    pub max_backoff: Duration,
    /// Kept only in the master's memory: never stored, not recovered after a restart or a
    /// failover, forgotten a minute after it ends.
    #[serde(default, skip_serializing_if = "is_false")]
    pub on_demand: bool,
    /// Libraries the app needs (paths or URLs), handed to the plugin in its description; what
    /// they mean is the plugin's to say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub libs: Vec<String>,
    /// The namespace the app belongs to (default `default`); it must exist.
    #[serde(
        default = "crate::namespace::default_namespace",
        skip_serializing_if = "crate::namespace::is_default_namespace"
    )]
    pub namespace: String,
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

/// Why a submission was refused. Each maps to HTTP 400 (422 for an unknown kind).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// A field is out of range or malformed.
    #[error("{0}")]
    Invalid(String),
    /// No plugin anywhere in the cluster provides the kind.
    #[error("unknown kind {kind:?}; known kinds: {known}")]
    UnknownKind {
        /// The kind asked for.
        kind: String,
        /// The kinds the cluster knows, comma-separated.
        known: String,
    },
    /// The namespace does not exist.
    #[error("namespace {0:?} does not exist; an admin creates it with PUT /api/v1/namespaces/{0}")]
    UnknownNamespace(String),
}

/// The first character of `s` that must not appear in a name or label: a control character
/// (NUL included) or a bidirectional formatting character, which makes a name display as
/// something it is not (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069).
fn unsafe_char(s: &str) -> Option<char> {
    s.chars().find(|&c| {
        c.is_control()
            || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    })
}

impl SubmitRequest {
    /// Checks every field; `known_kinds` are the kinds any worker provides or the master allows.
    pub fn validate<'a>(
        &self,
        known_kinds: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<(), SubmitError> {
        let invalid = |m: String| Err(SubmitError::Invalid(m));
        if self.name.trim().is_empty() {
            return invalid("name must not be empty".into());
        }
        if self.name.len() > MAX_NAME_LEN {
            return invalid(format!("name is longer than {MAX_NAME_LEN} bytes"));
        }
        if let Some(c) = unsafe_char(&self.name) {
            return invalid(format!(
                "name must not contain control or bidi characters (found U+{:04X})",
                c as u32
            ));
        }
        crate::namespace::validate_name(&self.namespace).map_err(SubmitError::Invalid)?;
        if self.kind.trim().is_empty() {
            return invalid("kind must not be empty".into());
        }
        if !known_kinds.clone().into_iter().any(|k| k == self.kind) {
            let mut known: Vec<&str> = known_kinds.into_iter().collect();
            known.sort_unstable();
            known.dedup();
            return Err(SubmitError::UnknownKind {
                kind: self.kind.clone(),
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
            });
        }
        if !self.spec.is_object() {
            return invalid("spec must be a JSON object".into());
        }
        if self.cores <= 0 {
            return invalid(format!("cores must be at least 1 (got {})", self.cores));
        }
        if self.cores > u32::MAX as i64 {
            return invalid(format!("cores {} is out of range", self.cores));
        }
        if self.memory_mb < 0 {
            return invalid(format!(
                "memory_mb must not be negative (got {})",
                self.memory_mb
            ));
        }
        if self.max_retries < 0 || self.max_retries > MAX_RETRIES_LIMIT as i64 {
            return invalid(format!(
                "max_retries must be between 0 and {MAX_RETRIES_LIMIT} (got {})",
                self.max_retries
            ));
        }
        for (k, v) in &self.labels {
            if k.is_empty() || k.len() > MAX_NAME_LEN || v.len() > MAX_NAME_LEN {
                return invalid(format!(
                    "label {k:?} must have a non-empty key and key and value of at most {MAX_NAME_LEN} bytes"
                ));
            }
            for (what, text) in [("key", k), ("value", v)] {
                if let Some(c) = unsafe_char(text) {
                    return invalid(format!(
                        "label {what} {k:?} must not contain control or bidi characters (found U+{:04X})",
                        c as u32
                    ));
                }
            }
        }
        if let Some(d) = self.max_runtime {
            if d.is_zero() || d > MAX_DURATION {
                return invalid(format!(
                    "max_runtime must be more than 0s and at most 366 days (got {})",
                    format_duration(d)
                ));
            }
        }
        for (name, d) in [
            ("retry_backoff", self.retry_backoff),
            ("max_backoff", self.max_backoff),
        ] {
            if d > MAX_DURATION {
                return invalid(format!(
                    "{name} must be at most 366 days (got {})",
                    format_duration(d)
                ));
            }
        }
        if self.retry_backoff > self.max_backoff {
            return invalid(format!(
                "retry_backoff ({}) must not be longer than max_backoff ({})",
                format_duration(self.retry_backoff),
                format_duration(self.max_backoff)
            ));
        }
        Ok(())
    }
}

/// One entry of an app's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    /// The state entered.
    pub state: AppState,
    /// When it was entered.
    pub at: DateTime<Utc>,
    /// Why, when there is something to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An app as the master keeps, persists and serves it.
///
/// A million may be queued, each behind an `Arc`: the rarely set strings are boxed so that the
/// allocation stays within 512 bytes (a test pins it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct App {
    /// Unique id.
    pub id: AppId,
    /// Submission sequence number: the app's place in the FIFO queue.
    pub seq: u64,
    /// Name from the submission.
    pub name: String,
    /// The namespace it belongs to.
    #[serde(default = "crate::namespace::default_namespace")]
    pub namespace: String,
    /// Plugin kind.
    pub kind: String,
    /// Plugin spec from the submission.
    #[schema(value_type = Object)]
    pub spec: Spec,
    /// Cores needed.
    pub cores: u32,
    /// Memory needed, MiB.
    pub memory_mb: u64,
    /// Relaunches allowed after worker loss.
    pub max_retries: u32,
    /// Labels from the submission.
    pub labels: BTreeMap<String, String>,
    /// Current state.
    pub state: AppState,
    /// Worker the current attempt runs on (kept after the app ends, for the record).
    pub worker_id: Option<WorkerId>,
    /// Launch attempt: 0 before the first launch, 1 for the first launch, +1 per relaunch.
    pub attempt: u32,
    /// Relaunches spent from `max_retries`.
    pub retries: u32,
    /// Exit code of the last attempt, when it exited.
    pub exit_code: Option<i32>,
    /// The latest explanation: why it waits, failed, was relaunched or killed.
    pub message: Option<String>,
    /// When the master accepted it.
    pub submitted_at: DateTime<Utc>,
    /// When the current attempt started running.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal state.
    pub finished_at: Option<DateTime<Utc>>,
    /// A kill was asked for: the app is not relaunched and ends KILLED.
    #[serde(default)]
    pub kill_requested: bool,
    /// Why the kill was asked for, passed on to the worker (and again when resent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub kill_reason: Option<Box<str>>,
    /// Plugin-reported details (e.g. `spark_app_id`).
    #[serde(default)]
    pub details: BTreeMap<String, String>,
    /// Every state the app went through.
    pub history: Vec<HistoryEntry>,
    /// The `Idempotency-Key` it was submitted with: a repeat of the same request with the same
    /// key returns this app instead of creating another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub idempotency_key: Option<Box<str>>,
    /// An attempt running longer is killed and ends FAILED.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, example = "30s")]
    pub max_runtime: Option<Duration>,
    /// The restart policy.
    #[serde(default)]
    pub restart: Restart,
    /// The first relaunch pause of the restart policy (doubling per relaunch).
    #[serde(default = "default_retry_backoff", with = "humantime_serde")]
    #[schema(value_type = String, example = "1s")]
    pub retry_backoff: Duration,
    /// The longest relaunch pause.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    #[schema(value_type = String, example = "1s")]
    pub max_backoff: Duration,
    /// Kept in memory only (see [`SubmitRequest::on_demand`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub on_demand: bool,
    /// The schedule whose run this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub schedule_id: Option<Box<str>>,
    /// The nominal time of the schedule's run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<DateTime<Utc>>,
    /// The app this one retries (`POST /api/v1/apps/{id}/retry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub retry_of: Option<Box<AppId>>,
    /// A relaunch by the restart policy waits until then before it is queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relaunch_at: Option<DateTime<Utc>>,
    /// The attempt that ran past `max_runtime` and is being killed for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runtime_exceeded: Option<u32>,
    /// The attempt being stopped because its worker's drain deadline passed (it is then
    /// relaunched elsewhere, within `max_retries`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evicted: Option<u32>,
    /// Libraries from the submission, handed to the plugin in its description.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub libs: Vec<String>,
}

/// A state change that the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("app {app}: illegal transition {from} -> {to}")]
pub struct TransitionError {
    /// The app.
    pub app: AppId,
    /// Its state.
    pub from: AppState,
    /// The refused target.
    pub to: AppState,
}

impl App {
    /// A freshly submitted app. The request must have passed [`SubmitRequest::validate`].
    pub fn submitted(id: AppId, seq: u64, req: SubmitRequest, at: DateTime<Utc>) -> App {
        App {
            id,
            seq,
            name: req.name,
            namespace: req.namespace,
            kind: req.kind,
            spec: Spec::new(&req.spec),
            // validate() bounds these, so the conversions cannot truncate.
            cores: req.cores.clamp(1, u32::MAX as i64) as u32,
            memory_mb: req.memory_mb.max(0) as u64,
            max_retries: req.max_retries.clamp(0, MAX_RETRIES_LIMIT as i64) as u32,
            labels: req.labels,
            state: AppState::Submitted,
            worker_id: None,
            attempt: 0,
            retries: 0,
            exit_code: None,
            message: None,
            submitted_at: at,
            started_at: None,
            finished_at: None,
            kill_requested: false,
            kill_reason: None,
            details: BTreeMap::new(),
            history: vec![HistoryEntry {
                state: AppState::Submitted,
                at,
                message: None,
            }],
            idempotency_key: None,
            max_runtime: req.max_runtime,
            restart: req.restart,
            retry_backoff: req.retry_backoff,
            max_backoff: req.max_backoff,
            on_demand: req.on_demand,
            schedule_id: None,
            scheduled_at: None,
            retry_of: None,
            relaunch_at: None,
            max_runtime_exceeded: None,
            evicted: None,
            libs: req.libs,
        }
    }

    /// The request that would create an app like this one (its template): what a retry or a
    /// schedule's next run copies.
    pub fn template(&self) -> SubmitRequest {
        SubmitRequest {
            name: self.name.clone(),
            kind: self.kind.clone(),
            spec: self.spec.value(),
            cores: i64::from(self.cores),
            memory_mb: i64::try_from(self.memory_mb).unwrap_or(i64::MAX),
            max_retries: i64::from(self.max_retries),
            labels: self.labels.clone(),
            max_runtime: self.max_runtime,
            restart: self.restart,
            retry_backoff: self.retry_backoff,
            max_backoff: self.max_backoff,
            on_demand: self.on_demand,
            libs: self.libs.clone(),
            namespace: self.namespace.clone(),
        }
    }

    /// Whether `req` asks for exactly this app (same template, after defaults): what an
    /// idempotent repeat of the submission must be.
    pub fn same_request(&self, req: &SubmitRequest) -> bool {
        self.name == req.name
            && self.kind == req.kind
            && self.spec.is(&req.spec)
            && i64::from(self.cores) == req.cores
            && i64::try_from(self.memory_mb).is_ok_and(|m| m == req.memory_mb)
            && i64::from(self.max_retries) == req.max_retries
            && self.labels == req.labels
            && self.max_runtime == req.max_runtime
            && self.restart == req.restart
            && self.retry_backoff == req.retry_backoff
            && self.max_backoff == req.max_backoff
            && self.on_demand == req.on_demand
            && self.libs == req.libs
            && self.namespace == req.namespace
    }

    /// The single place an app changes state: checks legality, records history and keeps the
    /// timestamps, attempt and message consistent. Moving to LAUNCHING starts a new attempt on
    /// `worker`.
    pub fn transition(
        &mut self,
        next: AppState,
        at: DateTime<Utc>,
        message: Option<String>,
    ) -> Result<(), TransitionError> {
        if !self.state.can_move_to(next) {
            return Err(TransitionError {
                app: self.id.clone(),
                from: self.state,
                to: next,
            });
        }
        match next {
            AppState::Launching => {
                self.attempt += 1;
                self.exit_code = None;
                self.started_at = None;
                self.relaunch_at = None;
            }
            AppState::Running => {
                self.started_at.get_or_insert(at);
            }
            _ => {}
        }
        if next.is_terminal() {
            self.finished_at = Some(at);
        }
        self.state = next;
        self.message = message.clone();
        self.history.push(HistoryEntry {
            state: next,
            at,
            message,
        });
        if self.history.len() > MAX_HISTORY {
            // Keep the SUBMITTED entry; drop the oldest after it.
            self.history.remove(1);
        }
        Ok(())
    }

    /// Whether a lost attempt may be relaunched: retries are left and nobody asked for a kill.
    pub fn can_relaunch(&self) -> bool {
        !self.kill_requested && self.retries < self.max_retries
    }

    /// The launch description as JSON, the shape of [`AppDescription`], written straight from
    /// the app (the spec is not parsed again).
    pub fn description_json(&self) -> String {
        #[derive(Serialize)]
        struct Borrowed<'a> {
            id: &'a AppId,
            name: &'a str,
            kind: &'a str,
            spec: &'a Spec,
            cores: u32,
            memory_mb: u64,
            attempt: u32,
            labels: &'a BTreeMap<String, String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            schedule_id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            scheduled_at: Option<DateTime<Utc>>,
            #[serde(skip_serializing_if = "<[String]>::is_empty")]
            libs: &'a [String],
        }
        // Plain data with string keys: serializing cannot fail.
        serde_json::to_string(&Borrowed {
            id: &self.id,
            name: &self.name,
            kind: &self.kind,
            spec: &self.spec,
            cores: self.cores,
            memory_mb: self.memory_mb,
            attempt: self.attempt,
            labels: &self.labels,
            schedule_id: self.schedule_id.as_deref(),
            scheduled_at: self.scheduled_at,
            libs: &self.libs,
        })
        .expect("descriptions serialize to JSON")
    }

    /// What the worker gets in a launch command.
    pub fn description(&self) -> AppDescription {
        AppDescription {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: self.kind.clone(),
            spec: self.spec.value(),
            cores: self.cores,
            memory_mb: self.memory_mb,
            attempt: self.attempt,
            labels: self.labels.clone(),
            schedule_id: self.schedule_id.as_deref().map(str::to_string),
            scheduled_at: self.scheduled_at,
            libs: self.libs.clone(),
        }
    }
}

/// The description handed to a worker and on to the plugin (Aloha's `ApplicationDescription`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppDescription {
    /// App id.
    pub id: AppId,
    /// App name.
    pub name: String,
    /// Plugin kind.
    pub kind: String,
    /// Plugin spec.
    pub spec: serde_json::Value,
    /// Cores granted.
    pub cores: u32,
    /// Memory granted, MiB.
    pub memory_mb: u64,
    /// Which attempt this is (1-based).
    pub attempt: u32,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The schedule whose run this is, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<String>,
    /// The run's nominal time (RFC 3339, UTC), if it is a schedule's run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Libraries from the submission (paths or URLs), for the plugin to use as it sees fit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub libs: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn an_app_behind_its_arc_fits_in_512_bytes() {
        // An `Arc` puts two counters before the value; mimalloc's size class above 512 bytes
        // is 640, which at a million queued apps costs 128 MiB more.
        let with_arc = std::mem::size_of::<App>() + 2 * std::mem::size_of::<usize>();
        assert!(with_arc <= 512, "Arc<App> takes {with_arc} bytes");
    }

    fn req() -> SubmitRequest {
        serde_json::from_value(serde_json::json!({
            "name": "hello", "kind": "process", "spec": {"command": ["true"]}
        }))
        .unwrap()
    }

    #[test]
    fn defaults_fill_omitted_fields() {
        let r = req();
        assert_eq!((r.cores, r.memory_mb, r.max_retries), (1, 256, 0));
        assert!(r.labels.is_empty());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let bad = serde_json::from_value::<SubmitRequest>(serde_json::json!({
            "name": "x", "kind": "process", "corez": 2
        }));
        assert!(bad.is_err());
    }

    #[test]
    fn validation_names_the_problem() {
        let kinds = ["process"];
        assert_eq!(req().validate(kinds), Ok(()));
        let mut r = req();
        r.cores = 0;
        assert!(matches!(r.validate(kinds), Err(SubmitError::Invalid(m)) if m.contains("cores")));
        let mut r = req();
        r.kind = "flonk".into();
        let err = r.validate(kinds).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown kind \"flonk\"; known kinds: process"
        );
        let mut r = req();
        r.spec = serde_json::json!([1]);
        assert!(r.validate(kinds).is_err());
        let mut r = req();
        r.name = " ".into();
        assert!(r.validate(kinds).is_err());
        let mut r = req();
        r.max_retries = -1;
        assert!(r.validate(kinds).is_err());
        let mut r = req();
        r.memory_mb = -5;
        assert!(r.validate(kinds).is_err());
    }

    #[test]
    fn ids_sort_by_time_then_sequence() {
        assert_eq!(AppId::new(7, t(0)).0, "app-20231114221320-0007");
        assert!(AppId::new(12345, t(0)).0.ends_with("-12345"));
        assert_eq!(AppId::new(12345, t(0)).seq(), Some(12345));
        assert_eq!(AppId::new(7, t(0)).seq(), Some(7));
        for bad in [
            "app-1-2",
            "app-20231114221320-",
            "x-20231114221320-1",
            "app-2023111422132a-1",
        ] {
            assert_eq!(AppId(bad.into()).seq(), None, "{bad}");
        }
    }

    #[test]
    fn transitions_keep_history_attempts_and_times() {
        let mut app = App::submitted(AppId::new(1, t(0)), 1, req(), t(0));
        app.transition(AppState::Launching, t(1), None).unwrap();
        assert_eq!(app.attempt, 1);
        app.transition(AppState::Running, t(2), None).unwrap();
        assert_eq!(app.started_at, Some(t(2)));
        app.transition(AppState::Relaunching, t(3), Some("worker lost".into()))
            .unwrap();
        app.transition(AppState::Launching, t(4), None).unwrap();
        assert_eq!(app.attempt, 2);
        assert_eq!(app.started_at, None, "a new attempt has not started yet");
        app.transition(AppState::Running, t(5), None).unwrap();
        app.transition(AppState::Finished, t(6), None).unwrap();
        assert_eq!(app.finished_at, Some(t(6)));
        let states: Vec<_> = app.history.iter().map(|h| h.state).collect();
        use AppState::*;
        assert_eq!(
            states,
            [
                Submitted,
                Launching,
                Running,
                Relaunching,
                Launching,
                Running,
                Finished
            ]
        );
        assert_eq!(app.history[3].message.as_deref(), Some("worker lost"));
    }

    #[test]
    fn illegal_transitions_change_nothing() {
        let mut app = App::submitted(AppId::new(1, t(0)), 1, req(), t(0));
        let before = app.clone();
        let err = app.transition(AppState::Running, t(1), None).unwrap_err();
        assert_eq!((err.from, err.to), (AppState::Submitted, AppState::Running));
        assert_eq!(app, before);
    }

    #[test]
    fn history_is_bounded_but_keeps_submission() {
        let mut app = App::submitted(AppId::new(1, t(0)), 1, req(), t(0));
        app.max_retries = 1000;
        for i in 0..(MAX_HISTORY as i64) {
            app.transition(AppState::Launching, t(i), None).unwrap();
            app.transition(AppState::Relaunching, t(i), None).unwrap();
        }
        assert_eq!(app.history.len(), MAX_HISTORY);
        assert_eq!(app.history[0].state, AppState::Submitted);
    }

    #[test]
    fn specs_are_kept_compact_and_round_trip() {
        let mut r = req();
        r.spec = serde_json::json!({"command": ["echo", "a b"], "env": {"X": "1"}});
        let app = App::submitted(AppId::new(1, t(0)), 1, r.clone(), t(0));
        assert_eq!(
            app.spec.as_str(),
            r#"{"command":["echo","a b"],"env":{"X":"1"}}"#
        );
        let json = serde_json::to_value(&app).unwrap();
        assert_eq!(json["spec"], r.spec, "served as JSON, not as a string");
        let back: App = serde_json::from_value(json).unwrap();
        assert_eq!(back, app);
        assert!(app.same_request(&r));
        let desc: AppDescription = serde_json::from_str(&app.description_json()).unwrap();
        assert_eq!(desc, app.description());
        assert_eq!(desc.spec, r.spec);
        let mut other = r.clone();
        other.spec = serde_json::json!({"command": ["echo"]});
        assert!(!app.same_request(&other));
        other = r.clone();
        other.cores = 2;
        assert!(!app.same_request(&other));
        other = r.clone();
        other.libs = vec!["lib/a.jar".into()];
        assert!(!app.same_request(&other));
        assert!(
            !app.description_json().contains("libs"),
            "no libs, no field"
        );
        let with_libs = App::submitted(AppId::new(2, t(0)), 2, other.clone(), t(0));
        assert!(with_libs.same_request(&other));
        assert_eq!(with_libs.template(), other);
        let desc: AppDescription = serde_json::from_str(&with_libs.description_json()).unwrap();
        assert_eq!(desc, with_libs.description());
        assert_eq!(desc.libs, ["lib/a.jar"]);
    }

    #[test]
    fn relaunch_budget() {
        let mut r = req();
        r.max_retries = 1;
        let mut app = App::submitted(AppId::new(1, t(0)), 1, r, t(0));
        assert!(app.can_relaunch());
        app.retries = 1;
        assert!(!app.can_relaunch());
        app.retries = 0;
        app.kill_requested = true;
        assert!(!app.can_relaunch());
    }
}

impl App {
    /// The pause before the next relaunch by the restart policy: `retry_backoff` doubled per
    /// relaunch already made, at most `max_backoff`.
    pub fn backoff(&self) -> Duration {
        let factor = 1u32.checked_shl(self.retries.min(31)).unwrap_or(u32::MAX);
        self.retry_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// Why the attempt running past `max_runtime` ends.
    pub fn max_runtime_message(&self) -> String {
        format!(
            "max runtime {} exceeded",
            self.max_runtime.map(format_duration).unwrap_or_default()
        )
    }

    /// Whether the current attempt is being stopped because its worker's drain ended.
    pub fn is_evicted(&self) -> bool {
        self.evicted == Some(self.attempt)
    }

    /// Whether the current attempt is being killed for running past `max_runtime`.
    pub fn over_max_runtime(&self) -> bool {
        self.max_runtime_exceeded == Some(self.attempt)
    }

    /// The current attempt ended by itself in `state` (FINISHED or FAILED; any other state is
    /// entered as it is): the restart policy relaunches it while retries are left, after the
    /// backoff; otherwise the app ends in `state`. Returns the state entered.
    pub fn end_attempt(
        &mut self,
        state: AppState,
        reason: Option<String>,
        at: DateTime<Utc>,
    ) -> Result<AppState, TransitionError> {
        let restarts = match state {
            AppState::Failed => self.restart != Restart::Never,
            AppState::Finished => self.restart == Restart::Always,
            _ => false,
        };
        if !restarts || self.kill_requested {
            self.transition(state, at, reason)?;
            return Ok(state);
        }
        let what = reason.unwrap_or_else(|| format!("attempt {} ended {state}", self.attempt));
        if self.retries >= self.max_retries {
            let message = if self.max_retries == 0 {
                format!("{what}; restart {}: max_retries is 0", self.restart)
            } else {
                format!(
                    "{what}; restart {}: all {} retries used",
                    self.restart, self.max_retries
                )
            };
            self.transition(state, at, Some(message))?;
            return Ok(state);
        }
        let pause = self.backoff();
        let message = format!(
            "{what}; restart {}: relaunching in {} (retry {} of {})",
            self.restart,
            format_duration(pause),
            self.retries + 1,
            self.max_retries
        );
        self.transition(AppState::Relaunching, at, Some(message))?;
        self.retries += 1;
        self.relaunch_at = (!pause.is_zero())
            .then(|| chrono::Duration::from_std(pause).ok().map(|p| at + p))
            .flatten();
        Ok(AppState::Relaunching)
    }

    /// The app's attempt was lost (its worker died, stopped, or no longer runs it): relaunch it
    /// while retries are left, end it KILLED if a kill was asked for, else FAILED. Returns the
    /// state entered.
    pub fn lose(&mut self, reason: &str, at: DateTime<Utc>) -> Result<AppState, TransitionError> {
        if !self.kill_requested && self.over_max_runtime() {
            let message = format!("{}; {reason}", self.max_runtime_message());
            return self.end_attempt(AppState::Failed, Some(message), at);
        }
        let (next, message) = if self.kill_requested {
            (AppState::Killed, format!("killed: {reason}"))
        } else if self.can_relaunch() {
            (
                AppState::Relaunching,
                format!(
                    "{reason}; relaunching (retry {} of {})",
                    self.retries + 1,
                    self.max_retries
                ),
            )
        } else if self.max_retries == 0 {
            (AppState::Failed, format!("{reason}; max_retries is 0"))
        } else {
            (
                AppState::Failed,
                format!("{reason}; all {} retries used", self.max_retries),
            )
        };
        self.transition(next, at, Some(message))?;
        if next == AppState::Relaunching {
            self.retries += 1;
        }
        Ok(next)
    }
}

#[cfg(test)]
mod lose_tests {
    use super::*;
    use chrono::TimeZone;

    fn running(max_retries: i64) -> App {
        let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let req: SubmitRequest = serde_json::from_value(serde_json::json!({
            "name": "x", "kind": "process", "max_retries": max_retries
        }))
        .unwrap();
        let mut app = App::submitted(AppId::new(1, at), 1, req, at);
        app.transition(AppState::Launching, at, None).unwrap();
        app.transition(AppState::Running, at, None).unwrap();
        app
    }

    #[test]
    fn lost_apps_relaunch_until_retries_run_out() {
        let at = Utc.timestamp_opt(1_700_000_100, 0).unwrap();
        let mut app = running(1);
        assert_eq!(app.lose("worker w1 lost", at), Ok(AppState::Relaunching));
        assert_eq!(app.retries, 1);
        assert_eq!(
            app.message.as_deref(),
            Some("worker w1 lost; relaunching (retry 1 of 1)")
        );
        app.transition(AppState::Launching, at, None).unwrap();
        assert_eq!(app.attempt, 2);
        assert_eq!(app.lose("worker w2 lost", at), Ok(AppState::Failed));
        assert_eq!(
            app.message.as_deref(),
            Some("worker w2 lost; all 1 retries used")
        );
    }

    #[test]
    fn a_lost_app_with_a_pending_kill_ends_killed() {
        let at = Utc.timestamp_opt(1_700_000_100, 0).unwrap();
        let mut app = running(3);
        app.kill_requested = true;
        assert_eq!(app.lose("worker w1 lost", at), Ok(AppState::Killed));
    }
}
