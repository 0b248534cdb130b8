//! What the integration tests share: finding and loading the built plugin library, running an
//! app through the real host API, and waiting on conditions with deadlines.
//!
//! The tests load `libaloha_plugin_process.so` as the worker does. Cargo builds it for them: an
//! integration test depends on its package's library target, and this package's library is
//! compiled with both crate types in one rustc run (`--crate-type cdylib --crate-type rlib`), so
//! `cargo test -p aloha-plugin-process` always leaves a fresh `.so` in `<target>/<profile>/deps/`.
//! Cargo copies it up to `<target>/<profile>/` only on `cargo build`, so that copy may be stale
//! and is used only when `deps/` has none. `ALOHA_PROCESS_PLUGIN` overrides the path.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use aloha_plugin::host::{AppInstance, ApplicationPlugin, PluginEvent};
use aloha_plugin::{AppContext, ExitState};

/// The file name of the plugin library.
pub const SO_NAME: &str = "libaloha_plugin_process.so";

/// Long enough for a loaded 2-core CI machine, short enough to fail a hung test.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Where the built plugin library is: beside the test executable in `deps/`, else one level up.
pub fn plugin_path() -> PathBuf {
    if let Some(path) = std::env::var_os("ALOHA_PROCESS_PLUGIN") {
        return PathBuf::from(path);
    }
    // The test runs as <target>/<profile>/deps/<test>-<hash>.
    let exe = std::env::current_exe().expect("the test executable has a path");
    let deps = exe.parent().expect("the test executable is in a directory");
    let profile = deps.parent().expect("deps/ is in the profile directory");
    [deps.join(SO_NAME), profile.join(SO_NAME)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{SO_NAME} is not in {} or {}; run `cargo build -p aloha-plugin-process` first \
                 (with the same CARGO_TARGET_DIR and profile), or set ALOHA_PROCESS_PLUGIN",
                deps.display(),
                profile.display()
            )
        })
}

/// The worker's `aloha-supervise` binary: `ALOHA_SUPERVISE`, else beside the plugin library in
/// the profile directory, where `cargo build` (of the workspace or of `aloha-worker`) puts it.
pub fn supervisor_path() -> PathBuf {
    if let Some(path) = std::env::var_os("ALOHA_SUPERVISE") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable is in <profile>/deps/");
    let path = profile.join("aloha-supervise");
    assert!(
        path.is_file(),
        "{} is missing; run `cargo build -p aloha-worker` first (with the same CARGO_TARGET_DIR \
         and profile), or set ALOHA_SUPERVISE",
        path.display()
    );
    path
}

/// The plugin, loaded once per test binary through the host API.
pub fn plugin() -> &'static ApplicationPlugin {
    static PLUGIN: OnceLock<ApplicationPlugin> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        let path = plugin_path();
        ApplicationPlugin::load(&path)
            .unwrap_or_else(|e| panic!("cannot load the process plugin: {e}"))
            .unwrap_or_else(|| panic!("{} is not an Application plugin", path.display()))
    })
}

/// An app created through the plugin, with its directory and its events.
pub struct TestApp {
    pub app: AppInstance,
    pub events: Receiver<PluginEvent>,
    pub dir: tempfile::TempDir,
}

impl TestApp {
    /// Creates an app with `spec` in a fresh app directory.
    pub fn create(spec: serde_json::Value) -> Result<TestApp, String> {
        Self::create_with_conf(spec, serde_json::json!({}))
    }

    /// Creates an app with `spec` and the worker configuration `conf`.
    pub fn create_with_conf(
        spec: serde_json::Value,
        conf: serde_json::Value,
    ) -> Result<TestApp, String> {
        Self::create_in_context(spec, conf, None)
    }

    /// Creates an app with `spec` that the plugin runs under the worker's supervisor.
    pub fn create_supervised(spec: serde_json::Value) -> Result<TestApp, String> {
        Self::create_in_context(spec, serde_json::json!({}), Some(supervisor_path()))
    }

    /// Creates and starts an app that must start, under the worker's supervisor.
    pub fn start_supervised(spec: serde_json::Value) -> TestApp {
        let app = Self::create_supervised(spec).expect("create");
        app.app.start().expect("start");
        app
    }

    fn create_in_context(
        spec: serde_json::Value,
        conf: serde_json::Value,
        supervisor: Option<PathBuf>,
    ) -> Result<TestApp, String> {
        let dir = tempfile::tempdir().expect("a temporary app directory");
        let ctx = AppContext::new(
            serde_json::json!({
                "id": "app-20250101000000-0001", "name": "test", "kind": "process",
                "spec": spec, "cores": 1, "memory_mb": 64, "attempt": 1, "labels": {}
            }),
            dir.path(),
        )
        .with_conf(conf)
        .with_supervisor(supervisor);
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let app = plugin().create(&ctx, move |event| {
            // The receiver may be gone when a test has finished with the app.
            let _ = tx.lock().unwrap().send(event);
        })?;
        Ok(TestApp {
            app,
            events: rx,
            dir,
        })
    }

    /// Creates and starts an app that must start.
    pub fn start(spec: serde_json::Value) -> TestApp {
        let app = Self::create(spec).expect("create");
        app.app.start().expect("start");
        app
    }

    /// Waits for the exit; returns it and the details reported before it.
    pub fn wait_exit(&self) -> (ExitState, Vec<(String, String)>) {
        let deadline = Instant::now() + DEADLINE;
        let mut details = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(PluginEvent::Exit(state)) => return (state, details),
                Ok(PluginEvent::Detail { key, value }) => details.push((key, value)),
                Err(e) => panic!("no exit within {DEADLINE:?}: {e}"),
            }
        }
    }

    /// The pid (= process group id) the plugin wrote to the app directory.
    pub fn pid(&self) -> libc::pid_t {
        let text = std::fs::read_to_string(self.dir.path().join("pid")).expect("a pid file");
        text.trim().parse().expect("the pid file holds a number")
    }

    /// The contents of a file in the app directory.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name))
            .unwrap_or_else(|e| panic!("cannot read {name}: {e}"))
    }
}

/// Polls `condition` until it holds; panics with `what` at the deadline.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether any process is in group `pgid` (zombies included), per `kill(-pgid, 0)`.
pub fn group_exists(pgid: libc::pid_t) -> bool {
    assert!(pgid > 1);
    // SAFETY: signal 0 only checks for existence.
    if unsafe { libc::kill(-pgid, 0) } == 0 {
        return true;
    }
    let err = std::io::Error::last_os_error();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ESRCH),
        "kill(-{pgid}, 0): {err}"
    );
    false
}

/// Waits until no process of group `pgid` remains. Killed orphans are reaped by the
/// container's init, which may take a couple of seconds; until then they count.
pub fn wait_group_gone(pgid: libc::pid_t) {
    wait_until(&format!("process group {pgid} is gone"), || {
        !group_exists(pgid)
    });
}

/// The live (non-zombie) members of group `pgid`, with their command names, from /proc.
pub fn group_members(pgid: libc::pid_t) -> Vec<(libc::pid_t, String)> {
    let mut members = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return members;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<libc::pid_t>() else {
            continue;
        };
        // Processes may vanish while we look.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may contain anything, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if rest.len() < 3 || rest[0] == "Z" {
            continue;
        }
        if rest[2].parse::<libc::pid_t>() == Ok(pgid) {
            members.push((pid, comm));
        }
    }
    members
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: libc::pid_t) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .map(|i| !stat[i + 1..].trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Makes `path` a symlink to `target`.
pub fn symlink(target: &Path, path: &Path) {
    std::os::unix::fs::symlink(target, path).unwrap_or_else(|e| {
        panic!(
            "cannot link {} to {}: {e}",
            path.display(),
            target.display()
        )
    });
}
