//! # aloha-plugin-support
//!
//! What the shipped Application plugins (`process`, `spark`, `flink`) share, so that each of them
//! is only what is particular to its kind. A plain Rust library linked into each plugin's
//! `cdylib`: nothing here crosses the plugin ABI.
//!
//! ## Layout
//! - [`group`]: a command run in its own process group, under the worker's supervisor
//!   (`aloha-supervise`, which kills the group if the worker dies) or as the group's leader,
//!   forked by a long-lived monitor thread with `PR_SET_PDEATHSIG` (it dies with the worker),
//!   stopped as a whole (SIGTERM, a grace period, SIGKILL), swept when its leader exits, the
//!   leader's pid written to a file.
//! - [`output`]: the app's `stdout`/`stderr` files: opening them, following them line by line as
//!   they grow, and quoting their last lines in a failure message.
//! - [`spec`]: the checks every spec parser makes (unknown fields, environment, the worker's
//!   `[plugins.<kind>]` values, the kill grace period), with one wording for every kind.
//! - [`http`]: a small blocking HTTP client for the REST APIs the `spark` and `flink` plugins
//!   watch.

#![warn(missing_docs)]

pub mod group;
pub mod http;
pub mod output;
pub mod spec;

pub use group::{Launch, ProcessExit, ProcessGroup};

/// The variables every app's processes get from its description (`ALOHA_APP_ID`,
/// `ALOHA_ATTEMPT`, and for a schedule's runs `ALOHA_SCHEDULE_ID` and `ALOHA_SCHEDULED_AT`,
/// RFC 3339 in UTC), for the fields the description has.
pub fn aloha_env(description: &serde_json::Value) -> Vec<(&'static str, String)> {
    let text = |k: &str| match description.get(k) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    [
        ("ALOHA_APP_ID", "id"),
        ("ALOHA_ATTEMPT", "attempt"),
        ("ALOHA_SCHEDULE_ID", "schedule_id"),
        ("ALOHA_SCHEDULED_AT", "scheduled_at"),
    ]
    .into_iter()
    .filter_map(|(var, key)| text(key).map(|v| (var, v)))
    .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn aloha_env_names_the_run() {
        let d = serde_json::json!({"id": "app-1", "attempt": 2, "schedule_id": "sch-1",
                                   "scheduled_at": "2026-12-03T10:00:00Z", "name": "x"});
        assert_eq!(
            super::aloha_env(&d),
            vec![
                ("ALOHA_APP_ID", "app-1".to_string()),
                ("ALOHA_ATTEMPT", "2".to_string()),
                ("ALOHA_SCHEDULE_ID", "sch-1".to_string()),
                ("ALOHA_SCHEDULED_AT", "2026-12-03T10:00:00Z".to_string()),
            ]
        );
        let d = serde_json::json!({"id": "app-1", "attempt": 1});
        assert_eq!(super::aloha_env(&d).len(), 2);
    }
}
