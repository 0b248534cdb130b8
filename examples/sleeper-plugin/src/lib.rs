//! An example Application plugin of kind `sleeper`: sleeps for `spec.ms` milliseconds, then
//! finishes; a kill wakes it up early. It shows the whole contract: settings checked in
//! `create` (typed, so a bad spec is refused with a message naming the field), a `start` that
//! returns at once and reports the exit later from its own thread, a detail for the app's
//! `details`, a prompt `shutdown`, and in-process tests with `aloha_plugin::testing`.
//!
//! Spec: `{"ms": 500}`. Worker configuration (`[plugins.sleeper]`): `max_ms` (default 3600000).

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Duration;

use aloha_plugin::{AppContext, Application, ExitNotifier, ExitState};
use serde::Deserialize;

/// What a submission says (`spec`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    /// How long to sleep.
    ms: u64,
}

/// What the operator says (`[plugins.sleeper]` in the worker's configuration).
#[derive(Debug, Deserialize)]
#[serde(default)]
struct Conf {
    /// The longest sleep this worker accepts.
    max_ms: u64,
}

impl Default for Conf {
    fn default() -> Self {
        Conf { max_ms: 3_600_000 }
    }
}

/// One sleeping app.
pub struct Sleeper {
    ms: u64,
    /// Set once started: tells the sleeping thread to stop early.
    stop: Option<Sender<String>>,
}

impl Application for Sleeper {
    fn create(ctx: AppContext) -> Result<Self, String> {
        let Spec { ms } = ctx.spec_as()?;
        let Conf { max_ms } = ctx.conf_as()?;
        if ms > max_ms {
            return Err(format!(
                "invalid spec: ms: {ms} is over this worker's max_ms {max_ms}"
            ));
        }
        Ok(Sleeper { ms, stop: None })
    }

    fn start(&mut self, events: ExitNotifier) -> Result<(), String> {
        let (tx, rx) = mpsc::channel::<String>();
        self.stop = Some(tx);
        let ms = self.ms;
        events.detail("planned_ms", &ms.to_string());
        std::thread::spawn(move || {
            let exit = match rx.recv_timeout(Duration::from_millis(ms)) {
                Err(RecvTimeoutError::Timeout) => ExitState::finished(0, format!("slept {ms} ms")),
                Ok(reason) => ExitState::killed(143, format!("killed: {reason}")),
                Err(RecvTimeoutError::Disconnected) => ExitState::killed(143, "killed: released"),
            };
            events.exit(exit);
        });
        Ok(())
    }

    fn shutdown(&mut self, reason: Option<&str>) -> Result<(), String> {
        if let Some(stop) = &self.stop {
            // The thread may have ended already; then there is nothing to stop.
            let _ = stop.send(reason.unwrap_or("shutdown requested").to_string());
        }
        Ok(())
    }
}

aloha_plugin::declare_application!(kind = "sleeper", app = Sleeper);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aloha_plugin::testing::TestApp;
    use aloha_plugin::{Application, ExitKind, ExitState};
    use serde_json::json;

    use super::Sleeper;

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn sleeps_then_finishes() {
        let test = TestApp::new(json!({"ms": 20}));
        let (_app, events) = test.start::<Sleeper>().unwrap();
        assert_eq!(
            events.wait_exit(T),
            Some(ExitState::finished(0, "slept 20 ms"))
        );
        assert_eq!(events.details()["planned_ms"], "20");
    }

    #[test]
    fn a_shutdown_wakes_it_up() {
        let test = TestApp::new(json!({"ms": 600_000}));
        let (mut app, events) = test.start::<Sleeper>().unwrap();
        app.shutdown(Some("wake up")).unwrap();
        let exit = events.wait_exit(T).unwrap();
        assert_eq!(
            (exit.kind, exit.message.as_str()),
            (ExitKind::Killed, "killed: wake up")
        );
        // Idempotent, even after the end.
        app.shutdown(None).unwrap();
    }

    #[test]
    fn bad_specs_are_refused_naming_the_field() {
        let refused = |spec| TestApp::new(spec).create::<Sleeper>().err().unwrap();
        assert_eq!(
            refused(json!({"ms": "soon"})),
            r#"invalid spec: ms: invalid type: string "soon", expected u64"#
        );
        assert_eq!(
            refused(json!({"ms": 1, "seconds": 1})),
            "invalid spec: seconds: unknown field `seconds`, expected `ms`"
        );
        assert_eq!(refused(json!({})), "invalid spec: missing field `ms`");
    }

    #[test]
    fn the_worker_caps_the_sleep() {
        let test = TestApp::new(json!({"ms": 2000})).with_conf(json!({"max_ms": 1000}));
        assert_eq!(
            test.create::<Sleeper>().err().unwrap(),
            "invalid spec: ms: 2000 is over this worker's max_ms 1000"
        );
        let test = TestApp::new(json!({"ms": 2000})).with_conf(json!({"max_ms": "lots"}));
        assert_eq!(
            test.create::<Sleeper>().err().unwrap(),
            r#"invalid conf: max_ms: invalid type: string "lots", expected u64"#
        );
    }
}
