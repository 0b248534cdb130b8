//! The plugin against a fake `spark-submit` (a shell script printing what the real one prints)
//! and, for local mode, a fake driver UI. Fast and deterministic; the real Spark is tested end to
//! end in `tests/spark.rs` at the workspace root.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aloha_plugin::{AppContext, Application, ExitKind, ExitNotifier, ExitState, PluginEvent};
use aloha_plugin_spark::SparkApp;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(20);

struct TestApp {
    app: SparkApp,
    events: Receiver<PluginEvent>,
    dir: tempfile::TempDir,
}

impl TestApp {
    /// Starts an app whose `spark-submit` is `script`; `spec` is added to the spec.
    fn start(script: &str, spec: Value) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let submit = dir.path().join("fake-spark-submit");
        std::fs::write(&submit, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&submit, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut full = json!({"resource": "job.py", "spark_submit": submit, "kill_grace_ms": 500});
        for (k, v) in spec.as_object().unwrap() {
            full[k] = v.clone();
        }
        let ctx = AppContext::new(
            json!({"id": "app-1", "name": "nightly", "kind": "spark", "spec": full}),
            dir.path(),
        );
        let mut app = SparkApp::create(ctx).unwrap();
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

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap()
    }
}

fn detail<'a>(details: &'a [(String, String)], key: &str) -> Option<&'a str> {
    details
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[test]
fn the_command_line_environment_and_a_yarn_id() {
    let t = TestApp::start(
        "echo \"args: $*\"; echo \"home: ${SPARK_HOME:-unset}\"; pwd; \
         echo '24/01/02 10:00:00 INFO Client: Submitted application application_1700000000000_0042' >&2",
        json!({"args": ["a b"], "env": {"X": "1"}}),
    );
    let (exit, details) = t.wait_exit();
    assert_eq!(
        exit,
        ExitState::finished(0, "spark-submit exited with code 0")
    );
    assert_eq!(
        detail(&details, "spark_app_id"),
        Some("application_1700000000000_0042")
    );
    assert!(detail(&details, "pid").is_some());
    let dir = t.dir.path().to_string_lossy().into_owned();
    assert_eq!(
        t.read("stdout"),
        format!("args: --master local[*] --name nightly {dir}/job.py a b\nhome: unset\n{dir}\n")
    );
}

#[test]
fn in_local_mode_the_id_comes_from_the_driver_ui() {
    // The UI answers once, like Spark's `/api/v1/applications`.
    let ui = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = ui.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (stream, _) = ui.accept().unwrap();
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
        let body = r#"[{"id": "local-1700000000123", "name": "nightly"}]"#;
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        first.trim_end().to_owned()
    });
    // The fake driver runs until the id was asked for.
    let t = TestApp::start(
        &format!(
            "echo '26/11/21 16:36:52 INFO JettyUtils: Start Jetty 127.0.0.1:{port} for SparkUI' >&2; \
             sleep 30"
        ),
        json!({}),
    );
    assert_eq!(server.join().unwrap(), "GET /api/v1/applications HTTP/1.1");
    let deadline = Instant::now() + DEADLINE;
    let id = loop {
        match t
            .events
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(PluginEvent::Detail { key, value }) if key == "spark_app_id" => break value,
            Ok(PluginEvent::Detail { .. }) => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(id, "local-1700000000123");
    let mut app = t.app;
    app.shutdown(Some("enough")).unwrap();
    let t = TestApp { app, ..t };
    assert_eq!(t.wait_exit().0, ExitState::killed(143, "killed: enough"));
}

#[test]
fn a_failure_quotes_the_output_without_routine_log_lines() {
    let t = TestApp::start(
        "echo 'rows read: 0'; \
         echo '26/11/21 16:36:51 INFO SparkContext: Running Spark version 4.0.1' >&2; \
         echo 'Exception in thread \"main\" java.io.FileNotFoundException: /data/in' >&2; \
         echo '26/11/21 16:36:52 INFO ShutdownHookManager: Shutdown hook called' >&2; exit 1",
        json!({}),
    );
    let (exit, _) = t.wait_exit();
    assert_eq!(
        exit,
        ExitState::failed(
            1,
            "spark-submit exited with code 1\n--- last lines of stderr ---\n\
             Exception in thread \"main\" java.io.FileNotFoundException: /data/in\n\
             --- last lines of stdout ---\nrows read: 0"
        )
    );
}

#[test]
fn shutdown_stops_the_whole_group() {
    let t = TestApp::start("sleep 1000 & echo $! > child; sleep 1000", json!({}));
    let deadline = Instant::now() + DEADLINE;
    let child: i32 = loop {
        if let Some(pid) = std::fs::read_to_string(t.dir.path().join("child"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut app = t.app;
    app.shutdown(None).unwrap();
    let t = TestApp { app, ..t };
    let (exit, _) = t.wait_exit();
    assert_eq!((exit.kind, exit.code), (ExitKind::Killed, 143));
    let deadline = Instant::now() + DEADLINE;
    while alive(child) {
        assert!(Instant::now() < deadline, "the background child survived");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_missing_spark_submit_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = AppContext::new(
        json!({"id": "a", "kind": "spark", "spec": {
            "resource": "x.py", "spark_home": "/nonexistent/spark"}}),
        dir.path(),
    );
    let mut app = SparkApp::create(ctx).unwrap();
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let err = app
        .start(ExitNotifier::from_fn(move |e| {
            let _ = tx.lock().unwrap().send(e);
        }))
        .unwrap_err();
    assert!(
        err.starts_with("cannot run \"/nonexistent/spark/bin/spark-submit\": "),
        "{err}"
    );
    // A failed start reports nothing: the watcher ends unheard.
    assert!(rx.recv_timeout(Duration::from_millis(500)).is_err());
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
