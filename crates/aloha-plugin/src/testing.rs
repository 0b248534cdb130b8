//! Testing a plugin in-process: no library to build, no worker or master to run. Meant for a
//! plugin's own `#[cfg(test)]` tests; it needs nothing beyond this crate.
//!
//! - [`TestApp`] plays the worker's part before the start: a description around your spec (as
//!   the master would send it), a fresh app directory (removed when the `TestApp` is dropped)
//!   and the [`AppContext`] built from them.
//! - [`Events`] plays the host's part after it: the [`ExitNotifier`] to hand to `start`, and what
//!   came through it, with a deadline to wait for the exit.
//! - [`event`] builds a master event for testing an [`EventListener`](crate::EventListener).
//!
//! ```
//! use std::time::Duration;
//!
//! use aloha_plugin::testing::TestApp;
//! use aloha_plugin::{AppContext, Application, ExitNotifier, ExitState};
//!
//! /// Finishes at once, saying its spec's `text`.
//! struct Echo(String);
//!
//! impl Application for Echo {
//!     fn create(ctx: AppContext) -> Result<Self, String> {
//!         #[derive(serde::Deserialize)]
//!         #[serde(deny_unknown_fields)]
//!         struct Spec { text: String }
//!         Ok(Echo(ctx.spec_as::<Spec>()?.text))
//!     }
//!     fn start(&mut self, events: ExitNotifier) -> Result<(), String> {
//!         events.detail("length", &self.0.len().to_string());
//!         events.exit(ExitState::finished(0, self.0.clone()));
//!         Ok(())
//!     }
//!     fn shutdown(&mut self, _reason: Option<&str>) -> Result<(), String> {
//!         Ok(())
//!     }
//! }
//!
//! let test = TestApp::new(serde_json::json!({"text": "hi"}));
//! let (_app, events) = test.start::<Echo>().unwrap();
//! let exit = events.wait_exit(Duration::from_secs(5)).expect("an exit within 5 s");
//! assert_eq!(exit, ExitState::finished(0, "hi"));
//! assert_eq!(events.details()["length"], "2");
//!
//! let refused = TestApp::new(serde_json::json!({"txt": "hi"})).create::<Echo>();
//! assert_eq!(refused.err().unwrap(), "invalid spec: txt: unknown field `txt`, expected `text`");
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{AppContext, Application, ExitNotifier, ExitState, PluginEvent};

/// One app attempt as a worker would set it up: a description, a worker configuration
/// (`conf`) and an app directory of its own, which is removed when the value is dropped (and
/// kept, with its path printed, when the test is panicking, so that its logs can be read).
#[derive(Debug)]
pub struct TestApp {
    description: Value,
    conf: Value,
    dir: PathBuf,
}

impl TestApp {
    /// An app with `spec` as its spec, and the other description fields set the way the master
    /// sets them: `{"id": "app-test-<n>", "name": "test", "kind": "test", "spec": spec,
    /// "cores": 1, "memory_mb": 256, "attempt": 1, "labels": {}}`; `conf` is `{}`. The app
    /// directory exists and holds `description.json`, as on a worker.
    ///
    /// Panics if the directory cannot be made (this is test code).
    pub fn new(spec: Value) -> TestApp {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = loop {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
            let dir = std::env::temp_dir().join(format!(
                "aloha-plugin-test-{}-{n}-{stamp}",
                std::process::id()
            ));
            match std::fs::create_dir(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create an app directory {}: {e}", dir.display()),
            }
        };
        let app = TestApp {
            description: json!({
                "id": format!("app-test-{n}"),
                "name": "test",
                "kind": "test",
                "spec": spec,
                "cores": 1,
                "memory_mb": 256,
                "attempt": 1,
                "labels": {},
            }),
            conf: json!({}),
            dir,
        };
        app.write_description();
        app
    }

    /// The same app with `conf` as the worker's configuration for the kind
    /// (`[plugins.<kind>]`).
    pub fn with_conf(mut self, conf: Value) -> TestApp {
        self.conf = conf;
        self
    }

    /// The same app with the description field `key` set to `value`, e.g. `("attempt",
    /// json!(2))`, `("schedule_id", json!("sch-1"))` or `("libs", json!(["/opt/lib.jar"]))`.
    pub fn with(mut self, key: &str, value: Value) -> TestApp {
        self.description[key] = value;
        self.write_description();
        self
    }

    /// The app's description, as the plugin gets it in [`AppContext::description`].
    pub fn description(&self) -> &Value {
        &self.description
    }

    /// The app directory.
    pub fn app_dir(&self) -> &Path {
        &self.dir
    }

    /// The context a worker would hand to [`Application::create`] (without a supervisor).
    pub fn context(&self) -> AppContext {
        AppContext::new(self.description.clone(), &self.dir).with_conf(self.conf.clone())
    }

    /// `A::create(self.context())`.
    pub fn create<A: Application>(&self) -> Result<A, String> {
        A::create(self.context())
    }

    /// Creates and starts an `A` as the worker would: `create`, then `start` with the notifier
    /// of a new [`Events`]. The first `Err` of the two is returned.
    pub fn start<A: Application>(&self) -> Result<(A, Events), String> {
        let mut app = self.create::<A>()?;
        let events = start(&mut app)?;
        Ok((app, events))
    }

    fn write_description(&self) {
        // A `Value` always serializes; a failed write only matters to a plugin that reads the
        // file, and its test will say so.
        let text = serde_json::to_vec_pretty(&self.description).unwrap_or_default();
        let _ = std::fs::write(self.dir.join("description.json"), text);
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept the app directory {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Calls `app.start` with the notifier of a new [`Events`] and returns the `Events`.
pub fn start<A: Application>(app: &mut A) -> Result<Events, String> {
    let events = Events::new();
    app.start(events.notifier())?;
    Ok(events)
}

/// What a plugin reported through an [`ExitNotifier`]: a stand-in for the worker. The notifier
/// is [`ExitNotifier::from_fn`], whose closure is handed each report as a [`PluginEvent`]:
/// `PluginEvent::Detail { key, value }` for a detail, `PluginEvent::Exit(state)` for the exit
/// (the notifier passes on only the first exit, and no detail after it).
#[derive(Clone)]
pub struct Events {
    shared: Arc<(Mutex<Vec<PluginEvent>>, Condvar)>,
    notifier: ExitNotifier,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("events", &*self.lock())
            .finish()
    }
}

impl Events {
    /// Nothing reported yet.
    pub fn new() -> Events {
        let shared: Arc<(Mutex<Vec<PluginEvent>>, Condvar)> = Arc::default();
        let sink = Arc::clone(&shared);
        let notifier = ExitNotifier::from_fn(move |event| {
            let (events, changed) = &*sink;
            events
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(event);
            changed.notify_all();
        });
        Events { shared, notifier }
    }

    /// The notifier to hand to [`Application::start`] (a clone; every clone reports here).
    pub fn notifier(&self) -> ExitNotifier {
        self.notifier.clone()
    }

    /// The exit, waiting for it at most `timeout`; `None` if none came by then.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitState> {
        let deadline = Instant::now() + timeout;
        let (_, changed) = &*self.shared;
        let mut events = self.lock();
        loop {
            if let Some(exit) = exit_in(&events) {
                return Some(exit);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            events = changed
                .wait_timeout(events, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The exit, if one was reported already.
    pub fn exit(&self) -> Option<ExitState> {
        exit_in(&self.lock())
    }

    /// The details reported so far, the last value of each key (as the master shows them).
    pub fn details(&self) -> BTreeMap<String, String> {
        self.lock()
            .iter()
            .filter_map(|e| match e {
                PluginEvent::Detail { key, value } => Some((key.clone(), value.clone())),
                PluginEvent::Exit(_) => None,
            })
            .collect()
    }

    /// Everything reported so far, in order.
    pub fn all(&self) -> Vec<PluginEvent> {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<PluginEvent>> {
        self.shared.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn exit_in(events: &[PluginEvent]) -> Option<ExitState> {
    events.iter().find_map(|e| match e {
        PluginEvent::Exit(state) => Some(state.clone()),
        PluginEvent::Detail { .. } => None,
    })
}

/// A master event as a listener receives it: `{"seq": seq, "at": "2025-01-01T00:00:00Z",
/// "type": ty}` plus the members of `fields` (an object), e.g.
/// `event(7, "app_state_changed", json!({"app_id": "app-1", "old_state": "RUNNING",
/// "new_state": "FINISHED"}))`. See [`EventListener`](crate::EventListener) for the fields of
/// each type.
pub fn event(seq: u64, ty: &str, fields: Value) -> Value {
    let mut event = json!({"seq": seq, "at": "2025-01-01T00:00:00Z", "type": ty});
    if let (Some(all), Value::Object(fields)) = (event.as_object_mut(), fields) {
        all.extend(fields);
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExitKind;

    /// Exits from a thread after `spec.ms`, or when shut down.
    struct Nap {
        ms: u64,
        stop: Option<std::sync::mpsc::Sender<String>>,
        dir: PathBuf,
    }

    impl Application for Nap {
        fn create(ctx: AppContext) -> Result<Self, String> {
            let ms = ctx.spec()["ms"].as_u64().ok_or("no ms")?;
            Ok(Nap {
                ms,
                stop: None,
                dir: ctx.app_dir().to_path_buf(),
            })
        }
        fn start(&mut self, events: ExitNotifier) -> Result<(), String> {
            let (tx, rx) = std::sync::mpsc::channel();
            self.stop = Some(tx);
            let ms = self.ms;
            std::fs::write(self.dir.join("log"), "started").map_err(|e| e.to_string())?;
            events.detail("phase", "starting");
            events.detail("phase", "sleeping");
            std::thread::spawn(move || {
                let exit = match rx.recv_timeout(Duration::from_millis(ms)) {
                    Ok(reason) => ExitState::killed(143, format!("killed: {reason}")),
                    Err(_) => ExitState::finished(0, "woke"),
                };
                events.exit(exit);
                events.detail("late", "ignored");
            });
            Ok(())
        }
        fn shutdown(&mut self, reason: Option<&str>) -> Result<(), String> {
            if let Some(stop) = &self.stop {
                let _ = stop.send(reason.unwrap_or("?").to_owned());
            }
            Ok(())
        }
    }

    #[test]
    fn an_app_runs_to_its_exit_in_its_own_directory() {
        let test = TestApp::new(json!({"ms": 10}));
        let dir = test.app_dir().to_path_buf();
        let described: Value =
            serde_json::from_slice(&std::fs::read(dir.join("description.json")).unwrap()).unwrap();
        assert_eq!(&described, test.description());
        assert_eq!(described["spec"], json!({"ms": 10}));
        let (_app, events) = test.start::<Nap>().unwrap();
        assert_eq!(
            events.wait_exit(Duration::from_secs(10)),
            Some(ExitState::finished(0, "woke"))
        );
        assert_eq!(std::fs::read_to_string(dir.join("log")).unwrap(), "started");
        assert_eq!(
            events.details(),
            BTreeMap::from([("phase".into(), "sleeping".into())])
        );
        assert_eq!(events.all().len(), 3, "{events:?}");
        drop(test);
        assert!(
            !dir.exists(),
            "the app directory is removed with the TestApp"
        );
    }

    #[test]
    fn a_shutdown_is_seen_and_waiting_without_an_exit_times_out() {
        let test = TestApp::new(json!({"ms": 600_000}));
        let (mut app, events) = test.start::<Nap>().unwrap();
        assert_eq!(events.wait_exit(Duration::from_millis(20)), None);
        assert_eq!(events.exit(), None);
        app.shutdown(Some("enough")).unwrap();
        let exit = events.wait_exit(Duration::from_secs(10)).unwrap();
        assert_eq!(
            (exit.kind, exit.message.as_str()),
            (ExitKind::Killed, "killed: enough")
        );
    }

    #[test]
    fn context_carries_conf_and_extra_description_fields() {
        let test = TestApp::new(json!(null))
            .with_conf(json!({"max_ms": 5}))
            .with("attempt", json!(3))
            .with("schedule_id", json!("sch-1"));
        let ctx = test.context();
        assert_eq!(ctx.attempt(), Some(3));
        assert_eq!(ctx.conf, json!({"max_ms": 5}));
        assert_eq!(ctx.description["schedule_id"], "sch-1");
        assert!(ctx.app_id().unwrap().starts_with("app-test-"));
        assert_eq!(ctx.app_dir(), test.app_dir());
        assert_eq!(test.create::<Nap>().err().unwrap(), "no ms");
        assert_ne!(TestApp::new(json!({})).app_dir(), test.app_dir());
    }

    #[test]
    fn events_for_listeners() {
        let e = event(7, "app_relaunched", json!({"app_id": "app-1"}));
        assert_eq!(
            e,
            json!({"seq": 7, "at": "2025-01-01T00:00:00Z", "type": "app_relaunched", "app_id": "app-1"})
        );
        assert_eq!(
            event(1, "worker_joined", Value::Null)["type"],
            "worker_joined"
        );
    }
}
