//! Typed settings from untyped JSON: [`from_json`] turns a spec or a configuration into a plugin's
//! own `serde` type, with errors that name the offending field.

use std::fmt::Write as _;

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Deserializes `value` into `T`; an error names the field it is about, as a path from the top
/// (`seconds`, `limits.max_ms`, `command[0]`), before serde's own message:
///
/// ```
/// #[derive(serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Spec {
///     seconds: u64,
/// }
///
/// let err = aloha_plugin::from_json::<Spec>(&serde_json::json!({"seconds": "x"})).err().unwrap();
/// assert_eq!(err, r#"seconds: invalid type: string "x", expected u64"#);
/// let err = aloha_plugin::from_json::<Spec>(&serde_json::json!({"secs": 1})).err().unwrap();
/// assert_eq!(err, "secs: unknown field `secs`, expected `seconds`");
/// let err = aloha_plugin::from_json::<Spec>(&serde_json::json!({})).err().unwrap();
/// assert_eq!(err, "missing field `seconds`");
/// ```
///
/// A missing field is reported at the object that lacks it (the top level has no path), and so is
/// an error that a custom deserializer (`deserialize_with`, `try_from`) raises about the last
/// member of an object. Use
/// [`AppContext::spec_as`](crate::AppContext::spec_as) for a spec; this function is for the
/// rest, such as a listener's configuration.
pub fn from_json<T: DeserializeOwned>(value: &Value) -> Result<T, String> {
    // serde_json's errors carry a line, not a field. So the value is written out with every
    // member and element on a line of its own, remembering each line's path, and parsed back
    // from that text: the error's line then tells the field.
    let mut text = String::new();
    let mut paths = vec![String::new()];
    write_lines(value, "", &mut text, &mut paths);
    serde_json::from_str(&text).map_err(|e| {
        let message = e.to_string();
        let position = format!(" at line {} column {}", e.line(), e.column());
        let message = message.strip_suffix(&position).unwrap_or(&message);
        match paths.get(e.line().saturating_sub(1)) {
            Some(path) if !path.is_empty() => format!("{path}: {message}"),
            _ => message.to_owned(),
        }
    })
}

/// Appends `value` to `text`, starting on the current line, and pushes onto `paths` the path of
/// every line it starts (`paths[i]` is line `i + 1`'s). A container's closing line belongs to the
/// container. serde_json places an error one character past the last one it read, so every
/// value is followed on its line by a separator (`,`, or a blank after the last one) and an error
/// about a value stays on the value's line. (One exception: an error raised after the value was
/// read, by a `deserialize_with` function or a `TryFrom`, on the last member of an object, is
/// placed after the object's `}`, so it names the object.)
fn write_lines(value: &Value, path: &str, text: &mut String, paths: &mut Vec<String>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            text.push('{');
            for (i, (key, member)) in map.iter().enumerate() {
                let member_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                text.push('\n');
                paths.push(member_path.clone());
                // A string always serializes.
                text.push_str(&Value::String(key.clone()).to_string());
                text.push(':');
                write_lines(member, &member_path, text, paths);
                text.push(if i + 1 < map.len() { ',' } else { ' ' });
            }
            text.push('\n');
            paths.push(path.to_owned());
            text.push('}');
        }
        Value::Array(items) if !items.is_empty() => {
            text.push('[');
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{path}[{i}]");
                text.push('\n');
                paths.push(item_path.clone());
                write_lines(item, &item_path, text, paths);
                text.push(if i + 1 < items.len() { ',' } else { ' ' });
            }
            text.push('\n');
            paths.push(path.to_owned());
            text.push(']');
        }
        // Scalars and empty containers: one token, which `Value`'s Display writes as JSON.
        other => {
            let _ = write!(text, "{other}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Spec {
        seconds: u64,
        #[serde(default)]
        command: Vec<String>,
        #[serde(default)]
        limits: Option<Limits>,
        #[serde(default)]
        env: BTreeMap<String, String>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Limits {
        max_ms: u64,
        #[serde(default, deserialize_with = "positive")]
        retries: u32,
        #[serde(default)]
        verbose: bool,
    }

    fn positive<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let n = u32::deserialize(d)?;
        if n == 0 {
            return Err(serde::de::Error::custom("must be positive"));
        }
        Ok(n)
    }

    fn err(v: Value) -> String {
        from_json::<Spec>(&v).unwrap_err()
    }

    #[test]
    fn a_good_value_deserializes() {
        let spec: Spec = from_json(&json!({
            "seconds": 3, "command": ["sh", "-c", "exit 0"],
            "limits": {"max_ms": 10, "retries": 2}, "env": {"A": "b\n\"c\""}
        }))
        .unwrap();
        assert_eq!(spec.seconds, 3);
        assert_eq!(spec.command, ["sh", "-c", "exit 0"]);
        assert_eq!(
            spec.limits,
            Some(Limits {
                max_ms: 10,
                retries: 2,
                verbose: false
            })
        );
        assert_eq!(spec.env["A"], "b\n\"c\"");
        let empty: Spec = from_json(&json!({"seconds": 0, "command": [], "env": {}})).unwrap();
        assert!(empty.command.is_empty() && empty.env.is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            err(json!({"seconds": "x"})),
            r#"seconds: invalid type: string "x", expected u64"#
        );
        assert_eq!(
            err(json!({"seconds": 1, "command": ["ok", 7]})),
            "command[1]: invalid type: integer `7`, expected a string"
        );
        assert_eq!(
            err(json!({"seconds": 1, "limits": {"max_ms": -1}})),
            "limits.max_ms: invalid value: integer `-1`, expected u64"
        );
        assert_eq!(
            err(json!({"seconds": 1, "limits": {"max_ms": 1, "retries": 0, "verbose": true}})),
            "limits.retries: must be positive"
        );
        // serde_json places an error raised after the last member of an object (keys sort) was
        // read at the object's end: the object is named, not the member.
        assert_eq!(
            err(json!({"seconds": 1, "limits": {"max_ms": 1, "retries": 0}})),
            "limits: must be positive"
        );
        assert_eq!(
            err(json!({"seconds": 1, "command": ["a", 2, "c"]})),
            "command[1]: invalid type: integer `2`, expected a string"
        );
        assert_eq!(
            err(json!({"seconds": 1, "env": {"A": {"deep": [1]}}})),
            "env.A: invalid type: map, expected a string"
        );
        assert_eq!(
            err(json!({"seconds": 1, "limits": "none"})),
            r#"limits: invalid type: string "none", expected struct Limits"#
        );
    }

    #[test]
    fn unknown_and_missing_fields() {
        assert_eq!(
            err(json!({"seconds": 1, "secs": 2})),
            "secs: unknown field `secs`, expected one of `seconds`, `command`, `limits`, `env`"
        );
        assert_eq!(err(json!({"command": []})), "missing field `seconds`");
        assert_eq!(
            err(json!({"seconds": 1, "limits": {"retries": 1}})),
            "limits: missing field `max_ms`"
        );
    }

    #[test]
    fn top_level_errors_have_no_path() {
        assert_eq!(err(Value::Null), "invalid type: null, expected struct Spec");
        assert_eq!(
            err(json!("x")),
            r#"invalid type: string "x", expected struct Spec"#
        );
        // serde's derived structs also accept their fields in order, as an array.
        assert_eq!(
            err(json!([1, 2])),
            "[1]: invalid type: integer `2`, expected a sequence"
        );
        assert_eq!(
            from_json::<u8>(&json!(300)).unwrap_err(),
            "invalid value: integer `300`, expected u8"
        );
    }

    #[test]
    fn keys_that_need_escaping_keep_their_lines() {
        let v = json!({"a\nb": 1, "seconds": "x"});
        let e = from_json::<BTreeMap<String, u8>>(&v).unwrap_err();
        assert_eq!(e, r#"seconds: invalid type: string "x", expected u8"#);
    }
}
