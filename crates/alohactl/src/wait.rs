//! `submit --wait`: following an app until it ends. Time is injected through [`Clock`] so the
//! loop is tested without sleeping.

use std::io::Write;
use std::time::{Duration, Instant};

use aloha_core::{App, AppState, HistoryEntry};

use crate::client::Served;
use crate::error::CtlError;
use crate::output;

/// How long `--wait` keeps polling through an outage (every master unreachable or answering
/// 5xx) before giving up. Long enough to ride out a leader election in HA mode.
pub const OUTAGE_GRACE: Duration = Duration::from_secs(60);

/// The passing of time, as the wait loop sees it.
pub trait Clock {
    /// Now.
    fn now(&self) -> Instant;
    /// Blocks for `d`.
    fn sleep(&mut self, d: Duration);
}

/// The real clock. Ctrl-C during a sleep ends the process (the default signal action), which is
/// all `--wait` needs: the app keeps running in the cluster.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// Polls with `fetch` every `interval` until the app is in a terminal state and returns it.
/// Each state change is written to `lines` (when given) as it is discovered; transient failures
/// are tolerated for [`OUTAGE_GRACE`], with one warning per outage on `warn`.
pub fn follow(
    first: Served<App>,
    mut fetch: impl FnMut() -> Result<Served<App>, CtlError>,
    clock: &mut dyn Clock,
    interval: Duration,
    mut lines: Option<&mut dyn Write>,
    warn: &mut dyn Write,
) -> Result<Served<App>, CtlError> {
    let mut current = first;
    let mut tracker = Tracker::default();
    let mut outage_since: Option<Instant> = None;
    loop {
        let new = tracker.update(&current.data);
        if let Some(out) = lines.as_deref_mut() {
            for entry in &new {
                out.write_all(output::state_line(current.data.id.as_str(), entry).as_bytes())?;
            }
            out.flush()?;
        }
        if is_done(current.data.state) {
            return Ok(current);
        }
        clock.sleep(interval);
        match fetch() {
            Ok(app) => {
                current = app;
                outage_since = None;
            }
            Err(e) if e.is_transient() => {
                let since = match outage_since {
                    Some(since) => since,
                    None => {
                        writeln!(
                            warn,
                            "alohactl: warning: {}; retrying for up to {}",
                            output::clean(&e.to_string()),
                            output::duration(OUTAGE_GRACE)
                        )?;
                        *outage_since.insert(clock.now())
                    }
                };
                if clock.now().duration_since(since) >= OUTAGE_GRACE {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether waiting is over: FINISHED, FAILED, KILLED or ERROR.
pub fn is_done(state: AppState) -> bool {
    state.is_terminal()
}

/// How a finished wait ends the command: FINISHED is success, any other end is an error that
/// says why.
pub fn outcome(app: &App) -> Result<(), CtlError> {
    if app.state == AppState::Finished {
        return Ok(());
    }
    let message = app
        .message
        .clone()
        .filter(|m| !m.trim().is_empty())
        .or_else(|| app.exit_code.map(|c| format!("exit code {c}")));
    Err(CtlError::AppEnded {
        id: app.id.to_string(),
        state: app.state,
        message,
    })
}

/// Which state changes of an app have been shown, so each is shown once.
///
/// Changes come from the app's history (so a state passed through between two polls is still
/// shown, with its own time). If the served state is ahead of the history, it is shown anyway,
/// and the history entry that later accounts for it is not shown a second time.
#[derive(Debug, Default)]
pub struct Tracker {
    /// The newest history entry seen.
    last_entry: Option<HistoryEntry>,
    /// The newest state shown.
    shown: Option<AppState>,
    /// `shown` came from the served state, not from the history.
    ahead_of_history: bool,
}

impl Tracker {
    /// The changes in `app` not shown yet, oldest first.
    pub fn update(&mut self, app: &App) -> Vec<HistoryEntry> {
        let history = &app.history;
        let start = match &self.last_entry {
            None => 0,
            Some(last) => match history.iter().rposition(|h| h == last) {
                Some(i) => i + 1,
                // The entry was trimmed from a long history: go by time instead.
                None => history
                    .iter()
                    .position(|h| h.at > last.at)
                    .unwrap_or(history.len()),
            },
        };
        let mut new = Vec::new();
        for entry in &history[start..] {
            self.last_entry = Some(entry.clone());
            let already_shown = self.ahead_of_history && self.shown == Some(entry.state);
            self.ahead_of_history = false;
            if !already_shown {
                self.shown = Some(entry.state);
                new.push(entry.clone());
            }
        }
        if self.shown != Some(app.state) {
            self.shown = Some(app.state);
            self.ahead_of_history = true;
            new.push(HistoryEntry {
                state: app.state,
                at: app
                    .finished_at
                    .or(app.started_at)
                    .unwrap_or(app.submitted_at),
                message: app.message.clone(),
            });
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use std::collections::VecDeque;

    struct FakeClock {
        now: Instant,
        slept: Vec<Duration>,
    }

    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            self.now
        }
        fn sleep(&mut self, d: Duration) {
            self.now += d;
            self.slept.push(d);
        }
    }

    fn clock() -> FakeClock {
        FakeClock {
            now: Instant::now(),
            slept: Vec::new(),
        }
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_704_164_645 + s, 0).unwrap()
    }

    fn entry(state: AppState, at: i64, message: Option<&str>) -> HistoryEntry {
        HistoryEntry {
            state,
            at: t(at),
            message: message.map(String::from),
        }
    }

    /// An app whose history is `steps`; its state is the last step's.
    fn app(steps: &[(AppState, Option<&str>)]) -> Served<App> {
        let history: Vec<HistoryEntry> = steps
            .iter()
            .enumerate()
            .map(|(i, (s, m))| entry(*s, i as i64, *m))
            .collect();
        let last = history.last().unwrap().clone();
        let raw = serde_json::json!({
            "id": "app-1", "seq": 1, "name": "n", "kind": "process", "spec": {}, "cores": 1,
            "memory_mb": 1, "max_retries": 0, "labels": {}, "state": last.state,
            "worker_id": null, "attempt": 1, "retries": 0, "exit_code": null,
            "message": last.message, "submitted_at": t(0), "started_at": null,
            "finished_at": null, "history": history,
        });
        Served {
            data: serde_json::from_value(raw.clone()).unwrap(),
            raw,
        }
    }

    use AppState::*;

    #[test]
    fn terminal_states_end_the_wait() {
        for s in AppState::ALL {
            let expected = matches!(s, Finished | Failed | Killed | Error);
            assert_eq!(is_done(s), expected, "{s}");
        }
    }

    #[test]
    fn only_finished_is_success() {
        assert!(outcome(&app(&[(Submitted, None), (Finished, None)]).data).is_ok());
        let failed = app(&[(Running, None), (Failed, Some("exited with code 3"))]).data;
        assert_eq!(
            outcome(&failed).unwrap_err().to_string(),
            "app app-1 ended FAILED: exited with code 3"
        );
        let mut no_message = failed.clone();
        no_message.message = None;
        no_message.exit_code = Some(3);
        assert_eq!(
            outcome(&no_message).unwrap_err().to_string(),
            "app app-1 ended FAILED: exit code 3"
        );
        let killed = app(&[(Running, None), (Killed, None)]).data;
        let err = outcome(&killed).unwrap_err();
        assert_eq!(err.to_string(), "app app-1 ended KILLED");
        assert_eq!(err.exit_code(), std::process::ExitCode::from(1));
    }

    #[test]
    fn every_state_change_is_printed_once() {
        let steps = [
            (Submitted, None),
            (Launching, None),
            (Running, None),
            (Failed, Some("exited with code 3")),
        ];
        // Polls see SUBMITTED, SUBMITTED, then RUNNING (LAUNCHING was missed between polls but
        // is in the history), then FAILED.
        let mut polls: VecDeque<Served<App>> =
            [1, 3, 4].iter().map(|&n| app(&steps[..n])).collect();
        let mut clock = clock();
        let (mut out, mut warn) = (Vec::new(), Vec::new());
        let end = follow(
            app(&steps[..1]),
            || Ok(polls.pop_front().expect("polled after the end")),
            &mut clock,
            Duration::from_millis(500),
            Some(&mut out),
            &mut warn,
        )
        .unwrap();
        assert_eq!(end.data.state, Failed);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\
2024-01-02T03:04:05Z app-1 SUBMITTED
2024-01-02T03:04:06Z app-1 LAUNCHING
2024-01-02T03:04:07Z app-1 RUNNING
2024-01-02T03:04:08Z app-1 FAILED exited with code 3
"
        );
        assert!(warn.is_empty());
        assert_eq!(clock.slept, [Duration::from_millis(500); 3]);
    }

    #[test]
    fn an_already_ended_app_is_not_polled() {
        let mut clock = clock();
        let end = follow(
            app(&[(Submitted, None), (Error, Some("no plugin"))]),
            || panic!("must not poll"),
            &mut clock,
            Duration::from_secs(1),
            None,
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(end.data.state, Error);
    }

    #[test]
    fn short_outages_are_ridden_out() {
        let mut clock = clock();
        let mut calls = 0;
        let mut warn = Vec::new();
        let end = follow(
            app(&[(Submitted, None)]),
            || {
                calls += 1;
                match calls {
                    1..=3 => Err(CtlError::Unreachable {
                        failures: vec![("http://m:1".into(), "refused".into())],
                    }),
                    4 => Err(CtlError::Api {
                        status: reqwest::StatusCode::SERVICE_UNAVAILABLE,
                        message: "electing".into(),
                    }),
                    _ => Ok(app(&[(Submitted, None), (Finished, None)])),
                }
            },
            &mut clock,
            Duration::from_secs(1),
            None,
            &mut warn,
        )
        .unwrap();
        assert_eq!(end.data.state, Finished);
        let warn = String::from_utf8(warn).unwrap();
        assert_eq!(warn.lines().count(), 1, "one warning per outage: {warn}");
        assert!(warn.starts_with("alohactl: warning: cannot reach master http://m:1: refused"));
    }

    #[test]
    fn long_outages_and_real_errors_end_the_wait() {
        let mut clock = clock();
        let start = clock.now;
        let err = follow(
            app(&[(Running, None)]),
            || Err(CtlError::Unreachable { failures: vec![] }),
            &mut clock,
            Duration::from_secs(2),
            None,
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(matches!(err, CtlError::Unreachable { .. }));
        let waited = clock.now - start;
        assert!(waited >= OUTAGE_GRACE && waited <= OUTAGE_GRACE + Duration::from_secs(4));

        let err = follow(
            app(&[(Running, None)]),
            || {
                Err(CtlError::Api {
                    status: reqwest::StatusCode::NOT_FOUND,
                    message: "no app app-1".into(),
                })
            },
            &mut clock,
            Duration::from_secs(2),
            None,
            &mut Vec::new(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "no app app-1 (HTTP 404 Not Found)");
    }

    #[test]
    fn changes_survive_trimmed_or_inconsistent_histories() {
        let full = app(&[(Submitted, None), (Launching, None), (Running, None)]).data;
        let mut tracker = Tracker::default();
        assert_eq!(tracker.update(&full).len(), 3);
        assert!(tracker.update(&full).is_empty());

        // The last seen entry was trimmed away: entries after its time are new.
        let mut tracker = Tracker::default();
        tracker.update(&app(&[(Submitted, None), (Launching, Some("trimmed"))]).data);
        let mut trimmed = full.clone();
        trimmed.history.remove(1);
        assert_eq!(tracker.update(&trimmed), [full.history[2].clone()]);

        // A state the history does not show yet is reported once, not again when the history
        // catches up.
        let mut tracker = Tracker::default();
        let mut ahead = app(&[(Submitted, None), (Launching, None)]).data;
        ahead.state = Running;
        let states = |v: Vec<HistoryEntry>| v.into_iter().map(|h| h.state).collect::<Vec<_>>();
        assert_eq!(
            states(tracker.update(&ahead)),
            [Submitted, Launching, Running]
        );
        assert_eq!(states(tracker.update(&full)), []);
        let done = app(&[
            (Submitted, None),
            (Launching, None),
            (Running, None),
            (Killed, Some("killed")),
        ])
        .data;
        let new = tracker.update(&done);
        assert_eq!(new.len(), 1);
        assert_eq!(
            (new[0].state, new[0].message.as_deref()),
            (Killed, Some("killed"))
        );
    }
}
