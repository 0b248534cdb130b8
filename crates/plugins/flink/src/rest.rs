//! The few JobManager REST calls the plugin makes: a job's state, its failure cause, cancelling
//! it. See Flink's REST API reference (`/jobs/:jobid`, `/jobs/:jobid/exceptions`).

use std::time::Duration;

use aloha_plugin_support::http::Client;
use serde_json::Value;

use crate::job::JobState;

/// What the JobManager says about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    /// The job and its state.
    Known(JobState),
    /// The JobManager does not know the job (404): never submitted there, or forgotten (a
    /// restarted cluster without HA, or a job archived out of its history).
    Unknown,
}

/// A JobManager's REST API at `base` (`http://127.0.0.1:8081`).
#[derive(Clone)]
pub struct JobManager {
    base: String,
    http: Client,
}

impl JobManager {
    /// A client for the JobManager at `base`, with `timeout` per call.
    pub fn new(base: &str, timeout: Duration) -> JobManager {
        JobManager {
            base: base.trim_end_matches('/').to_owned(),
            http: Client::new(timeout),
        }
    }

    /// The REST base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /jobs/<id>`: the job's state.
    pub fn job_status(&self, job_id: &str) -> Result<JobStatus, String> {
        let url = format!("{}/jobs/{job_id}", self.base);
        let response = self.http.get(&url)?;
        match response.status {
            200 => match response.body.get("state").and_then(Value::as_str) {
                Some(state) => Ok(JobStatus::Known(JobState::parse(state))),
                None => Err(format!("{url}: the answer has no job state")),
            },
            404 => Ok(JobStatus::Unknown),
            status => Err(format!("{url}: HTTP {status}{}", errors(&response.body))),
        }
    }

    /// `PATCH /jobs/<id>?mode=cancel`: asks for the job to be cancelled. A job that has ended
    /// already, or that the JobManager does not know, needs no cancelling: that is not an error.
    pub fn cancel(&self, job_id: &str) -> Result<(), String> {
        let url = format!("{}/jobs/{job_id}?mode=cancel", self.base);
        let response = self.http.patch(&url)?;
        match response.status {
            200..=299 | 404 => Ok(()),
            // Flink answers 409 when the job is no longer running.
            409 => Ok(()),
            status => Err(format!("{url}: HTTP {status}{}", errors(&response.body))),
        }
    }

    /// The first line of the job's root exception, if the JobManager has one.
    pub fn failure_cause(&self, job_id: &str) -> Option<String> {
        let url = format!("{}/jobs/{job_id}/exceptions?maxExceptions=1", self.base);
        let response = self.http.get(&url).ok()?;
        if !response.is_success() {
            return None;
        }
        root_cause(&response.body)
    }
}

/// The first line of a `/jobs/<id>/exceptions` answer's root exception: `root-exception` (Flink
/// 1.x) or the newest entry of `exceptionHistory`.
pub fn root_cause(body: &Value) -> Option<String> {
    let text = body
        .get("root-exception")
        .and_then(Value::as_str)
        .or_else(|| {
            body.pointer("/exceptionHistory/entries/0/stacktrace")
                .and_then(Value::as_str)
        })
        .or_else(|| {
            body.pointer("/exceptionHistory/entries/0/exceptionName")
                .and_then(Value::as_str)
        })?;
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.to_owned())
}

/// `: <errors>` from a Flink error answer (`{"errors": ["..."]}`), or nothing.
fn errors(body: &Value) -> String {
    let Some(errors) = body.get("errors").and_then(Value::as_array) else {
        return String::new();
    };
    let first_lines: Vec<&str> = errors
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|e| e.lines().next())
        .collect();
    if first_lines.is_empty() {
        String::new()
    } else {
        format!(": {}", first_lines.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// A JobManager stand-in that answers each request from `replies` in turn (status, body) and
    /// records the request lines.
    fn fake_jobmanager(
        replies: Vec<(u16, &'static str)>,
    ) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for (status, body) in replies {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                reader.read_line(&mut first).unwrap();
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                }
                seen.push(first.trim_end().to_owned());
                let mut stream = stream;
                write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
            seen
        });
        (base, handle)
    }

    const ID: &str = "25fd1e209f19a276226689d86dbe2ecc";

    #[test]
    fn job_status_cancel_and_cause_against_a_fake_jobmanager() {
        let (base, server) = fake_jobmanager(vec![
            (200, r#"{"jid": "x", "state": "RUNNING"}"#),
            (404, r#"{"errors": ["Job could not be found."]}"#),
            (500, r#"{"errors": ["Internal server error.\nat x"]}"#),
            (202, "{}"),
            (409, r#"{"errors": ["not running"]}"#),
            (
                200,
                r#"{"root-exception": "java.lang.RuntimeException: boom\n\tat A.b(A.java:1)"}"#,
            ),
        ]);
        let jm = JobManager::new(&format!("{base}/"), Duration::from_secs(5));
        assert_eq!(jm.base(), base);
        assert_eq!(
            jm.job_status(ID),
            Ok(JobStatus::Known(JobState::Active("RUNNING".into())))
        );
        assert_eq!(jm.job_status(ID), Ok(JobStatus::Unknown));
        let err = jm.job_status(ID).unwrap_err();
        assert!(err.ends_with("HTTP 500: Internal server error."), "{err}");
        assert_eq!(jm.cancel(ID), Ok(()));
        assert_eq!(jm.cancel(ID), Ok(()));
        assert_eq!(
            jm.failure_cause(ID).as_deref(),
            Some("java.lang.RuntimeException: boom")
        );
        assert_eq!(
            server.join().unwrap(),
            [
                format!("GET /jobs/{ID} HTTP/1.1"),
                format!("GET /jobs/{ID} HTTP/1.1"),
                format!("GET /jobs/{ID} HTTP/1.1"),
                format!("PATCH /jobs/{ID}?mode=cancel HTTP/1.1"),
                format!("PATCH /jobs/{ID}?mode=cancel HTTP/1.1"),
                format!("GET /jobs/{ID}/exceptions?maxExceptions=1 HTTP/1.1"),
            ]
        );
    }

    #[test]
    fn an_unreachable_jobmanager_is_an_error() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let jm = JobManager::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2));
        assert!(jm.job_status(ID).is_err());
        assert!(jm.cancel(ID).is_err());
        assert_eq!(jm.failure_cause(ID), None);
    }

    #[test]
    fn root_causes_of_old_and_new_answers() {
        assert_eq!(
            root_cause(&json!({"root-exception": "\njava.io.IOException: disk\n\tat x"})),
            Some("java.io.IOException: disk".into())
        );
        assert_eq!(
            root_cause(&json!({"exceptionHistory": {"entries": [
                {"exceptionName": "java.lang.Error", "stacktrace": "java.lang.Error: oops\n\tat y"}
            ]}})),
            Some("java.lang.Error: oops".into())
        );
        assert_eq!(root_cause(&json!({"root-exception": null})), None);
        assert_eq!(root_cause(&json!({})), None);
    }
}
