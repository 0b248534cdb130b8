//! The `process` spec: what a submission's `spec` may say, checked once at `create`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aloha_plugin_support::spec as check;
use serde::Deserialize;
use serde_json::Value;

pub use aloha_plugin_support::spec::DEFAULT_KILL_GRACE_MS;

const KIND: &str = "process";

const KNOWN_FIELDS: [&str; 4] = ["command", "env", "cwd", "kill_grace_ms"];

/// A checked spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Program and arguments; never empty, the program never empty.
    pub command: Vec<String>,
    /// Variables added to (or replacing those of) the worker's environment.
    pub env: BTreeMap<String, String>,
    /// The working directory: the app directory, or `cwd` resolved against it.
    pub cwd: PathBuf,
    /// Time between SIGTERM and SIGKILL on shutdown.
    pub kill_grace: Duration,
}

#[derive(Deserialize)]
struct RawSpec {
    command: Option<Vec<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    kill_grace_ms: Option<u64>,
}

/// Checks `spec` (the submission's) against the worker's `conf` for this plugin kind; relative
/// paths are resolved against `app_dir`. Errors are one line, for the user who submitted.
pub fn parse(spec: &Value, conf: &Value, app_dir: &Path) -> Result<Spec, String> {
    check::known_fields(KIND, spec, &KNOWN_FIELDS)?;
    let raw: RawSpec =
        serde_json::from_value(spec.clone()).map_err(|e| format!("invalid process spec: {e}"))?;

    let command = raw.command.unwrap_or_default();
    match command.first() {
        None => {
            return Err(
                "invalid process spec: `command` is required: a non-empty list of strings, \
                 program first"
                    .into(),
            )
        }
        Some(program) if program.is_empty() => {
            return Err("invalid process spec: the program (`command[0]`) is empty".into())
        }
        Some(_) => {}
    }
    check::check_args(KIND, "command", &command)?;
    check::check_env(KIND, &raw.env)?;
    let cwd = match raw.cwd {
        Some(dir) if dir.as_os_str().is_empty() => {
            return Err("invalid process spec: `cwd` is empty".into())
        }
        Some(dir) => check::resolve(app_dir, dir),
        None => app_dir.to_path_buf(),
    };
    Ok(Spec {
        command,
        env: raw.env,
        cwd,
        kill_grace: check::kill_grace(KIND, raw.kill_grace_ms, conf)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_ok(spec: Value) -> Spec {
        parse(&spec, &json!({}), Path::new("/apps/a1")).unwrap()
    }

    fn parse_err(spec: Value) -> String {
        parse(&spec, &json!({}), Path::new("/apps/a1")).unwrap_err()
    }

    #[test]
    fn minimal_spec_gets_defaults() {
        let s = parse_ok(json!({"command": ["true"]}));
        assert_eq!(s.command, ["true"]);
        assert!(s.env.is_empty());
        assert_eq!(s.cwd, Path::new("/apps/a1"));
        assert_eq!(s.kill_grace, Duration::from_millis(DEFAULT_KILL_GRACE_MS));
    }

    #[test]
    fn full_spec() {
        let s = parse_ok(json!({
            "command": ["sh", "-c", "echo $X"],
            "env": {"X": "1"},
            "cwd": "work/dir",
            "kill_grace_ms": 250
        }));
        assert_eq!(s.env["X"], "1");
        assert_eq!(s.cwd, Path::new("/apps/a1/work/dir"));
        assert_eq!(s.kill_grace, Duration::from_millis(250));
        let s = parse_ok(json!({"command": ["true"], "cwd": "/srv/data"}));
        assert_eq!(s.cwd, Path::new("/srv/data"));
    }

    #[test]
    fn unknown_fields_are_all_named() {
        let err = parse_err(json!({"command": ["true"], "cmd": 1, "environment": {}}));
        assert_eq!(
            err,
            "invalid process spec: unknown fields \"cmd\", \"environment\" \
             (known: command, env, cwd, kill_grace_ms)"
        );
        let err = parse_err(json!({"command": ["true"], "cmd": 1}));
        assert!(err.contains("unknown field \"cmd\" ("), "{err}");
    }

    #[test]
    fn command_must_name_a_program() {
        for spec in [json!({}), json!({"command": []})] {
            assert!(parse_err(spec).contains("`command` is required"));
        }
        assert!(parse_err(json!({"command": [""]})).contains("is empty"));
        assert!(parse_err(json!({"command": "echo hi"})).contains("invalid type"));
        assert!(parse_err(json!({"command": ["echo", 3]})).contains("invalid type"));
        assert!(parse_err(json!({"command": ["echo", "a\u{0}b"]})).contains("`command[1]`"));
        assert!(parse_err(json!(["true"])).contains("JSON object"));
    }

    #[test]
    fn env_and_cwd_are_checked() {
        assert!(parse_err(json!({"command": ["true"], "env": {"A=B": "1"}})).contains("\"A=B\""));
        assert!(parse_err(json!({"command": ["true"], "env": {"": "1"}})).contains("name"));
        assert!(parse_err(json!({"command": ["true"], "env": {"A": 1}})).contains("invalid type"));
        assert!(parse_err(json!({"command": ["true"], "cwd": ""})).contains("`cwd` is empty"));
    }

    #[test]
    fn grace_comes_from_spec_then_conf_then_default() {
        let dir = Path::new("/a");
        let conf = json!({"kill_grace_ms": 1000, "other": "ignored"});
        let s = parse(&json!({"command": ["x"], "kill_grace_ms": 10}), &conf, dir).unwrap();
        assert_eq!(s.kill_grace, Duration::from_millis(10));
        let s = parse(&json!({"command": ["x"]}), &conf, dir).unwrap();
        assert_eq!(s.kill_grace, Duration::from_millis(1000));
        let err = parse(
            &json!({"command": ["x"]}),
            &json!({"kill_grace_ms": "5s"}),
            dir,
        )
        .unwrap_err();
        assert!(err.contains("worker configuration"), "{err}");
        assert!(parse_err(json!({"command": ["x"], "kill_grace_ms": -1})).contains("invalid value"));
    }
}
