//! # aloha-listener-jsonl
//!
//! The `jsonl` listener plugin: appends every event of the master to a file, one JSON object per
//! line, and makes it durable (`fsync`) before saying it is delivered. Built as
//! `libaloha_listener_jsonl.so` and loaded by the master through `aloha-plugin`'s ABI.
//!
//! ## Configuration
//! ```json
//! {"path": "/var/log/aloha/events.jsonl"}
//! ```
//! - `path` (required): the file. Missing parent directories are created; the file is created if
//!   needed and only ever appended to. A relative path is relative to the master's working
//!   directory.
//!
//! Any other key is refused when the listener is created.
//!
//! ## Behaviour
//! - Each event is written as one line (its JSON has no raw newline), with a single `write`, then
//!   `File::sync_data`; only then does delivery return `Ok`. When the file was (re)opened, its
//!   directory is synced too, so a new file's name survives a crash along with its lines.
//! - An I/O error is returned as the delivery's error, and the master delivers the event again
//!   later. Bytes of a line that failed half-way are cut off again (best effort), so the file
//!   holds whole lines only. Delivery is at least once: after a crash between the fsync and the
//!   master recording the delivery, a line may appear twice; `seq` tells them apart.
//! - If the file is moved or deleted (log rotation), the next event reopens `path`, creating a
//!   new file.
//! - The file is opened when the listener is created, so a path that cannot be written fails the
//!   master's start rather than the first event.

#![warn(missing_docs)]

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aloha_plugin::EventListener;
use serde::Deserialize;
use serde_json::Value;

/// The listener's name.
pub const NAME: &str = "jsonl";

aloha_plugin::declare_listener!(name = NAME, listener = JsonlListener);

/// The listener's configuration (see the crate docs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file events are appended to.
    pub path: PathBuf,
}

/// Appends events to [`Config::path`].
#[derive(Debug)]
pub struct JsonlListener {
    path: PathBuf,
    /// The open file and the (device, inode) it had when opened; `None` after an I/O error, so
    /// that the next event starts from a fresh open.
    file: Option<(File, (u64, u64))>,
    /// The highest `seq` in the file: the host delivers at least once, so after a restart it
    /// may offer events the file already has; those are skipped, keeping the file exactly once.
    last_seq: u64,
}

/// The `seq` of the last complete line of the file at `path` (0 when none), reading only its
/// end.
fn last_seq_in(path: &std::path::Path) -> u64 {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 64 * 1024;
    let Ok(f) = File::open(path) else { return 0 };
    // Only a regular file has an end to read (a device like /dev/full reads forever).
    let Ok(meta) = f.metadata() else { return 0 };
    if !meta.is_file() {
        return 0;
    }
    let mut f = f;
    if f.seek(SeekFrom::Start(meta.len().saturating_sub(TAIL)))
        .is_err()
    {
        return 0;
    }
    let mut tail = Vec::new();
    if f.take(TAIL).read_to_end(&mut tail).is_err() {
        return 0;
    }
    tail.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .filter_map(|v| v["seq"].as_u64())
        .max()
        .unwrap_or(0)
}

impl JsonlListener {
    /// Opens (creating it and its directories if needed) the file at `path`.
    pub fn open(path: impl Into<PathBuf>) -> Result<JsonlListener, String> {
        let path = path.into();
        if path.as_os_str().is_empty() {
            return Err("invalid jsonl listener configuration: `path` is empty".into());
        }
        let last_seq = last_seq_in(&path);
        let mut listener = JsonlListener {
            path,
            file: None,
            last_seq,
        };
        if let Err(e) = listener.file() {
            return Err(format!("cannot open {}: {e}", listener.path.display()));
        }
        Ok(listener)
    }

    /// The file events go to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `event` as one line and syncs it to disk.
    pub fn append(&mut self, event: &Value) -> Result<(), String> {
        let seq = event["seq"].as_u64();
        if seq.is_some_and(|s| s <= self.last_seq) {
            return Ok(()); // already in the file (a redelivery)
        }
        let mut line = serde_json::to_vec(event)
            .map_err(|e| format!("cannot encode event {}: {e}", event["seq"]))?;
        line.push(b'\n');
        let written = self.write_line(&line);
        if written.is_ok() {
            if let Some(s) = seq {
                self.last_seq = s;
            }
        }
        written.map_err(|e| {
            // Start over from a fresh open next time: the descriptor may be what is broken.
            self.file = None;
            format!(
                "cannot append event {} to {}: {e}",
                event["seq"],
                self.path.display()
            )
        })
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let file = self.file()?;
        let before = file.metadata()?.len();
        let result = file.write_all(line).and_then(|()| file.sync_data());
        if result.is_err() {
            // Cut a half-written line off again, so that the retry appends a whole line after
            // whole lines. Best effort: the error being reported is the write's.
            let _ = file.set_len(before);
        }
        result
    }

    /// The open file, (re)opening `path` first if nothing is open or if `path` no longer names
    /// the open file (it was rotated away or deleted).
    fn file(&mut self) -> io::Result<&mut File> {
        let current = match std::fs::metadata(&self.path) {
            Ok(m) => Some((m.dev(), m.ino())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let reopen = match (&self.file, current) {
            (Some((_, id)), Some(current)) => *id != current,
            _ => true,
        };
        if reopen {
            self.file = None;
            let dir = self
                .path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            let file = OpenOptions::new()
                .append(true)
                .create(true)
                .open(&self.path)?;
            let m = file.metadata()?;
            // Make the file's directory entry durable too (it may just have been created).
            File::open(dir)?.sync_all()?;
            self.file = Some((file, (m.dev(), m.ino())));
        }
        // `Some` here: just opened, or kept because it was.
        self.file
            .as_mut()
            .map(|(file, _)| file)
            .ok_or_else(|| io::Error::other("no open file"))
    }
}

impl EventListener for JsonlListener {
    fn create(config: Value) -> Result<Self, String> {
        let config: Config = serde_json::from_value(config)
            .map_err(|e| format!("invalid jsonl listener configuration: {e}"))?;
        JsonlListener::open(config.path)
    }

    fn on_app_state_changed(&mut self, event: &Value) -> Result<(), String> {
        self.append(event)
    }

    fn on_app_relaunched(&mut self, event: &Value) -> Result<(), String> {
        self.append(event)
    }

    fn on_other_event(&mut self, event: &Value) -> Result<(), String> {
        self.append(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configuration_is_checked() {
        let err = JsonlListener::create(json!({})).unwrap_err();
        assert!(
            err.starts_with("invalid jsonl listener configuration: missing field `path`"),
            "{err}"
        );
        let err = JsonlListener::create(json!({"path": "/tmp/x", "pth": 1})).unwrap_err();
        assert!(err.contains("unknown field `pth`"), "{err}");
        let err = JsonlListener::create(json!({"path": ""})).unwrap_err();
        assert_eq!(err, "invalid jsonl listener configuration: `path` is empty");
        let err = JsonlListener::create(json!({"path": 5})).unwrap_err();
        assert!(err.starts_with("invalid jsonl listener configuration: "));
    }

    #[test]
    fn a_directory_is_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = JsonlListener::open(dir.path()).unwrap_err();
        assert!(
            err.starts_with(&format!("cannot open {}: ", dir.path().display())),
            "{err}"
        );
    }

    #[test]
    fn rotation_and_deletion_reopen_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut l = JsonlListener::open(&path).unwrap();
        l.append(&json!({"seq": 1})).unwrap();
        std::fs::rename(&path, dir.path().join("events.jsonl.1")).unwrap();
        l.append(&json!({"seq": 2})).unwrap();
        std::fs::remove_file(&path).unwrap();
        l.append(&json!({"seq": 3})).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("events.jsonl.1")).unwrap(),
            "{\"seq\":1}\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"seq\":3}\n");
    }
}
