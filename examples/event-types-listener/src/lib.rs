//! An example listener plugin named `event-types`: appends one line per event of the master to
//! the file its configuration names: `<seq> <type>`, and for an app's change of state
//! `<seq> app_state_changed <app_id> <new_state>`. It shows the whole contract: configuration
//! checked in `create` (typed, so a bad one stops the master with a message naming the field),
//! one method per kind of event, an `Err` when the event could not be recorded (the master
//! delivers it again later), duplicates skipped by `seq`, and in-process tests.
//!
//! Configuration: `{"path": "/var/log/aloha/event-types.txt"}`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use aloha_plugin::EventListener;
use serde::Deserialize;
use serde_json::Value;

/// What the operator says (`config` of the `[[listeners]]` entry, or after `=` in
/// `--listener`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The file lines are appended to; created if missing.
    path: PathBuf,
}

/// Appends a line per event to [`Config::path`].
pub struct EventTypes {
    path: PathBuf,
    file: File,
    /// The highest `seq` written by this instance. Delivery is at least once: an event whose
    /// delivery failed comes again, and is skipped if it was written after all. (A master that
    /// restarts may also resend events that an earlier instance wrote; the shipped `jsonl`
    /// listener reads the file's last line to skip those too.)
    last_seq: u64,
}

impl EventTypes {
    fn append(&mut self, event: &Value, line: String) -> Result<(), String> {
        let seq = event["seq"].as_u64().ok_or("event without a seq")?;
        if seq <= self.last_seq {
            return Ok(());
        }
        // One write per line, so that a failed write leaves no half line behind in most cases.
        self.file
            .write_all(format!("{seq} {line}\n").as_bytes())
            .map_err(|e| format!("cannot write to {}: {e}", self.path.display()))?;
        self.last_seq = seq;
        Ok(())
    }
}

fn event_type(event: &Value) -> String {
    event["type"].as_str().unwrap_or("?").to_owned()
}

impl EventListener for EventTypes {
    fn create(config: Value) -> Result<Self, String> {
        let Config { path } = aloha_plugin::from_json(&config)
            .map_err(|e| format!("invalid event-types configuration: {e}"))?;
        // Opened now, so that a path that cannot be written stops the master at start-up
        // rather than failing every delivery.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        Ok(EventTypes {
            path,
            file,
            last_seq: 0,
        })
    }

    fn on_app_state_changed(&mut self, event: &Value) -> Result<(), String> {
        let text = |key: &str| event[key].as_str().unwrap_or("?").to_owned();
        let line = format!(
            "{} {} {}",
            event_type(event),
            text("app_id"),
            text("new_state")
        );
        self.append(event, line)
    }

    fn on_app_relaunched(&mut self, event: &Value) -> Result<(), String> {
        self.append(event, event_type(event))
    }

    fn on_other_event(&mut self, event: &Value) -> Result<(), String> {
        // Types added to Aloha after this listener was written arrive here too.
        self.append(event, event_type(event))
    }
}

aloha_plugin::declare_listener!(name = "event-types", listener = EventTypes);

#[cfg(test)]
mod tests {
    use aloha_plugin::testing::event;
    use aloha_plugin::EventListener;
    use serde_json::json;

    use super::EventTypes;

    fn temp_file(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("event-types-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn each_event_becomes_a_line_once() {
        let path = temp_file("lines.txt");
        let mut l = EventTypes::create(json!({"path": path})).unwrap();
        let changed = event(
            1,
            "app_state_changed",
            json!({"app_id": "app-1", "old_state": null, "new_state": "SUBMITTED"}),
        );
        l.on_app_state_changed(&changed).unwrap();
        l.on_other_event(&event(2, "worker_joined", json!({"worker_id": "w1"})))
            .unwrap();
        l.on_app_relaunched(&event(3, "app_relaunched", json!({"app_id": "app-1"})))
            .unwrap();
        // Delivered again: skipped.
        l.on_app_state_changed(&changed).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "1 app_state_changed app-1 SUBMITTED\n2 worker_joined\n3 app_relaunched\n"
        );
    }

    #[test]
    fn a_bad_configuration_is_refused_naming_the_field() {
        let refused = |config| EventTypes::create(config).err().unwrap();
        assert_eq!(
            refused(json!({})),
            "invalid event-types configuration: missing field `path`"
        );
        assert_eq!(
            refused(json!({"path": "/tmp/x", "colour": "red"})),
            "invalid event-types configuration: colour: unknown field `colour`, expected `path`"
        );
        assert_eq!(
            refused(json!({"path": 7})),
            "invalid event-types configuration: path: invalid type: integer `7`, expected path string"
        );
        let err = refused(json!({"path": "/nonexistent/dir/x.txt"}));
        assert!(
            err.starts_with("cannot open /nonexistent/dir/x.txt: "),
            "{err}"
        );
    }
}
