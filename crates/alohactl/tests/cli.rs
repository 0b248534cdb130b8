//! The `alohactl` binary as a user runs it: exit codes, the one-line error on stderr and the
//! output streams, against canned HTTP answers from a real socket on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Answers each request with `respond(method, path, request_number)`'s `(status, body)`.
struct Server {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(respond: impl Fn(&str, &str, usize) -> (u16, String) + Send + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let count = AtomicUsize::new(0);
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let Some((method, path)) = read_head(&stream) else {
                    continue;
                };
                let (status, body) = respond(&method, &path, count.fetch_add(1, Ordering::SeqCst));
                let _ = (&stream).write_all(
                    format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        Server {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_head(stream: &TcpStream) -> Option<(String, String)> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        if header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok()?;
            }
        }
    }
    reader.read_exact(&mut vec![0; length]).ok()?;
    Some((method, path))
}

fn alohactl(master: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_alohactl"))
        .arg("--master")
        .arg(master)
        .args(args)
        .env_remove("ALOHA_MASTER")
        .env("NO_PROXY", "*")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn app(state: &str, history: &[(&str, Option<&str>)]) -> String {
    let history: Vec<serde_json::Value> = history
        .iter()
        .enumerate()
        .map(|(i, (s, m))| {
            serde_json::json!({"state": s, "at": format!("2024-01-02T03:04:0{i}Z"), "message": m})
        })
        .collect();
    let message = history
        .last()
        .and_then(|h| h["message"].as_str().map(String::from));
    serde_json::json!({
        "id": "app-20240102030400-0001", "seq": 1, "name": "demo", "kind": "process",
        "spec": {"command": ["true"]}, "cores": 1, "memory_mb": 256, "max_retries": 0,
        "labels": {}, "state": state, "worker_id": "w1", "attempt": 1, "retries": 0,
        "exit_code": null, "message": message, "submitted_at": "2024-01-02T03:04:00Z",
        "started_at": null, "finished_at": null, "history": history
    })
    .to_string()
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    let out = alohactl("127.0.0.1:1", &["submit", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("alohactl: the following required arguments"),
        "{err}"
    );

    let out = alohactl(
        "127.0.0.1:1",
        &["submit", "--name", "x", "--kind", "spark", "--", "run"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).starts_with("alohactl: a command after `--`"));

    let out = alohactl("127.0.0.1:1", &["submit", "--name", "x", "--spec", "[]"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).lines().next().unwrap_or_default(),
        "alohactl: --spec must be a JSON object, like {\"command\": [\"echo\", \"hi\"]}"
    );
}

#[test]
fn help_and_version_succeed() {
    let out = alohactl("127.0.0.1:1", &["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("submit"));
    let out = alohactl("127.0.0.1:1", &["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).starts_with("alohactl "));
}

#[test]
fn connection_and_api_errors_exit_1_with_one_line() {
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let out = alohactl(&dead, &["workers"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with(&format!("alohactl: cannot reach master http://{dead}: ")));

    let server = Server::start(|_, path, _| (404, format!(r#"{{"error":"no app {path}"}}"#)));
    let out = alohactl(&server.addr, &["status", "app-9"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "alohactl: no app /api/v1/apps/app-9 (HTTP 404 Not Found)\n"
    );
    assert!(out.stdout.is_empty());

    let garbage = Server::start(|_, _, _| (200, "<html>\n<b>hi</b>\n</html>".into()));
    let out = alohactl(&garbage.addr, &["cluster"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("the body is not JSON: <html> <b>hi</b> </html>"),
        "{err}"
    );
}

#[test]
fn the_standby_sends_the_cli_to_the_leader() {
    let leader = Server::start(|method, path, _| match (method, path) {
        ("POST", "/api/v1/apps/app-20240102030400-0001/kill") => (
            202,
            app("RUNNING", &[("SUBMITTED", None), ("RUNNING", None)]),
        ),
        _ => (404, r#"{"error":"no route"}"#.into()),
    });
    let hint = format!(r#"{{"error":"standby","leader":"http://{}"}}"#, leader.addr);
    let standby = Server::start(move |_, _, _| (503, hint.clone()));
    let out = alohactl(&standby.addr, &["kill", "app-20240102030400-0001"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "kill requested for app-20240102030400-0001\n");
}

#[test]
fn submit_wait_exits_by_the_apps_end() {
    let failing = Server::start(|method, _, n| match (method, n) {
        ("POST", _) => (201, app("SUBMITTED", &[("SUBMITTED", None)])),
        (_, 1) => (
            200,
            app("RUNNING", &[("SUBMITTED", None), ("RUNNING", None)]),
        ),
        _ => (
            200,
            app(
                "FAILED",
                &[
                    ("SUBMITTED", None),
                    ("RUNNING", None),
                    ("FAILED", Some("exited with code 3")),
                ],
            ),
        ),
    });
    let args = [
        "submit",
        "--name",
        "demo",
        "--wait",
        "--poll-interval",
        "20ms",
        "--",
        "sh",
    ];
    let out = alohactl(&failing.addr, &args);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "alohactl: app app-20240102030400-0001 ended FAILED: exited with code 3\n"
    );
    let lines: Vec<String> = stdout(&out)
        .lines()
        .filter(|l| l.starts_with("2024-"))
        .map(String::from)
        .collect();
    assert_eq!(
        lines,
        [
            "2024-01-02T03:04:00Z app-20240102030400-0001 SUBMITTED",
            "2024-01-02T03:04:01Z app-20240102030400-0001 RUNNING",
            "2024-01-02T03:04:02Z app-20240102030400-0001 FAILED exited with code 3",
        ]
    );

    let finishing = Server::start(|method, _, _| match method {
        "POST" => (201, app("SUBMITTED", &[("SUBMITTED", None)])),
        _ => (
            200,
            app("FINISHED", &[("SUBMITTED", None), ("FINISHED", None)]),
        ),
    });
    let out = alohactl(
        &finishing.addr,
        &[
            "-o",
            "json",
            "submit",
            "--name",
            "d",
            "--wait",
            "--poll-interval",
            "20ms",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        printed["state"], "FINISHED",
        "JSON mode prints only the final app"
    );
}
