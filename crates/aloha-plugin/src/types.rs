//! The payloads that cross the boundary as JSON: what a plugin is given ([`AppContext`]) and what
//! it reports ([`ExitState`], details). Both sides serialize them with these very types, so the
//! wire format is whatever serde makes of them; the tests pin it.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// How an app ended, from the plugin's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExitKind {
    /// It ran to completion successfully (for a process: exit code 0). Serialized `"FINISHED"`.
    Finished,
    /// It ended unsuccessfully on its own (non-zero exit, crash, lost). Serialized `"FAILED"`.
    Failed,
    /// It was stopped because the host asked for it (`shutdown`). Serialized `"KILLED"`.
    Killed,
}

/// The one report a plugin makes when an app it started has ended (Aloha's `ExitState`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitState {
    /// The exit code (for a process killed by signal N, `128 + N`, as shells report it).
    pub code: i32,
    /// How it ended.
    pub kind: ExitKind,
    /// A one-line human-readable explanation, e.g. `"exited with code 3"`.
    #[serde(default)]
    pub message: String,
}

impl ExitState {
    /// A successful end with `code` (normally 0).
    pub fn finished(code: i32, message: impl Into<String>) -> Self {
        ExitState {
            code,
            kind: ExitKind::Finished,
            message: message.into(),
        }
    }

    /// An unsuccessful end.
    pub fn failed(code: i32, message: impl Into<String>) -> Self {
        ExitState {
            code,
            kind: ExitKind::Failed,
            message: message.into(),
        }
    }

    /// An end caused by a shutdown request.
    pub fn killed(code: i32, message: impl Into<String>) -> Self {
        ExitState {
            code,
            kind: ExitKind::Killed,
            message: message.into(),
        }
    }
}

/// Everything a plugin learns about the app it is asked to run; handed to
/// [`Application::create`](crate::Application::create). It replaces the seed's
/// `withDescription` / `withApplicationDir` / `withAlohaConf` setters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppContext {
    /// The app's description as JSON, the shape of `aloha_core::AppDescription`: `id`, `name`,
    /// `kind`, `spec` (the plugin-specific settings from the submission), `cores`, `memory_mb`,
    /// `attempt` and `labels`, and when they apply `schedule_id` and `scheduled_at` (a
    /// schedule's run: the schedule and the run's nominal time, RFC 3339 UTC) and `libs` (the
    /// submission's libraries, paths or URLs). Kept as JSON so this crate does not depend on the domain crate and
    /// fields added there reach plugins without an ABI change.
    pub description: serde_json::Value,
    /// A directory that belongs to this attempt of the app: it exists when `create` is called,
    /// the plugin may write logs and state there, and the worker keeps it after the app ends.
    pub app_dir: PathBuf,
    /// The worker's configuration table for this plugin kind (`[plugins.<kind>]`), `{}` if the
    /// worker has none.
    #[serde(default = "empty_object")]
    pub conf: serde_json::Value,
    /// The host's process supervisor (`aloha-supervise`, an absolute path), if it has one.
    /// Plugins that start processes should start them through it (`aloha-supervise <host pid>
    /// -- <program> [args...]`, as the leader of a new process group): it runs the program as
    /// its child and, should the host die, kills the whole group, so that no process of the app
    /// outlives a killed worker. `None` when the host has none (an older host, or a worker
    /// installed without it): start the program directly then. Absent from the JSON when
    /// `None`, so hosts and plugins that predate it read each other unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor: Option<PathBuf>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

impl AppContext {
    /// A context with an empty `conf`.
    pub fn new(description: serde_json::Value, app_dir: impl Into<PathBuf>) -> Self {
        AppContext {
            description,
            app_dir: app_dir.into(),
            conf: empty_object(),
            supervisor: None,
        }
    }

    /// The same context with `conf` as the plugin configuration.
    pub fn with_conf(mut self, conf: serde_json::Value) -> Self {
        self.conf = conf;
        self
    }

    /// The same context with `supervisor` as the host's process supervisor.
    pub fn with_supervisor(mut self, supervisor: Option<PathBuf>) -> Self {
        self.supervisor = supervisor;
        self
    }

    /// The app id (`description.id`), if the description has a string there.
    pub fn app_id(&self) -> Option<&str> {
        self.description.get("id").and_then(|v| v.as_str())
    }

    /// The plugin-specific spec (`description.spec`); JSON `null` if the description has none.
    pub fn spec(&self) -> &serde_json::Value {
        self.description
            .get("spec")
            .unwrap_or(&serde_json::Value::Null)
    }

    /// The spec as the plugin's own type `T`: the way to read a spec, so that serde checks it
    /// and a bad one is refused in `create` with a message naming the field,
    /// `invalid spec: seconds: invalid type: string "x", expected u64` (see
    /// [`from_json`](crate::from_json)). Put `#[serde(deny_unknown_fields)]` on `T` so that a
    /// misspelt field is refused (``invalid spec: secs: unknown field `secs`, expected
    /// `seconds` ``) rather than silently ignored. A submission without a spec is JSON `null`,
    /// which a struct refuses; use `Option<T>` to accept it.
    pub fn spec_as<T: DeserializeOwned>(&self) -> Result<T, String> {
        crate::from_json(self.spec()).map_err(|e| format!("invalid spec: {e}"))
    }

    /// The worker's configuration for this kind ([`conf`](AppContext::conf)) as the plugin's
    /// own type `T`; errors read `invalid conf: <field>: <problem>`. The operator may set keys
    /// that only a newer version of the plugin knows, so `#[serde(default)]` fits here better
    /// than `deny_unknown_fields`.
    pub fn conf_as<T: DeserializeOwned>(&self) -> Result<T, String> {
        crate::from_json(&self.conf).map_err(|e| format!("invalid conf: {e}"))
    }

    /// The attempt number (`description.attempt`), if present.
    pub fn attempt(&self) -> Option<u64> {
        self.description.get("attempt").and_then(|v| v.as_u64())
    }

    /// The app's directory.
    pub fn app_dir(&self) -> &Path {
        &self.app_dir
    }
}

/// Something a running app reports to the host. Plugins send these through
/// [`ExitNotifier`](crate::ExitNotifier); the host receives them in the callback given to
/// `host::ApplicationPlugin::create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginEvent {
    /// The app ended. Delivered at most once per instance, and always last.
    Exit(ExitState),
    /// A plugin-provided detail about the app (e.g. `spark_app_id`), to be shown with it.
    Detail {
        /// The detail's name.
        key: String,
        /// Its value.
        value: String,
    },
}

/// The JSON body of a detail event (`{"key": .., "value": ..}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DetailPayload {
    pub key: String,
    pub value: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exit_kinds_use_the_state_names() {
        assert_eq!(
            serde_json::to_value([ExitKind::Finished, ExitKind::Failed, ExitKind::Killed]).unwrap(),
            json!(["FINISHED", "FAILED", "KILLED"])
        );
        assert!(serde_json::from_value::<ExitKind>(json!("finished")).is_err());
    }

    #[test]
    fn exit_state_wire_format_is_pinned() {
        let s = ExitState::failed(3, "exited with code 3");
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v,
            json!({"code": 3, "kind": "FAILED", "message": "exited with code 3"})
        );
        assert_eq!(serde_json::from_value::<ExitState>(v).unwrap(), s);
    }

    #[test]
    fn exit_state_message_is_optional_but_code_and_kind_are_not() {
        let s: ExitState = serde_json::from_value(json!({"code": 0, "kind": "FINISHED"})).unwrap();
        assert_eq!(s, ExitState::finished(0, ""));
        assert!(serde_json::from_value::<ExitState>(json!({"kind": "FINISHED"})).is_err());
        assert!(serde_json::from_value::<ExitState>(json!({"code": 1})).is_err());
        assert!(
            serde_json::from_value::<ExitState>(json!({"code": "1", "kind": "FAILED"})).is_err()
        );
    }

    #[test]
    fn constructors_set_the_kind() {
        assert_eq!(ExitState::finished(0, "ok").kind, ExitKind::Finished);
        assert_eq!(ExitState::failed(1, "no").kind, ExitKind::Failed);
        let k = ExitState::killed(143, "killed: operator");
        assert_eq!(
            (k.kind, k.code, k.message.as_str()),
            (ExitKind::Killed, 143, "killed: operator")
        );
    }

    #[test]
    fn context_round_trips_and_exposes_its_description() {
        let ctx = AppContext::new(
            json!({"id": "app-1", "kind": "process", "attempt": 2, "spec": {"command": ["true"]}}),
            "/data/apps/app-1/1",
        )
        .with_conf(json!({"kill_grace_ms": 10}));
        let back: AppContext = serde_json::from_slice(&serde_json::to_vec(&ctx).unwrap()).unwrap();
        assert_eq!(back, ctx);
        assert_eq!(back.app_id(), Some("app-1"));
        assert_eq!(back.attempt(), Some(2));
        assert_eq!(back.spec(), &json!({"command": ["true"]}));
        assert_eq!(back.app_dir(), Path::new("/data/apps/app-1/1"));
        assert_eq!(back.conf["kill_grace_ms"], 10);
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Spec {
        seconds: u64,
    }

    #[derive(Debug, Default, PartialEq, Deserialize)]
    #[serde(default)]
    struct Conf {
        max_seconds: Option<u64>,
    }

    #[test]
    fn spec_as_reads_the_spec_and_names_the_bad_field() {
        let ctx = |spec: serde_json::Value| AppContext::new(json!({"id": "a", "spec": spec}), "/x");
        assert_eq!(
            ctx(json!({"seconds": 3})).spec_as::<Spec>(),
            Ok(Spec { seconds: 3 })
        );
        assert_eq!(
            ctx(json!({"seconds": "x"})).spec_as::<Spec>().unwrap_err(),
            r#"invalid spec: seconds: invalid type: string "x", expected u64"#
        );
        assert_eq!(
            ctx(json!({"seconds": 1, "sec": 1}))
                .spec_as::<Spec>()
                .unwrap_err(),
            "invalid spec: sec: unknown field `sec`, expected `seconds`"
        );
        let none = AppContext::new(json!({"id": "a"}), "/x");
        assert_eq!(
            none.spec_as::<Spec>().unwrap_err(),
            "invalid spec: invalid type: null, expected struct Spec"
        );
        assert_eq!(none.spec_as::<Option<Spec>>(), Ok(None));
    }

    #[test]
    fn conf_as_reads_the_conf() {
        let ctx = AppContext::new(json!({"id": "a"}), "/x");
        assert_eq!(ctx.conf_as::<Conf>(), Ok(Conf::default()));
        let ctx = ctx.with_conf(json!({"max_seconds": 60, "newer_key": true}));
        assert_eq!(
            ctx.conf_as::<Conf>(),
            Ok(Conf {
                max_seconds: Some(60)
            })
        );
        let ctx = ctx.with_conf(json!({"max_seconds": "soon"}));
        assert_eq!(
            ctx.conf_as::<Conf>().unwrap_err(),
            r#"invalid conf: max_seconds: invalid type: string "soon", expected u64"#
        );
    }

    #[test]
    fn context_supervisor_is_optional_and_left_out_when_none() {
        let ctx = AppContext::new(json!({"id": "app-1"}), "/x");
        let v = serde_json::to_value(&ctx).unwrap();
        assert!(v.get("supervisor").is_none(), "{v}");
        let ctx = ctx.with_supervisor(Some("/opt/aloha/aloha-supervise".into()));
        let v = serde_json::to_value(&ctx).unwrap();
        assert_eq!(v["supervisor"], "/opt/aloha/aloha-supervise");
        assert_eq!(serde_json::from_value::<AppContext>(v).unwrap(), ctx);
    }

    #[test]
    fn context_without_conf_or_spec() {
        let ctx: AppContext =
            serde_json::from_value(json!({"description": {"id": 7}, "app_dir": "/x"})).unwrap();
        assert_eq!(ctx.conf, json!({}));
        assert_eq!(ctx.supervisor, None);
        assert_eq!(ctx.app_id(), None, "a non-string id is not an id");
        assert!(ctx.spec().is_null());
    }
}
