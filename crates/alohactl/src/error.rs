//! The CLI's one error type, mapped once to an exit code in `main`.

use std::io;
use std::process::ExitCode;

use aloha_core::AppState;
use reqwest::StatusCode;

/// Everything that makes `alohactl` exit non-zero. Each variant renders as the single line printed
/// after `alohactl: `.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The command line is well-formed for clap but its values do not fit together
    /// (e.g. a command after `--` with a non-process kind, a `--spec` that is not a JSON object).
    #[error("{0}")]
    Usage(String),

    /// No master answered at all: every address was refused, unresolvable or silent.
    #[error("{}", describe_unreachable(.failures))]
    Unreachable {
        /// `(master, why)` for every address tried, in order.
        failures: Vec<(String, String)>,
    },

    /// A request that changes something was sent but no answer came back. Without an idempotency
    /// key (a kill) it was not retried against another master; with one (a submission) every
    /// master was tried and none answered.
    #[error(
        "{method} {url} failed: {cause}; it may or may not have been applied{}",
        .idempotency_key.as_deref().map(retry_hint).unwrap_or_default()
    )]
    Uncertain {
        /// `GET`, `POST`.
        method: String,
        /// The full URL.
        url: String,
        /// Why no answer came.
        cause: String,
        /// The request's idempotency key, with which repeating it is safe.
        idempotency_key: Option<String>,
    },

    /// The master answered with an error status; `message` is its `error` string.
    #[error("{message} (HTTP {})", status_text(*.status))]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The API's `error` string, or a description of the body when it had none.
        message: String,
    },

    /// A success status whose body is not what the API serves.
    #[error("unexpected response from {url} (HTTP {}): {problem}", status_text(*.status))]
    BadResponse {
        /// The full URL.
        url: String,
        /// HTTP status.
        status: StatusCode,
        /// What is wrong with the body.
        problem: String,
    },

    /// `submit --wait` saw the app end in a state other than FINISHED.
    #[error("app {id} ended {state}{}", .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    AppEnded {
        /// The app.
        id: String,
        /// Its terminal state.
        state: AppState,
        /// Why, as the master put it.
        message: Option<String>,
    },

    /// `submit-batch`: the master refused some of the apps (each one's error is in the output).
    #[error("{refused} of {total} apps were refused")]
    Refused {
        /// Apps refused.
        refused: usize,
        /// Apps in the file.
        total: usize,
    },

    /// `submit-batch`: a chunk failed as a whole; the message says where, how far the batch got
    /// and how to finish it safely.
    #[error("{0}")]
    BatchStopped(String),

    /// Something that cannot happen with a sane environment (e.g. the HTTP client cannot be set
    /// up); reported rather than panicking.
    #[error("{0}")]
    Internal(String),

    /// Writing to stdout or stderr failed.
    #[error("cannot write output: {0}")]
    Output(#[from] io::Error),
}

impl CtlError {
    /// 2 for usage errors (as clap uses), 1 for everything else.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CtlError::Usage(_) => ExitCode::from(2),
            _ => ExitCode::from(1),
        }
    }

    /// Whether asking again later may succeed: the cluster was unreachable, answered with a
    /// server error (e.g. during a leader election) or with garbage (e.g. a proxy's error page).
    pub fn is_transient(&self) -> bool {
        match self {
            CtlError::Unreachable { .. } | CtlError::BadResponse { .. } => true,
            CtlError::Api { status, .. } => status.is_server_error(),
            _ => false,
        }
    }

    /// Stdout was closed by the reader (`alohactl list | head`): not worth a message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CtlError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

fn retry_hint(key: &str) -> String {
    format!(" (repeating it with --idempotency-key {key} is safe)")
}

fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

fn describe_unreachable(failures: &[(String, String)]) -> String {
    match failures {
        [] => "no master address given".to_string(),
        [(url, why)] => format!("cannot reach master {url}: {why}"),
        many => {
            let each: Vec<String> = many
                .iter()
                .map(|(url, why)| format!("{url}: {why}"))
                .collect();
            format!("cannot reach any master ({})", each.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_readable_line() {
        let e = CtlError::Api {
            status: StatusCode::NOT_FOUND,
            message: "no app app-1".into(),
        };
        assert_eq!(e.to_string(), "no app app-1 (HTTP 404 Not Found)");

        let e = CtlError::Unreachable {
            failures: vec![("http://a:1".into(), "Connection refused".into())],
        };
        assert_eq!(
            e.to_string(),
            "cannot reach master http://a:1: Connection refused"
        );
        let e = CtlError::Unreachable {
            failures: vec![
                ("http://a:1".into(), "Connection refused".into()),
                ("http://b:2".into(), "timed out after 10s".into()),
            ],
        };
        assert_eq!(
            e.to_string(),
            "cannot reach any master (http://a:1: Connection refused; http://b:2: timed out after 10s)"
        );

        let e = CtlError::AppEnded {
            id: "app-1".into(),
            state: AppState::Failed,
            message: Some("exited with code 3".into()),
        };
        assert_eq!(e.to_string(), "app app-1 ended FAILED: exited with code 3");
        let e = CtlError::AppEnded {
            id: "app-1".into(),
            state: AppState::Killed,
            message: None,
        };
        assert_eq!(e.to_string(), "app app-1 ended KILLED");

        let e = CtlError::Uncertain {
            method: "POST".into(),
            url: "http://a:1/api/v1/apps".into(),
            cause: "no answer within 10s".into(),
            idempotency_key: Some("k1".into()),
        };
        assert_eq!(
            e.to_string(),
            "POST http://a:1/api/v1/apps failed: no answer within 10s; it may or may not have been \
             applied (repeating it with --idempotency-key k1 is safe)"
        );
    }

    #[test]
    fn exit_codes_and_transience() {
        assert_eq!(CtlError::Usage("x".into()).exit_code(), ExitCode::from(2));
        let api = |code| CtlError::Api {
            status: StatusCode::from_u16(code).unwrap(),
            message: String::new(),
        };
        assert_eq!(api(404).exit_code(), ExitCode::from(1));
        assert!(api(503).is_transient());
        assert!(!api(404).is_transient());
        assert!(CtlError::Unreachable { failures: vec![] }.is_transient());
        assert!(CtlError::Output(io::Error::from(io::ErrorKind::BrokenPipe)).is_broken_pipe());
    }
}
