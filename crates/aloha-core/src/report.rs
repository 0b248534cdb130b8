//! Applying what a worker says about an app: the master's one decision function for state
//! reports, used for live reports and for the app lists workers send when they (re-)register.

use chrono::{DateTime, Utc};

use crate::app::{App, TransitionError};
use crate::state::AppState;
use crate::worker::WorkerId;

/// A worker's statement about one attempt of one app.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The reporting worker.
    pub worker: WorkerId,
    /// The attempt the worker runs.
    pub attempt: u32,
    /// Its state there: RUNNING, or a terminal state.
    pub state: AppState,
    /// Exit code, for exited apps.
    pub exit_code: Option<i32>,
    /// The plugin's message.
    pub message: Option<String>,
    /// The worker is shutting down and stopped the app itself.
    pub worker_shutdown: bool,
}

/// What became of a report.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The app changed state; persist it.
    Applied(AppState),
    /// Nothing new (a repeated report): acknowledge, change nothing.
    AlreadyKnown,
    /// The master does not own this attempt on this worker. `kill` is true when the worker
    /// still runs it and must stop it.
    Stale {
        /// The worker must kill its copy.
        kill: bool,
    },
    /// The report asks for a transition the state machine forbids: refused, logged, not applied.
    Illegal(TransitionError),
}

/// Decides and applies `report` to `app`. On anything but `Applied` the app is unchanged.
pub fn apply(app: &mut App, report: &Report, at: DateTime<Utc>) -> Outcome {
    let owned = app.worker_id.as_ref() == Some(&report.worker) && app.attempt == report.attempt;
    if !owned || !(app.state.is_on_worker() || app.state == report.state) {
        return Outcome::Stale {
            kill: !report.state.is_terminal(),
        };
    }
    if app.state == report.state {
        return Outcome::AlreadyKnown;
    }
    if report.state == AppState::Launching {
        // Workers report RUNNING once the plugin started; LAUNCHING is the master's to set.
        return Outcome::Illegal(TransitionError {
            app: app.id.clone(),
            from: app.state,
            to: report.state,
        });
    }
    let reason = report.message.clone().filter(|m| !m.is_empty());
    if report.state == AppState::Killed && report.worker_shutdown && !app.kill_requested {
        // The plugin's own message only repeats that it was stopped; the cause is the worker.
        let reason = format!("worker {} shut down", report.worker);
        return match app.lose(&reason, at) {
            Ok(state) => Outcome::Applied(state),
            Err(e) => Outcome::Illegal(e),
        };
    }
    if app.is_evicted()
        && !app.kill_requested
        && !app.over_max_runtime()
        && matches!(report.state, AppState::Killed | AppState::Failed)
    {
        // Stopped by the drain of its worker: lost there, relaunched elsewhere.
        let reason = format!("worker {} drained: its deadline passed", report.worker);
        return match app.lose(&reason, at) {
            Ok(state) => Outcome::Applied(state),
            Err(e) => Outcome::Illegal(e),
        };
    }
    let before = app.exit_code;
    if report.state.is_terminal() {
        app.exit_code = report.exit_code;
    }
    // The attempt the master killed for running past its max runtime failed, however the
    // plugin saw its end.
    let (state, reason) = if app.over_max_runtime()
        && !app.kill_requested
        && matches!(report.state, AppState::Killed | AppState::Failed)
    {
        (AppState::Failed, Some(app.max_runtime_message()))
    } else {
        (report.state, reason)
    };
    match app.end_attempt(state, reason, at) {
        Ok(entered) => Outcome::Applied(entered),
        Err(e) => {
            app.exit_code = before;
            Outcome::Illegal(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{AppId, SubmitRequest};
    use chrono::TimeZone;

    fn at() -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000, 0).unwrap()
    }

    fn launched(on: &str) -> App {
        let req: SubmitRequest = serde_json::from_value(
            serde_json::json!({"name": "x", "kind": "process", "max_retries": 1}),
        )
        .unwrap();
        let mut app = App::submitted(AppId::new(1, at()), 1, req, at());
        app.transition(AppState::Launching, at(), None).unwrap();
        app.worker_id = Some(WorkerId(on.into()));
        app
    }

    fn report(worker: &str, attempt: u32, state: AppState) -> Report {
        Report {
            worker: WorkerId(worker.into()),
            attempt,
            state,
            exit_code: None,
            message: None,
            worker_shutdown: false,
        }
    }

    #[test]
    fn running_then_finished_with_exit_code() {
        let mut app = launched("w");
        assert_eq!(
            apply(&mut app, &report("w", 1, AppState::Running), at()),
            Outcome::Applied(AppState::Running)
        );
        assert_eq!(
            apply(&mut app, &report("w", 1, AppState::Running), at()),
            Outcome::AlreadyKnown
        );
        let mut r = report("w", 1, AppState::Failed);
        r.exit_code = Some(3);
        r.message = Some("exited with code 3".into());
        assert_eq!(
            apply(&mut app, &r, at()),
            Outcome::Applied(AppState::Failed)
        );
        assert_eq!(app.exit_code, Some(3));
        assert_eq!(
            apply(&mut app, &r, at()),
            Outcome::AlreadyKnown,
            "a resent final report"
        );
    }

    #[test]
    fn reports_from_elsewhere_are_stale_and_running_copies_get_killed() {
        let mut app = launched("w1");
        let before = app.clone();
        assert_eq!(
            apply(&mut app, &report("w2", 1, AppState::Running), at()),
            Outcome::Stale { kill: true }
        );
        assert_eq!(
            apply(&mut app, &report("w1", 7, AppState::Running), at()),
            Outcome::Stale { kill: true }
        );
        assert_eq!(
            apply(&mut app, &report("w2", 1, AppState::Finished), at()),
            Outcome::Stale { kill: false }
        );
        assert_eq!(app, before);
    }

    #[test]
    fn illegal_reports_are_refused() {
        let mut app = launched("w");
        apply(&mut app, &report("w", 1, AppState::Finished), at());
        let before = app.clone();
        // A terminal app hears RUNNING for the same attempt: stale, and the copy must die.
        assert_eq!(
            apply(&mut app, &report("w", 1, AppState::Running), at()),
            Outcome::Stale { kill: true }
        );
        let mut fresh = launched("w");
        fresh.transition(AppState::Unknown, at(), None).unwrap();
        assert!(matches!(
            apply(&mut fresh, &report("w", 1, AppState::Launching), at()),
            Outcome::Illegal(_)
        ));
        assert!(matches!(
            apply(&mut fresh, &report("w", 1, AppState::Submitted), at()),
            Outcome::Illegal(_)
        ));
        assert_eq!(app, before);
    }

    #[test]
    fn unknown_apps_are_recovered_by_their_worker() {
        let mut app = launched("w");
        app.transition(AppState::Running, at(), None).unwrap();
        app.transition(AppState::Unknown, at(), Some("master recovered".into()))
            .unwrap();
        assert_eq!(
            apply(&mut app, &report("w", 1, AppState::Running), at()),
            Outcome::Applied(AppState::Running)
        );
        assert_eq!(app.attempt, 1, "recovery is not a new attempt");
    }

    #[test]
    fn worker_shutdown_relaunches_unless_killed_on_request() {
        let mut app = launched("w");
        let mut r = report("w", 1, AppState::Killed);
        r.worker_shutdown = true;
        assert_eq!(
            apply(&mut app, &r, at()),
            Outcome::Applied(AppState::Relaunching)
        );
        let mut app = launched("w");
        app.kill_requested = true;
        assert_eq!(
            apply(&mut app, &r, at()),
            Outcome::Applied(AppState::Killed)
        );
    }
}
