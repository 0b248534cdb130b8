//! Checks every plugin's spec parser makes the same way, so that users get the same wording from
//! every kind: `invalid <kind> spec: ...` for the submission, `invalid worker configuration for
//! the <kind> plugin: ...` for the worker's `[plugins.<kind>]` table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

/// How long a process gets between SIGTERM and SIGKILL when neither the spec nor the worker's
/// configuration says.
pub const DEFAULT_KILL_GRACE_MS: u64 = 5000;

/// `spec` as a JSON object whose fields are all in `known`; otherwise an error naming every
/// unknown field (`invalid spark spec: unknown fields "a", "b" (known: ...)`).
pub fn known_fields<'a>(
    kind: &str,
    spec: &'a Value,
    known: &[&str],
) -> Result<&'a Map<String, Value>, String> {
    let fields = spec
        .as_object()
        .ok_or_else(|| format!("invalid {kind} spec: it must be a JSON object"))?;
    let unknown: Vec<&str> = fields
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "invalid {kind} spec: unknown field{} {} (known: {})",
            if unknown.len() == 1 { "" } else { "s" },
            unknown
                .iter()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            known.join(", ")
        ));
    }
    Ok(fields)
}

/// Checks environment variables: names non-empty without `=` or NUL, values without NUL.
pub fn check_env(kind: &str, env: &BTreeMap<String, String>) -> Result<(), String> {
    for (key, value) in env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(format!(
                "invalid {kind} spec: environment variable name {key:?} must be non-empty \
                 and contain neither '=' nor NUL"
            ));
        }
        if value.contains('\0') {
            return Err(format!(
                "invalid {kind} spec: environment variable {key} contains a NUL byte"
            ));
        }
    }
    Ok(())
}

/// Checks that no argument contains a NUL byte (which no command line can carry); `what` names
/// the list in the error (`args`).
pub fn check_args(kind: &str, what: &str, args: &[String]) -> Result<(), String> {
    match args.iter().position(|a| a.contains('\0')) {
        Some(i) => Err(format!(
            "invalid {kind} spec: `{what}[{i}]` contains a NUL byte"
        )),
        None => Ok(()),
    }
}

/// A non-negative integer of milliseconds from the worker's `conf`; `None` if absent or null.
pub fn conf_millis(kind: &str, conf: &Value, key: &str) -> Result<Option<u64>, String> {
    match conf.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            format!(
                "invalid worker configuration for the {kind} plugin: {key} must be a \
                 non-negative integer of milliseconds, not {v}"
            )
        }),
    }
}

/// A non-empty string from the worker's `conf`; `None` if absent or null.
pub fn conf_str(kind: &str, conf: &Value, key: &str) -> Result<Option<String>, String> {
    match conf.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(v) => Err(format!(
            "invalid worker configuration for the {kind} plugin: {key} must be a non-empty \
             string, not {v}"
        )),
    }
}

/// The grace period between SIGTERM and SIGKILL: the spec's `kill_grace_ms`, else the worker's
/// `kill_grace_ms` for this kind, else [`DEFAULT_KILL_GRACE_MS`].
pub fn kill_grace(kind: &str, spec_ms: Option<u64>, conf: &Value) -> Result<Duration, String> {
    let ms = match spec_ms {
        Some(ms) => ms,
        None => conf_millis(kind, conf, "kill_grace_ms")?.unwrap_or(DEFAULT_KILL_GRACE_MS),
    };
    Ok(Duration::from_millis(ms))
}

/// `path` resolved against `base` (an absolute `path` stays as it is).
pub fn resolve(base: &Path, path: impl AsRef<Path>) -> PathBuf {
    base.join(path)
}

/// The value of a field that must be a non-empty string, if present; `what` names it.
pub fn non_empty(kind: &str, what: &str, value: Option<String>) -> Result<Option<String>, String> {
    match value {
        Some(s) if s.trim().is_empty() => Err(format!("invalid {kind} spec: `{what}` is empty")),
        Some(s) if s.contains('\0') => {
            Err(format!("invalid {kind} spec: `{what}` contains a NUL byte"))
        }
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_all_named() {
        let known = ["a", "b"];
        assert!(known_fields("k", &json!({"a": 1}), &known).is_ok());
        assert_eq!(
            known_fields("k", &json!({"a": 1, "x": 2, "y": 3}), &known).unwrap_err(),
            "invalid k spec: unknown fields \"x\", \"y\" (known: a, b)"
        );
        assert_eq!(
            known_fields("k", &json!({"x": 2}), &known).unwrap_err(),
            "invalid k spec: unknown field \"x\" (known: a, b)"
        );
        assert_eq!(
            known_fields("k", &json!([1]), &known).unwrap_err(),
            "invalid k spec: it must be a JSON object"
        );
    }

    #[test]
    fn env_and_args_are_checked() {
        let env = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        assert!(check_env("k", &env("A", "1")).is_ok());
        assert!(check_env("k", &env("A=B", "1"))
            .unwrap_err()
            .contains("\"A=B\""));
        assert!(check_env("k", &env("", "1")).unwrap_err().contains("name"));
        assert!(check_env("k", &env("A", "\0")).unwrap_err().contains("NUL"));
        assert!(check_args("k", "args", &["ok".into()]).is_ok());
        assert_eq!(
            check_args("k", "args", &["ok".into(), "a\0".into()]).unwrap_err(),
            "invalid k spec: `args[1]` contains a NUL byte"
        );
    }

    #[test]
    fn conf_values_are_typed() {
        let conf = json!({"ms": 5, "s": "x", "empty": "", "null": null});
        assert_eq!(conf_millis("k", &conf, "ms"), Ok(Some(5)));
        assert_eq!(conf_millis("k", &conf, "none"), Ok(None));
        assert_eq!(conf_millis("k", &conf, "null"), Ok(None));
        let err = conf_millis("k", &conf, "s").unwrap_err();
        assert!(err.starts_with("invalid worker configuration for the k plugin: s must"));
        assert_eq!(conf_str("k", &conf, "s"), Ok(Some("x".into())));
        assert_eq!(conf_str("k", &conf, "none"), Ok(None));
        assert!(conf_str("k", &conf, "empty").is_err());
        assert!(conf_str("k", &conf, "ms").is_err());
    }

    #[test]
    fn grace_comes_from_spec_then_conf_then_default() {
        let conf = json!({"kill_grace_ms": 1000});
        assert_eq!(
            kill_grace("k", Some(10), &conf),
            Ok(Duration::from_millis(10))
        );
        assert_eq!(
            kill_grace("k", None, &conf),
            Ok(Duration::from_millis(1000))
        );
        assert_eq!(
            kill_grace("k", None, &json!({})),
            Ok(Duration::from_millis(DEFAULT_KILL_GRACE_MS))
        );
        assert!(kill_grace("k", None, &json!({"kill_grace_ms": "5s"})).is_err());
    }

    #[test]
    fn paths_and_strings() {
        assert_eq!(resolve(Path::new("/a"), "b/c"), Path::new("/a/b/c"));
        assert_eq!(resolve(Path::new("/a"), "/x"), Path::new("/x"));
        assert_eq!(non_empty("k", "f", None), Ok(None));
        assert_eq!(non_empty("k", "f", Some("v".into())), Ok(Some("v".into())));
        assert_eq!(
            non_empty("k", "f", Some(" ".into())).unwrap_err(),
            "invalid k spec: `f` is empty"
        );
    }
}
