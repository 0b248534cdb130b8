//! An example Application plugin of kind `sleeper`: sleeps for `spec.ms` milliseconds, then
//! finishes; a kill wakes it up early. It shows the whole contract: settings checked in
//! `create`, a `start` that returns at once and reports the exit later from its own thread, a
//! detail for the app's `details`, and a prompt `shutdown`.
//!
//! Spec: `{"ms": 500}`. Worker configuration (`[plugins.sleeper]`): `max_ms` (default 3600000).

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Duration;

use aloha_plugin::{AppContext, Application, ExitNotifier, ExitState};

/// One sleeping app.
pub struct Sleeper {
    ms: u64,
    /// Set once started: tells the sleeping thread to stop early.
    stop: Option<Sender<String>>,
}

impl Application for Sleeper {
    fn create(ctx: AppContext) -> Result<Self, String> {
        let ms = ctx.spec()["ms"]
            .as_u64()
            .ok_or("invalid sleeper spec: `ms` must be a non-negative integer")?;
        let max = ctx.conf["max_ms"].as_u64().unwrap_or(3_600_000);
        if ms > max {
            return Err(format!("invalid sleeper spec: `ms` {ms} is over this worker's max_ms {max}"));
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
