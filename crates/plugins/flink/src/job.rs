//! A Flink job as the plugin sees it: its id (read from the CLI's output), its state (read from
//! the JobManager) and what each state means for the app.

use std::fmt;

use aloha_plugin::ExitState;

/// The exit code of an app whose job FAILED (or was cancelled by someone else).
pub const FAILED_CODE: i32 = 1;

/// The exit code of an app whose job was cancelled because the app was shut down: that of a
/// process stopped by SIGTERM.
pub const KILLED_CODE: i32 = 143;

/// The JobID in a line of `flink run` output (`Job has been submitted with JobID <32 hex>`),
/// if any. Any `JobID` followed by 32 hex digits counts, so that the other wordings of the CLI
/// (`JobID: ...`) are understood too.
pub fn find_job_id(line: &str) -> Option<&str> {
    let mut rest = line;
    while let Some(at) = rest.find("JobID") {
        let after = &rest[at + "JobID".len()..];
        let candidate = after.trim_start_matches([' ', ':', '=', '\t']);
        let hex_len = candidate
            .bytes()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        let ends_word = candidate
            .as_bytes()
            .get(hex_len)
            .is_none_or(|b| !b.is_ascii_alphanumeric());
        if hex_len == 32 && ends_word {
            return Some(&candidate[..32]);
        }
        rest = after;
    }
    None
}

/// Whether `id` is a Flink JobID: 32 hex digits.
pub fn is_job_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A job's status as the JobManager reports it (`GET /jobs/<id>` → `state`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Ended successfully.
    Finished,
    /// Ended unsuccessfully (restarts exhausted).
    Failed,
    /// Cancelled (by us or by someone else).
    Canceled,
    /// Any state the job can still leave: INITIALIZING, CREATED, RUNNING, FAILING, CANCELLING,
    /// RESTARTING, SUSPENDED, RECONCILING, or one this plugin does not know.
    Active(String),
}

impl JobState {
    /// Parses the JobManager's state name.
    pub fn parse(name: &str) -> JobState {
        match name {
            "FINISHED" => JobState::Finished,
            "FAILED" => JobState::Failed,
            "CANCELED" => JobState::Canceled,
            other => JobState::Active(other.to_owned()),
        }
    }

    /// The state's name as the JobManager spells it.
    pub fn name(&self) -> &str {
        match self {
            JobState::Finished => "FINISHED",
            JobState::Failed => "FAILED",
            JobState::Canceled => "CANCELED",
            JobState::Active(name) => name,
        }
    }

    /// Whether the job can no longer change (globally terminal, in Flink's words).
    pub fn is_terminal(&self) -> bool {
        !matches!(self, JobState::Active(_))
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the app ends when its job reaches `state`; `None` while the job is not terminal.
///
/// `shutdown` is `Some(reason)` once the app was asked to stop: then the end is KILLED whatever
/// the job's last state, as for any other kind of app. Otherwise FINISHED → FINISHED, FAILED →
/// FAILED (with `cause`, the JobManager's root exception, if known), and CANCELED → FAILED, since
/// someone else cancelled it.
pub fn outcome(
    job_id: &str,
    state: &JobState,
    shutdown: Option<&Option<String>>,
    cause: Option<&str>,
) -> Option<ExitState> {
    if !state.is_terminal() {
        return None;
    }
    if let Some(reason) = shutdown {
        let reason = reason.as_deref().unwrap_or("shutdown requested");
        return Some(ExitState::killed(
            KILLED_CODE,
            format!("killed: {reason} (Flink job {job_id} ended {state})"),
        ));
    }
    Some(match state {
        JobState::Finished => ExitState::finished(0, format!("Flink job {job_id} FINISHED")),
        JobState::Failed => ExitState::failed(
            FAILED_CODE,
            match cause {
                Some(cause) => format!("Flink job {job_id} FAILED: {cause}"),
                None => format!("Flink job {job_id} FAILED"),
            },
        ),
        JobState::Canceled => ExitState::failed(
            FAILED_CODE,
            format!("Flink job {job_id} was CANCELED, but not by Aloha"),
        ),
        JobState::Active(_) => unreachable!("checked terminal above"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloha_plugin::ExitKind;

    const ID: &str = "25fd1e209f19a276226689d86dbe2ecc";

    #[test]
    fn the_job_id_from_cli_output() {
        assert_eq!(
            find_job_id("Job has been submitted with JobID 25fd1e209f19a276226689d86dbe2ecc"),
            Some(ID)
        );
        assert_eq!(
            find_job_id(
                "Program execution finished\nJob with JobID: 25FD1E209F19A276226689D86DBE2ECC done"
            ),
            Some("25FD1E209F19A276226689D86DBE2ECC")
        );
        for line in [
            "Job has been submitted with JobID 25fd1e209f19a2762266",
            "Job has been submitted with JobID 25fd1e209f19a276226689d86dbe2eccff",
            "JobID zzfd1e209f19a276226689d86dbe2ecc",
            "submitted",
            "",
        ] {
            assert_eq!(find_job_id(line), None, "{line}");
        }
        // A first mention without an id does not hide a second with one.
        assert_eq!(
            find_job_id(&format!("JobID unknown; JobID {ID}.")),
            Some(ID)
        );
        assert!(is_job_id(ID));
        assert!(!is_job_id("abc"));
    }

    #[test]
    fn states_parse_and_know_whether_they_are_terminal() {
        for (name, terminal) in [
            ("FINISHED", true),
            ("FAILED", true),
            ("CANCELED", true),
            ("RUNNING", false),
            ("CANCELLING", false),
            ("RESTARTING", false),
            ("SUSPENDED", false),
            ("SOMETHING_NEW", false),
        ] {
            let state = JobState::parse(name);
            assert_eq!(state.is_terminal(), terminal, "{name}");
            assert_eq!(state.name(), name);
            assert_eq!(state.to_string(), name);
        }
    }

    #[test]
    fn terminal_states_map_to_app_ends() {
        let running = JobState::parse("RUNNING");
        assert_eq!(outcome(ID, &running, None, None), None);
        assert_eq!(outcome(ID, &running, Some(&None), None), None);

        let s = outcome(ID, &JobState::Finished, None, None).unwrap();
        assert_eq!(
            s,
            ExitState::finished(0, format!("Flink job {ID} FINISHED"))
        );

        let s = outcome(
            ID,
            &JobState::Failed,
            None,
            Some("java.lang.RuntimeException: x"),
        );
        assert_eq!(
            s.unwrap(),
            ExitState::failed(
                1,
                format!("Flink job {ID} FAILED: java.lang.RuntimeException: x")
            )
        );
        let s = outcome(ID, &JobState::Failed, None, None).unwrap();
        assert_eq!(s.message, format!("Flink job {ID} FAILED"));

        let s = outcome(ID, &JobState::Canceled, None, None).unwrap();
        assert_eq!((s.kind, s.code), (ExitKind::Failed, 1));
        assert!(s.message.contains("not by Aloha"), "{}", s.message);
    }

    #[test]
    fn after_a_shutdown_every_end_is_killed() {
        let reason = Some("by ops".to_owned());
        let s = outcome(ID, &JobState::Canceled, Some(&reason), None).unwrap();
        assert_eq!(
            s,
            ExitState::killed(
                143,
                format!("killed: by ops (Flink job {ID} ended CANCELED)")
            )
        );
        let s = outcome(ID, &JobState::Finished, Some(&None), None).unwrap();
        assert_eq!(s.kind, ExitKind::Killed);
        assert!(
            s.message.starts_with("killed: shutdown requested"),
            "{}",
            s.message
        );
    }
}
