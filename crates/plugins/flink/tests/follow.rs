//! The plugin's follower against stand-ins: a fake `flink` CLI (a shell script printing what the
//! real one prints) and a fake JobManager (a small HTTP server scripted per test). Fast and
//! deterministic; the real thing is tested end to end in `tests/flink.rs` at the workspace root.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aloha_plugin::{AppContext, Application, ExitKind, ExitNotifier, ExitState, PluginEvent};
use aloha_plugin_flink::FlinkApp;
use serde_json::json;

const JOB: &str = "0123456789abcdef0123456789abcdef";
const DEADLINE: Duration = Duration::from_secs(20);

/// A JobManager stand-in: answers `GET /jobs/<JOB>` with the current state, which a
/// `PATCH ...?mode=cancel` turns to CANCELED (if `cancellable`); records every request.
struct FakeJobManager {
    port: u16,
    state: Arc<Mutex<Fake>>,
}

struct Fake {
    /// The states `GET` answers, in turn; the last one sticks. `None` answers 404.
    states: Vec<Option<&'static str>>,
    cancellable: bool,
    requests: Vec<String>,
}

impl FakeJobManager {
    fn start(states: Vec<Option<&'static str>>, cancellable: bool) -> FakeJobManager {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(Fake {
            states,
            cancellable,
            requests: Vec::new(),
        }));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    continue;
                }
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() || line == "\r\n" || line.is_empty() {
                        break;
                    }
                }
                let request = first.trim_end().to_owned();
                let (status, body) = {
                    let mut fake = shared.lock().unwrap();
                    fake.requests.push(request.clone());
                    if request.starts_with("PATCH ") {
                        if fake.cancellable {
                            fake.states = vec![Some("CANCELED")];
                        }
                        (202, "{}".to_owned())
                    } else {
                        let current = fake.states[0];
                        if fake.states.len() > 1 {
                            fake.states.remove(0);
                        }
                        match current {
                            Some(state) => {
                                (200, format!(r#"{{"jid": "{JOB}", "state": "{state}"}}"#))
                            }
                            None => (404, r#"{"errors": ["Job could not be found."]}"#.to_owned()),
                        }
                    }
                };
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        FakeJobManager { port, state }
    }

    fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

/// An app of the plugin with a fake CLI running `script`, against the fake JobManager.
struct TestApp {
    app: FlinkApp,
    events: Receiver<PluginEvent>,
    dir: tempfile::TempDir,
}

impl TestApp {
    fn start(script: &str, jobmanager: &FakeJobManager) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let cli = dir.path().join("fake-flink");
        std::fs::write(&cli, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("job.jar"), "").unwrap();
        let ctx = AppContext::new(
            json!({"id": "app-1", "name": "t", "kind": "flink", "spec": {
                "jar": "job.jar",
                "flink": cli,
                "jobmanager": format!("127.0.0.1:{}", jobmanager.port),
                "poll_interval_ms": 50,
                "kill_grace_ms": 1000,
            }}),
            dir.path(),
        );
        let mut app = FlinkApp::create(ctx).unwrap();
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        app.start(ExitNotifier::from_fn(move |e| {
            let _ = tx.lock().unwrap().send(e);
        }))
        .unwrap();
        TestApp {
            app,
            events: rx,
            dir,
        }
    }

    /// Waits for a detail with `key`; returns its value.
    fn wait_detail(&self, key: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(PluginEvent::Detail { key: k, value }) if k == key => return value,
                Ok(PluginEvent::Detail { .. }) => {}
                other => panic!("waiting for detail {key}: {other:?}"),
            }
        }
    }

    /// Waits for the exit; returns it and the details before it.
    fn wait_exit(&self) -> (ExitState, Vec<(String, String)>) {
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
}

fn submitted() -> String {
    format!("echo 'Job has been submitted with JobID {JOB}'")
}

fn detail<'a>(details: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    details
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn a_job_is_followed_to_finished() {
    let jm = FakeJobManager::start(
        vec![
            Some("INITIALIZING"),
            Some("RUNNING"),
            Some("RUNNING"),
            Some("FINISHED"),
        ],
        false,
    );
    let t = TestApp::start(&submitted(), &jm);
    let (exit, details) = t.wait_exit();
    assert_eq!(
        exit,
        ExitState::finished(0, format!("Flink job {JOB} FINISHED"))
    );
    assert_eq!(detail(&details, "flink_job_id"), [JOB]);
    assert_eq!(
        detail(&details, "flink_job_state"),
        ["INITIALIZING", "RUNNING", "FINISHED"]
    );
    assert!(jm
        .requests()
        .iter()
        .all(|r| r == &format!("GET /jobs/{JOB} HTTP/1.1")));
    let stdout = std::fs::read_to_string(t.dir.path().join("stdout")).unwrap();
    assert!(stdout.contains(JOB), "{stdout}");
}

#[test]
fn the_cli_command_line_and_environment() {
    let jm = FakeJobManager::start(vec![Some("FINISHED")], false);
    let t = TestApp::start(
        &format!(
            "echo \"args: $*\"; echo \"log dir: $FLINK_LOG_DIR\"; pwd; {}",
            submitted()
        ),
        &jm,
    );
    assert_eq!(t.wait_exit().0.kind, ExitKind::Finished);
    let out = std::fs::read_to_string(t.dir.path().join("stdout")).unwrap();
    let dir = t.dir.path().to_string_lossy().into_owned();
    assert!(
        out.contains(&format!(
            "args: run -m 127.0.0.1:{} -d {dir}/job.jar\n",
            jm.port
        )),
        "{out}"
    );
    assert!(out.contains(&format!("log dir: {dir}\n")), "{out}");
    assert!(out.contains(&format!("\n{dir}\n")), "{out}");
}

#[test]
fn shutdown_cancels_the_job_and_reports_killed() {
    let jm = FakeJobManager::start(vec![Some("RUNNING")], true);
    let t = TestApp::start(&submitted(), &jm);
    assert_eq!(t.wait_detail("flink_job_state"), "RUNNING");
    let mut app = t.app;
    app.shutdown(Some("by the test")).unwrap();
    let t = TestApp { app, ..t };
    let (exit, _) = t.wait_exit();
    assert_eq!(
        exit,
        ExitState::killed(
            143,
            format!("killed: by the test (Flink job {JOB} ended CANCELED)")
        )
    );
    assert!(jm
        .requests()
        .contains(&format!("PATCH /jobs/{JOB}?mode=cancel HTTP/1.1")));
}

#[test]
fn a_job_that_will_not_cancel_is_reported_killed_after_the_grace_period() {
    let jm = FakeJobManager::start(vec![Some("RUNNING")], false);
    let mut t = TestApp::start(&submitted(), &jm);
    assert_eq!(t.wait_detail("flink_job_state"), "RUNNING");
    let asked = Instant::now();
    t.app.shutdown(None).unwrap();
    let (exit, _) = t.wait_exit();
    assert!(
        asked.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!((exit.kind, exit.code), (ExitKind::Killed, 143));
    assert!(
        exit.message
            .contains("was asked to cancel but is still RUNNING"),
        "{}",
        exit.message
    );
}

#[test]
fn a_job_cancelled_by_someone_else_fails() {
    let jm = FakeJobManager::start(
        vec![Some("RUNNING"), Some("CANCELLING"), Some("CANCELED")],
        false,
    );
    let t = TestApp::start(&submitted(), &jm);
    let (exit, _) = t.wait_exit();
    assert_eq!((exit.kind, exit.code), (ExitKind::Failed, 1));
    assert!(exit.message.contains("not by Aloha"), "{}", exit.message);
}

#[test]
fn a_cli_failure_before_the_job_id_fails_with_its_output() {
    let jm = FakeJobManager::start(vec![Some("RUNNING")], false);
    let t = TestApp::start(
        "echo 'The program finished with the following exception:' >&2; \
         echo 'org.apache.flink.client.program.ProgramInvocationException: no main' >&2; exit 2",
        &jm,
    );
    let (exit, details) = t.wait_exit();
    assert_eq!((exit.kind, exit.code), (ExitKind::Failed, 2));
    assert!(
        exit.message
            .starts_with("flink exited with code 2 before submitting a job\n"),
        "{}",
        exit.message
    );
    assert!(
        exit.message.contains("ProgramInvocationException: no main"),
        "{}",
        exit.message
    );
    assert!(detail(&details, "flink_job_id").is_empty());
    assert!(jm.requests().is_empty(), "{:?}", jm.requests());
}

#[test]
fn a_cli_that_submits_nothing_fails() {
    let jm = FakeJobManager::start(vec![Some("RUNNING")], false);
    let t = TestApp::start("echo 'nothing to do'", &jm);
    let (exit, _) = t.wait_exit();
    assert_eq!((exit.kind, exit.code), (ExitKind::Failed, 1));
    assert!(
        exit.message.contains("printed no JobID"),
        "{}",
        exit.message
    );
    assert!(exit.message.contains("nothing to do"), "{}", exit.message);
}

#[test]
fn a_shutdown_while_submitting_kills_the_cli() {
    let jm = FakeJobManager::start(vec![Some("RUNNING")], true);
    let mut t = TestApp::start("echo submitting; exec sleep 1000", &jm);
    let pid: i32 = wait_for_pid(t.dir.path());
    std::thread::sleep(Duration::from_millis(200));
    t.app.shutdown(Some("too slow")).unwrap();
    let (exit, _) = t.wait_exit();
    assert_eq!(exit, ExitState::killed(143, "killed: too slow"));
    assert!(jm.requests().is_empty(), "{:?}", jm.requests());
    assert!(!alive(pid), "the CLI survived");
}

#[test]
fn a_job_the_jobmanager_does_not_know_fails() {
    let jm = FakeJobManager::start(vec![None], false);
    let t = TestApp::start(&submitted(), &jm);
    let (exit, _) = t.wait_exit();
    assert_eq!((exit.kind, exit.code), (ExitKind::Failed, 1));
    assert!(
        exit.message.contains("does not know Flink job"),
        "{}",
        exit.message
    );
}

#[test]
fn releasing_a_running_app_cancels_its_job() {
    let jm = FakeJobManager::start(vec![Some("RUNNING")], true);
    let t = TestApp::start(&submitted(), &jm);
    assert_eq!(t.wait_detail("flink_job_state"), "RUNNING");
    drop(t.app);
    let cancel = format!("PATCH /jobs/{JOB}?mode=cancel HTTP/1.1");
    let deadline = Instant::now() + DEADLINE;
    while !jm.requests().contains(&cancel) {
        assert!(Instant::now() < deadline, "no cancel: {:?}", jm.requests());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_pid(dir: &Path) -> i32 {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(pid) = std::fs::read_to_string(dir.join("pid"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "no pid file");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rfind(')')
                .map(|i| !stat[i + 1..].trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}
