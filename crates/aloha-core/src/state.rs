//! The app state machine.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The state of an app, as in Aloha (and Spark standalone's `DriverState`).
///
/// ```text
///  SUBMITTED ──▶ LAUNCHING ──▶ RUNNING ──▶ FINISHED | FAILED | KILLED
///                 ▲    │          │
///                 │    ▼          ▼
///             RELAUNCHING ◀──── UNKNOWN   (UNKNOWN: the master recovered and the worker has
///                                          not reported yet; LAUNCHING and RUNNING enter it)
/// ```
///
/// Precisely: SUBMITTED and RELAUNCHING go to LAUNCHING, KILLED, FAILED or ERROR; LAUNCHING
/// to RUNNING, FINISHED, FAILED, KILLED, ERROR, RELAUNCHING or UNKNOWN; RUNNING to FINISHED,
/// FAILED, KILLED, RELAUNCHING or UNKNOWN; UNKNOWN to anything but SUBMITTED and itself.
///
/// SUBMITTED and RELAUNCHING are the waiting states (the app is in the queue); FINISHED, FAILED,
/// KILLED and ERROR are terminal.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AppState {
    /// Accepted and queued, never launched.
    Submitted,
    /// Placed on a worker; the launch command is on its way or the plugin is starting.
    Launching,
    /// The worker reported the plugin started.
    Running,
    /// Exited successfully.
    Finished,
    /// Exited unsuccessfully, or was lost with no retries left.
    Failed,
    /// Stopped on request.
    Killed,
    /// Lost (worker died or stopped) and queued again for another attempt.
    Relaunching,
    /// The master recovered its state and has not heard from the app's worker yet.
    Unknown,
    /// The app could not be run at all (no plugin for its kind, a plugin that refused the spec).
    Error,
}

impl AppState {
    /// Every state, in declaration order.
    pub const ALL: [AppState; 9] = [
        AppState::Submitted,
        AppState::Launching,
        AppState::Running,
        AppState::Finished,
        AppState::Failed,
        AppState::Killed,
        AppState::Relaunching,
        AppState::Unknown,
        AppState::Error,
    ];

    /// The canonical upper-case name used on the wire and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            AppState::Submitted => "SUBMITTED",
            AppState::Launching => "LAUNCHING",
            AppState::Running => "RUNNING",
            AppState::Finished => "FINISHED",
            AppState::Failed => "FAILED",
            AppState::Killed => "KILLED",
            AppState::Relaunching => "RELAUNCHING",
            AppState::Unknown => "UNKNOWN",
            AppState::Error => "ERROR",
        }
    }

    /// No transition leaves a terminal state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            AppState::Finished | AppState::Failed | AppState::Killed | AppState::Error
        )
    }

    /// The app sits in the waiting queue.
    pub fn is_waiting(self) -> bool {
        matches!(self, AppState::Submitted | AppState::Relaunching)
    }

    /// The app is bound to a worker and holds that worker's resources.
    pub fn is_on_worker(self) -> bool {
        matches!(
            self,
            AppState::Launching | AppState::Running | AppState::Unknown
        )
    }

    /// Whether `self -> next` is a legal transition. Staying in the same state is not a
    /// transition (callers treat a repeated report as already applied).
    pub fn can_move_to(self, next: AppState) -> bool {
        use AppState::*;
        match self {
            Submitted | Relaunching => matches!(next, Launching | Killed | Failed | Error),
            Launching => matches!(
                next,
                Running | Finished | Failed | Killed | Error | Relaunching | Unknown
            ),
            Running => matches!(next, Finished | Failed | Killed | Relaunching | Unknown),
            Unknown => matches!(
                next,
                Launching | Running | Finished | Failed | Killed | Error | Relaunching
            ),
            Finished | Failed | Killed | Error => false,
        }
    }
}

impl fmt::Display for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`AppState`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown app state {0:?} (expected one of SUBMITTED, LAUNCHING, RUNNING, FINISHED, FAILED, KILLED, RELAUNCHING, UNKNOWN, ERROR)")]
pub struct ParseStateError(pub String);

impl FromStr for AppState {
    type Err = ParseStateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AppState::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ParseStateError(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AppState::*;

    #[test]
    fn terminal_states_have_no_way_out() {
        for from in [Finished, Failed, Killed, Error] {
            assert!(from.is_terminal());
            for to in AppState::ALL {
                assert!(!from.can_move_to(to), "{from} -> {to} must be illegal");
            }
        }
    }

    #[test]
    fn the_happy_path_is_legal() {
        assert!(Submitted.can_move_to(Launching));
        assert!(Launching.can_move_to(Running));
        assert!(Running.can_move_to(Finished));
    }

    #[test]
    fn waiting_apps_cannot_report_running_without_launch() {
        assert!(!Submitted.can_move_to(Running));
        assert!(!Relaunching.can_move_to(Running));
        assert!(!Submitted.can_move_to(Finished));
    }

    #[test]
    fn lost_apps_can_be_relaunched_and_recovered() {
        assert!(Running.can_move_to(Relaunching));
        assert!(Relaunching.can_move_to(Launching));
        assert!(Running.can_move_to(Unknown));
        assert!(Unknown.can_move_to(Running));
        assert!(Unknown.can_move_to(Relaunching));
    }

    #[test]
    fn no_state_moves_to_itself_or_back_to_submitted() {
        for s in AppState::ALL {
            assert!(!s.can_move_to(s), "{s} -> {s}");
            assert!(!s.can_move_to(Submitted), "{s} -> SUBMITTED");
        }
    }

    #[test]
    fn names_round_trip_and_parse_case_insensitively() {
        for s in AppState::ALL {
            assert_eq!(s.as_str().parse::<AppState>().unwrap(), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert_eq!("running".parse::<AppState>().unwrap(), Running);
        assert!("RUN".parse::<AppState>().is_err());
    }
}
